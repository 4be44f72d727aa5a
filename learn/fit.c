#include "fit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "run_features.h"

const struct fit_opts fit_defaults = {.folds = 2, .detector_folds = 0, .false_alarm = 0.035, .seed = 1};

/* A tree depth with its grid of rounds. One model per depth is trained
 * with the most rounds and predicted with each shorter prefix of its
 * rounds, so a depth costs one model per fold. */
#define N_ROUNDS 4
struct depth_grid {
	int depth;
	int rounds[N_ROUNDS];
};
/* The cause models: one depth keeps the nested leave-one-program-out
 * evaluation within minutes on two cores. */
static const struct depth_grid cause_grid = {3, {50, 100, 200, 400}};
/* The detector also tries depth 2, with more rounds for its smaller trees
 * (about the same training time as depth 3): telling faulty from healthy
 * on a program never seen generalised better with shallower trees in a
 * leave-one-program-out comparison (docs/model.md), so validation
 * chooses between the two. */
static const struct depth_grid detector_grid[] = {
	{3, {50, 100, 200, 400}},
	{2, {75, 150, 300, 600}},
};
#define N_DETECTOR_DEPTHS (sizeof detector_grid / sizeof detector_grid[0])
/* The reference detector tries only the depth validation chose for the
 * detector on the 15-program corpus (docs/model.md): each depth costs one
 * more leave-one-program-out selection in every fold of the nested
 * evaluation. */
static const struct depth_grid ref_grid[] = {{2, {75, 150, 300, 600}}};
static const double grid_ratio[] = {0.3, 0.5, 0.65, 0.8, 1.0};
#define N_RATIO (sizeof grid_ratio / sizeof grid_ratio[0])
/* "Suspect" flags about this many times the target share of healthy rows. */
#define SUSPECT_FACTOR 3

/* Every setting but the depth and rounds, chosen here, and the seed, an
 * option. */
static const struct boost_params base_params = {
	.eta = 0.1, .min_child_weight = 5, .subsample = 0.8, .colsample = 0.3,
};

static struct boost_params params_for(const struct fit_opts *o, int depth, int rounds)
{
	struct boost_params p = base_params;
	p.max_depth = depth;
	p.rounds = rounds;
	p.seed = o->seed;
	return p;
}

