#include "ingest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "analyze.h"
#include "chunk.h"
#include "conn.h"
#include "log.h"
#include "registry.h"
#include "metrics.h"
#include "server.h"
#include "store.h"
#include "validate.h"

#define NONE SIZE_MAX

/* A message waiting for its commit before it is acknowledged. */
struct ack_entry {
	struct conn *c;
	uint64_t stream, seq;
};

/* Someone (a label request) waiting for a commit. */
struct waiter {
	void (*done)(void *arg, int rv);
	void *arg;
};

/* A batch being built or committed, with the acks it releases. */
struct pending {
	struct store_batch batch;
	struct ack_entry *acks;
	size_t n_acks, cap_acks;
	struct waiter *waiters;
	size_t n_waiters, cap_waiters;
	uint64_t n_steps, n_epochs, n_ends, n_runs;
	size_t bytes;			/* telemetry held by the batch */
};

struct ingest {
	struct server *srv;
	const struct config *cfg;
	struct registry reg;

	struct pending slots[2];
	struct pending *building, *committing;
	uint64_t gen;			/* generation of `building` */
	uv_work_t work;
	int commit_rv;
	char commit_err[256];
	double prune_before;

	void (*idle_cb)(void *arg);
	void *idle_arg;
};

int ingest__init(struct ingest **out, struct server *srv)
{
	struct ingest *ig = calloc(1, sizeof *ig);
	if (ig == NULL)
		return -ENOMEM;
	ig->srv = srv;
	ig->cfg = srv->cfg;
	ig->building = &ig->slots[0];
	ig->gen = 1;
	ig->work.data = ig;
	int rv = registry__load(&ig->reg, srv->store);
	if (rv != 0) {
		ingest__free(ig);
		return rv;
	}
	log_info("store holds %zu runs and %zu streams", ig->reg.n_runs, ig->reg.streams.used);
	*out = ig;
	return 0;
}

void ingest__free(struct ingest *ig)
{
	if (ig == NULL)
		return;
	registry__free(&ig->reg);
	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < ig->slots[i].n_acks; j++)
			conn__unref(ig->slots[i].acks[j].c);
		store_batch__free(&ig->slots[i].batch);
		free(ig->slots[i].acks);
		free(ig->slots[i].waiters);
	}
	free(ig);
}

/* Whether the batch under construction holds anything to commit. */
static bool has_work(const struct ingest *ig)
{
	return ig->building->n_acks > 0 || ig->building->batch.n_diagnoses > 0 ||
	       ig->building->n_waiters > 0 || ig->prune_before > 0;
}

bool ingest__idle(const struct ingest *ig)
{
	return ig->committing == NULL && !has_work(ig);
}

void ingest__add_diagnosis(struct ingest *ig, int64_t run, uint64_t step, const char *health,
			   uint8_t *message, size_t len)
{
	struct store_diagnosis *d = STORE_BATCH_PUSH(&ig->building->batch, diagnoses);
	if (d == NULL) {
		free(message);
		return;
	}
	d->run = run;
	d->step = step;
	d->time = server__now();
	snprintf(d->health, sizeof d->health, "%s", health);
	d->message = message;
	d->message_len = len;
	ingest__kick(ig);
}

void ingest__on_idle(struct ingest *ig, void (*cb)(void *arg), void *arg)
{
	ig->idle_cb = cb;
	ig->idle_arg = arg;
}

void ingest__prune(struct ingest *ig, double before)
{
	ig->prune_before = before;
	ingest__kick(ig);
}

/* Reading pauses while the batch under construction is this large. */
static bool batch_full(const struct ingest *ig)
{
	return ig->building->n_acks >= (size_t)ig->cfg->max_pending_messages ||
	       ig->building->bytes >= (size_t)ig->cfg->max_pending_bytes;
}

/* Someone waits for the commit of the batch under construction. */
static int add_waiter(struct ingest *ig, void (*done)(void *arg, int rv), void *arg)
{
	struct pending *p = ig->building;
	struct waiter *w = store_batch__push((void **)&p->waiters, &p->n_waiters, &p->cap_waiters,
					     sizeof *w);
	if (w == NULL)
		return -ENOMEM;
	w->done = done;
	w->arg = arg;
	return 0;
}

