#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "schema.h"

/* The most a WAL file keeps once a checkpoint has restarted it. */
#define STORE_WAL_KEEP_BYTES (64 * 1024 * 1024)

enum stmt_id {
	STMT_RUN_INSERT,
	STMT_RUN_RANK,
	STMT_STREAM_INSERT,
	STMT_CHUNK_INSERT,
	STMT_EPOCH_INSERT,
	STMT_END_INSERT,
	STMT_STREAM_END,
	STMT_RUN_END,
	STMT_RUN_UPDATE,
	STMT_STREAM_UPDATE,
	STMT_DIAGNOSIS_INSERT,
	STMT_LABEL_UPDATE,
	STMT_REFERENCE_UPDATE,
	STMT_PRUNE_SELECT,
	STMT_PRUNE_RUN,
	STMT_PRUNE_STREAMS,
	STMT_BEGIN,
	STMT_COMMIT,
	STMT_ROLLBACK,
	N_STMTS
};

static const char *const stmt_sql[N_STMTS] = {
	[STMT_RUN_INSERT] =
		"INSERT INTO runs(id, uid, name, world_size, started, updated, labels, description,"
		" reference) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
	/* A further rank: its description wins only when it is rank 0, and so
	 * does its reference, when it names one. */
	[STMT_RUN_RANK] =
		"UPDATE runs SET world_size = max(world_size, ?2), updated = max(updated, ?3),"
		" description = coalesce(?4, description), reference = coalesce(?5, reference),"
		" end_status = NULL, ended = NULL WHERE id = ?1",
	[STMT_STREAM_INSERT] =
		"INSERT INTO streams(id, run, rank, host, pid, n_layers, last_seq, started, updated)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7)",
	[STMT_CHUNK_INSERT] =
		"INSERT INTO step_chunks(run, stream, first_step, last_step, n_steps, n_layers, data)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[STMT_EPOCH_INSERT] =
		"INSERT INTO epochs(run, stream, epoch, step, time, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[STMT_END_INSERT] =
		"INSERT OR REPLACE INTO run_ends(stream, run, status, step, time, message)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[STMT_STREAM_END] = "UPDATE streams SET end_status = ?2 WHERE id = ?1",
	/* The run ends with its last open stream; crashed beats interrupted beats completed. */
	[STMT_RUN_END] =
		"UPDATE runs SET ended = ?2, end_status = (SELECT CASE WHEN sum(status = 2) > 0 THEN 2"
		" WHEN sum(status = 3) > 0 THEN 3 ELSE 1 END FROM run_ends WHERE run = ?1)"
		" WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM streams WHERE run = ?1 AND end_status IS NULL)",
	[STMT_RUN_UPDATE] =
		"UPDATE runs SET updated = max(updated, ?2),"
		" last_step = CASE WHEN ?3 IS NULL THEN last_step ELSE max(coalesce(last_step, ?3), ?3) END,"
		" steps_stored = steps_stored + ?4,"
		/* total(), not sum(): summing the ranks' counts must not fail the
		 * commit of everyone's batch with an integer overflow. */
		" dropped = (SELECT CAST(min(total(dropped), 9007199254740992.0) AS INTEGER)"
		" FROM streams WHERE run = ?1) WHERE id = ?1",
	[STMT_STREAM_UPDATE] =
		"UPDATE streams SET last_seq = max(last_seq, ?2), updated = max(updated, ?3),"
		" dropped = max(dropped, ?4) WHERE id = ?1",
	/* A run may have been deleted by retention while it was analysed. */
	[STMT_DIAGNOSIS_INSERT] =
		"INSERT INTO diagnoses(run, step, time, health, message)"
		" SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
	[STMT_LABEL_UPDATE] = "UPDATE runs SET labels = ?2 WHERE id = ?1",
	[STMT_REFERENCE_UPDATE] = "UPDATE runs SET reference = ?2 WHERE id = ?1",
	/* By the daemon's clock of the last message: also catches runs whose
	 * client died without a RunEnd. */
	[STMT_PRUNE_SELECT] = "SELECT id FROM runs WHERE updated < ?1",
	[STMT_PRUNE_RUN] = "DELETE FROM runs WHERE id = ?1",
	[STMT_PRUNE_STREAMS] = "DELETE FROM streams WHERE run = ?1",
	[STMT_BEGIN] = "BEGIN IMMEDIATE",
	[STMT_COMMIT] = "COMMIT",
	[STMT_ROLLBACK] = "ROLLBACK",
};

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[N_STMTS];
	char *path;
	dev_t dev;	/* the file opened, to notice it removed or replaced */
	ino_t ino;
};

