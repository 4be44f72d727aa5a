/* Bad input against a real daemon, table-driven: each case gets its error
 * reply (or a closed connection), a counter moves, and the daemon keeps
 * serving a well-behaved client throughout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dnnfault.h"
#include "frame.h"
#include "harness.h"

#define E(x) DNNFAULT__ERROR_CODE__ERR_##x

static struct daemon d;

/* A trainer connection with a started stream, used by several cases. */
static int trainer_with_stream(uint64_t stream, const char *run_id, size_t n_layers)
{
	int fd = harness__connect(&d);
	assert_true(fd >= 0);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	harness__run_start(&rs, stream, run_id, n_layers);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	Dnnfault__Envelope *ack = harness__recv(fd, 5000);
	assert_non_null(ack);
	assert_int_equal(ack->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
	assert_int_equal(ack->ack->streams[0]->stream, stream);
	assert_int_equal(ack->ack->streams[0]->seq, 1);
	frame__free(ack);
	return fd;
}

static void send_step(int fd, uint64_t stream, uint64_t seq, uint64_t step, float *stats, size_t layers)
{
	Dnnfault__Step s;
	harness__step(&s, stream, seq, step, stats, layers);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &s;
	harness__send(fd, &env);
}

static void c_truncated(int fd)
{
	uint8_t buf[14] = {0, 0, 0, 100};
	harness__send_bytes(fd, buf, sizeof buf);
	close(fd);
	/* No reply can reach a peer that left; the daemon counts it. */
	for (int i = 0; i < 100 && harness__counter(&d, "errors_bad_frame") == 0; i++)
		usleep(20000);
}

static void c_oversized(int fd)
{
	uint8_t buf[4] = {0xff, 0xff, 0xff, 0xff};
	harness__send_bytes(fd, buf, sizeof buf);
	harness__expect_error(fd, E(FRAME_TOO_LARGE), true);
	close(fd);
}

static void c_zero_length(int fd)
{
	uint8_t buf[4] = {0};
	harness__send_bytes(fd, buf, sizeof buf);
	harness__expect_error(fd, E(BAD_FRAME), true);
	close(fd);
}

static void c_random_bytes(int fd)
{
	uint8_t buf[4096];
	srand(7);
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)rand();
	buf[0] = 0x00;	/* a plausible length so the payload is parsed */
	buf[1] = 0x00;
	buf[2] = 0x0f;
	buf[3] = 0xfc;
	harness__send_bytes(fd, buf, sizeof buf);
	harness__expect_error(fd, E(BAD_MESSAGE), true);
	close(fd);
}

static void c_garbage_protobuf(int fd)
{
	/* A whole frame whose payload claims a 100-byte field it does not have. */
	uint8_t buf[] = {0, 0, 0, 4, 0x0a, 0x64, 0x08, 0x01};
	harness__send_bytes(fd, buf, sizeof buf);
	harness__expect_error(fd, E(BAD_MESSAGE), true);
	close(fd);
}

static void c_wrong_version(int fd)
{
	harness__send_hello(fd, DNNFAULT__ROLE__ROLE_TRAINER, 99);
	harness__expect_error(fd, E(VERSION), true);
	close(fd);
}

static void c_bad_role(int fd)
{
	harness__send_hello(fd, DNNFAULT__ROLE__ROLE_UNSPECIFIED, PROTOCOL_VERSION);
	harness__expect_error(fd, E(ROLE), true);
	close(fd);
}

static void c_step_before_handshake(int fd)
{
	float stats[16] = {0};
	send_step(fd, 5, 1, 1, stats, 1);
	harness__expect_error(fd, E(HANDSHAKE_REQUIRED), true);
	close(fd);
}

static void c_unknown_run(int fd)
{
	float stats[16] = {0};
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	send_step(fd, 0x1234567, 2, 1, stats, 1);
	harness__expect_error(fd, E(UNKNOWN_STREAM), false);
	close(fd);
}

static void c_unknown_type(int fd)
{
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	/* Envelope field 99 (varint), a type from some future version. */
	uint8_t buf[] = {0, 0, 0, 3, 0x98, 0x06, 0x01};
	harness__send_bytes(fd, buf, sizeof buf);
	harness__expect_error(fd, E(UNKNOWN_MESSAGE), false);
	/* The connection stays usable. */
	int ok = trainer_with_stream(0x5151, "after-unknown", 1);
	close(ok);
	close(fd);
}

