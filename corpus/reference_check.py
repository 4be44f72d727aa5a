"""Would more of a run's comparison with its reference run help? Offline
checks on the committed rows, not the product's models: sklearn's
histogram gradient boosting stands in for XGBoost, which Debian ships no
Python binding of, and every program is left out in turn.

The reference block is built as features__apply_reference builds it
(docs/features.md, "Against a reference run"): each row's reference is
one of its program's known-healthy runs (corpus/references.csv, not the
run itself, chosen by run id as dataset__set_references does) at the same
point of progress, and ref_<name> is the run's <name> minus the
reference's for the loss and metric features, plus the two noise-scaled
differences of the validation metric.

detector: a reference detector (faulty vs healthy, on the run's features
and the block) per variant of the block, its held-out recall at the 4.3%
false alarms of the shipped bundle at each point, with each held-out
program's threshold set on the other programs' held-out healthy rows.
Variants: "current" (the block as shipped), "dynamics" (also the
gradient, weight, update, activation and symptom features, the scale-like
ones as log10 ratios) and "loss-ratio" (the six loss levels as log10
ratios instead of differences; run in session 15, docs/evaluation.md;
not in the default).

causes PRED.csv: one model per cause on the faulty rows, with and without
the block, and the macro-F1 their ranking gives when the decision to flag
is the shipped one, taken from PRED.csv (`dnnfaultctl evaluate ...
--references corpus/references.csv --predictions PRED.csv`): the
reference detector's held-out probability against its threshold at the
row's point, and causes within 0.65 of the most probable one.

    /usr/bin/python3 corpus/reference_check.py detector [--variants current,dynamics]
    /usr/bin/python3 corpus/reference_check.py causes PRED.csv
    /usr/bin/python3 corpus/reference_check.py ranking PRED.csv   # seconds

ranking PRED.csv: where the shipped rule loses, from PRED.csv alone.

Each variant takes 10-25 minutes on two cores.
"""
import argparse
import csv
import glob
import lzma
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CAUSES = ["lr_high", "lr_low", "loss", "activation", "init", "optimizer", "epochs", "batch_size", "data", "labels",
          "regularization"]
POINTS = ["0.10", "0.25", "0.50", "1.00"]
SHARE = 0.043           # the shipped bundle's false alarms at the end (docs/evaluation.md)
RATIO = 0.65            # the ranking ratio most folds chose
COMPARED = ("loss_", "accuracy_", "val_", "train_")
NOT_COMPARED = ("loss_kind", "loss_custom")
DYNAMICS = ("grad_", "weight_norm", "weight_mean", "weight_std", "weight_max_abs", "update_ratio", "act_",
            "weight_growth", "sym_", "nan_count", "inf_count", "nonfinite")
LOSS_LEVELS = ("loss_first", "loss_last", "loss_min", "loss_max", "loss_mean", "loss_std")
NOISE_FLOOR = 0.01      # REFERENCE_NOISE_FLOOR


def load():
    """Feature names, per-row (run, program, point, labels) and features."""
    header, rows = None, []
    for f in sorted(glob.glob(os.path.join(HERE, "rows", "*.csv.xz"))):
        with lzma.open(f, "rt") as fh:
            r = csv.reader(fh)
            header = next(r)
            rows += list(r)
    meta = [(int(x[0]), x[1], x[2], x[3]) for x in rows]
    X = np.array([[float(v) if v not in ("", "nan") else np.nan for v in x[7:]] for x in rows])
    return header[7:], meta, X


def assign_references(meta, references):
    """The row index of each row's reference at the same point, -1 for
    none: among its program's references other than itself, the one at
    run id modulo their number (dataset__set_references)."""
    where = {(m[0], m[2]): i for i, m in enumerate(meta)}
    refs = {}
    for prog, run in references:
        if (run, POINTS[-1]) in where:
            refs.setdefault(prog, []).append(run)
    out = np.full(len(meta), -1)
    for i, (run, prog, point, _) in enumerate(meta):
        mine = [r for r in refs.get(prog, []) if r != run]
        if mine:
            out[i] = where.get((mine[run % len(mine)], point), -1)
    return out


