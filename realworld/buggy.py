"""Buggy training programs written the way users write them, for the field
test of docs/evaluation.md (realworld/run.py).

Nothing here comes from the corpus: four base programs on data sets and
architectures the corpus does not have (sklearn's Gaussian quantiles and
Hastie's 10-2 problem, synthetic bar images for a CNN with pooling, the
swiss roll as a regression), each written as a plain training script, and
bugs written into them the way they appear in user code (a functional
softmax inside forward(), a typo in the learning rate, labels shuffled apart
from their inputs, ...), not through the corpus's mutation operators. Each
case names the causes of docs/design's table that a correct diagnosis would
give; every base program also runs unchanged, for false alarms.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import datasets
from torch import nn

import dnnfault

# --------------------------------------------------------------------------
# data


def _split(x, y, seed, valid=0.2):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(len(x) * (1 - valid))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _standardize(train, *others):
    mean, std = train.mean(0), train.std(0) + 1e-8
    return [(a - mean) / std for a in (train,) + others]


def quantiles(seed):
    x, y = datasets.make_gaussian_quantiles(n_samples=3000, n_features=6, n_classes=3,
                                            random_state=100 + seed)
    xtr, ytr, xva, yva = _split(x, y, seed)
    xtr, xva = _standardize(xtr, xva)
    return xtr, ytr, xva, yva


def hastie(seed):
    x, y = datasets.make_hastie_10_2(n_samples=4000, random_state=200 + seed)
    y = (y > 0).astype(np.int64)
    return _split(x, y, seed)      # already standard normal features


def bars(seed):
    """16x16 grey images, 8-bit like a PNG: a horizontal, vertical or
    diagonal bar at a random place, on noise."""
    rng = np.random.default_rng(300 + seed)
    n = 2400
    y = rng.integers(0, 3, n)
    img = rng.normal(60, 25, (n, 16, 16))
    for i in range(n):
        k = rng.integers(2, 14)
        if y[i] == 0:
            img[i, k - 1:k + 1, :] += 140
        elif y[i] == 1:
            img[i, :, k - 1:k + 1] += 140
        else:
            d = np.arange(16)
            shift = rng.integers(-5, 6)
            keep = (d + shift >= 0) & (d + shift < 16)
            img[i, d[keep], (d + shift)[keep]] += 140
    x = np.clip(img, 0, 255).astype(np.uint8)[:, None, :, :]
    return _split(x, y, seed)


def swiss_roll(seed):
    """The roll's position t (about 4.7 to 14.1) from its 3-d points."""
    x, t = datasets.make_swiss_roll(n_samples=3000, noise=0.3, random_state=400 + seed)
    xtr, ytr, xva, yva = _split(x, t, seed)
    xtr, xva = _standardize(xtr, xva)
    return xtr, ytr, xva, yva


# --------------------------------------------------------------------------
# models


class QuantileNet(nn.Module):
    def __init__(self, softmax_in_forward=False, hidden=2, act=nn.ReLU, relu_on_logits=False):
        super().__init__()
        layers, width = [], 6
        for _ in range(hidden):
            layers += [nn.Linear(width, 64), act()]
            width = 64
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 3)
        self.softmax_in_forward = softmax_in_forward
        self.relu_on_logits = relu_on_logits

    def forward(self, x):
        out = self.head(self.body(x))
        if self.softmax_in_forward:          # the bug: probabilities into CrossEntropyLoss
            out = F.softmax(out, dim=1)
        if self.relu_on_logits:              # the bug: "the scores must be positive"
            out = F.relu(out)
        return out


class BarsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def mlp(inputs, outputs, last=None, dropout=0.0):
    layers = [nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
              nn.Linear(64, outputs)]
    if dropout:
        layers.insert(4, nn.Dropout(dropout))
        layers.insert(2, nn.Dropout(dropout))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------
# the cases: (program, bug) -> everything one training needs


def _zero_init(model):
    """A 'reset' helper that zeroes every Linear layer instead of re-drawing it."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _init_large(model):
    """Every weight drawn from N(0, 3^2), 'to break symmetry'."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=3.0)
    return model


