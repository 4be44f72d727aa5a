/* Config: defaults, bounds, file parsing and precedence. */
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

#include "config.h"
#include "log.h"

static void defaults(void **state)
{
	(void)state;
	struct config c;
	config__defaults(&c);
	assert_int_equal(c.max_frame_bytes, 4194304);
	assert_int_equal(c.socket_mode, 0660);
	assert_int_equal(c.synchronous, 1);
	assert_int_equal(c.log_level, LOG_LEVEL_INFO);
	assert_string_equal(c.listen, "");
}

static void set_and_bounds(void **state)
{
	(void)state;
	struct config c;
	char err[256];
	config__defaults(&c);
	assert_int_equal(config__set(&c, "max-frame-bytes", "2048", err, sizeof err), 0);
	assert_int_equal(c.max_frame_bytes, 2048);
	assert_int_equal(config__set(&c, "max_frame_bytes", "12", err, sizeof err), -ERANGE);
	assert_non_null(strstr(err, "outside"));
	assert_int_equal(c.max_frame_bytes, 2048);
	assert_int_equal(config__set(&c, "max_frame_bytes", "12k", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "max_frame_bytes", "", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "no_such_key", "1", err, sizeof err), -ENOENT);
	assert_int_equal(config__set(&c, "socket_mode", "0600", err, sizeof err), 0);
	assert_int_equal(c.socket_mode, 0600);
	assert_int_equal(config__set(&c, "socket_mode", "0999", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "synchronous", "full", err, sizeof err), 0);
	assert_int_equal(c.synchronous, 2);
	assert_int_equal(config__set(&c, "synchronous", "extra", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "log-level", "debug", err, sizeof err), 0);
	assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
}

static void file(void **state)
{
	(void)state;
	char path[] = "/tmp/dnnfault-config-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "# comment\n\n  socket = /tmp/a.sock  # trailing\nmax_layers=10\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	struct config c;
	char err[256];
	config__defaults(&c);
	assert_int_equal(config__load_file(&c, path, err, sizeof err), 0);
	assert_string_equal(c.socket, "/tmp/a.sock");
	assert_int_equal(c.max_layers, 10);

	FILE *f = fopen(path, "w");
	fputs("max_layers = 10\nthis line is wrong\n", f);
	fclose(f);
	assert_int_equal(config__load_file(&c, path, err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, ":2:"));
	f = fopen(path, "w");
	fputs("max_layers = 0\n", f);
	fclose(f);
	assert_int_equal(config__load_file(&c, path, err, sizeof err), -ERANGE);
	unlink(path);
	assert_true(config__load_file(&c, path, err, sizeof err) < 0);
	assert_non_null(strstr(err, path));
	/* A directory opens like a file, and would read as an empty one. */
	assert_int_equal(config__load_file(&c, "/tmp", err, sizeof err), -EIO);
	assert_non_null(strstr(err, "is a directory"));
}

/* What each value's bounds cannot say: a listener and a socket path the
 * daemon could not use are configuration errors. */
static void check(void **state)
{
	(void)state;
	struct config c;
	char err[256];
	config__defaults(&c);
	assert_int_equal(config__set(&c, "socket", "/tmp/d.sock", err, sizeof err), 0);
	assert_int_equal(config__check(&c, err, sizeof err), 0);
	static const struct {
		const char *listen, *token;
		int rv;
	} cases[] = {
		{"127.0.0.1:7411", "", 0},
		{"localhost:7411", "", 0},
		{"[::1]:7411", "", 0},
		{"0.0.0.0:7411", "s3cret", 0},
		{"127.0.0.1:70000", "", -EINVAL},
		{"127.0.0.1:0", "", -EINVAL},
		{"127.0.0.1", "", -EINVAL},
		{"::1:7411", "", -EINVAL},
		{"host.example:7411", "s3cret", -EINVAL},
		{"0.0.0.0:7411", "", -EPERM},
		{"[2001:db8::1]:7411", "", -EPERM},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(config__set(&c, "listen", cases[i].listen, err, sizeof err), 0);
		assert_int_equal(config__set(&c, "token", cases[i].token, err, sizeof err), 0);
		assert_int_equal(config__check(&c, err, sizeof err), cases[i].rv);
	}
	assert_int_equal(config__set(&c, "listen", "", err, sizeof err), 0);
	/* The metrics endpoint follows the same rules with its own token:
	 * the streaming token does not open it to others. */
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(config__set(&c, "metrics_listen", cases[i].listen, err, sizeof err), 0);
		assert_int_equal(config__set(&c, "metrics_token", cases[i].token, err, sizeof err), 0);
		assert_int_equal(config__check(&c, err, sizeof err), cases[i].rv);
		if (cases[i].rv != 0)
			assert_non_null(strstr(err, "metrics_listen"));
	}
	assert_int_equal(config__set(&c, "metrics_listen", "0.0.0.0:9464", err, sizeof err), 0);
	assert_int_equal(config__set(&c, "metrics_token", "", err, sizeof err), 0);
	assert_int_equal(config__set(&c, "token", "s3cret", err, sizeof err), 0);
	assert_int_equal(config__check(&c, err, sizeof err), -EPERM);
	assert_string_equal(err, "metrics_listen: 0.0.0.0 is not a loopback address; set metrics_token to accept remote clients");
	assert_int_equal(config__set(&c, "metrics_listen", "", err, sizeof err), 0);
	char path[160];
	memset(path, 'a', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	assert_int_equal(config__set(&c, "socket", path, err, sizeof err), 0);
	assert_int_equal(config__check(&c, err, sizeof err), -ENAMETOOLONG);
}

