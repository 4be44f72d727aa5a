#include "run_features.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dnnfault.pb-c.h"
#include "symptoms.h"

/* Feature values are written through a sink that also knows the names:
 * the names are produced by running the same code on an empty series, so
 * the schema cannot disagree with the computation. */
struct sink {
	double *out;			/* NULL when collecting names */
	char (*names)[FEATURES_NAME_MAX];
	size_t n, cap;
};

static void put(struct sink *k, const char *name, double v)
{
	if (k->n < k->cap) {
		if (k->out != NULL)
			k->out[k->n] = isfinite(v) ? v : NAN;
		if (k->names != NULL)
			snprintf(k->names[k->n], FEATURES_NAME_MAX, "%s", name);
	}
	k->n++;
}

__attribute__((format(printf, 3, 4)))
static void putf(struct sink *k, double v, const char *fmt, ...)
{
	char name[FEATURES_NAME_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	put(k, name, v);
}

static double ratio(double a, double b)
{
	return (isfinite(a) && isfinite(b) && b != 0) ? a / b : NAN;
}

/* log10 of |a/b|, the scale-free way to compare two norms. */
static double log_ratio(double a, double b)
{
	double r = ratio(fabs(a), fabs(b));
	return r > 0 ? log10(r) : NAN;
}

static double log10_or_nan(double x)
{
	return x > 0 && isfinite(x) ? log10(x) : NAN;
}

/* Temporal aggregates of one series: what its level, spread, trend and
 * shape were, with scale-free forms (relative to the first value) that
 * compare across programs. Non-finite samples are left out of everything
 * but their own share. */
static void temporal(struct sink *k, const char *name, const double *x, size_t n)
{
	size_t m = 0, bad = 0;
	double first = NAN, last = NAN, lo = INFINITY, hi = -INFINITY, sum = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(x[i])) {
			bad++;
			continue;
		}
		if (m++ == 0)
			first = x[i];
		last = x[i];
		lo = fmin(lo, x[i]);
		hi = fmax(hi, x[i]);
		sum += x[i];
	}
	double mean = m ? sum / (double)m : NAN, m2 = 0, m3 = 0;
	/* Slope against the run's progress (0..1), per unit of |first|. */
	double sx = 0, sxx = 0, sxy = 0, recent = 0;
	size_t j = 0, n_recent = 0, recent_from = m - m / 4;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(x[i]))
			continue;
		double d = x[i] - mean, t = m > 1 ? (double)j / (double)(m - 1) : 0;
		m2 += d * d;
		m3 += d * d * d;
		sx += t;
		sxx += t * t;
		sxy += t * d;
		if (j >= recent_from) {
			recent += x[i];
			n_recent++;
		}
		j++;
	}
	/* All samples equal: no spread, though the rounding of their mean
	 * leaves one of ~1e-17 whose skew would be +-1 by chance. */
	double var = m ? (hi > lo ? m2 / (double)m : 0) : NAN, sd = sqrt(var);
	double skew = m > 2 && var > 0 ? (m3 / (double)m) / (var * sd) : (m ? 0 : NAN);
	double den = sxx - sx * sx / (double)(m ? m : 1);
	double slope = m > 1 && den > 0 ? sxy / den : NAN;
	double scale = fabs(first) > 1e-12 ? fabs(first) : NAN;
	recent = n_recent ? recent / (double)n_recent : NAN;
	if (m == 0)
		lo = hi = NAN;
	putf(k, first, "%s_first", name);
	putf(k, last, "%s_last", name);
	putf(k, lo, "%s_min", name);
	putf(k, hi, "%s_max", name);
	putf(k, mean, "%s_mean", name);
	putf(k, sd, "%s_std", name);
	putf(k, skew, "%s_skew", name);
	putf(k, ratio(slope, scale), "%s_slope", name);
	putf(k, ratio(last, first), "%s_last_over_first", name);
	putf(k, ratio(lo, first), "%s_min_over_first", name);
	putf(k, ratio(recent, first), "%s_recent_over_first", name);
	putf(k, ratio(sd, fabs(mean)), "%s_cv", name);
	putf(k, n ? (double)bad / (double)n : NAN, "%s_nonfinite", name);
}

static bool finite_f(float v)
{
	return isfinite(v);
}

/* Layer aggregates of one statistic (values v[0..n_layers)): first and
 * last layer, min, max, mean over layers, and log10 |first/last|. */
