#include "store_read.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "chunk.h"
#include "series.h"
#include "store.h"

#define NO_SUCH_RUN DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN
#define INTERNAL DNNFAULT__ERROR_CODE__ERR_INTERNAL

struct store_reader {
	sqlite3 *db;
	size_t max_samples;	/* 0: no bound */
};

int store_read__open(const char *path, struct store_reader **out, char *err, size_t err_len)
{
	struct store_reader *r = calloc(1, sizeof *r);
	if (r == NULL)
		return -ENOMEM;
	r->max_samples = STORE_READ_MAX_SAMPLES;
	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, err_len, "%s", r->db ? sqlite3_errmsg(r->db) : "out of memory");
		store_read__close(r);
		return -EIO;
	}
	sqlite3_busy_timeout(r->db, 5000);
	*out = r;
	return 0;
}

void store_read__close(struct store_reader *r)
{
	if (r == NULL)
		return;
	sqlite3_close(r->db);
	free(r);
}

static char *dup_col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? strdup((const char *)t) : NULL;
}

static int fail(sqlite3 *db, char *err, size_t len)
{
	snprintf(err, len, "store: %s", sqlite3_errmsg(db));
	return INTERNAL;
}

int store_read__resolve(struct store_reader *r, const char *run, int64_t *id, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db,
			       "SELECT id, uid FROM runs WHERE uid = ?1 UNION ALL"
			       " SELECT id, uid FROM runs WHERE name = ?1 AND uid <> ?1"
			       " ORDER BY 1 DESC LIMIT 6", -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
	int n = 0;
	char ids[512] = "";
	int exact = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *uid = (const char *)sqlite3_column_text(st, 1);
		if (strcmp(uid, run) == 0) {
			*id = sqlite3_column_int64(st, 0);
			exact = 1;
			break;
		}
		if (n++ == 0)
			*id = sqlite3_column_int64(st, 0);
		size_t used = strlen(ids);
		snprintf(ids + used, sizeof ids - used, "%s%s", used ? ", " : "", uid);
	}
	sqlite3_finalize(st);
	if (exact || n == 1)
		return 0;
	if (n == 0) {
		snprintf(err, len, "no run named or with id '%s'", run);
		return NO_SUCH_RUN;
	}
	snprintf(err, len, "several runs are named '%s'; use an id: %s%s", run, ids, n > 5 ? ", ..." : "");
	return DNNFAULT__ERROR_CODE__ERR_AMBIGUOUS_RUN;
}

