/* Stored runs for the store and dataset tests: the description a client
 * sends first (one Linear layer "fc") and the run's rank-0 stream, added
 * to a batch that store__commit writes. Include after cmocka.h. */
#ifndef DNNFAULT_TEST_STORE_BUILDER_H
#define DNNFAULT_TEST_STORE_BUILDER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* Describes run `r` (already in `b`) with the given layers, with
 * `planned_steps` when not 0, and adds its stream, whose id is the run's. */
static inline void store_builder__run(struct store_batch *b, struct store_run *r, const char *run_id,
				      uint64_t planned_steps, Dnnfault__Layer **layers, size_t n_layers)
{
	Dnnfault__RunStart start = DNNFAULT__RUN_START__INIT;
	start.run_id = (char *)run_id;
	start.n_layers = n_layers;
	start.layers = layers;
	start.has_planned_steps = planned_steps != 0;
	start.planned_steps = planned_steps;
	r->description_len = dnnfault__run_start__get_packed_size(&start);
	r->description = malloc(r->description_len);
	assert_non_null(r->description);
	dnnfault__run_start__pack(&start, r->description);
	struct store_stream *s = STORE_BATCH_PUSH(b, streams);
	s->id = (uint64_t)r->id;
	s->run = r->id;
	s->n_layers = (uint32_t)n_layers;
	s->host = strdup("node1");
	s->time = r->time;
}

/* The same with one Linear layer "fc". */
static inline void store_builder__one_layer_run(struct store_batch *b, struct store_run *r,
						const char *run_id, uint64_t planned_steps)
{
	Dnnfault__Layer layer = DNNFAULT__LAYER__INIT, *layers[] = {&layer};
	layer.name = "fc";
	layer.type = "Linear";
	store_builder__run(b, r, run_id, planned_steps, layers, 1);
}

#endif
