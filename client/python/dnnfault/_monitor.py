"""The watch object: hooks, sampling, and the hand-over to the C client."""

import atexit
import functools
import logging
import numbers
import os
import sys
import time
import uuid
import weakref

import numpy
import torch
from torch import nn

from . import _describe, _lib, _limits
from ._host_stats import StepStats
from ._stats import Layer

log = logging.getLogger("dnnfault")

DEFAULT_EVERY = 50
CLOSE_TIMEOUT = 2.0
_EXTRA = {"epochs", "steps", "batch_size", "labels", "queue_bytes", "dataset_size", "task",
          "num_classes", "run_id", "close_timeout"}
_TASKS = {"classification": _lib.TASK_CLASSIFICATION, "regression": _lib.TASK_REGRESSION,
          "unknown": _lib.TASK_UNKNOWN}
_END = {"completed": _lib.END_COMPLETED, "crashed": _lib.END_CRASHED,
        "interrupted": _lib.END_INTERRUPTED}
_warned_library = False
_GRAD_NORM, _UPDATE_RATIO = 4, 9  # enum dnnfault_layer_stat; the gradient's five come between
# How a classification loss reads the output (_stats.accuracy); "logits"
# for every other one.
_ACCURACY_MODES = {"BCELoss": "probs", "binary_cross_entropy": "probs",
                   "BCEWithLogitsLoss": "bce_logits",
                   "binary_cross_entropy_with_logits": "bce_logits",
                   "MultiLabelSoftMarginLoss": "bce_logits"}


# The longest wait flush(), close() and diagnosis() accept: the C client
# takes milliseconds as an int, where a negative value means no bound.
MAX_WAIT = 86400.0


def _seconds(v, default):
    """A timeout as seconds in [0, MAX_WAIT]: None is the default; what is
    not a number (or NaN) is the default too, with a warning; negative
    values are 0, and anything longer (inf included) is MAX_WAIT."""
    if v is None:
        return default
    try:
        seconds = float(v)
    except (TypeError, ValueError):
        seconds = float("nan")
    if seconds != seconds:
        log.warning("dnnfault: timeout %r is not a number of seconds; using %g", v, default)
        return default
    return min(max(seconds, 0.0), MAX_WAIT)


def _as_float(v):
    """A metric as a float; a tensor costs one sync, which is why callers
    should pass numbers."""
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        v = v.detach().float().cpu().reshape(-1)[0]
    return float(v)


