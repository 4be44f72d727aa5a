"""The corpus pipeline end to end on a small corpus: base programs and
mutants train while a real dnnfaultd watches them, get labelled by the
significance rule, and the labels land on the daemon's runs."""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CTL, ROOT

sys.path.insert(0, os.path.join(ROOT, "corpus"))
import generate  # noqa: E402
import programs  # noqa: E402
import equal_alarms  # noqa: E402
import relabel_effect  # noqa: E402
import severity  # noqa: E402
import shortfall  # noqa: E402
import reference_check  # noqa: E402

# Every program's original, then mutants for the first causes.
CONFIGS = len(programs.PROGRAMS) + 3


def test_small_corpus(daemon, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client", "python"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", str(CONFIGS), "--seed", "3", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL],
                       env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [x["config_id"] for x in records] == list(range(CONFIGS))
    originals = [x for x in records if x["kind"] == "original"]
    assert len(originals) == len(programs.PROGRAMS)
    assert all(x["label"] == [] for x in originals)
    # The base programs reach a good quality (accuracy or R^2).
    for x in originals:
        floor = 0.3 if programs.PROGRAMS[x["program"]]["task"] == "regression" else 0.8
        assert min(x["metrics"]) > floor, (x["program"], x["metrics"])
    mutants = [x for x in records if x["kind"] == "mutant"]
    assert mutants and all(x["operators"] and x["causes"] for x in mutants)
    # Every run of a labelled config carries its label in the store: its
    # configuration's, or its own by the run-by-run rule.
    for x in records:
        assert x["run_labels"] == generate.run_labels(x["kind"], x["label"], x["causes"],
                                                      x["metrics"], x["original_metrics"], "run")
        for run_id, label in zip(x["run_ids"], x["run_labels"]):
            if label is None:
                continue
            run = daemon.status(run_id)
            assert run["labels"] == label, (run_id, run["labels"], label)
            assert run["state"] == "completed"
            assert run["steps_stored"] > 0
    # Resuming with the same manifest does no work twice.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", str(CONFIGS), "--seed", "3", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    assert len(manifest.read_text().splitlines()) == CONFIGS
    # Another plan does not resume this manifest.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", str(CONFIGS), "--seed", "4", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "was not planned" in r.stderr, r.stderr

    # --redo trains the configs of an operator again: new runs with the
    # same label replace the old ones, in the manifest and in the store.
    mutant = mutants[0]
    op = mutant["operators"][0]["op"]
    redone = [x for x in records if op in [o["op"] for o in x["operators"]]]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", str(CONFIGS), "--seed", "3", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL,
                        "--redo", op, "--store", daemon.db],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    after = {x["config_id"]: x for x in map(json.loads, manifest.read_text().splitlines())}
    assert sorted(after) == list(range(CONFIGS))
    for x in records:
        y = after[x["config_id"]]
        if x in redone:
            assert set(y["run_ids"]).isdisjoint(x["run_ids"])
            assert y["label"] == x["label"] and y["metrics"] == x["metrics"]
            assert y["run_labels"] == x["run_labels"]
            for old, new, label in zip(x["run_ids"], y["run_ids"], y["run_labels"]):
                assert daemon.ctl("status", old, check=False).returncode == 4
                if label is not None:
                    assert daemon.status(new)["labels"] == label
        else:
            assert y == x

    # relabel.py applies a rule again to what was trained: with
    # --unproven unlabelled, a verdict of an effect without significance
    # leaves the runs unlabelled (NULL).
    target = dict(after[mutant["config_id"]], faulty=False, cohen_d=0.8, p=0.2)
    after[mutant["config_id"]] = target
    manifest.write_text("".join(json.dumps(after[c]) + "\n" for c in sorted(after)))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "relabel.py"),
                        "--unproven", "unlabelled", "--runs", "configuration", daemon.db,
                        str(manifest)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    final = {x["config_id"]: x for x in map(json.loads, manifest.read_text().splitlines())}
    assert final[mutant["config_id"]]["label"] is None
    for c, x in final.items():
        assert x["label"] == generate.label_of(x["kind"], x["causes"], x["faulty"],
                                               x["cohen_d"], "unlabelled")
        assert x["run_labels"] == [x["label"]] * len(x["run_ids"])
        assert dict(x, label=None, run_labels=None) == dict(after[c], label=None, run_labels=None)
        for run_id in x["run_ids"]:
            assert daemon.status(run_id).get("labels") == x["label"]

    # By default (--runs run), a harmless mutant's run that itself ended far below
    # the original is faulty with the mutant's causes, alone of its five.
    original = next(x for x in final.values() if x["kind"] == "original"
                    and x["program"] == mutant["program"])
    metrics = list(original["metrics"])
    metrics[2] = min(metrics) - 10 * (max(metrics) - min(metrics)) - 1.0
    final[mutant["config_id"]] = dict(final[mutant["config_id"]], faulty=False, cohen_d=0.1,
                                      p=0.5, metrics=metrics)
    manifest.write_text("".join(json.dumps(final[c]) + "\n" for c in sorted(final)))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "relabel.py"),
                        daemon.db, str(manifest)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    per_run = {x["config_id"]: x for x in map(json.loads, manifest.read_text().splitlines())}
    x = per_run[mutant["config_id"]]
    assert x["label"] == [] and x["run_labels"] == [[], [], mutant["causes"], [], []]
    assert [daemon.status(u).get("labels") for u in x["run_ids"]] == x["run_labels"]


