"""Mutation operators: each injects one root cause of design.md into a base
config, in the spirit of DeepCrime's operators. Strengths are drawn from
ranges by the caller's random generator, so that mutants of one operator
differ; an operator may not apply to every program (`applies`)."""

import math

CAUSES = ["lr_high", "lr_low", "loss", "activation", "init", "optimizer", "epochs",
          "batch_size", "data", "labels", "regularization"]


def _log_uniform(rng, lo, hi):
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _classification(c):
    return c["task"] == "classification"


def _multiclass(c):
    return _classification(c) and c["classes"] > 1


class Operator:
    """since: the first plan seed (generate.py --seed) that may draw the
    operator. Operators added to a grown corpus only apply from the seed
    they came with, so that the earlier seeds' plans, and the committed
    manifests, come out as they did."""

    def __init__(self, name, cause, apply, applies=lambda c: True, since=1):
        self.name, self.cause, self._apply, self.applies = name, cause, apply, applies
        self.since = since

    def __call__(self, config, rng):
        """Changes config in place; returns a description of the strength."""
        return self._apply(config, rng)


def lr_scale(lo, hi):
    def apply(c, rng):
        f = _log_uniform(rng, lo, hi)
        c["lr"] *= f
        return {"lr_factor": round(f, 6)}
    return apply


def set_loss(kind):
    def apply(c, rng):
        c["loss"] = kind
        return {"loss": kind}
    return apply


def hidden_activation(name):
    def apply(c, rng):
        c["activation"] = name
        return {"activation": name}
    return apply


def output_activation(name):
    def apply(c, rng):
        c["output_activation"] = name
        return {"output_activation": name}
    return apply


def init_scheme(scheme, lo=None, hi=None):
    def apply(c, rng):
        c["init"] = scheme
        if lo is not None:
            c["init_scale"] = _log_uniform(rng, lo, hi)
        return {"init": scheme, "scale": round(c["init_scale"], 6)}
    return apply


def swap_optimizer(c, rng):
    # Plain SGD at the original's learning rate: far too slow for programs
    # tuned for adaptive optimizers, and without their momentum for the others.
    old = c["optimizer"]
    c["optimizer"], c["momentum"] = "sgd", 0.0
    if old == "sgd":
        c["optimizer"] = "adagrad"
        c["lr"] *= _log_uniform(rng, 1e-3, 1e-2)
    return {"optimizer": c["optimizer"], "was": old}


def bad_momentum(c, rng):
    m = rng.uniform(0.995, 0.9999)
    if c["optimizer"] == "adam":
        c["betas"] = (m, c["betas"][1])
    else:
        if c["optimizer"] not in ("sgd", "rmsprop"):
            c["optimizer"] = "sgd"
        c["momentum"] = m
    return {"momentum": round(m, 5)}


def adam_bad_betas(c, rng):
    c["optimizer"] = "adam"
    c["betas"] = (rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.3))
    c["lr"] = max(c["lr"], 0.01) * _log_uniform(rng, 1, 10)
    return {"betas": [round(b, 4) for b in c["betas"]], "lr": round(c["lr"], 6)}


def cut_epochs(c, rng):
    f = rng.uniform(0.05, 0.2)
    c["epochs"] = max(1, int(round(c["epochs"] * f)))
    return {"epochs": c["epochs"]}


def batch_one(c, rng):
    c["batch_size"] = 1
    return {"batch_size": 1}


def batch_all(c, rng):
    c["batch_size"] = 10 ** 9      # clipped to the training set by train.py
    return {"batch_size": "all"}


def no_normalization(c, rng):
    c["normalize"] = False
    return {"normalize": False}


def scale_inputs(c, rng):
    f = _log_uniform(rng, 30, 1000)
    c["input_scale"] = f
    return {"input_scale": round(f, 3)}


def noisy_labels(c, rng):
    share = rng.uniform(0.3, 0.9)
    c["label_noise"] = share
    return {"label_noise": round(share, 3)}


def recoded_labels(c, rng):
    """The training file's class ids in another order than the validation
    file's (two label encoders fitted apart): a derangement of 2 or more of
    the classes; for one logit, 0 and 1 swapped."""
    classes = max(2, c["classes"])
    moved = sorted(rng.sample(range(classes), rng.randint(2, classes)))
    target = moved[1:] + moved[:1]              # a cycle: no moved class keeps its id
    label_map = list(range(classes))
    for a, b in zip(moved, target):
        label_map[a] = b
    c["label_map"] = label_map
    return {"label_map": label_map}


