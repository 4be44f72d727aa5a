#include "learn.h"

#include "model.h"
#include "run_features.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Methods compared on the same held-out rows. */
enum method {
	M_OURS, M_OURS_POINT, M_OURS_REF, M_OURS_REF_POINT, M_OURS_REF_SHORTFALL,
	M_DEEPFD, M_AUTOTRAINER, M_DEEPDIAGNOSIS, M_UMLAUT, M_COUNT
};
static const char *const method_names[M_COUNT] = {
	"dnnfault (XGBoost)",
	"dnnfault, a threshold per point",
	"dnnfault, with a reference run",
	"dnnfault, with a reference run, a threshold per point",
	"dnnfault, with a reference run, a threshold per point and the outcome check",
	"DeepFD-style (random forest)", "AutoTrainer rules", "DeepDiagnosis rules", "UMLAUT heuristics",
};

/* DeepFD's learner: a random forest per cause on its symptom features,
 * reporting a cause at probability 0.5 as a forest's majority vote does. */
static const struct boost_params deepfd_forest = {
	.max_depth = 12, .rounds = 100, .min_child_weight = 1, .subsample = 0.632, .colsample = 0.35,
	.forest = true,
};

struct tally {
	struct fit_counts k;
	size_t rows, exact, healthy, alarms, faulty, found;	/* found: faulty rows with a true cause reported */
};

static void tally(struct tally *t, cause_set truth, cause_set pred)
{
	t->rows++;
	t->exact += truth == pred;
	if (truth == 0) {
		t->healthy++;
		t->alarms += pred != 0;
	} else {
		t->faulty++;
		t->found += (truth & pred) != 0;
	}
	fit__count(&t->k, truth, pred);
}

static double macro_f1(const struct tally *t)
{
	return fit__macro_f1(&t->k);
}

static double micro_f1(const struct tally *t)
{
	size_t tp = 0, fp = 0, fn = 0;
	for (int c = 0; c < CAUSE_COUNT; c++)
		tp += t->k.tp[c], fp += t->k.fp[c], fn += t->k.fn[c];
	return fit__f1(tp, fp, fn);
}

static double share(size_t a, size_t b)
{
	return b ? (double)a / (double)b : NAN;
}

/* Our held-out probabilities, fault[row], fault_ref[row] (the reference
 * detector's; NaN without a reference) and prob[row * CAUSE_COUNT +
 * cause], and the detectors' thresholds and ranking ratio chosen without
 * that row's program, threshold[group], ref_threshold[group],
 * threshold_at, ref_threshold_at, shortfall_at and shortfall_threshold_at
 * [group * DATASET_POINTS + point] and ratio[group]: what --predictions
 * writes. */
struct held_out {
	double *fault, *fault_ref, *prob;
	double *threshold, *ref_threshold, *threshold_at, *ref_threshold_at, *shortfall_at, *shortfall_threshold_at;
	double *ratio;
};

/* Ours on one fold: selection and training on rows train[0..ntr), the
 * decision on rows test[0..nte) into pred[M_OURS] and pred[M_OURS_POINT]
 * (without a reference run), pred[M_OURS_REF], pred[M_OURS_REF_POINT] and
 * pred[M_OURS_REF_SHORTFALL] (with one, where the row has one) and h. */