static void across_layers(struct sink *k, const char *name, const double *v, size_t n_layers)
{
	double first = NAN, last = NAN, lo = INFINITY, hi = -INFINITY, sum = 0;
	size_t m = 0;
	for (size_t l = 0; l < n_layers; l++) {
		if (!isfinite(v[l]))
			continue;
		if (m++ == 0)
			first = v[l];
		last = v[l];
		lo = fmin(lo, v[l]);
		hi = fmax(hi, v[l]);
		sum += v[l];
	}
	if (m == 0)
		lo = hi = NAN;
	putf(k, first, "%s_first_layer", name);
	putf(k, last, "%s_last_layer", name);
	putf(k, lo, "%s_layer_min", name);
	putf(k, hi, "%s_layer_max", name);
	putf(k, m ? sum / (double)m : NAN, "%s_layer_mean", name);
	putf(k, log_ratio(first, last), "%s_first_over_last_log", name);
}

/* Mean of each layer's statistic over samples [from, to), finite values
 * only, into v[n_layers]. */
static void layer_window(const struct series *s, size_t from, size_t to, int stat, double *v)
{
	for (size_t l = 0; l < s->n_layers; l++) {
		double sum = 0;
		size_t m = 0;
		for (size_t i = from; i < to; i++) {
			float x = series__stat(s, i, l, stat);
			if (finite_f(x)) {
				sum += x;
				m++;
			}
		}
		v[l] = m ? sum / (double)m : NAN;
	}
}

static const char *const stat_names[CHUNK_STATS_PER_LAYER] = {
	"weight_norm", "weight_mean", "weight_std", "weight_max_abs", "grad_norm", "grad_mean",
	"grad_std", "grad_max_abs", "grad_zero_frac", "update_ratio", "act_mean", "act_std",
	"act_nonpos_frac", "act_saturated_frac", "nan_count", "inf_count",
};

/* Global per-sample series derived from the layers: the norms of the
 * whole model and the mean of per-layer shares. */
enum derived { D_GRAD_NORM, D_WEIGHT_NORM, D_UPDATE_RATIO, D_NONPOS, D_SATURATED, D_ACT_STD, D_COUNT };
static const char *const derived_names[D_COUNT] = {
	"grad_norm", "weight_norm", "update_ratio", "act_nonpos", "act_saturated", "act_std",
};

static void derive(const struct series *s, size_t i, double out[D_COUNT])
{
	double g2 = 0, w2 = 0, upd = 0, np = 0, sat = 0, as = 0;
	size_t ng = 0, nw = 0, nu = 0, nn = 0, ns = 0, na = 0;
	for (size_t l = 0; l < s->n_layers; l++) {
		float g = series__stat(s, i, l, DNNFAULT__LAYER_STAT__GRAD_NORM);
		float w = series__stat(s, i, l, DNNFAULT__LAYER_STAT__WEIGHT_NORM);
		float u = series__stat(s, i, l, DNNFAULT__LAYER_STAT__UPDATE_RATIO);
		float p = series__stat(s, i, l, DNNFAULT__LAYER_STAT__ACT_NONPOS_FRAC);
		float t = series__stat(s, i, l, DNNFAULT__LAYER_STAT__ACT_SATURATED_FRAC);
		float a = series__stat(s, i, l, DNNFAULT__LAYER_STAT__ACT_STD);
		if (finite_f(g)) g2 += (double)g * g, ng++;
		if (finite_f(w)) w2 += (double)w * w, nw++;
		if (finite_f(u)) upd += u, nu++;
		if (finite_f(p)) np += p, nn++;
		if (finite_f(t)) sat += t, ns++;
		if (finite_f(a)) as += a, na++;
	}
	out[D_GRAD_NORM] = ng ? sqrt(g2) : NAN;
	out[D_WEIGHT_NORM] = nw ? sqrt(w2) : NAN;
	out[D_UPDATE_RATIO] = nu ? upd / (double)nu : NAN;
	out[D_NONPOS] = nn ? np / (double)nn : NAN;
	out[D_SATURATED] = ns ? sat / (double)ns : NAN;
	out[D_ACT_STD] = na ? as / (double)na : NAN;
}

/* Codes of the static description. Only standard PyTorch names are
 * recognised: a custom loss function's name says nothing a real user's
 * program would say, so it is "custom". */
enum loss_kind { LOSS_CUSTOM, LOSS_CE, LOSS_NLL, LOSS_MSE, LOSS_BCE, LOSS_BCE_LOGITS, LOSS_L1, LOSS_HUBER };

