/* dnnfaultd's settings: one table holds every key with its type, default and
 * bounds; it serves the config file, the command line and --print-config. */
#ifndef DNNFAULT_CONFIG_H
#define DNNFAULT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_STR_MAX 4096

struct config {
	char socket[CONFIG_STR_MAX];	/* Unix socket path; "" = default */
	char listen[CONFIG_STR_MAX];	/* HOST:PORT; "" = no TCP */
	char token[CONFIG_STR_MAX];
	char metrics_listen[CONFIG_STR_MAX];	/* HOST:PORT of the Prometheus endpoint; "" = off */
	char metrics_token[CONFIG_STR_MAX];
	char db[CONFIG_STR_MAX];	/* "" = default state directory */
	char model[CONFIG_STR_MAX];
	int64_t socket_mode;
	int64_t max_frame_bytes;
	int64_t max_connections;
	int64_t max_runs;
	int64_t max_layers;
	int64_t max_name_bytes;
	int64_t max_tags;
	int64_t max_world_size;
	int64_t max_inflight_per_conn;
	int64_t max_pending_messages;
	int64_t max_pending_bytes;
	int64_t max_output_bytes;
	int64_t handshake_timeout_ms;
	int64_t stale_after_s;
	int64_t chunk_steps;
	int64_t analyze_every_steps;
	int64_t analyze_max_samples;
	int64_t retention_days;
	int64_t metrics_max_runs;
	int64_t synchronous;		/* 1 normal, 2 full (SQLite values) */
	int64_t log_level;		/* enum log_level */
	double symptom_loss_max, symptom_explode_ratio, symptom_vanish_ratio, symptom_dead_frac,
	       symptom_saturated_frac, symptom_large_weight, symptom_update_low, symptom_update_high;
	int64_t symptom_persist;
	int64_t symptom_loss_window_steps;
};

/* Fills every key with its default. */
void config__defaults(struct config *c);

/* Sets one key from text; `key` may use '-' or '_'. Returns 0, -ENOENT for
 * an unknown key, or -EINVAL/-ERANGE for a bad value; `err` then says why. */
int config__set(struct config *c, const char *key, const char *value,
		char *err, size_t err_len);

/* Reads "key = value" lines ('#' starts a comment). Returns 0 or a negative
 * errno; `err` names the file and line. */
int config__load_file(struct config *c, const char *path, char *err, size_t err_len);

/* Fills in the paths that depend on the environment (socket, db) when they
 * were left empty. Returns 0 or a negative errno. */
int config__resolve_paths(struct config *c, char *err, size_t err_len);

/* Checks what each value's own bounds cannot: the socket path's length and
 * the TCP listeners, streaming and metrics (HOST:PORT, an IP address or
 * localhost, a token where others can reach it), so that a setting the daemon could not use is a
 * configuration error (exit 2) before anything is created. Returns 0 or a
 * negative errno with the reason in err. */
int config__check(const struct config *c, char *err, size_t err_len);

/* Writes every key with its current value, default and bounds. */
void config__print(const struct config *c, FILE *out);

/* Writes one usage line per key, for --help. */
void config__print_help(FILE *out);

#endif
