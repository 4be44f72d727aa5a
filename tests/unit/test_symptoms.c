/* Rule detectors on hand-built series with known answers: each symptom
 * fires where it should (first step, layer) and not on a healthy series. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "series_builder.h"
#include "symptoms.h"

static const struct symptom *find(const struct symptom *out, size_t n, enum symptom_id id)
{
	for (size_t i = 0; i < n; i++)
		if (out[i].id == id)
			return &out[i];
	return NULL;
}

static void healthy_has_no_symptoms(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 50; i++) {
		set_healthy(&b, i);
		push(&b);
	}
	for (uint32_t e = 0; e < 5; e++) {
		Dnnfault__Epoch ep = DNNFAULT__EPOCH__INIT;
		ep.has_step = ep.has_train_metric = ep.has_val_metric = ep.has_train_loss = ep.has_val_loss = 1;
		ep.step = e * 100;
		ep.train_metric = 0.5 + 0.1 * e;
		ep.val_metric = 0.48 + 0.1 * e;
		ep.train_loss = 1.0 / (e + 1);
		ep.val_loss = 1.1 / (e + 1);
		assert_int_equal(series__append_epoch(&b.s, &ep), 0);
	}
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	for (size_t i = 0; i < n; i++)
		print_error("unexpected %s at %llu\n", symptoms__name(out[i].id),
			    (unsigned long long)out[i].first_step);
	assert_int_equal(n, 0);
	series__free(&b.s);
}

/* One series per case: steps 0..29 healthy, a mutation from sample 12 on. */
struct step_case {
	const char *what;
	void (*mutate)(struct builder *b, uint64_t i);
	enum symptom_id want;
	int layer;
};

static void m_nan_loss(struct builder *b, uint64_t i) { (void)i; b->step.loss = NAN; }
static void m_big_loss(struct builder *b, uint64_t i) { (void)i; b->step.loss = 5e3; }
static void m_nan_tensor(struct builder *b, uint64_t i) { (void)i; b->stats[1 * 16 + S(NAN_COUNT)] = 3; }
static void m_explode(struct builder *b, uint64_t i) { (void)i; b->stats[0 * 16 + S(GRAD_NORM)] = 100.0f; b->stats[2 * 16 + S(GRAD_NORM)] = 1.0f; }
static void m_vanish(struct builder *b, uint64_t i)
{
	(void)i;
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(GRAD_MAX_ABS)] = 1e-9f;
}
static void m_vanish_ratio(struct builder *b, uint64_t i) { (void)i; b->stats[0 * 16 + S(GRAD_NORM)] = 1e-5f; }
static void m_dead(struct builder *b, uint64_t i) { (void)i; b->stats[1 * 16 + S(ACT_NONPOS_FRAC)] = 0.95f; }
static void m_large(struct builder *b, uint64_t i) { (void)i; b->stats[2 * 16 + S(WEIGHT_MAX_ABS)] = 9.0f; }
static void m_update_high(struct builder *b, uint64_t i) { (void)i; b->stats[0 * 16 + S(UPDATE_RATIO)] = 0.5f; }
static void m_update_low(struct builder *b, uint64_t i) { (void)i; b->stats[1 * 16 + S(UPDATE_RATIO)] = 1e-7f; }
static void m_unchanged(struct builder *b, uint64_t i)
{
	(void)i;
	b->stats[1 * 16 + S(WEIGHT_NORM)] = 4.0f;
	b->stats[1 * 16 + S(UPDATE_RATIO)] = 0.0f;
}
static void m_flat_loss(struct builder *b, uint64_t i) { b->step.loss = 2.3 + 0.01 * (double)(i % 2); }
static void m_input(struct builder *b, uint64_t i)
{
	(void)i;
	b->step.input_mean = 8.0;
	b->step.input_std = 5.0;
	b->step.input_min = 0.0;
	b->step.input_max = 16.0;
}

