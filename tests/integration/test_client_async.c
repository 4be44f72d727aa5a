/* The asynchronous client against a real daemon: delivery and flush, a
 * kill -9 and restart in the middle of streaming (nothing lost, nothing
 * stored twice, the producer never waits), a queue too small for an
 * outage (drops counted and reported), a daemon that starts after the
 * client, steps sent without a flush, and dnnfault_query_status. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "chunk.h"
#include "dnnfault.h"
#include "harness.h"

#define N_LAYERS 4
/* "Never in the way" while the daemon is down for about a second: far below
 * that even on a loaded 2-core machine under sanitizers (measured 4-8 ms). */
#define MAX_STEP_CALL_MS 250.0

static struct daemon d;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static dnnfault_client *new_client(size_t queue_bytes)
{
	struct dnnfault_client_options o = {
		.address = d.address, .queue_bytes = queue_bytes,
		.connect_timeout_ms = 2000, .backoff_initial_ms = 20, .backoff_max_ms = 200,
	};
	dnnfault_client *c = dnnfault_client_new(&o);
	assert_non_null(c);
	return c;
}

static uint64_t start_run(dnnfault_client *c, const char *run)
{
	static struct dnnfault_layer layers[N_LAYERS];
	for (int i = 0; i < N_LAYERS; i++)
		layers[i] = (struct dnnfault_layer){.name = "fc", .type = "Linear"};
	struct dnnfault_run_info info = {.run_id = run, .run_name = run, .world_size = 1,
					 .layers = layers, .n_layers = N_LAYERS};
	uint64_t stream = 0;
	assert_int_equal(dnnfault_client_run_start(c, &info, &stream), 0);
	assert_true(stream != 0 && stream != UINT64_MAX);
	return stream;
}

/* Queues one step and returns how long the call took. */
static double step(dnnfault_client *c, uint64_t stream, uint64_t n)
{
	float stats[N_LAYERS * DNNFAULT_STATS_PER_LAYER];
	for (int i = 0; i < N_LAYERS * DNNFAULT_STATS_PER_LAYER; i++)
		stats[i] = (float)(n % 1000) + (float)i / 1000.0f;
	struct dnnfault_step s = {.step = n, .has = DNNFAULT_HAS_LOSS, .loss = 1.0 / (double)(n + 1),
				  .layer_stats = stats, .n_layers = N_LAYERS};
	double t0 = now_ms();
	assert_int_equal(dnnfault_client_step(c, stream, &s), 0);
	return now_ms() - t0;
}

static void end_run(dnnfault_client *c, uint64_t stream, uint64_t last_step)
{
	struct dnnfault_run_end e = {.status = DNNFAULT_END_COMPLETED, .step = last_step};
	assert_int_equal(dnnfault_client_run_end(c, stream, &e), 0);
	/* An ended stream takes nothing more. */
	assert_int_equal(dnnfault_client_run_end(c, stream, &e), -ENOENT);
}

/* A number or string field of the run in `dnnfaultctl --json status RUN`. */
static uint64_t status_u64(const char *run, const char *key)
{
	static char out[65536];
	char args[128];
	snprintf(args, sizeof args, "--json status %s", run);
	assert_int_equal(harness__ctl(&d, out, sizeof out, args), 0);
	char k[64];
	snprintf(k, sizeof k, "\"%s\":", key);
	const char *p = strstr(out, k);
	if (p == NULL)
		fail_msg("no %s in %s", key, out);
	return strtoull(p + strlen(k), NULL, 10);
}

static bool status_has(const char *run, const char *text)
{
	static char out[65536];
	char args[128];
	snprintf(args, sizeof args, "--json status %s", run);
	assert_int_equal(harness__ctl(&d, out, sizeof out, args), 0);
	return strstr(out, text) != NULL;
}

/* The stored values are the ones sent (see fill_stats). */
static void check_values(const Dnnfault__Step *s)
{
	assert_true(s->layer_stats[17] == (float)(s->step % 1000) + 0.017f);
}

static void count_steps(uint64_t stream, uint32_t *counts, uint64_t n_counts)
{
	harness__count_steps(&d, stream, counts, n_counts, check_values);
}