void ingest__set_labels(struct ingest *ig, int64_t run, char *labels,
			void (*done)(void *arg, int rv), void *arg)
{
	struct store_batch *b = &ig->building->batch;
	struct store_label *l = STORE_BATCH_PUSH(b, labels);
	if (l == NULL || add_waiter(ig, done, arg) != 0) {
		if (l != NULL)
			b->n_labels--;
		free(labels);
		done(arg, -ENOMEM);
		return;
	}
	l->run = run;
	l->labels = labels;
	ingest__kick(ig);
}

void ingest__set_reference(struct ingest *ig, int64_t run, char *reference,
			   void (*done)(void *arg, int rv), void *arg)
{
	struct store_batch *b = &ig->building->batch;
	struct store_reference *x = STORE_BATCH_PUSH(b, references);
	if (x == NULL || add_waiter(ig, done, arg) != 0) {
		if (x != NULL)
			b->n_references--;
		free(reference);
		done(arg, -ENOMEM);
		return;
	}
	x->run = run;
	x->reference = reference;
	ingest__kick(ig);
}

/* Queues the acknowledgement of (stream, seq) behind the current batch. The
 * message counts against the connection's in-flight limit until then. */
static void queue_ack(struct ingest *ig, struct conn *c, uint64_t stream, uint64_t seq)
{
	struct pending *p = ig->building;
	struct ack_entry *a = store_batch__push((void **)&p->acks, &p->n_acks, &p->cap_acks, sizeof *a);
	if (a == NULL) {
		conn__close(c, "out of memory for acknowledgements");
		return;
	}
	a->c = c;
	a->stream = stream;
	a->seq = seq;
	conn__ref(c);
	c->inflight++;
	if (c->inflight >= (size_t)ig->cfg->max_inflight_per_conn || batch_full(ig))
		conn__pause(c);
}

/* Answers a rejected message. Later cumulative acks of its stream cover it,
 * except for streams that do not exist or cannot (reserved ids). */
static void reject(struct ingest *ig, struct conn *c, int code, uint64_t stream, uint64_t seq,
		   const char *why)
{
	metrics.messages_rejected++;
	conn__send_error(c, code, false, stream, seq, "%s", why);
	if (code != DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM && stream != 0 && stream != UINT64_MAX)
		queue_ack(ig, c, stream, seq);
}

/* Registers the stream (and run) in the batch under construction, so that
 * its watermark and counters are written with it. */
static struct store_stream_update *touch_stream(struct ingest *ig, struct stream_state *st, double now)
{
	struct store_batch *b = &ig->building->batch;
	if (st->gen != ig->gen) {
		struct store_stream_update *u = STORE_BATCH_PUSH(b, stream_updates);
		if (u == NULL)
			return NULL;
		u->stream = st->id;
		st->gen = ig->gen;
		st->update_idx = b->n_stream_updates - 1;
		st->chunk_idx = NONE;
	}
	struct store_stream_update *u = &b->stream_updates[st->update_idx];
	u->updated = now;
	return u;
}

static struct store_run_update *touch_run(struct ingest *ig, struct run_state *r, double now)
{
	struct store_batch *b = &ig->building->batch;
	if (r->gen != ig->gen) {
		struct store_run_update *u = STORE_BATCH_PUSH(b, run_updates);
		if (u == NULL)
			return NULL;
		u->run = r->id;
		r->gen = ig->gen;
		r->update_idx = b->n_run_updates - 1;
	}
	struct store_run_update *u = &b->run_updates[r->update_idx];
	u->updated = now;
	return u;
}

/* Accepted message: advance the stream's watermark in memory and in the batch. */
static int accept_message(struct ingest *ig, struct conn *c, struct stream_state *st, uint64_t seq, double now)
{
	struct store_stream_update *su = touch_stream(ig, st, now);
	struct store_run_update *ru = touch_run(ig, st->run, now);
	if (su == NULL || ru == NULL)
		return -ENOMEM;
	su->last_seq = seq;
	st->last_seq = seq;
	metrics.messages_accepted++;
	queue_ack(ig, c, st->id, seq);
	return 0;
}

