#include "analyze.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <uv.h>

#include "config.h"
#include "dnnfault_config.h"
#include "dnnfault.pb-c.h"
#include "ingest.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "model.h"
#include "run_features.h"
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
	/* The bundle in use (NULL: none, health stays unknown) and one that a
	 * reload loaded while an analysis was using the old one. */
	struct model *model, *next_model;
	bool swap_pending;
	uv_work_t work;
	uv_timer_t sweep;
	bool sweeping;
	/* The job in flight. */
	int64_t run;
	int rv;
	char err[256];
	uint64_t step;
	char health[16];
	uint64_t micros;
	size_t samples;		/* read for the analysis, of */
	uint64_t stored;	/* those stored (more when thinned) */
	size_t skipped;		/* left out: overflow steps skipped */
	size_t frozen;		/* layers left out */
	size_t frozen_samples;	/* layer-samples left out: frozen then */
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

const char *analyze__model_path(const struct analyze *a, char *buf, size_t len)
{
	const char *conf = a->srv->cfg->model;
	struct stat st;
	if (strcmp(conf, "none") == 0)
		snprintf(buf, len, "%s", "");
	else if (conf[0] != '\0')
		snprintf(buf, len, "%s", conf);
	else if (stat(DNNFAULT_MODEL_DIR "/bundle.txt", &st) == 0)
		snprintf(buf, len, "%s", DNNFAULT_MODEL_DIR);
	else
		snprintf(buf, len, "%s", DNNFAULT_SOURCE_MODEL_DIR);
	return buf;
}

int analyze__load_model(const struct analyze *a, struct model **out, char *err, size_t len)
{
	char path[CONFIG_STR_MAX + 64];
	analyze__model_path(a, path, sizeof path);
	if (path[0] == '\0') {
		*out = NULL;
		return 0;
	}
	return model__load(path, out, err, len);
}

void analyze__set_model(struct analyze *a, struct model *m)
{
	if (a->busy) {
		if (a->swap_pending)
			model__free(a->next_model);
		a->next_model = m;
		a->swap_pending = true;
		return;
	}
	model__free(a->model);
	a->model = m;
}

const struct model *analyze__model(const struct analyze *a)
{
	return a->swap_pending ? a->next_model : a->model;
}

