#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "json.h"

/* A writer onto memory; finish() hands back what it wrote. */
struct sink {
	char *buf;
	size_t len;
	FILE *f;
	struct json j;
};

static void sink_open(struct sink *s)
{
	s->buf = NULL;
	s->f = open_memstream(&s->buf, &s->len);
	assert_non_null(s->f);
	json__init(&s->j, s->f);
}

static const char *sink_text(struct sink *s)
{
	fflush(s->f);
	return s->buf;
}

static void sink_close(struct sink *s)
{
	fclose(s->f);
	free(s->buf);
}

static void test_escapes_quotes_and_backslashes(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__string(&s.j, "say \"hi\" C:\\dir/x");
	assert_string_equal(sink_text(&s), "\"say \\\"hi\\\" C:\\\\dir/x\"");
	sink_close(&s);
}

static void test_escapes_control_chars(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__string(&s.j, "a\nb\tc\rd\be\ff\x01g\x1fh\x7f");
	assert_string_equal(sink_text(&s),
			    "\"a\\nb\\tc\\rd\\be\\ff\\u0001g\\u001fh\\u007f\"");
	sink_close(&s);
}

static void test_utf8_and_invalid_bytes_pass(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__string(&s.j, "\xc3\xa9t\xc3\xa9 \xff\xfe");
	assert_string_equal(sink_text(&s), "\"\xc3\xa9t\xc3\xa9 \xff\xfe\"");
	sink_close(&s);
}

static void test_nested_commas(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_object(&s.j);
	json__kstring(&s.j, "a", "x");
	json__key(&s.j, "b");
	json__begin_array(&s.j);
	json__uint(&s.j, 1);
	json__begin_object(&s.j);
	json__end_object(&s.j);
	json__begin_array(&s.j);
	json__null(&s.j);
	json__bool(&s.j, true);
	json__end_array(&s.j);
	json__begin_object(&s.j);
	json__kuint(&s.j, "c", 2);
	json__kstring(&s.j, "d", NULL);
	json__end_object(&s.j);
	json__end_array(&s.j);
	json__key(&s.j, "e");
	json__bool(&s.j, false);
	json__end_object(&s.j);
	assert_true(json__ok(&s.j));
	assert_string_equal(sink_text(&s),
			    "{\"a\":\"x\",\"b\":[1,{},[null,true],{\"c\":2,\"d\":null}],\"e\":false}");
	sink_close(&s);
}

static void test_keys_are_escaped(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_object(&s.j);
	json__kuint(&s.j, "la\"yer\n", 7);
	json__end_object(&s.j);
	assert_string_equal(sink_text(&s), "{\"la\\\"yer\\n\":7}");
	sink_close(&s);
}

static void test_non_finite_numbers(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_array(&s.j);
	json__double(&s.j, NAN);
	json__double(&s.j, INFINITY);
	json__double(&s.j, -INFINITY);
	json__float(&s.j, NAN);
	json__float(&s.j, -INFINITY);
	json__end_array(&s.j);
	assert_string_equal(sink_text(&s),
			    "[\"NaN\",\"Infinity\",\"-Infinity\",\"NaN\",\"-Infinity\"]");
	sink_close(&s);
}

static void test_numbers_round_trip(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_array(&s.j);
	json__double(&s.j, 0.1);
	json__double(&s.j, 1.0 / 3.0);
	json__double(&s.j, 1e300);
	json__double(&s.j, -2.5);
	json__float(&s.j, 0.1f);
	json__end_array(&s.j);
	assert_string_equal(sink_text(&s),
			    "[0.1,0.3333333333333333,1e+300,-2.5,0.1]");
	sink_close(&s);

	char buf[32];
	double hard[] = {5e-324, 1.7976931348623157e308, 123456789.123456789, -0.0};
	for (size_t i = 0; i < sizeof hard / sizeof hard[0]; i++) {
		json__format_double(buf, sizeof buf, hard[i]);
		assert_true(strtod(buf, NULL) == hard[i]);
	}
}

static void test_integers(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_array(&s.j);
	json__uint(&s.j, 0);
	json__uint(&s.j, UINT64_MAX);
	json__int(&s.j, INT64_MIN);
	json__int(&s.j, -1);
	json__end_array(&s.j);
	assert_string_equal(sink_text(&s),
			    "[0,18446744073709551615,-9223372036854775808,-1]");
	sink_close(&s);
}

static void test_unbalanced_is_reported(void **state)
{
	(void)state;
	struct sink s;
	sink_open(&s);
	json__begin_object(&s.j);
	json__key(&s.j, "a");
	assert_false(json__ok(&s.j));
	json__end_object(&s.j);
	assert_false(json__ok(&s.j));
	sink_close(&s);

	sink_open(&s);
	json__begin_array(&s.j);
	assert_false(json__ok(&s.j));
	json__end_array(&s.j);
	assert_true(json__ok(&s.j));
	sink_close(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escapes_quotes_and_backslashes),
		cmocka_unit_test(test_escapes_control_chars),
		cmocka_unit_test(test_utf8_and_invalid_bytes_pass),
		cmocka_unit_test(test_nested_commas),
		cmocka_unit_test(test_keys_are_escaped),
		cmocka_unit_test(test_non_finite_numbers),
		cmocka_unit_test(test_numbers_round_trip),
		cmocka_unit_test(test_integers),
		cmocka_unit_test(test_unbalanced_is_reported),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
