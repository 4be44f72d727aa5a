"""Counts of a corpus manifest: runs per label (each run's own), cause and base program, and
the kill rate of every operator (the share of its mutants that really hurt).

    /usr/bin/python3 corpus/summarize.py corpus/manifest.jsonl
"""

import collections
import json
import sys

import mutations


def main(path):
    records = [json.loads(line) for line in open(path) if line.strip()]
    runs = collections.Counter()
    per_cause = collections.Counter()
    per_program = collections.defaultdict(collections.Counter)
    tried = collections.Counter()
    killed = collections.Counter()
    seconds = 0.0
    for r in records:
        seconds += sum(r["seconds"])
        # Each run by its own label (run_labels: docs/corpus.md, Labels);
        # manifests written before run_labels label every run by its configuration.
        for label in r.get("run_labels") or [r["label"]] * len(r["run_ids"]):
            kind = "unlabelled" if label is None else "healthy" if label == [] else "faulty"
            runs[kind] += 1
            per_program[r["program"]][kind] += 1
            for cause in label or []:
                per_cause[cause] += 1
        if r["kind"] == "mutant":
            for op in r["operators"]:
                tried[op["op"]] += 1
                killed[op["op"]] += bool(r["faulty"])
    print("%d configurations, %d runs: %d faulty, %d healthy, %d unlabelled; %.0f s of training"
          % (len(records), sum(runs.values()), runs["faulty"], runs["healthy"], runs["unlabelled"],
             seconds))
    print("\nfaulty runs per cause")
    for cause in mutations.CAUSES:
        print("  %-15s %5d" % (cause, per_cause[cause]))
    print("\nruns per base program (faulty / healthy / unlabelled)")
    for program in sorted(per_program):
        c = per_program[program]
        print("  %-18s %5d %5d %5d" % (program, c["faulty"], c["healthy"], c["unlabelled"]))
    print("\nkill rate per operator (mutants that hurt / mutants; multi-fault mutants count for each)")
    for op in mutations.OPERATORS:
        if tried[op.name]:
            print("  %-22s %-15s %3d/%-3d %5.1f%%" % (op.name, op.cause, killed[op.name], tried[op.name],
                                                   100.0 * killed[op.name] / tried[op.name]))


if __name__ == "__main__":
    main(sys.argv[1])
