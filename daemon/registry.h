/* What the daemon knows in memory about every run and stream: ids, layer
 * counts and sequence watermarks, so that validation and duplicate
 * detection never read the store. Owned by ingest; event-loop thread only. */
#ifndef DNNFAULT_REGISTRY_H
#define DNNFAULT_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "map.h"

struct store;
struct store_batch;

struct run_state {
	int64_t id;
	char *uid;
	uint32_t world_size;
	bool committed;			/* its row exists in the store */
	struct run_state *chain;	/* next run with the same uid hash */
	uint64_t gen;			/* batch that update_idx refers to */
	size_t update_idx;
};

struct stream_state {
	uint64_t id;
	struct run_state *run;
	uint32_t rank, n_layers;
	uint64_t last_seq;		/* highest seq queued or committed */
	uint64_t committed_seq;
	bool committed, ended, committed_ended;
	uint64_t gen;			/* batch that the indexes refer to */
	size_t chunk_idx, update_idx;
};

struct registry {
	struct map streams;		/* stream id -> stream_state */
	struct map runs;		/* uid hash -> run_state chain */
	size_t n_runs;
	int64_t next_run_id;
};

/* Fills the registry from the store after a (re)start. Returns 0 or a
 * negative errno. */
int registry__load(struct registry *r, struct store *s);
void registry__free(struct registry *r);

struct run_state *registry__find_run(const struct registry *r, const char *uid);

/* A new run with the next free id; NULL when out of memory. */
struct run_state *registry__add_run(struct registry *r, const char *uid, uint32_t world_size);

struct stream_state *registry__stream(const struct registry *r, uint64_t id);
struct stream_state *registry__add_stream(struct registry *r, uint64_t id, struct run_state *run,
					  uint32_t rank, uint32_t n_layers);

/* A batch was committed: its streams' watermarks and ends are now durable. */
void registry__committed(struct registry *r, const struct store_batch *b);

/* A commit failed: forgets what was never stored and puts every watermark
 * back to what the store holds. */
void registry__roll_back(struct registry *r);

/* Forgets runs (and their streams) that retention deleted from the store. */
void registry__forget_runs(struct registry *r, const int64_t *ids, size_t n);

#endif
