/* dnnfault_finish: layer statistics from a hand-built result vector with
 * known answers (weights and gradients, weights alone, an output, device
 * counts, a layer without records), in float32 and float64; a layer whose
 * NaN and Inf need counting again; bad records refused. (Against the
 * Python layer's own finishing, bit for bit: tests/python/test_unit.py.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "dnnfault.h"

#define STAT(out, layer, k) ((out)[(layer) * DNNFAULT_STATS_PER_LAYER + (k)])

/* Layer 0: w = {1, -2, 3, 0.5} after an update from {1, -1, 2, 0.5},
 * g = {0, 0.5, -1, 0}, output {-1, 0, 2, 6}, one NaN and two Inf counted
 * on the device. Layer 1: nothing recorded. Layer 2: frozen w = {1, 2},
 * unchanged. */
static const double RAW[] = {
	2.5, -0.5, 14.25, 1.25, 2, 2, -2, -1, 3, 0.5, /* WG at 0 */
	7, 41, 2, 1,				     /* OUT at 10 */
	1, 0, 0, 2,				     /* COUNTS (pad 2) at 14 */
	3, 5, 0, 1, 2,				     /* W at 18 */
};
static const int64_t RECORDS[] = {
	DNNFAULT_RECORD_WG, 0, 0, 0,	 DNNFAULT_RECORD_OUT, 0, 10, 0,
	DNNFAULT_RECORD_COUNTS, 0, 14, 2, DNNFAULT_RECORD_W, 2, 18, 0,
};
static const int64_t LAYERS[] = {4, 4, 4, 1, 9, 9, 9, 1, 2, 0, 0, 1};

static void check(const float *out)
{
	assert_float_equal(STAT(out, 0, DNNFAULT_WEIGHT_NORM), sqrt(14.25), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_WEIGHT_MEAN), 0.625, 1e-7);
	assert_float_equal(STAT(out, 0, DNNFAULT_WEIGHT_STD), sqrt(14.25 / 4 - 0.625 * 0.625), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_WEIGHT_MAX_ABS), 3, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_GRAD_NORM), sqrt(1.25), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_GRAD_MEAN), -0.125, 1e-7);
	assert_float_equal(STAT(out, 0, DNNFAULT_GRAD_STD), sqrt(1.25 / 4 - 0.125 * 0.125), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_GRAD_MAX_ABS), 1, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_GRAD_ZERO_FRAC), 0.5, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_UPDATE_RATIO), sqrt(2) / sqrt(14.25), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_ACT_MEAN), 1.75, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_ACT_STD), sqrt(41.0 / 4 - 1.75 * 1.75), 1e-6);
	assert_float_equal(STAT(out, 0, DNNFAULT_ACT_NONPOS_FRAC), 0.5, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_ACT_SATURATED_FRAC), 0.25, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_NAN_COUNT), 1, 0);
	assert_float_equal(STAT(out, 0, DNNFAULT_INF_COUNT), 2, 0);
	for (int k = 0; k < DNNFAULT_STATS_PER_LAYER; k++)
		assert_true(isnan(STAT(out, 1, k)));
	assert_float_equal(STAT(out, 2, DNNFAULT_WEIGHT_NORM), sqrt(5), 1e-6);
	assert_float_equal(STAT(out, 2, DNNFAULT_WEIGHT_STD), 0.5, 1e-7);
	assert_float_equal(STAT(out, 2, DNNFAULT_WEIGHT_MAX_ABS), 2, 0);
	assert_float_equal(STAT(out, 2, DNNFAULT_UPDATE_RATIO), 0, 0);
	assert_true(isnan(STAT(out, 2, DNNFAULT_GRAD_NORM)));
	assert_true(isnan(STAT(out, 2, DNNFAULT_ACT_MEAN)));
	assert_float_equal(STAT(out, 2, DNNFAULT_NAN_COUNT), 0, 0);
}

static void known_answers_in_both_dtypes(void **state)
{
	(void)state;
	enum { N = sizeof(RAW) / sizeof(RAW[0]) };
	double work[18 * 3];
	float out[3 * DNNFAULT_STATS_PER_LAYER];
	assert_int_equal(dnnfault_finish(RAW, DNNFAULT_F64, N, RECORDS, 4, LAYERS, 3, work, out), 0);
	check(out);
	float raw32[N];
	for (int k = 0; k < N; k++)
		raw32[k] = (float)RAW[k];
	memset(out, 0, sizeof(out));
	assert_int_equal(dnnfault_finish(raw32, DNNFAULT_F32, N, RECORDS, 4, LAYERS, 3, work, out),
			 0);
	check(out);
}