def test_label_rule():
    """Faulty: significant (the verdict). By default (DeepCrime/DeepFD) a
    mutant that is not is healthy, a variation that hurts unlabelled. With
    unproven="unlabelled" an effect of d >= 0.5 without significance is
    unlabelled too."""
    causes = ["lr_high"]
    for rule in generate.UNPROVEN:
        assert generate.label_of("original", [], False, 0.0, rule) == []
        assert generate.label_of("mutant", causes, True, 1.3, rule) == causes
        assert generate.label_of("mutant", causes, True, float("inf"), rule) == causes  # diverged
        assert generate.label_of("mutant", causes, False, 0.49, rule) == []
        assert generate.label_of("mutant", causes, False, -2.0, rule) == []  # better
        assert generate.label_of("neutral", [], True, 1.0, rule) is None
        assert generate.label_of("neutral", [], False, 0.1, rule) == []
    assert generate.label_of("mutant", causes, False, 0.8) == []
    assert generate.label_of("neutral", [], False, 0.5) == []
    assert generate.label_of("mutant", causes, False, 0.8, "unlabelled") is None
    assert generate.label_of("neutral", [], False, 0.5, "unlabelled") is None


def test_run_label_rule():
    """By configuration every run gets its configuration's label; run by
    run, a harmless mutant's run that is significant under Holm's
    correction over its configuration's runs and at least 5% below the
    original's mean (or has no final metric) is faulty, such a
    variation's run unlabelled, and nothing else moves."""
    original = [0.80, 0.82, 0.81, 0.79, 0.83]  # mean 0.81, sd 0.0158; prediction sd 0.0173
    # t = (0.70 - 0.81) / 0.0173 = -6.35 on 4 degrees of freedom
    assert generate.run_p(0.70, original) == pytest.approx((0.001575, 0.1358), rel=1e-3)
    assert generate.run_p(0.772, original) == pytest.approx((0.04664, 0.04691), rel=1e-3)
    assert generate.run_p(float("nan"), original) == (0.0, math.inf)
    assert generate.run_p(None, original) == (0.0, math.inf)
    assert generate.run_p(0.5, [0.8]) == (1.0, 0.0)  # one seed: no spread to test against
    metrics = [0.70, 0.772, float("nan"), None, 0.81]
    causes = ["lr_high", "optimizer"]
    assert generate.run_labels("mutant", [], causes, metrics, original, "configuration") == [[]] * 5
    assert generate.run_labels("mutant", [], causes, metrics, original) == \
        [causes, [], causes, causes, []]
    assert generate.run_labels("neutral", [], [None], metrics, original, "run") == \
        [None, [], None, None, []]
    assert generate.run_labels("mutant", causes, causes, metrics, original, "run") == [causes] * 5
    assert generate.run_labels("mutant", None, causes, metrics, original, "run") == [None] * 5
    assert generate.run_labels("original", [], [], metrics, original, "run") == [[]] * 5
    # Holm: 0.772 alone is below the 5% interval (p 0.047), but as the
    # second smallest p of five it must be at most 0.05 / 4, and as the
    # third (after NaN and None) at most 0.05 / 3; it is neither.
    assert generate.worse_runs([0.772], original, floor=0) == [True]
    assert generate.worse_runs([0.70, 0.772, 0.79, 0.81, 0.80], original, floor=0) == \
        [True, False, False, False, False]
    assert generate.worse_runs([0.70, 0.772, float("nan"), None, 0.81], original, floor=0) == \
        [True, False, True, True, False]
    # The floor: a tight original (sd 0.0008) makes a 2% drop highly
    # significant, and it still is no fault; a 9% drop is.
    tight = [0.990, 0.991, 0.992, 0.990, 0.991]
    assert generate.run_p(0.97, tight)[0] < 1e-4
    assert generate.worse_runs([0.97, 0.90, 0.991, 0.99, 0.99], tight) == [False, True, False, False, False]
    # With other than five seeds the quantile is Student's for that many.
    # t(0.95, 2) = 2.92: bound 0.81 - 2.92 * 0.01 * 1.155 = 0.7763
    assert generate.run_p(0.775, [0.8, 0.82, 0.81])[0] < 0.05 < generate.run_p(0.777, [0.8, 0.82, 0.81])[0]
    # No spread: any drop is significant, and the floor decides.
    assert generate.worse_runs([0.5, 0.79], [0.8] * 5) == [True, False]


