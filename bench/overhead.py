#!/usr/bin/env python3
"""What monitoring costs a training loop: step time with dnnfault.watch()
over step time without, for three models on digits, at the default
sampling interval and at every step.

    PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \
        /usr/bin/python3 bench/overhead.py [--daemon build/daemon/dnnfaultd]
        [--models mlp,cnn,wide-mlp] [--repeats 5] [--scale S | --steps N] [--device cpu|cuda] [--stats-cost [--table]]
        [--breakdown] [--profile] [--step-graphs] [--malloc default|fixed]

Runs with and without monitoring alternate within each repeat (same seeds,
same batches); the ratio printed is the median over repeats of
(monitored time / plain time). It starts its own dnnfaultd on a temporary
socket. --stats-cost instead times the statistics of one sampled step alone
(microseconds, with the number of groups of layers and of torch calls it
makes, and finishing the torch path's numbers in Python and in C; no
daemon, no training loop). --breakdown splits the every-step
cost inside the training loop: forward hooks alone, hooks and the torch
path's reductions only queued, hooks and statistics (no client), the whole
monitor, each against the plain loop. --profile prints the CPU time of
mon.step() against the training step's under torch.profiler, every step
sampled. --step-graphs (a GPU) compares every-step sampling with whole
steps replayed as one CUDA graph against without. The last columns are
the minor page faults per step (medians), plain / watched: hundreds per
step mean glibc gave freed memory back to the kernel and the loop faulted
it in again; --malloc fixed keeps it (fix_malloc).
"""

import argparse
import ctypes
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

import dnnfault


def mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def cnn():
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def wide():
    return nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


MODELS = {"mlp": (mlp, 500), "cnn": (cnn, 250), "wide-mlp": (wide, 50)}


def steps_of(args, name):
    """Timed steps per run of a model: --steps, else its own count (sized
    for the CPU, where the wide MLP's step is 10x the MLP's) times --scale."""
    return args.steps or max(10, int(MODELS[name][1] * args.scale))


def train_timed(make, steps, x, y, batch, seed, monitor=None):
    """Seconds per step of training make() on (x, y) after 5 warm-up
    steps, and minor page faults per step. monitor(model, opt, loss_fn), when
    given, returns (after_step, close): after_step(loss, out, yb, xb) runs
    after every step."""
    torch.manual_seed(seed)
    model = make().to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(x), (steps + 5, batch), generator=g).to(x.device)
    after_step, close = monitor(model, opt, lf) if monitor else (None, None)
    t0 = 0.0
    for t in range(steps + 5):
        if t == 5:  # warm-up steps are not timed
            _sync(x.device)
            t0 = time.perf_counter()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        xb, yb = x[idx[t]], y[idx[t]]
        opt.zero_grad()
        out = model(xb)
        loss = lf(out, yb)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(loss, out, yb, xb)
    _sync(x.device)
    elapsed = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    if close is not None:
        close()
    return elapsed / steps, faults / steps


def run(make, steps, x, y, batch, every, address, seed):
    """(Seconds, page faults) per step, watched by dnnfault every `every`
    steps (0: not)."""
    def watch(model, opt, lf):
        mon = dnnfault.watch(model, opt, lf, every=every, address=address,
                             run="bench-%d" % seed)
        return (lambda loss, out, yb, xb: mon.step(loss, output=out, target=yb, inputs=xb),
                lambda: mon.close(timeout=10))
    return train_timed(make, steps, x, y, batch, seed, watch if every else None)


def run_parts(make, steps, x, y, batch, part, seed):
    """(Seconds, page faults) per step with only part of the monitor, every step:
    "hooks" (the forward hooks that record outputs), "queue" (hooks and the
    torch path's reductions queued on the device, never copied to the host:
    on a GPU, what the statistics cost without the wait for the device) or
    "stats" (hooks and the statistics, computed, copied and finished, but
    sent nowhere)."""
    from dnnfault._monitor import _recorder

    def parts(model, opt, lf):
        layers, st = _step_stats(model)
        now = st.output_reducer() if part == "stats" else None
        for i, l in enumerate(layers):
            l.module.register_forward_hook(_recorder(l, now and (lambda out, i=i: now(i, out))))

        def after_step(loss, out, yb, xb):
            if part == "stats":
                st.sample(loss, out, yb, xb, "logits", True)
            elif part == "queue" and st.current() is st.torch:
                st.torch.compute(loss, out, yb, xb, "logits", True)
            else:
                for l in layers:
                    l.act = None
        return after_step, None
    return train_timed(make, steps, x, y, batch, seed, parts)