static int ours_fold(const struct dataset *d, const struct fit_matrix *m, const size_t *train, size_t ntr,
		     const size_t *test, size_t nte, int group, const struct fit_opts *o, cause_set *pred[M_COUNT],
		     struct held_out *h, char *err, size_t len)
{
	struct fit fit;
	struct fit_models models = {0};
	double *fault = malloc((nte ? nte : 1) * sizeof *fault), *fault_ref = malloc((nte ? nte : 1) * sizeof *fault);
	double *prob = malloc((nte ? nte : 1) * CAUSE_COUNT * sizeof *prob);
	int rv = fault && fault_ref && prob ? fit__select(d, m, train, ntr, o, &fit, err, len) : -ENOMEM;
	if (rv == 0)
		rv = fit__train(m, train, ntr, &fit, &models, err, len);
	if (rv == 0)
		rv = fit__predict(&models, m, test, nte, fault, fault_ref, prob, err, len);
	for (size_t i = 0; rv == 0 && i < nte; i++) {
		const double *p = prob + i * CAUSE_COUNT;
		pred[M_OURS][test[i]] = fit__decide(&fit, fault[i], NAN, p);
		pred[M_OURS_POINT][test[i]] = fit__decide_at(&fit, fault[i], NAN, d->meta[test[i]].point, p);
		pred[M_OURS_REF][test[i]] = fit__decide(&fit, fault[i], fault_ref[i], p);
		pred[M_OURS_REF_POINT][test[i]] = fit__decide_at(&fit, fault[i], fault_ref[i], d->meta[test[i]].point, p);
		pred[M_OURS_REF_SHORTFALL][test[i]] = fit__decide_shortfall(
			&fit, fault[i], fault_ref[i], features__shortfall(d->x + test[i] * d->n_features),
			d->meta[test[i]].point, p);
		h->fault[test[i]] = fault[i];
		h->fault_ref[test[i]] = fault_ref[i];
		memcpy(h->prob + test[i] * CAUSE_COUNT, prob + i * CAUSE_COUNT, CAUSE_COUNT * sizeof *prob);
	}
	if (rv == 0) {
		h->threshold[group] = fit.fault_threshold;
		h->ref_threshold[group] = fit.has_ref ? fit.ref_threshold : NAN;
		for (int k = 0; k < DATASET_POINTS; k++) {
			h->threshold_at[group * DATASET_POINTS + k] = fit.fault_threshold_at[k];
			h->ref_threshold_at[group * DATASET_POINTS + k] = fit.has_ref ? fit.ref_threshold_at[k] : NAN;
			h->shortfall_at[group * DATASET_POINTS + k] = fit.has_ref ? fit.ref_shortfall_at[k] : NAN;
			h->shortfall_threshold_at[group * DATASET_POINTS + k] =
				fit.has_ref ? fit.ref_shortfall_threshold_at[k] : NAN;
		}
		h->ratio[group] = fit.ratio;
	}
	fit__free_models(&models);
	free(fault);
	free(fault_ref);
	free(prob);
	return rv;
}

/* DeepFD's forests on one fold: a cause where the majority votes for it. */
static int deepfd_fold(const struct fit_matrix *fd, const size_t *train, size_t ntr, const size_t *test,
		       size_t nte, int seed, cause_set *pred, char *err, size_t len)
{
	struct boost_params forest = deepfd_forest;
	forest.seed = seed;	/* the same seed as ours */
	float *p = malloc((nte ? nte : 1) * sizeof *p);
	int rv = p ? 0 : -ENOMEM;
	struct boost_rows ftr = {fd->x, fd->n_cols, train, ntr, 0}, fte = {fd->x, fd->n_cols, test, nte, 0};
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++) {
		void *b;
		rv = boost__train(&ftr, fd->y[c], &forest, &b, err, len);
		if (rv == 0) {
			rv = boost__predict(b, &fte, 0, p, err, len);
			boost__free(b);
		}
		for (size_t i = 0; rv == 0 && i < nte; i++)
			if (p[i] >= 0.5f)
				pred[test[i]] |= (cause_set)1 << c;
	}
	free(p);
	return rv;
}

/* Predicted sets of the rows of one held-out program, for our model and
 * DeepFD's, trained on every other program. */
static int fold(const struct dataset *d, const struct fit_matrix *ours, const struct fit_matrix *fd,
		int group, const struct fit_opts *o, cause_set *pred[M_COUNT], struct held_out *h,
		char *err, size_t len)
{
	size_t *train = malloc(d->n * sizeof *train), *test = malloc(d->n * sizeof *test);
	int rv = train && test ? 0 : -ENOMEM;
	size_t ntr = 0, nte = 0;
	for (size_t i = 0; rv == 0 && i < d->n; i++) {
		if (d->meta[i].group == group)
			test[nte++] = i;
		else
			train[ntr++] = i;
	}
	if (rv == 0)
		rv = ours_fold(d, ours, train, ntr, test, nte, group, o, pred, h, err, len);
	if (rv == 0)
		rv = deepfd_fold(fd, train, ntr, test, nte, o->seed, pred[M_DEEPFD], err, len);
	free(train);
	free(test);
	return rv;
}

/* A markdown table's head: `first`, then one column per method, or per
 * point of training when by_point. */
static void table_head(FILE *out, const char *first, bool by_point)
{
	size_t n = by_point ? DATASET_POINTS : M_COUNT;
	fprintf(out, "| %s |", first);
	for (size_t i = 0; i < n; i++) {
		if (by_point)
			fprintf(out, " %.0f%% |", dataset_points[i] * 100);
		else
			fprintf(out, " %s |", method_names[i]);
	}
	fprintf(out, "\n|---|");
	for (size_t i = 0; i < n; i++)
		fprintf(out, "---|");
	fprintf(out, "\n");
}

