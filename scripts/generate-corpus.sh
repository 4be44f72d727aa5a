#!/usr/bin/env bash
# Generates the whole fault corpus into DIR (a dnnfault store and the five
# manifests), as committed: seed 1 and its supplement of seed 2 over the
# first eight programs, seed 3 over the two added next, seed 4 over the
# five added last, and the label supplement of seed 5 (docs/corpus.md).
# About 80 minutes on a 2-core machine.
# Then rebuild the rows and the default bundle with:
#   bash scripts/train-model.sh DIR/corpus.db
#   bash scripts/generate-corpus.sh /tmp/corpus
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: generate-corpus.sh DIR}
mkdir -p "$dir"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
build/daemon/dnnfaultd --socket "$dir/d.sock" --db "$dir/corpus.db" --model none \
  2> "$dir/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$dir/d.sock" ] && break; sleep 0.1; done
first=cnn_digits,deep_mlp_digits,gru_sequences,mlp_breast_cancer,mlp_diabetes,mlp_moons,mlp_wine,resnet_bn_digits
generate() {
  PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \
    /usr/bin/python3 corpus/generate.py --workers 2 --address "unix:$dir/d.sock" "$@"
}
generate --configs 800 --seed 1 --programs "$first" --manifest "$dir/manifest-seed1.jsonl"
generate --configs 20 --seed 2 --programs "$first" --manifest "$dir/manifest-seed2.jsonl"
generate --configs 200 --seed 3 --programs mlp_circles,mlp_friedman \
  --manifest "$dir/manifest-seed3.jsonl"
generate --configs 500 --seed 4 \
  --programs mlp_iris,cnn1d_signals,lstm_sums,mlp_multiclass,mlp_friedman2 \
  --manifest "$dir/manifest-seed4.jsonl"
# Seed 5, a supplement of label faults that no longer match their inputs
# (class ids recoded, labels shuffled apart), over all fifteen programs.
generate --configs 100 --seed 5 --operators labels_recoded,labels_shuffled \
  --manifest "$dir/manifest-seed5.jsonl"
