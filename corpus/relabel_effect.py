"""What the run-by-run labels (docs/corpus.md, Labels) change, from the
held-out predictions of an evaluation of the committed rows, which are
labelled run by run: the product's decision (with a reference run, a
threshold per point) scored against those labels and against each run's
configuration label (the manifests' `label`, the rule before), and how
often the runs whose label differs are flagged. The runs of healthy
variations that the run rule leaves unlabelled are in neither (the
evaluation never saw them).

    xz -dc corpus/rows/*.csv.xz | build/client/dnnfaultctl evaluate - REPORT.md \
        --references corpus/references.csv --predictions PRED.csv
    /usr/bin/python3 corpus/relabel_effect.py PRED.csv
"""

import argparse
import collections
import csv

import relabel_rows
from equal_alarms import SHARES, decide, macro_f1, threshold_for, truth

POINTS = ("0.10", "0.25", "0.50", "1.00")


def manifest_records():
    """{run id (text): its configuration's manifest record}"""
    _, _, runs = relabel_rows.read_rows()
    found, _ = relabel_rows.find_runs(runs)
    return {str(run): record for run, (record, _) in found.items()}


def alarms_by_kind(rows, records):
    """({kind of configuration: (healthy runs given a cause, healthy runs)},
    Counter of the operators, joined by '+', of the mutants' alarms) under
    each row's own threshold and ranking ratio."""
    kinds, operators = {}, collections.Counter()
    for r in rows:
        if truth(r):
            continue
        record = records[r["run"]]
        alarm = bool(decide(r, float(r["fault_threshold"])))
        alarms, healthy = kinds.get(record["kind"], (0, 0))
        kinds[record["kind"]] = (alarms + alarm, healthy + 1)
        if alarm and record["kind"] == "mutant":
            operators["+".join(o["op"] for o in record["operators"])] += 1
    return kinds, operators


def alarms_by_program(rows):
    """{program: (healthy runs given a cause, healthy runs)} under each
    row's own threshold and ranking ratio, programs in name order."""
    out = {}
    for program in sorted({r["program"] for r in rows}):
        healthy = [r for r in rows if r["program"] == program and not truth(r)]
        alarms = sum(bool(decide(r, float(r["fault_threshold"]))) for r in healthy)
        out[program] = (alarms, len(healthy))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred")
    a = ap.parse_args()
    records = manifest_records()
    old = {run: "|".join(record["label"]) for run, record in records.items()}
    rows = [dict(r, p_fault=r["p_fault_ref"], fault_threshold=r["ref_threshold_at_point"])
            for r in csv.DictReader(open(a.pred)) if r.get("reference", "0") != "0"]
    print("| point | labels | macro-F1 | false alarms |")
    print("|---|---|---|---|")
    for point in POINTS:
        at = [r for r in rows if r["point"] == point]
        as_configured = [dict(r, labels=old[r["run"]]) for r in at]
        for name, rs in (("run by run", at), ("by configuration", as_configured)):
            m, fa = macro_f1(rs, lambda r: float(r["fault_threshold"]))
            print("| %s | %s | %.3f | %.1f%% |" % (point, name, m, 100 * fa))
    end = [r for r in rows if r["point"] == "1.00"]
    changed = [r for r in end if truth(r) != truth(dict(r, labels=old[r["run"]]))]
    hit = sum(float(r["p_fault"]) >= float(r["fault_threshold"]) for r in changed)
    print("\nruns relabelled faulty: %d, flagged at the end of training: %d" % (len(changed), hit))
    # Ranking alone at the end of training: one threshold for all rows,
    # placed on the healthy runs of each labeling (not results; what
    # corpus/equal_alarms.py --reference gives for one labeling).
    as_configured = [dict(r, labels=old[r["run"]]) for r in end]
    for name, rs in (("run by run", end), ("by configuration", as_configured)):
        cells = ["%.3f (%.1f%%)" % (m, 100 * fa) for m, fa in
                 (macro_f1(rs, lambda r, t=threshold_for(rs, x): t) for x in SHARES)]
        print("%s, one threshold at %s false alarms: %s" % (
            name, "/".join("%.0f%%" % (100 * x) for x in SHARES), ", ".join(cells)))
    # Where the shipped decision's false alarms fall at the end of
    # training: a pooled share can hide one program that alarms often.
    print("\nfalse alarms by held-out program, run by run, end of training:")
    for program, (alarms, healthy) in alarms_by_program(end).items():
        print("  %-20s %3d of %3d (%.1f%%)" % (program, alarms, healthy,
                                              100 * alarms / max(healthy, 1)))
    # Which healthy runs they are: originals, healthy variations, or
    # mutants whose fault did not lower the final metric.
    kinds, operators = alarms_by_kind(end, records)
    print("\nfalse alarms by kind of run, run by run, end of training:")
    for kind, (alarms, healthy) in sorted(kinds.items()):
        print("  %-20s %3d of %4d (%.1f%%)" % (kind, alarms, healthy, 100 * alarms / max(healthy, 1)))
    print("  mutants' operators: " + ", ".join("%s %d" % kv for kv in operators.most_common()))


if __name__ == "__main__":
    main()
