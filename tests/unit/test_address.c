/* Addresses: parsing, formatting and the defaults shared by daemon and clients. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "address.h"

static void parse_forms(void **state)
{
	(void)state;
	struct address a;
	char text[512];
	assert_int_equal(address__parse("unix:/run/x.sock", &a), 0);
	assert_int_equal(a.kind, ADDRESS_UNIX);
	assert_string_equal(a.path, "/run/x.sock");
	assert_int_equal(address__parse("/tmp/y.sock", &a), 0);
	assert_int_equal(a.kind, ADDRESS_UNIX);
	assert_int_equal(address__parse("tcp://127.0.0.1:7070", &a), 0);
	assert_int_equal(a.kind, ADDRESS_TCP);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 7070);
	address__format(&a, text, sizeof text);
	assert_string_equal(text, "tcp://127.0.0.1:7070");
	assert_int_equal(address__parse("tcp://[::1]:9", &a), 0);
	assert_string_equal(a.host, "::1");
	address__format(&a, text, sizeof text);
	assert_string_equal(text, "tcp://[::1]:9");
	assert_int_equal(address__parse("localhost:80", &a), 0);
	assert_int_equal(a.kind, ADDRESS_TCP);
}

static void parse_rejects(void **state)
{
	(void)state;
	struct address a;
	const char *bad[] = {"", "unix:", "tcp://host", "tcp://host:0", "tcp://host:65536",
			     "tcp://host:12x", "tcp://[::1:9", "tcp://:80", "nohostport"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(address__parse(bad[i], &a), -EINVAL);
	char longpath[300];
	memset(longpath, 'a', sizeof longpath);
	longpath[0] = '/';
	longpath[sizeof longpath - 1] = '\0';
	assert_int_equal(address__parse(longpath, &a), -EINVAL);
	assert_int_equal(address__parse(NULL, &a), -EINVAL);
}

static void defaults_follow_environment(void **state)
{
	(void)state;
	char path[256], want[256];
	unsetenv("RUNTIME_DIRECTORY");
	setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
	assert_int_equal(address__default_socket(path, sizeof path), 0);
	assert_string_equal(path, "/run/user/1234/dnnfault/dnnfaultd.sock");
	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(address__default_socket(path, sizeof path), 0);
	snprintf(want, sizeof want, "/tmp/dnnfault-%u/dnnfaultd.sock", (unsigned)getuid());
	assert_string_equal(path, want);
	setenv("RUNTIME_DIRECTORY", "/run/dnnfault", 1);
	assert_int_equal(address__default_socket(path, sizeof path), 0);
	assert_string_equal(path, "/run/dnnfault/dnnfaultd.sock");
	unsetenv("RUNTIME_DIRECTORY");

	struct address a;
	setenv(ADDRESS_ENV, "tcp://127.0.0.1:5555", 1);
	assert_int_equal(address__client_default(&a), 0);
	assert_int_equal(a.kind, ADDRESS_TCP);
	assert_int_equal(a.port, 5555);
	setenv(ADDRESS_ENV, "garbage", 1);
	assert_int_equal(address__client_default(&a), -EINVAL);
	unsetenv(ADDRESS_ENV);
	setenv("XDG_RUNTIME_DIR", "/nonexistent-dnnfault-test", 1);
	assert_int_equal(address__client_default(&a), 0);
	assert_int_equal(a.kind, ADDRESS_UNIX);
	unsetenv("XDG_RUNTIME_DIR");
}

static void loopback(void **state)
{
	(void)state;
	assert_true(address__is_loopback_host("127.0.0.1"));
	assert_true(address__is_loopback_host("127.1.2.3"));
	assert_true(address__is_loopback_host("::1"));
	assert_true(address__is_loopback_host("localhost"));
	assert_false(address__is_loopback_host("0.0.0.0"));
	assert_false(address__is_loopback_host("10.0.0.1"));
	assert_false(address__is_loopback_host("1270.0.0.1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_forms),
		cmocka_unit_test(parse_rejects),
		cmocka_unit_test(defaults_follow_environment),
		cmocka_unit_test(loopback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
