"""Pieces that need no daemon: description, statistics, degraded mode."""

import logging
import math
import shutil
import subprocess
import sys
import os

import pytest
import torch
from torch import nn

from dnnfault import _describe, _lib
from dnnfault._host_stats import HostStats
from dnnfault._stats import Layer, Stats

# Both ways of computing the statistics: torch calls on the tensors' own
# device, and libdnnfault's dnnfault_reduce (the path for CPU models).
PATHS = ["torch", "C"]


def _make_stats(path, layers):
    return Stats(layers) if path == "torch" else HostStats(layers, _lib.load().reduce)


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


@pytest.mark.parametrize("path", PATHS)
def test_stats_match_torch(path):
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    frozen = nn.Linear(8, 4)
    frozen.weight.requires_grad_(False)
    frozen.bias.requires_grad_(False)
    layers = [Layer("a", lin, list(lin.named_parameters())),
              Layer("b", frozen, list(frozen.named_parameters()))]
    st = _make_stats(path, layers)
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
    stats, extra = st.sample(loss, h, torch.zeros(32, dtype=torch.long), x, "logits", False)
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


def test_soname_matches_the_build():
    # _lib's structs mirror one major version of the library: the one meson
    # builds (client/meson.build's soversion), which the library's own
    # soname link in the build tree names.
    built = os.path.realpath(os.environ["DNNFAULT_LIBRARY"])
    assert os.path.exists(os.path.join(os.path.dirname(built), _lib.SONAME))
    if shutil.which("objdump"):
        r = subprocess.run(["objdump", "-p", built], capture_output=True, text=True)
        assert "SONAME               %s" % _lib.SONAME in r.stdout, r.stdout


def test_bad_every_falls_back(caplog):
    import dnnfault
    m = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="dnnfault"):
        mon = dnnfault.watch(m, torch.optim.SGD(m.parameters(), 0.1), every=0,
                             address="unix:/nonexistent/sock", bogus=1)
    assert mon.every == dnnfault.DEFAULT_EVERY
    assert "bogus" in caplog.text
    mon.close(timeout=0)


def _ref_layer(params, act, prev):
    """The 16 statistics of one layer straight from torch, in float64."""
    nan = float("nan")
    out = [nan] * 16
    ws = [p.detach().double().reshape(-1) for p in params]
    gs = [p.grad.double().reshape(-1) for p in params if p.grad is not None]
    a = act.detach().double().reshape(-1) if act is not None else None
    if ws:
        w = torch.cat(ws)
        out[0:4] = [w.norm().item(), w.mean().item(), w.std(unbiased=False).item(),
                    w.abs().max().item()]
        if prev is not None:
            out[9] = ((w - prev.double()).norm() / w.norm()).item()
    if gs:
        g = torch.cat(gs)
        out[4:9] = [g.norm().item(), g.mean().item(), g.std(unbiased=False).item(),
                    g.abs().max().item(), (g == 0).double().mean().item()]
    if a is not None:
        out[10:14] = [a.mean().item(), a.std(unbiased=False).item(),
                      1.0 - (a > 0).double().mean().item(), (a.abs() > 5).double().mean().item()]
    parts = ws + gs + ([a] if a is not None else [])
    if parts:
        out[14] = float(sum(torch.isnan(t).sum().item() for t in parts))
        out[15] = float(sum(torch.isinf(t).sum().item() for t in parts))
    return out


def _check_layers(stats, layers, acts, prevs):
    for k, l in enumerate(layers):
        got = [float(v) for v in stats[16 * k:16 * (k + 1)]]
        ref = _ref_layer(l.params, acts[k], prevs[k])
        # float32 in, float32 out: compare at float32 precision.
        assert got == pytest.approx(ref, rel=2e-4, abs=1e-5, nan_ok=True), (l.name, got, ref)


