/* dnnfault_reduce: the statistics of a sampled step over tensors in host
 * memory, in one pass per tensor.
 *
 * Why in C: on a small model each torch call costs more to launch than to
 * run (the CNN of bench/overhead.py made 96 calls for 330 us of statistics),
 * and each call is another pass over the data. Here every kind of span is
 * one loop that reads its data once and keeps all its sums in registers.
 *
 * Precision and speed: the loops are `omp simd` reductions (compiled with
 * -fopenmp-simd; no OpenMP runtime), which lets the compiler reorder the
 * float sums into vector lanes. Float32 data is summed in float32 within a
 * block of DNNFAULT_REDUCE_BLOCK elements (each lane then adds a few
 * hundred values) and the blocks in double, so the error stays near
 * torch's own pairwise sums. Counts are exact integers. */
#include "dnnfault.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

/* The Python layer writes spans as five 64-bit words (_host_stats.py). */
_Static_assert(sizeof(struct dnnfault_span) == 40 && offsetof(struct dnnfault_span, n) == 24 &&
		       offsetof(struct dnnfault_span, row) == 32 &&
		       offsetof(struct dnnfault_span, kind) == 36 &&
		       offsetof(struct dnnfault_span, dtype) == 38,
	       "struct dnnfault_span: the layout _host_stats.py writes");

/* |x| > 5 exactly when fl(x²) > 25: rounding is monotonic, and inf and
 * overflowing squares count as saturated, as in the torch path. */
#define SAT_SQ 25.0

/* Sums of one block of one span, before they are added into the row. */
struct block {
	double sum, sq, diff_sq, max_abs, min, max;
	double zero, pos, sat;
};

/* Wider vectors where the CPU has them: one clone per target, picked when
 * the library is loaded (GNU ifunc, hence glibc only). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef VECTOR_CLONES
#define VECTOR_CLONES
#endif

/* meson defines DNNFAULT_OMP_SIMD where the compiler takes -fopenmp-simd;
 * elsewhere the loops stay plain (an unknown pragma would be a warning). */
#ifdef DNNFAULT_OMP_SIMD
#define SIMD(clauses) _Pragma(clauses)
#else
#define SIMD(clauses)
#endif

/* The kernels, once per element type. Each reads n <= BLOCK elements. */
#define REDUCE_KERNELS(T, SFX)                                                                  \
	/* Weights with their previous values; without them, grad_ serves. */                   \
	VECTOR_CLONES static void weight_##SFX(const T *x, const T *prev, size_t n, struct block *b) \
	{                                                                                       \
		T s = 0, q = 0, d = 0, m = 0;                                                   \
		SIMD("omp simd reduction(+:s,q,d) reduction(max:m)")                            \
		for (size_t i = 0; i < n; i++) {                                                \
			T v = x[i], a = v < 0 ? -v : v, e = v - prev[i];                        \
			s += v;                                                                 \
			q += v * v;                                                             \
			d += e * e;                                                             \
			m = a > m ? a : m;                                                      \
		}                                                                               \
		*b = (struct block){.sum = s, .sq = q, .diff_sq = d, .max_abs = m};             \
	}                                                                                       \
	VECTOR_CLONES static void grad_##SFX(const T *x, size_t n, struct block *b)             \
	{                                                                                       \
		T s = 0, q = 0, m = 0;                                                          \
		int z = 0;                                                                      \
		SIMD("omp simd reduction(+:s,q,z) reduction(max:m)")                            \
		for (size_t i = 0; i < n; i++) {                                                \
			T v = x[i], a = v < 0 ? -v : v;                                         \
			s += v;                                                                 \
			q += v * v;                                                             \
			m = a > m ? a : m;                                                      \
			z += v == 0;                                                            \
		}                                                                               \
		*b = (struct block){.sum = s, .sq = q, .max_abs = m, .zero = (double)z};        \
	}                                                                                       \
	VECTOR_CLONES static void output_##SFX(const T *x, size_t n, struct block *b)           \
	{                                                                                       \
		T s = 0, q = 0;                                                                 \
		int p = 0, t = 0;                                                               \
		SIMD("omp simd reduction(+:s,q,p,t)")                                           \
		for (size_t i = 0; i < n; i++) {                                                \
			T v = x[i], v2 = v * v;                                                 \
			s += v;                                                                 \
			q += v2;                                                                \
			p += v > 0;                                                             \
			t += v2 > (T)SAT_SQ;                                                    \
		}                                                                               \
		*b = (struct block){.sum = s, .sq = q, .pos = (double)p, .sat = (double)t};     \
	}                                                                                       \
	VECTOR_CLONES static void input_##SFX(const T *x, size_t n, struct block *b)            \
	{                                                                                       \
		T s = 0, q = 0, lo = x[0], hi = x[0];                                           \
		SIMD("omp simd reduction(+:s,q) reduction(min:lo) reduction(max:hi)")           \
		for (size_t i = 0; i < n; i++) {                                                \
			T v = x[i];                                                             \
			s += v;                                                                 \
			q += v * v;                                                             \
			lo = v < lo ? v : lo;                                                   \
			hi = v > hi ? v : hi;                                                   \
		}                                                                               \
		*b = (struct block){.sum = s, .sq = q, .min = lo, .max = hi};                   \
	}                                                                                       \
	static void nonfinite_##SFX(const T *x, uint64_t n, double *nan, double *inf)           \
	{                                                                                       \
		for (uint64_t i = 0; i < n; i++) {                                              \
			*nan += isnan(x[i]) != 0;                                               \
			*inf += isinf(x[i]) != 0;                                               \
		}                                                                               \
	}

