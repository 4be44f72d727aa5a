/* dnnfault_reduce: sums, counts and extremes on hand-built arrays with
 * known answers, across block boundaries, in float32 and float64; exact
 * NaN/Inf counts; the weights copied after they are read (also into prev
 * itself); bad spans refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dnnfault.h"

#define ROW(acc, r, k) ((acc)[(r) * DNNFAULT_ACC_N + (k)])

static struct dnnfault_span span(const void *data, uint64_t n, uint32_t row, int kind, int dtype)
{
	return (struct dnnfault_span){.data = data, .n = n, .row = row, .kind = (uint16_t)kind,
				      .dtype = (uint16_t)dtype};
}

static void weights_with_update_and_copy(void **state)
{
	(void)state;
	float w[] = {1, -2, 3, 0.5f};
	float prev[] = {1, -1, 2, 0.5f};
	float keep[4] = {0};
	struct dnnfault_span sp = span(w, 4, 0, DNNFAULT_SPAN_WEIGHT, DNNFAULT_F32);
	sp.prev = prev;
	sp.keep = keep;
	double acc[DNNFAULT_ACC_N];
	assert_int_equal(dnnfault_reduce(&sp, 1, acc, 1), 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_W_SUM), 2.5, 1e-12);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_W_SQ), 14.25, 1e-12);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_W_MAX_ABS), 3, 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_W_DIFF_SQ), 2, 1e-12);
	assert_memory_equal(keep, w, sizeof w);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_NAN), 0, 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_G_SUM), 0, 0);

	/* keep == prev: each block is read before it is overwritten. */
	sp.keep = prev;
	assert_int_equal(dnnfault_reduce(&sp, 1, acc, 1), 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_W_DIFF_SQ), 2, 1e-12);
	assert_memory_equal(prev, w, sizeof w);
}

/* Spans longer than a block, in both element types, against sums in
 * double taken here element by element. */
static void long_spans_match_plain_sums(void **state)
{
	(void)state;
	size_t n = 3 * DNNFAULT_REDUCE_BLOCK + 17;
	float *f = malloc(n * sizeof *f);
	double *d = malloc(n * sizeof *d);
	assert_non_null(f);
	assert_non_null(d);
	double sum = 0, sq = 0, mx = 0, zeros = 0, pos = 0, sat = 0, lo = INFINITY, hi = -INFINITY;
	uint32_t x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		float v = i % 97 == 0 ? 0.0f : ((float)(x >> 8) / (float)(1 << 24) - 0.4f) * 14.0f;
		f[i] = v;
		d[i] = v;
		sum += v;
		sq += (double)v * v;
		mx = fabs(v) > mx ? fabs(v) : mx;
		zeros += v == 0;
		pos += v > 0;
		sat += fabs(v) > 5;
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
	}
	struct dnnfault_span sp[] = {
		span(f, n, 0, DNNFAULT_SPAN_GRAD, DNNFAULT_F32),
		span(f, n, 0, DNNFAULT_SPAN_OUTPUT, DNNFAULT_F32),
		span(d, n, 1, DNNFAULT_SPAN_GRAD, DNNFAULT_F64),
		span(d, n, 1, DNNFAULT_SPAN_OUTPUT, DNNFAULT_F64),
		span(f, n, 2, DNNFAULT_SPAN_INPUT, DNNFAULT_F32),
		span(d, n, 3, DNNFAULT_SPAN_INPUT, DNNFAULT_F64),
	};
	double acc[4 * DNNFAULT_ACC_N];
	assert_int_equal(dnnfault_reduce(sp, 6, acc, 4), 0);
	for (int r = 0; r < 2; r++) {
		/* float32 sums within blocks: relative error far below 1e-5. */
		double tol = r == 0 ? 1e-5 : 1e-12;
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_G_SUM), sum, tol * sq);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_G_SQ), sq, tol * sq);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_G_MAX_ABS), mx, 0);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_G_ZERO), zeros, 0);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_A_SUM), sum, tol * sq);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_A_POS), pos, 0);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_A_SAT), sat, 0);
	}
	for (int r = 2; r < 4; r++) {
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_X_MIN), lo, 0);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_X_MAX), hi, 0);
		assert_float_equal(ROW(acc, r, DNNFAULT_ACC_A_SQ), sq, 1e-5 * sq);
	}
	free(f);
	free(d);
}

/* Several spans add into one row (a layer's weight and bias); rows not
 * named stay at their start values. */
static void spans_add_into_their_row(void **state)
{
	(void)state;
	float a[] = {1, 2};
	double b[] = {-4};
	struct dnnfault_span sp[] = {
		span(a, 2, 1, DNNFAULT_SPAN_WEIGHT, DNNFAULT_F32),
		span(b, 1, 1, DNNFAULT_SPAN_WEIGHT, DNNFAULT_F64),
	};
	double acc[3 * DNNFAULT_ACC_N];
	memset(acc, 0x7f, sizeof acc);
	assert_int_equal(dnnfault_reduce(sp, 2, acc, 3), 0);
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_W_SUM), -1, 0);
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_W_SQ), 21, 0);
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_W_MAX_ABS), 4, 0);
	for (int r = 0; r < 3; r += 2) {
		for (int k = 0; k < DNNFAULT_ACC_X_MIN; k++)
			assert_float_equal(ROW(acc, r, k), 0, 0);
		assert_true(isinf(ROW(acc, r, DNNFAULT_ACC_X_MIN)) && ROW(acc, r, DNNFAULT_ACC_X_MIN) > 0);
		assert_true(isinf(ROW(acc, r, DNNFAULT_ACC_X_MAX)) && ROW(acc, r, DNNFAULT_ACC_X_MAX) < 0);
	}
}

