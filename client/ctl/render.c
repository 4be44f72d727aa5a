#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* "nan_loss@120[fc3], dead_relu@80[fc2]" or "-"; malloc'd. */
static char *render__symptoms(const Dnnfault__RunSummary *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (f == NULL)
		abort();
	for (size_t i = 0; i < s->n_symptoms; i++) {
		const Dnnfault__Symptom *sym = s->symptoms[i];
		fprintf(f, "%s%s", i > 0 ? ", " : "", sym->id);
		if (sym->has_first_step)
			fprintf(f, "@%" PRIu64, sym->first_step);
		if (sym->layer != NULL && *sym->layer != '\0')
			fprintf(f, "[%s]", sym->layer);
	}
	if (s->n_symptoms == 0)
		fputs("-", f);
	fclose(f);
	return text;
}

/* "lr_high (p=0.87): lower the learning rate..." for the most likely cause
 * (the daemon sends them most likely first), or "-"; malloc'd. */
static char *render__cause(const Dnnfault__RunSummary *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (f == NULL)
		abort();
	if (s->n_causes == 0) {
		fputs("-", f);
	} else {
		const Dnnfault__Cause *c = s->causes[0];
		fputs(c->id, f);
		if (c->layer != NULL && *c->layer != '\0')
			fprintf(f, "[%s]", c->layer);
		if (c->has_probability)
			fprintf(f, " (p=%.2f)", c->probability);
		if (c->fix != NULL && *c->fix != '\0')
			fprintf(f, ": %s", c->fix);
	}
	fclose(f);
	return text;
}

void render__status(const Dnnfault__StatusResponse *r, FILE *out)
{
	if (r->n_runs == 0) {
		fputs("no runs\n", out);
		return;
	}
	static const char *const heads[] = {
		"RUN", "ID", "STATE", "STEP", "HEALTH", "SYMPTOMS", "CAUSE",
	};
	struct table t;
	table__init(&t, 7, heads);
	for (size_t i = 0; i < r->n_runs; i++) {
		const Dnnfault__RunSummary *s = r->runs[i];
		char step[24];
		char *symptoms = render__symptoms(s);
		char *cause = render__cause(s);
		table__cell(&t, "%s", text__str(s->name));
		table__cell(&t, "%s", s->id);
		table__cell(&t, "%s", text__str(s->state));
		table__cell(&t, "%s", text__u64(step, sizeof step, s->has_step, s->step));
		table__cell(&t, "%s", text__str(s->health));
		table__cell(&t, "%s", symptoms);
		table__cell(&t, "%s", cause);
		free(symptoms);
		free(cause);
	}
	table__print(&t, out);
	table__free(&t);
}

void render__runs(const Dnnfault__StatusResponse *r, FILE *out)
{
	if (r->n_runs == 0) {
		fputs("no runs\n", out);
		return;
	}
	static const char *const heads[] = {
		"ID", "NAME", "STATE", "STEPS", "STARTED", "UPDATED",
	};
	struct table t;
	table__init(&t, 6, heads);
	for (size_t i = 0; i < r->n_runs; i++) {
		const Dnnfault__RunSummary *s = r->runs[i];
		char steps[24], started[40], updated[40];
		table__cell(&t, "%s", s->id);
		table__cell(&t, "%s", text__str(s->name));
		table__cell(&t, "%s", text__str(s->state));
		table__cell(&t, "%s", text__u64(steps, sizeof steps, s->has_steps_stored,
						 s->steps_stored));
		table__cell(&t, "%s", text__time(started, sizeof started, s->has_started,
						  s->started));
		table__cell(&t, "%s", text__time(updated, sizeof updated, s->has_updated,
						  s->updated));
	}
	table__print(&t, out);
	table__free(&t);
}

void render__stats(const Dnnfault__StatsResponse *r, FILE *out)
{
	for (size_t i = 0; i < r->n_counters; i++)
		fprintf(out, "%s %" PRIu64 "\n", r->counters[i]->name, r->counters[i]->value);
}

/* The header lines, then bundle.txt as the daemon read it. */
void render__model(const Dnnfault__ModelResponse *r, FILE *out)
{
	char a[24];
	fprintf(out, "%-16s%s\n", "loaded", r->has_loaded && r->loaded ? "yes" : "no");
	fprintf(out, "%-16s%s\n", "path", text__str(r->path));
	fprintf(out, "%-16s%s\n", "schema_version",
		text__u64(a, sizeof a, r->has_schema_version, r->schema_version));
	if (r->bundle == NULL || *r->bundle == '\0')
		return;
	fprintf(out, "\n%s", r->bundle);
	if (r->bundle[strlen(r->bundle) - 1] != '\n')
		fputc('\n', out);
}

char *render__watch_key(const Dnnfault__RunSummary *s)
{
	char *symptoms = render__symptoms(s);
	const Dnnfault__Cause *c = s->n_causes > 0 ? s->causes[0] : NULL;
	char *key;
	if (asprintf(&key, "%s\n%s\n%s[%s]\n%s", text__str(s->state), text__str(s->health),
		     c ? c->id : "-", c ? text__str(c->layer) : "-", symptoms) < 0)
		abort();
	free(symptoms);
	return key;
}

void render__watch_line(const Dnnfault__RunSummary *s, double now, FILE *out)
{
	char when[40], step[24];
	char *symptoms = render__symptoms(s);
	char *cause = render__cause(s);
	fprintf(out, "%s run %s step %s %s %s  cause: %s  symptoms: %s\n",
		text__time(when, sizeof when, true, now),
		s->name != NULL && *s->name != '\0' ? s->name : s->id,
		text__u64(step, sizeof step, s->has_step, s->step), text__str(s->state),
		text__str(s->health), cause, symptoms);
	free(symptoms);
	free(cause);
}