void *store_batch__push(void **array, size_t *n, size_t *cap, size_t size)
{
	if (*n == *cap) {
		size_t new_cap = *cap ? *cap * 2 : 16;
		void *p = realloc(*array, new_cap * size);
		if (p == NULL)
			return NULL;
		*array = p;
		*cap = new_cap;
	}
	void *elem = (char *)*array + (*n)++ * size;
	memset(elem, 0, size);
	return elem;
}

void store_batch__reset(struct store_batch *b)
{
	for (size_t i = 0; i < b->n_runs; i++) {
		free(b->runs[i].uid);
		free(b->runs[i].name);
		free(b->runs[i].labels);
		free(b->runs[i].reference);
		free(b->runs[i].description);
	}
	for (size_t i = 0; i < b->n_streams; i++)
		free(b->streams[i].host);
	for (size_t i = 0; i < b->n_chunks; i++)
		free(b->chunks[i].data);
	for (size_t i = 0; i < b->n_epochs; i++)
		free(b->epochs[i].message);
	for (size_t i = 0; i < b->n_ends; i++)
		free(b->ends[i].message);
	for (size_t i = 0; i < b->n_diagnoses; i++)
		free(b->diagnoses[i].message);
	for (size_t i = 0; i < b->n_labels; i++)
		free(b->labels[i].labels);
	for (size_t i = 0; i < b->n_references; i++)
		free(b->references[i].reference);
	b->n_runs = b->n_streams = b->n_chunks = b->n_epochs = b->n_ends = 0;
	b->n_run_updates = b->n_stream_updates = b->n_pruned = b->n_diagnoses = 0;
	b->n_labels = b->n_references = 0;
	b->prune_before = 0;
}

void store_batch__free(struct store_batch *b)
{
	store_batch__reset(b);
	free(b->runs);
	free(b->streams);
	free(b->chunks);
	free(b->epochs);
	free(b->ends);
	free(b->run_updates);
	free(b->stream_updates);
	free(b->diagnoses);
	free(b->labels);
	free(b->references);
	free(b->pruned);
	memset(b, 0, sizeof *b);
}

int store__schema_version(void)
{
	return schema_version;
}

static int exec_fmt(sqlite3 *db, char *err, size_t err_len, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, err_len, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

/* Brings the schema to schema_version, one migration per transaction, and
 * refuses a database written by a newer daemon. */
static int migrate(sqlite3 *db, char *err, size_t err_len)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		snprintf(err, err_len, "reading user_version: %s", sqlite3_errmsg(db));
		sqlite3_finalize(st);
		return -EIO;
	}
	int version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version > schema_version) {
		snprintf(err, err_len, "database schema %d is newer than this daemon's %d", version,
			 schema_version);
		return -EPROTO;
	}
	for (int v = version; v < schema_version; v++) {
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d; COMMIT;", v + 1);
		if (exec_fmt(db, err, err_len, "BEGIN IMMEDIATE") != 0)
			return -EIO;
		if (exec_fmt(db, err, err_len, schema_migrations[v]) != 0 ||
		    exec_fmt(db, err, err_len, pragma) != 0) {
			char why[256];
			snprintf(why, sizeof why, "%s", err);
			snprintf(err, err_len, "migration %d: %s", v + 1, why);
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
	}
	return 0;
}

int store__open(const char *path, int synchronous, struct store **out, char *err, size_t err_len)
{
	struct store *s = calloc(1, sizeof *s);
	if (s == NULL)
		return -ENOMEM;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto err_after_alloc;
	}
	sqlite3_busy_timeout(s->db, 5000);
	/* A burst of ingest grows the WAL; the file keeps that size after the
	 * checkpoint restarts it unless journal_size_limit truncates it. */
	char pragmas[256];
	snprintf(pragmas, sizeof pragmas,
		 "PRAGMA journal_mode = WAL; PRAGMA synchronous = %d; PRAGMA foreign_keys = ON;"
		 " PRAGMA wal_autocheckpoint = 4000; PRAGMA journal_size_limit = %d;", synchronous,
		 STORE_WAL_KEEP_BYTES);
	if (exec_fmt(s->db, err, err_len, pragmas) != 0 || migrate(s->db, err, err_len) != 0)
		goto err_after_open;
	/* SQLite opens a file it may not write read-only, without an error:
	 * every commit would fail later, after the daemon said it was ready. */
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		snprintf(err, err_len, "%s: not writable (opened read-only)", path);
		goto err_after_open;
	}
	struct stat st;
	if ((s->path = strdup(path)) == NULL || stat(path, &st) != 0) {
		snprintf(err, err_len, "%s: %s", path, s->path ? strerror(errno) : "out of memory");
		goto err_after_open;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	for (int i = 0; i < N_STMTS; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &s->stmt[i], NULL) != SQLITE_OK) {
			snprintf(err, err_len, "preparing statement %d: %s", i, sqlite3_errmsg(s->db));
			goto err_after_open;
		}
	}
	*out = s;
	return 0;

