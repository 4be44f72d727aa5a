#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "ctl.h"

bool render__rank_of(const Dnnfault__RunDetail *d, uint64_t stream, uint32_t *rank)
{
	for (size_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->stream == stream && d->streams[i]->has_rank) {
			*rank = d->streams[i]->rank;
			return true;
		}
	return false;
}

#define SHOW_KEY "%-12s"

static void show__kvs(FILE *out, const char *sep, Dnnfault__KeyValue *const *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%s%s=", i > 0 ? sep : "", kv[i]->key);
		if (kv[i]->has_number)
			fprintf(out, "%g", kv[i]->number);
		else
			fputs(text__str(kv[i]->value), out);
	}
}

static void show__summary(const Dnnfault__RunSummary *s, FILE *out)
{
	char a[40], b[40];
	fprintf(out, SHOW_KEY "%s (id %s)\n", "run", text__str(s->name), s->id);
	fprintf(out, SHOW_KEY "%s, health %s", "state", text__str(s->state), text__str(s->health));
	if (s->has_fault_probability)
		fprintf(out, " (fault probability %.2f)", s->fault_probability);
	fputc('\n', out);
	if (s->has_shortfall)
		fprintf(out, SHOW_KEY "%.3f %s its reference's\n", "val metric", fabs(s->shortfall),
			s->shortfall >= 0 ? "below" : "above");
	fprintf(out, SHOW_KEY "%s (%s stored", "step",
		text__u64(a, sizeof a, s->has_step, s->step),
		text__u64(b, sizeof b, s->has_steps_stored, s->steps_stored));
	fprintf(out, ", %s dropped by clients)\n",
		text__u64(a, sizeof a, s->has_dropped, s->dropped));
	if (s->has_skipped_steps && s->skipped_steps > 0)
		fprintf(out, SHOW_KEY "%" PRIu64 " sampled, skipped by the training loop on overflowing gradients\n",
			"skipped", s->skipped_steps);
	fprintf(out, SHOW_KEY "%s\n", "started", text__time(a, sizeof a, s->has_started, s->started));
	fprintf(out, SHOW_KEY "%s\n", "updated", text__time(a, sizeof a, s->has_updated, s->updated));
	fprintf(out, SHOW_KEY "%s of ", "ranks", text__u64(a, sizeof a, s->has_ranks, s->ranks));
	fprintf(out, "%s reporting\n", text__u64(a, sizeof a, s->has_world_size, s->world_size));

	fprintf(out, SHOW_KEY, "symptoms");
	for (size_t i = 0; i < s->n_symptoms; i++) {
		const Dnnfault__Symptom *sym = s->symptoms[i];
		fprintf(out, "%s%s", i > 0 ? ", " : "", sym->id);
		if (sym->has_first_step)
			fprintf(out, " from step %" PRIu64, sym->first_step);
		if (sym->layer != NULL && *sym->layer != '\0')
			fprintf(out, " in %s", sym->layer);
	}
	fputs(s->n_symptoms == 0 ? "-\n" : "\n", out);

	fprintf(out, SHOW_KEY, "causes");
	for (size_t i = 0; i < s->n_causes; i++) {
		const Dnnfault__Cause *c = s->causes[i];
		if (i > 0)
			fprintf(out, SHOW_KEY, "");
		fputs(c->id, out);
		if (c->layer != NULL && *c->layer != '\0')
			fprintf(out, "[%s]", c->layer);
		if (c->has_probability)
			fprintf(out, " (p=%.2f)", c->probability);
		fprintf(out, "%s%s\n", c->fix ? ": " : "", c->fix ? c->fix : "");
	}
	if (s->n_causes == 0)
		fputs("-\n", out);

	fprintf(out, SHOW_KEY, "labels");
	if (!(s->has_labels_known && s->labels_known))
		fputs("unknown", out);
	else if (s->n_labels == 0)
		fputs("healthy", out);
	for (size_t i = 0; s->labels_known && i < s->n_labels; i++)
		fprintf(out, "%s%s", i > 0 ? ", " : "", s->labels[i]);
	fputc('\n', out);
	if (s->reference != NULL && *s->reference != '\0')
		fprintf(out, SHOW_KEY "%s\n", "reference", s->reference);
}