int fit__matrix(const struct dataset *d, bool deepfd, struct fit_matrix *m)
{
	memset(m, 0, sizeof *m);
	m->n = d->n;
	m->n_cols = deepfd ? DEEPFD_FEATURES : d->n_features;
	m->n_base = deepfd ? DEEPFD_FEATURES : features__base_count();
	const double *src = deepfd ? d->fd : d->x;
	size_t rows = d->n ? d->n : 1;
	m->x = malloc(rows * m->n_cols * sizeof *m->x);
	m->fault = malloc(rows * sizeof *m->fault);
	m->has_ref = malloc(rows * sizeof *m->has_ref);
	bool ok = m->x && m->fault && m->has_ref;
	for (int c = 0; c < CAUSE_COUNT; c++)
		ok &= (m->y[c] = malloc(rows * sizeof *m->y[c])) != NULL;
	if (!ok) {
		fit__free_matrix(m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < d->n * m->n_cols; i++)
		m->x[i] = (float)src[i];
	for (size_t i = 0; i < d->n; i++) {
		for (int c = 0; c < CAUSE_COUNT; c++)
			m->y[c][i] = (d->meta[i].labels >> c) & 1;
		m->fault[i] = d->meta[i].labels != 0;
		m->has_ref[i] = !deepfd && d->meta[i].reference != 0;
	}
	return 0;
}

void fit__free_matrix(struct fit_matrix *m)
{
	free(m->x);
	free(m->fault);
	free(m->has_ref);
	for (int c = 0; c < CAUSE_COUNT; c++)
		free(m->y[c]);
	memset(m, 0, sizeof *m);
}

/* Out-of-fold probabilities of every row idx[0..n) under each number of
 * rounds of the grid, oof[r * n + i], from models trained on the other folds' rows
 * with labels y, and only their faulty rows when faulty_only. A row's
 * fold is its program's rank among the programs present, mod folds
 * (folds 0: one fold per program). Models read the first `cols` columns. */
static int out_of_fold(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		       size_t cols, const struct fit_opts *o, const struct depth_grid *grid, int folds,
		       const float *y, bool faulty_only, float *oof, char *err, size_t len)
{
	size_t rows = n ? n : 1;
	size_t *train = malloc(rows * sizeof *train), *test = malloc(rows * sizeof *test);
	size_t *pos = malloc(rows * sizeof *pos);
	float *pred = malloc(rows * sizeof *pred);
	int *fold_of = malloc(rows * sizeof *fold_of);
	int rv = train && test && pos && pred && fold_of ? 0 : -ENOMEM;
	int rank[256], n_groups = 0;
	for (size_t g = 0; g < 256; g++)
		rank[g] = -1;
	for (size_t i = 0; rv == 0 && i < n; i++) {
		int g = d->meta[idx[i]].group;
		if (g < 256 && rank[g] < 0)
			rank[g] = n_groups++;
	}
	if (folds <= 0 || folds > n_groups)
		folds = n_groups;	/* one program per fold */
	for (size_t i = 0; rv == 0 && i < n; i++) {
		int g = d->meta[idx[i]].group;
		fold_of[i] = (g < 256 ? rank[g] : 0) % folds;
	}
	for (int f = 0; rv == 0 && f < folds && f < n_groups; f++) {
		size_t ntr = 0, nte = 0;
		for (size_t i = 0; i < n; i++) {
			if (fold_of[i] == f)
				pos[nte] = i, test[nte++] = idx[i];
			else if (!faulty_only || m->fault[idx[i]] > 0.5f)
				train[ntr++] = idx[i];
		}
		struct boost_rows tr = {m->x, cols, train, ntr, m->n_cols}, te = {m->x, cols, test, nte, m->n_cols};
		struct boost_params p = params_for(o, grid->depth, grid->rounds[N_ROUNDS - 1]);
		void *b = NULL;
		rv = boost__train(&tr, y, &p, &b, err, len);
		for (size_t r = 0; rv == 0 && r < N_ROUNDS; r++) {
			rv = boost__predict(b, &te, grid->rounds[r], pred, err, len);
			for (size_t i = 0; rv == 0 && i < nte; i++)
				oof[r * n + pos[i]] = pred[i];
		}
		boost__free(b);
	}
	free(train);
	free(test);
	free(pos);
	free(pred);
	free(fold_of);
	return rv;
}

static int cmp_desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x < y) - (x > y);
}

double fit__threshold_for(double *healthy, size_t n_healthy, double share)
{
	if (n_healthy == 0)
		return 0.5;
	qsort(healthy, n_healthy, sizeof *healthy, cmp_desc);
	size_t allowed = (size_t)floor(share * (double)n_healthy);
	if (allowed >= n_healthy)
		return 0;
	/* Just above the first healthy score that must stay below. */
	return fmin(1.0, nextafter(healthy[allowed], 2.0));
}

void fit__count(struct fit_counts *k, cause_set truth, cause_set pred)
{
	for (int c = 0; c < CAUSE_COUNT; c++) {
		bool y = truth >> c & 1, q = pred >> c & 1;
		k->tp[c] += y && q;
		k->fp[c] += !y && q;
		k->fn[c] += y && !q;
	}
}

double fit__f1(size_t tp, size_t fp, size_t fn)
{
	return tp ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0;
}

double fit__macro_f1(const struct fit_counts *k)
{
	double s = 0;
	for (int c = 0; c < CAUSE_COUNT; c++)
		s += fit__f1(k->tp[c], k->fp[c], k->fn[c]);
	return s / CAUSE_COUNT;
}

