/* Model bundles: what training writes, loading reads back and predicts
 * with exactly the same probabilities; learn__train's bundle diagnoses the
 * obvious cases; loading refuses bundles of another schema or malformed
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

/* Trains every cause with `small` on all rows of d into boosters[]. */
static void train_small(const struct dataset *d, struct fit_matrix *m, size_t *idx,
			struct cause_fit fit[CAUSE_COUNT], void *boosters[CAUSE_COUNT])
{
	char err[256] = "";
	assert_int_equal(fit__matrix(d, false, m), 0);
	assert_int_equal(m->n_cols, features__count());
	for (size_t i = 0; i < d->n; i++)
		idx[i] = i;
	for (int c = 0; c < CAUSE_COUNT; c++)
		fit[c] = (struct cause_fit){.params = small, .threshold = 0.5, .suspect = 0.25};
	int rv = fit__train(m, idx, d->n, fit, boosters, err, sizeof err);
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
	struct cause_fit fit[CAUSE_COUNT];
	void *boosters[CAUSE_COUNT];
	train_small(&d, &m, idx, fit, boosters);

	char err[256] = "";
	static float mem[CAUSE_COUNT][ROWS];
	struct boost_rows rows = {m.x, m.n_cols, idx, d.n};
	const char *dir = *state;
	char path[4096];
	for (int c = 0; c < CAUSE_COUNT; c++) {
		assert_int_equal(boost__predict(boosters[c], &rows, 0, mem[c], err, sizeof err), 0);
		snprintf(path, sizeof path, "%s/%s.json", dir, causes__name((enum cause_id)c));
		assert_int_equal(boost__save(boosters[c], path, err, sizeof err), 0);
		boost__free(boosters[c]);
	}
	snprintf(path, sizeof path, "%s/bundle.txt", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(model__write_header(f), 0);
	for (int c = 0; c < CAUSE_COUNT; c++)
		fprintf(f, "cause %s threshold %.2f suspect %.2f\n", causes__name((enum cause_id)c),
			fit[c].threshold, fit[c].suspect);
	assert_int_equal(fclose(f), 0);

	struct model *model = NULL;
	int rv = model__load(dir, &model, err, sizeof err);
	if (rv != 0)
		fail_msg("model__load: %d %s", rv, err);
	assert_int_equal(model->n_features, features__count());
	assert_int_equal(model->schema_version, FEATURES_SCHEMA_VERSION);
	assert_true(model->schema_hash == features__schema_hash());
	assert_string_equal(model->path, dir);
	assert_non_null(strstr(model->text, "cause lr_high threshold 0.50 suspect 0.25\n"));
	for (int c = 0; c < CAUSE_COUNT; c++) {
		assert_true(model->cause[c].present);
		assert_true(model->cause[c].threshold == 0.5);
		assert_true(model->cause[c].suspect == 0.25);
	}

	double *prob = malloc(ROWS * CAUSE_COUNT * sizeof *prob);
	assert_non_null(prob);
	assert_int_equal(model__predict(model, d.x, d.n, prob), 0);
	for (size_t i = 0; i < d.n; i++)
		for (int c = 0; c < CAUSE_COUNT; c++)
			if (prob[i * CAUSE_COUNT + (size_t)c] != (double)mem[c][i])
				fail_msg("row %zu %s: loaded %.9g, in memory %.9g", i,
					 causes__name((enum cause_id)c), prob[i * CAUSE_COUNT + (size_t)c],
					 (double)mem[c][i]);
	/* The signal is a single split: every training row is right. */
	for (size_t i = 0; i < d.n; i++) {
		const double *x = d.x + i * d.n_features, *p = prob + i * CAUSE_COUNT;
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
	assert_int_equal(model__predict(model, probes, 4, prob), 0);
	assert_true(prob[0 * CAUSE_COUNT + CAUSE_lr_high] > 0.5);
	assert_true(prob[0 * CAUSE_COUNT + CAUSE_loss] < 0.5);
	assert_true(prob[1 * CAUSE_COUNT + CAUSE_lr_high] < 0.5);
	assert_true(prob[1 * CAUSE_COUNT + CAUSE_loss] > 0.5);
	assert_true(prob[2 * CAUSE_COUNT + CAUSE_lr_high] < 0.25);
	assert_true(prob[2 * CAUSE_COUNT + CAUSE_loss] < 0.25);
	assert_int_equal(model__health(model, prob + 0 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_equal(model__health(model, prob + 1 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_equal(model__health(model, prob + 3 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_equal(model__health(model, prob + 2 * CAUSE_COUNT), MODEL_HEALTHY);

	free(probes);
	free(prob);
	model__free(model);
	fit__free_matrix(&m);
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
	for (int c = 0; c < CAUSE_COUNT; c++)
		assert_true(model->cause[c].present);

	size_t nf = features__count();
	double *x = malloc(4 * nf * sizeof *x), prob[4 * CAUSE_COUNT];
	assert_non_null(x);
	probe(x, 1, 0);
	probe(x + nf, 0, 1);
	probe(x + 2 * nf, 1, 1);
	probe(x + 3 * nf, 0, 0);
	assert_int_equal(model__predict(model, x, 4, prob), 0);
	assert_true(prob[0 * CAUSE_COUNT + CAUSE_lr_high] >= model->cause[CAUSE_lr_high].threshold);
	assert_true(prob[1 * CAUSE_COUNT + CAUSE_loss] >= model->cause[CAUSE_loss].threshold);
	assert_int_equal(model__health(model, prob + 0 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_equal(model__health(model, prob + 1 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_equal(model__health(model, prob + 2 * CAUSE_COUNT), MODEL_FAULTY);
	assert_int_not_equal(model__health(model, prob + 3 * CAUSE_COUNT), MODEL_FAULTY);
	assert_true(prob[3 * CAUSE_COUNT + CAUSE_lr_high] < model->cause[CAUSE_lr_high].suspect);
	assert_true(prob[3 * CAUSE_COUNT + CAUSE_loss] < model->cause[CAUSE_loss].suspect);

	free(x);
	model__free(model);
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

static const struct bundle_case bundle_cases[] = {
	{"valid", .body = "cause lr_high threshold 0.5 suspect 0.25\n"},
	{"threshold 1", .body = "cause lr_high threshold 1 suspect 1\n"},
	{"another format", .format_delta = 1, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "format"},
	{"another schema version", .version_delta = 1, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "schema"},
	{"no schema version", .no_version = true, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "schema"},
	{"another schema hash", .hash_xor = 1, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "schema"},
	{"no schema hash", .no_hash = true, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "schema"},
	{"one feature more", .features_delta = 1, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "features"},
	{"one feature less", .features_delta = -1, .body = "cause lr_high threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "features"},
	{"missing model file", .body = "cause lr_high threshold 0.5 suspect 0.25\n"
				       "cause lr_low threshold 0.5 suspect 0.25\n",
	 .rv = -EIO, .says = "lr_low.json"},
	{"corrupt model file", .body = "cause init threshold 0.5 suspect 0.25\n", .rv = -EIO,
	 .says = "init.json"},
	{"unknown cause", .body = "cause lr_high threshold 0.5 suspect 0.25\n"
				  "cause lr_huge threshold 0.5 suspect 0.25\n",
	 .rv = -EINVAL, .says = "unknown cause 'lr_huge'"},
	{"cause twice", .body = "cause lr_high threshold 0.5 suspect 0.25\n"
				"cause lr_high threshold 0.6 suspect 0.3\n",
	 .rv = -EINVAL, .says = "twice"},
	{"threshold 0", .body = "cause lr_high threshold 0 suspect 0\n", .rv = -EINVAL, .says = "bad cause line"},
	{"threshold above 1", .body = "cause lr_high threshold 1.5 suspect 0.25\n", .rv = -EINVAL,
	 .says = "bad cause line"},
	{"negative threshold", .body = "cause lr_high threshold -0.5 suspect 0.25\n", .rv = -EINVAL,
	 .says = "bad cause line"},
	{"threshold nan", .body = "cause lr_high threshold nan suspect 0.25\n", .rv = -EINVAL,
	 .says = "bad cause line"},
	{"suspect above threshold", .body = "cause lr_high threshold 0.5 suspect 0.6\n", .rv = -EINVAL,
	 .says = "bad cause line"},
	{"suspect 0", .body = "cause lr_high threshold 0.5 suspect 0\n", .rv = -EINVAL, .says = "bad cause line"},
	{"cause line cut short", .body = "cause lr_high threshold 0.5\n", .rv = -EINVAL, .says = "bad cause line"},
	{"no causes", .body = "trained 2024-01-01T00:00:00Z\n", .rv = -EINVAL, .says = "no cause models"},
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
	struct boost_rows rows = {m.x, m.n_cols, idx, d.n};
	const char *dir = *state;
	char path[4096], err[256] = "";
	void *b;
	assert_int_equal(boost__train(&rows, m.y[CAUSE_lr_high], &small, &b, err, sizeof err), 0);
	snprintf(path, sizeof path, "%s/lr_high.json", dir);
	assert_int_equal(boost__save(b, path, err, sizeof err), 0);
	boost__free(b);
	write_file(dir, "init.json", "{\"learner\": not a model");

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
			double prob[CAUSE_COUNT];
			assert_int_equal(model__predict(model, d.x, 1, prob), 0);
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
		cmocka_unit_test_setup_teardown(test_train_bundle, temp_dir, remove_temp_dir),
		cmocka_unit_test_setup_teardown(test_refusals, temp_dir, remove_temp_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
