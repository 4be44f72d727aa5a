#include "metrics.h"

#include <stddef.h>

#include "dnnfault.pb-c.h"

struct metrics metrics;

_Static_assert(offsetof(struct metrics, errors_ambiguous_run) -
		       offsetof(struct metrics, errors_bad_frame) ==
	       (DNNFAULT__ERROR_CODE__ERR_AMBIGUOUS_RUN - 1) * sizeof(uint64_t),
	       "errors_* counters follow the ErrorCode order");
/* exposition.c writes them as one family, which must not be split. */
_Static_assert(offsetof(struct metrics, errors_ambiguous_run) + sizeof(uint64_t) == sizeof(struct metrics),
	       "errors_* counters come last");

void metrics__count_error(int code)
{
	/* Indexed by Dnnfault__ErrorCode; errors_bad_frame is code 1. */
	uint64_t *first = &metrics.errors_bad_frame;
	if (code >= DNNFAULT__ERROR_CODE__ERR_BAD_FRAME &&
	    code <= DNNFAULT__ERROR_CODE__ERR_AMBIGUOUS_RUN)
		first[code - 1]++;
}

void metrics__each(const struct metrics *m,
		   void (*fn)(const char *name, const char *help, uint64_t value, void *arg), void *arg)
{
#define METRICS_VISIT(name, help) fn(#name, help, m->name, arg);
	METRICS_COUNTERS(METRICS_VISIT)
#undef METRICS_VISIT
}