def _init_normal(model):
    """Conv and linear weights from N(0, 1), as a port of old code did."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=1.0)
    return model


def setup(program, bug, seed):
    """Returns a dict: data (4 float/long tensors), model, optimizer, loss_fn,
    batch, epochs, task ('classification' or 'regression')."""
    torch.manual_seed(seed)
    s = dict(batch=64, epochs=30, task="classification", scale=1.0)
    if program == "quantiles":
        data = quantiles(seed)
        if bug == "sigmoid_deep":
            model = QuantileNet(hidden=8, act=nn.Sigmoid)
        else:
            model = QuantileNet(softmax_in_forward=bug == "softmax_in_forward",
                                relu_on_logits=bug == "relu_on_logits")
        if bug == "zero_init":
            _zero_init(model)
        if bug == "init_large":
            _init_large(model)
        if bug == "labels_encoded_apart":
            # class ids of the training file encoded in another order than the validation file's
            xtr, ytr, xva, yva = data
            data = (xtr, (ytr + 1) % 3, xva, yva)
        lr = {"lr_typo": 1.0}.get(bug, 1e-3)
        s.update(model=model, loss_fn=nn.NLLLoss() if bug == "nll_on_logits"
                 else nn.CrossEntropyLoss())
        s["optimizer"] = torch.optim.Adam(model.parameters(), lr=lr)
        if bug == "scheduler_per_batch":
            # an epoch-wise decay stepped after every batch: the rate is gone in a few epochs
            s["scheduler"] = torch.optim.lr_scheduler.ExponentialLR(s["optimizer"], gamma=0.95)
        if bug == "early_stop_patience0":
            s["patience"] = 0       # stops at the first epoch whose validation loss is not the best
        if bug == "feature_in_other_unit":
            # a column added after the scaler was fitted, in grams instead of kilograms
            xtr, ytr, xva, yva = data
            xtr, xva = xtr.copy(), xva.copy()
            xtr[:, 0] *= 1000
            xva[:, 0] *= 1000
            data = (xtr, ytr, xva, yva)
    elif program == "hastie":
        data = hastie(seed)
        if bug == "labels_flipped":
            # the training file's classes written as 1 = negative, 0 = positive
            xtr, ytr, xva, yva = data
            data = (xtr, 1 - ytr, xva, yva)
        model = mlp(10, 1, dropout=0.8 if bug == "dropout_heavy" else 0.0)
        lr = {"lr_from_finetuning": 1e-5}.get(bug, 0.05)
        wd = {"weight_decay_typo": 0.5}.get(bug, 5e-4)
        s.update(model=model, loss_fn=nn.MSELoss() if bug == "mse_on_logits"
                 else nn.BCEWithLogitsLoss(), epochs=25)
        s["optimizer"] = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                         weight_decay=wd)
        if bug == "adam_weight_decay":
            # switched to Adam with an L2 weight of 0.1 "as the paper had it" (for AdamW)
            s["optimizer"] = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.1)
        if bug == "full_batch":
            s["batch"] = len(data[0])
    elif program == "bars":
        data = bars(seed)
        if bug != "pixels_unscaled":
            s["scale"] = 1 / 255.0
        if bug == "labels_shuffled_apart":
            # the training labels were shuffled with another permutation than the images
            xtr, ytr, xva, yva = data
            data = (xtr, ytr[np.random.default_rng(seed).permutation(len(ytr))], xva, yva)
        if bug == "label_noise":
            # 40% of the training labels from a careless annotator: any class
            xtr, ytr, xva, yva = data
            rng = np.random.default_rng(seed)
            ytr = ytr.copy()
            wrong = rng.random(len(ytr)) < 0.4
            ytr[wrong] = rng.integers(0, 3, wrong.sum())
            data = (xtr, ytr, xva, yva)
        model = BarsNet()
        if bug == "init_normal_std1":
            _init_normal(model)
        s.update(model=model, loss_fn=nn.CrossEntropyLoss(), epochs=15)
        s["optimizer"] = torch.optim.Adam(model.parameters(), lr=1e-3)
        if bug == "debug_epochs_left":
            s["epochs"] = 1
    elif program == "swiss_roll":
        data = swiss_roll(seed)
        if bug == "targets_shuffled":
            # targets sorted by file name, points by row id
            xtr, ytr, xva, yva = data
            data = (xtr, ytr[np.random.default_rng(seed).permutation(len(ytr))], xva, yva)
        last = {"sigmoid_output": nn.Sigmoid(), "tanh_output": nn.Tanh()}.get(bug)
        model = mlp(3, 1, last=last)
        s.update(model=model, loss_fn=nn.MSELoss(), task="regression")
        if bug == "sgd_lr_high":
            s["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.5)
        elif bug == "momentum_too_high":
            s["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.999)
        else:
            s["optimizer"] = torch.optim.Adam(model.parameters(), lr=3e-3)
    else:
        raise ValueError("unknown program %r" % program)
    xtr, ytr, xva, yva = data
    s["data"] = (torch.tensor(xtr * s["scale"], dtype=torch.float32),
                 torch.tensor(ytr, dtype=torch.float32 if s["task"] == "regression"
                              else torch.long),
                 torch.tensor(xva * s["scale"], dtype=torch.float32),
                 torch.tensor(yva, dtype=torch.float32 if s["task"] == "regression"
                              else torch.long))
    return s


# program, bug, the causes a right diagnosis names (design.md's ids)
CASES = [
    ("quantiles", None, []),
    ("quantiles", "softmax_in_forward", ["loss"]),
    ("quantiles", "lr_typo", ["lr_high"]),
    ("quantiles", "zero_init", ["init"]),
    ("quantiles", "sigmoid_deep", ["activation"]),
    ("quantiles", "init_large", ["init"]),
    ("quantiles", "nll_on_logits", ["loss"]),
    ("quantiles", "scheduler_per_batch", ["lr_low"]),
    ("quantiles", "labels_encoded_apart", ["labels"]),
    ("quantiles", "relu_on_logits", ["activation"]),
    ("quantiles", "early_stop_patience0", ["epochs"]),
    ("quantiles", "feature_in_other_unit", ["data"]),
    ("hastie", None, []),
    ("hastie", "lr_from_finetuning", ["lr_low"]),
    ("hastie", "weight_decay_typo", ["regularization"]),
    ("hastie", "full_batch", ["batch_size"]),
    ("hastie", "dropout_heavy", ["regularization"]),
    ("hastie", "mse_on_logits", ["loss"]),
    ("hastie", "adam_weight_decay", ["regularization"]),
    ("hastie", "labels_flipped", ["labels"]),
    ("bars", None, []),
    ("bars", "pixels_unscaled", ["data"]),
    ("bars", "labels_shuffled_apart", ["labels"]),
    ("bars", "debug_epochs_left", ["epochs"]),
    ("bars", "label_noise", ["labels"]),
    ("bars", "init_normal_std1", ["init"]),
    ("swiss_roll", None, []),
    ("swiss_roll", "sigmoid_output", ["activation"]),
    ("swiss_roll", "sgd_lr_high", ["lr_high"]),
    ("swiss_roll", "momentum_too_high", ["optimizer"]),
    ("swiss_roll", "tanh_output", ["activation"]),
    ("swiss_roll", "targets_shuffled", ["labels"]),
]


def _metric(task, out, y):
    if task == "regression":
        return float(1 - F.mse_loss(out.squeeze(1), y) / torch.var(y, unbiased=False))
    if out.shape[1] == 1:
        return float(((out.squeeze(1) > 0).long() == y).float().mean())
    return float((out.argmax(1) == y).float().mean())


def _target(s, y, out):
    if out.shape[1] == 1:                 # (N, 1) outputs: BCE logits or a regression
        return y.float().unsqueeze(1)
    return y


def train(program, bug, seed, run, address=None, every=10, reference=None):
    """Trains one case as its script would, watched by dnnfault (compared
    with the run named `reference`, if any); returns the final validation
    metric (accuracy, or R^2 for the regression)."""
    s = setup(program, bug, seed)
    xtr, ytr, xva, yva = s["data"]
    model, opt, loss_fn = s["model"], s["optimizer"], s["loss_fn"]
    g = torch.Generator().manual_seed(seed)
    val_metric = float("nan")
    best_val, bad_epochs = float("inf"), 0
    with dnnfault.watch(model, opt, loss_fn, run=run, every=every, address=address,
                        reference=reference, epochs=s["epochs"], dataset_size=len(xtr)) as mon:
        for _ in range(s["epochs"]):
            model.train()
            order = torch.randperm(len(xtr), generator=g)
            total, seen = 0.0, 0
            for i in range(0, len(xtr), s["batch"]):
                idx = order[i:i + s["batch"]]
                x, y = xtr[idx], ytr[idx]
                opt.zero_grad()
                out = model(x)
                loss = loss_fn(out, _target(s, y, out))
                loss.backward()
                opt.step()
                if "scheduler" in s:
                    s["scheduler"].step()
                mon.step(loss, output=out, target=y, inputs=x)
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            model.eval()
            with torch.no_grad():
                out_tr, out_va = model(xtr), model(xva)
                val_loss = float(loss_fn(out_va, _target(s, yva, out_va)))
                train_metric = _metric(s["task"], out_tr, ytr)
                val_metric = _metric(s["task"], out_va, yva)
            mon.epoch(train_loss=total / seen, train_metric=train_metric, val_loss=val_loss,
                      val_metric=val_metric)
            if not math.isfinite(total):
                break
            if "patience" in s:                   # early stopping, as the script has it
                if math.isfinite(val_loss) and val_loss < best_val:
                    best_val, bad_epochs = val_loss, 0
                else:
                    bad_epochs += 1
                    if bad_epochs > s["patience"]:
                        break
    return val_metric if math.isfinite(val_metric) else float("nan")
