#!/usr/bin/env bash
# Rebuilds the default model bundle (models/default) from the committed
# corpus rows (corpus/rows/, one file per base program). With a corpus
# store as argument, first re-exports the rows from it (needed after a
# feature schema change):
#   bash scripts/train-model.sh /path/to/corpus.db
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
ctl=build/client/dnnfaultctl
if [ $# -ge 1 ]; then
  bash scripts/export-rows.sh "$1"
fi
mkdir -p models
xz -dc corpus/rows/*.csv.xz | "$ctl" train - models/default --references corpus/references.csv