/* Counts of the rule with f's settings over out-of-fold probabilities. */
static void count_rule(const struct dataset *d, const size_t *idx, size_t n, const struct fit *f,
		       const float *fault, float *const prob[CAUSE_COUNT], struct fit_counts *k)
{
	memset(k, 0, sizeof *k);
	for (size_t i = 0; i < n; i++) {
		double p[CAUSE_COUNT];
		for (int c = 0; c < CAUSE_COUNT; c++)
			p[c] = prob[c][i];
		fit__count(k, d->meta[idx[i]].labels, fit__decide(f, fault[i], NAN, p));
	}
}

/* Mean log-loss of a cause's probabilities over the faulty rows: how the
 * causes' rounds are chosen, since their models rank causes of faults. */
static double log_loss(const struct fit_matrix *m, const size_t *idx, size_t n, int cause, const float *p)
{
	double s = 0;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (m->fault[idx[i]] < 0.5f)
			continue;
		double q = fmin(fmax(p[i], 1e-6), 1 - 1e-6);
		s -= m->y[cause][idx[i]] > 0.5f ? log(q) : log(1 - q);
		k++;
	}
	return k ? s / (double)k : 0;
}

/* The lowest threshold that flags at most `share` of the healthy rows at
 * point k of progress (0 without any). scratch holds n values. */
static double threshold_at_point(const struct dataset *d, const struct fit_matrix *m, const size_t *idx,
				 size_t n, const float *p, double share, int k, double *scratch)
{
	size_t nh = 0;
	for (size_t i = 0; i < n; i++)
		if (m->fault[idx[i]] < 0.5f && d->meta[idx[i]].point == k)
			scratch[nh++] = p[i];
	return nh > 0 ? fit__threshold_for(scratch, nh, share) : 0;
}

/* The lowest threshold that flags at most `share` of the healthy rows at
 * every point of progress: a healthy run is judged again and again while
 * it trains, and its early rows, rarely flagged, must not buy the later
 * ones a larger share. scratch holds n values. */
static double threshold_every_point(const struct dataset *d, const struct fit_matrix *m, const size_t *idx,
				    size_t n, const float *p, double share, double *scratch)
{
	double t = 0;
	for (int k = 0; k < DATASET_POINTS; k++)
		t = fmax(t, threshold_at_point(d, m, idx, n, p, share, k, scratch));
	return t;
}

/* A detector's choice: its settings, thresholds and out-of-fold rate. */
struct detector_choice {
	struct boost_params p;
	double threshold, suspect, detection;
};

/* A detector (`name`, for the progress lines) on the first `cols`
 * columns: the depth and rounds of `grid`
 * with the most faulty rows flagged at the target share of healthy rows
 * flagged (at every point); its thresholds; its chosen probabilities into
 * best[n]. */
static int select_detector(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
			   const char *name, size_t cols, const struct depth_grid *grid, size_t n_depths,
			   const struct fit_opts *o,
			   struct detector_choice *out, float *best, char *err, size_t len)
{
	size_t rows = n ? n : 1;
	float *oof = malloc(N_ROUNDS * rows * sizeof *oof);
	double *healthy = malloc(rows * sizeof *healthy);
	int rv = oof && healthy ? 0 : -ENOMEM;
	double top = -1;
	for (size_t k = 0; rv == 0 && k < n_depths; k++) {
		const struct depth_grid *g = &grid[k];
		rv = out_of_fold(d, m, idx, n, cols, o, g, o->detector_folds, m->fault, false, oof, err, len);
		for (size_t r = 0; rv == 0 && r < N_ROUNDS; r++) {
			const float *p = oof + r * n;
			size_t faulty = 0, found = 0;
			double t = threshold_every_point(d, m, idx, n, p, o->false_alarm, healthy);
			for (size_t i = 0; i < n; i++)
				if (m->fault[idx[i]] > 0.5f)
					faulty++, found += p[i] >= t;
			double detection = faulty ? (double)found / (double)faulty : 0;
			if (o->verbose)
				fprintf(stderr, "  %s depth %d rounds %3d: oof detection %.3f\n", name, g->depth,
					g->rounds[r], detection);
			if (detection > top + 1e-9) {
				top = detection;
				out->p = params_for(o, g->depth, g->rounds[r]);
				out->threshold = t;
				out->suspect = threshold_every_point(
					d, m, idx, n, p, fmin(0.5, SUSPECT_FACTOR * o->false_alarm), healthy);
				out->detection = detection;
				memcpy(best, p, n * sizeof *best);
			}
		}
	}
	if (rv == 0 && out->suspect > out->threshold)
		out->suspect = out->threshold;
	free(oof);
	free(healthy);
	return rv;
}