/* Not results: how good the detector's threshold and the ranking are
 * apart. The same held-out probabilities with the threshold placed on the
 * held-out healthy runs themselves for 5% false alarms (each fold's ratio
 * kept); and the share of faulty runs, found or not, whose most probable
 * cause is a true one. */
static void ceiling(const struct dataset *d, const struct held_out *h, FILE *out)
{
	const int last = DATASET_POINTS - 1;
	double *healthy = malloc((d->n ? d->n : 1) * sizeof *healthy);
	if (healthy == NULL)
		return;
	size_t nh = 0;
	for (size_t i = 0; i < d->n; i++)
		if (d->meta[i].point == last && d->meta[i].labels == 0)
			healthy[nh++] = h->fault[i];
	double t = fit__threshold_for(healthy, nh, 0.05);
	free(healthy);
	struct tally x;
	memset(&x, 0, sizeof x);
	size_t top_right = 0;
	for (size_t i = 0; i < d->n; i++) {
		if (d->meta[i].point != last)
			continue;
		double p[CAUSE_COUNT];
		for (int c = 0; c < CAUSE_COUNT; c++)
			p[c] = h->prob[i * CAUSE_COUNT + c];
		cause_set pred = h->fault[i] >= t ? model__report_causes(p, h->ratio[d->meta[i].group]) : 0;
		tally(&x, d->meta[i].labels, pred);
		top_right += (model__report_causes(p, 1.0) & d->meta[i].labels) != 0;
	}
	fprintf(out, "\n### Detection and ranking apart (not results)\n\n"
		     "The same held-out probabilities with the detector's threshold placed on the held-out\n"
		     "healthy runs themselves (%.4f, for 5%% false alarms), at the end of training:\n"
		     "macro-F1 %.3f, false alarms %.3f, faulty runs with a true cause found %.3f.\n"
		     "Faulty runs, found or not, whose most probable cause is a true one: %.3f.\n",
		t, macro_f1(&x), share(x.alarms, x.healthy), share(x.found, x.faulty), share(top_right, x.faulty));
}

static void per_cause(FILE *out, const char *title, const struct tally *x)
{
	fprintf(out, "\n### %s\n\n", title);
	fprintf(out, "| cause | runs | precision | recall | F1 |\n|---|---|---|---|---|\n");
	for (int c = 0; c < CAUSE_COUNT; c++)
		fprintf(out, "| %s | %zu | %.3f | %.3f | %.3f |\n", causes__name((enum cause_id)c), x->k.tp[c] + x->k.fn[c],
			share(x->k.tp[c], x->k.tp[c] + x->k.fp[c]), share(x->k.tp[c], x->k.tp[c] + x->k.fn[c]),
			fit__f1(x->k.tp[c], x->k.fp[c], x->k.fn[c]));
}

