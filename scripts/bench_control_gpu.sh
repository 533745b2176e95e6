#!/usr/bin/env bash
# The gpu preset of the controllability benchmark (issue 19) as one prepared run for a
# lent device: 12 x 512 x 8 heads (Maestro-REMI-bpe20k's architecture, trained from
# scratch: the hub cannot be reached), the control configuration with and without the
# key-to-c probe,
# under a wall-clock limit so that a slow device never loses the whole budget.
#
#   bash scripts/bench_control_gpu.sh OUT [LIMIT_SECONDS]   # default limit 540 s
#
# Writes OUT/bench_control.json, OUT/bench.log and each arm's evaluate.json under OUT/work.
set -euo pipefail
out=${1:?usage: bench_control_gpu.sh OUT [LIMIT_SECONDS]}
limit=${2:-540}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
status=0
timeout --signal=INT "$limit" python "$here/bench_control.py" --preset gpu --device cuda \
    --arms cond-dropout,key-to-c --work "$out/work" >"$out/bench.log" 2>&1 || status=$?
cp "$out/work/bench_control.json" "$out/" 2>/dev/null || true
tail -n 20 "$out/bench.log"
exit "$status"