def test_healthy_flagged_by_kind(tmp_path):
    """severity.py finds each held-out row's configuration through the
    store's run uids and counts flagged healthy runs by its kind."""
    import sqlite3
    store = tmp_path / "store.db"
    db = sqlite3.connect(store)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, uid TEXT)")
    db.executemany("INSERT INTO runs VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c"), (4, "d")])
    db.commit()
    db.close()
    manifest = tmp_path / "m.jsonl"
    records = [dict(kind="original", operators=[], run_ids=["a"], metrics=[0.9],
                    original_metrics=[0.9]),
               dict(kind="mutant", operators=[dict(op="lr_raise")], run_ids=["b", "c"],
                    metrics=[0.9, 0.9], original_metrics=[0.9]),
               dict(kind="mutant", operators=[dict(op="init_zeros")], run_ids=["d"],
                    metrics=[float("nan")], original_metrics=[0.9])]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    pred = tmp_path / "pred.csv"
    pred.write_text("run,program,point,labels,fault_threshold,p_fault\n"
                    "1,p,1.00,,0.9,0.95\n"       # an original above the threshold
                    "2,p,1.00,,0.9,0.95\n"       # a harmless mutant flagged
                    "3,p,1.00,,0.9,0.10\n"       # one passed
                    "3,p,0.25,,0.9,0.99\n"       # not the end of training
                    "4,p,1.00,init,0.9,0.99\n")  # faulty: not counted here
    rows = severity.load(str(pred), str(store), [str(manifest)])
    assert len(rows) == 4
    kinds, ops = severity.healthy_flagged(rows)
    assert kinds == {"original": (1, 1), "mutant": (2, 1)}
    assert ops == {"lr_raise": 1}
    # Relative drops: none, 50%, and a diverged seed (NaN) as 100%.
    assert severity.bucket(records[0], 0) == 0
    assert severity.bucket(dict(records[0], metrics=[0.45]), 0) == 4
    assert severity.bucket(dict(records[0], metrics=[0.85]), 0) == 1      # 5.6%
    assert severity.bucket(records[2], 0) == 4


