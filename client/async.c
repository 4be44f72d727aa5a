/* The asynchronous client, caller's side: every call encodes into the
 * queue under the lock and returns; async_io.c does all the I/O. */
#include "async.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "encode.h"

#define DNNFAULT_TOKEN_ENV "DNNFAULT_TOKEN"

void async__wake(struct dnnfault_client *c)
{
	uint64_t one = 1;
	/* Only fails when the counter is saturated, and then it is awake. */
	if (write(c->wake_fd, &one, sizeof one) < 0)
		return;
}

void async__error(struct dnnfault_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
	va_end(ap);
}

static uint64_t async__seed(void)
{
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
	}
	return seed;
}

/* The I/O thread takes no signals: they belong to the application. */
static int async__start_thread(struct dnnfault_client *c)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rv = pthread_create(&c->thread, NULL, async_io__main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rv;
}

dnnfault_client *dnnfault_client_new(const struct dnnfault_client_options *opts)
{
	static const struct dnnfault_client_options none = {0};
	if (opts == NULL)
		opts = &none;
	struct dnnfault_client *c = calloc(1, sizeof *c);
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	int rv = opts->address ? address__parse(opts->address, &c->addr)
			       : address__client_default(&c->addr);
	if (rv < 0) {
		free(c);
		errno = EINVAL;
		return NULL;
	}
	address__format(&c->addr, c->addr_text, sizeof c->addr_text);
	const char *token = opts->token ? opts->token : getenv(DNNFAULT_TOKEN_ENV);
	c->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
							     : ASYNC_DEFAULT_CONNECT_TIMEOUT_MS;
	backoff__init(&c->backoff,
		      opts->backoff_initial_ms > 0 ? opts->backoff_initial_ms
						   : ASYNC_DEFAULT_BACKOFF_INITIAL_MS,
		      opts->backoff_max_ms > 0 ? opts->backoff_max_ms : ASYNC_DEFAULT_BACKOFF_MAX_MS,
		      async__seed());
	queue__init(&c->q, opts->queue_bytes ? opts->queue_bytes : ASYNC_DEFAULT_QUEUE_BYTES);
	snprintf(c->last_error, sizeof c->last_error, "not connected yet");

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (token != NULL && (c->token = strdup(token)) == NULL)
		goto err_after_alloc;
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd < 0)
		goto err_after_token;
	if (pthread_mutex_init(&c->lock, NULL) != 0)
		goto err_after_eventfd;
	if (pthread_cond_init(&c->settled, &ca) != 0)
		goto err_after_mutex;
	if (async__start_thread(c) != 0)
		goto err_after_cond;
	pthread_condattr_destroy(&ca);
	return c;

err_after_cond:
	pthread_cond_destroy(&c->settled);
err_after_mutex:
	pthread_mutex_destroy(&c->lock);
err_after_eventfd:
	close(c->wake_fd);
err_after_token:
	free(c->token);
err_after_alloc:
	pthread_condattr_destroy(&ca);
	free(c);
	errno = ENOMEM;
	return NULL;
}

static double async__now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One message on its way into the queue; queue__push encodes it through
 * async__encode once its seq and drop count are known. */
struct async_msg {
	enum queue_kind kind;
	uint64_t stream;
	double now;
	const struct dnnfault_run_info *info;
	const struct dnnfault_step *step;
	const struct dnnfault_epoch *epoch;
	const struct dnnfault_run_end *end;
};

static int async__encode(void *arg, uint64_t seq, uint64_t dropped, struct encode_frame *out)
{
	const struct async_msg *a = arg;
	/* Frames are checked against the daemon's own limit when sent. */
	struct encode_ctx ctx = {.stream = a->stream, .seq = seq, .now = a->now,
				 .max_payload = CONN_MAX_FRAME};
	switch (a->kind) {
	case QUEUE_RUN_START:
		return encode__run_start(a->info, &ctx, out);
	case QUEUE_STEP: {
		struct dnnfault_step s = *a->step;
		s.dropped += dropped;
		return encode__step(&s, &ctx, out);
	}
	case QUEUE_EPOCH:
		return encode__epoch(a->epoch, &ctx, out);
	case QUEUE_RUN_END: {
		struct dnnfault_run_end e = *a->end;
		e.dropped += dropped;
		return encode__run_end(&e, &ctx, out);
	}
	}
	return -EINVAL;
}

static const char *async__kind_name(enum queue_kind kind)
{
	switch (kind) {
	case QUEUE_RUN_START: return "run start";
	case QUEUE_STEP: return "step";
	case QUEUE_EPOCH: return "epoch";
	case QUEUE_RUN_END: return "run end";
	}
	return "message";
}

/* Wakes the thread if it waits with nothing to write; the lock is held. */
static void async__kick(struct dnnfault_client *c)
{
	if (c->io_idle) {
		c->io_idle = false;
		c->io_asleep = false;
		async__wake(c);
	}
}

/* Unsent steps from which the thread is woken at once (async.h). */
static size_t async__wake_bytes(const struct dnnfault_client *c)
{
	return c->q.max_bytes / 4 < ASYNC_WAKE_BYTES ? c->q.max_bytes / 4 : ASYNC_WAKE_BYTES;
}

/* Queues a message; the lock is held. Maps the queue's answers onto the
 * codes dnnfault.h promises and wakes the thread for anything but a step,
 * for many unsent steps, and for a step that finds it asleep; other steps
 * wait for its next look (async.h). */
