#!/usr/bin/python3
"""Which held-out runs the reference detector flags, by how far each run's
validation metric fell short of its reference's (`dnnfaultctl evaluate
... --predictions PRED.csv`, the `shortfall` column, positive when worse):
healthy and faulty runs per bucket, and how many of them the threshold per
point flags, and the threshold per point with the outcome check
(docs/model.md). Then the check's shortfall that each held-out program was
judged by. Rows with a reference only, at one point of progress (the end
unless --point).

    /usr/bin/python3 corpus/shortfall.py [--point P] PRED.csv
"""

import argparse
import csv
import math

BUCKETS = ((-math.inf, 0.03), (0.03, 0.10), (0.10, 0.30), (0.30, math.inf))


def bucket_of(shortfall):
    """The label of the bucket `shortfall` falls in ("none": NaN)."""
    if math.isnan(shortfall):
        return "none"
    for lo, hi in BUCKETS:
        if lo <= shortfall < hi:
            return "below 0.03" if lo == -math.inf else "0.30 or more" if hi == math.inf else "%.2f-%.2f" % (lo, hi)
    return "none"


def flags(row):
    """(flagged by the threshold per point, flagged with the outcome check)."""
    p, s = float(row["p_fault_ref"]), float(row["shortfall"])
    per_point = p >= float(row["ref_threshold_at_point"])
    checked = s >= float(row["ref_shortfall_at_point"]) or p >= float(row["ref_shortfall_threshold_at_point"])
    return per_point, checked


def tally(rows):
    """{bucket: [healthy, flagged per point, flagged with the check,
    faulty, flagged per point, flagged with the check]}."""
    out = {}
    for r in rows:
        t = out.setdefault(bucket_of(float(r["shortfall"])), [0] * 6)
        base = 3 if r["labels"] else 0
        per_point, checked = flags(r)
        t[base] += 1
        t[base + 1] += per_point
        t[base + 2] += checked
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--point", default="1.00")
    ap.add_argument("pred")
    args = ap.parse_args()
    rows = [r for r in csv.DictReader(open(args.pred))
            if r["point"] == args.point and r.get("reference", "0") != "0"]
    print("| shortfall | healthy runs | flagged, threshold per point | with the outcome check "
          "| faulty runs | flagged, threshold per point | with the outcome check |")
    print("|---|---|---|---|---|---|---|")
    order = [bucket_of(lo if lo > -math.inf else 0) for lo, _ in BUCKETS] + ["none"]
    t = tally(rows)
    total = [0] * 6
    for b in order:
        if b in t:
            print("| %s | %s |" % (b, " | ".join(str(v) for v in t[b])))
            total = [a + v for a, v in zip(total, t[b])]
    print("| all | %s |" % " | ".join(str(v) for v in total))
    checks = {}
    for r in rows:
        checks[r["program"]] = r["ref_shortfall_at_point"]
    print("\nthe outcome check's shortfall at point %s, by held-out program: %s" % (
        args.point, ", ".join("%s %s" % kv for kv in sorted(checks.items()))))


if __name__ == "__main__":
    main()
