"""The package against a real dnnfaultd."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import dnnfault
from conftest import ROOT, num
from helpers import digits, mlp, train


def test_values_match_torch(daemon):
    torch.manual_seed(1)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    every, steps = 7, 60
    expected = {}

    def record(t, model, out, loss):
        if t % every == 0:
            first = model[0]
            w = torch.cat([first.weight.reshape(-1), first.bias.reshape(-1)])
            g = torch.cat([first.weight.grad.reshape(-1), first.bias.grad.reshape(-1)])
            expected[t] = (w.norm().item(), w.mean().item(), g.norm().item(), loss.item())

    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="values", every=every,
                        address=daemon.address, epochs=1) as mon:
        train(model, opt, mon, steps, on_step=record)
        mon.epoch(train_loss=0.5, val_loss=0.6, val_metric=0.9)
    sampled = len(range(0, steps, every))
    assert mon.stats()["acked"] == mon.stats()["queued"]
    assert (mon.stats()["graph_replays"], mon.stats()["graph_recordings"]) == (0, 0)  # no GPU path

    st = daemon.status("values")
    assert st["steps_stored"] == sampled
    assert st["state"] == "completed"
    show = daemon.show("values")
    assert [l["name"] for l in show["layers"]] == ["0", "2", "4"]
    assert [l["type"] for l in show["layers"]] == ["Linear"] * 3
    assert [l["activation"] for l in show["layers"]] == ["relu", "tanh", "none"]
    assert show["layers"][0]["param_count"] == 64 * 32 + 32
    assert show["layers"][0]["params"] == [{"name": "weight", "dims": [32, 64]},
                                           {"name": "bias", "dims": [32]}]
    d = show["description"]
    assert d["task"] == "classification" and d["num_classes"] == 10
    assert d["batch_size"] == 64 and d["optimizer"] == "SGD"
    assert d["optimizer_params"]["momentum"] == 0.9 and d["planned_epochs"] == 1
    assert d["loss_fn"] == "CrossEntropyLoss"

    rows = daemon.export("values")
    assert [r["step"] for r in rows] == list(range(0, steps, every))
    for r in rows:
        wn, wm, gn, loss = expected[r["step"]]
        l0 = r["layers"]["0"]
        assert num(l0["weight_norm"]) == pytest.approx(wn, rel=1e-5)
        assert num(l0["weight_mean"]) == pytest.approx(wm, rel=1e-3, abs=1e-6)
        assert num(l0["grad_norm"]) == pytest.approx(gn, rel=1e-5)
        assert r["loss"] == pytest.approx(loss, rel=1e-6)
        assert r["lr"] == 0.05
        assert 0 <= r["accuracy"] <= 1
        assert 0 < num(l0["update_ratio"]) < 1
        assert num(l0["nan_count"]) == 0
        assert 0 <= num(l0["act_nonpos_frac"]) <= 1


def _kill_restart_run(daemon, run, steps, kill_at, restart_at, **extra):
    torch.manual_seed(2)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def chaos(t, model, out, loss):
        if t == kill_at:
            daemon.stop(signal.SIGKILL)
        elif t == restart_at:
            daemon.start()
        if kill_at <= t < restart_at:
            time.sleep(0.002)  # an outage that lasts a while

    mon = dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run=run, every=1,
                         address=daemon.address, **extra)
    longest = train(model, opt, mon, steps, on_step=chaos)
    mon.close(timeout=20)
    return mon, longest


def test_daemon_killed_and_restarted(daemon):
    steps = 400
    mon, longest = _kill_restart_run(daemon, "restart", steps, 100, 250)
    print("longest step during a kill -9 / restart: %.1f ms" % (longest * 1e3))
    assert longest < 1.0
    s = mon.stats()
    assert s["dropped"] == 0 and s["reconnects"] >= 1 and s["acked"] == s["queued"]
    rows = daemon.export("restart")
    got = [r["step"] for r in rows]
    assert len(got) == len(set(got)) == steps
    assert sorted(got) == list(range(steps))
    st = daemon.status("restart")
    assert st["steps_stored"] == steps and st["state"] == "completed"


def test_queue_overflow_counts_drops(daemon):
    steps = 400
    mon, longest = _kill_restart_run(daemon, "overflow", steps, 50, 350, queue_bytes=16384)
    s = mon.stats()
    assert s["dropped"] > 0
    st = daemon.status("overflow")
    assert st["state"] == "completed"
    assert st["dropped"] == s["dropped"]
    rows = daemon.export("overflow")
    got = [r["step"] for r in rows]
    assert len(got) == len(set(got))
    assert st["steps_stored"] == len(got)
    assert len(got) + s["dropped"] == steps


class _SyncCounter:
    """Counts calls of the Tensor methods that copy to the host."""

    NAMES = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch):
        self.calls = 0
        self.active = False
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(orig))

    def _wrap(self, orig):
        def wrapper(t, *a, **k):
            if self.active:
                self.calls += 1
            return orig(t, *a, **k)
        return wrapper


def test_unsampled_steps_do_no_host_sync(daemon, monkeypatch):
    torch.manual_seed(3)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lf = nn.CrossEntropyLoss()
    counter = _SyncCounter(monkeypatch)
    every = 5
    x, y = digits(640)
    sampled_calls = 0
    with dnnfault.watch(model, opt, lf, run="nosync", every=every, address=daemon.address) as mon:
        for t in range(30):
            xb, yb = x[(t % 10) * 64:(t % 10 + 1) * 64], y[(t % 10) * 64:(t % 10 + 1) * 64]
            sampled = t % every == 0
            counter.active = True
            counter.calls = 0
            hooks = sum(len(l.module._forward_hooks) for l in mon._layers)
            opt.zero_grad()
            out = model(xb)
            loss = lf(out, yb)
            loss.backward()
            opt.step()
            mon.step(loss, output=out, target=yb, inputs=xb)
            counter.active = False
            if sampled:
                sampled_calls += counter.calls
                assert hooks == 3
            else:
                assert counter.calls == 0, "host sync on unsampled step %d" % t
                assert hooks == 0
    assert sampled_calls >= 6  # the wrapper does see the sampled steps' one copy
    assert daemon.status("nosync")["steps_stored"] == 6


def test_frozen_shared_dataparallel(daemon):
    torch.manual_seed(4)
    shared = nn.Linear(32, 32)
    inner = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(),
                          nn.Linear(32, 10))
    for p in inner[0].parameters():
        p.requires_grad_(False)
    model = nn.DataParallel(inner)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="edge", every=2,
                        address=daemon.address) as mon:
        train(model, opt, mon, 10)
    show = daemon.show("edge")
    assert [l["name"] for l in show["layers"]] == ["0", "2", "6"]
    # 0 is "not given" in the C API, so a fully frozen layer reads null.
    assert show["layers"][0]["trainable_count"] in (0, None)
    assert show["layers"][0]["param_count"] == 64 * 32 + 32
    rows = daemon.export("edge")
    assert len(rows) == 5
    for r in rows:
        frozen = r["layers"]["0"]
        assert math.isnan(num(frozen["grad_norm"]))
        assert num(frozen["weight_norm"]) > 0
        assert math.isnan(num(frozen["update_ratio"]))  # frozen: no update of its own
        assert num(r["layers"]["2"]["grad_norm"]) > 0


def test_nan_loss_is_telemetry(daemon):
    torch.manual_seed(5)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="nan", every=1,
                        address=daemon.address) as mon:
        train(model, opt, mon, 5)
    assert mon.stats()["errors"] == 0
    rows = daemon.export("nan")
    assert len(rows) == 5
    assert math.isnan(num(rows[0]["loss"]))
    assert num(rows[0]["layers"]["2"]["nan_count"]) >= 1
    assert daemon.status("nan")["state"] == "completed"


def test_reference(daemon):
    torch.manual_seed(8)
    x, y = digits(256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="before", every=5,
                        address=daemon.address) as mon:
        train(model, opt, mon, 10, x=x, y=y)
    assert mon.reference is None
    assert "reference" not in daemon.status("before")

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="after", every=5,
                        address=daemon.address, reference="before") as mon:
        train(model, opt, mon, 10, x=x, y=y)
    assert mon.stats()["errors"] == 0 and mon.stats()["rejected"] == 0
    runs = json.loads(daemon.ctl("--json", "status").stdout)["runs"]
    by_name = {r["run"]: r for r in runs}
    assert by_name["after"]["reference"] == "before"
    assert "reference" not in by_name["before"]
    assert daemon.show("after")["description"]["reference"] == "before"
    # Corrected afterwards with dnnfaultctl; the run is not the reference of itself.
    before_id = by_name["before"]["id"]
    daemon.ctl("reference", "after", before_id)
    assert daemon.status("after")["reference"] == before_id
    r = daemon.ctl("reference", "after", mon.run_id, check=False)
    assert r.returncode == 1 and "its own reference" in r.stderr
    r = daemon.ctl("reference", "after", "nothing-like-it", check=False)
    assert r.returncode == 4 and "nothing-like-it" in r.stderr


def test_daemon_absent_at_start(stopped_daemon):
    d = stopped_daemon
    torch.manual_seed(6)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    started = []

    def late_start(t, *a):
        if t == 20:
            d.start()
            started.append(t)

    mon = dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="late", every=2,
                         address=d.address)
    longest = train(model, opt, mon, 40, on_step=late_start)
    mon.close(timeout=20)
    assert started and longest < 1.0
    assert d.status("late")["steps_stored"] == 20
    assert sorted(r["step"] for r in d.export("late")) == list(range(0, 40, 2))


def test_crash_and_interrupt_end_status(daemon):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for run, exc, state in (("crash", RuntimeError, "crashed"),
                            ("ctrlc", KeyboardInterrupt, "interrupted")):
        with pytest.raises(exc):
            with dnnfault.watch(model, opt, run=run, address=daemon.address) as mon:
                train(model, opt, mon, 3)
                raise exc("boom")
        assert daemon.status(run)["state"] == state


def test_diagnosis(daemon):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, run="diag", address=daemon.address) as mon:
        train(model, opt, mon, 10)
        mon.flush()
        d = mon.diagnosis()
    assert d is not None and d["run"] == "diag" and "health" in d and "causes" in d
    daemon.stop()
    assert mon.diagnosis(timeout=0.5) is None


def test_example_script(daemon):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client", "python"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_digits.py"),
                        "--run", "example", "--epochs", "2", "--address", daemon.address],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "diagnosis" in r.stdout
    st = daemon.status("example")
    assert st["state"] == "completed" and st["steps_stored"] > 0
    assert len(daemon.show("example")["epochs"]) == 2


def test_late_numbers_are_sent_in_order(daemon, monkeypatch):
    """On a GPU a sampled step's numbers reach the host after mon.step()
    returned (a _cuda.Pending, tests/python/test_cuda.py). The monitor's
    side of it runs here with the device's part played by a stand-in whose
    numbers land at its second look: a step is sent at a later call once
    they have landed, at the next sampled step at the latest, before an
    epoch and at close; each exactly once, in order, with torch's values."""
    from dnnfault import _lib
    from dnnfault._host_stats import StepStats
    real = StepStats.sample

    class Landing:  # what _cuda.Pending offers the monitor
        def __init__(self, value, looks):
            self.value, self.looks = value, looks

        def ready(self):
            if looks["fail"]:
                looks["fail"] -= 1
                raise RuntimeError("the device said no")
            self.looks -= 1
            return self.looks <= 0

        def result(self):
            return self.value

    looks = {"n": 2, "fail": 0}

    def late(self, *args, defer=False):
        got = real(self, *args)
        return Landing(got, looks["n"]) if defer else got

    monkeypatch.setattr(StepStats, "sample", late)
    events = []
    lib = _lib.load()
    for name in ("client_step", "client_epoch", "client_run_end"):
        def spy(client, stream, msg, f=getattr(lib, name), name=name):
            events.append((name, msg.step))
            return f(client, stream, msg)
        monkeypatch.setattr(lib, name, spy)

    torch.manual_seed(5)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    norms = {}

    def record(t, model, out, loss):
        norms[t] = torch.cat([p.detach().reshape(-1) for p in model[0].parameters()]).norm()

    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="late", every=3,
                        address=daemon.address) as mon:
        train(model, opt, mon, 8, on_step=record)
        mon.epoch(train_loss=0.5)
        train(model, opt, mon, 2, seed=1, on_step=lambda t, *a: record(t + 8, *a))
    # Step 0 lands at the second look (step 2), 3 at step 5; 6 has not
    # landed by the epoch, which sends it first; 9 goes out at close.
    assert events == [("client_step", 0), ("client_step", 3), ("client_step", 6),
                      ("client_epoch", 7), ("client_step", 9), ("client_run_end", 9)]
    assert mon.stats()["errors"] == 0

    events.clear()
    looks["n"] = 100  # never lands by itself: each sampled step waits for the previous one
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="late-1", every=1,
                        address=daemon.address) as mon:
        train(model, opt, mon, 3)
        assert events == [("client_step", 0), ("client_step", 1)]
    assert events[-2:] == [("client_step", 2), ("client_run_end", 2)]

    # A device that never finishes: close gives up after its timeout and
    # says so. A step whose check fails is dropped, once; the next go out.
    events.clear()
    looks.update(n=10**9, fail=1)
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="late-stuck", every=1,
                        address=daemon.address, close_timeout=0.05) as mon:
        train(model, opt, mon, 3)
    assert events == [("client_step", 1), ("client_run_end", 2)]
    assert mon.stats()["errors"] == 2

    rows = daemon.export("late")
    assert [r["step"] for r in rows] == [0, 3, 6, 9]
    for r in rows:
        assert num(r["layers"]["0"]["weight_norm"]) == pytest.approx(norms[r["step"]].item(),
                                                                      rel=1e-5)


def test_sampled_steps_leave_no_reference_cycles(daemon):
    """A sampled step's objects are freed by reference counting, not left
    for the garbage collector: cyclic garbage that grows with the steps
    makes the collector run in the user's training loop (numpy's data_as
    left one cycle per sampled step)."""
    import gc
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="cycles", every=1,
                        address=daemon.address) as mon:
        train(model, opt, mon, 5)  # plans, buffers and the first kernels: made once
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            train(model, opt, mon, 60)
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            del gc.garbage[:]
    assert len(left) < 30, sorted(set(left))
