/* The Prometheus endpoint's pure parts: the text it renders
 * (exposition.h) and how it reads a request head (metrics_http.h). The
 * endpoint itself, served by a real daemon and scraped by a real
 * Prometheus, is tested in tests/python/test_metrics.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exposition.h"
#include "metrics_http.h"

/* One run's summary, built on the stack. */
struct run {
	Dnnfault__RunSummary s;
	Dnnfault__Symptom y[3], *yp[3];
	Dnnfault__Cause c[2], *cp[2];
};

static void run_init(struct run *r, const char *id, const char *name, const char *state, const char *health)
{
	memset(r, 0, sizeof *r);
	dnnfault__run_summary__init(&r->s);
	r->s.id = (char *)id;
	r->s.name = (char *)name;
	r->s.state = (char *)state;
	r->s.health = (char *)health;
	r->s.has_step = 1;
	r->s.step = 435;
}

static void add_cause(struct run *r, const char *id, double probability)
{
	Dnnfault__Cause *c = &r->c[r->s.n_causes];
	dnnfault__cause__init(c);
	c->id = (char *)id;
	c->has_probability = 1;
	c->probability = probability;
	r->cp[r->s.n_causes++] = c;
	r->s.causes = r->cp;
}

static void add_symptom(struct run *r, const char *id, const char *layer, uint64_t first_step)
{
	Dnnfault__Symptom *y = &r->y[r->s.n_symptoms];
	dnnfault__symptom__init(y);
	y->id = (char *)id;
	y->layer = (char *)layer;
	y->has_first_step = 1;
	y->first_step = first_step;
	r->yp[r->s.n_symptoms++] = y;
	r->s.symptoms = r->yp;
}

