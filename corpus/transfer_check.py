"""Where detection is lost on unseen programs: the features, or the
threshold that must carry over from other programs? A check on the
committed rows (not the product's models: sklearn's histogram gradient
boosting stands in for XGBoost, which Debian ships no Python binding of).

For each program left out, a detector of faulty vs healthy rows at one
point of progress is trained on the other programs. Its held-out scores
are then cut two ways at 3.5% false alarms: one threshold for all
programs' held-out healthy runs pooled (what a product that must judge an
unseen program can at best approach), and one threshold per program, set
on that program's own healthy runs (which no product can know). With
--chance it also tries the validation metric over chance (last and best
validation accuracy times the number of classes) as two more features.
--reference tries what a user could give: the program's original run (5
seeds, the supplement of seed 5 trained them again: run ids 100001-100075
of its rows) as known-healthy references, which shift the pooled
threshold by how far the references' median score (as a logit) lies from
the median of all healthy runs; the references are not scored.

    /usr/bin/python3 corpus/transfer_check.py [--point 1.00] [--chance] [--reference]
"""
import argparse
import csv
import glob
import lzma
import os

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

SHARE = 0.035


def load(point):
    rows, header = [], None
    here = os.path.dirname(os.path.abspath(__file__))
    for f in sorted(glob.glob(os.path.join(here, "rows", "*.csv.xz"))):
        with lzma.open(f, "rt") as fh:
            r = csv.reader(fh)
            header = next(r)
            rows += [x for x in r if x[2] == point]
    return header, rows


def threshold(scores):
    s = np.sort(scores)[::-1]
    return s[int(SHARE * len(s))] + 1e-12 if len(s) else 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", default="1.00")
    ap.add_argument("--chance", action="store_true")
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args()
    header, rows = load(args.point)
    feat = header[7:]
    X = np.array([[float(v) if v not in ("", "nan") else np.nan for v in x[7:]] for x in rows])
    faulty = np.array([x[3] != "" for x in rows])
    labels = np.array(["labels" in x[3].split("|") for x in rows])
    prog = np.array([x[1] for x in rows])
    ref = np.array([100000 < int(x[0]) <= 100075 for x in rows])
    variants = [("schema 2", X)]
    if args.chance:
        c = X[:, feat.index("num_classes")]
        cls = X[:, feat.index("task_classification")] == 1
        per_chance = np.where(cls & (c >= 2), np.maximum(c, 2), np.nan)  # 1 / chance
        extra = np.column_stack([X[:, feat.index("val_metric_last")] * per_chance,
                                 X[:, feat.index("val_metric_best")] * per_chance])
        variants.append(("+ validation metric over chance", np.hstack([X, extra])))
    print("%d rows at point %s, %d programs; false alarms held at %.1f%%" % (
        len(rows), args.point, len(set(prog)), 100 * SHARE))
    for name, M in variants:
        score = np.zeros(len(rows))
        own = np.zeros(len(rows), dtype=bool)
        for p in sorted(set(prog)):
            te = prog == p
            m = HistGradientBoostingClassifier(max_depth=3, max_iter=300, learning_rate=0.1,
                                               random_state=1)
            m.fit(M[~te], faulty[~te])
            score[te] = m.predict_proba(M[te])[:, 1]
            own[te] = score[te] >= threshold(score[te & ~faulty])
        pooled = score >= threshold(score[~faulty])
        ways = [("one threshold, pooled", pooled, None), ("per program (oracle)", own, None)]
        if args.reference:
            logit = np.log(np.clip(score, 1e-9, 1 - 1e-9) / np.clip(1 - score, 1e-9, 1))
            t = threshold(logit[~faulty & ~ref])
            base = np.median(logit[~faulty & ~ref])
            shifted = np.zeros(len(rows), dtype=bool)
            for p in sorted(set(prog)):
                te = prog == p
                shift = np.median(logit[te & ref]) - base
                shifted[te] = logit[te] >= t + shift
            ways.append(("pooled, shifted by references", shifted, ~ref))
        for how, flagged, keep in ways:
            if keep is not None:
                flagged, f_, l_ = flagged[keep], faulty[keep], labels[keep]
            else:
                f_, l_ = faulty, labels
            print("%-32s %-22s faulty runs flagged %.3f, labels %.3f; healthy flagged %.3f" % (
                name, how, flagged[f_].mean(), flagged[l_].mean(), flagged[~f_].mean()))


if __name__ == "__main__":
    main()