static void report(const struct dataset *d, cause_set *pred[M_COUNT], FILE *out)
{
	struct tally t[M_COUNT][DATASET_POINTS];
	memset(t, 0, sizeof t);
	for (size_t i = 0; i < d->n; i++)
		for (int m = 0; m < M_COUNT; m++)
			tally(&t[m][d->meta[i].point], d->meta[i].labels, pred[m][i]);
	const int last = DATASET_POINTS - 1;

	fprintf(out, "### All methods, leave-one-program-out, at the end of training\n\n");
	fprintf(out, "| method | macro-F1 | micro-F1 | exact match | false alarms (healthy) | faulty runs with a true cause found |\n");
	fprintf(out, "|---|---|---|---|---|---|\n");
	for (int m = 0; m < M_COUNT; m++)
		fprintf(out, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f |\n", method_names[m], macro_f1(&t[m][last]),
			micro_f1(&t[m][last]), share(t[m][last].exact, t[m][last].rows),
			share(t[m][last].alarms, t[m][last].healthy), share(t[m][last].found, t[m][last].faulty));

	per_cause(out, "dnnfault per cause, at the end of training", &t[M_OURS][last]);
	per_cause(out, "dnnfault with a threshold per point, per cause, at the end of training", &t[M_OURS_POINT][last]);
	per_cause(out, "dnnfault with a reference run, per cause, at the end of training", &t[M_OURS_REF][last]);
	per_cause(out, "dnnfault with a reference run and a threshold per point, per cause, at the end of training",
		  &t[M_OURS_REF_POINT][last]);
	per_cause(out, "dnnfault with a reference run, a threshold per point and the outcome check, per cause, "
		       "at the end of training", &t[M_OURS_REF_SHORTFALL][last]);

	fprintf(out, "\n### F1 per cause and method, at the end of training\n\n");
	table_head(out, "cause", false);
	for (int c = 0; c < CAUSE_COUNT; c++) {
		fprintf(out, "| %s |", causes__name((enum cause_id)c));
		for (int m = 0; m < M_COUNT; m++)
			fprintf(out, " %.3f |", fit__f1(t[m][last].k.tp[c], t[m][last].k.fp[c], t[m][last].k.fn[c]));
		fprintf(out, "\n");
	}

	fprintf(out, "\n### Over training: macro-F1 (false alarms on healthy runs)\n\n");
	table_head(out, "method", true);
	for (int m = 0; m < M_COUNT; m++) {
		fprintf(out, "| %s |", method_names[m]);
		for (int k = 0; k < DATASET_POINTS; k++)
			fprintf(out, " %.3f (%.3f) |", macro_f1(&t[m][k]), share(t[m][k].alarms, t[m][k].healthy));
		fprintf(out, "\n");
	}

	fprintf(out, "\n### dnnfault over training: per cause F1, micro-F1, exact match\n\n");
	table_head(out, "", true);
	for (int c = 0; c < CAUSE_COUNT; c++) {
		fprintf(out, "| %s |", causes__name((enum cause_id)c));
		for (int k = 0; k < DATASET_POINTS; k++)
			fprintf(out, " %.3f |", fit__f1(t[M_OURS][k].k.tp[c], t[M_OURS][k].k.fp[c], t[M_OURS][k].k.fn[c]));
		fprintf(out, "\n");
	}
	fprintf(out, "| micro-F1 |");
	for (int k = 0; k < DATASET_POINTS; k++)
		fprintf(out, " %.3f |", micro_f1(&t[M_OURS][k]));
	fprintf(out, "\n| exact match |");
	for (int k = 0; k < DATASET_POINTS; k++)
		fprintf(out, " %.3f |", share(t[M_OURS][k].exact, t[M_OURS][k].rows));
	fprintf(out, "\n\n### dnnfault per held-out program, at the end of training\n\n");
	fprintf(out, "| program | runs | macro-F1 | micro-F1 | false alarms |\n|---|---|---|---|---|\n");
	for (size_t g = 0; g < d->n_groups; g++) {
		struct tally x;
		memset(&x, 0, sizeof x);
		for (size_t i = 0; i < d->n; i++)
			if (d->meta[i].group == (int)g && d->meta[i].point == last)
				tally(&x, d->meta[i].labels, pred[M_OURS][i]);
		fprintf(out, "| %s | %zu | %.3f | %.3f | %.3f |\n", d->groups[g], x.rows, macro_f1(&x), micro_f1(&x),
			share(x.alarms, x.healthy));
	}
}

/* One CSV line per row: run, program, point, true causes, the detector
 * threshold and ranking ratio it was judged by, its held-out fault
 * probability and each cause's probability; then its reference run, the
 * reference detector's threshold and its probability (NaN without one),
 * the two detectors' thresholds of the row's point, and the row's
 * shortfall with the outcome check's shortfall and threshold there. */
static int write_predictions(const struct dataset *d, const struct held_out *h, FILE *f)
{
	fprintf(f, "run,program,point,labels,fault_threshold,ratio,p_fault");
	for (int c = 0; c < CAUSE_COUNT; c++)
		fprintf(f, ",p_%s", causes__name((enum cause_id)c));
	fprintf(f, ",reference,ref_threshold,p_fault_ref,ref_threshold_at_point,threshold_at_point");
	fprintf(f, ",shortfall,ref_shortfall_at_point,ref_shortfall_threshold_at_point");
	fputc('\n', f);
	for (size_t i = 0; i < d->n; i++) {
		const struct row_meta *m = &d->meta[i];
		fprintf(f, "%lld,%s,%.2f,", (long long)m->run, d->groups[m->group], dataset_points[m->point]);
		dataset__write_set(f, m->labels);
		fprintf(f, ",%.6g,%.2f,%.6g", h->threshold[m->group], h->ratio[m->group], h->fault[i]);
		for (int c = 0; c < CAUSE_COUNT; c++)
			fprintf(f, ",%.6g", h->prob[i * CAUSE_COUNT + c]);
		size_t at = (size_t)m->group * DATASET_POINTS + (size_t)m->point;
		fprintf(f, ",%lld,%.6g,%.6g,%.6g,%.6g", (long long)m->reference, h->ref_threshold[m->group],
			h->fault_ref[i], h->ref_threshold_at[at], h->threshold_at[at]);
		fprintf(f, ",%.6g,%.6g,%.6g", features__shortfall(d->x + i * d->n_features), h->shortfall_at[at],
			h->shortfall_threshold_at[at]);
		fputc('\n', f);
	}
	return ferror(f) ? -EIO : 0;
}

