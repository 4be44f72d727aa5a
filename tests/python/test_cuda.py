"""The package on CUDA tensors. Skipped where torch sees no GPU (CI);
scripts/gpu-check.sh runs them on a machine with one."""

import math

import pytest
import torch
from torch import nn

import dnnfault
from conftest import num
from helpers import digits, mlp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DEV = "cuda"


def _data(n=None):
    x, y = digits(n)
    return x.to(DEV), y.to(DEV)


def _batches(x, y, batch, steps, seed=0):
    """Indices drawn on the device, so the loop itself copies nothing."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    for t in range(steps):
        idx = torch.randint(0, len(x), (batch,), device=DEV, generator=g)
        yield t, x[idx], y[idx]


def _train_step(model, opt, lf, xb, yb, spoil=None):
    """One optimizer step; spoil(loss) may replace the loss before backward."""
    opt.zero_grad()
    out = model(xb)
    loss = lf(out, yb)
    if spoil is not None:
        loss = spoil(loss)
    loss.backward()
    opt.step()
    return out, loss


def test_cuda_values_match_torch(daemon):
    torch.manual_seed(1)
    model = mlp().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    every, steps = 5, 40
    expected = {}
    with dnnfault.watch(model, opt, lf, run="cuda-values", every=every,
                        address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 64, steps):
            out, loss = _train_step(model, opt, lf, xb, yb)
            mon.step(loss, output=out, target=yb, inputs=xb)
            if t % every == 0:
                first, last = model[0], model[4]
                w = torch.cat([first.weight.reshape(-1), first.bias.reshape(-1)])
                g = torch.cat([first.weight.grad.reshape(-1), first.bias.grad.reshape(-1)])
                acc = (out.argmax(1) == yb).float().mean()
                wl = torch.cat([last.weight.reshape(-1), last.bias.reshape(-1)])
                expected[t] = (w.norm().item(), g.norm().item(), wl.norm().item(),
                               loss.item(), acc.item(), xb.mean().item())
    st = daemon.status("cuda-values")
    assert st["steps_stored"] == len(expected) == steps // every
    rows = daemon.export("cuda-values")
    assert [r["step"] for r in rows] == sorted(expected)
    for r in rows:
        wn, gn, lastn, loss, acc, xmean = expected[r["step"]]
        assert num(r["layers"]["0"]["weight_norm"]) == pytest.approx(wn, rel=1e-5)
        assert num(r["layers"]["0"]["grad_norm"]) == pytest.approx(gn, rel=1e-5)
        assert num(r["layers"]["4"]["weight_norm"]) == pytest.approx(lastn, rel=1e-4)
        assert r["loss"] == pytest.approx(loss, rel=1e-6)
        assert r["accuracy"] == pytest.approx(acc, abs=1e-6)
        assert r["input_mean"] == pytest.approx(xmean, rel=1e-4, abs=1e-6)
        assert r["lr"] == 0.05
        assert 0 < num(r["layers"]["0"]["update_ratio"]) < 1
        assert 0 <= num(r["layers"]["0"]["act_nonpos_frac"]) <= 1


def test_cuda_unsampled_steps_never_sync(daemon):
    """On unsampled steps (the forward with hooks detached, mon.step,
    and the step before a sample that snapshots the weights) any
    host-device synchronisation raises under torch's sync debug mode."""
    torch.manual_seed(2)
    model = mlp().to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    every, steps = 10, 45
    unsampled = 0
    with dnnfault.watch(model, opt, lf, run="cuda-nosync", every=every,
                        address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 32, steps):
            quiet = t % every != 0 and t > 0  # step 0 describes the run
            opt.zero_grad()
            if quiet:
                torch.cuda.set_sync_debug_mode("error")
            try:
                out = model(xb)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            loss = lf(out, yb)
            loss.backward()
            opt.step()
            if quiet:
                torch.cuda.set_sync_debug_mode("error")
                unsampled += 1
            try:
                mon.step(loss, output=out, target=yb, inputs=xb)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    assert mon.stats()["errors"] == 0
    assert unsampled == steps - len(range(0, steps, every))
    assert daemon.status("cuda-nosync")["steps_stored"] == len(range(0, steps, every))


