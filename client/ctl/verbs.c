#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "dnnfault_config.h"

static int status_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	const struct ctl *ctl = arg;
	if (ctl->json)
		render_json__status(r->status, stdout);
	else
		render__status(r->status, stdout);
	return CTL_OK;
}

/* Asks for the status of the runs the operands name (all when none) and
 * hands the answer to cb. */
static int call_status(struct ctl *ctl, rpc_cb cb, void *arg)
{
	Dnnfault__StatusRequest sr = DNNFAULT__STATUS_REQUEST__INIT;
	sr.runs = ctl->args;
	sr.n_runs = (size_t)ctl->n_args;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_STATUS;
	req.status = &sr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS, cb, arg);
}

int verb__status(struct ctl *ctl)
{
	return call_status(ctl, status_cb, ctl);
}

static int runs_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	const struct ctl *ctl = arg;
	if (ctl->json)
		render_json__status(r->status, stdout);
	else
		render__runs(r->status, stdout);
	return CTL_OK;
}

int verb__runs(struct ctl *ctl)
{
	Dnnfault__RunsRequest rr = DNNFAULT__RUNS_REQUEST__INIT;
	rr.has_limit = ctl->limit != 0;
	rr.limit = ctl->limit;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_RUNS;
	req.runs = &rr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS, runs_cb, ctl);
}

static int show_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	const struct ctl *ctl = arg;
	if (ctl->json)
		render_json__show(r->show, stdout);
	else
		render__show(r->show, stdout);
	return CTL_OK;
}

int verb__show(struct ctl *ctl)
{
	Dnnfault__ShowRequest sr = DNNFAULT__SHOW_REQUEST__INIT;
	sr.run = ctl->args[0];
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_SHOW;
	req.show = &sr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_SHOW, show_cb, ctl);
}

int verb__export(struct ctl *ctl)
{
	return export__run(ctl, ctl->args[0]);
}

struct version_answer {
	char server[128];
	uint32_t protocol, schema;
	bool has_schema;
};

static int version_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	struct version_answer *v = arg;
	const Dnnfault__VersionResponse *vr = r->version;
	snprintf(v->server, sizeof v->server, "%s", vr->server_version);
	v->protocol = vr->protocol_version;
	v->has_schema = vr->has_schema_version;
	v->schema = vr->schema_version;
	return CTL_OK;
}

/* The client's line comes first and always, so that an unreachable daemon
 * still tells which client is installed. */
int verb__version(struct ctl *ctl)
{
	if (!ctl->json) {
		printf("dnnfaultctl %s\n", DNNFAULT_VERSION);
		fflush(stdout);
	}
	Dnnfault__VersionRequest vr = DNNFAULT__VERSION_REQUEST__INIT;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_VERSION;
	req.version = &vr;
	struct version_answer v = {0};
	int rv = rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_VERSION,
			   version_cb, &v);
	bool ok = rv == CTL_OK;
	if (!ctl->json) {
		if (ok && v.has_schema)
			printf("dnnfaultd %s (protocol %u, schema %u)\n", v.server,
			       v.protocol, v.schema);
		else if (ok)
			printf("dnnfaultd %s (protocol %u)\n", v.server, v.protocol);
		return rv;
	}
	struct json j;
	json__init(&j, stdout);
	json__begin_object(&j);
	json__kstring(&j, "client", DNNFAULT_VERSION);
	json__kstring(&j, "server", ok ? v.server : NULL);
	json__key(&j, "protocol");
	if (ok)
		json__uint(&j, v.protocol);
	else
		json__null(&j);
	json__key(&j, "schema");
	if (ok && v.has_schema)
		json__uint(&j, v.schema);
	else
		json__null(&j);
	json__end_object(&j);
	fputc('\n', stdout);
	return rv;
}

static int stats_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	const struct ctl *ctl = arg;
	if (ctl->json)
		render_json__stats(r->stats, stdout);
	else
		render__stats(r->stats, stdout);
	return CTL_OK;
}

int verb__stats(struct ctl *ctl)
{
	Dnnfault__StatsRequest sr = DNNFAULT__STATS_REQUEST__INIT;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_STATS;
	req.stats = &sr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATS, stats_cb, ctl);
}

/* `label RUN healthy` stores "no cause"; the daemon checks cause names. */
int verb__label(struct ctl *ctl)
{
	Dnnfault__LabelRequest lr = DNNFAULT__LABEL_REQUEST__INIT;
	lr.run = ctl->args[0];
	bool healthy = ctl->n_args == 2 && strcmp(ctl->args[1], "healthy") == 0;
	lr.causes = healthy ? NULL : ctl->args + 1;
	lr.n_causes = healthy ? 0 : (size_t)ctl->n_args - 1;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_LABEL;
	req.label = &lr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS, status_cb, ctl);
}

/* `reference RUN REF` names the run's reference run, `reference RUN
 * --clear` clears it; the daemon checks that REF is another stored run. */
