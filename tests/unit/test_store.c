/* Store: migrations, batch commit, restart load, reads and export decoding,
 * and all-or-nothing commits. Uses a real SQLite file in a temp directory. */
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

#include <sqlite3.h>

#include "chunk.h"
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
	snprintf(f->dir, sizeof f->dir, "/tmp/dnnfault-store-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static struct store *open_store(const char *path)
{
	struct store *s = NULL;
	char err[256];
	int rv = store__open(path, 1, &s, err, sizeof err);
	if (rv != 0)
		fail_msg("open: %s", err);
	return s;
}

/* Commits the batch into a fresh writer on path, frees it, then loads
 * `run`'s series through a reader (left open in *r). */
static void commit_then_load(const char *path, struct store_batch *b, int64_t run,
			     struct store_reader **r, struct series *s)
{
	char err[256];
	struct store *st = open_store(path);
	assert_int_equal(store__commit(st, b, err, sizeof err), 0);
	store_batch__free(b);
	store__close(st);
	assert_int_equal(store_read__open(path, r, err, sizeof err), 0);
	*s = (struct series){0};
	assert_int_equal(store_read__series(*r, run, s, err, sizeof err), 0);
}

/* One run, one stream, `n` steps with 2 layers, an epoch and an end. */
static void fill_batch(struct store_batch *b, int64_t run, uint64_t stream, int n)
{
	struct store_run *r = STORE_BATCH_PUSH(b, runs);
	r->id = run;
	r->is_new = true;
	r->uid = strdup("uid-1");
	r->name = strdup("mnist");
	r->world_size = 1;
	r->time = 1000.0;
	r->labels = strdup("lr_high,init");
	struct store_stream *s = STORE_BATCH_PUSH(b, streams);
	s->id = stream;
	s->run = run;
	s->n_layers = 2;
	s->host = strdup("node1");
	s->time = 1000.0;

	struct store_chunk *c = STORE_BATCH_PUSH(b, chunks);
	c->run = run;
	c->stream = stream;
	c->n_layers = 2;
	c->first_step = 0;
	c->last_step = (uint64_t)(n - 1) * 10;
	c->cap = chunk__record_size(2) * (size_t)n;
	c->data = malloc(c->cap);
	for (int i = 0; i < n; i++) {
		float stats[32];
		for (int k = 0; k < 32; k++)
			stats[k] = (float)(i * 100 + k);
		stats[5] = NAN;
		Dnnfault__Step st = DNNFAULT__STEP__INIT;
		st.step = (uint64_t)i * 10;
		st.has_loss = 1;
		st.loss = i == 1 ? INFINITY : 2.5 - i;
		st.has_lr = 1;
		st.lr = 0.1;
		st.n_layer_stats = 32;
		st.layer_stats = stats;
		c->len += chunk__write_record(&st, c->data + c->len);
		c->n_steps++;
	}
	struct store_run_update *ru = STORE_BATCH_PUSH(b, run_updates);
	ru->run = run;
	ru->updated = 1010.0;
	ru->has_step = true;
	ru->last_step = c->last_step;
	ru->n_steps = (uint64_t)n;
	struct store_stream_update *su = STORE_BATCH_PUSH(b, stream_updates);
	su->stream = stream;
	su->last_seq = (uint64_t)n + 1;
	su->updated = 1010.0;
}

static int count_run(int64_t id, const char *uid, uint32_t ws, void *arg)
{
	(void)id;
	(void)ws;
	assert_string_equal(uid, "uid-1");
	(*(int *)arg)++;
	return 0;
}

static int check_stream(const struct store_stream_state *x, void *arg)
{
	assert_int_equal(x->id, 0xfedcba9876543210ULL);
	assert_int_equal(x->last_seq, 6);
	assert_int_equal(x->n_layers, 2);
	(*(int *)arg) += 100;
	return 0;
}

static void commit_load_read(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	const uint64_t stream = 0xfedcba9876543210ULL;	/* above INT64_MAX on purpose */
	fill_batch(&b, 1, stream, 5);
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	store_batch__free(&b);
	store__close(s);

	/* After a restart the daemon finds the run and the stream's watermark. */
	s = open_store(f->path);
	int seen = 0;
	int64_t max_id;
	assert_int_equal(store__load(s, count_run, check_stream, &seen, &max_id), 0);
	assert_int_equal(seen, 101);
	assert_int_equal(max_id, 1);
	store__close(s);

	struct store_reader *r;
	assert_int_equal(store_read__open(f->path, &r, err, sizeof err), 0);
	struct store_read_opts o = {.now = 1020.0, .stale_after = 300};
	Dnnfault__StatusResponse *st;
	assert_int_equal(store_read__status(r, NULL, 0, 0, &o, &st, err, sizeof err), 0);
	assert_int_equal(st->n_runs, 1);
	assert_string_equal(st->runs[0]->id, "uid-1");
	assert_string_equal(st->runs[0]->name, "mnist");
	assert_string_equal(st->runs[0]->state, "running");
	assert_string_equal(st->runs[0]->health, "unknown");
	assert_int_equal(st->runs[0]->n_causes, 0);
	assert_int_equal(st->runs[0]->step, 40);
	assert_int_equal(st->runs[0]->steps_stored, 5);
	assert_int_equal(st->runs[0]->n_labels, 2);
	assert_string_equal(st->runs[0]->labels[1], "init");
	protobuf_c_message_free_unpacked(&st->base, NULL);

	/* Stale once nothing arrived for stale_after seconds. */
	o.now = 5000.0;
	assert_int_equal(store_read__status(r, NULL, 0, 0, &o, &st, err, sizeof err), 0);
	assert_string_equal(st->runs[0]->state, "stale");
	protobuf_c_message_free_unpacked(&st->base, NULL);

	int64_t id;
	assert_int_equal(store_read__resolve(r, "mnist", &id, err, sizeof err), 0);
	assert_int_equal(id, 1);
	assert_int_equal(store_read__resolve(r, "nope", &id, err, sizeof err),
			 DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN);

	struct store_cursor cur = {.run = 1, .rank = -1, .first_step = -1, .rowid = -1};
	Dnnfault__ExportChunk *x;
	assert_int_equal(store_read__export_page(r, &cur, 1 << 20, &x, err, sizeof err), 0);
	assert_true(cur.done);
	assert_int_equal(x->n_steps, 5);
	assert_int_equal(x->steps[0]->stream, stream);
	assert_int_equal(x->steps[3]->step, 30);
	assert_true(isinf(x->steps[1]->loss));
	assert_true(x->steps[2]->loss == 0.5);
	assert_false(x->steps[2]->has_accuracy);
	assert_int_equal(x->steps[4]->n_layer_stats, 32);
	assert_true(isnan(x->steps[4]->layer_stats[5]));
	assert_true(x->steps[4]->layer_stats[31] == 431.0f);
	protobuf_c_message_free_unpacked(&x->base, NULL);
	store_read__close(r);
}

static void failed_commit_stores_nothing(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	fill_batch(&b, 1, 42, 3);
	/* A chunk of a run that does not exist violates the foreign key. */
	struct store_chunk *bad = STORE_BATCH_PUSH(&b, chunks);
	bad->run = 999;
	bad->stream = 42;
	bad->data = malloc(1);
	bad->len = 1;
	assert_int_equal(store__commit(s, &b, err, sizeof err), -EIO);
	assert_true(strlen(err) > 0);
	store_batch__free(&b);
	/* The writer is usable afterwards. */
	fill_batch(&b, 1, 42, 2);
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	store_batch__free(&b);
	store__close(s);

	sqlite3 *db;
	sqlite3_open(f->path, &db);
	sqlite3_stmt *st;
	sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM runs), (SELECT sum(n_steps) FROM step_chunks)",
			   -1, &st, NULL);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	assert_int_equal(sqlite3_column_int(st, 1), 2);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void run_end_and_prune(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	fill_batch(&b, 1, 42, 2);
	struct store_event *e = STORE_BATCH_PUSH(&b, ends);
	e->run = 1;
	e->stream = 42;
	e->number = DNNFAULT__END_STATUS__END_CRASHED;
	e->time = 2000.0;
	e->message = malloc(1);
	e->message_len = 0;
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	store_batch__reset(&b);

	struct store_reader *r;
	assert_int_equal(store_read__open(f->path, &r, err, sizeof err), 0);
	struct store_read_opts o = {.now = 9999.0, .stale_after = 300};
	Dnnfault__StatusResponse *st;
	assert_int_equal(store_read__status(r, NULL, 0, 0, &o, &st, err, sizeof err), 0);
	assert_string_equal(st->runs[0]->state, "crashed");
	protobuf_c_message_free_unpacked(&st->base, NULL);

	/* Retention: runs whose last message arrived before the cut-off go,
	 * with their telemetry (this one's last update was at 1010). */
	b.prune_before = 1005.0;
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	assert_int_equal(b.n_pruned, 0);
	b.prune_before = 1015.0;
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	assert_int_equal(b.n_pruned, 1);
	assert_int_equal(b.pruned[0], 1);
	assert_int_equal(store_read__status(r, NULL, 0, 0, &o, &st, err, sizeof err), 0);
	assert_int_equal(st->n_runs, 0);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	store_read__close(r);
	store_batch__free(&b);
	store__close(s);
}