def shuffled_labels(c, rng):
    """Labels (targets, for a regression) shuffled apart from their inputs
    on a share of the training set: the inputs and the labels were permuted
    with different orders. Unlike random noise, the labels' distribution
    is kept."""
    share = rng.uniform(0.5, 1.0)
    c["label_shuffle"] = share
    return {"label_shuffle": round(share, 3)}


def heavy_dropout(c, rng):
    p = rng.uniform(0.6, 0.9)
    c["dropout"] = p
    return {"dropout": round(p, 3)}


def heavy_weight_decay(c, rng):
    wd = _log_uniform(rng, 0.05, 1.0)
    c["weight_decay"] = wd
    return {"weight_decay": round(wd, 5)}


def _has_hidden_stack(c):
    return c["model"] in ("mlp", "cnn", "cnn1d", "resnet")


def _not_tanh(c):
    return _has_hidden_stack(c) and c["activation"] != "tanh"


OPERATORS = [
    Operator("lr_raise", "lr_high", lr_scale(10, 1000)),
    Operator("lr_lower", "lr_low", lr_scale(1e-4, 1e-2)),
    Operator("loss_mse_probs", "loss", set_loss("mse_probs"), _multiclass),
    Operator("loss_double_softmax", "loss", set_loss("double_softmax"), _multiclass),
    Operator("loss_nll_logits", "loss", set_loss("nll_logits"), _multiclass),
    Operator("loss_mse_logits", "loss", set_loss("mse_logits"),
             lambda c: _classification(c) and c["classes"] == 1),
    Operator("loss_bce_regression", "loss", set_loss("bce_regression"),
             lambda c: c["task"] == "regression"),
    Operator("act_sigmoid_hidden", "activation", hidden_activation("sigmoid"),
             lambda c: _has_hidden_stack(c) and len(c["hidden"]) >= 2),
    Operator("act_remove_hidden", "activation", hidden_activation("identity"), _has_hidden_stack),
    Operator("act_tanh_to_relu", "activation", hidden_activation("relu"),
             lambda c: c["activation"] == "tanh" and c["model"] == "mlp"),
    Operator("act_relu_output", "activation", output_activation("relu")),
    Operator("act_sigmoid_output", "activation", output_activation("sigmoid"),
             lambda c: c["task"] == "regression"),
    Operator("init_zeros", "init", init_scheme("zeros")),
    Operator("init_constant", "init", init_scheme("constant", 0.05, 1.0)),
    Operator("init_large", "init", init_scheme("scaled", 10, 100)),
    Operator("init_small", "init", init_scheme("scaled", 1e-4, 1e-2)),
    Operator("opt_swap", "optimizer", swap_optimizer),
    Operator("opt_momentum", "optimizer", bad_momentum),
    Operator("opt_adam_betas", "optimizer", adam_bad_betas),
    Operator("epochs_cut", "epochs", cut_epochs, lambda c: c["epochs"] >= 10),
    Operator("batch_one", "batch_size", batch_one),
    Operator("batch_all", "batch_size", batch_all),
    # Not where the raw inputs are already standardised (or nearly): there
    # the operator changes nothing and would label a run with a cause it
    # does not have.
    Operator("data_unnormalized", "data", no_normalization,
             lambda c: c["data"] not in ("sequences", "signals", "multiclass")),
    Operator("data_scaled", "data", scale_inputs),
    Operator("labels_noise", "labels", noisy_labels, _classification),
    Operator("labels_recoded", "labels", recoded_labels, _classification, since=5),
    Operator("labels_shuffled", "labels", shuffled_labels, since=5),
    Operator("reg_dropout", "regularization", heavy_dropout),
    Operator("reg_weight_decay", "regularization", heavy_weight_decay),
]

# Healthy variations: changes within the range a careful user picks, so that
# configuration values alone do not separate faulty from healthy runs.
def neutral(c, rng):
    c["lr"] *= _log_uniform(rng, 0.5, 2.0)
    c["batch_size"] = max(8, int(c["batch_size"] * rng.choice([0.5, 1, 1, 2])))
    c["epochs"] = int(round(c["epochs"] * rng.uniform(1.0, 1.5)))
    if c["model"] == "mlp" and rng.random() < 0.5:
        f = rng.choice([0.5, 2])
        c["hidden"] = [max(4, int(h * f)) for h in c["hidden"]]
    return {"lr": round(c["lr"], 6), "batch_size": c["batch_size"], "epochs": c["epochs"],
            "hidden": list(c["hidden"])}


def applicable(config, cause=None, seed=None, names=None):
    """The operators that may mutate config: of one cause, for a plan of
    that seed (None: any), among those names (None: all)."""
    return [op for op in OPERATORS
            if op.applies(config) and (cause is None or op.cause == cause)
            and (seed is None or op.since <= seed) and (names is None or op.name in names)]
