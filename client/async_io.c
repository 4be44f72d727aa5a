/* The asynchronous client's I/O thread: connects with back-off, writes
 * queued frames in batches (one sendmsg for many frames), reads the
 * daemon's acknowledgements and errors, and resends after reconnecting.
 * The lock is held only around queue operations, never across a system
 * call that may wait. */
#include "async.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

/* One sendmsg carries at most this many frames or about this many bytes. */
#define IO_MAX_IOV 512
#define IO_BATCH_BYTES (1u << 20)

static bool io__stopping(struct dnnfault_client *c)
{
	pthread_mutex_lock(&c->lock);
	bool stop = c->stop;
	pthread_mutex_unlock(&c->lock);
	return stop;
}

static void io__drain_wake(struct dnnfault_client *c)
{
	uint64_t n;
	if (read(c->wake_fd, &n, sizeof n) < 0)
		return;	/* EAGAIN: someone else drained it */
}

/* Waits ms milliseconds, or less when close() wakes the thread. */
static void io__sleep(struct dnnfault_client *c, int ms)
{
	int64_t start = conn__now_ms();
	int left;
	while ((left = conn__remaining(ms, start)) > 0 && !io__stopping(c)) {
		struct pollfd p = {.fd = c->wake_fd, .events = POLLIN};
		if (poll(&p, 1, left) > 0)
			io__drain_wake(c);
	}
}

/* conn__handshake, but stoppable: returns -ECANCELED when close() asks. */
static int io__handshake(struct dnnfault_client *c, struct dnnfault_conn *conn)
{
	int rv = conn__send_hello(conn, DNNFAULT__ROLE__ROLE_TRAINER, c->token);
	if (rv < 0)
		return rv;
	int64_t start = conn__now_ms();
	for (;;) {
		int left = conn__remaining(c->connect_timeout_ms, start);
		if (left == 0)
			return conn__fail(conn, -ETIMEDOUT, "no answer to the handshake within %d ms",
					  c->connect_timeout_ms);
		struct pollfd p[2] = {{.fd = conn->fd, .events = POLLIN},
				      {.fd = c->wake_fd, .events = POLLIN}};
		if (poll(p, 2, left) < 0 && errno != EINTR)
			return conn__fail(conn, -errno, "poll: %s", strerror(errno));
		if (p[1].revents != 0) {
			io__drain_wake(c);
			if (io__stopping(c))
				return -ECANCELED;
		}
		if (p[0].revents == 0)
			continue;
		Dnnfault__Envelope *env;
		rv = conn__recv(conn, 0, &env);
		if (rv == -EPIPE)
			return conn__fail(conn, rv, "connection closed during the handshake");
		if (rv < 0)
			return rv;
		if (rv == 0)
			continue;
		rv = conn__welcome(conn, env);
		frame__free(env);
		return rv;
	}
}

/* Connects and shakes hands; on success everything queued is due again. */
static struct dnnfault_conn *io__connect(struct dnnfault_client *c)
{
	struct dnnfault_conn *conn;
	int rv = conn__open(&c->addr, c->connect_timeout_ms, &conn);
	if (rv == 0)
		rv = io__handshake(c, conn);
	if (rv == 0 && fcntl(conn->fd, F_SETFL, fcntl(conn->fd, F_GETFL) | O_NONBLOCK) < 0)
		rv = conn__fail(conn, -errno, "fcntl: %s", strerror(errno));
	pthread_mutex_lock(&c->lock);
	if (rv == 0) {
		c->connected = true;
		if (c->ever_connected)
			c->reconnects++;
		else
			c->last_error[0] = '\0';	/* was "not connected yet" */
		c->ever_connected = true;
		queue__rewind(&c->q);
	} else if (rv != -ECANCELED && conn != NULL && conn__refused(rv)) {
		async__error(c, "%s", conn->err);
	} else if (rv != -ECANCELED) {
		async__error(c, "cannot reach dnnfaultd at %s: %s", c->addr_text,
			     conn != NULL ? conn->err : strerror(-rv));
	}
	pthread_mutex_unlock(&c->lock);
	if (rv < 0) {
		conn__free(conn);
		return NULL;
	}
	return conn;
}

/* Applies one frame from the daemon; the lock is held. Returns -EPIPE
 * for a fatal error (the daemon closes the connection next). */
