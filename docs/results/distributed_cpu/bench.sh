#!/usr/bin/env bash
# Single process vs mpiexec -n 2 (--communicator naive), same total batch 64, same data, 1 epoch.
# Run from the repository root; D = a dataset folder built from the mini archive
# (python src/download.py --archive ... && python src/dataset.py).
set -u
cd "$(dirname "$0")/../../.."
D=${D:-/tmp/dist_mini/dataset}
OUT=/tmp/dist_bench
RES=docs/results/distributed_cpu
mkdir -p $OUT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
COMMON="-m cnn --optimizer adam --iter 1 --lr_decay_iter 100 -d $D/image_norm.pkl -l $D/label.pkl --subset 2400 --quiet"
[ -n "${APPEND:-}" ] || echo "config,repeat,threads_per_process,processes,batch_per_process,total_batch,n_train,wall_seconds,img_per_s,load1_before,load1_after" > $RES/runs.csv
[ -n "${APPEND:-}" ] || { date -u; uname -a; nproc; lscpu | grep -E 'Model name|^CPU\(s\)|Thread'; .venv/bin/python -c 'import numpy,chainer,mpi4py;print("numpy",numpy.__version__,"chainer",chainer.__version__,"mpi4py",mpi4py.__version__)'; mpiexec --version | head -1; } > $RES/machine.txt 2>&1
run() {  # name repeat threads procs batch cmd...
  local name=$1 rep=$2 th=$3 np=$4 b=$5; shift 5
  local l0=$(cut -d' ' -f1 /proc/loadavg)
  OMP_NUM_THREADS=$th OPENBLAS_NUM_THREADS=$th CHAINER_CIFAR_THREADS=$th "$@" $COMMON -b $b --out $OUT/$name$rep -p run > $OUT/$name$rep.log 2>&1
  local l1=$(cut -d' ' -f1 /proc/loadavg)
  .venv/bin/python - "$OUT/$name$rep/run_run.json" "$name" "$rep" "$th" "$np" "$b" "$l0" "$l1" >> $RES/runs.csv <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name, rep, th, np_, b, l0, l1 = sys.argv[2:]
print(','.join(map(str, [name, rep, th, np_, b, int(b) * int(np_), r['n_train'], r['wall_seconds'],
                         round(r['n_train'] / r['wall_seconds'], 1), l0, l1])))
PY
  tail -1 $OUT/$name$rep.log
}
for rep in ${REPS:-1 2}; do
  run single_2threads $rep 2 1 64 .venv/bin/python src/train.py
  run single_1thread $rep 1 1 64 .venv/bin/python src/train.py
  run mpi2_1thread $rep 1 2 32 mpiexec -n 2 .venv/bin/python src/train.py --communicator naive
  run mpi2_2threads_nobind $rep 2 2 32 mpiexec --bind-to none -n 2 .venv/bin/python src/train.py --communicator naive
done
uptime >> $RES/machine.txt
