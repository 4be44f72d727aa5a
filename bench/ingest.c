/* Ingest benchmark: N concurrent clients stream steps with L layers each to
 * a real dnnfaultd; prints stored steps/s, MB/s and ack latency p50/p99.
 * In the same run it measures two ceilings for the same work on this
 * machine: the same bytes pushed through a Unix socket to a reader that only
 * discards them, and the same rows committed straight into SQLite through
 * the daemon's own store code (no socket, no protocol).
 *
 * usage: bench-ingest [--clients N] [--steps S] [--layers L] [--daemon PATH]
 *                     [--chunk-steps K] [--repeat R] [--rate STEPS_PER_S_PER_CLIENT]
 *                     [--analyze-every N (0: live analysis off; default 100)]
 *
 * Without --rate the clients send as fast as they can, which measures
 * throughput; ack latency is then mostly queueing. With --rate it shows the
 * latency at that offered load. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chunk.h"
#include "dnnfault.h"
#include "frame.h"
#include "store.h"

struct opts {
	int clients;
	uint64_t steps;		/* per client */
	int layers;
	int chunk_steps;
	int repeat;
	double rate;		/* steps/s per client; 0: as fast as possible */
	const char *analyze_every;	/* daemon's analyze_every_steps; NULL: its default */
	const char *daemon;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill_step(struct dnnfault_step *s, float *stats, int layers, uint64_t step)
{
	memset(s, 0, sizeof *s);
	s->step = step;
	s->time = 1.0e9 + (double)step;
	s->has = DNNFAULT_HAS_LOSS | DNNFAULT_HAS_ACCURACY | DNNFAULT_HAS_LR | DNNFAULT_HAS_INPUT;
	s->loss = 2.0 / (double)(step + 1);
	s->accuracy = 0.5;
	s->lr = 0.01;
	s->input_mean = 0.1;
	s->input_std = 1.0;
	s->input_min = -3;
	s->input_max = 3;
	for (int i = 0; i < layers * DNNFAULT_STATS_PER_LAYER; i++)
		stats[i] = (float)(step % 97) * 0.25f + (float)i;
	s->layer_stats = stats;
	s->n_layers = (size_t)layers;
}

/* ---- the daemon, end to end ---- */

struct client {
	pthread_t thread;
	const struct opts *o;
	const char *address;
	int index;
	double *sent_at;	/* by seq */
	double *latency;	/* by seq */
	uint64_t bytes;
	int failed;
};

