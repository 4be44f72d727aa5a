/* Overflow steps that the training loop skipped (skipped_steps.h): which
 * samples have the signature, and which runs of them the loader leaves
 * out, on hand-built series. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "series_builder.h"
#include "skipped_steps.h"
#include "symptoms.h"

/* A step skipped on overflow, as the Python client sends it: fc1's
 * gradients hold Inf, no update was measured, the weights are finite. */
static void set_skipped(struct builder *b, uint64_t i)
{
	set_healthy(b, i);
	for (int l = 0; l < L; l++)
		b->stats[l * 16 + S(UPDATE_RATIO)] = NAN;
	float *x = &b->stats[0];
	x[S(GRAD_NORM)] = INFINITY;
	x[S(GRAD_MEAN)] = NAN;
	x[S(GRAD_STD)] = NAN;
	x[S(GRAD_MAX_ABS)] = INFINITY;
	x[S(INF_COUNT)] = 12;
}

static bool signature(struct builder *b)
{
	return skipped_steps__signature(b->stats, L, b->step.has_loss, b->step.loss);
}

static void the_signature_is_an_overflow_that_reached_nothing(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	set_skipped(&b, 0);
	assert_true(signature(&b));
	/* An update ratio of exactly 0 (a client that does not mark "no
	 * update") and a frozen layer without gradients change nothing. */
	b.stats[1 * 16 + S(UPDATE_RATIO)] = 0;
	b.stats[2 * 16 + S(GRAD_NORM)] = NAN;
	assert_true(signature(&b));
	/* The loss is not part of the overflow: absent is fine. */
	b.step.has_loss = 0;
	assert_true(signature(&b));

	set_healthy(&b, 0);
	assert_false(signature(&b));	/* nothing non-finite */
	set_skipped(&b, 0);
	b.stats[2 * 16 + S(UPDATE_RATIO)] = 1e-3f;
	assert_false(signature(&b));	/* a step moved the weights */
	set_skipped(&b, 0);
	b.stats[0 * 16 + S(WEIGHT_NORM)] = NAN;
	assert_false(signature(&b));	/* the overflow reached the weights */
	set_skipped(&b, 0);
	b.stats[0 * 16 + S(ACT_MEAN)] = INFINITY;
	assert_false(signature(&b));	/* and the activations */
	set_skipped(&b, 0);
	b.step.loss = INFINITY;
	assert_false(signature(&b));	/* a non-finite loss is nan_loss */
	set_skipped(&b, 0);
	b.stats[1 * 16 + S(NAN_COUNT)] = 1;	/* fc2 counts NaN, its gradients are finite */
	assert_false(signature(&b));
	/* Activations not recorded (both NaN) are not activations that
	 * overflowed. */
	set_skipped(&b, 0);
	b.stats[0 * 16 + S(ACT_MEAN)] = b.stats[0 * 16 + S(ACT_NONPOS_FRAC)] = NAN;
	assert_true(signature(&b));
	series__free(&b.s);
}

/* Samples 0..29 at steps 0, 10, ...; `skipped` lists the samples skipped. */
static void build(struct builder *b, const int *skipped, size_t n_skipped, uint64_t every)
{
	begin(b);
	for (uint64_t i = 0; i < 30; i++) {
		bool skip = false;
		for (size_t k = 0; k < n_skipped; k++)
			skip |= (uint64_t)skipped[k] == i;
		if (skip)
			set_skipped(b, i);
		else
			set_healthy(b, i);
		b->step.step = i * every;
		push(b);
	}
}

