#include <inttypes.h>

#include "ctl.h"

/* Optional fields: null when the daemon did not send them. */
static void opt_u64(struct json *j, const char *key, bool has, uint64_t v)
{
	json__key(j, key);
	if (has)
		json__uint(j, v);
	else
		json__null(j);
}

static void opt_double(struct json *j, const char *key, bool has, double v)
{
	json__key(j, key);
	if (has)
		json__double(j, v);
	else
		json__null(j);
}

/* Stream ids are random 64-bit numbers; as strings they survive readers
 * that hold JSON numbers in doubles (jq 1.6, JavaScript). */
static void stream_id(struct json *j, const char *key, uint64_t id)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%" PRIu64, id);
	json__kstring(j, key, buf);
}

void render_json__summary(struct json *j, const Dnnfault__RunSummary *s)
{
	json__begin_object(j);
	json__kstring(j, "run", s->name);
	json__kstring(j, "id", s->id);
	json__kstring(j, "state", s->state);
	opt_u64(j, "step", s->has_step, s->step);
	json__kstring(j, "health", s->health);
	json__key(j, "symptoms");
	json__begin_array(j);
	for (size_t i = 0; i < s->n_symptoms; i++) {
		const Dnnfault__Symptom *sym = s->symptoms[i];
		json__begin_object(j);
		json__kstring(j, "id", sym->id);
		opt_u64(j, "first_step", sym->has_first_step, sym->first_step);
		json__kstring(j, "layer", sym->layer);
		json__end_object(j);
	}
	json__end_array(j);
	json__key(j, "causes");
	json__begin_array(j);
	for (size_t i = 0; i < s->n_causes; i++) {
		const Dnnfault__Cause *c = s->causes[i];
		json__begin_object(j);
		json__kstring(j, "id", c->id);
		opt_double(j, "probability", c->has_probability, c->probability);
		json__kstring(j, "fix", c->fix);
		json__kstring(j, "layer", c->layer);
		json__end_object(j);
	}
	json__end_array(j);
	opt_double(j, "started", s->has_started, s->started);
	opt_double(j, "updated", s->has_updated, s->updated);
	opt_u64(j, "world_size", s->has_world_size, s->world_size);
	opt_u64(j, "ranks", s->has_ranks, s->ranks);
	opt_u64(j, "steps_stored", s->has_steps_stored, s->steps_stored);
	opt_u64(j, "dropped", s->has_dropped, s->dropped);
	json__key(j, "labels");
	if (s->has_labels_known && s->labels_known) {
		json__begin_array(j);
		for (size_t i = 0; i < s->n_labels; i++)
			json__string(j, s->labels[i]);
		json__end_array(j);
	} else {
		json__null(j);
	}
	json__end_object(j);
}

void render_json__status(const Dnnfault__StatusResponse *r, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "runs");
	json__begin_array(&j);
	for (size_t i = 0; i < r->n_runs; i++)
		render_json__summary(&j, r->runs[i]);
	json__end_array(&j);
	json__end_object(&j);
	fputc('\n', out);
}

/* {"lr": 0.1, "nesterov": "true"}: a number when the client sent one. */
static void kvs(struct json *j, const char *key, Dnnfault__KeyValue *const *kv, size_t n)
{
	json__key(j, key);
	json__begin_object(j);
	for (size_t i = 0; i < n; i++) {
		json__key(j, kv[i]->key);
		if (kv[i]->has_number)
			json__double(j, kv[i]->number);
		else
			json__string(j, kv[i]->value);
	}
	json__end_object(j);
}

static const char *task_name(const Dnnfault__RunStart *rs)
{
	if (!rs->has_task)
		return NULL;
	switch (rs->task) {
	case DNNFAULT__TASK_KIND__TASK_CLASSIFICATION: return "classification";
	case DNNFAULT__TASK_KIND__TASK_REGRESSION: return "regression";
	default: return "unknown";
	}
}

static void description(struct json *j, const Dnnfault__RunStart *rs)
{
	json__begin_object(j);
	json__kstring(j, "run_id", rs->run_id);
	json__kstring(j, "run_name", rs->run_name);
	stream_id(j, "stream", rs->stream);
	opt_u64(j, "rank", rs->has_rank, rs->rank);
	opt_u64(j, "world_size", rs->has_world_size, rs->world_size);
	json__kstring(j, "host", rs->host);
	opt_u64(j, "pid", rs->has_pid, rs->pid);
	json__kstring(j, "framework", rs->framework);
	json__kstring(j, "framework_version", rs->framework_version);
	json__kstring(j, "task", task_name(rs));
	opt_u64(j, "num_classes", rs->has_num_classes, rs->num_classes);
	json__kstring(j, "loss_fn", rs->loss_fn);
	json__kstring(j, "optimizer", rs->optimizer);
	kvs(j, "optimizer_params", rs->optimizer_params, rs->n_optimizer_params);
	opt_u64(j, "batch_size", rs->has_batch_size, rs->batch_size);
	opt_u64(j, "planned_epochs", rs->has_planned_epochs, rs->planned_epochs);
	opt_u64(j, "planned_steps", rs->has_planned_steps, rs->planned_steps);
	opt_u64(j, "dataset_size", rs->has_dataset_size, rs->dataset_size);
	kvs(j, "tags", rs->tags, rs->n_tags);
	json__key(j, "labels");
	if (rs->has_labels_known && rs->labels_known) {
		json__begin_array(j);
		for (size_t i = 0; i < rs->n_labels; i++)
			json__string(j, rs->labels[i]);
		json__end_array(j);
	} else {
		json__null(j);
	}
	opt_double(j, "time", rs->has_time, rs->time);
	json__end_object(j);
}

