#include "baselines.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dnnfault.pb-c.h"
#include "symptoms.h"

#define BIT(id) ((cause_set)1 << CAUSE_##id)
#define STAT(s, i, l, name) series__stat(s, i, l, DNNFAULT__LAYER_STAT__##name)

/* Figures the tools publish beyond design.md's symptom thresholds (which
 * come from symptom_defaults). */

/* AutoTrainer monitor.py loss_issue(judgment_point=0.3): trends are judged
 * once 30% of the planned training has passed. DeepFD reuses that monitor. */
#define JUDGMENT_POINT 0.3
/* The accuracy a converging run reaches ("Theta"): 0.7 in AutoTrainer's
 * default parameters, 0.6 in DeepFD's Config.py. */
#define AT_SATISFIED_ACC 0.7
#define FD_SATISFIED_ACC 0.6
/* DeepFD Monitor.py loss_issue: a train/validation accuracy gap of 0.1, or
 * 0.07 once training accuracy is above 0.9; loss moves beyond
 * epsilon = 10e-3 count as moves. */
#define FD_GAP 0.1
#define FD_GAP_HIGH 0.07
#define FD_GAP_KNEE 0.9
#define FD_EPSILON 10e-3
/* DeepDiagnosis callbacks.py identifyTensorVariance: a weight variance
 * outside [1e-5, 10] is a "Poor Weight" (initialisation). */
#define DD_VAR_LOW 1e-5
#define DD_VAR_HIGH 10.0
/* UMLAUT errors.py LRError: "Typical learning rates for the Adam optimizer
 * are between 0.00001 and 0.01" (heuristics.py flags lr > 0.01). */
#define UM_ADAM_LR_LOW 1e-5
#define UM_ADAM_LR_HIGH 1e-2
/* UMLAUT heuristics.py check_high_validation_acc: from epoch 3 on (0-based),
 * validation accuracy above 0.95 or above the training accuracy. */
#define UM_VAL_EPOCH 3
#define UM_VAL_HIGH 0.95

static bool classification(const struct series *s)
{
	return s->task == DNNFAULT__TASK_KIND__TASK_CLASSIFICATION;
}

/* How many of the sorted values `v[0..n)` are <= `x`. */
static size_t count_upto(const uint64_t *v, size_t n, uint64_t x)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Samples, and epochs, that had happened by `step`. */
static size_t samples_by(const struct series *s, uint64_t step)
{
	return count_upto(s->step, s->n, step);
}

static size_t epochs_by(const struct series *s, uint64_t step)
{
	return count_upto(s->epoch_step, s->n_epochs, step);
}

/* Whether AutoTrainer's judgment point has passed at `step`, after
 * `epochs_done` epochs: by planned steps when known, else by planned
 * epochs; a run without a plan gives nothing to wait for. */
static bool judged(const struct series *s, size_t epochs_done, uint64_t step)
{
	if (s->planned_steps > 0)
		return (double)step + 1 >= JUDGMENT_POINT * (double)s->planned_steps;
	if (s->planned_epochs > 0)
		return (double)epochs_done >= JUDGMENT_POINT * (double)s->planned_epochs;
	return true;
}

/* A tensor of layer l holds NaN/Inf at sample i: the layer counted some and
 * the tensor's norm (`norm`, a LayerStat) is not finite. A NaN norm alone
 * only says that it was not computed. */
static bool nonfinite(const struct series *s, size_t i, size_t l, int norm)
{
	bool counted = STAT(s, i, l, NAN_COUNT) > 0 || STAT(s, i, l, INF_COUNT) > 0;
	return counted && !isfinite(series__stat(s, i, l, norm));
}

static bool any_nonfinite(const struct series *s, size_t i, int norm)
{
	for (size_t l = 0; l < s->n_layers; l++)
		if (nonfinite(s, i, l, norm))
			return true;
	return false;
}

/* AutoTrainer's gradient rate (gradient_message_summary): the gradient norm
 * of the first layer over that of the last, here the first and last layers
 * that sent one. False when there are not two such layers or the last one's
 * norm is 0. */
static bool grad_rate(const struct series *s, size_t i, double *rate, double *first)
{
	size_t a = 0, b = 0;
	bool any = false;
	for (size_t l = 0; l < s->n_layers; l++) {
		if (!isfinite(STAT(s, i, l, GRAD_NORM)))
			continue;
		if (!any)
			a = l;
		b = l;
		any = true;
	}
	if (!any || b == a || !(STAT(s, i, b, GRAD_NORM) > 0))
		return false;
	*first = STAT(s, i, a, GRAD_NORM);
	*rate = *first / STAT(s, i, b, GRAD_NORM);
	return true;
}

/* AutoTrainer's dying-ReLU measure (gradient_zero_radio): the share of
 * gradient entries that are exactly 0 over all parameters, from each
 * layer's zero fraction weighted by its parameter count (1 when unknown).
 * NaN when no layer sent a zero fraction. */
