#!/usr/bin/env bash
# Leave-one-program-out evaluation of the learned diagnosis and the
# baselines on the committed corpus rows; writes the tables that
# docs/evaluation.md quotes to the file given (default: stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
xz -dc corpus/rows/*.csv.xz | build/client/dnnfaultctl evaluate - "$@" --references corpus/references.csv
