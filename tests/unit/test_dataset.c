/* Training rows read straight from a store (dataset__from_store): a real
 * SQLite file written by the daemon's own store module, in a temp
 * directory. A run that names a reference run is compared with it as the
 * daemon compares them live; a references file replaces that. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk.h"
#include "dataset.h"
#include "learn.h"
#include "run_features.h"
#include "series.h"
#include "store.h"
#include "store_read.h"
#include "store_builder.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/dnnfault-dataset-XXXXXX");
	if (f == NULL || mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
	int rv = system(cmd);
	free(f);
	return rv == 0 ? 0 : -1;
}

/* A labelled run of `n` steps whose loss falls at `rate`, naming
 * `reference` (NULL: none). */
static void add_run(struct store_batch *b, int64_t id, const char *name, const char *labels,
		    const char *reference, int n, double rate)
{
	struct store_run *r = STORE_BATCH_PUSH(b, runs);
	r->id = id;
	r->is_new = true;
	r->uid = strdup(name);
	r->name = strdup(name);
	r->world_size = 1;
	r->time = 1000.0 + (double)id;
	r->labels = strdup(labels);
	r->reference = reference ? strdup(reference) : NULL;
	/* The description the client sends first: one layer, the plan. */
	store_builder__one_layer_run(b, r, name, (uint64_t)n);

	struct store_chunk *c = STORE_BATCH_PUSH(b, chunks);
	c->run = id;
	c->stream = (uint64_t)id;
	c->n_layers = 1;
	c->first_step = 0;
	c->last_step = (uint64_t)(n - 1);
	c->cap = chunk__record_size(1) * (size_t)n;
	c->data = malloc(c->cap);
	for (int i = 0; i < n; i++) {
		float stats[16];
		for (int k = 0; k < 16; k++)
			stats[k] = (float)(1 + k);
		Dnnfault__Step st = DNNFAULT__STEP__INIT;
		st.step = (uint64_t)i;
		st.has_loss = 1;
		st.loss = 2.0 / (1.0 + rate * i);
		st.has_lr = 1;
		st.lr = 0.01;
		st.n_layer_stats = 16;
		st.layer_stats = stats;
		c->len += chunk__write_record(&st, c->data + c->len);
		c->n_steps++;
	}
	struct store_run_update *ru = STORE_BATCH_PUSH(b, run_updates);
	ru->run = id;
	ru->updated = r->time + 10;
	ru->has_step = true;
	ru->last_step = c->last_step;
	ru->n_steps = (uint64_t)n;
	struct store_stream_update *su = STORE_BATCH_PUSH(b, stream_updates);
	su->stream = (uint64_t)id;
	su->last_seq = (uint64_t)n;
	su->updated = ru->updated;
}

static void write_store(const char *path)
{
	struct store *s = NULL;
	char err[256];
	if (store__open(path, 1, &s, err, sizeof err) != 0)
		fail_msg("open: %s", err);
	struct store_batch b = {0};
	add_run(&b, 1, "digits-base-s0", "", NULL, 40, 0.5);
	add_run(&b, 2, "digits-lr-s0", "lr_high", "digits-base-s0", 40, 0.01);
	add_run(&b, 3, "digits-alone-s0", "", NULL, 20, 0.4);
	add_run(&b, 4, "digits-lost-s0", "lr_low", "no-such-run", 20, 0.02);
	add_run(&b, 5, "moons-base-s0", "", "5", 20, 0.3);	/* itself: none */
	if (store__commit(s, &b, err, sizeof err) != 0)
		fail_msg("commit: %s", err);
	store_batch__free(&b);
	store__close(s);
}

static double feat(const struct dataset *d, size_t row, const char *name)
{
	for (size_t j = 0; j < features__count(); j++)
		if (strcmp(features__name(j), name) == 0)
			return d->x[row * d->n_features + j];
	fail_msg("no feature %s", name);
	return NAN;
}

/* The reference block of every row of `run` is NaN. */
static void expect_no_reference(const struct dataset *d, int64_t run)
{
	size_t rows = 0;
	for (size_t i = 0; i < d->n; i++) {
		if (d->meta[i].run != run)
			continue;
		rows++;
		assert_int_equal(d->meta[i].reference, 0);
		for (size_t j = features__base_count(); j < d->n_features; j++)
			assert_true(isnan(d->x[i * d->n_features + j]));
	}
	assert_int_equal(rows, DATASET_POINTS);
}