static void free_held_out(struct held_out *h)
{
	free(h->fault);
	free(h->fault_ref);
	free(h->prob);
	free(h->threshold);
	free(h->ref_threshold);
	free(h->threshold_at);
	free(h->ref_threshold_at);
	free(h->shortfall_at);
	free(h->shortfall_threshold_at);
	free(h->ratio);
}

int learn__evaluate(const struct dataset *d, const struct fit_opts *o, FILE *out, FILE *predictions,
		    char *err, size_t len)
{
	struct fit_matrix ours, fd;
	cause_set *pred[M_COUNT] = {0};
	size_t rows = d->n ? d->n : 1, groups = d->n_groups ? d->n_groups : 1;
	struct held_out h = {
		calloc(rows, sizeof *h.fault), calloc(rows, sizeof *h.fault_ref), calloc(rows * CAUSE_COUNT, sizeof *h.prob),
		calloc(groups, sizeof *h.threshold), calloc(groups, sizeof *h.ref_threshold),
		calloc(groups * DATASET_POINTS, sizeof *h.threshold_at),
		calloc(groups * DATASET_POINTS, sizeof *h.ref_threshold_at),
		calloc(groups * DATASET_POINTS, sizeof *h.shortfall_at),
		calloc(groups * DATASET_POINTS, sizeof *h.shortfall_threshold_at), calloc(groups, sizeof *h.ratio),
	};
	int rv = h.fault && h.fault_ref && h.prob && h.threshold && h.ref_threshold && h.threshold_at &&
			 h.ref_threshold_at && h.shortfall_at && h.shortfall_threshold_at && h.ratio
			 ? fit__matrix(d, false, &ours) : -ENOMEM;
	if (rv == 0 && (rv = fit__matrix(d, true, &fd)) != 0)
		fit__free_matrix(&ours);
	if (rv != 0) {
		free_held_out(&h);
		return rv;
	}
	for (int m = 0; m < M_COUNT; m++)
		if ((pred[m] = calloc(d->n ? d->n : 1, sizeof *pred[m])) == NULL)
			rv = -ENOMEM;
	for (size_t i = 0; rv == 0 && i < d->n; i++) {
		pred[M_AUTOTRAINER][i] = d->meta[i].base[BASE_AUTOTRAINER];
		pred[M_DEEPDIAGNOSIS][i] = d->meta[i].base[BASE_DEEPDIAGNOSIS];
		pred[M_UMLAUT][i] = d->meta[i].base[BASE_UMLAUT];
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t g = 0; rv == 0 && g < d->n_groups; g++) {
		if (o->verbose)
			fprintf(stderr, "fold %zu/%zu: holding out %s\n", g + 1, d->n_groups, d->groups[g]);
		rv = fold(d, &ours, &fd, (int)g, o, pred, &h, err, len);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rv == 0) {
		size_t runs = 0, healthy = 0;
		for (size_t i = 0; i < d->n; i++)
			if (d->meta[i].point == DATASET_POINTS - 1)
				runs++, healthy += d->meta[i].labels == 0;
		fprintf(out, "Rows: %zu (%zu runs, %zu of them healthy, %zu programs, %d progress points); "
			     "%zu folds in %.0f s.\n\n", d->n, runs, healthy, d->n_groups, DATASET_POINTS,
			d->n_groups, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
		report(d, pred, out);
		ceiling(d, &h, out);
		if (predictions != NULL && (rv = write_predictions(d, &h, predictions)) != 0)
			snprintf(err, len, "writing the predictions failed");
	}
	for (int m = 0; m < M_COUNT; m++)
		free(pred[m]);
	fit__free_matrix(&ours);
	fit__free_matrix(&fd);
	free_held_out(&h);
	return rv;
}