static void short_runs_of_skips_are_left_out(void **state)
{
	(void)state;
	struct builder b;
	/* Every step sampled: a calibration of 9 steps, then one now and then. */
	static const int calibration[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 29};
	build(&b, calibration, 11, 1);
	assert_int_equal(skipped_steps__leave_out(&b.s), 11);
	assert_int_equal(b.s.n, 19);
	assert_int_equal(b.s.n_skipped, 0);	/* the loader sets it */
	assert_int_equal(b.s.last_step, 29);	/* the last loaded, though left out */
	assert_int_equal(b.s.step[0], 9);
	assert_int_equal(b.s.step[10], 19);
	assert_int_equal(b.s.step[11], 21);
	assert_int_equal(b.s.step[18], 28);
	/* What is left is the healthy series, moved intact. */
	assert_true(series__stat(&b.s, 11, 2, S(WEIGHT_NORM)) == 3.0f + 0.01f * 21);
	assert_true(b.s.col[SERIES_LOSS][11] == 2.0 / 22.0);
	struct symptom out[SYMPTOM_COUNT];
	assert_int_equal(symptoms__detect(&b.s, &symptom_defaults, out), 0);
	series__free(&b.s);
}

static void runs_spanning_more_than_16_steps_stay(void **state)
{
	(void)state;
	struct builder b;
	struct symptom out[SYMPTOM_COUNT];
	/* 17 steps in a row overflowed: no scale cleared it. */
	static const int seventeen[] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
	build(&b, seventeen, 17, 1);
	assert_int_equal(skipped_steps__leave_out(&b.s), 0);
	assert_int_equal(b.s.n, 30);
	size_t n = symptoms__detect(&b.s, &symptom_defaults, out);
	assert_true(n >= 1 && out[0].id == SYMPTOM_nan_tensor && out[0].first_step == 3);
	series__free(&b.s);
	/* 16 steps are left out. */
	build(&b, seventeen, 16, 1);
	assert_int_equal(skipped_steps__leave_out(&b.s), 16);
	series__free(&b.s);
	/* Every 10th step sampled: two samples in a row span 11 steps and are
	 * left out, three span 21 and stay, also at the end of the series
	 * (the overflow has not cleared yet). */
	static const int two[] = {5, 6}, three_at_end[] = {27, 28, 29};
	build(&b, two, 2, 10);
	assert_int_equal(skipped_steps__leave_out(&b.s), 2);
	series__free(&b.s);
	build(&b, three_at_end, 3, 10);
	assert_int_equal(skipped_steps__leave_out(&b.s), 0);
	n = symptoms__detect(&b.s, &symptom_defaults, out);
	assert_true(n >= 1 && out[0].id == SYMPTOM_nan_tensor && out[0].first_step == 270);
	series__free(&b.s);
}

/* A resumed job sends steps again from an earlier one: a run of skipped
 * steps does not reach across (its span would wrap around). */
static void runs_end_where_the_steps_go_back(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	const uint64_t steps[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
	for (uint64_t i = 0; i < 20; i++) {
		if (i == 8 || i == 9 || i == 10 || i == 11)
			set_skipped(&b, i);
		else
			set_healthy(&b, i);
		b.step.step = steps[i];
		push(&b);
	}
	assert_int_equal(skipped_steps__leave_out(&b.s), 4);
	assert_int_equal(b.s.n, 16);
	assert_int_equal(b.s.step[7], 7);
	assert_int_equal(b.s.step[8], 7);	/* the resumed stream's, after 5 and 6 left out */
	series__free(&b.s);
}

static void a_series_of_skips_only_empties(void **state)
{
	(void)state;
	struct builder b;
	begin(&b);
	for (uint64_t i = 0; i < 5; i++) {
		set_skipped(&b, i);
		b.step.step = i;
		push(&b);
	}
	assert_int_equal(skipped_steps__leave_out(&b.s), 5);
	assert_int_equal(b.s.n, 0);
	assert_int_equal(b.s.last_step, 4);
	series__free(&b.s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(the_signature_is_an_overflow_that_reached_nothing),
		cmocka_unit_test(short_runs_of_skips_are_left_out),
		cmocka_unit_test(runs_spanning_more_than_16_steps_stay),
		cmocka_unit_test(runs_end_where_the_steps_go_back),
		cmocka_unit_test(a_series_of_skips_only_empties),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
