"""Per-layer statistics of one sampled step, computed where the tensors live.

The cost of a sampled step on a small model is the number of kernel
launches (a few microseconds of CPU each, or a launch on a GPU) and of
passes over memory, so the work is laid out to need few of either,
whatever the layer count:

- The layers are packed into groups (consecutive layers on one device, at
  most CHUNK weights per group, CHUNK_GPU on a GPU; a bigger layer is cut
  into chunks, each a group of its own). Per group and step one `cat`
  writes the weights, the gradients (same order, zeros where a parameter
  has none) and the recorded outputs of its layers into row 0 of a
  scratch matrix M[ROWS, n] that is reused from step to step. Outputs of BIG_OUTPUT
  elements or more are reduced where they lie (same rows, own scratch
  columns, no copy); outputs without a group (layers without parameters,
  chunked layers, other dtype or device) are packed into output-only groups.
- A few elementwise kernels fill the other rows: x²; a mixed row,
  (w - w_prev)² over the weights, g == 0 over the gradients, a > 0 over
  the outputs; and over the outputs a² > 25, which is |a| > 5 exactly
  (rounding is monotonic; inf and overflowing squares included).
  Comparisons write 0/1 floats: much cheaper than bool tensors in torch
  1.13 on CPU.
- Per layer then one `sum` of rows [x, x², mixed] over its weight and
  gradient columns (one [3, 2, n] view: one kernel), one `amin` and one
  `amax` of x (max-abs = max(-min, max)), and one `sum` of all rows over
  its output: five kernels per layer instead of ~17, all writing with
  out= into one small result vector per group, through views made once
  per layout and cached.
- On the CPU, NaN and Inf counts cost nothing on a normal step: a NaN or
  an Inf makes a sum of squares NaN or inf, and a finite sum of
  non-negative squares proves there is none. Only where a layer's sum of
  squares (weights, gradients or output) is not finite are its NaN and Inf
  counted, by a second pass and a second copy in finish(): exact,
  including a finite value whose square overflows (it counts as neither).
  On a GPU two more scratch rows count them at every sampled step.
- The result vectors are concatenated into one vector per device and
  copied to the host once (`Stats.gather`; on one GPU without waiting for
  it, `_cuda.HostCopy`). Means, stds (population, sqrt(E[x²] - mean²)),
  ratios and fractions are finished there in float64.
- On a GPU each group's reductions after its `cat` replay as one CUDA
  graph (`_cuda.Replay`), and so do output-only groups.

Nothing allocated here survives from one step to the next except buffers
made once (scratch, result vectors, the previous weights): a small tensor
kept across steps moves glibc's heap top and made the training step's own
buffers page-fault anew (~250 faults, +15% step time on the small CNN).

Scratch and sums are float32 (float64 for a group with a float64
parameter). Counts are sums of 0/1 floats: exact up to 2**24 per chunk
(CHUNK is 2**19, CHUNK_GPU 2**21). Where x² overflows float32
(|x| > 1.8e19) the norm is inf, as torch.linalg.vector_norm's is in float32.
"""

import math
import weakref

import numpy as np
import torch

from . import _cuda, _describe, _lib, _step_graph

SATURATION = 5.0
NAN = float("nan")
INF = float("inf")

# Weights of one group (their gradients as many again, outputs at most as
# many again): the scratch is at most ROWS * 3 * CHUNK elements (24 MB in
# float32), made once per device and dtype, as big as the biggest group.
CHUNK = 1 << 19
# On a GPU a launch costs more than a pass over memory: groups up to 4x
# bigger (6 rows there: the scratch at most ~151 MB in float32, made only
# for groups or outputs that big).
CHUNK_GPU = 1 << 21
# On the CPU, outputs of at least this many elements are reduced where
# they lie (a few launches of their own) instead of being copied into a
# group; on a GPU they are copied into output-only groups (their
# reductions then replay as one graph).
BIG_OUTPUT = 1 << 15


def _chunk(device):
    return CHUNK if device.type == "cpu" else CHUNK_GPU


def _rows(device):
    """Rows of the scratch on this device: counts of NaN and Inf on GPUs."""
    return COUNT_ROWS if device.type == "cuda" else ROWS


# Rows of the scratch matrix. Weights and gradients use the first
# WG_ROWS; outputs the first ROWS. On a GPU two more rows count NaN and
# Inf (x != x, |x| == inf) of everything, on every sampled step: launches
# cost there, arithmetic does not (the reductions are one graph), and the
# counts must be known without a second look at tensors that the next
# step changes (the copy to the host is finished a step later).
R_X, R_SQ, R_MIX, R_SAT, R_NAN, R_INF = range(6)
ROWS = 4
WG_ROWS = 3
COUNT_ROWS = 6
SAT_SQ = SATURATION * SATURATION  # |x| > 5 exactly when fl(x²) > 25

