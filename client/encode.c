#include "encode.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* protobuf-c messages hold non-const pointers although packing never writes
 * through them; the casts below only lend the caller's data for one pack. */
#define LEND(p) ((void *)(uintptr_t)(p))

static void kv__fill(Dnnfault__KeyValue *dst, const struct dnnfault_kv *src)
{
	dnnfault__key_value__init(dst);
	dst->key = LEND(src->key);
	dst->value = LEND(src->value);
	dst->has_number = src->has_number;
	dst->number = src->number;
}

/* Scratch memory for the nested messages of one RunStart; everything in it
 * points into the caller's run_info. */
struct run_start_scratch {
	Dnnfault__Layer *layers;
	Dnnfault__Layer **layer_ptrs;
	Dnnfault__TensorShape *shapes;
	Dnnfault__TensorShape **shape_ptrs;
	Dnnfault__KeyValue *kvs;
	Dnnfault__KeyValue **kv_ptrs;
};

static void scratch__free(struct run_start_scratch *s)
{
	free(s->layers);
	free(s->layer_ptrs);
	free(s->shapes);
	free(s->shape_ptrs);
	free(s->kvs);
	free(s->kv_ptrs);
}

/* Returns 0, -EINVAL for a layer without a name, or -ENOMEM. */
static int scratch__layers(struct run_start_scratch *s,
			   const struct dnnfault_run_info *info, Dnnfault__RunStart *rs)
{
	size_t n_shapes = 0;
	for (size_t i = 0; i < info->n_layers; i++) {
		if (info->layers[i].name == NULL)
			return -EINVAL;
		n_shapes += info->layers[i].n_params;
	}
	/* calloc(0) may return NULL; ask for at least one element. */
	s->layers = calloc(info->n_layers + 1, sizeof *s->layers);
	s->layer_ptrs = calloc(info->n_layers + 1, sizeof *s->layer_ptrs);
	s->shapes = calloc(n_shapes + 1, sizeof *s->shapes);
	s->shape_ptrs = calloc(n_shapes + 1, sizeof *s->shape_ptrs);
	if (!s->layers || !s->layer_ptrs || !s->shapes || !s->shape_ptrs)
		return -ENOMEM;

	size_t k = 0;
	for (size_t i = 0; i < info->n_layers; i++) {
		const struct dnnfault_layer *src = &info->layers[i];
		Dnnfault__Layer *l = &s->layers[i];
		dnnfault__layer__init(l);
		l->name = LEND(src->name);
		l->type = LEND(src->type);
		l->activation = LEND(src->activation);
		l->has_param_count = src->param_count != 0;
		l->param_count = src->param_count;
		l->has_trainable_count = src->trainable_count != 0 || src->frozen;
		l->trainable_count = src->frozen ? 0 : src->trainable_count;
		l->params = &s->shape_ptrs[k];
		l->n_params = src->n_params;
		for (size_t j = 0; j < src->n_params; j++, k++) {
			dnnfault__tensor_shape__init(&s->shapes[k]);
			s->shapes[k].name = LEND(src->params[j].name);
			s->shapes[k].dims = LEND(src->params[j].dims);
			s->shapes[k].n_dims = src->params[j].n_dims;
			s->shape_ptrs[k] = &s->shapes[k];
		}
		s->layer_ptrs[i] = l;
	}
	rs->layers = s->layer_ptrs;
	rs->n_layers = info->n_layers;
	return 0;
}

/* Optimizer parameters and tags share one array: optimizer's first. */
static int scratch__kvs(struct run_start_scratch *s,
			const struct dnnfault_run_info *info, Dnnfault__RunStart *rs)
{
	size_t n = info->n_optimizer_params + info->n_tags;
	s->kvs = calloc(n + 1, sizeof *s->kvs);
	s->kv_ptrs = calloc(n + 1, sizeof *s->kv_ptrs);
	if (!s->kvs || !s->kv_ptrs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct dnnfault_kv *src = i < info->n_optimizer_params
			? &info->optimizer_params[i]
			: &info->tags[i - info->n_optimizer_params];
		if (src->key == NULL)
			return -EINVAL;
		kv__fill(&s->kvs[i], src);
		s->kv_ptrs[i] = &s->kvs[i];
	}
	rs->optimizer_params = s->kv_ptrs;
	rs->n_optimizer_params = info->n_optimizer_params;
	rs->tags = s->kv_ptrs + info->n_optimizer_params;
	rs->n_tags = info->n_tags;
	return 0;
}