static double zero_share(const struct series *s, size_t i)
{
	double zeros = 0, total = 0;
	for (size_t l = 0; l < s->n_layers; l++) {
		float z = STAT(s, i, l, GRAD_ZERO_FRAC);
		if (!isfinite(z))
			continue;
		double w = s->layers[l].param_count > 0 ? (double)s->layers[l].param_count : 1.0;
		zeros += z * w;
		total += w;
	}
	return total > 0 ? zeros / total : NAN;
}

/* Case-insensitive substring test. */
static bool contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; hay != NULL && *hay != '\0'; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

static bool dense_or_conv(const struct series_layer *l)
{
	return contains(l->type, "linear") || contains(l->type, "dense") || contains(l->type, "conv");
}

static bool is_any(const char *a, const char *const *names)
{
	for (; a != NULL && *names != NULL; names++)
		if (strcasecmp(a, *names) == 0)
			return true;
	return false;
}

/* Activation names as the clients send them (see _describe.py): "" and
 * "unknown" say that it could not be seen. */
static bool act_known(const char *a)
{
	return a != NULL && *a != '\0' && strcasecmp(a, "unknown") != 0;
}

static bool act_linear(const char *a)
{
	static const char *const names[] = {"none", "linear", "identity", NULL};
	return is_any(a, names);
}

/* Turns scores into (log-)probabilities, as a probability loss needs. */
static bool act_probability(const char *a)
{
	static const char *const names[] = {"softmax", "log_softmax", "logsoftmax", "sigmoid", NULL};
	return is_any(a, names);
}

static const char *output_activation(const struct series *s)
{
	return s->n_layers > 0 ? s->layers[s->n_layers - 1].activation : "";
}

/* What the loss expects of the model's output, from its name (class or
 * function, PyTorch or Keras spelling). A loss given but not recognised (a
 * user's own function) is LOSS_OTHER. */
enum loss_kind { LOSS_NONE, LOSS_LOGITS, LOSS_PROBS, LOSS_REGRESSION, LOSS_OTHER };

static enum loss_kind loss_kind(const char *name)
{
	static const char *const logits[] = {
		"crossentropyloss", "crossentropy", "bcewithlogitsloss", "binarycrossentropywithlogits",
		"multilabelsoftmarginloss", "multimarginloss", NULL};
	/* Keras' categorical losses take probabilities unless from_logits. */
	static const char *const probs[] = {
		"bceloss", "binarycrossentropy", "nllloss", "kldivloss", "kldiv",
		"categoricalcrossentropy", "sparsecategoricalcrossentropy", NULL};
	static const char *const regression[] = {
		"mseloss", "l1loss", "smoothl1loss", "huberloss", "mse", "mae",
		"meansquarederror", "meanabsoluteerror", NULL};
	if (name == NULL || *name == '\0')
		return LOSS_NONE;
	/* Lower-case letters and digits only: "nll_loss" reads as "nllloss". */
	char key[64];
	size_t k = 0;
	for (; *name != '\0' && k + 1 < sizeof key; name++)
		if (isalnum((unsigned char)*name))
			key[k++] = (char)tolower((unsigned char)*name);
	key[k] = '\0';
	if (is_any(key, logits))
		return LOSS_LOGITS;
	if (is_any(key, probs))
		return LOSS_PROBS;
	if (is_any(key, regression))
		return LOSS_REGRESSION;
	return LOSS_OTHER;
}

/* Accuracy lists of the first `ne` epochs, as AutoTrainer's history holds
 * them ('acc', 'val_acc'); NaN where absent. */
static const double *train_acc(const struct series *s)
{
	return s->epoch[EPOCH_TRAIN_METRIC];
}

static const double *val_acc(const struct series *s)
{
	return s->epoch[EPOCH_VAL_METRIC];
}

static double list_max(const double *x, size_t n)
{
	double m = NAN;
	for (size_t i = 0; i < n; i++)
		if (isfinite(x[i]) && !(x[i] <= m))
			m = x[i];
	return m;
}

static bool list_any(const double *x, size_t n)
{
	return isfinite(list_max(x, n));
}

/* AutoTrainer max_delta_acc: the largest rise between consecutive checks,
 * 0 when there is none. */
static double max_delta(const double *x, size_t n)
{
	double best = 0;
	for (size_t i = 0; i + 1 < n; i++)
		if (x[i + 1] - x[i] > best)
			best = x[i + 1] - x[i];
	return best;
}

static bool local_max(const double *a, size_t i)
{
	return a[i] - a[i - 1] >= 0 && a[i] - a[i + 1] >= 0;
}

static bool local_min(const double *a, size_t i)
{
	return a[i] - a[i - 1] <= 0 && a[i] - a[i + 1] <= 0;
}

/* AutoTrainer ol_judge: pairs the k-th local maximum of the accuracy with
 * its k-th local minimum; the loss oscillates when pairs that differ by at
 * least `swing` number at least `share` of the checks. Two cursors walk
 * the maxima and the minima, so no list is needed. */
