#include "chunk.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "chunk records are stored in host order, which must be little-endian"
#endif

/* A step of a run without layers has no layer_stats array at all (NULL),
 * and memcpy from NULL is undefined even for zero bytes. */
static uint8_t *put(uint8_t *p, const void *v, size_t n)
{
	if (n > 0)
		memcpy(p, v, n);
	return p + n;
}

size_t chunk__write_record(const Dnnfault__Step *s, uint8_t *out)
{
	uint32_t present = (s->has_time ? CHUNK_HAS_TIME : 0) |
			   (s->has_loss ? CHUNK_HAS_LOSS : 0) |
			   (s->has_accuracy ? CHUNK_HAS_ACCURACY : 0) |
			   (s->has_lr ? CHUNK_HAS_LR : 0) |
			   (s->has_input_mean ? CHUNK_HAS_INPUT_MEAN : 0) |
			   (s->has_input_std ? CHUNK_HAS_INPUT_STD : 0) |
			   (s->has_input_min ? CHUNK_HAS_INPUT_MIN : 0) |
			   (s->has_input_max ? CHUNK_HAS_INPUT_MAX : 0) |
			   (s->has_dropped ? CHUNK_HAS_DROPPED : 0);
	uint32_t n_layers = (uint32_t)(s->n_layer_stats / CHUNK_STATS_PER_LAYER);
	uint8_t *p = out;
	p = put(p, &s->step, 8);
	p = put(p, &s->time, 8);
	p = put(p, &present, 4);
	p = put(p, &n_layers, 4);
	p = put(p, &s->loss, 8);
	p = put(p, &s->accuracy, 8);
	p = put(p, &s->lr, 8);
	p = put(p, &s->input_mean, 8);
	p = put(p, &s->input_std, 8);
	p = put(p, &s->input_min, 8);
	p = put(p, &s->input_max, 8);
	p = put(p, &s->dropped, 8);
	p = put(p, s->layer_stats, (size_t)n_layers * CHUNK_STATS_PER_LAYER * sizeof(float));
	return (size_t)(p - out);
}

size_t chunk__read_record(const uint8_t *in, size_t len, Dnnfault__Step *s,
			  float *layer_stats, size_t max_layers)
{
	if (len < CHUNK_RECORD_HEADER)
		return 0;
	uint32_t present, n_layers;
	memcpy(&n_layers, in + 20, 4);
	if (n_layers > max_layers || len < chunk__record_size(n_layers))
		return 0;
	memcpy(&s->step, in, 8);
	memcpy(&s->time, in + 8, 8);
	memcpy(&present, in + 16, 4);
	memcpy(&s->loss, in + 24, 8);
	memcpy(&s->accuracy, in + 32, 8);
	memcpy(&s->lr, in + 40, 8);
	memcpy(&s->input_mean, in + 48, 8);
	memcpy(&s->input_std, in + 56, 8);
	memcpy(&s->input_min, in + 64, 8);
	memcpy(&s->input_max, in + 72, 8);
	memcpy(&s->dropped, in + 80, 8);
	s->has_time = !!(present & CHUNK_HAS_TIME);
	s->has_loss = !!(present & CHUNK_HAS_LOSS);
	s->has_accuracy = !!(present & CHUNK_HAS_ACCURACY);
	s->has_lr = !!(present & CHUNK_HAS_LR);
	s->has_input_mean = !!(present & CHUNK_HAS_INPUT_MEAN);
	s->has_input_std = !!(present & CHUNK_HAS_INPUT_STD);
	s->has_input_min = !!(present & CHUNK_HAS_INPUT_MIN);
	s->has_input_max = !!(present & CHUNK_HAS_INPUT_MAX);
	s->has_dropped = !!(present & CHUNK_HAS_DROPPED);
	s->n_layer_stats = (size_t)n_layers * CHUNK_STATS_PER_LAYER;
	memcpy(layer_stats, in + CHUNK_RECORD_HEADER, s->n_layer_stats * sizeof(float));
	s->layer_stats = layer_stats;
	return chunk__record_size(n_layers);
}
