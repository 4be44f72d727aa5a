#include "baselines.h"

#include <math.h>
#include <string.h>

#include "common.h"

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

/* DeepDiagnosis callbacks.py identifyTensorVariance: a weight variance
 * outside [1e-5, 10] is a "Poor Weight" (initialisation). */
#define DD_VAR_LOW 1e-5
#define DD_VAR_HIGH 10.0

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
		if (bl__contains(s->layers[l].type, "norm"))
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
	const char *a = bl__output_activation(s);
	return bl__classification(s) && bl__loss_input(s->loss_fn) == LOSS_PROBS && bl__act_known(a) &&
	       !bl__act_probability(a);
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
	size_t upto = bl__samples_by(s, step);
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
	if (bl__classification(s) && dd_accuracy_invalid(s, &step))
		fire(&on[DD_INVALID_ACC], step);
	if (bl__classification(s) && dd_accuracy_flat(s, t, &step))
		fire(&on[DD_ACC_FLAT], step);
	int pick = -1;
	for (int k = 0; k < DD_COUNT; k++)
		if (on[k].fired && (pick < 0 || on[k].step < on[pick].step))
			pick = k;
	return pick < 0 ? 0 : dd_fix(s, (enum dd_symptom)pick, on[pick].step, unnormalised);
}
