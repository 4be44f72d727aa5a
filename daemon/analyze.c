#include "analyze.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "dnnfault.pb-c.h"
#include "ingest.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "series.h"
#include "server.h"
#include "store.h"
#include "store_read.h"
#include "symptoms.h"

struct run_progress {
	uint64_t new_steps;	/* committed since the last analysis started */
	uint64_t analysed;	/* steps committed before that */
	double last;		/* when steps last arrived */
	bool queued, ended;
};

/* A run that stops sending without a RunEnd (its process died) still gets
 * its last steps analysed once it has been quiet this long. */
#define ANALYZE_IDLE_S 30.0
#define ANALYZE_SWEEP_MS 10000

/* A run is analysed again after analyze_every_steps new steps, or after a
 * tenth of the steps it had, whichever is more: an analysis reads the whole
 * run, and this keeps the total work within about 11x the run's length. */
static bool due(const struct run_progress *p, uint64_t every)
{
	uint64_t need = p->analysed / 10 > every ? p->analysed / 10 : every;
	return p->new_steps >= need || (p->ended && p->new_steps > 0);
}

struct analyze {
	struct server *srv;
	struct map runs;	/* run id -> run_progress */
	int64_t *queue;		/* FIFO of runs to analyse */
	size_t head, n, cap;
	bool busy;
	uv_work_t work;
	uv_timer_t sweep;
	bool sweeping;
	/* The job in flight. */
	int64_t run;
	int rv;
	char err[256];
	uint64_t step;
	char health[16];
	uint8_t *message;
	size_t message_len;
};

static void sweep_cb(uv_timer_t *t);

int analyze__init(struct analyze **out, struct server *srv)
{
	struct analyze *a = calloc(1, sizeof *a);
	if (a == NULL)
		return -ENOMEM;
	a->srv = srv;
	a->work.data = a;
	map__init(&a->runs);
	uv_timer_init(srv->loop, &a->sweep);
	a->sweep.data = a;
	uv_timer_start(&a->sweep, sweep_cb, ANALYZE_SWEEP_MS, ANALYZE_SWEEP_MS);
	a->sweeping = true;
	*out = a;
	return 0;
}

void analyze__stop(struct analyze *a)
{
	if (a != NULL && a->sweeping) {
		uv_close((uv_handle_t *)&a->sweep, NULL);
		a->sweeping = false;
	}
}

void analyze__free(struct analyze *a)
{
	if (a == NULL)
		return;
	size_t pos = 0;
	for (struct run_progress *p; (p = map__next(&a->runs, &pos, NULL)) != NULL;)
		free(p);
	map__free(&a->runs);
	free(a->queue);
	free(a->message);
	free(a);
}

static int push(struct analyze *a, int64_t run)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		int64_t *q = malloc(cap * sizeof *q);
		if (q == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < a->n; i++)
			q[i] = a->queue[(a->head + i) % a->cap];
		free(a->queue);
		a->queue = q;
		a->head = 0;
		a->cap = cap;
	}
	a->queue[(a->head + a->n++) % a->cap] = run;
	return 0;
}

static Dnnfault__Symptom *make_symptom(const struct symptom *x, const struct series *s)
{
	Dnnfault__Symptom *m = malloc(sizeof *m);
	if (m == NULL)
		return NULL;
	dnnfault__symptom__init(m);
	m->id = strdup(symptoms__name(x->id));
	m->has_first_step = 1;
	m->first_step = x->first_step;
	if (x->layer >= 0 && (size_t)x->layer < s->n_layers)
		m->layer = strdup(s->layers[x->layer].name);
	return m;
}