static char *render(const Dnnfault__RunSummary **runs, size_t n, const struct metrics *m)
{
	Dnnfault__StatusResponse resp = DNNFAULT__STATUS_RESPONSE__INIT;
	resp.n_runs = n;
	resp.runs = (Dnnfault__RunSummary **)runs;
	struct exposition e = {.version = "9.9", .started = 1.5e9, .model_loaded = true,
			       .counters = m, .runs_stored = 7, .runs = n ? &resp : NULL};
	size_t len = 0;
	char *text = exposition__render(&e, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static void has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	fail_msg("no line '%s' in:\n%s", line, text);
}

static size_t count(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void counters_are_named_and_typed(void **state)
{
	(void)state;
	struct metrics m = {0};
	m.steps_stored = 1234;
	m.connections_open = 3;
	m.analysis_micros = 2500000;
	m.errors_limit = 2;
	char *text = render(NULL, 0, &m);
	has_line(text, "# TYPE dnnfault_steps_stored_total counter");
	has_line(text, "dnnfault_steps_stored_total 1234");
	has_line(text, "# TYPE dnnfault_connections_open gauge");
	has_line(text, "dnnfault_connections_open 3");
	has_line(text, "dnnfault_analysis_seconds_total 2.5");
	/* Error replies: one family, one series per error. */
	assert_int_equal(count(text, "# TYPE dnnfault_errors_total counter"), 1);
	has_line(text, "dnnfault_errors_total{error=\"limit\"} 2");
	has_line(text, "dnnfault_errors_total{error=\"bad_frame\"} 0");
	has_line(text, "dnnfault_build_info{version=\"9.9\"} 1");
	has_line(text, "dnnfault_model_loaded 1");
	has_line(text, "dnnfault_runs_stored 7");
	has_line(text, "dnnfault_runs_exposed 0");
	/* Every family says what it is: as many HELP as TYPE lines. */
	assert_int_equal(count(text, "# HELP "), count(text, "# TYPE "));
	free(text);
}

static void a_run_is_a_set_of_series(void **state)
{
	(void)state;
	struct run r;
	run_init(&r, "84ba", "digits", "completed", "faulty");
	r.s.has_fault_probability = 1;
	r.s.fault_probability = 0.98;
	add_cause(&r, "lr_high", 0.75);
	add_symptom(&r, "nan_loss", NULL, 5);
	add_symptom(&r, "dead_relu", "fc.2", 130);
	const Dnnfault__RunSummary *runs[] = {&r.s};
	char *text = render(runs, 1, NULL);
	/* State sets: every value, 1 for the run's own. */
	has_line(text, "dnnfault_run_state{run=\"digits\",run_id=\"84ba\",state=\"completed\"} 1");
	has_line(text, "dnnfault_run_state{run=\"digits\",run_id=\"84ba\",state=\"running\"} 0");
	has_line(text, "dnnfault_run_health{run=\"digits\",run_id=\"84ba\",health=\"faulty\"} 1");
	has_line(text, "dnnfault_run_health{run=\"digits\",run_id=\"84ba\",health=\"healthy\"} 0");
	assert_int_equal(count(text, "dnnfault_run_health{"), 4);
	assert_int_equal(count(text, "dnnfault_run_state{"), 6);
	has_line(text, "dnnfault_run_step{run=\"digits\",run_id=\"84ba\"} 435");
	has_line(text, "dnnfault_run_fault_probability{run=\"digits\",run_id=\"84ba\"} 0.97999999999999998");
	has_line(text, "dnnfault_run_cause_probability{run=\"digits\",run_id=\"84ba\",cause=\"lr_high\"} 0.75");
	has_line(text, "dnnfault_run_symptom_first_step{run=\"digits\",run_id=\"84ba\",symptom=\"nan_loss\",layer=\"\"} 5");
	has_line(text, "dnnfault_run_symptom_first_step{run=\"digits\",run_id=\"84ba\",symptom=\"dead_relu\",layer=\"fc.2\"} 130");
	/* What the run does not have is left out, not sent as 0. */
	assert_int_equal(count(text, "dnnfault_run_diagnosed_step{"), 0);
	assert_int_equal(count(text, "dnnfault_run_dropped_steps{"), 0);
	has_line(text, "dnnfault_runs_exposed 1");
	free(text);
}

static void label_values_are_escaped_and_utf8(void **state)
{
	(void)state;
	struct run a, b;
	/* A quote, a backslash, a newline, a valid "é" and a lone byte 0xff. */
	run_init(&a, "id-1", "say \"hi\"\\\nnow \xc3\xa9 \xff!", "running", "healthy");
	run_init(&b, "id-2", "", "crashed", NULL);	/* no name: the id; no health */
	const Dnnfault__RunSummary *runs[] = {&a.s, &b.s};
	char *text = render(runs, 2, NULL);
	has_line(text, "dnnfault_run_step{run=\"say \\\"hi\\\"\\\\\\nnow \xc3\xa9 \xef\xbf\xbd!\",run_id=\"id-1\"} 435");
	has_line(text, "dnnfault_run_step{run=\"id-2\",run_id=\"id-2\"} 435");
	/* A run without health has every value 0, "unknown" included. */
	has_line(text, "dnnfault_run_health{run=\"id-2\",run_id=\"id-2\",health=\"unknown\"} 0");
	/* Nothing but the line breaks between lines. */
	assert_null(strstr(text, "\n\n"));
	free(text);
}

static void repeated_series_are_sent_once(void **state)
{
	(void)state;
	struct run r;
	run_init(&r, "r", "r", "running", "suspect");
	add_symptom(&r, "update_ratio", "fc1", 10);
	add_symptom(&r, "update_ratio", "fc2", 20);
	add_symptom(&r, "update_ratio", "fc1", 30);
	add_cause(&r, "lr_low", 0.5);
	add_cause(&r, "lr_low", 0.25);
	const Dnnfault__RunSummary *runs[] = {&r.s};
	char *text = render(runs, 1, NULL);
	assert_int_equal(count(text, "symptom=\"update_ratio\",layer=\"fc1\"}"), 1);
	has_line(text, "dnnfault_run_symptom_first_step{run=\"r\",run_id=\"r\",symptom=\"update_ratio\",layer=\"fc1\"} 10");
	assert_int_equal(count(text, "symptom=\"update_ratio\",layer=\"fc2\"}"), 1);
	assert_int_equal(count(text, "cause=\"lr_low\"}"), 1);
	has_line(text, "dnnfault_run_cause_probability{run=\"r\",run_id=\"r\",cause=\"lr_low\"} 0.5");
	free(text);
}

static void non_finite_values_use_the_formats_words(void **state)
{
	(void)state;
	struct run r;
	run_init(&r, "r", "r", "running", "unknown");
	r.s.has_fault_probability = 1;
	r.s.fault_probability = NAN;
	add_cause(&r, "data", INFINITY);
	const Dnnfault__RunSummary *runs[] = {&r.s};
	char *text = render(runs, 1, NULL);
	has_line(text, "dnnfault_run_fault_probability{run=\"r\",run_id=\"r\"} NaN");
	has_line(text, "dnnfault_run_cause_probability{run=\"r\",run_id=\"r\",cause=\"data\"} +Inf");
	free(text);
}

static int parse(const char *head, const char *token)
{
	return metrics_http__parse(head, strlen(head), token).status;
}

static void requests_are_read_strictly(void **state)
{
	(void)state;
	/* Incomplete: wait for more. */
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", NULL), 0);
	assert_int_equal(parse("", NULL), 0);
	/* What Prometheus sends, and a bare LF client. */
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x:9464\r\nAccept: text/plain\r\n\r\n", NULL), 200);
	assert_int_equal(parse("GET /metrics?name[]=x HTTP/1.0\n\n", NULL), 200);
	const char *head = "HEAD /metrics HTTP/1.1\r\n\r\n";
	struct metrics_http_request r = metrics_http__parse(head, strlen(head), NULL);
	assert_int_equal(r.status, 200);
	assert_true(r.head);
	/* A HEAD gets no body, whatever the answer. */
	const char *bad_head = "HEAD /metrics HTTP/1.1\r\nno colon\r\n\r\n";
	r = metrics_http__parse(bad_head, strlen(bad_head), NULL);
	assert_int_equal(r.status, 400);
	assert_true(r.head);
	assert_int_equal(parse("POST /metrics HTTP/1.1\r\n\r\n", NULL), 405);
	assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", NULL), 404);
	assert_int_equal(parse("GET /metricsx HTTP/1.1\r\n\r\n", NULL), 404);
	assert_int_equal(parse("GET /metrics HTTP/2.0\r\n\r\n", NULL), 400);
	assert_int_equal(parse("GET /metrics\r\n\r\n", NULL), 400);
	assert_int_equal(parse("GET  /metrics HTTP/1.1\r\n\r\n", NULL), 400);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", NULL), 400);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", NULL), 400);
	static const char nul[] = "GET /metrics HTTP/1.1\r\nA: \0\r\n\r\n";
	assert_int_equal(metrics_http__parse(nul, sizeof nul - 1, NULL).status, 400);
	/* A head that does not end within the limit. */
	char *big = malloc(METRICS_HTTP_HEAD_MAX);
	memset(big, 'a', METRICS_HTTP_HEAD_MAX);
	assert_int_equal(metrics_http__parse(big, METRICS_HTTP_HEAD_MAX - 1, NULL).status, 0);
	assert_int_equal(metrics_http__parse(big, METRICS_HTTP_HEAD_MAX, NULL).status, 431);
	free(big);
}

static void a_token_is_asked_for_when_set(void **state)
{
	(void)state;
	const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(parse(get, ""), 200);
	assert_int_equal(parse(get, "s3cret"), 401);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n", "s3cret"), 200);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nauthorization:   bearer s3cret  \r\n\r\n", "s3cret"), 200);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n", "s3cret"), 401);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3crett\r\n\r\n", "s3cret"), 401);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n", "s3cret"), 401);
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n", "s3cret"), 401);
	/* Where to find the metrics is no secret; the method neither. */
	assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", "s3cret"), 404);
	assert_int_equal(parse("PUT /metrics HTTP/1.1\r\n\r\n", "s3cret"), 405);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(counters_are_named_and_typed),
		cmocka_unit_test(a_run_is_a_set_of_series),
		cmocka_unit_test(label_values_are_escaped_and_utf8),
		cmocka_unit_test(repeated_series_are_sent_once),
		cmocka_unit_test(non_finite_values_use_the_formats_words),
		cmocka_unit_test(requests_are_read_strictly),
		cmocka_unit_test(a_token_is_asked_for_when_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
