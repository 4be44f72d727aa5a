#include "conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "dnnfault_config.h"
#include "frame.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

#define CONN_INITIAL_BUFFER (64 * 1024)

struct write_req {
	uv_write_t req;
	uint8_t *frame;
};

static void process(struct conn *c);
static void fire_drain(struct conn *c);

void conn__ref(struct conn *c)
{
	c->refs++;
}

/* Frees the connection once its handles are closed and nobody refers to it. */
static void maybe_free(struct conn *c)
{
	if (c->refs > 0 || c->open_handles > 0 || c->state != CONN_CLOSING)
		return;
	server__forget(c->srv, c);
	free(c->buf);
	free(c->acks);
	free(c);
}

void conn__unref(struct conn *c)
{
	c->refs--;
	maybe_free(c);
}

static void close_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->open_handles--;
	maybe_free(c);
}

void conn__close(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSING)
		return;
	log_debug("conn %llu (%s): closed: %s", (unsigned long long)c->id, c->peer, why);
	c->state = CONN_CLOSING;
	metrics.connections_open--;
	fire_drain(c);
	uv_close((uv_handle_t *)&c->handle.stream, close_cb);
	uv_close((uv_handle_t *)&c->handshake_timer, close_cb);
}

size_t conn__pending_output(const struct conn *c)
{
	return uv_stream_get_write_queue_size(&c->handle.stream);
}

static void fire_drain(struct conn *c)
{
	void (*cb)(void *) = c->drain_cb;
	c->drain_cb = NULL;
	if (cb != NULL)
		cb(c->drain_arg);
}

static bool drained(const struct conn *c)
{
	return c->state == CONN_CLOSING ||
	       conn__pending_output(c) <= (size_t)c->srv->cfg->max_output_bytes / 4;
}

void conn__on_drain(struct conn *c, void (*cb)(void *arg), void *arg)
{
	c->drain_cb = cb;
	c->drain_arg = arg;
	if (drained(c))
		fire_drain(c);
}

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = req->handle->data;
	free(w->frame);
	free(w);
	(void)status;	/* a failed write shows up as a read error / EOF */
	if (c->drain_cb != NULL && drained(c))
		fire_drain(c);
}

void conn__send_frame(struct conn *c, uint8_t *frame, size_t len)
{
	if (c->state == CONN_CLOSING) {
		free(frame);
		return;
	}
	struct write_req *w = malloc(sizeof *w);
	if (w == NULL) {
		free(frame);
		conn__close(c, "out of memory");
		return;
	}
	w->frame = frame;
	/* Judged on what was still unsent before this frame, so that one large
	 * reply (an export page, a long status) to a reading peer is fine. */
	size_t unsent = conn__pending_output(c);
	uv_buf_t buf = uv_buf_init((char *)frame, (unsigned)len);
	int rv = uv_write(&w->req, &c->handle.stream, &buf, 1, write_cb);
	if (rv != 0) {
		free(frame);
		free(w);
		conn__close(c, uv_strerror(rv));
		return;
	}
	/* Redis-style output limit: a peer that does not read its replies must
	 * not make the daemon buffer without bound. */
	if (unsent > (size_t)c->srv->cfg->max_output_bytes) {
		log_warning("conn %llu (%s): dropped: %zu reply bytes unread (max_output_bytes %lld)",
			    (unsigned long long)c->id, c->peer, unsent,
			    (long long)c->srv->cfg->max_output_bytes);
		metrics.connections_slow_reader++;
		metrics__count_error(DNNFAULT__ERROR_CODE__ERR_SLOW_READER);
		conn__close(c, "slow reader");
	}
}

void conn__send(struct conn *c, const Dnnfault__Envelope *env)
{
	uint8_t *frame;
	size_t len;
	if (c->state == CONN_CLOSING)
		return;
	if (frame__encode(env, FRAME_MAX_LIMIT, &frame, &len) != 0) {
		conn__close(c, "cannot encode reply");
		return;
	}
	conn__send_frame(c, frame, len);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	(void)status;
	conn__close(c, "after fatal error");
	conn__unref(c);
}

/* Stops reading and closes once the queued replies (the error) are out. */
static void close_after_write(struct conn *c)
{
	if (c->shutting_down || c->state == CONN_CLOSING)
		return;
	c->shutting_down = true;
	uv_read_stop(&c->handle.stream);
	c->reading = false;
	uv_shutdown_t *req = malloc(sizeof *req);
	if (req == NULL || uv_shutdown(req, &c->handle.stream, shutdown_cb) != 0) {
		free(req);
		conn__close(c, "after fatal error");
		return;
	}
	req->data = c;
	conn__ref(c);
}

