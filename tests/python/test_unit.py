"""Pieces that need no daemon: description, statistics, degraded mode."""

import logging
import math
import subprocess
import sys
import os

import pytest
import torch
from torch import nn

from dnnfault import _describe, _lib
from dnnfault._stats import Layer, Stats


def test_layers_and_activations():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ReLU()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.act(self.bn(self.conv(x))) * self.scale

    model = nn.Sequential(Block(), nn.Flatten(), nn.Linear(144, 20), nn.Dropout(0.1), nn.Sigmoid(),
                          nn.Linear(20, 10), nn.LogSoftmax(1))
    layers = _describe.find_layers(model)
    assert [n for n, _, _ in layers] == ["0", "0.conv", "0.bn", "2", "5"]
    desc = _describe.describe(model, torch.optim.Adam(model.parameters()), nn.NLLLoss(), layers)
    acts = [l["activation"] for l in desc["layers"]]
    # Block's own parameter: nothing follows Block but Flatten, then a Linear.
    assert acts == ["none", "unknown", "relu", "sigmoid", "log_softmax"]
    assert desc["layers"][1]["params"] == [("weight", [4, 1, 3, 3]), ("bias", [4])]
    assert desc["optimizer"] == "Adam"
    assert ("betas.0", 0.9) in desc["optimizer_params"]
    assert desc["loss_fn"] == "NLLLoss"


def test_tied_and_wrapped():
    emb = nn.Embedding(10, 8)
    dec = nn.Linear(8, 10)
    dec.weight = emb.weight
    model = nn.DataParallel(nn.Sequential(emb, dec))
    layers = _describe.find_layers(_describe.unwrap(model))
    assert [(n, [pn for pn, _ in ps]) for n, _, ps in layers] == [("0", ["weight"]), ("1", ["bias"])]


def test_task_inference():
    out = torch.zeros(4, 10)
    assert _describe.infer_task("CrossEntropyLoss", out, torch.zeros(4, dtype=torch.long)) == \
        (_lib.TASK_CLASSIFICATION, 10)
    assert _describe.infer_task("MSELoss", torch.zeros(4, 1), torch.zeros(4, 1)) == \
        (_lib.TASK_REGRESSION, 0)
    assert _describe.infer_task("BCEWithLogitsLoss", torch.zeros(4), torch.zeros(4)) == \
        (_lib.TASK_CLASSIFICATION, 2)
    assert _describe.infer_task(None, None, None) == (_lib.TASK_UNKNOWN, 0)


def _reference(w, g, a, prev):
    def std(t):
        return t.double().std(unbiased=False).item()
    return [w.norm().item(), w.mean().item(), std(w), w.abs().max().item(),
            g.norm().item(), g.mean().item(), std(g), g.abs().max().item(),
            (g == 0).double().mean().item(), (w - prev).norm().item() / w.norm().item(),
            a.mean().item(), std(a), (a <= 0).double().mean().item(),
            (a.abs() > 5).double().mean().item(),
            sum(torch.isnan(t).sum().item() for t in (w, g, a)),
            sum(torch.isinf(t).sum().item() for t in (w, g, a))]


def test_stats_match_torch():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    frozen = nn.Linear(8, 4)
    frozen.weight.requires_grad_(False)
    frozen.bias.requires_grad_(False)
    layers = [Layer("a", lin, list(lin.named_parameters())),
              Layer("b", frozen, list(frozen.named_parameters()))]
    st = Stats(layers)
    st.snapshot()
    prev = torch.cat([p.detach().reshape(-1).clone() for p in lin.parameters()])
    x = torch.randn(32, 16) * 4
    h = lin(x)
    layers[0].act = h.detach()
    layers[1].act = None
    h.relu().pow(2).mean().backward()
    with torch.no_grad():
        lin.weight[0, 0] = 0.0
        lin.weight.grad[0, :3] = 0.0
        lin.weight.sub_(0.1 * lin.weight.grad)
    loss = torch.tensor(1.25)
    values, layout = st.compute(loss, h, torch.zeros(32, dtype=torch.long), x, "logits", False)
    stats, extra = Stats.finish(Stats.gather(values), layout)
    w = torch.cat([p.detach().reshape(-1) for p in lin.parameters()])
    g = torch.cat([p.grad.reshape(-1) for p in lin.parameters()])
    ref = _reference(w, g, h.detach().reshape(-1), prev)
    assert list(stats[:16]) == pytest.approx(ref, rel=1e-4, abs=1e-6)
    b = stats[16:]
    assert all(math.isnan(v) for v in b[4:9]) and math.isnan(b[10])  # no grad, no activation
    assert b[0] > 0 and b[9] == 0 and b[14] == 0
    assert extra["loss"] == 1.25
    assert extra["accuracy"] == pytest.approx((h.argmax(1) == 0).float().mean().item())
    xm, xs, xmin, xmax = extra["input"]
    assert xm == pytest.approx(x.mean().item(), abs=1e-5)
    assert xs == pytest.approx(x.std(unbiased=False).item(), rel=1e-4)
    assert (xmin, xmax) == (x.min().item(), x.max().item())


def test_missing_library_is_a_noop():
    code = (
        "import logging, torch, dnnfault\n"
        "logging.basicConfig()\n"
        "m = torch.nn.Linear(2, 2); o = torch.optim.SGD(m.parameters(), 0.1)\n"
        "with dnnfault.watch(m, o) as mon:\n"
        "    for _ in range(3):\n"
        "        mon.step(m(torch.ones(1, 2)).sum())\n"
        "    mon.epoch(train_loss=1.0)\n"
        "assert mon.diagnosis() is None\n"
        "assert not mon.stats()['enabled'] and mon.stats()['steps'] == 3\n"
        "print('ok')\n")
    env = dict(os.environ, DNNFAULT_LIBRARY="/nonexistent/libdnnfault.so")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    assert r.stderr.count("cannot load libdnnfault") == 1


def test_bad_every_falls_back(caplog):
    import dnnfault
    m = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="dnnfault"):
        mon = dnnfault.watch(m, torch.optim.SGD(m.parameters(), 0.1), every=0,
                             address="unix:/nonexistent/sock", bogus=1)
    assert mon.every == dnnfault.DEFAULT_EVERY
    assert "bogus" in caplog.text
    mon.close(timeout=0)