static void stored_references(void **state)
{
	struct fixture *f = *state;
	write_store(f->path);
	struct dataset d;
	char err[256];
	if (dataset__from_store(f->path, &d, err, sizeof err) != 0)
		fail_msg("from_store: %s", err);
	assert_int_equal(d.n, 5 * DATASET_POINTS);
	assert_int_equal(d.n_groups, 2);

	/* Run 2 against run 1, as analyze.c would compute it at each point. */
	struct store_reader *r = NULL;
	assert_int_equal(store_read__open(f->path, &r, err, sizeof err), 0);
	struct series run = {0}, ref = {0};
	assert_int_equal(store_read__series(r, 2, &run, err, sizeof err), 0);
	assert_int_equal(store_read__series(r, 1, &ref, err, sizeof err), 0);
	store_read__close(r);
	double *want = malloc(d.n_features * sizeof *want), *ref_x = malloc(d.n_features * sizeof *ref_x);
	assert_non_null(want);
	assert_non_null(ref_x);
	size_t rows = 0;
	for (size_t i = 0; i < d.n; i++) {
		if (d.meta[i].run != 2)
			continue;
		rows++;
		assert_int_equal(d.meta[i].reference, 1);
		size_t upto = features__upto(&run, dataset_points[d.meta[i].point]);
		struct series v = features__prefix(&run, upto);
		assert_int_equal(features__compute(&run, upto, want), 0);
		assert_int_equal(features__compute(&ref, features__reference_upto(&v, &ref), ref_x), 0);
		features__apply_reference(want, ref_x);
		for (size_t j = 0; j < d.n_features; j++) {
			double got = d.x[i * d.n_features + j];
			assert_true((isnan(got) && isnan(want[j])) || got == want[j]);
		}
		/* Its loss falls slower than the reference's. */
		assert_true(feat(&d, i, "ref_loss_last") > 0);
	}
	assert_int_equal(rows, DATASET_POINTS);
	free(want);
	free(ref_x);
	series__free(&run);
	series__free(&ref);

	expect_no_reference(&d, 1);	/* names none */
	expect_no_reference(&d, 3);
	expect_no_reference(&d, 4);	/* names one the store lacks */
	expect_no_reference(&d, 5);	/* names itself */

	/* A references file replaces the store's: run 3 is digits' only
	 * known-healthy run now, so run 2 is compared with it. */
	static char listed[] = "program,run\ndigits,3\n";
	FILE *refs = fmemopen(listed, strlen(listed), "r");
	assert_non_null(refs);
	assert_int_equal(dataset__set_references(&d, refs, err, sizeof err), 0);
	fclose(refs);
	for (size_t i = 0; i < d.n; i++)
		if (d.meta[i].run == 2 || d.meta[i].run == 1)
			assert_int_equal(d.meta[i].reference, 3);
	expect_no_reference(&d, 3);
	dataset__free(&d);
}

/* Trains from a new store `db` in f->dir of one run per `labels`, in
 * programs `programs`, into f->dir/bundle; returns learn__train's result. */
static int train_on(struct fixture *f, const char *db, const char *const *labels, const char *const *programs,
		    size_t n, char *err, size_t len)
{
	char path[128];
	snprintf(path, sizeof path, "%s/%s", f->dir, db);
	struct store *s = NULL;
	if (store__open(path, 1, &s, err, len) != 0)
		fail_msg("open: %s", err);
	struct store_batch b = {0};
	for (size_t i = 0; i < n; i++) {
		char name[64];
		snprintf(name, sizeof name, "%s-c%zu-s0", programs[i], i);
		add_run(&b, (int64_t)i + 1, name, labels[i], NULL, 40, labels[i][0] ? 0.01 : 0.5);
	}
	if (store__commit(s, &b, err, len) != 0)
		fail_msg("commit: %s", err);
	store_batch__free(&b);
	store__close(s);
	struct dataset d;
	if (dataset__from_store(path, &d, err, len) != 0)
		fail_msg("from_store: %s", err);
	char out[128];
	snprintf(out, sizeof out, "%s/bundle", f->dir);
	struct fit_opts o = fit_defaults;
	int rv = learn__train(&d, path, out, &o, err, len);
	dataset__free(&d);
	return rv;
}

/* A corpus without faulty runs, or without healthy ones, trains nothing:
 * the message says what is missing and no bundle is written. */
static void train_needs_both_kinds(void **state)
{
	struct fixture *f = *state;
	const char *healthy[] = {"", ""}, *programs[] = {"digits", "moons"};
	char err[256] = "", bundle[128];
	assert_int_equal(train_on(f, "healthy.db", healthy, programs, 2, err, sizeof err), -EINVAL);
	assert_string_equal(err, "training needs faulty and healthy runs: the corpus has 2 healthy runs and 0 faulty");
	snprintf(bundle, sizeof bundle, "%s/bundle", f->dir);
	assert_int_equal(access(bundle, F_OK), -1);
	const char *faulty[] = {"lr_high"};
	assert_int_equal(train_on(f, "faulty.db", faulty, programs, 1, err, sizeof err), -EINVAL);
	assert_string_equal(err, "training needs faulty and healthy runs: the corpus has 0 healthy runs and 1 faulty");
	assert_int_equal(access(bundle, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(stored_references, setup, teardown),
		cmocka_unit_test_setup_teardown(train_needs_both_kinds, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
