#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dnnfault_config.h"
#include "encode.h"

/* How much a read asks for at least; control answers come in big chunks. */
#define CONN_READ_CHUNK (64u * 1024u)

int64_t conn__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int conn__remaining(int timeout_ms, int64_t start)
{
	if (timeout_ms < 0)
		return -1;
	int64_t left = timeout_ms - (conn__now_ms() - start);
	return left > 0 ? (int)left : 0;
}

int conn__fail(struct dnnfault_conn *c, int rv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	return rv;
}

/* Waits for `events` on fd. Returns 1 when ready, 0 on timeout, or a
 * negative errno; EINTR restarts with what is left of the timeout. */
static int conn__wait(int fd, short events, int timeout_ms)
{
	int64_t start = conn__now_ms();
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, conn__remaining(timeout_ms, start));
		if (n >= 0)
			return n > 0;
		if (errno != EINTR)
			return -errno;
	}
}

/* A Unix socket connects at once or fails; SO_SNDTIMEO bounds the one case
 * where it blocks (the listener's backlog is full). */
static int conn__open_unix(struct dnnfault_conn *c, const struct address *a, int timeout_ms)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, a->path, sizeof sa.sun_path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return conn__fail(c, -errno, "socket: %s", strerror(errno));
	if (timeout_ms > 0) {
		struct timeval tv = {.tv_sec = timeout_ms / 1000,
				     .tv_usec = (timeout_ms % 1000) * 1000};
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	int rv;
	do
		rv = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
	while (rv < 0 && errno == EINTR);
	if (rv < 0)
		return conn__fail(c, -errno, "%s", strerror(errno));
	struct timeval none = {0};
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
	return 0;
}

/* Non-blocking connect to one resolved address, bounded by timeout_ms;
 * leaves a blocking socket in c->fd. Returns 0 or a negative errno. */
