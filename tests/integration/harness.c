#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "chunk.h"
#include "frame.h"

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

void harness__prepare(struct daemon *d)
{
	if (d->dir[0] != '\0')
		return;
	snprintf(d->dir, sizeof d->dir, "/tmp/dnnfault-it-XXXXXX");
	if (mkdtemp(d->dir) == NULL)
		fail_msg("mkdtemp: %s", strerror(errno));
	snprintf(d->socket, sizeof d->socket, "%s/d.sock", d->dir);
	snprintf(d->db, sizeof d->db, "%s/state/dnnfault.db", d->dir);
	snprintf(d->log, sizeof d->log, "%s/daemon.log", d->dir);
	snprintf(d->address, sizeof d->address, "unix:%s", d->socket);
}

void harness__start(struct daemon *d, const char *const *args)
{
	harness__prepare(d);
	const char *argv[64] = {env_or("DNNFAULTD", "dnnfaultd"), "--socket", d->socket, "--db", d->db};
	int n = 5;
	for (; args != NULL && *args != NULL && n < 62; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	d->pid = fork();
	if (d->pid == 0) {
		/* A failed assertion skips the test's stop: the daemon must not
		 * outlive the test (nor hold its output open, which keeps meson
		 * waiting until the test's timeout). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int fd = harness__connect(d);
		if (fd >= 0) {
			close(fd);
			return;
		}
		int status;
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			fail_msg("dnnfaultd exited at start (status %d); see %s", status, d->log);
		}
		usleep(10000);
	}
	fail_msg("dnnfaultd did not start listening on %s", d->socket);
}

int harness__stop(struct daemon *d, int sig)
{
	if (d->pid <= 0)
		return -1;
	kill(d->pid, sig);
	int status = 0;
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void harness__cleanup(struct daemon *d)
{
	if (d->pid > 0)
		harness__stop(d, SIGKILL);
	if (d->dir[0] != '\0' && getenv("DNNFAULT_KEEP_TEST_DIR") == NULL) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", d->dir);
	}
	memset(d, 0, sizeof *d);
}

int harness__connect(const struct daemon *d)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->socket);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

void harness__send_bytes(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;	/* the daemon may have closed on us: callers check replies */
		p += n;
		len -= (size_t)n;
	}
}

void harness__send(int fd, const Dnnfault__Envelope *env)
{
	uint8_t *buf;
	size_t len;
	assert_int_equal(frame__encode(env, FRAME_MAX_LIMIT, &buf, &len), 0);
	harness__send_bytes(fd, buf, len);
	free(buf);
}

void harness__send_hello(int fd, Dnnfault__Role role, uint32_t version)
{
	Dnnfault__Hello h = DNNFAULT__HELLO__INIT;
	h.protocol_version = version;
	h.role = role;
	h.client = "integration-test";
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	harness__send(fd, &env);
}

void harness__handshake(int fd, Dnnfault__Role role)
{
	harness__send_hello(fd, role, PROTOCOL_VERSION);
	Dnnfault__Envelope *e = harness__recv(fd, 5000);
	assert_non_null(e);
	assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_WELCOME);
	frame__free(e);
}

