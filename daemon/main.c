/* dnnfaultd: reads settings (defaults < config file < flags), then runs the
 * server until SIGTERM. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "config.h"
#include "dnnfault_config.h"
#include "log.h"
#include "server.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: dnnfaultd [--config FILE] [--socket PATH] [--listen HOST:PORT] [--db PATH]\n"
		"                 [--model PATH] [--SETTING VALUE ...] [--print-config] [--version]\n"
		"\nEvery setting of the config file is also a flag:\n");
	config__print_help(out);
}

/* Splits "--key=value" or "--key value". Returns the value or NULL. */
static const char *flag_value(int argc, char **argv, int *i, char *key, size_t key_len)
{
	const char *arg = argv[*i] + 2;
	const char *eq = strchr(arg, '=');
	if (eq != NULL) {
		snprintf(key, key_len, "%.*s", (int)(eq - arg), arg);
		return eq + 1;
	}
	snprintf(key, key_len, "%s", arg);
	return *i + 1 < argc ? argv[++*i] : NULL;
}

int main(int argc, char **argv)
{
	struct config cfg;
	char err[512];
	bool print_config = false;
	const char *config_file = NULL;

	config__defaults(&cfg);
	/* The config file comes first so that flags override it. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			config_file = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			config_file = argv[i] + 9;
	}
	if (config_file != NULL && config__load_file(&cfg, config_file, err, sizeof err) != 0) {
		fprintf(stderr, "dnnfaultd: %s\n", err);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		char key[64];
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("dnnfaultd %s\n", DNNFAULT_VERSION);
			return 0;
		}
		if (strcmp(argv[i], "--print-config") == 0) {
			print_config = true;
			continue;
		}
		if (strncmp(argv[i], "--", 2) != 0) {
			fprintf(stderr, "dnnfaultd: unexpected argument '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
		const char *value = flag_value(argc, argv, &i, key, sizeof key);
		if (value == NULL) {
			fprintf(stderr, "dnnfaultd: --%s needs a value\n", key);
			return 2;
		}
		if (strcmp(key, "config") == 0)
			continue;	/* read before the flags */
		if (config__set(&cfg, key, value, err, sizeof err) != 0) {
			fprintf(stderr, "dnnfaultd: %s\n", err);
			return 2;
		}
	}
	if (config__resolve_paths(&cfg, err, sizeof err) != 0) {
		fprintf(stderr, "dnnfaultd: %s\n", err);
		return 1;
	}
	if (config__check(&cfg, err, sizeof err) != 0) {
		fprintf(stderr, "dnnfaultd: %s\n", err);
		return 2;
	}
	if (print_config) {
		config__print(&cfg, stdout);
		return 0;
	}
	log__init((enum log_level)cfg.log_level);
	/* Telemetry and the socket's directory are private to the daemon. */
	umask(0077);
	/* A peer that hangs up must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct server srv;
	int rv = server__init(&srv, &loop, &cfg);
	if (rv == 0)
		rv = server__run(&srv);
	server__close(&srv);
	uv_loop_close(&loop);
	return rv == 0 ? 0 : 1;
}