static int conn__try_tcp(struct dnnfault_conn *c, const struct addrinfo *ai, int timeout_ms)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			ai->ai_protocol);
	if (fd < 0)
		return -errno;
	int rv = 0;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS && errno != EINTR) {
			rv = -errno;
			goto err_after_socket;
		}
		rv = conn__wait(fd, POLLOUT, timeout_ms);
		if (rv == 0)
			rv = -ETIMEDOUT;
		if (rv < 0)
			goto err_after_socket;
		int soerr = 0;
		socklen_t len = sizeof soerr;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
		if (soerr != 0) {
			rv = -soerr;
			goto err_after_socket;
		}
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	/* Frames are small and acknowledged; don't let Nagle delay them. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	return 0;

err_after_socket:
	close(fd);
	return rv;
}

static int conn__open_tcp(struct dnnfault_conn *c, const struct address *a, int timeout_ms)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char port[8];
	snprintf(port, sizeof port, "%u", a->port);
	int gai = getaddrinfo(a->host, port, &hints, &res);
	if (gai != 0)
		return conn__fail(c, gai == EAI_SYSTEM ? -errno : -EHOSTUNREACH,
				  "cannot resolve %s: %s", a->host, gai_strerror(gai));

	int64_t start = conn__now_ms();
	int rv = -EHOSTUNREACH;
	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		rv = conn__try_tcp(c, ai, conn__remaining(timeout_ms, start));
		if (rv == 0 || rv == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (rv == -ETIMEDOUT)
		return conn__fail(c, rv, "no connection within %d ms", timeout_ms);
	if (rv < 0)
		return conn__fail(c, rv, "%s", strerror(-rv));
	return 0;
}

int conn__open(const struct address *a, int timeout_ms, struct dnnfault_conn **out)
{
	struct dnnfault_conn *c = calloc(1, sizeof *c);
	*out = c;
	if (c == NULL)
		return -ENOMEM;
	c->fd = -1;
	c->max_send = CONN_MAX_FRAME;
	address__format(a, c->address, sizeof c->address);
	if (a->kind == ADDRESS_UNIX)
		return conn__open_unix(c, a, timeout_ms);
	return conn__open_tcp(c, a, timeout_ms);
}

static int conn__refusal(struct dnnfault_conn *c, const Dnnfault__Error *e)
{
	int rv = -EPROTO;
	if (e->code == DNNFAULT__ERROR_CODE__ERR_AUTH)
		rv = -EACCES;
	else if (e->code == DNNFAULT__ERROR_CODE__ERR_VERSION)
		rv = -EPROTONOSUPPORT;
	return conn__fail(c, rv, "dnnfaultd at %s refused the connection: %s",
			  c->address, e->message);
}

bool conn__refused(int rv)
{
	return rv == -EACCES || rv == -EPROTONOSUPPORT || rv == -EPROTO;
}

int conn__send_hello(struct dnnfault_conn *c, int role, const char *token)
{
	struct encode_frame f;
	int rv = encode__hello(role, "dnnfault-c/" DNNFAULT_VERSION, token, &f);
	if (rv < 0)
		return conn__fail(c, rv, "cannot encode hello: %s", strerror(-rv));
	rv = conn__send(c, f.buf, f.len);
	encode__free(&f);
	return rv;
}

int conn__welcome(struct dnnfault_conn *c, const Dnnfault__Envelope *env)
{
	if (env->body_case == DNNFAULT__ENVELOPE__BODY_ERROR)
		return conn__refusal(c, env->error);
	if (env->body_case != DNNFAULT__ENVELOPE__BODY_WELCOME)
		return conn__fail(c, -EPROTO, "dnnfaultd at %s answered hello with %s",
				  c->address, frame__body_name(env));
	const Dnnfault__Welcome *w = env->welcome;
	snprintf(c->server, sizeof c->server, "%s", w->server ? w->server : "");
	if (w->has_max_frame_bytes && w->max_frame_bytes < c->max_send)
		c->max_send = w->max_frame_bytes;
	c->max_layers = w->has_max_layers ? w->max_layers : 0;
	return 0;
}

int conn__handshake(struct dnnfault_conn *c, int role, const char *token,
		    int timeout_ms)
{
	int rv = conn__send_hello(c, role, token);
	if (rv < 0)
		return rv;

	Dnnfault__Envelope *env;
	rv = conn__recv(c, timeout_ms, &env);
	if (rv == 0)
		return conn__fail(c, -ETIMEDOUT, "no answer to the handshake within %d ms",
				  timeout_ms);
	if (rv == -EPIPE)
		return conn__fail(c, rv, "connection closed during the handshake");
	if (rv < 0)
		return rv;
	rv = conn__welcome(c, env);
	frame__free(env);
	return rv;
}

/* The daemon closed the connection while we were sending: a refusal
 * (too many connections, a store failure) comes as an error frame just
 * before the close, already in the receive buffer. Reports it, when there
 * is one, rather than an unreachable daemon. */
static int conn__closed(struct dnnfault_conn *c)
{
	for (;;) {
		Dnnfault__Envelope *env;
		if (conn__recv(c, 0, &env) <= 0)
			break;
		if (env->body_case == DNNFAULT__ENVELOPE__BODY_ERROR &&
		    env->error->code != DNNFAULT__ERROR_CODE__ERR_SHUTTING_DOWN) {
			int rv = conn__refusal(c, env->error);
			frame__free(env);
			return rv;
		}
		frame__free(env);
	}
	return conn__fail(c, -EPIPE, "dnnfaultd at %s closed the connection", c->address);
}

int conn__send(struct dnnfault_conn *c, const uint8_t *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		/* MSG_NOSIGNAL: a vanished daemon is an error code, not SIGPIPE. */
		ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int rv = conn__wait(c->fd, POLLOUT, -1);
			if (rv < 0)
				return conn__fail(c, rv, "poll: %s", strerror(-rv));
			continue;
		}
		int rv = -errno;
		if (rv == -EPIPE || rv == -ECONNRESET)
			return conn__closed(c);
		return conn__fail(c, rv, "send to %s: %s", c->address, strerror(-rv));
	}
	return 0;
}

