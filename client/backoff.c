#include "backoff.h"

void backoff__init(struct backoff *b, int initial_ms, int max_ms, uint64_t seed)
{
	b->initial_ms = initial_ms > 0 ? initial_ms : 1;
	b->max_ms = max_ms > b->initial_ms ? max_ms : b->initial_ms;
	b->base_ms = b->initial_ms;
	b->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15u;
}

static uint64_t backoff__random(struct backoff *b)
{
	uint64_t x = b->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	b->rng = x;
	return x * 0x2545f4914f6cdd1du;
}

int backoff__next(struct backoff *b)
{
	int base = b->base_ms;
	int span = base / BACKOFF_JITTER_DIV;
	int delay = base - (span > 0 ? (int)(backoff__random(b) % (uint64_t)(span + 1)) : 0);
	b->base_ms = base > b->max_ms / 2 ? b->max_ms : base * 2;
	return delay;
}

void backoff__reset(struct backoff *b)
{
	b->base_ms = b->initial_ms;
}