# Accumulators per layer, filled by finish() (and on the C path by
# dnnfault_reduce, whose enum dnnfault_acc has this order).
(A_WSUM, A_WSQ, A_WMAX, A_DSQ, A_GSUM, A_GSQ, A_GMAX, A_GZERO, A_ASUM, A_ASQ, A_APOS,
 A_ASAT, A_NAN, A_INF) = range(14)
N_ACC = 14

# Kinds of result records: weights and gradients of a layer (or chunk):
# sums of rows [x, x², mix] for w and for g interleaved, then min w, min g,
# max w, max g; weights alone: the three sums, min, max; an output: the
# sums of its four rows; counts (GPU only): j NaN counts, then j Inf counts.
_WG, _W, _A, _N = 0, 1, 2, 3
_WG_SIZE = 2 * WG_ROWS + 4
_W_SIZE = WG_ROWS + 2


class Layer:
    """One layer's parameters (floating point ones only)."""

    __slots__ = ("name", "module", "params", "n_weights", "act")

    def __init__(self, name, module, params):
        self.name = name
        self.module = module
        self.params = [p for _, p in params if p.is_floating_point()]
        self.n_weights = sum(p.numel() for p in self.params)
        self.act = None  # detached output recorded on a sampled step


class _Group:
    """Consecutive weights of one device: items (layer, pieces, length),
    pieces (param index, start, end) of the parameters' flat views."""

    __slots__ = ("device", "dtype", "items", "n", "whole", "cache", "wviews")

    def __init__(self, device, dtype):
        self.device = device
        self.dtype = dtype
        self.items = []
        self.n = 0
        self.whole = set()  # layers whose weights all lie in this group
        self.cache = {}  # layout of a step: _Exec
        # (data pointers, flat views of the weights). The views keep the
        # storage alive: a parameter whose .data was replaced holds its old
        # storage until the next sampled step notices.
        self.wviews = None


class _Exec:
    """Views of the scratch for one group and layout (see Stats._exec)."""

    __slots__ = ("generation", "x", "sq", "xw", "dw", "xg", "zg", "xa", "pa", "sqa", "sa",
                 "nan", "inf", "res", "sums", "minmax", "recs", "counts", "act_slots",
                 "replays", "__weakref__")


def _plan(layers):
    groups = []
    cur = None
    for i, l in enumerate(layers):
        if not l.n_weights:
            continue
        dev = l.params[0].device
        dt = torch.float64 if any(p.dtype == torch.float64 for p in l.params) else torch.float32
        pieces = [(k, 0, p.numel()) for k, p in enumerate(l.params) if p.numel()]
        chunk = _chunk(dev)
        if l.n_weights > chunk:
            cur = None
            # Cut the layer into chunks of `chunk` elements, each its own group.
            start = 0
            while start < l.n_weights:
                end = min(start + chunk, l.n_weights)
                g = _Group(dev, dt)
                ps = []
                off = 0
                for k, _, n in pieces:
                    a, b = max(start - off, 0), min(end - off, n)
                    if a < b:
                        ps.append((k, a, b))
                    off += n
                g.items.append((i, ps, end - start))
                g.n = end - start
                groups.append(g)
                start = end
            continue
        if cur is None or cur.device != dev or cur.n + l.n_weights > chunk:
            cur = _Group(dev, dt)
            groups.append(cur)
        elif dt == torch.float64:
            cur.dtype = dt
        cur.items.append((i, pieces, l.n_weights))
        cur.n += l.n_weights
        cur.whole.add(i)
    return groups


def _signature(layers):
    return tuple((l.params[0].device, l.params[0].dtype) if l.params else None for l in layers)


