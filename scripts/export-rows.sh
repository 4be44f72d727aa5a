#!/usr/bin/env bash
# Exports the training rows of a corpus store into corpus/rows/, one
# xz-compressed CSV per base program, each with the header: a program
# added to the corpus adds a file instead of rewriting one large one, and
# no file comes near the repository's size limit. dnnfaultctl reads the
# files concatenated in any order (`xz -dc corpus/rows/*.csv.xz`) as the
# same rows in the same order (docs/corpus.md).
#   bash scripts/export-rows.sh /path/to/corpus.db
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:?usage: export-rows.sh CORPUS.db}
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build/client/dnnfaultctl rows "$db" > "$tmp/all.csv"
# Column 2 is the program; names are [a-z0-9_] (corpus/programs.py).
awk -F, -v dir="$tmp" 'NR == 1 { header = $0; next }
  { f = dir "/" $2 ".csv"; if (!(f in seen)) { print header > f; seen[f] = 1 } print > f }' \
  "$tmp/all.csv"
rm "$tmp/all.csv"
xz -9 -T2 "$tmp"/*.csv
rm -rf corpus/rows.tmp
mkdir corpus/rows.tmp
mv "$tmp"/*.csv.xz corpus/rows.tmp/
rm -rf corpus/rows
mv corpus/rows.tmp corpus/rows
