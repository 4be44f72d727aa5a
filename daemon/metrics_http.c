#include "metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "analyze.h"
#include "dnnfault_config.h"
#include "exposition.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "store_read.h"

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

struct mconn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_work_t work;
	uv_write_t write;
	uv_shutdown_t shutdown;
	struct metrics_http *h;
	struct mconn *prev, *next;
	char head[METRICS_HTTP_HEAD_MAX];
	size_t len;
	int handles;		/* open handles; freed when none is left and no work runs */
	bool closing, working, answered, head_only;
	/* Taken on the loop for the worker. */
	struct metrics counters;
	bool model_loaded;
	double now;
	char *response;		/* the whole answer, head and body */
	size_t response_len;
};

struct metrics_http {
	struct server *srv;
	uv_tcp_t listener;
	bool listening;
	struct mconn *conns;
	size_t n_conns;
};

/* --- Parsing ----------------------------------------------------------- */

/* Offset just past the empty line that ends the head, or 0. */
static size_t head_end(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* The line at *pos without its CR LF (or LF); advances *pos. */
static size_t next_line(const char *buf, size_t end, size_t *pos, const char **line)
{
	size_t start = *pos, i = start;
	while (i < end && buf[i] != '\n')
		i++;
	*pos = i < end ? i + 1 : end;
	*line = buf + start;
	size_t n = i - start;
	return n > 0 && buf[start + n - 1] == '\r' ? n - 1 : n;
}

/* Compares without an early exit, so that the time taken does not tell
 * how much of a guess was right. */
static bool same_secret(const char *a, size_t a_len, const char *b)
{
	size_t b_len = strlen(b);
	unsigned char diff = a_len != b_len;
	for (size_t i = 0; i < a_len; i++)
		diff |= (unsigned char)a[i] ^ (unsigned char)b[i < b_len ? i : 0];
	return diff == 0 && b_len > 0;
}

static bool bearer_matches(const char *v, size_t n, const char *token)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n < 7 || strncasecmp(v, "bearer ", 7) != 0)
		return false;
	v += 7, n -= 7;
	while (n > 0 && *v == ' ')
		v++, n--;
	return same_secret(v, n, token);
}

static bool line_is(const char *line, size_t n, const char *s)
{
	return n == strlen(s) && memcmp(line, s, n) == 0;
}

struct metrics_http_request metrics_http__parse(const char *buf, size_t len, const char *token)
{
	struct metrics_http_request r = {0};
	size_t end = head_end(buf, len);
	if (end == 0 || end > METRICS_HTTP_HEAD_MAX) {
		if (end > METRICS_HTTP_HEAD_MAX || len >= METRICS_HTTP_HEAD_MAX)
			r.status = 431;
		return r;
	}
	if (memchr(buf, '\0', end) != NULL) {
		r.status = 400;
		return r;
	}
	size_t pos = 0;
	const char *line;
	size_t n = next_line(buf, end, &pos, &line);
	/* METHOD SP TARGET SP HTTP/1.x */
	const char *sp1 = memchr(line, ' ', n);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - line)) : NULL;
	if (sp1 == NULL || sp2 == NULL || sp1 == line || sp2 == sp1 + 1) {
		r.status = 400;
		return r;
	}
	size_t method_len = (size_t)(sp1 - line);
	r.head = line_is(line, method_len, "HEAD");	/* no body, whatever the answer */
	const char *version = sp2 + 1;
	size_t version_len = n - (size_t)(version - line);
	if (!line_is(version, version_len, "HTTP/1.1") && !line_is(version, version_len, "HTTP/1.0")) {
		r.status = 400;
		return r;
	}
	bool authorized = token == NULL || token[0] == '\0';
	while (pos < end) {
		const char *h;
		size_t hn = next_line(buf, end, &pos, &h);
		if (hn == 0)
			break;
		const char *colon = memchr(h, ':', hn);
		if (colon == NULL || colon == h || h[0] == ' ' || h[0] == '\t') {
			r.status = 400;	/* not a header, or an obsolete folded line */
			return r;
		}
		size_t name_len = (size_t)(colon - h);
		if (name_len == 13 && strncasecmp(h, "authorization", 13) == 0 && !authorized)
			authorized = bearer_matches(colon + 1, hn - name_len - 1, token);
	}
	if (!r.head && !line_is(line, method_len, "GET")) {
		r.status = 405;
		return r;
	}
	const char *target = sp1 + 1;
	size_t target_len = (size_t)(sp2 - target);
	if (!line_is(target, target_len, "/metrics") &&
	    !(target_len > 8 && memcmp(target, "/metrics?", 9) == 0)) {
		r.status = 404;
		return r;
	}
	r.status = authorized ? 200 : 401;
	return r;
}