class Stats:
    def __init__(self, layers, finish_c=None):
        """finish_c: the library's dnnfault_finish, where it has one."""
        self.layers = layers
        self._finish_c = finish_c
        self.sig = _signature(layers)
        self.groups = _plan(layers)
        self.prev = None  # per group: flat weights before this step's update
        # Where prev lives: one buffer per group, written in place. Nothing
        # the monitor allocates survives from one step to the next: a
        # tensor kept across steps moves the allocator's heap top and makes
        # the training step's own buffers page-fault anew (measured: ~250
        # faults per CNN step, +15% step time, on glibc).
        self._prev_bufs = None
        self._scratch = {}  # (device, dtype): flat buffer
        self._zeros = {}  # (device, dtype): zeros for missing gradients
        self._generation = 0
        self._loose_execs = {}  # (device, dtype, output sizes): _LooseExec
        self._copy = None  # _cuda.HostCopy of deferred samples
        self._steps = None  # _step_graph.StepGraphs, after a first deferred sample

    def _check_plan(self):
        sig = _signature(self.layers)
        if sig != self.sig:
            # Parameters moved (model.to() after watch()): plan again, and
            # the old snapshot cannot be compared with the new weights.
            self.sig = sig
            self.groups = _plan(self.layers)
            self.prev = None
            self._prev_bufs = None
            self._generation += 1

    def forget_views(self):
        """Drops every cached layout and its views (made again at the next
        step), e.g. after a failed step recording (_step_graph)."""
        for g in self.groups:
            g.cache.clear()
        self._loose_execs.clear()
        self._generation += 1

    def _weights(self, g):
        """Flat views of the group's weights, made again only when a
        parameter's storage moved (or is not contiguous)."""
        layers = self.layers
        ptrs = [layers[i].params[k].data_ptr() for i, pieces, _ in g.items for k, _, _ in pieces]
        if g.wviews is not None and g.wviews[0] == ptrs:
            return list(g.wviews[1])
        out = []
        views = True
        for i, pieces, _ in g.items:
            ps = layers[i].params
            for k, a, b in pieces:
                views = views and ps[k].is_contiguous()
                p = ps[k].detach().reshape(-1)
                out.append(p if a == 0 and b == p.numel() else p[a:b])
        g.wviews = (ptrs, out) if views else None
        return list(out)

    @torch.no_grad()
    def snapshot(self):
        """Copies the weights (on their device, no sync) so that the next
        sampled step can compute |dw|/|w|: one cat per group."""
        self._check_plan()
        bufs = self._prev_buffers()
        for g, b in zip(self.groups, bufs):
            torch.cat(self._weights(g), out=b)
        self.prev = bufs

    def _prev_buffers(self):
        if self._prev_bufs is None:
            self._prev_bufs = [torch.empty(g.n, device=g.device, dtype=g.dtype)
                               for g in self.groups]
            self._generation += 1  # a recorded step read the old ones
        return self._prev_bufs

    def _buffer(self, device, dtype, n):
        key = (device, dtype)
        rows = _rows(device)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < rows * n:
            buf = torch.empty(rows * n, device=device, dtype=dtype)
            self._scratch[key] = buf
            self._generation += 1  # views made of the old one are stale
        return buf[:rows * n].view(rows, n)

    def _zero(self, device, dtype, n):
        key = (device, dtype)
        z = self._zeros.get(key)
        if z is None or z.numel() < n:
            z = torch.zeros(max(n, 1024), device=device, dtype=dtype)
            self._zeros[key] = z
        return z[:n]

    @torch.no_grad()
    def compute(self, loss, output, target, inputs, accuracy_mode, keep_weights, grads=None):
        """Queues every reduction of the step on the devices and returns
        (values, layout) for finish(); no host sync happens here.
        keep_weights: keep this step's flat weights as the next snapshot
        (the next step is sampled too). grads: {(layer index, parameter
        index): tensor} read in place of those parameters' .grad (a
        recording's copies, _step_graph)."""
        self._check_plan()
        layers = self.layers
        vals = []  # 1-d tensors, concatenated by gather()
        recs = []  # (kind, layer, offset in the gathered vector, padding)
        pos = 0
        nl = len(layers)
        ng = [0] * nl
        na = [0] * nl
        acts = [None] * nl
        for i, l in enumerate(layers):
            a = l.act
            l.act = None
            if a is not None and a.numel():
                acts[i] = a
                na[i] = a.numel()
        kept = list(acts)  # for a recount of NaN/Inf in finish()
        prev = self.prev
        if prev is not None and len(prev) != len(self.groups):
            prev = None
        has_prev = [False] * nl
        new_prev = self._prev_buffers() if keep_weights else None
        loose = []  # outputs not placed in a weight group: (layer, flat tensor)

        for gi, g in enumerate(self.groups):
            ws = self._weights(g)
            # Gradients in the same order; zeros where a parameter has none.
            gs = []
            pads = []
            for i, pieces, _ in g.items:
                ps = layers[i].params
                pad = 0
                for k, a, b in pieces:
                    gr = ps[k].grad if grads is None else grads.get((i, k), ps[k].grad)
                    if gr is None:
                        gs.append(b - a)
                        pad += b - a
                        continue
                    ng[i] += b - a
                    # Not cached like the weights: a gradient set to None
                    # by zero_grad() would be kept alive between steps.
                    if gr.is_sparse:
                        flat = gr.to_dense().view(-1)
                    else:
                        flat = gr.view(-1) if gr.is_contiguous() else gr.reshape(-1)
                    gs.append(flat if a == 0 and b == flat.numel() else flat[a:b])
                pads.append(pad)
            n = g.n
            any_grad = sum(pads) < n
            parts = ws
            if any_grad:
                parts = parts + [self._zero(g.device, g.dtype, x) if isinstance(x, int) else x
                                 for x in gs]
            mine = []
            in_group = 0  # output elements placed in this group
            for i, _, _ in g.items:
                a = acts[i]
                if a is None or i not in g.whole:
                    continue
                acts[i] = None
                if (a.device != g.device or (a.dtype == torch.float64 and g.dtype != a.dtype)
                        or a.is_complex() or na[i] >= BIG_OUTPUT
                        or in_group + na[i] > _chunk(g.device)):
                    loose.append((i, a.reshape(-1)))
                    continue
                mine.append(i)
                parts.append(a.reshape(-1))
                in_group += na[i]
            key = (any_grad, tuple([na[i] for i in mine]))
            ex = g.cache.get(key)
            if ex is None or ex.generation != self._generation:
                if len(g.cache) >= 8:  # output sizes that keep changing
                    g.cache.clear()
                ex = self._exec(g, any_grad, key[1])
                g.cache[key] = ex
            p = prev[gi] if prev is not None else None
            if p is not None and (p.numel() != n or p.device != g.device):
                p = None
            torch.cat(parts, out=ex.x)
            _reduce_group(ex, p, new_prev[gi] if keep_weights else None)
            vals.append(ex.res)
            for (kind, i, o), pad in zip(ex.recs, pads):
                recs.append((kind, i, pos + o, pad))
                if p is not None:
                    has_prev[i] = True
            for i, o, j in ex.counts:
                recs.append((_N, i, pos + o, j))
            for i, o in zip(mine, ex.act_slots):
                recs.append((_A, i, pos + o, 0))
                if ex.nan is not None:
                    recs.append((_N, i, pos + o + ROWS, 1))
            pos += ex.res.numel()
        if keep_weights:
            self.prev = new_prev
        else:
            self.prev = None
        # Layers without their weights in one group, and outputs that did
        # not fit: output-only groups of at most _chunk(device) elements.
        for i, a in enumerate(acts):
            if a is not None:
                loose.append((i, a.reshape(-1)))
        if loose:
            pos = self._loose(loose, vals, recs, pos)

        extra = {}
        small = []  # 0-d results, stacked into one tensor
        if isinstance(loss, torch.Tensor):
            if loss.numel() == 1:
                extra["loss"] = pos + len(small)
                small.append(loss.detach().reshape(()))
        acc = accuracy(output, target, accuracy_mode)
        if acc is not None:
            extra["accuracy"] = pos + len(small)
            small.append(acc)
        x = _describe.first_tensor(inputs, floating=True)
        if x is not None and x.is_floating_point() and x.numel() > 0:
            x = x.detach().reshape(-1)
            extra["input"] = (pos + len(small), x.numel())
            xmin, xmax = torch.aminmax(x)
            small += [x.sum(), torch.linalg.vector_norm(x), xmin, xmax]
        if small:
            dev = small[0].device
            if all(v.device == dev for v in small):
                vals.append(torch.stack(small))
            else:
                vals += [v.reshape(1) for v in small]
        return vals, (self, recs, [l.n_weights for l in layers], ng, na, has_prev, extra, kept)

    def sample(self, loss, output, target, inputs, accuracy_mode, keep_weights, defer=False):
        """(layer_stats, extras) of a sampled step: compute, one copy to the
        host, finish. defer: where everything lies on one GPU, a
        _cuda.Pending of them instead, without waiting for the device."""
        steps = self._steps if defer else None
        key = None
        if steps is not None:
            # First: a replay may write where the last numbers lie, and
            # key() may drop graphs whose last replay has not finished.
            self._copy.settle()
            key = steps.key(self, loss, output, target, inputs, accuracy_mode, keep_weights)
            got = None
            if key is not None:
                got = steps.run(self, key,
                                (loss, output, target, inputs, accuracy_mode, keep_weights))
            if got is not None:  # the whole step replayed as one graph
                vec, finish, host = got
                if host is not None:  # which also copied the numbers to the host
                    return self._copy.landed(host, vec.device, finish)
                return self._copy.start(vec, finish)
        values, layout = self.compute(loss, output, target, inputs, accuracy_mode, keep_weights)
        if defer and values and values[0].device.type == "cuda" and all(
                v.device == values[0].device for v in values):
            # Every layer's NaN and Inf were counted on the device: nothing
            # needs the step's tensors once the copy has landed.
            layout = layout[:-1] + (None,)
            if self._copy is None:
                self._copy = _cuda.HostCopy()
            vec = torch.cat(values)
            if steps is None:
                self._steps = _step_graph.StepGraphs()
            else:
                steps.saw(key, vec)
            return self._copy.start(vec, lambda raw: Stats.finish(raw, layout))
        return Stats.finish(Stats.gather(values), layout)

    def _exec(self, g, any_grad, mine):
        """The views one group needs with this layout, made once: the
        scratch rows and ranges, and where each reduction reads and
        writes (into one small result vector per group)."""
        n = g.n
        n_wg = 2 * n if any_grad else n
        width = n_wg + sum(mine)
        M = self._buffer(g.device, g.dtype, width)
        ex = _Exec()
        ex.generation = self._generation
        ex.replays = {}  # CUDA graphs of _reduce_group, by snapshot and keep buffers
        ex.x = M[R_X]
        ex.sq = M[R_SQ]
        ex.xw = ex.x[:n]
        ex.dw = M[R_MIX, :n]
        ex.xg = ex.x[n:n_wg] if any_grad else None
        ex.zg = M[R_MIX, n:n_wg] if any_grad else None
        ex.xa = ex.x[n_wg:] if width > n_wg else None
        ex.pa = M[R_MIX, n_wg:] if width > n_wg else None
        ex.sqa = M[R_SQ, n_wg:] if width > n_wg else None
        ex.sa = M[R_SAT, n_wg:] if width > n_wg else None
        counting = M.shape[0] > ROWS
        ex.nan = M[R_NAN] if counting else None
        ex.inf = M[R_INF] if counting else None
        j = 2 if any_grad else 1  # counts per record: weights (and gradients)
        size = len(g.items) * ((_WG_SIZE if any_grad else _W_SIZE) + 2 * j * counting) \
            + (ROWS + 2 * counting) * len(mine)
        res = torch.empty(size, device=g.device, dtype=g.dtype)
        ex.res = res
        ex.sums, ex.minmax, ex.recs, ex.counts = [], [], [], []
        o = off = 0
        if any_grad:
            P = M[:WG_ROWS, :2 * n].view(WG_ROWS, 2, n)
            if counting:
                C = M[R_NAN:R_INF + 1, :2 * n].view(2, 2, n)
        for i, _, m in g.items:
            if any_grad:
                k = 2 * WG_ROWS
                ex.sums.append((P[:, :, off:off + m], res[o:o + k].view(WG_ROWS, 2)))
                ex.minmax.append((P[R_X, :, off:off + m], (res[o + k:o + k + 2],
                                                           res[o + k + 2:o + k + 4])))
                ex.recs.append((_WG, i, o))
                o += _WG_SIZE
                if counting:
                    ex.sums.append((C[:, :, off:off + m], res[o:o + 4].view(2, 2)))
            else:
                k = WG_ROWS
                ex.sums.append((M[:WG_ROWS, off:off + m], res[o:o + k]))
                ex.minmax.append((M[R_X:R_X + 1, off:off + m], (res[o + k:o + k + 1],
                                                                 res[o + k + 1:o + k + 2])))
                ex.recs.append((_W, i, o))
                o += _W_SIZE
                if counting:
                    ex.sums.append((M[R_NAN:R_INF + 1, off:off + m], res[o:o + 2]))
            if counting:
                ex.counts.append((i, o, j))
                o += 2 * j
            off += m
        off = n_wg
        ex.act_slots = []  # the outputs' layers are told per step
        rows = M.shape[0]
        for m in mine:
            # All rows: the four of an output, then its counts.
            ex.sums.append((M[:, off:off + m], res[o:o + rows]))
            ex.act_slots.append(o)
            o += rows
            off += m
        return ex

    def _loose(self, loose, vals, recs, pos):
        """Outputs by themselves: packed per device and dtype into groups of
        at most _chunk(device) elements (a bigger one is cut)."""
        bins = {}
        for i, a in loose:
            dt = torch.float64 if a.dtype == torch.float64 else torch.float32
            key = (a.device, dt)
            n = a.numel()
            chunk = _chunk(a.device)
            start = 0
            if n >= BIG_OUTPUT and a.dtype == dt and a.device.type != "cuda":
                # Big enough that a launch more does not matter: read it
                # where it is instead of copying it into row 0 (on a GPU
                # it is copied: the reductions then replay as one graph).
                while start < n:
                    m = min(n - start, chunk)
                    x = a if m == n else a[start:start + m]
                    M = self._buffer(a.device, dt, m)
                    _output_features(M, x)
                    vals.append(x.sum().reshape(1))  # row 0 of the record
                    vals.append(M[R_X + 1:].sum(1))
                    recs.append((_A, i, pos, 0))
                    pos += ROWS
                    start += m
                continue
            while start < n:
                b = bins.get(key)
                if b is None or b[0] >= chunk:
                    b = [0, []]
                    bins[key] = b
                    bins.setdefault(("all",), []).append((key, b))
                take = min(n - start, chunk - b[0])
                b[1].append((i, a if take == n else a[start:start + take], take))
                b[0] += take
                start += take
        for b, ((dev, dt), (width, items)) in enumerate(bins.get(("all",), [])):
            M = self._buffer(dev, dt, width)
            torch.cat([t for _, t, _ in items], out=M[R_X])
            # One per group of the step: each has its own result vector.
            key = (b, dev, dt, tuple(m for _, _, m in items))
            lx = self._loose_execs.get(key)
            if lx is None or lx.generation != self._generation:
                if len(self._loose_execs) >= max(64, 4 * len(bins[("all",)])):
                    self._loose_execs.clear()  # output sizes that keep changing
                lx = self._loose_execs[key] = _LooseExec(M, key[3], self._generation)
            lx.run()
            vals.append(lx.res)
            rows = M.shape[0]
            for i, _, _ in items:
                recs.append((_A, i, pos, 0))
                if rows > ROWS:
                    recs.append((_N, i, pos + ROWS, 1))
                pos += rows
        return pos

    @torch.no_grad()
    def _recount(self, bad, acts):
        """[(NaN count, Inf count)] over the weights, gradients and output
        of the layers in bad: a second pass and copy, only on a step where
        some value is not finite."""
        counts = []
        for i in bad:
            ts = [p.detach() for p in self.layers[i].params]
            for p in self.layers[i].params:
                g = p.grad
                if g is not None:
                    ts.append(g.to_dense() if g.is_sparse else g.detach())
            if acts[i] is not None:
                ts.append(acts[i])
            nan = inf = None
            for t in ts:
                if not (t.is_floating_point() or t.is_complex()):
                    continue
                k = torch.isnan(t).sum()
                j = torch.isinf(t).sum()
                nan = k if nan is None else nan + k.to(nan.device)
                inf = j if inf is None else inf + j.to(inf.device)
            if nan is None:
                nan = inf = torch.zeros((), dtype=torch.int64)
            counts += [nan, inf.to(nan.device)]
        dev = counts[0].device
        got = torch.stack([c.to(dev) for c in counts]).cpu().tolist()
        return [(got[2 * k], got[2 * k + 1]) for k in range(len(bad))]

    @staticmethod
    def gather(vals):
        """The one device-to-host copy: a float64 numpy vector of vals."""
        if not vals:
            return np.zeros(0)
        dev = vals[0].device
        if all(v.device == dev for v in vals):
            # cat promotes: float32 sums stay float32 unless one is float64.
            return torch.cat(vals).cpu().double().numpy()
        # A model spread over devices: gather on the first, copy once.
        return torch.cat([v.to(dev, torch.float64) for v in vals]).cpu().numpy()

    def finisher(self, layout):
        """finish(raw, layout) as one callable of raw, in C where the
        library has dnnfault_finish and the device counted every NaN and
        Inf (layout's kept is None): for a layout used again and again
        (a recorded whole step, _step_graph)."""
        if self._finish_c is None or layout[-1] is not None:
            return lambda raw: Stats.finish(raw, layout)
        return _CFinish(self._finish_c, layout)

    @staticmethod
    def finish(raw, layout):
        """(layer_stats float32 [n_layers * 16], extras dict) from the
        gathered vector (plain Python floats: cheaper than numpy scalars
        at these sizes)."""
        st, recs, nws, ng, na, has_prev, extra, kept = layout
        n = len(ng)
        r = raw.tolist()
        acc = [None] * n
        wn = [False] * n
        # Records of each layer, and how many of them had their NaN and Inf
        # counted on the device (a _N record follows each one that had).
        parts = [0] * n
        counted = [0] * n
        for kind, i, o, pad in recs:
            c = acc[i]
            if c is None:
                c = acc[i] = [0.0] * N_ACC
            if kind != _N:
                parts[i] += 1
            if kind == _WG:
                c[A_WSUM] += r[o]
                c[A_GSUM] += r[o + 1]
                c[A_WSQ] += r[o + 2]
                c[A_GSQ] += r[o + 3]
                c[A_DSQ] += r[o + 4]
                c[A_GZERO] += r[o + 5] - pad
                c[A_WMAX] = _max(c[A_WMAX], _max(-r[o + 6], r[o + 8]))
                c[A_GMAX] = _max(c[A_GMAX], _max(-r[o + 7], r[o + 9]))
                wn[i] = True
            elif kind == _W:
                c[A_WSUM] += r[o + R_X]
                c[A_WSQ] += r[o + R_SQ]
                c[A_DSQ] += r[o + R_MIX]
                c[A_WMAX] = _max(c[A_WMAX], _max(-r[o + 3], r[o + 4]))
                wn[i] = True
            elif kind == _A:
                c[A_ASUM] += r[o + R_X]
                c[A_ASQ] += r[o + R_SQ]
                c[A_APOS] += r[o + R_MIX]
                c[A_ASAT] += r[o + R_SAT]
            else:  # _N, pad: how many NaN counts, then as many Inf counts
                c[A_NAN] += sum(r[o:o + pad])
                c[A_INF] += sum(r[o + pad:o + 2 * pad])
                counted[i] += 1
        # NaN and Inf make a sum of squares NaN or inf; a finite one proves
        # there are none. Only layers where one is not finite (a NaN or an
        # Inf, or a square overflowing) are counted, in a second pass.
        isfinite = math.isfinite
        bad = [i for i, c in enumerate(acc) if c is not None and counted[i] < parts[i] and not (
            isfinite(c[A_WSQ]) and isfinite(c[A_GSQ]) and isfinite(c[A_ASQ]))]
        if bad:
            # A layer counted in part (an output on another device) is
            # counted again in full. kept is None only where the device
            # counted every layer.
            counts = st._recount(bad, kept) if kept is not None else [(NAN, NAN)] * len(bad)
            for i, (nan, inf) in zip(bad, counts):
                acc[i][A_NAN] = nan
                acc[i][A_INF] = inf
        nws = [nw if w else 0 for nw, w in zip(nws, wn)]
        return layer_stats(acc, nws, ng, na, has_prev), _extras(r, extra)