static void streams_and_flushes(void **state)
{
	(void)state;
	const uint64_t n = 5000;
	harness__start(&d, NULL);
	dnnfault_client *c = new_client(0);
	uint64_t stream = start_run(c, "async-basic");
	for (uint64_t i = 0; i < n; i++)
		step(c, stream, i);
	struct dnnfault_epoch ep = {.epoch = 1, .step = n, .has = DNNFAULT_HAS_VAL_LOSS, .val_loss = 0.5};
	assert_int_equal(dnnfault_client_epoch(c, stream, &ep), 0);
	end_run(c, stream, n - 1);
	assert_int_equal(dnnfault_client_step(c, 12345, &(struct dnnfault_step){0}), -ENOENT);
	assert_int_equal(dnnfault_client_flush(c, 10000), 0);

	struct dnnfault_client_stats st;
	dnnfault_client_stats(c, &st);
	assert_int_equal(st.queued, n + 3);
	assert_int_equal(st.acked, n + 3);
	assert_true(st.sent >= n + 3);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.rejected, 0);
	assert_int_equal(st.queue_messages, 0);
	assert_int_equal(st.queue_bytes, 0);
	assert_true(st.connected);
	assert_int_equal(st.reconnects, 0);
	assert_int_equal(dnnfault_client_flush(c, 0), 0);
	dnnfault_client_close(c, 1000);

	assert_int_equal(status_u64("async-basic", "steps_stored"), n);
	assert_true(status_has("async-basic", "\"state\":\"completed\""));
	harness__cleanup(&d);
}

/* Waits up to 5 s until n messages are acknowledged; returns how many are. */
static uint64_t wait_acked(dnnfault_client *c, uint64_t n)
{
	struct dnnfault_client_stats st;
	double t0 = now_ms();
	do {
		usleep(5000);
		dnnfault_client_stats(c, &st);
	} while (st.acked < n && now_ms() - t0 < 5000);
	return st.acked;
}

/* Steps do not wake the I/O thread one by one (async.h): a few steps and
 * no flush still reach the daemon, at the thread's next look, and so does
 * a step after the thread went to sleep. */
static void steps_arrive_without_a_flush(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	dnnfault_client *c = new_client(0);
	uint64_t stream = start_run(c, "async-no-flush");
	for (uint64_t i = 0; i < 3; i++)
		step(c, stream, i);
	assert_int_equal(wait_acked(c, 4), 4);	/* the run start and the 3 steps */
	assert_int_equal(status_u64("async-no-flush", "steps_stored"), 3);
	/* Idle for longer than ASYNC_ASLEEP_MS the thread stops looking: the
	 * next step must wake it, or it would never be sent. */
	usleep(1500 * 1000);
	step(c, stream, 3);
	assert_int_equal(wait_acked(c, 5), 5);
	dnnfault_client_close(c, 1000);
	harness__cleanup(&d);
}

static void survives_kill9_and_restart(void **state)
{
	(void)state;
	const uint64_t n = 30000;
	harness__start(&d, NULL);
	dnnfault_client *c = new_client(0);
	uint64_t stream = start_run(c, "async-restart");
	double longest = 0;
	struct dnnfault_client_stats st;
	for (uint64_t i = 0; i < n; i++) {
		if (i == n / 3) {
			harness__stop(&d, SIGKILL);
		} else if (i == 2 * n / 3) {
			dnnfault_client_stats(c, &st);
			assert_false(st.connected);
			assert_true(strlen(st.last_error) > 0);
			harness__start(&d, NULL);
		}
		double t = step(c, stream, i);
		if (t > longest)
			longest = t;
		/* A burst before the kill leaves frames unacknowledged. */
		if (i < n / 3 - 5000 || i > n / 3)
			usleep(20);
	}
	end_run(c, stream, n - 1);
	assert_int_equal(dnnfault_client_flush(c, 30000), 0);
	dnnfault_client_stats(c, &st);
	print_message("longest dnnfault_client_step call: %.3f ms; %llu sent for %llu queued, "
		      "%llu reconnects\n", longest, (unsigned long long)st.sent,
		      (unsigned long long)st.queued, (unsigned long long)st.reconnects);
	assert_true(longest < MAX_STEP_CALL_MS);
	assert_true(st.reconnects >= 1);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.rejected, 0);
	assert_int_equal(st.acked, n + 2);
	dnnfault_client_close(c, 1000);

	assert_int_equal(status_u64("async-restart", "steps_stored"), n);
	uint32_t *counts = calloc(n, sizeof *counts);
	count_steps(stream, counts, n);
	for (uint64_t i = 0; i < n; i++)
		if (counts[i] != 1)
			fail_msg("step %llu stored %u times", (unsigned long long)i, counts[i]);
	free(counts);
	harness__cleanup(&d);
}

