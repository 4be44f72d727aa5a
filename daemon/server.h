/* The daemon as a whole: event loop, listeners, connection registry,
 * signals and orderly shutdown. */
#ifndef DNNFAULT_SERVER_H
#define DNNFAULT_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "validate.h"

struct conn;
struct analyze;
struct ingest;
struct metrics_http;
struct store;

struct server {
	uv_loop_t *loop;
	const struct config *cfg;
	struct validate_limits limits;
	size_t max_conns;	/* max_connections, or fewer where open files are limited */
	struct store *store;
	struct ingest *ingest;
	struct analyze *analyze;
	struct metrics_http *metrics_http;	/* NULL unless metrics_listen is set */

	uv_pipe_t unix_listener;
	uv_tcp_t tcp_listener;
	bool has_unix, unix_bound, has_tcp;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t watchdog, retention;
	bool has_signals, has_retention, watchdog_on, stopping;
	int lock_fd;

	struct conn *conns;	/* all open connections */
	size_t n_conns;
	uint64_t next_conn_id;
	double started;
};

/* Opens the store, binds the listeners and gets ready to run. Returns 0, or
 * a negative errno after logging why. */
int server__init(struct server *s, uv_loop_t *loop, const struct config *cfg);

/* Runs until SIGTERM/SIGINT, then drains: stops accepting, commits what was
 * received, acknowledges it and closes. Returns 0. */
int server__run(struct server *s);

/* Releases what server__init set up, also after a failed init. */
void server__close(struct server *s);

/* Called by conn when its handles are closed and nothing refers to it. */
void server__forget(struct server *s, struct conn *c);

/* Resolves a TCP listener setting (`key` names it in the log) into an
 * address to bind; refuses a host others can reach unless has_token.
 * Returns 0 or a negative errno after logging why. */
struct sockaddr_storage;
int server__tcp_address(const char *key, const char *value, bool has_token, const char *token_key,
			struct sockaddr_storage *ss);

/* Current wall-clock time in unix seconds. */
double server__now(void);

#endif