int verb__reference(struct ctl *ctl)
{
	Dnnfault__ReferenceRequest rr = DNNFAULT__REFERENCE_REQUEST__INIT;
	rr.run = ctl->args[0];
	rr.reference = ctl->clear ? NULL : ctl->args[1];
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_REFERENCE;
	req.reference = &rr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS, status_cb, ctl);
}

static int model_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	const struct ctl *ctl = arg;
	if (ctl->json)
		render_json__model(r->model, stdout);
	else
		render__model(r->model, stdout);
	return CTL_OK;
}

/* `model reload` waits for the daemon to read the bundle again; a bundle
 * that fails to load comes back as an error, and the old one stays. */
int verb__model(struct ctl *ctl)
{
	Dnnfault__ModelRequest mr = DNNFAULT__MODEL_REQUEST__INIT;
	mr.has_reload = 1;
	mr.reload = ctl->n_args > 0 && strcmp(ctl->args[0], "reload") == 0;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_MODEL;
	req.model = &mr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_MODEL, model_cb, ctl);
}

/* What watch last printed about a run, sorted by run id. */
struct watch_run {
	char *id;
	char *key;	/* render__watch_key */
};

struct watch {
	const struct ctl *ctl;
	struct watch_run *runs;
	size_t n, cap;
	double now;	/* of the poll, unix seconds */
};

static volatile sig_atomic_t watch_stop;

static void watch__on_signal(int sig)
{
	(void)sig;
	watch_stop = 1;
}

/* The slot of run `id`: where it is, or where it belongs (*found false). */
static size_t watch__find(const struct watch *w, const char *id, bool *found)
{
	size_t lo = 0, hi = w->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(w->runs[mid].id, id);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* True when s differs from what was last printed about it, which it then
 * becomes. */
static bool watch__changed(struct watch *w, const Dnnfault__RunSummary *s)
{
	char *key = render__watch_key(s);
	bool found;
	size_t i = watch__find(w, s->id, &found);
	if (found && strcmp(w->runs[i].key, key) == 0) {
		free(key);
		return false;
	}
	if (found) {
		free(w->runs[i].key);
		w->runs[i].key = key;
		return true;
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct watch_run *runs = realloc(w->runs, cap * sizeof *runs);
		if (runs == NULL)
			abort();
		w->runs = runs;
		w->cap = cap;
	}
	memmove(w->runs + i + 1, w->runs + i, (w->n - i) * sizeof *w->runs);
	w->runs[i] = (struct watch_run){.id = strdup(s->id), .key = key};
	if (w->runs[i].id == NULL)
		abort();
	w->n++;
	return true;
}

static int watch_cb(const Dnnfault__ControlResponse *r, void *arg)
{
	struct watch *w = arg;
	for (size_t i = 0; i < r->status->n_runs; i++) {
		const Dnnfault__RunSummary *s = r->status->runs[i];
		if (!watch__changed(w, s))
			continue;
		if (w->ctl->json)
			render_json__watch_line(s, w->now, stdout);
		else
			render__watch_line(s, w->now, stdout);
	}
	return CTL_OK;
}

static int64_t watch__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, or less when a signal arrives. Returns false when stdout's
 * reader went away meanwhile: watch writes only on a change, so EPIPE
 * alone could take forever. Only a pipe or socket says so (POLLERR,
 * POLLHUP, which poll reports even with no events asked). */
static bool watch__sleep(uint32_t ms, bool stdout_pipe)
{
	struct pollfd p = {.fd = STDOUT_FILENO};
	int64_t end = watch__now_ms() + ms;
	for (int64_t left = ms; !watch_stop && left > 0; left = end - watch__now_ms()) {
		int rv = poll(&p, stdout_pipe ? 1 : 0, (int)left);
		if (rv > 0)
			return false;
		if (rv == 0 || errno != EINTR)
			break;
	}
	return true;
}

/* Polls status every interval and prints what changed, until SIGINT or
 * SIGTERM, or after ctl->count polls. The first signal lets the poll in
 * progress finish (a call is bounded by --timeout); SA_RESETHAND lets a
 * second one end the process at once. */
int verb__watch(struct ctl *ctl)
{
	struct sigaction sa = {.sa_handler = watch__on_signal, .sa_flags = SA_RESETHAND};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct stat st;
	bool stdout_pipe = fstat(STDOUT_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
	struct watch w = {.ctl = ctl};
	int rv = CTL_OK;
	for (uint32_t polls = 0; !watch_stop && (ctl->count == 0 || polls < ctl->count); polls++) {
		/* A reader gone ends it as a failed write does: quietly, exit 1. */
		if (polls > 0 && !watch__sleep(ctl->interval_ms, stdout_pipe)) {
			rv = CTL_ERROR;
			break;
		}
		if (watch_stop)
			break;
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		w.now = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
		rv = call_status(ctl, watch_cb, &w);
		/* Lines go out as they come; a reader that went away ends it. */
		if (rv != CTL_OK || fflush(stdout) != 0)
			break;
	}
	for (size_t i = 0; i < w.n; i++) {
		free(w.runs[i].id);
		free(w.runs[i].key);
	}
	free(w.runs);
	return rv;
}
