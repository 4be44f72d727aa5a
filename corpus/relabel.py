"""Applies the labelling rule (generate.label_of) again to configurations
already trained, after a change of the rule: each manifest record's label
is recomputed from its recorded verdict, the manifest is rewritten where
a label changed, and the labels of all its runs are set in the store (so
that the store agrees with the manifests). No run is trained again.

    /usr/bin/python3 corpus/relabel.py [--unproven healthy|unlabelled] [--runs configuration|run] STORE MANIFEST...

(--unproven, --runs: as generate.py's; default healthy and run, the committed corpus's
rule. For an experiment with the other, work on copies of the store and
the manifests.)

STORE is the daemon's SQLite file (it may keep running: SQLite's locking
makes the update safe); a label of None is stored as NULL (unknown), as
for a run nobody labelled.
"""

import argparse
import collections
import json
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate  # noqa: E402


def stored(label):
    """runs.labels as `dnnfaultctl label` writes it: causes joined with
    commas, '' for healthy, NULL for unknown."""
    return None if label is None else ",".join(label)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unproven", choices=generate.UNPROVEN, default="healthy")
    ap.add_argument("--runs", choices=generate.RUN_RULES, default="run")
    ap.add_argument("store")
    ap.add_argument("manifests", nargs="+")
    args = ap.parse_args()
    db = sqlite3.connect(args.store, timeout=60)
    changes = collections.Counter()
    for path in args.manifests:
        records = generate.read_manifest(path)
        changed = False
        with db:  # one transaction per manifest
            for r in records.values():
                label = generate.label_of(r["kind"], r.get("causes", []), r["faulty"],
                                          r["cohen_d"], args.unproven)
                per_run = generate.run_labels(r["kind"], label, r.get("causes", []), r["metrics"],
                                              r["original_metrics"], args.runs)
                if label != r["label"]:
                    changes[(r["kind"], json.dumps(r["label"]), json.dumps(label))] += 1
                for old, new in zip(r.get("run_labels", [r["label"]] * len(per_run)), per_run):
                    if old != new:
                        changes[(r["kind"] + " run", json.dumps(old), json.dumps(new))] += 1
                if label != r["label"] or per_run != r.get("run_labels"):
                    r["label"], r["run_labels"] = label, per_run
                    changed = True
                # Every run, changed or not: the store then agrees with the
                # manifest even where it did not before (a restored manifest).
                for uid, run_label in zip(r["run_ids"], per_run):
                    if uid:
                        db.execute("UPDATE runs SET labels = ? WHERE uid = ?", (stored(run_label), uid))
        if changed:
            generate.write_manifest(path, records)
    for (kind, old, new), n in sorted(changes.items()):
        print("%-12s %-10s -> %-10s %4d %s" % (kind, old, new, n,
                                                "runs" if kind.endswith(" run") else "configurations"))


if __name__ == "__main__":
    main()