static bool oscillates(const double *a, size_t n, double swing, double share)
{
	if (n < 3)
		return false;
	size_t count = 0, p = 1, q = 1;
	for (;;) {
		while (p + 1 < n && !local_max(a, p))
			p++;
		while (q + 1 < n && !local_min(a, q))
			q++;
		if (p + 1 >= n || q + 1 >= n)
			break;
		count += a[p] - a[q] >= swing;
		p++;
		q++;
	}
	return (double)count >= share * (double)n;
}

/* The accuracy list AutoTrainer's ol_judge reads: training accuracy, or
 * validation accuracy when the run sends no training accuracy. */
static const double *swing_acc(const struct series *s, size_t ne)
{
	return list_any(train_acc(s), ne) ? train_acc(s) : val_acc(s);
}

/* Converging means reaching `theta` in every accuracy list sent. */
static bool not_converging(const struct series *s, size_t ne, double theta)
{
	double mt = list_max(train_acc(s), ne), mv = list_max(val_acc(s), ne);
	return (isfinite(mt) && mt < theta) || (isfinite(mv) && mv < theta);
}

/* AutoTrainer's sc_accuracy: no list sent gained `gain` in one check.
 * Needs min_checks epochs: the published code calls a history of one
 * epoch slow (it has no gain yet), which says nothing. */
static bool slow_gain(const struct series *s, size_t ne, const struct symptom_thresholds *t)
{
	bool t_any = list_any(train_acc(s), ne), v_any = list_any(val_acc(s), ne);
	if (ne < t->min_checks || (!t_any && !v_any))
		return false;
	return (!t_any || max_delta(train_acc(s), ne) < t->slow_gain) &&
	       (!v_any || max_delta(val_acc(s), ne) < t->slow_gain);
}

/* The loss is broken (AutoTrainer and DeepFD nan_loss): NaN/Inf, or at
 * least design.md's 1e3 (AutoTrainer's paper; its code tests the
 * validation loss against 1e5). An epoch loss that is NaN may just be
 * absent; the samples show NaN losses. */
static bool loss_broken(double loss, bool has, const struct symptom_thresholds *t)
{
	return has && (!isfinite(loss) || loss >= t->loss_max);
}

static bool epoch_loss_broken(const struct series *s, size_t e, const struct symptom_thresholds *t)
{
	double tl = s->epoch[EPOCH_TRAIN_LOSS][e], vl = s->epoch[EPOCH_VAL_LOSS][e];
	return isinf(tl) || isinf(vl) || tl >= t->loss_max || vl >= t->loss_max;
}

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
	if (any_nonfinite(s, i, DNNFAULT__LAYER_STAT__WEIGHT_NORM))
		m->nan_weight = true;
	if (any_nonfinite(s, i, DNNFAULT__LAYER_STAT__GRAD_NORM)) {
		m->nan_grad = true;
		return;
	}
	double rate, first;
	if (grad_rate(s, i, &rate, &first)) {
		m->vanish += rate < t->vanish_ratio && first < t->vanish_first_norm;
		m->explode += rate > t->explode_ratio;
	}
	m->died += zero_share(s, i) >= t->dead_frac;
}