def _step_stats(model):
    """The model's layers and the statistics the monitor would use for
    them (the C path on the CPU unless DNNFAULT_STATS=torch)."""
    from dnnfault import _describe, _lib
    from dnnfault._host_stats import StepStats
    from dnnfault._stats import Layer
    layers = [Layer(n, m, p) for n, m, p in _describe.find_layers(model)]
    return layers, StepStats(layers, _lib.load())


def fix_malloc():
    """Fixed glibc thresholds (what MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=268435456 in the environment do): with glibc's
    dynamic ones, whether a training loop's freed tensors are given back to
    the kernel and faulted in again at every step depends on the heap's
    history, and plain and watched loops alike swing by 10-40% from one
    run to the next (docs/benchmarks.md)."""
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)):
        sys.exit("mallopt failed (not glibc?)")


def _sync(device):
    """Waits for queued kernels, so that a time covers the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats_cost(make, x, y, batch, repeats, table=False):
    """Microseconds per sampled step spent in the statistics alone
    (compute, the one copy, finishing), on one recorded step replayed;
    the path that computed them; and the torch path's groups of layers."""
    torch.manual_seed(0)
    model = make().to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lf = nn.CrossEntropyLoss()
    layers, st = _step_stats(model)
    for l in layers:
        l.module.register_forward_hook(lambda mod, i, o, l=l: setattr(l, "act", o.detach()))
    st.snapshot()
    xb, yb = x[:batch], y[:batch]
    opt.zero_grad()
    out = model(xb)
    loss = lf(out, yb)
    loss.backward()
    opt.step()
    acts = [l.act for l in layers]

    def once():
        for l, a in zip(layers, acts):
            l.act = a
        st.sample(loss, out, yb, xb, "logits", True)  # the copy to the host waits for the device

    n = max(10, int(0.2 / max(_timed(once, 3), 1e-6)))
    us = min(_timed(once, n) for _ in range(repeats)) * 1e6
    queue_us = float("nan")
    if st.current() is st.torch:
        def queue():
            for l, a in zip(layers, acts):
                l.act = a
            st.torch.compute(loss, out, yb, xb, "logits", True)
        # Queued only (no copy, no finish); the device drains between repeats.
        best = []
        for _ in range(repeats):
            best.append(_timed(queue, n))
            _sync(x.device)
        queue_us = min(best) * 1e6
    # What the time is made of: torch calls (each a launch on a GPU) and
    # groups of layers (docs/python.md).
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        once()
    calls = sum(1 for e in prof.events() if e.cpu_parent is None)
    if table:  # where the time goes, per torch operator
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    path = "C" if st.current() is st.host else "torch"
    # Finishing the torch path's numbers (a replayed whole step's, on a
    # GPU): Stats.finish in Python against dnnfault_finish.
    for l, a in zip(layers, acts):
        l.act = a
    values, layout = st.torch.compute(loss, out, yb, xb, "logits", True)
    layout = layout[:-1] + (None,)
    raw = st.torch.gather(values) if x.device.type == "cpu" else torch.cat(values).cpu().numpy()
    from dnnfault._stats import Stats, _CFinish
    fin = st.torch.finisher(layout)
    finish = [min(_timed(lambda: Stats.finish(raw, layout), 2000) for _ in range(repeats)) * 1e6,
              min(_timed(lambda: fin(raw), 2000) for _ in range(repeats)) * 1e6,
              "C" if isinstance(fin, _CFinish) else "Python again (no dnnfault_finish)"]
    return us, queue_us, path, len(st.torch.groups), calls, finish


def _timed(f, n):
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


