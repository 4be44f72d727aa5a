#!/usr/bin/env bash
# Memory and time of live analysis on one long run: bench-ingest streams
# STEPS sampled steps of LAYERS layers at RATE steps/s into a dnnfaultd with
# live analysis (every 100 steps, or a tenth of the run), once with the
# default analyze_max_samples and once without a bound; prints, per daemon,
# its analyses, their mean time (from its counters, once the last step is
# diagnosed), its peak resident memory (VmHWM), the size of its WAL file
# and the time `dnnfaultctl export` takes for the run, read before it stops.
#   bash bench/long_run.sh [STEPS [LAYERS [RATE]]]    # default 100000 100 5000
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-100000} layers=${2:-100} rate=${3:-5000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# bench-ingest starts the daemon it is given with --socket PATH first and
# stops it with SIGTERM; this stand-in reads the daemon's figures first.
cat >"$dir/daemon" <<'EOF'
#!/usr/bin/env bash
sock=$2 db=$4 ctl="$ROOT/build/client/dnnfaultctl"
"$ROOT/build/daemon/dnnfaultd" "$@" $EXTRA 2>>"$OUTDIR/log" >/dev/null </dev/null &
pid=$!
report() {
  for _ in $(seq 1200); do
    "$ctl" --address "unix:$sock" --json status | /usr/bin/python3 -c '
import json, sys
sys.exit(0 if all(r.get("diagnosed_step") == r.get("step") for r in json.load(sys.stdin)["runs"]) else 1)' && break
    sleep 0.5
  done
  "$ctl" --address "unix:$sock" --json stats | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)
n = c["analyses"]
print("analyses %d, mean %.0f ms per analysis" % (n, c["analysis_micros"] / n / 1000 if n else float("nan")), end=", ")'
  awk '/VmHWM/ {printf "daemon peak RSS %.0f MB, ", $2 / 1024}' "/proc/$pid/status"
  # The WAL file keeps its largest size until a checkpoint truncates it.
  stat -c %s "$db-wal" | awk '{printf "WAL %.0f MB, ", $1 / 1048576}'
  # Export reads the whole run in pages (what a user's `export` costs).
  local run t0 t1
  run=$("$ctl" --address "unix:$sock" --json runs | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["id"])')
  t0=$(date +%s.%N)
  "$ctl" --address "unix:$sock" export "$run" --format jsonl | wc -l >"$OUTDIR/export.lines"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n="$(cat "$OUTDIR/export.lines")" 'BEGIN {printf "export of %d steps %.1f s\n", n, b - a}'
  kill -TERM "$pid"
  wait "$pid" || true
  exit 0
}
trap report TERM
wait "$pid"
EOF
chmod +x "$dir/daemon"

echo "one run of $steps steps x $layers layers at $rate steps/s"
for bound in default 1000000000; do
  extra=""
  [ "$bound" = default ] || extra="--analyze-max-samples $bound"
  printf '%-28s ' "analyze_max_samples $bound:"
  ROOT=$PWD OUTDIR=$dir EXTRA=$extra build/bench/bench-ingest --clients 1 --steps "$steps" \
    --layers "$layers" --repeat 1 --rate "$rate" --daemon "$dir/daemon" >"$dir/ingest.out" 2>&1 ||
    { cat "$dir/ingest.out" "$dir/log" >&2; exit 1; }
  grep -o 'analyses.*' "$dir/ingest.out" || { cat "$dir/ingest.out" >&2; exit 1; }
done
