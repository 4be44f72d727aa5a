/* The SQLite store. One writer connection commits batches prepared on the
 * event loop; it is only ever used by one thread at a time (the writer work
 * item). Readers open their own connections (store_read.h). */
#ifndef DNNFAULT_STORE_H
#define DNNFAULT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/* A new run, or a further rank of a known run. */
struct store_run {
	int64_t id;
	bool is_new;
	char *uid, *name;
	uint32_t world_size;
	double time;
	char *labels;			/* NULL when unknown */
	char *reference;		/* NULL: none (new run) or unchanged */
	uint8_t *description;		/* packed RunStart; NULL keeps the old one */
	size_t description_len;
};

struct store_stream {
	uint64_t id;
	int64_t run;
	uint32_t rank, pid, n_layers;
	char *host;
	double time;
};

/* Consecutive step records of one stream (chunk.h). */
struct store_chunk {
	int64_t run;
	uint64_t stream;
	uint64_t first_step, last_step;
	uint32_t n_steps, n_layers;
	uint8_t *data;
	size_t len, cap;
};

/* Epochs and run ends are kept as the packed message. */
struct store_event {
	int64_t run;
	uint64_t stream;
	uint32_t number;		/* epoch number, or EndStatus */
	bool has_step;
	uint64_t step;
	double time;
	uint8_t *message;
	size_t message_len;
};

/* One analysis result: the packed Diagnosis message. */
struct store_diagnosis {
	int64_t run;
	uint64_t step;
	double time;
	char health[16];
	uint8_t *message;
	size_t message_len;
};

/* New ground-truth labels of a run: a comma list, "" for healthy. */
struct store_label {
	int64_t run;
	char *labels;
};

/* A new reference run of a run (name or id); NULL clears it. */
struct store_reference {
	int64_t run;
	char *reference;
};

/* What one batch changes about a run or a stream besides inserted rows. */
struct store_run_update {
	int64_t run;
	double updated;
	bool has_step;
	uint64_t last_step;
	uint64_t n_steps;
};

struct store_stream_update {
	uint64_t stream;
	uint64_t last_seq;
	double updated;
	uint64_t dropped;		/* the client's cumulative drop count */
};

#define STORE_ARRAY(type, name) type *name; size_t n_##name, cap_##name

/* Everything one transaction writes. Built on the event loop, committed by
 * the writer, then released with store_batch__reset. */
struct store_batch {
	STORE_ARRAY(struct store_run, runs);
	STORE_ARRAY(struct store_stream, streams);
	STORE_ARRAY(struct store_chunk, chunks);
	STORE_ARRAY(struct store_event, epochs);
	STORE_ARRAY(struct store_event, ends);
	STORE_ARRAY(struct store_run_update, run_updates);
	STORE_ARRAY(struct store_stream_update, stream_updates);
	STORE_ARRAY(struct store_diagnosis, diagnoses);
	STORE_ARRAY(struct store_label, labels);
	STORE_ARRAY(struct store_reference, references);
	double prune_before;		/* > 0: delete runs that ended before */
	STORE_ARRAY(int64_t, pruned);	/* out: the runs that pruning deleted */
};

/* Appends a zeroed element to one of the batch's arrays and returns it, or
 * NULL when memory is exhausted. */
void *store_batch__push(void **array, size_t *n, size_t *cap, size_t size);
#define STORE_BATCH_PUSH(b, name) \
	store_batch__push((void **)&(b)->name, &(b)->n_##name, &(b)->cap_##name, sizeof *(b)->name)

/* Frees what the elements own and empties the arrays, keeping capacity. */
void store_batch__reset(struct store_batch *b);
void store_batch__free(struct store_batch *b);

/* Opens (creating when needed) the database at `path`, applies pending
 * migrations and prepares the writer's statements. `synchronous` is
 * SQLite's value (1 NORMAL, 2 FULL). Returns 0 or a negative errno with
 * `err` set. */
int store__open(const char *path, int synchronous, struct store **out, char *err, size_t err_len);
void store__close(struct store *s);

/* Writes the whole batch in one transaction, then prunes old runs when
 * prune_before is set (filling `pruned`). Returns 0, or -EIO with `err` set,
 * in which case nothing of the batch is stored. */
int store__commit(struct store *s, struct store_batch *b, char *err, size_t err_len);

/* What the daemon needs in memory after a restart. */
struct store_stream_state {
	uint64_t id;
	int64_t run;
	uint32_t rank, n_layers;
	uint64_t last_seq;
	bool ended;
};

/* Calls run_fn for every run and stream_fn for every stream; stops when a
 * callback returns non-zero and returns that. Also sets *max_run_id. */
int store__load(struct store *s,
		int (*run_fn)(int64_t id, const char *uid, uint32_t world_size, void *arg),
		int (*stream_fn)(const struct store_stream_state *st, void *arg),
		void *arg, int64_t *max_run_id);

int store__schema_version(void);

#endif