def test_equal_alarms():
    """One threshold flags the given share of healthy runs; the decision
    is the product's (top cause and those within the ratio)."""
    def row(labels, p_fault, **p):
        r = dict(point="1.00", labels=labels, p_fault=str(p_fault), ratio="0.5",
                 fault_threshold="0.5")
        r.update({"p_" + c: str(p.get(c, 0.0)) for c in equal_alarms.CAUSES})
        return r
    healthy = [row("", x / 10, epochs=0.3) for x in range(10)]   # 0.0 .. 0.9
    faulty = [row("init", 0.95, init=0.9, data=0.5),       # init and data reported
              row("lr_high|data", 0.85, lr_high=0.8),      # lr_high right, data missed
              row("loss", 0.2, loss=0.9)]                  # never flagged above 0.2
    rows = healthy + faulty
    t = equal_alarms.threshold_for(rows, 0.2)              # 2 of 10 healthy runs
    assert 0.7 < t <= 0.8 + 1e-9
    m, fa = equal_alarms.macro_f1(rows, lambda r: t)
    assert fa == 0.2
    # init 1.0 (tp 1); lr_high 1.0; data: tp 0 -> 0; loss: 0; the 7 others 0.
    assert abs(m - 2 / 11) < 1e-9
    assert equal_alarms.decide(faulty[0], 0.5) == {"init", "data"}
    assert equal_alarms.decide(faulty[2], 0.5) == set()


def test_equal_alarms_reference(tmp_path):
    """--reference: the reference detector's columns judge, on the rows
    that have a reference, at the chosen point."""
    causes = equal_alarms.CAUSES
    head = ["run", "program", "point", "labels", "fault_threshold", "ratio", "p_fault"] + \
        ["p_" + c for c in causes] + ["reference", "ref_threshold", "p_fault_ref"]
    lines = [",".join(head)]
    for run, point, labels, p_fault, ref, p_ref in [(1, "1.00", "", 0.9, 7, 0.1),
                                                     (2, "1.00", "init", 0.1, 7, 0.9),
                                                     (3, "1.00", "init", 0.9, 0, "nan"),
                                                     (1, "0.10", "", 0.9, 7, 0.1)]:
        p = ["0.9" if c == "init" else "0.0" for c in causes]
        lines.append(",".join(map(str, [run, "a", point, labels, 0.5, 0.5, p_fault] + p +
                                  [ref, 0.5, p_ref])))
    path = tmp_path / "pred.csv"
    path.write_text("\n".join(lines) + "\n")
    rows = equal_alarms.load(str(path), reference=True)
    assert [r["run"] for r in rows] == ["1", "2"]
    assert [equal_alarms.decide(r, float(r["fault_threshold"])) for r in rows] == [set(), {"init"}]
    assert len(equal_alarms.load(str(path), point="0.10", reference=True)) == 1
    assert len(equal_alarms.load(str(path))) == 3


def test_alarms_by_program():
    """Per held-out program, the healthy runs the decision gives a cause
    under each row's own threshold; faulty runs do not count."""
    def row(program, labels, p_fault, threshold):
        r = dict(program=program, labels=labels, p_fault=str(p_fault), ratio="0.5",
                 fault_threshold=str(threshold))
        r.update({"p_" + c: "0.9" if c == "init" else "0.0" for c in equal_alarms.CAUSES})
        return r
    rows = [row("b", "", 0.6, 0.5), row("b", "", 0.4, 0.5), row("b", "init", 0.9, 0.5),
            row("a", "", 0.6, 0.7), row("a", "loss", 0.1, 0.5)]
    assert relabel_effect.alarms_by_program(rows) == {"a": (0, 1), "b": (1, 2)}


