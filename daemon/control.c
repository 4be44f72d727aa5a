#include "control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "analyze.h"
#include "config.h"
#include "conn.h"
#include "dnnfault_config.h"
#include "frame.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "run_features.h"
#include "server.h"
#include "store.h"
#include "store_read.h"
#include "validate.h"

/* Export pages of about this many stored bytes go into one response. */
#define EXPORT_PAGE_BYTES (512 * 1024)

struct job {
	uv_work_t work;
	struct conn *c;
	Dnnfault__Envelope *req;	/* owned */
	struct store_read_opts opts;
	struct store_cursor cursor;	/* export */
	bool detail_sent;		/* export */
	/* label, reference: checked on a worker, stored by the writer, then
	 * answered with the run's summary from another worker. */
	int64_t run;			/* the resolved run, 0 until then */
	char *labels;			/* label: to store, then owned by ingest */
	char *reference;		/* reference: to store (NULL clears), then owned by ingest */
	bool checked, stored;
	/* Result, packed on the worker: one framed ControlResponse. */
	uint8_t *frame;
	size_t frame_len;
	bool more;
};

static uint64_t request_id(const struct job *j)
{
	return j->req->request->id;
}

/* Packs a response into j->frame. `set` fills the oneof. */
static void pack_response(struct job *j, Dnnfault__ControlResponse *resp)
{
	resp->id = request_id(j);
	resp->has_more = 1;
	resp->more = j->more;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RESPONSE;
	env.response = resp;
	if (frame__encode(&env, FRAME_MAX_LIMIT, &j->frame, &j->frame_len) != 0)
		j->frame = NULL;
}

static void pack_error(struct job *j, int code, const char *message)
{
	Dnnfault__Error err = DNNFAULT__ERROR__INIT;
	err.code = code;
	err.message = (char *)message;
	Dnnfault__ControlResponse resp = DNNFAULT__CONTROL_RESPONSE__INIT;
	resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR;
	resp.error = &err;
	j->more = false;
	pack_response(j, &resp);
}

/* Resolves the run of a label request and joins its causes. */
static int check_label(struct job *j, struct store_reader *reader, char *err, size_t len)
{
	const Dnnfault__LabelRequest *r = j->req->request->label;
	size_t n = 1;
	for (size_t i = 0; i < r->n_causes; i++) {
		/* "healthy" is no cause: no causes at all say it. */
		if (strcmp(r->causes[i], "healthy") == 0) {
			snprintf(err, len, "'healthy' must stand alone: it means no cause");
			return DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD;
		}
		if (!validate__is_cause(r->causes[i])) {
			snprintf(err, len, "unknown cause '%.64s'", r->causes[i]);
			return DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD;
		}
		n += strlen(r->causes[i]) + 1;
	}
	int code = store_read__resolve(reader, r->run, &j->run, err, len);
	if (code != 0)
		return code;
	if ((j->labels = calloc(1, n)) == NULL) {
		snprintf(err, len, "out of memory");
		return DNNFAULT__ERROR_CODE__ERR_INTERNAL;
	}
	for (size_t i = 0; i < r->n_causes; i++) {
		if (i > 0)
			strcat(j->labels, ",");
		strcat(j->labels, r->causes[i]);
	}
	return 0;
}

/* Resolves the run of a reference request and checks that the reference
 * names another run the store holds. */
static int check_reference(struct job *j, struct store_reader *reader, char *err, size_t len)
{
	const Dnnfault__ReferenceRequest *r = j->req->request->reference;
	const char *ref = r->reference;
	int code = validate__reference(ref, &j->c->srv->limits, err, len);
	if (code == 0)
		code = store_read__resolve(reader, r->run, &j->run, err, len);
	if (code != 0 || ref == NULL || *ref == '\0')
		return code;		/* nothing (left) to check: clears it */
	int64_t id;
	char why[512];
	code = store_read__resolve(reader, ref, &id, why, sizeof why);
	if (code == DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN) {
		snprintf(err, len, "reference run '%s' is not in the store", ref);
		return code;
	}
	if (code != 0) {
		snprintf(err, len, "reference run: %.400s", why);
		return code;
	}
	if (id == j->run) {
		snprintf(err, len, "run '%s' cannot be its own reference", r->run);
		return DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD;
	}
	if ((j->reference = strdup(ref)) == NULL) {
		snprintf(err, len, "out of memory");
		return DNNFAULT__ERROR_CODE__ERR_INTERNAL;
	}
	return 0;
}

