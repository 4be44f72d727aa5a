#include "symptoms.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dnnfault.pb-c.h"

const struct symptom_thresholds symptom_defaults = {
	.loss_max = 1e3,
	.explode_ratio = 70,
	.vanish_ratio = 1e-3,
	.vanish_first_norm = 1e-4,
	.vanish_max_abs = 1e-7,
	.dead_frac = 0.7,
	.saturated_frac = 0.5,
	.loss_window = 10,
	.unstable_swing = 0.03,
	.unstable_share = 0.2,
	.slow_gain = 0.01,
	.overfit_gap = 0.1,
	.unchanged_checks = 5,
	.unchanged_rtol = 1e-5,
	.update_low = 1e-5,
	.update_high = 1e-1,
	.large_weight = 5,
	.input_range = 1,
	.input_mean = 0.2,
	.min_checks = 3,
	.persist = 3,
};

static const char *const names[] = {
#define SYMPTOM_NAME(name) #name,
	SYMPTOMS(SYMPTOM_NAME)
#undef SYMPTOM_NAME
};

const char *symptoms__name(enum symptom_id id)
{
	return id < SYMPTOM_COUNT ? names[id] : "unknown";
}

/* Per-symptom state while scanning: first occurrence, count, and the
 * current streak of consecutive samples where the rule held. */
struct found {
	bool fired;
	uint64_t first_step;
	int layer;
	uint32_t count;
	size_t streak;
	uint64_t streak_step;
	int streak_layer;
};

/* For checks (epochs): no persistence, the rules look at trends already. */
static void hit(struct found *f, uint64_t step, int layer)
{
	if (!f->fired) {
		f->fired = true;
		f->first_step = step;
		f->layer = layer;
	}
	f->count++;
}

/* What held at one sample: per symptom, whether and at which layer first. */
struct sample {
	bool hold[SYMPTOM_COUNT];
	int layer[SYMPTOM_COUNT];
};

static void holds(struct sample *x, enum symptom_id id, int layer)
{
	if (!x->hold[id]) {
		x->hold[id] = true;
		x->layer[id] = layer;
	}
}

#define STAT(s, i, l, name) series__stat(s, i, l, DNNFAULT__LAYER_STAT__##name)

static bool is_act(const struct series_layer *l, const char *a)
{
	return strcasecmp(l->activation, a) == 0;
}

static bool is_embedding(const struct series_layer *l)
{
	return strcmp(l->type, "Embedding") == 0 || strcmp(l->type, "EmbeddingBag") == 0;
}

static void gradients(const struct series *s, size_t i, const struct symptom_thresholds *t,
		      struct sample *x)
{
	size_t first = 0, last = 0;
	if (!series__grad_ends(s, i, &first, &last))
		return;
	double g0 = STAT(s, i, first, GRAD_NORM), gl = STAT(s, i, last, GRAD_NORM);
	if (gl > 0 && g0 / gl > t->explode_ratio)
		holds(x, SYMPTOM_exploding_gradient, (int)first);
	/* Every gradient tiny: layers without a max-abs (not computed) are
	 * skipped, but at least one layer must have one. */
	bool all_tiny = true, any = false;
	for (size_t l = 0; l < s->n_layers && all_tiny; l++) {
		float m = STAT(s, i, l, GRAD_MAX_ABS);
		if (isfinite(m)) {
			any = true;
			all_tiny = m < t->vanish_max_abs;
		}
	}
	all_tiny = all_tiny && any;
	if ((gl > 0 && g0 / gl < t->vanish_ratio && g0 < t->vanish_first_norm) || all_tiny)
		holds(x, SYMPTOM_vanishing_gradient, (int)first);
}

/* The highest finite learning rate of the series; NaN without one. */
static double lr_peak(const struct series *s)
{
	double peak = NAN;
	for (size_t i = 0; i < s->n; i++) {
		double lr = s->col[SERIES_LR][i];
		if (s->has[SERIES_LR][i] && isfinite(lr) && !(lr <= peak))
			peak = lr;
	}
	return peak;
}

/* Rules about one layer at one sample; `scheduled_low`: a schedule has the
 * learning rate far below its peak near the planned end, or before it
 * raises it again, so small updates are expected. */