static void c_absurd_layers(int fd)
{
	close(fd);
	fd = trainer_with_stream(0x77, "absurd-layers", 2);
	/* 10^6 layers in one step: larger than max_frame_bytes, refused from
	 * the length prefix before anything is buffered. */
	uint8_t hdr[4];
	frame__put_len(hdr, 64u * 1000000u + 16u);
	harness__send_bytes(fd, hdr, sizeof hdr);
	harness__expect_error(fd, E(FRAME_TOO_LARGE), true);
	close(fd);
	/* A count that fits a frame but breaks the layout or the declaration. */
	fd = trainer_with_stream(0x78, "absurd-layers-2", 2);
	float stats[16 * 3] = {0};
	Dnnfault__Step s;
	harness__step(&s, 0x78, 2, 1, stats, 2);
	s.n_layer_stats = 33;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &s;
	harness__send(fd, &env);
	harness__expect_error(fd, E(INVALID_FIELD), false);
	send_step(fd, 0x78, 3, 2, stats, 3);
	harness__expect_error(fd, E(INVALID_FIELD), false);
	/* A RunStart declaring more layers than max_layers. */
	Dnnfault__RunStart rs;
	harness__run_start(&rs, 0x79, "too-many-layers", 2);
	rs.n_layers = 5000;
	Dnnfault__Layer *many[5000];
	for (int i = 0; i < 5000; i++)
		many[i] = rs.layers[i % 2];
	rs.layers = many;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	harness__expect_error(fd, E(LIMIT), false);
	close(fd);
}

static void c_long_names(int fd)
{
	static char name[10000];
	memset(name, 'n', sizeof name - 1);
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__RunStart rs;
	harness__run_start(&rs, 0x99, name, 1);
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_RUN_START;
	env.run_start = &rs;
	harness__send(fd, &env);
	harness__expect_error(fd, E(LIMIT), false);
	close(fd);
}

static void c_negative_counts(int fd)
{
	/* Protobuf has no negative unsigned values: a negative int64 arrives as
	 * a huge step number, which validation calls absurd. */
	close(fd);
	fd = trainer_with_stream(0xabc, "negative", 1);
	float stats[16] = {0};
	send_step(fd, 0xabc, 2, (uint64_t)-5, stats, 1);
	harness__expect_error(fd, E(INVALID_FIELD), false);
	close(fd);
}

/* A drop count near 2^64: two ranks of one run reporting such counts made
 * the sum over its streams overflow in SQLite, which failed the commit of
 * every connection's batch, again at each resend. Refused up front. */
static void c_absurd_dropped(int fd)
{
	close(fd);
	fd = trainer_with_stream(0xd12, "absurd-dropped", 1);
	float stats[16] = {0};
	Dnnfault__Step s;
	harness__step(&s, 0xd12, 2, 1, stats, 1);
	s.has_dropped = 1;
	s.dropped = UINT64_MAX - 1;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &s;
	harness__send(fd, &env);
	harness__expect_error(fd, E(INVALID_FIELD), false);
	close(fd);
}

static void c_control_on_trainer(int fd)
{
	harness__handshake(fd, DNNFAULT__ROLE__ROLE_TRAINER);
	Dnnfault__ControlRequest req = DNNFAULT__CONTROL_REQUEST__INIT;
	Dnnfault__VersionRequest v = DNNFAULT__VERSION_REQUEST__INIT;
	req.id = 1;
	req.verb_case = DNNFAULT__CONTROL_REQUEST__VERB_VERSION;
	req.version = &v;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_REQUEST;
	env.request = &req;
	harness__send(fd, &env);
	harness__expect_error(fd, E(ROLE), false);
	close(fd);
}

struct bad_case {
	const char *name;
	void (*run)(int fd);
	const char *counter;	/* must grow */
};

