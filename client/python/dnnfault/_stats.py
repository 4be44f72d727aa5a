"""Per-layer statistics of one sampled step, computed where the tensors live.

Every reduction runs on the tensors' own device and yields a 0-d tensor;
they are stacked into one vector per device and copied to the host once
(`Stats.gather`). What is cheap and exact to finish on the host (division,
square roots, max of |min| and |max|) is done there in float64, so that the
device does as few passes over the data as possible: per layer one cat of
its weights, gradients and recorded output, then sum, norm and aminmax
passes. Mean and std come from the sum and the norm (population std).
"""

import math

import numpy as np
import torch

from . import _lib

SATURATION = 5.0
NAN = float("nan")

# Offsets of each layer's raw values in the gathered vector.
W_SUM, W_NORM, W_MIN, W_MAX = 0, 1, 2, 3
G_SUM, G_NORM, G_MIN, G_MAX, G_NONZERO = 4, 5, 6, 7, 8
D_NORM = 9
A_SUM, A_NORM, A_POS, A_SAT = 10, 11, 12, 13
N_NAN, N_INF = 14, 15
RAW_PER_LAYER = 16


def _flat(tensors):
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors])


class Layer:
    """One layer's parameters (floating point ones only)."""

    __slots__ = ("name", "module", "params", "n_weights", "act")

    def __init__(self, name, module, params):
        self.name = name
        self.module = module
        self.params = [p for _, p in params if p.is_floating_point()]
        self.n_weights = sum(p.numel() for p in self.params)
        self.act = None  # detached output recorded on a sampled step