def test_alarms_by_kind():
    """Healthy runs given a cause, by the kind of their configuration, and
    the operators of the mutants among them; faulty runs do not count."""
    def row(run, labels, p_fault):
        r = dict(run=run, labels=labels, p_fault=str(p_fault), ratio="0.5", fault_threshold="0.5")
        r.update({"p_" + c: "0.9" if c == "init" else "0.0" for c in equal_alarms.CAUSES})
        return r
    records = {"1": dict(kind="original", operators=[]),
               "2": dict(kind="mutant", operators=[{"op": "labels_noise"}, {"op": "lr_lower"}]),
               "3": dict(kind="mutant", operators=[{"op": "init_large"}]),
               "4": dict(kind="neutral", operators=[{"op": "batch_double"}]),
               "5": dict(kind="mutant", operators=[{"op": "init_large"}])}
    rows = [row("1", "", 0.4), row("2", "", 0.9), row("3", "", 0.2), row("4", "", 0.6),
            row("5", "init", 0.9)]
    kinds, operators = relabel_effect.alarms_by_kind(rows, records)
    assert kinds == {"original": (0, 1), "mutant": (1, 2), "neutral": (1, 1)}
    assert dict(operators) == {"labels_noise+lr_lower": 1}


def test_shortfall_buckets():
    """Runs by their shortfall, flagged by the threshold per point and with
    the outcome check (a shortfall from 0.2 on, else a probability from
    0.8; per point, 0.7)."""
    def row(labels, p, s):
        return dict(labels=labels, p_fault_ref=str(p), shortfall=str(s), ref_threshold_at_point="0.7",
                    ref_shortfall_at_point="0.2", ref_shortfall_threshold_at_point="0.8")
    rows = [row("", 0.75, 0.0),         # flagged per point only
            row("", 0.1, 0.25),         # flagged by the check only
            row("init", 0.1, 0.5),      # found by the check
            row("init", 0.9, 0.05),     # found both ways
            row("init", 0.1, "nan")]    # no metric: the probability alone
    t = shortfall.tally(rows)
    assert t["below 0.03"] == [1, 1, 0, 0, 0, 0]
    assert t["0.10-0.30"] == [1, 0, 1, 0, 0, 0]
    assert t["0.30 or more"] == [0, 0, 0, 1, 0, 1]
    assert t["0.03-0.10"] == [0, 0, 0, 1, 1, 1]
    assert t["none"] == [0, 0, 0, 1, 0, 0]
    assert shortfall.bucket_of(-0.5) == "below 0.03"


def test_committed_plans_reproduce():
    """Operators added later (Operator.since) leave the plans of earlier
    seeds as they were: every committed manifest's configurations draw
    the same operators with the same strengths again."""
    first = ",".join(programs.FIRST_PROGRAMS)
    made_by = {1: (800, first, ""), 2: (20, first, ""),
               3: (200, "mlp_circles,mlp_friedman", ""),
               4: (500, "mlp_iris,cnn1d_signals,lstm_sums,mlp_multiclass,mlp_friedman2", ""),
               5: (100, "", "labels_recoded,labels_shuffled")}
    for seed, (n, names, ops) in made_by.items():
        path = os.path.join(ROOT, "corpus", "manifest-seed%d.jsonl" % seed)
        with open(path) as f:
            records = {r["config_id"]: r for r in map(json.loads, f)}
        items = generate.plan(n, seed, [p for p in names.split(",") if p],
                              {o for o in ops.split(",") if o} or None)
        assert len(items) == len(records) == n
        for item in items:
            generate.materialize(item)
            r = records[item["config_id"]]
            assert (item["program"], json.loads(json.dumps(item["operators"]))) == \
                (r["program"], r["operators"]), (seed, item["config_id"])


