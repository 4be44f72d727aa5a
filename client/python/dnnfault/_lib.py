"""ctypes binding of libdnnfault's asynchronous client (dnnfault.h).

Only this module knows the C structs; they mirror dnnfault.h field for
field and must change with it. The library is found, in this order, through
$DNNFAULT_LIBRARY, the path meson wrote into _paths.py at install time, the
linker's search path (ctypes.util.find_library), and the soname. Only a
library of this soname is taken from the search path: another major
version lays its structs out differently.
"""

import ctypes
import ctypes.util
import json
import os

STATS_PER_LAYER = 16
F32, F64 = 1, 2  # enum dnnfault_span_dtype
FINISH_WORK = 18  # doubles of scratch per layer that dnnfault_finish needs

TASK_UNKNOWN, TASK_CLASSIFICATION, TASK_REGRESSION = 0, 1, 2
END_COMPLETED, END_CRASHED, END_INTERRUPTED = 1, 2, 3

HAS_LOSS = 1 << 0
HAS_ACCURACY = 1 << 1
HAS_LR = 1 << 2
HAS_INPUT = 1 << 3
HAS_TRAIN_LOSS = 1 << 4
HAS_TRAIN_METRIC = 1 << 5
HAS_VAL_LOSS = 1 << 6
HAS_VAL_METRIC = 1 << 7

_c_str = ctypes.c_char_p
_u64 = ctypes.c_uint64
_u32 = ctypes.c_uint32


class KV(ctypes.Structure):
    _fields_ = [("key", _c_str), ("value", _c_str), ("number", ctypes.c_double),
                ("has_number", ctypes.c_bool)]


class Shape(ctypes.Structure):
    _fields_ = [("name", _c_str), ("dims", ctypes.POINTER(_u64)), ("n_dims", ctypes.c_size_t)]


class Layer(ctypes.Structure):
    _fields_ = [("name", _c_str), ("type", _c_str), ("activation", _c_str),
                ("param_count", _u64), ("trainable_count", _u64), ("frozen", ctypes.c_bool),
                ("params", ctypes.POINTER(Shape)), ("n_params", ctypes.c_size_t)]


class RunInfo(ctypes.Structure):
    _fields_ = [("run_id", _c_str), ("run_name", _c_str),
                ("rank", _u32), ("world_size", _u32),
                ("host", _c_str), ("pid", _u32),
                ("framework", _c_str), ("framework_version", _c_str),
                ("task", ctypes.c_int), ("num_classes", _u32),
                ("layers", ctypes.POINTER(Layer)), ("n_layers", ctypes.c_size_t),
                ("loss_fn", _c_str), ("optimizer", _c_str),
                ("optimizer_params", ctypes.POINTER(KV)), ("n_optimizer_params", ctypes.c_size_t),
                ("batch_size", _u32), ("planned_epochs", _u32),
                ("planned_steps", _u64), ("dataset_size", _u64),
                ("tags", ctypes.POINTER(KV)), ("n_tags", ctypes.c_size_t),
                ("labels", ctypes.POINTER(_c_str)), ("n_labels", ctypes.c_size_t),
                ("labels_known", ctypes.c_bool), ("reference", _c_str)]


class Step(ctypes.Structure):
    _fields_ = [("step", _u64), ("time", ctypes.c_double), ("has", ctypes.c_uint),
                ("loss", ctypes.c_double), ("accuracy", ctypes.c_double), ("lr", ctypes.c_double),
                ("input_mean", ctypes.c_double), ("input_std", ctypes.c_double),
                ("input_min", ctypes.c_double), ("input_max", ctypes.c_double),
                ("layer_stats", ctypes.POINTER(ctypes.c_float)), ("n_layers", ctypes.c_size_t),
                ("dropped", _u64)]


class Epoch(ctypes.Structure):
    _fields_ = [("epoch", _u32), ("step", _u64), ("has", ctypes.c_uint),
                ("train_loss", ctypes.c_double), ("train_metric", ctypes.c_double),
                ("val_loss", ctypes.c_double), ("val_metric", ctypes.c_double)]