int store_read__reference(struct store_reader *r, int64_t run, int64_t *ref, char *err, size_t len)
{
	sqlite3_stmt *st;
	*ref = 0;
	if (sqlite3_prepare_v2(r->db, "SELECT reference FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, run);
	int rc = sqlite3_step(st);
	char *name = rc == SQLITE_ROW ? dup_col(st, 0) : NULL;
	int rv = 0;
	if (rc == SQLITE_DONE) {
		snprintf(err, len, "run %lld is gone", (long long)run);
		rv = NO_SUCH_RUN;
	} else if (rc != SQLITE_ROW) {
		rv = fail(r->db, err, len);
	} else if (name == NULL && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		snprintf(err, len, "out of memory");
		rv = INTERNAL;
	}
	sqlite3_finalize(st);
	if (rv != 0 || name == NULL || *name == '\0') {
		free(name);
		return rv;
	}
	int64_t id = 0;
	char why[512] = "";
	rv = store_read__resolve(r, name, &id, why, sizeof why);
	if (rv == NO_SUCH_RUN)
		snprintf(err, len, "reference run '%s' is not in the store", name);
	else if (rv != 0)
		snprintf(err, len, "reference run: %.400s", why);
	else if (id != run)
		*ref = id;
	free(name);
	return rv;
}

static const char *state_name(sqlite3_stmt *st, int col, double updated, const struct store_read_opts *o)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return o->now - updated > o->stale_after ? "stale" : "running";
	switch (sqlite3_column_int(st, col)) {
	case DNNFAULT__END_STATUS__END_COMPLETED: return "completed";
	case DNNFAULT__END_STATUS__END_CRASHED: return "crashed";
	case DNNFAULT__END_STATUS__END_INTERRUPTED: return "interrupted";
	default: return "unknown";
	}
}

static char **split_labels(const char *s, size_t *n)
{
	*n = 0;
	if (s == NULL || *s == '\0')
		return NULL;
	size_t cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	char **out = calloc(cap, sizeof *out);
	char *copy = strdup(s);
	if (out == NULL || copy == NULL) {
		free(out);
		free(copy);
		return NULL;
	}
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		out[(*n)++] = strdup(tok);
	free(copy);
	return out;
}

#define SUMMARY_COLUMNS                                                              \
	"id, uid, name, world_size, started, updated, last_step, steps_stored, dropped," \
	" end_status, labels, (SELECT count(DISTINCT rank) FROM streams WHERE run = runs.id),"      \
	" (SELECT message FROM diagnoses WHERE run = runs.id ORDER BY id DESC LIMIT 1), reference"
#define SUMMARY_N_COLUMNS 14

/* Fills health, symptoms and causes from the newest stored diagnosis; a run
 * not analysed yet is "unknown", not guessed. */
static void take_diagnosis(Dnnfault__RunSummary *s, sqlite3_stmt *st, int col)
{
	Dnnfault__Diagnosis *d = NULL;
	if (sqlite3_column_type(st, col) == SQLITE_BLOB)
		d = dnnfault__diagnosis__unpack(NULL, (size_t)sqlite3_column_bytes(st, col),
						sqlite3_column_blob(st, col));
	s->health = strdup(d != NULL && d->health != NULL ? d->health : "unknown");
	if (d == NULL)
		return;
	s->has_diagnosed_step = d->has_step;
	s->diagnosed_step = d->step;
	s->has_fault_probability = d->has_fault_probability;
	s->fault_probability = d->fault_probability;
	s->has_shortfall = d->has_shortfall;
	s->shortfall = d->shortfall;
	/* The summary takes over the diagnosis' arrays. */
	s->n_symptoms = d->n_symptoms;
	s->symptoms = d->symptoms;
	s->n_causes = d->n_causes;
	s->causes = d->causes;
	d->n_symptoms = d->n_causes = 0;
	d->symptoms = NULL;
	d->causes = NULL;
	protobuf_c_message_free_unpacked(&d->base, NULL);
}

/* Builds a summary from a row of SUMMARY_COLUMNS. */
static Dnnfault__RunSummary *summary_from_row(sqlite3_stmt *st, const struct store_read_opts *o)
{
	Dnnfault__RunSummary *s = malloc(sizeof *s);
	if (s == NULL)
		return NULL;
	dnnfault__run_summary__init(s);
	double updated = sqlite3_column_double(st, 5);
	s->id = dup_col(st, 1);
	s->name = dup_col(st, 2);
	s->has_world_size = s->has_started = s->has_updated = s->has_steps_stored = 1;
	s->has_dropped = s->has_ranks = 1;
	s->world_size = (uint32_t)sqlite3_column_int64(st, 3);
	s->started = sqlite3_column_double(st, 4);
	s->updated = updated;
	if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
		s->has_step = 1;
		s->step = (uint64_t)sqlite3_column_int64(st, 6);
	}
	s->steps_stored = (uint64_t)sqlite3_column_int64(st, 7);
	s->dropped = (uint64_t)sqlite3_column_int64(st, 8);
	s->state = strdup(state_name(st, 9, updated, o));
	take_diagnosis(s, st, 12);
	s->has_labels_known = 1;
	s->labels_known = sqlite3_column_type(st, 10) != SQLITE_NULL;
	s->labels = split_labels((const char *)sqlite3_column_text(st, 10), &s->n_labels);
	s->ranks = (uint32_t)sqlite3_column_int64(st, 11);
	s->reference = dup_col(st, 13);
	return s;
}

static int push_summary(Dnnfault__StatusResponse *resp, Dnnfault__RunSummary *s)
{
	Dnnfault__RunSummary **p = realloc(resp->runs, (resp->n_runs + 1) * sizeof *p);
	if (p == NULL)
		return -ENOMEM;
	resp->runs = p;
	resp->runs[resp->n_runs++] = s;
	return 0;
}