def test_label_operators():
    """labels_recoded moves every class it picks (a derangement; one logit:
    0 and 1 swapped); labels_shuffled keeps the labels' distribution and
    moves about the drawn share of them apart from their inputs."""
    import random
    import torch
    import mutations
    import train
    for seed in range(20):
        for classes in (1, 3, 10):
            c = dict(programs.DEFAULTS, classes=classes)
            mutations.recoded_labels(c, random.Random(seed))
            m = c["label_map"]
            assert sorted(m) == list(range(max(2, classes)))
            assert sum(a != b for a, b in enumerate(m)) >= 2
    c = dict(programs.base_config("mlp_wine"), label_shuffle=0.8)
    _, ytr, _, _ = programs.load_data(c)
    y = train.training_labels(c, ytr, seed=3)
    assert torch.equal(torch.sort(y).values, torch.sort(ytr).values)
    moved = (y != ytr).float().mean().item()
    assert 0.4 < moved <= 0.8
    c = dict(programs.base_config("mlp_wine"), label_map=[1, 2, 0])
    assert torch.equal(train.training_labels(c, ytr, seed=3), (ytr + 1) % 3)
    c = dict(programs.base_config("mlp_diabetes"), label_shuffle=1.0)  # a regression's targets
    _, ytr, _, _ = programs.load_data(c)
    y = train.training_labels(c, ytr, seed=0)
    assert torch.equal(torch.sort(y).values, torch.sort(ytr).values) and not torch.equal(y, ytr)


def test_supplement_that_no_program_takes():
    """A supplement whose operators apply to none of the programs is
    refused with a clear message, not a crash deep in the plan."""
    import pytest
    with pytest.raises(ValueError, match="no program among mlp_diabetes takes a labels fault"):
        generate.plan(10, 5, ["mlp_diabetes"], {"labels_recoded"})
    out = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                          "--configs", "10", "--seed", "5", "--programs", "mlp_diabetes",
                          "--operators", "labels_recoded", "--address", "unix:/nonexistent",
                          "--manifest", "/nonexistent/m.jsonl"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "takes a labels fault" in out.stderr