/* A run without telemetry; `reference` NULL for none. */
static void add_run(struct store_batch *b, int64_t id, const char *uid, const char *name,
		    const char *reference)
{
	struct store_run *r = STORE_BATCH_PUSH(b, runs);
	r->id = id;
	r->is_new = true;
	r->uid = strdup(uid);
	r->name = name ? strdup(name) : NULL;
	r->reference = reference ? strdup(reference) : NULL;
	r->world_size = 1;
	r->time = 1000.0 + (double)id;
}

/* store_read__reference's answer for `run`: the id, or -code. */
static int64_t reference_of(struct store_reader *r, int64_t run, char *err, size_t len)
{
	int64_t ref = -1;
	err[0] = '\0';
	int code = store_read__reference(r, run, &ref, err, len);
	if (code != 0) {
		assert_true(err[0] != '\0');
		return -code;
	}
	return ref;
}

static void references(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	add_run(&b, 1, "base-id", "baseline", NULL);
	add_run(&b, 2, "new-id", "new", "baseline");
	add_run(&b, 3, "self-id", "self", "self-id");
	add_run(&b, 4, "lost-id", "lost", "nowhere");
	add_run(&b, 5, "t1", "twin", NULL);
	add_run(&b, 6, "t2", "twin", NULL);
	add_run(&b, 7, "by-twin", NULL, "twin");
	add_run(&b, 8, "by-id", NULL, "t2");
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	store_batch__reset(&b);

	struct store_reader *r;
	assert_int_equal(store_read__open(f->path, &r, err, sizeof err), 0);
	assert_int_equal(reference_of(r, 1, err, sizeof err), 0);
	assert_int_equal(reference_of(r, 2, err, sizeof err), 1);
	assert_int_equal(reference_of(r, 3, err, sizeof err), 0);	/* itself: none */
	assert_int_equal(reference_of(r, 4, err, sizeof err), -DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN);
	assert_non_null(strstr(err, "'nowhere'"));
	assert_int_equal(reference_of(r, 7, err, sizeof err), -DNNFAULT__ERROR_CODE__ERR_AMBIGUOUS_RUN);
	assert_non_null(strstr(err, "twin"));
	assert_int_equal(reference_of(r, 8, err, sizeof err), 6);
	assert_int_equal(reference_of(r, 99, err, sizeof err), -DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN);

	/* The summary carries the reference as named, and none when there is none. */
	struct store_read_opts o = {.now = 2000.0, .stale_after = 300};
	Dnnfault__StatusResponse *st;
	assert_int_equal(store_read__status_of(r, 2, &o, &st, err, sizeof err), 0);
	assert_string_equal(st->runs[0]->reference, "baseline");
	protobuf_c_message_free_unpacked(&st->base, NULL);
	assert_int_equal(store_read__status_of(r, 1, &o, &st, err, sizeof err), 0);
	assert_null(st->runs[0]->reference);
	protobuf_c_message_free_unpacked(&st->base, NULL);

	/* Set and cleared afterwards; a further rank replaces it only by
	 * naming one. */
	struct store_reference *x = STORE_BATCH_PUSH(&b, references);
	x->run = 1;
	x->reference = strdup("new-id");
	x = STORE_BATCH_PUSH(&b, references);
	x->run = 2;
	x->reference = NULL;
	struct store_run *rank = STORE_BATCH_PUSH(&b, runs);
	rank->id = 8;
	rank->world_size = 2;
	rank->time = 1500.0;
	rank = STORE_BATCH_PUSH(&b, runs);
	rank->id = 3;
	rank->world_size = 2;
	rank->time = 1500.0;
	rank->reference = strdup("base-id");
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	assert_int_equal(reference_of(r, 1, err, sizeof err), 2);
	assert_int_equal(reference_of(r, 2, err, sizeof err), 0);
	assert_int_equal(reference_of(r, 8, err, sizeof err), 6);
	assert_int_equal(reference_of(r, 3, err, sizeof err), 1);
	store_read__close(r);
	store_batch__free(&b);
	store__close(s);
}

