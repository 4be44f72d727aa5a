/* Capped exponential back-off with jitter for reconnecting. Pure: the
 * caller seeds the generator and does the waiting. */
#ifndef DNNFAULT_BACKOFF_H
#define DNNFAULT_BACKOFF_H

#include <stdint.h>

/* The jitter takes up to 1/BACKOFF_JITTER_DIV off each delay, so that
 * clients that lost the same daemon do not all come back at once. */
#define BACKOFF_JITTER_DIV 5

struct backoff {
	int initial_ms, max_ms;
	int base_ms;		/* the delay before jitter of the next wait */
	uint64_t rng;		/* xorshift64* state, never 0 */
};

/* initial_ms and max_ms are clamped to >= 1 and max_ms >= initial_ms. */
void backoff__init(struct backoff *b, int initial_ms, int max_ms, uint64_t seed);

/* The next delay: base minus up to base/BACKOFF_JITTER_DIV, so it lies in
 * [base - base/5, base] and never above max_ms; then the base doubles, up
 * to max_ms. */
int backoff__next(struct backoff *b);

/* After a success: the next delay starts again from initial_ms. */
void backoff__reset(struct backoff *b);

#endif
