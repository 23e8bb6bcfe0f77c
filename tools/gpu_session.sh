#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in one device call, within a time budget.
#
#   mkdir -p gpu_carry && cp ../shared/gpu-wheels/*.whl ../shared/cifar10/cifar-10-python-mini.tar.gz gpu_carry/
#   device run:  bash tools/gpu_session.sh      with carry ["gpu_carry"]
#   the evidence table alone:  STAGES=evidence EVIDENCE_SECONDS=420 bash tools/gpu_session.sh
#     (run it again on the still-held machine and the runs it stopped resume from their snapshots;
#     the runs left unfinished also come back as $OUT/resume_NAME.tar, up to 4 of at most 16 MiB, fewer beside
#     bench and recipe (a call returns 8 files): copy them into gpu_carry/ and the next session resumes them,
#     or here: tools/evidence.py --unpack FOLDER)
#   dry run on the CPU first:  GPU=-1 QUICK=1 bash tools/gpu_session.sh
# (gpu_carry/ is git-ignored, so it travels only when named in carry: about 30 MB of the 64 MiB a call.)
#
# Stages, in this order (the timed ones each alone on the GPU):
#   setup     Chainer from the carried wheels; the mini archive -> dataset/ (download.py, dataset.py)
#   evidence  tools/evidence.py for EVIDENCE_SECONDS (default 80; 0 = none), beside the check: the runs of
#             the partial-set table named by EVIDENCE_RUNS (default all), the longest first; runs still
#             going at the end are stopped and recorded as interrupted
#   check     tools/gpu_check.py meanwhile: every model's loss and gradients on the GPU against the CPU
#   bench     tools/bench.py -g: img/s of the train step and inference, float32 and mixed16, data on the
#             GPU, PyTorch (cuDNN) beside each, peak memory, the top functions by time
#   recipe    tools/recipe_time.py: the paper's ResNet-20 recipe on 50,000 synthetic images for 6 epochs
#             (2,112 iterations), extrapolated to its 182 epochs; the PyTorch control beside it
#   article   one of the article's commands verbatim (-g 0) for one epoch of the partial set
# Everything lands in $OUT (at most 8 files come back): session.log (all output), environment.txt,
# evidence.log, bench_gpu.json, recipe_time.json, runs.tar.gz (the runs' logs and records, no models), and
# resume_NAME.tar for each evidence run left unfinished whose snapshot fits (tools/evidence.py --pack).
#
# Environment: STAGES (default "check bench recipe article"; "evidence" alone gives the GPU to the
# evidence table), EVIDENCE_RUNS, EVIDENCE_SECONDS, EVIDENCE_JOBS (runs at a time; default 8 on a machine of
# over 10 cores, else 1), CHECK_MODELS (default all), CHECK_SECONDS (the check's limit, default 60), GPU
# (default 0; -1 = a dry run on the CPU), CARRY (default gpu_carry), OUT (default results/gpu_session),
# QUICK=1 (tiny sizes), BUDGET (seconds for the whole script, default 420), PYTHON (default python3), COMMIT
# (the tree's commit, for the log and the run records: a lent machine's .git can be older than the tree).
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=${GPU:-0}
CARRY=${CARRY:-gpu_carry}
OUT=${OUT:-results/gpu_session}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-420}
PY=${PYTHON:-python3}
STAGES=${STAGES:-check bench recipe article}
EVIDENCE_SECONDS=${EVIDENCE_SECONDS:-80}
MINI_MD5=c1366a7aca9f64f5a55aeab36eb1bc98
RUNS=results/gpu_runs
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "== $(date -u +%H:%M:%S) +${SECONDS}s $*"; }
left() { echo $((BUDGET - SECONDS)); }
# A stage gets at most its own limit and never more than what the budget has left (less a reserve).
stage() { local limit=$1; shift; local t; t=$(left); t=$((t - 40)); [ "$t" -lt "$limit" ] && limit=$t
          if [ "$limit" -le 5 ]; then log "skipped (budget spent): $*"; return 1; fi
          timeout -s INT -k 10 "$limit" "$@"; local rc=$?; [ $rc -ne 0 ] && log "exit $rc: $*"; return $rc; }

