/* A blocking connection to dnnfaultd: connect with a timeout, handshake,
 * send whole frames, receive frames. Shared by the public API (dnnfault.c)
 * and dnnfaultctl, which talks the control role through it. */
#ifndef DNNFAULT_CONN_H
#define DNNFAULT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"
#include "dnnfault.h"
#include "frame.h"

/* Largest frame the client accepts from the daemon, and sends when the
 * daemon states no lower limit. */
#define CONN_MAX_FRAME (64u * 1024u * 1024u)

struct dnnfault_conn {
	int fd;
	char address[ADDRESS_PATH_MAX + 16];	/* canonical text, for messages */
	char err[512];
	uint8_t *rx;		/* received bytes; rx[rx_off..rx_len) unread */
	size_t rx_off, rx_len, rx_cap;
	size_t max_send;	/* the daemon's max_frame_bytes, or ours */
	uint32_t max_layers;	/* 0: the daemon did not say */
	char server[64];	/* Welcome.server */
	bool eof;
};

/* Allocates a connection and connects to `a` within timeout_ms (-1: the
 * system's own timeout). Returns 0, or a negative errno with the reason in
 * (*out)->err; *out is NULL only for -ENOMEM. The caller frees with
 * conn__free() either way. */
int conn__open(const struct address *a, int timeout_ms, struct dnnfault_conn **out);

/* Sends Hello and waits for Welcome. Returns 0; -ETIMEDOUT when nothing
 * came back in time; -EPIPE when the daemon closed; -EACCES, -EPROTONOSUPPORT
 * or -EPROTO when it refused (ERR_AUTH, ERR_VERSION, anything else). The
 * message of a refusal names the daemon; the others are reasons to append
 * to "cannot reach dnnfaultd at ADDR: ". */
int conn__handshake(struct dnnfault_conn *c, int role, const char *token,
		    int timeout_ms);

/* The two halves of conn__handshake(), for callers that wait for the
 * answer themselves (the asynchronous client, which must stay stoppable):
 * send Hello; apply the daemon's first frame (Welcome: 0, Error: the
 * refusal codes above, anything else: -EPROTO). */
int conn__send_hello(struct dnnfault_conn *c, int role, const char *token);
int conn__welcome(struct dnnfault_conn *c, const Dnnfault__Envelope *env);

/* Whether a conn__handshake() result means the daemon answered "no". */
bool conn__refused(int rv);

/* Writes all `len` bytes, retrying on EINTR and short writes. Returns 0 or
 * a negative errno (-EPIPE when the daemon is gone). */
int conn__send(struct dnnfault_conn *c, const uint8_t *buf, size_t len);

/* Encodes and sends one envelope. */
int conn__send_envelope(struct dnnfault_conn *c, const Dnnfault__Envelope *env);

/* Waits up to timeout_ms (0: no waiting, -1: forever) for the next frame.
 * Returns 1 with *out set (free with frame__free), 0 when none arrived in
 * time, -EPIPE when the daemon closed the connection, -EPROTO for a frame
 * that is empty, too large or not an Envelope, or another negative errno. */
int conn__recv(struct dnnfault_conn *c, int timeout_ms, Dnnfault__Envelope **out);

/* Records a message for the user; always returns `rv` for tail calls. */
int conn__fail(struct dnnfault_conn *c, int rv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void conn__free(struct dnnfault_conn *c);

/* Milliseconds since an arbitrary point, for deadlines. */
int64_t conn__now_ms(void);

/* What is left of timeout_ms started at `start` (-1 stays -1, never < 0). */
int conn__remaining(int timeout_ms, int64_t start);

#endif
