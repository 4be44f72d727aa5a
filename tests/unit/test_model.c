/* Model bundles: what training writes, loading reads back and predicts
 * with exactly the same probabilities; learn__train's bundle diagnoses the
 * obvious cases; the ranking rule; loading refuses bundles of another schema or malformed
 * ones with the documented errors. The data are synthetic: lr_high when
 * feature 0 > 0.5, loss when feature 1 > 0.5, noise elsewhere. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boost.h"
#include "dataset.h"
#include "fit.h"
#include "learn.h"
#include "model.h"
#include "run_features.h"

#define ROWS 240

static const char *const programs[] = {"mnist", "cifar", "imdb", "boston"};
#define N_PROGRAMS (sizeof programs / sizeof programs[0])

static uint64_t rng_state;

/* xorshift64*: the same rows on every run and platform. */
static double uniform(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* Rows of ROWS / DATASET_POINTS runs spread over the programs; a few
 * features missing. Free with dataset__free. */
static void synthetic(struct dataset *d)
{
	rng_state = 0x9E3779B97F4A7C15ULL;
	memset(d, 0, sizeof *d);
	d->n = d->cap = ROWS;
	d->n_features = features__count();
	assert_true(d->n_features >= 4);
	d->x = malloc(ROWS * d->n_features * sizeof *d->x);
	d->fd = calloc(ROWS * DEEPFD_FEATURES, sizeof *d->fd);
	d->meta = calloc(ROWS, sizeof *d->meta);
	d->groups = calloc(N_PROGRAMS, sizeof *d->groups);
	assert_non_null(d->x);
	assert_non_null(d->fd);
	assert_non_null(d->meta);
	assert_non_null(d->groups);
	for (size_t g = 0; g < N_PROGRAMS; g++)
		assert_non_null(d->groups[g] = strdup(programs[g]));
	d->n_groups = N_PROGRAMS;
	for (size_t i = 0; i < ROWS; i++) {
		double *x = d->x + i * d->n_features;
		for (size_t j = 0; j < d->n_features; j++)
			x[j] = uniform();
		/* Missing values only in the noise, so the labels stay exact. */
		if (i % 13 == 5)
			x[2 + i % (d->n_features - 2)] = NAN;
		size_t run = i / DATASET_POINTS;
		d->meta[i] = (struct row_meta){
			.run = (int64_t)run + 1,
			.group = (int)(run % N_PROGRAMS),
			.point = (int)(i % DATASET_POINTS),
			.labels = (x[0] > 0.5 ? 1u << CAUSE_lr_high : 0) | (x[1] > 0.5 ? 1u << CAUSE_loss : 0),
			/* Every other run has a reference (its number says nothing
			 * here; the reference detector learns from these rows). */
			.reference = run % 2 ? (int64_t)run : 0,
		};
	}
}

/* A row of neutral noise with features 0 and 1 set. */
static void probe(double *x, double f0, double f1)
{
	for (size_t j = 0; j < features__count(); j++)
		x[j] = 0.5;
	x[0] = f0;
	x[1] = f1;
}

/* Removes `dir` with its files and, one level deep, its subdirectories:
 * all a test leaves. Returns 0 or -1. */
static int remove_tree(const char *dir)
{
	DIR *dp = opendir(dir);
	if (dp == NULL)
		return -1;
	int rv = 0;
	for (struct dirent *e; (e = readdir(dp)) != NULL;) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (unlink(path) != 0 && (errno != EISDIR || remove_tree(path) != 0))
			rv = -1;
	}
	closedir(dp);
	return rmdir(dir) == 0 ? rv : -1;
}

/* Each test works in a fresh temporary directory, its state, removed even
 * when the test fails. */