def breakdown(args, x, y, address):
    """Every step sampled: the step-time ratio to the plain loop (median
    over repeats, all five loops interleaved per repeat) of the hooks
    alone, hooks and the torch path's reductions only queued (run_parts),
    hooks and statistics, and the whole monitor."""
    parts = ("hooks", "queue", "stats", "monitor")
    print("%-9s %10s %8s %8s %8s %8s" % ("model", "plain ms", *parts))
    for name in args.models.split(","):
        make, steps = MODELS[name][0], steps_of(args, name)
        ratios = {p: [] for p in parts}
        plain = []
        for r in range(args.repeats):
            seed = 100 + r
            base = run(make, steps, x, y, args.batch, 0, address, seed)[0]
            plain.append(base)
            for p in parts:
                t = run(make, steps, x, y, args.batch, 1, address, seed)[0] if p == "monitor" \
                    else run_parts(make, steps, x, y, args.batch, p, seed)[0]
                ratios[p].append(t / base)
        print("%-9s %10.3f %7.3fx %7.3fx %7.3fx %7.3fx" % (
            name, statistics.median(plain) * 1e3,
            *(statistics.median(ratios[p]) for p in parts)))


def compare_step_graphs(args, x, y, address):
    """Every step sampled, with whole-step graphs (_step_graph) off and on
    (and with --host-copy, on with the graph's own copy to the host): each
    against the plain loop (median over repeats, the loops interleaved per
    repeat, their order rotated). A CUDA device only."""
    from dnnfault import _step_graph
    kinds = ["plain", "off", "on"] + (["copy"] if args.host_copy else [])
    print("%-9s %10s %10s %10s%s" % ("model", "plain ms", "graphs off", "graphs on",
                                     " host copy" if args.host_copy else ""))
    for name in args.models.split(","):
        make, steps = MODELS[name][0], steps_of(args, name)
        times = {k: [] for k in kinds}
        order = list(times)
        counts = []  # per run with graphs: sampled steps replayed, graphs recorded, keys computed

        def watch(model, opt, lf):
            mon = dnnfault.watch(model, opt, lf, every=1, address=address, run="bench-graphs")

            def close():
                sg = mon._stats.torch._steps
                if _step_graph.ENABLED:
                    counts.append((sg.replays, sg.recorded, sg.looked) if sg else (0, 0, 0))
                mon.close(timeout=10)
            return (lambda loss, out, yb, xb: mon.step(loss, output=out, target=yb, inputs=xb),
                    close)
        was = _step_graph.ENABLED, _step_graph.HOST_COPY
        for r in range(args.repeats):
            seed = 100 + r
            k = r % len(order)
            for kind in order[k:] + order[:k]:
                _step_graph.ENABLED = kind in ("on", "copy")
                _step_graph.HOST_COPY = kind == "copy"
                times[kind].append(train_timed(make, steps, x, y, args.batch, seed,
                                               None if kind == "plain" else watch)[0])
        _step_graph.ENABLED, _step_graph.HOST_COPY = was
        print("%-9s %10.3f %s   replayed/recorded/looked per run: %s" % (
            name, statistics.median(times["plain"]) * 1e3, " ".join(
                "%9.3fx" % statistics.median([t / b for t, b in zip(times[k], times["plain"])])
                for k in kinds[1:]), " ".join("%d/%d/%d" % c for c in counts)))
        sys.stdout.flush()


