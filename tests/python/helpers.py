"""A small real training job: an MLP on sklearn's digits."""

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