class _CFinish:
    """Stats.finish of one layout, by the library's dnnfault_finish (the
    same arithmetic in C: docs/python.md). The layout's records and layer
    sizes are arrays made once; a layer that needs its NaN and Inf counted
    again, or a vector of another dtype, goes to Stats.finish."""

    __slots__ = ("fn", "layout", "arrays", "args", "out")

    def __init__(self, fn, layout):
        _, recs, nws, ng, na, has_prev, _, _ = layout
        n = len(ng)
        records = np.array(recs, dtype=np.int64).reshape(-1)
        layers = np.array([v for row in zip(nws, ng, na, has_prev) for v in row],
                          dtype=np.int64)
        work = np.empty(_lib.FINISH_WORK * n)
        self.out = np.empty(n * _lib.STATS_PER_LAYER, dtype=np.float32)
        self.fn = fn
        self.layout = layout
        self.arrays = (records, layers, work)  # alive while their addresses are used
        self.args = (records.ctypes.data, len(recs), layers.ctypes.data, n, work.ctypes.data,
                     self.out.ctypes.data)

    def __call__(self, raw):
        dtype = _C_DTYPES.get(raw.dtype)
        if dtype is not None and raw.flags.c_contiguous:
            recs, n_recs, layers, n, work, out = self.args
            if self.fn(raw.ctypes.data, dtype, raw.size, recs, n_recs, layers, n, work,
                       out) == 0:
                return self.out.copy(), _extras(raw, self.layout[6])
        return Stats.finish(raw, self.layout)


