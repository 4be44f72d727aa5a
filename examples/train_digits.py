#!/usr/bin/env python3
"""Trains a small MLP on sklearn's digits while dnnfaultd watches it.

    PYTHONPATH=client/python DNNFAULT_LIBRARY=build/client/libdnnfault.so \
        /usr/bin/python3 examples/train_digits.py --run digits --fault lr_high

--fault lr_high multiplies the learning rate by 100, which dnnfaultctl status
should report as a faulty run. Runs in a few seconds on a CPU.
"""

import argparse
import json
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import dnnfault


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="train-digits")
    ap.add_argument("--epochs", type=int, default=10)
    # A demo samples densely; dnnfault.DEFAULT_EVERY is tuned for overhead.
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fault", choices=["lr_high"], default=None)
    ap.add_argument("--address", default=None, help="dnnfaultd address (default: $DNNFAULT_ADDRESS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", default=None,
                    help="an earlier healthy run of this program to compare with (its name or id)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    digits = load_digits()
    x_tr, x_va, y_tr, y_va = train_test_split(digits.data, digits.target, test_size=0.2,
                                              random_state=args.seed)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr = torch.tensor((x_tr - mean) / std, dtype=torch.float32)
    x_va = torch.tensor((x_va - mean) / std, dtype=torch.float32)
    y_tr, y_va = torch.tensor(y_tr), torch.tensor(y_va)

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    lr = args.lr * (100 if args.fault == "lr_high" else 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = len(x_tr) // args.batch_size
    labels = [args.fault] if args.fault else []

    with dnnfault.watch(model, opt, loss_fn, run=args.run, every=args.every, address=args.address,
                        tags={"example": "train_digits"}, epochs=args.epochs,
                        steps=args.epochs * steps_per_epoch, batch_size=args.batch_size,
                        dataset_size=len(x_tr), labels=labels, reference=args.reference) as mon:
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(len(x_tr))
            total, correct = 0.0, 0
            for i in range(steps_per_epoch):
                idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                opt.zero_grad()
                out = model(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                opt.step()
                mon.step(loss, output=out, target=yb, inputs=xb)
                total += loss.detach() * len(yb)  # summed on the device, read once per epoch
                correct += (out.argmax(1) == yb).sum()
            n = steps_per_epoch * args.batch_size
            train_loss, train_acc = float(total) / n, int(correct) / n
            model.eval()
            with torch.no_grad():
                out = model(x_va)
                val_loss = loss_fn(out, y_va).item()
                val_acc = (out.argmax(1) == y_va).float().mean().item()
            mon.epoch(train_loss=train_loss, train_metric=train_acc, val_loss=val_loss,
                      val_metric=val_acc)
            print("epoch %2d  train loss %.4f acc %.3f  val loss %.4f acc %.3f"
                  % (epoch, train_loss, train_acc, val_loss, val_acc))
    # The run ended with the block: the daemon analyses it once more; wait
    # (briefly) for the diagnosis that covers its last step.
    deadline = time.monotonic() + 10
    while True:
        diagnosis = mon.diagnosis()
        done = diagnosis is None or (diagnosis.get("diagnosed_step") is not None
                                     and diagnosis.get("diagnosed_step") == diagnosis.get("step"))
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    s = mon.stats()
    print("telemetry: %d steps sampled, %d messages acknowledged, %d dropped"
          % (s["sampled"], s["acked"], s["dropped"]))
    print("diagnosis:", json.dumps(diagnosis, indent=2) if diagnosis else
          "unavailable (is dnnfaultd running?)")


if __name__ == "__main__":
    main()