static const char *show__task(const Dnnfault__RunStart *rs)
{
	if (!rs->has_task)
		return "-";
	switch (rs->task) {
	case DNNFAULT__TASK_KIND__TASK_CLASSIFICATION: return "classification";
	case DNNFAULT__TASK_KIND__TASK_REGRESSION: return "regression";
	default: return "unknown";
	}
}

static void show__description(const Dnnfault__RunStart *rs, FILE *out)
{
	char a[40], b[40];
	fprintf(out, SHOW_KEY "%s %s\n", "framework", text__str(rs->framework),
		rs->framework_version ? rs->framework_version : "");
	fprintf(out, SHOW_KEY "%s", "task", show__task(rs));
	if (rs->has_num_classes)
		fprintf(out, ", %u classes", rs->num_classes);
	fprintf(out, "\n" SHOW_KEY "%s\n", "loss", text__str(rs->loss_fn));
	fprintf(out, SHOW_KEY "%s", "optimizer", text__str(rs->optimizer));
	if (rs->n_optimizer_params > 0) {
		fputs(" (", out);
		show__kvs(out, ", ", rs->optimizer_params, rs->n_optimizer_params);
		fputc(')', out);
	}
	fprintf(out, "\n" SHOW_KEY "%s\n", "batch size",
		text__u64(a, sizeof a, rs->has_batch_size, rs->batch_size));
	fprintf(out, SHOW_KEY "%s epochs, ", "planned",
		text__u64(a, sizeof a, rs->has_planned_epochs, rs->planned_epochs));
	fprintf(out, "%s steps\n", text__u64(b, sizeof b, rs->has_planned_steps, rs->planned_steps));
	fprintf(out, SHOW_KEY "%s samples\n", "dataset",
		text__u64(a, sizeof a, rs->has_dataset_size, rs->dataset_size));
	fprintf(out, SHOW_KEY, "tags");
	show__kvs(out, ", ", rs->tags, rs->n_tags);
	fputs(rs->n_tags == 0 ? "-\n" : "\n", out);
}

/* "weight[64x784] bias[64]"; malloc'd. */
static char *show__shapes(const Dnnfault__Layer *l)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (f == NULL)
		abort();
	for (size_t i = 0; i < l->n_params; i++) {
		const Dnnfault__TensorShape *s = l->params[i];
		fprintf(f, "%s%s[", i > 0 ? " " : "", s->name ? s->name : "?");
		for (size_t k = 0; k < s->n_dims; k++)
			fprintf(f, "%s%" PRIu64, k > 0 ? "x" : "", s->dims[k]);
		fputc(']', f);
	}
	if (l->n_params == 0)
		fputc('-', f);
	fclose(f);
	return text;
}

static void show__layers(const Dnnfault__RunStart *rs, FILE *out)
{
	static const char *const heads[] = {"NAME", "TYPE", "ACTIVATION", "PARAMS", "TRAINABLE", "SHAPES"};
	struct table t;
	table__init(&t, 6, heads);
	for (size_t i = 0; i < rs->n_layers; i++) {
		const Dnnfault__Layer *l = rs->layers[i];
		char n[24];
		char *shapes = show__shapes(l);
		table__cell(&t, "%s", l->name);
		table__cell(&t, "%s", text__str(l->type));
		table__cell(&t, "%s", text__str(l->activation));
		table__cell(&t, "%s", text__u64(n, sizeof n, l->has_param_count, l->param_count));
		/* A frozen layer is left out of the analysis (docs/symptoms.md). */
		bool frozen = l->has_trainable_count && l->trainable_count == 0 && l->param_count > 0;
		table__cell(&t, "%s", frozen ? "frozen"
					     : text__u64(n, sizeof n, l->has_trainable_count, l->trainable_count));
		table__cell(&t, "%s", shapes);
		free(shapes);
	}
	fputs("\nlayers\n", out);
	table__print(&t, out);
	table__free(&t);
}