log "setup"
# A second call on the same (still held) machine finds the wheels installed and the dataset built.
[ -d /tmp/chainer-site/chainer ] && export PYTHONPATH=/tmp/chainer-site${PYTHONPATH:+:$PYTHONPATH}
if ! $PY -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("chainer") is None)'; then
    ls "$CARRY"/*.whl > /dev/null 2>&1 || { echo "error: no Chainer here and no wheels in $CARRY/ (see the header of $0)"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --target /tmp/chainer-site "$CARRY"/*.whl
    export PYTHONPATH=/tmp/chainer-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
# The machine's copy of the history can be older than the tree it was sent: COMMIT names the tree's commit in this
# log and in every run record (record.code_version).
[ -n "${COMMIT:-}" ] && export CHAINER_CIFAR_CODE=$COMMIT
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    if [ -n "${COMMIT:-}" ]; then
        echo "commit: $COMMIT (from the caller)"  # the stale history's status would list COMMIT's own changes
    else
        git log -1 --format='commit %h %s' 2>/dev/null || echo 'commit: unknown'
        git status --short 2>/dev/null | head -20
    fi
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    grep -m1 'model name' /proc/cpuinfo; echo "cpus: $(nproc)"
    $PY -c 'import sys; sys.path.insert(0, "src"); import chainer_cifar, numpy, chainer
try:
    import cupy; c = "cupy " + cupy.__version__ + " (cuDNN: %s)" % chainer.backends.cuda.cudnn_enabled
except ImportError:
    c = "no cupy"
try:
    import torch; t = "torch " + torch.__version__ + " (cuDNN %s)" % torch.backends.cudnn.version()
except ImportError:
    t = "no torch"
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| chainer", chainer.__version__, "|", c, "|", t)'
} 2>&1 | tee "$OUT/environment.txt"
ARCHIVE=${CIFAR10_ARCHIVE:-$CARRY/cifar-10-python-mini.tar.gz}
if [ ! -f dataset/image.pkl ]; then
    $PY src/download.py --archive "$ARCHIVE" --md5 "${CIFAR10_MD5:-$MINI_MD5}" --quiet && $PY src/dataset.py \
        || { log "no dataset: the article and evidence stages cannot run"; }
fi

if [ "$QUICK" = 1 ]; then
    CHECK_MODELS=${CHECK_MODELS:-cnn,resnet20}; BENCH_MODELS=cnn,resnet20; REPEATS="--repeats 1 --warmup 0"
    RECIPE="--images 512 --test_images 128 --epochs 2"; SMOKE="--smoke"; SUBSET="--subset 256"
else
    CHECK_MODELS=${CHECK_MODELS:-all}; BENCH_MODELS=cnn,cnnbn,vgg,resnet20,resnet56,resnet110,residual:res_depth=12
    REPEATS="--repeats 3 --warmup 1"; RECIPE="--epochs 6"; SMOKE=""; SUBSET=""
fi
DTYPES=float32,mixed16
[ "$GPU" -lt 0 ] && DTYPES=float32  # float16 on the CPU measures nothing useful

# The check measures no time: the runs of the evidence table that fit in its shadow share the GPU with it.
# With STAGES=evidence the GPU is the evidence table's alone, for EVIDENCE_SECONDS.
# A call returns 8 files: session.log, environment.txt, evidence.log, runs.tar.gz, the stages' JSON, the rest tars.
PACK_FILES=4
has bench && PACK_FILES=$((PACK_FILES - 1))
has recipe && PACK_FILES=$((PACK_FILES - 1))
evidence() {
    $PY tools/evidence.py -g "$GPU" --jobs "${EVIDENCE_JOBS:-$(( $(nproc) > 10 ? 8 : 1 ))}" --deadline "$EVIDENCE_SECONDS" \
        --longest_first --runs_dir "$RUNS" ${EVIDENCE_RUNS:+--only "$EVIDENCE_RUNS"} $SMOKE \
        $([ -d "$CARRY" ] && echo --unpack "$CARRY") --pack "$OUT" --pack_files "$PACK_FILES" > "$OUT/evidence.log" 2>&1
}
if has check; then
    log "evidence (in the background, ${EVIDENCE_SECONDS} s) and check"
    [ "$EVIDENCE_SECONDS" -gt 0 ] && { evidence & pid=$!; }
    stage "${CHECK_SECONDS:-60}" $PY tools/gpu_check.py -g "$GPU" --models "$CHECK_MODELS" --batch 4
    [ -n "${pid:-}" ] && wait "$pid"; cat "$OUT/evidence.log" 2>/dev/null
elif has evidence; then
    log "evidence (${EVIDENCE_SECONDS} s)"
    evidence; cat "$OUT/evidence.log"
fi

has bench && log "bench" && stage 90 $PY tools/bench.py -g "$GPU" --models "$BENCH_MODELS" --dtype "$DTYPES" --backends stock,fast,torch \
    --profile $REPEATS --json "$OUT/bench_gpu.json"

has recipe && log "recipe" && stage 140 $PY tools/recipe_time.py -g "$GPU" --preset resnet20-paper $RECIPE --control --out results/recipe_time \
    && cp results/recipe_time/recipe_time.json "$OUT/"

has article && log "article: the README's residual_skip command, verbatim but for --iter 1" && stage 40 $PY src/train.py -g "$GPU" -m residual --skip_depth --res_depth 12 -b 128 -p residual_skip \
    --optimizer sgd --lr 0.1 --iter 1 --lr_decay_iter 100 $SUBSET

cp results/residual_skip/residual_skip_log.csv results/residual_skip/residual_skip_run.json "$RUNS/" 2>/dev/null
tar czf "$OUT/runs.tar.gz" --exclude='*.model' --exclude='*.state' --exclude='*.snapshot' --exclude='*.tmp' \
    "$RUNS" results/recipe_time/*.json results/recipe_time/*.csv results/recipe_time/control 2>/dev/null
log "done: $OUT"
