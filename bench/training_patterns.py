#!/usr/bin/env python3
"""What dnnfaultd says about healthy runs that train in ways the corpus
does not, next to the faults they must not hide: a frozen first layer
(fine-tuning) against one missing from the optimizer; a first layer
unfrozen after 200 steps, or frozen after 200, against one unfrozen while
the optimizer was built without it; loss scaling that
skips the steps whose gradients overflowed (mixed precision, GradScaler's
arithmetic) against a scale that always overflows; learning-rate schedules
that warm up from 0, decay to 0 or restart; and a text-shaped model with a large
default-initialised embedding against one initialised far too large.
Trains a digits MLP (64-128-64-10, Adam 1e-3, 560 steps; the embedding
patterns read the digits as tokens) once per pattern and sampling interval
while a real dnnfaultd with the default bundle watches, and prints each
run's health, fault probability, symptoms and skipped steps.

    /usr/bin/python3 bench/training_patterns.py [--daemon PATH] [--every 1,50] [--patterns 0,5]

--daemon runs another build's dnnfaultd (e.g. an older one, to compare)."""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
os.environ.setdefault("DNNFAULT_LIBRARY", os.path.join(ROOT, "build", "client", "libdnnfault.so"))
import dnnfault  # noqa: E402
from helpers import Float16, LossScaler, batches, digits  # noqa: E402

STEPS = 560


class TokenNet(nn.Module):
    """The digits as 64 tokens each (a pixel's position and value hashed into
    a 100,000-word vocabulary), embedded, averaged and classified: a text
    model's shape on the same data."""

    VOCAB = 100000

    def __init__(self, init_std=None):
        super().__init__()
        self.emb = nn.Embedding(self.VOCAB, 64)
        if init_std is not None:
            nn.init.normal_(self.emb.weight, std=init_std)
        self.fc = nn.Linear(64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        values = ((x * 3).round().clamp(-8, 8) + 8).long()
        tokens = (torch.arange(64) * 17 + values) * 7919 % self.VOCAB
        return self.out(torch.relu(self.fc(self.emb(tokens).mean(1))))


def model_for(pattern):
    if pattern.startswith("embedding"):
        return TokenNet(init_std=10.0 if "std 10" in pattern else None)
    if pattern.startswith("scaled"):
        return nn.Sequential(nn.Linear(64, 128), Float16(), nn.ReLU(), nn.Linear(128, 64), Float16(),
                             nn.ReLU(), nn.Linear(64, 10), Float16())
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def train(pattern, every, address, run):
    torch.manual_seed(0)
    x, y = digits()
    model = model_for(pattern)
    params = list(model.parameters())
    if pattern == "frozen stem":
        model[0].requires_grad_(False)
        params = [p for p in params if p.requires_grad]
    elif pattern == "stem frozen for 200 steps, then unfrozen":
        model[0].requires_grad_(False)  # in the optimizer all along, as fine-tuning recipes do
    elif pattern == "stem frozen for 200 steps, then unfrozen, not in the optimizer":
        model[0].requires_grad_(False)
        params = [p for p in params if p.requires_grad]  # the bug: built from the trainable ones
    elif pattern == "stem not in the optimizer":
        params = [p for m in list(model)[1:] for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    schedule = {"warm-up from 0 (100 steps)": lambda t: min(1.0, t / 100),
                "cosine decay to 0": lambda t: 0.5 * (1 + math.cos(math.pi * t / STEPS)),
                "linear decay to 0": lambda t: 1 - t / STEPS,
                "cosine with warm restarts (every 100 steps)":
                    lambda t: 0.5 * (1 + math.cos(math.pi * (t % 100) / 100))}.get(pattern)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    loss_fn = nn.CrossEntropyLoss()
    scale = {"scaled from 2^30": 2.0 ** 30, "scaled, always overflowing": float("inf")}.get(pattern)
    scaler = LossScaler(scale, growth_interval=200) if scale is not None else None
    skipped = 0
    with dnnfault.watch(model, opt, loss_fn, run=run, every=every, address=address,
                        steps=STEPS, batch_size=32) as mon:
        for t, xb, yb in batches(x, y, 32, STEPS):
            if pattern.startswith(("stem frozen", "stem trained")) and t == 200:
                model[0].requires_grad_("unfrozen" in pattern)
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                skipped += not scaler.backward_and_step(loss, model, opt)
            mon.step(loss, output=out, target=yb, inputs=xb)
            if sched is not None:
                sched.step()
    return skipped


def final_status(ctl, address, run):
    for _ in range(300):
        s = json.loads(subprocess.run([ctl, "--address", address, "--json", "status", run],
                                      capture_output=True, text=True, check=True).stdout)["runs"][0]
        if s.get("diagnosed_step") == s.get("step"):
            return s
        time.sleep(0.1)
    raise SystemExit("run %s was not diagnosed to its end" % run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build", "daemon", "dnnfaultd"))
    ap.add_argument("--every", default="1,50")
    ap.add_argument("--patterns", default=None, help="indices into the list, e.g. 0,5")
    args = ap.parse_args()
    ctl = os.path.join(ROOT, "build", "client", "dnnfaultctl")
    patterns = ["plain", "frozen stem", "stem not in the optimizer", "scaled from 2^30",
                "scaled, always overflowing", "warm-up from 0 (100 steps)", "cosine decay to 0",
                "linear decay to 0", "embedding 100k x 64, default init",
                "embedding initialised with std 10", "cosine with warm restarts (every 100 steps)",
                "stem frozen for 200 steps, then unfrozen", "stem trained 200 steps, then frozen",
                "stem frozen for 200 steps, then unfrozen, not in the optimizer"]
    if args.patterns:
        patterns = [patterns[int(k)] for k in args.patterns.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        address = "unix:" + os.path.join(tmp, "s")
        with open(os.path.join(tmp, "log"), "wb") as log:
            daemon = subprocess.Popen([args.daemon, "--socket", os.path.join(tmp, "s"),
                                       "--db", os.path.join(tmp, "db")], stdout=log, stderr=log)
        try:
            for _ in range(200):
                if subprocess.run([ctl, "--address", address, "version"],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            print("| pattern | every | steps skipped by the loop | health | fault probability "
                  "| symptoms (first step, layer) | skipped_steps |")
            print("|---|---|---|---|---|---|---|")
            for every in [int(e) for e in args.every.split(",")]:
                for k, pattern in enumerate(patterns):
                    run = "pattern-%d-%d" % (k, every)
                    skipped = train(pattern, every, address, run)
                    s = final_status(ctl, address, run)
                    symptoms = ", ".join("%s@%s%s" % (x["id"], x["first_step"],
                                                      "[%s]" % x["layer"] if x["layer"] else "")
                                         for x in s["symptoms"]) or "-"
                    p = s.get("fault_probability")
                    print("| %s | %d | %d | %s | %s | %s | %s |" % (
                        pattern, every, skipped, s["health"], "%.2f" % p if p is not None else "-",
                        symptoms, "-" if s.get("skipped_steps") is None else s["skipped_steps"]))
        finally:
            daemon.terminate()
            daemon.wait()


if __name__ == "__main__":
    main()
