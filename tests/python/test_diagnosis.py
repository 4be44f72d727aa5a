"""Live diagnosis end to end: real PyTorch runs streamed into a real
dnnfaultd that serves the default model bundle (models/default, trained on
the committed corpus). A run with the learning rate x100 must be diagnosed
with lr_high first; the same run with the right learning rate must stay
healthy; and so with a reference run (judged by the bundle's reference
detector), which a user can also name after the run ended."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

BUNDLE = os.path.join(ROOT, "models", "default", "bundle.txt")


def train_digits(daemon, run, *extra):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client", "python"))
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_digits.py"), "--run", run,
                    "--address", daemon.address] + list(extra), check=True, env=env, timeout=300,
                   capture_output=True)


@pytest.mark.skipif(not os.path.exists(BUNDLE), reason="no default model bundle")
def test_lr_high_ranked_first_and_healthy_stays_healthy(daemon):
    model = daemon.ctl("--json", "model").stdout
    assert '"loaded":true' in model.replace(" ", "")

    train_digits(daemon, "digits-lr-high", "--fault", "lr_high", "--seed", "3")
    faulty = daemon.final_status("digits-lr-high")
    assert faulty["health"] in ("faulty", "suspect"), faulty
    assert faulty["causes"], faulty
    assert faulty["causes"][0]["id"] == "lr_high", faulty["causes"]
    assert "learning rate" in faulty["causes"][0]["fix"]

    train_digits(daemon, "digits-healthy", "--seed", "3")
    healthy = daemon.final_status("digits-healthy")
    assert healthy["health"] == "healthy", healthy


def analyses(daemon):
    return json.loads(daemon.ctl("--json", "stats").stdout)["analyses"]


@pytest.mark.skipif(not os.path.exists(BUNDLE), reason="no default model bundle")
def test_with_a_reference_run(daemon):
    with open(BUNDLE) as f:
        assert "\nfault_ref threshold " in f.read(), "the default bundle has no reference detector"
    train_digits(daemon, "digits-base", "--seed", "1")
    assert daemon.final_status("digits-base")["health"] == "healthy"

    train_digits(daemon, "digits-rerun", "--seed", "4", "--reference", "digits-base")
    rerun = daemon.final_status("digits-rerun")
    assert rerun["reference"] == "digits-base"
    assert rerun["health"] == "healthy", rerun
    # How far its validation accuracy fell short of the reference's: two
    # seeds of one healthy program, within a few points.
    assert abs(rerun["shortfall"]) < 0.05, rerun
    assert daemon.final_status("digits-base")["shortfall"] is None

    train_digits(daemon, "digits-lr-high", "--seed", "4", "--fault", "lr_high", "--reference", "digits-base")
    faulty = daemon.final_status("digits-lr-high")
    assert faulty["health"] in ("faulty", "suspect"), faulty
    assert faulty["causes"][0]["id"] == "lr_high", faulty["causes"]

    # Naming a reference after the run ended judges it again at once.
    train_digits(daemon, "digits-late", "--seed", "5")
    daemon.final_status("digits-late")
    before = analyses(daemon)
    daemon.ctl("reference", "digits-late", "digits-base")
    deadline = time.monotonic() + 30
    while analyses(daemon) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert analyses(daemon) == before + 1
    late = daemon.final_status("digits-late")
    assert late["reference"] == "digits-base" and late["health"] == "healthy", late
