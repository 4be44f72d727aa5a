"""Generates the fault corpus: healthy base programs, healthy variations and
mutants with injected faults, each trained with several seeds while
dnnfault watches it, then labelled by whether the change really hurt.

    PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \\
    /usr/bin/python3 corpus/generate.py --configs 800 --seed 1 --workers 2 \\
        --address unix:/path/to/dnnfaultd.sock --manifest corpus/manifest.jsonl

Labelling rule (DeepCrime / DeepFD): a mutant is faulty when its final
validation metric over the seeds is significantly worse than the original's
(Cohen's d >= 0.5 and one-sided Welch t-test p < 0.05) or when it diverges
(NaN/Inf loss) in the majority of seeds; then its runs are labelled with the
mutant's causes. A mutant that does not hurt is labelled healthy, except
for any of its runs that itself ended significantly and materially worse
than the original (worse_runs: below the one-sided 95% prediction interval
of the original's seeds under Holm's correction over the configuration's
runs, and at least 5% below their mean; or with no finite final metric):
that run is faulty with the mutant's causes (`--runs run`, the default
since 2026-11-28; `--runs configuration` labels every run by its
configuration, as before). A healthy variation that hurts is left
unlabelled (it is no clean example of either), and so is a single run of a
healthy variation that is worse in that sense.
With `--unproven unlabelled`, a mutant (or variation) worse by a medium or
large effect (d >= 0.5) that five seeds cannot show to be significant is
left unlabelled too instead of healthy: tried on 2026-11-26 and not kept
(docs/corpus.md). Labels are set on the daemon's runs with `dnnfaultctl
label`; corpus/relabel.py applies a rule again to configurations already
trained.

After a change to how some operators are trained, `--redo OP,... --store
PATH` trains again only the configurations of the manifest that use one of
those operators (same plan, same seeds), replaces their manifest lines, and
deletes their earlier runs from the store (the daemon's SQLite file; it may
keep running). Each configuration is replaced as soon as it is done, so an
interrupted redo leaves a consistent corpus; running it again redoes them all.
"""

import argparse
import copy
import json
import math
import multiprocessing
import os
import random
import sqlite3
import subprocess
import sys
import time

import numpy as np
from scipy import stats as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mutations  # noqa: E402
import programs  # noqa: E402

SEEDS = 5
MULTI_FAULT_SHARE = 0.2


def plan(n_configs, seed, names=None, operators=None):
    """The configs to train: originals first, then variations and mutants,
    of the programs named (default: all of programs.PROGRAMS). With
    operators (names), a supplement: no variations, and every mutant's
    first fault drawn among those operators only."""
    rng = random.Random(seed)
    names = sorted(names or programs.PROGRAMS)
    out = [dict(kind="original", program=p, operators=[]) for p in names]
    n_neutral = 0 if operators else max(0, round((n_configs - len(out)) * 0.12))
    for i in range(n_neutral):
        out.append(dict(kind="neutral", program=names[i % len(names)], operators=[]))
    causes = mutations.CAUSES
    if operators:
        causes = [c for c in causes if any(op.cause == c and op.name in operators
                                           for op in mutations.OPERATORS)]
    i = 0
    while len(out) < n_configs:
        cause = causes[i % len(causes)]
        i += 1
        fits = [p for p in names
                if mutations.applicable(programs.base_config(p), cause, seed, operators)]
        if not fits:
            raise ValueError("no program among %s takes a %s fault%s" % (
                ",".join(names), cause,
                " from " + ",".join(sorted(operators)) if operators else ""))
        program = rng.choice(fits)
        faults = [cause]
        if rng.random() < MULTI_FAULT_SHARE:
            others = [c for c in mutations.CAUSES if c != cause]
            faults += rng.sample(others, rng.choice([1, 2]))
        out.append(dict(kind="mutant", program=program, faults=faults, operators=[]))
    # Interleaved, so that any prefix of the plan is a representative corpus.
    rest = out[len(names):]
    rng.shuffle(rest)
    out = out[:len(names)] + rest
    for k, item in enumerate(out):
        item["config_id"] = k
        item["rng_seed"] = rng.randrange(2 ** 31)
        item["plan_seed"], item["plan_operators"] = seed, operators
    return out


