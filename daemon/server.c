#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "analyze.h"
#include "conn.h"
#include "dnnfault_config.h"
#include "frame.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "model.h"
#include "store.h"

#if DNNFAULT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define RETENTION_PERIOD_MS (3600 * 1000)

double server__now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void notify(const char *state)
{
#if DNNFAULT_HAVE_SYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

void server__forget(struct server *s, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->n_conns--;
}

/* Refuses a connection over max_connections with an error it can read. */
static void refuse(struct conn *c)
{
	metrics.connections_rejected++;
	conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_LIMIT, true, 0, 0,
			 "too many connections (%zu at most: max_connections %lld, or fewer where"
			 " open files are limited)", c->srv->max_conns, (long long)c->srv->cfg->max_connections);
}

static void connection_cb(uv_stream_t *listener, int status)
{
	struct server *s = listener->data;
	if (status < 0) {
		log_warning("accept: %s", uv_strerror(status));
		return;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		log_error("accept: out of memory");
		return;
	}
	c->srv = s;
	c->id = ++s->next_conn_id;
	c->is_tcp = listener == (uv_stream_t *)&s->tcp_listener;
	int rv = c->is_tcp ? uv_tcp_init(s->loop, &c->handle.tcp) : uv_pipe_init(s->loop, &c->handle.pipe, 0);
	if (rv == 0)
		rv = uv_timer_init(s->loop, &c->handshake_timer);
	c->handle.stream.data = c;
	c->handshake_timer.data = c;
	c->open_handles = 2;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	metrics.connections_open++;
	if (rv != 0 || uv_accept(listener, &c->handle.stream) != 0) {
		log_warning("accept failed");
		conn__close(c, "accept failed");
		return;
	}
	metrics.connections_accepted++;
	snprintf(c->peer, sizeof c->peer, "unix");
	if (c->is_tcp) {
		struct sockaddr_storage ss;
		int len = sizeof ss;
		if (uv_tcp_getpeername(&c->handle.tcp, (struct sockaddr *)&ss, &len) == 0) {
			if (ss.ss_family == AF_INET)
				uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
			else
				uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
		}
		uv_tcp_nodelay(&c->handle.tcp, 1);
	}
	conn__start(c);
	if (s->n_conns > s->max_conns)
		refuse(c);
}

/* Creates the socket's directory (private to the user when it is ours). */
static int make_socket_dir(const char *path)
{
	char dir[ADDRESS_PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(dir, &st) != 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	/* The default directory may live in /tmp, where another user could
	 * have made it first to sit between clients and us: it must be ours
	 * and closed to others. A directory named explicitly is the user's call. */
	char def[ADDRESS_PATH_MAX];
	if (address__runtime_dir(def, sizeof def) == 0 && strcmp(def, dir) == 0 &&
	    (st.st_uid != geteuid() || (st.st_mode & 022) != 0)) {
		log_error("%s is not owned by this user or is writable by others; remove it", dir);
		return -EPERM;
	}
	return 0;
}

/* True when a daemon accepts connections on the socket at path. */
static bool socket_answers(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	bool alive = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	if (fd >= 0)
		close(fd);
	return alive;
}

/* A socket file that nobody answers on is left over from a crash. */
static int clear_stale_socket(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		log_error("%s exists and is not a socket", path);
		return -EEXIST;
	}
	if (socket_answers(path)) {
		log_error("another dnnfaultd is listening on %s", path);
		return -EADDRINUSE;
	}
	unlink(path);
	return 0;
}