static char *join_labels(const Dnnfault__RunStart *m)
{
	if (!m->labels_known && m->n_labels == 0)
		return NULL;
	size_t n = 1;
	for (size_t i = 0; i < m->n_labels; i++)
		n += strlen(m->labels[i]) + 1;
	char *s = calloc(1, n);
	for (size_t i = 0; s != NULL && i < m->n_labels; i++) {
		if (i > 0)
			strcat(s, ",");
		strcat(s, m->labels[i]);
	}
	return s;
}

static int pack_message(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	*out = malloc(*len ? *len : 1);
	if (*out == NULL)
		return -ENOMEM;
	protobuf_c_message_pack(m, *out);
	return 0;
}

static int on_run_start(struct ingest *ig, struct conn *c, const Dnnfault__RunStart *m, double now)
{
	char why[512];
	int code = validate__run_start(m, &ig->srv->limits, why, sizeof why);
	if (code != 0) {
		reject(ig, c, code, m->stream, m->seq, why);
		return 0;
	}
	struct stream_state *st = registry__stream(&ig->reg, m->stream);
	if (st != NULL) {
		if (m->seq <= st->last_seq) {
			metrics.messages_duplicate++;
			queue_ack(ig, c, m->stream, m->seq);
		} else {
			reject(ig, c, DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD, m->stream, m->seq,
			       "stream already started; use a new stream id for a new run or rank");
		}
		return 0;
	}
	struct run_state *run = registry__find_run(&ig->reg, m->run_id);
	bool is_new = run == NULL;
	if (is_new && ig->reg.n_runs >= (size_t)ig->cfg->max_runs) {
		reject(ig, c, DNNFAULT__ERROR_CODE__ERR_LIMIT, m->stream, m->seq,
		       "the daemon holds max_runs runs already");
		return 0;
	}
	if (is_new && (run = registry__add_run(&ig->reg, m->run_id, m->world_size)) == NULL)
		return -ENOMEM;
	st = registry__add_stream(&ig->reg, m->stream, run, m->rank, (uint32_t)m->n_layers);
	if (st == NULL)
		return -ENOMEM;

	struct store_batch *b = &ig->building->batch;
	struct store_run *r = STORE_BATCH_PUSH(b, runs);
	struct store_stream *s = STORE_BATCH_PUSH(b, streams);
	if (r == NULL || s == NULL)
		return -ENOMEM;
	r->id = run->id;
	r->is_new = is_new;
	r->world_size = m->world_size;
	r->time = m->has_time ? m->time : now;
	if (is_new) {
		r->uid = strdup(m->run_id);
		r->name = m->run_name ? strdup(m->run_name) : NULL;
		r->labels = join_labels(m);
	}
	/* The run's description is that of rank 0, or of whichever rank came
	 * first; so is its reference, which a later rank 0 only replaces by
	 * naming another. */
	if (is_new || m->rank == 0) {
		if (pack_message(&m->base, &r->description, &r->description_len) != 0)
			return -ENOMEM;
		if (m->reference != NULL && *m->reference != '\0' &&
		    (r->reference = strdup(m->reference)) == NULL)
			return -ENOMEM;
	}
	s->id = m->stream;
	s->run = run->id;
	s->rank = m->rank;
	s->pid = m->pid;
	s->n_layers = (uint32_t)m->n_layers;
	s->host = m->host ? strdup(m->host) : NULL;
	s->time = r->time;
	ig->building->n_runs++;
	return accept_message(ig, c, st, m->seq, now);
}

/* Finds the stream of a message, or answers why it cannot be taken. Returns
 * NULL when the message was answered (error or duplicate). */
static struct stream_state *stream_for(struct ingest *ig, struct conn *c, uint64_t stream, uint64_t seq)
{
	struct stream_state *st = registry__stream(&ig->reg, stream);
	if (st == NULL) {
		char why[128];
		snprintf(why, sizeof why, "stream %llu has no RunStart", (unsigned long long)stream);
		reject(ig, c, DNNFAULT__ERROR_CODE__ERR_UNKNOWN_STREAM, stream, seq, why);
		return NULL;
	}
	if (seq <= st->last_seq) {
		metrics.messages_duplicate++;
		queue_ack(ig, c, stream, seq);
		return NULL;
	}
	if (st->ended) {
		reject(ig, c, DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD, stream, seq,
		       "the stream has ended (RunEnd received)");
		return NULL;
	}
	return st;
}

