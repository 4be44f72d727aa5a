"""What a run is: its layers, loss function, optimizer and task.

A layer is a module that owns parameters itself (recurse=False): Linear,
Conv*, BatchNorm*, LSTM, Embedding, LayerNorm, a custom module's own
nn.Parameter... in named_modules() order, so a module reachable under two
names (a shared module) is one layer, under its first name. A parameter
shared by two layers (tied weights) belongs to the first.

A layer's activation is the activation module that follows it among its
parent's children (registration order, which is execution order in
nn.Sequential), skipping Dropout, Identity and Flatten. When something else
follows it in an nn.Sequential, it has none ("none"); the last layer of the
model has "none"; any other layer "unknown" (its activation, if any, is
applied in forward() where a hook cannot see it).
"""

import os
import socket

import torch
from torch import nn

from . import _lib

ACTIVATIONS = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu",
    nn.RReLU: "rrelu", nn.ELU: "elu", nn.SELU: "selu", nn.CELU: "celu", nn.GELU: "gelu",
    nn.SiLU: "silu", nn.Mish: "mish", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax", nn.Softmin: "softmin",
    nn.Softplus: "softplus", nn.Softsign: "softsign", nn.Hardtanh: "hardtanh",
    nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish", nn.Tanhshrink: "tanhshrink",
    nn.LogSigmoid: "logsigmoid", nn.Threshold: "threshold", nn.GLU: "glu",
}
_TRANSPARENT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.FeatureAlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten) \
    if hasattr(nn, "Dropout1d") else (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                                      nn.FeatureAlphaDropout, nn.Identity, nn.Flatten,
                                      nn.Unflatten)

CLASSIFICATION_LOSSES = {
    "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MultiLabelSoftMarginLoss",
    "MultiMarginLoss", "MultiLabelMarginLoss", "cross_entropy", "nll_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits",
}
REGRESSION_LOSSES = {
    "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "mse_loss", "l1_loss", "smooth_l1_loss",
    "huber_loss", "GaussianNLLLoss", "PoissonNLLLoss",
}


def unwrap(model):
    """The model inside DataParallel / DistributedDataParallel."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def activation_name(module):
    for cls in type(module).__mro__:
        if cls in ACTIVATIONS:
            return ACTIVATIONS[cls]
    return None


def find_layers(model):
    """[(name, module, [(param_name, param)])] for every module owning
    parameters, each parameter listed once."""
    seen = set()
    layers = []
    for name, m in model.named_modules():
        params = []
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            params.append((pname, p))
        if params:
            layers.append((name or type(m).__name__, m, params))
    return layers


def _activations(model, layers):
    """Activation id of each layer, by the rule in the module docstring."""
    parent_of = {}
    for _, m in model.named_modules():
        for child_name, child in m.named_children():
            parent_of.setdefault(id(child), m)
    siblings = {}  # id(parent): (children, {id(child): position}), made once per parent
    out = []
    for i, (_, m, _) in enumerate(layers):
        last = i == len(layers) - 1
        parent = parent_of.get(id(m))
        act = None
        followed = False
        if parent is not None:
            if id(parent) not in siblings:
                children = list(parent.children())
                pos_of = {}
                for k, c in enumerate(children):
                    pos_of.setdefault(id(c), k)
                siblings[id(parent)] = (children, pos_of)
            children, pos_of = siblings[id(parent)]
            pos = pos_of.get(id(m), len(children))
            for k in range(pos + 1, len(children)):
                nxt = children[k]
                if isinstance(nxt, _TRANSPARENT):
                    continue
                act = activation_name(nxt)
                followed = act is None and isinstance(parent, nn.Sequential)
                break
        if act is None:
            act = "none" if (last or followed) else "unknown"
        out.append(act)
    return out


def _callable_name(fn):
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    if isinstance(fn, nn.Module):
        return type(fn).__name__
    return getattr(fn, "__name__", None) or type(fn).__name__


def _optimizer(optimizer):
    if optimizer is None:
        return None, []
    items = []
    groups = getattr(optimizer, "param_groups", None) or [{}]
    for k, v in groups[0].items():
        if k == "params" or v is None:
            continue
        if isinstance(v, (tuple, list)):
            if all(isinstance(x, (int, float)) for x in v):
                items.extend(("%s.%d" % (k, i), x) for i, x in enumerate(v))
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type == "cpu":
            v = v.item()
        if isinstance(v, (bool, int, float, str)):
            items.append((k, v))
    return type(optimizer).__name__, items


def distributed():
    """(rank, world_size) under torch.distributed, else (0, 1)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:
        pass
    return 0, 1