/* A database file removed under the writer: commits fail from then on
 * instead of going into a file nobody reads again. */
static void removed_file_stops_commits(void **state)
{
	struct fixture *f = *state;
	struct store *s = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	fill_batch(&b, 1, 42, 3);
	assert_int_equal(store__commit(s, &b, err, sizeof err), 0);
	store_batch__free(&b);
	char wal[300];
	snprintf(wal, sizeof wal, "%s-wal", f->path);
	assert_int_equal(unlink(f->path), 0);
	unlink(wal);
	fill_batch(&b, 2, 43, 3);
	assert_int_equal(store__commit(s, &b, err, sizeof err), -ESTALE);
	assert_non_null(strstr(err, "removed or replaced"));
	store_batch__free(&b);
	store__close(s);
}

static void newer_schema_refused(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	sqlite3_open(f->path, &db);
	sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL);
	sqlite3_close(db);
	struct store *s = NULL;
	char err[256];
	assert_int_not_equal(store__open(f->path, 1, &s, err, sizeof err), 0);
	assert_non_null(strstr(err, "newer"));
	assert_null(s);
}

/* A run of `n` steps of one layer, in chunks of 4 (so that a load reads
 * them in several pages, store_series.c), whose step i has an
 * infinite loss when loss_inf(i) and a layer that counted NaNs when
 * nan_count(i). */