static void show__streams(const Dnnfault__RunDetail *d, FILE *out)
{
	static const char *const heads[] = {
		"RANK", "STREAM", "HOST", "PID", "LAST_SEQ", "UPDATED", "END",
	};
	struct table t;
	table__init(&t, 7, heads);
	for (size_t i = 0; i < d->n_streams; i++) {
		const Dnnfault__StreamInfo *s = d->streams[i];
		char a[40];
		table__cell(&t, "%s", text__u64(a, sizeof a, s->has_rank, s->rank));
		table__cell(&t, "%016" PRIx64, s->stream);
		table__cell(&t, "%s", text__str(s->host));
		table__cell(&t, "%s", text__u64(a, sizeof a, s->has_pid, s->pid));
		table__cell(&t, "%s", text__u64(a, sizeof a, s->has_last_seq, s->last_seq));
		table__cell(&t, "%s", text__time(a, sizeof a, s->has_updated, s->updated));
		table__cell(&t, "%s", s->has_end_status ? text__end_status(s->end_status) : "-");
	}
	fputs("\nranks\n", out);
	table__print(&t, out);
	table__free(&t);
}

static void show__epochs(const Dnnfault__RunDetail *d, FILE *out)
{
	static const char *const heads[] = {
		"RANK", "EPOCH", "STEP", "TRAIN_LOSS", "TRAIN_METRIC", "VAL_LOSS", "VAL_METRIC",
	};
	struct table t;
	table__init(&t, 7, heads);
	for (size_t i = 0; i < d->n_epochs; i++) {
		const Dnnfault__Epoch *e = d->epochs[i];
		char a[40];
		uint32_t rank = 0;
		bool has_rank = render__rank_of(d, e->stream, &rank);
		table__cell(&t, "%s", text__u64(a, sizeof a, has_rank, rank));
		table__cell(&t, "%u", e->epoch);
		table__cell(&t, "%s", text__u64(a, sizeof a, e->has_step, e->step));
		table__cell(&t, "%s", text__double(a, sizeof a, e->has_train_loss, e->train_loss));
		table__cell(&t, "%s", text__double(a, sizeof a, e->has_train_metric, e->train_metric));
		table__cell(&t, "%s", text__double(a, sizeof a, e->has_val_loss, e->val_loss));
		table__cell(&t, "%s", text__double(a, sizeof a, e->has_val_metric, e->val_metric));
	}
	fputs("\nepochs\n", out);
	if (d->n_epochs == 0)
		fputs("none\n", out);
	else
		table__print(&t, out);
	table__free(&t);
}

static void show__end(const Dnnfault__RunEnd *e, FILE *out)
{
	char a[40], b[40], c[40];
	fprintf(out, "\n" SHOW_KEY "%s at step %s, train loss %s, ", "end",
		text__end_status(e->status), text__u64(a, sizeof a, e->has_step, e->step),
		text__double(b, sizeof b, e->has_train_loss, e->train_loss));
	fprintf(out, "val loss %s, %s dropped\n",
		text__double(c, sizeof c, e->has_val_loss, e->val_loss),
		text__u64(a, sizeof a, e->has_dropped, e->dropped));
}

void render__show(const Dnnfault__RunDetail *d, FILE *out)
{
	show__summary(d->summary, out);
	if (d->description != NULL) {
		fputc('\n', out);
		show__description(d->description, out);
		show__layers(d->description, out);
	}
	show__streams(d, out);
	show__epochs(d, out);
	if (d->end != NULL)
		show__end(d->end, out);
}