def describe(model, optimizer, loss_fn, layers):
    """The static part of RunStart (everything that needs no batch)."""
    rank, world = distributed()
    opt_name, opt_params = _optimizer(optimizer)
    acts = _activations(unwrap(model), layers)
    out_layers = []
    for (name, m, params), act in zip(layers, acts):
        out_layers.append({
            "name": name,
            "type": type(m).__name__,
            "activation": act,
            "param_count": sum(p.numel() for _, p in params),
            "trainable_count": sum(p.numel() for _, p in params if p.requires_grad),
            "params": [(pn, list(p.shape)) for pn, p in params],
        })
    return {
        "rank": rank, "world_size": world,
        "host": socket.gethostname(), "pid": os.getpid(),
        "framework": "pytorch", "framework_version": torch.__version__,
        "layers": out_layers,
        "loss_fn": _callable_name(loss_fn),
        "optimizer": opt_name, "optimizer_params": opt_params,
        "task": _lib.TASK_UNKNOWN,
    }


def infer_task(loss_name, output, target):
    """(task, num_classes) from the loss function and one batch; shapes and
    dtypes only, so nothing waits for the device. output and target may be
    tuples or dicts: their first tensor counts."""
    output, target = first_tensor(output), first_tensor(target)
    task = _lib.TASK_UNKNOWN
    int_target = isinstance(target, torch.Tensor) and not target.is_floating_point() \
        and not target.is_complex()
    if int_target or loss_name in CLASSIFICATION_LOSSES:
        task = _lib.TASK_CLASSIFICATION
    elif loss_name in REGRESSION_LOSSES:
        task = _lib.TASK_REGRESSION
    classes = 0
    if task == _lib.TASK_CLASSIFICATION and isinstance(output, torch.Tensor):
        dim = class_dim(output, target) if int_target else None
        if dim is not None:
            classes = output.shape[dim]
        elif output.dim() >= 2 and output.shape[1] > 1:
            classes = output.shape[1]
        else:
            classes = 2
    return task, int(classes)


def class_dim(output, target):
    """The dimension of output that holds the classes for an integer
    target: 1 where the target has the output's shape without it (torch's
    convention: [N, C] against [N], [N, C, T] against [N, T]), -1 where
    the classes come last ([N, T, V] against [N, T] or [N * T]), else None
    (one score per target: a binary output)."""
    if output.dim() >= 2 and output.shape[1] > 1 and \
            tuple(target.shape) == tuple(output.shape[:1]) + tuple(output.shape[2:]):
        return 1
    if output.dim() >= 2 and output.shape[-1] > 1 and \
            target.numel() * output.shape[-1] == output.numel():
        return -1
    return None


def batch_size_of(inputs, output, target):
    for x in (first_tensor(inputs), first_tensor(target), first_tensor(output)):
        if x is not None and x.dim() >= 1:
            return int(x.shape[0])
    return 0


def first_tensor(x, floating=False):
    """The first tensor in x (a tensor, or a list/tuple/dict of them); with
    floating, the first floating-point one (the inputs whose statistics are
    reported, past token ids or masks before them)."""
    if isinstance(x, torch.Tensor):
        return x if not floating or x.is_floating_point() else None
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for v in x:
            t = first_tensor(v, floating)
            if t is not None:
                return t
    return None
