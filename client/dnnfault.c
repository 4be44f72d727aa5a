#include "dnnfault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "dnnfault_config.h"
#include "encode.h"

#define DNNFAULT_TOKEN_ENV "DNNFAULT_TOKEN"

/* The public codes mirror the protocol's (enum dnnfault_error_code). */
_Static_assert((int)DNNFAULT_ERR_UNKNOWN_STREAM == (int)DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM &&
		       (int)DNNFAULT_ERR_LIMIT == (int)DNNFAULT__ERROR_CODE__ERR_LIMIT &&
		       (int)DNNFAULT_ERR_NO_SUCH_RUN == (int)DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN &&
		       (int)DNNFAULT_ERR_AMBIGUOUS_RUN == (int)DNNFAULT__ERROR_CODE__ERR_AMBIGUOUS_RUN,
	       "enum dnnfault_error_code differs from proto/dnnfault.proto");

static double dnnfault__now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

dnnfault_conn *dnnfault_connect(const char *address, enum dnnfault_role role,
				const char *token, int timeout_ms,
				char *err, size_t err_len, int *errnum)
{
	struct address a;
	struct dnnfault_conn *c = NULL;
	int rv = address == NULL ? address__client_default(&a) : address__parse(address, &a);
	if (rv < 0) {
		const char *text = address ? address : getenv(ADDRESS_ENV);
		if (err != NULL)
			snprintf(err, err_len, "invalid dnnfaultd address \"%s\"",
				 text ? text : "(default)");
		goto out;
	}
	if (token == NULL)
		token = getenv(DNNFAULT_TOKEN_ENV);

	rv = conn__open(&a, timeout_ms, &c);
	if (rv < 0) {
		if (err != NULL)
			snprintf(err, err_len, "cannot reach dnnfaultd at %s: %s",
				 c ? c->address : "?", c ? c->err : strerror(-rv));
		goto out;
	}
	rv = conn__handshake(c, (int)role, token, timeout_ms);
	if (rv == 0)
		return c;
	if (err != NULL && conn__refused(rv))
		snprintf(err, err_len, "%s", c->err);
	else if (err != NULL)
		snprintf(err, err_len, "cannot reach dnnfaultd at %s: %s", c->address, c->err);
out:
	conn__free(c);
	if (errnum != NULL)
		*errnum = rv;
	return NULL;
}

void dnnfault_close(dnnfault_conn *c)
{
	conn__free(c);
}

const char *dnnfault_conn_error(const dnnfault_conn *c)
{
	return c->err;
}

const char *dnnfault_version(void)
{
	return DNNFAULT_VERSION;
}

/* Checks a stream and returns the context of its next message. */
static int dnnfault__ctx(dnnfault_conn *c, const struct dnnfault_stream *s,
			 struct encode_ctx *ctx)
{
	if (s->id == 0 || s->next_seq == 0)
		return conn__fail(c, -EINVAL, "stream not opened with dnnfault_run_start()");
	*ctx = (struct encode_ctx){
		.stream = s->id, .seq = s->next_seq,
		.now = dnnfault__now(), .max_payload = c->max_send,
	};
	return 0;
}

/* Sends an encoded telemetry message and advances the stream on success. */
static int64_t dnnfault__send(dnnfault_conn *c, struct dnnfault_stream *s,
			      struct encode_frame *f, int rv)
{
	if (rv == -EMSGSIZE)
		return conn__fail(c, rv, "message larger than the %zu bytes dnnfaultd accepts",
				  c->max_send);
	if (rv == -EINVAL)
		return conn__fail(c, rv, "invalid message: a required field is missing");
	if (rv < 0)
		return conn__fail(c, rv, "cannot encode message: %s", strerror(-rv));
	rv = conn__send(c, f->buf, f->len);
	encode__free(f);
	if (rv < 0)
		return rv;
	return (int64_t)s->next_seq++;
}

int dnnfault_run_start(dnnfault_conn *c, const struct dnnfault_run_info *info,
		       struct dnnfault_stream *s)
{
	if (c->max_layers != 0 && info->n_layers > c->max_layers)
		return conn__fail(c, -E2BIG, "run has %zu layers; dnnfaultd accepts %u",
				  info->n_layers, c->max_layers);
	uint64_t id;
	int rv = encode__stream_id(&id);
	if (rv < 0)
		return conn__fail(c, rv, "getrandom: %s", strerror(-rv));
	struct dnnfault_stream fresh = {.id = id, .next_seq = 1, .acked_seq = 0};
	struct encode_ctx ctx = {
		.stream = id, .seq = 1, .now = dnnfault__now(), .max_payload = c->max_send,
	};
	struct encode_frame f = {0};
	int64_t seq = dnnfault__send(c, &fresh, &f, encode__run_start(info, &ctx, &f));
	if (seq < 0)
		return (int)seq;
	*s = fresh;
	return 0;
}