/* NaN and Inf are counted exactly; a NaN makes the max NaN; a finite
 * value whose square overflows float32 counts as neither. */
static void nonfinite_values_are_counted(void **state)
{
	(void)state;
	float w[DNNFAULT_REDUCE_BLOCK + 5];
	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
		w[i] = 0.25f;
	w[3] = NAN;
	w[DNNFAULT_REDUCE_BLOCK + 1] = -INFINITY;
	w[DNNFAULT_REDUCE_BLOCK + 2] = INFINITY;
	float big[] = {1e20f, 1};
	double in[] = {1, NAN, -2};
	struct dnnfault_span sp[] = {
		span(w, sizeof w / sizeof w[0], 0, DNNFAULT_SPAN_WEIGHT, DNNFAULT_F32),
		span(w, 3, 0, DNNFAULT_SPAN_GRAD, DNNFAULT_F32),  /* finite part only */
		span(big, 2, 1, DNNFAULT_SPAN_GRAD, DNNFAULT_F32),
		span(in, 3, 2, DNNFAULT_SPAN_INPUT, DNNFAULT_F64),
	};
	double acc[3 * DNNFAULT_ACC_N];
	assert_int_equal(dnnfault_reduce(sp, 4, acc, 3), 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_NAN), 1, 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_INF), 2, 0);
	assert_true(isnan(ROW(acc, 0, DNNFAULT_ACC_W_MAX_ABS)));
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_G_MAX_ABS), 0.25, 0);
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_NAN), 0, 0);
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_INF), 0, 0);
	assert_true(isinf(ROW(acc, 1, DNNFAULT_ACC_G_SQ)));
	assert_float_equal(ROW(acc, 1, DNNFAULT_ACC_G_MAX_ABS), 1e20f, 0);
	assert_float_equal(ROW(acc, 2, DNNFAULT_ACC_NAN), 1, 0);
	assert_true(isnan(ROW(acc, 2, DNNFAULT_ACC_X_MIN)));
	assert_true(isnan(ROW(acc, 2, DNNFAULT_ACC_X_MAX)));
}

/* |x| > 5 exactly at the float32 boundary: from x² > 25. */
static void saturation_boundary(void **state)
{
	(void)state;
	float a[] = {5, -5, nextafterf(5, 10), -nextafterf(5, 10), nextafterf(5, 0), INFINITY, 0};
	struct dnnfault_span sp = span(a, 7, 0, DNNFAULT_SPAN_OUTPUT, DNNFAULT_F32);
	double acc[DNNFAULT_ACC_N];
	assert_int_equal(dnnfault_reduce(&sp, 1, acc, 1), 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_A_SAT), 3, 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_A_POS), 4, 0);
	assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_INF), 1, 0);
}

static void bad_spans_are_refused(void **state)
{
	(void)state;
	float a[] = {1};
	double acc[2 * DNNFAULT_ACC_N];
	struct dnnfault_span bad[] = {
		span(a, 1, 2, DNNFAULT_SPAN_GRAD, DNNFAULT_F32),	/* row out of range */
		span(a, 1, 0, 0, DNNFAULT_F32),				/* kind */
		span(a, 1, 0, 5, DNNFAULT_F32),
		span(a, 1, 0, DNNFAULT_SPAN_GRAD, 3),			/* dtype */
		span(NULL, 1, 0, DNNFAULT_SPAN_GRAD, DNNFAULT_F32),	/* no data */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct dnnfault_span two[] = {span(a, 1, 0, DNNFAULT_SPAN_OUTPUT, DNNFAULT_F32), bad[i]};
		assert_int_equal(dnnfault_reduce(two, 2, acc, 2), -EINVAL);
		/* Refused before anything is added: row 0 is still zero. */
		assert_float_equal(ROW(acc, 0, DNNFAULT_ACC_A_SUM), 0, 0);
	}
	assert_int_equal(dnnfault_reduce(NULL, 1, acc, 2), -EINVAL);
	assert_int_equal(dnnfault_reduce(NULL, 0, NULL, 0), 0);
	struct dnnfault_span empty = span(NULL, 0, 0, DNNFAULT_SPAN_INPUT, DNNFAULT_F32);
	assert_int_equal(dnnfault_reduce(&empty, 1, acc, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(weights_with_update_and_copy),
		cmocka_unit_test(long_spans_match_plain_sums),
		cmocka_unit_test(spans_add_into_their_row),
		cmocka_unit_test(nonfinite_values_are_counted),
		cmocka_unit_test(saturation_boundary),
		cmocka_unit_test(bad_spans_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