/* Appends the step to its stream's open chunk in the batch, opening a new
 * chunk when the open one is full or has another layer count. */
static int append_step(struct ingest *ig, struct stream_state *st, const Dnnfault__Step *m)
{
	struct store_batch *b = &ig->building->batch;
	uint32_t layers = (uint32_t)(m->n_layer_stats / CHUNK_STATS_PER_LAYER);
	size_t rec = chunk__record_size(layers);
	struct store_chunk *ch = st->chunk_idx != NONE ? &b->chunks[st->chunk_idx] : NULL;
	if (ch == NULL || ch->n_steps >= (uint32_t)ig->cfg->chunk_steps || ch->n_layers != layers) {
		if ((ch = STORE_BATCH_PUSH(b, chunks)) == NULL)
			return -ENOMEM;
		st->chunk_idx = b->n_chunks - 1;
		ch->run = st->run->id;
		ch->stream = st->id;
		ch->n_layers = layers;
		ch->first_step = ch->last_step = m->step;
	}
	if (ch->len + rec > ch->cap) {
		size_t cap = ch->cap ? ch->cap * 2 : rec * 4;
		while (cap < ch->len + rec)
			cap *= 2;
		uint8_t *p = realloc(ch->data, cap);
		if (p == NULL)
			return -ENOMEM;
		ch->data = p;
		ch->cap = cap;
	}
	ch->len += chunk__write_record(m, ch->data + ch->len);
	ig->building->bytes += rec;
	ch->n_steps++;
	if (m->step < ch->first_step)
		ch->first_step = m->step;
	if (m->step > ch->last_step)
		ch->last_step = m->step;
	return 0;
}

static int on_step(struct ingest *ig, struct conn *c, const Dnnfault__Step *m, double now)
{
	struct stream_state *st = stream_for(ig, c, m->stream, m->seq);
	if (st == NULL)
		return 0;
	char why[512];
	int code = validate__step(m, st->n_layers, &ig->srv->limits, why, sizeof why);
	if (code != 0) {
		reject(ig, c, code, m->stream, m->seq, why);
		return 0;
	}
	if (touch_stream(ig, st, now) == NULL)
		return -ENOMEM;
	int rv = append_step(ig, st, m);
	struct store_run_update *ru = touch_run(ig, st->run, now);
	if (rv != 0 || ru == NULL)
		return -ENOMEM;
	if (!ru->has_step || m->step > ru->last_step)
		ru->last_step = m->step;
	ru->has_step = true;
	ru->n_steps++;
	struct store_stream_update *su = &ig->building->batch.stream_updates[st->update_idx];
	if (m->has_dropped && m->dropped > su->dropped)
		su->dropped = m->dropped;
	ig->building->n_steps++;
	return accept_message(ig, c, st, m->seq, now);
}

/* Epochs and run ends are stored as the message itself. */
static int push_event(struct ingest *ig, struct stream_state *st, bool is_end, const ProtobufCMessage *m,
		      uint32_t number, bool has_step, uint64_t step, double time)
{
	struct store_batch *b = &ig->building->batch;
	struct store_event *e = is_end ? STORE_BATCH_PUSH(b, ends) : STORE_BATCH_PUSH(b, epochs);
	if (e == NULL)
		return -ENOMEM;
	e->run = st->run->id;
	e->stream = st->id;
	e->number = number;
	e->has_step = has_step;
	e->step = step;
	e->time = time;
	int rv = pack_message(m, &e->message, &e->message_len);
	ig->building->bytes += e->message_len;
	return rv;
}

static int on_epoch(struct ingest *ig, struct conn *c, const Dnnfault__Epoch *m, double now)
{
	struct stream_state *st = stream_for(ig, c, m->stream, m->seq);
	if (st == NULL)
		return 0;
	char why[512];
	int code = validate__epoch(m, why, sizeof why);
	if (code != 0) {
		reject(ig, c, code, m->stream, m->seq, why);
		return 0;
	}
	if (push_event(ig, st, false, &m->base, m->epoch, m->has_step, m->step,
		       m->has_time ? m->time : now) != 0)
		return -ENOMEM;
	ig->building->n_epochs++;
	return accept_message(ig, c, st, m->seq, now);
}

