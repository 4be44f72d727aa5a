/* Feature extraction on hand-built series with known answers, one test per
 * family. Features are looked up by name, never by index, so that these
 * tests hold when the schema grows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "run_features.h"
#include "symptoms.h"

#define MAXL 4
#define NSTAT CHUNK_STATS_PER_LAYER
#define S(name) DNNFAULT__LAYER_STAT__##name
#define CLS DNNFAULT__TASK_KIND__TASK_CLASSIFICATION
#define REG DNNFAULT__TASK_KIND__TASK_REGRESSION

/* What a table-driven test is at, for failure messages. */
static const char *at_case = "";

static size_t index_of(const char *name)
{
	for (size_t i = 0; i < features__count(); i++)
		if (strcmp(features__name(i), name) == 0)
			return i;
	fail_msg("no feature named %s", name);
	return 0;
}

static double feat(const double *x, const char *name)
{
	return x[index_of(name)];
}

/* `want` NaN: the feature must be missing; otherwise equal within `tol`
 * (relative above 1, absolute below). */
static void expect_tol(const double *x, const char *name, double want, double tol)
{
	double got = feat(x, name);
	if (isnan(want)) {
		if (!isnan(got))
			fail_msg("%s%s%s = %.17g, want NaN", at_case, *at_case ? ": " : "", name, got);
		return;
	}
	if (!(fabs(got - want) <= tol * fmax(1, fabs(want))))
		fail_msg("%s%s%s = %.17g, want %.17g", at_case, *at_case ? ": " : "", name, got, want);
}

/* Layer statistics travel as floats: compare those to float precision. */
#define expect(x, name, want) expect_tol(x, name, want, 1e-9)
#define expect_f(x, name, want) expect_tol(x, name, want, 1e-6)

/* Caller frees. */
static double *compute(const struct series *s, size_t upto)
{
	double *x = malloc(features__count() * sizeof *x);
	assert_non_null(x);
	assert_int_equal(features__compute(s, upto, x), 0);
	return x;
}

/* Both NaN or bit-for-bit equal: the same inputs give the same numbers. */
static void expect_same(const double *a, const double *b, const char *what, size_t k)
{
	for (size_t i = 0; i < features__count(); i++)
		if (!(isnan(a[i]) && isnan(b[i])) && a[i] != b[i])
			fail_msg("%s, k=%zu: %s %.17g != %.17g", what, k, features__name(i), a[i], b[i]);
}

struct builder {
	struct series s;
	size_t nl;
	float stats[MAXL * NSTAT];
	Dnnfault__Step step;
};

static const struct series_layer mlp[] = {
	{.name = "fc1", .type = "Linear", .activation = "relu", .param_count = 100, .fan_in = 100},
	{.name = "fc2", .type = "Linear", .activation = "relu", .param_count = 100, .fan_in = 50},
	{.name = "fc3", .type = "Linear", .activation = "none", .param_count = 10, .fan_in = 25},
};

/* Optimizer settings start unknown (NaN), as the store loader leaves them. */
static void begin(struct builder *b, const struct series_layer *layers, size_t nl)
{
	memset(b, 0, sizeof *b);
	assert_true(nl <= MAXL);
	b->nl = nl;
	assert_int_equal(series__set_layers(&b->s, layers, nl), 0);
	b->s.task = CLS;
	b->s.num_classes = 10;
	b->s.initial_lr = b->s.momentum = b->s.weight_decay = b->s.beta1 = b->s.beta2 = b->s.alpha = NAN;
}

/* Starts a step that sends nothing but its number: every layer statistic
 * NaN until set. */
static void at(struct builder *b, uint64_t step)
{
	dnnfault__step__init(&b->step);
	b->step.step = step;
	for (size_t k = 0; k < b->nl * NSTAT; k++)
		b->stats[k] = NAN;
	b->step.n_layer_stats = b->nl * NSTAT;
	b->step.layer_stats = b->stats;
}

static void stat(struct builder *b, size_t layer, int which, float v)
{
	b->stats[layer * NSTAT + (size_t)which] = v;
}

static void push(struct builder *b)
{
	assert_int_equal(series__append(&b->s, &b->step), 0);
}

static void epoch(struct series *s, uint64_t step, double tl, double tm, double vl, double vm)
{
	Dnnfault__Epoch e = DNNFAULT__EPOCH__INIT;
	e.has_step = e.has_train_loss = e.has_train_metric = e.has_val_loss = e.has_val_metric = 1;
	e.step = step;
	e.train_loss = tl;
	e.train_metric = tm;
	e.val_loss = vl;
	e.val_metric = vm;
	assert_int_equal(series__append_epoch(s, &e), 0);
}

/* One sample per step 0, 1, ... with these losses. */
static void losses(struct builder *b, const double *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		at(b, i);
		b->step.has_loss = 1;
		b->step.loss = v[i];
		push(b);
	}
}

