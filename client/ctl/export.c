#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char *const stat_names[DNNFAULT_STATS_PER_LAYER] = {
	"weight_norm", "weight_mean", "weight_std", "weight_max_abs",
	"grad_norm", "grad_mean", "grad_std", "grad_max_abs", "grad_zero_frac",
	"update_ratio", "act_mean", "act_std", "act_nonpos_frac",
	"act_saturated_frac", "nan_count", "inf_count",
};

struct rank_of {
	uint64_t stream;
	uint32_t rank;
};

/* What the first response tells about the run, kept for the steps that
 * follow in later responses (each response is freed after its callback). */
struct export {
	bool jsonl;
	bool started;		/* the CSV header is out */
	char **layers;
	size_t n_layers;
	struct rank_of *ranks;
	size_t n_ranks;
};

static void export__free(struct export *e)
{
	for (size_t i = 0; i < e->n_layers; i++)
		free(e->layers[i]);
	free(e->layers);
	free(e->ranks);
}

/* Layer names come from the description; without one, from the width of
 * the first step ("layer0", "layer1", ...). */
static int export__layers(struct export *e, const Dnnfault__RunDetail *d, size_t n_stats)
{
	const Dnnfault__RunStart *rs = d != NULL ? d->description : NULL;
	size_t n = rs != NULL ? rs->n_layers : n_stats / DNNFAULT_STATS_PER_LAYER;
	e->layers = calloc(n + 1, sizeof *e->layers);
	if (e->layers == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int rv = rs != NULL ? asprintf(&e->layers[i], "%s", rs->layers[i]->name)
				    : asprintf(&e->layers[i], "layer%zu", i);
		if (rv < 0)
			return -ENOMEM;
		e->n_layers = i + 1;
	}
	return 0;
}

static int export__detail(struct export *e, const Dnnfault__RunDetail *d)
{
	e->ranks = calloc(d->n_streams + 1, sizeof *e->ranks);
	if (e->ranks == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->has_rank)
			e->ranks[e->n_ranks++] = (struct rank_of){
				d->streams[i]->stream, d->streams[i]->rank};
	return d->description != NULL ? export__layers(e, d, 0) : 0;
}

static bool export__rank(const struct export *e, uint64_t stream, uint32_t *rank)
{
	for (size_t i = 0; i < e->n_ranks; i++)
		if (e->ranks[i].stream == stream) {
			*rank = e->ranks[i].rank;
			return true;
		}
	return false;
}

/* RFC 4180: a field with a comma, quote or line break goes in quotes, with
 * its quotes doubled. */
static void csv__field(FILE *out, const char *s, const char *suffix)
{
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fprintf(out, "%s%s", s, suffix);
		return;
	}
	fputc('"', out);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', out);
		fputc(*s, out);
	}
	fprintf(out, "%s\"", suffix);
}

static void csv__header(const struct export *e, FILE *out)
{
	fputs("rank,step,time,loss,accuracy,lr,input_mean,input_std,input_min,"
	      "input_max,dropped", out);
	for (size_t l = 0; l < e->n_layers; l++)
		for (size_t s = 0; s < DNNFAULT_STATS_PER_LAYER; s++) {
			char suffix[32];
			snprintf(suffix, sizeof suffix, ".%s", stat_names[s]);
			fputc(',', out);
			csv__field(out, e->layers[l], suffix);
		}
	fputc('\n', out);
}

/* ",value" with nothing after the comma when absent. */
static void csv__double(FILE *out, bool has, double v)
{
	char buf[32];
	fputc(',', out);
	if (!has)
		return;
	if (isnan(v))
		fputs("nan", out);
	else if (isinf(v))
		fputs(v > 0 ? "inf" : "-inf", out);
	else if (json__format_double(buf, sizeof buf, v) > 0)
		fputs(buf, out);
}

static void csv__float(FILE *out, float v)
{
	char buf[32];
	fputc(',', out);
	if (isnan(v))
		fputs("nan", out);
	else if (isinf(v))
		fputs(v > 0 ? "inf" : "-inf", out);
	else if (json__format_float(buf, sizeof buf, v) > 0)
		fputs(buf, out);
}

