/* Read side of the store, for control requests. Runs on worker threads, each
 * with its own read-only connection (WAL lets readers run beside the writer).
 * Results are protobuf messages built with malloc; release them with
 * protobuf_c_message_free_unpacked(msg, NULL). */
#ifndef DNNFAULT_STORE_READ_H
#define DNNFAULT_STORE_READ_H

#include <stddef.h>
#include <stdint.h>

#include "dnnfault.pb-c.h"

struct store_reader;

struct store_read_opts {
	double now;
	double stale_after;
};

int store_read__open(const char *path, struct store_reader **out, char *err, size_t err_len);
void store_read__close(struct store_reader *r);

/* Finds a run by id, else by name. Returns 0, ERR_NO_SUCH_RUN or
 * ERR_AMBIGUOUS_RUN (a name shared by several runs; `err` lists their ids). */
int store_read__resolve(struct store_reader *r, const char *run, int64_t *id,
			char *err, size_t err_len);

/* The run's reference run, resolved to a store id: 0 in *ref when the
 * run names none. Returns 0, ERR_NO_SUCH_RUN (the named reference is not
 * in the store; `err` says which name; or `run` itself is gone),
 * ERR_AMBIGUOUS_RUN, or another ErrorCode with `err` set. A reference that
 * resolves to the run itself counts as none. */
int store_read__reference(struct store_reader *r, int64_t run, int64_t *ref,
			  char *err, size_t err_len);

/* Summaries of the given runs (all when n == 0, newest first, at most
 * `limit` when not 0). Returns 0 or an ErrorCode with `err` set. */
int store_read__status(struct store_reader *r, char *const *runs, size_t n, uint32_t limit,
		       const struct store_read_opts *o, Dnnfault__StatusResponse **out,
		       char *err, size_t err_len);

/* How many runs the store holds. Returns 0 or an ErrorCode with `err` set. */
int store_read__count_runs(struct store_reader *r, uint64_t *n, char *err, size_t err_len);

/* The summary of one run by its store id. */
int store_read__status_of(struct store_reader *r, int64_t id, const struct store_read_opts *o,
			  Dnnfault__StatusResponse **out, char *err, size_t err_len);

int store_read__detail(struct store_reader *r, int64_t id, const struct store_read_opts *o,
		       Dnnfault__RunDetail **out, char *err, size_t err_len);

/* Export position: chunks come in (rank, first_step, rowid) order. */
struct store_cursor {
	int64_t run;
	int64_t rank, first_step, rowid;
	int done;
};

/* Fills `out` with the steps of the next chunks, about `max_bytes` of them.
 * Sets cursor->done after the last. */
int store_read__export_page(struct store_reader *r, struct store_cursor *cur, size_t max_bytes,
			    Dnnfault__ExportChunk **out, char *err, size_t err_len);

/* Loads the telemetry of a run's lowest rank into `out` (zeroed by the
 * caller). Returns 0 or an ErrorCode with `err` set; `out` is then empty.
 * A run of more samples than the reader's bound (store_read__set_max_samples)
 * is thinned as it is read, so that an analysis's memory does not grow with
 * the run: of every `stride` consecutive samples the first is kept, or
 * instead the first that carries a NaN/Inf (a non-finite loss or a layer's
 * NaN/Inf count), so that no such onset is lost; sample 0 and the last
 * sample are always kept. Overflow steps that the training loop skipped
 * are left out (skipped_steps.h); the thinning does not prefer them. */
struct series;
int store_read__series(struct store_reader *r, int64_t run, struct series *out,
		       char *err, size_t err_len);

/* The default bound; the daemon's `analyze_max_samples` sets it. */
#define STORE_READ_MAX_SAMPLES 10000
/* 0: no bound; otherwise at least 3 (smaller values count as 3). */
void store_read__set_max_samples(struct store_reader *r, size_t max);

/* Calls cb for every run with known labels (corpus runs; "" = healthy), in
 * id order, until cb returns non-zero (which is returned). Returns 0, that
 * value, or an ErrorCode with `err` set. */
typedef int (*store_labelled_cb)(int64_t run, const char *name, const char *labels, void *arg);
int store_read__labelled(struct store_reader *r, store_labelled_cb cb, void *arg,
			 char *err, size_t err_len);

#endif