static void step_rules(void **state)
{
	(void)state;
	const struct step_case cases[] = {
		{"NaN loss", m_nan_loss, SYMPTOM_nan_loss, -1},
		{"loss >= 1e3", m_big_loss, SYMPTOM_nan_loss, -1},
		{"NaN in a layer", m_nan_tensor, SYMPTOM_nan_tensor, 1},
		{"first/last grad ratio 100", m_explode, SYMPTOM_exploding_gradient, 0},
		{"all gradients below 1e-7", m_vanish, SYMPTOM_vanishing_gradient, 0},
		{"first/last ratio 1e-4, first norm 1e-5", m_vanish_ratio, SYMPTOM_vanishing_gradient, 0},
		{"95% of a ReLU layer <= 0", m_dead, SYMPTOM_dead_relu, 1},
		{"|w| = 9", m_large, SYMPTOM_large_weights, 2},
		{"update ratio 0.5", m_update_high, SYMPTOM_update_ratio, 0},
		{"update ratio 1e-7", m_update_low, SYMPTOM_update_ratio, 1},
		{"weights frozen", m_unchanged, SYMPTOM_unchanged_weights, 1},
		{"loss flat", m_flat_loss, SYMPTOM_loss_not_decreasing, -1},
		{"raw pixel inputs", m_input, SYMPTOM_abnormal_input, -1},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct builder b;
		begin(&b);
		for (uint64_t i = 0; i < 30; i++) {
			set_healthy(&b, i);
			if (i >= 12)
				cases[c].mutate(&b, i);
			push(&b);
		}
		struct symptom out[SYMPTOM_COUNT];
		size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
		const struct symptom *x = find(out, n, cases[c].want);
		if (x == NULL)
			fail_msg("%s: %s did not fire", cases[c].what, symptoms__name(cases[c].want));
		/* The onset is the mutation's first sample (rules that need a
		 * streak report where it began), except for the loss window. */
		uint64_t want_step = cases[c].want == SYMPTOM_loss_not_decreasing ? 0 : 120;
		if (want_step != 0 && x->first_step != want_step)
			fail_msg("%s: first step %llu, want %llu", cases[c].what,
				 (unsigned long long)x->first_step, (unsigned long long)want_step);
		if (x->layer != cases[c].layer)
			fail_msg("%s: layer %d, want %d", cases[c].what, x->layer, cases[c].layer);
		series__free(&b.s);
	}
}

/* 50 samples of a run planned for 500 steps; from sample `from` until
 * `until` (then a restart: as before), the updates are tiny, then 0, and
 * the learning rate of 1e-3 decays below 1% of it (or stays at 1e-6
 * throughout when `always_low`). The first step of `id` under the users'
 * thresholds (lr_scheduled_frac) or the features' (`frac` 0); UINT64_MAX
 * when it did not fire. */
static uint64_t small_updates_onset_until(uint64_t from, uint64_t until, bool always_low, double frac,
					  enum symptom_id id)
{
	struct builder b;
	begin(&b);
	b.s.planned_steps = 500;
	for (uint64_t i = 0; i < 50; i++) {
		set_healthy(&b, i);
		b.step.has_lr = 1;
		b.step.lr = always_low ? 1e-6 : 1e-3;
		if (i >= from && i < until) {
			if (!always_low)
				b.step.lr = 9e-6 * (double)(49 - i) / (double)(49 - from);
			for (int l = 0; l < L; l++)
				b.stats[l * 16 + S(UPDATE_RATIO)] = i < from + 2 ? 1e-7f : 0.0f;
		}
		push(&b);
	}
	struct symptom_thresholds t = symptom_defaults;
	t.lr_scheduled_frac = frac;
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &t, out);
	const struct symptom *x = find(out, n, id);
	uint64_t first = x != NULL ? x->first_step : UINT64_MAX;
	series__free(&b.s);
	return first;
}

static uint64_t small_updates_onset(uint64_t from, bool always_low, double frac, enum symptom_id id)
{
	return small_updates_onset_until(from, 50, always_low, frac, id);
}

/* Small updates where a schedule decays the learning rate to 0 in the last
 * tenth of the plan, or before it restarts (SGDR), are expected (users do
 * not see them); the same early in the run without a restart (a schedule
 * stepped too often), or at a learning rate that was always that low, are
 * symptoms; the features judge every sample. */
static void scheduled_low_learning_rates_are_not_judged(void **state)
{
	(void)state;
	const enum symptom_id ids[] = {SYMPTOM_update_ratio, SYMPTOM_unchanged_weights};
	for (size_t k = 0; k < 2; k++) {
		assert_true(small_updates_onset(45, false, SYMPTOM_LR_SCHEDULED_FRAC, ids[k]) == UINT64_MAX);
		assert_int_equal(small_updates_onset(45, false, 0, ids[k]), 450);
		assert_int_equal(small_updates_onset(20, false, SYMPTOM_LR_SCHEDULED_FRAC, ids[k]), 200);
		assert_int_equal(small_updates_onset(45, true, SYMPTOM_LR_SCHEDULED_FRAC, ids[k]), 450);
		assert_true(small_updates_onset_until(20, 30, false, SYMPTOM_LR_SCHEDULED_FRAC, ids[k]) ==
			    UINT64_MAX);
		assert_int_equal(small_updates_onset_until(20, 30, false, 0, ids[k]), 200);
	}
}

