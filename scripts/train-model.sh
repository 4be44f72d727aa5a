#!/usr/bin/env bash
# Rebuilds the default model bundle (models/default) from the committed
# corpus rows (corpus/rows.csv.xz). With a corpus store as argument,
# first re-exports the rows from it (needed after a feature schema change):
#   bash scripts/train-model.sh /path/to/corpus.db
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
ctl=build/client/dnnfaultctl
rows=corpus/rows.csv.xz
if [ $# -ge 1 ]; then
  "$ctl" rows "$1" | xz -9 -T2 > "$rows.tmp"
  mv "$rows.tmp" "$rows"
fi
mkdir -p models
xz -dc "$rows" | "$ctl" train - models/default
