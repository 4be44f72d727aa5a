#include "fit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct fit_opts fit_defaults = {.folds = 2, .false_alarm = 0.04};

/* The grid: for each depth one model is trained with the most rounds and
 * predicted with each shorter prefix of its rounds. One depth keeps the
 * nested leave-one-program-out evaluation within minutes on two cores. */
static const int grid_depth[] = {4};
static const int grid_rounds[] = {50, 100, 200, 300};
#define N_DEPTH (sizeof grid_depth / sizeof grid_depth[0])
#define N_ROUNDS (sizeof grid_rounds / sizeof grid_rounds[0])
#define N_THRESH 99	/* 0.01 .. 0.99 */

static double thresh(int k)
{
	return 0.01 * (k + 1);
}

int fit__matrix(const struct dataset *d, bool deepfd, struct fit_matrix *m)
{
	memset(m, 0, sizeof *m);
	m->n = d->n;
	m->n_cols = deepfd ? DEEPFD_FEATURES : d->n_features;
	const double *src = deepfd ? d->fd : d->x;
	m->x = malloc((d->n ? d->n : 1) * m->n_cols * sizeof *m->x);
	for (int c = 0; c < CAUSE_COUNT; c++)
		m->y[c] = malloc((d->n ? d->n : 1) * sizeof *m->y[c]);
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (m->y[c] == NULL || m->x == NULL) {
			fit__free_matrix(m);
			return -ENOMEM;
		}
	for (size_t i = 0; i < d->n * m->n_cols; i++)
		m->x[i] = (float)src[i];
	for (size_t i = 0; i < d->n; i++)
		for (int c = 0; c < CAUSE_COUNT; c++)
			m->y[c][i] = (d->meta[i].labels >> c) & 1;
	return 0;
}

void fit__free_matrix(struct fit_matrix *m)
{
	free(m->x);
	for (int c = 0; c < CAUSE_COUNT; c++)
		free(m->y[c]);
	memset(m, 0, sizeof *m);
}

static const struct boost_params base_params = {
	.eta = 0.1, .min_child_weight = 1, .subsample = 0.8, .colsample = 0.8, .seed = 1,
};

struct counts {
	size_t tp, fp, fn;
};

static double f1_of(struct counts k)
{
	return k.tp ? 2.0 * (double)k.tp / (double)(2 * k.tp + k.fp + k.fn) : 0;
}

/* Out-of-fold probabilities: oof[g][r][i] for depth g, rounds r, row i. */
static int out_of_fold(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		       int folds, int cause, float *oof, char *err, size_t len)
{
	size_t *train = malloc((n ? n : 1) * sizeof *train), *test = malloc((n ? n : 1) * sizeof *test);
	size_t *pos = malloc((n ? n : 1) * sizeof *pos);
	float *pred = malloc((n ? n : 1) * sizeof *pred);
	int rv = train && test && pos && pred ? 0 : -ENOMEM;
	/* Fold of a row: its group's rank among the groups present, mod folds. */
	int rank[256];
	for (size_t g = 0; g < 256; g++)
		rank[g] = -1;
	int n_groups = 0;
	for (size_t i = 0; i < n; i++) {
		int g = d->meta[idx[i]].group;
		if (g < 256 && rank[g] < 0)
			rank[g] = n_groups++;
	}
	for (int f = 0; rv == 0 && f < folds && f < n_groups; f++) {
		size_t ntr = 0, nte = 0;
		for (size_t i = 0; i < n; i++) {
			int g = d->meta[idx[i]].group;
			if ((g < 256 ? rank[g] : 0) % folds == f)
				pos[nte] = i, test[nte++] = idx[i];
			else
				train[ntr++] = idx[i];
		}
		struct boost_rows tr = {m->x, m->n_cols, train, ntr}, te = {m->x, m->n_cols, test, nte};
		for (size_t g = 0; rv == 0 && g < N_DEPTH; g++) {
			struct boost_params p = base_params;
			p.max_depth = grid_depth[g];
			p.rounds = grid_rounds[N_ROUNDS - 1];
			void *b = NULL;
			rv = boost__train(&tr, m->y[cause], &p, &b, err, len);
			for (size_t r = 0; rv == 0 && r < N_ROUNDS; r++) {
				rv = boost__predict(b, &te, grid_rounds[r], pred, err, len);
				for (size_t i = 0; rv == 0 && i < nte; i++)
					oof[(g * N_ROUNDS + r) * n + pos[i]] = pred[i];
			}
			if (b != NULL)
				boost__free(b);
		}
	}
	free(train);
	free(test);
	free(pos);
	free(pred);
	return rv;
}

static struct counts count_at(const struct fit_matrix *m, const size_t *idx, size_t n, int cause,
			      const float *p, double t)
{
	struct counts k = {0};
	for (size_t i = 0; i < n; i++) {
		bool yes = p[i] >= t, truth = m->y[cause][idx[i]] > 0.5f;
		k.tp += yes && truth;
		k.fp += yes && !truth;
		k.fn += !yes && truth;
	}
	return k;
}

/* Healthy rows (no cause) that some cause flags at the current thresholds;
 * `blame` counts, per cause, the healthy rows it flags. */
