#include <string.h>

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

int verb__status(struct ctl *ctl)
{
	Dnnfault__StatusRequest sr = DNNFAULT__STATUS_REQUEST__INIT;
	sr.runs = ctl->args;
	sr.n_runs = (size_t)ctl->n_args;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_STATUS;
	req.status = &sr;
	return rpc__call(ctl, &req, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS, status_cb, ctl);
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