/* fc1 as an Embedding whose largest weight is 5.5 with std `std`: whether
 * large_weights fires under the users' thresholds or the features'. */
static bool large_embedding_fires(float std, bool users)
{
	struct builder b;
	begin(&b);
	free(b.s.layers[0].type);
	b.s.layers[0].type = strdup("Embedding");
	assert_non_null(b.s.layers[0].type);
	for (uint64_t i = 0; i < 10; i++) {
		set_healthy(&b, i);
		b.stats[S(WEIGHT_MAX_ABS)] = 5.5f;
		b.stats[S(WEIGHT_STD)] = std;
		push(&b);
	}
	struct symptom_thresholds t = symptom_defaults;
	if (users)
		t.embedding_large_std = SYMPTOM_EMBEDDING_LARGE_STD;
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &t, out);
	const struct symptom *x = find(out, n, SYMPTOM_large_weights);
	series__free(&b.s);
	return x != NULL && x->layer == 0;
}

/* A default-initialised Embedding (N(0, 1)) reaches |w| 5 in a large
 * vocabulary: users see large_weights on it only once its weights spread
 * beyond that; the features keep AutoTrainer's |w| > 5. */
static void embeddings_are_large_by_their_spread(void **state)
{
	(void)state;
	assert_false(large_embedding_fires(1.0f, true));
	assert_true(large_embedding_fires(1.0f, false));
	assert_true(large_embedding_fires(3.0f, true));
}

/* A flat loss from sample 12 of 60, sampled every `every` steps: whether
 * loss_not_decreasing fires with windows of at least `window_steps`. */
static bool flat_loss_fires(uint64_t every, uint64_t window_steps)
{
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 60; i++) {
		set_healthy(&b, i);
		b.step.step = i * every;
		if (i >= 12)
			m_flat_loss(&b, i);
		push(&b);
	}
	struct symptom_thresholds t = symptom_defaults;
	t.loss_window_steps = window_steps;
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &t, out);
	bool fired = find(out, n, SYMPTOM_loss_not_decreasing) != NULL;
	series__free(&b.s);
	return fired;
}

/* Users' windows span at least 500 steps: 10 samples of a run sampled at
 * every step are 10 minibatch losses, noise rather than a trend. The
 * features' windows are 10 samples whatever the interval. */
static void loss_window_spans_steps(void **state)
{
	(void)state;
	assert_true(flat_loss_fires(1, 0));
	assert_false(flat_loss_fires(1, 500));
	assert_true(flat_loss_fires(50, 500));
	assert_true(flat_loss_fires(20, 500));	/* windows of 25 samples fit in 60 */
	assert_false(flat_loss_fires(5, 500));	/* of 100 do not */
}

static void saturation_only_for_sigmoid_tanh(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	free(b.s.layers[0].activation);
	b.s.layers[0].activation = strdup("sigmoid");
	for (uint64_t i = 0; i < 5; i++) {
		set_healthy(&b, i);
		b.stats[0 * 16 + S(ACT_SATURATED_FRAC)] = 0.8f;	/* sigmoid layer */
		b.stats[1 * 16 + S(ACT_SATURATED_FRAC)] = 0.8f;	/* relu layer: ignored */
		push(&b);
	}
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	const struct symptom *x = find(out, n, SYMPTOM_saturated_activation);
	assert_non_null(x);
	assert_int_equal(x->layer, 0);
	assert_int_equal(x->first_step, 0);
	/* Counted from the third sample in a row on. */
	assert_int_equal(x->count, 3);
	series__free(&b.s);
}

/* One noisy batch is no symptom: per-sample rules need a streak, and the
 * input rule averages over the samples so far. */
static void single_blips_do_not_fire(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(&b, i);
		if (i == 10 || i == 11 || i == 20) {
			b.stats[1 * 16 + S(ACT_NONPOS_FRAC)] = 0.9f;
			b.stats[2 * 16 + S(WEIGHT_MAX_ABS)] = 7.0f;
			b.step.input_mean = 0.35;
			b.step.input_std = 1.6;
		}
		push(&b);
	}
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	assert_null(find(out, n, SYMPTOM_dead_relu));
	assert_null(find(out, n, SYMPTOM_large_weights));
	assert_null(find(out, n, SYMPTOM_abnormal_input));
	series__free(&b.s);
}