static int io__handle(struct dnnfault_client *c, const Dnnfault__Envelope *env)
{
	if (env->body_case == DNNFAULT__ENVELOPE__BODY_ACK) {
		const Dnnfault__Ack *ack = env->ack;
		size_t n = 0;
		for (size_t i = 0; i < ack->n_streams; i++)
			n += queue__ack(&c->q, ack->streams[i]->stream, ack->streams[i]->seq);
		/* The back-off starts over once the daemon stores again, not at
		 * the handshake: a daemon that accepts connections but fails every
		 * commit must not get the whole queue resent ten times a second. */
		backoff__reset(&c->backoff);
		if (n > 0)
			pthread_cond_broadcast(&c->settled);
		return 0;
	}
	if (env->body_case != DNNFAULT__ENVELOPE__BODY_ERROR)
		return 0;	/* not for trainers; newer daemons may send more */
	const Dnnfault__Error *e = env->error;
	if (e->has_fatal && e->fatal) {
		async__error(c, "dnnfaultd closed the connection: %s", e->message);
		return -EPIPE;
	}
	if (e->has_stream && e->has_seq) {
		/* Unknown-stream rejections are never acknowledged, so the
		 * error is what removes the message. */
		if (queue__reject(&c->q, e->stream, e->seq) > 0)
			pthread_cond_broadcast(&c->settled);
		/* A refused RunStart (always seq 1) loses the whole run, and
		 * every later message of its stream is refused as "no RunStart":
		 * keep the reason that explains it instead of those. */
		if (e->seq == 1) {
			c->refused_stream = e->stream;
			async__error(c, "dnnfaultd refused the run (stream %llu), nothing of it is stored: %s",
				     (unsigned long long)e->stream, e->message);
		} else if (e->stream != c->refused_stream) {
			async__error(c, "dnnfaultd rejected message %llu of stream %llu: %s",
				     (unsigned long long)e->seq, (unsigned long long)e->stream, e->message);
		}
		return 0;
	}
	async__error(c, "dnnfaultd: %s", e->message);
	return 0;
}

/* Reads and applies everything the daemon has sent so far. */
static int io__read(struct dnnfault_client *c, struct dnnfault_conn *conn)
{
	for (;;) {
		Dnnfault__Envelope *env;
		int rv = conn__recv(conn, 0, &env);
		if (rv <= 0) {
			if (rv < 0) {
				pthread_mutex_lock(&c->lock);
				async__error(c, "%s", conn->err);
				pthread_mutex_unlock(&c->lock);
			}
			return rv;
		}
		pthread_mutex_lock(&c->lock);
		rv = io__handle(c, env);
		pthread_mutex_unlock(&c->lock);
		frame__free(env);
		if (rv < 0)
			return rv;
	}
}

/* Writes what the socket takes now; the frames stay claimed meanwhile,
 * so that nobody frees them without the lock. */
static int io__write(struct dnnfault_client *c, struct dnnfault_conn *conn,
		     struct iovec *iov, size_t n)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
	ssize_t w = sendmsg(conn->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	int rv = w < 0 ? -errno : 0;
	/* A daemon that refuses (too many connections, a store failure) says
	 * why just before it closes: read that, it makes last_error. */
	if (rv == -EPIPE || rv == -ECONNRESET) {
		int got = io__read(c, conn);
		if (got < 0)
			return got;
	}
	pthread_mutex_lock(&c->lock);
	if (w < 0)
		async__error(c, "send to dnnfaultd at %s: %s", c->addr_text, strerror(-rv));
	else
		queue__advance(&c->q, (size_t)w);
	pthread_mutex_unlock(&c->lock);
	return rv;
}

/* Serves one connection until it fails (negative errno) or close() asks
 * the thread to stop (0). */
static int io__serve(struct dnnfault_client *c, struct dnnfault_conn *conn)
{
	struct iovec iov[IO_MAX_IOV];
	int64_t busy = conn__now_ms();	/* when there was last something to write */
	for (;;) {
		struct queue_oversize over = {0};
		pthread_mutex_lock(&c->lock);
		if (c->stop) {
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		size_t n = queue__batch(&c->q, conn->max_send + FRAME_HEADER_BYTES, iov, IO_MAX_IOV,
					IO_BATCH_BYTES, &over);
		if (over.n > 0) {
			async__error(c, "message %llu of stream %llu (%zu bytes) exceeds the %zu bytes "
				     "dnnfaultd accepts; dropped", (unsigned long long)over.seq,
				     (unsigned long long)over.stream, over.len, conn->max_send);
			pthread_cond_broadcast(&c->settled);
		}
		/* Idle: look again in ASYNC_STEP_DELAY_MS for steps, which do
		 * not wake the thread, unless idle for long (async.h). */
		int64_t now = conn__now_ms();
		if (n > 0)
			busy = now;
		bool asleep = n == 0 && now - busy >= ASYNC_ASLEEP_MS;
		c->io_idle = n == 0;
		c->io_asleep = asleep;
		pthread_mutex_unlock(&c->lock);

		struct pollfd p[2] = {{.fd = conn->fd, .events = POLLIN | (n > 0 ? POLLOUT : 0)},
				      {.fd = c->wake_fd, .events = POLLIN}};
		if (poll(p, 2, n > 0 || asleep ? -1 : ASYNC_STEP_DELAY_MS) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents != 0)
			io__drain_wake(c);
		int rv = 0;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
			rv = io__read(c, conn);
		if (rv == 0 && n > 0 && (p[0].revents & POLLOUT))
			rv = io__write(c, conn, iov, n);
		if (rv < 0)
			return rv;
	}
}

void *async_io__main(void *arg)
{
	struct dnnfault_client *c = arg;
	bool first = true;
	while (!io__stopping(c)) {
		if (!first)
			io__sleep(c, backoff__next(&c->backoff));
		first = false;
		if (io__stopping(c))
			break;
		struct dnnfault_conn *conn = io__connect(c);
		if (conn == NULL)
			continue;
		io__serve(c, conn);
		conn__free(conn);
		pthread_mutex_lock(&c->lock);
		c->connected = false;
		c->io_idle = false;
		c->io_asleep = false;
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}