static void small_queue_drops_and_reports(void **state)
{
	(void)state;
	const uint64_t n = 2000;
	harness__start(&d, NULL);
	dnnfault_client *c = new_client(64 * 1024);
	uint64_t stream = start_run(c, "async-drops");
	assert_int_equal(dnnfault_client_flush(c, 5000), 0);
	harness__stop(&d, SIGKILL);
	struct dnnfault_client_stats st;
	for (uint64_t i = 0; i < n; i++) {
		step(c, stream, i);
		dnnfault_client_stats(c, &st);
		assert_true(st.queue_bytes <= 64 * 1024);
	}
	end_run(c, stream, n - 1);
	dnnfault_client_stats(c, &st);
	assert_true(st.dropped > 0);
	assert_true(st.queue_bytes <= 64 * 1024);
	assert_int_equal(dnnfault_client_flush(c, 200), -ETIMEDOUT);
	harness__start(&d, NULL);
	assert_int_equal(dnnfault_client_flush(c, 20000), 0);
	dnnfault_client_stats(c, &st);
	dnnfault_client_close(c, 1000);

	uint64_t stored = status_u64("async-drops", "steps_stored");
	print_message("%llu of %llu steps dropped, %llu stored\n", (unsigned long long)st.dropped,
		      (unsigned long long)n, (unsigned long long)stored);
	assert_int_equal(stored + st.dropped, n);
	/* The run end carried the final count to the daemon. */
	assert_int_equal(status_u64("async-drops", "dropped"), st.dropped);
	assert_true(status_has("async-drops", "\"state\":\"completed\""));
	harness__cleanup(&d);
}

static void daemon_starts_later(void **state)
{
	(void)state;
	const uint64_t n = 500;
	harness__prepare(&d);
	dnnfault_client *c = new_client(0);
	uint64_t stream = start_run(c, "async-later");
	for (uint64_t i = 0; i < n; i++)
		step(c, stream, i);
	end_run(c, stream, n - 1);
	usleep(100 * 1000);
	struct dnnfault_client_stats st;
	dnnfault_client_stats(c, &st);
	assert_false(st.connected);
	assert_non_null(strstr(st.last_error, "cannot reach dnnfaultd"));
	assert_int_equal(st.queue_messages, n + 2);
	assert_int_equal(dnnfault_client_flush(c, 50), -ETIMEDOUT);

	harness__start(&d, NULL);
	assert_int_equal(dnnfault_client_flush(c, 10000), 0);
	dnnfault_client_stats(c, &st);
	assert_true(st.connected);
	assert_int_equal(st.reconnects, 0);
	assert_int_equal(st.acked, n + 2);
	dnnfault_client_close(c, 1000);
	assert_int_equal(status_u64("async-later", "steps_stored"), n);
	harness__cleanup(&d);
}

/* What `dnnfaultctl --json status RUN` prints inside its runs array. */
static void ctl_object(const char *run, char *out, size_t len)
{
	char args[128];
	snprintf(args, sizeof args, "--json status %s", run);
	assert_int_equal(harness__ctl(&d, out, len, args), 0);
	const char *prefix = "{\"runs\":[";
	assert_memory_equal(out, prefix, strlen(prefix));
	size_t n = strlen(out);
	assert_true(n > strlen(prefix) + 3);
	assert_string_equal(out + n - 3, "]}\n");
	out[n - 3] = '\0';
	memmove(out, out + strlen(prefix), n - strlen(prefix));
}

static void query_status(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	dnnfault_client *c = new_client(0);
	uint64_t stream = start_run(c, "async-query");
	for (uint64_t i = 0; i < 100; i++)
		step(c, stream, i);
	end_run(c, stream, 99);
	assert_int_equal(dnnfault_client_flush(c, 10000), 0);
	dnnfault_client_close(c, 1000);

	/* The daemon may update the run between the two calls; try again. */
	static char expect[65536];
	char *json = NULL;
	bool same = false;
	for (int i = 0; i < 5 && !same; i++) {
		free(json);
		assert_int_equal(dnnfault_query_status(d.address, NULL, "async-query", 5000, &json), 0);
		assert_non_null(json);
		ctl_object("async-query", expect, sizeof expect);
		same = strcmp(json, expect) == 0;
		if (!same)
			usleep(100 * 1000);
	}
	if (!same)
		fail_msg("query: %s\nctl:   %s", json, expect);
	assert_non_null(strstr(json, "\"run\":\"async-query\""));
	assert_non_null(strstr(json, "\"steps_stored\":100"));
	free(json);

	json = (char *)1;
	assert_int_equal(dnnfault_query_status(d.address, NULL, "no-such-run", 5000, &json), -ENOENT);
	assert_null(json);
	assert_int_equal(dnnfault_query_status("bad:address:x", NULL, "r", 5000, &json), -EINVAL);
	harness__stop(&d, SIGTERM);
	assert_int_equal(dnnfault_query_status(d.address, NULL, "async-query", 1000, &json),
			 -ECONNREFUSED);
	assert_null(json);
	harness__cleanup(&d);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(streams_and_flushes),
		cmocka_unit_test(steps_arrive_without_a_flush),
		cmocka_unit_test(survives_kill9_and_restart),
		cmocka_unit_test(small_queue_drops_and_reports),
		cmocka_unit_test(daemon_starts_later),
		cmocka_unit_test(query_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