static int listen_unix(struct server *s)
{
	const char *path = s->cfg->socket;
	int rv;
	if (strlen(path) >= ADDRESS_PATH_MAX) {
		log_error("socket path longer than %d bytes: %s", ADDRESS_PATH_MAX - 1, path);
		return -ENAMETOOLONG;
	}
	if ((rv = make_socket_dir(path)) != 0) {
		log_error("socket directory of %s: %s", path, strerror(-rv));
		return rv;
	}
	if ((rv = clear_stale_socket(path)) != 0)
		return rv;
	uv_pipe_init(s->loop, &s->unix_listener, 0);
	s->unix_listener.data = s;
	s->has_unix = true;
	/* Create the socket file without group/other access, then open it up
	 * to exactly socket_mode: no window where others can connect. */
	mode_t old = umask(0177);
	rv = uv_pipe_bind(&s->unix_listener, path);
	umask(old);
	s->unix_bound = rv == 0;
	if (rv == 0 && chmod(path, (mode_t)s->cfg->socket_mode) != 0)
		rv = -errno;
	if (rv == 0)
		rv = uv_listen((uv_stream_t *)&s->unix_listener, 1024, connection_cb);
	if (rv != 0) {
		log_error("listen on %s: %s", path, uv_strerror(rv));
		return rv;
	}
	log_info("listening on unix:%s", path);
	return 0;
}

/* Resolves a TCP listener's HOST:PORT (config__check has vetted it) before
 * anything is created: a listener others can reach must have a token. */
int server__tcp_address(const char *key, const char *value, bool has_token, const char *token_key,
			struct sockaddr_storage *ss)
{
	struct address a;
	if (address__parse(value, &a) != 0 || a.kind != ADDRESS_TCP) {
		log_error("%s: '%s' is not HOST:PORT", key, value);
		return -EINVAL;
	}
	if (!address__is_loopback_host(a.host) && !has_token) {
		log_error("%s: %s is not a loopback address; set %s to accept remote clients", key, a.host,
			  token_key);
		return -EPERM;
	}
	const char *host = strcmp(a.host, "localhost") == 0 ? "127.0.0.1" : a.host;
	int rv = strchr(host, ':') != NULL ? uv_ip6_addr(host, a.port, (struct sockaddr_in6 *)ss)
					   : uv_ip4_addr(host, a.port, (struct sockaddr_in *)ss);
	if (rv != 0)
		log_error("%s: '%s' is not an IP address", key, a.host);
	return rv;
}

static int listen_tcp(struct server *s, const struct sockaddr_storage *ss)
{
	int rv;
	uv_tcp_init(s->loop, &s->tcp_listener);
	s->tcp_listener.data = s;
	s->has_tcp = true;
	if ((rv = uv_tcp_bind(&s->tcp_listener, (const struct sockaddr *)ss, 0)) != 0 ||
	    (rv = uv_listen((uv_stream_t *)&s->tcp_listener, 1024, connection_cb)) != 0) {
		log_error("listen on %s: %s", s->cfg->listen, uv_strerror(rv));
		return rv;
	}
	log_info("listening on tcp://%s%s", s->cfg->listen,
		 s->cfg->token[0] ? " (token required)" : " (loopback only)");
	return 0;
}

static int make_state_dir(const char *db)
{
	char dir[CONFIG_STR_MAX];
	snprintf(dir, sizeof dir, "%s", db);
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	/* mkdir -p, private to the daemon's user. */
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* One daemon per database: a second one would fight over the writer lock. */
static int lock_db(const char *db, int *fd_out)
{
	char path[CONFIG_STR_MAX + 8];
	snprintf(path, sizeof path, "%s.lock", db);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int rv = -errno;
		close(fd);
		return rv == -EWOULDBLOCK ? -EBUSY : rv;
	}
	*fd_out = fd;	/* held until server__close */
	return 0;
}

/* 1,000 clients need more descriptors than the usual soft limit of 1024. */
/* Raises the soft limit on open files to max_connections + FD_RESERVE
 * where the hard limit allows, and returns how many connections fit. Past
 * the limit, libuv would close new connections before the daemon sees
 * them, without the ERR_LIMIT a client can read: so the daemon refuses
 * them itself from this many on. */
#define FD_RESERVE 64	/* the database, the listeners, libuv's own */
static size_t raise_fd_limit(size_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= want + FD_RESERVE)
		return want;
	rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want + FD_RESERVE ? rl.rlim_max
										      : want + FD_RESERVE;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur >= want + FD_RESERVE)
		return want;
	size_t fit = rl.rlim_cur > 2 * FD_RESERVE ? (size_t)rl.rlim_cur - FD_RESERVE : (size_t)rl.rlim_cur / 2;
	if (fit == 0)
		fit = 1;
	log_warning("open files are limited to %ju (RLIMIT_NOFILE): %zu connections at most, not"
		    " max_connections %zu; raise the limit (LimitNOFILE=) or lower max_connections",
		    (uintmax_t)rl.rlim_cur, fit, want);
	return fit;
}

