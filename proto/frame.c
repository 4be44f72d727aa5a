#include "frame.h"

#include <errno.h>
#include <stdlib.h>

int frame__encode(const Dnnfault__Envelope *env, size_t max_payload,
		  uint8_t **out, size_t *out_len)
{
	size_t payload = dnnfault__envelope__get_packed_size(env);
	if (payload > max_payload || payload > UINT32_MAX)
		return -EMSGSIZE;
	uint8_t *buf = malloc(FRAME_HEADER_BYTES + payload);
	if (buf == NULL)
		return -ENOMEM;
	*out_len = frame__write(env, buf);
	*out = buf;
	return 0;
}

size_t frame__size(const Dnnfault__Envelope *env)
{
	return FRAME_HEADER_BYTES + dnnfault__envelope__get_packed_size(env);
}

size_t frame__write(const Dnnfault__Envelope *env, uint8_t *buf)
{
	size_t payload = dnnfault__envelope__pack(env, buf + FRAME_HEADER_BYTES);
	frame__put_len(buf, (uint32_t)payload);
	return FRAME_HEADER_BYTES + payload;
}

Dnnfault__Envelope *frame__decode(const uint8_t *payload, size_t len)
{
	return dnnfault__envelope__unpack(NULL, len, payload);
}

void frame__free(Dnnfault__Envelope *env)
{
	if (env != NULL)
		dnnfault__envelope__free_unpacked(env, NULL);
}

enum frame_scan frame__scan(const uint8_t *buf, size_t len, size_t max_payload,
			    uint32_t *payload_len)
{
	if (len < FRAME_HEADER_BYTES)
		return FRAME_NEED_MORE;
	uint32_t n = frame__get_len(buf);
	*payload_len = n;
	if (n == 0)
		return FRAME_EMPTY;
	if (n > max_payload)
		return FRAME_TOO_LARGE;
	if (len - FRAME_HEADER_BYTES < n)
		return FRAME_NEED_MORE;
	return FRAME_READY;
}

const char *frame__body_name(const Dnnfault__Envelope *env)
{
	switch (env->body_case) {
	case DNNFAULT__ENVELOPE__BODY_HELLO: return "hello";
	case DNNFAULT__ENVELOPE__BODY_WELCOME: return "welcome";
	case DNNFAULT__ENVELOPE__BODY_RUN_START: return "run_start";
	case DNNFAULT__ENVELOPE__BODY_STEP: return "step";
	case DNNFAULT__ENVELOPE__BODY_EPOCH: return "epoch";
	case DNNFAULT__ENVELOPE__BODY_RUN_END: return "run_end";
	case DNNFAULT__ENVELOPE__BODY_ACK: return "ack";
	case DNNFAULT__ENVELOPE__BODY_ERROR: return "error";
	case DNNFAULT__ENVELOPE__BODY_REQUEST: return "request";
	case DNNFAULT__ENVELOPE__BODY_RESPONSE: return "response";
	default: return "unknown";
	}
}
