"""Statistics of a sampled step for a model on the CPU: one call into
libdnnfault.

On the CPU, torch's per-call cost dominates the statistics of a small
model (the torch path, _stats.Stats, makes ~100 calls for a small CNN)
and each call is another pass over the data. Here every weight, gradient,
output and the input is described as a span (address, length, dtype) and
dnnfault_reduce reads each one once, in C, and adds its sums into its
layer's accumulators: the same accumulators (A_* of _stats) that the torch
path finishes with _stats.layer_stats, so both paths give the same
numbers (float32 sums within blocks, double across them).

StepStats picks the path per step: this one while every parameter is a
float32 or float64 CPU tensor and the library has dnnfault_reduce, else
the torch path (a model moved to a GPU after watch(), half precision, an
old library). DNNFAULT_STATS=torch forces the torch path.

Nothing allocated here survives from one step to the next except the
buffers of the previous weights (one per parameter, made once) and the
accumulator array; see _stats for why that matters on glibc.
"""

import array
import ctypes
import os
import sys
import threading

import torch

from . import _lib
from ._describe import first_tensor
from ._stats import (A_APOS, A_ASAT, A_ASQ, A_ASUM, A_INF, A_NAN, N_ACC, Stats, _std_sq,
                     accuracy, layer_stats)

# struct dnnfault_span is five 64-bit words: data, prev, keep, n, then row
# (32 bits), kind and dtype (16 each), on a little-endian machine with
# 64-bit pointers (reduce.c asserts the layout; usable() the machine).
# Spans are written as flat lists of words into an array.array (cheaper
# than a numpy record array at these sizes).
WEIGHT, GRAD, OUTPUT, INPUT = 1, 2, 3, 4
_DTYPES = {torch.float32: _lib.F32, torch.float64: _lib.F64}
_LAYOUT_OK = sys.byteorder == "little" and ctypes.sizeof(ctypes.c_void_p) == 8
# dnnfault_reduce's accumulator row (enum dnnfault_acc): the N_ACC sums in
# the A_* order of _stats, then the input's minimum and maximum; the input
# row keeps its sums where a layer keeps its output's.
ACC_N = N_ACC + 2
X_MIN, X_MAX = N_ACC, N_ACC + 1
# What record() keeps of an output's row.
_OUT_ACC = (A_ASUM, A_ASQ, A_APOS, A_ASAT, A_NAN, A_INF)


def _tail(row, kind, dtype):
    """The span's last word: row, kind and dtype."""
    return row | kind << 32 | dtype << 48


def _flat(t):
    """t as a contiguous float32/float64 CPU tensor (a copy only where it
    is not one already)."""
    if t.is_sparse:
        t = t.to_dense()
    if t.device.type != "cpu" or t.dtype not in _DTYPES:
        t = t.to("cpu", torch.float64 if t.dtype == torch.float64 else torch.float32)
    return t if t.is_contiguous() else t.contiguous()


