/* Reconnect back-off: doubling from the initial delay up to the cap, with
 * jitter that only ever shortens a delay by up to a fifth. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"

static void doubles_up_to_the_cap(void **state)
{
	(void)state;
	struct backoff b;
	backoff__init(&b, 100, 5000, 1);
	const int base[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
	for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
		int d = backoff__next(&b);
		assert_in_range(d, base[i] - base[i] / BACKOFF_JITTER_DIV, base[i]);
	}
}

static void jitter_bounds_and_spread(void **state)
{
	(void)state;
	int min = 1 << 30, max = 0;
	for (uint64_t seed = 1; seed <= 2000; seed++) {
		struct backoff b;
		backoff__init(&b, 1000, 1000, seed * 7919);
		int d = backoff__next(&b);
		assert_in_range(d, 800, 1000);
		if (d < min)
			min = d;
		if (d > max)
			max = d;
	}
	/* The jitter does spread clients out. */
	assert_true(min < 850);
	assert_true(max > 950);
}

static void never_above_the_cap(void **state)
{
	(void)state;
	struct backoff b;
	backoff__init(&b, 3, 1000000, 99);
	int prev = 0;
	for (int i = 0; i < 200; i++) {
		int d = backoff__next(&b);
		assert_in_range(d, 1, 1000000);
		if (i > 25)
			assert_in_range(d, 800000, 1000000);
		prev = d;
	}
	(void)prev;
}

static void reset_after_success(void **state)
{
	(void)state;
	struct backoff b;
	backoff__init(&b, 50, 400, 5);
	for (int i = 0; i < 10; i++)
		backoff__next(&b);
	assert_in_range(backoff__next(&b), 320, 400);
	backoff__reset(&b);
	assert_in_range(backoff__next(&b), 40, 50);
	assert_in_range(backoff__next(&b), 80, 100);
}

static void odd_settings(void **state)
{
	(void)state;
	struct backoff b;
	/* Zero and negative values are clamped; max below initial is initial. */
	backoff__init(&b, 0, -5, 0);
	assert_int_equal(backoff__next(&b), 1);
	assert_int_equal(backoff__next(&b), 1);
	backoff__init(&b, 500, 100, 3);
	assert_in_range(backoff__next(&b), 400, 500);
	assert_in_range(backoff__next(&b), 400, 500);
	/* Near INT_MAX the doubling does not overflow. */
	backoff__init(&b, 1 << 30, 2147483647, 3);
	for (int i = 0; i < 5; i++)
		assert_true(backoff__next(&b) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(doubles_up_to_the_cap),
		cmocka_unit_test(jitter_bounds_and_spread),
		cmocka_unit_test(never_above_the_cap),
		cmocka_unit_test(reset_after_success),
		cmocka_unit_test(odd_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
