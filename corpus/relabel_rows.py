"""Relabels the committed feature rows run by run, without the store: a
run of a mutant whose configuration is labelled healthy becomes faulty
(the mutant's causes) when that run itself ended significantly and materially worse than
its original program; such a run of a healthy variation is left
unlabelled (dropped), as a variation that hurts is. Writes the rows, with
their header, to stdout for `dnnfaultctl train/evaluate -`.

    /usr/bin/python3 corpus/relabel_rows.py [--summary] > rows.csv

The corpus rule (docs/corpus.md, Labels) labels a configuration by its
five seeds together (DeepCrime's): a mutant whose seeds are not worse
together is healthy, even when one of its seeds collapsed (a ReLU after
the output of gru_sequences ends two of its five runs at chance, 0.496
against 0.863). To the owner of that run it is faulty, and the fault is the mutant's.
"Significantly worse" for one run is generate.worse_runs: below the
original's five seeds by the one-sided prediction interval (the one-run
counterpart of the configuration's t-test) under Holm's correction over
the configuration's runs, and at least 5% below the original's mean; or
with no finite final metric. `--summary` also counts what the rule does
over the manifests (runs of harmless mutants and variations, how many
the uncorrected interval and the rule take, and their drops).

The rows name runs by their store ids, the manifests by run uid; the
store is not committed, so runs are found by their configuration: the
store numbered each configuration's five runs consecutively, so the rows
come in blocks of five (by id) that are matched to manifest records of
the same program by label and by the multiset of final metrics
(`val_metric_last` at the end of training). The first fitting record at
or after the last one matched (manifest order, which the store's ids
follow) is taken; a block that fits none there is matched out of order
only when every record it fits agrees on everything the rule reads, else
it keeps its label and is counted in the summary. (On the committed
rows 559 of the 1,607 blocks fit several records, 72 of them records the
rule reads differently: identical outcomes of deterministic training,
e.g. an original and a variation that changed nothing; manifest order
decides those. `--summary` counts them.) `--write` refuses unless every run was found.
"""

import argparse
import collections
import csv
import glob
import json
import lzma
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402

SUPPLEMENT = 100000  # the seed-5 supplement's run ids start above this (docs/corpus.md)


def number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def same(a, b):
    a = math.nan if a is None else a
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-5 * max(1.0, abs(a))


def labels_key(causes):
    return "|".join(sorted(causes))


def read_rows(corpus=HERE):
    """(header, {file: its rows in order}, {run: (program, labels key, final metric)})"""
    header, rows, runs = None, {}, {}
    for path in sorted(glob.glob(os.path.join(corpus, "rows", "*.csv.xz"))):
        rows[path] = []
        with lzma.open(path, "rt") as f:
            r = csv.reader(f)
            header = next(r)
            metric = header.index("val_metric_last")
            for row in r:
                rows[path].append(row)
                if row[2] == "1.00":
                    causes = row[3].split("|") if row[3] else []
                    runs[int(row[0])] = (row[1], labels_key(causes), number(row[metric]))
    return header, rows, runs


def read_manifests(paths):
    by_program = collections.defaultdict(list)
    for path in paths:
        for r in generate.read_manifest(path).values():
            if r["label"] is not None:
                by_program[r["program"]].append(r)
    return by_program


def seeds_of(block, runs, record):
    """The seed index of each run of the block in record, or None when the
    block is not that record's runs."""
    labels = [None if x is None else labels_key(x)  # an unlabelled run has no row
              for x in record.get("run_labels") or [record["label"]] * len(record["metrics"])]
    free = list(record["metrics"])
    seeds = []
    for run in block:
        for k, m in enumerate(free):
            if m != "taken" and labels[k] == runs[run][1] and same(m, runs[run][2]):
                seeds.append(k)
                free[k] = "taken"
                break
        else:
            return None
    return seeds


def what_rule_reads(record, seed):
    return (record["kind"], json.dumps(record["label"]), json.dumps(sorted(set(record["causes"] or []))),
            json.dumps((record.get("run_labels") or [None] * 5)[seed]),
            json.dumps(record["metrics"][seed]), json.dumps(record["original_metrics"]))


