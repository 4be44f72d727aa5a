"""Trains one corpus config with one seed while dnnfault watches it.

Every corpus run goes through the real client (dnnfault.watch) into a real
dnnfaultd, so the corpus is an ordinary dnnfault store.
"""

import math
import time

import torch
import torch.nn.functional as F

import dnnfault
import programs

# Long configurations (batch size 1) are capped so that one run stays within
# seconds; the cap keeps at least 3 epochs' worth of steps.
MAX_STEPS = 3000
SAMPLES_PER_RUN = 100


def loss_function(config):
    """The loss module, as a user's program would write it. The faulty ones
    are standard losses in the wrong place (their probabilities come from
    the model's softmax, programs.PROBABILITY_LOSSES); _target() shapes the
    labels the way such a program would have to."""
    kind, task, classes = config["loss"], config["task"], config["classes"]
    if kind == "default":
        if task == "regression":
            return torch.nn.MSELoss()
        return torch.nn.BCEWithLogitsLoss() if classes == 1 else torch.nn.CrossEntropyLoss()
    losses = {
        "mse_probs": torch.nn.MSELoss,               # MSE on class probabilities
        "double_softmax": torch.nn.CrossEntropyLoss,  # softmax before CrossEntropyLoss
        "nll_logits": torch.nn.NLLLoss,              # NLLLoss without log_softmax
        "mse_logits": torch.nn.MSELoss,              # regression loss on a binary classifier
        "bce_regression": torch.nn.BCEWithLogitsLoss,  # classification loss on regression targets
    }
    if kind not in losses:
        raise ValueError("unknown loss %r" % kind)
    return losses[kind]()


def _target(config, y):
    """The labels in the shape and type the loss takes."""
    if config["task"] == "regression":
        return y.unsqueeze(1)            # (N, 1) like the output
    if config["loss"] == "mse_probs":
        return F.one_hot(y, config["classes"]).float()
    if config["classes"] == 1:
        return y.float().unsqueeze(1)    # BCE-with-logits or MSE on the (N, 1) logit
    return y


def metric(config, out, y):
    """Accuracy for classification, R^2 for regression (higher is better)."""
    with torch.no_grad():
        if config["task"] == "regression":
            var = torch.var(y, unbiased=False)
            return float(1 - F.mse_loss(out.squeeze(1), y) / var)
        if config["classes"] == 1:
            return float(((out.squeeze(1) > 0).long() == y).float().mean())
        return float((out.argmax(1) == y).float().mean())


def training_labels(config, ytr, seed):
    """The training labels as the program's label faults leave them:
    noise (a share replaced by random classes), another encoding of the
    class ids, a share shuffled apart from their inputs."""
    if config["label_noise"] > 0 and config["task"] == "classification":
        g = torch.Generator().manual_seed(seed + 7)
        n = len(ytr)
        idx = torch.randperm(n, generator=g)[: int(config["label_noise"] * n)]
        classes = max(2, config["classes"])
        ytr = ytr.clone()
        ytr[idx] = torch.randint(0, classes, (len(idx),), generator=g)
    if config["label_map"] is not None:
        ytr = torch.tensor(config["label_map"])[ytr]
    if config["label_shuffle"] > 0:
        g = torch.Generator().manual_seed(seed + 11)
        idx = torch.randperm(len(ytr), generator=g)[: int(config["label_shuffle"] * len(ytr))]
        ytr = ytr.clone()
        ytr[idx] = ytr[idx[torch.randperm(len(idx), generator=g)]]
    return ytr


def train(config, seed, name, address=None, labels=None):
    """Trains and returns {metric, diverged, run_id, steps, seconds}."""
    torch.manual_seed(seed)
    xtr, ytr, xva, yva = programs.load_data(config)
    ytr = training_labels(config, ytr, seed)
    model = programs.build_model(config, xtr[0].numel())
    optimizer = programs.build_optimizer(config, model.parameters())
    loss_fn = loss_function(config)
    batch = max(1, min(int(config["batch_size"]), len(xtr)))
    per_epoch = math.ceil(len(xtr) / batch)
    epochs = int(config["epochs"])
    if per_epoch * epochs > MAX_STEPS:
        epochs = max(3, MAX_STEPS // per_epoch)
    total = per_epoch * epochs
    every = max(1, total // SAMPLES_PER_RUN)
    g = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    diverged = False
    with dnnfault.watch(model, optimizer, loss_fn, run=name, every=every, address=address,
                        epochs=epochs, steps=total, batch_size=batch, dataset_size=len(xtr),
                        task=config["task"],
                        num_classes=config["classes"] if config["classes"] > 1 else 2,
                        labels=labels, tags={"corpus": "1"}) as mon:
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(xtr), generator=g)
            total_loss, seen = 0.0, 0
            for i in range(0, len(xtr), batch):
                idx = order[i:i + batch]
                x, y = xtr[idx], ytr[idx]
                optimizer.zero_grad()
                out = model(x)
                loss = loss_fn(out, _target(config, y))
                loss.backward()
                optimizer.step()
                mon.step(loss, output=out, target=y, inputs=x)
                total_loss += float(loss.detach()) * len(idx)
                seen += len(idx)
            model.eval()
            with torch.no_grad():
                out_tr, out_va = model(xtr), model(xva)
                val_loss = float(loss_fn(out_va, _target(config, yva)))
                train_metric, val_metric = metric(config, out_tr, ytr), metric(config, out_va, yva)
            train_loss = total_loss / max(1, seen)
            mon.epoch(train_loss=train_loss, train_metric=train_metric, val_loss=val_loss,
                      val_metric=val_metric)
            if not math.isfinite(train_loss) or not math.isfinite(val_loss):
                diverged = True
                break
        run_id = mon.run_id
    if not math.isfinite(val_metric):
        diverged = True
    return dict(metric=val_metric if math.isfinite(val_metric) else float("nan"),
                diverged=diverged, run_id=run_id, steps=total,
                seconds=round(time.monotonic() - start, 3))