def profile_loop(args, x, y, address):
    """Every step sampled, under torch.profiler: CPU time per call of the
    training step and of mon.step(), with mon.step()'s own (Python) share,
    and the profiler's table of operators."""
    from torch.profiler import ProfilerActivity, profile, record_function
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.device.type == "cuda" else [])
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = MODELS[name][0]().to(x.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        lf = nn.CrossEntropyLoss()
        idx = torch.randint(0, len(x), (80, args.batch)).to(x.device)
        with dnnfault.watch(model, opt, lf, every=1, address=address, run="profile") as mon:
            def step(t):
                xb, yb = x[idx[t]], y[idx[t]]
                with record_function("train"):
                    opt.zero_grad()
                    out = model(xb)
                    loss = lf(out, yb)
                    loss.backward()
                    opt.step()
                with record_function("mon.step"):
                    mon.step(loss, output=out, target=yb, inputs=xb)
            for t in range(30):
                step(t)
            with profile(activities=acts) as prof:
                for t in range(30, 80):
                    step(t)
        ka = prof.key_averages()
        print("== %s" % name)
        for e in ka:
            if e.key in ("train", "mon.step") and e.cpu_time_total:
                print("%-9s %8.1f us CPU per call (own %.1f us), %d calls" % (
                    e.key, e.cpu_time_total / e.count, e.self_cpu_time_total / e.count, e.count))
        print(ka.table(sort_by="self_cpu_time_total", row_limit=20))


def main():
    ap = argparse.ArgumentParser(description="dnnfault monitoring overhead")
    ap.add_argument("--daemon", default=os.environ.get("DNNFAULTD", "build/daemon/dnnfaultd"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies every model's step count (fast devices need more)")
    ap.add_argument("--steps", type=int, default=0,
                    help="timed steps per run for every model (on a GPU, where a step costs "
                         "about the same for the three, so that one-time costs weigh alike)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--device", default="cpu", help="cpu or cuda (data, model and statistics)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--stats-cost", action="store_true",
                    help="only time the statistics of one sampled step (no daemon, no training)")
    ap.add_argument("--table", action="store_true",
                    help="with --stats-cost: also print the profiler's table of torch operators")
    ap.add_argument("--profile", action="store_true",
                    help="every step sampled under torch.profiler: CPU per training step "
                         "and per mon.step(), and the operators' table")
    ap.add_argument("--breakdown", action="store_true",
                    help="split the every-step cost: hooks, statistics, the whole monitor")
    ap.add_argument("--step-graphs", action="store_true",
                    help="every step sampled, whole-step CUDA graphs off against on")
    ap.add_argument("--host-copy", action="store_true",
                    help="with --step-graphs: also on, with the graphs' own copy to the host")
    ap.add_argument("--malloc", choices=("default", "fixed"), default="default",
                    help="fixed: glibc's mmap and trim thresholds set (32 MiB, 256 MiB) "
                         "for plain and watched runs alike, so that freed memory is not "
                         "returned to the kernel and faulted in again every step")
    args = ap.parse_args()
    if args.malloc == "fixed":
        fix_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(d.target)
    dev = torch.device(args.device)
    x, y = x.to(dev), y.to(dev)
    where = args.device if dev.type == "cpu" else "%s (%s)" % (args.device,
                                                                torch.cuda.get_device_name(dev))

    if args.stats_cost:
        print("torch %s, %d threads, batch %d, device %s: statistics of one sampled step "
              "(best of %d)" % (torch.__version__, torch.get_num_threads(), args.batch, where,
                               args.repeats))
        for name in args.models.split(","):
            us, queue_us, path, groups, calls, finish = stats_cost(
                MODELS[name][0], x, y, args.batch, args.repeats, args.table)
            print("%-9s %9.1f us  (queued %7.1f us)  %-5s path  %2d groups  %3d torch calls  "
                  "finish %.1f us Python, %.1f us %s" % (name, us, queue_us, path, groups, calls,
                                                         *finish))
        return

    tmp = tempfile.mkdtemp(prefix="dnnfault-bench-")
    sock = os.path.join(tmp, "d.sock")
    daemon = subprocess.Popen([args.daemon, "--socket", sock, "--db", os.path.join(tmp, "db"),
                               "--log-level", "warning"])
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
                break
            except OSError:
                time.sleep(0.01)
            finally:
                s.close()
        address = "unix:" + sock
        print("torch %s, %d threads, batch %d, %d repeats, device %s"
              % (torch.__version__, torch.get_num_threads(), args.batch, args.repeats, where))
        if args.breakdown:
            breakdown(args, x, y, address)
            return
        if args.profile:
            profile_loop(args, x, y, address)
            return
        if args.step_graphs:
            compare_step_graphs(args, x, y, address)
            return
        print("malloc: %s" % args.malloc)
        print("%-9s %7s %12s %12s %7s %14s" % ("model", "every", "plain ms", "watched ms", "ratio",
                                               "faults/step"))
        for name in args.models.split(","):
            make, steps = MODELS[name][0], steps_of(args, name)
            for every in (dnnfault.DEFAULT_EVERY, 1):
                ratios, plain, watched, faults = [], [], [], {0: [], every: []}
                for r in range(args.repeats):
                    seed = 100 + r
                    order = (0, every) if r % 2 == 0 else (every, 0)
                    got = {e: run(make, steps, x, y, args.batch, e, address, seed)
                           for e in order}
                    plain.append(got[0][0])
                    watched.append(got[every][0])
                    ratios.append(got[every][0] / got[0][0])
                    for e in order:
                        faults[e].append(got[e][1])
                print("%-9s %7d %12.3f %12.3f %6.3fx %6.0f /%6.0f" % (
                    name, every, statistics.median(plain) * 1e3,
                    statistics.median(watched) * 1e3, statistics.median(ratios),
                    statistics.median(faults[0]), statistics.median(faults[every])))
                sys.stdout.flush()
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
