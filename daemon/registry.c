#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

void registry__free(struct registry *r)
{
	size_t pos = 0;
	for (struct stream_state *st; (st = map__next(&r->streams, &pos, NULL)) != NULL;)
		free(st);
	pos = 0;
	for (struct run_state *run; (run = map__next(&r->runs, &pos, NULL)) != NULL;) {
		while (run != NULL) {
			struct run_state *next = run->chain;
			free(run->uid);
			free(run);
			run = next;
		}
	}
	map__free(&r->streams);
	map__free(&r->runs);
	r->n_runs = 0;
}

struct run_state *registry__find_run(const struct registry *r, const char *uid)
{
	for (struct run_state *run = map__get(&r->runs, map__hash_str(uid)); run; run = run->chain)
		if (strcmp(run->uid, uid) == 0)
			return run;
	return NULL;
}

static struct run_state *add_run(struct registry *r, int64_t id, const char *uid, uint32_t world_size)
{
	struct run_state *run = calloc(1, sizeof *run);
	if (run == NULL || (run->uid = strdup(uid)) == NULL)
		goto err;
	uint64_t h = map__hash_str(uid);
	run->id = id;
	run->world_size = world_size;
	run->chain = map__get(&r->runs, h);
	run->gen = UINT64_MAX;
	if (map__put(&r->runs, h, run) != 0)
		goto err;
	r->n_runs++;
	return run;
err:
	if (run != NULL)
		free(run->uid);
	free(run);
	return NULL;
}

struct run_state *registry__add_run(struct registry *r, const char *uid, uint32_t world_size)
{
	struct run_state *run = add_run(r, r->next_run_id, uid, world_size);
	if (run != NULL)
		r->next_run_id++;
	return run;
}

static void remove_run(struct registry *r, struct run_state *run)
{
	uint64_t h = map__hash_str(run->uid);
	struct run_state *head = map__get(&r->runs, h);
	if (head == run) {
		if (run->chain != NULL)
			map__put(&r->runs, h, run->chain);
		else
			map__del(&r->runs, h);
	} else {
		for (struct run_state *p = head; p != NULL; p = p->chain)
			if (p->chain == run)
				p->chain = run->chain;
	}
	r->n_runs--;
	free(run->uid);
	free(run);
}

struct stream_state *registry__stream(const struct registry *r, uint64_t id)
{
	return map__get(&r->streams, id);
}

struct stream_state *registry__add_stream(struct registry *r, uint64_t id, struct run_state *run,
					  uint32_t rank, uint32_t n_layers)
{
	struct stream_state *st = calloc(1, sizeof *st);
	if (st == NULL)
		return NULL;
	st->id = id;
	st->run = run;
	st->rank = rank;
	st->n_layers = n_layers;
	st->gen = UINT64_MAX;
	if (map__put(&r->streams, id, st) != 0) {
		free(st);
		return NULL;
	}
	return st;
}

struct load_ctx {
	struct registry *r;
	struct map by_id;	/* run id -> run_state */
};

static int load_run_cb(int64_t id, const char *uid, uint32_t world_size, void *arg)
{
	struct load_ctx *ctx = arg;
	struct run_state *run = add_run(ctx->r, id, uid, world_size);
	if (run == NULL || map__put(&ctx->by_id, (uint64_t)id, run) != 0)
		return -ENOMEM;
	run->committed = true;
	return 0;
}

static int load_stream_cb(const struct store_stream_state *x, void *arg)
{
	struct load_ctx *ctx = arg;
	struct run_state *run = map__get(&ctx->by_id, (uint64_t)x->run);
	if (run == NULL)
		return 0;
	struct stream_state *st = registry__add_stream(ctx->r, x->id, run, x->rank, x->n_layers);
	if (st == NULL)
		return -ENOMEM;
	st->last_seq = st->committed_seq = x->last_seq;
	st->committed = true;
	st->ended = st->committed_ended = x->ended;
	return 0;
}

int registry__load(struct registry *r, struct store *s)
{
	struct load_ctx ctx = {.r = r};
	map__init(&ctx.by_id);
	int64_t max_id = 0;
	int rv = store__load(s, load_run_cb, load_stream_cb, &ctx, &max_id);
	map__free(&ctx.by_id);
	r->next_run_id = max_id + 1;
	return rv;
}

void registry__committed(struct registry *r, const struct store_batch *b)
{
	for (size_t i = 0; i < b->n_stream_updates; i++) {
		struct stream_state *st = map__get(&r->streams, b->stream_updates[i].stream);
		if (st == NULL)
			continue;
		st->committed = true;
		st->run->committed = true;
		if (b->stream_updates[i].last_seq > st->committed_seq)
			st->committed_seq = b->stream_updates[i].last_seq;
	}
	for (size_t i = 0; i < b->n_ends; i++) {
		struct stream_state *st = map__get(&r->streams, b->ends[i].stream);
		if (st != NULL)
			st->committed_ended = true;
	}
}

/* Removes the streams and runs for which pred() holds; collected first,
 * since removal changes the maps being walked. */
static void remove_if(struct registry *r, bool (*pred)(const struct run_state *, void *), void *arg)
{
	size_t pos = 0;
	uint64_t key;
	for (struct stream_state *st; (st = map__next(&r->streams, &pos, &key)) != NULL;) {
		if (pred(st->run, arg)) {
			map__del(&r->streams, key);
			free(st);
		}
	}
	struct run_state **doomed = NULL;
	size_t n = 0, cap = 0;
	pos = 0;
	for (struct run_state *run; (run = map__next(&r->runs, &pos, NULL)) != NULL;)
		for (; run != NULL; run = run->chain)
			if (pred(run, arg)) {
				struct run_state **slot = store_batch__push((void **)&doomed, &n, &cap, sizeof *slot);
				if (slot == NULL)
					break;
				*slot = run;
			}
	for (size_t i = 0; i < n; i++)
		remove_run(r, doomed[i]);
	free(doomed);
}

static bool run_uncommitted(const struct run_state *run, void *arg)
{
	(void)arg;
	return !run->committed;
}

void registry__roll_back(struct registry *r)
{
	size_t pos = 0;
	uint64_t key;
	for (struct stream_state *st; (st = map__next(&r->streams, &pos, &key)) != NULL;) {
		if (!st->committed) {
			map__del(&r->streams, key);
			free(st);
			continue;
		}
		st->last_seq = st->committed_seq;
		st->ended = st->committed_ended;
		st->gen = UINT64_MAX;
	}
	remove_if(r, run_uncommitted, NULL);
}

static bool run_in_map(const struct run_state *run, void *arg)
{
	return map__get(arg, (uint64_t)run->id) != NULL;
}

void registry__forget_runs(struct registry *r, const int64_t *ids, size_t n)
{
	struct map gone;
	map__init(&gone);
	for (size_t i = 0; i < n; i++)
		map__put(&gone, (uint64_t)ids[i], &gone);
	remove_if(r, run_in_map, &gone);
	map__free(&gone);
}