static void csv__step(const struct export *e, const Dnnfault__Step *s, FILE *out)
{
	uint32_t rank;
	if (export__rank(e, s->stream, &rank))
		fprintf(out, "%" PRIu32, rank);
	fprintf(out, ",%" PRIu64, s->step);
	csv__double(out, s->has_time, s->time);
	csv__double(out, s->has_loss, s->loss);
	csv__double(out, s->has_accuracy, s->accuracy);
	csv__double(out, s->has_lr, s->lr);
	csv__double(out, s->has_input_mean, s->input_mean);
	csv__double(out, s->has_input_std, s->input_std);
	csv__double(out, s->has_input_min, s->input_min);
	csv__double(out, s->has_input_max, s->input_max);
	fputc(',', out);
	if (s->has_dropped)
		fprintf(out, "%" PRIu64, s->dropped);
	size_t n = e->n_layers * DNNFAULT_STATS_PER_LAYER;
	for (size_t i = 0; i < n; i++) {
		if (i < s->n_layer_stats)
			csv__float(out, s->layer_stats[i]);
		else
			fputc(',', out);
	}
	fputc('\n', out);
}

static void jsonl__opt(struct json *j, const char *key, bool has, double v)
{
	json__key(j, key);
	if (has)
		json__double(j, v);
	else
		json__null(j);
}

static void jsonl__step(const struct export *e, const Dnnfault__Step *s, FILE *out)
{
	struct json j;
	uint32_t rank;
	json__init(&j, out);
	json__begin_object(&j);
	json__key(&j, "rank");
	if (export__rank(e, s->stream, &rank))
		json__uint(&j, rank);
	else
		json__null(&j);
	json__kuint(&j, "step", s->step);
	jsonl__opt(&j, "time", s->has_time, s->time);
	jsonl__opt(&j, "loss", s->has_loss, s->loss);
	jsonl__opt(&j, "accuracy", s->has_accuracy, s->accuracy);
	jsonl__opt(&j, "lr", s->has_lr, s->lr);
	jsonl__opt(&j, "input_mean", s->has_input_mean, s->input_mean);
	jsonl__opt(&j, "input_std", s->has_input_std, s->input_std);
	jsonl__opt(&j, "input_min", s->has_input_min, s->input_min);
	jsonl__opt(&j, "input_max", s->has_input_max, s->input_max);
	json__key(&j, "dropped");
	if (s->has_dropped)
		json__uint(&j, s->dropped);
	else
		json__null(&j);
	json__key(&j, "layers");
	json__begin_object(&j);
	for (size_t l = 0; l < e->n_layers; l++) {
		json__key(&j, e->layers[l]);
		json__begin_object(&j);
		for (size_t k = 0; k < DNNFAULT_STATS_PER_LAYER; k++) {
			size_t i = l * DNNFAULT_STATS_PER_LAYER + k;
			json__key(&j, stat_names[k]);
			if (i < s->n_layer_stats)
				json__float(&j, s->layer_stats[i]);
			else
				json__null(&j);
		}
		json__end_object(&j);
	}
	json__end_object(&j);
	json__end_object(&j);
	fputc('\n', out);
}

/* Stops the export once stdout fails; a closed pipe stops it quietly. */
static int export__check_output(void)
{
	if (!ferror(stdout))
		return CTL_OK;
	if (errno != EPIPE)
		fprintf(stderr, "dnnfaultctl: writing output: %s\n", strerror(errno));
	return CTL_ERROR;
}

static int export__cb(const Dnnfault__ControlResponse *r, void *arg)
{
	struct export *e = arg;
	const Dnnfault__ExportChunk *chunk = r->export;
	if (chunk->detail != NULL && e->ranks == NULL && export__detail(e, chunk->detail) < 0)
		goto err_nomem;
	for (size_t i = 0; i < chunk->n_steps; i++) {
		const Dnnfault__Step *s = chunk->steps[i];
		if (e->layers == NULL && export__layers(e, NULL, s->n_layer_stats) < 0)
			goto err_nomem;
		if (!e->started && !e->jsonl)
			csv__header(e, stdout);
		e->started = true;
		if (e->jsonl)
			jsonl__step(e, s, stdout);
		else
			csv__step(e, s, stdout);
	}
	return export__check_output();

err_nomem:
	fprintf(stderr, "dnnfaultctl: out of memory\n");
	return CTL_ERROR;
}

int export__run(struct ctl *ctl, const char *run)
{
	static char buf[1 << 16];
	setvbuf(stdout, buf, _IOFBF, sizeof buf);

	struct export e = {
		.jsonl = ctl->format == CTL_FORMAT_JSONL ||
			 (ctl->format == CTL_FORMAT_DEFAULT && ctl->json),
	};
	Dnnfault__ExportRequest er = DNNFAULT__EXPORT_REQUEST__INIT;
	er.run = (char *)run;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_EXPORT;
	req.export = &er;
	int rv = rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_EXPORT,
			   export__cb, &e);
	/* A run without steps still gets its CSV header. */
	if (rv == CTL_OK && !e.started && !e.jsonl)
		csv__header(&e, stdout);
	export__free(&e);
	return rv;
}
