"""The corpus pipeline end to end on a small corpus: base programs and
mutants train while a real dnnfaultd watches them, get labelled by the
significance rule, and the labels land on the daemon's runs."""

import json
import os
import subprocess
import sys

from conftest import CTL, ROOT


def test_small_corpus(daemon, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client", "python"))
    # 8 originals, then mutants for the first causes.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", "11", "--seed", "3", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL],
                       env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [x["config_id"] for x in records] == list(range(11))
    originals = [x for x in records if x["kind"] == "original"]
    assert len(originals) == 8 and all(x["label"] == [] for x in originals)
    # The base programs reach a good quality (accuracy or R^2).
    for x in originals:
        floor = 0.3 if x["program"] == "mlp_diabetes" else 0.8
        assert min(x["metrics"]) > floor, (x["program"], x["metrics"])
    mutants = [x for x in records if x["kind"] == "mutant"]
    assert mutants and all(x["operators"] and x["causes"] for x in mutants)
    # Every run of a labelled config carries its label in the store.
    for x in records:
        if x["label"] is None:
            continue
        for run_id in x["run_ids"]:
            run = daemon.status(run_id)
            assert run["labels"] == x["label"], (run_id, run["labels"], x["label"])
            assert run["state"] == "completed"
            assert run["steps_stored"] > 0
    # Resuming with the same manifest does no work twice.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "corpus", "generate.py"),
                        "--configs", "11", "--seed", "3", "--workers", "2",
                        "--address", daemon.address, "--manifest", str(manifest), "--ctl", CTL],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    assert len(manifest.read_text().splitlines()) == 11
