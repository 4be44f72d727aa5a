#include "learn.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "model.h"

int learn__load(const char *path, struct dataset *d, char *err, size_t len)
{
	if (strcmp(path, "-") == 0)
		return dataset__read_csv(stdin, d, err, len);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, len, "%s: %s", path, strerror(errno));
		return -errno;
	}
	char magic[16] = {0};
	size_t got = fread(magic, 1, sizeof magic, f);
	if (got == sizeof magic && memcmp(magic, "SQLite format 3", 16) == 0) {
		fclose(f);
		return dataset__from_store(path, d, err, len);
	}
	rewind(f);
	int rv = dataset__read_csv(f, d, err, len);
	fclose(f);
	return rv;
}

/* A detector's thresholds per point of progress as a bundle line (`key`
 * P T S ...); points without a healthy row to set them are left out. */
static void write_points(FILE *f, const char *key, const double threshold_at[DATASET_POINTS],
			 const double suspect_at[DATASET_POINTS])
{
	size_t points = 0;
	for (int k = 0; k < DATASET_POINTS; k++)
		if (threshold_at[k] > 0 && suspect_at[k] > 0)
			fprintf(f, "%s %.2f %.6f %.6f", points++ ? "" : key, dataset_points[k], threshold_at[k],
				suspect_at[k]);
	if (points > 0)
		fprintf(f, "\n");
}

/* Refuses a corpus that cannot make a bundle: the detector learns faulty
 * against healthy runs and its thresholds come from the healthy ones, so
 * one of each is the least. Names the causes no run has, whose models
 * learn nothing (cv_f1 0). */
static int check_corpus(const struct dataset *d, char *err, size_t len)
{
	size_t healthy = 0, faulty = 0;
	cause_set seen = 0;
	for (size_t i = 0; i < d->n; i++)
		if (d->meta[i].point == DATASET_POINTS - 1) {
			healthy += d->meta[i].labels == 0;
			faulty += d->meta[i].labels != 0;
			seen |= d->meta[i].labels;
		}
	if (healthy == 0 || faulty == 0) {
		snprintf(err, len, "training needs faulty and healthy runs: the corpus has %zu healthy run%s"
			 " and %zu faulty", healthy, healthy == 1 ? "" : "s", faulty);
		return -EINVAL;
	}
	int missing = 0;
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (!(seen >> c & 1))
			fprintf(stderr, "%s%s", missing++ ? ", " : "dnnfaultctl: no run has the cause ",
				causes__name((enum cause_id)c));
	if (missing > 0)
		fprintf(stderr, ": %s nothing (cv_f1 0)\n", missing == 1 ? "its model learns" : "their models learn");
	/* Selection holds programs out: with one, nothing is left to learn
	 * from, and the bundle keeps the default thresholds. */
	if (d->n_groups < 2)
		fprintf(stderr, "dnnfaultctl: the corpus has runs of one program (%s): cross-validation holds"
			" programs out, so its figures are 0 and the thresholds stay at 0.5; the models are"
			" trained on all runs but have not been checked on any other program\n",
			d->n_groups ? d->groups[0] : "-");
	return 0;
}

int learn__train(const struct dataset *d, const char *source, const char *out,
		 const struct fit_opts *o, char *err, size_t len)
{
	int rv = check_corpus(d, err, len);
	if (rv != 0)
		return rv;
	struct fit_matrix m;
	if (fit__matrix(d, false, &m) != 0)
		return -ENOMEM;
	size_t *idx = malloc((d->n ? d->n : 1) * sizeof *idx);
	if (idx == NULL) {
		fit__free_matrix(&m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < d->n; i++)
		idx[i] = i;
	struct fit fit;
	struct fit_models models;
	rv = fit__select(d, &m, idx, d->n, o, &fit, err, len);
	if (rv == 0)
		rv = fit__train(&m, idx, d->n, &fit, &models, err, len);
	else
		memset(&models, 0, sizeof models);
	if (rv == 0 && mkdir(out, 0755) != 0 && errno != EEXIST) {
		snprintf(err, len, "%s: %s", out, strerror(errno));
		rv = -errno;
	}
	for (int c = -2; rv == 0 && c < CAUSE_COUNT; c++) {
		if (c == -2 && !fit.has_ref)
			continue;
		char path[4096];
		const char *id = c == -2 ? "fault_ref" : c == -1 ? "fault" : causes__name((enum cause_id)c);
		snprintf(path, sizeof path, "%s/%s.json", out, id);
		rv = boost__save(c == -2 ? models.ref : c == -1 ? models.fault : models.cause[c], path, err, len);
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/bundle.txt", out);
	FILE *f = rv == 0 ? fopen(path, "w") : NULL;
	if (rv == 0 && f == NULL) {
		snprintf(err, len, "%s: %s", path, strerror(errno));
		rv = -errno;
	}
	if (f != NULL) {
		size_t runs = 0, healthy = 0, referenced = 0;
		for (size_t i = 0; i < d->n; i++)
			if (d->meta[i].point == DATASET_POINTS - 1) {
				runs++;
				healthy += d->meta[i].labels == 0;
				referenced += d->meta[i].reference != 0;
			}
		char when[32];
		time_t now = time(NULL);
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
		model__write_header(f);
		fprintf(f, "trained %s\nsource %s\nrows %zu\nruns %zu\nhealthy_runs %zu\nprograms %zu\n"
			   "runs_with_reference %zu\n", when, source, d->n, runs, healthy, d->n_groups, referenced);
		fprintf(f, "selection grouped-cv folds %d detector_folds %d false_alarm_target %g seed %d\n",
			o->folds, o->detector_folds, o->false_alarm, o->seed);
		fprintf(f, "fault threshold %.6f suspect %.6f depth %d rounds %d eta %.2f cv_detection %.3f"
			   " cv_false_alarm %.3f\n", fit.fault_threshold, fit.fault_suspect, fit.fault.max_depth,
			fit.fault.rounds, fit.fault.eta, fit.cv_detection, fit.cv_false_alarm);
		if (fit.has_ref)
			fprintf(f, "fault_ref threshold %.6f suspect %.6f depth %d rounds %d eta %.2f cv_detection %.3f"
				   " cv_false_alarm %.3f\n", fit.ref_threshold, fit.ref_suspect, fit.ref.max_depth,
				fit.ref.rounds, fit.ref.eta, fit.cv_ref_detection, fit.cv_ref_false_alarm);
		/* Only the reference detector's thresholds per point: those of the
		 * detector (fit.fault_threshold_at) and the outcome check
		 * (fit.ref_shortfall_at) overshot the false-alarm goal in the
		 * evaluation (docs/evaluation.md, session 13). */
		if (fit.has_ref)
			write_points(f, "fault_ref_at", fit.ref_threshold_at, fit.ref_suspect_at);
		fprintf(f, "rank ratio %.2f cv_macro_f1 %.3f\n", fit.ratio, fit.cv_macro_f1);
		for (int c = 0; c < CAUSE_COUNT; c++)
			fprintf(f, "cause %s depth %d rounds %d eta %.2f cv_precision %.3f cv_recall %.3f cv_f1 %.3f\n",
				causes__name((enum cause_id)c), fit.cause[c].max_depth, fit.cause[c].rounds,
				fit.cause[c].eta, fit.cv_precision[c], fit.cv_recall[c], fit.cv_f1[c]);
		if (fclose(f) != 0 && rv == 0) {
			snprintf(err, len, "%s: %s", path, strerror(errno));
			rv = -EIO;
		}
	}
	fit__free_models(&models);
	free(idx);
	fit__free_matrix(&m);
	return rv;
}
