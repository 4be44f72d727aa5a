#include "baselines.h"

#include <math.h>
#include <string.h>

#include "common.h"

/*
 * AutoTrainer (Zhang et al., ICSE 2021; monitor.py and repair.py of
 * github.com/shiningrain/AUTOTRAINER). At every check (epoch end) it looks
 * at the gradients of one batch and at the accuracy history, and once it
 * names a problem it stops looking:
 * - NaN/Inf in loss, weights or gradients: "explode";
 * - while the accuracy is poor (best below Theta = 0.7) or slow (no check
 *   gained 0.01): dying ReLU (>= 70% of gradient entries 0), else exploding
 *   gradient (first/last norm > 70), else vanishing gradient (< 1e-3 with a
 *   first-layer norm < 1e-4), else slow convergence;
 * - otherwise oscillating loss (accuracy swings >= 0.03 on >= 20% of
 *   checks).
 * Accuracy judgements wait for the judgment point. A run that reports no
 * accuracy (regression) has no accuracy gate: its gradient problems are
 * named once the judgment point has passed. A run that reports no epochs is
 * checked at every sample.
 */

/* The accuracy a converging run reaches ("Theta"): 0.7 in AutoTrainer's
 * default parameters. The other figures are design.md's symptom thresholds
 * (symptom_defaults). */
#define AT_SATISFIED_ACC 0.7

enum at_problem {
	AT_EXPLODE = 1 << 0,
	AT_VANISH = 1 << 1,
	AT_RELU = 1 << 2,
	AT_UNSTABLE = 1 << 3,
	AT_SLOW = 1 << 4,
};

struct at_monitor {
	unsigned vanish, explode, died;	/* checks where the gradient rule held */
	bool nan_loss, nan_weight, nan_grad;
	bool unstable, not_converge, slow;	/* sticky once judged */
};

static void at_gradients(const struct series *s, size_t i, struct at_monitor *m,
			 const struct symptom_thresholds *t)
{
	if (bl__any_nonfinite(s, i, DNNFAULT__LAYER_STAT__WEIGHT_NORM))
		m->nan_weight = true;
	if (bl__any_nonfinite(s, i, DNNFAULT__LAYER_STAT__GRAD_NORM)) {
		m->nan_grad = true;
		return;
	}
	double rate, first;
	if (bl__grad_rate(s, i, &rate, &first)) {
		m->vanish += rate < t->vanish_ratio && first < t->vanish_first_norm;
		m->explode += rate > t->explode_ratio;
	}
	m->died += bl__zero_share(s, i) >= t->dead_frac;
}

/* IssueMonitor.determine at a check after `ne` epochs, at `step`. */
static unsigned at_determine(const struct series *s, struct at_monitor *m, size_t ne, uint64_t step,
			     const struct symptom_thresholds *t)
{
	unsigned found = 0;
	if (m->nan_loss || m->nan_weight || m->nan_grad)
		found |= AT_EXPLODE;
	bool now = bl__judged(s, ne, step);
	bool acc = bl__classification(s) && (bl__list_any(bl__train_acc(s), ne) || bl__list_any(bl__val_acc(s), ne));
	/* loss_issue returns before the trends once the loss is NaN. */
	if (now && acc && !m->nan_loss) {
		m->unstable |= bl__oscillates(bl__swing_acc(s, ne), ne, t->unstable_swing, t->unstable_share);
		m->not_converge |= bl__not_converging(s, ne, AT_SATISFIED_ACC);
		m->slow |= bl__slow_gain(s, ne, t);
	}
	bool gate = acc ? m->not_converge || m->slow : now;
	if (gate) {
		if (m->died > 0)
			found |= AT_RELU;
		else if (m->explode > 0)
			found |= AT_EXPLODE;
		else if (m->vanish > 0)
			found |= AT_VANISH;
		else if (m->slow)
			found |= AT_SLOW;
	} else if (m->unstable) {
		found |= AT_UNSTABLE;
	}
	return found;
}

/* repair.py repair_strategy('balance'), the default: every repair listed
 * for a problem, as our causes.
 * - vanish: selu (+LeCun init), relu (+He init), BatchNorm: activation, init;
 * - explode: selu, relu, gradient clipping (our lr_high fix), tanh (+He
 *   init), BatchNorm: activation, init, lr_high;
 * - dying ReLU: selu, BatchNorm, another initialiser, LeakyReLU/ELU:
 *   activation, init;
 * - unstable: Adam, lr x0.1, ReduceLROnPlateau, larger batch, SGD momentum,
 *   Gaussian noise: optimizer, lr_high, batch_size;
 * - slow convergence ("not_converge"): another optimizer, lr x10:
 *   optimizer, lr_low.
 * BatchNorm, Gaussian noise and early stopping have no cause of ours. */
static cause_set at_causes(unsigned found)
{
	cause_set out = 0;
	if (found & AT_VANISH)
		out |= BIT(activation) | BIT(init);
	if (found & AT_EXPLODE)
		out |= BIT(activation) | BIT(init) | BIT(lr_high);
	if (found & AT_RELU)
		out |= BIT(activation) | BIT(init);
	if (found & AT_UNSTABLE)
		out |= BIT(optimizer) | BIT(lr_high) | BIT(batch_size);
	if (found & AT_SLOW)
		out |= BIT(optimizer) | BIT(lr_low);
	return out;
}

cause_set baselines__autotrainer(const struct series *s)
{
	const struct symptom_thresholds *t = &symptom_defaults;
	struct at_monitor m;
	memset(&m, 0, sizeof m);
	bool by_epoch = s->n_epochs > 0;
	size_t checks = by_epoch ? s->n_epochs : s->n;
	size_t scanned = 0, last = 0;	/* samples read so far; samples at the last check */
	for (size_t c = 0; c < checks; c++) {
		uint64_t step = by_epoch ? s->epoch_step[c] : s->step[c];
		size_t k = by_epoch ? bl__samples_by(s, step) : c + 1;
		for (; scanned < k; scanned++)
			m.nan_loss |= bl__loss_broken(s->col[SERIES_LOSS][scanned], s->has[SERIES_LOSS][scanned], t);
		if (by_epoch)
			m.nan_loss |= bl__epoch_loss_broken(s, c, t);
		/* One batch's gradients per check: the latest sample, once. */
		if (k > last)
			at_gradients(s, k - 1, &m, t);
		last = k;
		unsigned found = at_determine(s, &m, by_epoch ? c + 1 : 0, step, t);
		if (found)
			return at_causes(found);
	}
	return 0;
}
