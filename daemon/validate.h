/* Checks of incoming telemetry against the protocol and the configured
 * limits. Pure functions: no state, no I/O. Each returns 0 when the message
 * is acceptable, else a Dnnfault__ErrorCode with a message in `why`. */
#ifndef DNNFAULT_VALIDATE_H
#define DNNFAULT_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "dnnfault.pb-c.h"

struct validate_limits {
	uint32_t max_layers;
	uint32_t max_name_bytes;
	uint32_t max_tags;
	uint32_t max_world_size;
};

/* Steps, drop counts, epochs and times above these are not telemetry but
 * corruption. */
#define VALIDATE_MAX_STEP (UINT64_C(1) << 53)
#define VALIDATE_MAX_EPOCH 100000000u

int validate__run_start(const Dnnfault__RunStart *m, const struct validate_limits *l,
			char *why, size_t why_len);

/* `n_layers` is the layer count its RunStart declared. */
int validate__step(const Dnnfault__Step *m, uint32_t n_layers, const struct validate_limits *l,
		   char *why, size_t why_len);

int validate__epoch(const Dnnfault__Epoch *m, char *why, size_t why_len);
int validate__run_end(const Dnnfault__RunEnd *m, char *why, size_t why_len);

/* A reference run's name or id (RunStart.reference, ReferenceRequest): the
 * rules of run_name. NULL or "" (none) is acceptable. */
int validate__reference(const char *ref, const struct validate_limits *l, char *why, size_t why_len);

/* True when `id` is one of the root-cause labels of design.md. */
int validate__is_cause(const char *id);

/* Length of the valid UTF-8 sequence at s (at most n bytes; no overlong
 * forms, surrogates or code points past U+10FFFF), 0 if there is none. */
size_t validate__utf8_len(const unsigned char *s, size_t n);

#endif