static void layers(struct json *j, const Dnnfault__RunStart *rs)
{
	json__key(j, "layers");
	json__begin_array(j);
	for (size_t i = 0; rs != NULL && i < rs->n_layers; i++) {
		const Dnnfault__Layer *l = rs->layers[i];
		json__begin_object(j);
		json__kstring(j, "name", l->name);
		json__kstring(j, "type", l->type);
		json__kstring(j, "activation", l->activation);
		opt_u64(j, "param_count", l->has_param_count, l->param_count);
		opt_u64(j, "trainable_count", l->has_trainable_count, l->trainable_count);
		json__key(j, "params");
		json__begin_array(j);
		for (size_t k = 0; k < l->n_params; k++) {
			json__begin_object(j);
			json__kstring(j, "name", l->params[k]->name);
			json__key(j, "dims");
			json__begin_array(j);
			for (size_t d = 0; d < l->params[k]->n_dims; d++)
				json__uint(j, l->params[k]->dims[d]);
			json__end_array(j);
			json__end_object(j);
		}
		json__end_array(j);
		json__end_object(j);
	}
	json__end_array(j);
}

static void streams(struct json *j, const Dnnfault__RunDetail *d)
{
	json__key(j, "streams");
	json__begin_array(j);
	for (size_t i = 0; i < d->n_streams; i++) {
		const Dnnfault__StreamInfo *s = d->streams[i];
		json__begin_object(j);
		stream_id(j, "stream", s->stream);
		opt_u64(j, "rank", s->has_rank, s->rank);
		json__kstring(j, "host", s->host);
		opt_u64(j, "pid", s->has_pid, s->pid);
		opt_u64(j, "last_seq", s->has_last_seq, s->last_seq);
		opt_double(j, "started", s->has_started, s->started);
		opt_double(j, "updated", s->has_updated, s->updated);
		json__kstring(j, "end_status",
			      s->has_end_status ? text__end_status(s->end_status) : NULL);
		json__end_object(j);
	}
	json__end_array(j);
}

static void epochs(struct json *j, const Dnnfault__RunDetail *d)
{
	json__key(j, "epochs");
	json__begin_array(j);
	for (size_t i = 0; i < d->n_epochs; i++) {
		const Dnnfault__Epoch *e = d->epochs[i];
		uint32_t rank = 0;
		json__begin_object(j);
		bool has_rank = render__rank_of(d, e->stream, &rank);
		opt_u64(j, "rank", has_rank, rank);
		json__kuint(j, "epoch", e->epoch);
		opt_u64(j, "step", e->has_step, e->step);
		opt_double(j, "train_loss", e->has_train_loss, e->train_loss);
		opt_double(j, "train_metric", e->has_train_metric, e->train_metric);
		opt_double(j, "val_loss", e->has_val_loss, e->val_loss);
		opt_double(j, "val_metric", e->has_val_metric, e->val_metric);
		opt_double(j, "time", e->has_time, e->time);
		json__end_object(j);
	}
	json__end_array(j);
}

static void run_end(struct json *j, const Dnnfault__RunEnd *e)
{
	json__key(j, "end");
	if (e == NULL) {
		json__null(j);
		return;
	}
	json__begin_object(j);
	json__kstring(j, "status", text__end_status(e->status));
	opt_u64(j, "step", e->has_step, e->step);
	opt_double(j, "train_loss", e->has_train_loss, e->train_loss);
	opt_double(j, "train_metric", e->has_train_metric, e->train_metric);
	opt_double(j, "val_loss", e->has_val_loss, e->val_loss);
	opt_double(j, "val_metric", e->has_val_metric, e->val_metric);
	opt_double(j, "time", e->has_time, e->time);
	opt_u64(j, "dropped", e->has_dropped, e->dropped);
	json__end_object(j);
}

void render_json__show(const Dnnfault__RunDetail *d, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "run");
	render_json__summary(&j, d->summary);
	json__key(&j, "description");
	if (d->description != NULL)
		description(&j, d->description);
	else
		json__null(&j);
	layers(&j, d->description);
	streams(&j, d);
	epochs(&j, d);
	run_end(&j, d->end);
	json__end_object(&j);
	fputc('\n', out);
}

void render_json__stats(const Dnnfault__StatsResponse *r, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	for (size_t i = 0; i < r->n_counters; i++)
		json__kuint(&j, r->counters[i]->name, r->counters[i]->value);
	json__end_object(&j);
	fputc('\n', out);
}