static int on_run_end(struct ingest *ig, struct conn *c, const Dnnfault__RunEnd *m, double now)
{
	struct stream_state *st = stream_for(ig, c, m->stream, m->seq);
	if (st == NULL)
		return 0;
	char why[512];
	int code = validate__run_end(m, why, sizeof why);
	if (code != 0) {
		reject(ig, c, code, m->stream, m->seq, why);
		return 0;
	}
	if (push_event(ig, st, true, &m->base, m->status, m->has_step, m->step,
		       m->has_time ? m->time : now) != 0)
		return -ENOMEM;
	struct store_stream_update *su = touch_stream(ig, st, now);
	if (su == NULL)
		return -ENOMEM;
	if (m->has_dropped && m->dropped > su->dropped)
		su->dropped = m->dropped;
	st->ended = true;
	ig->building->n_ends++;
	return accept_message(ig, c, st, m->seq, now);
}

void ingest__message(struct ingest *ig, struct conn *c, const Dnnfault__Envelope *env)
{
	double now = server__now();
	int rv = 0;
	switch (env->body_case) {
	case DNNFAULT__ENVELOPE__BODY_RUN_START:
		rv = on_run_start(ig, c, env->run_start, now);
		break;
	case DNNFAULT__ENVELOPE__BODY_STEP:
		rv = on_step(ig, c, env->step, now);
		break;
	case DNNFAULT__ENVELOPE__BODY_EPOCH:
		rv = on_epoch(ig, c, env->epoch, now);
		break;
	case DNNFAULT__ENVELOPE__BODY_RUN_END:
		rv = on_run_end(ig, c, env->run_end, now);
		break;
	default:
		break;
	}
	if (rv != 0) {
		/* Out of memory half-way: the message was not taken; the client
		 * resends it after reconnecting. */
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0,
				 "out of memory while accepting a message");
	}
}

static void work_cb(uv_work_t *req)
{
	struct ingest *ig = req->data;
	ig->commit_rv = store__commit(ig->srv->store, &ig->committing->batch, ig->commit_err,
				      sizeof ig->commit_err);
}

/* One Ack per connection and commit, holding the highest seq per stream. */
static void send_acks(struct pending *p)
{
	struct conn *list = NULL;
	for (size_t i = 0; i < p->n_acks; i++) {
		struct ack_entry *a = &p->acks[i];
		struct conn *c = a->c;
		c->inflight--;
		size_t j;
		for (j = 0; j < c->n_acks && c->acks[j].stream != a->stream; j++)
			;
		if (j == c->n_acks) {
			struct conn_ack *x = store_batch__push((void **)&c->acks, &c->n_acks,
							       &c->cap_acks, sizeof *x);
			if (x == NULL)
				continue;	/* the next commit's ack covers it */
			x->stream = a->stream;
		}
		if (a->seq > c->acks[j].seq)
			c->acks[j].seq = a->seq;
		if (!c->in_ack_list) {
			c->in_ack_list = true;
			c->next_ack = list;
			list = c;
		}
	}
	for (struct conn *c = list; c != NULL; c = c->next_ack) {
		Dnnfault__StreamAck *items = calloc(c->n_acks, sizeof *items);
		Dnnfault__StreamAck **ptrs = calloc(c->n_acks, sizeof *ptrs);
		if (items == NULL || ptrs == NULL) {
			free(items);
			free(ptrs);
			conn__close(c, "out of memory for acknowledgements");
			c->n_acks = 0;
			c->in_ack_list = false;
			continue;
		}
		for (size_t j = 0; j < c->n_acks; j++) {
			dnnfault__stream_ack__init(&items[j]);
			items[j].stream = c->acks[j].stream;
			items[j].seq = c->acks[j].seq;
			ptrs[j] = &items[j];
		}
		Dnnfault__Ack ack = DNNFAULT__ACK__INIT;
		ack.n_streams = c->n_acks;
		ack.streams = ptrs;
		Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
		env.body_case = DNNFAULT__ENVELOPE__BODY_ACK;
		env.ack = &ack;
		conn__send(c, &env);
		free(items);
		free(ptrs);
		c->n_acks = 0;
		c->in_ack_list = false;
	}
}

