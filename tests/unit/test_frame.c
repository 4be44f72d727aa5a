/* Framing: encode/decode round trip and the scan rules that protect the
 * daemon from bad length prefixes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static void round_trip_step(void **state)
{
	(void)state;
	float stats[32];
	for (int i = 0; i < 32; i++)
		stats[i] = (float)i * 0.5f;
	stats[3] = NAN;
	stats[4] = INFINITY;
	Dnnfault__Step step = DNNFAULT__STEP__INIT;
	step.seq = 7;
	step.stream = 0xdeadbeefcafeULL;
	step.step = 1234;
	step.has_loss = 1;
	step.loss = NAN;
	step.has_lr = 1;
	step.lr = 1e-3;
	step.n_layer_stats = 32;
	step.layer_stats = stats;
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_STEP;
	env.step = &step;

	uint8_t *buf;
	size_t len;
	assert_int_equal(frame__encode(&env, 1 << 20, &buf, &len), 0);
	assert_int_equal(len, frame__size(&env));
	uint32_t payload;
	assert_int_equal(frame__scan(buf, len, 1 << 20, &payload), FRAME_READY);
	assert_int_equal(payload + FRAME_HEADER_BYTES, len);

	Dnnfault__Envelope *out = frame__decode(buf + FRAME_HEADER_BYTES, payload);
	assert_non_null(out);
	assert_int_equal(out->body_case, DNNFAULT__ENVELOPE__BODY_STEP);
	assert_int_equal(out->step->seq, 7);
	assert_int_equal(out->step->stream, 0xdeadbeefcafeULL);
	assert_int_equal(out->step->step, 1234);
	assert_true(out->step->has_loss && isnan(out->step->loss));
	assert_false(out->step->has_accuracy);
	assert_int_equal(out->step->n_layer_stats, 32);
	assert_true(isnan(out->step->layer_stats[3]));
	assert_true(isinf(out->step->layer_stats[4]));
	assert_true(out->step->layer_stats[31] == 15.5f);
	assert_string_equal(frame__body_name(out), "step");
	frame__free(out);
	free(buf);
}

static void encode_respects_limit(void **state)
{
	(void)state;
	Dnnfault__Error err = DNNFAULT__ERROR__INIT;
	err.code = DNNFAULT__ERROR_CODE__ERR_INTERNAL;
	err.message = "a message that is longer than sixteen bytes";
	Dnnfault__Envelope env = DNNFAULT__ENVELOPE__INIT;
	env.body_case = DNNFAULT__ENVELOPE__BODY_ERROR;
	env.error = &err;
	uint8_t *buf = NULL;
	size_t len;
	assert_int_equal(frame__encode(&env, 16, &buf, &len), -EMSGSIZE);
	assert_null(buf);
}

static void scan_rules(void **state)
{
	(void)state;
	uint8_t buf[16] = {0};
	uint32_t n;
	/* Fewer than four bytes: wait. */
	assert_int_equal(frame__scan(buf, 3, 100, &n), FRAME_NEED_MORE);
	/* A zero length is never valid. */
	assert_int_equal(frame__scan(buf, 4, 100, &n), FRAME_EMPTY);
	/* Too large is known from the header alone, before any payload. */
	frame__put_len(buf, 101);
	assert_int_equal(frame__scan(buf, 4, 100, &n), FRAME_TOO_LARGE);
	assert_int_equal(n, 101);
	frame__put_len(buf, 0xffffffffu);
	assert_int_equal(frame__scan(buf, 4, FRAME_MAX_LIMIT, &n), FRAME_TOO_LARGE);
	/* A cut frame waits for the rest. */
	frame__put_len(buf, 10);
	assert_int_equal(frame__scan(buf, 13, 100, &n), FRAME_NEED_MORE);
	assert_int_equal(frame__scan(buf, 14, 100, &n), FRAME_READY);
	assert_int_equal(frame__get_len(buf), 10);
}

static void garbage_is_rejected(void **state)
{
	(void)state;
	/* Field 1 (hello, length-delimited) claiming 100 bytes that are not there. */
	const uint8_t cut[] = {0x0a, 0x64, 0x08, 0x01};
	assert_null(frame__decode(cut, sizeof cut));
	/* Random bytes. */
	uint8_t junk[64];
	srand(42);
	int rejected = 0;
	for (int round = 0; round < 200; round++) {
		for (size_t i = 0; i < sizeof junk; i++)
			junk[i] = (uint8_t)rand();
		Dnnfault__Envelope *e = frame__decode(junk, sizeof junk);
		rejected += e == NULL;
		frame__free(e);
	}
	assert_true(rejected > 150);
	/* An empty payload decodes to an envelope with no body (unknown type). */
	Dnnfault__Envelope *e = frame__decode((const uint8_t *)"", 0);
	assert_non_null(e);
	assert_int_equal(e->body_case, DNNFAULT__ENVELOPE__BODY__NOT_SET);
	assert_string_equal(frame__body_name(e), "unknown");
	frame__free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip_step),
		cmocka_unit_test(encode_respects_limit),
		cmocka_unit_test(scan_rules),
		cmocka_unit_test(garbage_is_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
