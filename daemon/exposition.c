#include "exposition.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

/* A growing text; after a failed allocation every append is a no-op and
 * the render returns NULL. */
struct text {
	char *p;
	size_t len, cap;
	bool failed;
};

static bool reserve(struct text *t, size_t more)
{
	if (t->failed)
		return false;
	if (t->len + more + 1 <= t->cap)
		return true;
	size_t cap = t->cap ? t->cap : 4096;
	while (cap < t->len + more + 1)
		cap *= 2;
	char *p = realloc(t->p, cap);
	if (p == NULL) {
		t->failed = true;
		return false;
	}
	t->p = p;
	t->cap = cap;
	return true;
}

static void put(struct text *t, const char *s, size_t n)
{
	if (!reserve(t, n))
		return;
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

static void puts_(struct text *t, const char *s)
{
	put(t, s, strlen(s));
}

static void printf_(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(struct text *t, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		put(t, small, (size_t)n);
		return;
	}
	if (!reserve(t, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

/* A label value or HELP text: backslash and newline escaped (and the
 * double quote in label values), bytes that are not UTF-8 replaced by
 * U+FFFD, as the format requires valid UTF-8 (names are checked when
 * they arrive; a store may hold older ones). */
static void escaped(struct text *t, const char *s, bool quote)
{
	const unsigned char *u = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)u);
	for (size_t i = 0; i < n;) {
		size_t k = validate__utf8_len(u + i, n - i);
		if (k == 0) {
			puts_(t, "\xef\xbf\xbd");
			i++;
		} else if (u[i] == '\\') {
			puts_(t, "\\\\"), i++;
		} else if (u[i] == '\n') {
			puts_(t, "\\n"), i++;
		} else if (u[i] == '"' && quote) {
			puts_(t, "\\\""), i++;
		} else {
			put(t, (const char *)u + i, k);
			i += k;
		}
	}
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
	printf_(t, "# HELP %s ", name);
	escaped(t, help, false);
	printf_(t, "\n# TYPE %s %s\n", name, type);
}

static void value(struct text *t, double v)
{
	if (isnan(v))
		puts_(t, " NaN\n");
	else if (isinf(v))
		puts_(t, v > 0 ? " +Inf\n" : " -Inf\n");
	else
		printf_(t, " %.17g\n", v);
}

/* One label pair, with the separator before it unless it is the first. */
static void label(struct text *t, bool first, const char *name, const char *v)
{
	printf_(t, "%s%s=\"", first ? "" : ",", name);
	escaped(t, v, true);
	puts_(t, "\"");
}

/* `name{run="..",run_id=".."` of a run's series, left open for more labels. */
static void run_series(struct text *t, const char *name, const Dnnfault__RunSummary *r)
{
	printf_(t, "%s{", name);
	label(t, true, "run", r->name && r->name[0] ? r->name : r->id);
	label(t, false, "run_id", r->id);
}

/* Each of a run's gauges: one family, a sample per run that has it. */
enum run_gauge { STEP, DIAGNOSED_STEP, FAULT_PROBABILITY, STEPS_STORED, DROPPED, SKIPPED, UPDATED };

static const struct {
	const char *name, *help;
} run_gauges[] = {
	[STEP] = {"dnnfault_run_step", "highest step stored"},
	[DIAGNOSED_STEP] = {"dnnfault_run_diagnosed_step", "step of the newest diagnosis"},
	[FAULT_PROBABILITY] = {"dnnfault_run_fault_probability",
			       "the detector's fault probability, newest diagnosis"},
	[STEPS_STORED] = {"dnnfault_run_steps_stored", "sampled steps stored, all ranks"},
	[DROPPED] = {"dnnfault_run_dropped_steps", "steps the clients had to drop (queue full)"},
	[SKIPPED] = {"dnnfault_run_skipped_steps",
		     "steps the training loop skipped on overflow, left out of the newest diagnosis"},
	[UPDATED] = {"dnnfault_run_updated_timestamp_seconds", "when the run last sent data, unix seconds"},
};

static bool run_gauge(const Dnnfault__RunSummary *r, enum run_gauge g, double *v)
{
	switch (g) {
	case STEP: *v = (double)r->step; return r->has_step;
	case DIAGNOSED_STEP: *v = (double)r->diagnosed_step; return r->has_diagnosed_step;
	case FAULT_PROBABILITY: *v = r->fault_probability; return r->has_fault_probability;
	case STEPS_STORED: *v = (double)r->steps_stored; return r->has_steps_stored;
	case DROPPED: *v = (double)r->dropped; return r->has_dropped;
	case SKIPPED: *v = (double)r->skipped_steps; return r->has_skipped_steps;
	case UPDATED: *v = r->updated; return r->has_updated;
	}
	return false;
}

/* A state set: every value of the label, 1 for the run's own. */
static void state_set(struct text *t, const Dnnfault__StatusResponse *s, const char *name,
		      const char *help, const char *label_name, const char *const *values,
		      const char *(*of)(const Dnnfault__RunSummary *))
{
	family(t, name, "gauge", help);
	for (size_t i = 0; i < s->n_runs; i++) {
		const char *own = of(s->runs[i]);
		for (size_t k = 0; values[k] != NULL; k++) {
			run_series(t, name, s->runs[i]);
			label(t, false, label_name, values[k]);
			puts_(t, "}");
			value(t, own != NULL && strcmp(own, values[k]) == 0);
		}
	}
}

static const char *state_of(const Dnnfault__RunSummary *r)
{
	return r->state;
}

static const char *health_of(const Dnnfault__RunSummary *r)
{
	return r->health;
}

static bool same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A repeated series would make Prometheus refuse the whole scrape: the
 * first of a run's causes (symptoms at a layer) of one id is kept. */
static bool cause_seen(const Dnnfault__RunSummary *r, size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (same(r->causes[i]->id, r->causes[k]->id))
			return true;
	return false;
}

static bool symptom_seen(const Dnnfault__RunSummary *r, size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (same(r->symptoms[i]->id, r->symptoms[k]->id) &&
		    same(r->symptoms[i]->layer, r->symptoms[k]->layer))
			return true;
	return false;
}

static void runs(struct text *t, const Dnnfault__StatusResponse *s)
{
	static const char *const states[] = {"running", "stale", "completed", "crashed",
					     "interrupted", "unknown", NULL};
	static const char *const healths[] = {"healthy", "suspect", "faulty", "unknown", NULL};
	state_set(t, s, "dnnfault_run_state", "the run's state (1 for the current one)", "state",
		  states, state_of);
	state_set(t, s, "dnnfault_run_health", "the run's health, newest diagnosis (1 for the current one)",
		  "health", healths, health_of);
	for (size_t g = 0; g < sizeof run_gauges / sizeof run_gauges[0]; g++) {
		family(t, run_gauges[g].name, "gauge", run_gauges[g].help);
		for (size_t i = 0; i < s->n_runs; i++) {
			double v;
			if (!run_gauge(s->runs[i], (enum run_gauge)g, &v))
				continue;
			run_series(t, run_gauges[g].name, s->runs[i]);
			puts_(t, "}");
			value(t, v);
		}
	}
	family(t, "dnnfault_run_cause_probability", "gauge",
	       "probability of each likely root cause, newest diagnosis (the causes status shows)");
	for (size_t i = 0; i < s->n_runs; i++) {
		for (size_t k = 0; k < s->runs[i]->n_causes; k++) {
			const Dnnfault__Cause *c = s->runs[i]->causes[k];
			if (cause_seen(s->runs[i], k))
				continue;
			run_series(t, "dnnfault_run_cause_probability", s->runs[i]);
			label(t, false, "cause", c->id);
			puts_(t, "}");
			value(t, c->has_probability ? c->probability : NAN);
		}
	}
	family(t, "dnnfault_run_symptom_first_step", "gauge",
	       "step where each symptom the run shows began (layer empty for the whole model)");
	for (size_t i = 0; i < s->n_runs; i++) {
		for (size_t k = 0; k < s->runs[i]->n_symptoms; k++) {
			const Dnnfault__Symptom *y = s->runs[i]->symptoms[k];
			if (symptom_seen(s->runs[i], k))
				continue;
			run_series(t, "dnnfault_run_symptom_first_step", s->runs[i]);
			label(t, false, "symptom", y->id);
			label(t, false, "layer", y->layer);
			puts_(t, "}");
			value(t, y->has_first_step ? (double)y->first_step : NAN);
		}
	}
}

struct counter_walk {
	struct text *t;
	bool errors_begun;
};

/* One family per counter, but the error replies (errors_*, contiguous and
 * last in metrics.h) make one family labelled by the error. */
static void counter_cb(const char *name, const char *help, uint64_t v, void *arg)
{
	struct counter_walk *w = arg;
	char full[96];
	if (strncmp(name, "errors_", 7) == 0) {
		if (!w->errors_begun)
			family(w->t, "dnnfault_errors_total", "counter", "error replies sent to clients, by error");
		w->errors_begun = true;
		puts_(w->t, "dnnfault_errors_total{");
		label(w->t, true, "error", name + 7);
		printf_(w->t, "} %llu\n", (unsigned long long)v);
		return;
	}
	if (strcmp(name, "connections_open") == 0) {
		family(w->t, "dnnfault_connections_open", "gauge", help);
		printf_(w->t, "dnnfault_connections_open %llu\n", (unsigned long long)v);
		return;
	}
	if (strcmp(name, "analysis_micros") == 0) {
		family(w->t, "dnnfault_analysis_seconds_total", "counter", "time spent in analyses");
		puts_(w->t, "dnnfault_analysis_seconds_total");
		value(w->t, (double)v / 1e6);
		return;
	}
	snprintf(full, sizeof full, "dnnfault_%s_total", name);
	family(w->t, full, "counter", help);
	printf_(w->t, "%s %llu\n", full, (unsigned long long)v);
}

char *exposition__render(const struct exposition *e, size_t *len)
{
	struct text t = {0};
	family(&t, "dnnfault_build_info", "gauge", "dnnfaultd's version");
	puts_(&t, "dnnfault_build_info{");
	label(&t, true, "version", e->version);
	puts_(&t, "} 1\n");
	family(&t, "dnnfault_start_time_seconds", "gauge", "when dnnfaultd started, unix seconds");
	puts_(&t, "dnnfault_start_time_seconds");
	value(&t, e->started);
	family(&t, "dnnfault_model_loaded", "gauge",
	       "1 when a diagnosis model is loaded (else health stays unknown)");
	printf_(&t, "dnnfault_model_loaded %d\n", e->model_loaded ? 1 : 0);
	struct counter_walk w = {.t = &t};
	if (e->counters != NULL)
		metrics__each(e->counters, counter_cb, &w);
	family(&t, "dnnfault_runs_stored", "gauge", "runs in the store");
	printf_(&t, "dnnfault_runs_stored %llu\n", (unsigned long long)e->runs_stored);
	family(&t, "dnnfault_runs_exposed", "gauge",
	       "runs with dnnfault_run_* series: the most recently updated, at most metrics_max_runs");
	printf_(&t, "dnnfault_runs_exposed %zu\n", e->runs ? e->runs->n_runs : 0);
	if (e->runs != NULL)
		runs(&t, e->runs);
	if (t.failed || t.p == NULL) {
		free(t.p);
		return NULL;
	}
	*len = t.len;
	return t.p;
}
