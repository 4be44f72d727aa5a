/* The rule-based baselines on hand-built series with known answers: each
 * tool names the causes its repair table points to, says nothing about a
 * healthy run, and the DeepFD features have the expected statistics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "baselines.h"
#include "series_builder.h"

#define BIT(id) ((cause_set)1 << CAUSE_##id)

static void set_text(char **field, const char *value)
{
	free(*field);
	*field = strdup(value);
	assert_non_null(*field);
}

/* Epoch e ends at step (e + 1) * 100, i.e. after sample 10 (e + 1). */
static void add_epochs(struct builder *b, const double *train_m, const double *val_m, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		Dnnfault__Epoch ep = DNNFAULT__EPOCH__INIT;
		ep.has_step = ep.has_train_loss = ep.has_val_loss = 1;
		ep.step = (e + 1) * 100;
		ep.train_loss = 1.0 / (double)(e + 1);
		ep.val_loss = 1.1 / (double)(e + 1);
		ep.has_train_metric = train_m != NULL;
		ep.train_metric = train_m ? train_m[e] : 0;
		ep.has_val_metric = val_m != NULL;
		ep.val_metric = val_m ? val_m[e] : 0;
		assert_int_equal(series__append_epoch(&b->s, &ep), 0);
	}
}

static const double good_train[] = {0.5, 0.6, 0.7, 0.8, 0.9};
static const double good_val[] = {0.48, 0.58, 0.68, 0.78, 0.88};

/* 50 healthy samples (steps 0..490) and 5 epochs of rising accuracy. */
static void healthy(struct builder *b)
{
	begin(b);
	for (uint64_t i = 0; i < 50; i++) {
		set_healthy(b, i);
		push(b);
	}
	add_epochs(b, good_train, good_val, 5);
}

/* The first `n` samples and the epochs that ended by then. */
static struct series prefix(const struct series *s, size_t n)
{
	struct series v = *s;
	v.n = n;
	v.n_epochs = 0;
	while (v.n_epochs < s->n_epochs && n > 0 && s->epoch_step[v.n_epochs] <= s->step[n - 1])
		v.n_epochs++;
	return v;
}

static void print_set(const char *tool, cause_set got)
{
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (got & ((cause_set)1 << c))
			print_error("%s: %s\n", tool, causes__name((enum cause_id)c));
}

static void healthy_run_is_quiet(void **state)
{
	(void)state;
	struct builder b;
	healthy(&b);
	cause_set at = baselines__autotrainer(&b.s), dd = baselines__deepdiagnosis(&b.s),
		  um = baselines__umlaut(&b.s);
	print_set("autotrainer", at);
	print_set("deepdiagnosis", dd);
	print_set("umlaut", um);
	assert_int_equal(at, 0);
	assert_int_equal(dd, 0);
	assert_int_equal(um, 0);
	series__free(&b.s);
}

static void empty_series_is_quiet(void **state)
{
	(void)state;
	struct series s;
	memset(&s, 0, sizeof s);
	s.initial_lr = NAN;
	assert_int_equal(baselines__autotrainer(&s), 0);
	assert_int_equal(baselines__deepdiagnosis(&s), 0);
	assert_int_equal(baselines__umlaut(&s), 0);
	double fd[DEEPFD_FEATURES];
	baselines__deepfd_features(&s, fd);
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		assert_true(isnan(fd[j]));
}

/* 30 samples; from sample 12 (step 120) the first layer's gradient norm is
 * 100 times the last's; accuracy stays below AutoTrainer's 0.7. */
static void exploding_run(struct builder *b)
{
	begin(b);
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(b, i);
		if (i >= 12) {
			b->stats[0 * 16 + S(GRAD_NORM)] = 100.0f;
			b->stats[2 * 16 + S(GRAD_NORM)] = 1.0f;
		}
		push(b);
	}
	const double acc[] = {0.3, 0.4, 0.5};
	add_epochs(b, acc, acc, 3);
}

static void autotrainer_exploding_gradient_is_lr_high(void **state)
{
	(void)state;
	struct builder b;
	exploding_run(&b);
	cause_set got = baselines__autotrainer(&b.s);
	assert_true(got & BIT(lr_high));
	/* Its repairs also swap activations with their initialisers. */
	assert_int_equal(got, BIT(lr_high) | BIT(activation) | BIT(init));
	/* At the first epoch end (sample 10) the gradients were still fine. */
	struct series v = prefix(&b.s, 11);
	assert_int_equal(v.n_epochs, 1);
	assert_int_equal(baselines__autotrainer(&v), 0);
	series__free(&b.s);
}