static void add_epochs(struct builder *b, const double *train_m, const double *val_m,
		       const double *train_l, const double *val_l, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		Dnnfault__Epoch ep = DNNFAULT__EPOCH__INIT;
		ep.has_step = 1;
		ep.step = (e + 1) * 100;
		ep.has_train_metric = train_m != NULL;
		ep.train_metric = train_m ? train_m[e] : 0;
		ep.has_val_metric = val_m != NULL;
		ep.val_metric = val_m ? val_m[e] : 0;
		ep.has_train_loss = train_l != NULL;
		ep.train_loss = train_l ? train_l[e] : 0;
		ep.has_val_loss = val_l != NULL;
		ep.val_loss = val_l ? val_l[e] : 0;
		assert_int_equal(series__append_epoch(&b->s, &ep), 0);
	}
}

static void epoch_rules(void **state)
{
	(void)state;
	struct symptom out[SYMPTOM_COUNT];
	struct builder b;

	/* Accuracy falls by >= 0.03 on 2 of 4 checks: unstable, from check 3. */
	begin(&b);
	const double unstable[] = {0.5, 0.6, 0.55, 0.65, 0.6};
	add_epochs(&b, NULL, unstable, NULL, NULL, 5);
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	const struct symptom *x = find(out, n, SYMPTOM_unstable_loss);
	assert_non_null(x);
	assert_int_equal(x->first_step, 300);
	series__free(&b.s);

	/* Accuracy creeps up by 0.005 per check: slow convergence at check 3. */
	begin(&b);
	const double slow[] = {0.30, 0.305, 0.31, 0.315};
	add_epochs(&b, NULL, slow, NULL, NULL, 4);
	n = symptoms__detect(&b.s, &symptom_defaults, out);
	x = find(out, n, SYMPTOM_slow_convergence);
	assert_non_null(x);
	assert_int_equal(x->first_step, 300);
	assert_null(find(out, n, SYMPTOM_unstable_loss));
	series__free(&b.s);

	/* Validation loss rises twice while training loss falls: overfitting. */
	begin(&b);
	const double tl[] = {1.0, 0.8, 0.6, 0.4}, vl[] = {1.0, 0.9, 0.95, 1.1};
	add_epochs(&b, NULL, NULL, tl, vl, 4);
	n = symptoms__detect(&b.s, &symptom_defaults, out);
	x = find(out, n, SYMPTOM_overfitting);
	assert_non_null(x);
	assert_int_equal(x->first_step, 400);
	series__free(&b.s);

	/* Or a train/val metric gap of 0.1. */
	begin(&b);
	const double tm[] = {0.7, 0.9}, vm[] = {0.65, 0.78};
	add_epochs(&b, tm, vm, NULL, NULL, 2);
	n = symptoms__detect(&b.s, &symptom_defaults, out);
	x = find(out, n, SYMPTOM_overfitting);
	assert_non_null(x);
	assert_int_equal(x->first_step, 200);
	series__free(&b.s);
}

/* A regression metric may be an error that falls: no accuracy rules. */
static void regression_metrics_are_not_accuracy(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	b.s.task = DNNFAULT__TASK_KIND__TASK_REGRESSION;
	const double mse[] = {1.0, 0.5, 0.25, 0.12, 0.06};
	add_epochs(&b, mse, mse, NULL, NULL, 5);
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	assert_int_equal(n, 0);
	series__free(&b.s);
}

/* Only gradient norms sent (max-abs not computed, NaN): no vanishing. */
static void missing_stats_are_not_tiny(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 10; i++) {
		set_healthy(&b, i);
		for (int l = 0; l < L; l++)
			b.stats[l * 16 + S(GRAD_MAX_ABS)] = NAN;
		push(&b);
	}
	struct symptom out[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	assert_null(find(out, n, SYMPTOM_vanishing_gradient));
	series__free(&b.s);
}

static void names_are_the_design_ids(void **state)
{
	(void)state;
	assert_string_equal(symptoms__name(SYMPTOM_nan_loss), "nan_loss");
	assert_string_equal(symptoms__name(SYMPTOM_abnormal_input), "abnormal_input");
	assert_string_equal(symptoms__name(SYMPTOM_COUNT), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(healthy_has_no_symptoms),
		cmocka_unit_test(step_rules),
		cmocka_unit_test(scheduled_low_learning_rates_are_not_judged),
		cmocka_unit_test(loss_window_spans_steps),
		cmocka_unit_test(embeddings_are_large_by_their_spread),
		cmocka_unit_test(saturation_only_for_sigmoid_tanh),
		cmocka_unit_test(single_blips_do_not_fire),
		cmocka_unit_test(epoch_rules),
		cmocka_unit_test(regression_metrics_are_not_accuracy),
		cmocka_unit_test(missing_stats_are_not_tiny),
		cmocka_unit_test(names_are_the_design_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
