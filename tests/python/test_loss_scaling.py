"""Loss scaling as mixed precision does it (torch.cuda.amp.GradScaler):
the loss is multiplied by a scale, a step whose gradients overflow is
skipped and the scale halved. Here on the CPU with the same arithmetic:
every layer's output goes through float16 and back, so that its gradient
is rounded to float16 too and overflows to Inf as under autocast, and the
loop skips and rescales as GradScaler does. The daemon must leave the
skipped steps out instead of calling them nan_tensor or unchanged_weights,
and still report overflow that never clears. (tests/python/test_cuda.py
runs the real GradScaler where there is a GPU.)"""

import math

import torch
from torch import nn

import dnnfault
from conftest import num
from helpers import Float16, LossScaler, batches, digits


def model_in_float16():
    return nn.Sequential(nn.Linear(64, 64), Float16(), nn.ReLU(), nn.Linear(64, 32), Float16(),
                         nn.ReLU(), nn.Linear(32, 10), Float16())


def train_scaled(daemon, run, scale, steps=120, every=1, growth_interval=50):
    """Trains with dynamic loss scaling from `scale`; returns the steps the
    loop skipped."""
    torch.manual_seed(0)
    model = model_in_float16()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = digits()
    scaler, skipped = LossScaler(scale, growth_interval), []
    with dnnfault.watch(model, opt, loss_fn, run=run, every=every, address=daemon.address) as mon:
        for t, xb, yb in batches(x, y, 32, steps):
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            if not scaler.backward_and_step(loss, model, opt):
                skipped.append(t)
            mon.step(loss, output=out, target=yb, inputs=xb)
    return skipped


def symptoms_of(status):
    return {s["id"]: s for s in status["symptoms"]}


def test_skipped_overflow_steps_are_left_out(daemon):
    skipped = train_scaled(daemon, "scaled", 2.0 ** 30)
    # The start calibrates the scale (2^30 overflows float16's gradients);
    # each doubling of the scale later overflows once more.
    assert skipped[:3] == [0, 1, 2] and len(skipped) < 30, skipped
    status = daemon.final_status("scaled")
    found = symptoms_of(status)
    assert "nan_tensor" not in found and "unchanged_weights" not in found, found
    assert status["skipped_steps"] == len(skipped)
    # The store keeps them as sent: the export shows the overflow.
    rows = {r["step"]: r for r in daemon.export("scaled")}
    assert len(rows) == 120
    grads = [v["grad_norm"] for v in rows[skipped[0]]["layers"].values()]
    assert any(g is not None and not math.isfinite(num(g)) for g in grads), grads


def test_sparse_sampling_skips_one_step_in_the_calibration(daemon):
    # Every 10th step sampled: of the calibration, only step 0 is.
    skipped = train_scaled(daemon, "scaled-sparse", 2.0 ** 30, every=10, growth_interval=1000)
    assert skipped[0] == 0 and all(t < 10 for t in skipped), skipped
    status = daemon.final_status("scaled-sparse")
    assert "nan_tensor" not in symptoms_of(status)
    assert status["skipped_steps"] == 1


def test_overflow_that_never_clears_is_reported(daemon):
    # An infinite scale overflows every step: nothing is ever applied.
    for run, every in (("overflow-always", 1), ("overflow-always-sparse", 10)):
        skipped = train_scaled(daemon, run, math.inf, steps=60, every=every)
        assert len(skipped) == 60
        status = daemon.final_status(run)
        found = symptoms_of(status)
        assert found["nan_tensor"]["first_step"] == 0, found
        assert "unchanged_weights" in found, found
        assert status["skipped_steps"] == 0
