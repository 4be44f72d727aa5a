#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "summary_json.h"

/* Stream ids are random 64-bit numbers; as strings they survive readers
 * that hold JSON numbers in doubles (jq 1.6, JavaScript). */
static void stream_id(struct json *j, const char *key, uint64_t id)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%" PRIu64, id);
	json__kstring(j, key, buf);
}

void render_json__status(const Dnnfault__StatusResponse *r, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "runs");
	json__begin_array(&j);
	for (size_t i = 0; i < r->n_runs; i++)
		summary_json__write(&j, r->runs[i]);
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
	json__kstring(j, "reference", rs->reference);
	stream_id(j, "stream", rs->stream);
	json__kopt_uint(j, "rank", rs->has_rank, rs->rank);
	json__kopt_uint(j, "world_size", rs->has_world_size, rs->world_size);
	json__kstring(j, "host", rs->host);
	json__kopt_uint(j, "pid", rs->has_pid, rs->pid);
	json__kstring(j, "framework", rs->framework);
	json__kstring(j, "framework_version", rs->framework_version);
	json__kstring(j, "task", task_name(rs));
	json__kopt_uint(j, "num_classes", rs->has_num_classes, rs->num_classes);
	json__kstring(j, "loss_fn", rs->loss_fn);
	json__kstring(j, "optimizer", rs->optimizer);
	kvs(j, "optimizer_params", rs->optimizer_params, rs->n_optimizer_params);
	json__kopt_uint(j, "batch_size", rs->has_batch_size, rs->batch_size);
	json__kopt_uint(j, "planned_epochs", rs->has_planned_epochs, rs->planned_epochs);
	json__kopt_uint(j, "planned_steps", rs->has_planned_steps, rs->planned_steps);
	json__kopt_uint(j, "dataset_size", rs->has_dataset_size, rs->dataset_size);
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
	json__kopt_double(j, "time", rs->has_time, rs->time);
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
		json__kopt_uint(j, "param_count", l->has_param_count, l->param_count);
		json__kopt_uint(j, "trainable_count", l->has_trainable_count, l->trainable_count);
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
		json__kopt_uint(j, "rank", s->has_rank, s->rank);
		json__kstring(j, "host", s->host);
		json__kopt_uint(j, "pid", s->has_pid, s->pid);
		json__kopt_uint(j, "last_seq", s->has_last_seq, s->last_seq);
		json__kopt_double(j, "started", s->has_started, s->started);
		json__kopt_double(j, "updated", s->has_updated, s->updated);
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
		json__kopt_uint(j, "rank", has_rank, rank);
		json__kuint(j, "epoch", e->epoch);
		json__kopt_uint(j, "step", e->has_step, e->step);
		json__kopt_double(j, "train_loss", e->has_train_loss, e->train_loss);
		json__kopt_double(j, "train_metric", e->has_train_metric, e->train_metric);
		json__kopt_double(j, "val_loss", e->has_val_loss, e->val_loss);
		json__kopt_double(j, "val_metric", e->has_val_metric, e->val_metric);
		json__kopt_double(j, "time", e->has_time, e->time);
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
	json__kopt_uint(j, "step", e->has_step, e->step);
	json__kopt_double(j, "train_loss", e->has_train_loss, e->train_loss);
	json__kopt_double(j, "train_metric", e->has_train_metric, e->train_metric);
	json__kopt_double(j, "val_loss", e->has_val_loss, e->val_loss);
	json__kopt_double(j, "val_metric", e->has_val_metric, e->val_metric);
	json__kopt_double(j, "time", e->has_time, e->time);
	json__kopt_uint(j, "dropped", e->has_dropped, e->dropped);
	json__end_object(j);
}

void render_json__show(const Dnnfault__RunDetail *d, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "run");
	summary_json__write(&j, d->summary);
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

/* A number as JSON writes it, of at most 15 characters: so thresholds and
 * counts become numbers while the 16-hex-digit schema_hash, even when it
 * happens to be all digits, stays a string. */
static bool bundle__is_number(const char *s)
{
	if (strlen(s) > 15)
		return false;
	const char *p = s + (*s == '-');
	if (!isdigit((unsigned char)*p) || (p[0] == '0' && isdigit((unsigned char)p[1])))
		return false;
	p += strspn(p, "0123456789");
	if (*p == '.') {
		if (!isdigit((unsigned char)*++p))
			return false;
		p += strspn(p, "0123456789");
	}
	if (*p == 'e' || *p == 'E') {
		p += p[1] == '+' || p[1] == '-' ? 2 : 1;
		if (!isdigit((unsigned char)*p))
			return false;
		p += strspn(p, "0123456789");
	}
	return *p == '\0';
}

static void bundle__value(struct json *j, const char *v)
{
	if (v != NULL && bundle__is_number(v))
		json__double(j, strtod(v, NULL));
	else
		json__string(j, v);
}

#define BUNDLE_SPACE " \t\r"

/* Writes the "cause ID KEY VALUE..." lines of bundle.txt as objects when
 * `causes`, else every other "KEY VALUE..." line as a member. */
static void bundle__lines(struct json *j, const char *text, bool causes)
{
	char *copy = strdup(text);
	if (copy == NULL)
		abort();
	char *lines, *words;
	for (char *line = strtok_r(copy, "\n", &lines); line != NULL;
	     line = strtok_r(NULL, "\n", &lines)) {
		char *key = strtok_r(line, BUNDLE_SPACE, &words);
		if (key == NULL || (strcmp(key, "cause") == 0) != causes)
			continue;
		if (!causes) {
			char *rest = words + strspn(words, BUNDLE_SPACE);
			size_t n = strlen(rest);
			while (n > 0 && strchr(BUNDLE_SPACE, rest[n - 1]) != NULL)
				rest[--n] = '\0';
			json__key(j, key);
			bundle__value(j, n > 0 ? rest : NULL);
			continue;
		}
		json__begin_object(j);
		json__kstring(j, "id", strtok_r(NULL, BUNDLE_SPACE, &words));
		for (char *k; (k = strtok_r(NULL, BUNDLE_SPACE, &words)) != NULL;) {
			json__key(j, k);
			bundle__value(j, strtok_r(NULL, BUNDLE_SPACE, &words));
		}
		json__end_object(j);
	}
	free(copy);
}

void render_json__model(const Dnnfault__ModelResponse *r, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "loaded");
	json__bool(&j, r->has_loaded && r->loaded);
	json__kstring(&j, "path", r->path != NULL && *r->path != '\0' ? r->path : NULL);
	json__kopt_uint(&j, "schema_version", r->has_schema_version, r->schema_version);
	json__key(&j, "bundle");
	if (r->bundle != NULL && *r->bundle != '\0') {
		json__begin_object(&j);
		bundle__lines(&j, r->bundle, false);
		json__key(&j, "causes");
		json__begin_array(&j);
		bundle__lines(&j, r->bundle, true);
		json__end_array(&j);
		json__end_object(&j);
	} else {
		json__null(&j);
	}
	json__end_object(&j);
	fputc('\n', out);
}

void render_json__watch_line(const Dnnfault__RunSummary *s, double now, FILE *out)
{
	struct json j;
	json__init(&j, out);
	json__begin_object(&j);
	json__kdouble(&j, "time", now);
	json__key(&j, "run");
	summary_json__write(&j, s);
	json__end_object(&j);
	fputc('\n', out);
}