/* With 10000 planned steps, 300 steps are before the 30% judgment point:
 * no trend is judged, but a NaN loss is reported at once. */
static void autotrainer_waits_for_judgment_point(void **state)
{
	(void)state;
	struct builder b;
	exploding_run(&b);
	b.s.planned_steps = 10000;
	assert_int_equal(baselines__autotrainer(&b.s), 0);
	b.s.planned_steps = 900;	/* 30% = 270: judged at the third epoch (step 300) */
	assert_true(baselines__autotrainer(&b.s) & BIT(lr_high));
	series__free(&b.s);

	begin(&b);
	b.s.planned_steps = 10000;
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(&b, i);
		if (i >= 15)
			b.step.loss = NAN;
		push(&b);
	}
	add_epochs(&b, good_train, good_val, 3);
	assert_int_equal(baselines__autotrainer(&b.s), BIT(lr_high) | BIT(activation) | BIT(init));
	struct series v = prefix(&b.s, 15);
	assert_int_equal(baselines__autotrainer(&v), 0);
	series__free(&b.s);
}

static void autotrainer_accuracy_problems(void **state)
{
	(void)state;
	struct builder b;

	/* Accuracy swinging by 0.06-0.08 above 0.7: oscillating loss. */
	begin(&b);
	for (uint64_t i = 0; i < 60; i++) {
		set_healthy(&b, i);
		push(&b);
	}
	const double swing[] = {0.72, 0.80, 0.74, 0.82, 0.75, 0.83};
	add_epochs(&b, swing, swing, 6);
	assert_int_equal(baselines__autotrainer(&b.s), BIT(optimizer) | BIT(lr_high) | BIT(batch_size));
	series__free(&b.s);

	/* Accuracy creeping up by 0.005 per epoch: slow convergence. */
	begin(&b);
	for (uint64_t i = 0; i < 40; i++) {
		set_healthy(&b, i);
		push(&b);
	}
	const double slow[] = {0.30, 0.305, 0.31, 0.315};
	add_epochs(&b, slow, slow, 4);
	assert_int_equal(baselines__autotrainer(&b.s), BIT(optimizer) | BIT(lr_low));
	series__free(&b.s);

	/* Most gradient entries exactly zero while accuracy is poor: dying
	 * ReLU, which wins over the slow accuracy. */
	begin(&b);
	for (uint64_t i = 0; i < 40; i++) {
		set_healthy(&b, i);
		for (int l = 0; l < L; l++)
			b.stats[l * 16 + S(GRAD_ZERO_FRAC)] = 0.9f;
		push(&b);
	}
	add_epochs(&b, slow, slow, 4);
	assert_int_equal(baselines__autotrainer(&b.s), BIT(activation) | BIT(init));
	series__free(&b.s);
}

/* Regression reports no accuracy: gradient problems need no accuracy gate. */
static void autotrainer_regression_has_no_accuracy_gate(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	b.s.task = DNNFAULT__TASK_KIND__TASK_REGRESSION;
	set_text(&b.s.loss_fn, "MSELoss");
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(&b, i);
		if (i >= 5)
			b.stats[0 * 16 + S(GRAD_NORM)] = 1e-5f;	/* first/last 1e-4 */
		push(&b);
	}
	add_epochs(&b, NULL, NULL, 3);
	assert_int_equal(baselines__autotrainer(&b.s), BIT(activation) | BIT(init));
	series__free(&b.s);
}

/* One series per case: 30 samples, a mutation from sample 12 on. */
struct dd_case {
	const char *what;
	void (*mutate)(struct builder *b, uint64_t i);
	cause_set want;
};