@pytest.mark.parametrize("path,small", [("torch", False), ("torch", True), ("C", False)])
def test_grouped_stats_match_torch(monkeypatch, path, small):
    """Every path of the grouped computation against torch: several layers
    per group, chunked layers, outputs in the group, outputs reduced where
    they lie, output-only groups, frozen and half-frozen layers, a layer
    without output, a float64 layer, a layer without parameters."""
    from dnnfault import _stats
    if small:  # tiny limits: every layer is chunked, every output loose
        monkeypatch.setattr(_stats, "CHUNK", 50)
        monkeypatch.setattr(_stats, "BIG_OUTPUT", 40)
    torch.manual_seed(7)
    mods = [nn.Linear(6, 5), nn.Linear(5, 4), nn.Conv2d(2, 3, 3), nn.Linear(4, 3),
            nn.Linear(3, 3).double(), nn.Linear(3, 2), nn.ReLU()]
    mods[3].weight.requires_grad_(False)
    mods[3].bias.requires_grad_(False)  # frozen
    mods[5].bias.requires_grad_(False)  # half frozen: gradients padded
    layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    st = _make_stats(path, layers)
    st.snapshot()
    for step in range(3):
        prevs = [torch.cat([p.detach().reshape(-1).clone() for p in l.params])
                 if l.params else None for l in layers]
        acts = []
        for k, m in enumerate(mods):
            for p in m.parameters():
                if p.requires_grad:
                    p.grad = torch.randn_like(p)
                    p.grad.view(-1)[0] = 0.0
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            shape = {2: (4, 3, 6, 6), 4: (8, 3)}.get(k, (16, 7 + k))
            dt = {4: torch.float64, 6: torch.float16}.get(k)  # half: packed, and cut
            a = None if k == 1 else (torch.randn(shape) * 4).to(dt or torch.float32)
            acts.append(a)
            layers[k].act = a
        stats, _ = st.sample(None, None, None, None, None, keep_weights=step < 2)
        _check_layers(stats, layers, acts, prevs)
        if step < 2:
            continue
        # keep_weights=False on the last step: no snapshot is left behind.
        assert (st.prev is None) if path == "torch" else not st.prev_valid


def nonfinite_layers(device="cpu", extra=()):
    """Four Linear(4, 4) layers (then the modules in extra) with gradients
    and outputs: NaN and Inf in layer 0's weights, two -Inf in layer 1's
    gradient, a NaN and an Inf in layer 2's output, a finite 1e20 (whose
    square overflows float32) in layer 3's weights. (modules, layers,
    outputs)."""
    torch.manual_seed(8)
    mods = [nn.Linear(4, 4).to(device) for _ in range(4)] + list(extra)
    layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    for m in mods:
        for p in m.parameters():
            p.grad = torch.randn_like(p)
    with torch.no_grad():
        mods[0].weight[0, 0] = float("nan")
        mods[0].weight[1, 1] = float("inf")
        mods[1].weight.grad[0, :2] = float("-inf")
        mods[3].weight[2, 2] = 1e20  # finite, but its square is not
    acts = [torch.randn(8, 4, device=device) for _ in mods]
    acts[2][0, 0] = float("nan")
    acts[2][1, 1] = float("inf")
    return mods, layers, acts


@pytest.mark.parametrize("path", PATHS)
def test_nonfinite_counts_are_exact(path):
    """NaN and Inf are found from non-finite sums of squares and counted in
    a second pass; a finite value whose square overflows is counted as
    neither."""
    mods, layers, acts = nonfinite_layers()
    st = _make_stats(path, layers)
    for l, a in zip(layers, acts):
        l.act = a
    stats, _ = st.sample(None, None, None, None, None, False)
    counts = [(stats[16 * k + 14], stats[16 * k + 15]) for k in range(4)]
    assert counts == [(1, 1), (0, 2), (1, 1), (0, 0)]
    _check_layers(stats[:48], layers[:3], acts[:3], [None] * 3)
    # 1e20 squared overflows float32: the norm is inf, as torch's own
    # float32 vector_norm says; everything else is as usual.
    w3 = torch.cat([p.detach().reshape(-1) for p in mods[3].parameters()])
    assert stats[48] == torch.linalg.vector_norm(w3).item() == float("inf")
    assert stats[48 + 3] == pytest.approx(1e20)
    assert stats[48 + 4] == pytest.approx(_ref_layer(layers[3].params, acts[3], None)[4])


