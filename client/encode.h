/* Turns the public structs of dnnfault.h into wire frames. Pure: no I/O, the
 * caller supplies the time and the stream's numbers. */
#ifndef DNNFAULT_ENCODE_H
#define DNNFAULT_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "dnnfault.h"
#include "frame.h"

/* A frame ready to send: header + serialized Envelope, malloc'd. */
struct encode_frame {
	uint8_t *buf;
	size_t len;
};

/* Where a telemetry message belongs: its stream, sequence number, the time
 * to use when the struct says "now" (0), and the largest payload allowed. */
struct encode_ctx {
	uint64_t stream;
	uint64_t seq;
	double now;
	size_t max_payload;
};

/* Each returns 0 and fills *out (free with encode__free), or -EINVAL for a
 * struct that breaks the contract of dnnfault.h (missing run_id or layer
 * name, stats without a pointer), -EMSGSIZE when the frame would exceed
 * ctx->max_payload, or -ENOMEM. */
int encode__hello(int role, const char *client, const char *token,
		  struct encode_frame *out);
int encode__run_start(const struct dnnfault_run_info *info,
		      const struct encode_ctx *ctx, struct encode_frame *out);
int encode__step(const struct dnnfault_step *step, const struct encode_ctx *ctx,
		 struct encode_frame *out);
int encode__epoch(const struct dnnfault_epoch *epoch, const struct encode_ctx *ctx,
		  struct encode_frame *out);
int encode__run_end(const struct dnnfault_run_end *end,
		    const struct encode_ctx *ctx, struct encode_frame *out);

/* Any envelope (control requests), same errors. */
int encode__envelope(const Dnnfault__Envelope *env, size_t max_payload,
		     struct encode_frame *out);

void encode__free(struct encode_frame *f);

/* A fresh random stream id, never 0. Returns 0 or a negative errno when the
 * kernel has no randomness to give. */
int encode__stream_id(uint64_t *out);

#endif