int store_read__status(struct store_reader *r, char *const *runs, size_t n, uint32_t limit,
		       const struct store_read_opts *o, Dnnfault__StatusResponse **out,
		       char *err, size_t len)
{
	Dnnfault__StatusResponse *resp = malloc(sizeof *resp);
	sqlite3_stmt *st = NULL;
	int rv = 0;
	if (resp == NULL)
		return INTERNAL;
	dnnfault__status_response__init(resp);
	/* The runs answered so far: a run named twice (or by name and id) is
	 * answered once. */
	int64_t *seen = n > 0 ? malloc(n * sizeof *seen) : NULL;
	size_t n_seen = 0;
	if (n > 0 && seen == NULL) {
		snprintf(err, len, "out of memory");
		rv = INTERNAL;
		goto out;
	}
	const char *sql = n == 0 ? "SELECT " SUMMARY_COLUMNS " FROM runs ORDER BY updated DESC LIMIT ?1"
				 : "SELECT " SUMMARY_COLUMNS " FROM runs WHERE id = ?1";
	if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK) {
		rv = fail(r->db, err, len);
		goto out;
	}
	for (size_t i = 0; i < (n == 0 ? 1 : n) && rv == 0; i++) {
		if (n == 0) {
			sqlite3_bind_int64(st, 1, limit ? (int64_t)limit : -1);
		} else {
			int64_t id;
			if ((rv = store_read__resolve(r, runs[i], &id, err, len)) != 0)
				break;
			size_t k = 0;
			while (k < n_seen && seen[k] != id)
				k++;
			if (k < n_seen)
				continue;
			seen[n_seen++] = id;
			sqlite3_bind_int64(st, 1, id);
		}
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			Dnnfault__RunSummary *s = summary_from_row(st, o);
			if (s == NULL || push_summary(resp, s) != 0) {
				if (s != NULL)
					protobuf_c_message_free_unpacked(&s->base, NULL);
				rv = INTERNAL;
				snprintf(err, len, "out of memory");
				break;
			}
		}
		if (rc != SQLITE_DONE && rv == 0)
			rv = fail(r->db, err, len);
		sqlite3_reset(st);
	}
out:
	sqlite3_finalize(st);
	free(seen);
	if (rv != 0) {
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		return rv;
	}
	*out = resp;
	return 0;
}

/* Appends an unpacked message (epoch or run end) from a BLOB column. */
static void *unpack_col(const ProtobufCMessageDescriptor *d, sqlite3_stmt *st, int col)
{
	return protobuf_c_message_unpack(d, NULL, (size_t)sqlite3_column_bytes(st, col),
					 sqlite3_column_blob(st, col));
}

static int detail_streams(sqlite3 *db, int64_t id, Dnnfault__RunDetail *d)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT id, rank, host, pid, last_seq, started, updated, end_status"
			       " FROM streams WHERE run = ?1 ORDER BY rank, started", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	while (sqlite3_step(st) == SQLITE_ROW) {
		Dnnfault__StreamInfo *x = malloc(sizeof *x);
		Dnnfault__StreamInfo **p = realloc(d->streams, (d->n_streams + 1) * sizeof *p);
		if (x == NULL || p == NULL) {
			free(x);
			if (p != NULL)
				d->streams = p;
			break;
		}
		d->streams = p;
		dnnfault__stream_info__init(x);
		x->stream = (uint64_t)sqlite3_column_int64(st, 0);
		x->has_rank = x->has_pid = x->has_last_seq = x->has_started = x->has_updated = 1;
		x->rank = (uint32_t)sqlite3_column_int64(st, 1);
		x->host = dup_col(st, 2);
		x->pid = (uint32_t)sqlite3_column_int64(st, 3);
		x->last_seq = (uint64_t)sqlite3_column_int64(st, 4);
		x->started = sqlite3_column_double(st, 5);
		x->updated = sqlite3_column_double(st, 6);
		if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
			x->has_end_status = 1;
			x->end_status = sqlite3_column_int(st, 7);
		}
		d->streams[d->n_streams++] = x;
	}
	sqlite3_finalize(st);
	return 0;
}