static double false_alarms(const struct dataset *d, const size_t *idx, size_t n, float *const best[],
			   const struct cause_fit fit[], size_t blame[CAUSE_COUNT])
{
	size_t healthy = 0, alarms = 0;
	memset(blame, 0, CAUSE_COUNT * sizeof *blame);
	for (size_t i = 0; i < n; i++) {
		if (d->meta[idx[i]].labels != 0)
			continue;
		healthy++;
		bool any = false;
		for (int c = 0; c < CAUSE_COUNT; c++)
			if (best[c][i] >= fit[c].threshold) {
				blame[c]++;
				any = true;
			}
		alarms += any;
	}
	return healthy ? (double)alarms / (double)healthy : 0;
}

int fit__select(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		const struct fit_opts *o, struct cause_fit fit[CAUSE_COUNT], char *err, size_t len)
{
	size_t cells = N_DEPTH * N_ROUNDS * (n ? n : 1);
	float *oof = malloc(CAUSE_COUNT * cells * sizeof *oof);
	if (oof == NULL)
		return -ENOMEM;
	float *best[CAUSE_COUNT];
	int rv = 0;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++) {
		float *mine = oof + (size_t)c * cells;
		rv = out_of_fold(d, m, idx, n, o->folds, c, mine, err, len);
		double top = -1;
		for (size_t g = 0; rv == 0 && g < N_DEPTH; g++)
			for (size_t r = 0; r < N_ROUNDS; r++)
				for (int k = 0; k < N_THRESH; k++) {
					const float *p = mine + (g * N_ROUNDS + r) * n;
					struct counts kk = count_at(m, idx, n, c, p, thresh(k));
					double f = f1_of(kk);
					if (f > top + 1e-9) {
						top = f;
						best[c] = mine + (g * N_ROUNDS + r) * n;
						fit[c].params = base_params;
						fit[c].params.max_depth = grid_depth[g];
						fit[c].params.rounds = grid_rounds[r];
						fit[c].threshold = thresh(k);
					}
				}
		if (o->verbose && rv == 0)
			fprintf(stderr, "  %-15s depth %d rounds %d threshold %.3f oof F1 %.3f\n",
				causes__name((enum cause_id)c), fit[c].params.max_depth, fit[c].params.rounds,
				fit[c].threshold, top);
	}
	/* Until the share of healthy rows with any alarm is within the target,
	 * raise by 0.01 the threshold that silences the most healthy-row
	 * alarms of its cause per F1 it costs that cause. */
	size_t blame[CAUSE_COUNT];
	double fa = rv == 0 ? false_alarms(d, idx, n, best, fit, blame) : 0;
	while (rv == 0 && fa > o->false_alarm) {
		int pick = -1;
		double pick_score = 0;
		for (int c = 0; c < CAUSE_COUNT; c++) {
			double t = fit[c].threshold;
			if (t >= thresh(N_THRESH - 1) - 1e-9 || blame[c] == 0)
				continue;
			size_t silenced = 0;
			for (size_t i = 0; i < n; i++)
				silenced += d->meta[idx[i]].labels == 0 && best[c][i] >= t && best[c][i] < t + 0.01;
			double cost = f1_of(count_at(m, idx, n, c, best[c], t)) -
				      f1_of(count_at(m, idx, n, c, best[c], t + 0.01));
			double score = (double)silenced / (cost > 0 ? cost + 1e-4 : 1e-4);
			if (pick < 0 || score > pick_score) {
				pick = c;
				pick_score = score;
			}
		}
		if (pick < 0)
			break;
		fit[pick].threshold += 0.01;
		fa = false_alarms(d, idx, n, best, fit, blame);
	}
	if (o->verbose && rv == 0)
		fprintf(stderr, "  out-of-fold false alarms on healthy rows: %.3f (target %.3f)\n", fa, o->false_alarm);
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++) {
		struct counts k = count_at(m, idx, n, c, best[c], fit[c].threshold);
		fit[c].f1 = f1_of(k);
		fit[c].precision = k.tp + k.fp ? (double)k.tp / (double)(k.tp + k.fp) : 0;
		fit[c].recall = k.tp + k.fn ? (double)k.tp / (double)(k.tp + k.fn) : 0;
		/* Suspect from half the threshold: worth a look, not yet a verdict. */
		fit[c].suspect = fit[c].threshold / 2;
	}
	free(oof);
	return rv;
}

int fit__train(const struct fit_matrix *m, const size_t *idx, size_t n,
	       const struct cause_fit fit[CAUSE_COUNT], void *boosters[CAUSE_COUNT], char *err, size_t len)
{
	struct boost_rows rows = {m->x, m->n_cols, idx, n};
	int rv = 0;
	for (int c = 0; c < CAUSE_COUNT; c++)
		boosters[c] = NULL;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		rv = boost__train(&rows, m->y[c], &fit[c].params, &boosters[c], err, len);
	if (rv != 0)
		for (int c = 0; c < CAUSE_COUNT; c++) {
			boost__free(boosters[c]);
			boosters[c] = NULL;
		}
	return rv;
}