_C_DTYPES = {np.dtype(np.float32): _lib.F32, np.dtype(np.float64): _lib.F64}


def _extras(r, extra):
    """Loss, accuracy and input statistics from the gathered vector r (a
    list, or a numpy vector: Python floats either way)."""
    result = {}
    if "loss" in extra:
        result["loss"] = float(r[extra["loss"]])
    if "accuracy" in extra:
        result["accuracy"] = float(r[extra["accuracy"]])
    if "input" in extra:
        k, cnt = extra["input"]
        m = float(r[k]) / cnt
        result["input"] = (m, _std(float(r[k + 1]), m, cnt), float(r[k + 2]), float(r[k + 3]))
    return result


def layer_stats(acc, nws, ng, na, has_prev):
    """The float32 vector of STATS_PER_LAYER statistics per layer from its
    accumulators (acc[i]: N_ACC sums in the A_* order, or None for a layer
    with nothing recorded). nws, ng, na: elements of the weights (0: not
    recorded), gradients and output of each layer; has_prev: whether
    A_DSQ holds the update."""
    sqrt = math.sqrt
    out = []
    nan16 = [NAN] * _lib.STATS_PER_LAYER
    for i, c in enumerate(acc):
        if c is None:
            out.append(nan16)
            continue
        o = list(nan16)
        out.append(o)
        nw = nws[i]
        if nw:
            sq = c[A_WSQ]
            m = c[A_WSUM] / nw
            norm = sqrt(sq)
            o[0] = norm
            o[1] = m
            o[2] = _std_sq(sq, m, nw)
            o[3] = c[A_WMAX]
            if has_prev[i]:
                d = sqrt(c[A_DSQ])
                o[9] = d / norm if norm else (NAN if d == 0 or d != d else INF)
        k = ng[i]
        if k:
            m = c[A_GSUM] / k
            o[4] = sqrt(c[A_GSQ])
            o[5] = m
            o[6] = _std_sq(c[A_GSQ], m, k)
            o[7] = c[A_GMAX]
            o[8] = c[A_GZERO] / k
        k = na[i]
        if k:
            m = c[A_ASUM] / k
            o[10] = m
            o[11] = _std_sq(c[A_ASQ], m, k)
            o[12] = 1.0 - c[A_APOS] / k
            o[13] = c[A_ASAT] / k
        o[14] = c[A_NAN]
        o[15] = c[A_INF]
    return np.array(out, dtype=np.float32).reshape(-1)


