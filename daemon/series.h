/* A run's telemetry as columns, the input of the symptom detectors and of
 * feature extraction (training and serving use the same loader). Steps are
 * those of the run's lowest rank, in step order. */
#ifndef DNNFAULT_SERIES_H
#define DNNFAULT_SERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"

struct store_reader;

enum series_col { SERIES_LOSS, SERIES_ACCURACY, SERIES_LR, SERIES_INPUT_MEAN, SERIES_INPUT_STD,
		  SERIES_INPUT_MIN, SERIES_INPUT_MAX, SERIES_N_COLS };

enum epoch_col { EPOCH_TRAIN_LOSS, EPOCH_TRAIN_METRIC, EPOCH_VAL_LOSS, EPOCH_VAL_METRIC, EPOCH_N_COLS };

struct series_layer {
	char *name, *type, *activation;	/* activation "" when unknown */
	uint64_t param_count;
	uint64_t fan_in;		/* inputs per unit of its first weight, 0 if unknown */
	bool frozen;			/* parameters, none of them trainable */
};

struct series {
	size_t n, cap;			/* steps, and room for them */
	uint64_t n_stored;		/* steps stored when loaded: more than n when thinned */
	uint64_t *step;
	/* Samples the loader left out: steps that the training loop skipped
	 * on overflowing gradients (skipped_steps.h). */
	size_t n_skipped;
	uint64_t last_step;		/* the last loaded, left out or not */
	/* Layers the loader left out: frozen ones (store_series.c); and
	 * layer-samples it blanked: a layer frozen at some samples only. */
	size_t n_frozen, n_frozen_samples;
	/* col[c][i]; NaN where absent (has[c][i] == 0) or where NaN was sent. */
	double *col[SERIES_N_COLS];
	uint8_t *has[SERIES_N_COLS];
	size_t n_layers;
	struct series_layer *layers;
	float *stats;			/* n x n_layers x CHUNK_STATS_PER_LAYER */
	size_t n_epochs;
	uint64_t *epoch_step;
	double *epoch[EPOCH_N_COLS];	/* NaN where absent */
	/* Static description. */
	char *loss_fn, *optimizer;
	int task;			/* TaskKind */
	uint32_t num_classes, batch_size;
	uint64_t planned_steps, dataset_size;
	uint32_t planned_epochs;
	double initial_lr;		/* optimizer "lr" parameter, NaN if unknown */
	/* Other optimizer settings, NaN when the optimizer has none. */
	double momentum, weight_decay, beta1, beta2, alpha;
};

static inline float series__stat(const struct series *s, size_t i, size_t layer, int stat)
{
	return s->stats[(i * s->n_layers + layer) * CHUNK_STATS_PER_LAYER + (size_t)stat];
}

/* The first and last layer that sent a finite gradient norm at sample i;
 * false unless they are two different layers. */
bool series__grad_ends(const struct series *s, size_t i, size_t *first, size_t *last);

/* Appends one step; `layer_stats` holds n_layers x 16 floats or is NULL
 * (then the step's layer statistics are NaN). Returns 0 or -ENOMEM. */
int series__append(struct series *s, const Dnnfault__Step *step);

/* Copies sample `from` over sample `to` (to < from), for a pass that
 * leaves samples out. */
void series__move(struct series *s, size_t to, size_t from);

/* Leaves out the layers l with keep[l] false, from the description and
 * from every sample's statistics, in place; the others keep their order. */
void series__keep_layers(struct series *s, const bool *keep);

/* Makes room for n steps in all (after series__set_layers), so that a
 * loader that knows the count does not over-allocate by doubling. */
int series__reserve(struct series *s, size_t n);

/* Sets the layer description (copies). Must come before the first append. */
int series__set_layers(struct series *s, const struct series_layer *layers, size_t n);

int series__append_epoch(struct series *s, const Dnnfault__Epoch *e);

void series__free(struct series *s);

#endif