err_after_open:
	store__close(s);
	return -EIO;
err_after_alloc:
	sqlite3_close(s->db);
	free(s);
	return -EIO;
}

void store__close(struct store *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < N_STMTS; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	free(s->path);
	free(s);
}

/* Binds a text that may be NULL. */
static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static void bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	if (p == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

/* Steps a bound statement to completion and resets it. */
static int run(struct store *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -EIO;
}

static int write_runs(struct store *s, const struct store_batch *b)
{
	for (size_t i = 0; i < b->n_runs; i++) {
		const struct store_run *r = &b->runs[i];
		sqlite3_stmt *st = s->stmt[r->is_new ? STMT_RUN_INSERT : STMT_RUN_RANK];
		sqlite3_bind_int64(st, 1, r->id);
		if (r->is_new) {
			bind_text(st, 2, r->uid);
			bind_text(st, 3, r->name);
			sqlite3_bind_int64(st, 4, r->world_size);
			sqlite3_bind_double(st, 5, r->time);
			bind_text(st, 6, r->labels);
			bind_blob(st, 7, r->description, r->description_len);
			bind_text(st, 8, r->reference);
		} else {
			sqlite3_bind_int64(st, 2, r->world_size);
			sqlite3_bind_double(st, 3, r->time);
			bind_blob(st, 4, r->description, r->description_len);
			bind_text(st, 5, r->reference);
		}
		if (run(s, st) != 0)
			return -EIO;
	}
	for (size_t i = 0; i < b->n_streams; i++) {
		const struct store_stream *x = &b->streams[i];
		sqlite3_stmt *st = s->stmt[STMT_STREAM_INSERT];
		sqlite3_bind_int64(st, 1, (int64_t)x->id);
		sqlite3_bind_int64(st, 2, x->run);
		sqlite3_bind_int64(st, 3, x->rank);
		bind_text(st, 4, x->host);
		sqlite3_bind_int64(st, 5, x->pid);
		sqlite3_bind_int64(st, 6, x->n_layers);
		sqlite3_bind_double(st, 7, x->time);
		if (run(s, st) != 0)
			return -EIO;
	}
	return 0;
}

static int write_telemetry(struct store *s, const struct store_batch *b)
{
	sqlite3_stmt *st = s->stmt[STMT_CHUNK_INSERT];
	for (size_t i = 0; i < b->n_chunks; i++) {
		const struct store_chunk *c = &b->chunks[i];
		sqlite3_bind_int64(st, 1, c->run);
		sqlite3_bind_int64(st, 2, (int64_t)c->stream);
		sqlite3_bind_int64(st, 3, (int64_t)c->first_step);
		sqlite3_bind_int64(st, 4, (int64_t)c->last_step);
		sqlite3_bind_int64(st, 5, c->n_steps);
		sqlite3_bind_int64(st, 6, c->n_layers);
		sqlite3_bind_blob64(st, 7, c->data, c->len, SQLITE_STATIC);
		if (run(s, st) != 0)
			return -EIO;
	}
	st = s->stmt[STMT_DIAGNOSIS_INSERT];
	for (size_t i = 0; i < b->n_diagnoses; i++) {
		const struct store_diagnosis *x = &b->diagnoses[i];
		sqlite3_bind_int64(st, 1, x->run);
		sqlite3_bind_int64(st, 2, (int64_t)x->step);
		sqlite3_bind_double(st, 3, x->time);
		sqlite3_bind_text(st, 4, x->health, -1, SQLITE_STATIC);
		sqlite3_bind_blob64(st, 5, x->message, x->message_len, SQLITE_STATIC);
		if (run(s, st) != 0)
			return -EIO;
	}
	st = s->stmt[STMT_EPOCH_INSERT];
	for (size_t i = 0; i < b->n_epochs; i++) {
		const struct store_event *e = &b->epochs[i];
		sqlite3_bind_int64(st, 1, e->run);
		sqlite3_bind_int64(st, 2, (int64_t)e->stream);
		sqlite3_bind_int64(st, 3, e->number);
		if (e->has_step)
			sqlite3_bind_int64(st, 4, (int64_t)e->step);
		sqlite3_bind_double(st, 5, e->time);
		sqlite3_bind_blob64(st, 6, e->message, e->message_len, SQLITE_STATIC);
		if (run(s, st) != 0)
			return -EIO;
	}
	return 0;
}

static int write_updates(struct store *s, const struct store_batch *b)
{
	/* Streams first: a run's drop count is the sum of its streams'. */
	for (size_t i = 0; i < b->n_stream_updates; i++) {
		const struct store_stream_update *u = &b->stream_updates[i];
		sqlite3_stmt *st = s->stmt[STMT_STREAM_UPDATE];
		sqlite3_bind_int64(st, 1, (int64_t)u->stream);
		sqlite3_bind_int64(st, 2, (int64_t)u->last_seq);
		sqlite3_bind_double(st, 3, u->updated);
		sqlite3_bind_int64(st, 4, (int64_t)u->dropped);
		if (run(s, st) != 0)
			return -EIO;
	}
	for (size_t i = 0; i < b->n_run_updates; i++) {
		const struct store_run_update *u = &b->run_updates[i];
		sqlite3_stmt *st = s->stmt[STMT_RUN_UPDATE];
		sqlite3_bind_int64(st, 1, u->run);
		sqlite3_bind_double(st, 2, u->updated);
		if (u->has_step)
			sqlite3_bind_int64(st, 3, (int64_t)u->last_step);
		sqlite3_bind_int64(st, 4, (int64_t)u->n_steps);
		if (run(s, st) != 0)
			return -EIO;
	}
	for (size_t i = 0; i < b->n_labels; i++) {
		sqlite3_stmt *st = s->stmt[STMT_LABEL_UPDATE];
		sqlite3_bind_int64(st, 1, b->labels[i].run);
		sqlite3_bind_text(st, 2, b->labels[i].labels, -1, SQLITE_STATIC);
		if (run(s, st) != 0)
			return -EIO;
	}
	for (size_t i = 0; i < b->n_references; i++) {
		sqlite3_stmt *st = s->stmt[STMT_REFERENCE_UPDATE];
		sqlite3_bind_int64(st, 1, b->references[i].run);
		bind_text(st, 2, b->references[i].reference);
		if (run(s, st) != 0)
			return -EIO;
	}
	/* Ends last: a run ends when none of its streams is still open. */
	for (size_t i = 0; i < b->n_ends; i++) {
		const struct store_event *e = &b->ends[i];
		sqlite3_stmt *st = s->stmt[STMT_END_INSERT];
		sqlite3_bind_int64(st, 1, (int64_t)e->stream);
		sqlite3_bind_int64(st, 2, e->run);
		sqlite3_bind_int64(st, 3, e->number);
		if (e->has_step)
			sqlite3_bind_int64(st, 4, (int64_t)e->step);
		sqlite3_bind_double(st, 5, e->time);
		sqlite3_bind_blob64(st, 6, e->message, e->message_len, SQLITE_STATIC);
		if (run(s, st) != 0)
			return -EIO;
		st = s->stmt[STMT_STREAM_END];
		sqlite3_bind_int64(st, 1, (int64_t)e->stream);
		sqlite3_bind_int64(st, 2, e->number);
		if (run(s, st) != 0)
			return -EIO;
		st = s->stmt[STMT_RUN_END];
		sqlite3_bind_int64(st, 1, e->run);
		sqlite3_bind_double(st, 2, e->time);
		if (run(s, st) != 0)
			return -EIO;
	}
	return 0;
}

static int prune(struct store *s, struct store_batch *b)
{
	sqlite3_stmt *sel = s->stmt[STMT_PRUNE_SELECT];
	sqlite3_bind_double(sel, 1, b->prune_before);
	int rc;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		int64_t *id = STORE_BATCH_PUSH(b, pruned);
		if (id == NULL)
			break;
		*id = sqlite3_column_int64(sel, 0);
	}
	sqlite3_reset(sel);
	for (size_t i = 0; i < b->n_pruned; i++) {
		/* Chunks, epochs and ends go with the run (ON DELETE CASCADE). */
		sqlite3_stmt *st = s->stmt[STMT_PRUNE_STREAMS];
		sqlite3_bind_int64(st, 1, b->pruned[i]);
		if (run(s, st) != 0)
			return -EIO;
		st = s->stmt[STMT_PRUNE_RUN];
		sqlite3_bind_int64(st, 1, b->pruned[i]);
		if (run(s, st) != 0)
			return -EIO;
	}
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -EIO;
}

