/* One client connection: reads length-prefixed frames, performs the
 * handshake, hands trainer messages to ingest and control requests to
 * control, and writes replies. Lives on the event-loop thread. */
#ifndef DNNFAULT_CONN_H
#define DNNFAULT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "dnnfault.pb-c.h"

struct server;

enum conn_state {
	CONN_HANDSHAKE,		/* waiting for Hello */
	CONN_TRAINER,
	CONN_CONTROL,
	CONN_CLOSING,		/* handles are closing; nothing more is read or sent */
};

/* Largest stream count one Ack of a connection carries. */
struct conn_ack {
	uint64_t stream, seq;
};

struct conn {
	union {
		uv_stream_t stream;
		uv_pipe_t pipe;
		uv_tcp_t tcp;
	} handle;
	uv_timer_t handshake_timer;
	struct server *srv;
	enum conn_state state;
	bool is_tcp, is_loopback;
	char peer[64];
	uint64_t quiet_stream;	/* unknown stream already logged (conn__send_error) */
	uint64_t id;

	/* Receive buffer: [start, len) holds unparsed bytes. */
	uint8_t *buf;
	size_t start, len, cap;

	size_t inflight;	/* messages handed to ingest, not yet acknowledged */
	bool reading;		/* uv_read_start is active */
	bool paused;		/* stopped for backpressure; resume with conn__resume */
	bool busy;		/* a control request is being answered */
	bool shutting_down;	/* a fatal error was sent; close once it is written */

	/* Ack aggregation between commits (see ingest.c). */
	struct conn_ack *acks;
	size_t n_acks, cap_acks;
	bool in_ack_list;
	struct conn *next_ack;

	/* Called once the unsent output falls to a quarter of max_output_bytes,
	 * or when the connection closes (control's export pacing). */
	void (*drain_cb)(void *arg);
	void *drain_arg;

	int refs;		/* ingest and control references; freed at 0 */
	int open_handles;
	struct conn *prev, *next;	/* the server's list */
};

/* Takes over an accepted handle (already initialised by the server) and
 * starts reading and the handshake timer. */
void conn__start(struct conn *c);

/* Sends one envelope; frees nothing of `env`. A connection whose unsent
 * output grows past max_output_bytes is dropped as a slow reader. */
void conn__send(struct conn *c, const Dnnfault__Envelope *env);

/* Sends already framed bytes; takes ownership of `frame` (malloc'd). */
void conn__send_frame(struct conn *c, uint8_t *frame, size_t len);

/* Sends an Error. With `fatal`, the connection is closed once it is out. */
void conn__send_error(struct conn *c, int code, bool fatal, uint64_t stream, uint64_t seq,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Closes the connection now (no more reads or writes). Safe to call twice. */
void conn__close(struct conn *c, const char *why);

/* Reading pauses when ingest has too much of this connection in flight. */
void conn__pause(struct conn *c);
void conn__resume(struct conn *c);

/* A control request finished: process what was buffered meanwhile. */
void conn__control_done(struct conn *c);

void conn__ref(struct conn *c);
void conn__unref(struct conn *c);

/* Calls cb(arg) once the output has drained (see drain_cb). */
void conn__on_drain(struct conn *c, void (*cb)(void *arg), void *arg);

/* Bytes waiting to be written to the peer. */
size_t conn__pending_output(const struct conn *c);

#endif
