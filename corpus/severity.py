"""How often the held-out detector finds a faulty run, by how much the fault
hurt: each faulty run's final metric against its original program's mean
(from the manifests), bucketed, with the share the detector flagged at the
end of training.

    build/client/dnnfaultctl evaluate STORE REPORT.md --predictions PRED.csv
    /usr/bin/python3 corpus/severity.py PRED.csv STORE MANIFEST.jsonl...

PRED.csv names runs by their store id, so the store the rows came from is
needed to find them in the manifests (by run uid).
"""

import csv
import json
import sqlite3
import sys

BUCKETS = [(-float("inf"), 0.05), (0.05, 0.10), (0.10, 0.20), (0.20, 0.40), (0.40, float("inf"))]


def main(pred, store, manifests):
    where = {}  # run uid: (record, seed index)
    for path in manifests:
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                for k, uid in enumerate(r["run_ids"]):
                    if uid:
                        where[uid] = (r, k)
    db = sqlite3.connect("file:%s?mode=ro" % store, uri=True)
    uid_of = dict(db.execute("SELECT id, uid FROM runs"))
    found = [[0, 0] for _ in BUCKETS]
    for row in csv.DictReader(open(pred)):
        if row["point"] != "1.00" or not row["labels"]:
            continue
        r, k = where[uid_of[int(row["run"])]]
        orig = sum(r["original_metrics"]) / len(r["original_metrics"])
        # Accuracy or R², higher is better; a diverged seed has NaN.
        m = r["metrics"][k]
        rel = (orig - m) / max(abs(orig), 1e-9) if m == m else float("inf")
        b = next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= rel < hi)
        found[b][0] += 1
        found[b][1] += float(row["p_fault"]) >= float(row["fault_threshold"])
    print("| relative drop of the final metric | faulty runs | flagged by the detector |")
    print("|---|---|---|")
    for (lo, hi), (n, hit) in zip(BUCKETS, found):
        span = "under %.0f%%" % (hi * 100) if lo == -float("inf") else \
            "%.0f%% or more" % (lo * 100) if hi == float("inf") else "%.0f-%.0f%%" % (lo * 100, hi * 100)
        print("| %s | %d | %s |" % (span, n, "%.2f" % (hit / n) if n else "-"))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