static enum loss_kind loss_kind(const char *name)
{
	static const struct { const char *name; enum loss_kind kind; } known[] = {
		{"CrossEntropyLoss", LOSS_CE}, {"cross_entropy", LOSS_CE}, {"NLLLoss", LOSS_NLL},
		{"nll_loss", LOSS_NLL}, {"MSELoss", LOSS_MSE}, {"mse_loss", LOSS_MSE},
		{"BCELoss", LOSS_BCE}, {"binary_cross_entropy", LOSS_BCE},
		{"BCEWithLogitsLoss", LOSS_BCE_LOGITS},
		{"binary_cross_entropy_with_logits", LOSS_BCE_LOGITS}, {"L1Loss", LOSS_L1},
		{"l1_loss", LOSS_L1}, {"SmoothL1Loss", LOSS_HUBER}, {"HuberLoss", LOSS_HUBER},
	};
	for (size_t i = 0; name != NULL && i < sizeof known / sizeof known[0]; i++)
		if (strcmp(known[i].name, name) == 0)
			return known[i].kind;
	return LOSS_CUSTOM;
}

enum opt_kind { OPT_OTHER, OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_RMSPROP, OPT_ADAGRAD, OPT_ADADELTA };

static enum opt_kind opt_kind(const char *name)
{
	static const char *const known[] = {"", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"};
	for (size_t i = 1; name != NULL && i < sizeof known / sizeof known[0]; i++)
		if (strcasecmp(known[i], name) == 0)
			return (enum opt_kind)i;
	return OPT_OTHER;
}

enum act_kind { ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH, ACT_SOFTMAX, ACT_LOG_SOFTMAX, ACT_OTHER, ACT_UNKNOWN };

static enum act_kind act_kind(const char *a)
{
	if (a == NULL || *a == '\0' || strcmp(a, "unknown") == 0)
		return ACT_UNKNOWN;
	if (strcmp(a, "none") == 0)
		return ACT_NONE;
	if (strstr(a, "relu") != NULL || strcmp(a, "elu") == 0 || strcmp(a, "gelu") == 0 ||
	    strcmp(a, "selu") == 0 || strcmp(a, "silu") == 0)
		return ACT_RELU;
	if (strcmp(a, "sigmoid") == 0)
		return ACT_SIGMOID;
	if (strcmp(a, "tanh") == 0)
		return ACT_TANH;
	if (strcmp(a, "softmax") == 0)
		return ACT_SOFTMAX;
	if (strcmp(a, "log_softmax") == 0)
		return ACT_LOG_SOFTMAX;
	return ACT_OTHER;
}

/* Layers whose first weight is a matrix or kernel (Linear, Conv, RNN):
 * the ones a weight initialiser scales by their fan-in. */
static bool is_weight_layer(const struct series_layer *l)
{
	return l->fan_in > 0 && strstr(l->type, "Norm") == NULL && strstr(l->type, "Embedding") == NULL;
}

/* `scale` has room for a value per layer. */
static void static_features(struct sink *k, const struct series *s, size_t n, double *scale)
{
	bool cls = s->task == DNNFAULT__TASK_KIND__TASK_CLASSIFICATION;
	bool reg = s->task == DNNFAULT__TASK_KIND__TASK_REGRESSION;
	double classes = s->num_classes ? (double)s->num_classes : NAN;
	put(k, "task_classification", cls);
	put(k, "task_regression", reg);
	put(k, "num_classes", cls ? classes : NAN);

	double lr_last = NAN;
	for (size_t i = n; i-- > 0 && isnan(lr_last);)
		if (s->has[SERIES_LR][i])
			lr_last = s->col[SERIES_LR][i];
	double lr0 = isfinite(s->initial_lr) ? s->initial_lr : NAN;
	for (size_t i = 0; i < n && isnan(lr0); i++)
		if (s->has[SERIES_LR][i])
			lr0 = s->col[SERIES_LR][i];
	put(k, "lr_log10", log10_or_nan(lr0));
	put(k, "lr_now_over_initial", ratio(lr_last, lr0));
	enum opt_kind o = opt_kind(s->optimizer);
	put(k, "optimizer_sgd", o == OPT_SGD);
	put(k, "optimizer_adaptive", o == OPT_ADAM || o == OPT_ADAMW || o == OPT_RMSPROP ||
					     o == OPT_ADAGRAD || o == OPT_ADADELTA);
	put(k, "optimizer_kind", o);
	put(k, "momentum", s->momentum);
	put(k, "weight_decay_log10", s->weight_decay > 0 ? log10(s->weight_decay) : (s->weight_decay == 0 ? -12 : NAN));
	put(k, "beta1", s->beta1);
	put(k, "beta2", s->beta2);
	put(k, "rmsprop_alpha", s->alpha);
	put(k, "batch_size_log10", log10_or_nan(s->batch_size));
	put(k, "batch_over_dataset", s->dataset_size ? (double)s->batch_size / (double)s->dataset_size : NAN);
	put(k, "dataset_size_log10", log10_or_nan((double)s->dataset_size));
	put(k, "steps_per_epoch_log10", s->batch_size && s->dataset_size ?
		log10(ceil((double)s->dataset_size / s->batch_size)) : NAN);
	put(k, "planned_epochs", s->planned_epochs ? (double)s->planned_epochs : NAN);
	double last_step = n ? (double)s->step[n - 1] + 1 : NAN;
	put(k, "progress", s->planned_steps ? last_step / (double)s->planned_steps : NAN);
	put(k, "steps_seen_log10", log10_or_nan(last_step));
	put(k, "samples_seen", (double)n);

	uint64_t params = 0;
	size_t weight_layers = 0, hidden = 0, hidden_sat = 0, hidden_none = 0, hidden_relu = 0;
	for (size_t l = 0; l < s->n_layers; l++) {
		params += s->layers[l].param_count;
		if (!is_weight_layer(&s->layers[l]))
			continue;
		weight_layers++;
		if (l + 1 == s->n_layers)
			continue;
		enum act_kind a = act_kind(s->layers[l].activation);
		hidden++;
		hidden_sat += a == ACT_SIGMOID || a == ACT_TANH;
		hidden_none += a == ACT_NONE;
		hidden_relu += a == ACT_RELU;
	}
	put(k, "layers", (double)s->n_layers);
	put(k, "weight_layers", (double)weight_layers);
	put(k, "params_log10", log10_or_nan((double)params));
	put(k, "hidden_saturating_share", hidden ? (double)hidden_sat / (double)hidden : NAN);
	put(k, "hidden_linear_share", hidden ? (double)hidden_none / (double)hidden : NAN);
	put(k, "hidden_relu_share", hidden ? (double)hidden_relu / (double)hidden : NAN);

	/* Loss against output activation and task: the mismatches that make
	 * the "loss" and output "activation" causes. */
	enum loss_kind lk = loss_kind(s->loss_fn);
	enum act_kind out = s->n_layers ? act_kind(s->layers[s->n_layers - 1].activation) : ACT_UNKNOWN;
	put(k, "loss_kind", lk);
	put(k, "loss_custom", lk == LOSS_CUSTOM);
	put(k, "output_activation", out);
	bool logit_loss = lk == LOSS_CE || lk == LOSS_BCE_LOGITS;
	bool regression_loss = lk == LOSS_MSE || lk == LOSS_L1 || lk == LOSS_HUBER;
	put(k, "mismatch_squashed_logits", logit_loss && (out == ACT_SOFTMAX || out == ACT_SIGMOID ||
							    out == ACT_LOG_SOFTMAX));
	put(k, "mismatch_nll_without_log_softmax", lk == LOSS_NLL && out != ACT_LOG_SOFTMAX && out != ACT_UNKNOWN);
	put(k, "mismatch_bce_without_sigmoid", lk == LOSS_BCE && out != ACT_SIGMOID && out != ACT_UNKNOWN);
	put(k, "mismatch_regression_loss_on_classes", cls && regression_loss);
	put(k, "mismatch_class_loss_on_regression", reg && (lk == LOSS_CE || lk == LOSS_NLL || lk == LOSS_BCE ||
							     lk == LOSS_BCE_LOGITS));
	put(k, "mismatch_bce_multiclass", cls && s->num_classes > 2 && (lk == LOSS_BCE || lk == LOSS_BCE_LOGITS));
	put(k, "mismatch_bounded_output_regression", reg && (out == ACT_RELU || out == ACT_SIGMOID ||
							     out == ACT_TANH || out == ACT_SOFTMAX));

	/* Initialisation scale: a weight's std times sqrt(fan-in) is about
	 * 0.58 for PyTorch's default init whatever the layer's size. */
	for (size_t l = 0; l < s->n_layers; l++) {
		float sd = n ? series__stat(s, 0, l, DNNFAULT__LAYER_STAT__WEIGHT_STD) : NAN;
		scale[l] = is_weight_layer(&s->layers[l]) && finite_f(sd) ? sd * sqrt((double)s->layers[l].fan_in)
									   : NAN;
	}
	across_layers(k, "init_scale", scale, s->n_layers);
}

static void input_features(struct sink *k, const struct series *s, size_t n)
{
	static const struct { int col; const char *name; } cols[] = {
		{SERIES_INPUT_MEAN, "input_mean"}, {SERIES_INPUT_STD, "input_std"},
		{SERIES_INPUT_MIN, "input_min"}, {SERIES_INPUT_MAX, "input_max"},
	};
	double v[4];
	for (size_t c = 0; c < 4; c++) {
		double sum = 0;
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (isfinite(s->col[cols[c].col][i]))
				sum += s->col[cols[c].col][i], m++;
		v[c] = m ? sum / (double)m : NAN;
		put(k, cols[c].name, v[c]);
	}
	put(k, "input_abs_max", fmax(fabs(v[2]), fabs(v[3])));
}

/* Loss and accuracy against chance: what a run that learned nothing would
 * show, so that "0.69" means the same on every classification task. */
static void chance_features(struct sink *k, const struct series *s, const double *loss,
			    const double *acc, size_t n)
{
	bool cls = s->task == DNNFAULT__TASK_KIND__TASK_CLASSIFICATION && s->num_classes >= 2;
	double chance_loss = cls ? log((double)s->num_classes) : NAN;
	double chance_acc = cls ? 1.0 / s->num_classes : NAN;
	double loss_first = NAN, loss_last = NAN, acc_last = NAN, acc_best = NAN;
	for (size_t i = 0; i < n; i++) {
		if (isfinite(loss[i])) {
			if (isnan(loss_first))
				loss_first = loss[i];
			loss_last = loss[i];
		}
		if (isfinite(acc[i])) {
			acc_last = acc[i];
			acc_best = isnan(acc_best) ? acc[i] : fmax(acc_best, acc[i]);
		}
	}
	put(k, "loss_first_over_chance", ratio(loss_first, chance_loss));
	put(k, "loss_last_over_chance", ratio(loss_last, chance_loss));
	put(k, "accuracy_last_over_chance", ratio(acc_last, chance_acc));
	put(k, "accuracy_best_over_chance", ratio(acc_best, chance_acc));
	put(k, "loss_negative", isfinite(loss_last) ? loss_last < 0 : NAN);
}

static void epoch_features(struct sink *k, const struct series *s)
{
	size_t e = s->n_epochs;
	const double *tl = s->epoch[EPOCH_TRAIN_LOSS], *vl = s->epoch[EPOCH_VAL_LOSS];
	const double *tm = s->epoch[EPOCH_TRAIN_METRIC], *vm = s->epoch[EPOCH_VAL_METRIC];
	double vl_min = NAN, vm_best = NAN;
	size_t rises = 0;
	for (size_t i = 0; i < e; i++) {
		if (isfinite(vl[i]))
			vl_min = isnan(vl_min) ? vl[i] : fmin(vl_min, vl[i]);
		if (isfinite(vm[i]))
			vm_best = isnan(vm_best) ? vm[i] : fmax(vm_best, vm[i]);
		rises += i > 0 && isfinite(vl[i]) && isfinite(vl[i - 1]) && vl[i] > vl[i - 1];
	}
	put(k, "epochs_seen", (double)e);
	put(k, "epochs_over_planned", s->planned_epochs ? (double)e / s->planned_epochs : NAN);
	put(k, "train_loss_last_over_first", e ? ratio(tl[e - 1], tl[0]) : NAN);
	put(k, "val_loss_last_over_first", e ? ratio(vl[e - 1], vl[0]) : NAN);
	put(k, "val_loss_last_over_min", e ? ratio(vl[e - 1], vl_min) : NAN);
	put(k, "val_loss_over_train_loss", e ? ratio(vl[e - 1], tl[e - 1]) : NAN);
	put(k, "val_loss_rise_share", e > 1 ? (double)rises / (double)(e - 1) : NAN);
	put(k, "val_metric_last", e ? vm[e - 1] : NAN);
	put(k, "val_metric_best", vm_best);
	put(k, "train_metric_last", e ? tm[e - 1] : NAN);
	put(k, "train_val_metric_gap", e ? tm[e - 1] - vm[e - 1] : NAN);
	/* Still improving at the end: the last epoch's gain on the best before. */
	put(k, "val_metric_last_gain", e > 1 ? vm[e - 1] - vm[e - 2] : NAN);
	put(k, "val_loss_last_gain", e > 1 ? ratio(vl[e - 2] - vl[e - 1], vl[0]) : NAN);
}

static void symptom_features(struct sink *k, const struct series *s)
{
	struct symptom found[SYMPTOM_COUNT];
	size_t m = s->n ? symptoms__detect(s, &symptom_defaults, found) : 0;
	double first = s->n ? (double)s->step[0] : 0, span = s->n ? (double)s->step[s->n - 1] - first + 1 : 1;
	for (int id = 0; id < SYMPTOM_COUNT; id++) {
		const struct symptom *x = NULL;
		for (size_t j = 0; j < m; j++)
			if (found[j].id == (enum symptom_id)id)
				x = &found[j];
		/* Onset as a share of the steps seen; 1 when it never fired. */
		putf(k, x ? (double)x->count / (double)(s->n ? s->n : 1) : 0, "sym_%s_share",
		     symptoms__name((enum symptom_id)id));
		putf(k, x ? ((double)x->first_step - first) / span : 1, "sym_%s_onset",
		     symptoms__name((enum symptom_id)id));
	}
}

size_t features__upto(const struct series *s, double share)
{
	if (s->n == 0)
		return 0;
	double total = s->planned_steps ? (double)s->planned_steps : (double)s->step[s->n - 1] + 1;
	size_t k = 0;
	while (k < s->n && (double)s->step[k] + 1 <= share * total + 1e-9)
		k++;
	return share >= 1.0 ? s->n : (k ? k : 1);
}

double features__progress(const struct series *s)
{
	if (s->n == 0 || s->planned_steps == 0)
		return NAN;
	return ((double)s->step[s->n - 1] + 1) / (double)s->planned_steps;
}

size_t features__reference_upto(const struct series *run, const struct series *ref)
{
	if (run->n == 0 || ref->n == 0)
		return 0;
	uint64_t last = run->step[run->n - 1];
	if (run->planned_steps && ref->planned_steps)
		return features__upto(ref, fmin(1.0, ((double)last + 1) / (double)run->planned_steps));
	/* Without a plan on both sides, the same step. */
	size_t k = 0;
	while (k < ref->n && ref->step[k] <= last)
		k++;
	return k ? k : 1;
}

struct series features__prefix(const struct series *s, size_t upto)
{
	struct series v = *s;
	v.n = upto < s->n ? upto : s->n;
	size_t e = 0;
	if (v.n < s->n) {
		uint64_t last = v.n ? s->step[v.n - 1] : 0;
		while (e < s->n_epochs && v.n > 0 && s->epoch_step[e] <= last)
			e++;
		v.n_epochs = e;
	}
	return v;
}

/* The features compared with a reference run: the outcome and dynamics
 * of the run's loss and metrics (names starting with these), not its
 * configuration, which differs from the reference's by design. */
static const char *const reference_prefixes[] = {"loss_", "accuracy_", "val_", "train_"};
static const char *const reference_excluded[] = {"loss_kind", "loss_custom"};

static bool compared_with_reference(const char *name)
{
	for (size_t i = 0; i < sizeof reference_excluded / sizeof reference_excluded[0]; i++)
		if (strcmp(name, reference_excluded[i]) == 0)
			return false;
	for (size_t i = 0; i < sizeof reference_prefixes / sizeof reference_prefixes[0]; i++)
		if (strncmp(name, reference_prefixes[i], strlen(reference_prefixes[i])) == 0)
			return true;
	return false;
}

/* A validation metric's difference from the reference's is divided by
 * the reference's own epoch-to-epoch noise, but never by less than this:
 * a metric such as accuracy or R^2 that moves by less than a point is
 * settled, and a smaller divisor would blow up a meaningless difference.
 * Chosen on the corpus (docs/features.md, "Against a reference run"). */
#define REFERENCE_NOISE_FLOOR 0.01

static struct {
	pthread_once_t once;
	size_t count, base;
	char (*names)[FEATURES_NAME_MAX];
	size_t *compared;	/* base indices of the ref_ features, in order */
	size_t n_compared;
	/* base indices the noise-scaled differences read */
	size_t val_metric_last, val_metric_best, val_metric_last_gain;
	size_t ref_val_metric_last;	/* the column of its difference */
	uint64_t hash;
} schema = {.once = PTHREAD_ONCE_INIT};

static void schema_init(void);

/* The features after the ref_ differences (reference_features). */
#define REFERENCE_EXTRA 2

/* One "ref_<name>" per compared base feature. Their values are the run's
 * minus the reference's, which only features__apply_reference knows; the
 * names come from the base schema, so this block runs after the base one
 * has been named (the first pass of schema_init leaves it empty). */
static void reference_features(struct sink *k)
{
	for (size_t j = 0; j < schema.n_compared; j++)
		putf(k, NAN, "ref_%s", schema.names[schema.compared[j]]);
	/* How far the run's metric fell short of the reference's, in units
	 * of the reference's own noise: a difference of 0.03 is noise on one
	 * program and a clear fault on another. (Not while schema_init names
	 * the base block, when nothing is compared yet.) */
	if (schema.n_compared == 0)
		return;
	put(k, "ref_val_metric_last_over_noise", NAN);
	put(k, "ref_val_metric_best_over_noise", NAN);
}

static size_t base_index(const char *name)
{
	for (size_t i = 0; i < schema.base; i++)
		if (strcmp(schema.names[i], name) == 0)
			return i;
	abort();	/* a feature this file names itself */
}

/* Everything, in schema order. */
static int compute(struct sink *k, const struct series *all, size_t upto)
{
	struct series v = features__prefix(all, upto);
	const struct series *s = &v;
	size_t n = s->n, L = s->n_layers;
	double *cols = malloc(((D_COUNT + 3) * (n ? n : 1) + 2 * (L ? L : 1)) * sizeof *cols);
	if (cols == NULL)
		return -ENOMEM;
	double *loss = cols, *acc = cols + n, *lr = cols + 2 * n, *d = cols + 3 * n;
	double *layer_v = d + D_COUNT * n;
	double *layer_w = layer_v + (L ? L : 1);
	for (size_t i = 0; i < n; i++) {
		loss[i] = s->has[SERIES_LOSS][i] ? s->col[SERIES_LOSS][i] : NAN;
		acc[i] = s->has[SERIES_ACCURACY][i] ? s->col[SERIES_ACCURACY][i] : NAN;
		lr[i] = s->has[SERIES_LR][i] ? s->col[SERIES_LR][i] : NAN;
		double x[D_COUNT];
		derive(s, i, x);
		for (int c = 0; c < D_COUNT; c++)
			d[(size_t)c * n + i] = x[c];
	}

	temporal(k, "loss", loss, n);
	temporal(k, "accuracy", acc, n);
	temporal(k, "lr", lr, n);
	for (int c = 0; c < D_COUNT; c++)
		temporal(k, derived_names[c], d + (size_t)c * n, n);
	chance_features(k, s, loss, acc, n);

	/* Per-layer statistics now (mean over the last few samples, which
	 * smooths one noisy batch) and at the start. */
	size_t from = n > 5 ? n - 5 : 0;
	for (int st = 0; st < DNNFAULT__LAYER_STAT__NAN_COUNT; st++) {
		layer_window(s, from, n, st, layer_v);
		across_layers(k, stat_names[st], layer_v, L);
	}
	static const int at_start[] = {
		DNNFAULT__LAYER_STAT__WEIGHT_STD, DNNFAULT__LAYER_STAT__WEIGHT_MAX_ABS,
		DNNFAULT__LAYER_STAT__GRAD_NORM, DNNFAULT__LAYER_STAT__UPDATE_RATIO,
		DNNFAULT__LAYER_STAT__ACT_STD, DNNFAULT__LAYER_STAT__ACT_NONPOS_FRAC,
		DNNFAULT__LAYER_STAT__ACT_SATURATED_FRAC,
	};
	for (size_t j = 0; j < sizeof at_start / sizeof at_start[0]; j++) {
		char name[FEATURES_NAME_MAX];
		snprintf(name, sizeof name, "start_%s", stat_names[at_start[j]]);
		layer_window(s, 0, n < 3 ? n : 3, at_start[j], layer_v);
		across_layers(k, name, layer_v, L);
	}
	/* How far each layer's weights moved from where they started. */
	layer_window(s, 0, n < 3 ? n : 3, DNNFAULT__LAYER_STAT__WEIGHT_NORM, layer_w);
	layer_window(s, from, n, DNNFAULT__LAYER_STAT__WEIGHT_NORM, layer_v);
	for (size_t l = 0; l < L; l++)
		layer_v[l] = log_ratio(layer_v[l], layer_w[l]);
	across_layers(k, "weight_growth_log", layer_v, L);
	double nan_total = 0, inf_total = 0;
	size_t bad_samples = 0;
	for (size_t i = 0; i < n; i++) {
		bool bad = false;
		for (size_t l = 0; l < L; l++) {
			float a = series__stat(s, i, l, DNNFAULT__LAYER_STAT__NAN_COUNT);
			float b = series__stat(s, i, l, DNNFAULT__LAYER_STAT__INF_COUNT);
			if (finite_f(a) && a > 0)
				nan_total += a, bad = true;
			if (finite_f(b) && b > 0)
				inf_total += b, bad = true;
		}
		bad_samples += bad;
	}
	put(k, "nan_count_log10", log10(1 + nan_total));
	put(k, "inf_count_log10", log10(1 + inf_total));
	put(k, "nonfinite_tensor_samples", n ? (double)bad_samples / (double)n : NAN);

	epoch_features(k, s);
	symptom_features(k, s);
	static_features(k, s, n, layer_v);
	input_features(k, s, n);
	free(cols);
	/* Against a reference run: NaN until features__apply_reference. */
	reference_features(k);
	return 0;
}

static void schema_init(void)
{
	struct series empty;
	memset(&empty, 0, sizeof empty);
	empty.initial_lr = empty.momentum = empty.weight_decay = empty.beta1 = empty.beta2 = empty.alpha = NAN;
	/* The base names first (no reference block yet), then the compared
	 * ones among them, then the whole schema. */
	struct sink count = {0};
	compute(&count, &empty, 0);
	size_t base = count.n, compared = 0;
	schema.names = calloc(2 * base + REFERENCE_EXTRA, sizeof *schema.names);
	schema.compared = calloc(base, sizeof *schema.compared);
	if (schema.names == NULL || schema.compared == NULL)
		abort();	/* a few kB at start-up */
	struct sink named = {.names = schema.names, .cap = base};
	compute(&named, &empty, 0);
	for (size_t i = 0; i < base; i++)
		if (compared_with_reference(schema.names[i]))
			schema.compared[compared++] = i;
	schema.n_compared = compared;
	count = (struct sink){.names = schema.names, .cap = base + compared + REFERENCE_EXTRA};
	compute(&count, &empty, 0);
	if (count.n != base + compared + REFERENCE_EXTRA)
		abort();	/* reference_features and REFERENCE_EXTRA disagree */
	schema.base = base;
	schema.count = count.n;
	schema.val_metric_last = base_index("val_metric_last");
	schema.val_metric_best = base_index("val_metric_best");
	schema.val_metric_last_gain = base_index("val_metric_last_gain");
	schema.ref_val_metric_last = SIZE_MAX;
	for (size_t j = 0; j < compared; j++)
		if (schema.compared[j] == schema.val_metric_last)
			schema.ref_val_metric_last = base + j;
	if (schema.ref_val_metric_last == SIZE_MAX)
		abort();	/* compared_with_reference must keep it */
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < count.n; i++)
		for (const char *c = schema.names[i]; ; c++) {
			h = (h ^ (uint8_t)*c) * 1099511628211ULL;
			if (*c == '\0')
				break;
		}
	schema.hash = h;
}

