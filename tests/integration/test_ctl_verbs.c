/* dnnfaultctl's model, watch and reference verbs against a real daemon:
 * what they print and their exit codes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dnnfault_config.h"
#include "frame.h"
#include "harness.h"

static struct daemon d;
static char out[16384];

static void stop(void)
{
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void model_info_without_a_model(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "model"), 0);
	assert_non_null(strstr(out, "loaded          no\n"));
	assert_non_null(strstr(out, "schema_version  "));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json model info"), 0);
	assert_non_null(strstr(out, "{\"loaded\":false,\"path\":null,\"schema_version\":"));
	assert_non_null(strstr(out, "\"bundle\":null}\n"));
	/* With model = none there is nothing to load, which is no error. */
	assert_int_equal(harness__ctl(&d, out, sizeof out, "model reload"), 0);
	assert_int_equal(harness__ctl(&d, NULL, 0, "model load 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "model info reload 2>/dev/null"), 2);
	stop();
}

/* A reload that fails (the bundle's bundle.txt is gone) leaves the bundle
 * loaded at start in use and says why. Works on a copy of the source tree's
 * default bundle. */
static void model_reload_of_a_broken_bundle(void **state)
{
	(void)state;
	char dir[] = "/tmp/dnnfault-bundle-XXXXXX", cmd[512], model[64];
	assert_non_null(mkdtemp(dir));
	snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/b'", DNNFAULT_SOURCE_MODEL_DIR, dir);
	assert_int_equal(system(cmd), 0);
	snprintf(model, sizeof model, "%s/b", dir);
	const char *args[] = {"--model", model, NULL};
	harness__start(&d, args);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json model"), 0);
	assert_non_null(strstr(out, "\"loaded\":true"));
	snprintf(cmd, sizeof cmd, "%s/bundle.txt", model);
	assert_int_equal(unlink(cmd), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "model reload 2>&1"), 1);
	assert_non_null(strstr(out, "dnnfaultctl: "));
	assert_non_null(strstr(out, "bundle.txt"));
	/* The daemon goes on serving with the bundle it had. */
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json model info"), 0);
	assert_non_null(strstr(out, "\"loaded\":true"));
	assert_true(harness__counter(&d, "model_load_failures") >= 1);
	stop();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void watch_an_empty_daemon(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "watch --count 2 --interval 100"), 0);
	assert_string_equal(out, "");
	assert_int_equal(harness__ctl(&d, out, sizeof out, "watch NOSUCH --count 1 2>&1"), 4);
	assert_non_null(strstr(out, "NOSUCH"));
	assert_int_equal(harness__ctl(&d, NULL, 0, "status --count 1 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "watch --interval 0 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "watch a b 2>/dev/null"), 2);
	/* the offline verbs check their options before reading anything */
	assert_int_equal(harness__ctl(&d, out, sizeof out, "train - /nonexistent --false-alarm 0.5 2>&1"), 2);
	assert_non_null(strstr(out, "--false-alarm wants a share"));
	assert_int_equal(harness__ctl(&d, NULL, 0, "evaluate - --false-alarm 4pct 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "evaluate - --false-alarm 0 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "rows - --false-alarm 0.04 2>/dev/null"), 2);
	stop();
}

/* A trainer connection that has started run `name` (one layer) naming
 * `reference` (NULL: none). */