void conn__send_error(struct conn *c, int code, bool fatal, uint64_t stream, uint64_t seq,
		      const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);

	metrics__count_error(code);
	/* A refused RunStart makes every later message of its stream an
	 * unknown stream's: one line per stream says it, the rest would
	 * flood the log (they are still answered and counted). */
	bool repeat = code == DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM && stream != 0 && stream == c->quiet_stream;
	if (code == DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM)
		c->quiet_stream = stream;
	if (repeat)
		log_debug("conn %llu (%s): %s", (unsigned long long)c->id, c->peer, message);
	else
		log_info("conn %llu (%s): %s%s", (unsigned long long)c->id, c->peer, message,
			 fatal ? "; closing" : "");
	Dnnfault__Error err = DNNFAULT__ERROR__INIT;
	err.code = code;
	err.message = message;
	if (stream != 0) {
		err.has_stream = err.has_seq = 1;
		err.stream = stream;
		err.seq = seq;
	}
	err.has_fatal = 1;
	err.fatal = fatal;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_ERROR;
	env.error = &err;
	conn__send(c, &env);
	if (fatal)
		close_after_write(c);
}

static void handshake_timeout_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->state != CONN_HANDSHAKE)
		return;
	metrics.handshake_timeouts++;
	conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_TIMEOUT, true, 0, 0,
			 "no Hello within %lld ms", (long long)c->srv->cfg->handshake_timeout_ms);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	/* Compact, then make room; frame__scan bounds what a frame may need. */
	if (c->start > 0) {
		memmove(c->buf, c->buf + c->start, c->len - c->start);
		c->len -= c->start;
		c->start = 0;
	}
	if (c->len == c->cap) {
		size_t max = (size_t)c->srv->cfg->max_frame_bytes + FRAME_HEADER_BYTES;
		size_t cap = c->cap * 2 < max ? c->cap * 2 : max;
		uint8_t *p = cap > c->cap ? realloc(c->buf, cap) : NULL;
		if (p == NULL) {
			*buf = uv_buf_init(NULL, 0);
			return;
		}
		c->buf = p;
		c->cap = cap;
	}
	*buf = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;
	(void)buf;
	if (nread == 0 || c->state == CONN_CLOSING)
		return;
	if (nread < 0) {
		if (nread == UV_ENOBUFS)
			conn__close(c, "out of memory for the receive buffer");
		else if (c->len > c->start && nread == UV_EOF)
			conn__close(c, "peer closed inside a frame (truncated)");
		else
			conn__close(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
		if (nread == UV_EOF && c->len > c->start)
			metrics.errors_bad_frame++;
		return;
	}
	c->len += (size_t)nread;
	metrics.bytes_received += (uint64_t)nread;
	process(c);
}

static void start_reading(struct conn *c)
{
	if (c->reading || c->state == CONN_CLOSING || c->shutting_down)
		return;
	if (uv_read_start(&c->handle.stream, alloc_cb, read_cb) == 0)
		c->reading = true;
}

static void stop_reading(struct conn *c)
{
	if (!c->reading)
		return;
	uv_read_stop(&c->handle.stream);
	c->reading = false;
}

void conn__start(struct conn *c)
{
	c->buf = malloc(CONN_INITIAL_BUFFER);
	if (c->buf == NULL) {
		conn__close(c, "out of memory");
		return;
	}
	c->cap = CONN_INITIAL_BUFFER;
	c->handle.stream.data = c;
	c->handshake_timer.data = c;
	uv_timer_start(&c->handshake_timer, handshake_timeout_cb,
		       (uint64_t)c->srv->cfg->handshake_timeout_ms, 0);
	start_reading(c);
}

void conn__pause(struct conn *c)
{
	if (!c->paused) {
		c->paused = true;
		metrics.reads_paused++;
	}
	stop_reading(c);
}

void conn__resume(struct conn *c)
{
	if (!c->paused || c->state == CONN_CLOSING)
		return;
	c->paused = false;
	process(c);
}

void conn__control_done(struct conn *c)
{
	c->busy = false;
	if (c->state != CONN_CLOSING)
		process(c);
}