static void add_long_run(struct store_batch *b, int64_t id, int n, bool (*loss_inf)(int),
			 bool (*nan_count)(int), bool (*skipped)(int))
{
	add_run(b, id, "long", "long", NULL);
	store_builder__one_layer_run(b, &b->runs[b->n_runs - 1], "long", 0);
	for (int first = 0; first < n; first += 4) {
		struct store_chunk *c = STORE_BATCH_PUSH(b, chunks);
		c->run = id;
		c->stream = (uint64_t)id;
		c->n_layers = 1;
		c->first_step = (uint64_t)first;
		c->cap = chunk__record_size(1) * 4;
		c->data = malloc(c->cap);
		for (int i = first; i < n && i < first + 4; i++) {
			float stats[CHUNK_STATS_PER_LAYER] = {0};
			stats[DNNFAULT__LAYER_STAT__NAN_COUNT] = nan_count(i) ? 3.0f : 0.0f;
			if (skipped != NULL && skipped(i)) {
				/* An overflow the loop skipped (skipped_steps.h). */
				stats[DNNFAULT__LAYER_STAT__GRAD_NORM] = INFINITY;
				stats[DNNFAULT__LAYER_STAT__INF_COUNT] = 5.0f;
			}
			Dnnfault__Step m = DNNFAULT__STEP__INIT;
			m.step = (uint64_t)i;
			m.has_loss = 1;
			m.loss = loss_inf(i) ? INFINITY : 1.0;
			m.n_layer_stats = CHUNK_STATS_PER_LAYER;
			m.layer_stats = stats;
			c->len += chunk__write_record(&m, c->data + c->len);
			c->n_steps++;
			c->last_step = (uint64_t)i;
		}
	}
}