@pytest.mark.parametrize("path", PATHS)
def test_saturation_boundary(path):
    """|a| > 5 is taken from a² > 25: exact at the boundary in float32."""
    lin = nn.Linear(1, 1)
    layer = Layer("a", lin, list(lin.named_parameters()))
    five = torch.tensor(5.0)
    above = torch.nextafter(five, torch.tensor(10.0))
    below = torch.nextafter(five, torch.tensor(0.0))
    a = torch.stack([five, -five, above, -above, below, torch.tensor(float("inf")),
                     torch.tensor(0.0), torch.tensor(-1e-45)])
    layer.act = a
    st = _make_stats(path, [layer])
    stats, _ = st.sample(None, None, None, None, None, False)
    assert stats[13] == pytest.approx(3 / 8)  # above, -above, inf
    assert stats[12] == pytest.approx(1 - 4 / 8)  # five, above, below, inf are > 0


@pytest.mark.parametrize("path", PATHS)
def test_sparse_gradient(path):
    torch.manual_seed(9)
    emb = nn.Embedding(10, 4, sparse=True)
    layer = Layer("e", emb, list(emb.named_parameters()))
    st = _make_stats(path, [layer])
    out = emb(torch.tensor([1, 2, 2, 7]))
    out.pow(2).sum().backward()
    assert emb.weight.grad.is_sparse
    layer.act = out.detach()
    stats, _ = st.sample(None, None, None, None, None, False)
    dense = emb.weight.grad.to_dense()
    emb.weight.grad = dense  # the reference reads a dense gradient
    _check_layers(stats, [layer], [out.detach()], [None])


class _NoReduce:
    reduce = None


def test_step_stats_picks_a_path(monkeypatch):
    """The C path for float CPU models with a library that has
    dnnfault_reduce; the torch path otherwise, or when asked for."""
    from dnnfault._host_stats import StepStats
    lin = nn.Linear(3, 2)
    layers = [Layer("a", lin, list(lin.named_parameters()))]
    st = StepStats(layers, _lib.load())
    assert st.current() is st.host
    old = StepStats(layers, _NoReduce())  # a library without dnnfault_reduce
    assert old.host is None and old.current() is old.torch
    monkeypatch.setenv("DNNFAULT_STATS", "torch")
    assert StepStats(layers, _lib.load()).host is None
    monkeypatch.delenv("DNNFAULT_STATS")
    lin.half()
    assert st.current() is st.torch
    lin.double()
    assert st.current() is st.host


