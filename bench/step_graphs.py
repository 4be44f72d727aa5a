#!/usr/bin/env python3
"""Whole-step CUDA graphs (client/python/dnnfault/_step_graph.py) in a
real loop, every step sampled: for the first 24 sampled steps, which parts
of the step's key moved since the step before (indices into the key:
0-3 state, then per layer each parameter and its gradient, then the
layer's output; then loss, output, target, input) and what happened
(eager, recorded, replayed); then the replayed / recorded / computed key
counts and mon.step()'s time per outcome over the 405 steps of
bench/overhead.py's loop (5 warm-up steps included), per model, with the
medians of its parts (finishing and sending the step before, the key, the
replay or recording, queueing the copy to the host; "rest": the remainder
of mon.step()). Last, per model, where the watched loop's extra time per
step goes: the watched step against a plain run of the same loop right
after it, less mon.step()'s mean, with the garbage collections of each
loop and their time.

    PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \\
        python3 bench/step_graphs.py [--models mlp,cnn,wide-mlp] [--device cpu]

Each model's loop is the first of its process when it is the only one
named (a user's script is such a process).

No daemon: the messages stay in the client's queue (a warning at the
end says so).
"""

import argparse
import gc
import logging
import os
import statistics
import sys
import time

import torch
from sklearn.datasets import load_digits

import dnnfault
from dnnfault import _cuda, _monitor, _stats, _step_graph

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import overhead  # noqa: E402  (the models of the overhead benchmark)

SHOWN = 24
STEPS = 400
# The parts of mon.step() timed on their own: (owner, attribute, name).
PARTS = ((_monitor.Monitor, "_deliver", "deliver"), (_stats.Stats, "finish", "finish"),
         (_stats._CFinish, "__call__", "finish"),
         (_monitor.Monitor, "_send", "send"), (_step_graph.StepGraphs, "key", "key"),
         (_step_graph.StepGraphs, "run", "run"), (_cuda.HostCopy, "start", "copy"),
         (_cuda.HostCopy, "landed", "copy"))  # the graph copied: its event alone


def timed_parts(spent):
    """Wraps each of PARTS so that its time adds to spent[name]."""
    for owner, attr, name in PARTS:
        f = owner.__dict__[attr]
        fn = f.__func__ if isinstance(f, staticmethod) else f

        def wrapper(*a, fn=fn, name=name, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        setattr(owner, attr, staticmethod(wrapper) if isinstance(f, staticmethod) else wrapper)


class Collections:
    """Python's garbage collections while on: (count, seconds) per generation."""

    def __init__(self):
        self.on = False
        self.got = {}
        self.t0 = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase, info):
        if not self.on:
            return
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            n, t = self.got.get(info["generation"], (0, 0.0))
            self.got[info["generation"]] = (n + 1, t + time.perf_counter() - self.t0)

    def timed(self, f, *args):
        """f(*args) with its collections counted afresh: (its result, counts)."""
        self.got = {}
        self.on = True
        try:
            return f(*args), dict(self.got)
        finally:
            self.on = False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(overhead.MODELS))
    ap.add_argument("--device", default="cuda",
                    help="cuda, or cpu for the last lines alone (the monitor's C path: no "
                         "step graphs there)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("step graphs need a CUDA device")
    logging.basicConfig(level=logging.DEBUG, format="%(message)s")  # why graphs stop
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).to(dev)  # as bench/overhead.py feeds it
    y = torch.tensor(d.target).to(dev)
    spent = {}
    timed_parts(spent)  # first, so that the key's time leaves out the bookkeeping below
    keys, outcome = [], ["none"]
    graphs = _step_graph.StepGraphs
    key0, run0 = graphs.key, graphs.run

    def key(self, st, *args):
        k = key0(self, st, *args)
        prev = keys[-1] if keys else None
        self.moved = None if k is None or prev is None else [
            i for i, (a, b) in enumerate(zip(k, prev)) if a != b]
        keys.append(k)
        return k

    def run(self, st, k, args):
        recorded = self.recorded
        got = run0(self, st, k, args)
        outcome[0] = "eager" if got is None else (
            "recorded" if self.recorded > recorded else "replayed")
        if len(keys) <= SHOWN:
            print("  step %2d: moved %s -> %s" % (len(keys), self.moved, outcome[0]))
        return got

    graphs.key, graphs.run = key, run
    collections = Collections()
    for name in args.models.split(","):
        print("==", name)
        keys.clear()
        times = {}
        parts = {}  # outcome: {part: [seconds per step]}
        order = []  # mon.step()'s times, step by step
        counts = []

        def watch(model, opt, lf):
            mon = dnnfault.watch(model, opt, lf, every=1, run="step-graphs", close_timeout=0,
                                 address="unix:/nonexistent/dnnfaultd.sock")

            def after_step(loss, out, yb, xb):
                outcome[0] = "no key"  # the first sampled step, or step graphs off
                spent.clear()
                t0 = time.perf_counter()
                mon.step(loss, output=out, target=yb, inputs=xb)
                took = time.perf_counter() - t0
                order.append(took)
                times.setdefault(outcome[0], []).append(took)
                mine = parts.setdefault(outcome[0], {})
                # finish and send run inside deliver; "rest" holds this script's
                # bookkeeping around key and run too (a few microseconds)
                spent["rest"] = took - sum(spent.get(p, 0.0)
                                           for p in ("deliver", "key", "run", "copy"))
                for p, v in spent.items():
                    mine.setdefault(p, []).append(v)

            def close():
                sg = mon._stats.torch._steps or _step_graph.StepGraphs(enabled=False)
                counts.append((sg.replays, sg.recorded, sg.looked, sg.on))
                mon.close()
            return after_step, close
        # The benchmark's own loop: same data, model, optimizer and batches.
        make = overhead.MODELS[name][0]
        (watched, faults), gcs = collections.timed(overhead.train_timed, make, STEPS, x, y, 64,
                                                   0, watch)
        (plain, plain_faults), plain_gcs = collections.timed(overhead.train_timed, make, STEPS,
                                                             x, y, 64, 0)
        print("replayed %d, recorded %d, keys %d, still on: %s" % counts[0])
        for k, v in times.items():
            print("  mon.step %-9s %4d steps, median %7.1f us: %s" % (
                k, len(v), statistics.median(v) * 1e6, ", ".join(
                    "%s %.1f" % (p, statistics.median(w + [0.0] * (len(v) - len(w))) * 1e6)
                    for p, w in parts[k].items())))
        mean = statistics.mean(order[-STEPS:])  # the timed steps (train_timed's warm-up left out)
        print("  step %.1f us watched, %.1f us plain: mon.step() %.1f us (mean), elsewhere "
              "%.1f us; minor page faults per step %.0f / %.0f" % (
                  watched * 1e6, plain * 1e6, mean * 1e6, (watched - plain - mean) * 1e6,
                  faults, plain_faults))
        for what, got in (("watched", gcs), ("plain", plain_gcs)):
            print("  garbage collections, %s loop: %s" % (what, ", ".join(
                "gen %d: %d in %.1f ms" % (g, n, t * 1e3) for g, (n, t) in sorted(got.items()))
                or "none"))

if __name__ == "__main__":
    main()