def materialize(item):
    """Applies the item's operators to its program's base config."""
    rng = random.Random(item["rng_seed"])
    config = programs.base_config(item["program"])
    if item["kind"] == "neutral":
        item["operators"] = [dict(op="neutral", cause=None, **mutations.neutral(config, rng))]
    for k, cause in enumerate(item.get("faults", [])):
        # The first fault is the supplement's; further ones from any operator.
        ops = mutations.applicable(config, cause, item.get("plan_seed"),
                                   item.get("plan_operators") if k == 0 else None)
        if not ops:
            continue
        op = rng.choice(ops)
        item["operators"].append(dict(op=op.name, cause=cause, **op(config, rng)))
    item["causes"] = sorted({o["cause"] for o in item["operators"] if o["cause"]})
    return config


def _train_job(args):
    config, seed, name, address = args
    import torch
    torch.set_num_threads(1)
    import train
    try:
        return train.train(config, seed, name, address=address)
    except Exception as e:  # a mutant that cannot even run is still data
        return dict(metric=float("nan"), diverged=True, run_id=None, steps=0, seconds=0,
                    error="%s: %s" % (type(e).__name__, e))


def verdict(original, mutant, diverged_share):
    """(faulty, cohen_d, p) for final metrics of the original and a mutant."""
    a = np.array([m for m in original if math.isfinite(m)])
    b = np.array([m for m in mutant if math.isfinite(m)])
    if diverged_share > 0.5 or len(b) < 2:
        return True, float("inf"), 0.0
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    diff = a.mean() - b.mean()
    d = diff / pooled if pooled > 0 else (float("inf") if diff > 0 else 0.0)
    p = st.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue if pooled > 0 else \
        (0.0 if diff > 0 else 1.0)
    return bool(d >= 0.5 and p < 0.05), float(d), float(p)


UNPROVEN = ("healthy", "unlabelled")


def label_of(kind, causes, faulty, d, unproven="healthy"):
    """A configuration's label: its causes (faulty), [] (healthy) or None
    (left unlabelled), from its verdict. kind: original, mutant or neutral;
    unproven: the label of a configuration worse by d >= 0.5 without
    significance (UNPROVEN)."""
    if kind == "original":
        return []
    hurts = faulty or (unproven == "unlabelled" and d >= 0.5)
    if kind == "neutral":
        return None if hurts else []
    return list(causes) if faulty else None if hurts else []


RUN_RULES = ("configuration", "run")
RUN_ALPHA = 0.05  # family-wise, over the runs of one configuration (Holm)
RUN_FLOOR = 0.05  # the least drop, relative to the original's mean, that labels a run


def run_p(metric, original):
    """One-sided p-value of one run's final metric under the original's
    seeds: Student's t for a new observation (the prediction interval,
    the one-run counterpart of the configuration's t-test), and its drop
    relative to their mean. A run with no finite final metric has p = 0
    and an infinite drop; with fewer than two finite seeds nothing is
    significant."""
    if metric is None or not math.isfinite(metric):
        return 0.0, math.inf
    a = np.array([m for m in original if m is not None and math.isfinite(m)])
    if len(a) < 2:
        return 1.0, 0.0
    mean, sd = a.mean(), a.std(ddof=1)
    drop = (mean - metric) / abs(mean) if mean else mean - metric
    if sd == 0:
        return (0.0 if metric < mean else 1.0), drop
    return float(st.t.cdf((metric - mean) / (sd * math.sqrt(1 + 1 / len(a))), len(a) - 1)), drop