def test_cuda_one_copy_per_sampled_step(daemon):
    """A sampled step copies device to host once (all statistics gathered
    into one tensor), as the profiler's CUDA memcpy records show."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(3)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 64, 10)).to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    copies = []
    with dnnfault.watch(model, opt, lf, run="cuda-copies", every=1,
                        address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 32, 6):
            out, loss = _train_step(model, opt, lf, xb, yb)
            torch.cuda.synchronize()
            if t < 2:  # the first step also describes the run
                mon.step(loss, output=out, target=yb, inputs=xb)
                continue
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                mon.step(loss, output=out, target=yb, inputs=xb)
                torch.cuda.synchronize()
            names = [e.name for e in prof.events()]
            if not names:
                pytest.skip("the profiler recorded no CUDA activity here")
            copies.append([n for n in names if "Memcpy" in n or "memcpy" in n])
    assert daemon.status("cuda-copies")["steps_stored"] == 6
    assert [sum("DtoH" in n for n in c) for c in copies] == [1] * len(copies), copies


def test_cuda_wrapped_frozen_nan_and_moved(daemon):
    """DataParallel on the GPU, a frozen layer, the model moved to the GPU
    after watch(), and a NaN loss: recorded, never raised."""
    torch.manual_seed(4)
    net = mlp()
    for p in net[2].parameters():
        p.requires_grad_(False)
    model = nn.DataParallel(net)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    lf = nn.CrossEntropyLoss()
    x, y = _data(256)
    steps = 12
    frozen_norm = torch.cat([net[2].weight.reshape(-1), net[2].bias.reshape(-1)]).norm().item()
    with dnnfault.watch(model, opt, lf, run="cuda-wrapped", every=1,
                        address=daemon.address) as mon:
        model.to(DEV)  # after watch(): the statistics follow the parameters
        for t, xb, yb in _batches(x, y, 32, steps):
            out, loss = _train_step(model, opt, lf, xb, yb,
                                    (lambda l: l * float("nan")) if t == 8 else None)
            mon.step(loss, output=out, target=yb, inputs=xb)
    assert daemon.status("cuda-wrapped")["steps_stored"] == steps
    show = daemon.show("cuda-wrapped")
    assert [l["name"] for l in show["layers"]] == ["0", "2", "4"]
    assert show["layers"][1]["trainable_count"] in (0, None)  # 0 reads null
    rows = daemon.export("cuda-wrapped")
    assert math.isnan(num(rows[8]["loss"]))
    assert not any(math.isnan(num(r["loss"])) for r in rows[:8])
    assert mon.stats()["errors"] == 0
    for r in rows:
        frozen = r["layers"]["2"]
        assert num(frozen["weight_norm"]) == pytest.approx(frozen_norm, rel=1e-5)
        assert math.isnan(num(frozen["grad_norm"]))
        assert num(frozen["update_ratio"]) == 0
    assert num(rows[5]["layers"]["0"]["grad_norm"]) > 0
    assert num(rows[10]["layers"]["0"]["nan_count"]) > 0


def test_cuda_big_layers_grouped_and_chunked(daemon):
    """Layers around the GPU group size (CHUNK_GPU weights): grouped, and
    one cut into chunks; every layer's norms equal torch's."""
    from dnnfault import _stats
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 2100), nn.ReLU(), nn.Linear(2100, 10)).to(DEV)
    assert model[4].weight.numel() > _stats.CHUNK_GPU
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    expected = {}
    with dnnfault.watch(model, opt, lf, run="cuda-big", every=2, address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 64, 8):
            out, loss = _train_step(model, opt, lf, xb, yb)
            mon.step(loss, output=out, target=yb, inputs=xb)
            if t % 2 == 0:
                expected[t] = {}
                for k in ("0", "2", "4", "6"):
                    m = model[int(k)]
                    w = torch.cat([m.weight.reshape(-1), m.bias.reshape(-1)])
                    g = torch.cat([m.weight.grad.reshape(-1), m.bias.grad.reshape(-1)])
                    expected[t][k] = (w.norm().item(), g.norm().item())
    rows = daemon.export("cuda-big")
    assert [r["step"] for r in rows] == sorted(expected)
    for r in rows:
        for k, (wn, gn) in expected[r["step"]].items():
            assert num(r["layers"][k]["weight_norm"]) == pytest.approx(wn, rel=1e-4), (r["step"], k)
            assert num(r["layers"][k]["grad_norm"]) == pytest.approx(gn, rel=1e-4), (r["step"], k)


def test_cuda_replays_match_eager(monkeypatch):
    """A group's reductions replayed as a CUDA graph give the very numbers
    the same kernels give launched one by one, and torch's, over steps with
    and without a snapshot to keep."""
    import numpy as np
    from dnnfault import _cuda
    from dnnfault._stats import Layer, Stats
    from test_unit import _check_layers

    results = {}
    for graphs in (True, False):
        monkeypatch.setattr(_cuda, "ENABLED", graphs)
        torch.manual_seed(3)
        mods = [nn.Linear(6, 5), nn.Linear(5, 4), nn.Conv2d(2, 3, 3), nn.Linear(4, 3),
                nn.Linear(3, 3).double()]
        mods = [m.to(DEV) for m in mods]
        mods[3].bias.requires_grad_(False)
        layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
        st = Stats(layers)
        st.snapshot()
        gen = torch.Generator(device=DEV).manual_seed(5)
        got = []
        for step in range(5):
            prevs = [torch.cat([p.detach().reshape(-1).clone() for p in l.params])
                     for l in layers]
            acts = []
            for k, m in enumerate(mods):
                with torch.no_grad():
                    for p in m.parameters():
                        noise = torch.randn(p.shape, generator=gen, device=DEV)
                        p.add_(0.01 * noise.to(p.dtype))
                        if p.requires_grad:
                            p.grad = torch.randn(p.shape, generator=gen, device=DEV).to(p.dtype)
                shape = {2: (4, 3, 6, 6), 4: (8, 3)}.get(k, (16, 5 + k))
                a = 3 * torch.randn(shape, generator=gen, device=DEV)
                acts.append(a.double() if k == 4 else a)
                layers[k].act = acts[-1]
            stats, _ = st.sample(None, None, None, None, None, keep_weights=step < 4)
            _check_layers(stats, layers, acts, prevs)
            got.append(stats)
        replays = [r for g in st.groups for ex in g.cache.values() for r in ex.replays.values()]
        results[graphs] = (got, [r.graph is not None for r in replays])
    for a, b in zip(results[True][0], results[False][0]):
        assert np.array_equal(a, b, equal_nan=True)
    assert any(results[True][1]), "no group was replayed as a graph"
    assert not any(results[False][1])


@pytest.mark.parametrize("stage_bytes", [1 << 20, 0])
def test_cuda_step_graphs_match_eager(monkeypatch, stage_bytes):
    """Whole sampled steps replayed as one graph (_step_graph) give the very
    numbers of the eager deferred path, and torch's: over steps whose
    tensors keep their addresses (recorded, then replayed), a gradient that
    moves, an output of another shape, steps that do not keep the weights
    and steps without a snapshot; more keys than graphs kept. With the
    small tensors staged (the default) and read in place (STAGE_BYTES 0)."""
    import numpy as np
    from dnnfault import _step_graph
    from dnnfault._stats import Layer, Stats
    from test_unit import _check_layers

    results = {}
    for on in (True, False):
        monkeypatch.setattr(_step_graph, "ENABLED", on)
        monkeypatch.setattr(_step_graph, "MAX_GRAPHS", 3)
        monkeypatch.setattr(_step_graph, "STAGE_BYTES", stage_bytes)
        torch.manual_seed(3)
        mods = [m.to(DEV) for m in (nn.Linear(6, 5), nn.Linear(5, 4), nn.Conv2d(2, 3, 3),
                                    nn.Linear(4, 3))]
        mods[3].bias.requires_grad_(False)
        layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
        params = [p for m in mods for p in m.parameters()]
        for p in params:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        acts = [torch.zeros({2: (4, 3, 6, 6)}.get(k, (16, 5 + k)), device=DEV) for k in range(4)]
        out = torch.zeros(16, 3, device=DEV)
        target = torch.zeros(16, dtype=torch.long, device=DEV)
        x = torch.zeros(16, 6, device=DEV)
        loss = torch.zeros((), device=DEV)
        gen = torch.Generator(device=DEV).manual_seed(5)
        st = Stats(layers)
        st.snapshot()
        got = []
        for step in range(18):
            if step == 6:
                mods[0].weight.grad = torch.zeros_like(mods[0].weight)  # another address
            if step == 9:
                acts[1] = torch.zeros(20, 6, device=DEV)
            snap = step <= 12  # step 12 reads the snapshot step 11 kept, 13 on have none
            prevs = [torch.cat([p.detach().reshape(-1).clone() for p in l.params])
                     if snap else None for l in layers]
            with torch.no_grad():
                for p in params:
                    p.add_(0.01 * torch.randn(p.shape, generator=gen, device=DEV))
                    if p.grad is not None:
                        p.grad.copy_(torch.randn(p.shape, generator=gen, device=DEV))
                for a in acts:
                    a.copy_(3 * torch.randn(a.shape, generator=gen, device=DEV))
                out.copy_(torch.randn(out.shape, generator=gen, device=DEV))
                target.copy_(torch.randint(0, 3, (16,), generator=gen, device=DEV))
                x.copy_(torch.randn(x.shape, generator=gen, device=DEV))
                loss.fill_(float(step))
            for l, a in zip(layers, acts):
                l.act = a
            pending = st.sample(loss, out, target, x, "logits", step < 12, defer=True)
            stats, extra = pending.result()
            assert all(l.act is None for l in layers)
            _check_layers(stats, layers, acts, prevs)
            assert extra["loss"] == step
            assert extra["accuracy"] == pytest.approx((out.argmax(1) == target).float().mean().item())
            assert extra["input"] == pytest.approx((x.mean().item(), x.std(unbiased=False).item(),
                                                    x.min().item(), x.max().item()), rel=1e-5)
            got.append((stats, extra))
        results[on] = (got, st._steps.replays)
    for (a, ea), (b, eb) in zip(results[True][0], results[False][0]):
        assert np.array_equal(a, b, equal_nan=True)
        assert ea == eb
    # Read in place: recorded (and replayed once) at 2, 7, 11 (step 9's
    # bigger output grew the scratch, so 10 has a key of its own) and 14;
    # replayed at 3-5, 8 and 15-17: 11 in all. 6, 9, 12 and 13 start new
    # keys. Staged, step 6's moved gradient keeps the key: 12 in all.
    assert results[True][1] >= (12 if stage_bytes else 10), results[True][1]
    assert results[False][1] == 0


def test_cuda_step_graphs_memory_limit(monkeypatch):
    """A recording whose pool would take the graphs past MAX_BYTES of device
    memory is dropped before it runs: the step is computed eagerly with
    torch's numbers (the snapshot it reads untouched), and step graphs stop."""
    from dnnfault import _step_graph
    from dnnfault._stats import Layer, Stats
    from test_unit import _check_layers
    monkeypatch.setattr(_step_graph, "MAX_BYTES", -1)
    torch.manual_seed(8)
    mods = [nn.Linear(6, 5).to(DEV), nn.Linear(5, 3).to(DEV)]
    layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
    params = [p for m in mods for p in m.parameters()]
    for p in params:
        p.grad = torch.zeros_like(p)
    acts = [torch.zeros(16, 5, device=DEV), torch.zeros(16, 3, device=DEV)]
    st = Stats(layers)
    st.snapshot()
    for step in range(5):
        prevs = [torch.cat([p.detach().reshape(-1).clone() for p in l.params]) for l in layers]
        with torch.no_grad():
            for p in params:
                p.add_(0.01 * torch.randn_like(p))
                p.grad.copy_(torch.randn_like(p))
            for a in acts:
                a.copy_(torch.randn_like(a))
        for l, a in zip(layers, acts):
            l.act = a
        stats, _ = st.sample(None, None, None, None, None, True, defer=True).result()
        _check_layers(stats, layers, acts, prevs)
    assert st._steps.recorded == 0 and not st._steps.on