static bool inf_at_1_and_600(int i)
{
	return i == 1 || i == 600;
}

static bool nan_at_537_and_from_900(int i)
{
	return i == 537 || i >= 900;
}

/* The steps store_read__series loads of run 1 with at most `max` samples. */
static struct series load_thinned(const char *path, size_t max)
{
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_read__open(path, &r, err, sizeof err), 0);
	store_read__set_max_samples(r, max);
	struct series s = {0};
	if (store_read__series(r, 1, &s, err, sizeof err) != 0)
		fail_msg("series: %s", err);
	store_read__close(r);
	return s;
}

static bool has_step(const struct series *s, uint64_t step)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->step[i] == step)
			return true;
	return false;
}

/* An analysis of a long run reads a bounded, evenly thinned view of it,
 * which keeps the first and last samples and every NaN/Inf onset. */
static void long_run_is_thinned(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	add_long_run(&b, 1, 1000, inf_at_1_and_600, nan_at_537_and_from_900, NULL);
	assert_int_equal(store__commit(st, &b, err, sizeof err), 0);
	store_batch__free(&b);
	store__close(st);

	struct series all = load_thinned(f->path, 0), fits = load_thinned(f->path, 1000);
	assert_int_equal(all.n, 1000);
	assert_int_equal(fits.n, 1000);
	for (size_t i = 0; i < all.n; i++)
		assert_int_equal(all.step[i], i);
	series__free(&all);
	series__free(&fits);

	/* 100: every 11th of steps 0..998 (91), the last, and step 1's Inf in
	 * the first bucket beside step 0. */
	struct series s = load_thinned(f->path, 100);
	assert_int_equal(s.n, 93);
	assert_true(s.cap <= 100);	/* the bound holds for the memory too */
	assert_int_equal(s.step[0], 0);
	assert_int_equal(s.step[1], 1);
	assert_int_equal(s.step[2], 11);
	assert_int_equal(s.step[s.n - 1], 999);
	for (size_t i = 1; i < s.n; i++)
		assert_true(s.step[i] > s.step[i - 1]);
	/* 537, 600 and 900 (the NaNs' onset) replace their buckets' first
	 * samples (528, 594, 891); the buckets after it start with NaNs and
	 * keep their first. */
	assert_true(has_step(&s, 537) && !has_step(&s, 528));
	assert_true(has_step(&s, 600) && !has_step(&s, 594));
	assert_true(has_step(&s, 900) && !has_step(&s, 891));
	assert_true(has_step(&s, 902) && has_step(&s, 990));
	series__free(&s);

	/* The smallest bound still keeps the ends and the first Inf. */
	s = load_thinned(f->path, 1);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.step[0], 0);
	assert_int_equal(s.step[1], 1);
	assert_int_equal(s.step[2], 999);
	series__free(&s);
}

static bool never(int i)
{
	(void)i;
	return false;
}

static bool skipped_at_300_and_301(int i)
{
	return i == 300 || i == 301;
}

/* Overflow steps that the training loop skipped are left out of the
 * analysis's view, and the thinning does not take them for NaN onsets. */
