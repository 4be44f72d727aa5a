/* Streams the telemetry of a simulated training run to dnnfaultd through
 * the public client API: a 4-layer MLP on an MNIST-like task whose loss
 * decays exponentially with noise, or, with --fault lr_high, diverges to
 * Inf and NaN as a far too high learning rate would make it. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dnnfault.h"

#define N_LAYERS 4
#define ACK_TIMEOUT_MS 10000

struct options {
	const char *address;
	const char *run;
	unsigned long steps, every_ms, epoch_steps, seed;
	bool lr_high;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* xorshift64*: reproducible noise without global state in libc. */
static uint64_t rng_state;

static double uniform(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double gaussian(void)
{
	double u = uniform(), v = uniform();
	return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

static const char *const layer_names[N_LAYERS] = {"fc1", "fc2", "fc3", "fc4"};
static const char *const activations[N_LAYERS] = {"relu", "relu", "relu", "none"};
static const uint64_t fan_in[N_LAYERS] = {784, 128, 64, 32};
static const uint64_t fan_out[N_LAYERS] = {128, 64, 32, 10};

/* The state of the simulated network that the statistics derive from. */
struct sim {
	const struct options *opt;
	double lr, loss0, tau;
	unsigned long fault_step;	/* with lr_high: where divergence starts */
};

/* Loss at step t: exponential decay towards 0.05 with 5% noise; with the
 * fault, exponential growth after fault_step that overflows to Inf and
 * then turns into NaN, as float arithmetic does. */
static double sim__loss(const struct sim *s, unsigned long t)
{
	double loss = 0.05 + (s->loss0 - 0.05) * exp(-(double)t / s->tau);
	loss *= 1 + 0.05 * gaussian();
	if (!s->opt->lr_high || t < s->fault_step)
		return loss;
	/* Reaches the double range's end (e^700) steps/5 steps after the fault
	 * starts; Inf - Inf turns it into NaN three steps later. */
	unsigned long span = s->opt->steps / 5 > 5 ? s->opt->steps / 5 : 5;
	double growth = 700.0 / (double)span * (double)(t - s->fault_step);
	if (t - s->fault_step > span + 3)
		return NAN;
	if (growth > 700)
		return INFINITY;
	return loss * exp(growth);
}

static void sim__layer_stats(const struct sim *s, unsigned long t, double loss, float *st)
{
	double progress = 1 - exp(-(double)t / s->tau);
	for (int i = 0; i < N_LAYERS; i++) {
		float *x = st + i * DNNFAULT_STATS_PER_LAYER;
		double params = (double)(fan_in[i] * fan_out[i]);
		/* Kaiming-initialised weights have norm ~ sqrt(2 * fan_out). */
		double wnorm = sqrt(2.0 * (double)fan_out[i]) * (1 + 0.1 * progress);
		double gnorm = (0.5 + 0.25 * i) * loss / s->loss0 *
			       (1 + 0.1 * gaussian());
		if (s->opt->lr_high && t >= s->fault_step)
			wnorm *= 1 + s->lr * gnorm;
		bool relu = strcmp(activations[i], "relu") == 0;
		x[DNNFAULT_WEIGHT_NORM] = (float)wnorm;
		x[DNNFAULT_WEIGHT_MEAN] = (float)(1e-3 * gaussian());
		x[DNNFAULT_WEIGHT_STD] = (float)(wnorm / sqrt(params));
		x[DNNFAULT_WEIGHT_MAX_ABS] = (float)(4 * wnorm / sqrt(params));
		x[DNNFAULT_GRAD_NORM] = (float)gnorm;
		x[DNNFAULT_GRAD_MEAN] = (float)(1e-4 * gaussian() * gnorm);
		x[DNNFAULT_GRAD_STD] = (float)(gnorm / sqrt(params));
		x[DNNFAULT_GRAD_MAX_ABS] = (float)(5 * gnorm / sqrt(params));
		x[DNNFAULT_GRAD_ZERO_FRAC] = relu ? (float)(0.35 + 0.02 * gaussian()) : 0.0f;
		x[DNNFAULT_UPDATE_RATIO] = (float)(s->lr * gnorm / wnorm);
		x[DNNFAULT_ACT_MEAN] = relu ? (float)(0.4 + 0.02 * gaussian()) : (float)(0.01 * gaussian());
		x[DNNFAULT_ACT_STD] = (float)(0.6 + 0.02 * gaussian());
		x[DNNFAULT_ACT_NONPOS_FRAC] = relu ? (float)(0.45 + 0.02 * gaussian()) : 0.5f;
		x[DNNFAULT_ACT_SATURATED_FRAC] = 0.0f;
		/* float32 gradients overflow long before the double loss does. */
		x[DNNFAULT_NAN_COUNT] = isnan(gnorm) ? (float)params : 0.0f;
		x[DNNFAULT_INF_COUNT] = isinf((float)gnorm) ? (float)params : 0.0f;
		if (!isfinite(gnorm))
			for (int k = DNNFAULT_WEIGHT_NORM; k <= DNNFAULT_ACT_STD; k++)
				x[k] = (float)gnorm;
	}
}

static void sleep_ms(unsigned long ms)
{
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !interrupted)
		;
}

static int usage(void)
{
	fprintf(stderr, "usage: simulated_training [--address ADDR] [--run NAME] [--steps N]\n"
			"         [--every-ms M] [--epoch-steps N] [--seed S] [--fault lr_high]\n");
	return 2;
}

static bool parse_ulong(const char *s, unsigned long *out)
{
	char *end;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && s[0] != '-';
}

/* Returns 0, or the exit status for a usage error. */
static int parse_options(int argc, char **argv, struct options *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = v != NULL;
		if (strcmp(a, "--address") == 0 && ok)
			o->address = v;
		else if (strcmp(a, "--run") == 0 && ok)
			o->run = v;
		else if (strcmp(a, "--steps") == 0 && ok)
			ok = parse_ulong(v, &o->steps) && o->steps > 0;
		else if (strcmp(a, "--every-ms") == 0 && ok)
			ok = parse_ulong(v, &o->every_ms);
		else if (strcmp(a, "--epoch-steps") == 0 && ok)
			ok = parse_ulong(v, &o->epoch_steps) && o->epoch_steps > 0;
		else if (strcmp(a, "--seed") == 0 && ok)
			ok = parse_ulong(v, &o->seed);
		else if (strcmp(a, "--fault") == 0 && ok) {
			o->lr_high = strcmp(v, "lr_high") == 0;
			ok = o->lr_high || strcmp(v, "none") == 0;
		} else
			ok = false;
		if (!ok)
			return usage();
		i++;
	}
	return 0;
}

