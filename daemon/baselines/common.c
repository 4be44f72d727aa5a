#include "common.h"

#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

/* AutoTrainer monitor.py loss_issue(judgment_point=0.3): trends are judged
 * once 30% of the planned training has passed. DeepFD reuses that monitor. */
#define JUDGMENT_POINT 0.3

bool bl__classification(const struct series *s)
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
size_t bl__samples_by(const struct series *s, uint64_t step)
{
	return count_upto(s->step, s->n, step);
}

size_t bl__epochs_by(const struct series *s, uint64_t step)
{
	return count_upto(s->epoch_step, s->n_epochs, step);
}

/* Whether AutoTrainer's judgment point has passed at `step`, after
 * `epochs_done` epochs: by planned steps when known, else by planned
 * epochs; a run without a plan gives nothing to wait for. */
bool bl__judged(const struct series *s, size_t epochs_done, uint64_t step)
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

bool bl__any_nonfinite(const struct series *s, size_t i, int norm)
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
bool bl__grad_rate(const struct series *s, size_t i, double *rate, double *first)
{
	size_t a, b;
	if (!series__grad_ends(s, i, &a, &b) || !(STAT(s, i, b, GRAD_NORM) > 0))
		return false;
	*first = STAT(s, i, a, GRAD_NORM);
	*rate = *first / STAT(s, i, b, GRAD_NORM);
	return true;
}

/* AutoTrainer's dying-ReLU measure (gradient_zero_radio): the share of
 * gradient entries that are exactly 0 over all parameters, from each
 * layer's zero fraction weighted by its parameter count (1 when unknown).
 * NaN when no layer sent a zero fraction. */
double bl__zero_share(const struct series *s, size_t i)
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
bool bl__contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; hay != NULL && *hay != '\0'; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

bool bl__dense_or_conv(const struct series_layer *l)
{
	return bl__contains(l->type, "linear") || bl__contains(l->type, "dense") || bl__contains(l->type, "conv");
}

bool bl__is_any(const char *a, const char *const *names)
{
	for (; a != NULL && *names != NULL; names++)
		if (strcasecmp(a, *names) == 0)
			return true;
	return false;
}

/* Activation names as the clients send them (see _describe.py): "" and
 * "unknown" say that it could not be seen. */
bool bl__act_known(const char *a)
{
	return a != NULL && *a != '\0' && strcasecmp(a, "unknown") != 0;
}

bool bl__act_linear(const char *a)
{
	static const char *const names[] = {"none", "linear", "identity", NULL};
	return bl__is_any(a, names);
}

/* Turns scores into (log-)probabilities, as a probability loss needs. */
bool bl__act_probability(const char *a)
{
	static const char *const names[] = {"softmax", "log_softmax", "logsoftmax", "sigmoid", NULL};
	return bl__is_any(a, names);
}

const char *bl__output_activation(const struct series *s)
{
	return s->n_layers > 0 ? s->layers[s->n_layers - 1].activation : "";
}

enum loss_input bl__loss_input(const char *name)
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
	if (bl__is_any(key, logits))
		return LOSS_LOGITS;
	if (bl__is_any(key, probs))
		return LOSS_PROBS;
	if (bl__is_any(key, regression))
		return LOSS_REGRESSION;
	return LOSS_OTHER;
}

/* Accuracy lists of the first `ne` epochs, as AutoTrainer's history holds
 * them ('acc', 'val_acc'); NaN where absent. */
const double *bl__train_acc(const struct series *s)
{
	return s->epoch[EPOCH_TRAIN_METRIC];
}

const double *bl__val_acc(const struct series *s)
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

bool bl__list_any(const double *x, size_t n)
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
bool bl__oscillates(const double *a, size_t n, double swing, double share)
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
const double *bl__swing_acc(const struct series *s, size_t ne)
{
	return bl__list_any(bl__train_acc(s), ne) ? bl__train_acc(s) : bl__val_acc(s);
}

/* Converging means reaching `theta` in every accuracy list sent. */
bool bl__not_converging(const struct series *s, size_t ne, double theta)
{
	double mt = list_max(bl__train_acc(s), ne), mv = list_max(bl__val_acc(s), ne);
	return (isfinite(mt) && mt < theta) || (isfinite(mv) && mv < theta);
}

/* AutoTrainer's sc_accuracy: no list sent gained `gain` in one check.
 * Needs min_checks epochs: the published code calls a history of one
 * epoch slow (it has no gain yet), which says nothing. */
bool bl__slow_gain(const struct series *s, size_t ne, const struct symptom_thresholds *t)
{
	bool t_any = bl__list_any(bl__train_acc(s), ne), v_any = bl__list_any(bl__val_acc(s), ne);
	if (ne < t->min_checks || (!t_any && !v_any))
		return false;
	return (!t_any || max_delta(bl__train_acc(s), ne) < t->slow_gain) &&
	       (!v_any || max_delta(bl__val_acc(s), ne) < t->slow_gain);
}

/* The loss is broken (AutoTrainer and DeepFD nan_loss): NaN/Inf, or at
 * least design.md's 1e3 (AutoTrainer's paper; its code tests the
 * validation loss against 1e5). An epoch loss that is NaN may just be
 * absent; the samples show NaN losses. */
bool bl__loss_broken(double loss, bool has, const struct symptom_thresholds *t)
{
	return has && (!isfinite(loss) || loss >= t->loss_max);
}

bool bl__epoch_loss_broken(const struct series *s, size_t e, const struct symptom_thresholds *t)
{
	double tl = s->epoch[EPOCH_TRAIN_LOSS][e], vl = s->epoch[EPOCH_VAL_LOSS][e];
	return isinf(tl) || isinf(vl) || tl >= t->loss_max || vl >= t->loss_max;
}
