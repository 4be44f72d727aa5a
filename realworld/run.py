#!/usr/bin/env python3
"""The field test: trains every case of realworld/buggy.py with a few
seeds while a running dnnfaultd watches, then scores the live diagnosis
each run ended with. Run it through scripts/field-test.sh, which starts the
daemon with the default model bundle on a temporary socket and store.

A buggy run counts as a fault only when its bug hurt: its final validation
metric is below the mean of the same program's unchanged runs by more than
2% of that mean (or it is not finite). Bugs that did not hurt are listed,
not scored, as the corpus labels them (docs/corpus.md).

With --reference every run names a reference run, as a user who kept an
earlier healthy run of the program would (docs/features.md): the unchanged
runs of a program are trained first, seed 0 with no reference and every
other seed with seed 0 as its reference; a buggy run of seed s names the
unchanged run of seed (s + 1) mod seeds, so never one that started from
the same weights.
"""

import argparse
import csv
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
import time

HURT = 0.02


def final_diagnosis(ctl, address, run, timeout=60.0):
    """The run's last diagnosis, once the daemon has diagnosed its last step."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([ctl, "--address", address, "--json", "status", run],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out)["runs"][0]
        if r.get("diagnosed_step") == r.get("step") and r.get("state") != "running":
            return r
        if time.monotonic() > deadline:
            raise TimeoutError("no final diagnosis of %s: %s" % (run, out))
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address")
    ap.add_argument("--ctl", help="path of dnnfaultctl")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--db", help="the daemon's store: the rule-based baselines are read "
                    "from its feature rows (dnnfaultctl rows)")
    ap.add_argument("--cases", help="comma list of PROGRAM:BUG (none: unchanged) to run "
                    "instead of all")
    ap.add_argument("--json", help="also write every run's result here")
    ap.add_argument("--reference", action="store_true",
                    help="every run but the first unchanged one of a program names a reference run")
    ap.add_argument("--report", metavar="RESULTS.json",
                    help="print the tables of an earlier --json file; trains nothing")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        report(results, baseline_metrics(results))
        return
    if not args.address or not args.ctl:
        ap.error("--address and --ctl are needed to train")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import buggy  # needs dnnfault and torch; --report does not
    cases = buggy.CASES
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if "%s:%s" % (c[0], c[1] or "none") in wanted]
        if len(cases) != len(wanted):
            ap.error("--cases: unknown case among %s" % args.cases)

    if args.reference:
        # The references, the unchanged runs, first (a stable sort).
        cases = sorted(cases, key=lambda c: c[1] is not None)

    def name(program, bug, seed):
        return "%s-%s-%d" % (program, bug or "unchanged", seed)

    def reference_of(program, bug, seed):
        if not args.reference or (bug is None and seed == 0):
            return None
        return name(program, None, 0 if bug is None else (seed + 1) % args.seeds)

    results = []
    for program, bug, causes in cases:
        for seed in range(args.seeds):
            run = name(program, bug, seed)
            start = time.monotonic()
            metric = buggy.train(program, bug, seed, run, address=args.address,
                                 every=args.every, reference=reference_of(program, bug, seed))
            d = final_diagnosis(args.ctl, args.address, run)
            got = [c["id"] for c in d.get("causes", [])]
            results.append(dict(program=program, bug=bug, expected=causes, seed=seed,
                                run=run, id=d.get("id"), reference=d.get("reference"),
                                metric=metric, health=d.get("health"), causes=got,
                                probabilities=[round(c["probability"], 3)
                                               for c in d.get("causes", [])],
                                symptoms=[s["id"] for s in d.get("symptoms", [])],
                                seconds=round(time.monotonic() - start, 1)))
            print("%-40s metric %9.3g  %-8s %s" % (run, metric, d.get("health"),
                                                   ",".join(got) or "-"),
                  file=sys.stderr, flush=True)
    base = baseline_metrics(results)
    for r in results:
        r["hurt"] = r["bug"] is not None and hurt(r, base)
    if args.db:
        baselines(results, args.ctl, args.address, args.db)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    report(results, base)


def baseline_metrics(results):
    """Each program's mean final metric over its unchanged runs."""
    base = {}
    for r in results:
        if r["bug"] is None and math.isfinite(r["metric"]):
            base.setdefault(r["program"], []).append(r["metric"])
    return {p: sum(v) / len(v) for p, v in base.items()}


def hurt(r, base):
    m, b = r["metric"], base[r["program"]]
    return not math.isfinite(m) or m < b - HURT * abs(b)


BASELINES = ("autotrainer", "deepdiagnosis", "umlaut")