static void schema_names(void **state)
{
	(void)state;
	size_t n = features__count();
	assert_true(n > 0);
	for (size_t i = 0; i < n; i++) {
		const char *a = features__name(i);
		assert_non_null(a);
		assert_true(a[0] != '\0');
		assert_true(strlen(a) < FEATURES_NAME_MAX);
		for (size_t j = 0; j < i; j++)
			if (strcmp(a, features__name(j)) == 0)
				fail_msg("feature %zu and %zu are both named %s", j, i, a);
	}
	/* Unique names: the count is the number of distinct names. */
	assert_null(features__name(n));
	assert_int_equal(features__count(), n);
	/* FNV-1a over each name and its terminating NUL, in schema order. */
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		for (const char *c = features__name(i);; c++) {
			h = (h ^ (uint8_t)*c) * 1099511628211ULL;
			if (*c == '\0')
				break;
		}
	assert_true(features__schema_hash() == h);
	assert_true(features__schema_hash() == features__schema_hash());
	/* One name of each family, so a renamed family shows up here. */
	const char *some[] = {"loss_slope", "grad_norm_first_over_last_log", "start_weight_std_layer_mean",
			      "weight_growth_log_layer_max", "nan_count_log10", "val_loss_rise_share",
			      "sym_nan_loss_onset", "mismatch_squashed_logits", "init_scale_layer_mean",
			      "loss_first_over_chance", "input_abs_max", "progress"};
	for (size_t i = 0; i < sizeof some / sizeof some[0]; i++)
		(void)index_of(some[i]);
}

static void temporal_aggregates(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	const double v[] = {4, 3, 2, 1};
	losses(&b, v, 4);
	double *x = compute(&b.s, b.s.n);
	expect(x, "loss_first", 4);
	expect(x, "loss_last", 1);
	expect(x, "loss_min", 1);
	expect(x, "loss_max", 4);
	expect(x, "loss_mean", 2.5);
	/* Population std: deviations +-1.5, +-0.5 -> (2.25+0.25)*2/4 = 1.25. */
	expect(x, "loss_std", sqrt(1.25));
	expect(x, "loss_skew", 0);	/* symmetric */
	/* Least squares against progress t = 0, 1/3, 2/3, 1: sum t*d =
	 * (0.5 - 1 - 4.5)/3 = -5/3, sum t^2 - (sum t)^2/4 = 14/9 - 1 = 5/9,
	 * slope -3, over |first| = 4. */
	expect(x, "loss_slope", -0.75);
	expect(x, "loss_last_over_first", 0.25);
	expect(x, "loss_min_over_first", 0.25);
	/* Last quarter of 4 samples: the last one. */
	expect(x, "loss_recent_over_first", 0.25);
	expect(x, "loss_cv", sqrt(1.25) / 2.5);
	expect(x, "loss_nonfinite", 0);
	/* Not sent at all: missing, and every sample counts as non-finite. */
	expect(x, "accuracy_first", NAN);
	expect(x, "accuracy_std", NAN);
	expect(x, "accuracy_skew", NAN);
	expect(x, "accuracy_slope", NAN);
	expect(x, "accuracy_nonfinite", 1);
	free(x);
	series__free(&b.s);

	/* A non-finite sample is left out of everything but its share:
	 * 4, 3, Inf, 2, 1 gives the numbers of 4, 3, 2, 1. */
	begin(&b, mlp, 3);
	const double w[] = {4, 3, INFINITY, 2, 1};
	losses(&b, w, 5);
	x = compute(&b.s, b.s.n);
	expect(x, "loss_mean", 2.5);
	expect(x, "loss_slope", -0.75);
	expect(x, "loss_last", 1);
	expect(x, "loss_nonfinite", 0.2);
	free(x);
	series__free(&b.s);

	/* 1, 1, 1, 1, 1, 1, 1, 9: mean 2, deviations -1 (x7) and 7.
	 * var = (7 + 49)/8 = 7, third moment (-7 + 343)/8 = 42, skew =
	 * 42 / 7^1.5 = 6/sqrt(7). Progress t = j/7: sum t*d = -3 + 7 = 4,
	 * sum t^2 - (sum t)^2/8 = 20/7 - 2 = 6/7, slope 14/3. The last
	 * quarter (samples 6 and 7) averages 5. */
	begin(&b, mlp, 3);
	const double u[] = {1, 1, 1, 1, 1, 1, 1, 9};
	losses(&b, u, 8);
	x = compute(&b.s, b.s.n);
	expect(x, "loss_std", sqrt(7));
	expect(x, "loss_skew", 6 / sqrt(7));
	expect(x, "loss_slope", 14.0 / 3);
	expect(x, "loss_last_over_first", 9);
	expect(x, "loss_min_over_first", 1);
	expect(x, "loss_recent_over_first", 5);
	expect(x, "loss_cv", sqrt(7) / 2);
	free(x);
	series__free(&b.s);
}

/* A constant series has no spread and no skew, whatever the rounding of
 * its mean (0.1 summed six times is not 0.6). */
static void constant_series_has_no_skew(void **state)
{
	(void)state;
	const double values[] = {0.1, 0.05, 0.003, 0.001};
	for (size_t c = 0; c < sizeof values / sizeof values[0]; c++) {
		for (size_t m = 3; m <= 12; m += 3) {
			struct builder b;
			begin(&b, mlp, 3);
			for (size_t i = 0; i < m; i++) {
				at(&b, i);
				b.step.has_lr = 1;
				b.step.lr = values[c];
				push(&b);
			}
			double *x = compute(&b.s, b.s.n);
			expect(x, "lr_std", 0);
			expect(x, "lr_skew", 0);
			expect(x, "lr_cv", 0);
			expect(x, "lr_slope", 0);
			expect(x, "lr_last_over_first", 1);
			free(x);
			series__free(&b.s);
		}
	}
}