class HostStats:
    def __init__(self, layers, reduce):
        self.layers = layers
        self.reduce = reduce
        self.prev = None  # per layer, per parameter: flat buffer of the weights
        self.prev_valid = False  # prev holds the weights before this step's update
        self._acc = array.array("d")
        self._one = array.array("d", bytes(8 * ACC_N))  # record()'s row
        self._one_lock = threading.Lock()  # hooks may run on several threads
        # Per layer, the output reduced by record() since the last sample:
        # (elements, [sum, sum of squares, > 0, saturated, NaN, Inf]).
        self._outs = [None] * len(layers)

    def usable(self):
        if not _LAYOUT_OK:
            return False
        for l in self.layers:
            for p in l.params:
                if p.device.type != "cpu" or p.dtype not in _DTYPES:
                    return False
        return True

    def _prev_buffers(self):
        bufs = self.prev
        if bufs is not None and all(b.numel() == p.numel() and b.dtype == p.dtype
                                    for l, bl in zip(self.layers, bufs)
                                    for p, b in zip(l.params, bl)):
            return bufs
        # First use, or a parameter changed shape or dtype: the old
        # snapshot cannot be compared with the new weights.
        self.prev = [[torch.empty(p.numel(), dtype=p.dtype) for p in l.params]
                     for l in self.layers]
        self.prev_valid = False
        return self.prev

    @torch.no_grad()
    def snapshot(self):
        """Copies the weights so that the next sampled step can compute
        |dw|/|w|."""
        for l, bl in zip(self.layers, self._prev_buffers()):
            for p, b in zip(l.params, bl):
                b.copy_(p.detach().reshape(-1))
        self.prev_valid = True

    @torch.no_grad()
    def record(self, i, out):
        """Reduces layer i's output now, from its forward hook, instead of
        keeping the tensor until sample(). A kept output changes the
        heap's pattern: with glibc's malloc the small CNN of
        bench/overhead.py then gave memory back and faulted it in again at
        every step (docs/benchmarks.md). The last call of a step wins."""
        if not out.numel():
            return
        a = out.detach()
        a = _flat(a.real if a.is_complex() else a)
        words = array.array("Q", (a.data_ptr(), 0, 0, a.numel(), _tail(0, OUTPUT, _DTYPES[a.dtype])))
        with self._one_lock:
            rv = self.reduce(words.buffer_info()[0], 1, self._one.buffer_info()[0], 1)
            r = self._one.tolist()
        if rv != 0:
            raise OSError(-rv, "dnnfault_reduce: %s" % os.strerror(-rv))
        self._outs[i] = (a.numel(), [r[k] for k in _OUT_ACC])

    @torch.no_grad()
    def sample(self, loss, output, target, inputs, accuracy_mode, keep_weights):
        """(layer_stats, extras) of a sampled step. keep_weights: keep this
        step's weights as the next snapshot (the next step is sampled too)."""
        layers = self.layers
        nl = len(layers)
        bufs = self._prev_buffers()
        has_prev = self.prev_valid
        spans = []
        hold = []  # tensors the spans point into, alive until the call returns
        nws = [0] * nl
        ng = [0] * nl
        na = [0] * nl
        acts = [l.act for l in layers]
        for l in layers:  # first: none outlives this step if a span fails
            l.act = None
        outs, self._outs = self._outs, [None] * nl
        for i, l in enumerate(layers):
            for p, b in zip(l.params, bufs[i]):
                n = p.numel()
                if not n:
                    continue
                w = p.detach()
                if not w.is_contiguous():
                    w = w.contiguous()
                    hold.append(w)
                bp = b.data_ptr()
                spans += (w.data_ptr(), bp if has_prev else 0, bp if keep_weights else 0,
                          n, _tail(i, WEIGHT, _DTYPES[w.dtype]))
                nws[i] += n
                g = p.grad
                if g is not None:
                    g = _flat(g)
                    hold.append(g)
                    k = g.numel()  # = n, unless someone set a .grad of another shape
                    spans += (g.data_ptr(), 0, 0, k, _tail(i, GRAD, _DTYPES[g.dtype]))
                    ng[i] += k
            a = acts[i]
            if a is not None and a.numel():
                # Integer and bool outputs as float32, as the torch path's
                # copy into its float scratch does.
                a = _flat(a.real if a.is_complex() else a)
                hold.append(a)
                na[i] = a.numel()
                spans += (a.data_ptr(), 0, 0, na[i], _tail(i, OUTPUT, _DTYPES[a.dtype]))
        x = first_tensor(inputs, floating=True)
        nx = 0
        if x is not None and x.is_floating_point() and x.numel() > 0:
            x = _flat(x.detach())
            hold.append(x)
            nx = x.numel()
            spans += (x.data_ptr(), 0, 0, nx, _tail(nl, INPUT, _DTYPES[x.dtype]))
        words = array.array("Q", spans)
        if len(self._acc) != (nl + 1) * ACC_N:
            self._acc = array.array("d", bytes(8 * (nl + 1) * ACC_N))
        rv = self.reduce(words.buffer_info()[0], len(words) // 5,
                         self._acc.buffer_info()[0], nl + 1)
        del hold, words
        if rv != 0:
            raise OSError(-rv, "dnnfault_reduce: %s" % os.strerror(-rv))
        self.prev_valid = keep_weights
        flat = self._acc.tolist()
        r = [flat[k:k + ACC_N] for k in range(0, len(flat), ACC_N)]
        for i, got in enumerate(outs):
            if got is not None and not na[i]:  # reduced in the hook
                na[i] = got[0]
                for k, v in zip(_OUT_ACC, got[1]):
                    r[i][k] += v
        acc = [row[:N_ACC] if nws[i] or ng[i] or na[i] else None
               for i, row in enumerate(r[:nl])]
        stats = layer_stats(acc, nws, ng, na, [has_prev] * nl)
        extras = {}
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            extras["loss"] = loss.detach().item()
        acc_t = accuracy(output, target, accuracy_mode)
        if acc_t is not None:
            extras["accuracy"] = acc_t.item()
        if nx:
            row = r[nl]
            m = row[A_ASUM] / nx
            extras["input"] = (m, _std_sq(row[A_ASQ], m, nx), row[X_MIN], row[X_MAX])
        return stats, extras


class StepStats:
    """The statistics of sampled steps, on the C path (HostStats) while it
    can serve the model, else on the torch path (Stats)."""

    def __init__(self, layers, lib):
        self.torch = Stats(layers, getattr(lib, "finish", None))
        reduce = getattr(lib, "reduce", None)
        self.host = HostStats(layers, reduce) \
            if reduce is not None and os.environ.get("DNNFAULT_STATS") != "torch" else None
        self._last = None

    def current(self):
        """The path that serves the model now: self.host or self.torch.
        On a switch (model.half(), .cuda(), and back) both forget their
        snapshot: the one left behind by the other path's last use is
        older than the previous step."""
        path = self.host if self.host is not None and self.host.usable() else self.torch
        if path is not self._last:
            if self.host is not None:
                self.host.prev_valid = False
            self.torch.prev = None
            self._last = path
        return path

    def snapshot(self):
        self.current().snapshot()

    @property
    def serving(self):
        """The path that served the model at the last current(), or None."""
        return self._last

    def output_reducer(self):
        """record(i, output) of the C path when it serves the model now,
        for the forward hooks to reduce outputs at once; else None (they
        keep the outputs for the torch path)."""
        path = self.current()
        return path.record if path is self.host else None

    def sample(self, loss, output, target, inputs, accuracy_mode, keep_weights, defer=False):
        """(layer_stats, extras), or with defer a _cuda.Pending of them
        where the model lies on one GPU (Stats.sample)."""
        path = self.current()
        if path is self.torch:
            return path.sample(loss, output, target, inputs, accuracy_mode, keep_weights, defer)
        return path.sample(loss, output, target, inputs, accuracy_mode, keep_weights)
