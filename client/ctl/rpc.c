#include <string.h>

#include "ctl.h"

int rpc__connect(struct ctl *ctl)
{
	if (ctl->conn != NULL)
		return CTL_OK;
	struct dnnfault_conn *c;
	int rv = conn__open(&ctl->addr, ctl->timeout_ms, &c);
	if (rv < 0) {
		fprintf(stderr, "dnnfaultctl: cannot reach dnnfaultd at %s: %s\n",
			ctl->addr_text, c ? c->err : strerror(-rv));
		conn__free(c);
		return CTL_UNREACHABLE;
	}
	rv = conn__handshake(c, DNNFAULT__ROLE__ROLE_CONTROL, ctl->token, ctl->timeout_ms);
	if (rv < 0) {
		/* A daemon that accepts but never answers, or hangs up at once,
		 * is as good as unreachable; a refusal is an answer. */
		bool answered = conn__refused(rv);
		if (answered)
			fprintf(stderr, "dnnfaultctl: %s\n", c->err);
		else
			fprintf(stderr, "dnnfaultctl: cannot reach dnnfaultd at %s: %s\n",
				ctl->addr_text, c->err);
		conn__free(c);
		return answered ? CTL_ERROR : CTL_UNREACHABLE;
	}
	ctl->conn = c;
	return CTL_OK;
}

void rpc__close(struct ctl *ctl)
{
	conn__free(ctl->conn);
	ctl->conn = NULL;
}

static int rpc__error(const Dnnfault__Error *e)
{
	fprintf(stderr, "dnnfaultctl: %s\n", e->message);
	return e->code == DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN ? CTL_NO_SUCH_RUN : CTL_ERROR;
}

/* Returns CTL_OK with *done set after the last response, or an exit code. */
static int rpc__one(struct ctl *ctl, const Dnnfault__Envelope *env, uint64_t id,
		    Dnnfault__ControlResponse__ResultCase expect, rpc_cb cb, void *arg,
		    bool *done)
{
	if (env->body_case == DNNFAULT__ENVELOPE__BODY_ERROR)
		return rpc__error(env->error);
	if (env->body_case != DNNFAULT__ENVELOPE__BODY_RESPONSE)
		return CTL_OK;	/* not an answer to us; a newer daemon may send more */
	const Dnnfault__ControlResponse *r = env->response;
	if (r->id != id)
		return CTL_OK;
	*done = !(r->has_more && r->more);
	if (r->result_case == DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR)
		return rpc__error(r->error);
	if (r->result_case != expect) {
		fprintf(stderr, "dnnfaultctl: dnnfaultd at %s sent an unexpected answer\n",
			ctl->addr_text);
		return CTL_ERROR;
	}
	return cb(r, arg);
}

int rpc__call(struct ctl *ctl, Dnnfault__ControlRequest *req,
	      Dnnfault__ControlResponse__ResultCase expect, rpc_cb cb, void *arg)
{
	int rv = rpc__connect(ctl);
	if (rv != CTL_OK)
		return rv;
	req->id = ctl->next_id++;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_REQUEST;
	env.request = req;
	if (conn__send_envelope(ctl->conn, &env) < 0) {
		fprintf(stderr, "dnnfaultctl: %s\n", ctl->conn->err);
		return CTL_ERROR;
	}

	bool done = false;
	while (!done) {
		Dnnfault__Envelope *in;
		rv = conn__recv(ctl->conn, ctl->timeout_ms, &in);
		if (rv == 0) {
			fprintf(stderr, "dnnfaultctl: dnnfaultd at %s did not answer within %d ms\n",
				ctl->addr_text, ctl->timeout_ms);
			return CTL_ERROR;
		}
		if (rv < 0) {
			fprintf(stderr, "dnnfaultctl: %s\n", ctl->conn->err);
			return CTL_ERROR;
		}
		rv = rpc__one(ctl, in, req->id, expect, cb, arg, &done);
		frame__free(in);
		if (rv != CTL_OK)
			return rv;
	}
	return CTL_OK;
}
