"""Whole sampled steps replayed as one CUDA graph.

On a GPU a sampled step of a small model costs CPU, not device time:
_stats.Stats.compute is a few hundred microseconds of Python and 33-51
torch calls for the models of bench/overhead.py (the copies into the
scratch, one replay per group, the accuracy and input statistics, the
final cat), against a training step of 1-2 ms (docs/benchmarks.md, "On a
GPU"). A CUDA graph reads and writes fixed addresses, and in a steady
training loop the tensors a sampled step reads come back at the same
addresses: the caching allocator hands a freed block of the same size to
the same request, step after step, the addresses cycling through a few
sets (four in an MLP loop on an H200, bench/step_graphs.py). So the whole of compute(), with the cat of its results,
is recorded once per such set of addresses and replayed with one launch.

The key of a step is where and how every tensor it reads lies (data
pointer, shape, strides, dtype, device: weights, gradients, recorded
outputs, loss, output, target, input) and the state compute() depends on
(the snapshot's presence, whether this step keeps the weights, the
scratch's generation, the accuracy mode). Equal keys mean the graph reads
this step's very tensors, so its numbers are those compute() would give.
A key is recorded the second time it is seen (the first, eager, sighting
has made every buffer and view the recording needs) and replayed from
the third. At most MAX_GRAPHS graphs are kept; a loop whose addresses
never repeat stops being looked at after GIVE_UP sampled steps without a
replay, one that keeps needing new recordings (more than CHURN, and fewer
than four replays each) stops too, as does one whose graphs would hold
more than MAX_BYTES of device memory, and a failed recording or replay
turns step graphs off for good: the eager path gives the same numbers.

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

log = logging.getLogger("dnnfault")


def _where(t):
    """Where and how a tensor lies: what a graph that reads it recorded."""
    return (t.data_ptr(), t.shape, t.stride(), t.dtype, t.device)


class StepGraphs:
    """The recorded sampled steps of one _stats.Stats."""

    def __init__(self, enabled=None):
        self.on = ENABLED if enabled is None else enabled
        self.graphs = {}  # key: (graph, result vector, layout, buffers it uses, its bytes)
        self.bytes = 0  # device memory the graphs' pools took
        self.seen = {}  # key of an eager step whose results lay on one GPU: that device
        self.generation = None  # the Stats scratch generation the graphs were made in
        self.looked = 0  # keys computed
        self.replays = 0  # steps replayed, recorded ones included
        self.recorded = 0

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
        for l in st.layers:
            for p in l.params:
                parts.append(_where(p))
                g = p.grad
                if g is None:
                    parts.append(None)
                elif g.is_sparse:  # made dense anew at every step
                    return None
                else:
                    parts.append(_where(g))
            a = l.act
            parts.append(None if a is None else _where(a))
        for t in (loss, output, target, first_tensor(inputs)):
            parts.append(_where(t) if isinstance(t, torch.Tensor) else None)
        return tuple(parts)

    def saw(self, key, device):
        """An eager step of this key gave all its results on device."""
        if key is None or not self.on:
            return
        if len(self.seen) >= MAX_SEEN:
            self.seen.clear()
        self.seen[key] = device

    def run(self, st, key, keep, compute):
        """(result vector, layout) of the step, replayed or recorded and
        replayed; None where it must run eagerly. compute() is
        st.compute with the step's arguments."""
        got = self.graphs.get(key)
        if got is not None:
            graph, vec, layout = got[:3]
            try:
                _cuda._on_device(vec.device, graph.replay)
            except Exception as e:  # a launch that fails ran nothing
                log.debug("dnnfault: whole steps run eagerly from now on (replay failed: %s)", e)
                self.off()
                return None
            # What compute() would have done to the monitor's state.
            for l in st.layers:
                l.act = None
            st.prev = st._prev_buffers() if keep else None
            self.replays += 1
            return vec, layout
        device = self.seen.get(key)
        if device is None:
            return None
        return self._record(st, key, device, compute)

    def _record(self, st, key, device, compute):
        acts = [l.act for l in st.layers]
        prev = st.prev
        box = []

        def body():
            values, layout = compute()
            box.append((torch.cat(values), layout))

        reserved = torch.cuda.memory_reserved(device)
        _cuda.RECORDING.active = True
        try:
            graph = _cuda.capture(body, device)
            why = "torch cannot record here: before 2.1, or inside a recording"
        except Exception as e:
            graph, why = None, "recording failed: %s" % e
        finally:
            _cuda.RECORDING.active = False
        # What the recording's own pool took (checked before anything runs:
        # a replay writes the snapshot, which the eager path then reads).
        size = torch.cuda.memory_reserved(device) - reserved
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
            # Eagerly from now on, from the state before the recording;
            # views made while recording are not trusted.
            for l, a in zip(st.layers, acts):
                l.act = a
            st.prev = prev
            st.forget_views()
            self.off()
            return None
        vec, layout = box[0]
        # The graph writes into the scratch, the groups' result vectors and
        # the snapshot by address: held with it, they outlive any clearing
        # of the caches they came from.
        held = (dict(st._scratch), dict(st._zeros), [dict(g.cache) for g in st.groups],
                dict(st._loose_execs), st._prev_bufs)
        # Every layer's NaN and Inf were counted on the device (as on the
        # eager deferred path): finish() needs none of the step's tensors.
        layout = layout[:-1] + (None,)
        if len(self.graphs) >= MAX_GRAPHS:
            self.bytes -= self.graphs.pop(next(iter(self.graphs)))[4]  # the oldest
        self.graphs[key] = (graph, vec, layout, held, size)
        self.bytes += size
        self.seen.pop(key, None)
        self.recorded += 1
        self.replays += 1
        return vec, layout

    def off(self):
        self.on = False
        self.forget()

    def forget(self):
        self.graphs.clear()
        self.seen.clear()
        self.bytes = 0
