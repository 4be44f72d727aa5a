"""Whole sampled steps replayed as one CUDA graph.

On a GPU a sampled step of a small model costs CPU, not device time:
_stats.Stats.compute is a few hundred microseconds of Python and 33-51
torch calls for the models of bench/overhead.py (the copies into the
scratch, one replay per group, the accuracy and input statistics, the
final cat), against a training step of 1-2 ms (docs/benchmarks.md, "On a
GPU"). So the whole of compute(), with the cat of its results, is recorded
once and replayed with one launch.

A CUDA graph reads fixed addresses. The parameters stay where they are,
and so, in the loops measured, did big transient tensors (the wide MLP's
4 MiB weight gradients), but the small ones, which the caching allocator
serves from its pool of small blocks, did not: every bias gradient,
output, loss, target and input moved from step to step, cycling through
more address sets than graphs are kept (bench/step_graphs.py on an H200,
2026-11-27: the wide MLP recorded 17 graphs in 57 sampled steps and gave
up). So a transient tensor (gradient, recorded output, loss, output,
target, input) of at most STAGE_BYTES is copied into a buffer of the
graph's own before each replay (one _foreach_copy_ per dtype and device), up to
STAGE_TOTAL bytes a step; the graph reads that buffer. The others are
read where they lie.

The key of a step is what the graph assumes: where and how every tensor
read in place lies (data pointer, shape, strides, dtype, device), the
shape, dtype and device of every staged one, and the state compute()
depends on (the snapshot's presence, whether this step keeps the
weights, the scratch's generation, the accuracy mode). Equal keys mean
the graph reads this step's very values, so its numbers are those
compute() would give. A key is recorded the second time it is seen (the
first, eager, sighting has made every buffer and view the recording
needs) and replayed from the third. At most MAX_GRAPHS graphs are kept;
a loop whose keys never repeat stops being looked at after GIVE_UP
sampled steps without a replay, one that keeps needing new recordings
(more than CHURN, and fewer than four replays each) stops too, as does
one whose graphs would hold more than MAX_BYTES of device memory, and a
failed recording or replay turns step graphs off for good: the eager
path gives the same numbers.

With HOST_COPY the graph also copies the step's result vector into
pinned host memory of its own, which saves the copy's launch at every
replay; the first replay of each recording checks that copy against the
vector, bit for bit, and where it differs, or where recording the copy
fails, the copies are made by _cuda.HostCopy again. Off by default:
correct on an H100, but the launch it saves went into the replay and
mon.step() took no less (docs/benchmarks.md); DNNFAULT_GRAPH_HOST_COPY=1
turns it on.

DNNFAULT_STEP_GRAPHS=0 turns step graphs off (DNNFAULT_CUDA_GRAPHS=0 turns
off every graph).
"""

import logging
import os

import torch

from . import _cuda
from ._describe import first_tensor

ENABLED = _cuda.ENABLED and os.environ.get("DNNFAULT_STEP_GRAPHS", "1") != "0"
MAX_GRAPHS = 8
GIVE_UP = 32
MAX_SEEN = 64
# Device memory the graphs' own pools may hold in all: a graph keeps the
# intermediate tensors of its recording (little for a small model; copies
# of non-contiguous outputs for a big one), where the eager path hands
# them back to the caching allocator at once.
MAX_BYTES = 64 << 20
CHURN = 2 * MAX_GRAPHS  # recordings after which a poor replay rate turns graphs off
# Transient tensors of at most STAGE_BYTES (the caching allocator's small
# blocks go up to 1 MiB) are copied into the graph's own buffers, at most
# STAGE_TOTAL bytes a step (counted in MAX_BYTES); the rest is read in place.
STAGE_BYTES = 1 << 20
STAGE_TOTAL = 16 << 20
_foreach_copy = getattr(torch, "_foreach_copy_", None)  # torch >= 2.1
# The graph copies its result to the host itself: written without a GPU,
# off until one has run it (docs/python.md).
HOST_COPY = os.environ.get("DNNFAULT_GRAPH_HOST_COPY", "0") == "1"

log = logging.getLogger("dnnfault")


def _where(t):
    """Where and how a tensor lies: what a graph that reads it recorded."""
    return (t.data_ptr(), t.shape, t.stride(), t.dtype, t.device)


class _Graph:
    """One recorded step: the graph, the result vector it writes, finish
    (raw -> (layer_stats, extras)), the buffers it writes by address (held
    with it), the device memory it took, its staging copies (_copies) and
    the pinned host copy of its result it makes, where that is used."""

    __slots__ = ("graph", "vec", "finish", "held", "size", "copies", "host")

    def __init__(self, graph, vec, finish, held, size, copies, host):
        self.graph, self.vec, self.finish, self.held = graph, vec, finish, held
        self.size, self.copies, self.host = size, copies, host