static bool read_full(int fd, uint8_t *buf, size_t len, int64_t deadline_ms)
{
	while (len > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t left = deadline_ms - (ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			return false;
		ssize_t n = recv(fd, buf, len, 0);
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

Dnnfault__Envelope *harness__recv(int fd, int timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t deadline = ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	uint8_t hdr[FRAME_HEADER_BYTES];
	if (!read_full(fd, hdr, sizeof hdr, deadline))
		return NULL;
	uint32_t n = frame__get_len(hdr);
	if (n == 0 || n > FRAME_MAX_LIMIT)
		return NULL;
	uint8_t *payload = malloc(n);
	Dnnfault__Envelope *e = NULL;
	if (payload != NULL && read_full(fd, payload, n, deadline))
		e = frame__decode(payload, n);
	free(payload);
	return e;
}

void harness__expect_error(int fd, Dnnfault__ErrorCode code, bool fatal)
{
	Dnnfault__Envelope *e;
	/* Acks may come first; the error is what we wait for. */
	while ((e = harness__recv(fd, 5000)) != NULL && e->body_case == DNNFAULT__ENVELOPE__BODY_ACK)
		frame__free(e);
	if (e == NULL)
		fail_msg("expected error %d, got nothing", code);
	if (e->body_case != DNNFAULT__ENVELOPE__BODY_ERROR)
		fail_msg("expected error %d, got %s", code, frame__body_name(e));
	if ((int)e->error->code != (int)code)
		fail_msg("expected error %d, got %d: %s", code, e->error->code, e->error->message);
	assert_true(strlen(e->error->message) > 0);
	assert_int_equal(e->error->fatal, fatal);
	frame__free(e);
	if (fatal)
		assert_true(harness__closed(fd, 5000));
}

bool harness__closed(int fd, int timeout_ms)
{
	uint8_t buf[4096];
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t deadline = ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t left = deadline - (ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false;
	}
}

int harness__ctl(const struct daemon *d, char *out, size_t len, const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "DNNFAULT_ADDRESS='%s' '%s' %s", d->address,
		 env_or("DNNFAULTCTL", "dnnfaultctl"), args);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t used = 0;
	char sink[4096];
	size_t n;
	while ((n = fread(out ? out + used : sink, 1, out ? len - 1 - used : sizeof sink, p)) > 0)
		if (out != NULL)
			used += n;
	if (out != NULL)
		out[used] = '\0';
	int status = pclose(p);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

uint64_t harness__counter(const struct daemon *d, const char *name)
{
	static char out[16384];
	assert_int_equal(harness__ctl(d, out, sizeof out, "--json stats"), 0);
	char key[128];
	snprintf(key, sizeof key, "\"%s\":", name);
	const char *p = strstr(out, key);
	if (p == NULL)
		fail_msg("no counter %s in %s", name, out);
	return strtoull(p + strlen(key), NULL, 10);
}

void harness__run_start(Dnnfault__RunStart *m, uint64_t stream, const char *run_id, size_t n_layers)
{
	static Dnnfault__Layer layers[64];
	static Dnnfault__Layer *ptrs[64];
	static char names[64][16];
	dnnfault__run_start__init(m);
	m->seq = 1;
	m->stream = stream;
	m->run_id = (char *)run_id;
	m->run_name = (char *)run_id;
	for (size_t i = 0; i < n_layers && i < 64; i++) {
		dnnfault__layer__init(&layers[i]);
		snprintf(names[i], sizeof names[i], "fc%zu", i + 1);
		layers[i].name = names[i];
		layers[i].type = "Linear";
		ptrs[i] = &layers[i];
	}
	m->n_layers = n_layers;
	m->layers = ptrs;
}

void harness__step(Dnnfault__Step *m, uint64_t stream, uint64_t seq, uint64_t step,
		   float *stats, size_t n_layers)
{
	dnnfault__step__init(m);
	m->stream = stream;
	m->seq = seq;
	m->step = step;
	m->has_loss = 1;
	m->loss = 1.0 / (double)(step + 1);
	m->n_layer_stats = n_layers * 16;
	m->layer_stats = stats;
}

void harness__count_steps(const struct daemon *d, uint64_t stream, uint32_t *counts,
			  uint64_t n_counts, void (*check)(const Dnnfault__Step *s))
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(d->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT n_steps, n_layers, data FROM step_chunks"
					    " WHERE stream = ?1", -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_int64(st, 1, (int64_t)stream);
	while (sqlite3_step(st) == SQLITE_ROW) {
		size_t layers = (size_t)sqlite3_column_int64(st, 1);
		float *stats = malloc((layers + 1) * CHUNK_STATS_PER_LAYER * sizeof *stats);
		const uint8_t *p = sqlite3_column_blob(st, 2);
		size_t len = (size_t)sqlite3_column_bytes(st, 2);
		for (int i = 0; i < sqlite3_column_int(st, 0); i++) {
			Dnnfault__Step s = DNNFAULT__STEP__INIT;
			size_t used = chunk__read_record(p, len, &s, stats, layers);
			assert_true(used > 0);
			assert_true(s.step < n_counts);
			if (check != NULL)
				check(&s);
			counts[s.step]++;
			p += used;
			len -= used;
		}
		free(stats);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
}
