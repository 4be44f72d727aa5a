#!/usr/bin/env bash
# Time per live diagnosis: a real dnnfaultd with the default model bundle
# watches real PyTorch runs (examples/train_digits.py, every step sampled so
# that each analysis reads a long series); prints, from the daemon's
# counters, the number of analyses and the mean time of one (load the run +
# detectors + features + XGBoost): first for RUNS runs on their own, then
# for RUNS runs that name the first of them as their reference run (which
# loads the reference too and computes its features).
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

# "analyses micros steps" from the counters, once every run so far is diagnosed to its end.
counters() {
  for _ in $(seq 100); do
    "$ctl" --json status | /usr/bin/python3 -c '
import json, sys
sys.exit(0 if all(r.get("diagnosed_step") == r.get("step") for r in json.load(sys.stdin)["runs"]) else 1)' && break
    sleep 0.1
  done
  "$ctl" --json stats | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)
print(c["analyses"], c["analysis_micros"], c["steps_stored"])'
}
report() {  # what, counters before, counters after
  /usr/bin/python3 -c '
import sys
what, a, b = sys.argv[1], [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()]
n, us, steps = b[0] - a[0], b[1] - a[1], b[2] - a[2]
print("%s: analyses %d of %s runs, steps stored %d, mean time per diagnosis %.2f ms"
      % (what, n, sys.argv[4], steps, us / n / 1000 if n else float("nan")))' "$1" "$2" "$3" "$runs"
}

start=$(counters)
for i in $(seq "$runs"); do
  /usr/bin/python3 examples/train_digits.py --run "bench-$i" --every 1 --fault lr_high >/dev/null
done
alone=$(counters)
report "on their own" "$start" "$alone"
for i in $(seq "$runs"); do
  /usr/bin/python3 examples/train_digits.py --run "bench-ref-$i" --every 1 --fault lr_high \
    --reference bench-1 >/dev/null
done
report "with a reference run" "$alone" "$(counters)"
