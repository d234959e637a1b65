#!/usr/bin/env bash
# The numeric tests (pytest -m numeric: training, export, calibration, parity figures) on 1 CPU and on
# 2 CPUs, each time in a new shuffled order, ROUNDS times (default 1). Run it before a change that
# touches training, export, calibration or parity lands: a figure that holds only in one order or at
# one thread count fails here. Usage: bash scripts/numeric-check.sh [ROUNDS] [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh" "train,export,station,integration,study,triton,test"
cd "$root"
rounds="${1:-1}"
[ $# -gt 0 ] && shift
cpus_list="0"
[ "$(nproc)" -ge 2 ] && cpus_list="0 0,1"
failed=0
for round in $(seq "$rounds"); do
  for cpus in $cpus_list; do
    seed=$(( (RANDOM << 15) | RANDOM ))
    echo "== round $round: CPUs $cpus, order seed $seed (repeat: taskset -c $cpus python -m pytest -m numeric --random-order-bucket=global --random-order-seed=$seed)"
    # taskset: the process may use only these CPUs, so PyTorch and ONNX Runtime size their pools to them
    taskset -c "$cpus" python -m pytest -q -m numeric --random-order-bucket=global \
      --random-order-seed="$seed" "$@" || failed=1
  done
done
exit "$failed"