static void layer_rules(const struct series *s, size_t i, size_t l, const struct symptom_thresholds *t,
			bool scheduled_low, struct sample *x)
{
	const struct series_layer *layer = &s->layers[l];
	if (STAT(s, i, l, NAN_COUNT) > 0 || STAT(s, i, l, INF_COUNT) > 0)
		holds(x, SYMPTOM_nan_tensor, (int)l);
	if ((is_act(layer, "relu") || is_act(layer, "relu6")) &&
	    STAT(s, i, l, ACT_NONPOS_FRAC) >= t->dead_frac)
		holds(x, SYMPTOM_dead_relu, (int)l);
	if ((is_act(layer, "sigmoid") || is_act(layer, "tanh")) &&
	    STAT(s, i, l, ACT_SATURATED_FRAC) > t->saturated_frac)
		holds(x, SYMPTOM_saturated_activation, (int)l);
	float ratio = STAT(s, i, l, UPDATE_RATIO);
	if (isfinite(ratio) && ((ratio < t->update_low && !scheduled_low) || ratio > t->update_high))
		holds(x, SYMPTOM_update_ratio, (int)l);
	bool large = STAT(s, i, l, WEIGHT_MAX_ABS) > t->large_weight;
	if (large && t->embedding_large_std > 0 && is_embedding(layer))
		large = STAT(s, i, l, WEIGHT_STD) > t->embedding_large_std;
	if (large)
		holds(x, SYMPTOM_large_weights, (int)l);
	/* Unchanged: the relative update is below rtol; without update ratios
	 * (a client that does not send them), the norm did not move. */
	bool unchanged = isfinite(ratio) && ratio < t->unchanged_rtol;
	if (!isfinite(ratio) && i > 0) {
		float w = STAT(s, i, l, WEIGHT_NORM), v = STAT(s, i - 1, l, WEIGHT_NORM);
		unchanged = isfinite(w) && fabsf(v - w) <= (float)t->unchanged_rtol * fabsf(w);
	}
	if (unchanged && !scheduled_low)
		holds(x, SYMPTOM_unchanged_weights, (int)l);
}

static double window_mean(const struct series *s, size_t from, size_t n)
{
	double sum = 0;
	size_t k = 0;
	for (size_t j = from; j < from + n; j++)
		if (isfinite(s->col[SERIES_LOSS][j])) {
			sum += s->col[SERIES_LOSS][j];
			k++;
		}
	return k ? sum / (double)k : NAN;
}

/* Running input statistics: one batch's mean and std are noisy, so the
 * input rule looks at their averages over the samples so far. */
struct inputs {
	double mean, std, lo, hi;
	size_t n;
};

/* The loss window in samples: loss_window, or more where the samples are
 * so dense that it spans fewer than loss_window_steps steps. */
static size_t loss_window_of(const struct series *s, const struct symptom_thresholds *t)
{
	size_t w = t->loss_window;
	if (t->loss_window_steps == 0 || s->n < 2 || s->step[s->n - 1] <= s->step[0])
		return w;
	double spacing = (double)(s->step[s->n - 1] - s->step[0]) / (double)(s->n - 1);
	double need = ceil((double)t->loss_window_steps / spacing);
	return need > (double)w ? (need < (double)s->n ? (size_t)need : s->n) : w;
}

static void global_rules(const struct series *s, size_t i, const struct symptom_thresholds *t,
			 size_t w, struct inputs *in, struct sample *x)
{
	double loss = s->col[SERIES_LOSS][i];
	if (s->has[SERIES_LOSS][i] && (!isfinite(loss) || loss >= t->loss_max))
		holds(x, SYMPTOM_nan_loss, -1);
	/* SageMaker-style: the last window's mean loss is no lower than the
	 * window before it. */
	if (w > 0 && i + 1 >= 2 * w) {
		double now = window_mean(s, i + 1 - w, w), before = window_mean(s, i + 1 - 2 * w, w);
		if (isfinite(now) && isfinite(before) && now >= before)
			holds(x, SYMPTOM_loss_not_decreasing, -1);
	}
	if (s->has[SERIES_INPUT_MEAN][i] && s->has[SERIES_INPUT_STD][i] &&
	    isfinite(s->col[SERIES_INPUT_MEAN][i]) && isfinite(s->col[SERIES_INPUT_STD][i])) {
		in->n++;
		in->mean += (s->col[SERIES_INPUT_MEAN][i] - in->mean) / (double)in->n;
		in->std += (s->col[SERIES_INPUT_STD][i] - in->std) / (double)in->n;
		in->lo = in->n == 1 ? s->col[SERIES_INPUT_MIN][i] : fmin(in->lo, s->col[SERIES_INPUT_MIN][i]);
		in->hi = in->n == 1 ? s->col[SERIES_INPUT_MAX][i] : fmax(in->hi, s->col[SERIES_INPUT_MAX][i]);
		bool outside = in->lo < -t->input_range || in->hi > t->input_range;
		bool unscaled = fabs(in->mean) > t->input_mean || fabs(in->std - 1) > 0.5;
		if (outside && unscaled)
			holds(x, SYMPTOM_abnormal_input, -1);
	}
}

/* How many consecutive samples a rule must hold before it counts: NaNs
 * count at once; rules that single noisy batches can trip need a streak. */
static size_t needed(enum symptom_id id, const struct symptom_thresholds *t)
{
	switch (id) {
	case SYMPTOM_nan_loss:
	case SYMPTOM_nan_tensor:
		return 1;
	case SYMPTOM_unchanged_weights:
		return t->unchanged_checks;
	default:
		return t->persist;
	}
}

