/* Connection-level limits against a real daemon: many connections at once,
 * the connection cap, silent clients, clients that never read, and the TCP
 * listener's token. The daemon keeps serving others throughout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dnnfault_config.h"
#include "frame.h"
#include "harness.h"

static struct daemon d;

static void stop(void)
{
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

static void assert_serving(void)
{
	char out[4096];
	assert_int_equal(harness__ctl(&d, out, sizeof out, "version"), 0);
	assert_non_null(strstr(out, "dnnfaultd"));
}

static void thousand_connections(void **state)
{
	(void)state;
	enum { N = 1000 };
	static int fds[N];
	harness__start(&d, NULL);
	for (int i = 0; i < N; i++) {
		fds[i] = harness__connect(&d);
		assert_true(fds[i] >= 0);
		harness__send_hello(fds[i], DNNFAULT__ROLE__ROLE_TRAINER, PROTOCOL_VERSION);
	}
	for (int i = 0; i < N; i++) {
		Dnnfault__Envelope *e = harness__recv(fds[i], 10000);
		assert_non_null(e);
		assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_WELCOME);
		frame__free(e);
	}
	assert_true(harness__counter(&d, "connections_open") >= N);
	assert_serving();
	for (int i = 0; i < N; i++)
		close(fds[i]);
	stop();
}

static void connection_cap(void **state)
{
	(void)state;
	const char *args[] = {"--max-connections", "5", NULL};
	harness__start(&d, args);
	int fds[5];
	for (int i = 0; i < 5; i++) {
		fds[i] = harness__connect(&d);
		harness__handshake(fds[i], DNNFAULT__ROLE__ROLE_CONTROL);
	}
	int extra = harness__connect(&d);
	assert_true(extra >= 0);
	harness__expect_error(extra, DNNFAULT__ERROR_CODE__ERR_LIMIT, true);
	close(extra);
	/* The refusal reaches dnnfaultctl even when its hello meets the
	 * closed socket: exit 1 (an error), never 3 (unreachable). */
	for (int i = 0; i < 20; i++)
		assert_int_equal(harness__ctl(&d, NULL, 0, "version 2>/dev/null"), 1);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	/* Closed connections are reaped asynchronously; dnnfaultctl retries. */
	usleep(100 * 1000);
	assert_true(harness__counter(&d, "connections_rejected") >= 1);
	stop();
}

static void silent_client_times_out(void **state)
{
	(void)state;
	const char *args[] = {"--handshake-timeout-ms", "200", NULL};
	harness__start(&d, args);
	int fd = harness__connect(&d);
	assert_true(fd >= 0);
	harness__expect_error(fd, DNNFAULT__ERROR_CODE__ERR_TIMEOUT, true);
	close(fd);
	assert_int_equal(harness__counter(&d, "handshake_timeouts"), 1);
	assert_serving();
	stop();
}

static void client_that_never_reads_is_dropped(void **state)
{
	(void)state;
	const char *args[] = {"--max-output-bytes", "4096", NULL};
	harness__start(&d, args);
	int fd = harness__connect(&d);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	harness__run_start(&rs, 0x42, "deaf", 1);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	/* Steps in small groups, each group its own commit and Ack, never
	 * read; the daemon hangs up once the unread Acks pass the limit. */
	float stats[16] = {0};
	uint64_t seq;
	for (seq = 2; seq < 200000; seq++) {
		Dnnfault__Step s;
		harness__step(&s, 0x42, seq, seq, stats, 1);
		env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
		env.step = &s;
		uint8_t buf[256];
		size_t len = frame__size(&env);
		frame__write(&env, buf);
		if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
			break;
		if (seq % 4 == 0)
			usleep(200);
	}
	assert_true(seq < 200000);
	print_message("dropped after %llu steps\n", (unsigned long long)seq);
	assert_int_equal(harness__counter(&d, "connections_slow_reader"), 1);
	close(fd);
	assert_serving();
	stop();
}

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static int tcp_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void tcp_token(void **state)
{
	(void)state;
	char listen[32];
	uint16_t port = free_port();
	snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
	const char *args[] = {"--listen", listen, "--token", "s3cret", NULL};
	harness__start(&d, args);

	int fd = tcp_connect(port);
	harness__send_hello(fd, DNNFAULT__ROLE__ROLE_CONTROL, PROTOCOL_VERSION);
	harness__expect_error(fd, DNNFAULT__ERROR_CODE__ERR_AUTH, true);
	close(fd);

	fd = tcp_connect(port);
	Dnnfault__Hello h = DNNFAULT__HELLO__INIT;
	h.protocol_version = PROTOCOL_VERSION;
	h.role = DNNFAULT__ROLE__ROLE_CONTROL;
	h.token = "s3cret";
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	harness__send(fd, &env);
	Dnnfault__Envelope *e = harness__recv(fd, 5000);
	assert_non_null(e);
	assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_WELCOME);
	frame__free(e);
	close(fd);
	/* The Unix socket needs no token: its file mode guards it. */
	assert_serving();
	stop();
}

/* A listener others can reach without a token is refused at start, as a
 * configuration error (2: systemd does not restart it in a loop). */
static void remote_listener_requires_token(void **state)
{
	(void)state;
	char cmd[512];
	snprintf(cmd, sizeof cmd,
		 "'%s' --socket /tmp/dnnfault-remote-%d.sock --db /tmp/dnnfault-remote-%d.db"
		 " --listen 0.0.0.0:%u 2>/dev/null", getenv("DNNFAULTD"), (int)getpid(), (int)getpid(),
		 free_port());
	int status = system(cmd);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	snprintf(cmd, sizeof cmd, "rm -f /tmp/dnnfault-remote-%d.*", (int)getpid());
	assert_int_equal(system(cmd), 0);
}

/* A second daemon on a socket in use exits 1 before it creates anything:
 * no database of its own is left behind. */
static void second_daemon_on_the_socket(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	char db[160], cmd[512];
	snprintf(db, sizeof db, "/tmp/dnnfault-second-%d.db", (int)getpid());
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' --db '%s' --model none 2>/dev/null",
		 getenv("DNNFAULTD"), d.socket, db);
	int status = system(cmd);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	assert_int_equal(access(db, F_OK), -1);
	stop();
}

/* Under systemd: READY=1 once listening, STOPPING=1 on SIGTERM. */
static void sd_notify_ready_and_stopping(void **state)
{
	(void)state;
	if (!DNNFAULT_HAVE_SYSTEMD)
		skip();
	char path[64];
	snprintf(path, sizeof path, "/tmp/dnnfault-notify-%d.sock", (int)getpid());
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	setenv("NOTIFY_SOCKET", path, 1);
	harness__start(&d, NULL);
	unsetenv("NOTIFY_SOCKET");
	char buf[256] = "";
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "READY=1"));
	kill(d.pid, SIGTERM);
	assert_int_equal(poll(&p, 1, 5000), 1);
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "STOPPING=1"));
	assert_int_equal(harness__stop(&d, 0), 0);
	harness__cleanup(&d);
	close(fd);
	unlink(path);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(thousand_connections),
		cmocka_unit_test(connection_cap),
		cmocka_unit_test(silent_client_times_out),
		cmocka_unit_test(client_that_never_reads_is_dropped),
		cmocka_unit_test(tcp_token),
		cmocka_unit_test(remote_listener_requires_token),
		cmocka_unit_test(second_daemon_on_the_socket),
		cmocka_unit_test(sd_notify_ready_and_stopping),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