def match(runs, ids, by_program, offset, counts):
    """{run: (record, seed)} for the runs of ids (one store's)."""
    blocks = collections.defaultdict(list)
    for run in ids:
        blocks[(run - offset - 1) // 5].append(run)
    per_program = collections.defaultdict(list)
    for b in sorted(blocks):
        per_program[runs[blocks[b][0]][0]].append(blocks[b])
    found = {}
    for program, program_blocks in per_program.items():
        records = by_program[program]
        used, next_k = set(), 0
        for block in program_blocks:
            counts["blocks"] += 1
            fitting = [k for k in range(len(records)) if seeds_of(block, runs, records[k]) is not None]
            if len(fitting) > 1:  # identical outcomes: manifest order decides (module doc)
                counts["blocks fitting several records"] += 1
                if len({tuple(what_rule_reads(records[j], s) for s in seeds_of(block, runs, records[j]))
                        for j in fitting}) > 1:
                    counts["blocks fitting several records the rule reads differently"] += 1
            k = next((k for k in fitting if k >= next_k and k not in used), None)
            if k is not None:
                next_k = k + 1
            else:
                fits = [k for k in fitting if k not in used]
                if len(fits) > 1:
                    views = {tuple(what_rule_reads(records[j], s) for s in seeds_of(block, runs, records[j]))
                             for j in fits}
                    if len(views) > 1:
                        counts["blocks matching records that disagree (kept)"] += 1
                        continue
                elif not fits:
                    counts["blocks matching no record (kept)"] += 1
                    continue
                k = fits[0]
            used.add(k)
            for run, seed in zip(block, seeds_of(block, runs, records[k])):
                found[run] = (records[k], seed)
    return found


def find_runs(runs, corpus=HERE):
    """({run: (manifest record, seed index)}, counts) for the committed rows' runs."""
    counts = collections.Counter()
    ids = sorted(runs)
    found = match(runs, [r for r in ids if r < SUPPLEMENT],
                  read_manifests(sorted(glob.glob(os.path.join(corpus, "manifest-seed[1-4].jsonl")))), 0, counts)
    found.update(match(runs, [r for r in ids if r >= SUPPLEMENT],
                       read_manifests([os.path.join(corpus, "manifest-seed5.jsonl")]), SUPPLEMENT, counts))
    counts["runs found in the manifests"] = len(found)
    counts["runs"] = len(runs)
    return found, counts


def count_harmless(counts, corpus):
    """The summary's view of the run rule over the manifests' runs of
    configurations labelled healthy (harmless mutants and variations):
    how many there are, how many the prediction interval alone would take
    (run_p < 0.05, no correction, no floor: session 17's rule), how many
    the rule labels, and how far below the original's mean they ended.
    From the manifests, so the same before and after --write."""
    for path in sorted(glob.glob(os.path.join(corpus, "manifest-seed*.jsonl"))):
        for r in generate.read_manifest(path).values():
            if r["label"] != [] or r["kind"] == "original":
                continue
            kind = "mutant" if r["kind"] == "mutant" else "variation"
            labels = generate.run_labels(r["kind"], r["label"], r["causes"] or [],
                                         r["metrics"], r["original_metrics"], "run")
            for metric, label in zip(r["metrics"], labels):
                counts["runs of harmless %ss" % kind] += 1
                p, drop = generate.run_p(metric, r["original_metrics"])
                bucket = next(name for least, name in DROP_BUCKETS if drop >= least)
                if p < generate.RUN_ALPHA:
                    counts["runs of harmless %ss below the uncorrected interval" % kind] += 1
                    counts["runs of harmless %ss below the uncorrected interval, drop %s"
                           % (kind, bucket)] += 1
                if label != []:
                    counts["runs of harmless %ss labelled" % kind] += 1
                    counts["runs of harmless %ss labelled, drop %s" % (kind, bucket)] += 1


# descending, relative to the original's mean: the first one a drop reaches
DROP_BUCKETS = ((0.30, "30% or more"), (0.10, "10-30%"), (0.05, "5-10%"), (0.02, "2-5%"), (0.0, "0-2%"),
                (-math.inf, "none"))


def write(header, rows, corpus=HERE):
    """The rows back into their files, and every manifest record with its
    runs' labels (run_labels) under the run-by-run rule."""
    for path, kept in rows.items():
        with lzma.open(path + ".tmp", "wt", preset=9) as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(header)
            out.writerows(kept)
        os.replace(path + ".tmp", path)
    for path in sorted(glob.glob(os.path.join(corpus, "manifest-seed*.jsonl"))):
        records = generate.read_manifest(path)
        for r in records.values():
            r["run_labels"] = generate.run_labels(r["kind"], r["label"], r["causes"] or [],
                                                  r["metrics"], r["original_metrics"], "run")
        generate.write_manifest(path, records)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summary", action="store_true", help="print what changed to stderr")
    ap.add_argument("--write", action="store_true",
                    help="rewrite corpus/rows/ and the manifests (with run_labels) instead")
    ap.add_argument("--corpus", default=HERE,
                    help="the folder with rows/ and the manifests (default: this one)")
    args = ap.parse_args()
    header, rows, runs = read_rows(args.corpus)
    found, counts = find_runs(runs, args.corpus)
    new = {}  # run: new labels column, or None to drop
    for run, (record, seed) in found.items():
        label = generate.run_labels(record["kind"], record["label"], record["causes"] or [],
                                    record["metrics"], record["original_metrics"], "run")[seed]
        if label is None:
            new[run] = None
        elif labels_key(label) != runs[run][1]:
            new[run] = "|".join(label)
        else:
            continue
        counts["runs relabelled %s -> %s" % (runs[run][1] or "healthy",
                                              "unlabelled" if label is None else labels_key(label))] += 1
    for path in rows:
        kept = []
        for row in rows[path]:
            run = int(row[0])
            if run in new:
                if new[run] is None:
                    continue
                row[3] = new[run]
            kept.append(row)
        rows[path] = kept
    if args.write:
        if len(found) != len(runs):
            sys.exit("relabel_rows: %d of %d runs not found in the manifests; nothing written"
                     % (len(runs) - len(found), len(runs)))
        write(header, rows, args.corpus)
    else:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(header)
        for path in rows:
            out.writerows(rows[path])
    if args.summary:
        count_harmless(counts, args.corpus)
        for k, v in sorted(counts.items()):
            print("# %s: %d" % (k, v), file=sys.stderr)


if __name__ == "__main__":
    main()