static void track(struct found *f, const struct sample *x, uint64_t step,
		  const struct symptom_thresholds *t)
{
	for (int k = 0; k < SYMPTOM_COUNT; k++) {
		struct found *g = &f[k];
		if (!x->hold[k]) {
			g->streak = 0;
			continue;
		}
		if (g->streak++ == 0) {
			g->streak_step = step;
			g->streak_layer = x->layer[k];
		}
		if (g->streak >= needed((enum symptom_id)k, t)) {
			if (!g->fired) {
				g->fired = true;
				g->first_step = g->streak_step;
				g->layer = g->streak_layer;
			}
			g->count++;
		}
	}
}

/* The metric of a check (epoch): validation when given, else training. */
static double check_metric(const struct series *s, size_t e)
{
	double v = s->epoch[EPOCH_VAL_METRIC][e];
	return isfinite(v) ? v : s->epoch[EPOCH_TRAIN_METRIC][e];
}

static void epoch_rules(const struct series *s, const struct symptom_thresholds *t, struct found *f)
{
	size_t n = s->n_epochs;
	size_t swings = 0, checks = 0;
	double best = NAN, best_gain = -INFINITY;
	/* The accuracy rules read the metric as accuracy: higher is better.
	 * A regression metric may be an error (lower is better), so they only
	 * apply to classification. */
	bool accuracy = s->task == DNNFAULT__TASK_KIND__TASK_CLASSIFICATION;
	for (size_t e = 0; e < n; e++) {
		uint64_t step = s->epoch_step[e];
		double m = accuracy ? check_metric(s, e) : NAN;
		if (e > 0) {
			double prev = check_metric(s, e - 1);
			if (isfinite(m) && isfinite(prev)) {
				checks++;
				/* A swing is a fall: rising accuracy is progress. */
				swings += prev - m >= t->unstable_swing;
				if (e + 1 >= t->min_checks &&
				    (double)swings >= t->unstable_share * (double)checks)
					hit(&f[SYMPTOM_unstable_loss], step, -1);
			}
		}
		if (isfinite(m)) {
			if (isfinite(best) && m - best > best_gain)
				best_gain = m - best;
			if (!isfinite(best) || m > best)
				best = m;
			if (e + 1 >= t->min_checks && best_gain < t->slow_gain)
				hit(&f[SYMPTOM_slow_convergence], step, -1);
		}
		double tm = s->epoch[EPOCH_TRAIN_METRIC][e], vm = s->epoch[EPOCH_VAL_METRIC][e];
		bool gap = accuracy && isfinite(tm) && isfinite(vm) && tm - vm >= t->overfit_gap;
		bool diverging = false;
		if (e >= 2) {
			const double *vl = s->epoch[EPOCH_VAL_LOSS], *tl = s->epoch[EPOCH_TRAIN_LOSS];
			diverging = vl[e] > vl[e - 1] && vl[e - 1] > vl[e - 2] && tl[e] < tl[e - 1] &&
				    tl[e - 1] < tl[e - 2];
		}
		if (gap || diverging)
			hit(&f[SYMPTOM_overfitting], step, -1);
	}
}

static int by_first_step(const void *a, const void *b)
{
	const struct symptom *x = a, *y = b;
	if (x->first_step != y->first_step)
		return x->first_step < y->first_step ? -1 : 1;
	return (int)x->id - (int)y->id;
}

size_t symptoms__detect(const struct series *s, const struct symptom_thresholds *t,
			struct symptom out[SYMPTOM_COUNT])
{
	struct found f[SYMPTOM_COUNT];
	struct inputs in = {0};
	memset(f, 0, sizeof f);
	double peak = lr_peak(s);
	/* The last sample whose learning rate is back above the floor: low
	 * stretches before it end in a restart (SGDR), not a collapse. */
	size_t last_high = 0;
	for (size_t i = 0; t->lr_scheduled_frac > 0 && i < s->n; i++)
		if (s->has[SERIES_LR][i] && s->col[SERIES_LR][i] >= t->lr_scheduled_frac * peak)
			last_high = i;
	size_t w = loss_window_of(s, t);
	for (size_t i = 0; i < s->n; i++) {
		struct sample x;
		memset(&x, 0, sizeof x);
		global_rules(s, i, t, w, &in, &x);
		gradients(s, i, t, &x);
		double lr = s->col[SERIES_LR][i];
		bool near_end = s->planned_steps > 0 && (double)s->step[i] >= 0.9 * (double)s->planned_steps;
		bool scheduled_low = t->lr_scheduled_frac > 0 && (near_end || i < last_high) &&
				     s->has[SERIES_LR][i] && lr < t->lr_scheduled_frac * peak;
		for (size_t l = 0; l < s->n_layers; l++)
			layer_rules(s, i, l, t, scheduled_low, &x);
		track(f, &x, s->step[i], t);
	}
	epoch_rules(s, t, f);
	size_t n = 0;
	for (int k = 0; k < SYMPTOM_COUNT; k++)
		if (f[k].fired)
			out[n++] = (struct symptom){.id = (enum symptom_id)k, .first_step = f[k].first_step,
						    .layer = f[k].layer, .count = f[k].count};
	qsort(out, n, sizeof *out, by_first_step);
	return n;
}
