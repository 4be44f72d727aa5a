/* Live analysis against a real daemon: a run whose loss turns NaN shows the
 * nan_loss symptom (with its first step) and the layer symptoms with their
 * layer; a clean run shows none; health stays unknown without a model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "frame.h"
#include "harness.h"

static struct daemon d;

static void stream_run_dropped(uint64_t stream, const char *run, int n_steps, int nan_from,
			       uint64_t dropped)
{
	int fd = harness__connect(&d);
	assert_true(fd >= 0);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	harness__run_start(&rs, stream, run, 2);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	float stats[32];
	uint64_t seq = 2;
	for (int i = 0; i < n_steps; i++, seq++) {
		for (int k = 0; k < 32; k++)
			stats[k] = 0.0f;
		for (int l = 0; l < 2; l++) {
			stats[l * 16 + DNNFAULT__LAYER_STAT__WEIGHT_NORM] = 1.0f + 0.01f * (float)i;
			stats[l * 16 + DNNFAULT__LAYER_STAT__GRAD_NORM] = 0.1f;
			stats[l * 16 + DNNFAULT__LAYER_STAT__GRAD_MAX_ABS] = 0.01f;
			stats[l * 16 + DNNFAULT__LAYER_STAT__UPDATE_RATIO] = 1e-3f;
		}
		if (nan_from >= 0 && i >= nan_from)
			stats[1 * 16 + DNNFAULT__LAYER_STAT__NAN_COUNT] = 4;
		Dnnfault__Step s;
		harness__step(&s, stream, seq, (uint64_t)i, stats, 2);
		s.loss = nan_from >= 0 && i >= nan_from ? NAN : 2.0 / (1.0 + i);
		s.has_dropped = dropped > 0;
		s.dropped = dropped;
		env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
		env.step = &s;
		harness__send(fd, &env);
	}
	Dnnfault__RunEnd end = DNNFAULT__RUN_END__INIT;
	end.seq = seq;
	end.stream = stream;
	end.status = DNNFAULT__END_STATUS__END_COMPLETED;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_END;
	env.run_end = &end;
	harness__send(fd, &env);
	for (;;) {
		Dnnfault__Envelope *e = harness__recv(fd, 5000);
		assert_non_null(e);
		bool done = e->body_case == DNNFAULT__ENVELOPE__BODY_ACK && e->ack->streams[0]->seq == seq;
		frame__free(e);
		if (done)
			break;
	}
	close(fd);
}

static void stream_run(uint64_t stream, const char *run, int n_steps, int nan_from)
{
	stream_run_dropped(stream, run, n_steps, nan_from, 0);
}

/* Polls `dnnfaultctl --json status RUN` until `needle` shows up (5 s). */
static void wait_for(const char *run, const char *needle, char *out, size_t len)
{
	char args[128];
	snprintf(args, sizeof args, "--json status %s", run);
	for (int i = 0; i < 250; i++) {
		assert_int_equal(harness__ctl(&d, out, len, args), 0);
		if (strstr(out, needle) != NULL)
			return;
		usleep(20000);
	}
	fail_msg("%s never showed %s; last: %s", run, needle, out);
}

/* Waits until no analysis has finished for 300 ms. */
static void analyses_settled(void)
{
	uint64_t last = harness__counter(&d, "analyses");
	for (int quiet = 0; quiet < 3;) {
		usleep(100000);
		uint64_t now = harness__counter(&d, "analyses");
		quiet = now == last ? quiet + 1 : 0;
		last = now;
	}
}

static void nan_run_shows_its_symptoms(void **state)
{
	(void)state;
	/* No model: symptoms alone, health unknown (tests/python/test_diagnosis.py
	 * covers the default bundle's causes). */
	const char *args[] = {"--analyze-every-steps", "20", "--model", "none", NULL};
	harness__start(&d, args);
	stream_run(0x5150, "nan-run", 120, 70);
	stream_run(0x5151, "clean-run", 120, -1);
	char out[8192];
	wait_for("nan-run", "{\"id\":\"nan_loss\",\"first_step\":70,\"layer\":null}", out, sizeof out);
	assert_non_null(strstr(out, "{\"id\":\"nan_tensor\",\"first_step\":70,\"layer\":\"fc2\"}"));
	assert_non_null(strstr(out, "\"health\":\"unknown\""));
	assert_non_null(strstr(out, "\"causes\":[]"));
	analyses_settled();
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status clean-run"), 0);
	assert_non_null(strstr(out, "\"state\":\"completed\""));
	assert_non_null(strstr(out, "\"symptoms\":[]"));
	/* ... because it was analysed and found clean, not because it was skipped. */
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), max(step) FROM diagnoses"
					    " JOIN runs ON runs.id = diagnoses.run WHERE runs.name = 'clean-run'",
					    -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_true(sqlite3_column_int(st, 0) >= 1);
	assert_int_equal(sqlite3_column_int(st, 1), 119);
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_true(harness__counter(&d, "analysis_failures") == 0);
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

/* A job that is resumed reports its rank 0 again as a new stream of the same
 * run: analysis reads both streams, drop counts add up, ranks count once. */
