"""Compares held-out predictions (`dnnfaultctl evaluate ... --predictions
PRED.csv`) at equal false alarms: one detector threshold for all rows,
placed so that a given share of the healthy runs is flagged, then the
product's decision (top cause and those within the row's ranking ratio).
Two evaluations whose thresholds differ can so be told apart by how well
they rank, not by where their thresholds fell. With --programs, only the
held-out rows of those programs count (e.g. the programs two corpora
share). With --reference, the reference detector's probabilities and
thresholds (p_fault_ref, ref_threshold) judge instead, on the rows that
have a reference run. The rows at the end of training (--point another);
the shares are not results (the threshold is set on the held-out runs
themselves).

    /usr/bin/python3 corpus/equal_alarms.py [--programs A,B,...] [--reference] [--point P] PRED.csv...
"""

import argparse
import csv

from mutations import CAUSES

SHARES = (0.03, 0.04, 0.05)


def load(path, programs=None, point="1.00", reference=False):
    rows = [r for r in csv.DictReader(open(path))
            if r["point"] == point and (not programs or r["program"] in programs)]
    if reference:
        rows = [dict(r, p_fault=r["p_fault_ref"], fault_threshold=r["ref_threshold"])
                for r in rows if r.get("reference", "0") != "0"]
    return rows


def truth(row):
    return set(row["labels"].split("|")) if row["labels"] else set()


def decide(row, threshold):
    if float(row["p_fault"]) < threshold:
        return set()
    p = {c: float(row["p_" + c]) for c in CAUSES}
    top = max(p.values())
    return {c for c in CAUSES if top > 0 and p[c] >= float(row["ratio"]) * top}


def macro_f1(rows, threshold_of):
    """(macro-F1 over the causes, share of healthy runs given a cause)."""
    tp = dict.fromkeys(CAUSES, 0)
    fp, fn = dict(tp), dict(tp)
    healthy = alarms = 0
    for r in rows:
        t, p = truth(r), decide(r, threshold_of(r))
        healthy += not t
        alarms += bool(not t and p)
        for c in CAUSES:
            tp[c] += c in p and c in t
            fp[c] += c in p and c not in t
            fn[c] += c in t and c not in p
    f1 = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if tp[c] else 0.0 for c in CAUSES]
    return sum(f1) / len(f1), alarms / max(healthy, 1)


def threshold_for(rows, share):
    """The lowest threshold that flags at most `share` of the healthy rows."""
    h = sorted((float(r["p_fault"]) for r in rows if not r["labels"]), reverse=True)
    k = int(share * len(h))
    return h[k] + 1e-12 if k < len(h) else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", default="")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--point", default="1.00")
    ap.add_argument("pred", nargs="+")
    a = ap.parse_args()
    programs = set(filter(None, a.programs.split(",")))
    print("| predictions | runs | product's thresholds | " +
          " | ".join("at %.0f%% false alarms" % (100 * s) for s in SHARES) + " |")
    print("|---|---|---|" + "---|" * len(SHARES))
    for path in a.pred:
        rows = load(path, programs, a.point, a.reference)
        cells = ["%.3f (%.1f%%)" % (m, 100 * f) for m, f in
                 [macro_f1(rows, lambda r: float(r["fault_threshold"]))] +
                 [macro_f1(rows, lambda r, t=threshold_for(rows, s): t) for s in SHARES]]
        print("| %s | %d | %s |" % (path, len(rows), " | ".join(cells)))


if __name__ == "__main__":
    main()
