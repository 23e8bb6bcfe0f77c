#!/usr/bin/env bash
# The GPU part of the performance issue, for a session that has a lent GPU: one script,
# runnable in one device call (or one stage per call), everything written under $OUT.
#
#   mkdir -p gpu_carry && cp ../shared/gpu-wheels/*.whl ../shared/cifar10/cifar-10-python-mini.tar.gz gpu_carry/
#   device run:  bash scripts/gpu_session.sh [all|check|bench|train]   with carry ["gpu_carry"]
# (gpu_carry/ is git-ignored, so it travels only when named in carry; about 30 MB of the 64 MiB a call.)
#
# Stages:
#   check  scripts/gpu_check.py: every model's loss and gradients on the GPU against the CPU's fast kernels
#   bench  src/bench.py -g: img/s of cnn, cnnbn, vgg, resnet20, resnet110, residual (res_depth 12) in
#          float32 and mixed16, data resident on the GPU, peak memory, top functions by time
#   train  src/train.py -g on the mini archive: ResNet-20, batch 128, 2 epochs; prints the seconds per
#          iteration and the time the paper's 64k iterations would take at that rate
#
# Environment: GPU (default 0; -1 runs everything on the CPU: a dry run of this script), CARRY
# (default gpu_carry: the wheels and the mini archive), OUT (the device tool's $OUT, else
# results/gpu_session), QUICK=1 (tiny sizes, for a dry run), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
GPU=${GPU:-0}
CARRY=${CARRY:-gpu_carry}
OUT=${OUT:-results/gpu_session}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
MINI_MD5=c1366a7aca9f64f5a55aeab36eb1bc98
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/session.log"; }

# Chainer is not installed on the lent machines: bring it in from the carried wheels.
if ! $PY -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("chainer") is None)'; then
    ls "$CARRY"/*.whl > /dev/null 2>&1 || { echo "error: no Chainer here and no wheels in $CARRY/ (see the header of $0)"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --target /tmp/chainer-site "$CARRY"/*.whl
    export PYTHONPATH=/tmp/chainer-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

log "environment"
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git log -1 --format='commit %h %s' 2>/dev/null || true
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo 'no nvidia-smi'
    $PY -c 'import chainer_cifar, sys, numpy, chainer
try:
    import cupy; c = "cupy " + cupy.__version__
except ImportError:
    c = "no cupy"
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| chainer", chainer.__version__, "|", c)'
} 2>&1 | tee "$OUT/environment.txt"

if [ "$QUICK" = 1 ]; then
    MODELS=cnn,resnet20; REPEATS="--repeats 1 --warmup 0"; BATCH_CHECK=4; TRAIN_EXTRA="--subset 512"
else
    MODELS=cnn,cnnbn,vgg,resnet20,resnet110,residual:res_depth=12; REPEATS="--repeats 5 --warmup 2"
    BATCH_CHECK=16; TRAIN_EXTRA=""
fi

if [ "$STAGE" = all ] || [ "$STAGE" = check ]; then
    log "check: scripts/gpu_check.py -g $GPU"
    $PY scripts/gpu_check.py -g "$GPU" --models "$MODELS" --batch "$BATCH_CHECK" 2>&1 | tee "$OUT/gpu_check.log"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
    log "bench: src/bench.py -g $GPU"
    DTYPES=float32,mixed16
    [ "$GPU" -lt 0 ] && DTYPES=float32  # float16 on the CPU measures nothing useful
    $PY src/bench.py -g "$GPU" --models "$MODELS" --dtype "$DTYPES" --profile $REPEATS \
        --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
    log "train: src/download.py, src/dataset.py, src/train.py -g $GPU -m resnet20"
    ARCHIVE=${CIFAR10_ARCHIVE:-$CARRY/cifar-10-python-mini.tar.gz}
    $PY src/download.py --archive "$ARCHIVE" --md5 "${CIFAR10_MD5:-$MINI_MD5}" --quiet 2>&1 | tee "$OUT/train.log"
    [ -f dataset/image_norm.pkl ] || $PY src/dataset.py 2>&1 | tee -a "$OUT/train.log"
    $PY src/train.py -g "$GPU" -m resnet20 -b 128 --optimizer sgd --lr 0.1 --iter 2 -d dataset/image_norm.pkl \
        --out "$OUT" -p resnet20_gpu --quiet $TRAIN_EXTRA 2>&1 | tee -a "$OUT/train.log"
    $PY - "$OUT" <<'EOF' 2>&1 | tee -a "$OUT/train.log"
import csv, json, math, os, sys
out = sys.argv[1]
run = json.load(open(os.path.join(out, 'resnet20_gpu_run.json')))
rows = list(csv.DictReader(open(os.path.join(out, 'resnet20_gpu_log.csv'))))
iters = math.ceil(run['n_train'] / run['args']['batch_size'])
second = float(rows[-1]['elapsed']) - float(rows[-2]['elapsed'])  # the last epoch: no start-up costs
per_iter = second / iters
print('resnet20 on {}: last epoch {:.1f} s for {} iterations of batch {} (with its evaluation): {:.4f} s per '
      'iteration; the paper recipe, 64,000 iterations: {:.1f} minutes at that rate (target <= 15)'.format(
          run['device'], second, iters, run['args']['batch_size'], per_iter, 64000 * per_iter / 60))
EOF
fi
log "done: $OUT"
