/* dnnfault_finish: a sampled step's result vector, as the Python layer's
 * torch path copies it from the device, turned into layer statistics.
 *
 * Why in C: on a GPU whose whole sampled step replays as one CUDA graph,
 * finishing the numbers in Python was the largest single part of
 * mon.step() (49-80 us a step on an H200 machine, bench/step_graphs.py,
 * docs/benchmarks.md). The arithmetic is _stats.Stats.finish and
 * _stats.layer_stats, in the same order and in double, so that the float32
 * results are the same to the last bit (tests/python/test_unit.py). */
#include "dnnfault.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* No fused multiply-adds: Python rounds a * b and then the sum.
 * client/meson.build passes -ffp-contract=off; clang also honours the
 * pragma (GCC, which does not know it, contracts nothing in ISO C mode). */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Accumulators of one layer, as _stats.A_* (the first 14 of enum
 * dnnfault_acc). */
enum { W_SUM, W_SQ, W_MAX, D_SQ, G_SUM, G_SQ, G_MAX, G_ZERO, A_SUM, A_SQ, A_POS, A_SAT,
       N_NAN, N_INF, N_ACC };

/* Where a record's sums lie from its offset (the torch path's rows: x, x²,
 * mixed, saturated). */
enum { R_X, R_SQ, R_MIX, R_SAT };

/* Values a record of a fixed size spans in the result vector; 0 for
 * COUNTS (2 * pad) and unknown kinds. */
#define MAX_FIXED 10
static uint64_t fixed_size(int64_t kind)
{
	switch (kind) {
	case DNNFAULT_RECORD_WG: return 10;
	case DNNFAULT_RECORD_W: return 5;
	case DNNFAULT_RECORD_OUT: return 4;
	default: return 0;
	}
}

/* Whether a record lies within the layers and the result vector. */
static int record_ok(const int64_t *rec, size_t n_raw, size_t n_layers)
{
	uint64_t size = fixed_size(rec[0]);
	if (rec[1] < 0 || (uint64_t)rec[1] >= n_layers || rec[2] < 0 || rec[3] < 0)
		return 0;
	if (rec[0] == DNNFAULT_RECORD_COUNTS) {
		if ((uint64_t)rec[3] > n_raw / 2)
			return 0;
		size = 2 * (uint64_t)rec[3];
	} else if (!size) {
		return 0;
	}
	return (uint64_t)rec[2] <= n_raw && size <= n_raw - (uint64_t)rec[2];
}

/* max that propagates NaN, as torch's amax does (_stats._max). */
static double nan_max(double a, double b)
{
	if (isnan(a) || isnan(b))
		return NAN;
	return a > b ? a : b;
}

/* max |x| from a minimum and a maximum (_stats: max(-min, max)). */
static double max_abs(double min, double max)
{
	return nan_max(-min, max);
}

/* Population std from a sum of squares and the mean (_stats._std_sq). */
static double std_sq(double sq, double mean, double n)
{
	double var = sq / n - mean * mean;
	if (isnan(var))
		return var;
	return var > 0 ? sqrt(var) : 0.0;
}

static void layer_stats(const double *c, const int64_t *layer, float *o)
{
	double v[DNNFAULT_STATS_PER_LAYER];
	for (int k = 0; k < DNNFAULT_STATS_PER_LAYER; k++)
		v[k] = NAN;
	double nw = (double)layer[0], ng = (double)layer[1], na = (double)layer[2];
	if (layer[0]) {
		double sq = c[W_SQ], m = c[W_SUM] / nw, norm = sqrt(sq);
		v[0] = norm;
		v[1] = m;
		v[2] = std_sq(sq, m, nw);
		v[3] = c[W_MAX];
		if (layer[3]) {
			double d = sqrt(c[D_SQ]);
			v[9] = norm != 0 ? d / norm : (d == 0 || isnan(d) ? NAN : INFINITY);
		}
	}
	if (layer[1]) {
		double m = c[G_SUM] / ng;
		v[4] = sqrt(c[G_SQ]);
		v[5] = m;
		v[6] = std_sq(c[G_SQ], m, ng);
		v[7] = c[G_MAX];
		v[8] = c[G_ZERO] / ng;
	}
	if (layer[2]) {
		double m = c[A_SUM] / na;
		v[10] = m;
		v[11] = std_sq(c[A_SQ], m, na);
		v[12] = 1.0 - c[A_POS] / na;
		v[13] = c[A_SAT] / na;
	}
	v[14] = c[N_NAN];
	v[15] = c[N_INF];
	for (int k = 0; k < DNNFAULT_STATS_PER_LAYER; k++)
		o[k] = (float)v[k];
}

