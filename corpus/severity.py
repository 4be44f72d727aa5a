"""How often the held-out detector finds a faulty run, by how much the fault
hurt: each faulty run's final metric against its original program's mean
(from the manifests), bucketed, with the share the detector flagged at the
end of training. Then which healthy runs it flagged, by the kind of their
configuration: an original program, a healthy variation, or a mutant
whose fault did not hurt (a real fault in the program, labelled healthy by
the DeepCrime rule), with the operators most often flagged.

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


KINDS = (("original", "original programs"), ("neutral", "healthy variations"),
         ("mutant", "mutants whose fault did not hurt"))


def load(pred, store, manifests):
    """The held-out rows at the end of training, each with its manifest
    record and seed index."""
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
    db.close()
    return [(row,) + where[uid_of[int(row["run"])]]
            for row in csv.DictReader(open(pred)) if row["point"] == "1.00"]


def flagged(row):
    return float(row["p_fault"]) >= float(row["fault_threshold"])


def healthy_flagged(rows):
    """{kind: (healthy runs, flagged)} and {operators: flagged} over the
    healthy rows."""
    kinds, ops = {}, {}
    for row, r, _ in rows:
        if row["labels"]:
            continue
        n, hit = kinds.get(r["kind"], (0, 0))
        kinds[r["kind"]] = (n + 1, hit + flagged(row))
        if flagged(row) and r["kind"] == "mutant":
            name = "+".join(o["op"] for o in r["operators"])
            ops[name] = ops.get(name, 0) + 1
    return kinds, ops


def bucket(record, k):
    """The BUCKETS index of seed k's relative drop against the original's
    mean. Accuracy or R², higher is better; a diverged seed has NaN and
    counts as a drop of 100%."""
    orig = sum(record["original_metrics"]) / len(record["original_metrics"])
    m = record["metrics"][k]
    rel = (orig - m) / max(abs(orig), 1e-9) if m == m else 1.0
    return next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= rel < hi)


def main(pred, store, manifests):
    rows = load(pred, store, manifests)
    found = [[0, 0] for _ in BUCKETS]
    for row, r, k in rows:
        if not row["labels"]:
            continue
        b = bucket(r, k)
        found[b][0] += 1
        found[b][1] += flagged(row)
    print("| relative drop of the final metric | faulty runs | flagged by the detector |")
    print("|---|---|---|")
    for (lo, hi), (n, hit) in zip(BUCKETS, found):
        span = "under %.0f%%" % (hi * 100) if lo == -float("inf") else \
            "%.0f%% or more" % (lo * 100) if hi == float("inf") else "%.0f-%.0f%%" % (lo * 100, hi * 100)
        print("| %s | %d | %s |" % (span, n, "%.2f" % (hit / n) if n else "-"))
    kinds, ops = healthy_flagged(rows)
    print("\n| healthy runs of | runs | flagged by the detector |\n|---|---|---|")
    for kind, title in KINDS:
        n, hit = kinds.get(kind, (0, 0))
        print("| %s | %d | %s |" % (title, n, "%d (%.1f%%)" % (hit, 100 * hit / n) if n else "-"))
    top = sorted(ops.items(), key=lambda x: (-x[1], x[0]))[:8]
    print("\nflagged harmless mutants, by operators: " +
          ", ".join("%s %d" % (name, n) for name, n in top))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