def test_cuda_step_graphs_copy_to_the_host(monkeypatch):
    """A recorded step graph copies its result into pinned memory itself
    (_step_graph.HOST_COPY): the copy passes the recording's check, stays
    on, and every replayed step's numbers are torch's, as are those of the
    same steps with the copies made eagerly, each read only after the next
    step's replay (which must not write over them first)."""
    from dnnfault import _step_graph
    from dnnfault._stats import Layer, Stats
    from test_unit import _ref_layer
    got = {}
    for copy in (True, False):
        monkeypatch.setattr(_step_graph, "HOST_COPY", copy)
        torch.manual_seed(9)
        mods = [nn.Linear(6, 5).to(DEV), nn.Linear(5, 3).to(DEV)]
        layers = [Layer(str(k), m, list(m.named_parameters())) for k, m in enumerate(mods)]
        params = [p for m in mods for p in m.parameters()]
        st = Stats(layers)
        st.snapshot()
        got[copy] = []
        held = None  # each step's numbers are read after the next step's replay
        for step in range(9):
            prevs = [torch.cat([p.detach().reshape(-1).clone() for p in l.params]) for l in layers]
            with torch.no_grad():
                for p in params:
                    p.add_(0.01 * torch.randn_like(p))
                    p.grad = torch.randn_like(p)  # a new tensor each step, as zero_grad leaves
            acts = [torch.randn(16, 5, device=DEV), torch.randn(16, 3, device=DEV)]
            for l, a in zip(layers, acts):
                l.act = a
            # torch's numbers now: the next step changes the weights.
            ref = [_ref_layer(l.params, a, pv) for l, a, pv in zip(layers, acts, prevs)]
            pending = st.sample(None, None, None, None, None, True, defer=True)
            if held is not None:
                stats, _ = held[0].result()
                for k, want in enumerate(held[1]):
                    assert [float(v) for v in stats[16 * k:16 * (k + 1)]] == pytest.approx(
                        want, rel=2e-4, abs=1e-5, nan_ok=True)
                got[copy].append(stats)
            held = (pending, ref)
        sg = st._steps
        assert sg.host_copy == copy and sg.recorded == 1 and sg.replays >= 6, (
            sg.host_copy, sg.recorded, sg.replays)
        assert all((g.host is not None) == copy for g in sg.graphs.values())
    for a, b in zip(got[True], got[False]):
        assert a.tobytes() == b.tobytes()


