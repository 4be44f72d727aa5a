"""A fixed sequence of kernels replayed as one CUDA graph.

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
"""

import os

import torch

ENABLED = os.environ.get("DNNFAULT_CUDA_GRAPHS", "1") != "0"


class Replay:
    """fn() on a CUDA device, replayed as a graph from its second call."""

    __slots__ = ("fn", "device", "calls", "graph")

    def __init__(self, fn, device):
        self.fn = fn  # its closure keeps the buffers the graph reads and writes alive
        self.device = device
        self.calls = 0
        self.graph = None

    def __call__(self):
        if self.graph is not None:
            _on_device(self.device, self.graph.replay)
            return
        self.calls += 1
        if self.calls == 2 and ENABLED and not torch.cuda.is_current_stream_capturing():
            try:
                self.graph = _capture(self.fn, self.device)
            except Exception:
                # Nothing was run by the failed recording: run eagerly,
                # this step and every later one.
                self.graph = None
            if self.graph is not None:
                _on_device(self.device, self.graph.replay)
                return
        self.fn()


def _on_device(device, f):
    """f() with device current (a graph replays on the current device's
    current stream)."""
    if device.index is None or device.index == torch.cuda.current_device():
        return f()
    with torch.cuda.device(device):
        return f()


def _capture(fn, device):
    """fn's kernels recorded into a graph (not run). Recorded on a side
    stream, as CUDA requires, ordered after the work already queued on the
    current stream."""
    with torch.cuda.device(device):
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            try:
                # Only this thread's CUDA calls matter to the recording
                # (torch >= 2.1; older ones take no mode).
                graph.capture_begin(capture_error_mode="thread_local")
            except TypeError:
                graph.capture_begin()
            try:
                fn()
            finally:
                graph.capture_end()
        current.wait_stream(side)
    return graph
