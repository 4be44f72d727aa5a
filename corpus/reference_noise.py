#!/usr/bin/python3
"""How much a reference run's noise helps to detect faults, measured quickly.

A throwaway-cheap stand-in for the real evaluation (scripts/evaluate.sh,
over an hour): scikit-learn's histogram gradient boosting instead of
XGBoost, one fixed depth, and leave-one-program-out over the committed
corpus rows at one point of progress. Each run is compared with one of its
program's references (corpus/references.csv, not itself, picked by run id
as `dnnfaultctl train --references` picks it), and the detector is scored
by the share of faulty runs it flags when its threshold lets through 3% or
5% of the held-out healthy runs. That threshold is set on the held-out runs
themselves, so the figures compare feature sets with one another; they are
not results.

Feature sets:
  base       the run's own features
  one        + the differences from the reference (the ref_ block)
  noise      + the validation metric's difference over the reference's
               noise, max(|last gain|, best - last, FLOOR) (features.md)
  multi      + the differences from the mean of all the program's other
               references, and over their spread (what several reference
               runs would give)

    /usr/bin/python3 corpus/reference_noise.py --point 1.00 base one noise
"""
import argparse
import collections
import csv
import glob
import lzma
import os

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED = ("loss_", "accuracy_", "val_", "train_")
NOT_COMPARED = ("loss_kind", "loss_custom")
FIRST_FEATURE = 7        # run, program, point, labels and the 3 rule baselines


def load(point):
    """{run: (program, faulty, features)} at `point`, and the feature names."""
    rows, names = {}, None
    for path in sorted(glob.glob(os.path.join(ROOT, "corpus", "rows", "*.csv.xz"))):
        with lzma.open(path, "rt") as f:
            reader = csv.reader(f)
            header = next(reader)
            names = names or header[FIRST_FEATURE:]
            for row in reader:
                if row[2] == point:
                    x = np.array([float(v) if v else np.nan for v in row[FIRST_FEATURE:]])
                    rows[row[0]] = (row[1], row[3] != "", x)
    return rows, names


def references():
    refs = collections.defaultdict(list)
    with open(os.path.join(ROOT, "corpus", "references.csv")) as f:
        for line in f:
            program, run = line.strip().split(",")
            if program != "program":
                refs[program].append(run)
    return refs


def matrix(mode, rows, names, refs, floor):
    index = {n: i for i, n in enumerate(names)}
    compared = [i for i, n in enumerate(names) if n.startswith(COMPARED) and n not in NOT_COMPARED]
    last, best, gain = index["val_metric_last"], index["val_metric_best"], index["val_metric_last_gain"]
    out = []
    for run in sorted(rows, key=int):
        program, _, x = rows[run]
        mine = [r for r in refs[program] if r != run]
        ref = rows[mine[int(run) % len(mine)]][2]
        parts = [x]
        if mode != "base":
            parts.append(x[compared] - ref[compared])
        if mode == "noise":
            noise = np.nanmax([abs(ref[gain]), ref[best] - ref[last], floor])
            parts.append(np.array([(x[last] - ref[last]) / noise, (x[best] - ref[best]) / noise]))
        if mode == "multi":
            many = np.array([rows[r][2][compared] for r in mine])
            mean = many.mean(axis=0)
            parts += [x[compared] - mean, (x[compared] - mean) / (many.std(axis=0, ddof=1) + 1e-6)]
        out.append(np.concatenate(parts))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--point", default="1.00", choices=["0.10", "0.25", "0.50", "1.00"])
    ap.add_argument("--floor", type=float, default=0.01, help="the noise floor of `noise`")
    ap.add_argument("modes", nargs="*", default=["base", "one", "noise"],
                    choices=["base", "one", "noise", "multi"])
    args = ap.parse_args()
    rows, names = load(args.point)
    refs = references()
    order = sorted(rows, key=int)
    program = np.array([rows[r][0] for r in order])
    faulty = np.array([rows[r][1] for r in order])
    for mode in args.modes:
        x = matrix(mode, rows, names, refs, args.floor)
        p = np.zeros(len(order))
        for held_out in sorted(set(program)):
            test = program == held_out
            model = HistGradientBoostingClassifier(max_depth=3, max_iter=300, random_state=0)
            model.fit(x[~test], faulty[~test])
            p[test] = model.predict_proba(x[test])[:, 1]
        flagged = []
        for alarms in (0.03, 0.05):
            threshold = np.quantile(p[~faulty], 1 - alarms)
            flagged.append("faulty flagged at %d%% false alarms %.3f" % (alarms * 100, (p[faulty] > threshold).mean()))
        print("point %s  %-5s  %d features  %s" % (args.point, mode, x.shape[1], "  ".join(flagged)), flush=True)


if __name__ == "__main__":
    main()