static void watchdog_cb(uv_timer_t *t)
{
	(void)t;
	notify("WATCHDOG=1");
}

static void retention_cb(uv_timer_t *t)
{
	struct server *s = t->data;
	ingest__prune(s->ingest, server__now() - (double)s->cfg->retention_days * 86400.0);
}

static void close_listeners(struct server *s)
{
	if (s->has_unix) {
		uv_close((uv_handle_t *)&s->unix_listener, NULL);
		/* Only our own socket file: never one another daemon listens on. */
		if (s->unix_bound)
			unlink(s->cfg->socket);
		s->has_unix = false;
	}
	if (s->has_tcp) {
		uv_close((uv_handle_t *)&s->tcp_listener, NULL);
		s->has_tcp = false;
	}
	metrics_http__stop(s->metrics_http);
}

/* Closes the daemon's own handles, so that the loop ends once the
 * connections are gone too. */
static void close_handles(struct server *s)
{
	close_listeners(s);
	analyze__stop(s->analyze);
	if (s->has_signals) {
		uv_close((uv_handle_t *)&s->sigterm, NULL);
		uv_close((uv_handle_t *)&s->sigint, NULL);
		uv_close((uv_handle_t *)&s->sighup, NULL);
		s->has_signals = false;
	}
	if (s->watchdog_on) {
		uv_close((uv_handle_t *)&s->watchdog, NULL);
		s->watchdog_on = false;
	}
	if (s->has_retention) {
		uv_close((uv_handle_t *)&s->retention, NULL);
		s->has_retention = false;
	}
}

/* Last step of the drain: everything received is committed and its acks
 * are queued; hang up on every client once its replies are written. */
static void drained_cb(void *arg)
{
	struct server *s = arg;
	ingest__on_idle(s->ingest, NULL, NULL);
	for (struct conn *c = s->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (c->state != CONN_CLOSING)
			conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_SHUTTING_DOWN, true, 0, 0,
					 "dnnfaultd is shutting down");
	}
	close_handles(s);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	struct server *s = h->data;
	if (s->stopping)
		return;
	s->stopping = true;
	log_info("signal %d: stopping; committing what was received", signum);
	notify("STOPPING=1");
	close_listeners(s);
	for (struct conn *c = s->conns; c != NULL; c = c->next)
		conn__pause(c);
	ingest__kick(s->ingest);
	if (ingest__idle(s->ingest))
		drained_cb(s);
	else
		ingest__on_idle(s->ingest, drained_cb, s);
}

/* The bundle named by --model must load; the default one may be missing
 * (then runs get symptoms but health stays unknown). */
static int load_model(struct server *s)
{
	char err[512] = "", path[CONFIG_STR_MAX + 64];
	struct model *m = NULL;
	analyze__model_path(s->analyze, path, sizeof path);
	int rv = analyze__load_model(s->analyze, &m, err, sizeof err);
	if (rv != 0 && s->cfg->model[0] != '\0') {
		log_error("model: %s", err);
		return rv;
	}
	if (rv != 0) {
		metrics.model_load_failures++;
		log_warning("no diagnosis model (%s): health stays unknown", err);
		return 0;
	}
	if (m != NULL) {
		metrics.model_loads++;
		log_info("model %s (feature schema %d, %zu features)", path, m->schema_version, m->n_features);
	} else {
		log_info("model: none (model = none)");
	}
	analyze__set_model(s->analyze, m);
	return 0;
}