static int temp_dir(void **state)
{
	char *dir = strdup("/tmp/dnnfault-test-model.XXXXXX");
	if (dir == NULL || mkdtemp(dir) == NULL) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int remove_temp_dir(void **state)
{
	int rv = remove_tree(*state);
	free(*state);
	return rv;
}

static const struct boost_params small = {
	.max_depth = 3, .eta = 0.3, .rounds = 20, .min_child_weight = 1, .subsample = 1, .colsample = 1,
	.seed = 1,
};

/* Trains the detector and every cause with `small` on all rows of d. */
static void train_small(const struct dataset *d, struct fit_matrix *m, size_t *idx, struct fit *fit,
			struct fit_models *models)
{
	char err[256] = "";
	assert_int_equal(fit__matrix(d, false, m), 0);
	assert_int_equal(m->n_cols, features__count());
	assert_int_equal(m->n_base, features__base_count());
	assert_true(m->n_base < m->n_cols);
	for (size_t i = 0; i < d->n; i++)
		idx[i] = i;
	*fit = (struct fit){.fault = small, .fault_threshold = 0.5, .fault_suspect = 0.25, .ratio = 0.5,
			    .has_ref = true, .ref = small, .ref_threshold = 0.6, .ref_suspect = 0.3};
	for (int c = 0; c < CAUSE_COUNT; c++)
		fit->cause[c] = small;
	int rv = fit__train(m, idx, d->n, fit, models, err, sizeof err);
	if (rv != 0)
		fail_msg("fit__train: %d %s", rv, err);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void test_round_trip(void **state)
{
	struct dataset d;
	synthetic(&d);
	struct fit_matrix m;
	size_t idx[ROWS];
	struct fit fit;
	struct fit_models models;
	train_small(&d, &m, idx, &fit, &models);

	char err[256] = "";
	static double mem_fault[ROWS], mem_ref[ROWS], mem[ROWS * CAUSE_COUNT];
	assert_int_equal(fit__predict(&models, &m, idx, d.n, mem_fault, mem_ref, mem, err, sizeof err), 0);
	for (size_t i = 0; i < d.n; i++)
		assert_int_equal(isnan(mem_ref[i]), d.meta[i].reference == 0);
	const char *dir = *state;
	char path[4096];
	for (int c = -2; c < CAUSE_COUNT; c++) {
		snprintf(path, sizeof path, "%s/%s.json", dir,
			 c == -2 ? "fault_ref" : c == -1 ? "fault" : causes__name((enum cause_id)c));
		assert_int_equal(boost__save(c == -2 ? models.ref : c == -1 ? models.fault : models.cause[c], path, err,
					     sizeof err), 0);
	}
	fit__free_models(&models);
	snprintf(path, sizeof path, "%s/bundle.txt", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(model__write_header(f), 0);
	fprintf(f, "fault threshold %.2f suspect %.2f\nfault_ref threshold %.2f suspect %.2f\nrank ratio %.2f\n",
		fit.fault_threshold, fit.fault_suspect, fit.ref_threshold, fit.ref_suspect, fit.ratio);
	for (int c = 0; c < CAUSE_COUNT; c++)
		fprintf(f, "cause %s\n", causes__name((enum cause_id)c));
	assert_int_equal(fclose(f), 0);

	struct model *model = NULL;
	int rv = model__load(dir, &model, err, sizeof err);
	if (rv != 0)
		fail_msg("model__load: %d %s", rv, err);
	assert_int_equal(model->n_features, features__count());
	assert_int_equal(model->schema_version, FEATURES_SCHEMA_VERSION);
	assert_true(model->schema_hash == features__schema_hash());
	assert_string_equal(model->path, dir);
	assert_non_null(strstr(model->text, "fault threshold 0.50 suspect 0.25\n"));
	assert_true(model->fault.threshold == 0.5 && model->fault.suspect == 0.25 && model->ratio == 0.5);
	assert_true(model->fault_ref.threshold == 0.6 && model->fault_ref.suspect == 0.3);
	assert_true(model->fault.b.present && model->fault_ref.b.present);
	for (int c = 0; c < CAUSE_COUNT; c++)
		assert_true(model->cause[c].present);

	double *fault = malloc(ROWS * sizeof *fault), *prob = malloc(ROWS * CAUSE_COUNT * sizeof *prob);
	double *fault_ref = malloc(ROWS * sizeof *fault_ref);
	assert_non_null(fault);
	assert_non_null(prob);
	assert_non_null(fault_ref);
	assert_int_equal(model__predict(model, d.x, d.n, fault, fault_ref, prob), 0);
	for (size_t i = 0; i < d.n; i++) {
		if (fault[i] != mem_fault[i])
			fail_msg("row %zu fault: loaded %.9g, in memory %.9g", i, fault[i], mem_fault[i]);
		if (d.meta[i].reference != 0 && fault_ref[i] != mem_ref[i])
			fail_msg("row %zu fault_ref: loaded %.9g, in memory %.9g", i, fault_ref[i], mem_ref[i]);
		for (int c = 0; c < CAUSE_COUNT; c++)
			if (prob[i * CAUSE_COUNT + (size_t)c] != mem[i * CAUSE_COUNT + (size_t)c])
				fail_msg("row %zu %s: loaded %.9g, in memory %.9g", i,
					 causes__name((enum cause_id)c), prob[i * CAUSE_COUNT + (size_t)c],
					 mem[i * CAUSE_COUNT + (size_t)c]);
	}
	/* The signal is two splits: every training row is right but those
	 * within a histogram bin of a split (XGBoost's bins are quantiles, so
	 * its split can fall a little off 0.5); the causes learnt from the
	 * faulty rows (fewer, so coarser bins) tell those apart away from it. */
	for (size_t i = 0; i < d.n; i++) {
		const double *x = d.x + i * d.n_features, *p = prob + i * CAUSE_COUNT;
		bool faulty = x[0] > 0.5 || x[1] > 0.5;
		bool on_split = fabs(x[0] - 0.5) < 0.005 || fabs(x[1] - 0.5) < 0.005;
		if (!on_split && (fault[i] > 0.5) != faulty)
			fail_msg("row %zu: x0 %.4f x1 %.4f fault %.4f", i, x[0], x[1], fault[i]);
		if (!faulty || fabs(x[0] - 0.5) < 0.05 || fabs(x[1] - 0.5) < 0.05)
			continue;
		assert_int_equal(p[CAUSE_lr_high] > 0.5, x[0] > 0.5);
		assert_int_equal(p[CAUSE_loss] > 0.5, x[1] > 0.5);
		assert_true(p[CAUSE_init] < 0.5);
	}

	size_t nf = features__count();
	double *probes = malloc(4 * nf * sizeof *probes);
	assert_non_null(probes);
	probe(probes, 1, 0);
	probe(probes + nf, 0, 1);
	probe(probes + 2 * nf, 0, 0);
	probe(probes + 3 * nf, 1, 1);
	probes[2 * nf + 3] = NAN;
	assert_int_equal(model__predict(model, probes, 4, fault, fault_ref, prob), 0);
	assert_int_equal(model__health(model, fault[0], NAN, NAN, NAN), MODEL_FAULTY);
	assert_int_equal(model__health(model, fault[1], NAN, NAN, NAN), MODEL_FAULTY);
	assert_int_equal(model__health(model, fault[3], NAN, NAN, NAN), MODEL_FAULTY);
	assert_int_equal(model__health(model, fault[2], NAN, NAN, NAN), MODEL_HEALTHY);
	assert_true(fault[2] < 0.25);
	/* With a reference, its detector and thresholds judge. */
	assert_int_equal(model__health(model, fault[2], fault_ref[0], NAN, NAN), MODEL_FAULTY);
	assert_int_equal(model__health(model, fault[0], fault_ref[2], NAN, NAN), MODEL_HEALTHY);
	assert_int_equal(model__health(model, 0.0, 0.45, NAN, NAN), MODEL_SUSPECT);
	assert_int_equal(model__health(model, 0.55, 0.55, NAN, NAN), MODEL_SUSPECT);
	assert_int_equal(model__report_causes(prob, model->ratio), 1u << CAUSE_lr_high);
	assert_int_equal(model__report_causes(prob + CAUSE_COUNT, model->ratio), 1u << CAUSE_loss);
	assert_int_equal(model__report_causes(prob + 3 * CAUSE_COUNT, model->ratio),
			 1u << CAUSE_lr_high | 1u << CAUSE_loss);

	free(probes);
	free(fault);
	free(fault_ref);
	free(prob);
	model__free(model);
	fit__free_matrix(&m);
	dataset__free(&d);
}

/* The ranking rule: the top cause, and those within the ratio of it. */
/* The CSV of a dataset, as dataset__write_csv writes it. */
static char *csv_of(const struct dataset *d)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	assert_non_null(f);
	assert_int_equal(dataset__write_csv(d, f), 0);
	assert_int_equal(fclose(f), 0);
	return text;
}

static int read_text(const char *text, struct dataset *d, char *err, size_t len)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	assert_non_null(f);
	int rv = dataset__read_csv(f, d, err, len);
	fclose(f);
	return rv;
}

/* Rows committed as one file per program (docs/corpus.md) and
 * concatenated in any order read back as the very same dataset: same row
 * order, same group numbers, so the same folds and models. A file read
 * twice is refused. */
static void test_rows_split(void **state)
{
	(void)state;
	struct dataset d;
	synthetic(&d);
	char *whole = csv_of(&d);
	dataset__free(&d);
	size_t header = strcspn(whole, "\n") + 1;
	size_t cap = 2 * strlen(whole) + N_PROGRAMS * header + 1, used = 0;
	char *split = malloc(cap);
	assert_non_null(split);
	for (size_t g = N_PROGRAMS; g-- > 0;) {
		memcpy(split + used, whole, header);
		used += header;
		for (const char *line = whole + header; *line;) {
			size_t n = strcspn(line, "\n") + 1;
			const char *prog = strchr(line, ',') + 1;
			if (strncmp(prog, programs[g], strlen(programs[g])) == 0 &&
			    prog[strlen(programs[g])] == ',') {
				memcpy(split + used, line, n);
				used += n;
			}
			line += n;
		}
	}
	split[used] = '\0';
	assert_int_not_equal(strcmp(split, whole), 0);

	char err[256] = "";
	assert_int_equal(read_text(split, &d, err, sizeof err), 0);
	assert_int_equal(d.n, ROWS);
	char *again = csv_of(&d);
	assert_string_equal(again, whole);
	for (size_t g = 0; g < N_PROGRAMS; g++)
		assert_string_equal(d.groups[g], programs[g]);
	dataset__free(&d);
	free(again);

	/* the last program's file twice */
	size_t first_file = (size_t)(strstr(split + header, "run,") - split);
	memcpy(split + used, split, first_file);
	used += first_file;
	split[used] = '\0';
	assert_int_equal(read_text(split, &d, err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "appear twice"));

	/* a second file of another schema */
	strcpy(split, whole);
	strcat(split, "run,program,point,labels,autotrainer,deepdiagnosis,umlaut,old_feature\n");
	assert_int_equal(read_text(split, &d, err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "another feature schema"));
	free(split);
	free(whole);
}

static void test_report_causes(void **state)
{
	double p[CAUSE_COUNT];
	for (int c = 0; c < CAUSE_COUNT; c++)
		p[c] = NAN;	/* a bundle without that cause */
	assert_int_equal(model__report_causes(p, 0.5), 0);
	p[CAUSE_init] = 0.8;
	p[CAUSE_data] = 0.41;
	p[CAUSE_labels] = 0.39;
	assert_int_equal(model__report_causes(p, 0.5), 1u << CAUSE_init | 1u << CAUSE_data);
	assert_int_equal(model__report_causes(p, 1.0), 1u << CAUSE_init);
	assert_int_equal(model__report_causes(p, 0.3), 1u << CAUSE_init | 1u << CAUSE_data | 1u << CAUSE_labels);
	p[CAUSE_data] = 0.8;
	assert_int_equal(model__report_causes(p, 1.0), 1u << CAUSE_init | 1u << CAUSE_data);
	for (int c = 0; c < CAUSE_COUNT; c++)
		p[c] = 0;
	assert_int_equal(model__report_causes(p, 0.5), 0);
	(void)state;
}

/* The whole file at path, NUL-terminated (malloc'd), or NULL. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	char *buf = NULL;
	size_t n = 0, cap = 0, got;
	char chunk[65536];
	while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (n + got + 1 > cap) {
			cap = 2 * (n + got + 1);
			char *p = realloc(buf, cap);
			assert_non_null(p);
			buf = p;
		}
		memcpy(buf + n, chunk, got);
		n += got;
	}
	fclose(f);
	if (buf != NULL)
		buf[n] = '\0';
	return buf;
}

/* --seed: another seed trains other models (rows and features are
 * sampled per tree) and the bundle records it; the same seed trains the
 * same ones (test_boost_seed, without the whole selection, which is slow
 * under valgrind). */
static void check_other_seed(struct dataset *d, const char *dir, const char *seed1_bundle)
{
	char out[4096], path[4200], err[256] = "";
	snprintf(out, sizeof out, "%s/seed7", dir);
	struct fit_opts o = fit_defaults;
	o.seed = 7;
	int rv = learn__train(d, "synthetic", out, &o, err, sizeof err);
	if (rv != 0)
		fail_msg("learn__train: %d %s", rv, err);
	snprintf(path, sizeof path, "%s/bundle.txt", out);
	char *text = slurp(path);
	assert_non_null(text);
	assert_non_null(strstr(text, "false_alarm_target 0.035 seed 7\n"));
	free(text);
	snprintf(path, sizeof path, "%s/fault.json", out);
	char *a = slurp(path);
	snprintf(path, sizeof path, "%s/fault.json", seed1_bundle);
	char *b = slurp(path);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(strcmp(a, b) != 0);
	free(a);
	free(b);
}

/* One booster trained twice with a seed predicts the same; with another
 * seed, not. */
static void test_boost_seed(void **state)
{
	(void)state;
	struct dataset d;
	synthetic(&d);
	struct fit_matrix m;
	assert_int_equal(fit__matrix(&d, false, &m), 0);
	size_t *idx = malloc(m.n * sizeof *idx);
	float *p[3];
	assert_non_null(idx);
	for (size_t i = 0; i < m.n; i++)
		idx[i] = i;
	struct boost_rows r = {m.x, m.n_cols, idx, m.n, 0};
	const int seeds[3] = {7, 7, 8};
	char err[256] = "";
	for (int k = 0; k < 3; k++) {
		struct boost_params bp = {.max_depth = 3, .eta = 0.1, .rounds = 20, .min_child_weight = 1,
					  .subsample = 0.8, .colsample = 0.3, .seed = seeds[k]};
		void *b = NULL;
		assert_non_null(p[k] = malloc(m.n * sizeof *p[k]));
		if (boost__train(&r, m.fault, &bp, &b, err, sizeof err) != 0 ||
		    boost__predict(b, &r, 0, p[k], err, sizeof err) != 0)
			fail_msg("boost: %s", err);
		boost__free(b);
	}
	assert_memory_equal(p[0], p[1], m.n * sizeof *p[0]);
	assert_true(memcmp(p[0], p[2], m.n * sizeof *p[0]) != 0);
	for (int k = 0; k < 3; k++)
		free(p[k]);
	free(idx);
	fit__free_matrix(&m);
	dataset__free(&d);
}

/* model__health with thresholds per point of progress: the stricter of
 * the two points around the run's progress; the detector's own before the
 * first point or when the progress is unknown. */
static void test_health_per_point(void **state)
{
	(void)state;
	struct model m;
	memset(&m, 0, sizeof m);
	m.fault = (struct model_detector){.threshold = 0.8, .suspect = 0.4};
	m.fault_ref = (struct model_detector){
		.threshold = 0.9, .suspect = 0.5, .n_at = 3,
		.at = {0.1, 0.5, 1.0}, .threshold_at = {0.9, 0.6, 0.3}, .suspect_at = {0.5, 0.4, 0.2},
	};
	static const struct {
		double p, progress;
		enum model_health want;
	} cases[] = {
		{0.7, NAN, MODEL_SUSPECT},	/* progress unknown: 0.9 / 0.5 */
		{0.7, 0.05, MODEL_SUSPECT},	/* before the first point: the same */
		{0.7, 0.1, MODEL_SUSPECT},	/* at 10% */
		{0.7, 0.3, MODEL_SUSPECT},	/* between 10% and 50%: the stricter */
		{0.7, 0.5, MODEL_FAULTY},	/* at 50%: 0.6 */
		{0.7, 0.75, MODEL_FAULTY},	/* between 50% and 100%: 0.6 / 0.4 */
		{0.35, 0.75, MODEL_HEALTHY},
		{0.35, 1.0, MODEL_FAULTY},	/* at the end: 0.3 / 0.2 */
		{0.25, 1.5, MODEL_SUSPECT},	/* past the plan: the last point's */
		{0.1, 1.0, MODEL_HEALTHY},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (model__health(&m, 0.0, cases[i].p, NAN, cases[i].progress) != cases[i].want)
			fail_msg("case %zu: p %.2f at %.2f", i, cases[i].p, cases[i].progress);
	/* The detector without points is not affected by the progress. */
	assert_int_equal(model__health(&m, 0.7, NAN, NAN, 1.0), MODEL_SUSPECT);
	assert_int_equal(model__health(&m, 0.85, NAN, NAN, 0.5), MODEL_FAULTY);
	/* The detector's own points (fault_at) judge runs without a reference,
	 * and only those. */
	m.fault.n_at = 2;
	memcpy(m.fault.at, (double[]){0.5, 1.0}, 2 * sizeof(double));
	memcpy(m.fault.threshold_at, (double[]){0.8, 0.6}, 2 * sizeof(double));
	memcpy(m.fault.suspect_at, (double[]){0.4, 0.3}, 2 * sizeof(double));
	assert_int_equal(model__health(&m, 0.7, NAN, NAN, 0.25), MODEL_SUSPECT);	/* before: 0.8 */
	assert_int_equal(model__health(&m, 0.7, NAN, NAN, 0.75), MODEL_SUSPECT);	/* between: the stricter 0.8 */
	assert_int_equal(model__health(&m, 0.7, NAN, NAN, 1.0), MODEL_FAULTY);	/* at the end: 0.6 */
	assert_int_equal(model__health(&m, 0.35, NAN, NAN, 1.0), MODEL_SUSPECT);
	assert_int_equal(model__health(&m, 0.0, 0.35, NAN, 1.0), MODEL_FAULTY);	/* the reference's own points */
	/* The outcome check: from 50%, a shortfall of 0.2 (0.1 at the end). */
	m.fault_ref.has_shortfall = true;
	memcpy(m.fault_ref.shortfall_at, (double[]){INFINITY, 0.2, 0.1}, 3 * sizeof(double));
	static const struct {
		double p, shortfall, progress;
		enum model_health want;
	} checks[] = {
		{0.1, 0.5, NAN, MODEL_HEALTHY},		/* progress unknown: no check */
		{0.1, 0.5, 0.05, MODEL_HEALTHY},	/* before the first point */
		{0.1, 0.5, 0.1, MODEL_HEALTHY},		/* no check at 10% */
		{0.1, 0.5, 0.3, MODEL_HEALTHY},		/* between 10% and 50%: the stricter, none */
		{0.1, 0.2, 0.5, MODEL_FAULTY},
		{0.1, 0.19, 0.5, MODEL_HEALTHY},
		{0.1, 0.15, 0.75, MODEL_HEALTHY},	/* between 50% and 100%: 0.2 */
		{0.1, 0.15, 1.0, MODEL_FAULTY},		/* at the end: 0.1 */
		{0.1, NAN, 1.0, MODEL_HEALTHY},		/* no shortfall known */
		{0.1, -0.3, 1.0, MODEL_HEALTHY},	/* better than its reference */
		{0.35, 0.0, 1.0, MODEL_FAULTY},		/* the probability still judges */
	};
	for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
		if (model__health(&m, 0.0, checks[i].p, checks[i].shortfall, checks[i].progress) != checks[i].want)
			fail_msg("check %zu: shortfall %.2f at %.2f", i, checks[i].shortfall, checks[i].progress);
	/* Without a reference the check does not apply. */
	assert_int_equal(model__health(&m, 0.1, NAN, 0.5, 1.0), MODEL_HEALTHY);
}

/* fit__outcome_check on rows with known answers. */
static void test_outcome_check(void **state)
{
	(void)state;
	double scratch[20], x, t;
	/* 20 healthy rows: shortfalls 0.19, 0.18, ..., 0 and probabilities
	 * 0.2 .. 0.01 the other way round, except one at 0.9; 5% may be
	 * flagged: one row. */
	struct fit_outcome_row healthy[20], faulty[4] = {
		{0.95, 0.0}, {0.1, 0.5}, {0.1, 0.3}, {0.1, NAN},
	};
	for (int i = 0; i < 20; i++)
		healthy[i] = (struct fit_outcome_row){0.01 * (i + 1), 0.01 * (19 - i)};
	healthy[5].p = 0.9;
	/* The probability alone, flagging the one healthy row at 0.9, finds
	 * one faulty row; the check just above the largest healthy shortfall,
	 * 0.19, finds two more without spending that budget. */
	fit__outcome_check(healthy, 20, faulty, 4, 0.05, scratch, &x, &t);
	assert_true(x > 0.19 && x < 0.1900001);
	assert_true(t > 0.2 && t <= 0.9);
	/* Every healthy run better than its reference: no check below 0. */
	for (int i = 0; i < 20; i++)
		healthy[i].shortfall = -0.01 * (i + 1);
	fit__outcome_check(healthy, 20, faulty, 4, 0.05, scratch, &x, &t);
	assert_true(isinf(x));
	/* No faulty row past the check: none. */
	for (int i = 0; i < 20; i++)
		healthy[i].shortfall = 0.6 + 0.01 * i;
	fit__outcome_check(healthy, 20, faulty, 4, 0.05, scratch, &x, &t);
	assert_true(isinf(x));
	assert_true(t > 0.2 && t <= 0.9);
}

/* The base feature a "ref_" feature compares, by name. */
static size_t compared_of(size_t j)
{
	const char *name = features__name(j);
	assert_true(strncmp(name, "ref_", 4) == 0);
	for (size_t i = 0; i < features__base_count(); i++)
		if (strcmp(features__name(i), name + 4) == 0)
			return i;
	fail_msg("%s compares no base feature", name);
	return 0;
}

/* dataset__set_references: each row of a listed program is compared with
 * one of its references other than itself, at the same point; the rest
 * have no reference and a block of NaN. */
static void test_references(void **state)
{
	(void)state;
	struct dataset d;
	synthetic(&d);
	/* Runs 1, 5, 9, ... are mnist's (group = (run - 1) % 4). */
	const char text[] = "program,run\nmnist,1\nmnist,5\nnowhere,3\nmnist,100000\n";
	FILE *f = fmemopen((void *)text, sizeof text - 1, "r");
	char err[256] = "";
	assert_int_equal(dataset__set_references(&d, f, err, sizeof err), 0);
	fclose(f);
	size_t base = features__base_count(), n = features__count(), with = 0;
	for (size_t i = 0; i < d.n; i++) {
		const struct row_meta *m = &d.meta[i];
		const double *x = d.x + i * n;
		if (strcmp(d.groups[m->group], "mnist") != 0) {
			assert_int_equal(m->reference, 0);
			for (size_t j = base; j < n; j++)
				assert_true(isnan(x[j]));
			continue;
		}
		with++;
		int64_t want = m->run == 1 ? 5 : m->run == 5 ? 1 : m->run % 2 ? 5 : 1;
		assert_int_equal(m->reference, want);
		/* The reference's row at the same point. */
		size_t r = (size_t)(want - 1) * DATASET_POINTS + (size_t)m->point;
		assert_int_equal(d.meta[r].run, want);
		for (size_t j = base; j < n; j++) {
			if (strstr(features__name(j), "_over_noise") != NULL)
				continue;	/* not a plain difference: test_features */
			size_t k = compared_of(j);
			double diff = x[k] - d.x[r * n + k];
			if (!(isnan(diff) ? isnan(x[j]) : x[j] == diff))
				fail_msg("row %zu %s: %g, want %g", i, features__name(j), x[j], diff);
		}
	}
	assert_int_equal(with, ROWS / N_PROGRAMS);

	const char bad[] = "program,run\nmnist\n";
	f = fmemopen((void *)bad, sizeof bad - 1, "r");
	assert_int_equal(dataset__set_references(&d, f, err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "line 2"));
	fclose(f);
	dataset__free(&d);
}

/* learn__train's own selection on the same rows: the bundle it writes
 * loads and tells the obvious cases apart. */
static void test_train_bundle(void **state)
{
	struct dataset d;
	synthetic(&d);
	const char *dir = *state;
	char out[4096], err[256] = "";
	snprintf(out, sizeof out, "%s/bundle", dir);
	int rv = learn__train(&d, "synthetic", out, &fit_defaults, err, sizeof err);
	if (rv != 0)
		fail_msg("learn__train: %d %s", rv, err);

	struct model *model = NULL;
	rv = model__load(out, &model, err, sizeof err);
	if (rv != 0)
		fail_msg("model__load: %d %s", rv, err);
	assert_non_null(strstr(model->text, "\nsource synthetic\n"));
	assert_non_null(strstr(model->text, "\nrows 240\n"));
	assert_non_null(strstr(model->text, "\nprograms 4\n"));
	assert_non_null(strstr(model->text, "false_alarm_target 0.035 seed 1\n"));
	assert_non_null(strstr(model->text, "\nruns_with_reference 30\n"));
	/* Thresholds per point of the reference detector only (not the
	 * detector's, nor the outcome check: docs/evaluation.md), the
	 * strictest its own. */
	assert_null(strstr(model->text, "\nfault_at "));
	assert_null(strstr(model->text, "\nshortfall_at "));
	assert_non_null(strstr(model->text, "\nfault_ref_at 0.10 "));
	assert_int_equal(model->fault.n_at, 0);
	assert_false(model->fault_ref.has_shortfall);
	assert_int_equal(model->fault_ref.n_at, DATASET_POINTS);
	double top = 0;
	for (size_t k = 0; k < model->fault_ref.n_at; k++) {
		assert_true(model->fault_ref.at[k] == dataset_points[k]);
		assert_true(model->fault_ref.suspect_at[k] <= model->fault_ref.threshold_at[k]);
		top = fmax(top, model->fault_ref.threshold_at[k]);
	}
	assert_true(fabs(top - model->fault_ref.threshold) < 1e-6);
	assert_true(model->fault.b.present && model->fault_ref.b.present);
	for (int c = 0; c < CAUSE_COUNT; c++)
		assert_true(model->cause[c].present);

	size_t nf = features__count();
	double *x = malloc(4 * nf * sizeof *x), fault[4], prob[4 * CAUSE_COUNT];
	assert_non_null(x);
	probe(x, 1, 0);
	probe(x + nf, 0, 1);
	probe(x + 2 * nf, 1, 1);
	probe(x + 3 * nf, 0, 0);
	double fault_ref[4];
	assert_int_equal(model__predict(model, x, 4, fault, fault_ref, prob), 0);
	for (int k = 0; k < 2; k++) {
		/* Without and with a reference, each by its own detector. */
		double *with = k ? fault_ref : (double[]){NAN, NAN, NAN, NAN};
		assert_int_equal(model__health(model, fault[0], with[0], NAN, NAN), MODEL_FAULTY);
		assert_int_equal(model__health(model, fault[1], with[1], NAN, NAN), MODEL_FAULTY);
		assert_int_equal(model__health(model, fault[2], with[2], NAN, NAN), MODEL_FAULTY);
		assert_int_equal(model__health(model, fault[3], with[3], NAN, NAN), MODEL_HEALTHY);
	}
	assert_true(model__report_causes(prob, model->ratio) >> CAUSE_lr_high & 1);
	assert_true(model__report_causes(prob + CAUSE_COUNT, model->ratio) >> CAUSE_loss & 1);
	assert_false(model__report_causes(prob, model->ratio) >> CAUSE_loss & 1);
	assert_false(model__report_causes(prob + CAUSE_COUNT, model->ratio) >> CAUSE_lr_high & 1);

	free(x);
	model__free(model);
	check_other_seed(&d, dir, out);
	dataset__free(&d);
}

/* learn__evaluate on the synthetic rows: every program held out once, the
 * report's tables, and one predictions line per row whose probabilities
 * find the (clean) signal on programs the models did not see. */
static void test_evaluate_predictions(void **state)
{
	struct dataset d;
	synthetic(&d);
	char path[4096], err[256] = "";
	snprintf(path, sizeof path, "%s/pred.csv", (const char *)*state);
	FILE *report = tmpfile(), *pred = fopen(path, "w");
	assert_non_null(report);
	assert_non_null(pred);
	struct fit_opts o = fit_defaults;
	o.verbose = false;
	/* About 17 healthy rows per point and fold: at the default 4% the
	 * threshold would have to clear every one of them (docs/model.md). */
	o.false_alarm = 0.10;
	int rv = learn__evaluate(&d, &o, report, pred, err, sizeof err);
	if (rv != 0)
		fail_msg("learn__evaluate: %d %s", rv, err);
	assert_int_equal(fclose(pred), 0);

	char line[4096];
	rewind(report);
	bool tables = false, ceiling = false;
	int per_point = 0;
	while (fgets(line, sizeof line, report) != NULL) {
		tables |= strstr(line, "### All methods") != NULL;
		ceiling |= strstr(line, "### Detection and ranking apart") != NULL;
		per_point += strncmp(line, "| dnnfault, a threshold per point |", 35) == 0;
		per_point += strncmp(line, "| dnnfault, with a reference run, a threshold per point |", 57) == 0;
	}
	fclose(report);
	/* Each per-point method in the table of all methods and over training. */
	assert_true(tables && ceiling);
	assert_int_equal(per_point, 4);

	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(line, sizeof line, f));
	assert_non_null(strstr(line, "run,program,point,labels,fault_threshold,ratio,p_fault,p_lr_high,p_lr_low"));
	assert_non_null(strstr(line, ",reference,ref_threshold,p_fault_ref,ref_threshold_at_point,threshold_at_point,"
				     "shortfall,ref_shortfall_at_point,ref_shortfall_threshold_at_point\n"));
	size_t n = 0, right = 0, faulty = 0;
	/* Per program, the largest of its points' thresholds, of each detector. */
	double top_at[N_PROGRAMS] = {0}, ref_thr[N_PROGRAMS] = {0};
	double base_top_at[N_PROGRAMS] = {0}, base_thr[N_PROGRAMS] = {0};
	while (fgets(line, sizeof line, f) != NULL) {
		/* The last seven fields: ref_threshold, p_fault_ref,
		 * ref_threshold_at_point, threshold_at_point, shortfall,
		 * ref_shortfall_at_point, ref_shortfall_threshold_at_point. */
		char *c[7];
		for (int k = 6; k >= 0; k--) {
			c[k] = strrchr(line, ',');
			*c[k] = '\0';
		}
		for (int k = 0; k < 7; k++)
			*c[k] = ',';
		double shortfall = strtod(c[4] + 1, NULL), check_at = strtod(c[5] + 1, NULL);
		double check_threshold = strtod(c[6] + 1, NULL);
		double want = features__shortfall(d.x + n * d.n_features);
		assert_true(isnan(want) ? isnan(shortfall) : fabs(shortfall - want) <= 1e-5 * fmax(1, fabs(want)));
		if (d.meta[n].reference != 0) {
			/* The check's threshold is the per-point one or, its shortfall
			 * spending some of the budget, higher. */
			assert_true(check_at > 0 && check_threshold <= 1);
			assert_true(check_threshold >= strtod(c[2] + 1, NULL));
		}
		double thr_ref = strtod(c[0] + 1, NULL), at_point = strtod(c[2] + 1, NULL);
		double base_at_point = strtod(c[3] + 1, NULL);
		assert_true(base_at_point > 0 && base_at_point <= 1);
		base_top_at[d.meta[n].group] = fmax(base_top_at[d.meta[n].group], base_at_point);
		if (d.meta[n].reference != 0) {
			/* The strictest point's threshold serves every point. */
			assert_true(at_point > 0 && at_point <= thr_ref);
			top_at[d.meta[n].group] = fmax(top_at[d.meta[n].group], at_point);
			ref_thr[d.meta[n].group] = thr_ref;
		}
		char *field[8];
		int k = 0;
		/* labels may be empty: split by hand on ','. */
		for (char *p = line; k < 8; k++) {
			field[k] = p;
			char *comma = strchr(p, ',');
			if (comma == NULL)
				break;
			*comma = '\0';
			p = comma + 1;
		}
		assert_int_equal(k, 8);
		const struct row_meta *m = &d.meta[n];
		assert_int_equal(strtoll(field[0], NULL, 10), m->run);
		assert_string_equal(field[1], d.groups[m->group]);
		double thr = strtod(field[4], NULL), fault = strtod(field[6], NULL);
		assert_true(thr > 0 && thr <= 1 && fault >= 0 && fault <= 1);
		assert_true(base_at_point <= thr);
		base_thr[m->group] = thr;
		if (m->labels != 0) {
			faulty++;
			right += fault >= thr;
		}
		n++;
	}
	fclose(f);
	assert_int_equal(n, d.n);
	size_t with_ref = 0;	/* the odd runs: groups 1 and 3 */
	for (size_t g = 0; g < N_PROGRAMS; g++)
		if (ref_thr[g] > 0) {
			with_ref++;
			assert_true(top_at[g] == ref_thr[g]);
		}
	assert_int_equal(with_ref, 2);
	/* The strictest point's threshold is the detector's single one. */
	for (size_t g = 0; g < N_PROGRAMS; g++)
		assert_true(base_top_at[g] == base_thr[g]);
	/* Two clean splits: nearly every faulty row of a held-out program is
	 * found at the calibrated threshold. */
	assert_true(right * 10 >= faulty * 8);
	dataset__free(&d);
}

/* One bundle.txt to try: the header's fields, each as the current schema
 * has it unless changed, then `body`. */
struct bundle_case {
	const char *what;
	int format_delta, version_delta;
	uint64_t hash_xor;
	long features_delta;
	bool no_version, no_hash;
	const char *body;
	int rv;
	const char *says;	/* in the error message */
};

#define VALID "fault threshold 0.5 suspect 0.25\nrank ratio 0.5\ncause lr_high\n"
#define AFTER_FAULT "rank ratio 0.5\ncause lr_high\n"

static const struct bundle_case bundle_cases[] = {
	{"valid", .body = VALID},
	{"threshold 1", .body = "fault threshold 1 suspect 1\n" AFTER_FAULT},
	{"ratio 1", .body = "fault threshold 0.5 suspect 0.25\nrank ratio 1\ncause lr_high\n"},
	{"another format", .format_delta = 1, .body = VALID, .rv = -EINVAL, .says = "format"},
	{"an older format", .format_delta = -1, .body = VALID, .rv = -EINVAL, .says = "format"},
	{"another schema version", .version_delta = 1, .body = VALID, .rv = -EINVAL, .says = "schema"},
	{"no schema version", .no_version = true, .body = VALID, .rv = -EINVAL, .says = "schema"},
	{"another schema hash", .hash_xor = 1, .body = VALID, .rv = -EINVAL, .says = "schema"},
	{"no schema hash", .no_hash = true, .body = VALID, .rv = -EINVAL, .says = "schema"},
	{"one feature more", .features_delta = 1, .body = VALID, .rv = -EINVAL, .says = "features"},
	{"one feature less", .features_delta = -1, .body = VALID, .rv = -EINVAL, .says = "features"},
	{"missing model file", .body = VALID "cause lr_low\n", .rv = -EIO, .says = "lr_low.json"},
	{"corrupt model file", .body = VALID "cause init\n", .rv = -EIO, .says = "init.json"},
	{"unknown cause", .body = VALID "cause lr_huge\n", .rv = -EINVAL, .says = "unknown cause 'lr_huge'"},
	{"cause twice", .body = VALID "cause lr_high\n", .rv = -EINVAL, .says = "twice"},
	{"cause line cut short", .body = VALID "cause\n", .rv = -EINVAL, .says = "bad cause line"},
	{"fault twice", .body = VALID "fault threshold 0.5 suspect 0.25\n", .rv = -EINVAL, .says = "twice"},
	{"no fault line", .body = AFTER_FAULT, .rv = -EINVAL, .says = "no fault line"},
	{"with a reference detector", .body = VALID "fault_ref threshold 0.6 suspect 0.3\n"},
	{"reference detector line cut short", .body = VALID "fault_ref threshold 0.6\n", .rv = -EINVAL,
	 .says = "bad fault_ref line"},
#define REF "fault_ref threshold 0.6 suspect 0.3\n"
	{"thresholds per point", .body = VALID REF "fault_ref_at 0.10 0.6 0.3 0.25 0.5 0.2 1.00 0.4 0.1\n"},
	{"thresholds at one point", .body = VALID REF "fault_ref_at 1 0.4 0.1\n"},
	{"thresholds per point, none", .body = VALID REF "fault_ref_at\n", .rv = -EINVAL,
	 .says = "bad thresholds per point"},
	{"thresholds per point, points not increasing", .body = VALID REF "fault_ref_at 0.5 0.6 0.3 0.25 0.5 0.2\n",
	 .rv = -EINVAL, .says = "bad thresholds per point"},
	{"thresholds per point, point past the end", .body = VALID REF "fault_ref_at 1.5 0.6 0.3\n", .rv = -EINVAL,
	 .says = "bad thresholds per point"},
	{"thresholds per point, suspect above", .body = VALID REF "fault_ref_at 0.5 0.3 0.6\n", .rv = -EINVAL,
	 .says = "bad thresholds per point"},
	{"thresholds per point, cut short", .body = VALID REF "fault_ref_at 0.5 0.6 0.3 1.0 0.5\n", .rv = -EINVAL,
	 .says = "bad thresholds per point"},
	{"thresholds per point, too many", .body = VALID REF "fault_ref_at 0.1 .5 .2 0.2 .5 .2 0.3 .5 .2 0.4 .5 .2 "
	 "0.5 .5 .2 0.6 .5 .2 0.7 .5 .2 0.8 .5 .2 0.9 .5 .2\n", .rv = -EINVAL, .says = "bad thresholds per point"},
	{"thresholds per point without their detector", .body = VALID "fault_ref_at 0.5 0.6 0.3\n", .rv = -EINVAL,
	 .says = "without a fault_ref line"},
	{"the detector's thresholds per point", .body = VALID "fault_at 0.10 0.6 0.3 1.00 0.5 0.2\n"},
#define REF_AT REF "fault_ref_at 0.10 0.6 0.3 1.00 0.4 0.1\n"
	{"outcome check", .body = VALID REF_AT "shortfall_at 0.10 inf 1.00 0.2\n"},
	{"outcome check before the thresholds per point", .body = VALID REF "shortfall_at 0.10 inf 1.00 0.2\n"
	 "fault_ref_at 0.10 0.6 0.3 1.00 0.4 0.1\n", .rv = -EINVAL, .says = "bad outcome check"},
	{"outcome check at other points", .body = VALID REF_AT "shortfall_at 0.10 inf 0.50 0.2\n", .rv = -EINVAL,
	 .says = "bad outcome check"},
	{"outcome check at fewer points", .body = VALID REF_AT "shortfall_at 0.10 0.3\n", .rv = -EINVAL,
	 .says = "bad outcome check"},
	{"outcome check at more points", .body = VALID REF_AT "shortfall_at 0.10 0.3 1.00 0.2 1.00 0.1\n",
	 .rv = -EINVAL, .says = "bad outcome check"},
	{"outcome check of 0", .body = VALID REF_AT "shortfall_at 0.10 0 1.00 0.2\n", .rv = -EINVAL,
	 .says = "bad outcome check"},
	{"outcome check of NaN", .body = VALID REF_AT "shortfall_at 0.10 nan 1.00 0.2\n", .rv = -EINVAL,
	 .says = "bad outcome check"},
	{"outcome check without a reference detector", .body = VALID "shortfall_at 1.00 0.2\n", .rv = -EINVAL,
	 .says = "bad outcome check"},
	{"a cause of the reference detector's width", .body = VALID "cause data\n", .rv = -EINVAL,
	 .says = "another number of features"},
	{"threshold 0", .body = "fault threshold 0 suspect 0\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"threshold above 1", .body = "fault threshold 1.5 suspect 0.25\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"negative threshold", .body = "fault threshold -0.5 suspect 0.25\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"threshold nan", .body = "fault threshold nan suspect 0.25\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"suspect above threshold", .body = "fault threshold 0.5 suspect 0.6\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"suspect 0", .body = "fault threshold 0.5 suspect 0\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"fault line cut short", .body = "fault threshold 0.5\n" AFTER_FAULT, .rv = -EINVAL,
	 .says = "bad fault line"},
	{"no rank ratio", .body = "fault threshold 0.5 suspect 0.25\ncause lr_high\n", .rv = -EINVAL,
	 .says = "no rank ratio"},
	{"ratio 0", .body = "fault threshold 0.5 suspect 0.25\nrank ratio 0\ncause lr_high\n", .rv = -EINVAL,
	 .says = "bad rank line"},
	{"ratio above 1", .body = "fault threshold 0.5 suspect 0.25\nrank ratio 1.5\ncause lr_high\n",
	 .rv = -EINVAL, .says = "bad rank line"},
	{"no causes", .body = "fault threshold 0.5 suspect 0.25\nrank ratio 0.5\n", .rv = -EINVAL,
	 .says = "no cause models"},
};

static void write_bundle(const char *dir, const struct bundle_case *k)
{
	char text[4096];
	size_t n = 0;
	n += (size_t)snprintf(text + n, sizeof text - n, "format dnnfault-bundle %d\n",
			      MODEL_FORMAT + k->format_delta);
	if (!k->no_version)
		n += (size_t)snprintf(text + n, sizeof text - n, "schema_version %d\n",
				      FEATURES_SCHEMA_VERSION + k->version_delta);
	if (!k->no_hash)
		n += (size_t)snprintf(text + n, sizeof text - n, "schema_hash %016" PRIx64 "\n",
				      features__schema_hash() ^ k->hash_xor);
	n += (size_t)snprintf(text + n, sizeof text - n, "features %ld\n",
			      (long)features__count() + k->features_delta);
	snprintf(text + n, sizeof text - n, "%s", k->body);
	write_file(dir, "bundle.txt", text);
}

static void test_refusals(void **state)
{
	struct dataset d;
	synthetic(&d);
	struct fit_matrix m;
	assert_int_equal(fit__matrix(&d, false, &m), 0);
	size_t idx[ROWS];
	for (size_t i = 0; i < d.n; i++)
		idx[i] = i;
	struct boost_rows rows = {m.x, m.n_base, idx, d.n, m.n_cols};
	const char *dir = *state;
	char path[4096], err[256] = "";
	void *b;
	assert_int_equal(boost__train(&rows, m.y[CAUSE_lr_high], &small, &b, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/lr_high.json", dir);
	assert_int_equal(boost__save(b, path, err, sizeof err), 0);
	boost__free(b);
	assert_int_equal(boost__train(&rows, m.fault, &small, &b, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/fault.json", dir);
	assert_int_equal(boost__save(b, path, err, sizeof err), 0);
	boost__free(b);
	write_file(dir, "init.json", "{\"learner\": not a model");
	/* A model of every feature: right for the reference detector only. */
	struct boost_rows full = {m.x, m.n_cols, idx, d.n, 0};
	assert_int_equal(boost__train(&full, m.fault, &small, &b, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/fault_ref.json", dir);
	assert_int_equal(boost__save(b, path, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/data.json", dir);
	assert_int_equal(boost__save(b, path, err, sizeof err), 0);
	boost__free(b);

	for (size_t i = 0; i < sizeof bundle_cases / sizeof bundle_cases[0]; i++) {
		const struct bundle_case *k = &bundle_cases[i];
		write_bundle(dir, k);
		struct model *model = NULL;
		err[0] = '\0';
		int rv = model__load(dir, &model, err, sizeof err);
		if (rv != k->rv)
			fail_msg("%s: model__load returned %d (%s), want %d", k->what, rv, err, k->rv);
		if (rv == 0) {
			/* A cause the bundle lacks predicts NaN. */
			assert_non_null(model);
			assert_true(model->cause[CAUSE_lr_high].present);
			assert_false(model->cause[CAUSE_lr_low].present);
			double fault, prob[CAUSE_COUNT];
			assert_int_equal(model__predict(model, d.x, 1, &fault, NULL, prob), 0);
			assert_true(fault >= 0 && fault <= 1);
			assert_true(prob[CAUSE_lr_high] >= 0 && prob[CAUSE_lr_high] <= 1);
			assert_true(isnan(prob[CAUSE_lr_low]));
			model__free(model);
			continue;
		}
		if (model != NULL)
			fail_msg("%s: refused, yet set the model", k->what);
		if (strstr(err, k->says) == NULL)
			fail_msg("%s: message '%s' does not say '%s'", k->what, err, k->says);
	}

	/* A directory without a bundle, and no directory at all. */
	char empty[4096], nowhere[4096];
	snprintf(empty, sizeof empty, "%s/empty", dir);
	snprintf(nowhere, sizeof nowhere, "%s/nowhere", dir);
	assert_int_equal(mkdir(empty, 0700), 0);
	const char *const gone[] = {empty, nowhere};
	for (size_t i = 0; i < 2; i++) {
		struct model *model = NULL;
		err[0] = '\0';
		assert_int_equal(model__load(gone[i], &model, err, sizeof err), -ENOENT);
		assert_null(model);
		assert_non_null(strstr(err, "bundle.txt"));
	}

	fit__free_matrix(&m);
	dataset__free(&d);
}

/* XGBoost's OpenMP threads wait for each other spinning: on a loaded
 * machine or under valgrind one thread is many times faster. libgomp reads
 * OMP_NUM_THREADS before main, so this goes through its API, looked up at
 * run time as libgomp comes in with libxgboost, not linked here. */
static void one_thread(void)
{
	void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
	if (set != NULL)
		set(1);
}

int main(void)
{
	one_thread();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, temp_dir, remove_temp_dir),
		cmocka_unit_test(test_rows_split),
		cmocka_unit_test(test_references),
		cmocka_unit_test(test_report_causes),
		cmocka_unit_test(test_health_per_point),
		cmocka_unit_test(test_outcome_check),
		cmocka_unit_test_setup_teardown(test_train_bundle, temp_dir, remove_temp_dir),
		cmocka_unit_test(test_boost_seed),
		cmocka_unit_test_setup_teardown(test_evaluate_predictions, temp_dir, remove_temp_dir),
		cmocka_unit_test_setup_teardown(test_refusals, temp_dir, remove_temp_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