/* Worker thread: load the run, run the detectors, pack a Diagnosis. */
static void work_cb(uv_work_t *req)
{
	struct analyze *a = req->data;
	struct store_reader *r;
	struct series s;
	memset(&s, 0, sizeof s);
	a->rv = store_read__open(a->srv->cfg->db, &r, a->err, sizeof a->err);
	if (a->rv != 0)
		return;
	a->rv = store_read__series(r, a->run, &s, a->err, sizeof a->err);
	store_read__close(r);
	if (a->rv != 0)
		return;

	struct symptom found[SYMPTOM_COUNT];
	size_t n = symptoms__detect(&s, &symptom_defaults, found);
	Dnnfault__Diagnosis d = DNNFAULT__DIAGNOSIS__INIT;
	Dnnfault__Symptom *items[SYMPTOM_COUNT];
	for (size_t i = 0; i < n; i++)
		if ((items[d.n_symptoms] = make_symptom(&found[i], &s)) != NULL)
			d.n_symptoms++;
	d.symptoms = items;
	a->step = s.n ? s.step[s.n - 1] : 0;
	d.has_step = d.has_time = d.has_steps_analysed = 1;
	d.step = a->step;
	d.time = server__now();
	d.steps_analysed = s.n;
	/* No diagnosis model is loaded: health stays unknown, not guessed. */
	snprintf(a->health, sizeof a->health, "unknown");
	d.health = a->health;
	a->message_len = dnnfault__diagnosis__get_packed_size(&d);
	a->message = malloc(a->message_len ? a->message_len : 1);
	if (a->message == NULL)
		a->rv = -ENOMEM;
	else
		dnnfault__diagnosis__pack(&d, a->message);
	for (size_t i = 0; i < d.n_symptoms; i++)
		protobuf_c_message_free_unpacked(&items[i]->base, NULL);
	series__free(&s);
}

static void start_next(struct analyze *a);

static void after_work_cb(uv_work_t *req, int status)
{
	struct analyze *a = req->data;
	a->busy = false;
	if (status == 0 && a->rv == 0) {
		metrics.analyses++;
		ingest__add_diagnosis(a->srv->ingest, a->run, a->step, a->health, a->message,
				      a->message_len);
		a->message = NULL;
	} else {
		metrics.analysis_failures++;
		log_warning("analysis of run %lld failed: %s", (long long)a->run,
			    status != 0 ? uv_strerror(status) : a->err);
		free(a->message);
		a->message = NULL;
	}
	start_next(a);
}

static void start_next(struct analyze *a)
{
	if (a->busy || a->n == 0 || a->srv->stopping)
		return;
	a->run = a->queue[a->head];
	a->head = (a->head + 1) % a->cap;
	a->n--;
	struct run_progress *p = map__get(&a->runs, (uint64_t)a->run);
	if (p != NULL && p->ended) {
		/* The last analysis of a finished run. */
		map__del(&a->runs, (uint64_t)a->run);
		free(p);
	} else if (p != NULL) {
		p->queued = false;
		p->analysed += p->new_steps;
		p->new_steps = 0;
	}
	a->rv = 0;
	a->err[0] = '\0';
	if (uv_queue_work(a->srv->loop, &a->work, work_cb, after_work_cb) == 0)
		a->busy = true;
}

void analyze__note(struct analyze *a, int64_t run, uint64_t new_steps, bool ended)
{
	int64_t every = a->srv->cfg->analyze_every_steps;
	if (every <= 0)
		return;
	struct run_progress *p = map__get(&a->runs, (uint64_t)run);
	if (p == NULL) {
		if ((p = calloc(1, sizeof *p)) == NULL || map__put(&a->runs, (uint64_t)run, p) != 0) {
			free(p);
			return;
		}
	}
	p->new_steps += new_steps;
	p->ended |= ended;
	p->last = server__now();
	if (!p->queued && due(p, (uint64_t)every)) {
		if (push(a, run) == 0)
			p->queued = true;
	}
	if (p->ended && !p->queued) {
		/* Nothing left to analyse for a finished run: forget it. */
		map__del(&a->runs, (uint64_t)run);
		free(p);
	}
	start_next(a);
}

/* Runs gone quiet: analyse what is left, then forget them (they come back
 * with their next step). */
static void sweep_cb(uv_timer_t *t)
{
	struct analyze *a = t->data;
	double now = server__now();
	size_t pos = 0;
	uint64_t key;
	int64_t *quiet = NULL;
	size_t n = 0, cap = 0;
	for (struct run_progress *p; (p = map__next(&a->runs, &pos, &key)) != NULL;) {
		if (p->queued || now - p->last < ANALYZE_IDLE_S)
			continue;
		int64_t *slot = store_batch__push((void **)&quiet, &n, &cap, sizeof *slot);
		if (slot != NULL)
			*slot = (int64_t)key;
	}
	for (size_t i = 0; i < n; i++) {
		struct run_progress *p = map__get(&a->runs, (uint64_t)quiet[i]);
		if (p->new_steps > 0 && push(a, quiet[i]) == 0) {
			p->queued = true;
			p->ended = true;	/* forgotten after this analysis */
		} else if (p->new_steps == 0) {
			map__del(&a->runs, (uint64_t)quiet[i]);
			free(p);
		}
	}
	free(quiet);
	start_next(a);
}