void analyze__free(struct analyze *a)
{
	if (a == NULL)
		return;
	model__free(a->model);
	if (a->swap_pending)
		model__free(a->next_model);
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

/* The layer to change for a layer-specific cause: where a related symptom
 * started, else the layer whose statistics are most abnormal for it. */
static int cause_layer(enum cause_id c, const struct series *s, const struct symptom *found, size_t n)
{
	static const enum symptom_id for_activation[] = {SYMPTOM_saturated_activation, SYMPTOM_dead_relu,
							   SYMPTOM_vanishing_gradient};
	static const enum symptom_id for_init[] = {SYMPTOM_vanishing_gradient, SYMPTOM_exploding_gradient,
						     SYMPTOM_large_weights, SYMPTOM_unchanged_weights,
						     SYMPTOM_dead_relu};
	const enum symptom_id *want = c == CAUSE_activation ? for_activation : for_init;
	size_t n_want = c == CAUSE_activation ? 3 : 5;
	for (size_t w = 0; w < n_want; w++)
		for (size_t i = 0; i < n; i++)
			if (found[i].id == want[w] && found[i].layer >= 0)
				return found[i].layer;
	if (s->n == 0 || s->n_layers == 0)
		return -1;
	int best = -1;
	double worst = -1;
	for (size_t l = 0; l < s->n_layers; l++) {
		double score;
		if (c == CAUSE_activation) {
			/* Share of outputs that are dead or saturated, now. */
			float dead = series__stat(s, s->n - 1, l, DNNFAULT__LAYER_STAT__ACT_NONPOS_FRAC);
			float sat = series__stat(s, s->n - 1, l, DNNFAULT__LAYER_STAT__ACT_SATURATED_FRAC);
			score = (isfinite(dead) ? dead : 0) + (isfinite(sat) ? sat : 0);
		} else {
			/* Distance of the initial weight scale from PyTorch's default
			 * (std * sqrt(fan_in) ~ 0.58), in decades. */
			float sd = series__stat(s, 0, l, DNNFAULT__LAYER_STAT__WEIGHT_STD);
			if (s->layers[l].fan_in == 0 || !isfinite(sd))
				continue;
			double scale = sd * sqrt((double)s->layers[l].fan_in);
			score = scale > 0 ? fabs(log10(scale / 0.58)) : 10;
		}
		if (score > worst) {
			worst = score;
			best = (int)l;
		}
	}
	return best;
}

/* Runs the model on the run's features: health from the detector and,
 * unless healthy, the causes model__report_causes picks, most likely
 * first, into d (pointing at `msgs` and `order`, which the caller keeps
 * until d is packed). */
static int diagnose(const struct model *m, const struct series *s, const struct series *ref,
		    const struct symptom *found, size_t n, Dnnfault__Diagnosis *d, Dnnfault__Cause msgs[CAUSE_COUNT],
		    Dnnfault__Cause *order[CAUSE_COUNT], char *health, size_t health_len)
{
	size_t nf = features__count();
	double *x = malloc(2 * nf * sizeof *x), fault, fault_ref = NAN, shortfall = NAN, prob[CAUSE_COUNT];
	int rv = x ? features__compute(s, s->n, x) : -ENOMEM;
	/* Compared with the reference as far into its training as this run is
	 * into its own, and judged by the reference detector when the bundle
	 * has one. */
	bool compared = rv == 0 && ref != NULL && ref->n > 0 && m->fault_ref.b.present;
	if (compared && (rv = features__compute(ref, features__reference_upto(s, ref), x + nf)) == 0) {
		features__apply_reference(x, x + nf);
		shortfall = features__shortfall(x);
	}
	if (rv == 0)
		rv = model__predict(m, x, 1, &fault, compared ? &fault_ref : NULL, prob);
	free(x);
	if (rv != 0)
		return rv;
	enum model_health h = model__health(m, fault, fault_ref, shortfall, features__progress(s));
	snprintf(health, health_len, "%s", model__health_name(h));
	d->has_fault_probability = 1;
	d->fault_probability = compared ? fault_ref : fault;
	d->has_shortfall = !isnan(shortfall);
	d->shortfall = shortfall;
	cause_set shown = h == MODEL_HEALTHY ? 0 : model__report_causes(prob, m->ratio);
	for (int c = 0; c < CAUSE_COUNT; c++) {
		if (!(shown >> c & 1))
			continue;
		Dnnfault__Cause *k = &msgs[d->n_causes];
		dnnfault__cause__init(k);
		k->id = (char *)causes__name((enum cause_id)c);
		k->has_probability = 1;
		k->probability = prob[c];
		k->fix = (char *)causes__fix((enum cause_id)c);
		int layer = causes__layer_specific((enum cause_id)c) ? cause_layer((enum cause_id)c, s, found, n) : -1;
		if (layer >= 0)
			k->layer = s->layers[layer].name;
		/* Insertion into the ranking, most probable first. */
		size_t at = d->n_causes++;
		while (at > 0 && order[at - 1]->probability < k->probability) {
			order[at] = order[at - 1];
			at--;
		}
		order[at] = k;
	}
	d->causes = order;
	return 0;
}

/* The symptom thresholds users see: the published defaults with the
 * configured ones over them. */
static void thresholds_from(const struct config *c, struct symptom_thresholds *t)
{
	*t = symptom_defaults;
	t->loss_max = c->symptom_loss_max;
	t->explode_ratio = c->symptom_explode_ratio;
	t->vanish_ratio = c->symptom_vanish_ratio;
	t->dead_frac = c->symptom_dead_frac;
	t->saturated_frac = c->symptom_saturated_frac;
	t->large_weight = c->symptom_large_weight;
	t->update_low = c->symptom_update_low;
	t->update_high = c->symptom_update_high;
	t->persist = (size_t)c->symptom_persist;
	t->loss_window_steps = (uint64_t)c->symptom_loss_window_steps;
	t->lr_scheduled_frac = SYMPTOM_LR_SCHEDULED_FRAC;
	t->embedding_large_std = SYMPTOM_EMBEDDING_LARGE_STD;
}

/* Worker thread: load the run, run the detectors and the model, pack a
 * Diagnosis. */
static void work_cb(uv_work_t *req)
{
	struct analyze *a = req->data;
	struct store_reader *r;
	struct series s;
	memset(&s, 0, sizeof s);
	double t0 = server__now();
	a->rv = store_read__open(a->srv->cfg->db, &r, a->err, sizeof a->err);
	if (a->rv != 0)
		return;
	store_read__set_max_samples(r, (size_t)a->srv->cfg->analyze_max_samples);
	a->rv = store_read__series(r, a->run, &s, a->err, sizeof a->err);
	/* The reference run, if the run names one that is in the store; a
	 * missing one leaves the run judged on its own, with a warning. */
	struct series ref;
	memset(&ref, 0, sizeof ref);
	int64_t ref_id = 0;
	bool have_ref = false;
	if (a->rv == 0 && a->model != NULL && store_read__reference(r, a->run, &ref_id, a->err, sizeof a->err) == 0 &&
	    ref_id != 0)
		have_ref = store_read__series(r, ref_id, &ref, a->err, sizeof a->err) == 0;
	store_read__close(r);
	if (a->rv != 0) {
		series__free(&ref);
		return;
	}

	struct symptom found[SYMPTOM_COUNT];
	struct symptom_thresholds t;
	thresholds_from(a->srv->cfg, &t);
	size_t n = symptoms__detect(&s, &t, found);
	Dnnfault__Diagnosis d = DNNFAULT__DIAGNOSIS__INIT;
	Dnnfault__Symptom *items[SYMPTOM_COUNT];
	for (size_t i = 0; i < n; i++)
		if ((items[d.n_symptoms] = make_symptom(&found[i], &s)) != NULL)
			d.n_symptoms++;
	d.symptoms = items;
	a->step = s.last_step;
	d.has_step = d.has_time = d.has_steps_analysed = 1;
	d.step = a->step;
	d.time = server__now();
	d.steps_analysed = s.n;
	d.has_skipped_steps = 1;
	d.skipped_steps = s.n_skipped;
	/* Without a model, health stays unknown rather than guessed. */
	snprintf(a->health, sizeof a->health, "unknown");
	Dnnfault__Cause msgs[CAUSE_COUNT], *order[CAUSE_COUNT];
	if (a->model != NULL && s.n > 0) {
		int rv = diagnose(a->model, &s, have_ref ? &ref : NULL, found, n, &d, msgs, order, a->health,
				  sizeof a->health);
		if (rv != 0) {
			/* The symptoms still stand; the causes are missing this time. */
			snprintf(a->health, sizeof a->health, "unknown");
			d.n_causes = 0;
			snprintf(a->err, sizeof a->err, "model prediction failed (%d)", rv);
		}
	}
	d.health = a->health;
	a->message_len = dnnfault__diagnosis__get_packed_size(&d);
	a->message = malloc(a->message_len ? a->message_len : 1);
	if (a->message == NULL)
		a->rv = -ENOMEM;
	else
		dnnfault__diagnosis__pack(&d, a->message);
	for (size_t i = 0; i < d.n_symptoms; i++)
		protobuf_c_message_free_unpacked(&items[i]->base, NULL);
	a->samples = s.n;
	a->stored = s.n_stored;
	a->skipped = s.n_skipped;
	a->frozen = s.n_frozen;
	a->frozen_samples = s.n_frozen_samples;
	series__free(&s);
	series__free(&ref);
	a->micros = (uint64_t)((server__now() - t0) * 1e6);
}

static void start_next(struct analyze *a);

static void after_work_cb(uv_work_t *req, int status)
{
	struct analyze *a = req->data;
	a->busy = false;
	if (a->err[0] != '\0' && a->rv == 0)
		log_warning("run %lld: %s", (long long)a->run, a->err);
	if (a->swap_pending) {
		/* A reload finished while this analysis used the old bundle. */
		model__free(a->model);
		a->model = a->next_model;
		a->next_model = NULL;
		a->swap_pending = false;
	}
	if (status == 0 && a->rv == 0) {
		log_debug("run %lld analysed at step %llu: %zu of %llu samples (%zu more left out: skipped on"
			  " overflow; %zu frozen layers and %zu frozen layer-samples left out), %.1f ms",
			  (long long)a->run, (unsigned long long)a->step, a->samples, (unsigned long long)a->stored,
			  a->skipped, a->frozen, a->frozen_samples, (double)a->micros / 1000.0);
		metrics.analyses++;
		metrics.analysis_micros += a->micros;
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

/* The progress of `run`, created (with `ended` as given) when the run is
 * not followed yet; NULL when out of memory. */
static struct run_progress *progress_of(struct analyze *a, int64_t run, bool ended)
{
	struct run_progress *p = map__get(&a->runs, (uint64_t)run);
	if (p != NULL)
		return p;
	if ((p = calloc(1, sizeof *p)) == NULL || map__put(&a->runs, (uint64_t)run, p) != 0) {
		free(p);
		return NULL;
	}
	p->ended = ended;
	p->last = server__now();
	return p;
}

void analyze__note(struct analyze *a, int64_t run, uint64_t new_steps, bool ended)
{
	int64_t every = a->srv->cfg->analyze_every_steps;
	struct run_progress *p = every > 0 ? progress_of(a, run, false) : NULL;
	if (p == NULL)
		return;
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

void analyze__request(struct analyze *a, int64_t run)
{
	/* A run not followed is forgotten again after this analysis. */
	struct run_progress *p = a->srv->cfg->analyze_every_steps > 0 ? progress_of(a, run, true) : NULL;
	if (p == NULL)
		return;
	if (!p->queued && push(a, run) == 0)
		p->queued = true;
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