/* A detector's (`name`) thresholds of each point of progress, from its
 * chosen out-of-fold probabilities p of rows idx[0..n), into
 * threshold_at and suspect_at. */
static void per_point(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		      const struct fit_opts *o, const float *p, const char *name,
		      double threshold_at[DATASET_POINTS], double suspect_at[DATASET_POINTS], double *scratch)
{
	for (int k = 0; k < DATASET_POINTS; k++) {
		threshold_at[k] = threshold_at_point(d, m, idx, n, p, o->false_alarm, k, scratch);
		suspect_at[k] = fmin(threshold_at[k], threshold_at_point(d, m, idx, n, p,
									  fmin(0.5, SUSPECT_FACTOR * o->false_alarm), k,
									  scratch));
		if (o->verbose)
			fprintf(stderr, "  %s at %.0f%%: threshold %.4f suspect %.4f\n", name, dataset_points[k] * 100,
				threshold_at[k], suspect_at[k]);
	}
}

static int cmp_shortfall_desc(const void *a, const void *b)
{
	double x = ((const struct fit_outcome_row *)a)->shortfall, y = ((const struct fit_outcome_row *)b)->shortfall;
	if (isnan(x) || isnan(y))
		return isnan(x) - isnan(y);	/* NaN last */
	return (x < y) - (x > y);
}

void fit__outcome_check(struct fit_outcome_row *healthy, size_t nh, const struct fit_outcome_row *faulty, size_t nf,
			double share, double *scratch, double *shortfall, double *threshold)
{
	qsort(healthy, nh, sizeof *healthy, cmp_shortfall_desc);
	size_t allowed = (size_t)floor(share * (double)nh), top = 0;
	*shortfall = INFINITY;
	*threshold = 0;
	/* Candidate j flags the healthy rows above the j-th largest healthy
	 * shortfall (j = 0: none, no check). */
	for (size_t j = 0; nh > 0 && j <= allowed + 1 && j <= nh; j++) {
		if (j > 0 && isnan(healthy[j - 1].shortfall))
			break;
		double x = j == 0 ? INFINITY : nextafter(healthy[j - 1].shortfall, INFINITY);
		if (!(x > 0))
			break;	/* a run as good as its reference is not faulty for its outcome */
		size_t left = 0, spent = 0;	/* healthy rows the check leaves to the probability */
		for (size_t i = 0; i < nh; i++) {
			if (healthy[i].shortfall >= x)
				spent++;
			else
				scratch[left++] = healthy[i].p;
		}
		qsort(scratch, left, sizeof *scratch, cmp_desc);
		double t = allowed - spent >= left ? 0 : fmin(1.0, nextafter(scratch[allowed - spent], 2.0));
		size_t found = 0;
		for (size_t i = 0; i < nf; i++)
			found += faulty[i].shortfall >= x || faulty[i].p >= t;
		if (j == 0 || found > top) {
			top = found;
			*shortfall = x;
			*threshold = t;
		}
	}
}