/* True when the comma list list[0..n) holds the label label[0..k). */
static bool has_label(const char *list, size_t n, const char *label, size_t k)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && list[j] != ',')
			j++;
		if (j - i == k && memcmp(list + i, label, k) == 0)
			return true;
		i = j + 1;
	}
	return false;
}

/* Keeps the first of each label of a comma list, in place (the list only
 * shrinks): a cause named twice is stored once. */
static void dedupe_labels(char *labels)
{
	if (labels == NULL)
		return;
	char *w = labels;
	for (const char *p = labels; *p != '\0';) {
		size_t k = strcspn(p, ",");
		if (k > 0 && !has_label(labels, (size_t)(w - labels), p, k)) {
			if (w > labels)
				*w++ = ',';
			memmove(w, p, k);
			w += k;
		}
		p += k + (p[k] == ',');
	}
	*w = '\0';
}

int store__commit(struct store *s, struct store_batch *b, char *err, size_t err_len)
{
	b->n_pruned = 0;
	/* Here, so that labels from every client (RunStart, `label`) are covered. */
	for (size_t i = 0; i < b->n_runs; i++)
		dedupe_labels(b->runs[i].labels);
	for (size_t i = 0; i < b->n_labels; i++)
		dedupe_labels(b->labels[i].labels);
	/* A database file deleted (or replaced) under the daemon still takes
	 * writes, into a file nobody will read again: acknowledging them would
	 * lose them. Nothing is acknowledged until a restart opens the path. */
	struct stat st;
	if (stat(s->path, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino) {
		snprintf(err, err_len, "the database file %s was removed or replaced; nothing more is stored"
			 " until dnnfaultd is restarted", s->path);
		return -ESTALE;
	}
	if (run(s, s->stmt[STMT_BEGIN]) != 0)
		goto err;
	if (write_runs(s, b) != 0 || write_telemetry(s, b) != 0 || write_updates(s, b) != 0 ||
	    (b->prune_before > 0 && prune(s, b) != 0))
		goto err_after_begin;
	if (run(s, s->stmt[STMT_COMMIT]) != 0)
		goto err_after_begin;
	return 0;

err_after_begin:
	snprintf(err, err_len, "%s", sqlite3_errmsg(s->db));
	run(s, s->stmt[STMT_ROLLBACK]);
	b->n_pruned = 0;
	return -EIO;
err:
	snprintf(err, err_len, "%s", sqlite3_errmsg(s->db));
	return -EIO;
}

int store__load(struct store *s,
		int (*run_fn)(int64_t id, const char *uid, uint32_t world_size, void *arg),
		int (*stream_fn)(const struct store_stream_state *st, void *arg),
		void *arg, int64_t *max_run_id)
{
	sqlite3_stmt *st;
	int rv = 0;
	*max_run_id = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT id, uid, world_size FROM runs", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (rv == 0 && sqlite3_step(st) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);
		if (id > *max_run_id)
			*max_run_id = id;
		rv = run_fn(id, (const char *)sqlite3_column_text(st, 1),
			    (uint32_t)sqlite3_column_int64(st, 2), arg);
	}
	sqlite3_finalize(st);
	if (rv != 0)
		return rv;
	if (sqlite3_prepare_v2(s->db,
			       "SELECT id, run, rank, n_layers, last_seq, end_status IS NOT NULL FROM streams",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (rv == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct store_stream_state x = {
			.id = (uint64_t)sqlite3_column_int64(st, 0),
			.run = sqlite3_column_int64(st, 1),
			.rank = (uint32_t)sqlite3_column_int64(st, 2),
			.n_layers = (uint32_t)sqlite3_column_int64(st, 3),
			.last_seq = (uint64_t)sqlite3_column_int64(st, 4),
			.ended = sqlite3_column_int(st, 5) != 0,
		};
		rv = stream_fn(&x, arg);
	}
	sqlite3_finalize(st);
	return rv;
}
