#include "series.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Grows every per-step column together; they share one capacity. */
static int grow_steps(struct series *s, size_t cap)
{
	void *p;
	if ((p = realloc(s->step, cap * sizeof *s->step)) == NULL)
		return -ENOMEM;
	s->step = p;
	for (int c = 0; c < SERIES_N_COLS; c++) {
		if ((p = realloc(s->col[c], cap * sizeof *s->col[c])) == NULL)
			return -ENOMEM;
		s->col[c] = p;
		if ((p = realloc(s->has[c], cap * sizeof *s->has[c])) == NULL)
			return -ENOMEM;
		s->has[c] = p;
	}
	size_t per = s->n_layers * CHUNK_STATS_PER_LAYER;
	if (per > 0) {
		if ((p = realloc(s->stats, cap * per * sizeof *s->stats)) == NULL)
			return -ENOMEM;
		s->stats = p;
	}
	return 0;
}

bool series__grad_ends(const struct series *s, size_t i, size_t *first, size_t *last)
{
	bool any = false;
	for (size_t l = 0; l < s->n_layers; l++) {
		if (!isfinite(series__stat(s, i, l, DNNFAULT__LAYER_STAT__GRAD_NORM)))
			continue;
		if (!any)
			*first = l;
		*last = l;
		any = true;
	}
	return any && *last > *first;
}

int series__set_layers(struct series *s, const struct series_layer *layers, size_t n)
{
	if (s->n > 0 || s->layers != NULL)
		return -EINVAL;
	s->layers = calloc(n ? n : 1, sizeof *s->layers);
	if (s->layers == NULL)
		return -ENOMEM;
	s->n_layers = n;
	for (size_t i = 0; i < n; i++) {
		s->layers[i].name = strdup(layers[i].name ? layers[i].name : "");
		s->layers[i].type = strdup(layers[i].type ? layers[i].type : "");
		s->layers[i].activation = strdup(layers[i].activation ? layers[i].activation : "");
		s->layers[i].param_count = layers[i].param_count;
		s->layers[i].fan_in = layers[i].fan_in;
		s->layers[i].frozen = layers[i].frozen;
		if (!s->layers[i].name || !s->layers[i].type || !s->layers[i].activation)
			return -ENOMEM;
	}
	return 0;
}

int series__reserve(struct series *s, size_t n)
{
	if (n <= s->cap)
		return 0;
	int rv = grow_steps(s, n);
	if (rv == 0)
		s->cap = n;
	return rv;
}

int series__append(struct series *s, const Dnnfault__Step *m)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		int rv = grow_steps(s, cap);
		if (rv != 0)
			return rv;
		s->cap = cap;
	}
	size_t i = s->n;
	const double v[SERIES_N_COLS] = {m->loss, m->accuracy, m->lr, m->input_mean, m->input_std,
					 m->input_min, m->input_max};
	const int has[SERIES_N_COLS] = {m->has_loss, m->has_accuracy, m->has_lr, m->has_input_mean,
					m->has_input_std, m->has_input_min, m->has_input_max};
	s->step[i] = m->step;
	for (int c = 0; c < SERIES_N_COLS; c++) {
		s->has[c][i] = (uint8_t)has[c];
		s->col[c][i] = has[c] ? v[c] : NAN;
	}
	size_t per = s->n_layers * CHUNK_STATS_PER_LAYER;
	float *dst = s->stats + i * per;
	if (m->n_layer_stats == per)
		memcpy(dst, m->layer_stats, per * sizeof *dst);
	else
		for (size_t k = 0; k < per; k++)
			dst[k] = NAN;
	s->n++;
	return 0;
}

void series__move(struct series *s, size_t to, size_t from)
{
	s->step[to] = s->step[from];
	for (int c = 0; c < SERIES_N_COLS; c++) {
		s->col[c][to] = s->col[c][from];
		s->has[c][to] = s->has[c][from];
	}
	size_t per = s->n_layers * CHUNK_STATS_PER_LAYER;
	memcpy(s->stats + to * per, s->stats + from * per, per * sizeof *s->stats);
}

void series__keep_layers(struct series *s, const bool *keep)
{
	size_t kept = 0;
	for (size_t i = 0; i < s->n; i++)
		for (size_t l = 0; l < s->n_layers; l++)
			if (keep[l])
				memmove(s->stats + kept++ * CHUNK_STATS_PER_LAYER,
					s->stats + (i * s->n_layers + l) * CHUNK_STATS_PER_LAYER,
					CHUNK_STATS_PER_LAYER * sizeof *s->stats);
	size_t n = 0;
	for (size_t l = 0; l < s->n_layers; l++) {
		if (keep[l]) {
			s->layers[n++] = s->layers[l];
			continue;
		}
		free(s->layers[l].name);
		free(s->layers[l].type);
		free(s->layers[l].activation);
	}
	s->n_layers = n;
}

int series__append_epoch(struct series *s, const Dnnfault__Epoch *e)
{
	size_t n = s->n_epochs + 1;
	void *p = realloc(s->epoch_step, n * sizeof *s->epoch_step);
	if (p == NULL)
		return -ENOMEM;
	s->epoch_step = p;
	for (int c = 0; c < EPOCH_N_COLS; c++) {
		if ((p = realloc(s->epoch[c], n * sizeof *s->epoch[c])) == NULL)
			return -ENOMEM;
		s->epoch[c] = p;
	}
	s->epoch_step[s->n_epochs] = e->has_step ? e->step : 0;
	s->epoch[EPOCH_TRAIN_LOSS][s->n_epochs] = e->has_train_loss ? e->train_loss : NAN;
	s->epoch[EPOCH_TRAIN_METRIC][s->n_epochs] = e->has_train_metric ? e->train_metric : NAN;
	s->epoch[EPOCH_VAL_LOSS][s->n_epochs] = e->has_val_loss ? e->val_loss : NAN;
	s->epoch[EPOCH_VAL_METRIC][s->n_epochs] = e->has_val_metric ? e->val_metric : NAN;
	s->n_epochs = n;
	return 0;
}

void series__free(struct series *s)
{
	free(s->step);
	for (int c = 0; c < SERIES_N_COLS; c++) {
		free(s->col[c]);
		free(s->has[c]);
	}
	for (size_t i = 0; s->layers != NULL && i < s->n_layers; i++) {
		free(s->layers[i].name);
		free(s->layers[i].type);
		free(s->layers[i].activation);
	}
	free(s->layers);
	free(s->stats);
	free(s->epoch_step);
	for (int c = 0; c < EPOCH_N_COLS; c++)
		free(s->epoch[c]);
	free(s->loss_fn);
	free(s->optimizer);
	memset(s, 0, sizeof *s);
}