static void missing_gradients_and_no_update(void **state)
{
	(void)state;
	/* Two of four gradient elements were zeros standing in for a missing
	 * gradient (pad 2): they are not zero gradients. No snapshot: no
	 * update ratio. */
	double raw[] = {2.5, -0.5, 14.25, 1.25, 0, 3, -2, -1, 3, 0.5};
	int64_t rec[] = {DNNFAULT_RECORD_WG, 0, 0, 2};
	int64_t layer[] = {4, 2, 0, 0};
	double work[18];
	float out[DNNFAULT_STATS_PER_LAYER];
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, rec, 1, layer, 1, work, out), 0);
	assert_float_equal(out[DNNFAULT_GRAD_ZERO_FRAC], 0.5, 0);
	assert_float_equal(out[DNNFAULT_GRAD_MEAN], -0.25, 0);
	assert_true(isnan(out[DNNFAULT_UPDATE_RATIO]));
	assert_true(isnan(out[DNNFAULT_ACT_MEAN]));
}

static void uncounted_nonfinite_layer_asks_for_a_recount(void **state)
{
	(void)state;
	double raw[] = {NAN, 0, NAN, 1, 0, 0, NAN, 0, NAN, 1};
	int64_t rec[] = {DNNFAULT_RECORD_WG, 0, 0, 0};
	int64_t layer[] = {4, 4, 0, 1};
	double work[18];
	float out[DNNFAULT_STATS_PER_LAYER];
	memset(out, 0, sizeof(out));
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, rec, 1, layer, 1, work, out), 1);
	for (int k = 0; k < DNNFAULT_STATS_PER_LAYER; k++)
		assert_float_equal(out[k], 0, 0); /* nothing written */
	/* Counted on the device: no recount, NaN stays NaN. */
	double counted[] = {NAN, 0, NAN, 1, 0, 0, NAN, 0, NAN, 1, 1, 0};
	int64_t recs[] = {DNNFAULT_RECORD_WG, 0, 0, 0, DNNFAULT_RECORD_COUNTS, 0, 10, 1};
	assert_int_equal(dnnfault_finish(counted, DNNFAULT_F64, 12, recs, 2, layer, 1, work, out),
			 0);
	assert_true(isnan(out[DNNFAULT_WEIGHT_NORM]));
	assert_float_equal(out[DNNFAULT_NAN_COUNT], 1, 0);
}

static void bad_records_are_refused(void **state)
{
	(void)state;
	double raw[10] = {0};
	int64_t layer[] = {4, 4, 0, 1};
	double work[18];
	float out[DNNFAULT_STATS_PER_LAYER];
	int64_t kind[] = {7, 0, 0, 0};
	int64_t past[] = {DNNFAULT_RECORD_WG, 0, 1, 0};
	int64_t counts[] = {DNNFAULT_RECORD_COUNTS, 0, 0, 6};
	int64_t layer_out[] = {DNNFAULT_RECORD_OUT, 1, 0, 0};
	int64_t negative[] = {DNNFAULT_RECORD_OUT, 0, -1, 0};
	int64_t good[] = {DNNFAULT_RECORD_WG, 0, 0, 0};
	int64_t huge[] = {DNNFAULT_RECORD_COUNTS, 0, 0, INT64_MAX};
	int64_t far[] = {DNNFAULT_RECORD_OUT, 0, INT64_MAX, 0};
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, kind, 1, layer, 1, work, out), -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, past, 1, layer, 1, work, out), -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, counts, 1, layer, 1, work, out),
			 -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, layer_out, 1, layer, 1, work, out),
			 -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, negative, 1, layer, 1, work, out),
			 -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, huge, 1, layer, 1, work, out), -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, far, 1, layer, 1, work, out), -EINVAL);
	assert_int_equal(dnnfault_finish(raw, 3, 10, good, 1, layer, 1, work, out), -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, good, 1, layer, 1, NULL, out),
			 -EINVAL);
	assert_int_equal(dnnfault_finish(NULL, DNNFAULT_F64, 10, good, 1, layer, 1, work, out),
			 -EINVAL);
	assert_int_equal(dnnfault_finish(raw, DNNFAULT_F64, 10, good, 1, layer, 1, work, out), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(known_answers_in_both_dtypes),
		cmocka_unit_test(missing_gradients_and_no_update),
		cmocka_unit_test(uncounted_nonfinite_layer_asks_for_a_recount),
		cmocka_unit_test(bad_records_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
