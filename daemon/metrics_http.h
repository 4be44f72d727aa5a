/* The Prometheus endpoint: a small HTTP/1.1 server on metrics_listen that
 * answers GET (and HEAD) /metrics with exposition.h's text, read from the
 * store on a worker thread, and closes each connection after its answer.
 * Bounded: METRICS_HTTP_MAX_CONNS connections at once (a new one closes
 * the oldest that has not sent a whole request, else gets 503), a request
 * head of METRICS_HTTP_HEAD_MAX bytes, handshake_timeout_ms to send it. */
#ifndef DNNFAULT_METRICS_HTTP_H
#define DNNFAULT_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define METRICS_HTTP_MAX_CONNS 8
#define METRICS_HTTP_HEAD_MAX 8192

struct server;
struct metrics_http;

/* Binds metrics_listen. Returns 0 or a negative errno after logging why. */
int metrics_http__start(struct metrics_http **out, struct server *srv);

/* Closes the listener and every connection (those waiting for the store
 * close when their read ends). */
void metrics_http__stop(struct metrics_http *h);

/* Frees it once the loop has run the close callbacks; NULL is fine. */
void metrics_http__free(struct metrics_http *h);

/* What a request head asks for. `status` is 0 while the head is
 * incomplete, else the HTTP status to answer: 200 (GET or HEAD of
 * /metrics, authorized), 400, 401, 404, 405 or 431. */
struct metrics_http_request {
	int status;
	bool head;	/* HEAD: the answer has no body */
};

/* Parses the bytes received so far. `token` is the bearer token to ask
 * for, NULL or "" for none. */
struct metrics_http_request metrics_http__parse(const char *buf, size_t len, const char *token);

#endif