static int start_run(uint64_t stream, const char *name, const char *reference)
{
	int fd = harness__connect(&d);
	assert_true(fd >= 0);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	harness__run_start(&rs, stream, name, 1);
	rs.reference = (char *)reference;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	Dnnfault__Envelope *ack = harness__recv(fd, 5000);
	assert_non_null(ack);
	assert_int_equal(ack->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
	frame__free(ack);
	return fd;
}

/* Steps 0..n-1 with a NaN loss, after the RunStart (seq 1); waits for the
 * last one's ack. */
static void send_nan_steps(int fd, uint64_t stream, uint64_t n)
{
	float stats[16] = {0};
	for (uint64_t i = 0; i < n; i++) {
		Dnnfault__Step s;
		harness__step(&s, stream, i + 2, i, stats, 1);
		s.loss = NAN;
		Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
		env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
		env.step = &s;
		harness__send(fd, &env);
	}
	for (bool acked = false; !acked;) {
		Dnnfault__Envelope *e = harness__recv(fd, 5000);
		assert_non_null(e);
		acked = e->body_case == DNNFAULT__ENVELOPE__BODY_ACK &&
			e->ack->streams[0]->seq == n + 1;
		frame__free(e);
	}
}

static void *watch_thread(void *arg)
{
	harness__ctl(&d, arg, sizeof out, "watch live --count 60 --interval 50");
	return NULL;
}

/* One line when watch first sees a run, none while nothing changes, and
 * another when its symptoms do. */
static void watch_prints_changes(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", "--analyze-every-steps", "20", NULL};
	harness__start(&d, args);
	int fd = start_run(0x77, "live", NULL);

	assert_int_equal(harness__ctl(&d, out, sizeof out, "watch live --count 3 --interval 50"), 0);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, " run live step - running "));
	assert_non_null(strstr(out, "  cause: -  symptoms: -\n"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json watch --count 1"), 0);
	assert_int_equal(count_lines(out), 1);
	assert_true(strncmp(out, "{\"time\":", 8) == 0);
	assert_non_null(strstr(out, ",\"run\":{\"run\":\"live\",\"id\":\"live\",\"state\":\"running\""));

	pthread_t t;
	static char live[sizeof out];
	assert_int_equal(pthread_create(&t, NULL, watch_thread, live), 0);
	usleep(500000);
	send_nan_steps(fd, 0x77, 40);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(count_lines(live) >= 2);
	char *second = strchr(live, '\n') + 1;
	second[-1] = '\0';
	assert_null(strstr(live, "nan_loss"));
	assert_non_null(strstr(second, "symptoms: nan_loss@0"));
	close(fd);
	stop();
}

/* Sends a RunStart of rank `rank` of a run of `world` ranks on a new
 * stream of `fd`, and waits for its ack (acks of earlier streams may come
 * first). */
static void start_rank(int fd, uint64_t stream, const char *run, uint32_t rank, uint32_t world,
		       const char *reference)
{
	Dnnfault__RunStart rs;
	harness__run_start(&rs, stream, run, 1);
	rs.has_rank = rs.has_world_size = 1;
	rs.rank = rank;
	rs.world_size = world;
	rs.reference = (char *)reference;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	for (bool acked = false; !acked;) {
		Dnnfault__Envelope *e = harness__recv(fd, 5000);
		assert_non_null(e);
		assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
		for (size_t i = 0; i < e->ack->n_streams; i++)
			acked |= e->ack->streams[i]->stream == stream;
		frame__free(e);
	}
}

/* A run's reference: from its RunStart, then set, cleared and refused
 * through `reference`; shown by status and show; kept over a restart. */
static void reference_run(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int base = start_run(0x100, "base", NULL);
	int child = start_run(0x101, "child", "base");
	int other = start_run(0x102, "other", NULL);

	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status child"), 0);
	assert_non_null(strstr(out, ",\"reference\":\"base\"}"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status base"), 0);
	assert_null(strstr(out, "reference"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "show child"), 0);
	assert_non_null(strstr(out, "\nreference   base\n"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json show child"), 0);
	assert_non_null(strstr(out, "\"run_name\":\"child\",\"reference\":\"base\","));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "show base"), 0);
	assert_null(strstr(out, "reference"));

	/* Set afterwards, answered with the run's status; then cleared. */
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child other"), 0);
	assert_non_null(strstr(out, "RUN "));
	assert_non_null(strstr(out, "\nchild "));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json reference child base"), 0);
	assert_non_null(strstr(out, "\"run\":\"child\""));
	assert_non_null(strstr(out, "\"reference\":\"base\""));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child other"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "show child"), 0);
	assert_non_null(strstr(out, "\nreference   other\n"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child --clear"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status child"), 0);
	assert_null(strstr(out, "reference"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "show child"), 0);
	assert_null(strstr(out, "\nreference "));

	/* Refusals: an unknown run or reference (4), the run itself and an
	 * ambiguous name (1); nothing changes. */
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child base"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child no-such-ref 2>&1"), 4);
	assert_non_null(strstr(out, "dnnfaultctl: reference run 'no-such-ref' is not in the store\n"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference no-such-run base 2>&1"), 4);
	assert_non_null(strstr(out, "no-such-run"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child child 2>&1"), 1);
	assert_non_null(strstr(out, "its own reference"));
	int twins = harness__connect(&d);
	assert_true(twins >= 0);
	harness__handshake(twins, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	for (int i = 0; i < 2; i++) {
		harness__run_start(&rs, 0x110 + (uint64_t)i, i ? "twin-b" : "twin-a", 1);
		rs.run_name = "twin";
		Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
		env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
		env.run_start = &rs;
		harness__send(twins, &env);
	}
	for (int acked = 0; acked < 2;) {
		Dnnfault__Envelope *e = harness__recv(twins, 5000);
		assert_non_null(e);
		assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
		for (size_t i = 0; i < e->ack->n_streams; i++)
			acked++;
		frame__free(e);
	}
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child twin 2>&1"), 1);
	assert_non_null(strstr(out, "several runs are named 'twin'"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "reference child twin-b"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status child"), 0);
	assert_non_null(strstr(out, "\"reference\":\"twin-b\""));

	/* Usage errors never reach the daemon. */
	assert_int_equal(harness__ctl(&d, NULL, 0, "reference child 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "reference 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "reference child a b 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "reference child base --clear 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, NULL, 0, "status --clear 2>/dev/null"), 2);

	/* Over-long: refused with the limit in the message, from dnnfaultctl
	 * and in a RunStart; the daemon goes on serving both connections. */
	char cmd[512], longref[300];
	memset(longref, 'x', sizeof longref - 1);
	longref[sizeof longref - 1] = '\0';
	snprintf(cmd, sizeof cmd, "reference child %s 2>&1", longref);
	assert_int_equal(harness__ctl(&d, out, sizeof out, cmd), 1);
	assert_non_null(strstr(out, "dnnfaultctl: reference longer than 256 bytes\n"));
	harness__run_start(&rs, 0x120, "long", 1);
	rs.reference = longref;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(other, &env);
	Dnnfault__Envelope *e = harness__recv(other, 5000);
	assert_non_null(e);
	assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_ERROR);
	assert_int_equal(e->error->code, DNNFAULT__ERROR_CODE__ERR_LIMIT);
	assert_false(e->error->fatal);
	assert_string_equal(e->error->message, "reference longer than 256 bytes");
	frame__free(e);
	assert_int_equal(harness__ctl(&d, NULL, 0, "status long 2>/dev/null"), 4);
	start_rank(other, 0x121, "long", 0, 1, "base");
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status long"), 0);
	assert_non_null(strstr(out, "\"reference\":\"base\""));

	/* Ranks: the first one seen names it, a later rank 0 that names
	 * another replaces it, a rank 0 that names none leaves it. */
	start_rank(base, 0x130, "multi", 1, 3, "base");
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status multi"), 0);
	assert_non_null(strstr(out, "\"reference\":\"base\""));
	start_rank(base, 0x131, "multi", 2, 3, "other");
	start_rank(base, 0x132, "multi", 0, 3, "child");
	start_rank(base, 0x133, "multi", 0, 3, NULL);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status multi"), 0);
	assert_non_null(strstr(out, "\"reference\":\"child\""));

	/* Kept in the store over a restart. */
	close(base);
	close(child);
	close(other);
	close(twins);
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__start(&d, args);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status child multi"), 0);
	assert_non_null(strstr(out, "\"reference\":\"twin-b\""));
	assert_non_null(strstr(out, "\"reference\":\"child\""));
	stop();
}

/* Occurrences of `needle` in `s`. */
static size_t count_of(const char *s, const char *needle)
{
	size_t n = 0;
	for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* `watch | head -1` on runs that do not change: watch notices between
 * polls that its reader is gone and ends quietly with exit status 1, as
 * on a failed write. */
static void watch_ends_when_its_reader_goes(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int fd = start_run(0x200, "idle", NULL);
	char errlog[200];
	snprintf(errlog, sizeof errlog, "%s/watch.err", d.dir);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		freopen(errlog, "w", stderr);
		const char *ctl = getenv("DNNFAULTCTL");
		execl(ctl ? ctl : "dnnfaultctl", "dnnfaultctl", "--address", d.address, "watch", "--interval",
		      "50", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	char line[512];
	ssize_t n = read(p[0], line, sizeof line - 1);
	assert_true(n > 0);
	line[n] = '\0';
	assert_non_null(strstr(line, " run idle "));
	close(p[0]);
	int status = 0;
	pid_t got = 0;
	for (int i = 0; i < 300 && got == 0; i++) {
		got = waitpid(pid, &status, WNOHANG);
		if (got == 0)
			usleep(10000);
	}
	if (got == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("watch still runs 3 s after its reader went away");
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	struct stat st;
	assert_int_equal(stat(errlog, &st), 0);
	assert_int_equal(st.st_size, 0);
	close(fd);
	stop();
}

/* Causes are stored once each, in the order first named, from `label` and
 * from a RunStart; `healthy` must stand alone. */
static void label_causes(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int fd = start_run(0x300, "lab", NULL);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "label lab lr_high lr_high"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status lab"), 0);
	assert_non_null(strstr(out, "\"labels\":[\"lr_high\"]"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json label lab init lr_high init lr_high"), 0);
	assert_non_null(strstr(out, "\"labels\":[\"init\",\"lr_high\"]"));

	assert_int_equal(harness__ctl(&d, out, sizeof out, "label lab healthy lr_high 2>&1"), 1);
	assert_non_null(strstr(out, "dnnfaultctl: 'healthy' must stand alone"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status lab"), 0);
	assert_non_null(strstr(out, "\"labels\":[\"init\",\"lr_high\"]"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json label lab healthy"), 0);
	assert_non_null(strstr(out, "\"labels\":[]"));

	Dnnfault__RunStart rs;
	harness__run_start(&rs, 0x301, "twice", 1);
	char *labels[] = {"data", "init", "data"};
	rs.labels = labels;
	rs.n_labels = 3;
	rs.has_labels_known = rs.labels_known = 1;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	Dnnfault__Envelope *ack = harness__recv(fd, 5000);
	assert_non_null(ack);
	assert_int_equal(ack->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
	frame__free(ack);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status twice"), 0);
	assert_non_null(strstr(out, "\"labels\":[\"data\",\"init\"]"));
	close(fd);
	stop();
}

/* A run named twice is printed once; runs --limit takes at least 1. */
static void status_and_runs_operands(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int a = start_run(0x400, "one", NULL);
	int b = start_run(0x401, "two", NULL);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "status one one"), 0);
	assert_int_equal(count_lines(out), 2);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status one two one"), 0);
	assert_int_equal(count_of(out, "\"id\":\"one\""), 1);
	assert_int_equal(count_of(out, "\"id\":\"two\""), 1);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "runs --limit 0 2>&1"), 2);
	assert_non_null(strstr(out, "--limit wants a number of runs (at least 1)"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "runs --limit 1"), 0);
	assert_int_equal(count_lines(out), 2);
	close(a);
	close(b);
	stop();
}

/* Table columns line up on a terminal whatever the names' scripts: a CJK
 * character takes two columns, so "训练" (6 bytes, 2 characters) is 4 wide,
 * and the other rows are padded to that. */
static void tables_align_wide_characters(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int a = start_run(0x500, "训练", NULL);
	int b = start_run(0x501, "ab", NULL);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "runs"), 0);
	assert_non_null(strstr(out, "ID    NAME  STATE"));
	assert_non_null(strstr(out, "\n训练  训练  running"));
	assert_non_null(strstr(out, "\nab    ab    running"));
	close(a);
	close(b);
	stop();
}

/* Usage errors of the offline verbs and of addresses: exit status 2 with
 * a message that says what is wrong; no daemon is needed. */
static void usage_of_offline_verbs_and_addresses(void **state)
{
	(void)state;
	harness__prepare(&d);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json rows X 2>&1"), 2);
	assert_non_null(strstr(out, "dnnfaultctl: rows takes no daemon options"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--address unix:/x train X Y 2>&1"), 2);
	assert_non_null(strstr(out, "dnnfaultctl: train takes no daemon options"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "evaluate 2>&1"), 2);
	assert_non_null(strstr(out, "usage: dnnfaultctl evaluate CORPUS"));
	assert_null(strstr(out, "dnnfaultctl train"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "rows 2>&1"), 2);
	assert_non_null(strstr(out, "usage: dnnfaultctl rows STORE"));
	assert_null(strstr(out, "dnnfaultctl train"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--help"), 0);
	assert_non_null(strstr(out, "--references FILE.csv"));
	assert_non_null(strstr(out, "--predictions FILE.csv"));

	assert_int_equal(harness__ctl(&d, out, sizeof out, "--address garbage status 2>&1"), 2);
	assert_non_null(strstr(out, "invalid address \"garbage\""));
	char cmd[512];
	const char *ctl = getenv("DNNFAULTCTL");
	snprintf(cmd, sizeof cmd, "DNNFAULT_ADDRESS=garbage '%s' status 2>&1", ctl ? ctl : "dnnfaultctl");
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = '\0';
	int status = pclose(f);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	assert_non_null(strstr(out, "invalid DNNFAULT_ADDRESS \"garbage\""));
}

/* train on the daemon's store while it holds one healthy run only: exit
 * status 1, what is missing, and no bundle. */
static void train_without_faulty_runs(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int fd = start_run(0x500, "calm", NULL);
	send_nan_steps(fd, 0x500, 20);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "label calm healthy"), 0);
	char cmd[512], bundle[200];
	snprintf(bundle, sizeof bundle, "%s/bundle", d.dir);
	snprintf(cmd, sizeof cmd, "train '%s' '%s' --quiet 2>&1", d.db, bundle);
	assert_int_equal(harness__ctl(&d, out, sizeof out, cmd), 1);
	assert_string_equal(out, "dnnfaultctl: training needs faulty and healthy runs: the corpus has 1 healthy run"
				 " and 0 faulty\n");
	assert_int_equal(access(bundle, F_OK), -1);
	close(fd);
	stop();
}

/* train on runs of one program: the bundle is written, and stderr says
 * that nothing checked it on another program. */
static void train_on_one_program_warns(void **state)
{
	(void)state;
	const char *args[] = {"--model", "none", NULL};
	harness__start(&d, args);
	int calm = start_run(0x510, "digits-calm", NULL), hot = start_run(0x511, "digits-hot", NULL);
	send_nan_steps(calm, 0x510, 20);
	send_nan_steps(hot, 0x511, 20);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "label digits-calm healthy"), 0);
	assert_int_equal(harness__ctl(&d, out, sizeof out, "label digits-hot lr_high"), 0);
	char cmd[512], bundle[200];
	snprintf(bundle, sizeof bundle, "%s/bundle", d.dir);
	snprintf(cmd, sizeof cmd, "train '%s' '%s' --quiet 2>&1 >/dev/null", d.db, bundle);
	assert_int_equal(harness__ctl(&d, out, sizeof out, cmd), 0);
	assert_non_null(strstr(out, "dnnfaultctl: the corpus has runs of one program (digits): cross-validation"));
	snprintf(cmd, sizeof cmd, "%s/bundle.txt", bundle);
	assert_int_equal(access(cmd, F_OK), 0);
	close(calm);
	close(hot);
	stop();
}

static int teardown(void **state)
{
	(void)state;
	harness__cleanup(&d);
	return 0;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(model_info_without_a_model, teardown),
		cmocka_unit_test_teardown(train_on_one_program_warns, teardown),
		cmocka_unit_test_teardown(model_reload_of_a_broken_bundle, teardown),
		cmocka_unit_test_teardown(watch_an_empty_daemon, teardown),
		cmocka_unit_test_teardown(watch_prints_changes, teardown),
		cmocka_unit_test_teardown(reference_run, teardown),
		cmocka_unit_test_teardown(watch_ends_when_its_reader_goes, teardown),
		cmocka_unit_test_teardown(label_causes, teardown),
		cmocka_unit_test_teardown(status_and_runs_operands, teardown),
		cmocka_unit_test_teardown(tables_align_wide_characters, teardown),
		cmocka_unit_test_teardown(usage_of_offline_verbs_and_addresses, teardown),
		cmocka_unit_test_teardown(train_without_faulty_runs, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