static int detail_epochs(sqlite3 *db, int64_t id, Dnnfault__RunDetail *d)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT message FROM epochs WHERE run = ?1 ORDER BY epoch, rowid",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	while (sqlite3_step(st) == SQLITE_ROW) {
		Dnnfault__Epoch *e = unpack_col(&dnnfault__epoch__descriptor, st, 0);
		Dnnfault__Epoch **p = e ? realloc(d->epochs, (d->n_epochs + 1) * sizeof *p) : NULL;
		if (p == NULL) {
			if (e != NULL)
				protobuf_c_message_free_unpacked(&e->base, NULL);
			continue;
		}
		d->epochs = p;
		d->epochs[d->n_epochs++] = e;
	}
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db, "SELECT message FROM run_ends WHERE run = ?1"
			       /* the same precedence as the run's state: crashed, interrupted, completed */
			       " ORDER BY CASE status WHEN 2 THEN 3 WHEN 3 THEN 2 ELSE 1 END DESC LIMIT 1",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) == SQLITE_ROW)
		d->end = unpack_col(&dnnfault__run_end__descriptor, st, 0);
	sqlite3_finalize(st);
	return 0;
}

int store_read__detail(struct store_reader *r, int64_t id, const struct store_read_opts *o,
		       Dnnfault__RunDetail **out, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT " SUMMARY_COLUMNS ", description FROM runs WHERE id = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		snprintf(err, len, "run %lld is gone", (long long)id);
		return NO_SUCH_RUN;
	}
	Dnnfault__RunDetail *d = malloc(sizeof *d);
	if (d == NULL) {
		sqlite3_finalize(st);
		return INTERNAL;
	}
	dnnfault__run_detail__init(d);
	d->summary = summary_from_row(st, o);
	if (sqlite3_column_type(st, SUMMARY_N_COLUMNS) == SQLITE_BLOB)
		d->description = unpack_col(&dnnfault__run_start__descriptor, st, SUMMARY_N_COLUMNS);
	sqlite3_finalize(st);
	if (d->summary == NULL || detail_streams(r->db, id, d) != 0 || detail_epochs(r->db, id, d) != 0) {
		protobuf_c_message_free_unpacked(&d->base, NULL);
		return fail(r->db, err, len);
	}
	*out = d;
	return 0;
}

/* Decodes the records of one chunk into Step messages appended to `c`. */
static int append_chunk(Dnnfault__ExportChunk *c, uint64_t stream, const uint8_t *data, size_t len,
			size_t n_steps)
{
	Dnnfault__Step **p = realloc(c->steps, (c->n_steps + n_steps) * sizeof *p);
	if (p == NULL)
		return -ENOMEM;
	c->steps = p;
	size_t off = 0;
	for (size_t i = 0; i < n_steps; i++) {
		Dnnfault__Step *s = malloc(sizeof *s);
		if (s == NULL)
			return -ENOMEM;
		dnnfault__step__init(s);
		uint32_t n_layers;
		if (len - off < CHUNK_RECORD_HEADER) {
			free(s);
			return -EIO;
		}
		memcpy(&n_layers, data + off + 20, 4);
		float *stats = malloc(chunk__record_size(n_layers) + 1);
		size_t used = stats ? chunk__read_record(data + off, len - off, s, stats, n_layers) : 0;
		if (used == 0) {
			free(stats);
			free(s);
			return -EIO;
		}
		if (s->n_layer_stats == 0) {
			free(stats);
			s->layer_stats = NULL;
		}
		s->seq = 0;
		s->stream = stream;
		c->steps[c->n_steps++] = s;
		off += used;
	}
	return 0;
}

/* Chunks one export page considers at most. */
#define EXPORT_PAGE_CHUNKS 256