def test_path_switch_forgets_the_snapshot():
    """Every step sampled on the C path, then on the torch path (a half
    precision model), then back: the first step after each switch has no
    update ratio rather than one against weights several steps old."""
    from dnnfault._host_stats import StepStats
    torch.manual_seed(3)
    lin = nn.Linear(8, 4)
    layers = [Layer("a", lin, list(lin.named_parameters()))]
    st = StepStats(layers, _lib.load())
    st.snapshot()

    def step():
        with torch.no_grad():
            lin.weight.add_(0.01)
        return st.sample(None, None, None, None, None, keep_weights=True)[0][9]

    assert st.current() is st.host
    assert step() > 0 and step() > 0
    lin.half()
    assert math.isnan(step())  # the torch path has no snapshot of its own
    assert step() > 0
    lin.float()
    assert math.isnan(step())  # not the weights of three steps ago
    r = step()
    w = torch.cat([p.detach().reshape(-1) for p in lin.parameters()])
    assert r == pytest.approx(0.01 * math.sqrt(lin.weight.numel()) / w.norm().item(), rel=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_integer_outputs(path):
    """A layer whose output is an integer tensor: its statistics as float,
    on both paths."""
    lin = nn.Linear(1, 1)
    layer = Layer("a", lin, list(lin.named_parameters()))
    layer.act = torch.tensor([1, 2, 3, -4])
    stats, _ = _make_stats(path, [layer]).sample(None, None, None, None, None, False)
    assert stats[10] == pytest.approx(0.5)
    assert stats[12] == pytest.approx(0.25)


def test_outputs_reduced_in_the_hook():
    """On the C path the forward hooks reduce each output at once instead
    of keeping it: the same statistics as from the kept outputs, NaN and
    Inf counts included; the last forward pass of the step wins."""
    import functools
    from dnnfault._monitor import _recorder
    torch.manual_seed(5)
    mods = [nn.Linear(6, 5), nn.Linear(5, 3)]
    x = torch.randn(16, 6) * 3
    x[0, 0] = float("inf")

    def sampled(in_hook):
        layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
        st = HostStats(layers, _lib.load().reduce)
        hooks = [m.register_forward_hook(_recorder(
            l, functools.partial(st.record, k) if in_hook else None))
            for k, (m, l) in enumerate(zip(mods, layers))]
        mods[1](mods[0](x * 0.5).relu())  # overwritten by the next pass
        mods[1](mods[0](x).relu())
        for h in hooks:
            h.remove()
        return st.sample(None, None, None, None, None, False)[0]

    kept, reduced = sampled(False), sampled(True)
    assert [float(v) for v in reduced] == pytest.approx([float(v) for v in kept], nan_ok=True)
    assert reduced[15] == kept[15] == 5  # the infinite outputs of the first layer


def test_replay_states(monkeypatch):
    """_cuda.Replay's life, with the recording stood in for (no GPU here):
    eager first, recorded at the second call and replayed from then on;
    eager for good after a failed recording or a failed replay; never
    recorded with DNNFAULT_CUDA_GRAPHS=0 (ENABLED)."""
    from dnnfault import _cuda
    log = []

    class Graph:
        def __init__(self, fail):
            self.fail = fail

        def replay(self):
            if self.fail:
                raise RuntimeError("launch failed")
            log.append("replay")

    def capture(fail_capture=False, fail_replay=False):
        def fake(fn, device):
            log.append("capture")
            if fail_capture:
                raise RuntimeError("capture failed")
            return Graph(fail_replay)
        monkeypatch.setattr(_cuda, "capture", fake)

    monkeypatch.setattr(_cuda, "_on_device", lambda device, f: f())
    dev = torch.device("cpu")
    for case, expected in [
            ({}, ["eager", "capture", "replay", "replay"]),
            ({"fail_capture": True}, ["eager", "capture", "eager", "eager"]),
            ({"fail_replay": True}, ["eager", "capture", "eager", "eager"])]:
        capture(**case)
        log.clear()
        r = _cuda.Replay(lambda: log.append("eager"), dev)
        for _ in range(3):
            r()
        assert log == expected, (case, log)
    monkeypatch.setattr(_cuda, "ENABLED", False)
    capture()
    log.clear()
    r = _cuda.Replay(lambda: log.append("eager"), dev)
    for _ in range(3):
        r()
    assert log == ["eager"] * 3


def _key_setup():
    from dnnfault._stats import Stats
    mods = [nn.Linear(4, 3), nn.Linear(3, 2)]
    layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    for m in mods:
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
    st = Stats(layers)
    st.snapshot()
    return mods, layers, st


def test_step_graph_keys(monkeypatch):
    """A whole step is replayed only where its key, what the graph assumes
    of every tensor it reads and the state compute() depends on, is that of
    a recorded step (_step_graph; the recording itself needs a GPU:
    test_cuda.py). Read in place (STAGE_BYTES 0): same tensors, same key; a
    gradient that moves, an output of another shape, a snapshot dropped,
    another keep: another key. Staged (small tensors, the default): a
    gradient or output that moves keeps the key, one of another shape
    does not."""
    from dnnfault import _step_graph
    for staged in (False, True):
        monkeypatch.setattr(_step_graph, "STAGE_BYTES", 1 << 20 if staged else 0)
        mods, layers, st = _key_setup()
        acts = [torch.zeros(8, 3), torch.zeros(8, 2)]
        x, y = torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)
        loss = torch.zeros(())
        sg = _step_graph.StepGraphs(enabled=True)

        def key(keep=True, out=None):
            for l, a in zip(layers, acts):
                l.act = a
            return sg.key(st, loss, acts[1] if out is None else out, y, x, "logits", keep)

        k = key()
        assert k is not None and key() == k
        # Staged: the 4 gradients, 2 outputs, loss, output, target, input.
        assert len(sg.small) == (10 if staged else 0)
        acts[1].add_(1.0)  # new values, same place
        assert key() == k
        assert key(keep=False) != k
        assert (key(out=torch.zeros(8, 2)) == k) == staged
        assert key(out=torch.zeros(9, 2)) != k
        mods[0].weight.grad = torch.zeros_like(mods[0].weight)
        k2 = key()
        assert (k2 == k) == staged and key() == k2
        acts[0] = torch.zeros(4, 3)
        assert key() != k2
        st.prev = None
        assert key() != k2
        # Graphs made before the scratch was replaced are dropped.
        sg.graphs[k2] = sg.seen[k] = None
        st._generation += 1
        assert key() is not None and not sg.graphs and not sg.seen
        mods[1].bias.grad = mods[1].bias.grad.to_sparse()
        assert key() is None  # densified anew at every step: never replayed


