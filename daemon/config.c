#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "address.h"
#include "log.h"

enum config_type { CONFIG_STRING, CONFIG_INT, CONFIG_OCTAL, CONFIG_ENUM, CONFIG_REAL };

struct config_key {
	const char *name;
	enum config_type type;
	size_t offset;
	const char *def;		/* default, as text */
	int64_t min, max;		/* bounds of integers */
	const char *const *names;	/* CONFIG_ENUM: names, NULL-terminated */
	const int64_t *values;		/* CONFIG_ENUM: value of each name */
	const char *help;
};

static const char *const sync_names[] = {"normal", "full", NULL};
static const int64_t sync_values[] = {1, 2};
static const char *const level_names[] = {"error", "warning", "info", "debug", NULL};
static const int64_t level_values[] = {LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO,
				       LOG_LEVEL_DEBUG};

#define STR(field, def, help) {#field, CONFIG_STRING, offsetof(struct config, field), def, 0, 0, NULL, NULL, help}
#define INT(field, def, lo, hi, help) {#field, CONFIG_INT, offsetof(struct config, field), def, lo, hi, NULL, NULL, help}
/* A positive finite number. */
#define REAL(field, def, help) {#field, CONFIG_REAL, offsetof(struct config, field), def, 0, 0, NULL, NULL, help}

static const struct config_key keys[] = {
	STR(socket, "", "Unix socket path (default: $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/dnnfault or /tmp/dnnfault-UID, + /dnnfaultd.sock)"),
	STR(listen, "", "TCP listener HOST:PORT; off when empty; a non-loopback host requires token"),
	STR(token, "", "shared secret TCP clients must present"),
	STR(metrics_listen, "", "Prometheus endpoint HOST:PORT (GET /metrics); off when empty; a non-loopback host requires metrics_token"),
	STR(metrics_token, "", "bearer token scrapers must present (Authorization: Bearer ...)"),
	STR(db, "", "SQLite database (default: $STATE_DIRECTORY, $XDG_STATE_HOME/dnnfault or ~/.local/state/dnnfault, + /dnnfault.db)"),
	STR(model, "", "model bundle directory (default: the installed bundle, else the source tree's models/default; none: off)"),
	{"socket_mode", CONFIG_OCTAL, offsetof(struct config, socket_mode), "0660", 0, 0777, NULL, NULL,
	 "permissions of the Unix socket (octal)"},
	INT(max_frame_bytes, "4194304", 1024, 268435456, "largest frame payload accepted"),
	INT(max_connections, "4096", 1, 1000000, "open connections at once; more are refused"),
	INT(max_runs, "100000", 1, 100000000, "runs kept; a new run beyond it is refused"),
	INT(max_layers, "4096", 1, 65536, "layers per run and per step message"),
	INT(max_name_bytes, "256", 16, 65536, "longest run, layer, tag or host name"),
	INT(max_tags, "64", 0, 65536, "tags and optimizer parameters per run"),
	INT(max_world_size, "65536", 1, 16777216, "largest world size (ranks) of a run"),
	INT(max_inflight_per_conn, "8192", 1, 10000000, "unacknowledged messages per connection before reading pauses"),
	INT(max_pending_messages, "65536", 1, 100000000, "messages waiting for commit before all reading pauses"),
	INT(max_pending_bytes, "268435456", 1048576, 68719476736, "bytes of telemetry waiting for commit before all reading pauses"),
	INT(max_output_bytes, "4194304", 1024, 1073741824, "unsent reply bytes per connection before it is dropped"),
	INT(handshake_timeout_ms, "10000", 10, 3600000, "time a new connection has to send Hello"),
	INT(stale_after_s, "300", 1, 31536000, "a running run with no data for this long is shown as stale"),
	INT(chunk_steps, "64", 1, 4096, "steps of one rank packed into one stored row"),
	INT(analyze_every_steps, "100", 0, 100000000, "analyse a run after this many new stored steps (or a tenth of its steps so far, if more), and when it ends; 0 turns analysis off"),
	INT(analyze_max_samples, "10000", 100, 1000000000, "an analysis reads at most this many samples of a run, evenly thinned (NaN/Inf samples and the last kept), which bounds its memory"),
	INT(retention_days, "0", 0, 36500, "delete runs that received nothing for this many days; 0 keeps all"),
	INT(metrics_max_runs, "200", 0, 100000, "runs with per-run series on the metrics endpoint, most recently updated first"),
	{"synchronous", CONFIG_ENUM, offsetof(struct config, synchronous), "normal", 0, 0, sync_names,
	 sync_values, "SQLite durability: normal survives a daemon crash, full also a power loss"},
	{"log_level", CONFIG_ENUM, offsetof(struct config, log_level), "info", 0, 0, level_names,
	 level_values, "error, warning, info or debug"},
	/* Symptom thresholds shown to users (the learned model's features keep
	 * the published defaults it was trained with). */
	REAL(symptom_loss_max, "1e3", "nan_loss: loss at or above this"),
	REAL(symptom_explode_ratio, "70", "exploding_gradient: first/last layer grad-norm ratio above this"),
	REAL(symptom_vanish_ratio, "1e-3", "vanishing_gradient: first/last grad-norm ratio below this"),
	REAL(symptom_dead_frac, "0.7", "dead_relu: share of a ReLU layer's outputs <= 0"),
	REAL(symptom_saturated_frac, "0.5", "saturated_activation: share of sigmoid/tanh inputs outside [-5, 5]"),
	REAL(symptom_large_weight, "5", "large_weights: largest |w| above this"),
	REAL(symptom_update_low, "1e-5", "update_ratio: |dw|/|w| below this"),
	REAL(symptom_update_high, "1e-1", "update_ratio: |dw|/|w| above this"),
	INT(symptom_persist, "3", 1, 1000, "samples in a row a noisy per-sample rule must hold"),
	INT(symptom_loss_window_steps, "500", 0, 1000000000,
	    "loss_not_decreasing: each of its two windows (10 samples) spans at least this many steps; 0: 10 samples"),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static const struct config_key *find_key(const char *name)
{
	char norm[64];
	size_t n = strlen(name);
	if (n >= sizeof norm)
		return NULL;
	for (size_t i = 0; i <= n; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].name, norm) == 0)
			return &keys[i];
	return NULL;
}

