/* Framing of the wire protocol: a 4-byte big-endian payload length, then a
 * serialized Envelope. Shared by the daemon and the client library. */
#ifndef DNNFAULT_FRAME_H
#define DNNFAULT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "dnnfault.pb-c.h"

#define FRAME_HEADER_BYTES 4
#define PROTOCOL_VERSION 1

/* Hard bounds for the configurable maximum frame size. */
#define FRAME_MIN_LIMIT 1024u
#define FRAME_MAX_LIMIT (256u * 1024u * 1024u)

static inline uint32_t frame__get_len(const uint8_t header[FRAME_HEADER_BYTES])
{
	return (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 |
	       (uint32_t)header[2] << 8 | (uint32_t)header[3];
}

static inline void frame__put_len(uint8_t header[FRAME_HEADER_BYTES], uint32_t len)
{
	header[0] = (uint8_t)(len >> 24);
	header[1] = (uint8_t)(len >> 16);
	header[2] = (uint8_t)(len >> 8);
	header[3] = (uint8_t)len;
}

/* Serializes `env` with its header into a new malloc'd buffer that the
 * caller frees. Returns 0, -ENOMEM, or -EMSGSIZE when the payload would be
 * larger than `max_payload`. */
int frame__encode(const Dnnfault__Envelope *env, size_t max_payload,
		  uint8_t **out, size_t *out_len);

/* Same, into caller memory: writes header + payload at `buf` (which must
 * hold frame__size(env) bytes) and returns the number of bytes written. */
size_t frame__size(const Dnnfault__Envelope *env);
size_t frame__write(const Dnnfault__Envelope *env, uint8_t *buf);

/* Parses a payload (without header). Returns NULL when it is not a valid
 * Envelope. Free with frame__free. */
Dnnfault__Envelope *frame__decode(const uint8_t *payload, size_t len);
void frame__free(Dnnfault__Envelope *env);

/* Result of scanning a receive buffer for the next frame. */
enum frame_scan {
	FRAME_NEED_MORE = 0,	/* not a whole frame yet */
	FRAME_READY,		/* *payload_len bytes follow the header */
	FRAME_EMPTY,		/* length prefix of zero: a protocol error */
	FRAME_TOO_LARGE,	/* length prefix above the limit */
};

/* Looks at `len` buffered bytes and says whether a whole frame is there;
 * checks the announced size against `max_payload` before anything is
 * allocated for it. */
enum frame_scan frame__scan(const uint8_t *buf, size_t len, size_t max_payload,
			    uint32_t *payload_len);

/* Human name of an envelope's body ("step", "hello", ...), for log lines. */
const char *frame__body_name(const Dnnfault__Envelope *env);

#endif