/* Answers one request (or one export page) from a fresh read connection. */
static void work_cb(uv_work_t *req)
{
	struct job *j = req->data;
	const Dnnfault__ControlRequest *r = j->req->request;
	const char *db = j->c->srv->cfg->db;
	char err[512] = "";
	struct store_reader *reader;
	Dnnfault__ControlResponse resp = DNNFAULT__CONTROL_RESPONSE__INIT;
	ProtobufCMessage *result = NULL;
	int code;

	if (store_read__open(db, &reader, err, sizeof err) != 0) {
		pack_error(j, DNNFAULT__ERROR_CODE__ERR_INTERNAL, err);
		return;
	}
	j->more = false;
	switch (r->verb_case) {
	case DNNFAULT__CONTROL_REQUEST__VERB_STATUS:
	case DNNFAULT__CONTROL_REQUEST__VERB_RUNS: {
		bool status = r->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_STATUS;
		Dnnfault__StatusResponse *s = NULL;
		code = store_read__status(reader, status ? r->status->runs : NULL,
					  status ? r->status->n_runs : 0,
					  status ? 0 : r->runs->limit, &j->opts, &s, err, sizeof err);
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS;
		resp.status = s;
		result = s ? &s->base : NULL;
		break;
	}
	case DNNFAULT__CONTROL_REQUEST__VERB_LABEL:
	case DNNFAULT__CONTROL_REQUEST__VERB_REFERENCE: {
		/* First pass: resolve and check. Second pass, after the commit:
		 * answer with the run's summary. */
		Dnnfault__StatusResponse *s = NULL;
		if (j->stored)
			code = store_read__status_of(reader, j->run, &j->opts, &s, err, sizeof err);
		else if (r->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_LABEL)
			code = check_label(j, reader, err, sizeof err);
		else
			code = check_reference(j, reader, err, sizeof err);
		if (code == 0 && !j->stored) {
			j->checked = true;
			store_read__close(reader);
			return;		/* nothing to send yet */
		}
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS;
		resp.status = s;
		result = s ? &s->base : NULL;
		break;
	}
	case DNNFAULT__CONTROL_REQUEST__VERB_SHOW: {
		int64_t id;
		Dnnfault__RunDetail *d = NULL;
		code = store_read__resolve(reader, r->show->run, &id, err, sizeof err);
		if (code == 0)
			code = store_read__detail(reader, id, &j->opts, &d, err, sizeof err);
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_SHOW;
		resp.show = d;
		result = d ? &d->base : NULL;
		break;
	}
	case DNNFAULT__CONTROL_REQUEST__VERB_EXPORT: {
		Dnnfault__ExportChunk *x = NULL;
		code = 0;
		if (!j->detail_sent) {
			Dnnfault__RunDetail *d = NULL;
			code = store_read__resolve(reader, r->export->run, &j->cursor.run, err, sizeof err);
			if (code == 0)
				code = store_read__detail(reader, j->cursor.run, &j->opts, &d, err, sizeof err);
			if (code == 0 && (x = malloc(sizeof *x)) != NULL) {
				dnnfault__export_chunk__init(x);
				x->detail = d;
				j->cursor.rank = j->cursor.first_step = j->cursor.rowid = -1;
				j->more = true;
			} else if (d != NULL) {
				protobuf_c_message_free_unpacked(&d->base, NULL);
			}
		} else {
			size_t page = (size_t)j->c->srv->cfg->max_output_bytes / 4;
			code = store_read__export_page(reader, &j->cursor,
						       page < EXPORT_PAGE_BYTES ? page : EXPORT_PAGE_BYTES,
						       &x, err, sizeof err);
			j->more = code == 0 && !j->cursor.done;
		}
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_EXPORT;
		resp.export = x;
		result = x ? &x->base : NULL;
		break;
	}
	default:
		code = DNNFAULT__ERROR_CODE__ERR_UNKNOWN_MESSAGE;
		snprintf(err, sizeof err, "unknown control request");
		break;
	}
	store_read__close(reader);
	if (code != 0 || result == NULL)
		pack_error(j, code ? code : DNNFAULT__ERROR_CODE__ERR_INTERNAL, err[0] ? err : "out of memory");
	else
		pack_response(j, &resp);
	if (result != NULL)
		protobuf_c_message_free_unpacked(result, NULL);
}