static int set_key(struct config *c, const struct config_key *k, const char *value,
		   char *err, size_t err_len)
{
	char *field = (char *)c + k->offset;
	int64_t v;
	char *end;

	switch (k->type) {
	case CONFIG_STRING:
		if (strlen(value) >= CONFIG_STR_MAX) {
			snprintf(err, err_len, "%s: value longer than %d bytes", k->name, CONFIG_STR_MAX - 1);
			return -ERANGE;
		}
		strcpy(field, value);
		return 0;
	case CONFIG_ENUM:
		for (size_t i = 0; k->names[i] != NULL; i++) {
			if (strcmp(k->names[i], value) == 0) {
				*(int64_t *)(void *)field = k->values[i];
				return 0;
			}
		}
		snprintf(err, err_len, "%s: '%s' is not one of the allowed values", k->name, value);
		return -EINVAL;
	case CONFIG_REAL: {
		errno = 0;
		double d = strtod(value, &end);
		if (errno != 0 || end == value || *end != '\0' || !(d > 0) || !isfinite(d)) {
			snprintf(err, err_len, "%s: '%s' is not a positive number", k->name, value);
			return -EINVAL;
		}
		*(double *)(void *)field = d;
		return 0;
	}
	case CONFIG_INT:
	case CONFIG_OCTAL:
		errno = 0;
		v = strtoll(value, &end, k->type == CONFIG_OCTAL ? 8 : 10);
		if (errno != 0 || end == value || *end != '\0') {
			snprintf(err, err_len, "%s: '%s' is not a%s integer", k->name, value,
				 k->type == CONFIG_OCTAL ? "n octal" : "n");
			return -EINVAL;
		}
		if (v < k->min || v > k->max) {
			snprintf(err, err_len, "%s: %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]",
				 k->name, v, k->min, k->max);
			return -ERANGE;
		}
		*(int64_t *)(void *)field = v;
		return 0;
	}
	return -EINVAL;
}

void config__defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	char err[256];
	for (size_t i = 0; i < N_KEYS; i++) {
		int rv = set_key(c, &keys[i], keys[i].def, err, sizeof err);
		(void)rv;
	}
}

int config__set(struct config *c, const char *key, const char *value, char *err, size_t err_len)
{
	const struct config_key *k = find_key(key);
	if (k == NULL) {
		snprintf(err, err_len, "unknown setting '%s'", key);
		return -ENOENT;
	}
	return set_key(c, k, value, err, err_len);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int config__load_file(struct config *c, const char *path, char *err, size_t err_len)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		int rv = -errno;
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		return rv;
	}
	char line[CONFIG_STR_MAX + 128];
	char why[256];
	int lineno = 0;
	int rv = 0;
	while (fgets(line, sizeof line, f) != NULL) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		char *s = trim(line);
		if (*s == '\0')
			continue;
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			snprintf(err, err_len, "%s:%d: expected 'key = value'", path, lineno);
			rv = -EINVAL;
			break;
		}
		*eq = '\0';
		rv = config__set(c, trim(s), trim(eq + 1), why, sizeof why);
		if (rv != 0) {
			snprintf(err, err_len, "%s:%d: %s", path, lineno, why);
			break;
		}
	}
	/* fopen() opens a directory, and reading it fails (EISDIR): without
	 * this check such a file would read as an empty one. */
	if (rv == 0 && ferror(f)) {
		rv = -EIO;
		snprintf(err, err_len, "%s: cannot be read%s", path, errno == EISDIR ? ": is a directory" : "");
	}
	fclose(f);
	return rv;
}

