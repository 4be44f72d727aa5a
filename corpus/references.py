"""Writes corpus/references.csv: each base program's known-healthy
reference runs, for `dnnfaultctl train/evaluate --references` (docs/model.md).

They are the original programs trained again, 5 seeds each, at the start
of the seed-5 supplement (docs/corpus.md): the manifest lists them first,
and the store numbered its runs in that order, so they are the first rows
of corpus/rows/supplement-seed5.csv.xz by run id. The script checks that
those rows are healthy runs of the programs the manifest names.

    /usr/bin/python3 corpus/references.py [--check]
"""
import argparse
import csv
import json
import lzma
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OFFSET = 100000   # the supplement's run ids (docs/corpus.md)


def references():
    with open(os.path.join(HERE, "manifest-seed5.jsonl")) as f:
        items = [json.loads(line) for line in f]
    originals = []
    for it in items:
        if it["kind"] != "original":
            break
        originals += [it["program"]] * len(it["run_ids"])
    runs = {}
    with lzma.open(os.path.join(HERE, "rows", "supplement-seed5.csv.xz"), "rt") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            runs[int(row[0])] = (row[1], row[3])
    out = []
    for k, program in enumerate(originals):
        run = OFFSET + 1 + k
        if runs.get(run) != (program, ""):
            sys.exit("run %d is %r, not a healthy run of %s" % (run, runs.get(run), program))
        out.append((program, run))
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead")
    args = ap.parse_args()
    text = "program,run\n" + "".join("%s,%d\n" % x for x in references())
    path = os.path.join(HERE, "references.csv")
    if args.check:
        with open(path) as f:
            sys.exit(0 if f.read() == text else "%s differs from what the rows give" % path)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