static void m_vanish(struct builder *b, uint64_t i)
{
	(void)i;
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(GRAD_MAX_ABS)] = 1e-9f;
}
static void m_vanish_frozen(struct builder *b, uint64_t i)
{
	m_vanish(b, i);
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(UPDATE_RATIO)] = 1e-7f;
}
static void m_nan_zero_init(struct builder *b, uint64_t i)
{
	(void)i;
	b->stats[1 * 16 + S(NAN_COUNT)] = 5;
	b->stats[1 * 16 + S(GRAD_NORM)] = NAN;
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(WEIGHT_STD)] = 0.0f;
}
static void m_nan_loss_high_lr(struct builder *b, uint64_t i)
{
	(void)i;
	b->step.loss = NAN;
	b->stats[0 * 16 + S(UPDATE_RATIO)] = 0.5f;
}
static void m_nan_loss(struct builder *b, uint64_t i)
{
	(void)i;
	b->step.loss = INFINITY;
}
static void m_dead_raw_input(struct builder *b, uint64_t i)
{
	(void)i;
	b->stats[1 * 16 + S(ACT_NONPOS_FRAC)] = 0.95f;
	b->step.input_mean = 120.0;
	b->step.input_std = 70.0;
	b->step.input_min = 0.0;
	b->step.input_max = 255.0;
}
static void m_dead(struct builder *b, uint64_t i)
{
	(void)i;
	b->stats[1 * 16 + S(ACT_NONPOS_FRAC)] = 0.95f;
}
static void m_frozen(struct builder *b, uint64_t i)
{
	(void)i;
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(UPDATE_RATIO)] = 0.0f;
}

static void deepdiagnosis_decision_tree(void **state)
{
	(void)state;
	const struct dd_case cases[] = {
		{"vanishing gradient: change the activation", m_vanish, BIT(activation)},
		{"vanishing, updates 1e-7: learning rate", m_vanish_frozen, BIT(lr_low)},
		{"NaN tensor, zero weight variance: poor weight", m_nan_zero_init, BIT(init)},
		{"NaN loss, update ratio 0.5: learning rate", m_nan_loss_high_lr, BIT(lr_high)},
		{"Inf loss, nothing else: optimizer", m_nan_loss, BIT(optimizer)},
		{"dead ReLU on raw pixels: normalise", m_dead_raw_input, BIT(data)},
		{"dead ReLU: activation", m_dead, BIT(activation)},
		{"weights unchanged, update ratio 0: learning rate", m_frozen, BIT(lr_low)},
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
		cause_set got = baselines__deepdiagnosis(&b.s);
		if (got != cases[c].want) {
			print_set(cases[c].what, got);
			fail_msg("%s: wrong fix", cases[c].what);
		}
		/* Before the mutation it saw nothing. */
		struct series v = prefix(&b.s, 12);
		assert_int_equal(baselines__deepdiagnosis(&v), 0);
		series__free(&b.s);
	}
}

/* The first symptom decides: dead ReLU from sample 8, vanishing from 20. */
static void deepdiagnosis_first_symptom_wins(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(&b, i);
		if (i >= 8)
			m_dead(&b, i);
		if (i >= 20)
			m_vanish_frozen(&b, i);
		push(&b);
	}
	assert_int_equal(baselines__deepdiagnosis(&b.s), BIT(activation));
	series__free(&b.s);
}

/* BCELoss on an output without sigmoid: out of range, from the start. */
static void deepdiagnosis_out_of_range(void **state)
{
	(void)state;
	struct builder b;
	healthy(&b);
	set_text(&b.s.loss_fn, "BCELoss");
	assert_int_equal(baselines__deepdiagnosis(&b.s), BIT(activation));
	set_text(&b.s.layers[L - 1].activation, "sigmoid");
	assert_int_equal(baselines__deepdiagnosis(&b.s), 0);
	series__free(&b.s);
}

static void umlaut_program_checks(void **state)
{
	(void)state;
	struct builder b;
	healthy(&b);

	/* MSE on a classifier without softmax: "Missing Softmax" (loss). */
	set_text(&b.s.loss_fn, "MSELoss");
	assert_int_equal(baselines__umlaut(&b.s), BIT(loss));
	/* A user's own loss function: UMLAUT assumes probabilities. */
	set_text(&b.s.loss_fn, "my_loss");
	assert_int_equal(baselines__umlaut(&b.s), BIT(loss));
	set_text(&b.s.layers[L - 1].activation, "softmax");
	assert_int_equal(baselines__umlaut(&b.s), 0);
	/* Softmax before CrossEntropyLoss: a final activation to remove. */
	set_text(&b.s.loss_fn, "CrossEntropyLoss");
	assert_int_equal(baselines__umlaut(&b.s), BIT(activation));
	/* Output activation not seen: nothing to say. */
	set_text(&b.s.layers[L - 1].activation, "unknown");
	set_text(&b.s.loss_fn, "MSELoss");
	assert_int_equal(baselines__umlaut(&b.s), 0);
	/* Regression with MSE is what MSE is for. */
	set_text(&b.s.layers[L - 1].activation, "none");
	b.s.task = DNNFAULT__TASK_KIND__TASK_REGRESSION;
	assert_int_equal(baselines__umlaut(&b.s), 0);
	b.s.task = DNNFAULT__TASK_KIND__TASK_CLASSIFICATION;
	set_text(&b.s.loss_fn, "CrossEntropyLoss");

	/* Two stacked Linear layers without an activation between them. */
	set_text(&b.s.layers[0].activation, "none");
	assert_int_equal(baselines__umlaut(&b.s), BIT(activation));
	series__free(&b.s);
}