class Monitor:
    """Created by dnnfault.watch(); see its docstring and docs/python.md."""

    def __init__(self, model, optimizer, loss_fn=None, run=None, every=DEFAULT_EVERY,
                 address=None, tags=None, reference=None, **extra):
        self._closed = False
        self._client = None
        self._hooks = []
        self._hooks_for = None
        self._snap_version = None
        self._errors = 0
        self._step = 0
        self._sampled = 0
        self._pending = None  # (Step, _cuda.Pending, unwritten, frozen): a sampled step not yet sent
        self._started = False
        self._stream = 0
        self._epoch = 0
        self._last_epoch = {}
        self._final_stats = None
        self._final_graphs = (0, 0)
        self.address = address
        self.every = DEFAULT_EVERY
        self.run_id = None
        self.run = run
        self.reference = reference
        try:
            self._setup(model, optimizer, loss_fn, run, every, address, tags, extra)
        except Exception as e:
            self._error("cannot set up monitoring, training goes on unmonitored", e)
            self._disable()

    def _setup(self, model, optimizer, loss_fn, run, every, address, tags, extra):
        global _warned_library
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            log.warning("dnnfault: every=%r is not a positive int; using %d", every, DEFAULT_EVERY)
            every = DEFAULT_EVERY
        self.every = every
        unknown = set(extra) - _EXTRA
        if unknown:
            log.warning("dnnfault: ignoring unknown options %s", ", ".join(sorted(unknown)))
        self._extra = extra
        if os.environ.get("DNNFAULT_DISABLE", "") not in ("", "0"):
            self._disable()
            return
        try:
            self._lib = _lib.load()
        except _lib.LibraryError as e:
            if not _warned_library:
                log.warning("dnnfault: %s; training goes on unmonitored", e)
                _warned_library = True
            self._disable()
            return
        self.model = model
        self.optimizer = optimizer
        self._loss_name = _describe._callable_name(loss_fn)
        inner = _describe.unwrap(model)
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in inner.parameters()):
            raise ValueError("the model has lazy modules (nn.LazyLinear, ...) whose parameters "
                             "do not exist yet: call dnnfault.watch() after the first forward pass")
        found = _describe.find_layers(inner)
        self._layers = [Layer(n, m, p) for n, m, p in found]
        self._desc = _describe.describe(model, optimizer, loss_fn, found)
        self.run_id = str(extra.get("run_id") or os.environ.get("DNNFAULT_RUN_ID") or "") \
            or self._shared_run_id()
        if run is None:
            script = os.path.splitext(os.path.basename(sys.argv[0] or ""))[0] or "python"
            run = "%s-%s" % (script, self.run_id[:8])
        self.run = run
        self._desc.update(run_id=self.run_id, run_name=run,
                          planned_epochs=extra.get("epochs"), planned_steps=extra.get("steps"),
                          batch_size=extra.get("batch_size"),
                          dataset_size=extra.get("dataset_size"),
                          num_classes=extra.get("num_classes"),
                          reference=None if self.reference is None else str(self.reference))
        self._desc["tags"] = _limits.tags(tags)
        if extra.get("labels") is not None:
            self._desc["labels"] = [str(x) for x in extra["labels"]]
        for note in _limits.fit(self._desc):
            log.warning("dnnfault: %s", note)
        self.run_id, self.run = self._desc["run_id"], self._desc["run_name"]
        self.reference = self._desc["reference"]
        self._close_timeout = _seconds(extra.get("close_timeout"), CLOSE_TIMEOUT)
        self._stats = StepStats(self._layers, self._lib)
        keep = []
        opts = _lib.client_options(address, extra.get("queue_bytes"), keep)
        client = self._lib.client_new(opts)
        if not client:
            raise OSError("dnnfault_client_new failed: bad address %r%s?" % (
                address if address is not None else os.environ.get("DNNFAULT_ADDRESS"),
                "" if address is not None else " (from $DNNFAULT_ADDRESS)"))
        self._client = client
        # Step 0 is sampled: its "before" weights are the current ones.
        self._stats.snapshot()
        self._snap_version = self._weights_version()
        self._attach()
        self._atexit = _atexit_closer(self)
        atexit.register(self._atexit)

    def _shared_run_id(self):
        rid = uuid.uuid4().hex
        if self._desc["world_size"] > 1:
            # Every rank reports into one run: rank 0's id wins.
            try:
                import torch.distributed as dist
                box = [rid]
                dist.broadcast_object_list(box, src=0)
                rid = box[0]
            except Exception as e:
                log.warning("dnnfault: cannot share the run id between ranks (%s); "
                            "set DNNFAULT_RUN_ID", e)
        return rid

    def _disable(self):
        self._lib = None
        self._layers = []

    @property
    def enabled(self):
        return self._lib is not None and not self._closed

    def _error(self, what, exc):
        self._errors += 1
        if self._errors == 1:
            log.warning("dnnfault: %s: %s: %s (further errors are counted in stats())",
                        what, type(exc).__name__, exc, exc_info=exc)
        else:
            log.debug("dnnfault: %s: %s", what, exc)

    def _check(self, what, rv):
        if rv < 0:
            self._errors += 1
            if self._errors == 1:
                log.warning("dnnfault: %s failed: %s (further errors are counted in stats())",
                            what, os.strerror(-rv))
        return rv

    # Forward hooks exist only while a sampled step's forward pass may run:
    # from the end of mon.step(t-1) to mon.step(t). Unsampled steps run the
    # model without any hook.
    # They are made for the path that serves the model (reduce at once on
    # the C path, keep the output on the torch path), and made again when
    # the model moves to the other one (model.half(), .cuda(), and back).
    def _attach(self):
        if self._hooks:
            if self._stats.serving is self._hooks_for:
                return
            self._detach()
        now = self._stats.output_reducer()
        self._hooks_for = self._stats.serving
        for i, l in enumerate(self._layers):
            self._hooks.append(l.module.register_forward_hook(
                _recorder(l, None if now is None else functools.partial(now, i))))

    def _detach(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for l in self._layers:
            l.act = None

    def _start(self, output=None, target=None, inputs=None):
        desc = self._desc
        task = self._extra.get("task")
        if task is not None:
            desc["task"] = _TASKS.get(str(task), _lib.TASK_UNKNOWN)
            if not desc.get("num_classes") and desc["task"] == _lib.TASK_CLASSIFICATION:
                desc["num_classes"] = _describe.infer_task(self._loss_name, output, target)[1]
        else:
            desc["task"], classes = _describe.infer_task(self._loss_name, output, target)
            if not desc.get("num_classes"):
                desc["num_classes"] = classes
        if not desc.get("batch_size"):
            desc["batch_size"] = _describe.batch_size_of(inputs, output, target)
        self._accuracy_mode = None
        if desc["task"] == _lib.TASK_CLASSIFICATION:
            self._accuracy_mode = _ACCURACY_MODES.get(self._loss_name, "logits")
        keep = []
        info = _lib.run_info(desc, keep)
        stream = _lib._u64()
        self._started = True
        if self._check("RunStart", self._lib.client_run_start(self._client, info, stream)) == 0:
            self._stream = stream.value

    def step(self, loss, output=None, target=None, inputs=None):
        """Call once per training step, after optimizer.step(). On a
        sampled step (step % every == 0) the statistics are computed and
        queued; on the others nothing touches the tensors."""
        t = self._step
        self._step = t + 1
        if self._lib is None or self._closed:
            return
        try:
            if self._pending is not None:
                self._deliver(wait=False)
            if not self._started:
                self._start(output, target, inputs)
            nxt = (t + 1) % self.every == 0
            if t % self.every == 0:
                self._sample(t, loss, output, target, inputs, nxt)
            if nxt:
                if self.every > 1:
                    self._stats.snapshot()
                    self._snap_version = self._weights_version()
                self._attach()
            elif self._hooks:
                self._detach()
        except Exception as e:
            self._error("step %d not recorded" % t, e)

    def _sample(self, t, loss, output, target, inputs, keep_weights):
        if self._pending is not None:
            self._deliver(wait=True)
        s = _lib.Step()
        s.step = t
        s.time = time.time()
        lr = self._lr()
        if lr is not None:
            s.lr = lr
            s.has |= _lib.HAS_LR
        if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
            s.loss = float(loss)
            s.has |= _lib.HAS_LOSS
        # Nothing wrote to the weights since the snapshot: no optimizer step
        # (gradient accumulation calls mon.step() between them), so there
        # is no update to measure, not an update of 0.
        version = self._weights_version()
        unwritten = version == self._snap_version
        frozen = self._frozen_now()
        output, target = _describe.first_tensor(output), _describe.first_tensor(target)
        got = self._stats.sample(loss, output, target, inputs, self._accuracy_mode,
                                 keep_weights, defer=True)
        if keep_weights:
            self._snap_version = version
        self._sampled += 1
        if isinstance(got, tuple):
            self._send(s, *got, unwritten=unwritten, frozen=frozen)
        else:  # on a GPU: sent once the numbers have reached the host
            self._pending = (s, got, unwritten, frozen)

    def _deliver(self, wait, timeout=None):
        """Sends the pending sampled step once its numbers have reached
        the host. wait: wait for them, at most timeout seconds (None: as
        long as the device takes); a step not there by then is dropped."""
        s, pending, unwritten, frozen = self._pending
        try:
            if not pending.ready():
                if not wait:
                    return
                if timeout is not None:
                    deadline = time.monotonic() + timeout
                    while not pending.ready():
                        if time.monotonic() > deadline:
                            raise TimeoutError("the device did not finish it in %.1f s" % timeout)
                        time.sleep(0.001)
            self._pending = None
            self._send(s, *pending.result(), unwritten=unwritten, frozen=frozen)
        except Exception as e:
            self._pending = None  # never retried: a broken one would block every later step
            self._error("step %d not recorded" % s.step, e)

    def _deliver_all(self, timeout=None):
        if self._pending is not None and self._client and self._lib is not None:
            self._deliver(True, timeout)

    def _weights_version(self):
        """The sum of the parameters' version counters, which every in-place
        write (an optimizer's step) increments; no sync, no tensor read."""
        return sum(p._version for l in self._layers for p in l.params)

    def _frozen_now(self):
        """Layers with parameters of which none is trainable now: frozen
        at this step, which may differ from the start (unfreezing), unless
        their gradient says otherwise (_send)."""
        return [i for i, l in enumerate(self._layers)
                if l.params and not any(p.requires_grad for p in l.params)]

    def _send(self, s, layer_stats, extra, unwritten=False, frozen=()):
        if "loss" in extra:
            s.loss = extra["loss"]
            s.has |= _lib.HAS_LOSS
        if "accuracy" in extra:
            s.accuracy = extra["accuracy"]
            s.has |= _lib.HAS_ACCURACY
        if "input" in extra:
            s.input_mean, s.input_std, s.input_min, s.input_max = extra["input"]
            s.has |= _lib.HAS_INPUT
        if unwritten:
            # Written through .data (which has a version counter of its own)
            # the weights would still have moved: only an update of exactly
            # 0 everywhere is taken for "no optimizer step".
            ratios = numpy.asarray(layer_stats)[_UPDATE_RATIO::_lib.STATS_PER_LAYER]
            if len(ratios) and not ratios.any():
                layer_stats = numpy.array(layer_stats, dtype=numpy.float32)
                layer_stats[_UPDATE_RATIO::_lib.STATS_PER_LAYER] = numpy.nan
        if frozen:
            # A layer with nothing trainable now whose gradient is absent or
            # 0 is frozen: its .grad, if any, is an earlier step's (zeroed,
            # not freed, by zero_grad(set_to_none=False)). Sent without
            # gradient and update, which tells the daemon it is frozen now.
            # A non-zero gradient is this iteration's: the loop switched
            # requires_grad off after using it (a GAN's discriminator
            # during the generator's step), and the layer trained.
            layer_stats = numpy.array(layer_stats, dtype=numpy.float32)
            for i in frozen:
                k = i * _lib.STATS_PER_LAYER
                g = layer_stats[k + _GRAD_NORM]
                if g == 0 or g != g:
                    layer_stats[k + _GRAD_NORM:k + _UPDATE_RATIO + 1] = numpy.nan
        s.layer_stats = _float_view(layer_stats)
        s.n_layers = len(layer_stats) // _lib.STATS_PER_LAYER
        self._check("Step", self._lib.client_step(self._client, self._stream, s))

    def _lr(self):
        groups = getattr(self.optimizer, "param_groups", None)
        if not groups:
            return None
        lr = groups[0].get("lr")
        if isinstance(lr, torch.Tensor):
            return float(lr) if lr.device.type == "cpu" else None
        return float(lr) if isinstance(lr, (int, float)) else None

    def epoch(self, train_loss=None, train_metric=None, val_loss=None, val_metric=None,
              epoch=None):
        """Epoch summary; pass numbers (a tensor costs a sync). Epochs are
        numbered from 0 unless `epoch` is given."""
        if epoch is None:
            epoch = self._epoch
        try:
            epoch = int(epoch)
        except (TypeError, ValueError) as ex:
            self._error("epoch %r not recorded" % (epoch,), ex)
            return
        if not 0 <= epoch < 2 ** 32:
            self._error("epoch %d not recorded" % epoch, ValueError("epochs are numbered 0..2^32-1"))
            return
        self._epoch = epoch + 1
        if self._lib is None or self._closed:
            return
        try:
            if not self._started:
                self._start()
            self._deliver_all()
            e = _lib.Epoch()
            e.epoch = int(epoch)
            e.step = max(self._step - 1, 0)
            vals = {}
            for name, bit, v in (("train_loss", _lib.HAS_TRAIN_LOSS, train_loss),
                                 ("train_metric", _lib.HAS_TRAIN_METRIC, train_metric),
                                 ("val_loss", _lib.HAS_VAL_LOSS, val_loss),
                                 ("val_metric", _lib.HAS_VAL_METRIC, val_metric)):
                v = _as_float(v)
                if v is not None:
                    setattr(e, name, v)
                    e.has |= bit
                    vals[name] = (bit, v)
            self._last_epoch = vals
            self._check("Epoch", self._lib.client_epoch(self._client, self._stream, e))
        except Exception as ex:
            self._error("epoch %s not recorded" % epoch, ex)

    def diagnosis(self, timeout=2.0):
        """This run's entry of the daemon's status (dict: state, health,
        symptoms, causes, ...), or None when the daemon cannot be asked."""
        if self._lib is None or self.run_id is None:
            return None
        try:
            timeout = _seconds(timeout, 2.0)
            self._deliver_all(timeout)
            return self._lib.status(self.address, self.run_id, int(timeout * 1000))
        except Exception as e:
            log.debug("dnnfault: diagnosis: %s", e)
            return None

    def stats(self):
        """The C client's counters, plus this monitor's own."""
        out = {"queued": 0, "sent": 0, "acked": 0, "dropped": 0, "rejected": 0,
               "reconnects": 0, "queue_bytes": 0, "queue_messages": 0, "connected": False,
               "last_error": ""}
        if self._final_stats is not None:
            out.update(self._final_stats)
        elif self._client:
            try:
                cs = _lib.ClientStats()
                self._lib.client_stats(self._client, cs)
                for k in out:
                    out[k] = getattr(cs, k)
                out["last_error"] = cs.last_error.decode("utf-8", "replace")
            except Exception as e:
                self._error("stats", e)
        replays, recordings = self._graph_counts()
        out.update(enabled=self._lib is not None, steps=self._step, sampled=self._sampled,
                   errors=self._errors, graph_replays=replays, graph_recordings=recordings)
        return out

    def _graph_counts(self):
        """(sampled steps replayed as one CUDA graph, graphs recorded):
        _step_graph's counters, 0 where no GPU path ran."""
        steps = getattr(getattr(getattr(self, "_stats", None), "torch", None), "_steps", None)
        if steps is None:
            return self._final_graphs
        return steps.replays, steps.recorded

    def flush(self, timeout=CLOSE_TIMEOUT):
        """Waits (at most timeout seconds) until the daemon acknowledged
        everything; True when it did."""
        if not self._client or self._closed:
            return False
        timeout = _seconds(timeout, CLOSE_TIMEOUT)
        self._deliver_all(timeout)
        return self._lib.client_flush(self._client, int(timeout * 1000)) == 0

    def close(self, status="completed", timeout=None):
        """Ends the run (status: completed, crashed or interrupted), waits
        at most `timeout` seconds (default 2) for the daemon to acknowledge,
        and releases the hooks and the connection. Idempotent."""
        if self._closed:
            return
        timeout = _seconds(timeout, getattr(self, "_close_timeout", CLOSE_TIMEOUT))
        self._deliver_all(timeout)  # a sampled step still on its way from the GPU
        self._closed = True
        self._detach()
        if not self._client:
            return
        try:
            atexit.unregister(self._atexit)
            if not self._started:
                self._start()
            end = _lib.RunEnd()
            if status not in _END:
                log.warning("dnnfault: close(status=%r): not one of %s; the run ends as crashed",
                            status, ", ".join(_END))
            end.status = _END.get(status, _lib.END_CRASHED)
            end.step = max(self._step - 1, 0)
            for name, (bit, v) in self._last_epoch.items():
                setattr(end, name, v)
                end.has |= bit
            self._check("RunEnd", self._lib.client_run_end(self._client, self._stream, end))
            self._lib.client_flush(self._client, int(timeout * 1000))
        except Exception as e:
            self._error("close", e)
        finally:
            self._final_stats = None
            cs = _lib.ClientStats()
            self._lib.client_stats(self._client, cs)
            final = {k: getattr(cs, k) for k in ("queued", "sent", "acked", "dropped",
                                                  "rejected", "reconnects", "queue_bytes",
                                                  "queue_messages", "connected")}
            final["last_error"] = cs.last_error.decode("utf-8", "replace")
            self._lib.client_close(self._client, 0)
            self._client = None
            self._final_stats = final
            self._final_graphs = self._graph_counts()
            self._layers = []
            self._stats = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            status = "completed"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "crashed"
        self.close(status)
        return False

    def __repr__(self):
        return "<dnnfault.Monitor run=%r every=%d step=%d %s>" % (
            self.run, self.every, self._step, "enabled" if self.enabled else "disabled")


def _recorder(layer, reduce_now=None):
    """The forward hook of a layer: keeps its output for the sampled step,
    or hands it to reduce_now(output) at once (the C path)."""
    def hook(module, inputs, output):
        # Last call wins (a module used twice per forward); eval passes
        # under no_grad are ignored.
        if torch.is_grad_enabled():
            out = _describe.first_tensor(output)
            if out is not None:
                try:
                    if reduce_now is not None:
                        reduce_now(out)
                        return
                except Exception:  # never into the forward pass: keep it instead
                    pass
                layer.act = out.detach()
    return hook


def _atexit_closer(mon):
    ref = weakref.ref(mon)

    def closer():
        # A run nobody closed: deliver what is queued, but do not claim
        # how it ended (the daemon shows it as stale).
        m = ref()
        if m is not None and m._client and not m._closed:
            try:
                m._deliver_all(CLOSE_TIMEOUT)
            except Exception:  # exiting: the rest still goes out
                pass
            m._closed = True
            m._lib.client_close(m._client, int(CLOSE_TIMEOUT * 1000))
            m._client = None
    return closer


def _float_view(a):
    """A float32 numpy vector as a ctypes array over its memory, held by the
    struct it is assigned to. from_buffer rather than numpy's data_as,
    which leaves a reference cycle per call (bpo-12836) and so fed the
    garbage collector one per sampled step. Anything but a writable,
    contiguous float32 vector (none is made now) is copied into one first,
    where a bare pointer would have let C misread it."""
    a = numpy.require(a, numpy.float32, ["C", "W"])
    return (_lib.ctypes.c_float * len(a)).from_buffer(a)