int encode__envelope(const Dnnfault__Envelope *env, size_t max_payload,
		     struct encode_frame *out)
{
	out->buf = NULL;
	out->len = 0;
	return frame__encode(env, max_payload, &out->buf, &out->len);
}

int encode__hello(int role, const char *client, const char *token,
		  struct encode_frame *out)
{
	Dnnfault__Hello hello = DNNFAULT__HELLO__INIT;
	hello.protocol_version = PROTOCOL_VERSION;
	hello.role = (Dnnfault__Role)role;
	hello.client = LEND(client);
	hello.token = LEND(token);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	return encode__envelope(&env, FRAME_MAX_LIMIT, out);
}

int encode__run_start(const struct dnnfault_run_info *info,
		      const struct encode_ctx *ctx, struct encode_frame *out)
{
	if (info->run_id == NULL || (info->n_layers > 0 && info->layers == NULL) ||
	    (info->n_labels > 0 && info->labels == NULL))
		return -EINVAL;

	Dnnfault__RunStart rs = DNNFAULT__RUN_START__INIT;
	rs.seq = ctx->seq;
	rs.stream = ctx->stream;
	rs.run_id = LEND(info->run_id);
	rs.run_name = LEND(info->run_name);
	rs.reference = LEND(info->reference);
	rs.has_rank = true;
	rs.rank = info->rank;
	/* world_size 0 is "not given"; the wire default of 1 then applies. */
	rs.has_world_size = info->world_size != 0;
	rs.world_size = info->world_size;
	rs.host = LEND(info->host);
	rs.has_pid = info->pid != 0;
	rs.pid = info->pid;
	rs.framework = LEND(info->framework);
	rs.framework_version = LEND(info->framework_version);
	rs.has_task = info->task != DNNFAULT_TASK_UNKNOWN;
	rs.task = (Dnnfault__TaskKind)info->task;
	rs.has_num_classes = info->num_classes != 0;
	rs.num_classes = info->num_classes;
	rs.loss_fn = LEND(info->loss_fn);
	rs.optimizer = LEND(info->optimizer);
	rs.has_batch_size = info->batch_size != 0;
	rs.batch_size = info->batch_size;
	rs.has_planned_epochs = info->planned_epochs != 0;
	rs.planned_epochs = info->planned_epochs;
	rs.has_planned_steps = info->planned_steps != 0;
	rs.planned_steps = info->planned_steps;
	rs.has_dataset_size = info->dataset_size != 0;
	rs.dataset_size = info->dataset_size;
	rs.labels = LEND(info->labels);
	rs.n_labels = info->n_labels;
	/* A label list implies the labels are known; labels_known alone with
	 * no list says "healthy". */
	rs.has_labels_known = info->labels_known || info->n_labels > 0;
	rs.labels_known = rs.has_labels_known;
	rs.has_time = true;
	rs.time = ctx->now;

	struct run_start_scratch s = {0};
	int rv = scratch__layers(&s, info, &rs);
	if (rv == 0)
		rv = scratch__kvs(&s, info, &rs);
	if (rv == 0) {
		Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
		env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
		env.run_start = &rs;
		rv = encode__envelope(&env, ctx->max_payload, out);
	}
	scratch__free(&s);
	return rv;
}

int encode__step(const struct dnnfault_step *step, const struct encode_ctx *ctx,
		 struct encode_frame *out)
{
	if (step->n_layers > SIZE_MAX / DNNFAULT_STATS_PER_LAYER / sizeof(float) ||
	    (step->n_layers > 0 && step->layer_stats == NULL))
		return -EINVAL;

