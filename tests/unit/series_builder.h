/* The hand-built series of the detector, baseline and feature tests: a
 * healthy-looking 3-layer classifier, one sample at a time. Include after
 * cmocka.h. */
#ifndef DNNFAULT_TEST_SERIES_BUILDER_H
#define DNNFAULT_TEST_SERIES_BUILDER_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "series.h"

#define L 3
#define S(name) DNNFAULT__LAYER_STAT__##name

struct builder {
	struct series s;
	float stats[L * 16];
	Dnnfault__Step step;
};

/* A healthy-looking classifier: 3 Linear layers (relu, relu, none),
 * CrossEntropyLoss, Adam at 1e-3, losses falling. */
static inline void begin(struct builder *b)
{
	memset(b, 0, sizeof *b);
	struct series_layer layers[L] = {
		{.name = "fc1", .type = "Linear", .activation = "relu", .param_count = 100},
		{.name = "fc2", .type = "Linear", .activation = "relu", .param_count = 100},
		{.name = "fc3", .type = "Linear", .activation = "none", .param_count = 10},
	};
	assert_int_equal(series__set_layers(&b->s, layers, L), 0);
	b->s.task = DNNFAULT__TASK_KIND__TASK_CLASSIFICATION;
	b->s.num_classes = 10;
	b->s.loss_fn = strdup("CrossEntropyLoss");
	b->s.optimizer = strdup("Adam");
	assert_non_null(b->s.loss_fn);
	assert_non_null(b->s.optimizer);
	b->s.initial_lr = 1e-3;
	b->s.momentum = b->s.weight_decay = b->s.beta1 = b->s.alpha = NAN;
}

static inline void set_healthy(struct builder *b, uint64_t i)
{
	for (int l = 0; l < L; l++) {
		float *x = &b->stats[l * 16];
		memset(x, 0, 16 * sizeof *x);
		x[S(WEIGHT_NORM)] = 3.0f + 0.01f * (float)i;
		x[S(WEIGHT_MEAN)] = 0.001f * (float)i;
		x[S(WEIGHT_STD)] = 0.1f + 0.001f * (float)i;
		x[S(WEIGHT_MAX_ABS)] = 0.5f;
		x[S(GRAD_NORM)] = 0.1f;
		x[S(GRAD_MAX_ABS)] = 0.01f;
		x[S(GRAD_ZERO_FRAC)] = 0.1f;
		x[S(UPDATE_RATIO)] = 1e-3f;
		x[S(ACT_NONPOS_FRAC)] = 0.4f;
		x[S(ACT_SATURATED_FRAC)] = 0.0f;
	}
	Dnnfault__Step *m = &b->step;
	dnnfault__step__init(m);
	m->step = i * 10;
	m->has_loss = 1;
	m->loss = 2.0 / (1.0 + (double)i);
	m->has_input_mean = m->has_input_std = m->has_input_min = m->has_input_max = 1;
	m->input_mean = 0.0;
	m->input_std = 1.0;
	m->input_min = -2.5;
	m->input_max = 2.5;
	m->n_layer_stats = L * 16;
	m->layer_stats = b->stats;
}

static inline void push(struct builder *b)
{
	assert_int_equal(series__append(&b->s, &b->step), 0);
}

#endif