int conn__send_envelope(struct dnnfault_conn *c, const Dnnfault__Envelope *env)
{
	struct encode_frame f;
	int rv = encode__envelope(env, c->max_send, &f);
	if (rv == -EMSGSIZE)
		return conn__fail(c, rv, "message larger than the %zu bytes dnnfaultd accepts",
				  c->max_send);
	if (rv < 0)
		return conn__fail(c, rv, "cannot encode message: %s", strerror(-rv));
	rv = conn__send(c, f.buf, f.len);
	encode__free(&f);
	return rv;
}

/* Makes room for `need` more bytes after the unread data. */
static int conn__reserve(struct dnnfault_conn *c, size_t need)
{
	if (c->rx_off > 0) {
		memmove(c->rx, c->rx + c->rx_off, c->rx_len - c->rx_off);
		c->rx_len -= c->rx_off;
		c->rx_off = 0;
	}
	if (c->rx_cap - c->rx_len >= need)
		return 0;
	size_t cap = c->rx_cap ? c->rx_cap : CONN_READ_CHUNK;
	while (cap - c->rx_len < need)
		cap *= 2;
	uint8_t *rx = realloc(c->rx, cap);
	if (rx == NULL)
		return conn__fail(c, -ENOMEM, "out of memory");
	c->rx = rx;
	c->rx_cap = cap;
	return 0;
}

/* Hands out the next whole buffered frame. Returns 1, 0 when there is
 * none yet (*need says how many bytes the frame still lacks), or -EPROTO. */
static int conn__take(struct dnnfault_conn *c, Dnnfault__Envelope **out, size_t *need)
{
	const uint8_t *p = c->rx + c->rx_off;
	size_t len = c->rx_len - c->rx_off;
	uint32_t payload = 0;
	switch (frame__scan(p, len, CONN_MAX_FRAME, &payload)) {
	case FRAME_READY:
		break;
	case FRAME_NEED_MORE:
		*need = len < FRAME_HEADER_BYTES ? FRAME_HEADER_BYTES - len
						 : FRAME_HEADER_BYTES + payload - len;
		return 0;
	case FRAME_EMPTY:
		return conn__fail(c, -EPROTO, "dnnfaultd sent an empty frame");
	case FRAME_TOO_LARGE:
		return conn__fail(c, -EPROTO, "dnnfaultd sent a frame of %u bytes (limit %u)",
				  payload, CONN_MAX_FRAME);
	}
	*out = frame__decode(p + FRAME_HEADER_BYTES, payload);
	c->rx_off += FRAME_HEADER_BYTES + payload;
	if (*out == NULL)
		return conn__fail(c, -EPROTO, "dnnfaultd sent a frame that is not a message");
	return 1;
}

int conn__recv(struct dnnfault_conn *c, int timeout_ms, Dnnfault__Envelope **out)
{
	int64_t start = conn__now_ms();
	for (;;) {
		size_t need = 0;
		int rv = conn__take(c, out, &need);
		if (rv != 0)
			return rv;
		if (c->eof)
			return conn__fail(c, -EPIPE, "dnnfaultd at %s closed the connection%s",
					  c->address, c->rx_len > c->rx_off ? " in the middle of a frame" : "");
		rv = conn__wait(c->fd, POLLIN, conn__remaining(timeout_ms, start));
		if (rv < 0)
			return conn__fail(c, rv, "poll: %s", strerror(-rv));
		if (rv == 0)
			return 0;
		rv = conn__reserve(c, need > CONN_READ_CHUNK ? need : CONN_READ_CHUNK);
		if (rv < 0)
			return rv;
		ssize_t n = recv(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, 0);
		if (n > 0)
			c->rx_len += (size_t)n;
		else if (n == 0 || errno == ECONNRESET)
			c->eof = true;
		else if (errno != EINTR && errno != EAGAIN)
			return conn__fail(c, -errno, "receive from %s: %s", c->address,
					  strerror(errno));
	}
}

void conn__free(struct dnnfault_conn *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->rx);
	free(c);
}