/* --- Connections ------------------------------------------------------- */

static void maybe_free(struct mconn *c)
{
	if (c->handles > 0 || c->working)
		return;
	free(c->response);
	free(c);
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct mconn *c = handle->data;
	c->handles--;
	maybe_free(c);
}

static void close_conn(struct mconn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	struct metrics_http *h = c->h;
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	h->n_conns--;
	uv_close((uv_handle_t *)&c->tcp, handle_closed_cb);
	uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)status;
	close_conn(req->data);
}

static void write_cb(uv_write_t *req, int status)
{
	struct mconn *c = req->data;
	c->shutdown.data = c;
	if (status != 0 || c->closing || uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shutdown_cb) != 0)
		close_conn(c);
}

static void timer_cb(uv_timer_t *t);

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

/* Builds the whole answer into c->response; a body of NULL is a short
 * explanation in plain text. Returns false when out of memory. */
static bool build(struct mconn *c, int status, const char *content_type, const char *body, size_t body_len)
{
	char why[160];
	if (body == NULL) {
		snprintf(why, sizeof why, "%d %s%s\n", status, reason(status),
			 status == 404 ? ": the metrics are at /metrics"
			 : status == 405 ? ": GET or HEAD"
			 : status == 401 ? ": send Authorization: Bearer <metrics_token>" : "");
		body = why;
		body_len = strlen(why);
		content_type = "text/plain; charset=utf-8";
	}
	const char *extra = status == 405 ? "Allow: GET, HEAD\r\n"
			    : status == 401 ? "WWW-Authenticate: Bearer realm=\"dnnfaultd\"\r\n" : "";
	char head[512];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
			 status, reason(status), content_type, body_len, extra);
	size_t send_body = c->head_only ? 0 : body_len;
	free(c->response);
	c->response = malloc((size_t)n + send_body);
	if (c->response == NULL)
		return false;
	memcpy(c->response, head, (size_t)n);
	memcpy(c->response + n, body, send_body);
	c->response_len = (size_t)n + send_body;
	return true;
}

static void send_response(struct mconn *c)
{
	c->answered = true;
	/* A whole timeout to read the answer, from now. */
	uint64_t timeout = (uint64_t)c->h->srv->cfg->handshake_timeout_ms;
	uv_timer_start(&c->timer, timer_cb, timeout, 0);
	uv_buf_t b = uv_buf_init(c->response, (unsigned)c->response_len);
	c->write.data = c;
	if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0)
		close_conn(c);
}

static void answer(struct mconn *c, int status)
{
	uv_read_stop((uv_stream_t *)&c->tcp);
	if (!build(c, status, NULL, NULL, 0)) {
		close_conn(c);
		return;
	}
	send_response(c);
}