/* The reference detector's outcome check at point k (fit__outcome_check)
 * from its out-of-fold probabilities p of rows idx[0..n). scratch holds n
 * doubles, rows n outcome rows. */
static void shortfall_at_point(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
			       const float *p, double share, int k, double *shortfall, double *threshold,
			       struct fit_outcome_row *rows, double *scratch)
{
	size_t nh = 0, nf = 0;
	for (size_t i = 0; i < n; i++)	/* healthy rows first, faulty ones from the end */
		if (d->meta[idx[i]].point == k) {
			struct fit_outcome_row r = {p[i], features__shortfall(d->x + idx[i] * d->n_features)};
			if (m->fault[idx[i]] < 0.5f)
				rows[nh++] = r;
			else
				rows[n - 1 - nf++] = r;
		}
	fit__outcome_check(rows, nh, rows + n - nf, nf, share, scratch, shortfall, threshold);
}

/* The reference detector, on the rows of idx that have a reference (none:
 * f->has_ref stays false). */
static int select_reference(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
			    const struct fit_opts *o, struct fit *f, char *err, size_t len)
{
	size_t *with = malloc((n ? n : 1) * sizeof *with), k = 0, healthy = 0;
	float *p = malloc((n ? n : 1) * sizeof *p);
	double *scratch = malloc((n ? n : 1) * sizeof *scratch);
	struct fit_outcome_row *rows = malloc((n ? n : 1) * sizeof *rows);
	int rv = with && p && scratch && rows ? 0 : -ENOMEM;
	for (size_t i = 0; rv == 0 && i < n; i++)
		if (m->has_ref[idx[i]]) {
			with[k++] = idx[i];
			healthy += m->fault[idx[i]] < 0.5f;
		}
	struct detector_choice c = {0};
	if (rv == 0 && healthy > 0 && healthy < k) {
		rv = select_detector(d, m, with, k, "reference detector", m->n_cols, ref_grid, sizeof ref_grid / sizeof ref_grid[0], o, &c,
				     p, err, len);
		if (rv == 0) {
			size_t alarms = 0;
			for (size_t i = 0; i < k; i++)
				alarms += m->fault[with[i]] < 0.5f && p[i] >= c.threshold;
			f->has_ref = true;
			f->ref = c.p;
			f->ref_threshold = c.threshold;
			f->ref_suspect = c.suspect;
			f->cv_ref_detection = c.detection;
			f->cv_ref_false_alarm = (double)alarms / (double)healthy;
			per_point(d, m, with, k, o, p, "reference detector", f->ref_threshold_at, f->ref_suspect_at,
				  scratch);
			for (int q = 0; q < DATASET_POINTS; q++) {
				shortfall_at_point(d, m, with, k, p, o->false_alarm, q, &f->ref_shortfall_at[q],
						   &f->ref_shortfall_threshold_at[q], rows, scratch);
				if (o->verbose)
					fprintf(stderr, "  outcome check at %.0f%%: shortfall from %.4f, else threshold"
							" %.4f\n", dataset_points[q] * 100, f->ref_shortfall_at[q],
						f->ref_shortfall_threshold_at[q]);
			}
			if (o->verbose)
				fprintf(stderr, "  reference detector depth %d rounds %d threshold %.4f: oof detection %.3f"
						" at false alarms %.3f\n", c.p.max_depth, c.p.rounds, c.threshold,
					c.detection, f->cv_ref_false_alarm);
		}
	}
	free(with);
	free(p);
	free(scratch);
	free(rows);
	return rv;
}

