"""What users do that the main tests do not: odd timeouts, names the
daemon would refuse, gradient accumulation, frozen layers, models that move
or cannot be described yet, outputs that are not one tensor. Monitoring must neither
raise into the loop nor hang, and what it stores must still be right."""

import math
import subprocess
import sys

import numpy
import pytest
import torch
from torch import nn

import dnnfault
from conftest import Daemon, num
from dnnfault import _describe, _lib, _stats
from helpers import batches, digits, mlp, train

UNREACHABLE = "unix:/nonexistent/dnnfault.sock"


def test_odd_timeouts_neither_raise_nor_hang():
    # Run in a child so that a hang fails the test instead of stalling it.
    code = """
import dnnfault, torch
from torch import nn
m = nn.Linear(4, 3)
o = torch.optim.SGD(m.parameters(), 0.1)
for t in (-1, -0.5, float("nan"), None, "abc"):
    mon = dnnfault.watch(m, o, address=%r, every=1)
    mon.step(m(torch.randn(2, 4)).sum())
    mon.flush(t)
    mon.close(timeout=t)
with dnnfault.watch(m, o, address=%r, close_timeout=None) as mon:
    mon.step(1.0)
with dnnfault.watch(m, o, address=%r, close_timeout="abc") as mon:
    mon.step(1.0)
print("done")
""" % (UNREACHABLE, UNREACHABLE, UNREACHABLE)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "done"


def test_describing_many_layers_is_linear(monkeypatch):
    # The activation rule looked at a parent's children once per layer:
    # 16 M calls for 4,000 layers under one nn.Sequential.
    calls = []
    real = nn.Module.children

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(nn.Module, "children", counting)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(2000)])
    found = _describe.find_layers(model)
    acts = _describe._activations(model, found)
    assert acts[-1] == "none" and set(acts) == {"none"}
    assert len(calls) < 10


def test_names_the_daemon_would_refuse_are_fitted(daemon, caplog):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    long_name = "r\n" + "x" * 5000
    with dnnfault.watch(model, opt, run=long_name, address=daemon.address, every=2,
                        tags="exp=1", reference="y" * 300) as mon:
        train(model, opt, mon, 6)
    stats = mon.stats()
    assert stats["rejected"] == 0 and stats["acked"] == stats["queued"]
    assert mon.run == "r?" + "x" * 254 and mon.reference is None
    assert any("cut to 256 bytes" in r.getMessage() for r in caplog.records)
    st = daemon.status(mon.run_id)
    assert st["run"] == mon.run and st["steps_stored"] == 3
    assert daemon.show(mon.run_id)["description"]["tags"] == {"exp": "1"}
    # Tags that are not strings, or an empty key: kept as text, or left out.
    with dnnfault.watch(model, opt, run="tags", address=daemon.address,
                        tags=["a=1", 3, "=x", ("k", 2.5)]) as mon:
        train(model, opt, mon, 2)
    assert mon.stats()["rejected"] == 0
    assert daemon.show("tags")["description"]["tags"] == {"a": "1", "3": "", "k": 2.5}


def test_a_refused_run_says_why(tmp_path):
    # A daemon with lower limits than the client's defaults refuses the
    # run; last_error keeps the reason, not "no RunStart" for each step.
    d = Daemon(tmp_path, ["--max-name-bytes", "36"])
    d.start()
    try:
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with dnnfault.watch(model, opt, run="a-run-name-of-50-bytes-for-a-daemon-of-36-at-most",
                            address=d.address, every=1) as mon:
            train(model, opt, mon, 5)
        stats = mon.stats()
    finally:
        d.stop()
    assert stats["rejected"] == 7  # RunStart, 5 steps, RunEnd
    assert "refused the run" in stats["last_error"]
    assert "run_name longer than 36 bytes" in stats["last_error"]


def test_last_error_is_empty_after_a_clean_run(daemon):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, run="clean", address=daemon.address) as mon:
        train(model, opt, mon, 3)
    assert mon.stats()["connected"] and mon.stats()["last_error"] == ""


def test_gradient_accumulation_has_no_zero_updates(daemon):
    # mon.step() after every micro-batch, optimizer.step() at t % 4 == 1:
    # the sampled steps (t % 4 == 0, every=4) never follow an optimizer
    # step since their snapshot (taken at the end of step t - 1).
    torch.manual_seed(3)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits(256)
    loss_fn = nn.CrossEntropyLoss()
    with dnnfault.watch(model, opt, loss_fn, run="accumulate", address=daemon.address,
                        every=4) as mon:
        for t in range(64):
            xb, yb = x[(t * 16) % 256:][:16], y[(t * 16) % 256:][:16]
            out = model(xb)
            loss = loss_fn(out, yb) / 4
            loss.backward()
            if t % 4 == 1:
                opt.step()
                opt.zero_grad()
            mon.step(loss, output=out, target=yb, inputs=xb)
    rows = daemon.export("accumulate")
    assert len(rows) == 16
    for r in rows:
        for name, l in r["layers"].items():
            assert math.isnan(num(l["update_ratio"])), (r["step"], name)
            assert num(l["grad_norm"]) > 0
    symptoms = {s["id"] for s in daemon.status("accumulate")["symptoms"]}
    assert not symptoms & {"update_ratio", "unchanged_weights"}
    # The same loop with the sampled steps right after the optimizer's: measured.
    with dnnfault.watch(model, opt, loss_fn, run="accumulate-2", address=daemon.address,
                        every=4) as mon:
        for t in range(16):
            out = model(x[:16])
            loss_fn(out, y[:16]).backward()
            if t % 4 == 0:
                opt.step()
                opt.zero_grad()
            mon.step(1.0, output=out, target=y[:16])
    assert all(0 < num(l["update_ratio"]) < 1
               for r in daemon.export("accumulate-2") for l in r["layers"].values())