def worse_runs(metrics, original, alpha=RUN_ALPHA, floor=RUN_FLOOR):
    """Which runs of one configuration ended significantly and materially
    worse than the original's seeds: significant by run_p under Holm's
    step-down correction over the configuration's runs (so that the
    chance of relabelling any run of a mutant that changed nothing is at
    most alpha, not alpha per run), and at least floor below the
    original's mean (relative), the effect-size counterpart of the
    configuration's d >= 0.5. A run with no finite final metric is
    always worse. The floor is relative, so for an original whose mean
    is near zero (an R^2 near 0; none in the corpus, whose lowest is
    0.44) it passes almost any significant drop, and at exactly zero it
    is 0.05 in the metric's units."""
    tested = [run_p(m, original) for m in metrics]
    order = sorted(range(len(tested)), key=lambda k: tested[k][0])
    worse = [False] * len(tested)
    for rank, k in enumerate(order):
        if tested[k][0] > alpha / (len(tested) - rank):
            break  # Holm: the first acceptance ends the rejections
        worse[k] = tested[k][1] >= floor
    return worse


def run_labels(kind, label, causes, metrics, original, rule="run"):
    """Each run's label. "configuration": its configuration's (label_of).
    "run": besides, a run of a mutant labelled healthy that itself ended
    significantly and materially worse than its original (worse_runs) is
    faulty with the mutant's causes, and such a run of a healthy
    variation is left unlabelled, as a variation that hurts is."""
    if rule == "configuration" or label != [] or kind == "original":
        return [label] * len(metrics)
    hurt = None if kind == "neutral" else [c for c in causes if c]
    return [hurt if w else [] for w in worse_runs(metrics, original)]


def label_runs(ctl, address, run_ids, causes):
    for rid in run_ids:
        if rid is None:
            continue
        cmd = [ctl, "--address", address, "label", rid] + (causes or ["healthy"])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def delete_runs(store, run_ids):
    """Removes runs (by their client-side ids) and everything stored for
    them; SQLite's locking makes this safe beside a running daemon."""
    ids = [r for r in run_ids if r]
    db = sqlite3.connect(store, timeout=60)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        with db:
            db.executemany("DELETE FROM runs WHERE uid = ?", [(r,) for r in ids])
    finally:
        db.close()


def read_manifest(path):
    """A manifest's records by config_id, in file order (JSON lines)."""
    records = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                records[r["config_id"]] = r
    return records