/* 8 samples: "now" is the mean of samples 3..7, "start" of 0..2. */
static void layer_aggregates(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	for (uint64_t i = 0; i < 8; i++) {
		at(&b, i);
		stat(&b, 0, S(GRAD_NORM), (float)i);
		stat(&b, 1, S(GRAD_NORM), 2.0f);
		stat(&b, 2, S(GRAD_NORM), 0.05f);
		stat(&b, 0, S(WEIGHT_NORM), i < 3 ? 1.0f : 100.0f);
		stat(&b, 1, S(WEIGHT_NORM), 3.0f);
		stat(&b, 2, S(WEIGHT_NORM), i < 3 ? 2.0f : 0.2f);
		/* Layer 0 sends no weight mean: the first layer is then fc2. */
		stat(&b, 1, S(WEIGHT_MEAN), -0.5f);
		stat(&b, 2, S(WEIGHT_MEAN), 0.25f);
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	/* fc1: (3+4+5+6+7)/5 = 5; fc2 2; fc3 0.05. */
	expect_f(x, "grad_norm_first_layer", 5);
	expect_f(x, "grad_norm_last_layer", 0.05);
	expect_f(x, "grad_norm_layer_min", 0.05);
	expect_f(x, "grad_norm_layer_max", 5);
	expect_f(x, "grad_norm_layer_mean", (5 + 2 + 0.05) / 3);
	expect_f(x, "grad_norm_first_over_last_log", 2);	/* log10(5/0.05) */
	/* At the start fc1 is (0+1+2)/3 = 1: log10(1/0.05). */
	expect_f(x, "start_grad_norm_first_layer", 1);
	expect_f(x, "start_grad_norm_last_layer", 0.05);
	expect_f(x, "start_grad_norm_first_over_last_log", log10(20));
	expect_f(x, "weight_norm_first_layer", 100);
	expect_f(x, "weight_norm_last_layer", 0.2);
	expect_f(x, "weight_norm_first_over_last_log", log10(500));
	expect_f(x, "weight_mean_first_layer", -0.5);
	expect_f(x, "weight_mean_last_layer", 0.25);
	expect_f(x, "weight_mean_layer_min", -0.5);
	expect_f(x, "weight_mean_layer_max", 0.25);
	expect_f(x, "weight_mean_layer_mean", -0.125);
	expect_f(x, "weight_mean_first_over_last_log", log10(2));	/* of |values| */
	/* Not sent by any layer: missing. */
	expect(x, "act_std_first_layer", NAN);
	expect(x, "act_std_layer_mean", NAN);
	expect(x, "start_act_std_first_over_last_log", NAN);
	/* Growth now/start: fc1 100/1, fc2 3/3, fc3 0.2/2 -> 2, 0, -1. */
	expect_f(x, "weight_growth_log_first_layer", 2);
	expect_f(x, "weight_growth_log_last_layer", -1);
	expect_f(x, "weight_growth_log_layer_min", -1);
	expect_f(x, "weight_growth_log_layer_max", 2);
	expect_f(x, "weight_growth_log_layer_mean", 1.0 / 3);
	expect_f(x, "weight_growth_log_first_over_last_log", log10(2));
	/* The model's gradient norm: sqrt of the layers' squares. */
	expect_f(x, "grad_norm_first", sqrt(0 + 4 + 0.0025));
	expect_f(x, "grad_norm_last", sqrt(49 + 4 + 0.0025));
	expect_f(x, "weight_norm_first", sqrt(1 + 9 + 4));
	expect_f(x, "weight_norm_last", sqrt(10000 + 9 + 0.04));
	free(x);
	series__free(&b.s);
}

static void nan_inf_counts(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	for (uint64_t i = 0; i < 4; i++) {
		at(&b, i);
		for (size_t l = 0; l < 3; l++) {
			stat(&b, l, S(NAN_COUNT), 0);
			stat(&b, l, S(INF_COUNT), 0);
		}
		if (i == 1)
			stat(&b, 1, S(NAN_COUNT), 3);
		if (i == 1 || i == 3)
			stat(&b, 2, S(INF_COUNT), 6);
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	expect(x, "nan_count_log10", log10(1 + 3));
	expect(x, "inf_count_log10", log10(1 + 12));
	expect(x, "nonfinite_tensor_samples", 0.5);	/* samples 1 and 3 of 4 */
	/* nan_tensor held at 2 of 4 samples, from step 1 of steps 0..3. */
	expect(x, "sym_nan_tensor_share", 0.5);
	expect(x, "sym_nan_tensor_onset", 1.0 / 4);
	free(x);
	series__free(&b.s);
}

static void epoch_features(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	b.s.planned_epochs = 6;
	for (uint64_t i = 0; i < 3; i++) {
		at(&b, i * 10);
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	expect(x, "epochs_seen", 0);
	expect(x, "epochs_over_planned", 0);
	expect(x, "train_loss_last_over_first", NAN);
	expect(x, "val_loss_rise_share", NAN);
	expect(x, "val_metric_best", NAN);
	free(x);

	epoch(&b.s, 5, 1.0, 0.5, 1.0, 0.5);
	epoch(&b.s, 10, 0.8, 0.6, 0.9, 0.55);
	epoch(&b.s, 15, 0.6, 0.8, 1.2, 0.6);
	x = compute(&b.s, b.s.n);
	expect(x, "epochs_seen", 3);
	expect(x, "epochs_over_planned", 0.5);
	expect(x, "train_loss_last_over_first", 0.6);
	expect(x, "val_loss_last_over_first", 1.2);
	expect(x, "val_loss_last_over_min", 1.2 / 0.9);
	expect(x, "val_loss_over_train_loss", 2);
	expect(x, "val_loss_rise_share", 0.5);	/* 1.0 -> 0.9 fell, 0.9 -> 1.2 rose */
	expect(x, "val_metric_last", 0.6);
	expect(x, "val_metric_best", 0.6);
	expect(x, "train_metric_last", 0.8);
	expect(x, "train_val_metric_gap", 0.2);
	expect(x, "val_metric_last_gain", 0.05);
	expect(x, "val_loss_last_gain", -0.3);	/* (0.9 - 1.2) / 1.0 */
	free(x);
	series__free(&b.s);
}

/* Loss NaN from the 3rd of 6 samples (steps 0, 10, ..., 50) on. */
static void symptom_share_and_onset(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	for (uint64_t i = 0; i < 6; i++) {
		at(&b, i * 10);
		b.step.has_loss = 1;
		b.step.loss = i < 2 ? 1.0 - 0.1 * (double)i : NAN;
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	expect(x, "sym_nan_loss_share", 4.0 / 6);
	/* First held at step 20 of steps 0..50: 20 / (50 - 0 + 1). */
	expect(x, "sym_nan_loss_onset", 20.0 / 51);
	/* Never fired: share 0, onset 1. */
	expect(x, "sym_dead_relu_share", 0);
	expect(x, "sym_dead_relu_onset", 1);
	expect(x, "loss_nonfinite", 4.0 / 6);
	expect(x, "loss_last", 0.9);
	expect(x, "loss_negative", 0);
	free(x);

	/* Before the NaN (the first two samples) nothing has fired yet. */
	x = compute(&b.s, 2);
	expect(x, "sym_nan_loss_share", 0);
	expect(x, "sym_nan_loss_onset", 1);
	expect(x, "loss_nonfinite", 0);
	free(x);
	series__free(&b.s);
}

struct loss_case {
	const char *what;
	int task;
	uint32_t classes;
	const char *loss_fn;
	char *out;		/* series_layer holds mutable strings */
	const char *mismatch;	/* the one mismatch_* that is 1, or NULL */
	double loss_kind, loss_custom;
};

static void loss_kinds(void **state)
{
	(void)state;
	static const char *const mismatches[] = {
		"mismatch_squashed_logits", "mismatch_nll_without_log_softmax", "mismatch_bce_without_sigmoid",
		"mismatch_regression_loss_on_classes", "mismatch_class_loss_on_regression",
		"mismatch_bce_multiclass", "mismatch_bounded_output_regression",
	};
	const struct loss_case cases[] = {
		{"CE on softmax", CLS, 10, "CrossEntropyLoss", "softmax", "mismatch_squashed_logits", 1, 0},
		{"CE on log_softmax", CLS, 10, "cross_entropy", "log_softmax", "mismatch_squashed_logits", 1, 0},
		{"BCE with logits on sigmoid", CLS, 2, "BCEWithLogitsLoss", "sigmoid", "mismatch_squashed_logits", 5, 0},
		{"CE on logits", CLS, 10, "CrossEntropyLoss", "none", NULL, 1, 0},
		{"custom loss", CLS, 10, "mse_probs", "softmax", NULL, 0, 1},
		{"no loss name", CLS, 10, NULL, "softmax", NULL, 0, 1},
		{"NLL on logits", CLS, 10, "NLLLoss", "none", "mismatch_nll_without_log_softmax", 2, 0},
		{"NLL on log_softmax", CLS, 10, "nll_loss", "log_softmax", NULL, 2, 0},
		{"NLL, activation unknown", CLS, 10, "NLLLoss", "", NULL, 2, 0},
		{"BCE on logits", CLS, 2, "BCELoss", "none", "mismatch_bce_without_sigmoid", 4, 0},
		{"BCE on sigmoid", CLS, 2, "binary_cross_entropy", "sigmoid", NULL, 4, 0},
		{"BCE on 10 classes", CLS, 10, "BCELoss", "sigmoid", "mismatch_bce_multiclass", 4, 0},
		{"MSE on classes", CLS, 10, "MSELoss", "none", "mismatch_regression_loss_on_classes", 3, 0},
		{"MSE regression", REG, 0, "MSELoss", "none", NULL, 3, 0},
		{"CE on regression", REG, 0, "CrossEntropyLoss", "none", "mismatch_class_loss_on_regression", 1, 0},
		{"regression through relu", REG, 0, "L1Loss", "relu", "mismatch_bounded_output_regression", 6, 0},
		{"Huber regression", REG, 0, "HuberLoss", "none", NULL, 7, 0},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		const struct loss_case *k = &cases[c];
		struct series_layer layers[2] = {
			{.name = "fc1", .type = "Linear", .activation = "relu", .param_count = 10, .fan_in = 4},
			{.name = "fc2", .type = "Linear", .activation = k->out, .param_count = 10, .fan_in = 8},
		};
		struct builder b;
		begin(&b, layers, 2);
		b.s.task = k->task;
		b.s.num_classes = k->classes;
		if (k->loss_fn != NULL)
			assert_non_null(b.s.loss_fn = strdup(k->loss_fn));
		at(&b, 0);
		push(&b);
		double *x = compute(&b.s, b.s.n);
		at_case = k->what;
		expect(x, "task_classification", k->task == CLS);
		expect(x, "task_regression", k->task == REG);
		expect(x, "num_classes", k->task == CLS ? (double)k->classes : NAN);
		expect(x, "loss_kind", k->loss_kind);
		expect(x, "loss_custom", k->loss_custom);
		for (size_t m = 0; m < sizeof mismatches / sizeof mismatches[0]; m++)
			expect(x, mismatches[m], k->mismatch != NULL && strcmp(k->mismatch, mismatches[m]) == 0);
		free(x);
		series__free(&b.s);
	}
	at_case = "";
}

static void output_activation_codes(void **state)
{
	(void)state;
	const struct { char *act; double code; } cases[] = {
		{"none", 0}, {"relu", 1}, {"leaky_relu", 1}, {"gelu", 1}, {"sigmoid", 2}, {"tanh", 3},
		{"softmax", 4}, {"log_softmax", 5}, {"softplus", 6}, {"", 7}, {"unknown", 7},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct series_layer layer = {.name = "out", .type = "Linear", .activation = cases[c].act,
					     .param_count = 10, .fan_in = 8};
		struct builder b;
		begin(&b, &layer, 1);
		at(&b, 0);
		push(&b);
		double *x = compute(&b.s, b.s.n);
		expect(x, "output_activation", cases[c].code);
		free(x);
		series__free(&b.s);
	}
}

static void optimizer_and_run_shape(void **state)
{
	(void)state;
	const struct { const char *name; double sgd, adaptive, kind; } opts[] = {
		{"SGD", 1, 0, 1}, {"adam", 0, 1, 2}, {"AdamW", 0, 1, 3}, {"RMSprop", 0, 1, 4},
		{"Adagrad", 0, 1, 5}, {"Adadelta", 0, 1, 6}, {"LBFGS", 0, 0, 0}, {NULL, 0, 0, 0},
	};
	for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
		struct builder b;
		begin(&b, mlp, 3);
		if (opts[o].name != NULL)
			assert_non_null(b.s.optimizer = strdup(opts[o].name));
		at(&b, 0);
		push(&b);
		double *x = compute(&b.s, b.s.n);
		expect(x, "optimizer_sgd", opts[o].sgd);
		expect(x, "optimizer_adaptive", opts[o].adaptive);
		expect(x, "optimizer_kind", opts[o].kind);
		free(x);
		series__free(&b.s);
	}

	/* 10 samples at steps 0, 10, ..., 90 of 200 planned; lr 0.05 then
	 * 0.005 from the 6th sample. */
	struct builder b;
	begin(&b, mlp, 3);
	b.s.initial_lr = 0.01;
	b.s.momentum = 0.9;
	b.s.weight_decay = 1e-4;
	b.s.batch_size = 32;
	b.s.dataset_size = 1000;
	b.s.planned_steps = 200;
	b.s.planned_epochs = 5;
	for (uint64_t i = 0; i < 10; i++) {
		at(&b, i * 10);
		b.step.has_lr = 1;
		b.step.lr = i < 5 ? 0.05 : 0.005;
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	expect(x, "lr_log10", -2);	/* the optimizer's lr parameter wins */
	expect(x, "lr_now_over_initial", 0.5);
	expect(x, "momentum", 0.9);
	expect(x, "weight_decay_log10", -4);
	expect(x, "beta1", NAN);
	expect(x, "beta2", NAN);
	expect(x, "rmsprop_alpha", NAN);
	expect(x, "batch_size_log10", log10(32));
	expect(x, "batch_over_dataset", 0.032);
	expect(x, "dataset_size_log10", 3);
	expect(x, "steps_per_epoch_log10", log10(32));	/* ceil(1000/32) */
	expect(x, "planned_epochs", 5);
	expect(x, "progress", 91.0 / 200);	/* (last step + 1) / planned */
	expect(x, "steps_seen_log10", log10(91));
	expect(x, "samples_seen", 10);
	free(x);
	/* Halfway through the samples: step 40. */
	x = compute(&b.s, 5);
	expect(x, "progress", 41.0 / 200);
	expect(x, "samples_seen", 5);
	expect(x, "lr_now_over_initial", 5);
	free(x);

	/* No lr parameter: the first lr sent stands for it; no weight decay
	 * is -12 (1e-12), unlike an unknown one. */
	b.s.initial_lr = NAN;
	b.s.weight_decay = 0;
	b.s.planned_steps = 0;
	x = compute(&b.s, b.s.n);
	expect(x, "lr_log10", log10(0.05));
	expect(x, "lr_now_over_initial", 0.1);
	expect(x, "weight_decay_log10", -12);
	expect(x, "progress", NAN);
	free(x);
	series__free(&b.s);
}

/* weight_std at the first sample times sqrt(fan_in), over the layers an
 * initialiser scales (not normalisation layers). */
static void init_scale_and_architecture(void **state)
{
	(void)state;
	const struct series_layer layers[4] = {
		{.name = "fc1", .type = "Linear", .activation = "relu", .param_count = 800, .fan_in = 100},
		{.name = "bn", .type = "BatchNorm1d", .activation = "", .param_count = 100, .fan_in = 64},
		{.name = "fc2", .type = "Linear", .activation = "tanh", .param_count = 90, .fan_in = 16},
		{.name = "fc3", .type = "Linear", .activation = "none", .param_count = 10, .fan_in = 4},
	};
	struct builder b;
	begin(&b, layers, 4);
	const float sd0[4] = {0.05f, 1.0f, 0.25f, 1.0f};
	for (uint64_t i = 0; i < 3; i++) {
		at(&b, i);
		for (size_t l = 0; l < 4; l++)
			stat(&b, l, S(WEIGHT_STD), i == 0 ? sd0[l] : 7.0f);
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	/* fc1 0.05*10, fc2 0.25*4, fc3 1*2; bn left out. */
	expect_f(x, "init_scale_first_layer", 0.5);
	expect_f(x, "init_scale_last_layer", 2);
	expect_f(x, "init_scale_layer_min", 0.5);
	expect_f(x, "init_scale_layer_max", 2);
	expect_f(x, "init_scale_layer_mean", 3.5 / 3);
	expect_f(x, "init_scale_first_over_last_log", log10(0.25));
	expect(x, "layers", 4);
	expect(x, "weight_layers", 3);
	expect(x, "params_log10", 3);
	/* Hidden weight layers: fc1 (relu) and fc2 (tanh). */
	expect(x, "hidden_relu_share", 0.5);
	expect(x, "hidden_saturating_share", 0.5);
	expect(x, "hidden_linear_share", 0);
	free(x);
	series__free(&b.s);
}

static void chance_features(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	b.s.num_classes = 4;
	const double loss[] = {4, 3, 2, 1}, acc[] = {0.25, 0.5, 0.75, 0.5};
	for (size_t i = 0; i < 4; i++) {
		at(&b, i);
		b.step.has_loss = b.step.has_accuracy = 1;
		b.step.loss = loss[i];
		b.step.accuracy = acc[i];
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	/* Chance: loss ln 4, accuracy 1/4. */
	expect(x, "loss_first_over_chance", 4 / log(4));
	expect(x, "loss_last_over_chance", 1 / log(4));
	expect(x, "accuracy_last_over_chance", 2);
	expect(x, "accuracy_best_over_chance", 3);
	expect(x, "loss_negative", 0);
	free(x);

	/* Regression has no chance level. */
	b.s.task = REG;
	x = compute(&b.s, b.s.n);
	expect(x, "loss_first_over_chance", NAN);
	expect(x, "accuracy_best_over_chance", NAN);
	free(x);
	series__free(&b.s);

	/* A negative loss: log-likelihood on values that are no log-probabilities. */
	begin(&b, mlp, 3);
	const double neg[] = {-0.1, -0.5};
	losses(&b, neg, 2);
	x = compute(&b.s, b.s.n);
	expect(x, "loss_negative", 1);
	free(x);
	series__free(&b.s);
}

static void input_features(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	const double mean[] = {0.5, 1.5}, sd[] = {2, 4}, lo[] = {-3, -1}, hi[] = {5, 7};
	for (size_t i = 0; i < 3; i++) {
		at(&b, i);
		if (i < 2) {	/* the third sample sends no input statistics */
			b.step.has_input_mean = b.step.has_input_std = 1;
			b.step.has_input_min = b.step.has_input_max = 1;
			b.step.input_mean = mean[i];
			b.step.input_std = sd[i];
			b.step.input_min = lo[i];
			b.step.input_max = hi[i];
		}
		push(&b);
	}
	double *x = compute(&b.s, b.s.n);
	expect(x, "input_mean", 1);
	expect(x, "input_std", 3);
	expect(x, "input_min", -2);
	expect(x, "input_max", 6);
	expect(x, "input_abs_max", 6);
	free(x);
	series__free(&b.s);
}

/* Step i of a run of 10 (steps 0, 10, ..., 90) with epochs ending at steps
 * 25, 55 and 85: a bit of everything, so that symptoms, epochs and layer
 * windows all change along the run. */
static void prefix_step(struct builder *b, uint64_t i)
{
	at(b, i * 10);
	b->step.has_loss = b->step.has_accuracy = b->step.has_lr = 1;
	b->step.loss = i == 7 ? NAN : 2.0 / (1.0 + (double)i);
	b->step.accuracy = 0.1 * (double)i;
	b->step.lr = i < 5 ? 0.1 : 0.01;
	b->step.has_input_mean = b->step.has_input_std = b->step.has_input_min = b->step.has_input_max = 1;
	b->step.input_mean = 0.1 * (double)i;
	b->step.input_std = 1;
	b->step.input_min = -2;
	b->step.input_max = 2 + (double)i;
	for (size_t l = 0; l < 3; l++) {
		stat(b, l, S(WEIGHT_NORM), 3.0f + 0.1f * (float)(i * (l + 1)));
		stat(b, l, S(WEIGHT_STD), 0.05f * (float)(l + 1));
		stat(b, l, S(WEIGHT_MAX_ABS), 0.5f + (float)i);
		stat(b, l, S(GRAD_NORM), 0.1f / (float)(l + 1 + i));
		stat(b, l, S(GRAD_MAX_ABS), 0.01f);
		stat(b, l, S(UPDATE_RATIO), 1e-3f);
		stat(b, l, S(ACT_STD), 1.0f + 0.05f * (float)i);
		stat(b, l, S(ACT_NONPOS_FRAC), l == 1 && i >= 4 ? 0.9f : 0.4f);
		stat(b, l, S(ACT_SATURATED_FRAC), 0);
		stat(b, l, S(NAN_COUNT), l == 2 && i == 8 ? 5.0f : 0.0f);
		stat(b, l, S(INF_COUNT), 0);
	}
	push(b);
}

/* The series of the first k steps of that run and the epochs that ended
 * by then, as the store would have held it at that time. */
static void prefix_run(struct builder *b, size_t k)
{
	begin(b, mlp, 3);
	assert_non_null(b->s.loss_fn = strdup("CrossEntropyLoss"));
	assert_non_null(b->s.optimizer = strdup("SGD"));
	b->s.initial_lr = 0.1;
	b->s.momentum = 0.9;
	b->s.weight_decay = 0;
	b->s.batch_size = 64;
	b->s.dataset_size = 640;
	b->s.planned_steps = 100;
	b->s.planned_epochs = 4;
	for (uint64_t i = 0; i < k; i++)
		prefix_step(b, i);
	const uint64_t ends[] = {25, 55, 85};
	for (size_t e = 0; e < 3; e++)
		if (k > 0 && ends[e] <= (k - 1) * 10)
			epoch(&b->s, ends[e], 1.0 - 0.2 * (double)e, 0.5 + 0.1 * (double)e, 1.1 - 0.1 * (double)e,
			      0.45 + 0.05 * (double)e);
}

static void prefix_equals_shorter_run(void **state)
{
	(void)state;
	struct builder full;
	prefix_run(&full, 10);
	assert_int_equal(full.s.n, 10);
	assert_int_equal(full.s.n_epochs, 3);
	struct series v = features__prefix(&full.s, 3);	/* steps 0..20 */
	assert_int_equal(v.n, 3);
	assert_int_equal(v.n_epochs, 0);
	v = features__prefix(&full.s, 6);		/* steps 0..50 */
	assert_int_equal(v.n_epochs, 1);
	v = features__prefix(&full.s, 100);		/* clamped */
	assert_int_equal(v.n, 10);
	assert_int_equal(v.n_epochs, 3);
	for (size_t k = 0; k <= 10; k++) {
		double *a = compute(&full.s, k);
		struct builder part;
		prefix_run(&part, k);
		double *b = compute(&part.s, part.s.n);
		expect_same(a, b, "prefix vs shorter run", k);
		free(b);
		v = features__prefix(&full.s, k);
		b = compute(&v, v.n);
		expect_same(a, b, "compute(upto) vs compute(prefix)", k);
		free(b);
		free(a);
		series__free(&part.s);
	}
	/* Past the end is the whole run. */
	double *a = compute(&full.s, 1000), *b = compute(&full.s, full.s.n);
	expect_same(a, b, "upto past the end", 1000);
	free(a);
	free(b);
	series__free(&full.s);
}

/* The reference block: NaN until a reference is applied, then the run's
 * compared features minus the reference's, taken as far into the
 * reference's planned training as the run is into its own. */
static void reference_block(void **state)
{
	(void)state;
	size_t base = features__base_count(), n = features__count();
	assert_true(base < n);
	for (size_t j = base; j < n; j++) {
		const char *name = features__name(j);
		assert_true(strncmp(name, "ref_", 4) == 0);
		/* Outcomes and dynamics, never the configuration. */
		assert_true(strncmp(name, "ref_loss_", 9) == 0 || strncmp(name, "ref_accuracy_", 13) == 0 ||
			    strncmp(name, "ref_val_", 8) == 0 || strncmp(name, "ref_train_", 10) == 0);
		assert_true(strcmp(name, "ref_loss_kind") != 0 && strcmp(name, "ref_loss_custom") != 0);
		size_t len = strlen(name);
		if (len > 11 && strcmp(name + len - 11, "_over_noise") == 0)
			continue;
		(void)index_of(name + 4);
	}
	(void)index_of("ref_loss_last");
	(void)index_of("ref_val_metric_last");

	struct builder run, ref;
	prefix_run(&run, 4);		/* steps 0..30 of 100 planned */
	prefix_run(&ref, 10);		/* steps 0..90 */
	assert_int_equal(features__reference_upto(&run.s, &ref.s), 4);
	ref.s.planned_steps = 200;	/* 31% of 200: steps 0..60 */
	assert_int_equal(features__reference_upto(&run.s, &ref.s), 7);
	assert_true(fabs(features__progress(&run.s) - 0.31) < 1e-12);
	run.s.planned_steps = 0;	/* no plan: the same step */
	assert_int_equal(features__reference_upto(&run.s, &ref.s), 4);
	assert_true(isnan(features__progress(&run.s)));
	run.s.planned_steps = 100;
	assert_int_equal(features__upto(&ref.s, 1.0), 10);
	assert_int_equal(features__upto(&ref.s, 0.01), 1);

	double *x = compute(&run.s, run.s.n), *r = compute(&ref.s, 7);
	for (size_t j = base; j < n; j++)
		assert_true(isnan(x[j]));
	/* Loss falls over the steps, so the reference, further on, is lower. */
	features__apply_reference(x, r);
	expect(x, "ref_loss_last", feat(x, "loss_last") - feat(r, "loss_last"));
	assert_true(feat(x, "ref_loss_last") > 0);
	/* The run has seen the epoch that ended at step 25, the reference also
	 * the one at 55: one rise share needs two epochs. */
	expect(x, "ref_val_metric_last", 0.45 - 0.5);
	assert_true(isnan(feat(x, "val_loss_rise_share")) && !isnan(feat(r, "val_loss_rise_share")));
	expect(x, "ref_val_loss_rise_share", NAN);
	features__apply_reference(x, NULL);
	for (size_t j = base; j < n; j++)
		assert_true(isnan(x[j]));
	free(x);
	free(r);
	series__free(&run.s);
	series__free(&ref.s);
}

/* The metric's shortfall in units of the reference's noise: its last
 * epoch's move or its distance below its best, never less than 0.01. */
static void reference_noise(void **state)
{
	(void)state;
	size_t n = features__count();
	double *x = malloc(n * sizeof *x), *r = malloc(n * sizeof *r);
	assert_non_null(x);
	assert_non_null(r);
	for (size_t i = 0; i < n; i++)
		x[i] = r[i] = NAN;
	x[index_of("val_metric_last")] = 0.80;
	x[index_of("val_metric_best")] = 0.85;
	r[index_of("val_metric_last")] = 0.90;
	r[index_of("val_metric_best")] = 0.95;	/* 0.05 below its best */
	r[index_of("val_metric_last_gain")] = -0.02;
	features__apply_reference(x, r);
	expect(x, "ref_val_metric_last_over_noise", -0.10 / 0.05);
	expect(x, "ref_val_metric_best_over_noise", -0.10 / 0.05);
	r[index_of("val_metric_best")] = 0.90;	/* at its best, moved by 0.03 */
	r[index_of("val_metric_last_gain")] = 0.03;
	features__apply_reference(x, r);
	expect(x, "ref_val_metric_last_over_noise", -0.10 / 0.03);
	expect(x, "ref_val_metric_best_over_noise", -0.05 / 0.03);
	r[index_of("val_metric_last_gain")] = NAN;	/* one epoch: the floor */
	features__apply_reference(x, r);
	expect(x, "ref_val_metric_last_over_noise", -0.10 / 0.01);
	x[index_of("val_metric_last")] = NAN;	/* no metric: missing */
	features__apply_reference(x, r);
	expect(x, "ref_val_metric_last_over_noise", NAN);
	expect(x, "ref_val_metric_best_over_noise", -0.05 / 0.01);
	free(x);
	free(r);
}

static bool is_onset(const char *name)
{
	size_t len = strlen(name);
	return strncmp(name, "sym_", 4) == 0 && len > 6 && strcmp(name + len - 6, "_onset") == 0;
}

/* Every feature NaN or 0 but those named in `known` (NULL-terminated),
 * which the static description sets before any step, and the onsets of
 * symptoms, which are 1 when they never fired. */
static void expect_empty(const double *x, const char *const *known)
{
	for (size_t i = 0; i < features__count(); i++) {
		const char *name = features__name(i);
		bool skip = false;
		for (size_t j = 0; known[j] != NULL && !skip; j++)
			skip = strcmp(known[j], name) == 0;
		if (skip || isnan(x[i]) || x[i] == (is_onset(name) ? 1 : 0))
			continue;
		fail_msg("empty series: %s = %.17g", name, x[i]);
	}
}

static void empty_series(void **state)
{
	(void)state;
	struct series s;
	memset(&s, 0, sizeof s);
	s.initial_lr = s.momentum = s.weight_decay = s.beta1 = s.beta2 = s.alpha = NAN;
	/* No loss name is no standard loss; no layers, no known activation. */
	const char *const unknown[] = {"loss_custom", "output_activation", NULL};
	for (size_t upto = 0; upto < 2; upto++) {
		double *x = compute(&s, upto);
		expect_empty(x, unknown);
		expect(x, "loss_custom", 1);
		expect(x, "output_activation", 7);
		expect(x, "samples_seen", 0);
		expect(x, "loss_first", NAN);
		free(x);
	}
	/* Layers described, no step yet. */
	struct builder b;
	begin(&b, mlp, 3);
	b.s.task = 0;
	b.s.num_classes = 0;
	const char *const described[] = {"layers", "weight_layers", "params_log10", "hidden_relu_share",
					 "loss_custom", NULL};
	double *x = compute(&b.s, 5);
	expect_empty(x, described);
	expect(x, "layers", 3);
	expect(x, "weight_layers", 3);
	expect(x, "params_log10", log10(210));
	expect(x, "hidden_relu_share", 1);
	expect(x, "init_scale_layer_mean", NAN);
	expect(x, "weight_norm_first_layer", NAN);
	free(x);
	series__free(&b.s);
}

/* Whatever the telemetry, no feature is infinite: the models read a
 * non-finite value as missing, so the module writes NaN for it. */
static void nonfinite_telemetry(void **state)
{
	(void)state;
	struct builder b;
	begin(&b, mlp, 3);
	b.s.num_classes = 3;
	b.s.initial_lr = INFINITY;
	b.s.momentum = -INFINITY;
	b.s.weight_decay = INFINITY;
	b.s.beta1 = NAN;
	b.s.beta2 = -INFINITY;
	b.s.alpha = 1e308;
	b.s.planned_steps = 1;
	const double odd[] = {NAN, INFINITY, -INFINITY, 1e308, -1e308, 1e308, 0, 5e-324};
	const float oddf[] = {NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 3e38f, 0, 1e-45f};
	size_t n = sizeof odd / sizeof odd[0];
	for (size_t i = 0; i < 3 * n; i++) {
		at(&b, i);
		double v = odd[i % n], w = odd[(i / 2) % n];
		b.step.has_loss = b.step.has_accuracy = b.step.has_lr = 1;
		b.step.has_input_mean = b.step.has_input_std = b.step.has_input_min = b.step.has_input_max = 1;
		b.step.loss = v;
		b.step.accuracy = w;
		b.step.lr = v;
		b.step.input_mean = b.step.input_std = b.step.input_min = b.step.input_max = w;
		for (size_t k = 0; k < 3 * NSTAT; k++)
			b.stats[k] = oddf[(i + k) % n];
		push(&b);
		if (i % 4 == 0)
			epoch(&b.s, i, v, w, w, v);
	}
	for (size_t upto = 0; upto <= b.s.n; upto++) {
		double *x = compute(&b.s, upto);
		for (size_t i = 0; i < features__count(); i++)
			if (isinf(x[i]))
				fail_msg("upto %zu: %s is infinite", upto, features__name(i));
		free(x);
	}
	series__free(&b.s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(schema_names),
		cmocka_unit_test(temporal_aggregates),
		cmocka_unit_test(constant_series_has_no_skew),
		cmocka_unit_test(layer_aggregates),
		cmocka_unit_test(nan_inf_counts),
		cmocka_unit_test(epoch_features),
		cmocka_unit_test(symptom_share_and_onset),
		cmocka_unit_test(loss_kinds),
		cmocka_unit_test(output_activation_codes),
		cmocka_unit_test(optimizer_and_run_shape),
		cmocka_unit_test(init_scale_and_architecture),
		cmocka_unit_test(chance_features),
		cmocka_unit_test(input_features),
		cmocka_unit_test(prefix_equals_shorter_run),
		cmocka_unit_test(reference_block),
		cmocka_unit_test(reference_noise),
		cmocka_unit_test(empty_series),
		cmocka_unit_test(nonfinite_telemetry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