def test_frozen_layers_are_left_out_of_the_analysis(daemon):
    # Fine-tuning: the first layer is frozen (requires_grad off) on purpose.
    # Its weights never move, which must not read as unchanged_weights or
    # update_ratio. The same layer trainable but missing from the optimizer
    # is a bug, and is reported.
    x, y = digits()
    for run, freeze in (("frozen-stem", True), ("forgotten-stem", False)):
        torch.manual_seed(5)
        model = mlp()
        if freeze:
            model[0].requires_grad_(False)
        opt = torch.optim.Adam([p for m in list(model)[1:] for p in m.parameters()], lr=1e-3)
        with dnnfault.watch(model, opt, run=run, address=daemon.address, every=1) as mon:
            train(model, opt, mon, 60, x=x, y=y)
        found = {s["id"]: s for s in daemon.final_status(run)["symptoms"]}
        layers = {l["name"]: l for l in daemon.show(run)["layers"]}
        if freeze:
            assert layers["0"]["trainable_count"] == 0
            table = daemon.ctl("show", run).stdout
            rows = [line.split() for line in table.splitlines()]
            assert [r[4] for r in rows if r[:2] == ["0", "Linear"]] == ["frozen"], table
            assert not found.keys() & {"unchanged_weights", "update_ratio"}, found
        else:
            assert layers["0"]["trainable_count"] == layers["0"]["param_count"]
            assert found["unchanged_weights"]["layer"] == "0", found
        # Stored as sent either way: the frozen layer's weights are there.
        norms = {num(r["layers"]["0"]["weight_norm"]) for r in daemon.export(run)}
        assert len(norms) == 1 and norms.pop() > 0


def test_layers_frozen_part_way_are_judged_only_while_they_train(daemon):
    # Gradual unfreezing (the stem frozen for 40 steps, then trained) and
    # the reverse (trained, then frozen at step 40; torch 1.13's zero_grad()
    # leaves the frozen layer a zeroed .grad, which read as a vanishing
    # gradient). Neither is a fault. Unfreezing a layer that the optimizer
    # was built without is, and is reported from the step it was unfrozen.
    x, y = digits()
    cases = (("unfrozen-at-40", True, False), ("frozen-at-40", False, False),
             ("unfrozen-not-optimized", True, True))
    for run, frozen_first, bug in cases:
        torch.manual_seed(5)
        model = mlp()
        model[0].requires_grad_(not frozen_first)
        params = [p for p in model.parameters() if p.requires_grad] if bug else model.parameters()
        opt = torch.optim.Adam(params, lr=1e-3)

        def switch(t, model, out, loss):
            if t == 39:
                model[0].requires_grad_(frozen_first)

        with dnnfault.watch(model, opt, run=run, address=daemon.address, every=1) as mon:
            train(model, opt, mon, 100, x=x, y=y, on_step=switch)
        found = {s["id"]: s for s in daemon.final_status(run)["symptoms"]}
        if bug:
            assert found["unchanged_weights"]["layer"] == "0", found
            assert found["unchanged_weights"]["first_step"] == 40, found
        else:
            assert not found.keys() & {"unchanged_weights", "update_ratio", "vanishing_gradient"}, found
        # What the client sent: no gradient and no update while frozen.
        rows = daemon.export(run)
        frozen_steps = [r["step"] for r in rows if num(r["layers"]["0"]["grad_norm"]) is None
                        or math.isnan(num(r["layers"]["0"]["grad_norm"]))]
        assert frozen_steps == (list(range(40)) if frozen_first else list(range(40, 100))), run
        assert all(math.isnan(num(r["layers"]["0"]["update_ratio"]))
                   for r in rows if r["step"] in frozen_steps)