def test_step_graph_staging(monkeypatch):
    """What a recording reads in place of the small tensors: buffers of its
    own holding their values, which compute() turns into the very numbers
    it gives from the tensors themselves; before a replay the buffers take
    the new step's values (on the CPU here: the graph itself needs a GPU).
    STAGE_TOTAL bounds what is staged; the rest is keyed by address."""
    from dnnfault import _step_graph
    from dnnfault._stats import Stats
    mods, layers, st = _key_setup()
    sg = _step_graph.StepGraphs(enabled=True)
    gen = torch.Generator().manual_seed(4)

    def step():
        with torch.no_grad():
            for m in mods:
                for p in m.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
                    p.grad = torch.randn(p.shape, generator=gen)
        acts = [torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)]
        args = (torch.randn((), generator=gen), acts[1], torch.randint(0, 2, (8,), generator=gen),
                (torch.randn(8, 4, generator=gen),), "logits", False)
        return acts, args

    def numbers(values, layout):
        return Stats.finish(Stats.gather(values), layout)

    snap = st.prev  # each compute() below reads the same snapshot

    def eager(acts, args):
        for l, a in zip(layers, acts):
            l.act = a
        st.prev = snap
        return numbers(*st.compute(*args))

    def staged_numbers():
        st.prev = snap
        return numbers(*st.compute(*xs, grads=grads))

    def same(a, b):
        assert np.array_equal(a[0], b[0], equal_nan=True) and a[1] == b[1]

    import numpy as np
    acts, args = step()
    want = eager(acts, args)
    for l, a in zip(layers, acts):
        l.act = a
    k = sg.key(st, *args[:4], "logits", False)
    small = sg.small
    xs, grads, stages = sg.staged(st, args, small)
    assert len(stages) == 10 and len(grads) == 4
    originals = {id(t) for _, t in small}
    assert not any(id(b) in originals for b in stages)
    assert all(any(l.act is b for b in stages) for l in layers)
    same(staged_numbers(), want)
    # A later step of the same key: the stages take its values.
    copies = _step_graph._copies(stages)
    acts, args = step()
    want = eager(acts, args)
    for l, a in zip(layers, acts):
        l.act = a
    assert sg.key(st, *args[:4], "logits", False) == k
    small = sg.small
    _step_graph._stage(copies, small)
    for (slot, _), b in zip(small, stages):
        if slot[0] == "a":
            layers[slot[1]].act = b
    same(staged_numbers(), want)
    # Room for only the first gradient: the others are keyed by address.
    monkeypatch.setattr(_step_graph, "STAGE_TOTAL", 12 * 4)
    for l, a in zip(layers, acts):
        l.act = a
    k = sg.key(st, *args[:4], "logits", False)
    assert [s for s, _ in sg.small] == [("g", 0, 0)]
    placed = [p[0] for p in k if isinstance(p, tuple) and len(p) == 5]  # read in place
    assert mods[0].weight.grad.data_ptr() not in placed
    assert mods[0].bias.grad.data_ptr() in placed