int store_read__export_page(struct store_reader *r, struct store_cursor *cur, size_t max_bytes,
			    Dnnfault__ExportChunk **out, char *err, size_t len)
{
	/* The order needs a sort (rank comes from the join); sorting only the
	 * keys of the next EXPORT_PAGE_CHUNKS chunks (a top-K sort) and then
	 * fetching their data by rowid keeps each page's cost near its size.
	 * Sorting whole rows, data included, for every page made an export
	 * quadratic in the run's bytes (27 s for 130 MB, docs/benchmarks.md). */
	sqlite3_stmt *keys, *data;
	if (sqlite3_prepare_v2(r->db,
			       "SELECT c.rowid, s.rank, c.first_step FROM step_chunks c JOIN streams s ON s.id = c.stream"
			       " WHERE c.run = ?1 AND (s.rank, c.first_step, c.rowid) > (?2, ?3, ?4)"
			       " ORDER BY s.rank, c.first_step, c.rowid LIMIT ?5", -1, &keys, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	if (sqlite3_prepare_v2(r->db, "SELECT stream, n_steps, data FROM step_chunks WHERE rowid = ?1", -1,
			       &data, NULL) != SQLITE_OK) {
		sqlite3_finalize(keys);
		return fail(r->db, err, len);
	}
	sqlite3_bind_int64(keys, 1, cur->run);
	sqlite3_bind_int64(keys, 2, cur->rank);
	sqlite3_bind_int64(keys, 3, cur->first_step);
	sqlite3_bind_int64(keys, 4, cur->rowid);
	sqlite3_bind_int(keys, 5, EXPORT_PAGE_CHUNKS);
	Dnnfault__ExportChunk *c = malloc(sizeof *c);
	if (c == NULL) {
		sqlite3_finalize(keys);
		sqlite3_finalize(data);
		return INTERNAL;
	}
	dnnfault__export_chunk__init(c);
	size_t bytes = 0;
	int rows = 0, rc = SQLITE_DONE, code = 0;
	while (code == 0 && bytes < max_bytes && (rc = sqlite3_step(keys)) == SQLITE_ROW) {
		rows++;
		int64_t rowid = sqlite3_column_int64(keys, 0);
		sqlite3_bind_int64(data, 1, rowid);
		if (sqlite3_step(data) != SQLITE_ROW) {
			code = fail(r->db, err, len);
			break;
		}
		size_t n = (size_t)sqlite3_column_bytes(data, 2);
		if (append_chunk(c, (uint64_t)sqlite3_column_int64(data, 0), sqlite3_column_blob(data, 2), n,
				 (size_t)sqlite3_column_int64(data, 1)) != 0) {
			snprintf(err, len, "corrupt or unreadable step chunk %lld", (long long)rowid);
			code = INTERNAL;
			break;
		}
		sqlite3_reset(data);
		cur->rank = sqlite3_column_int64(keys, 1);
		cur->first_step = sqlite3_column_int64(keys, 2);
		cur->rowid = rowid;
		bytes += n;
	}
	if (code == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
		code = fail(r->db, err, len);
	/* The last page: the keys ran out before the page's limits did. */
	if (code == 0 && rc == SQLITE_DONE && rows < EXPORT_PAGE_CHUNKS)
		cur->done = 1;
	sqlite3_finalize(keys);
	sqlite3_finalize(data);
	if (code != 0) {
		protobuf_c_message_free_unpacked(&c->base, NULL);
		return code;
	}
	*out = c;
	return 0;
}

/* The static part of a series: layers and configuration from the RunStart. */
static double optimizer_param(const Dnnfault__RunStart *m, const char *key)
{
	for (size_t i = 0; i < m->n_optimizer_params; i++)
		if (strcmp(m->optimizer_params[i]->key, key) == 0 && m->optimizer_params[i]->has_number)
			return m->optimizer_params[i]->number;
	return NAN;
}

/* Inputs per output unit of the layer's first parameter of two or more
 * dimensions (a Linear or Conv weight: all dimensions but the first). */
static uint64_t fan_in(const Dnnfault__Layer *l)
{
	for (size_t i = 0; i < l->n_params; i++) {
		if (l->params[i]->n_dims < 2)
			continue;
		uint64_t f = 1;
		for (size_t d = 1; d < l->params[i]->n_dims; d++)
			f *= l->params[i]->dims[d];
		return f;
	}
	return 0;
}

static int series_description(sqlite3 *db, int64_t run, struct series *out)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT description FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	Dnnfault__RunStart *m = NULL;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB)
		m = unpack_col(&dnnfault__run_start__descriptor, st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return -EIO;
	if (m == NULL)
		return -ENOENT;
	struct series_layer *layers = calloc(m->n_layers ? m->n_layers : 1, sizeof *layers);
	int rv = layers ? 0 : -ENOMEM;
	for (size_t i = 0; rv == 0 && i < m->n_layers; i++)
		layers[i] = (struct series_layer){.name = m->layers[i]->name, .type = m->layers[i]->type,
						  .activation = m->layers[i]->activation,
						  .param_count = m->layers[i]->param_count,
					  .fan_in = fan_in(m->layers[i])};
	if (rv == 0)
		rv = series__set_layers(out, layers, m->n_layers);
	free(layers);
	out->loss_fn = m->loss_fn ? strdup(m->loss_fn) : NULL;
	out->optimizer = m->optimizer ? strdup(m->optimizer) : NULL;
	out->task = m->task;
	out->num_classes = m->num_classes;
	out->batch_size = m->batch_size;
	out->planned_epochs = m->planned_epochs;
	out->planned_steps = m->planned_steps;
	out->dataset_size = m->dataset_size;
	out->initial_lr = optimizer_param(m, "lr");
	out->momentum = optimizer_param(m, "momentum");
	out->weight_decay = optimizer_param(m, "weight_decay");
	out->beta1 = optimizer_param(m, "betas.0");
	out->beta2 = optimizer_param(m, "betas.1");
	out->alpha = optimizer_param(m, "alpha");
	protobuf_c_message_free_unpacked(&m->base, NULL);
	return rv;
}

void store_read__set_max_samples(struct store_reader *r, size_t max)
{
	r->max_samples = max != 0 && max < 3 ? 3 : max;
}

/* A sample worth keeping over its neighbours when thinning: a non-finite
 * loss or a layer that counted NaN/Inf, the onset of nan_loss/nan_tensor. */
static bool non_finite(const Dnnfault__Step *m)
{
	if (m->has_loss && !isfinite(m->loss))
		return true;
	for (size_t k = 0; k + CHUNK_STATS_PER_LAYER <= m->n_layer_stats; k += CHUNK_STATS_PER_LAYER)
		if (m->layer_stats[k + DNNFAULT__LAYER_STAT__NAN_COUNT] > 0 ||
		    m->layer_stats[k + DNNFAULT__LAYER_STAT__INF_COUNT] > 0)
			return true;
	return false;
}

/* Every how many samples one is kept so that at most `max` are (0: all):
 * indices 0, stride, 2 stride, ... below total - 1 (at most max - 2 of
 * them), the last, and one NaN/Inf sample of the first bucket. */
static uint64_t thinning_stride(uint64_t total, size_t max)
{
	if (max == 0 || total <= max)
		return 1;
	return (total - 1 + (max - 2) - 1) / (max - 2);
}

/* Keeps one sample of every `stride` (store_read.h): the bucket's first, or
 * its first NaN/Inf sample instead; sample 0 stays and its bucket's first
 * NaN/Inf sample comes as an extra; the last sample is always kept. */
struct thinning {
	uint64_t total, stride, j;	/* samples counted, 1 of `stride` kept, seen */
	bool want_non_finite;		/* the bucket has no NaN/Inf sample yet */
	bool replaceable;		/* its kept sample may give way to one */
};

static int thinning__offer(struct thinning *t, struct series *out, const Dnnfault__Step *m)
{
	int rv = 0;
	if (t->stride == 1 || t->j % t->stride == 0 || t->j + 1 == t->total) {
		rv = series__append(out, m);
		t->want_non_finite = !non_finite(m);
		t->replaceable = t->j != 0;
	} else if (t->want_non_finite && non_finite(m)) {
		if (t->replaceable)
			out->n--;
		rv = series__append(out, m);
		t->want_non_finite = t->replaceable = false;
	}
	t->j++;
	return rv;
}

/* Chunks read per statement. Each page is its own short read transaction,
 * so that an analysis of a long run never pins the WAL for long: a
 * snapshot held for seconds while the writer keeps committing stops the
 * checkpoint from restarting the WAL, which then grows by everything
 * committed meanwhile. */
#define CHUNKS_PER_PAGE 64

/* Decodes the chunks of one stream, after (first_step, rowid) = *after,
 * into `out`, at most one page of them. Sets *more when the page was full. */
static int stream_page(sqlite3_stmt *st, struct thinning *t, struct series *out, float **stats,
		       size_t *stats_layers, int64_t after[2], bool *more)
{
	int rv = 0, rc, rows = 0;
	sqlite3_bind_int64(st, 3, after[0]);
	sqlite3_bind_int64(st, 4, after[1]);
	while (rv == 0 && t->j < t->total && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		rows++;
		size_t layers = (size_t)sqlite3_column_int64(st, 1);
		if (layers > *stats_layers || *stats == NULL) {
			free(*stats);
			*stats = malloc((layers + 1) * CHUNK_STATS_PER_LAYER * sizeof **stats);
			*stats_layers = layers;
			if (*stats == NULL) {
				rv = -ENOMEM;
				break;
			}
		}
		const uint8_t *p = sqlite3_column_blob(st, 2);
		size_t len = (size_t)sqlite3_column_bytes(st, 2);
		/* Records past the count are newer than it: the next analysis's. */
		for (int i = 0; rv == 0 && i < sqlite3_column_int(st, 0) && t->j < t->total; i++) {
			Dnnfault__Step m = DNNFAULT__STEP__INIT;
			size_t used = chunk__read_record(p, len, &m, *stats, *stats_layers);
			if (used == 0) {
				rv = -EIO;
				break;
			}
			rv = thinning__offer(t, out, &m);
			p += used;
			len -= used;
		}
		after[0] = sqlite3_column_int64(st, 3);
		after[1] = sqlite3_column_int64(st, 4);
	}
	if (rv == 0 && t->j < t->total && rc != SQLITE_DONE)
		rv = -EIO;	/* a busy or broken store must not look like a short run */
	sqlite3_reset(st);	/* ends the page's read transaction */
	*more = rv == 0 && rows == CHUNKS_PER_PAGE && t->j < t->total;
	return rv;
}

/* What of one stream a load reads: its chunks up to the last stored when
 * the load began, so that chunks committed meanwhile (of any stream, at
 * any step) are left to the next analysis and the count stays exact. */
struct stream_extent {
	int64_t stream, last_rowid;
};

/* The lowest rank's streams that have chunks, in the order they started,
 * and their samples in all. */
static int stream_extents(sqlite3 *db, int64_t run, int64_t rank, struct stream_extent **out,
			  size_t *n, uint64_t *total)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT c.stream, total(c.n_steps), max(c.rowid) FROM step_chunks c"
			       " JOIN streams s ON s.id = c.stream WHERE c.run = ?1 AND s.rank = ?2"
			       " GROUP BY c.stream ORDER BY min(s.started), c.stream", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	sqlite3_bind_int64(st, 2, rank);
	size_t cap = 0;
	int rv = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct stream_extent *e = store_batch__push((void **)out, n, &cap, sizeof *e);
		if (e == NULL) {
			rv = -ENOMEM;
			break;
		}
		e->stream = sqlite3_column_int64(st, 0);
		*total += (uint64_t)sqlite3_column_double(st, 1);
		e->last_rowid = sqlite3_column_int64(st, 2);
	}
	if (rv == 0 && rc != SQLITE_DONE)
		rv = -EIO;
	sqlite3_finalize(st);
	return rv;
}