/* Reads acknowledgements and errors that arrive within timeout_ms, so that
 * the daemon never sees us as a slow reader. Counts the polls that brought
 * a rejection and keeps the first one's error. Returns the number of frames
 * read, or a negative errno. */
static int drain(dnnfault_conn *c, struct dnnfault_stream *s, int timeout_ms,
		 unsigned *rejected, struct dnnfault_reply_error *first)
{
	struct dnnfault_stream *const streams[] = {s};
	struct dnnfault_reply_error e = {0};
	int rv = dnnfault_poll(c, streams, 1, timeout_ms, &e);
	if (e.code != 0) {
		if ((*rejected)++ == 0)
			*first = e;
	}
	return rv;
}

static void describe(struct dnnfault_layer *layers,
		     struct dnnfault_shape shapes[N_LAYERS][2], uint64_t dims[N_LAYERS][3])
{
	for (int i = 0; i < N_LAYERS; i++) {
		dims[i][0] = fan_out[i];
		dims[i][1] = fan_in[i];
		dims[i][2] = fan_out[i];
		shapes[i][0] = (struct dnnfault_shape){"weight", &dims[i][0], 2};
		shapes[i][1] = (struct dnnfault_shape){"bias", &dims[i][2], 1};
		uint64_t params = fan_in[i] * fan_out[i] + fan_out[i];
		layers[i] = (struct dnnfault_layer){
			.name = layer_names[i], .type = "Linear", .activation = activations[i],
			.param_count = params, .trainable_count = params,
			.params = shapes[i], .n_params = 2,
		};
	}
}

