#include "baselines.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/*
 * DeepFD (Cao et al., ICSE 2022; CodeBook/Callbacks/Monitor.py and
 * Config.py of github.com/ArabelaTso/DeepFD). Its monitor keeps 18 symptom
 * counters (booleans stay set, counts only grow) and logs them at every
 * check; a random forest learns from statistics of the logged columns. Our
 * checks are the samples: counters read the sample's layer statistics and
 * loss, and the epochs that had ended by its step. Thresholds are AutoTrainer's
 * (DeepFD reuses its monitor) with Theta = 0.6. Meanings as in Monitor.py;
 * where it leaves one undefined:
 * - weight_change_little is declared but never set: here, samples where
 *   every update ratio sent is below design.md's 1e-5;
 * - test_turn_bad breaks out of its loop after one epoch: here, the streak
 *   of latest epochs its comment describes;
 * - increase_loss / decrease_acc compare consecutive checks, here samples;
 * - accuracy counters apply to classification only.
 */

/* The accuracy a converging run reaches ("Theta"): 0.6 in DeepFD's
 * Config.py. */
#define FD_SATISFIED_ACC 0.6
/* DeepFD Monitor.py loss_issue: a train/validation accuracy gap of 0.1, or
 * 0.07 once training accuracy is above 0.9; loss moves beyond
 * epsilon = 10e-3 count as moves. */
#define FD_GAP 0.1
#define FD_GAP_HIGH 0.07
#define FD_GAP_KNEE 0.9
#define FD_EPSILON 10e-3

#define FD_COUNTER_LIST(X)        \
	X(not_converge)           \
	X(unstable_loss)          \
	X(nan_loss)               \
	X(test_not_well)          \
	X(test_turn_bad)          \
	X(sc_accuracy)            \
	X(died_relu)              \
	X(vanish_gradient)        \
	X(explode_gradient)       \
	X(nan_gradient)           \
	X(large_weight)           \
	X(nan_weight)             \
	X(weight_change_little)   \
	X(decrease_acc)           \
	X(increase_loss)          \
	X(cons_mean_weight)       \
	X(cons_std_weight)        \
	X(nan_acc)

enum fd_counter {
#define FD_ENUM(name) FD_##name,
	FD_COUNTER_LIST(FD_ENUM)
#undef FD_ENUM
	FD_COUNT
};
_Static_assert(FD_COUNT == DEEPFD_COUNTERS, "DEEPFD_COUNTERS must match the counter list");

/* Config.py OPERATORS, in its order. */
#define FD_NAMES(name)                                                                           \
	"fd_" #name "_mean", "fd_" #name "_std", "fd_" #name "_skew", "fd_" #name "_median",     \
	"fd_" #name "_var", "fd_" #name "_sem", "fd_" #name "_max", "fd_" #name "_min",
static const char *const fd_names[] = {FD_COUNTER_LIST(FD_NAMES)};
#undef FD_NAMES
_Static_assert(sizeof fd_names / sizeof fd_names[0] == DEEPFD_FEATURES,
	       "one name per counter and statistic");

const char *baselines__deepfd_name(size_t i)
{
	return i < DEEPFD_FEATURES ? fd_names[i] : NULL;
}

struct fd_monitor {
	double c[FD_COUNT];
	bool loss_broken, acc_broken;
	size_t epochs;		/* epochs whose losses were read */
};

/* gradient_issue: stops at a NaN gradient. */
static void fd_gradients(const struct series *s, size_t i, struct fd_monitor *m,
			 const struct symptom_thresholds *t)
{
	if (bl__any_nonfinite(s, i, DNNFAULT__LAYER_STAT__GRAD_NORM)) {
		m->c[FD_nan_gradient] = 1;
		return;
	}
	double rate, first;
	if (bl__grad_rate(s, i, &rate, &first)) {
		m->c[FD_vanish_gradient] += rate < t->vanish_ratio && first < t->vanish_first_norm;
		m->c[FD_explode_gradient] += rate > t->explode_ratio;
	}
	m->c[FD_died_relu] += bl__zero_share(s, i) >= t->dead_frac;
}

/* weights_issue: stops at a NaN weight; a statistic equal to the previous
 * check's counts once per layer. */
static void fd_weights(const struct series *s, size_t i, struct fd_monitor *m,
		       const struct symptom_thresholds *t)
{
	if (bl__any_nonfinite(s, i, DNNFAULT__LAYER_STAT__WEIGHT_NORM)) {
		m->c[FD_nan_weight] = 1;
		return;
	}
	bool large = false, moved = false, any_ratio = false;
	for (size_t l = 0; l < s->n_layers; l++) {
		large |= STAT(s, i, l, WEIGHT_MAX_ABS) > t->large_weight;
		float r = STAT(s, i, l, UPDATE_RATIO);
		if (isfinite(r)) {
			any_ratio = true;
			moved |= r >= t->update_low;
		}
		if (i == 0)
			continue;
		float mean = STAT(s, i, l, WEIGHT_MEAN), std = STAT(s, i, l, WEIGHT_STD);
		m->c[FD_cons_mean_weight] += isfinite(mean) && mean == STAT(s, i - 1, l, WEIGHT_MEAN);
		m->c[FD_cons_std_weight] += isfinite(std) && std == STAT(s, i - 1, l, WEIGHT_STD);
	}
	m->c[FD_large_weight] += large;
	m->c[FD_weight_change_little] += any_ratio && !moved;
}

/* test_turn_bad: latest epochs in a row where the training loss fell and
 * the validation loss rose, each by more than epsilon. */
