"""What the run-by-run labels (corpus/relabel_rows.py) change, from the
held-out predictions of an evaluation on the relabelled rows: the
product's decision (with a reference run, a threshold per point) scored
against the relabelled rows' labels and against the committed rows'
(the configuration rule), and how often the runs whose label changed are
flagged. The 28 unlabelled variation runs are in neither (the relabelled
evaluation never saw them).

    /usr/bin/python3 corpus/relabel_rows.py > rows.csv
    build/client/dnnfaultctl evaluate rows.csv REPORT.md --references corpus/references.csv --predictions PRED.csv
    /usr/bin/python3 corpus/relabel_effect.py PRED.csv
"""

import argparse
import csv
import glob
import lzma
import os

from equal_alarms import macro_f1, truth

HERE = os.path.dirname(os.path.abspath(__file__))
POINTS = ("0.10", "0.25", "0.50", "1.00")


def committed_labels():
    labels = {}
    for path in glob.glob(os.path.join(HERE, "rows", "*.csv.xz")):
        with lzma.open(path, "rt") as f:
            r = csv.reader(f)
            next(r)
            for row in r:
                labels[(row[0], row[2])] = row[3]
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred")
    a = ap.parse_args()
    old = committed_labels()
    rows = [dict(r, p_fault=r["p_fault_ref"], fault_threshold=r["ref_threshold_at_point"])
            for r in csv.DictReader(open(a.pred)) if r.get("reference", "0") != "0"]
    print("| point | labels | macro-F1 | false alarms |")
    print("|---|---|---|---|")
    for point in POINTS:
        at = [r for r in rows if r["point"] == point]
        as_committed = [dict(r, labels=old[(r["run"], r["point"])]) for r in at]
        for name, rs in (("run by run", at), ("by configuration (committed)", as_committed)):
            m, fa = macro_f1(rs, lambda r: float(r["fault_threshold"]))
            print("| %s | %s | %.3f | %.1f%% |" % (point, name, m, 100 * fa))
    end = [r for r in rows if r["point"] == "1.00"]
    changed = [r for r in end if truth(r) != truth(dict(r, labels=old[(r["run"], r["point"])]))]
    hit = sum(float(r["p_fault"]) >= float(r["fault_threshold"]) for r in changed)
    print("\nruns relabelled faulty: %d, flagged at the end of training: %d" % (len(changed), hit))


if __name__ == "__main__":
    main()