static void on_hello(struct conn *c, const Dnnfault__Hello *h)
{
	const struct config *cfg = c->srv->cfg;
	if (h->protocol_version != PROTOCOL_VERSION) {
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_VERSION, true, 0, 0,
				 "protocol version %u not supported; this daemon speaks %d",
				 h->protocol_version, PROTOCOL_VERSION);
		return;
	}
	if (h->role != DNNFAULT__ROLE__ROLE_TRAINER && h->role != DNNFAULT__ROLE__ROLE_CONTROL) {
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_ROLE, true, 0, 0, "unknown role %d",
				 (int)h->role);
		return;
	}
	/* The Unix socket is guarded by its file mode; TCP by the token. */
	if (c->is_tcp && cfg->token[0] != '\0' &&
	    (h->token == NULL || strcmp(h->token, cfg->token) != 0)) {
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_AUTH, true, 0, 0,
				 "missing or wrong token");
		return;
	}
	uv_timer_stop(&c->handshake_timer);
	c->state = h->role == DNNFAULT__ROLE__ROLE_TRAINER ? CONN_TRAINER : CONN_CONTROL;

	Dnnfault__Welcome w = DNNFAULT__WELCOME__INIT;
	w.protocol_version = PROTOCOL_VERSION;
	w.server = "dnnfaultd/" DNNFAULT_VERSION;
	w.has_max_frame_bytes = w.has_max_layers = 1;
	w.max_frame_bytes = (uint32_t)cfg->max_frame_bytes;
	w.max_layers = (uint32_t)cfg->max_layers;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_WELCOME;
	env.welcome = &w;
	conn__send(c, &env);
}

/* Handles one decoded envelope. Returns true when the envelope was handed
 * over (control keeps it until the request is answered). */
static bool dispatch(struct conn *c, Dnnfault__Envelope *env)
{
	switch (c->state) {
	case CONN_HANDSHAKE:
		if (env->body_case == DNNFAULT__ENVELOPE__BODY_HELLO)
			on_hello(c, env->hello);
		else
			conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_HANDSHAKE_REQUIRED, true, 0, 0,
					 "%s before Hello", frame__body_name(env));
		return false;
	case CONN_TRAINER:
		switch (env->body_case) {
		case DNNFAULT__ENVELOPE__BODY_RUN_START:
		case DNNFAULT__ENVELOPE__BODY_STEP:
		case DNNFAULT__ENVELOPE__BODY_EPOCH:
		case DNNFAULT__ENVELOPE__BODY_RUN_END:
			ingest__message(c->srv->ingest, c, env);
			return false;
		default:
			break;
		}
		break;
	case CONN_CONTROL:
		if (env->body_case == DNNFAULT__ENVELOPE__BODY_REQUEST) {
			control__handle(c, env);
			return true;
		}
		break;
	case CONN_CLOSING:
		return false;
	}
	if (env->body_case == DNNFAULT__ENVELOPE__BODY__NOT_SET)
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_UNKNOWN_MESSAGE, false, 0, 0,
				 "unknown message type");
	else
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_ROLE, false, 0, 0,
				 "%s is not allowed on a %s connection", frame__body_name(env),
				 c->state == CONN_TRAINER ? "trainer" : "control");
	return false;
}

/* Parses and dispatches every whole frame in the buffer, unless something
 * asks to wait (backpressure, a control request in progress). */
static void process(struct conn *c)
{
	const size_t max = (size_t)c->srv->cfg->max_frame_bytes;
	while (c->state != CONN_CLOSING && !c->shutting_down && !c->paused && !c->busy) {
		uint32_t n;
		enum frame_scan r = frame__scan(c->buf + c->start, c->len - c->start, max, &n);
		if (r == FRAME_NEED_MORE)
			break;
		if (r == FRAME_EMPTY || r == FRAME_TOO_LARGE) {
			if (r == FRAME_EMPTY)
				conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_BAD_FRAME, true, 0, 0,
						 "frame with a length of zero");
			else
				conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_FRAME_TOO_LARGE, true, 0, 0,
						 "frame of %u bytes exceeds max_frame_bytes %zu", n, max);
			return;
		}
		metrics.frames_received++;
		Dnnfault__Envelope *env = frame__decode(c->buf + c->start + FRAME_HEADER_BYTES, n);
		c->start += FRAME_HEADER_BYTES + n;
		if (env == NULL) {
			conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_BAD_MESSAGE, true, 0, 0,
					 "frame of %u bytes is not a valid message", n);
			return;
		}
		if (!dispatch(c, env))
			frame__free(env);
	}
	if (c->start == c->len)
		c->start = c->len = 0;
	ingest__kick(c->srv->ingest);
	if (c->paused || c->busy || c->shutting_down)
		stop_reading(c);
	else
		start_reading(c);
}