def test_cuda_whole_steps_in_a_real_loop(daemon):
    """A real training loop, every step sampled, with whole-step graphs
    (_step_graph): every stored step has the values torch computes, and all
    but the first few sampled steps are replays of one recording. (Before
    small tensors were staged, this loop's addresses never repeated on an
    H200: 17 recordings in 60 steps, then eager, 2026-11-27.)"""
    torch.manual_seed(6)
    model = mlp().to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    steps = 60
    norms = torch.empty(steps, device=DEV)
    with dnnfault.watch(model, opt, lf, run="cuda-steps", every=1,
                        address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 64, steps):
            out, loss = _train_step(model, opt, lf, xb, yb)
            norms[t] = torch.cat([p.detach().reshape(-1) for p in model[0].parameters()]).norm()
            mon.step(loss, output=out, target=yb, inputs=xb)
        on = mon._stats.torch._steps.on
    stats = mon.stats()  # after close, as a user reads them
    replays, recorded = stats["graph_replays"], stats["graph_recordings"]
    assert stats["errors"] == 0
    # The first sample makes the step graphs, the second is the key's
    # eager sighting, the third records it (and counts as a replay).
    assert on and recorded <= 2 and replays >= steps - 4, (replays, recorded, on)
    rows = daemon.export("cuda-steps")
    assert [r["step"] for r in rows] == list(range(steps))
    for r in rows:
        assert num(r["layers"]["0"]["weight_norm"]) == pytest.approx(norms[r["step"]].item(),
                                                                      rel=1e-5)