static const struct bad_case cases[] = {
	{"truncated frame", c_truncated, "errors_bad_frame"},
	{"oversized length prefix", c_oversized, "errors_frame_too_large"},
	{"zero length prefix", c_zero_length, "errors_bad_frame"},
	{"random bytes", c_random_bytes, "errors_bad_message"},
	{"garbage protobuf", c_garbage_protobuf, "errors_bad_message"},
	{"wrong protocol version", c_wrong_version, "errors_version"},
	{"unknown role", c_bad_role, "errors_role"},
	{"step before handshake", c_step_before_handshake, "errors_handshake_required"},
	{"step for unknown run", c_unknown_run, "errors_unknown_stream"},
	{"unknown message type", c_unknown_type, "errors_unknown_message"},
	{"absurd layer counts", c_absurd_layers, "errors_invalid_field"},
	{"very long names", c_long_names, "errors_limit"},
	{"negative counts", c_negative_counts, "errors_invalid_field"},
	{"absurd drop count", c_absurd_dropped, "errors_invalid_field"},
	{"control request on trainer", c_control_on_trainer, "errors_role"},
};

/* The well-behaved client: streams a step and reads it back. */
static void healthy_client_still_served(int round)
{
	char run_id[32];
	snprintf(run_id, sizeof run_id, "healthy-%d", round);
	uint64_t stream = 0x100000 + (uint64_t)round;
	int fd = trainer_with_stream(stream, run_id, 2);
	float stats[32];
	for (int i = 0; i < 32; i++)
		stats[i] = (float)i;
	send_step(fd, stream, 2, 7, stats, 2);
	Dnnfault__Envelope *ack = harness__recv(fd, 5000);
	assert_non_null(ack);
	assert_int_equal(ack->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
	assert_int_equal(ack->ack->streams[0]->seq, 2);
	frame__free(ack);
	close(fd);
	char out[8192];
	char args[64];
	snprintf(args, sizeof args, "--json status %s", run_id);
	assert_int_equal(harness__ctl(&d, out, sizeof out, args), 0);
	assert_non_null(strstr(out, "\"steps_stored\":1"));
}

static void every_bad_input(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t before = harness__counter(&d, cases[i].counter);
		int fd = harness__connect(&d);
		assert_true(fd >= 0);
		cases[i].run(fd);
		uint64_t after = harness__counter(&d, cases[i].counter);
		if (after <= before)
			fail_msg("%s: counter %s did not grow", cases[i].name, cases[i].counter);
		healthy_client_still_served((int)i);
	}
}

/* NaN and Inf are telemetry, stored and exported as such. */
static void nan_and_inf_are_stored(void **state)
{
	(void)state;
	int fd = trainer_with_stream(0xfeed, "nan-run", 1);
	float stats[16];
	for (int i = 0; i < 16; i++)
		stats[i] = NAN;
	stats[1] = INFINITY;
	stats[2] = -INFINITY;
	Dnnfault__Step s;
	harness__step(&s, 0xfeed, 2, 1, stats, 1);
	s.loss = NAN;
	s.has_lr = 1;
	s.lr = INFINITY;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &s;
	harness__send(fd, &env);
	Dnnfault__Envelope *ack = harness__recv(fd, 5000);
	assert_non_null(ack);
	assert_int_equal(ack->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
	frame__free(ack);
	close(fd);
	char out[8192];
	assert_int_equal(harness__ctl(&d, out, sizeof out, "export nan-run --format csv"), 0);
	const char *row = strchr(out, '\n');
	assert_non_null(row);
	assert_non_null(strstr(row, ",nan,"));
	assert_non_null(strstr(row, ",inf,"));
	assert_non_null(strstr(row, ",-inf,"));
	assert_int_equal(harness__ctl(&d, out, sizeof out, "export nan-run --format jsonl"), 0);
	assert_non_null(strstr(out, "\"loss\":\"NaN\""));
	assert_non_null(strstr(out, "\"lr\":\"Infinity\""));
}

static void duplicates_are_stored_once(void **state)
{
	(void)state;
	int fd = trainer_with_stream(0xd0d0, "dup-run", 1);
	float stats[16] = {0};
	for (int round = 0; round < 3; round++)
		for (uint64_t seq = 2; seq <= 11; seq++)
			send_step(fd, 0xd0d0, seq, seq - 2, stats, 1);
	uint64_t acked = 0;
	while (acked < 11) {
		Dnnfault__Envelope *e = harness__recv(fd, 5000);
		assert_non_null(e);
		if (e->body_case == DNNFAULT__ENVELOPE__BODY_ACK)
			acked = e->ack->streams[0]->seq;
		frame__free(e);
	}
	close(fd);
	char out[8192];
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status dup-run"), 0);
	assert_non_null(strstr(out, "\"steps_stored\":10"));
	assert_true(harness__counter(&d, "messages_duplicate") >= 20);
}

/* A model without parameters sends steps without layers: no layer_stats
 * array at all on the wire. They are stored like any other step. */
static void steps_without_layers_are_stored(void **state)
{
	(void)state;
	int fd = trainer_with_stream(0xe0e0, "no-layers", 0);
	for (uint64_t seq = 2; seq <= 4; seq++)
		send_step(fd, 0xe0e0, seq, seq - 2, NULL, 0);
	uint64_t acked = 0;
	while (acked < 4) {
		Dnnfault__Envelope *e = harness__recv(fd, 5000);
		assert_non_null(e);
		assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY_ACK);
		acked = e->ack->streams[0]->seq;
		frame__free(e);
	}
	close(fd);
	char out[8192];
	assert_int_equal(harness__ctl(&d, out, sizeof out, "--json status no-layers"), 0);
	assert_non_null(strstr(out, "\"steps_stored\":3"));
}

