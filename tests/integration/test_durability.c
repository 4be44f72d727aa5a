/* Durability: what the daemon acknowledged survives kill -9, exactly once,
 * and what a client resends after a restart is stored once. Also: SIGTERM
 * acknowledges everything received before the daemon exits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "chunk.h"
#include "dnnfault.h"
#include "harness.h"

#define N_CLIENTS 4
#define N_LAYERS 16
#define MAX_STEPS 2000000

static struct daemon d;

struct client {
	pthread_t thread;
	int index;
	struct dnnfault_stream stream;
	uint64_t sent;		/* highest seq written to the socket */
	uint64_t acked;		/* highest seq acknowledged */
	atomic_bool stop;
	atomic_bool started;
};

static void fill_stats(float *stats, uint64_t step)
{
	for (int i = 0; i < N_LAYERS * DNNFAULT_STATS_PER_LAYER; i++)
		stats[i] = (float)(step % 1000) + (float)i / 1000.0f;
}

/* Step number of sequence number `seq` (seq 1 is the RunStart). */
static uint64_t step_of(uint64_t seq)
{
	return seq - 2;
}

static int send_steps(dnnfault_conn *c, struct client *cl, uint64_t until_seq, bool read_acks)
{
	float stats[N_LAYERS * DNNFAULT_STATS_PER_LAYER];
	struct dnnfault_stream *streams[] = {&cl->stream};
	while (cl->stream.next_seq <= until_seq && !atomic_load(&cl->stop)) {
		struct dnnfault_step s = {0};
		s.step = step_of(cl->stream.next_seq);
		s.has = DNNFAULT_HAS_LOSS;
		s.loss = 1.0 / (double)(s.step + 1);
		fill_stats(stats, s.step);
		s.layer_stats = stats;
		s.n_layers = N_LAYERS;
		int64_t seq = dnnfault_send_step(c, &cl->stream, &s);
		if (seq < 0)
			return (int)seq;
		cl->sent = (uint64_t)seq;
		if (read_acks && dnnfault_poll(c, streams, 1, 0, NULL) < 0)
			return -EPIPE;
		cl->acked = cl->stream.acked_seq;
	}
	return 0;
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	char err[256];
	dnnfault_conn *c = dnnfault_connect(d.address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err,
					    sizeof err, NULL);
	if (c == NULL)
		return NULL;
	char run_id[32];
	snprintf(run_id, sizeof run_id, "durable-%d", cl->index);
	struct dnnfault_layer layers[N_LAYERS];
	char names[N_LAYERS][8];
	for (int i = 0; i < N_LAYERS; i++) {
		snprintf(names[i], sizeof names[i], "l%d", i);
		layers[i] = (struct dnnfault_layer){.name = names[i], .type = "Linear"};
	}
	struct dnnfault_run_info info = {.run_id = run_id, .run_name = run_id, .world_size = 1,
					 .layers = layers, .n_layers = N_LAYERS};
	if (dnnfault_run_start(c, &info, &cl->stream) == 0 &&
	    dnnfault_wait_acked(c, &cl->stream, 5000) == 0) {
		cl->acked = cl->stream.acked_seq;
		atomic_store(&cl->started, true);
		send_steps(c, cl, MAX_STEPS, true);
		/* After the kill: collect acks that were already on their way. */
		struct dnnfault_stream *streams[] = {&cl->stream};
		while (dnnfault_poll(c, streams, 1, 100, NULL) > 0)
			;
		cl->acked = cl->stream.acked_seq;
	}
	dnnfault_close(c);
	return NULL;
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

static void kill9_keeps_acknowledged_steps(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	struct client clients[N_CLIENTS];
	memset(clients, 0, sizeof clients);
	for (int i = 0; i < N_CLIENTS; i++) {
		clients[i].index = i;
		pthread_create(&clients[i].thread, NULL, client_main, &clients[i]);
	}
	for (int i = 0; i < N_CLIENTS; i++)
		while (!atomic_load(&clients[i].started))
			usleep(1000);
	usleep(700 * 1000);
	harness__stop(&d, SIGKILL);
	for (int i = 0; i < N_CLIENTS; i++) {
		atomic_store(&clients[i].stop, true);
		pthread_join(clients[i].thread, NULL);
	}

	/* Every acknowledged step is there exactly once; unacknowledged ones
	 * may or may not be (committed, ack lost in the kill), but never twice. */
	uint64_t total_acked = 0;
	for (int i = 0; i < N_CLIENTS; i++) {
		struct client *cl = &clients[i];
		assert_true(cl->acked > 2);
		total_acked += cl->acked - 1;
		uint64_t n = cl->sent + 1;
		uint32_t *counts = calloc(n, sizeof *counts);
		count_steps(cl->stream.id, counts, n);
		for (uint64_t seq = 2; seq <= cl->sent; seq++) {
			if (seq <= cl->acked && counts[step_of(seq)] != 1)
				fail_msg("client %d: acknowledged step %llu stored %u times", i,
					 (unsigned long long)step_of(seq), counts[step_of(seq)]);
			if (counts[step_of(seq)] > 1)
				fail_msg("client %d: step %llu stored twice", i,
					 (unsigned long long)step_of(seq));
		}
		free(counts);
	}
	print_message("%llu steps acknowledged before kill -9\n", (unsigned long long)total_acked);

	/* Restart; each client reconnects and resends what was not acknowledged
	 * (as the async client does): the daemon stores each step once. */
	harness__start(&d, NULL);
	for (int i = 0; i < N_CLIENTS; i++) {
		struct client *cl = &clients[i];
		char err[256];
		dnnfault_conn *c = dnnfault_connect(d.address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err,
						    sizeof err, NULL);
		assert_non_null(c);
		cl->stream.next_seq = cl->acked + 1;
		atomic_store(&cl->stop, false);
		assert_int_equal(send_steps(c, cl, cl->sent, false), 0);
		assert_int_equal(dnnfault_wait_acked(c, &cl->stream, 10000), 0);
		dnnfault_close(c);
		uint64_t n = cl->sent + 1;
		uint32_t *counts = calloc(n, sizeof *counts);
		count_steps(cl->stream.id, counts, n);
		for (uint64_t seq = 2; seq <= cl->sent; seq++)
			if (counts[step_of(seq)] != 1)
				fail_msg("client %d: after resend, step %llu stored %u times", i,
					 (unsigned long long)step_of(seq), counts[step_of(seq)]);
		free(counts);
	}
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

/* SIGTERM: the daemon commits and acknowledges what it received, then exits 0. */
static void sigterm_acknowledges_everything_received(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	char err[256];
	dnnfault_conn *c = dnnfault_connect(d.address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err,
					    sizeof err, NULL);
	assert_non_null(c);
	struct client cl = {.index = 9};
	struct dnnfault_layer layers[N_LAYERS];
	for (int i = 0; i < N_LAYERS; i++)
		layers[i] = (struct dnnfault_layer){.name = "l", .type = "Linear"};
	struct dnnfault_run_info info = {.run_id = "graceful", .world_size = 1, .layers = layers,
					 .n_layers = N_LAYERS};
	assert_int_equal(dnnfault_run_start(c, &info, &cl.stream), 0);
	assert_int_equal(send_steps(c, &cl, 3001, false), 0);
	kill(d.pid, SIGTERM);
	struct dnnfault_stream *streams[] = {&cl.stream};
	struct dnnfault_reply_error last = {0};
	while (dnnfault_poll(c, streams, 1, 5000, &last) > 0)
		;
	assert_int_equal(cl.stream.acked_seq, 3001);
	assert_int_equal(last.code, DNNFAULT__ERROR_CODE__ERR_SHUTTING_DOWN);
	dnnfault_close(c);
	assert_int_equal(harness__stop(&d, 0), 0);
	uint32_t *counts = calloc(3001, sizeof *counts);
	count_steps(cl.stream.id, counts, 3001);
	for (uint64_t step = 0; step < 3000; step++)
		assert_int_equal(counts[step], 1);
	free(counts);
	harness__cleanup(&d);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(kill9_keeps_acknowledged_steps),
		cmocka_unit_test(sigterm_acknowledges_everything_received),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