def test_cuda_nonfinite_counted_on_the_device():
    """On a GPU NaN and Inf are counted on the device at every sampled step
    (the tensors have changed by the time the deferred copy is read): the
    counts are exact, in the weight groups and in output-only groups, and a
    finite value whose square overflows counts as neither."""
    from dnnfault._stats import Stats
    from test_unit import nonfinite_layers
    mods, layers, acts = nonfinite_layers(DEV, extra=[nn.ReLU()])
    acts[4][3, 3] = float("-inf")  # a layer without parameters: output-only group
    acts[4][0, :3] = float("nan")
    st = Stats(layers)
    for l, a in zip(layers, acts):
        l.act = a
    pending = st.sample(None, None, None, None, None, False, defer=True)
    assert not isinstance(pending, tuple)
    stats, _ = pending.result()
    counts = [(stats[16 * k + 14], stats[16 * k + 15]) for k in range(5)]
    assert counts == [(1, 1), (0, 2), (1, 1), (0, 0), (3, 1)]
    assert stats[48] == float("inf") and stats[48 + 3] == pytest.approx(1e20)


def test_cuda_sampled_steps_do_not_wait(daemon):
    """Every step sampled: once the graphs are recorded, mon.step queues
    its work and an asynchronous copy and returns; the numbers are read
    at the next call. No stream or device synchronisation, and every step
    arrives with the values torch computes."""
    from torch.profiler import ProfilerActivity, profile, record_function
    torch.manual_seed(4)
    model = mlp().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lf = nn.CrossEntropyLoss()
    x, y = _data()
    steps, syncs, norms = 12, [], {}
    with dnnfault.watch(model, opt, lf, run="cuda-nowait", every=1,
                        address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 32, steps):
            out, loss = _train_step(model, opt, lf, xb, yb)
            norms[t] = torch.cat([p.detach().reshape(-1) for p in model[0].parameters()]).norm()
            if t < 4:
                mon.step(loss, output=out, target=yb, inputs=xb)
                continue
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                with record_function("dnnfault-step"):
                    mon.step(loss, output=out, target=yb, inputs=xb)
            evs = prof.events()
            # Only what mon.step did (the profiler may synchronise itself).
            span = [e.time_range for e in evs if e.name == "dnnfault-step"][0]
            syncs.append([e.name for e in evs if "Synchronize" in e.name
                          and "Event" not in e.name and span.start <= e.time_range.start
                          and e.time_range.end <= span.end])
    assert mon.stats()["errors"] == 0
    assert syncs == [[]] * (steps - 4), syncs
    rows = daemon.export("cuda-nowait")
    assert [r["step"] for r in rows] == list(range(steps))
    for r in rows:
        assert num(r["layers"]["0"]["weight_norm"]) == pytest.approx(norms[r["step"]].item(),
                                                                      rel=1e-5)