static void skipped_steps_are_left_out(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	add_long_run(&b, 1, 1000, never, never, skipped_at_300_and_301);
	assert_int_equal(store__commit(st, &b, err, sizeof err), 0);
	store_batch__free(&b);
	store__close(st);

	struct series s = load_thinned(f->path, 0);
	assert_int_equal(s.n, 998);
	assert_int_equal(s.n_skipped, 2);
	assert_int_equal(s.n_stored, 1000);
	assert_int_equal(s.last_step, 999);
	assert_true(has_step(&s, 299) && !has_step(&s, 300) && !has_step(&s, 301) && has_step(&s, 302));
	series__free(&s);
	/* Thinned to every 11th: 297 starts the bucket of 300 and stays. */
	s = load_thinned(f->path, 100);
	assert_int_equal(s.n, 92);
	assert_int_equal(s.n_skipped, 0);
	assert_true(has_step(&s, 297) && !has_step(&s, 300));
	series__free(&s);
}

/* Run `id` with three layers, stem frozen when `frozen` is 1 (all three
 * when 3), 10 steps whose weight norm is 10 * layer + step. */
/* A layer's statistics at a step when it had no gradient and no update:
 * frozen then. */
static void no_gradient(float *x)
{
	for (int k = DNNFAULT__LAYER_STAT__GRAD_NORM; k <= DNNFAULT__LAYER_STAT__UPDATE_RATIO; k++)
		x[k] = NAN;
}

/* A run of three layers of 100 parameters, stem, fc and head (trainable
 * counts as given; -1: not given), and 10 steps: weight norms 10 x layer
 * + step, the other statistics 0, then `fill` changes what it wants. */
static void add_three_layer_run(struct store_batch *b, int64_t id, const char *name,
				const int trainable[3], void (*fill)(int step, float *stats, int arg), int arg)
{
	add_run(b, id, name, NULL, NULL);
	Dnnfault__Layer l[3] = {DNNFAULT__LAYER__INIT, DNNFAULT__LAYER__INIT, DNNFAULT__LAYER__INIT};
	Dnnfault__Layer *layers[] = {&l[0], &l[1], &l[2]};
	const char *names[] = {"stem", "fc", "head"};
	for (int k = 0; k < 3; k++) {
		l[k].name = (char *)names[k];
		l[k].has_param_count = 1;
		l[k].param_count = 100;
		l[k].has_trainable_count = trainable[k] >= 0;
		l[k].trainable_count = trainable[k] >= 0 ? (uint64_t)trainable[k] : 0;
	}
	store_builder__run(b, &b->runs[b->n_runs - 1], name, 0, layers, 3);
	struct store_chunk *c = STORE_BATCH_PUSH(b, chunks);
	c->run = id;
	c->stream = (uint64_t)id;
	c->n_layers = 3;
	c->cap = chunk__record_size(3) * 10;
	c->data = malloc(c->cap);
	for (int i = 0; i < 10; i++) {
		float stats[3 * CHUNK_STATS_PER_LAYER] = {0};
		for (int k = 0; k < 3; k++)
			stats[k * CHUNK_STATS_PER_LAYER + DNNFAULT__LAYER_STAT__WEIGHT_NORM] = (float)(10 * k + i);
		fill(i, stats, arg);
		Dnnfault__Step m = DNNFAULT__STEP__INIT;
		m.step = (uint64_t)i;
		m.n_layer_stats = 3 * CHUNK_STATS_PER_LAYER;
		m.layer_stats = stats;
		c->len += chunk__write_record(&m, c->data + c->len);
		c->n_steps++;
		c->last_step = (uint64_t)i;
	}
}

/* The first `frozen` layers frozen throughout, as the Python client sends
 * them. */