static void resumed_run(void **state)
{
	(void)state;
	const char *args[] = {"--analyze-every-steps", "20", NULL};
	harness__start(&d, args);
	stream_run_dropped(0x7170, "resumed", 120, -1, 10);
	stream_run_dropped(0x7171, "resumed", 120, 10, 20);
	char out[8192];
	wait_for("resumed", "{\"id\":\"nan_loss\",\"first_step\":10,\"layer\":null}", out, sizeof out);
	assert_non_null(strstr(out, "\"dropped\":30"));
	assert_non_null(strstr(out, "\"ranks\":1"));
	assert_non_null(strstr(out, "\"steps_stored\":240"));
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

/* The samples the last analysis of a run read, from the daemon's debug log
 * ("run N analysed at step S: K of T samples"), for T == stored. */
static long samples_read(uint64_t stored)
{
	FILE *f = fopen(d.log, "r");
	assert_non_null(f);
	char line[512], tail[64];
	long kept = -1;
	snprintf(tail, sizeof tail, " of %llu samples", (unsigned long long)stored);
	while (fgets(line, sizeof line, f) != NULL) {
		char *at = strstr(line, tail), *colon = strstr(line, "analysed at step");
		if (at != NULL && colon != NULL && (colon = strchr(colon, ':')) != NULL)
			kept = strtol(colon + 1, NULL, 10);
	}
	fclose(f);
	return kept;
}

/* A run longer than analyze_max_samples is analysed on a thinned view
 * (every 11th of its 1,000 samples here): at most 100 samples are read,
 * the NaN onset at step 537, which no 11th sample falls on, is still
 * reported at 537, and the analysis reaches the run's last step. */
static void long_run_is_analysed_thinned(void **state)
{
	(void)state;
	const char *args[] = {"--analyze-max-samples", "100", "--model", "none", "--log-level", "debug", NULL};
	harness__start(&d, args);
	stream_run(0x8180, "long-nan", 1000, 537);
	char out[8192];
	wait_for("long-nan", "\"diagnosed_step\":999", out, sizeof out);
	assert_non_null(strstr(out, "{\"id\":\"nan_loss\",\"first_step\":537,\"layer\":null}"));
	assert_non_null(strstr(out, "{\"id\":\"nan_tensor\",\"first_step\":537,\"layer\":\"fc2\"}"));
	assert_non_null(strstr(out, "\"steps_stored\":1000"));
	assert_true(harness__counter(&d, "analysis_failures") == 0);
	long kept = samples_read(1000);
	assert_true(kept > 50 && kept <= 100);
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

/* Sends a LabelRequest and returns the response (free with frame__free). */
static Dnnfault__ControlResponse *label(int fd, const char *run, char **causes, size_t n,
					Dnnfault__Envelope **env_out)
{
	static uint64_t id = 100;
	Dnnfault__LabelRequest l = DNNFAULT__LABEL_REQUEST__INIT;
	l.run = (char *)run;
	l.causes = causes;
	l.n_causes = n;
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	req.id = ++id;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_LABEL;
	req.label = &l;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_REQUEST;
	env.request = &req;
	harness__send(fd, &env);
	Dnnfault__Envelope *e = harness__recv(fd, 5000);
	assert_non_null(e);
	assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_RESPONSE);
	assert_int_equal(e->response->id, id);
	*env_out = e;
	return e->response;
}

static void labels_are_set_through_the_writer(void **state)
{
	(void)state;
	harness__start(&d, NULL);
	stream_run(0x6160, "to-label", 10, -1);
	int fd = harness__connect(&d);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_CONTROL);
	Dnnfault__Envelope *e;

	char *two[] = {"lr_high", "init"};
	Dnnfault__ControlResponse *r = label(fd, "to-label", two, 2, &e);
	assert_int_equal(r->result_case, DNNFAULT__CONTROL_RESPONSE__RESULT_STATUS);
	assert_int_equal(r->status->n_runs, 1);
	assert_true(r->status->runs[0]->labels_known);
	assert_int_equal(r->status->runs[0]->n_labels, 2);
	assert_string_equal(r->status->runs[0]->labels[0], "lr_high");
	assert_string_equal(r->status->runs[0]->labels[1], "init");
	frame__free(e);

	/* No causes: healthy. */
	r = label(fd, "to-label", NULL, 0, &e);
	assert_true(r->status->runs[0]->labels_known);
	assert_int_equal(r->status->runs[0]->n_labels, 0);
	frame__free(e);

	char *bad[] = {"lr_high", "gremlins"};
	r = label(fd, "to-label", bad, 2, &e);
	assert_int_equal(r->result_case, DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR);
	assert_int_equal(r->error->code, DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD);
	frame__free(e);
	r = label(fd, "no-such-run", two, 2, &e);
	assert_int_equal(r->result_case, DNNFAULT__CONTROL_RESPONSE__RESULT_ERROR);
	assert_int_equal(r->error->code, DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN);
	frame__free(e);
	close(fd);

	/* The same through dnnfaultctl, with its exit codes. */
	char cli[4096];
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "label to-label labels regularization"), 0);
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "--json status to-label"), 0);
	assert_non_null(strstr(cli, "\"labels\":[\"labels\",\"regularization\"]"));
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "label to-label gremlins 2>/dev/null"), 1);
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "label no-such-run healthy 2>/dev/null"), 4);
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "label to-label 2>/dev/null"), 2);
	assert_int_equal(harness__ctl(&d, cli, sizeof cli, "label to-label healthy"), 0);

	/* Stored: still there after a restart. */
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__start(&d, NULL);
	char out[4096];
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status to-label"), 0);
	assert_non_null(strstr(out, "\"labels\":[]"));
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(nan_run_shows_its_symptoms),
		cmocka_unit_test(labels_are_set_through_the_writer),
		cmocka_unit_test(resumed_run),
		cmocka_unit_test(long_run_is_analysed_thinned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