class _LooseExec:
    """The reductions of one output-only group (outputs of the given
    sizes side by side in the scratch M): every row of each summed into
    res. On a GPU replayed as one CUDA graph."""

    __slots__ = ("generation", "res", "run")

    def __init__(self, M, sizes, generation):
        self.generation = generation
        rows = M.shape[0]
        self.res = torch.empty(rows * len(sizes), device=M.device, dtype=M.dtype)
        sums = []
        off = 0
        for k, m in enumerate(sizes):
            sums.append((M[:, off:off + m], self.res[k * rows:(k + 1) * rows]))
            off += m

        def reduce():
            _output_features(M, M[R_X])
            for src, dst in sums:
                torch.sum(src, -1, out=dst)
        self.run = _cuda.Replay(reduce, M.device) if M.device.type == "cuda" else reduce


def _reduce_group(ex, prev, keep):
    """Every reduction of a group from its scratch row 0 into ex.res, and
    the weights into keep (the next snapshot) when given. On a GPU the
    sequence is replayed as one CUDA graph (_cuda), one per snapshot
    buffer and keep buffer: all of them are made once."""
    if ex.res.device.type == "cuda":
        key = (None if prev is None else prev.data_ptr(),
               None if keep is None else keep.data_ptr())
        replay = ex.replays.get(key)
        if replay is None:
            # A weak reference: ex holds the replay, and a cycle would keep
            # a replaced ex's scratch and graph alive until a full collection.
            ref = weakref.ref(ex)
            replay = ex.replays[key] = _cuda.Replay(
                lambda: _reductions(ref(), prev, keep), ex.res.device)
        replay()
    else:
        _reductions(ex, prev, keep)