REDUCE_KERNELS(float, f32)
REDUCE_KERNELS(double, f64)

/* max and min that propagate NaN, as torch's amax and amin do. */
static double nan_max(double a, double b)
{
	return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
}

static double nan_min(double a, double b)
{
	return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
}

static void block_of(const struct dnnfault_span *sp, uint64_t at, size_t n, struct block *b)
{
	bool f32 = sp->dtype == DNNFAULT_F32;
	size_t w = f32 ? sizeof(float) : sizeof(double);
	const char *x = (const char *)sp->data + at * w;
	const char *prev = sp->prev != NULL ? (const char *)sp->prev + at * w : NULL;

	switch (sp->kind) {
	case DNNFAULT_SPAN_WEIGHT:
		if (prev == NULL)	/* a gradient's sums; its zero count goes unused */
			f32 ? grad_f32((const float *)x, n, b) : grad_f64((const double *)x, n, b);
		else if (f32)
			weight_f32((const float *)x, (const float *)prev, n, b);
		else
			weight_f64((const double *)x, (const double *)prev, n, b);
		/* After the block is read: keep may be prev itself. */
		if (sp->keep != NULL)
			memcpy((char *)sp->keep + at * w, x, n * w);
		break;
	case DNNFAULT_SPAN_GRAD:
		f32 ? grad_f32((const float *)x, n, b) : grad_f64((const double *)x, n, b);
		break;
	case DNNFAULT_SPAN_OUTPUT:
		f32 ? output_f32((const float *)x, n, b) : output_f64((const double *)x, n, b);
		break;
	default:
		f32 ? input_f32((const float *)x, n, b) : input_f64((const double *)x, n, b);
		break;
	}
}

