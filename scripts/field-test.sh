#!/usr/bin/env bash
# The field test of docs/evaluation.md: buggy programs written as users write
# them, on data sets and models the corpus does not have (realworld/), trained
# while dnnfaultd watches with its default model bundle; prints the
# diagnosis of every run and the scores. About 5 minutes with 2 seeds.
#   bash scripts/field-test.sh [--seeds N] [--json RESULTS.json] [--reference]
# --reference: each run names an unchanged run of its program as its
# reference run (realworld/run.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

dir=$(mktemp -d)
build/daemon/dnnfaultd --socket "$dir/d.sock" --db "$dir/field.db" --log-level warning &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$dir"' EXIT
ctl=build/client/dnnfaultctl
for _ in $(seq 100); do "$ctl" --address "unix:$dir/d.sock" version >/dev/null 2>&1 && break; sleep 0.05; done

export PYTHONPATH="$PWD/client/python" DNNFAULT_LIBRARY="$PWD/build/client/libdnnfault.so"
/usr/bin/python3 realworld/run.py --address "unix:$dir/d.sock" --ctl "$ctl" --db "$dir/field.db" "$@"
