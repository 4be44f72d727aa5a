"""What only a CUDA device does: reductions replayed as graphs, and the
statistics of a sampled step copied to the host without waiting.

Graphs.

On a GPU a sampled step of a small model costs launches, not arithmetic:
the reductions of one group of layers are ~20 kernels of a few
microseconds of CPU each. Their inputs and outputs are buffers made once
(the scratch matrix, the snapshot of the weights, the group's result
vector), so the sequence can be recorded once and replayed with one
launch. The layers' own tensors, whose addresses change from step to step,
are copied into the scratch by an ordinary kernel before the replay.

A Replay runs its function eagerly the first time (which also initialises
whatever torch initialises lazily), records it the second time and replays
it from then on. If recording fails (an old torch, another thread using
the device in a way that breaks capture, a kernel that cannot be
captured) it runs eagerly for good: the statistics are the same either way.
DNNFAULT_CUDA_GRAPHS=0 turns replays off.

Inside the recording of a whole sampled step (_step_graph), a Replay runs
its function eagerly: its kernels then become part of that step's graph.

The copy. Waiting for a sampled step's numbers would stall the training
loop until the device has run everything queued before them (measured on
an H100: 0.15-0.3x of a 1.4-1.7 ms step). Instead they are copied into
pinned host memory behind the step's work, an event marks the copy's end,
and the monitor finishes and sends them once the event has passed: at its
next call, by which time the device has usually long passed it.
"""

import gc
import os

import torch

ENABLED = os.environ.get("DNNFAULT_CUDA_GRAPHS", "1") != "0"


class _Recording:
    """Whether a whole step is being recorded now (by this process's one
    monitoring thread: the monitor is driven from the training loop)."""
    active = False


RECORDING = _Recording()


class Replay:
    """fn() on a CUDA device, replayed as a graph from its second call."""

    __slots__ = ("fn", "device", "calls", "graph")

    def __init__(self, fn, device):
        self.fn = fn  # its closure keeps the buffers the graph reads and writes alive
        self.device = device
        self.calls = 0
        self.graph = None

    def __call__(self):
        if RECORDING.active:
            self.fn()
            return
        if self.graph is None:
            self.calls += 1
            if self.calls == 2 and ENABLED:
                try:
                    self.graph = capture(self.fn, self.device)
                except Exception:
                    # Nothing was run by the failed recording: run eagerly,
                    # this step and every later one.
                    self.graph = None
        if self.graph is not None:
            try:
                _on_device(self.device, self.graph.replay)
                return
            except Exception:  # a launch that fails ran nothing: eagerly from now on
                self.graph = None
        self.fn()


def _on_device(device, f):
    """f() with device current (a graph replays on the current device's
    current stream)."""
    if device.index is None or device.index == torch.cuda.current_device():
        return f()
    with torch.cuda.device(device):
        return f()


def capture(fn, device):
    """fn's kernels recorded into a graph (not run), or None where that
    is not safe. Recorded on a side stream, as CUDA requires, ordered after
    the work already queued on the current stream."""
    with torch.cuda.device(device):
        if torch.cuda.is_current_stream_capturing():  # inside a caller's own graph
            return None
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            try:
                # Only this thread's CUDA calls may disturb the recording.
                graph.capture_begin(capture_error_mode="thread_local")
            except TypeError:
                # torch < 2.1 records in global mode, where another thread's
                # CUDA call (a DataLoader's pin-memory thread) fails, and
                # fails that thread: no graphs there.
                return None
            # A collection while recording could free another graph, which
            # CUDA refuses while a stream records: the recording fails.
            collecting = gc.isenabled()
            gc.disable()
            try:
                fn()
            finally:
                try:
                    graph.capture_end()
                finally:
                    if collecting:
                        gc.enable()
        current.wait_stream(side)
    return graph


class HostCopy:
    """One vector copied to the host at a time, into a pinned buffer
    made once (and grown): start() queues the copy, Pending waits for it."""

    def __init__(self):
        self.buf = None
        self.host = None  # the buffer's first n values, as the last copy used them
        self.event = None
        self.device = None
        self.pending = None

    def start(self, vec, finish):
        """Queues the copy of the 1-d CUDA tensor vec; returns a Pending
        whose result() is finish(numpy vector of vec's values). An earlier
        Pending is resolved first: its buffer is about to be reused."""
        self.settle()
        n = vec.numel()
        if self.buf is None or self.buf.numel() < n or self.buf.dtype != vec.dtype:
            self.buf = torch.empty(max(n, 256), dtype=vec.dtype, pin_memory=True)
            self.host = None
        self._event_on(vec.device)
        host = self.host
        if host is None or host.numel() != n:  # a view made once per size, not per step
            host = self.host = self.buf[:n]
        _on_device(vec.device, lambda: (host.copy_(vec, non_blocking=True), self.event.record()))
        self.pending = Pending(self, host, finish)
        return self.pending

    def _event_on(self, device):
        if self.event is None or self.device != device:
            self.event = torch.cuda.Event()  # an event stays on its first device
            self.device = device

    def settle(self):
        """Resolves the Pending its owner has not asked for yet (kept for
        them): the buffer it reads is about to be written again."""
        if self.pending is not None:
            try:
                self.pending.result()
            except Exception:  # reported to its owner when it asks
                pass

    def landed(self, host, device, finish):
        """A Pending of the numbers that work already queued on device (a
        step graph, _step_graph) copies into host, pinned memory of its own:
        an event marks the end of that work, as start() marks its copy's."""
        self._event_on(device)
        _on_device(device, self.event.record)
        self.pending = Pending(self, host, finish)
        return self.pending


class Pending:
    """A sampled step's statistics on their way to the host."""

    __slots__ = ("copy", "host", "finish", "value", "landed")

    def __init__(self, copy, host, finish):
        self.copy = copy
        self.host = host
        self.finish = finish
        self.value = None
        self.landed = False

    def ready(self):
        """True once the copy has landed (never waits)."""
        if self.value is not None or self.landed:
            return True
        self.landed = self.copy.event.query()
        return self.landed

    def result(self):
        """finish(values), waiting for the copy if it has not landed."""
        if self.finish is not None:
            # Forgotten first: an error here is reported once, and the
            # next copy does not wait for this one again.
            finish, host = self.finish, self.host
            self.finish = self.host = None
            if self.copy.pending is self:
                self.copy.pending = None
            if not (self.landed or self.copy.event.query()):  # a landed copy needs no wait
                self.copy.event.synchronize()
            if host.dtype not in (torch.float32, torch.float64):
                host = host.double()  # e.g. only a bfloat16 loss was recorded
            self.value = finish(host.numpy())
        if self.value is None:
            raise RuntimeError("finishing these statistics failed before")
        return self.value