class StepGraphs:
    """The recorded sampled steps of one _stats.Stats."""

    def __init__(self, enabled=None):
        self.on = ENABLED if enabled is None else enabled
        self.graphs = {}  # key: _Graph
        self.bytes = 0  # device memory the graphs' pools took
        # key of an eager step whose results lay on one GPU: (that device,
        # the result vector's length and dtype)
        self.seen = {}
        self.host_copy = HOST_COPY  # off after a copy that failed or differed
        self.generation = None  # the Stats scratch generation the graphs were made in
        self.looked = 0  # keys computed
        self.replays = 0  # steps replayed, recorded ones included
        self.recorded = 0
        # Of the last key(), until run() takes it: (slot, tensor) of each
        # staged tensor (held no longer: a step's tensors must not outlive it).
        self.small = []

    def key(self, st, loss, output, target, inputs, mode, keep):
        """The step's key, or None where it cannot be replayed."""
        if not self.on:
            return None
        self.looked += 1
        if not self.replays and self.looked > GIVE_UP:
            log.debug("dnnfault: no sampled step's tensors came back where an earlier "
                      "one's lay in %d steps: whole steps run eagerly", GIVE_UP)
            self.off()
            return None
        if self.recorded > CHURN and 4 * self.recorded > self.replays:
            # Addresses that cycle through more sets than MAX_GRAPHS: a
            # recording (2-3 ms of CPU on an H200 machine) seldom paid back.
            log.debug("dnnfault: %d step graphs recorded for %d replays: whole steps run "
                      "eagerly", self.recorded, self.replays)
            self.off()
            return None
        if st._generation != self.generation:
            # Buffers the graphs read were replaced: none can be replayed
            # again, and each holds its buffers (see _record).
            self.forget()
            self.generation = st._generation
        parts = [st._generation, keep, st.prev is not None, mode]
        small = []
        self.small = []
        room = [STAGE_TOTAL]
        for i, l in enumerate(st.layers):
            for k, p in enumerate(l.params):
                parts.append(_where(p))
                g = p.grad
                if g is None:
                    parts.append(None)
                elif g.is_sparse:  # made dense anew at every step
                    return None
                else:
                    parts.append(_part(("g", i, k), g, small, room))
            a = l.act
            parts.append(None if a is None else _part(("a", i), a, small, room))
        for j, t in enumerate((loss, output, target, first_tensor(inputs, floating=True))):
            parts.append(_part(("x", j), t, small, room) if isinstance(t, torch.Tensor) else None)
        self.small = small
        return tuple(parts)

    def saw(self, key, vec):
        """An eager step of this key gave all its results in vec, on one GPU."""
        if key is None or not self.on:
            return
        if len(self.seen) >= MAX_SEEN:
            self.seen.clear()
        self.seen[key] = (vec.device, vec.numel(), vec.dtype)

    def run(self, st, key, args):
        """(result vector, its finish: raw -> (layer_stats, extras), the
        pinned host vector the graph copied it into or None) of the step
        whose key() was key, replayed or recorded and replayed; None where
        it must run eagerly. args: st.compute's arguments."""
        small, self.small = self.small, []
        g = self.graphs.get(key)
        if g is not None:
            def replay():
                _stage(g.copies, small)
                g.graph.replay()
            try:
                _cuda._on_device(g.vec.device, replay)
            except Exception as e:  # the staging copies may have run, the graph has not
                log.debug("dnnfault: whole steps run eagerly from now on (replay failed: %s)", e)
                self.off()
                return None
            # What compute() would have done to the monitor's state.
            for l in st.layers:
                l.act = None
            st.prev = st._prev_buffers() if args[5] else None
            self.replays += 1
            return g.vec, g.finish, g.host
        seen = self.seen.get(key)
        if seen is None:
            return None
        return self._record(st, key, seen, args, small)

    @staticmethod
    def staged(st, args, small):
        """compute()'s arguments for a recording: every tensor of key()'s
        small list replaced by a buffer of the graph's own, filled with its
        values (recorded outputs are set on their layers). Returns (args,
        grads, stages)."""
        stages = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for _, t in small]
        _stage(_copies(stages), small)
        xs = list(args)
        grads = {}
        for (slot, _), b in zip(small, stages):
            if slot[0] == "g":
                grads[slot[1], slot[2]] = b
            elif slot[0] == "a":
                st.layers[slot[1]].act = b
            else:
                xs[slot[1]] = b
        return xs, grads, stages

    def _record(self, st, key, seen, args, small):
        device, n, dtype = seen
        acts = [l.act for l in st.layers]
        prev = st.prev
        box = []
        stages = []
        host = [None]  # pinned memory the graph copies the result into

        def body():
            values, layout = st.compute(*xs, grads=grads)
            vec = torch.cat(values)
            box.append((vec, layout))
            if host[0] is not None:
                if vec.numel() == n and vec.dtype == dtype:
                    host[0].copy_(vec, non_blocking=True)
                else:
                    host[0] = None

        if self.host_copy:
            try:
                host[0] = _pinned(n, dtype)
            except Exception as e:
                log.debug("dnnfault: step graphs copy to the host eagerly from now on "
                          "(pinned memory: %s)", e)
                self.host_copy = False
        graph = None
        retry = False
        try:
            xs, grads, stages = self.staged(st, args, small)  # run now, outside the graph
            reserved = torch.cuda.memory_reserved(device)
            _cuda.RECORDING.active = True
            try:
                graph = _cuda.capture(body, device)
            except Exception:
                retry = host[0] is not None  # perhaps the copy to the host
                raise
            finally:
                _cuda.RECORDING.active = False
            why = "torch cannot record here: before 2.1, or inside a recording"
        except Exception as e:
            why = "recording failed: %s" % e
            if retry:
                # Record again without the copy at the key's next step
                # (torch's own cleanup of a failed recording assumed).
                log.debug("dnnfault: step graphs copy to the host eagerly from now on (%s)", why)
                self.host_copy = False
                self._undo(st, acts, prev)
                return None
        # What the stages and the recording's own pool took (checked before
        # anything runs: a replay writes the snapshot, which the eager path
        # then reads).
        size = 0 if graph is None else torch.cuda.memory_reserved(device) - reserved + sum(
            b.numel() * b.element_size() for b in stages)
        if graph is not None and not (box and box[0][0].device == device):
            graph, why = None, "results on another device"
        elif graph is not None and self.bytes + size > MAX_BYTES:
            graph, why = None, "the graphs would hold %d MiB of device memory" % (
                (self.bytes + size) >> 20)
        if graph is not None:
            try:
                # Recording ran nothing: this step's numbers come from the
                # first replay.
                _cuda._on_device(device, graph.replay)
            except Exception as e:  # a launch that fails ran nothing
                graph, why = None, "replay failed: %s" % e
        if graph is None:
            log.debug("dnnfault: whole steps run eagerly from now on (%s)", why)
            self._undo(st, acts, prev)
            self.off()
            return None
        vec, layout = box[0]
        pinned = host[0]  # written by every replay, used or not: held with the graph
        if pinned is not None and not _same_bits(pinned, vec):
            log.debug("dnnfault: step graphs copy to the host eagerly from now on (the "
                      "graph's copy differed from its result)")
            self.host_copy = False
            host[0] = None
        # The graph writes into the scratch, the groups' result vectors, the
        # snapshot and its pinned copy by address: held with it, they
        # outlive any clearing of the caches they came from.
        held = (dict(st._scratch), dict(st._zeros), [dict(g.cache) for g in st.groups],
                dict(st._loose_execs), st._prev_bufs, pinned)
        # Every layer's NaN and Inf were counted on the device (as on the
        # eager deferred path): finish() needs none of the step's tensors,
        # and the same layout serves every replay.
        finish = st.finisher(layout[:-1] + (None,))
        if len(self.graphs) >= MAX_GRAPHS:
            self.bytes -= self.graphs.pop(next(iter(self.graphs))).size  # the oldest
        self.graphs[key] = _Graph(graph, vec, finish, held, size, _copies(stages), host[0])
        self.bytes += size
        self.seen.pop(key, None)
        self.recorded += 1
        self.replays += 1
        return vec, finish, host[0]

    @staticmethod
    def _undo(st, acts, prev):
        """The monitor's state as before a recording that failed, to go on
        eagerly; views made while recording are not trusted."""
        for l, a in zip(st.layers, acts):
            l.act = a
        st.prev = prev
        st.forget_views()

    def off(self):
        self.on = False
        self.small = []
        self.forget()

    def forget(self):
        self.graphs.clear()
        self.seen.clear()
        self.bytes = 0