/* The client library's synchronous API on a run the daemon refuses (a
 * run id over max_name_bytes): the steps after it are of a stream the
 * daemon does not know and are never acknowledged, so waiting for their
 * acknowledgements ends at once with the daemon's answer instead of
 * running into the timeout. */
static void refused_run_ends_the_wait(void **state)
{
	(void)state;
	char err[256], run_id[400];
	memset(run_id, 'r', sizeof run_id - 1);
	run_id[sizeof run_id - 1] = '\0';
	dnnfault_conn *c = dnnfault_connect(d.address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err,
					    sizeof err, NULL);
	assert_non_null(c);
	struct dnnfault_run_info info = {.run_id = run_id, .run_name = "refused", .world_size = 1};
	struct dnnfault_stream s;
	assert_int_equal(dnnfault_run_start(c, &info, &s), 0);
	for (uint64_t step = 0; step < 3; step++) {
		struct dnnfault_step st = {.step = step, .has = DNNFAULT_HAS_LOSS, .loss = 1.0};
		assert_true(dnnfault_send_step(c, &s, &st) > 0);
	}
	assert_int_equal(dnnfault_wait_acked(c, &s, 60000), -EPROTO);
	assert_true(s.refused);
	assert_non_null(strstr(dnnfault_conn_error(c), "dnnfaultd refused the run: run_id longer than"));
	dnnfault_close(c);

	/* The same when the replies were read by polls before the wait, as a
	 * client that polls after each send does (docs/client.md). */
	c = dnnfault_connect(d.address, DNNFAULT_ROLE_TRAINER, NULL, 5000, err, sizeof err, NULL);
	assert_non_null(c);
	assert_int_equal(dnnfault_run_start(c, &info, &s), 0);
	struct dnnfault_stream *const streams[] = {&s};
	for (uint64_t step = 0; step < 3; step++) {
		struct dnnfault_step st = {.step = step, .has = DNNFAULT_HAS_LOSS, .loss = 1.0};
		assert_true(dnnfault_send_step(c, &s, &st) > 0);
	}
	for (int i = 0; i < 100 && !s.refused; i++)
		assert_true(dnnfault_poll(c, streams, 1, 100, NULL) >= 0);
	assert_true(s.refused);
	assert_string_equal(s.refusal + strlen(s.refusal) - strlen("bytes"), "bytes");
	assert_int_equal(dnnfault_wait_acked(c, &s, 60000), -EPROTO);
	dnnfault_close(c);
}

static int setup(void **state)
{
	(void)state;
	const char *args[] = {"--log-level", "debug", NULL};
	harness__start(&d, args);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(harness__stop(&d, SIGTERM), 0);
	harness__cleanup(&d);
	return 0;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_bad_input),
		cmocka_unit_test(nan_and_inf_are_stored),
		cmocka_unit_test(duplicates_are_stored_once),
		cmocka_unit_test(steps_without_layers_are_stored),
		cmocka_unit_test(refused_run_ends_the_wait),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
