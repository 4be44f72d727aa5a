#!/usr/bin/env bash
# Time per live diagnosis: a real dnnfaultd with the default model bundle
# watches real PyTorch runs (examples/train_digits.py, every step sampled so
# that each analysis reads a long series); prints the daemon's analysis
# count and the mean time of one (load the run + detectors + features +
# XGBoost), from its counters.
#   bash bench/diagnosis.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
ctl=build/client/dnnfaultctl
dir=$(mktemp -d)
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$dir"' EXIT
build/daemon/dnnfaultd --socket "$dir/s" --db "$dir/db" --analyze-every-steps 100 2>"$dir/log" &
daemon=$!
export DNNFAULT_ADDRESS="unix:$dir/s" PYTHONPATH="$PWD/client/python" DNNFAULT_LIBRARY="$PWD/build/client/libdnnfault.so"
for _ in $(seq 100); do "$ctl" version >/dev/null 2>&1 && break; sleep 0.05; done
for i in $(seq "$runs"); do
  /usr/bin/python3 examples/train_digits.py --run "bench-$i" --every 1 --fault lr_high >/dev/null
done
sleep 2
"$ctl" --json stats | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)
n, us = c["analyses"], c["analysis_micros"]
print("analyses %d of %d runs, steps stored %d, mean time per diagnosis %.2f ms"
      % (n, '"$runs"', c["steps_stored"], us / n / 1000 if n else float("nan")))
'