static void resolve_paths(void **state)
{
	(void)state;
	struct config c;
	char err[256];
	config__defaults(&c);
	unsetenv("STATE_DIRECTORY");
	unsetenv("RUNTIME_DIRECTORY");
	setenv("XDG_STATE_HOME", "/var/tmp/xdg-state", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/77", 1);
	assert_int_equal(config__resolve_paths(&c, err, sizeof err), 0);
	assert_string_equal(c.db, "/var/tmp/xdg-state/dnnfault/dnnfault.db");
	assert_string_equal(c.socket, "/run/user/77/dnnfault/dnnfaultd.sock");

	config__defaults(&c);
	setenv("STATE_DIRECTORY", "/var/lib/dnnfault", 1);
	assert_int_equal(config__resolve_paths(&c, err, sizeof err), 0);
	assert_string_equal(c.db, "/var/lib/dnnfault/dnnfault.db");

	/* Explicit settings are kept. */
	config__defaults(&c);
	strcpy(c.db, "/x/y.db");
	assert_int_equal(config__resolve_paths(&c, err, sizeof err), 0);
	assert_string_equal(c.db, "/x/y.db");
}

/* Symptom thresholds: positive finite numbers, printed back. */
static void symptom_thresholds(void **state)
{
	(void)state;
	struct config c;
	char err[256];
	config__defaults(&c);
	assert_true(c.symptom_dead_frac == 0.7 && c.symptom_loss_max == 1e3 && c.symptom_persist == 3);
	assert_int_equal(config__set(&c, "symptom-dead-frac", "0.5", err, sizeof err), 0);
	assert_true(c.symptom_dead_frac == 0.5);
	assert_int_equal(config__set(&c, "symptom_dead_frac", "-1", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "symptom_dead_frac", "0", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "symptom_dead_frac", "nan", err, sizeof err), -EINVAL);
	assert_int_equal(config__set(&c, "symptom_dead_frac", "1x", err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "positive number"));
	assert_true(c.symptom_dead_frac == 0.5);
	assert_int_equal(config__set(&c, "symptom_persist", "0", err, sizeof err), -ERANGE);
}

static void print_hides_token(void **state)
{
	(void)state;
	struct config c;
	char err[256];
	config__defaults(&c);
	assert_int_equal(config__set(&c, "token", "s3cret", err, sizeof err), 0);
	assert_int_equal(config__set(&c, "metrics_token", "m3trics", err, sizeof err), 0);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config__print(&c, f);
	fclose(f);
	assert_null(strstr(buf, "s3cret"));
	assert_null(strstr(buf, "m3trics"));
	assert_non_null(strstr(buf, "\ntoken = (set)"));
	assert_non_null(strstr(buf, "\nmetrics_token = (set)"));
	assert_non_null(strstr(buf, "socket_mode = 0660"));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(set_and_bounds),
		cmocka_unit_test(file),
		cmocka_unit_test(resolve_paths),
		cmocka_unit_test(check),
		cmocka_unit_test(print_hides_token),
		cmocka_unit_test(symptom_thresholds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