static void umlaut_training_checks(void **state)
{
	(void)state;
	struct builder b;
	healthy(&b);

	b.s.initial_lr = 0.05;	/* Adam: above 0.01 */
	assert_int_equal(baselines__umlaut(&b.s), BIT(lr_high));
	set_text(&b.s.optimizer, "SGD");	/* SGD: within [1e-4, 0.1] */
	assert_int_equal(baselines__umlaut(&b.s), 0);
	b.s.initial_lr = 0.5;
	assert_int_equal(baselines__umlaut(&b.s), BIT(lr_high));
	set_text(&b.s.optimizer, "Adam");
	b.s.initial_lr = 1e-7;
	assert_int_equal(baselines__umlaut(&b.s), BIT(lr_low));
	/* Epoch checks wait for the first epoch end. */
	struct series v = prefix(&b.s, 5);
	assert_int_equal(v.n_epochs, 0);
	assert_int_equal(baselines__umlaut(&v), 0);
	/* Unknown: read from the samples' learning rate. */
	b.s.initial_lr = NAN;
	assert_int_equal(baselines__umlaut(&b.s), 0);
	series__free(&b.s);

	/* Raw pixel inputs. */
	begin(&b);
	for (uint64_t i = 0; i < 30; i++) {
		set_healthy(&b, i);
		m_dead_raw_input(&b, i);
		b.stats[1 * 16 + S(ACT_NONPOS_FRAC)] = 0.4f;
		push(&b);
	}
	add_epochs(&b, good_train, good_val, 3);
	assert_int_equal(baselines__umlaut(&b.s), BIT(data));
	series__free(&b.s);

	/* Validation accuracy above training accuracy from epoch 3 on. */
	begin(&b);
	for (uint64_t i = 0; i < 50; i++) {
		set_healthy(&b, i);
		push(&b);
	}
	const double train[] = {0.3, 0.35, 0.4, 0.42, 0.44}, val[] = {0.5, 0.6, 0.7, 0.75, 0.8};
	add_epochs(&b, train, val, 5);
	assert_int_equal(baselines__umlaut(&b.s), BIT(labels));
	v = prefix(&b.s, 35);	/* epochs 0..2 only */
	assert_int_equal(baselines__umlaut(&v), 0);
	series__free(&b.s);
}

static size_t fd_index(const char *name)
{
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		if (strcmp(baselines__deepfd_name(j), name) == 0)
			return j;
	fail_msg("no feature %s", name);
	return 0;
}

static void deepfd_names(void **state)
{
	(void)state;
	assert_string_equal(baselines__deepfd_name(0), "fd_not_converge_mean");
	assert_string_equal(baselines__deepfd_name(1), "fd_not_converge_std");
	assert_string_equal(baselines__deepfd_name(DEEPFD_FEATURES - 1), "fd_nan_acc_min");
	assert_null(baselines__deepfd_name(DEEPFD_FEATURES));
	for (size_t i = 0; i < DEEPFD_FEATURES; i++)
		for (size_t j = i + 1; j < DEEPFD_FEATURES; j++)
			assert_string_not_equal(baselines__deepfd_name(i), baselines__deepfd_name(j));
}

/* 10 samples; the gradient explodes from sample 5: the counter column is
 * 0 0 0 0 0 1 2 3 4 5. */
