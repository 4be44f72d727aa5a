#!/usr/bin/env python3
"""Whole-step CUDA graphs (client/python/dnnfault/_step_graph.py) in a
real loop, every step sampled: for the first 24 sampled steps, which parts
of the step's key moved since the step before (indices into the key:
0-3 state, then per layer each parameter and its gradient, then the
layer's output; then loss, output, target, input) and what happened
(eager, recorded, replayed); then the replayed / recorded / computed key
counts and mon.step()'s time per outcome over the 405 steps of
bench/overhead.py's loop (5 warm-up steps included), per model.

    PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \\
        python3 bench/step_graphs.py        # needs a CUDA device

No daemon: the messages stay in the client's queue (a warning at the
end says so).
"""

import logging
import os
import statistics
import sys
import time

import torch
from sklearn.datasets import load_digits

import dnnfault
from dnnfault import _step_graph

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import overhead  # noqa: E402  (the models of the overhead benchmark)

SHOWN = 24
STEPS = 400


def main():
    if not torch.cuda.is_available():
        sys.exit("step graphs need a CUDA device")
    logging.basicConfig(level=logging.DEBUG, format="%(message)s")  # why graphs stop
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).cuda()  # as bench/overhead.py feeds it
    y = torch.tensor(d.target).cuda()
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

    def run(self, st, k, keep, compute):
        recorded = self.recorded
        got = run0(self, st, k, keep, compute)
        outcome[0] = "eager" if got is None else (
            "recorded" if self.recorded > recorded else "replayed")
        if len(keys) <= SHOWN:
            print("  step %2d: moved %s -> %s" % (len(keys), self.moved, outcome[0]))
        return got

    graphs.key, graphs.run = key, run
    for name in overhead.MODELS:
        print("==", name)
        keys.clear()
        times = {}
        counts = []

        def watch(model, opt, lf):
            mon = dnnfault.watch(model, opt, lf, every=1, run="step-graphs", close_timeout=0,
                                 address="unix:/nonexistent/dnnfaultd.sock")

            def after_step(loss, out, yb, xb):
                outcome[0] = "no key"  # the first sampled step, or step graphs off
                t0 = time.perf_counter()
                mon.step(loss, output=out, target=yb, inputs=xb)
                times.setdefault(outcome[0], []).append(time.perf_counter() - t0)

            def close():
                sg = mon._stats.torch._steps
                counts.append((sg.replays, sg.recorded, sg.looked, sg.on))
                mon.close()
            return after_step, close
        # The benchmark's own loop: same data, model, optimizer and batches.
        overhead.train_timed(overhead.MODELS[name][0], STEPS, x, y, 64, 0, watch)
        print("replayed %d, recorded %d, keys %d, still on: %s" % counts[0])
        for k, v in times.items():
            print("  mon.step %-9s %4d steps, median %7.1f us" % (
                k, len(v), statistics.median(v) * 1e6))

if __name__ == "__main__":
    main()