static void finish(struct job *j)
{
	struct conn *c = j->c;
	free(j->labels);
	free(j->reference);
	frame__free(j->req);
	free(j);
	conn__control_done(c);
	conn__unref(c);
}

static void after_work_cb(uv_work_t *req, int status);

static void queue(struct job *j);

static void queue_cb(void *arg)
{
	struct job *j = arg;
	if (j->c->state == CONN_CLOSING)
		finish(j);
	else
		queue(j);
}

static void queue(struct job *j)
{
	j->work.data = j;
	j->opts.now = server__now();
	j->opts.stale_after = (double)j->c->srv->cfg->stale_after_s;
	if (uv_queue_work(j->c->srv->loop, &j->work, work_cb, after_work_cb) != 0) {
		conn__send_error(j->c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0,
				 "cannot queue the request");
		finish(j);
	}
}

static void stored_cb(void *arg, int rv)
{
	struct job *j = arg;
	if (rv != 0) {
		conn__send_error(j->c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, false, 0, 0,
				 "request %llu: the %s could not be stored", (unsigned long long)request_id(j),
				 j->req->request->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_LABEL
					 ? "labels" : "reference");
		finish(j);
		return;
	}
	j->stored = true;
	/* A new reference changes how the run is judged: judge it again now,
	 * even if it has ended. */
	if (j->req->request->verb_case != DNNFAULT__CONTROL_REQUEST__VERB_LABEL)
		analyze__request(j->c->srv->analyze, j->run);
	queue(j);
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct job *j = req->data;
	struct conn *c = j->c;
	if (status == 0 && j->checked && !j->stored) {
		/* Labels and references change the store: they go through the
		 * one writer. */
		j->checked = false;
		if (j->req->request->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_LABEL) {
			char *labels = j->labels;
			j->labels = NULL;
			ingest__set_labels(c->srv->ingest, j->run, labels, stored_cb, j);
		} else {
			char *reference = j->reference;
			j->reference = NULL;
			ingest__set_reference(c->srv->ingest, j->run, reference, stored_cb, j);
		}
		return;
	}
	if (status != 0 || j->frame == NULL) {
		free(j->frame);
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0,
				 "request %llu failed", (unsigned long long)request_id(j));
		finish(j);
		return;
	}
	conn__send_frame(c, j->frame, j->frame_len);
	j->frame = NULL;
	if (j->more && c->state != CONN_CLOSING) {
		/* Export pages are produced as the client consumes them. */
		j->detail_sent = true;
		conn__on_drain(c, queue_cb, j);
		return;
	}
	finish(j);
}

static void answer_now(struct conn *c, uint64_t id, Dnnfault__ControlResponse *resp)
{
	resp->id = id;
	resp->has_more = 1;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RESPONSE;
	env.response = resp;
	conn__send(c, &env);
}

struct counters {
	Dnnfault__Counter items[64];
	Dnnfault__Counter *ptrs[64];
	size_t n;
};

static void add_counter(const char *name, const char *help, uint64_t value, void *arg)
{
	(void)help;
	struct counters *k = arg;
	if (k->n == sizeof k->items / sizeof k->items[0])
		return;
	Dnnfault__Counter *x = &k->items[k->n];
	dnnfault__counter__init(x);
	x->name = (char *)name;
	x->value = value;
	k->ptrs[k->n++] = x;
}

/* What bundle is in use: answered at once from the loop's copy. */
static void answer_model(struct conn *c, uint64_t id)
{
	char path[CONFIG_STR_MAX + 64];
	const struct model *m = analyze__model(c->srv->analyze);
	Dnnfault__ModelResponse mr = DNNFAULT__MODEL_RESPONSE__INIT;
	mr.has_loaded = 1;
	mr.loaded = m != NULL;
	mr.path = m ? m->path : (char *)analyze__model_path(c->srv->analyze, path, sizeof path);
	mr.bundle = m ? m->text : NULL;
	mr.has_schema_version = 1;
	mr.schema_version = FEATURES_SCHEMA_VERSION;
	Dnnfault__ControlResponse resp = DNNFAULT__CONTROL_RESPONSE__INIT;
	resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_MODEL;
	resp.model = &mr;
	answer_now(c, id, &resp);
}