static double at(const void *raw, int dtype, int64_t k)
{
	return dtype == DNNFAULT_F32 ? (double)((const float *)raw)[k] : ((const double *)raw)[k];
}

int dnnfault_finish(const void *raw, int dtype, size_t n_raw, const int64_t *records,
		    size_t n_records, const int64_t *layers, size_t n_layers, double *work,
		    float *out)
{
	if ((dtype != DNNFAULT_F32 && dtype != DNNFAULT_F64) || (n_raw && !raw) ||
	    (n_records && !records) || (n_layers && (!layers || !work || !out)))
		return -EINVAL;
	for (size_t r = 0; r < n_records; r++)
		if (!record_ok(records + 4 * r, n_raw, n_layers))
			return -EINVAL;
	/* Per layer: N_ACC sums, then whether it has any record, its records
	 * other than counts, its counts records, and whether its weights were
	 * recorded. */
	enum { SEEN = N_ACC, PARTS, COUNTED, WEIGHTS, WORK };
	memset(work, 0, sizeof(double) * WORK * n_layers);
	for (size_t r = 0; r < n_records; r++) {
		const int64_t *rec = records + 4 * r;
		int64_t o = rec[2], pad = rec[3];
		double *c = work + WORK * rec[1];
		c[SEEN] = 1;
		if (rec[0] == DNNFAULT_RECORD_COUNTS) { /* pad NaN counts, then pad Inf counts */
			double nan = 0, inf = 0;
			for (int64_t k = 0; k < pad; k++)
				nan += at(raw, dtype, o + k);
			for (int64_t k = 0; k < pad; k++)
				inf += at(raw, dtype, o + pad + k);
			c[N_NAN] += nan;
			c[N_INF] += inf;
			c[COUNTED] += 1;
			continue;
		}
		double v[MAX_FIXED];
		for (uint64_t k = 0; k < fixed_size(rec[0]); k++)
			v[k] = at(raw, dtype, o + (int64_t)k);
		c[PARTS] += 1;
		switch (rec[0]) {
		case DNNFAULT_RECORD_WG: /* w and g interleaved: sums, squares, mixed; mins; maxes */
			c[W_SUM] += v[0];
			c[G_SUM] += v[1];
			c[W_SQ] += v[2];
			c[G_SQ] += v[3];
			c[D_SQ] += v[4];
			c[G_ZERO] += v[5] - (double)pad;
			c[W_MAX] = nan_max(c[W_MAX], max_abs(v[6], v[8]));
			c[G_MAX] = nan_max(c[G_MAX], max_abs(v[7], v[9]));
			c[WEIGHTS] = 1;
			break;
		case DNNFAULT_RECORD_W:
			c[W_SUM] += v[R_X];
			c[W_SQ] += v[R_SQ];
			c[D_SQ] += v[R_MIX];
			c[W_MAX] = nan_max(c[W_MAX], max_abs(v[3], v[4]));
			c[WEIGHTS] = 1;
			break;
		default: /* DNNFAULT_RECORD_OUT */
			c[A_SUM] += v[R_X];
			c[A_SQ] += v[R_SQ];
			c[A_POS] += v[R_MIX];
			c[A_SAT] += v[R_SAT];
		}
	}
	/* A layer whose NaN and Inf were not all counted on the device and
	 * whose sums of squares are not finite needs its tensors recounted:
	 * the caller's business. */
	int recount = 0;
	for (size_t i = 0; i < n_layers; i++) {
		const double *c = work + WORK * i;
		if (c[SEEN] && c[COUNTED] < c[PARTS] &&
		    !(isfinite(c[W_SQ]) && isfinite(c[G_SQ]) && isfinite(c[A_SQ])))
			recount = 1;
	}
	if (recount)
		return 1;
	for (size_t i = 0; i < n_layers; i++) {
		const double *c = work + WORK * i;
		float *o = out + DNNFAULT_STATS_PER_LAYER * i;
		if (!c[SEEN]) {
			for (int k = 0; k < DNNFAULT_STATS_PER_LAYER; k++)
				o[k] = NAN;
			continue;
		}
		int64_t layer[4];
		memcpy(layer, layers + 4 * i, sizeof(layer));
		if (!c[WEIGHTS])
			layer[0] = 0;
		layer_stats(c, layer, o);
	}
	return 0;
}