static void fill_frozen(int step, float *stats, int frozen)
{
	for (int k = 0; k < frozen; k++) {
		no_gradient(&stats[k * CHUNK_STATS_PER_LAYER]);
		/* A NaN in an output at one step does not make a layer trained. */
		if (step == 7)
			stats[k * CHUNK_STATS_PER_LAYER + DNNFAULT__LAYER_STAT__NAN_COUNT] = 1;
	}
}

static void add_frozen_run(struct store_batch *b, int64_t id, int frozen)
{
	/* head leaves its trainable count out (not known, not frozen), but
	 * in the run frozen whole */
	int trainable[3] = {frozen > 0 ? 0 : 100, frozen > 1 ? 0 : 100, frozen == 3 ? 0 : -1};
	add_three_layer_run(b, id, id == 1 ? "frozen" : "all-frozen", trainable, fill_frozen, frozen);
}

/* A frozen layer (parameters, none trainable) is left out of the
 * analysis's view, with its statistics; a model frozen whole is not. */
static void frozen_layers_are_left_out(void **state)
{
	struct fixture *f = *state;
	struct store_batch b = {0};
	char err[256];
	add_frozen_run(&b, 1, 1);
	add_frozen_run(&b, 2, 3);
	struct store_reader *r;
	struct series s;
	commit_then_load(f->path, &b, 1, &r, &s);
	assert_int_equal(s.n, 10);
	assert_int_equal(s.n_frozen, 1);
	assert_int_equal(s.n_layers, 2);
	assert_string_equal(s.layers[0].name, "fc");
	assert_string_equal(s.layers[1].name, "head");
	for (size_t i = 0; i < s.n; i++) {
		assert_true(series__stat(&s, i, 0, DNNFAULT__LAYER_STAT__WEIGHT_NORM) == (float)(10 + i));
		assert_true(series__stat(&s, i, 1, DNNFAULT__LAYER_STAT__WEIGHT_NORM) == (float)(20 + i));
	}
	series__free(&s);
	assert_int_equal(store_read__series(r, 2, &s, err, sizeof err), 0);
	assert_int_equal(s.n_frozen, 0);
	assert_int_equal(s.n_frozen_samples, 0);	/* nothing trains: nothing to take */
	assert_int_equal(s.n_layers, 3);
	assert_true(s.layers[0].frozen && s.layers[2].frozen);
	assert_true(series__stat(&s, 9, 2, DNNFAULT__LAYER_STAT__WEIGHT_NORM) == 29.0f);
	series__free(&s);
	store_read__close(r);
}

/* The stem frozen until step 5, fc from step 5 on (a NaN it counted at
 * step 7), head never sending a gradient; the others train. */
static void fill_unfreezing(int i, float *stats, int arg)
{
	(void)arg;
	for (int k = 0; k < 3; k++) {
		stats[k * CHUNK_STATS_PER_LAYER + DNNFAULT__LAYER_STAT__GRAD_NORM] = 0.5f;
		stats[k * CHUNK_STATS_PER_LAYER + DNNFAULT__LAYER_STAT__UPDATE_RATIO] = 1e-3f;
	}
	no_gradient(&stats[(i < 5 ? 0 : 1) * CHUNK_STATS_PER_LAYER]);
	if (i == 7)	/* a NaN it counted is for the detectors to see */
		stats[CHUNK_STATS_PER_LAYER + DNNFAULT__LAYER_STAT__NAN_COUNT] = 1;
	no_gradient(&stats[2 * CHUNK_STATS_PER_LAYER]);
}

/* Layers frozen at some steps only: the stem frozen when the run starts
 * and unfrozen at step 5, fc frozen from step 5 on, and head, whose client
 * never sends a gradient. The analysis sees each layer while it trains. */