static void reduce_span(const struct dnnfault_span *sp, double *row)
{
	struct block t = {.min = INFINITY, .max = -INFINITY};
	for (uint64_t at = 0; at < sp->n; at += DNNFAULT_REDUCE_BLOCK) {
		uint64_t left = sp->n - at;
		size_t n = left < DNNFAULT_REDUCE_BLOCK ? (size_t)left : DNNFAULT_REDUCE_BLOCK;
		struct block b;
		block_of(sp, at, n, &b);
		t.sum += b.sum;
		t.sq += b.sq;
		t.diff_sq += b.diff_sq;
		t.max_abs = b.max_abs > t.max_abs ? b.max_abs : t.max_abs;
		t.min = b.min < t.min ? b.min : t.min;
		t.max = b.max > t.max ? b.max : t.max;
		t.zero += b.zero;
		t.pos += b.pos;
		t.sat += b.sat;
	}
	/* A NaN or an Inf makes the sum of squares NaN or inf, and a finite sum
	 * of non-negative squares proves there is none: count only then. */
	double nan = 0, inf = 0;
	if (!isfinite(t.sq)) {
		if (sp->dtype == DNNFAULT_F32)
			nonfinite_f32(sp->data, sp->n, &nan, &inf);
		else
			nonfinite_f64(sp->data, sp->n, &nan, &inf);
		if (nan > 0)
			t.max_abs = t.min = t.max = NAN;
	}
	row[DNNFAULT_ACC_NAN] += nan;
	row[DNNFAULT_ACC_INF] += inf;
	switch (sp->kind) {
	case DNNFAULT_SPAN_WEIGHT:
		row[DNNFAULT_ACC_W_SUM] += t.sum;
		row[DNNFAULT_ACC_W_SQ] += t.sq;
		row[DNNFAULT_ACC_W_DIFF_SQ] += t.diff_sq;
		row[DNNFAULT_ACC_W_MAX_ABS] = nan_max(row[DNNFAULT_ACC_W_MAX_ABS], t.max_abs);
		break;
	case DNNFAULT_SPAN_GRAD:
		row[DNNFAULT_ACC_G_SUM] += t.sum;
		row[DNNFAULT_ACC_G_SQ] += t.sq;
		row[DNNFAULT_ACC_G_MAX_ABS] = nan_max(row[DNNFAULT_ACC_G_MAX_ABS], t.max_abs);
		row[DNNFAULT_ACC_G_ZERO] += t.zero;
		break;
	case DNNFAULT_SPAN_OUTPUT:
		row[DNNFAULT_ACC_A_SUM] += t.sum;
		row[DNNFAULT_ACC_A_SQ] += t.sq;
		row[DNNFAULT_ACC_A_POS] += t.pos;
		row[DNNFAULT_ACC_A_SAT] += t.sat;
		break;
	default:
		row[DNNFAULT_ACC_A_SUM] += t.sum;
		row[DNNFAULT_ACC_A_SQ] += t.sq;
		row[DNNFAULT_ACC_X_MIN] = nan_min(row[DNNFAULT_ACC_X_MIN], t.min);
		row[DNNFAULT_ACC_X_MAX] = nan_max(row[DNNFAULT_ACC_X_MAX], t.max);
		break;
	}
}

int dnnfault_reduce(const struct dnnfault_span *spans, size_t n_spans, double *acc, size_t n_rows)
{
	if (acc == NULL && n_rows > 0)
		return -EINVAL;
	for (size_t i = 0; i < n_rows; i++) {
		double *row = acc + i * DNNFAULT_ACC_N;
		for (int k = 0; k < DNNFAULT_ACC_N; k++)
			row[k] = 0;
		row[DNNFAULT_ACC_X_MIN] = INFINITY;
		row[DNNFAULT_ACC_X_MAX] = -INFINITY;
	}
	if (spans == NULL && n_spans > 0)
		return -EINVAL;
	for (size_t i = 0; i < n_spans; i++) {
		const struct dnnfault_span *sp = &spans[i];
		if (sp->kind < DNNFAULT_SPAN_WEIGHT || sp->kind > DNNFAULT_SPAN_INPUT ||
		    (sp->dtype != DNNFAULT_F32 && sp->dtype != DNNFAULT_F64) || sp->row >= n_rows ||
		    (sp->data == NULL && sp->n > 0))
			return -EINVAL;
	}
	for (size_t i = 0; i < n_spans; i++)
		reduce_span(&spans[i], acc + (size_t)spans[i].row * DNNFAULT_ACC_N);
	return 0;
}