/* Releases a committed or failed batch: its connections, and those who
 * wait for it (told whether it was stored). */
static void release(struct pending *p, int rv)
{
	for (size_t i = 0; i < p->n_waiters; i++)
		p->waiters[i].done(p->waiters[i].arg, rv);
	p->n_waiters = 0;
	for (size_t i = 0; i < p->n_acks; i++)
		conn__unref(p->acks[i].c);
	p->n_acks = 0;
	p->n_steps = p->n_epochs = p->n_ends = p->n_runs = 0;
	p->bytes = 0;
	store_batch__reset(&p->batch);
}

/* A failed commit stored nothing: memory goes back to what the store holds,
 * both batches are dropped, and every connection with messages in them is
 * closed so that its client resends after reconnecting. */
static void roll_back(struct ingest *ig)
{
	registry__roll_back(&ig->reg);
	for (int i = 0; i < 2; i++) {
		struct pending *p = &ig->slots[i];
		for (size_t j = 0; j < p->n_acks; j++) {
			struct conn *c = p->acks[j].c;
			c->inflight--;
			if (c->state != CONN_CLOSING && !c->shutting_down)
				conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0,
						 "store failure; nothing unacknowledged was stored, resend it");
		}
		release(p, -EIO);
	}
}

static void after_commit(struct ingest *ig, struct pending *p)
{
	metrics.commits++;
	metrics.steps_stored += p->n_steps;
	metrics.epochs_stored += p->n_epochs;
	metrics.runs_ended += p->n_ends;
	metrics.runs_started += p->n_runs;
	struct store_batch *b = &p->batch;
	registry__committed(&ig->reg, b);
	send_acks(p);
	for (size_t i = 0; i < b->n_run_updates; i++)
		if (b->run_updates[i].n_steps > 0)
			analyze__note(ig->srv->analyze, b->run_updates[i].run, b->run_updates[i].n_steps, false);
	for (size_t i = 0; i < b->n_ends; i++)
		analyze__note(ig->srv->analyze, b->ends[i].run, 0, true);
	if (b->n_pruned > 0) {
		registry__forget_runs(&ig->reg, b->pruned, b->n_pruned);
		log_info("retention: deleted %zu runs", b->n_pruned);
	}
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct ingest *ig = req->data;
	struct pending *p = ig->committing;
	ig->committing = NULL;
	if (status == 0 && ig->commit_rv == 0) {
		after_commit(ig, p);
		release(p, 0);
	} else {
		metrics.commit_failures++;
		log_error("commit of %zu messages failed: %s", p->n_acks,
			  status != 0 ? uv_strerror(status) : ig->commit_err);
		ig->committing = p;	/* roll_back releases both slots */
		roll_back(ig);
		ig->committing = NULL;
		ig->gen++;
	}
	/* Connections paused for backpressure may read again, unless the
	 * daemon is draining for shutdown: then nothing new is read. */
	for (struct conn *c = ig->srv->conns; c != NULL && !ig->srv->stopping; c = c->next)
		if (c->paused && c->inflight < (size_t)ig->cfg->max_inflight_per_conn && !batch_full(ig))
			conn__resume(c);
	ingest__kick(ig);
	if (ig->idle_cb != NULL && ingest__idle(ig))
		ig->idle_cb(ig->idle_arg);
}

void ingest__kick(struct ingest *ig)
{
	if (ig->committing != NULL)
		return;
	struct pending *p = ig->building;
	if (!has_work(ig))
		return;
	p->batch.prune_before = ig->prune_before;
	ig->prune_before = 0;
	ig->committing = p;
	ig->building = p == &ig->slots[0] ? &ig->slots[1] : &ig->slots[0];
	ig->gen++;
	int rv = uv_queue_work(ig->srv->loop, &ig->work, work_cb, after_work_cb);
	if (rv != 0) {
		log_error("cannot queue the commit: %s", uv_strerror(rv));
		ig->building = p;
		ig->committing = NULL;
	}
}