def test_step_graph_gives_up(monkeypatch):
    """A loop whose addresses never repeat stops computing keys after
    GIVE_UP sampled steps without a replay, one that keeps recording new
    graphs after CHURN recordings; off() forgets every graph."""
    from dnnfault import _step_graph
    from dnnfault._stats import Stats
    monkeypatch.setattr(_step_graph, "STAGE_BYTES", 0)  # staged, moving gradients would repeat
    m = nn.Linear(3, 2)
    layers = [Layer("0", m, list(m.named_parameters()))]
    st = Stats(layers)
    sg = _step_graph.StepGraphs(enabled=True)
    held = []  # every gradient kept alive: the next one lies elsewhere
    for _ in range(_step_graph.GIVE_UP):
        m.weight.grad = torch.randn(2, 3)
        held.append(m.weight.grad)
        k = sg.key(st, None, None, None, None, None, True)
        assert k is not None
        sg.saw(k, torch.zeros(3))
    assert len(sg.seen) == _step_graph.GIVE_UP
    assert sg.key(st, None, None, None, None, None, True) is None
    assert not sg.on and not sg.seen and not sg.graphs
    # Recordings that are seldom replayed (addresses cycling through more
    # sets than graphs are kept) stop them too.
    sg = _step_graph.StepGraphs(enabled=True)
    sg.recorded = _step_graph.CHURN + 1
    sg.replays = 4 * sg.recorded
    assert sg.key(st, None, None, None, None, None, True) is not None
    sg.replays -= 1
    assert sg.key(st, None, None, None, None, None, True) is None and not sg.on


class _RerunGraph:
    """Stands in for a CUDA graph on the CPU: made by running fn (as a
    recording runs its Python; the snapshot it overwrites is put back, as
    a recording runs no kernel), replay() runs it again on the very
    tensors the recording read (the layers' outputs it consumed set back)
    and writes its result where the recording's lies, as a graph reads
    and writes fixed addresses (the real graphs: test_cuda.py)."""

    def __init__(self, fn):
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__))
        self.st = st = cells["st"].cell_contents
        self.acts = [l.act for l in st.layers]
        before = [b.clone() for b in st._prev_bufs or []]
        fn()
        for b, old in zip(st._prev_bufs or [], before):
            b.copy_(old)
        self.fn = fn
        self.box = cells["box"].cell_contents

    def replay(self):
        for l, a in zip(self.st.layers, self.acts):
            l.act = a
        self.fn()
        vec = self.box.pop()[0]
        self.box[0][0].copy_(vec)