/* Steps of the lowest rank, decoded from its chunks: every stream of that
 * rank in the order the streams started (a resumed job adds a stream), each
 * in step order; as many as were stored when the load began, thinned to
 * `max` samples (store_read.h). */
static int series_steps(sqlite3 *db, int64_t run, int64_t rank, size_t max, struct series *out)
{
	struct thinning t = {0};
	struct stream_extent *streams = NULL;
	size_t n_streams = 0;
	int rv = stream_extents(db, run, rank, &streams, &n_streams, &t.total);
	t.stride = thinning_stride(t.total, max);
	out->n_stored = t.total;
	/* At most `max` are kept (thinning_stride), so this is all the room
	 * the load takes: no doubling past the bound. */
	if (rv == 0 && series__reserve(out, (size_t)(max != 0 && t.total > max ? max : t.total)) != 0)
		rv = -ENOMEM;
	sqlite3_stmt *chunks = NULL;
	if (rv == 0 && sqlite3_prepare_v2(db, "SELECT n_steps, n_layers, data, first_step, rowid FROM step_chunks"
					  " WHERE run = ?1 AND stream = ?2 AND (first_step, rowid) > (?3, ?4)"
					  " AND rowid <= ?6 ORDER BY first_step, rowid LIMIT ?5",
					  -1, &chunks, NULL) != SQLITE_OK)
		rv = -EIO;
	if (rv == 0) {
		sqlite3_bind_int64(chunks, 1, run);
		sqlite3_bind_int(chunks, 5, CHUNKS_PER_PAGE);
	}
	float *stats = NULL;
	size_t stats_layers = 0;
	for (size_t i = 0; rv == 0 && i < n_streams; i++) {
		sqlite3_bind_int64(chunks, 2, streams[i].stream);
		sqlite3_bind_int64(chunks, 6, streams[i].last_rowid);
		int64_t after[2] = {INT64_MIN, INT64_MIN};
		for (bool more = true; rv == 0 && more;)
			rv = stream_page(chunks, &t, out, &stats, &stats_layers, after, &more);
	}
	free(stats);
	free(streams);
	sqlite3_finalize(chunks);
	return rv;
}

