#include "store_read.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "chunk.h"
#include "store_read_private.h"

#define NO_SUCH_RUN DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN
#define INTERNAL DNNFAULT__ERROR_CODE__ERR_INTERNAL

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

int store_read__fail(sqlite3 *db, char *err, size_t len)
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
		return store_read__fail(r->db, err, len);
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
		return store_read__fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, run);
	int rc = sqlite3_step(st);
	char *name = rc == SQLITE_ROW ? dup_col(st, 0) : NULL;
	int rv = 0;
	if (rc == SQLITE_DONE) {
		snprintf(err, len, "run %lld is gone", (long long)run);
		rv = NO_SUCH_RUN;
	} else if (rc != SQLITE_ROW) {
		rv = store_read__fail(r->db, err, len);
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
	s->has_skipped_steps = d->has_skipped_steps;
	s->skipped_steps = d->skipped_steps;
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
		rv = store_read__fail(r->db, err, len);
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
			rv = store_read__fail(r->db, err, len);
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

int store_read__count_runs(struct store_reader *r, uint64_t *n, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT count(*) FROM runs", -1, &st, NULL) != SQLITE_OK)
		return store_read__fail(r->db, err, len);
	int rv = 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		*n = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rv = store_read__fail(r->db, err, len);
	sqlite3_finalize(st);
	return rv;
}

/* Appends an unpacked message (epoch or run end) from a BLOB column. */
void *store_read__unpack(const ProtobufCMessageDescriptor *d, sqlite3_stmt *st, int col)
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
		Dnnfault__Epoch *e = store_read__unpack(&dnnfault__epoch__descriptor, st, 0);
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
		d->end = store_read__unpack(&dnnfault__run_end__descriptor, st, 0);
	sqlite3_finalize(st);
	return 0;
}

int store_read__detail(struct store_reader *r, int64_t id, const struct store_read_opts *o,
		       Dnnfault__RunDetail **out, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT " SUMMARY_COLUMNS ", description FROM runs WHERE id = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return store_read__fail(r->db, err, len);
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
		d->description = store_read__unpack(&dnnfault__run_start__descriptor, st, SUMMARY_N_COLUMNS);
	sqlite3_finalize(st);
	if (d->summary == NULL || detail_streams(r->db, id, d) != 0 || detail_epochs(r->db, id, d) != 0) {
		protobuf_c_message_free_unpacked(&d->base, NULL);
		return store_read__fail(r->db, err, len);
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
		return store_read__fail(r->db, err, len);
	if (sqlite3_prepare_v2(r->db, "SELECT stream, n_steps, data FROM step_chunks WHERE rowid = ?1", -1,
			       &data, NULL) != SQLITE_OK) {
		sqlite3_finalize(keys);
		return store_read__fail(r->db, err, len);
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
			code = store_read__fail(r->db, err, len);
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
		code = store_read__fail(r->db, err, len);
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

int store_read__status_of(struct store_reader *r, int64_t id, const struct store_read_opts *o,
			  Dnnfault__StatusResponse **out, char *err, size_t len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT uid FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return store_read__fail(r->db, err, len);
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
		return store_read__fail(r->db, err, len);
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