int server__init(struct server *s, uv_loop_t *loop, const struct config *cfg)
{
	char err[512];
	int rv;
	memset(s, 0, sizeof *s);
	s->lock_fd = -1;
	s->loop = loop;
	s->cfg = cfg;
	s->started = server__now();
	s->limits = (struct validate_limits){
		.max_layers = (uint32_t)cfg->max_layers,
		.max_name_bytes = (uint32_t)cfg->max_name_bytes,
		.max_tags = (uint32_t)cfg->max_tags,
		.max_world_size = (uint32_t)cfg->max_world_size,
	};
	s->max_conns = raise_fd_limit((size_t)cfg->max_connections);

	struct sockaddr_storage tcp_addr;
	if (cfg->listen[0] != '\0' &&
	    (rv = server__tcp_address("listen", cfg->listen, cfg->token[0] != '\0', "token", &tcp_addr)) != 0)
		return rv;
	/* Checked again when binding; asked first so that a second daemon on
	 * the same socket leaves no new database behind. */
	if (socket_answers(cfg->socket)) {
		log_error("another dnnfaultd is listening on %s", cfg->socket);
		return -EADDRINUSE;
	}
	if ((rv = make_state_dir(cfg->db)) != 0) {
		log_error("state directory of %s: %s", cfg->db, strerror(-rv));
		return rv;
	}
	if ((rv = lock_db(cfg->db, &s->lock_fd)) != 0) {
		log_error("%s: %s", cfg->db, rv == -EBUSY ? "in use by another dnnfaultd" : strerror(-rv));
		return rv;
	}
	if ((rv = store__open(cfg->db, (int)cfg->synchronous, &s->store, err, sizeof err)) != 0) {
		log_error("store: %s", err);
		return rv;
	}
	if ((rv = analyze__init(&s->analyze, s)) != 0)
		return rv;
	if ((rv = load_model(s)) != 0)
		return rv;
	if ((rv = ingest__init(&s->ingest, s)) != 0) {
		log_error("loading runs from the store: %s", strerror(-rv));
		return rv;
	}
	log_info("store %s (schema %d)", cfg->db, store__schema_version());
	if ((rv = listen_unix(s)) != 0)
		return rv;
	if (cfg->listen[0] != '\0' && (rv = listen_tcp(s, &tcp_addr)) != 0)
		return rv;
	if (cfg->metrics_listen[0] != '\0' && (rv = metrics_http__start(&s->metrics_http, s)) != 0)
		return rv;

	/* SIGHUP too: a daemon started by hand stops cleanly with its terminal. */
	uv_signal_init(loop, &s->sigterm);
	uv_signal_init(loop, &s->sigint);
	uv_signal_init(loop, &s->sighup);
	s->has_signals = true;
	s->sigterm.data = s->sigint.data = s->sighup.data = s;
	uv_signal_start(&s->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&s->sigint, signal_cb, SIGINT);
	uv_signal_start(&s->sighup, signal_cb, SIGHUP);

	uv_timer_init(loop, &s->retention);
	s->has_retention = true;
	s->retention.data = s;
	if (cfg->retention_days > 0)
		uv_timer_start(&s->retention, retention_cb, 0, RETENTION_PERIOD_MS);
#if DNNFAULT_HAVE_SYSTEMD
	uint64_t usec;
	if (sd_watchdog_enabled(0, &usec) > 0) {
		uv_timer_init(loop, &s->watchdog);
		uv_timer_start(&s->watchdog, watchdog_cb, usec / 2000, usec / 2000);
		s->watchdog_on = true;
	}
#endif
	(void)watchdog_cb;
	return 0;
}

int server__run(struct server *s)
{
	notify("READY=1");
	log_info("dnnfaultd " DNNFAULT_VERSION " ready");
	uv_run(s->loop, UV_RUN_DEFAULT);
	log_info("stopped");
	return 0;
}

void server__close(struct server *s)
{
	close_handles(s);
	/* Let the close callbacks run before the loop is closed. */
	uv_run(s->loop, UV_RUN_DEFAULT);
	metrics_http__free(s->metrics_http);
	s->metrics_http = NULL;
	ingest__free(s->ingest);
	s->ingest = NULL;
	analyze__free(s->analyze);
	s->analyze = NULL;
	store__close(s->store);
	s->store = NULL;
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	s->lock_fd = -1;
}