def test_cuda_grad_scaler_skips_are_left_out(daemon):
    """Mixed precision as users run it: autocast to float16 and the real
    GradScaler, from a scale that overflows the first steps' gradients.
    The steps it skipped are left out of the analysis (docs/symptoms.md,
    "Steps the training loop skipped"): no nan_tensor, no unchanged_weights,
    and skipped_steps counts them."""
    torch.manual_seed(7)
    model = mlp(hidden=256).to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    # 2^24: the logits' gradient (up to 1/64 with a batch of 64) overflows
    # float16 at once, and a few halvings fit the scale well within 16.
    scaler = torch.cuda.amp.GradScaler(init_scale=2.0 ** 24, growth_interval=25)
    x, y = _data()
    skipped = []
    with dnnfault.watch(model, opt, lf, run="cuda-amp", every=1, address=daemon.address) as mon:
        for t, xb, yb in _batches(x, y, 64, 120):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(xb)
                loss = lf(out, yb)
            scaler.scale(loss).backward()
            before = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            if scaler.get_scale() < before:
                skipped.append(t)
            mon.step(loss, output=out, target=yb, inputs=xb)
    assert skipped and skipped[0] == 0 and len(skipped) < 30, skipped
    status = daemon.final_status("cuda-amp")
    found = {s["id"] for s in status["symptoms"]}
    assert not found & {"nan_tensor", "unchanged_weights"}, status
    assert status["skipped_steps"] == len(skipped), (status, skipped)