/* IssueMonitor.determine at a check after `ne` epochs, at `step`. */
static unsigned at_determine(const struct series *s, struct at_monitor *m, size_t ne, uint64_t step,
			     const struct symptom_thresholds *t)
{
	unsigned found = 0;
	if (m->nan_loss || m->nan_weight || m->nan_grad)
		found |= AT_EXPLODE;
	bool now = judged(s, ne, step);
	bool acc = classification(s) && (list_any(train_acc(s), ne) || list_any(val_acc(s), ne));
	/* loss_issue returns before the trends once the loss is NaN. */
	if (now && acc && !m->nan_loss) {
		m->unstable |= oscillates(swing_acc(s, ne), ne, t->unstable_swing, t->unstable_share);
		m->not_converge |= not_converging(s, ne, AT_SATISFIED_ACC);
		m->slow |= slow_gain(s, ne, t);
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
		size_t k = by_epoch ? samples_by(s, step) : c + 1;
		for (; scanned < k; scanned++)
			m.nan_loss |= loss_broken(s->col[SERIES_LOSS][scanned], s->has[SERIES_LOSS][scanned], t);
		if (by_epoch)
			m.nan_loss |= epoch_loss_broken(s, c, t);
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

/*
 * DeepDiagnosis (Wardat et al., ICSE 2022; callbacks.py, class
 * mapFaluireToFix, of github.com/DeepDiagnosis/ICSE2022). It stops training
 * at the first symptom and names one fix from a decision tree over three
 * tests:
 * - "Poor Weight": a weight variance outside [1e-5, 10] (normalisation
 *   layers, initialised to ones, are skipped) -> init;
 * - "Normalize the data": inputs out of range -> data; its code tests
 *   min < -1 or max > 1, which every standardised input fails, so we use
 *   design.md's abnormal_input rule, which also wants unscaled statistics;
 * - "Learning Rate": lr * |dw| / |w| outside [1e-5, 1e-1] (1e-3 x/ 100),
 *   i.e. the update ratio -> lr_high above, lr_low below.
 * Symptoms (their own detectors from symptoms.c where design.md has the
 * rule) and the tree's order of tests, ending in its fallback:
 * - numerical error (NaN/Inf in a tensor): weight, data, lr -> activation;
 * - dead node, saturated activation: data, weight, lr -> activation;
 * - out of range (the output layer cannot produce what the loss wants):
 *   -> activation;
 * - invalid loss or accuracy (NaN/Inf; accuracy 0): output layer without
 *   the activation its loss needs -> activation; lr -> optimizer;
 * - loss not decreasing, accuracy not increasing: weight, data, lr ->
 *   optimizer;
 * - vanishing gradient: lr -> activation;
 * - unchanged weights: weight, lr -> optimizer.
 * Simultaneous symptoms are taken in the order its callback tests them.
 */

enum dd_symptom {
	DD_NUMERICAL,
	DD_DEAD,
	DD_SATURATED,
	DD_OUT_OF_RANGE,
	DD_INVALID_LOSS,
	DD_LOSS_FLAT,
	DD_INVALID_ACC,
	DD_ACC_FLAT,
	DD_VANISHING,
	DD_UNCHANGED,
	DD_COUNT
};

struct onset {
	bool fired;
	uint64_t step;
};

static void fire(struct onset *o, uint64_t step)
{
	if (!o->fired || step < o->step)
		*o = (struct onset){.fired = true, .step = step};
}

/* The latest finite value of a layer statistic among samples [0, upto):
 * a value already NaN at the symptom's onset is read from before it (the
 * published code would compare the NaN and fall through). */
static float last_finite(const struct series *s, size_t upto, size_t l, int stat)
{
	for (size_t i = upto; i-- > 0;) {
		float v = series__stat(s, i, l, stat);
		if (isfinite(v))
			return v;
	}
	return NAN;
}

static bool dd_poor_weight(const struct series *s, size_t upto)
{
	for (size_t l = 0; l < s->n_layers; l++) {
		if (contains(s->layers[l].type, "norm"))
			continue;
		double sd = last_finite(s, upto, l, DNNFAULT__LAYER_STAT__WEIGHT_STD);
		if (isfinite(sd) && (sd * sd < DD_VAR_LOW || sd * sd > DD_VAR_HIGH))
			return true;
	}
	return false;
}

/* The first layer whose update ratio is out of range decides. */
static cause_set dd_learning_rate(const struct series *s, size_t upto, const struct symptom_thresholds *t)
{
	for (size_t l = 0; l < s->n_layers; l++) {
		double r = last_finite(s, upto, l, DNNFAULT__LAYER_STAT__UPDATE_RATIO);
		if (r > t->update_high)
			return BIT(lr_high);
		if (r < t->update_low)
			return BIT(lr_low);
	}
	return 0;
}

/* A probability loss (BCELoss, NLLLoss, Keras' categorical cross-entropy)
 * fed by an output layer without softmax/sigmoid: DeepDiagnosis' out of
 * range test (identifyRange: a linear or ReLU output under a categorical
 * cross-entropy). Its test against the targets' range needs the targets,
 * which we do not receive. Known loss names only. */
static bool dd_output_mismatch(const struct series *s)
{
	const char *a = output_activation(s);
	return classification(s) && loss_kind(s->loss_fn) == LOSS_PROBS && act_known(a) &&
	       !act_probability(a);
}

/* "Accuracy Not Increasing": its callback stops when the accuracy stayed
 * the same over FRQ = 20 checks. A batch accuracy is never constant, so we
 * read it as design.md reads the loss's counterpart (loss_not_decreasing):
 * the mean accuracy of the latest 10 samples is no higher than that of the
 * 10 before, for `persist` samples in a row. */
static bool dd_accuracy_flat(const struct series *s, const struct symptom_thresholds *t, uint64_t *onset)
{
	size_t w = t->loss_window, streak = 0;
	const double *a = s->col[SERIES_ACCURACY];
	for (size_t i = 0; w > 0 && i < s->n; i++) {
		bool holds = false;
		if (i + 1 >= 2 * w) {
			double now = 0, before = 0;
			size_t kn = 0, kb = 0;
			for (size_t j = i + 1 - 2 * w; j <= i; j++) {
				if (!isfinite(a[j]))
					continue;
				if (j > i - w) {
					now += a[j];
					kn++;
				} else {
					before += a[j];
					kb++;
				}
			}
			holds = kn > 0 && kb > 0 && now / (double)kn <= before / (double)kb;
		}
		streak = holds ? streak + 1 : 0;
		if (streak >= t->persist) {
			*onset = s->step[i + 1 - streak];
			return true;
		}
	}
	return false;
}

/* "Invalid accuracy": NaN/Inf (a batch accuracy sent as such) or an epoch
 * accuracy of exactly 0. */
static bool dd_accuracy_invalid(const struct series *s, uint64_t *onset)
{
	struct onset o = {0};
	for (size_t i = 0; i < s->n && !o.fired; i++)
		if (s->has[SERIES_ACCURACY][i] && !isfinite(s->col[SERIES_ACCURACY][i]))
			fire(&o, s->step[i]);
	for (size_t e = 0; e < s->n_epochs; e++)
		if (s->epoch[EPOCH_TRAIN_METRIC][e] == 0.0) {
			fire(&o, s->epoch_step[e]);
			break;
		}
	*onset = o.step;
	return o.fired;
}

static cause_set dd_fix(const struct series *s, enum dd_symptom k, uint64_t step, bool unnormalised)
{
	const struct symptom_thresholds *t = &symptom_defaults;
	size_t upto = samples_by(s, step);
	cause_set lr = dd_learning_rate(s, upto, t);
	switch (k) {
	case DD_NUMERICAL:
		if (dd_poor_weight(s, upto))
			return BIT(init);
		if (unnormalised)
			return BIT(data);
		return lr ? lr : BIT(activation);
	case DD_DEAD:
	case DD_SATURATED:
		if (unnormalised)
			return BIT(data);
		if (dd_poor_weight(s, upto))
			return BIT(init);
		return lr ? lr : BIT(activation);
	case DD_OUT_OF_RANGE:
		return BIT(activation);
	case DD_INVALID_LOSS:
	case DD_INVALID_ACC:
		if (dd_output_mismatch(s))
			return BIT(activation);
		return lr ? lr : BIT(optimizer);
	case DD_LOSS_FLAT:
	case DD_ACC_FLAT:
		if (dd_poor_weight(s, upto))
			return BIT(init);
		if (unnormalised)
			return BIT(data);
		return lr ? lr : BIT(optimizer);
	case DD_VANISHING:
		return lr ? lr : BIT(activation);
	case DD_UNCHANGED:
		if (dd_poor_weight(s, upto))
			return BIT(init);
		return lr ? lr : BIT(optimizer);
	case DD_COUNT:
		break;
	}
	return 0;
}

cause_set baselines__deepdiagnosis(const struct series *s)
{
	const struct symptom_thresholds *t = &symptom_defaults;
	struct symptom found[SYMPTOM_COUNT];
	size_t n = symptoms__detect(s, t, found);
	struct onset on[DD_COUNT];
	memset(on, 0, sizeof on);
	bool unnormalised = false;
	for (size_t j = 0; j < n; j++) {
		uint64_t step = found[j].first_step;
		switch (found[j].id) {
		case SYMPTOM_nan_tensor: fire(&on[DD_NUMERICAL], step); break;
		case SYMPTOM_dead_relu: fire(&on[DD_DEAD], step); break;
		case SYMPTOM_saturated_activation: fire(&on[DD_SATURATED], step); break;
		case SYMPTOM_nan_loss: fire(&on[DD_INVALID_LOSS], step); break;
		case SYMPTOM_loss_not_decreasing: fire(&on[DD_LOSS_FLAT], step); break;
		case SYMPTOM_vanishing_gradient: fire(&on[DD_VANISHING], step); break;
		case SYMPTOM_unchanged_weights: fire(&on[DD_UNCHANGED], step); break;
		case SYMPTOM_abnormal_input: unnormalised = true; break;
		default: break;
		}
	}
	/* Out of range is tested at the first check, before anything else. */
	if (dd_output_mismatch(s) && s->n > 0)
		fire(&on[DD_OUT_OF_RANGE], s->step[0]);
	if (dd_output_mismatch(s) && s->n_epochs > 0)
		fire(&on[DD_OUT_OF_RANGE], s->epoch_step[0]);
	uint64_t step;
	if (classification(s) && dd_accuracy_invalid(s, &step))
		fire(&on[DD_INVALID_ACC], step);
	if (classification(s) && dd_accuracy_flat(s, t, &step))
		fire(&on[DD_ACC_FLAT], step);
	int pick = -1;
	for (int k = 0; k < DD_COUNT; k++)
		if (on[k].fired && (pick < 0 || on[k].step < on[pick].step))
			pick = k;
	return pick < 0 ? 0 : dd_fix(s, (enum dd_symptom)pick, on[pick].step, unnormalised);
}

/*
 * UMLAUT (Schoop et al., CHI 2021; heuristics.py and errors.py of
 * github.com/BerkeleyHCI/umlaut). Checks of the program before training,
 * then checks at every epoch end; each error carries a fix:
 * - "Missing Softmax layer before loss": a classification loss that wants
 *   probabilities (from_logits off) and an output layer without softmax.
 *   Keras losses default to from_logits off, and UMLAUT assumes it for a
 *   loss it cannot inspect (a user's function); PyTorch's CrossEntropyLoss
 *   and BCEWithLogitsLoss take logits, like from_logits on. First fix:
 *   the loss's from_logits setting -> loss;
 * - "Last model layer has nonlinear activation" before the loss's softmax
 *   (a logits loss) -> remove it: activation;
 * - "Missing activation functions": a Dense/Conv layer with a linear
 *   activation feeding another (the stack collapses) -> activation;
 * - "Input data exceeds typical limits" (and NaN in the input when the
 *   loss is NaN) -> data; design.md's abnormal_input rule stands for its
 *   [-1, 1] test, which every standardised input fails;
 * - "Learning Rate is high/low": outside Adam's typical [1e-5, 1e-2]; plain
 *   SGD's typical rates are ten times Adam's (Keras defaults 0.01 and
 *   0.001), so it gets [1e-4, 1e-1]; Adadelta and L-BFGS, whose lr is a
 *   scale around 1, are not judged -> lr_high / lr_low;
 * - "Check validation accuracy" (above 0.95, or above the training
 *   accuracy, from epoch 3): labels or the train/validation split ->
 *   labels.
 * Its "Possible overfitting" fix adds dropout or shrinks the model, the
 * opposite of our regularization cause: no cause. "High dropout rate"
 * needs the dropout probability, which we do not receive; the image shape
 * and integer input checks have nothing to read.
 * Classification checks apply to classification runs only: on regression
 * UMLAUT would demand a softmax too.
 */

static cause_set um_program(const struct series *s)
{
	cause_set out = 0;
	const char *a = output_activation(s);
	enum loss_kind kind = loss_kind(s->loss_fn);
	if (classification(s) && kind != LOSS_NONE && act_known(a)) {
		if (kind == LOSS_LOGITS && !act_linear(a))
			out |= BIT(activation);
		if (kind != LOSS_LOGITS && !act_probability(a))
			out |= BIT(loss);
	}
	for (size_t l = 0; l + 1 < s->n_layers; l++)
		if (dense_or_conv(&s->layers[l]) && act_linear(s->layers[l].activation) &&
		    dense_or_conv(&s->layers[l + 1]))
			out |= BIT(activation);
	return out;
}

static cause_set um_learning_rate(const struct series *s)
{
	static const char *const adaptive[] = {"adam", "adamw", "adamax", "nadam", "radam",
					       "sparseadam", "rmsprop", NULL};
	static const char *const unitless[] = {"adadelta", "lbfgs", NULL};
	double lr = s->initial_lr;
	for (size_t i = 0; !(lr > 0 && isfinite(lr)) && i < s->n; i++)
		lr = s->col[SERIES_LR][i];
	const char *opt = s->optimizer ? s->optimizer : "";
	if (!(lr > 0 && isfinite(lr)) || is_any(opt, unitless))
		return 0;
	double scale = is_any(opt, adaptive) ? 1 : 10;
	if (lr > UM_ADAM_LR_HIGH * scale)
		return BIT(lr_high);
	if (lr < UM_ADAM_LR_LOW * scale)
		return BIT(lr_low);
	return 0;
}

static bool um_nan_input(const struct series *s)
{
	bool nan_input = false, nan_loss = false;
	for (size_t i = 0; i < s->n; i++) {
		nan_input |= s->has[SERIES_INPUT_MEAN][i] && !isfinite(s->col[SERIES_INPUT_MEAN][i]);
		nan_loss |= s->has[SERIES_LOSS][i] && isnan(s->col[SERIES_LOSS][i]);
	}
	return nan_input && nan_loss;
}

static bool um_overconfident(const struct series *s)
{
	for (size_t e = UM_VAL_EPOCH; classification(s) && e < s->n_epochs; e++) {
		double v = val_acc(s)[e], tr = train_acc(s)[e];
		if (v > UM_VAL_HIGH || v > tr)
			return true;
	}
	return false;
}

cause_set baselines__umlaut(const struct series *s)
{
	cause_set out = um_program(s);
	/* The rest runs at epoch ends. */
	if (s->n_epochs == 0)
		return out;
	struct symptom found[SYMPTOM_COUNT];
	size_t n = symptoms__detect(s, &symptom_defaults, found);
	for (size_t j = 0; j < n; j++)
		if (found[j].id == SYMPTOM_abnormal_input)
			out |= BIT(data);
	if (um_nan_input(s))
		out |= BIT(data);
	out |= um_learning_rate(s);
	if (um_overconfident(s))
		out |= BIT(labels);
	return out;
}

/*
 * DeepFD (Cao et al., ICSE 2022; CodeBook/Callbacks/Monitor.py and
 * Config.py of github.com/ArabelaTso/DeepFD). Its monitor keeps 18 symptom
 * counters (booleans stay set, counts only grow) and logs them at every
 * check; a random forest learns from statistics of the logged columns. Our
 * checks are the samples: counters read the sample's layer statistics and
 * loss, and the epochs that had ended by its step. Thresholds are AutoTrainer's
 * (DeepFD reuses its monitor) with Theta = 0.6. Meanings as in Monitor.py;
 * where it leaves one undefined:
 * - weight_change_little is declared but never set: here, samples where
 *   every update ratio sent is below design.md's 1e-5;
 * - test_turn_bad breaks out of its loop after one epoch: here, the streak
 *   of latest epochs its comment describes;
 * - increase_loss / decrease_acc compare consecutive checks, here samples;
 * - accuracy counters apply to classification only.
 */

#define FD_COUNTER_LIST(X)        \
	X(not_converge)           \
	X(unstable_loss)          \
	X(nan_loss)               \
	X(test_not_well)          \
	X(test_turn_bad)          \
	X(sc_accuracy)            \
	X(died_relu)              \
	X(vanish_gradient)        \
	X(explode_gradient)       \
	X(nan_gradient)           \
	X(large_weight)           \
	X(nan_weight)             \
	X(weight_change_little)   \
	X(decrease_acc)           \
	X(increase_loss)          \
	X(cons_mean_weight)       \
	X(cons_std_weight)        \
	X(nan_acc)

enum fd_counter {
#define FD_ENUM(name) FD_##name,
	FD_COUNTER_LIST(FD_ENUM)
#undef FD_ENUM
	FD_COUNT
};
_Static_assert(FD_COUNT == DEEPFD_COUNTERS, "DEEPFD_COUNTERS must match the counter list");

/* Config.py OPERATORS, in its order. */
#define FD_NAMES(name)                                                                           \
	"fd_" #name "_mean", "fd_" #name "_std", "fd_" #name "_skew", "fd_" #name "_median",     \
	"fd_" #name "_var", "fd_" #name "_sem", "fd_" #name "_max", "fd_" #name "_min",
static const char *const fd_names[] = {FD_COUNTER_LIST(FD_NAMES)};
#undef FD_NAMES
_Static_assert(sizeof fd_names / sizeof fd_names[0] == DEEPFD_FEATURES,
	       "one name per counter and statistic");

const char *baselines__deepfd_name(size_t i)
{
	return i < DEEPFD_FEATURES ? fd_names[i] : NULL;
}

struct fd_monitor {
	double c[FD_COUNT];
	bool loss_broken, acc_broken;
	size_t epochs;		/* epochs whose losses were read */
};

/* gradient_issue: stops at a NaN gradient. */
static void fd_gradients(const struct series *s, size_t i, struct fd_monitor *m,
			 const struct symptom_thresholds *t)
{
	if (any_nonfinite(s, i, DNNFAULT__LAYER_STAT__GRAD_NORM)) {
		m->c[FD_nan_gradient] = 1;
		return;
	}
	double rate, first;
	if (grad_rate(s, i, &rate, &first)) {
		m->c[FD_vanish_gradient] += rate < t->vanish_ratio && first < t->vanish_first_norm;
		m->c[FD_explode_gradient] += rate > t->explode_ratio;
	}
	m->c[FD_died_relu] += zero_share(s, i) >= t->dead_frac;
}

/* weights_issue: stops at a NaN weight; a statistic equal to the previous
 * check's counts once per layer. */
static void fd_weights(const struct series *s, size_t i, struct fd_monitor *m,
		       const struct symptom_thresholds *t)
{
	if (any_nonfinite(s, i, DNNFAULT__LAYER_STAT__WEIGHT_NORM)) {
		m->c[FD_nan_weight] = 1;
		return;
	}
	bool large = false, moved = false, any_ratio = false;
	for (size_t l = 0; l < s->n_layers; l++) {
		large |= STAT(s, i, l, WEIGHT_MAX_ABS) > t->large_weight;
		float r = STAT(s, i, l, UPDATE_RATIO);
		if (isfinite(r)) {
			any_ratio = true;
			moved |= r >= t->update_low;
		}
		if (i == 0)
			continue;
		float mean = STAT(s, i, l, WEIGHT_MEAN), std = STAT(s, i, l, WEIGHT_STD);
		m->c[FD_cons_mean_weight] += isfinite(mean) && mean == STAT(s, i - 1, l, WEIGHT_MEAN);
		m->c[FD_cons_std_weight] += isfinite(std) && std == STAT(s, i - 1, l, WEIGHT_STD);
	}
	m->c[FD_large_weight] += large;
	m->c[FD_weight_change_little] += any_ratio && !moved;
}

/* test_turn_bad: latest epochs in a row where the training loss fell and
 * the validation loss rose, each by more than epsilon. */
static double fd_turn_bad(const struct series *s, size_t ne)
{
	const double *tl = s->epoch[EPOCH_TRAIN_LOSS], *vl = s->epoch[EPOCH_VAL_LOSS];
	double k = 0;
	for (size_t e = ne; e >= 2 && tl[e - 1] - tl[e - 2] < -FD_EPSILON && vl[e - 1] - vl[e - 2] > FD_EPSILON; e--)
		k++;
	return k;
}

/* loss_issue: stops at a broken loss or accuracy (counting it at every
 * check from then on); the rest waits for the judgment point. */
static void fd_losses(const struct series *s, size_t i, struct fd_monitor *m,
		      const struct symptom_thresholds *t)
{
	size_t ne = epochs_by(s, s->step[i]);
	bool acc = classification(s);
	m->loss_broken |= loss_broken(s->col[SERIES_LOSS][i], s->has[SERIES_LOSS][i], t);
	m->acc_broken |= acc && s->has[SERIES_ACCURACY][i] && !isfinite(s->col[SERIES_ACCURACY][i]);
	for (; m->epochs < ne; m->epochs++)
		m->loss_broken |= epoch_loss_broken(s, m->epochs, t);
	if (m->loss_broken) {
		m->c[FD_nan_loss]++;
		return;
	}
	if (m->acc_broken) {
		m->c[FD_nan_acc]++;
		return;
	}
	if (!judged(s, ne, s->step[i]))
		return;
	if (acc && ne > 0) {
		double tm = train_acc(s)[ne - 1], vm = val_acc(s)[ne - 1];
		if (isfinite(tm) && isfinite(vm) &&
		    tm - vm >= (tm <= FD_GAP_KNEE ? FD_GAP : FD_GAP_HIGH))
			m->c[FD_test_not_well]++;
		if (oscillates(swing_acc(s, ne), ne, t->unstable_swing, t->unstable_share))
			m->c[FD_unstable_loss] = 1;
		if (not_converging(s, ne, FD_SATISFIED_ACC))
			m->c[FD_not_converge] = 1;
		if (slow_gain(s, ne, t))
			m->c[FD_sc_accuracy] = 1;
	}
	m->c[FD_test_turn_bad] = fd_turn_bad(s, ne);
	if (i > 0) {
		const double *loss = s->col[SERIES_LOSS], *a = s->col[SERIES_ACCURACY];
		m->c[FD_increase_loss] += loss[i] > loss[i - 1];
		if (acc)
			m->c[FD_decrease_acc] += a[i] < a[i - 1];
	}
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* pandas' agg of one column (NaN skipped) into DeepFD's statistics, in
 * Config.py's order: mean, std, skew, median, var, sem, max, min. std, var
 * and sem have n - 1 degrees of freedom; skew is the adjusted
 * Fisher-Pearson coefficient, 0 for a constant column. `tmp` holds n. */
static void fd_describe(const double *x, size_t n, double *tmp, double out[DEEPFD_STATS])
{
	size_t k = 0;
	for (size_t j = 0; j < n; j++)
		if (isfinite(x[j]))
			tmp[k++] = x[j];
	for (int j = 0; j < DEEPFD_STATS; j++)
		out[j] = NAN;
	if (k == 0)
		return;
	double sum = 0;
	for (size_t j = 0; j < k; j++)
		sum += tmp[j];
	double mean = sum / (double)k, m2 = 0, m3 = 0;
	for (size_t j = 0; j < k; j++) {
		double d = tmp[j] - mean;
		m2 += d * d;
		m3 += d * d * d;
	}
	/* pandas zeroes sums below 1e-14 (floating-point noise). */
	m2 = fabs(m2) < 1e-14 ? 0 : m2;
	m3 = fabs(m3) < 1e-14 ? 0 : m3;
	qsort(tmp, k, sizeof *tmp, by_value);
	double kk = (double)k;
	out[0] = mean;
	out[3] = k % 2 ? tmp[k / 2] : (tmp[k / 2 - 1] + tmp[k / 2]) / 2;
	out[6] = tmp[k - 1];
	out[7] = tmp[0];
	if (k >= 2) {
		out[4] = m2 / (kk - 1);
		out[1] = sqrt(out[4]);
		out[5] = out[1] / sqrt(kk);
	}
	if (k >= 3)
		out[2] = m2 == 0 ? 0 : kk * sqrt(kk - 1) / (kk - 2) * m3 / pow(m2, 1.5);
}

void baselines__deepfd_features(const struct series *s, double out[DEEPFD_FEATURES])
{
	const struct symptom_thresholds *t = &symptom_defaults;
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		out[j] = NAN;
	size_t n = s->n;
	if (n == 0)
		return;
	/* Column k of the log at rows + k * n, then one column of scratch. */
	double *rows = malloc((FD_COUNT + 1) * n * sizeof *rows);
	if (rows == NULL)
		return;
	struct fd_monitor m;
	memset(&m, 0, sizeof m);
	for (size_t i = 0; i < n; i++) {
		fd_gradients(s, i, &m, t);
		fd_weights(s, i, &m, t);
		fd_losses(s, i, &m, t);
		for (int k = 0; k < FD_COUNT; k++)
			rows[(size_t)k * n + i] = m.c[k];
	}
	for (int k = 0; k < FD_COUNT; k++)
		fd_describe(rows + (size_t)k * n, n, rows + FD_COUNT * n, out + (size_t)k * DEEPFD_STATS);
	free(rows);
}