static int state_dir(char *buf, size_t len)
{
	const char *sd = getenv("STATE_DIRECTORY");
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n;
	if (sd != NULL && *sd != '\0' && strchr(sd, ':') == NULL)
		n = snprintf(buf, len, "%s", sd);
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(buf, len, "%s/dnnfault", xdg);
	else if (home != NULL && home[0] == '/')
		n = snprintf(buf, len, "%s/.local/state/dnnfault", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int config__resolve_paths(struct config *c, char *err, size_t err_len)
{
	int rv;
	if (c->socket[0] == '\0') {
		rv = address__default_socket(c->socket, sizeof c->socket);
		if (rv != 0) {
			snprintf(err, err_len, "default socket path too long; set socket");
			return rv;
		}
	}
	if (c->db[0] == '\0') {
		char dir[CONFIG_STR_MAX - 32];
		rv = state_dir(dir, sizeof dir);
		if (rv != 0) {
			snprintf(err, err_len, "no state directory (HOME unset?); set db");
			return rv;
		}
		snprintf(c->db, sizeof c->db, "%s/dnnfault.db", dir);
	}
	return 0;
}

/* A TCP listener setting: HOST:PORT with an IP address or localhost, and
 * a token where others can reach it. */
static int check_listener(const char *key, const char *value, const char *token_key, bool has_token,
			  char *err, size_t err_len)
{
	struct address a;
	/* An IPv6 host without brackets would parse, but could not be written
	 * back as an address that clients read the same way. */
	if (address__parse(value, &a) != 0 || a.kind != ADDRESS_TCP ||
	    (strchr(a.host, ':') != NULL && value[0] != '[')) {
		snprintf(err, err_len, "%s: '%s' is not HOST:PORT (PORT 1..65535, an IPv6 host in brackets)",
			 key, value);
		return -EINVAL;
	}
	unsigned char ip[16];
	if (strcmp(a.host, "localhost") != 0 && inet_pton(AF_INET, a.host, ip) != 1 &&
	    inet_pton(AF_INET6, a.host, ip) != 1) {
		snprintf(err, err_len, "%s: '%s' is not an IP address or localhost", key, a.host);
		return -EINVAL;
	}
	if (!address__is_loopback_host(a.host) && !has_token) {
		snprintf(err, err_len, "%s: %s is not a loopback address; set %s to accept remote clients",
			 key, a.host, token_key);
		return -EPERM;
	}
	return 0;
}

int config__check(const struct config *c, char *err, size_t err_len)
{
	if (strlen(c->socket) >= ADDRESS_PATH_MAX) {
		snprintf(err, err_len, "socket path longer than %d bytes: %s", ADDRESS_PATH_MAX - 1, c->socket);
		return -ENAMETOOLONG;
	}
	int rv = 0;
	if (c->listen[0] != '\0')
		rv = check_listener("listen", c->listen, "token", c->token[0] != '\0', err, err_len);
	if (rv == 0 && c->metrics_listen[0] != '\0')
		rv = check_listener("metrics_listen", c->metrics_listen, "metrics_token",
				    c->metrics_token[0] != '\0', err, err_len);
	return rv;
}

static void format_value(const struct config *c, const struct config_key *k, char *buf, size_t len)
{
	const char *field = (const char *)c + k->offset;
	int64_t v = k->type == CONFIG_STRING || k->type == CONFIG_REAL ? 0 : *(const int64_t *)(const void *)field;
	switch (k->type) {
	case CONFIG_REAL:
		snprintf(buf, len, "%g", *(const double *)(const void *)field);
		break;
	case CONFIG_STRING:
		snprintf(buf, len, "%s", field);
		break;
	case CONFIG_OCTAL:
		snprintf(buf, len, "0%03" PRIo64, v);
		break;
	case CONFIG_INT:
		snprintf(buf, len, "%" PRId64, v);
		break;
	case CONFIG_ENUM:
		snprintf(buf, len, "?");
		for (size_t i = 0; k->names[i] != NULL; i++)
			if (k->values[i] == v)
				snprintf(buf, len, "%s", k->names[i]);
		break;
	}
}

void config__print(const struct config *c, FILE *out)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		char value[CONFIG_STR_MAX];
		/* Never echo the secret. */
		if ((strcmp(keys[i].name, "token") == 0 && c->token[0] != '\0') ||
		    (strcmp(keys[i].name, "metrics_token") == 0 && c->metrics_token[0] != '\0'))
			snprintf(value, sizeof value, "(set)");
		else
			format_value(c, &keys[i], value, sizeof value);
		fprintf(out, "%s = %s\n", keys[i].name, value);
	}
}

void config__print_help(FILE *out)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key *k = &keys[i];
		char dashed[64];
		size_t n = strlen(k->name);
		for (size_t j = 0; j <= n && j < sizeof dashed; j++)
			dashed[j] = k->name[j] == '_' ? '-' : k->name[j];
		if (k->type == CONFIG_INT)
			fprintf(out, "  --%-24s %s [default %s, %" PRId64 "..%" PRId64 "]\n", dashed,
				k->help, k->def, k->min, k->max);
		else
			fprintf(out, "  --%-24s %s%s%s%s\n", dashed, k->help,
				*k->def ? " [default " : "", k->def, *k->def ? "]" : "");
	}
}