def _graph_loop(monkeypatch, steps, keep=lambda t: True, capture=None):
    """A training loop of a small MLP whose small tensors move at every
    step, its sampled steps through _step_graph with the recording stood in
    for by _RerunGraph (and the graph's copy to the host made into
    ordinary memory: pinned memory needs CUDA), each step's numbers checked
    against compute() on the step's own tensors, and the monitor's state
    (outputs consumed, snapshot kept or not) against what compute() leaves.
    capture: what records instead (default: a _RerunGraph). Returns (the
    StepGraphs, per step "eager" or "replayed", per step whether the graph
    copied the numbers to the host)."""
    import numpy as np
    from dnnfault import _cuda, _step_graph
    from dnnfault._stats import Stats
    monkeypatch.setattr(_cuda, "capture", capture or (lambda fn, device: _RerunGraph(fn)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(_step_graph, "_pinned", lambda n, dtype: torch.empty(n, dtype=dtype))
    monkeypatch.setattr(_step_graph, "HOST_COPY", True)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    mods = [model[0], model[2]]
    layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    twin = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    # Graphs (finishing in C) / eager (in Python), on the same model.
    st, ref = Stats(layers, _lib.load().finish), Stats(twin)
    sg = _step_graph.StepGraphs(enabled=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    outcomes, copied = [], []
    for t in range(steps):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        opt.zero_grad(set_to_none=True)
        h = model[0](x)
        out = model[2](model[1](h))
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        for ls in (layers, twin):
            ls[0].act, ls[1].act = h.detach(), out.detach()
        args = (loss, out, y, x, "logits", keep(t))
        values, layout = ref.compute(*args)
        want = Stats.finish(Stats.gather(values), layout)
        k = sg.key(st, *args[:4], "logits", keep(t))
        replays = sg.replays
        got = sg.run(st, k, args)
        assert sg.small == []  # the step's tensors are not held past it
        if got is None:
            values, layout = st.compute(*args)
            sg.saw(k, torch.cat(values))
            outcomes.append("eager")
            copied.append(False)
            numbers = Stats.finish(Stats.gather(values), layout)
        else:
            vec, finish, host = got
            outcomes.append("replayed" if sg.replays > replays and k in sg.graphs else "?")
            copied.append(host is not None)
            assert host is None or host.data_ptr() != vec.data_ptr()
            numbers = finish((vec if host is None else host).numpy())
        assert all(l.act is None for l in layers)
        assert (st.prev is not None) == keep(t)
        assert np.array_equal(numbers[0], want[0], equal_nan=True), t
        assert numbers[1] == pytest.approx(want[1], rel=1e-6)
        opt.step()
    return sg, outcomes, copied


def test_step_graph_bookkeeping(monkeypatch):
    """_step_graph's bookkeeping (_graph_loop): one recording at a key's
    second sighting, replays from then on, each with the numbers of that
    step's own tensors (the staged copies refreshed before each replay),
    copied to the host by the graph itself."""
    # Steps 6 and 8 have no snapshot: keys of their own.
    sg, outcomes, copied = _graph_loop(monkeypatch, 10, keep=lambda t: t not in (5, 7))
    # Step 0 has no snapshot and makes the snapshot's buffers (a generation
    # of its own); 1 is the first sighting of the steady key, recorded at 2
    # (counted as a replay) and replayed at 3, 4 and 9; 5 and 6 are first
    # sightings of the keys without keeping and without a snapshot,
    # recorded at 7 and 8.
    assert sg.on and sg.recorded == 3, outcomes
    assert outcomes == ["eager"] * 2 + ["replayed"] * 3 + ["eager"] * 2 + ["replayed"] * 3, outcomes
    assert copied == [o == "replayed" for o in outcomes]


def test_step_graph_host_copy_falls_back(monkeypatch):
    """Where the graph's own copy to the host differs from its result, or
    recording it fails, the copies are made eagerly again (HostCopy) and
    step graphs go on, with the same numbers (_graph_loop)."""
    from dnnfault import _step_graph
    monkeypatch.setattr(_step_graph, "_same_bits", lambda host, vec: False)
    sg, outcomes, copied = _graph_loop(monkeypatch, 5)
    assert outcomes == ["eager"] * 2 + ["replayed"] * 3 and not any(copied)
    assert sg.on and not sg.host_copy and sg.recorded == 1
    # The graph still writes its pinned copy at every replay: held with it.
    assert all(g.held[-1] is not None for g in sg.graphs.values())
    monkeypatch.undo()

    def capture(fn, device):  # fails while the graph copies to the host
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__))
        graph = _RerunGraph(fn)  # runs fn: consumes the outputs, as a recording does
        if cells["host"].cell_contents[0] is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        return graph
    sg, outcomes, copied = _graph_loop(monkeypatch, 6, capture=capture)
    # The failed recording at 2 runs eagerly and drops the views it made (a
    # new generation): 3 sights the key again, 4 records without the copy.
    assert outcomes == ["eager"] * 4 + ["replayed"] * 2 and not any(copied), outcomes
    assert sg.on and not sg.host_copy and sg.recorded == 1


# Per kind of record (_WG, _W, _A): the values that are sums of squares or
# counts, never negative.
_NOT_NEGATIVE = {0: (2, 3, 4, 5), 1: (1, 2), 2: (1, 2, 3)}


def _random_layout(rng, n_layers):
    """A layout of Stats.finish with every kind of record (counts records
    as a GPU makes them) and the raw vector's length it needs."""
    from dnnfault import _stats
    sizes = {_stats._WG: 10, _stats._W: 5, _stats._A: 4}
    recs, pos = [], 0
    for _ in range(rng.randint(0, 3 * n_layers)):
        kind = rng.choice([_stats._WG, _stats._W, _stats._A, _stats._N])
        i = rng.randrange(n_layers)
        pad = rng.randint(1, 3) if kind == _stats._N else (rng.randint(0, 4) if kind == _stats._WG
                                                          else 0)
        recs.append((kind, i, pos, pad))
        pos += 2 * pad if kind == _stats._N else sizes[kind]
    extra = {"loss": pos, "accuracy": pos + 1, "input": (pos + 2, 40)}
    nws = [rng.randint(1, 50) for _ in range(n_layers)]
    ng = [rng.choice([0, n]) for n in nws]
    na = [rng.choice([0, 7, 64]) for _ in range(n_layers)]
    has_prev = [rng.random() < 0.7 for _ in range(n_layers)]
    return (None, recs, nws, ng, na, has_prev, extra, None), pos + 6


def test_finish_in_c_is_finish():
    """dnnfault_finish (the library, for replayed whole steps) gives the
    very numbers of Stats.finish, to the last bit, on random layouts with
    every kind of record and values with zeros, negative zeros, NaN, Inf,
    huge and tiny ones, in float32 and float64; a layer to recount goes
    back to Stats.finish; a record out of the vector is refused."""
    import random
    import numpy as np
    from dnnfault import _lib
    from dnnfault._stats import Stats, _CFinish
    lib = _lib.load()
    assert lib.finish is not None
    rng = random.Random(7)
    specials = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e38, 1e-38, -3.5]
    recounts = 0
    for trial in range(400):
        layout, n = _random_layout(rng, rng.randint(1, 6))
        vals = [rng.choice(specials) if rng.random() < 0.15 else rng.uniform(-100, 100)
                for _ in range(n)]
        for kind, _, o, pad in layout[1]:  # squares and counts are not negative
            for k in _NOT_NEGATIVE[kind] if kind != 3 else range(2 * pad):
                vals[o + k] = abs(vals[o + k])
        for dtype in (np.float32, np.float64):
            raw = np.array(vals, dtype=dtype)
            want = Stats.finish(raw, layout)
            fin = _CFinish(lib.finish, layout)
            got = fin(raw)
            assert got[0].dtype == np.float32
            assert got[0].tobytes() == want[0].tobytes(), (trial, dtype)  # NaN bits too
            assert repr(got[1]) == repr(want[1])  # NaN included
            a, r, w = fin.arrays
            rv = lib.finish(raw.ctypes.data, 1 if dtype == np.float32 else 2, raw.size,
                            a.ctypes.data, len(layout[1]), r.ctypes.data, len(layout[2]),
                            w.ctypes.data, fin.out.ctypes.data)
            assert rv in (0, 1)
            recounts += rv
    assert recounts > 0  # the fallback was exercised
    # A record reaching past the vector, and an unknown dtype.
    layout = (None, [(0, 0, 0, 0)], [3, 3], [3, 3], [0, 0], [True, True], {}, None)
    fin = _CFinish(lib.finish, layout)
    a, r, w = fin.arrays
    short = np.zeros(9)
    args = (a.ctypes.data, 1, r.ctypes.data, 2, w.ctypes.data, fin.out.ctypes.data)
    assert lib.finish(short.ctypes.data, 2, 9, *args) == -22
    assert lib.finish(short.ctypes.data, 3, 9, *args) == -22
    assert lib.finish(np.zeros(10).ctypes.data, 2, 10, *args) == 0


def test_float_view_hands_c_float32_values():
    """What the C struct's layer_stats points at holds the vector's values
    as float32, whatever the vector: a float32 one is viewed in place, a
    float64 or strided one is copied first."""
    import numpy
    from dnnfault._monitor import _float_view
    v = numpy.arange(6, dtype=numpy.float32)
    view = _float_view(v)
    v[2] = 7.5  # in place: no copy
    assert list(view) == [0.0, 1.0, 7.5, 3.0, 4.0, 5.0]
    assert list(_float_view(numpy.arange(4.0))) == [0.0, 1.0, 2.0, 3.0]
    assert list(_float_view(numpy.arange(8, dtype=numpy.float32)[::2])) == [0.0, 2.0, 4.0, 6.0]
    ro = numpy.arange(3, dtype=numpy.float32)
    ro.flags.writeable = False
    assert list(_float_view(ro)) == [0.0, 1.0, 2.0]
    assert list(_float_view(numpy.zeros(0, dtype=numpy.float32))) == []