def is_scale(name):
    """A feature on a scale that differs by orders of magnitude between
    programs, compared as a log10 ratio."""
    return (re.search(r"(norm|_std|max_abs|update_ratio)", name) is not None and
            re.search(r"(skew|slope|_cv|over|frac|log|nonfinite|share|onset)", name) is None)


def block(names, X, ref, columns, ratio):
    """Run minus reference for the columns, log10(|run| / |reference|) for
    those in ratio; NaN for rows without a reference."""
    has = ref >= 0
    R = X[np.where(has, ref, 0)]
    out = X[:, columns] - R[:, columns]
    with np.errstate(all="ignore"):
        for k, j in enumerate(columns):
            if names[j] in ratio:
                out[:, k] = np.log10((np.abs(X[:, j]) + 1e-12) / (np.abs(R[:, j]) + 1e-12))
    out[~has] = np.nan
    return out


def noise_scaled(names, X, ref):
    """ref_val_metric_last_over_noise and ref_val_metric_best_over_noise."""
    has = ref >= 0
    R = X[np.where(has, ref, 0)]
    col = {n: X[:, names.index(n)] for n in ("val_metric_last", "val_metric_best")}
    rcol = {n: R[:, names.index(n)] for n in ("val_metric_last", "val_metric_best", "val_metric_last_gain")}
    noise = np.maximum(np.maximum(np.abs(rcol["val_metric_last_gain"]),
                                  rcol["val_metric_best"] - rcol["val_metric_last"]), NOISE_FLOOR)
    out = np.column_stack([(col[n] - rcol[n]) / noise for n in ("val_metric_last", "val_metric_best")])
    out[~has] = np.nan
    return out


def features(names, X, ref, variant):
    compared = [j for j, n in enumerate(names) if n.startswith(COMPARED) and n not in NOT_COMPARED]
    parts = [X, block(names, X, ref, compared, LOSS_LEVELS if variant == "loss-ratio" else ()),
             noise_scaled(names, X, ref)]
    if variant == "dynamics":
        dyn = [j for j, n in enumerate(names) if n.startswith(DYNAMICS)]
        parts.append(block(names, X, ref, dyn, {names[j] for j in dyn if is_scale(names[j])}))
    Z = np.hstack(parts)
    Z[np.isinf(Z)] = np.nan
    return np.clip(Z, -1e30, 1e30).astype(np.float32)


def booster(**kw):
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(random_state=1, **kw)


def threshold_for(healthy, share):
    """The lowest score that at most `share` of the healthy scores exceed."""
    s = np.sort(healthy)
    return s[min(len(s) - 1, int(np.ceil(len(s) * (1 - share))))]


def detector(names, meta, X, ref, variant):
    prog = np.array([m[1] for m in meta])
    point = np.array([m[2] for m in meta])
    faulty = np.array([m[3] != "" for m in meta])
    has = ref >= 0
    Z = features(names, X, ref, variant)
    p = np.full(len(meta), np.nan)
    for g in sorted(set(prog)):
        tr, te = (prog != g) & has, (prog == g) & has
        weight = np.where(faulty[tr], 1.0, faulty[tr].sum() / (~faulty[tr]).sum())
        m = booster(max_iter=300, learning_rate=0.08, max_leaf_nodes=31, min_samples_leaf=20, l2_regularization=1.0)
        m.fit(Z[tr], faulty[tr], sample_weight=weight)
        p[te] = m.predict_proba(Z[te])[:, 1]
    print("%s: %d features" % (variant, Z.shape[1]))
    for q in POINTS:
        s = has & (point == q)
        found = alarms = 0
        for g in sorted(set(prog)):
            t = threshold_for(p[s & ~faulty & (prog != g)], SHARE)
            found += (p[s & faulty & (prog == g)] > t).sum()
            alarms += (p[s & ~faulty & (prog == g)] > t).sum()
        print("  at %3.0f%%: faulty rows flagged %.3f, false alarms %.3f" % (
            100 * float(q), found / (s & faulty).sum(), alarms / (s & ~faulty).sum()))