int64_t dnnfault_send_step(dnnfault_conn *c, struct dnnfault_stream *s,
			   const struct dnnfault_step *step)
{
	struct encode_ctx ctx;
	int rv = dnnfault__ctx(c, s, &ctx);
	if (rv < 0)
		return rv;
	if (c->max_layers != 0 && step->n_layers > c->max_layers)
		return conn__fail(c, -E2BIG, "step has %zu layers; dnnfaultd accepts %u",
				  step->n_layers, c->max_layers);
	struct encode_frame f = {0};
	return dnnfault__send(c, s, &f, encode__step(step, &ctx, &f));
}

int64_t dnnfault_send_epoch(dnnfault_conn *c, struct dnnfault_stream *s,
			    const struct dnnfault_epoch *epoch)
{
	struct encode_ctx ctx;
	int rv = dnnfault__ctx(c, s, &ctx);
	if (rv < 0)
		return rv;
	struct encode_frame f = {0};
	return dnnfault__send(c, s, &f, encode__epoch(epoch, &ctx, &f));
}

int64_t dnnfault_send_run_end(dnnfault_conn *c, struct dnnfault_stream *s,
			      const struct dnnfault_run_end *end)
{
	struct encode_ctx ctx;
	int rv = dnnfault__ctx(c, s, &ctx);
	if (rv < 0)
		return rv;
	struct encode_frame f = {0};
	return dnnfault__send(c, s, &f, encode__run_end(end, &ctx, &f));
}

/* Applies one frame the daemon sent to a trainer connection. */
static void dnnfault__handle(dnnfault_conn *c, const Dnnfault__Envelope *env,
			     struct dnnfault_stream *const *streams, size_t n_streams,
			     struct dnnfault_reply_error *last_error)
{
	if (env->body_case == DNNFAULT__ENVELOPE__BODY_ACK) {
		const Dnnfault__Ack *ack = env->ack;
		for (size_t i = 0; i < ack->n_streams; i++)
			for (size_t j = 0; j < n_streams; j++)
				if (streams[j]->id == ack->streams[i]->stream &&
				    streams[j]->acked_seq < ack->streams[i]->seq)
					streams[j]->acked_seq = ack->streams[i]->seq;
	} else if (env->body_case == DNNFAULT__ENVELOPE__BODY_ERROR) {
		const Dnnfault__Error *e = env->error;
		conn__fail(c, -EPROTO, "dnnfaultd: %s", e->message);
		/* A refused RunStart (always seq 1 here) or an unknown stream:
		 * the rest of the stream will never be acknowledged. */
		for (size_t j = 0; e->has_stream && j < n_streams; j++) {
			struct dnnfault_stream *s = streams[j];
			if (s->id != e->stream)
				continue;
			if (e->has_seq && e->seq == 1) {
				s->refused = true;
				snprintf(s->refusal, sizeof s->refusal, "%s", e->message);
			} else if (e->code == DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM) {
				s->refused = true;
			}
		}
		if (last_error != NULL) {
			*last_error = (struct dnnfault_reply_error){
				.code = (int)e->code,
				.stream = e->has_stream ? e->stream : 0,
				.seq = e->has_seq ? e->seq : 0,
				.fatal = e->has_fatal && e->fatal,
			};
			snprintf(last_error->message, sizeof last_error->message, "%s",
				 e->message);
		}
	}
	/* Anything else is not meant for trainers; newer daemons may add
	 * messages, so it is skipped rather than treated as fatal. */
}

int dnnfault_poll(dnnfault_conn *c, struct dnnfault_stream *const *streams,
		  size_t n_streams, int timeout_ms,
		  struct dnnfault_reply_error *last_error)
{
	int handled = 0;
	for (;;) {
		Dnnfault__Envelope *env;
		/* After the first frame only take what has already arrived. */
		int rv = conn__recv(c, handled == 0 ? timeout_ms : 0, &env);
		if (rv < 0)
			return handled > 0 ? handled : rv;
		if (rv == 0)
			return handled;
		dnnfault__handle(c, env, streams, n_streams, last_error);
		frame__free(env);
		handled++;
	}
}

int dnnfault_wait_acked(dnnfault_conn *c, struct dnnfault_stream *s, int timeout_ms)
{
	int64_t start = conn__now_ms();
	struct dnnfault_stream *const streams[] = {s};
	struct dnnfault_reply_error last = {0};
	while (!s->refused && s->acked_seq + 1 < s->next_seq) {
		int left = conn__remaining(timeout_ms, start);
		if (timeout_ms >= 0 && left == 0)
			return conn__fail(c, -ETIMEDOUT,
					  "%llu of %llu messages acknowledged after %d ms",
					  (unsigned long long)s->acked_seq,
					  (unsigned long long)(s->next_seq - 1), timeout_ms);
		int rv = dnnfault_poll(c, streams, 1, left, &last);
		/* The daemon's reason beats "connection closed". */
		if (rv < 0 && last.fatal)
			return conn__fail(c, rv, "dnnfaultd closed the connection: %s",
					  last.message);
		if (rv < 0)
			return rv;
	}
	if (s->refused)
		return conn__fail(c, -EPROTO, "dnnfaultd refused the run%s%s; nothing more of its stream "
				  "will be acknowledged", s->refusal[0] ? ": " : "", s->refusal);
	return 0;
}