/* On a worker: the runs from the store, rendered. */
static void work_cb(uv_work_t *req)
{
	struct mconn *c = req->data;
	const struct config *cfg = c->h->srv->cfg;
	char err[512] = "";
	struct store_reader *reader = NULL;
	Dnnfault__StatusResponse *runs = NULL;
	uint64_t n_runs = 0;
	struct store_read_opts opts = {.now = c->now, .stale_after = (double)cfg->stale_after_s};
	int code = store_read__open(cfg->db, &reader, err, sizeof err);
	if (code == 0)
		code = store_read__count_runs(reader, &n_runs, err, sizeof err);
	if (code == 0 && cfg->metrics_max_runs > 0)
		code = store_read__status(reader, NULL, 0, (uint32_t)cfg->metrics_max_runs, &opts, &runs,
					  err, sizeof err);
	if (reader != NULL)
		store_read__close(reader);
	char *text = NULL;
	size_t text_len = 0;
	if (code == 0) {
		struct exposition e = {
			.version = DNNFAULT_VERSION,
			.started = c->h->srv->started,
			.model_loaded = c->model_loaded,
			.counters = &c->counters,
			.runs_stored = n_runs,
			.runs = runs,
		};
		text = exposition__render(&e, &text_len);
		if (text == NULL)
			snprintf(err, sizeof err, "out of memory");
	}
	if (runs != NULL)
		protobuf_c_message_free_unpacked(&runs->base, NULL);
	/* A failed build leaves no response: after_work_cb closes. */
	if (text != NULL) {
		build(c, 200, CONTENT_TYPE_METRICS, text, text_len);
	} else {
		log_warning("metrics: %s", err);
		char body[600];
		snprintf(body, sizeof body, "500 Internal Server Error: %s\n", err);
		build(c, 500, "text/plain; charset=utf-8", body, strlen(body));
	}
	free(text);
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct mconn *c = req->data;
	c->working = false;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (status != 0 || c->response == NULL) {
		close_conn(c);
		return;
	}
	send_response(c);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct mconn *c = handle->data;
	*buf = uv_buf_init(c->head + c->len, (unsigned)(sizeof c->head - c->len));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct mconn *c = stream->data;
	if (nread < 0) {
		close_conn(c);
		return;
	}
	c->len += (size_t)nread;
	struct metrics_http_request r = metrics_http__parse(c->head, c->len, c->h->srv->cfg->metrics_token);
	if (r.status == 0)
		return;
	c->head_only = r.head;
	if (r.status != 200) {
		answer(c, r.status);
		return;
	}
	uv_read_stop(stream);
	metrics.metrics_requests++;
	c->counters = metrics;
	c->model_loaded = analyze__model(c->h->srv->analyze) != NULL;
	c->now = server__now();
	c->work.data = c;
	c->working = uv_queue_work(c->h->srv->loop, &c->work, work_cb, after_work_cb) == 0;
	if (!c->working)
		answer(c, 500);
}

/* A client that sends no complete request, or does not read its answer,
 * in time is let go. */
static void timer_cb(uv_timer_t *t)
{
	struct mconn *c = t->data;
	if (c->working)
		return;		/* the store read ends soon; the timer runs again */
	if (c->answered)
		close_conn(c);
	else
		answer(c, 408);
}

static void connection_cb(uv_stream_t *listener, int status)
{
	struct metrics_http *h = listener->data;
	if (status < 0)
		return;
	struct mconn *c = calloc(1, sizeof *c);
	if (c == NULL)
		return;
	c->h = h;
	uv_tcp_init(h->srv->loop, &c->tcp);
	uv_timer_init(h->srv->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->n_conns++;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || h->n_conns > 2 * METRICS_HTTP_MAX_CONNS) {
		close_conn(c);
		return;
	}
	uint64_t timeout = (uint64_t)h->srv->cfg->handshake_timeout_ms;
	uv_timer_start(&c->timer, timer_cb, timeout, timeout);
	/* Full: the connection that has waited longest without a whole request
	 * makes room, so that idle connections cannot keep a scraper out. */
	struct mconn *idle = NULL;
	for (struct mconn *o = c->next; o != NULL && h->n_conns > METRICS_HTTP_MAX_CONNS; o = o->next)
		if (!o->answered && !o->working)
			idle = o;	/* the list is newest first: the last is the oldest */
	if (idle != NULL)
		close_conn(idle);
	if (h->n_conns > METRICS_HTTP_MAX_CONNS) {
		answer(c, 503);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int metrics_http__start(struct metrics_http **out, struct server *srv)
{
	const struct config *cfg = srv->cfg;
	struct sockaddr_storage ss;
	int rv = server__tcp_address("metrics_listen", cfg->metrics_listen, cfg->metrics_token[0] != '\0',
				     "metrics_token", &ss);
	if (rv != 0)
		return rv;
	struct metrics_http *h = calloc(1, sizeof *h);
	if (h == NULL)
		return -ENOMEM;
	h->srv = srv;
	uv_tcp_init(srv->loop, &h->listener);
	h->listener.data = h;
	h->listening = true;
	*out = h;
	if ((rv = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0)) != 0 ||
	    (rv = uv_listen((uv_stream_t *)&h->listener, 64, connection_cb)) != 0) {
		log_error("metrics_listen on %s: %s", cfg->metrics_listen, uv_strerror(rv));
		return rv;
	}
	log_info("metrics on http://%s/metrics%s", cfg->metrics_listen,
		 cfg->metrics_token[0] ? " (token required)" : "");
	return 0;
}

void metrics_http__stop(struct metrics_http *h)
{
	if (h == NULL)
		return;
	if (h->listening) {
		uv_close((uv_handle_t *)&h->listener, NULL);
		h->listening = false;
	}
	while (h->conns != NULL)
		close_conn(h->conns);
}

void metrics_http__free(struct metrics_http *h)
{
	free(h);
}
