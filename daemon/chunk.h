/* The stored form of sampled steps: fixed-size little-endian records packed
 * into one BLOB per chunk of consecutive steps of one stream. A record:
 *
 *   u64 step | f64 time | u32 present | u32 n_layers |
 *   f64 loss, accuracy, lr, input_mean, input_std, input_min, input_max |
 *   u64 dropped | f32 layer_stats[n_layers * 16]
 *
 * Pure functions, no I/O: used by the ingest path and by export. */
#ifndef DNNFAULT_CHUNK_H
#define DNNFAULT_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "dnnfault.pb-c.h"

#define CHUNK_RECORD_HEADER 88
#define CHUNK_STATS_PER_LAYER 16

/* Bits of the record's `present` word. */
enum chunk_present {
	CHUNK_HAS_TIME = 1 << 0,
	CHUNK_HAS_LOSS = 1 << 1,
	CHUNK_HAS_ACCURACY = 1 << 2,
	CHUNK_HAS_LR = 1 << 3,
	CHUNK_HAS_INPUT_MEAN = 1 << 4,
	CHUNK_HAS_INPUT_STD = 1 << 5,
	CHUNK_HAS_INPUT_MIN = 1 << 6,
	CHUNK_HAS_INPUT_MAX = 1 << 7,
	CHUNK_HAS_DROPPED = 1 << 8,
};

static inline size_t chunk__record_size(size_t n_layers)
{
	return CHUNK_RECORD_HEADER + n_layers * CHUNK_STATS_PER_LAYER * sizeof(float);
}

/* Writes `step` as one record at `out`, which holds chunk__record_size()
 * bytes for the step's layer count. Returns the bytes written. */
size_t chunk__write_record(const Dnnfault__Step *step, uint8_t *out);

/* Decodes the record at `in` (of `len` bytes at least) into `step`, whose
 * layer_stats must have room for `max_layers` layers. Returns the record's
 * size, or 0 when it is cut or holds more layers. */
size_t chunk__read_record(const uint8_t *in, size_t len, Dnnfault__Step *step,
			  float *layer_stats, size_t max_layers);

#endif