def _pinned(n, dtype):
    """Pinned host memory for a graph's copy of its result."""
    return torch.empty(n, dtype=dtype, pin_memory=True)


# Integer views for a comparison bit for bit (NaN included).
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}


def _same_bits(host, vec):
    """Whether host holds vec's values, bit for bit. vec.cpu() waits for
    the work queued before it, the graph's copy included."""
    back = vec.cpu()
    bits = _BITS.get(vec.dtype)
    if bits is None or host.shape != back.shape or host.dtype != back.dtype:
        return False
    return torch.equal(host.view(bits), back.view(bits))


def _part(slot, t, small, room):
    """The key's part for a transient tensor: staged (appended to small,
    room[0] the bytes still allowed) or read where it lies."""
    n = t.numel() * t.element_size()
    if n <= STAGE_BYTES and n <= room[0] and t.layout == torch.strided:
        room[0] -= n
        small.append((slot, t))
        return (t.shape, t.dtype, t.device)
    return _where(t)


def _copies(stages):
    """The stages grouped for _stage: (their buffers, their indices in the
    key's small list) per dtype and device, one _foreach_copy_ each."""
    by = {}
    for j, b in enumerate(stages):
        got = by.setdefault((b.dtype, b.device), ([], []))
        got[0].append(b)
        got[1].append(j)
    return list(by.values())


@torch.no_grad()
def _stage(copies, small):
    """Copies the small tensors into their stages (copies: _copies of the
    stages, which lie in small's order)."""
    for bufs, idx in copies:
        src = [small[j][1] for j in idx]
        if _foreach_copy is not None:
            _foreach_copy(bufs, src)
        else:
            for b, t in zip(bufs, src):
                b.copy_(t)
