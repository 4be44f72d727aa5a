/* dnnfault_query_status(): one StatusRequest over a control connection,
 * answered with the run's JSON as dnnfaultctl --json status prints it. */
#include "dnnfault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "conn.h"
#include "summary_json.h"

#define QUERY_TOKEN_ENV "DNNFAULT_TOKEN"

/* An answer by the daemon: -ENOENT for "no such run", else -EPROTO. */
static int query__refusal(const Dnnfault__Error *e)
{
	return e->code == DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN ? -ENOENT : -EPROTO;
}

static int query__render(const Dnnfault__RunSummary *s, char **json_out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return -ENOMEM;
	struct json j;
	json__init(&j, f);
	summary_json__write(&j, s);
	bool ok = json__ok(&j);
	if (fclose(f) != 0 || !ok) {
		free(buf);
		return -ENOMEM;
	}
	*json_out = buf;
	return 0;
}

/* Sends the request and waits for its answer within what is left of the
 * timeout. */
static int query__ask(struct dnnfault_conn *c, const char *run, int timeout_ms,
		      int64_t start, char **json_out)
{
	char *runs[] = {(char *)(uintptr_t)run};
	Dnnfault__StatusRequest sr = DNNFAULT__STATUS_REQUEST__INIT;
	sr.runs = runs;
	sr.n_runs = 1;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.id = 1;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_STATUS;
	req.status = &sr;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_REQUEST;
	env.request = &req;
	int rv = conn__send_envelope(c, &env);
	if (rv < 0)
		return rv;
	for (;;) {
		Dnnfault__Envelope *in;
		rv = conn__recv(c, conn__remaining(timeout_ms, start), &in);
		if (rv == 0)
			return -ETIMEDOUT;
		if (rv < 0)
			return rv;
		const Dnnfault__ControlResponse *r = in->response;
		if (in->body_case == DNNFAULT__ENVELOPE__BODY_ERROR)
			rv = query__refusal(in->error);
		else if (in->body_case != DNNFAULT__ENVELOPE__BODY_RESPONSE || r->id != req.id)
			rv = 1;	/* not our answer */
		else if (r->result_case == DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR)
			rv = query__refusal(r->error);
		else if (r->result_case != DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS)
			rv = -EPROTO;
		else if (r->status->n_runs == 0)
			rv = -ENOENT;
		else
			rv = query__render(r->status->runs[0], json_out);
		frame__free(in);
		if (rv <= 0)
			return rv;
	}
}

int dnnfault_query_status(const char *address, const char *token, const char *run,
			  int timeout_ms, char **json_out)
{
	if (json_out == NULL)
		return -EINVAL;
	*json_out = NULL;
	if (run == NULL)
		return -EINVAL;
	struct address a;
	int rv = address == NULL ? address__client_default(&a) : address__parse(address, &a);
	if (rv < 0)
		return -EINVAL;
	if (token == NULL)
		token = getenv(QUERY_TOKEN_ENV);

	int64_t start = conn__now_ms();
	struct dnnfault_conn *c;
	rv = conn__open(&a, timeout_ms, &c);
	if (rv == 0)
		rv = conn__handshake(c, DNNFAULT__ROLE__ROLE_CONTROL, token,
				     conn__remaining(timeout_ms, start));
	/* -ENOENT is kept for "no such run": a missing socket is as
	 * unreachable as a refused connection. */
	if (rv == -ENOENT)
		rv = -ECONNREFUSED;
	if (rv == 0)
		rv = query__ask(c, run, timeout_ms, start, json_out);
	conn__free(c);
	return rv;
}
