/* The daemon's counters and its runs' diagnoses in the Prometheus text
 * exposition format (version 0.0.4), as served by metrics_http.h. Pure:
 * the caller gathers the inputs (a snapshot of the counters, the run
 * summaries read from the store), so it renders on a worker thread and is
 * tested without a daemon. docs/metrics.md lists every family. */
#ifndef DNNFAULT_EXPOSITION_H
#define DNNFAULT_EXPOSITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnnfault.pb-c.h"
#include "metrics.h"

struct exposition {
	const char *version;			/* dnnfaultd's */
	double started;				/* unix seconds */
	bool model_loaded;
	const struct metrics *counters;		/* a snapshot taken on the loop */
	uint64_t runs_stored;			/* every run in the store */
	const Dnnfault__StatusResponse *runs;	/* the runs with series; may be NULL */
};

/* Returns the text, NUL-terminated, malloc'd (free() it), with its length
 * in *len; NULL when out of memory. */
char *exposition__render(const struct exposition *e, size_t *len);

#endif