int main(int argc, char **argv)
{
	struct options o = {.run = "simulated-mlp", .steps = 200, .every_ms = 10,
			    .epoch_steps = 50, .seed = 1};
	int rv = parse_options(argc, argv, &o);
	if (rv != 0)
		return rv;
	rng_state = o.seed * 0x9E3779B97F4A7C15ull + 1;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	char err[512];
	int errnum;
	dnnfault_conn *c = dnnfault_connect(o.address, DNNFAULT_ROLE_TRAINER, NULL, 5000,
					    err, sizeof err, &errnum);
	if (c == NULL) {
		fprintf(stderr, "simulated_training: %s\n", err);
		return 1;
	}

	struct dnnfault_layer layers[N_LAYERS];
	struct dnnfault_shape shapes[N_LAYERS][2];
	uint64_t dims[N_LAYERS][3];
	describe(layers, shapes, dims);
	const struct dnnfault_kv opt_params[] = {
		{.key = "lr", .number = o.lr_high ? 1.0 : 0.01, .has_number = true},
		{.key = "momentum", .number = 0.9, .has_number = true},
	};
	const struct dnnfault_kv tags[] = {{.key = "source", .value = "simulated_training"}};
	const char *labels[] = {"lr_high"};
	char run_id[64], host[64] = "";
	gethostname(host, sizeof host - 1);
	snprintf(run_id, sizeof run_id, "%s-%ld-%d", o.run, (long)time(NULL), (int)getpid());
	struct dnnfault_run_info info = {
		.run_id = run_id, .run_name = o.run, .rank = 0, .world_size = 1,
		.host = host, .pid = (uint32_t)getpid(),
		.framework = "simulated", .framework_version = dnnfault_version(),
		.task = DNNFAULT_TASK_CLASSIFICATION, .num_classes = 10,
		.layers = layers, .n_layers = N_LAYERS,
		.loss_fn = "CrossEntropyLoss", .optimizer = "SGD",
		.optimizer_params = opt_params, .n_optimizer_params = 2,
		.batch_size = 64, .planned_epochs = (uint32_t)((o.steps + o.epoch_steps - 1) / o.epoch_steps),
		.planned_steps = o.steps, .dataset_size = 64 * o.epoch_steps,
		.tags = tags, .n_tags = 1,
		.labels = labels, .n_labels = o.lr_high ? 1 : 0, .labels_known = true,
	};
	struct dnnfault_stream s;
	if (dnnfault_run_start(c, &info, &s) < 0)
		goto err_after_connect;

	struct sim sim = {.opt = &o, .lr = o.lr_high ? 1.0 : 0.01, .loss0 = log(10.0),
			  .tau = (double)o.steps / 4 + 1,
			  .fault_step = o.steps / 5 > 5 ? o.steps / 5 : 5};
	unsigned rejected = 0;
	struct dnnfault_reply_error first = {0};
	float stats[N_LAYERS * DNNFAULT_STATS_PER_LAYER];
	double epoch_loss = 0, last_loss = 0, last_acc = 0;
	unsigned long t, epoch_n = 0;
	for (t = 1; t <= o.steps && !interrupted; t++) {
		double loss = sim__loss(&sim, t);
		double acc = 0.1 + 0.88 * (1 - exp(-(double)t / sim.tau)) + 0.01 * gaussian();
		if (!isfinite(loss) || loss > 10)
			acc = 0.1 + 0.01 * gaussian();
		acc = fmin(1, fmax(0, acc));
		sim__layer_stats(&sim, t, loss, stats);
		struct dnnfault_step st = {
			.step = t, .has = DNNFAULT_HAS_LOSS | DNNFAULT_HAS_ACCURACY |
					  DNNFAULT_HAS_LR | DNNFAULT_HAS_INPUT,
			.loss = loss, .accuracy = acc, .lr = sim.lr,
			.input_mean = 0.01 * gaussian(), .input_std = 1 + 0.01 * gaussian(),
			.input_min = -0.4242, .input_max = 2.8215,
			.layer_stats = stats, .n_layers = N_LAYERS,
		};
		if (dnnfault_send_step(c, &s, &st) < 0 ||
		    drain(c, &s, 0, &rejected, &first) < 0)
			goto err_after_connect;
		epoch_loss += loss;
		last_loss = loss;
		last_acc = acc;
		if (t % o.epoch_steps == 0) {
			double train_loss = epoch_loss / (double)o.epoch_steps;
			struct dnnfault_epoch ep = {
				.epoch = (uint32_t)++epoch_n, .step = t,
				.has = DNNFAULT_HAS_TRAIN_LOSS | DNNFAULT_HAS_TRAIN_METRIC |
				       DNNFAULT_HAS_VAL_LOSS | DNNFAULT_HAS_VAL_METRIC,
				.train_loss = train_loss, .train_metric = acc,
				.val_loss = train_loss * 1.08, .val_metric = acc - 0.01,
			};
			epoch_loss = 0;
			if (dnnfault_send_epoch(c, &s, &ep) < 0)
				goto err_after_connect;
		}
		if (o.every_ms > 0)
			sleep_ms(o.every_ms);
	}
	unsigned long sent = t - 1;
	struct dnnfault_run_end end = {
		.status = interrupted ? DNNFAULT_END_INTERRUPTED : DNNFAULT_END_COMPLETED,
		.step = sent, .has = DNNFAULT_HAS_TRAIN_LOSS | DNNFAULT_HAS_TRAIN_METRIC,
		.train_loss = last_loss, .train_metric = last_acc,
	};
	if (dnnfault_send_run_end(c, &s, &end) < 0)
		goto err_after_connect;

	/* Errors may still be on their way with the last acknowledgements. */
	/* A refused run is never acknowledged further: stop waiting. */
	while (s.acked_seq + 1 < s.next_seq && !s.refused) {
		rv = drain(c, &s, ACK_TIMEOUT_MS, &rejected, &first);
		if (rv < 0)
			goto err_after_connect;
		if (rv == 0) {
			fprintf(stderr, "simulated_training: nothing from dnnfaultd within %d ms "
					"(%llu of %llu messages acknowledged)\n", ACK_TIMEOUT_MS,
				(unsigned long long)s.acked_seq,
				(unsigned long long)(s.next_seq - 1));
			dnnfault_close(c);
			return 1;
		}
	}
	dnnfault_close(c);
	if (s.refused) {
		fprintf(stderr, "simulated_training: dnnfaultd refused the run: %s\n",
			s.refusal[0] ? s.refusal : "its stream is unknown to the daemon");
		return 1;
	}
	if (rejected > 0) {
		fprintf(stderr, "simulated_training: dnnfaultd rejected %u message(s); "
				"first: seq %llu: %s\n", rejected,
			(unsigned long long)first.seq, first.message);
		return 1;
	}
	printf("streamed %lu steps, all acknowledged\n", sent);
	return 0;

err_after_connect:
	fprintf(stderr, "simulated_training: %s\n", dnnfault_conn_error(c));
	dnnfault_close(c);
	return 1;
}