	Dnnfault__Step m = DNNFAULT__STEP__INIT;
	m.seq = ctx->seq;
	m.stream = ctx->stream;
	m.step = step->step;
	m.has_time = true;
	m.time = step->time != 0 ? step->time : ctx->now;
	unsigned has = step->has;
	m.has_loss = (has & DNNFAULT_HAS_LOSS) != 0;
	m.loss = step->loss;
	m.has_accuracy = (has & DNNFAULT_HAS_ACCURACY) != 0;
	m.accuracy = step->accuracy;
	m.has_lr = (has & DNNFAULT_HAS_LR) != 0;
	m.lr = step->lr;
	bool input = (has & DNNFAULT_HAS_INPUT) != 0;
	m.has_input_mean = m.has_input_std = m.has_input_min = m.has_input_max = input;
	m.input_mean = step->input_mean;
	m.input_std = step->input_std;
	m.input_min = step->input_min;
	m.input_max = step->input_max;
	m.layer_stats = LEND(step->layer_stats);
	m.n_layer_stats = step->n_layers * DNNFAULT_STATS_PER_LAYER;
	m.has_dropped = true;
	m.dropped = step->dropped;

	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &m;
	return encode__envelope(&env, ctx->max_payload, out);
}

/* Epoch and RunEnd carry the same four optional metrics, named alike in
 * the public struct and the message. */
#define SET_METRICS(m, src)                                                   \
	do {                                                                  \
		(m).has_train_loss = ((src)->has & DNNFAULT_HAS_TRAIN_LOSS) != 0;   \
		(m).train_loss = (src)->train_loss;                           \
		(m).has_train_metric = ((src)->has & DNNFAULT_HAS_TRAIN_METRIC) != 0; \
		(m).train_metric = (src)->train_metric;                       \
		(m).has_val_loss = ((src)->has & DNNFAULT_HAS_VAL_LOSS) != 0;       \
		(m).val_loss = (src)->val_loss;                               \
		(m).has_val_metric = ((src)->has & DNNFAULT_HAS_VAL_METRIC) != 0;   \
		(m).val_metric = (src)->val_metric;                           \
	} while (0)

int encode__epoch(const struct dnnfault_epoch *epoch, const struct encode_ctx *ctx,
		  struct encode_frame *out)
{
	Dnnfault__Epoch m = DNNFAULT__EPOCH__INIT;
	m.seq = ctx->seq;
	m.stream = ctx->stream;
	m.epoch = epoch->epoch;
	m.has_step = true;
	m.step = epoch->step;
	SET_METRICS(m, epoch);
	m.has_time = true;
	m.time = ctx->now;

	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_EPOCH;
	env.epoch = &m;
	return encode__envelope(&env, ctx->max_payload, out);
}

int encode__run_end(const struct dnnfault_run_end *end,
		    const struct encode_ctx *ctx, struct encode_frame *out)
{
	if (end->status < DNNFAULT_END_COMPLETED || end->status > DNNFAULT_END_INTERRUPTED)
		return -EINVAL;

	Dnnfault__RunEnd m = DNNFAULT__RUN_END__INIT;
	m.seq = ctx->seq;
	m.stream = ctx->stream;
	m.status = (Dnnfault__EndStatus)end->status;
	m.has_step = true;
	m.step = end->step;
	SET_METRICS(m, end);
	m.has_time = true;
	m.time = ctx->now;
	m.has_dropped = true;
	m.dropped = end->dropped;

	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_END;
	env.run_end = &m;
	return encode__envelope(&env, ctx->max_payload, out);
}

void encode__free(struct encode_frame *f)
{
	free(f->buf);
	f->buf = NULL;
	f->len = 0;
}

int encode__stream_id(uint64_t *out)
{
	uint64_t id = 0;
	while (id == 0) {
		/* Never wait for the entropy pool (early boot): ids need to be
		 * unique, not secret, so clock, pid and a counter do then. */
		ssize_t n = getrandom(&id, sizeof id, GRND_NONBLOCK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof id) {
			static _Atomic uint64_t counter;
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
			x ^= (uint64_t)getpid() << 32 ^ ++counter * 0x9e3779b97f4a7c15ULL;
			/* splitmix64 finaliser: spreads the bits. */
			x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
			x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
			id = x ^ (x >> 31);
		}
	}
	*out = id;
	return 0;
}