def _reductions(ex, prev, keep):
    _features(ex, prev)
    for src, dst in ex.sums:
        torch.sum(src, -1, out=dst)
    for src, (lo, hi) in ex.minmax:
        # aminmax(dim=) is not vectorised on CPU in torch 1.13.
        torch.amin(src, -1, out=lo)
        torch.amax(src, -1, out=hi)
    if keep is not None:
        # After the features: they read the old contents.
        keep.copy_(ex.xw)


def _features(ex, prev):
    """Fills rows 1.. of a group's scratch from row 0: x², and the mixed
    row: (w - w_prev)² over the weights, g == 0 over the gradients, a > 0
    over the outputs, whose last row is |a| > 5."""
    torch.mul(ex.x, ex.x, out=ex.sq)
    if prev is not None:
        d = ex.dw
        torch.sub(ex.xw, prev, out=d)
        d.mul_(d)
    if ex.xg is not None:
        torch.eq(ex.xg, 0, out=ex.zg)
    if ex.xa is not None:
        torch.gt(ex.xa, 0, out=ex.pa)
        torch.gt(ex.sqa, SAT_SQ, out=ex.sa)
    if ex.nan is not None:
        _count_features(ex.x, ex.nan, ex.inf)


def _count_features(x, nan, inf):
    """The count rows: x != x (NaN), |x| == inf."""
    torch.ne(x, x, out=nan)
    torch.abs(x, out=inf)
    torch.eq(inf, INF, out=inf)