static void *client_main(void *arg)
{
	struct client *cl = arg;
	const struct opts *o = cl->o;
	char err[256];
	dnnfault_conn *c = dnnfault_connect(cl->address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err,
					    sizeof err, NULL);
	if (c == NULL) {
		fprintf(stderr, "client %d: %s\n", cl->index, err);
		cl->failed = 1;
		return NULL;
	}
	struct dnnfault_layer *layers = calloc((size_t)o->layers, sizeof *layers);
	for (int i = 0; i < o->layers; i++)
		layers[i] = (struct dnnfault_layer){.name = "layer", .type = "Linear"};
	char run_id[64];
	snprintf(run_id, sizeof run_id, "bench-%d-%d", (int)getpid(), cl->index);
	struct dnnfault_run_info info = {.run_id = run_id, .world_size = 1, .layers = layers,
					 .n_layers = (size_t)o->layers};
	struct dnnfault_stream s;
	struct dnnfault_stream *streams[] = {&s};
	float *stats = malloc((size_t)o->layers * DNNFAULT_STATS_PER_LAYER * sizeof *stats);
	if (dnnfault_run_start(c, &info, &s) != 0 || dnnfault_wait_acked(c, &s, 5000) != 0) {
		cl->failed = 1;
		goto out;
	}
	uint64_t acked = s.acked_seq;
	double start = now_s();
	for (uint64_t i = 0; i < o->steps; i++) {
		if (o->rate > 0) {
			double due = start + (double)i / o->rate, wait = due - now_s();
			if (wait > 0)
				usleep((useconds_t)(wait * 1e6));
		}
		struct dnnfault_step st;
		fill_step(&st, stats, o->layers, i);
		uint64_t seq = s.next_seq;
		cl->sent_at[seq] = now_s();
		if (dnnfault_send_step(c, &s, &st) < 0) {
			cl->failed = 1;
			goto out;
		}
		/* Read what acks are there without waiting. */
		if (dnnfault_poll(c, streams, 1, 0, NULL) < 0) {
			cl->failed = 1;
			goto out;
		}
		double t = now_s();
		for (; acked < s.acked_seq; acked++)
			cl->latency[acked + 1] = t - cl->sent_at[acked + 1];
	}
	while (s.acked_seq + 1 < s.next_seq) {
		if (dnnfault_poll(c, streams, 1, 5000, NULL) <= 0) {
			cl->failed = 1;
			break;
		}
		double t = now_s();
		for (; acked < s.acked_seq; acked++)
			cl->latency[acked + 1] = t - cl->sent_at[acked + 1];
	}
out:
	free(stats);
	free(layers);
	dnnfault_close(c);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Whether the daemon listens: the socket file exists from bind() on, a
 * moment before listen(), and clients started in that moment are refused. */
static bool accepts(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path)
		return false;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static pid_t start_daemon(const struct opts *o, const char *dir, char *address, size_t len)
{
	char sock[256], db[256], chunk[32];
	snprintf(sock, sizeof sock, "%s/d.sock", dir);
	snprintf(db, sizeof db, "%s/d.db", dir);
	snprintf(chunk, sizeof chunk, "%d", o->chunk_steps);
	snprintf(address, len, "unix:%s", sock);
	pid_t pid = fork();
	if (pid == 0) {
		execl(o->daemon, o->daemon, "--socket", sock, "--db", db, "--chunk-steps", chunk,
		      "--log-level", "warning", "--analyze-every-steps",
		      o->analyze_every ? o->analyze_every : "100", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (accepts(sock))
			return pid;
		usleep(10000);
	}
	return -1;
}

struct result {
	double steps_per_s, p50_ms, p99_ms;
};

static int run_daemon(const struct opts *o, const char *dir, struct result *r)
{
	char address[300];
	pid_t pid = start_daemon(o, dir, address, sizeof address);
	if (pid < 0) {
		fprintf(stderr, "dnnfaultd did not start (%s)\n", o->daemon);
		return -1;
	}
	struct client *cl = calloc((size_t)o->clients, sizeof *cl);
	for (int i = 0; i < o->clients; i++) {
		cl[i] = (struct client){.o = o, .address = address, .index = i};
		cl[i].sent_at = calloc(o->steps + 2, sizeof(double));
		cl[i].latency = calloc(o->steps + 2, sizeof(double));
	}
	double t0 = now_s();
	for (int i = 0; i < o->clients; i++)
		pthread_create(&cl[i].thread, NULL, client_main, &cl[i]);
	int failed = 0;
	for (int i = 0; i < o->clients; i++) {
		pthread_join(cl[i].thread, NULL);
		failed |= cl[i].failed;
	}
	double elapsed = now_s() - t0;
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);

	size_t n = (size_t)o->clients * o->steps, k = 0;
	double *lat = malloc(n * sizeof *lat);
	for (int i = 0; i < o->clients; i++)
		for (uint64_t seq = 2; seq < o->steps + 2; seq++)
			lat[k++] = cl[i].latency[seq];
	qsort(lat, k, sizeof *lat, cmp_double);
	r->steps_per_s = (double)n / elapsed;
	r->p50_ms = lat[k / 2] * 1e3;
	r->p99_ms = lat[(size_t)((double)k * 0.99)] * 1e3;
	for (int i = 0; i < o->clients; i++) {
		free(cl[i].sent_at);
		free(cl[i].latency);
	}
	free(cl);
	free(lat);
	return failed ? -1 : 0;
}

/* ---- ceiling 1: the same frames into a Unix socket, read and discarded ---- */

struct writer {
	pthread_t thread;
	int fd;
	const uint8_t *frames;
	size_t frame_len;
	uint64_t count;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	/* Write in batches of 64 frames, as a kernel buffer would take them. */
	size_t batch = 64;
	for (uint64_t i = 0; i < w->count; i += batch) {
		size_t n = (w->count - i < batch ? (size_t)(w->count - i) : batch) * w->frame_len;
		const uint8_t *p = w->frames;
		while (n > 0) {
			ssize_t k = write(w->fd, p, n);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return NULL;
			p += k;
			n -= (size_t)k;
		}
	}
	close(w->fd);
	return NULL;
}

static double run_socket_ceiling(const struct opts *o, size_t *frame_len)
{
	/* One frame of the size the client sends, repeated. */
	struct dnnfault_step st;
	float *stats = malloc((size_t)o->layers * 16 * sizeof *stats);
	fill_step(&st, stats, o->layers, 12345);
	Dnnfault__Step m = DNNFAULT__STEP__INIT;
	m.seq = 100000;
	m.stream = 0x123456789abcdefULL;
	m.step = 12345;
	m.has_time = m.has_loss = m.has_accuracy = m.has_lr = 1;
	m.has_input_mean = m.has_input_std = m.has_input_min = m.has_input_max = 1;
	m.time = st.time;
	m.loss = st.loss;
	m.n_layer_stats = (size_t)o->layers * 16;
	m.layer_stats = stats;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &m;
	size_t len = frame__size(&env);
	uint8_t *frames = malloc(len * 64);
	for (int i = 0; i < 64; i++)
		frame__write(&env, frames + (size_t)i * len);
	free(stats);
	*frame_len = len;

	/* One reader for all connections, like the daemon's single loop thread. */
	struct writer *w = calloc((size_t)o->clients, sizeof *w);
	struct pollfd *p = calloc((size_t)o->clients, sizeof *p);
	for (int i = 0; i < o->clients; i++) {
		int sv[2];
		socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
		w[i] = (struct writer){.fd = sv[0], .frames = frames, .frame_len = len, .count = o->steps};
		p[i] = (struct pollfd){.fd = sv[1], .events = POLLIN};
	}
	static uint8_t buf[256 * 1024];
	double t0 = now_s();
	for (int i = 0; i < o->clients; i++)
		pthread_create(&w[i].thread, NULL, writer_main, &w[i]);
	int open = o->clients;
	uint64_t total = 0;
	while (open > 0 && poll(p, (nfds_t)o->clients, -1) > 0) {
		for (int i = 0; i < o->clients; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			ssize_t k = read(p[i].fd, buf, sizeof buf);
			if (k > 0) {
				total += (uint64_t)k;
				continue;
			}
			close(p[i].fd);
			p[i].fd = -1;
			open--;
		}
	}
	double elapsed = now_s() - t0;
	for (int i = 0; i < o->clients; i++)
		pthread_join(w[i].thread, NULL);
	free(w);
	free(p);
	free(frames);
	return (double)total / (double)len / elapsed;
}

/* ---- ceiling 2: the same rows committed straight into SQLite ---- */

static double run_sqlite_ceiling(const struct opts *o, const char *dir)
{
	char path[300], err[256];
	snprintf(path, sizeof path, "%s/ceiling.db", dir);
	struct store *s;
	if (store__open(path, 1, &s, err, sizeof err) != 0) {
		fprintf(stderr, "ceiling store: %s\n", err);
		return 0;
	}
	/* Pre-built records, so only the store's work is timed. */
	struct dnnfault_step st;
	float *stats = malloc((size_t)o->layers * 16 * sizeof *stats);
	fill_step(&st, stats, o->layers, 12345);
	Dnnfault__Step m = DNNFAULT__STEP__INIT;
	m.step = 12345;
	m.has_loss = 1;
	m.loss = st.loss;
	m.n_layer_stats = (size_t)o->layers * 16;
	m.layer_stats = stats;
	size_t rec = chunk__record_size((size_t)o->layers);
	uint8_t *record = malloc(rec);
	chunk__write_record(&m, record);
	free(stats);

	struct store_batch b = {0};
	for (int i = 0; i < o->clients; i++) {
		struct store_run *r = STORE_BATCH_PUSH(&b, runs);
		char uid[32];
		snprintf(uid, sizeof uid, "ceiling-%d", i);
		*r = (struct store_run){.id = i + 1, .is_new = true, .uid = strdup(uid), .world_size = 1, .time = 1};
		struct store_stream *x = STORE_BATCH_PUSH(&b, streams);
		*x = (struct store_stream){.id = (uint64_t)i + 1, .run = i + 1, .n_layers = (uint32_t)o->layers, .time = 1};
	}
	store__commit(s, &b, err, sizeof err);
	store_batch__reset(&b);

	/* Batches as the daemon sees them under this load: every client's
	 * steps of one commit interval, packed chunk_steps to a row. */
	const uint64_t per_commit = 1024;
	double t0 = now_s();
	uint64_t done = 0;
	for (uint64_t base = 0; base < o->steps; base += per_commit) {
		uint64_t n = o->steps - base < per_commit ? o->steps - base : per_commit;
		for (int i = 0; i < o->clients; i++) {
			for (uint64_t k = 0; k < n; k += (uint64_t)o->chunk_steps) {
				uint64_t in_chunk = n - k < (uint64_t)o->chunk_steps ? n - k : (uint64_t)o->chunk_steps;
				struct store_chunk *c = STORE_BATCH_PUSH(&b, chunks);
				c->run = i + 1;
				c->stream = (uint64_t)i + 1;
				c->n_layers = (uint32_t)o->layers;
				c->first_step = base + k;
				c->last_step = base + k + in_chunk - 1;
				c->n_steps = (uint32_t)in_chunk;
				c->len = c->cap = rec * in_chunk;
				c->data = malloc(c->len);
				for (uint64_t j = 0; j < in_chunk; j++)
					memcpy(c->data + j * rec, record, rec);
			}
			struct store_run_update *ru = STORE_BATCH_PUSH(&b, run_updates);
			*ru = (struct store_run_update){.run = i + 1, .updated = 2, .has_step = true,
							.last_step = base + n, .n_steps = n};
			struct store_stream_update *su = STORE_BATCH_PUSH(&b, stream_updates);
			*su = (struct store_stream_update){.stream = (uint64_t)i + 1, .last_seq = base + n + 1,
							   .updated = 2};
		}
		if (store__commit(s, &b, err, sizeof err) != 0) {
			fprintf(stderr, "ceiling commit: %s\n", err);
			break;
		}
		store_batch__reset(&b);
		done += n * (uint64_t)o->clients;
	}
	double elapsed = now_s() - t0;
	store_batch__free(&b);
	store__close(s);
	free(record);
	return (double)done / elapsed;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	struct opts o = {.clients = 4, .steps = 50000, .layers = 16, .chunk_steps = 64, .repeat = 3,
			 .daemon = getenv("DNNFAULTD") ? getenv("DNNFAULTD") : "build/daemon/dnnfaultd"};
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--clients") == 0)
			o.clients = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--steps") == 0)
			o.steps = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--layers") == 0)
			o.layers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--chunk-steps") == 0)
			o.chunk_steps = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--repeat") == 0)
			o.repeat = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--analyze-every") == 0)
			o.analyze_every = argv[i + 1];
		else if (strcmp(argv[i], "--rate") == 0)
			o.rate = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--daemon") == 0)
			o.daemon = argv[i + 1];
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (o.clients < 1 || o.steps < 1 || o.layers < 1 || o.repeat < 1 || o.chunk_steps < 1) {
		fprintf(stderr, "bad options\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	char dir[] = "/tmp/dnnfault-bench-XXXXXX";
	if (mkdtemp(dir) == NULL)
		return 1;

	enum { MAX_REPEAT = 32 };
	double steps[MAX_REPEAT], mb[MAX_REPEAT], p50[MAX_REPEAT], p99[MAX_REPEAT];
	double sock[MAX_REPEAT], sql[MAX_REPEAT];
	int rounds = o.repeat < MAX_REPEAT ? o.repeat : MAX_REPEAT;
	size_t frame_len = 0;
	int rc = 0;
	for (int r = 0; r < rounds; r++) {
		char sub[64];
		snprintf(sub, sizeof sub, "%s/%d", dir, r);
		mkdir(sub, 0700);
		struct result res = {0};
		sock[r] = run_socket_ceiling(&o, &frame_len);
		if (run_daemon(&o, sub, &res) != 0)
			rc = 1;
		steps[r] = res.steps_per_s;
		mb[r] = res.steps_per_s * (double)frame_len / 1e6;
		p50[r] = res.p50_ms;
		p99[r] = res.p99_ms;
		sql[r] = run_sqlite_ceiling(&o, sub);
		fprintf(stderr, "round %d: daemon %.0f steps/s, socket ceiling %.0f, sqlite ceiling %.0f\n",
			r + 1, steps[r], sock[r], sql[r]);
	}
	double d = median(steps, rounds), s = median(sock, rounds), q = median(sql, rounds);
	double lower = s < q ? s : q;
	printf("bench-ingest: %d clients x %llu steps, %d layers/step, chunk_steps %d, rate %s,"
	       " analyze_every_steps %s, median of %d\n",
	       o.clients, (unsigned long long)o.steps, o.layers, o.chunk_steps,
	       o.rate > 0 ? "limited" : "unlimited", o.analyze_every ? o.analyze_every : "100", rounds);
	if (o.rate > 0)
		printf("  offered load                   %.0f steps/s\n", o.rate * o.clients);
	printf("  frame size                     %zu bytes\n", frame_len);
	printf("  dnnfaultd stored steps/s       %.0f\n", d);
	printf("  dnnfaultd MB/s (wire)          %.1f\n", median(mb, rounds));
	printf("  ack latency p50 / p99          %.2f / %.2f ms\n", median(p50, rounds), median(p99, rounds));
	printf("  ceiling: unix socket discard   %.0f steps/s (%.1f MB/s)\n", s, s * (double)frame_len / 1e6);
	printf("  ceiling: sqlite direct insert  %.0f steps/s\n", q);
	printf("  dnnfaultd / lower ceiling      %.2f\n", d / lower);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}