int fit__select(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		const struct fit_opts *o, struct fit *f, char *err, size_t len)
{
	memset(f, 0, sizeof *f);
	size_t rows = n ? n : 1;
	float *fault = malloc(rows * sizeof *fault), *oof = malloc(N_ROUNDS * rows * sizeof *oof);
	double *scratch = malloc(rows * sizeof *scratch);
	float *prob[CAUSE_COUNT] = {0};
	int rv = fault && oof && scratch ? 0 : -ENOMEM;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		if ((prob[c] = malloc(rows * sizeof *prob[c])) == NULL)
			rv = -ENOMEM;
	struct detector_choice det = {0};
	if (rv == 0)
		rv = select_detector(d, m, idx, n, "detector", m->n_base, detector_grid, N_DETECTOR_DEPTHS, o, &det, fault, err,
				     len);
	f->fault = det.p;
	f->fault_threshold = det.threshold;
	f->fault_suspect = det.suspect;
	f->cv_detection = det.detection;
	if (o->verbose && rv == 0)
		fprintf(stderr, "  detector        depth %d rounds %d threshold %.4f suspect %.4f: oof detection %.3f at "
				"false alarms %.3f\n", f->fault.max_depth, f->fault.rounds, f->fault_threshold, f->fault_suspect,
			f->cv_detection, o->false_alarm);
	if (rv == 0)
		per_point(d, m, idx, n, o, fault, "detector", f->fault_threshold_at, f->fault_suspect_at, scratch);
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++) {
		rv = out_of_fold(d, m, idx, n, m->n_base, o, &cause_grid, o->folds, m->y[c], true, oof, err, len);
		double top = INFINITY;
		for (size_t r = 0; rv == 0 && r < N_ROUNDS; r++) {
			double loss = log_loss(m, idx, n, c, oof + r * n);
			if (loss < top - 1e-12) {
				top = loss;
				f->cause[c] = params_for(o, cause_grid.depth, cause_grid.rounds[r]);
				memcpy(prob[c], oof + r * n, n * sizeof *prob[c]);
			}
		}
		if (o->verbose && rv == 0)
			fprintf(stderr, "  %-15s rounds %d oof log-loss on faulty rows %.3f\n",
				causes__name((enum cause_id)c), f->cause[c].rounds, top);
	}
	struct fit_counts k;
	double top = -1;
	for (size_t r = 0; rv == 0 && r < N_RATIO; r++) {
		struct fit trial = *f;
		trial.ratio = grid_ratio[r];
		count_rule(d, idx, n, &trial, fault, prob, &k);
		if (fit__macro_f1(&k) > top + 1e-9) {
			top = fit__macro_f1(&k);
			f->ratio = grid_ratio[r];
		}
	}
	if (rv == 0) {
		count_rule(d, idx, n, f, fault, prob, &k);
		f->cv_macro_f1 = fit__macro_f1(&k);
		size_t healthy = 0, alarms = 0;
		for (size_t i = 0; i < n; i++)
			if (m->fault[idx[i]] < 0.5f)
				healthy++, alarms += fault[i] >= f->fault_threshold;
		f->cv_false_alarm = healthy ? (double)alarms / (double)healthy : 0;
		for (int c = 0; c < CAUSE_COUNT; c++) {
			f->cv_f1[c] = fit__f1(k.tp[c], k.fp[c], k.fn[c]);
			f->cv_precision[c] = k.tp[c] + k.fp[c] ? (double)k.tp[c] / (double)(k.tp[c] + k.fp[c]) : 0;
			f->cv_recall[c] = k.tp[c] + k.fn[c] ? (double)k.tp[c] / (double)(k.tp[c] + k.fn[c]) : 0;
		}
		if (o->verbose)
			fprintf(stderr, "  ratio %.2f: oof macro-F1 %.3f, false alarms on healthy rows %.3f\n", f->ratio,
				f->cv_macro_f1, f->cv_false_alarm);
	}
	if (rv == 0)
		rv = select_reference(d, m, idx, n, o, f, err, len);
	free(fault);
	free(oof);
	free(scratch);
	for (int c = 0; c < CAUSE_COUNT; c++)
		free(prob[c]);
	return rv;
}