def f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def ranked_macro_f1(truth, flagged, prob, ratio=RATIO):
    """Macro-F1 over the causes of rows flagged by `flagged` and given the
    causes within `ratio` of their most probable one."""
    tp, fp, fn = (np.zeros(len(CAUSES)) for _ in range(3))
    for t, f, p in zip(truth, flagged, prob):
        pred = p >= p.max() * ratio if f else np.zeros(len(CAUSES), dtype=bool)
        tp += t & pred
        fp += ~t & pred
        fn += t & ~pred
    return np.mean([f1(*k) for k in zip(tp, fp, fn)])


def causes(names, meta, X, ref, predictions):
    prog = np.array([m[1] for m in meta])
    point = np.array([m[2] for m in meta])
    truth = np.array([[c in m[3].split("|") for c in CAUSES] for m in meta])
    faulty = truth.any(axis=1)
    where = {(m[0], m[2]): i for i, m in enumerate(meta)}
    flagged = np.zeros(len(meta), dtype=bool)
    with open(predictions) as fh:
        for r in csv.DictReader(fh):
            flagged[where[(int(r["run"]), r["point"])]] = float(r["p_fault_ref"]) >= float(r["ref_threshold_at_point"])
    full = features(names, X, ref, "current")
    for variant, Z in (("causes on the run's features", full[:, :len(names)]),
                       ("causes with the reference block", full)):
        P = np.zeros(truth.shape)
        for g in sorted(set(prog)):
            tr, te = (prog != g) & faulty, prog == g
            for k in range(len(CAUSES)):
                m = booster(max_iter=200, learning_rate=0.1, max_depth=3, l2_regularization=1.0)
                m.fit(Z[tr], truth[tr, k])
                P[te, k] = m.predict_proba(Z[te])[:, 1]
        print("%s: macro-F1 %s" % (variant, ", ".join(
            "%.3f at %.0f%%" % (ranked_macro_f1(truth[point == q], flagged[point == q], P[point == q]),
                                100 * float(q)) for q in POINTS)))


def ranking(predictions):
    """Where the shipped rule loses macro-F1, from PRED.csv alone: per
    cause, the share of its runs flagged and, of those, named; and the
    macro-F1 with perfect detection or perfect ranking instead."""
    rows = list(csv.DictReader(open(predictions)))
    for q in POINTS:
        at = [r for r in rows if r["point"] == q]
        truth = np.array([[c in r["labels"].split("|") for c in CAUSES] for r in at])
        flagged = np.array([float(r["p_fault_ref"]) >= float(r["ref_threshold_at_point"]) for r in at])
        prob = np.array([[float(r["p_" + c]) for c in CAUSES] for r in at])
        perfect = np.where(truth, 1.0, 0.0)
        ranked = np.where(truth.any(axis=1)[:, None], perfect, prob)
        print("at %3.0f%%: macro-F1 %.3f, with perfect detection %.3f, with perfect ranking %.3f" % (
            100 * float(q), ranked_macro_f1(truth, flagged, prob), ranked_macro_f1(truth, truth.any(axis=1), prob),
            ranked_macro_f1(truth, flagged, ranked)))
        for k, c in enumerate(CAUSES):
            mine = truth[:, k]
            named = flagged & mine & (prob[:, k] >= prob.max(axis=1) * RATIO)
            print("  %-15s runs %4d flagged %.2f named when flagged %.2f" % (
                c, mine.sum(), (flagged & mine).sum() / mine.sum(), named.sum() / (flagged & mine).sum()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("detector")
    d.add_argument("--variants", default="current,dynamics")
    c = sub.add_parser("causes")
    c.add_argument("predictions")
    r = sub.add_parser("ranking")
    r.add_argument("predictions")
    args = ap.parse_args()
    if args.what == "ranking":
        return ranking(args.predictions)
    names, meta, X = load()
    with open(os.path.join(HERE, "references.csv")) as fh:
        ref = assign_references(meta, [(r[0], int(r[1])) for r in list(csv.reader(fh))[1:]])
    print("%d rows, %d with a reference; false alarms held at %.1f%%" % (len(meta), (ref >= 0).sum(), 100 * SHARE))
    sys.stdout.flush()
    if args.what == "detector":
        for v in args.variants.split(","):
            if v not in ("current", "dynamics", "loss-ratio"):
                ap.error("unknown variant %r" % v)
            detector(names, meta, X, ref, v)
            sys.stdout.flush()
    else:
        causes(names, meta, X, ref, args.predictions)


if __name__ == "__main__":
    main()