class RunEnd(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("step", _u64), ("has", ctypes.c_uint),
                ("train_loss", ctypes.c_double), ("train_metric", ctypes.c_double),
                ("val_loss", ctypes.c_double), ("val_metric", ctypes.c_double),
                ("dropped", _u64)]


class ClientOptions(ctypes.Structure):
    _fields_ = [("address", _c_str), ("token", _c_str), ("queue_bytes", ctypes.c_size_t),
                ("connect_timeout_ms", ctypes.c_int), ("backoff_initial_ms", ctypes.c_int),
                ("backoff_max_ms", ctypes.c_int)]


class ClientStats(ctypes.Structure):
    _fields_ = [("queued", _u64), ("sent", _u64), ("acked", _u64), ("dropped", _u64),
                ("rejected", _u64), ("reconnects", _u64), ("queue_bytes", _u64),
                ("queue_messages", _u64), ("connected", ctypes.c_bool),
                ("last_error", ctypes.c_char * 256)]


_P = ctypes.c_void_p
# name: (restype, argtypes); all are required except those in _OPTIONAL.
_SIGNATURES = {
    "dnnfault_version": (_c_str, []),
    "dnnfault_client_new": (_P, [ctypes.POINTER(ClientOptions)]),
    "dnnfault_client_run_start": (ctypes.c_int, [_P, ctypes.POINTER(RunInfo), ctypes.POINTER(_u64)]),
    "dnnfault_client_step": (ctypes.c_int, [_P, _u64, ctypes.POINTER(Step)]),
    "dnnfault_client_epoch": (ctypes.c_int, [_P, _u64, ctypes.POINTER(Epoch)]),
    "dnnfault_client_run_end": (ctypes.c_int, [_P, _u64, ctypes.POINTER(RunEnd)]),
    "dnnfault_client_flush": (ctypes.c_int, [_P, ctypes.c_int]),
    "dnnfault_client_stats": (None, [_P, ctypes.POINTER(ClientStats)]),
    "dnnfault_client_close": (None, [_P, ctypes.c_int]),
    "dnnfault_query_status": (ctypes.c_int, [_c_str, _c_str, _c_str, ctypes.c_int,
                                             ctypes.POINTER(ctypes.c_void_p)]),
    # (spans, n_spans, acc, n_rows): arrays passed by address (_host_stats).
    "dnnfault_reduce": (ctypes.c_int, [_P, ctypes.c_size_t, _P, ctypes.c_size_t]),
    # (raw, dtype, n_raw, records, n_records, layers, n_layers, work, out) (_stats).
    "dnnfault_finish": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_size_t, _P, ctypes.c_size_t,
                                       _P, ctypes.c_size_t, _P, _P]),
}
# A library older than the Python layer lacks these; the layer then does
# without (no status queries; statistics through torch; finishing in Python).
_OPTIONAL = {"dnnfault_query_status", "dnnfault_reduce", "dnnfault_finish"}


# The major version whose structs this module mirrors (client/meson.build).
SONAME = "libdnnfault.so.1"


class LibraryError(OSError):
    pass


def _candidates():
    env = os.environ.get("DNNFAULT_LIBRARY")
    if env:
        return [env]  # an explicit choice is not second-guessed
    out = []
    try:
        from . import _paths
        out.append(_paths.LIBRARY)
    except ImportError:
        pass
    found = ctypes.util.find_library("dnnfault")
    if found == SONAME:
        out.append(found)
    out.append(SONAME)
    return out


class Library:
    """The loaded shared library with typed functions as attributes."""

    def __init__(self, path=None):
        errors = []
        self.cdll = None
        for cand in [path] if path else _candidates():
            try:
                self.cdll = ctypes.CDLL(cand)
                self.path = cand
                break
            except OSError as e:
                errors.append(str(e))
        if self.cdll is None:
            raise LibraryError("cannot load libdnnfault: " + "; ".join(errors))
        missing = []
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(self.cdll, name)
            except AttributeError:
                if name not in _OPTIONAL:
                    missing.append(name)
                setattr(self, name[len("dnnfault_"):], None)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name[len("dnnfault_"):], fn)
        if missing:
            raise LibraryError("%s lacks %s (too old?)" % (self.path, ", ".join(missing)))

    def library_version(self):
        v = self.version()
        return v.decode() if v else None

    def status(self, address, run, timeout_ms):
        """The run's object of the daemon's status JSON (a dict), or None
        when the daemon is unreachable or does not know the run."""
        if self.query_status is None:
            return None
        out = ctypes.c_void_p()
        rv = self.query_status(_b(address), None, _b(run), int(timeout_ms), ctypes.byref(out))
        if rv < 0 or not out.value:
            return None
        try:
            text = ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            _libc_free(out)
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else None