static double fd_turn_bad(const struct series *s, size_t ne)
{
	const double *tl = s->epoch[EPOCH_TRAIN_LOSS], *vl = s->epoch[EPOCH_VAL_LOSS];
	double k = 0;
	for (size_t e = ne; e >= 2 && tl[e - 1] - tl[e - 2] < -FD_EPSILON && vl[e - 1] - vl[e - 2] > FD_EPSILON; e--)
		k++;
	return k;
}

/* loss_issue: stops at a broken loss or accuracy (counting it at every
 * check from then on); the rest waits for the judgment point. */
static void fd_losses(const struct series *s, size_t i, struct fd_monitor *m,
		      const struct symptom_thresholds *t)
{
	size_t ne = bl__epochs_by(s, s->step[i]);
	bool acc = bl__classification(s);
	m->loss_broken |= bl__loss_broken(s->col[SERIES_LOSS][i], s->has[SERIES_LOSS][i], t);
	m->acc_broken |= acc && s->has[SERIES_ACCURACY][i] && !isfinite(s->col[SERIES_ACCURACY][i]);
	for (; m->epochs < ne; m->epochs++)
		m->loss_broken |= bl__epoch_loss_broken(s, m->epochs, t);
	if (m->loss_broken) {
		m->c[FD_nan_loss]++;
		return;
	}
	if (m->acc_broken) {
		m->c[FD_nan_acc]++;
		return;
	}
	if (!bl__judged(s, ne, s->step[i]))
		return;
	if (acc && ne > 0) {
		double tm = bl__train_acc(s)[ne - 1], vm = bl__val_acc(s)[ne - 1];
		if (isfinite(tm) && isfinite(vm) &&
		    tm - vm >= (tm <= FD_GAP_KNEE ? FD_GAP : FD_GAP_HIGH))
			m->c[FD_test_not_well]++;
		if (bl__oscillates(bl__swing_acc(s, ne), ne, t->unstable_swing, t->unstable_share))
			m->c[FD_unstable_loss] = 1;
		if (bl__not_converging(s, ne, FD_SATISFIED_ACC))
			m->c[FD_not_converge] = 1;
		if (bl__slow_gain(s, ne, t))
			m->c[FD_sc_accuracy] = 1;
	}
	m->c[FD_test_turn_bad] = fd_turn_bad(s, ne);
	if (i > 0) {
		const double *loss = s->col[SERIES_LOSS], *a = s->col[SERIES_ACCURACY];
		m->c[FD_increase_loss] += loss[i] > loss[i - 1];
		if (acc)
			m->c[FD_decrease_acc] += a[i] < a[i - 1];
	}
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* pandas' agg of one column (NaN skipped) into DeepFD's statistics, in
 * Config.py's order: mean, std, skew, median, var, sem, max, min. std, var
 * and sem have n - 1 degrees of freedom; skew is the adjusted
 * Fisher-Pearson coefficient, 0 for a constant column. `tmp` holds n. */
static void fd_describe(const double *x, size_t n, double *tmp, double out[DEEPFD_STATS])
{
	size_t k = 0;
	for (size_t j = 0; j < n; j++)
		if (isfinite(x[j]))
			tmp[k++] = x[j];
	for (int j = 0; j < DEEPFD_STATS; j++)
		out[j] = NAN;
	if (k == 0)
		return;
	double sum = 0;
	for (size_t j = 0; j < k; j++)
		sum += tmp[j];
	double mean = sum / (double)k, m2 = 0, m3 = 0;
	for (size_t j = 0; j < k; j++) {
		double d = tmp[j] - mean;
		m2 += d * d;
		m3 += d * d * d;
	}
	/* pandas zeroes sums below 1e-14 (floating-point noise). */
	m2 = fabs(m2) < 1e-14 ? 0 : m2;
	m3 = fabs(m3) < 1e-14 ? 0 : m3;
	qsort(tmp, k, sizeof *tmp, by_value);
	double kk = (double)k;
	out[0] = mean;
	out[3] = k % 2 ? tmp[k / 2] : (tmp[k / 2 - 1] + tmp[k / 2]) / 2;
	out[6] = tmp[k - 1];
	out[7] = tmp[0];
	if (k >= 2) {
		out[4] = m2 / (kk - 1);
		out[1] = sqrt(out[4]);
		out[5] = out[1] / sqrt(kk);
	}
	if (k >= 3)
		out[2] = m2 == 0 ? 0 : kk * sqrt(kk - 1) / (kk - 2) * m3 / pow(m2, 1.5);
}

void baselines__deepfd_features(const struct series *s, double out[DEEPFD_FEATURES])
{
	const struct symptom_thresholds *t = &symptom_defaults;
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		out[j] = NAN;
	size_t n = s->n;
	if (n == 0)
		return;
	/* Column k of the log at rows + k * n, then one column of scratch. */
	double *rows = malloc((FD_COUNT + 1) * n * sizeof *rows);
	if (rows == NULL)
		return;
	struct fd_monitor m;
	memset(&m, 0, sizeof m);
	for (size_t i = 0; i < n; i++) {
		fd_gradients(s, i, &m, t);
		fd_weights(s, i, &m, t);
		fd_losses(s, i, &m, t);
		for (int k = 0; k < FD_COUNT; k++)
			rows[(size_t)k * n + i] = m.c[k];
	}
	for (int k = 0; k < FD_COUNT; k++)
		fd_describe(rows + (size_t)k * n, n, rows + FD_COUNT * n, out + (size_t)k * DEEPFD_STATS);
	free(rows);
}