size_t features__count(void)
{
	pthread_once(&schema.once, schema_init);
	return schema.count;
}

size_t features__base_count(void)
{
	pthread_once(&schema.once, schema_init);
	return schema.base;
}

const char *features__name(size_t i)
{
	pthread_once(&schema.once, schema_init);
	return i < schema.count ? schema.names[i] : NULL;
}

uint64_t features__schema_hash(void)
{
	pthread_once(&schema.once, schema_init);
	return schema.hash;
}

int features__compute(const struct series *s, size_t upto, double *out)
{
	struct sink k = {.out = out, .cap = features__count()};
	return compute(&k, s, upto);
}

void features__apply_reference(double *x, const double *ref)
{
	pthread_once(&schema.once, schema_init);
	for (size_t j = 0; j < schema.n_compared; j++) {
		size_t i = schema.compared[j];
		double d = ref != NULL ? x[i] - ref[i] : NAN;
		x[schema.base + j] = isfinite(d) ? d : NAN;
	}
	double *scaled = x + schema.base + schema.n_compared;
	scaled[0] = scaled[1] = NAN;
	if (ref == NULL)
		return;
	/* The reference's noise: how much its metric moved in its last epoch,
	 * or how far it ended below its best, whichever is larger. */
	double noise = REFERENCE_NOISE_FLOOR;
	double gain = ref[schema.val_metric_last_gain];
	double below_best = ref[schema.val_metric_best] - ref[schema.val_metric_last];
	if (isfinite(gain))
		noise = fmax(noise, fabs(gain));
	if (isfinite(below_best))
		noise = fmax(noise, fabs(below_best));
	double last = (x[schema.val_metric_last] - ref[schema.val_metric_last]) / noise;
	double best = (x[schema.val_metric_best] - ref[schema.val_metric_best]) / noise;
	scaled[0] = isfinite(last) ? last : NAN;
	scaled[1] = isfinite(best) ? best : NAN;
}

double features__shortfall(const double *x)
{
	pthread_once(&schema.once, schema_init);
	return -x[schema.ref_val_metric_last];	/* the run's minus the reference's; NaN stays NaN */
}
