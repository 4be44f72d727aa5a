"""A small real training job: an MLP on sklearn's digits; and loss scaling
as mixed precision does it, on any device."""

import time

import torch
from torch import nn


def digits(n=None):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(d.target, dtype=torch.long)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y


def mlp(hidden=32):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, 10))


def batches(x, y, batch, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    t = 0
    while t < steps:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch + 1, batch):
            if t >= steps:
                return
            idx = perm[i:i + batch]
            yield t, x[idx], y[idx]
            t += 1


def train(model, opt, mon, steps, batch=64, on_step=None, loss_fn=None, seed=0, x=None, y=None):
    """Trains for `steps` steps; returns the longest step in seconds
    (forward, backward, optimizer step and mon.step)."""
    if x is None:
        x, y = digits()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    longest = 0.0
    for t, xb, yb in batches(x, y, batch, steps, seed):
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model(xb)
        # DataParallel on a machine with a GPU returns the output there.
        loss = loss_fn(out, yb.to(out.device))
        loss.backward()
        opt.step()
        mon.step(loss, output=out, target=yb, inputs=xb)
        longest = max(longest, time.perf_counter() - t0)
        if on_step is not None:
            on_step(t, model, out, loss)
    return longest


class Float16(nn.Module):
    """float16 storage of an activation, so that its gradient is rounded to
    float16 too and overflows as under autocast, on any device."""

    def forward(self, x):
        return x.half().float()


class LossScaler:
    """GradScaler's arithmetic: the loss is multiplied by `scale`; a step
    whose gradients overflow is skipped and the scale halved, otherwise the
    gradients are unscaled and applied, and the scale doubles after every
    `growth_interval` applied steps."""

    def __init__(self, scale, growth_interval):
        self.scale = scale
        self.growth_interval = growth_interval
        self.good = 0

    def backward_and_step(self, loss, model, opt):
        """Returns whether the optimizer stepped."""
        (loss * self.scale).backward()
        grads = [p.grad for p in model.parameters()]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            self.scale /= 2
            return False
        for g in grads:
            g.div_(self.scale)
        opt.step()
        self.good += 1
        if self.good % self.growth_interval == 0:
            self.scale *= 2
        return True
