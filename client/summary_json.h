/* A run's summary as JSON: the objects of `dnnfaultctl --json status` and
 * what dnnfault_query_status() returns, from one implementation. */
#ifndef DNNFAULT_SUMMARY_JSON_H
#define DNNFAULT_SUMMARY_JSON_H

#include "dnnfault.pb-c.h"
#include "json.h"

/* One object: run, id, state, step, health, symptoms, causes, started,
 * updated, world_size, ranks, steps_stored, dropped, labels, and reference
 * when the run names one. */
void summary_json__write(struct json *j, const Dnnfault__RunSummary *s);

#endif