static int async__push(struct dnnfault_client *c, struct async_msg *a)
{
	int rv = queue__push(&c->q, a->stream, a->kind, async__encode, a);
	if (rv == QUEUE_QUEUED &&
	    (a->kind != QUEUE_STEP || c->io_asleep || c->q.droppable_bytes >= async__wake_bytes(c)))
		async__kick(c);
	/* Making room may have dropped what a flush waits for. */
	if (c->flushers > 0)
		pthread_cond_broadcast(&c->settled);
	if (rv >= 0)
		return 0;
	switch (rv) {
	case -EMSGSIZE:
	case -EINVAL:
		async__error(c, "%s of stream %llu is invalid or larger than the queue (%zu bytes)",
			     async__kind_name(a->kind), (unsigned long long)a->stream,
			     c->q.max_bytes);
		return -EINVAL;
	case -ENOBUFS:
		async__error(c, "queue full of messages that are never dropped; %s of stream %llu lost",
			     async__kind_name(a->kind), (unsigned long long)a->stream);
		return -ENOMEM;
	case -ENOENT:
	case -ENOMEM:
	case -EEXIST:
		return rv;
	default:
		return -EINVAL;
	}
}

int dnnfault_client_run_start(dnnfault_client *c, const struct dnnfault_run_info *info,
			      uint64_t *stream)
{
	if (c == NULL || info == NULL || stream == NULL || info->run_id == NULL)
		return -EINVAL;
	struct async_msg a = {.kind = QUEUE_RUN_START, .now = async__now(), .info = info};
	int rv;
	for (;;) {
		if (encode__stream_id(&a.stream) < 0)
			return -ENOMEM;
		if (a.stream == UINT64_MAX)
			continue;	/* left to callers as a "no stream" value */
		pthread_mutex_lock(&c->lock);
		rv = async__push(c, &a);
		pthread_mutex_unlock(&c->lock);
		if (rv != -EEXIST)
			break;
	}
	if (rv == 0)
		*stream = a.stream;
	return rv;
}

static int async__queue(struct dnnfault_client *c, struct async_msg *a)
{
	pthread_mutex_lock(&c->lock);
	int rv = async__push(c, a);
	pthread_mutex_unlock(&c->lock);
	return rv;
}

int dnnfault_client_step(dnnfault_client *c, uint64_t stream, const struct dnnfault_step *step)
{
	if (c == NULL || step == NULL)
		return -EINVAL;
	struct async_msg a = {.kind = QUEUE_STEP, .stream = stream, .now = async__now(),
			      .step = step};
	return async__queue(c, &a);
}

int dnnfault_client_epoch(dnnfault_client *c, uint64_t stream, const struct dnnfault_epoch *epoch)
{
	if (c == NULL || epoch == NULL)
		return -EINVAL;
	struct async_msg a = {.kind = QUEUE_EPOCH, .stream = stream, .now = async__now(),
			      .epoch = epoch};
	return async__queue(c, &a);
}

int dnnfault_client_run_end(dnnfault_client *c, uint64_t stream, const struct dnnfault_run_end *end)
{
	if (c == NULL || end == NULL)
		return -EINVAL;
	struct async_msg a = {.kind = QUEUE_RUN_END, .stream = stream, .now = async__now(),
			      .end = end};
	return async__queue(c, &a);
}

int dnnfault_client_flush(dnnfault_client *c, int timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms > 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
	}
	if (c == NULL)
		return -EINVAL;
	int rv = 0;
	pthread_mutex_lock(&c->lock);
	uint64_t ticket = queue__last_ticket(&c->q);
	async__kick(c);	/* steps may wait for the thread's next look */
	c->flushers++;
	while (!queue__settled(&c->q, ticket)) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&c->settled, &c->lock);
		} else if (timeout_ms == 0 ||
			   pthread_cond_timedwait(&c->settled, &c->lock, &deadline) == ETIMEDOUT) {
			rv = queue__settled(&c->q, ticket) ? 0 : -ETIMEDOUT;
			break;
		}
	}
	c->flushers--;
	pthread_mutex_unlock(&c->lock);
	return rv;
}

void dnnfault_client_stats(dnnfault_client *c, struct dnnfault_client_stats *out)
{
	if (c == NULL || out == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	*out = (struct dnnfault_client_stats){
		.queued = c->q.queued, .sent = c->q.sent, .acked = c->q.acked,
		.dropped = c->q.dropped, .rejected = c->q.rejected,
		.reconnects = c->reconnects, .queue_bytes = c->q.bytes,
		.queue_messages = c->q.n_msgs, .connected = c->connected,
	};
	snprintf(out->last_error, sizeof out->last_error, "%s", c->last_error);
	pthread_mutex_unlock(&c->lock);
}

void dnnfault_client_close(dnnfault_client *c, int timeout_ms)
{
	if (c == NULL)
		return;
	dnnfault_client_flush(c, timeout_ms);
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_mutex_unlock(&c->lock);
	async__wake(c);
	pthread_join(c->thread, NULL);
	if (c->q.n_msgs > 0)
		fprintf(stderr, "dnnfault: closing with %zu unacknowledged messages (%zu bytes) "
			"for dnnfaultd at %s; they are lost (%s)\n", c->q.n_msgs, c->q.bytes,
			c->addr_text, c->last_error[0] ? c->last_error : "no error");
	queue__free(&c->q);
	pthread_cond_destroy(&c->settled);
	pthread_mutex_destroy(&c->lock);
	close(c->wake_fd);
	free(c->token);
	free(c);
}