def write_manifest(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for cid in sorted(records):
            f.write(json.dumps(records[cid]) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=int, default=800, help="configs; each is trained %d times" % SEEDS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--address", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--programs", default="",
                    help="comma list of base programs (default: all; the corpus of seeds 1 "
                         "and 2 was planned over programs.FIRST_PROGRAMS)")
    ap.add_argument("--operators", default="",
                    help="comma list of operators: a supplement in which every mutant's first "
                         "fault is one of them, without healthy variations (docs/corpus.md)")
    ap.add_argument("--ctl", default=os.environ.get("DNNFAULTCTL", "build/client/dnnfaultctl"))
    ap.add_argument("--unproven", choices=UNPROVEN, default="healthy",
                    help="label of a configuration worse by d >= 0.5 without significance "
                         "(default healthy, the DeepCrime/DeepFD rule)")
    ap.add_argument("--runs", choices=RUN_RULES, default="run",
                    help="run (default): a harmless mutant's run that is itself significantly "
                         "and materially worse is faulty (worse_runs); configuration: every run gets its "
                         "configuration's label, the rule until 2026-11-28")
    ap.add_argument("--redo", default="",
                    help="comma list of operators: train their configs again (needs --store)")
    ap.add_argument("--store", help="the daemon's database, where --redo deletes replaced runs")
    args = ap.parse_args()
    redo_ops = {o for o in args.redo.split(",") if o}
    unknown = redo_ops - {o.name for o in mutations.OPERATORS}
    if unknown or (redo_ops and not args.store):
        ap.error("--redo: unknown operator %s" % ",".join(sorted(unknown)) if unknown
                 else "--redo needs --store")

    names = [p for p in args.programs.split(",") if p]
    unknown_programs = [p for p in names if p not in programs.PROGRAMS]
    if unknown_programs:
        ap.error("--programs: unknown program %s" % ",".join(unknown_programs))
    plan_ops = {o for o in args.operators.split(",") if o} or None
    bad = sorted((plan_ops or set()) - {o.name for o in mutations.OPERATORS
                                         if o.since <= args.seed})
    if bad:
        ap.error("--operators: %s is unknown or not drawn by plans of seed %d" % (
            ",".join(bad), args.seed))
    try:
        items = plan(args.configs, args.seed, names, plan_ops)
    except ValueError as e:
        ap.error(str(e))
    # Resuming: configs in the manifest are done; originals give their metrics.
    done, originals, records = set(), {}, {}
    if os.path.exists(args.manifest):
        records = read_manifest(args.manifest)
        for r in records.values():
            if r["kind"] == "original":
                originals[r["program"]] = r["metrics"]
            if not redo_ops & {o["op"] for o in r["operators"]}:
                done.add(r["config_id"])
    planned = {it["config_id"]: it["program"] for it in items}
    stray = sorted(cid for cid, r in records.items() if planned.get(cid) != r["program"])
    if stray:
        sys.exit("%s: config %d was not planned by --configs %d --seed %d --programs %s "
                 "--operators %s; resume with the arguments that made it" % (
                     args.manifest, stray[0], args.configs, args.seed, args.programs or "(all)",
                     args.operators or "(all)"))
    if redo_ops:
        # Only the configs of the manifest: the others are not this redo's.
        items = [it for it in items if it["config_id"] in records]
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool, \
            open(args.manifest, "a") as manifest:
        for item in items:
            config = materialize(item)
            if item["config_id"] in done:
                continue
            name = "%s-%05d" % (item["program"], item["config_id"])
            jobs = [(copy.deepcopy(config), s, "%s-s%d" % (name, s), args.address)
                    for s in range(SEEDS)]
            results = pool.map(_train_job, jobs)
            metrics = [r["metric"] for r in results]
            diverged = sum(r["diverged"] for r in results) / SEEDS
            run_ids = [r["run_id"] for r in results]
            if item["kind"] == "original":
                originals[item["program"]] = metrics
                faulty, d, p = False, 0.0, 1.0
            else:
                faulty, d, p = verdict(originals[item["program"]], metrics, diverged)
            label = label_of(item["kind"], item.get("causes", []), faulty, d, args.unproven)
            per_run = run_labels(item["kind"], label, item.get("causes", []), metrics,
                                 originals[item["program"]], args.runs)
            for run_id, run_label in zip(run_ids, per_run):
                if run_label is not None:
                    label_runs(args.ctl, args.address, [run_id], run_label)
            record = dict(config_id=item["config_id"], kind=item["kind"], program=item["program"],
                          operators=item["operators"], causes=item.get("causes", []),
                          label=label, run_labels=per_run, faulty=faulty, cohen_d=d, p=p,
                          diverged_share=diverged,
                          metrics=metrics, original_metrics=originals[item["program"]],
                          seeds=list(range(SEEDS)), run_ids=run_ids,
                          seconds=[r["seconds"] for r in results],
                          errors=[r.get("error") for r in results if r.get("error")])
            old = records.get(item["config_id"])
            if old is not None:
                # A redo: the new runs replace the old ones, in the manifest
                # and in the store.
                records[item["config_id"]] = record
                write_manifest(args.manifest, records)
                delete_runs(args.store, old["run_ids"])
            else:
                manifest.write(json.dumps(record) + "\n")
                manifest.flush()
            print("[%6.0fs] %4d/%d %-18s %-40s %s" % (
                time.monotonic() - start, item["config_id"] + 1, len(items), item["program"],
                ",".join(o["op"] for o in item["operators"]) or item["kind"],
                "faulty" if faulty else "healthy" if label == [] else "unlabelled"), flush=True)


if __name__ == "__main__":
    main()