/* A reload reads and parses the bundle on a worker; the loop only swaps
 * the pointer. A bundle that fails to load leaves the old one in use. */
struct reload {
	uv_work_t work;
	struct conn *c;
	uint64_t id;
	struct model *m;
	int rv;
	char err[512];
};

static void reload_work_cb(uv_work_t *req)
{
	struct reload *r = req->data;
	r->rv = analyze__load_model(r->c->srv->analyze, &r->m, r->err, sizeof r->err);
}

static void reload_after_cb(uv_work_t *req, int status)
{
	struct reload *r = req->data;
	struct conn *c = r->c;
	if (status == 0 && r->rv == 0) {
		metrics.model_loads++;
		log_info("model reloaded from %s", r->m ? r->m->path : "(none)");
		analyze__set_model(c->srv->analyze, r->m);
		if (c->state != CONN_CLOSING)
			answer_model(c, r->id);
	} else {
		metrics.model_load_failures++;
		log_warning("model reload failed: %s", r->err);
		if (c->state != CONN_CLOSING) {
			Dnnfault__Error err = DNNFAULT__ERROR__INIT;
			err.code = DNNFAULT__ERROR_CODE__ERR_INTERNAL;
			err.message = r->err[0] ? r->err : "reload failed";
			Dnnfault__ControlResponse resp = DNNFAULT__CONTROL_RESPONSE__INIT;
			resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR;
			resp.error = &err;
			answer_now(c, r->id, &resp);
		}
	}
	free(r);
	conn__control_done(c);
	conn__unref(c);
}

void control__handle(struct conn *c, Dnnfault__Envelope *env)
{
	const Dnnfault__ControlRequest *r = env->request;
	Dnnfault__ControlResponse resp = DNNFAULT__CONTROL_RESPONSE__INIT;
	metrics.control_requests++;

	if (r->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_VERSION) {
		Dnnfault__VersionResponse v = DNNFAULT__VERSION_RESPONSE__INIT;
		v.server_version = DNNFAULT_VERSION;
		v.protocol_version = PROTOCOL_VERSION;
		v.has_schema_version = 1;
		v.schema_version = (uint32_t)store__schema_version();
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_VERSION;
		resp.version = &v;
		answer_now(c, r->id, &resp);
		frame__free(env);
		return;
	}
	if (r->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_STATS) {
		struct counters k = {.n = 0};
		metrics__each(&metrics, add_counter, &k);
		Dnnfault__StatsResponse s = DNNFAULT__STATS_RESPONSE__INIT;
		s.n_counters = k.n;
		s.counters = k.ptrs;
		resp.result_case = DNNFAULT__CONTROL_RESPONSE__RESULT_STATS;
		resp.stats = &s;
		answer_now(c, r->id, &resp);
		frame__free(env);
		return;
	}
	if (r->verb_case == DNNFAULT__CONTROL_REQUEST__VERB_MODEL) {
		uint64_t id = r->id;
		bool reload = r->model->has_reload && r->model->reload;
		frame__free(env);
		if (!reload) {
			answer_model(c, id);
			return;
		}
		struct reload *job = calloc(1, sizeof *job);
		if (job == NULL) {
			conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0, "out of memory");
			return;
		}
		job->c = c;
		job->id = id;
		job->work.data = job;
		c->busy = true;
		conn__ref(c);
		if (uv_queue_work(c->srv->loop, &job->work, reload_work_cb, reload_after_cb) != 0) {
			free(job);
			conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0, "cannot queue the reload");
			conn__control_done(c);
			conn__unref(c);
		}
		return;
	}
	struct job *j = calloc(1, sizeof *j);
	if (j == NULL) {
		frame__free(env);
		conn__send_error(c, DNNFAULT__ERROR_CODE__ERR_INTERNAL, true, 0, 0, "out of memory");
		return;
	}
	j->c = c;
	j->req = env;
	c->busy = true;
	conn__ref(c);
	queue(j);
}