def test_references_file():
    """corpus/references.csv is what corpus/references.py derives from the
    seed-5 manifest and rows (the original programs' runs, each checked to
    be a healthy run of its program), and dnnfaultctl reads it."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "references.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "corpus", "references.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "program,run"
    per_program = {}
    for line in lines[1:]:
        program, run = line.split(",")
        per_program.setdefault(program, []).append(int(run))
    assert len(per_program) == 15 and all(len(v) == 5 for v in per_program.values())


def test_reference_check_block():
    """The reference block of corpus/reference_check.py: each row's
    reference is another of its program's references at the same point,
    chosen by run id; differences, log10 ratios and the noise-scaled
    metric as features__apply_reference computes them."""
    meta = [(1, "a", "1.00", ""), (2, "a", "1.00", ""), (3, "a", "1.00", "lr_high"), (4, "b", "1.00", "")]
    ref = reference_check.assign_references(meta, [("a", 1), ("a", 2), ("c", 9)])
    assert list(ref) == [1, 0, 1, -1]       # run 3: 3 % 2 = 1, the second reference (run 2)
    names = ["loss_last", "val_metric_last", "val_metric_best", "val_metric_last_gain"]
    X = np.array([[1.0, 0.90, 0.95, 0.01], [0.5, 0.92, 0.93, 0.002], [10.0, 0.5, 0.6, 0.1], [2.0, 0.7, 0.7, 0.0]])
    diff = reference_check.block(names, X, ref, [0], ())
    assert diff[2, 0] == pytest.approx(9.5) and np.isnan(diff[3, 0])
    ratio = reference_check.block(names, X, ref, [0], {"loss_last"})
    assert ratio[2, 0] == pytest.approx(np.log10(20))
    noise = reference_check.noise_scaled(names, X, ref)
    # the reference's noise: max(|0.002|, 0.93 - 0.92, 0.01) = 0.01
    assert noise[2] == pytest.approx([(0.5 - 0.92) / 0.01, (0.6 - 0.93) / 0.01])
    assert reference_check.is_scale("grad_norm_last") and not reference_check.is_scale("grad_norm_slope")
    assert reference_check.threshold_for(np.arange(100.0), 0.05) == 95.0


def test_reference_check_ranking():
    """Causes within the ratio of the most probable one, for flagged rows
    only, scored per cause."""
    truth = np.zeros((3, len(reference_check.CAUSES)), dtype=bool)
    truth[0, 0] = truth[1, 1] = True
    prob = np.full(truth.shape, 0.01)
    prob[0, 0], prob[0, 1] = 0.9, 0.7      # lr_high right, lr_low within 0.65: a false positive
    prob[1, 1] = 0.9
    f = reference_check.ranked_macro_f1(truth, [True, False, True], prob)
    # row 0 reports lr_high and lr_low (0.7 >= 0.65 x 0.9), row 1 is not
    # flagged (lr_low missed), row 2 is healthy and flagged with every
    # cause tied: lr_high has tp 1 and fp 1 (F1 2/3), every other cause F1 0
    assert f == pytest.approx((2 / 3) / len(reference_check.CAUSES))
    exact = reference_check.ranked_macro_f1(truth[:2], [True, True], np.where(truth[:2], 0.9, 0.01))
    assert exact == pytest.approx(2 / len(reference_check.CAUSES))


def test_relabel_rows_rule_and_matching():
    """corpus/relabel_rows.py finds runs as blocks of five by label and
    final metrics, and a block that fits records disagreeing on what the
    rule reads keeps its label."""
    import collections
    import relabel_rows as rr
    rec = dict(kind="mutant", label=[], causes=["lr_high"], original_metrics=[0.80, 0.82, 0.81, 0.79, 0.83])
    runs = {k: ("p", "", m) for k, m in zip(range(1, 6), [0.5, 0.8, 0.81, 0.5, 0.82])}
    runs.update({k: ("p", "lr_high", m) for k, m in zip(range(6, 11), [0.1] * 5)})
    a = dict(rec, metrics=[0.8, 0.5, 0.82, 0.81, 0.5], config_id=1)
    b = dict(rec, label=["lr_high"], metrics=[0.1] * 5, config_id=2)
    counts = collections.Counter()
    found = rr.match(runs, list(range(1, 11)), {"p": [a, b]}, 0, counts)
    assert found[1] == (a, 1) and found[4] == (a, 4) and found[3] == (a, 3) and found[6] == (b, 0)
    assert counts == {"blocks": 2}
    # Out of manifest order, a block that fits two records is matched when
    # they agree on what the rule reads, and kept when they do not.
    c = dict(b, config_id=3)
    counts.clear()
    found = rr.match(runs, list(range(1, 11)), {"p": [b, c, a]}, 0, counts)
    assert found[6][0] is b and found[1] == (a, 1)
    assert counts == {"blocks": 2, "blocks fitting several records": 1}
    d = dict(b, causes=["init"], config_id=4)
    counts.clear()
    found = rr.match(runs, list(range(1, 11)), {"p": [b, d, a]}, 0, counts)
    assert 6 not in found and found[1] == (a, 1)
    assert counts == {"blocks": 2, "blocks fitting several records": 1,
                      "blocks fitting several records the rule reads differently": 1,
                      "blocks matching records that disagree (kept)": 1}


def test_committed_rows_follow_the_run_rule():
    """Every run of the committed rows is found in the manifests, and the
    rows and the manifests' run_labels already follow the run-by-run rule
    (corpus/relabel_rows.py --write made them so): relabelling them again
    changes nothing."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "relabel_rows.py"), "--summary"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = dict(line[2:].rsplit(": ", 1) for line in r.stderr.splitlines())
    assert summary["runs"] == summary["runs found in the manifests"] == "8026"
    assert not [k for k in summary if k.startswith("runs relabelled") or k.endswith("(kept)")], summary
    assert len(r.stdout.splitlines()) == 1 + 4 * 8026
    for path in sorted(glob.glob(os.path.join(ROOT, "corpus", "manifest-seed*.jsonl"))):
        for line in open(path):
            x = json.loads(line)
            assert x["run_labels"] == generate.run_labels(x["kind"], x["label"], x["causes"] or [],
                                                          x["metrics"], x["original_metrics"], "run")