class Stats:
    def __init__(self, layers):
        self.layers = layers
        self.prev = None  # per-layer flat weights before this step's update

    @torch.no_grad()
    def snapshot(self):
        """Copies the weights (on their device, no sync) so that the next
        sampled step can compute |dw|/|w|."""
        self.prev = [_flat([p.detach() for p in l.params]).clone() if l.params else None
                     for l in self.layers]

    @torch.no_grad()
    def compute(self, loss, output, target, inputs, accuracy_mode, keep_weights):
        """Queues every reduction of the step on the devices and returns
        (values, layout) for finish(); no host sync happens here.
        keep_weights: keep this step's flat weights as the next snapshot
        (the next step is sampled too)."""
        vals = []
        put = vals.append  # 0-d tensors, in layout order
        nothing = None
        new_prev = [] if keep_weights else None
        counts = []
        for i, l in enumerate(self.layers):
            ws = [p.detach() for p in l.params]
            gs = []
            for p in l.params:
                g = p.grad
                if g is not None:
                    if g.is_sparse:
                        g = g.to_dense()
                    gs.append(g.detach())
            act = l.act
            l.act = None
            parts = ws + gs + ([act] if act is not None else [])
            if not parts:
                counts.append((0, 0, 0, False))
                for _ in range(RAW_PER_LAYER):
                    if nothing is None:
                        nothing = torch.zeros(())
                    put(nothing)
                continue
            v = _flat(parts)
            if not v.is_floating_point():
                v = v.float()
            nw = l.n_weights
            ng = sum(g.numel() for g in gs)
            na = act.numel() if act is not None else 0
            w = v[:nw]
            g = v[nw:nw + ng]
            a = v[nw + ng:]
            zero = v.new_zeros(())
            put(w.sum())
            put(torch.linalg.vector_norm(w))
            wmin, wmax = torch.aminmax(w) if nw else (zero, zero)
            put(wmin)
            put(wmax)
            if ng:
                put(g.sum())
                put(torch.linalg.vector_norm(g))
                gmin, gmax = torch.aminmax(g)
                put(gmin)
                put(gmax)
                put(torch.count_nonzero(g))
            else:
                for _ in range(5):
                    put(zero)
            prev = self.prev[i] if self.prev is not None else None
            if prev is not None and prev.numel() == nw and nw:
                put(torch.linalg.vector_norm(w - prev.to(w.dtype)))
            else:
                put(zero)
            if na:
                put(a.sum())
                put(torch.linalg.vector_norm(a))
                put(_count(a > 0))
                put(_count(a.abs() > SATURATION))
            else:
                for _ in range(4):
                    put(zero)
            put(_count(torch.isnan(v)))
            put(_count(torch.isinf(v)))
            counts.append((nw, ng, na, prev is not None and prev.numel() == nw))
            if keep_weights:
                new_prev.append(w if len(parts) > 1 else w.clone())
        if keep_weights:
            self.prev = new_prev
        else:
            self.prev = None

        extra = {}
        if isinstance(loss, torch.Tensor):
            if loss.numel() == 1:
                extra["loss"] = len(vals)
                put(loss.detach().reshape(()))
        acc = accuracy(output, target, accuracy_mode)
        if acc is not None:
            extra["accuracy"] = len(vals)
            put(acc)
        from ._describe import first_tensor
        x = first_tensor(inputs)
        if x is not None and x.is_floating_point() and x.numel() > 0:
            x = x.detach().reshape(-1)
            extra["input"] = (len(vals), x.numel())
            put(x.sum())
            put(torch.linalg.vector_norm(x))
            xmin, xmax = torch.aminmax(x)
            put(xmin)
            put(xmax)
        return vals, (counts, extra)

    @staticmethod
    def gather(vals):
        """The one device-to-host copy: a float64 numpy vector of vals."""
        if not vals:
            return np.zeros(0)
        dev = vals[0].device
        if all(v.device == dev for v in vals):
            # stack promotes: counts (int64) and float32 sums become float32.
            return torch.stack(vals).cpu().double().numpy()
        # A model spread over devices: gather on the first, copy once.
        return torch.stack([v.to(dev, torch.float64) for v in vals]).cpu().numpy()

    @staticmethod
    def finish(raw, layout):
        """(layer_stats float32 [n_layers * 16], extras dict) from the
        gathered vector."""
        counts, extra = layout
        n = len(counts)
        out = np.full((n, _lib.STATS_PER_LAYER), np.nan, dtype=np.float64)
        r = raw[:n * RAW_PER_LAYER].reshape(n, RAW_PER_LAYER) if n else np.zeros((0, RAW_PER_LAYER))
        with np.errstate(all="ignore"):
            for i, (nw, ng, na, has_prev) in enumerate(counts):
                row = r[i]
                o = out[i]
                if nw:
                    m = row[W_SUM] / nw
                    o[0] = row[W_NORM]
                    o[1] = m
                    o[2] = _std(row[W_NORM], m, nw)
                    o[3] = max(abs(row[W_MIN]), abs(row[W_MAX]))
                    if has_prev:
                        o[9] = row[D_NORM] / row[W_NORM]
                if ng:
                    m = row[G_SUM] / ng
                    o[4] = row[G_NORM]
                    o[5] = m
                    o[6] = _std(row[G_NORM], m, ng)
                    o[7] = max(abs(row[G_MIN]), abs(row[G_MAX]))
                    o[8] = 1.0 - row[G_NONZERO] / ng
                if na:
                    m = row[A_SUM] / na
                    o[10] = m
                    o[11] = _std(row[A_NORM], m, na)
                    o[12] = 1.0 - row[A_POS] / na
                    o[13] = row[A_SAT] / na
                if nw or ng or na:
                    o[14] = row[N_NAN]
                    o[15] = row[N_INF]
        result = {}
        if "loss" in extra:
            result["loss"] = float(raw[extra["loss"]])
        if "accuracy" in extra:
            result["accuracy"] = float(raw[extra["accuracy"]])
        if "input" in extra:
            k, cnt = extra["input"]
            m = raw[k] / cnt
            result["input"] = (float(m), float(_std(raw[k + 1], m, cnt)),
                               float(raw[k + 2]), float(raw[k + 3]))
        return np.ascontiguousarray(out.reshape(-1), dtype=np.float32), result


def _count(mask):
    """True elements of a bool tensor. sum() is several times faster than
    count_nonzero() on bool tensors (torch 1.13, CPU); int32 halves it
    again where it cannot overflow."""
    if mask.numel() < 2 ** 31:
        return mask.sum(dtype=torch.int32)
    return mask.sum()


def _std(norm, mean, n):
    """Population std from the L2 norm and the mean: sqrt(E[x^2] - mean^2)."""
    var = norm * norm / n - mean * mean
    if math.isnan(var):
        return var
    return math.sqrt(var) if var > 0 else 0.0


def accuracy(output, target, mode):
    """Batch accuracy as a 0-d tensor on the output's device, or None.
    mode: "logits" (argmax over dim 1; binary outputs thresholded at 0),
    "probs" (binary outputs thresholded at 0.5) or None (not a
    classification run)."""
    if mode is None or not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    out = output.detach()
    tgt = target.detach()
    if tgt.device != out.device:
        return None
    if out.dim() >= 2 and out.shape[1] > 1:
        pred = out.argmax(1)
        if tgt.is_floating_point() and tgt.shape == out.shape:
            tgt = tgt.argmax(1)
        if tgt.shape != pred.shape or tgt.is_floating_point():
            return None
        return (pred == tgt).float().mean()
    if out.numel() != tgt.numel() or out.numel() == 0:
        return None
    pred = out.reshape(-1) > (0.5 if mode == "probs" else 0.0)
    return (pred == (tgt.reshape(-1) > 0.5)).float().mean()