def _output_features(M, x):
    """_features for outputs alone, read from x (row 0 unused)."""
    sq = M[R_SQ]
    torch.mul(x, x, out=sq)
    torch.gt(x, 0, out=M[R_MIX])
    torch.gt(sq, SAT_SQ, out=M[R_SAT])
    if M.shape[0] > ROWS:
        _count_features(x, M[R_NAN], M[R_INF])


def _max(a, b):
    """max that propagates NaN (like torch's amax)."""
    if a != a or b != b:
        return NAN
    return a if a > b else b


def _std_sq(sq, mean, n):
    """Population std from the sum of squares and the mean."""
    var = sq / n - mean * mean
    if math.isnan(var):
        return var
    return math.sqrt(var) if var > 0 else 0.0


def _std(norm, mean, n):
    """Population std from the L2 norm and the mean: sqrt(E[x^2] - mean^2)."""
    return _std_sq(norm * norm, mean, n)


def accuracy(output, target, mode):
    """Batch accuracy as a 0-d tensor on the output's device, or None.
    mode: "logits" (a classification loss on scores), "probs" (BCELoss)
    or "bce_logits" (BCEWithLogitsLoss, MultiLabelSoftMarginLoss), None
    when the run is not a classification. Integer targets: argmax over
    the class dimension (_describe.class_dim), or for a binary output the output
    thresholded at 0 (0.5 for "probs"). Float targets of the output's
    shape: argmax against argmax (one-hot targets); for the BCE losses,
    a row that is not one-hot is a set of labels, and the accuracy is
    then the share of labels right. Everything stays on the device."""
    if mode is None or not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    out = output.detach()
    tgt = target.detach()
    if tgt.device != out.device or out.numel() == 0 or out.is_complex():
        return None
    threshold = 0.5 if mode == "probs" else 0.0
    if tgt.is_floating_point():
        if tgt.shape == out.shape and out.dim() >= 2 and out.shape[1] > 1:
            by_class = (out.argmax(1) == tgt.argmax(1)).float().mean()
            if mode == "logits":
                return by_class
            by_label = ((out > threshold) == (tgt > 0.5)).float().mean()
            return torch.where((tgt.sum(1) == 1).all(), by_class, by_label)
    else:
        dim = _describe.class_dim(out, tgt)
        if dim is not None:
            return (out.argmax(dim).reshape(-1) == tgt.reshape(-1)).float().mean()
    if out.numel() != tgt.numel():
        return None
    pred = out.reshape(-1) > threshold
    return (pred == (tgt.reshape(-1) > 0.5)).float().mean()