int fit__train(const struct fit_matrix *m, const size_t *idx, size_t n, const struct fit *f,
	       struct fit_models *out, char *err, size_t len)
{
	memset(out, 0, sizeof *out);
	size_t *faulty = malloc((n ? n : 1) * sizeof *faulty), nf = 0;
	size_t *with = malloc((n ? n : 1) * sizeof *with), nw = 0;
	int rv = faulty && with ? 0 : -ENOMEM;
	for (size_t i = 0; rv == 0 && i < n; i++) {
		if (m->fault[idx[i]] > 0.5f)
			faulty[nf++] = idx[i];
		if (m->has_ref[idx[i]])
			with[nw++] = idx[i];
	}
	struct boost_rows all = {m->x, m->n_base, idx, n, m->n_cols}, some = {m->x, m->n_base, faulty, nf, m->n_cols};
	struct boost_rows refs = {m->x, m->n_cols, with, nw, m->n_cols};
	if (rv == 0)
		rv = boost__train(&all, m->fault, &f->fault, &out->fault, err, len);
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		rv = boost__train(&some, m->y[c], &f->cause[c], &out->cause[c], err, len);
	if (rv == 0 && f->has_ref)
		rv = boost__train(&refs, m->fault, &f->ref, &out->ref, err, len);
	free(faulty);
	free(with);
	return rv;
}

void fit__free_models(struct fit_models *models)
{
	boost__free(models->fault);
	boost__free(models->ref);
	for (int c = 0; c < CAUSE_COUNT; c++)
		boost__free(models->cause[c]);
	memset(models, 0, sizeof *models);
}

int fit__predict(const struct fit_models *models, const struct fit_matrix *m, const size_t *idx, size_t n,
		 double *fault, double *fault_ref, double *prob, char *err, size_t len)
{
	float *p = malloc((n ? n : 1) * sizeof *p);
	if (p == NULL)
		return -ENOMEM;
	struct boost_rows r = {m->x, m->n_base, idx, n, m->n_cols}, full = {m->x, m->n_cols, idx, n, m->n_cols};
	int rv = boost__predict(models->fault, &r, 0, p, err, len);
	for (size_t i = 0; rv == 0 && i < n; i++)
		fault[i] = p[i];
	if (rv == 0 && models->ref != NULL)
		rv = boost__predict(models->ref, &full, 0, p, err, len);
	for (size_t i = 0; rv == 0 && i < n; i++)
		fault_ref[i] = models->ref != NULL && m->has_ref[idx[i]] ? p[i] : NAN;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++) {
		rv = boost__predict(models->cause[c], &r, 0, p, err, len);
		for (size_t i = 0; rv == 0 && i < n; i++)
			prob[i * CAUSE_COUNT + (size_t)c] = p[i];
	}
	free(p);
	return rv;
}

cause_set fit__decide(const struct fit *f, double fault, double fault_ref, const double prob[CAUSE_COUNT])
{
	bool flagged = isnan(fault_ref) ? fault >= f->fault_threshold : fault_ref >= f->ref_threshold;
	return flagged ? model__report_causes(prob, f->ratio) : 0;
}

cause_set fit__decide_at(const struct fit *f, double fault, double fault_ref, int point,
			 const double prob[CAUSE_COUNT])
{
	bool flagged = isnan(fault_ref) ? fault >= f->fault_threshold_at[point] : fault_ref >= f->ref_threshold_at[point];
	return flagged ? model__report_causes(prob, f->ratio) : 0;
}

cause_set fit__decide_shortfall(const struct fit *f, double fault, double fault_ref, double shortfall, int point,
				const double prob[CAUSE_COUNT])
{
	if (isnan(fault_ref))
		return fit__decide_at(f, fault, fault_ref, point, prob);
	bool flagged = shortfall >= f->ref_shortfall_at[point] || fault_ref >= f->ref_shortfall_threshold_at[point];
	return flagged ? model__report_causes(prob, f->ratio) : 0;
}