_libc_free = ctypes.CDLL(None).free
_libc_free.argtypes = [ctypes.c_void_p]
_libc_free.restype = None


_loaded = None
_load_error = None


def load():
    """The process-wide Library; raises LibraryError (cached) when it
    cannot be loaded."""
    global _loaded, _load_error
    if _loaded is None and _load_error is None:
        try:
            _loaded = Library()
        except LibraryError as e:
            _load_error = e
    if _loaded is None:
        raise _load_error
    return _loaded


def _b(s):
    if s is None:
        return None
    return s.encode("utf-8", "replace") if isinstance(s, str) else bytes(s)


def kv_array(items, keep):
    """A KV array from (key, value) pairs: numbers (bool included) go in
    `number`, everything else in `value` as text. `keep` collects the
    Python objects that must outlive the C call."""
    arr = (KV * max(len(items), 1))()
    for i, (k, v) in enumerate(items):
        kb = _b(str(k))
        keep.append(kb)
        arr[i].key = kb
        if isinstance(v, (bool, int, float)):
            arr[i].number = float(v)
            arr[i].has_number = True
            arr[i].value = None
        else:
            vb = _b(str(v))
            keep.append(vb)
            arr[i].value = vb
    keep.append(arr)
    return arr, len(items)


def run_info(desc, keep):
    """A RunInfo from the description dict built by _describe.describe."""
    info = RunInfo()
    layers = desc["layers"]
    larr = (Layer * max(len(layers), 1))()
    for i, l in enumerate(layers):
        shapes = (Shape * max(len(l["params"]), 1))()
        for j, (pname, dims) in enumerate(l["params"]):
            d = (_u64 * max(len(dims), 1))(*dims)
            nb = _b(pname)
            keep.extend((d, nb))
            shapes[j].name = nb
            shapes[j].dims = d
            shapes[j].n_dims = len(dims)
        keep.append(shapes)
        strs = [_b(l["name"]), _b(l["type"]), _b(l["activation"])]
        keep.extend(strs)
        larr[i].name, larr[i].type, larr[i].activation = strs
        larr[i].param_count = l["param_count"]
        larr[i].trainable_count = l["trainable_count"]
        larr[i].frozen = l["param_count"] > 0 and l["trainable_count"] == 0
        larr[i].params = shapes
        larr[i].n_params = len(l["params"])
    keep.append(larr)
    info.layers, info.n_layers = larr, len(layers)
    for field in ("run_id", "run_name", "host", "framework", "framework_version",
                  "loss_fn", "optimizer", "reference"):
        v = _b(desc.get(field))
        keep.append(v)
        setattr(info, field, v)
    for field in ("rank", "world_size", "pid", "num_classes", "batch_size",
                  "planned_epochs", "planned_steps", "dataset_size"):
        setattr(info, field, int(desc.get(field) or 0))
    info.task = desc.get("task", TASK_UNKNOWN)
    info.optimizer_params, info.n_optimizer_params = kv_array(desc.get("optimizer_params", []), keep)
    info.tags, info.n_tags = kv_array(desc.get("tags", []), keep)
    labels = desc.get("labels")
    if labels is not None:
        lb = [_b(x) for x in labels]
        arr = (_c_str * max(len(lb), 1))(*lb)
        keep.extend(lb)
        keep.append(arr)
        info.labels, info.n_labels, info.labels_known = arr, len(lb), True
    return info


def client_options(address, queue_bytes, keep):
    o = ClientOptions()
    a = _b(address)
    keep.append(a)
    o.address = a
    o.queue_bytes = int(queue_bytes or 0)
    return o