static void layers_frozen_part_way_are_left_out_then(void **state)
{
	struct fixture *f = *state;
	struct store_batch b = {0};
	add_three_layer_run(&b, 1, "unfreezing", (const int[3]){0, 100, 100}, fill_unfreezing, 0);
	struct store_reader *r;
	struct series s;
	commit_then_load(f->path, &b, 1, &r, &s);
	assert_int_equal(s.n, 10);
	assert_int_equal(s.n_frozen, 0);	/* the stem trained later: kept */
	assert_int_equal(s.n_layers, 3);
	assert_int_equal(s.n_frozen_samples, 5 + 4);
	for (size_t i = 0; i < s.n; i++) {
		float stem = series__stat(&s, i, 0, DNNFAULT__LAYER_STAT__WEIGHT_NORM);
		float fc = series__stat(&s, i, 1, DNNFAULT__LAYER_STAT__WEIGHT_NORM);
		float head = series__stat(&s, i, 2, DNNFAULT__LAYER_STAT__WEIGHT_NORM);
		if (i < 5)
			assert_true(isnan(stem) && isnan(series__stat(&s, i, 0, DNNFAULT__LAYER_STAT__ACT_MEAN)));
		else
			assert_true(stem == (float)i);
		if (i < 5 || i == 7)
			assert_true(fc == (float)(10 + i));
		else
			assert_true(isnan(fc) && isnan(series__stat(&s, i, 1, DNNFAULT__LAYER_STAT__NAN_COUNT)));
		assert_true(head == (float)(20 + i));
	}
	series__free(&s);
	store_read__close(r);
}

/* Steps of run 1 as export pages of at most `max_bytes` deliver them; the
 * number of pages in *pages. */
static int export_steps(const char *path, size_t max_bytes, uint64_t *steps, int cap, int *pages)
{
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_read__open(path, &r, err, sizeof err), 0);
	struct store_cursor cur = {.run = 1, .rank = -1, .first_step = -1, .rowid = -1};
	int n = 0;
	for (*pages = 0; !cur.done; (*pages)++) {
		Dnnfault__ExportChunk *x;
		assert_int_equal(store_read__export_page(r, &cur, max_bytes, &x, err, sizeof err), 0);
		for (size_t i = 0; i < x->n_steps; i++) {
			assert_true(n < cap);
			steps[n++] = x->steps[i]->step;
		}
		protobuf_c_message_free_unpacked(&x->base, NULL);
		assert_true(*pages < 10000);
	}
	store_read__close(r);
	return n;
}

/* An export of more chunks than one page considers (store_read.c): every
 * step once, in order, whatever the page's size in bytes. */
static void export_pages_cover_a_long_run(void **state)
{
	struct fixture *f = *state;
	struct store *st = open_store(f->path);
	struct store_batch b = {0};
	char err[256];
	add_long_run(&b, 1, 1100, inf_at_1_and_600, nan_at_537_and_from_900, NULL);	/* 275 chunks */
	assert_int_equal(store__commit(st, &b, err, sizeof err), 0);
	store_batch__free(&b);
	store__close(st);
	static uint64_t steps[1200];
	const size_t sizes[] = {1 << 20, 1, 3000};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		int pages;
		assert_int_equal(export_steps(f->path, sizes[k], steps, 1200, &pages), 1100);
		for (int i = 0; i < 1100; i++)
			assert_int_equal(steps[i], i);
		assert_true(pages >= 2);	/* 256 chunks at most per page */
		if (sizes[k] == 1)
			assert_true(pages >= 275);	/* one chunk per page */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(commit_load_read, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_commit_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(run_end_and_prune, setup, teardown),
		cmocka_unit_test_setup_teardown(references, setup, teardown),
		cmocka_unit_test_setup_teardown(newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(removed_file_stops_commits, setup, teardown),
		cmocka_unit_test_setup_teardown(long_run_is_thinned, setup, teardown),
		cmocka_unit_test_setup_teardown(skipped_steps_are_left_out, setup, teardown),
		cmocka_unit_test_setup_teardown(frozen_layers_are_left_out, setup, teardown),
		cmocka_unit_test_setup_teardown(layers_frozen_part_way_are_left_out_then, setup, teardown),
		cmocka_unit_test_setup_teardown(export_pages_cover_a_long_run, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
