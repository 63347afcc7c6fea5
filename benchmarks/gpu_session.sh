#!/usr/bin/env bash
# One short run of the GPU checks, for a session that has a GPU lent (about 5 minutes on an
# H200): where a default step spends its time on CUDA, epoch throughput at ML-20M's shape,
# and the ML-100K defaults on CUDA when the task's files are given.
#
#     bash benchmarks/gpu_session.sh [DIR_WITH_movielens-100k-loo_FILES] > gpu.txt 2>&1
#
# Run from the repository root; it uses src/ directly (no install), one torch thread on the
# host as training does, and writes nothing outside /tmp.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src"
T0=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - T0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
stamp "profile_step"
(cd benchmarks && timeout 150 python3 profile_step.py --device cuda --positives 1000000 --rows 30) 2>&1 | grep -v Warning
stamp "bench_scale"
(cd benchmarks && timeout 200 python3 bench_scale.py --device cuda --positives 4000000 --shapes ml20m) 2>&1 | grep -v Warning
if [ -n "${1:-}" ]; then
  stamp "ml-100k"
  timeout 150 python3 -m hybridrec train --train "$1/train.csv" --items "$1/items.csv" --out /tmp/gpu-hybrid --seed 0 --no-progress 2>&1 | tail -3
  python3 -m hybridrec evaluate --model /tmp/gpu-hybrid --train "$1/train.csv" --test "$1/test.csv" --protocol sampled --candidates "$1/test_negatives.csv" --k 10 2>&1 | tail -4
fi
stamp "end"