static void deepfd_statistics(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 10; i++) {
		set_healthy(&b, i);
		if (i >= 5) {
			b.stats[0 * 16 + S(GRAD_NORM)] = 100.0f;
			b.stats[2 * 16 + S(GRAD_NORM)] = 1.0f;
		}
		push(&b);
	}
	double fd[DEEPFD_FEATURES];
	baselines__deepfd_features(&b.s, fd);
	assert_float_equal(fd[fd_index("fd_explode_gradient_mean")], 1.5, 1e-12);
	assert_float_equal(fd[fd_index("fd_explode_gradient_max")], 5.0, 1e-12);
	assert_float_equal(fd[fd_index("fd_explode_gradient_min")], 0.0, 1e-12);
	assert_float_equal(fd[fd_index("fd_explode_gradient_median")], 0.5, 1e-12);
	/* Sum of squared deviations 32.5 over 9 degrees of freedom. */
	assert_float_equal(fd[fd_index("fd_explode_gradient_var")], 32.5 / 9, 1e-12);
	assert_float_equal(fd[fd_index("fd_explode_gradient_std")], sqrt(32.5 / 9), 1e-12);
	assert_float_equal(fd[fd_index("fd_explode_gradient_sem")], sqrt(32.5 / 9) / sqrt(10), 1e-12);
	/* pandas: n sqrt(n-1) / (n-2) * m3 / m2^1.5, with m3 = 45. */
	assert_float_equal(fd[fd_index("fd_explode_gradient_skew")],
			   10 * 3 / 8.0 * 45 / pow(32.5, 1.5), 1e-12);
	/* Nothing else happened: all-zero columns, skew 0. */
	assert_float_equal(fd[fd_index("fd_nan_loss_max")], 0.0, 0);
	assert_float_equal(fd[fd_index("fd_vanish_gradient_skew")], 0.0, 0);
	assert_float_equal(fd[fd_index("fd_increase_loss_max")], 0.0, 0);
	/* Weight means and stds move at every sample. */
	assert_float_equal(fd[fd_index("fd_cons_mean_weight_max")], 0.0, 0);
	series__free(&b.s);
}

/* NaN losses are counted at every sample from the first; one sample has
 * no spread. */
static void deepfd_nan_and_short_series(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 4; i++) {
		set_healthy(&b, i);
		if (i >= 2) {
			b.step.loss = NAN;
			for (int l = 0; l < L; l++) {
				b.stats[l * 16 + S(NAN_COUNT)] = 7;
				b.stats[l * 16 + S(GRAD_NORM)] = NAN;
				b.stats[l * 16 + S(WEIGHT_NORM)] = NAN;
				b.stats[l * 16 + S(WEIGHT_STD)] = NAN;
			}
		}
		push(&b);
	}
	double fd[DEEPFD_FEATURES];
	baselines__deepfd_features(&b.s, fd);
	/* nan_loss: 0 0 1 2; nan_gradient and nan_weight: 0 0 1 1. */
	assert_float_equal(fd[fd_index("fd_nan_loss_mean")], 0.75, 1e-12);
	assert_float_equal(fd[fd_index("fd_nan_loss_max")], 2.0, 0);
	assert_float_equal(fd[fd_index("fd_nan_gradient_mean")], 0.5, 1e-12);
	assert_float_equal(fd[fd_index("fd_nan_weight_median")], 0.5, 1e-12);
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		assert_false(isnan(fd[j]));

	struct series v = prefix(&b.s, 1);
	baselines__deepfd_features(&v, fd);
	assert_float_equal(fd[fd_index("fd_explode_gradient_mean")], 0.0, 0);
	assert_true(isnan(fd[fd_index("fd_explode_gradient_std")]));
	assert_true(isnan(fd[fd_index("fd_explode_gradient_sem")]));
	assert_true(isnan(fd[fd_index("fd_explode_gradient_skew")]));
	/* The tools do not trip over NaN either. */
	baselines__autotrainer(&b.s);
	baselines__deepdiagnosis(&b.s);
	baselines__umlaut(&b.s);
	series__free(&b.s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(healthy_run_is_quiet),
		cmocka_unit_test(empty_series_is_quiet),
		cmocka_unit_test(autotrainer_exploding_gradient_is_lr_high),
		cmocka_unit_test(autotrainer_waits_for_judgment_point),
		cmocka_unit_test(autotrainer_accuracy_problems),
		cmocka_unit_test(autotrainer_regression_has_no_accuracy_gate),
		cmocka_unit_test(deepdiagnosis_decision_tree),
		cmocka_unit_test(deepdiagnosis_first_symptom_wins),
		cmocka_unit_test(deepdiagnosis_out_of_range),
		cmocka_unit_test(umlaut_program_checks),
		cmocka_unit_test(umlaut_training_checks),
		cmocka_unit_test(deepfd_names),
		cmocka_unit_test(deepfd_statistics),
		cmocka_unit_test(deepfd_nan_and_short_series),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