def baselines(results, ctl, address, db):
    """Labels every run by the outcome (its bug's causes if it hurt, else
    healthy), exports the store's feature rows, and keeps each rule-based
    tool's conclusion at the end of training (daemon/baselines/, the same
    code as the corpus evaluation)."""
    for r in results:
        causes = r["expected"] if r["hurt"] else ["healthy"]
        subprocess.run([ctl, "--address", address, "label", r["run"]] + causes, check=True,
                       stdout=subprocess.DEVNULL)
    rows = subprocess.run([ctl, "rows", db], check=True, capture_output=True,
                          text=True).stdout
    end = {}
    for row in csv.DictReader(io.StringIO(rows)):
        if row["point"] == "1.00":
            end[int(row["run"])] = {b: [c for c in row[b].split("|") if c] for b in BASELINES}
    # the rows name runs by the store's row id; the daemon's status by uid
    with sqlite3.connect("file:%s?mode=ro" % db, uri=True) as store:
        row_id = dict(store.execute("SELECT uid, id FROM runs"))
    for r in results:
        r["baselines"] = end[row_id[r["id"]]]


def report(results, base):
    """One line per case (its seeds together), then the scores."""
    cases = {}
    for r in results:
        cases.setdefault((r["program"], r["bug"]), []).append(r)
    tools = [b for b in BASELINES if "baselines" in results[0]]
    print("| program | bug | expected | final metric, median (unchanged: mean) | hurt "
          "| dnnfault: faulty / suspect / healthy | dnnfault's first cause |" +
          "".join(" %s: a true cause |" % t for t in tools))
    print("|---|---|---|---|---|---|---|" + "---|" * len(tools))
    for (program, bug), runs in cases.items():
        metrics = sorted(r["metric"] if math.isfinite(r["metric"]) else -math.inf for r in runs)
        firsts = sorted({r["causes"][0] for r in runs if r["causes"]})
        print("| %s | %s | %s | %.3g (%.3g) | %s | %d / %d / %d | %s |" % (
            program, bug or "none", ", ".join(runs[0]["expected"]) or "none",
            metrics[len(metrics) // 2], base[program],
            "-" if bug is None else "%d of %d" % (sum(r["hurt"] for r in runs), len(runs)),
            sum(r["health"] == "faulty" for r in runs),
            sum(r["health"] == "suspect" for r in runs),
            sum(r["health"] == "healthy" for r in runs), ", ".join(firsts) or "-") +
            "".join(" %d |" % sum(bool(set(r["baselines"][t] or []) & set(r["expected"]))
                                  for r in runs) for t in tools))

    # Runs without a reference (the first unchanged ones under --reference)
    # are scored too: they are judged as they would be without the option.
    healthy = [r for r in results if r["bug"] is None]
    faulty = [r for r in results if r["hurt"]]
    harmless = [r for r in results if r["bug"] is not None and not r["hurt"]]
    flagged = [r for r in faulty if r["health"] == "faulty"]
    print()
    print("unchanged runs: %d, flagged faulty %d, suspect %d" % (
        len(healthy), sum(r["health"] == "faulty" for r in healthy),
        sum(r["health"] == "suspect" for r in healthy)))
    print("buggy runs that hurt: %d; flagged faulty %d; suspect %d; a true cause reported %d; "
          "a true cause first %d" % (
              len(faulty), len(flagged), sum(r["health"] == "suspect" for r in faulty),
              sum(bool(set(r["causes"]) & set(r["expected"])) for r in flagged),
              sum(bool(r["causes"]) and r["causes"][0] in r["expected"] for r in flagged)))
    print("buggy runs that did not hurt: %d; flagged faulty %d" % (
        len(harmless), sum(r["health"] == "faulty" for r in harmless)))
    if "baselines" not in results[0]:
        return

    def true_found(causes, r):
        return bool(set(causes) & set(r["expected"]))
    print()
    print("| method | unchanged runs given a cause | hurt runs given a cause | "
          "hurt runs given a true cause | causes per hurt run given any |")
    print("|---|---|---|---|---|")
    methods = [("dnnfault (faulty)", lambda r: r["causes"] if r["health"] == "faulty" else []),
               ("dnnfault (faulty or suspect)",
                lambda r: r["causes"] if r["health"] in ("faulty", "suspect") else [])]
    methods += [(b, lambda r, b=b: r["baselines"][b] or []) for b in BASELINES]
    for name, said in methods:
        given = [r for r in faulty if said(r)]
        print("| %s | %d of %d | %d of %d | %d of %d | %.1f |" % (
            name, sum(bool(said(r)) for r in healthy), len(healthy), len(given), len(faulty),
            sum(true_found(said(r), r) for r in faulty), len(faulty),
            sum(len(said(r)) for r in given) / max(1, len(given))))


if __name__ == "__main__":
    main()
