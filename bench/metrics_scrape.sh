#!/usr/bin/env bash
# What a Prometheus scrape costs (docs/metrics.md): fills a store with RUNS
# simulated runs (examples/simulated_training, 200 steps each, every fifth
# with lr x100 so that diagnoses carry causes and symptoms), each diagnosed
# to its end by the default model bundle, then serves it with
# metrics_max_runs 200 (the default) and with every run, and prints per
# setting the median and largest time of 30 scrapes (request to last byte),
# the answer's size and its number of series. It also times `dnnfaultctl
# --json status` of the same runs, which reads the store the same way.
#   bash bench/metrics_scrape.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2000}
ctl=build/client/dnnfaultctl
dir=$(mktemp -d)
daemon=
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$dir"' EXIT
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DNNFAULT_ADDRESS="unix:$dir/s"

start() {  # metrics_max_runs
  build/daemon/dnnfaultd --socket "$dir/s" --db "$dir/db" --log-level warning \
    --metrics-listen "127.0.0.1:$port" --metrics-max-runs "$1" 2>>"$dir/log" &
  daemon=$!
  for _ in $(seq 200); do "$ctl" version >/dev/null 2>&1 && return; sleep 0.05; done
  echo "dnnfaultd did not start: $(cat "$dir/log")" >&2; exit 1
}
stop() { kill "$daemon"; wait "$daemon" || true; daemon=; }

start 200
trainers=()
for i in $(seq "$runs"); do
  fault=(); [ $((i % 5)) -eq 0 ] && fault=(--fault lr_high)
  build/examples/simulated_training --run "run-$i" --steps 200 --every-ms 0 --seed "$i" "${fault[@]}" >/dev/null &
  trainers+=($!)
  if [ ${#trainers[@]} -eq 16 ]; then wait "${trainers[@]}"; trainers=(); fi
done
[ ${#trainers[@]} -eq 0 ] || wait "${trainers[@]}"
for _ in $(seq 600); do
  "$ctl" --json status | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"]
sys.exit(0 if len(r) == int(sys.argv[1]) and all(x.get("diagnosed_step") == x.get("step") for x in r) else 1)' "$runs" && break
  sleep 0.5
done

for max in 200 "$runs"; do
  [ "$max" = 200 ] || { stop; start "$max"; }
  /usr/bin/python3 - "$port" "$max" "$runs" <<'EOF'
import http.client, statistics, subprocess, sys, time
port, max_runs, runs = int(sys.argv[1]), sys.argv[2], sys.argv[3]
times, size, series = [], 0, 0
for _ in range(30):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    body = c.getresponse().read()
    times.append(time.perf_counter() - t0)
    c.close()
    size = len(body)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
status = []
for _ in range(10):
    t0 = time.perf_counter()
    subprocess.run(["build/client/dnnfaultctl", "--json", "status"], check=True, capture_output=True)
    status.append(time.perf_counter() - t0)
print("store of %s runs, metrics_max_runs %s: scrape median %.1f ms (max %.1f), %d bytes, %d series; "
      "dnnfaultctl --json status of all runs: median %.1f ms"
      % (runs, max_runs, statistics.median(times) * 1e3, max(times) * 1e3, size, series,
         statistics.median(status) * 1e3))
EOF
done