def test_relabel_rows_write(tmp_path):
    """relabel_rows.py --write on a small corpus of its own: a harmless
    mutant's collapsed run becomes faulty, a variation's collapsed run is
    dropped from the rows, the manifests get run_labels, every other row
    is left as it was, and a second --write changes nothing."""
    import lzma
    original = [0.80, 0.82, 0.81, 0.79, 0.83]
    configs = [  # kind, label, causes, final metrics of its five runs (store ids in order)
        ("original", [], [], original),
        ("mutant", [], ["lr_high"], [0.81, 0.30, 0.80, 0.82, 0.79]),
        ("neutral", [], [None], [0.80, 0.81, 0.10, 0.82, 0.83]),
        ("mutant", ["init"], ["init"], [0.2, 0.3, 0.25, 0.2, 0.3]),
    ]
    (tmp_path / "rows").mkdir()
    header = ["run", "program", "point", "labels", "val_metric_last"]
    lines, records = [header], []
    for c, (kind, label, causes, metrics) in enumerate(configs):
        for k, m in enumerate(metrics):
            for point in ("0.50", "1.00"):
                lines.append([str(5 * c + k + 1), "p", point, "|".join(label), repr(m)])
        records.append(dict(config_id=c, kind=kind, program="p", label=label, causes=causes,
                            metrics=metrics, original_metrics=original, run_ids=["u%d%d" % (c, k) for k in range(5)]))
    with lzma.open(tmp_path / "rows" / "p.csv.xz", "wt") as f:
        f.write("".join(",".join(x) + "\n" for x in lines))
    (tmp_path / "manifest-seed1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "manifest-seed5.jsonl").write_text("")
    tool = [sys.executable, os.path.join(ROOT, "corpus", "relabel_rows.py"), "--corpus", str(tmp_path)]

    r = subprocess.run(tool + ["--write", "--summary"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    summary = dict(line[2:].rsplit(": ", 1) for line in r.stderr.splitlines())
    assert summary["runs relabelled healthy -> lr_high"] == "1"
    assert summary["runs relabelled healthy -> unlabelled"] == "1"
    assert summary["runs of harmless mutants labelled, drop 30% or more"] == "1"
    after = [x.split(",") for x in lzma.open(tmp_path / "rows" / "p.csv.xz", "rt").read().splitlines()]
    expect = [x for x in lines if x[0] != "13"]  # the variation's collapsed run
    for x in expect:
        if x[0] == "7":  # the mutant's collapsed run
            x[3] = "lr_high"
    assert after == expect
    manifest = [json.loads(x) for x in (tmp_path / "manifest-seed1.jsonl").read_text().splitlines()]
    assert [x["run_labels"] for x in manifest] == [
        [[]] * 5, [[], ["lr_high"], [], [], []], [[], [], None, [], []], [["init"]] * 5]
    assert [dict(x, run_labels=None) for x in manifest] == [dict(x, run_labels=None) for x in records]

    before = (tmp_path / "rows" / "p.csv.xz").read_bytes(), (tmp_path / "manifest-seed1.jsonl").read_text()
    r = subprocess.run(tool + ["--write", "--summary"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "relabelled" not in r.stderr
    assert lzma.decompress(before[0]) == lzma.decompress((tmp_path / "rows" / "p.csv.xz").read_bytes())
    assert before[1] == (tmp_path / "manifest-seed1.jsonl").read_text()

    # A run that cannot be found: nothing is written.
    (tmp_path / "manifest-seed1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    r = subprocess.run(tool + ["--write"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not found" in r.stderr
    assert lzma.decompress(before[0]) == lzma.decompress((tmp_path / "rows" / "p.csv.xz").read_bytes())