def test_a_layer_switched_off_after_training_is_not_frozen(daemon):
    # pix2pix and CycleGAN turn the discriminator's requires_grad off after
    # its update, for the generator's step: at mon.step() it looks frozen,
    # but it trained this iteration, and what it shows is the same as
    # without the switch (lr 2: update_ratio in layer 0).
    x, y = digits()
    found = {}
    for run, switch in (("kept-on", False), ("switched-off", True)):
        torch.manual_seed(5)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=2.0)
        loss_fn = nn.CrossEntropyLoss()
        with dnnfault.watch(model, opt, run=run, address=daemon.address, every=1) as mon:
            for t, xb, yb in batches(x, y, 64, 60):
                model[0].requires_grad_(True)
                opt.zero_grad()
                out = model(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                opt.step()
                model[0].requires_grad_(not switch)
                mon.step(loss, output=out, target=yb, inputs=xb)
        found[run] = {(s["id"], s["layer"]) for s in daemon.final_status(run)["symptoms"]}
        rows = daemon.export(run)
        assert all(num(r["layers"]["0"]["grad_norm"]) > 0 for r in rows), run
        assert all(num(r["layers"]["0"]["update_ratio"]) > 0 for r in rows), run
    assert ("update_ratio", "0") in found["kept-on"]
    assert found["switched-off"] == found["kept-on"]


def test_a_model_moved_to_the_other_path_keeps_its_activations(daemon):
    torch.manual_seed(4)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits(128)
    with dnnfault.watch(model, opt, run="moved", address=daemon.address, every=1) as mon:
        train(model, opt, mon, 3, batch=32, x=x, y=y)
        model.to(torch.float64)  # float64 stays on the C path; bfloat16 leaves it
        model.to(torch.bfloat16)
        train(model, opt, mon, 4, batch=32, x=x.to(torch.bfloat16), y=y)
    acts = [num(r["layers"]["0"]["act_mean"]) for r in daemon.export("moved")]
    assert len(acts) == 7
    # The first step after the move ran its forward pass with the old hooks.
    assert all(math.isfinite(a) for a in acts[:3] + acts[4:]), acts


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: lazy modules are new
def test_lazy_modules_get_a_clear_message(daemon, caplog):
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = dnnfault.watch(model, opt, address=daemon.address)
    assert not mon.enabled
    assert any("after the first forward pass" in r.getMessage() for r in caplog.records)
    mon.step(1.0)
    mon.close()


def test_odd_values_are_taken_or_refused_without_raising(daemon):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, run="odd", address=daemon.address, every=1) as mon:
        mon.step(numpy.float32(1.25))
        mon.epoch(train_loss=1.0, epoch=2 ** 40)
        mon.epoch(train_loss=1.0, epoch=-1)
        mon.epoch(train_loss=1.0, epoch="x")
    assert num(daemon.export("odd")[0]["loss"]) == 1.25
    assert mon.stats()["errors"] == 3 and mon.stats()["rejected"] == 0
    mon = dnnfault.watch(model, opt, run="failed", address=daemon.address)
    mon.step(1.0)
    mon.close("failed")
    assert daemon.status("failed")["state"] == "crashed"


def test_accuracy_beyond_one_tensor_of_scores():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 3.0, -2.0]])
    # Multi-label: every label right, though argmax against argmax is not.
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert _stats.accuracy(logits, multi_hot, "bce_logits").item() == 1.0
    # One-hot targets with a BCE loss (the "BCE on multi-class" fault): by class.
    one_hot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert _stats.accuracy(logits, one_hot, "bce_logits").item() == 0.5
    assert _stats.accuracy(logits, one_hot, "logits").item() == 0.5
    # Sequences: [N, T, V] scores against [N, T] or [N * T] tokens, and
    # torch's own [N, C, T] layout.
    seq = torch.zeros(2, 3, 5)
    seq[..., 4] = 1.0
    tokens = torch.tensor([[4, 4, 1], [4, 0, 4]])
    assert _stats.accuracy(seq, tokens, "logits").item() == pytest.approx(4 / 6)
    assert _stats.accuracy(seq, tokens.reshape(-1), "logits").item() == pytest.approx(4 / 6)
    assert _stats.accuracy(seq.transpose(1, 2), tokens, "logits").item() == pytest.approx(4 / 6)
    assert _describe.infer_task("CrossEntropyLoss", seq, tokens) == (_lib.TASK_CLASSIFICATION, 5)
    assert _describe.infer_task(None, (logits, torch.zeros(2)), torch.tensor([0, 1])) \
        == (_lib.TASK_CLASSIFICATION, 3)
    # Unchanged: [N, C] against [N], and binary outputs.
    assert _stats.accuracy(logits, torch.tensor([0, 0]), "logits").item() == 0.5
    assert _stats.accuracy(torch.tensor([[0.7], [0.2]]), torch.tensor([1, 1]), "probs").item() == 0.5


def test_tuple_outputs_get_classes_and_accuracy(daemon):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()

        def forward(self, x):
            out = self.body(x)
            return out, out.mean(1)

    torch.manual_seed(5)
    model = TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits(64)
    with dnnfault.watch(model, opt, run="two-heads", address=daemon.address, every=1) as mon:
        for t in range(3):
            opt.zero_grad()
            logits, aux = model(x)
            loss = nn.functional.cross_entropy(logits, y) + aux.pow(2).mean()
            loss.backward()
            opt.step()
            mon.step(loss, output=(logits, aux), target=y, inputs=(y, x))  # ids first
    assert daemon.show("two-heads")["description"]["num_classes"] == 10
    assert all(num(r["input_mean"]) == pytest.approx(x.mean().item(), abs=1e-5)
               for r in daemon.export("two-heads"))
    assert all(0 <= num(r["accuracy"]) <= 1 for r in daemon.export("two-heads"))