static int series_epochs(sqlite3 *db, int64_t run, int64_t rank, struct series *out)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT e.message FROM epochs e JOIN streams s ON s.id = e.stream"
			       " WHERE e.run = ?1 AND s.rank = ?2 ORDER BY s.started, s.id, e.epoch, e.rowid",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	sqlite3_bind_int64(st, 2, rank);
	int rv = 0, rc;
	while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		Dnnfault__Epoch *e = unpack_col(&dnnfault__epoch__descriptor, st, 0);
		if (e == NULL)
			continue;
		rv = series__append_epoch(out, e);
		protobuf_c_message_free_unpacked(&e->base, NULL);
	}
	if (rv == 0 && rc != SQLITE_DONE)
		rv = -EIO;
	sqlite3_finalize(st);
	return rv;
}

int store_read__series(struct store_reader *r, int64_t run, struct series *out, char *err, size_t len)
{
	sqlite3_stmt *st;
	int64_t rank = 0;
	if (sqlite3_prepare_v2(r->db, "SELECT min(rank) FROM streams WHERE run = ?1", -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, run);
	int found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
	if (found)
		rank = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (!found) {
		snprintf(err, len, "run %lld has no stream", (long long)run);
		return NO_SUCH_RUN;
	}
	int rv = series_description(r->db, run, out);
	if (rv == 0)
		rv = series_steps(r->db, run, rank, r->max_samples, out);
	if (rv == 0)
		rv = series_epochs(r->db, run, rank, out);
	if (rv != 0) {
		snprintf(err, len, "loading run %lld: %s", (long long)run,
			 rv == -EIO ? sqlite3_errmsg(r->db) : strerror(-rv));
		series__free(out);
		return rv == -ENOENT ? NO_SUCH_RUN : INTERNAL;
	}
	return 0;
}

int store_read__status_of(struct store_reader *r, int64_t id, const struct store_read_opts *o,
			  Dnnfault__StatusResponse **out, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT uid FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, id);
	char *uid = sqlite3_step(st) == SQLITE_ROW ? dup_col(st, 0) : NULL;
	sqlite3_finalize(st);
	if (uid == NULL) {
		snprintf(err, len, "run %lld is gone", (long long)id);
		return NO_SUCH_RUN;
	}
	char *runs[] = {uid};
	int rv = store_read__status(r, runs, 1, 0, o, out, err, len);
	free(uid);
	return rv;
}

int store_read__labelled(struct store_reader *r, store_labelled_cb cb, void *arg, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT id, coalesce(name, uid), labels FROM runs"
			       " WHERE labels IS NOT NULL ORDER BY id", -1, &st, NULL) != SQLITE_OK)
		return fail(r->db, err, len);
	int rv = 0, rc;
	while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
		rv = cb(sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
			(const char *)sqlite3_column_text(st, 2), arg);
	if (rv == 0 && rc != SQLITE_DONE) {
		snprintf(err, len, "%s", sqlite3_errmsg(r->db));
		rv = -EIO;
	}
	sqlite3_finalize(st);
	return rv;
}
