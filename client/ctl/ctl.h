/* dnnfaultctl: the pieces shared by its verbs. main.c parses arguments,
 * rpc.c talks to the daemon, verbs.c builds requests, render*.c and
 * export.c print answers. Functions return an exit code (enum ctl_exit)
 * unless said otherwise; the one that fails prints the message. */
#ifndef DNNFAULT_CTL_H
#define DNNFAULT_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "address.h"
#include "conn.h"
#include "json.h"

enum ctl_exit {
	CTL_OK = 0,
	CTL_ERROR = 1,
	CTL_USAGE = 2,
	CTL_UNREACHABLE = 3,
	CTL_NO_SUCH_RUN = 4,
};

#define CTL_DEFAULT_TIMEOUT_MS 5000
#define CTL_DEFAULT_INTERVAL_MS 2000

enum ctl_format { CTL_FORMAT_DEFAULT, CTL_FORMAT_CSV, CTL_FORMAT_JSONL };

struct ctl {
	struct address addr;
	char addr_text[ADDRESS_PATH_MAX + ADDRESS_HOST_MAX];
	bool json;
	int timeout_ms;			/* -1: wait forever */
	const char *token;
	uint32_t limit;			/* runs --limit; 0: not given */
	enum ctl_format format;		/* export --format */
	uint32_t interval_ms;		/* watch --interval */
	uint32_t count;			/* watch --count; 0: until interrupted */
	bool clear;			/* reference --clear */
	char **args;			/* the verb's operands */
	int n_args;
	struct dnnfault_conn *conn;
	uint64_t next_id;
};

/* rpc.c */
int rpc__connect(struct ctl *ctl);
void rpc__close(struct ctl *ctl);

/* Called for each response of a call; returns CTL_OK to go on. */
typedef int (*rpc_cb)(const Dnnfault__ControlResponse *r, void *arg);

/* Sends `req` (its id is set here) and hands every response that carries
 * `expect` to cb until the last one. Error results become exit codes:
 * ERR_NO_SUCH_RUN gives CTL_NO_SUCH_RUN, others CTL_ERROR. */
int rpc__call(struct ctl *ctl, Dnnfault__ControlRequest *req,
	      Dnnfault__ControlResponse__ResultCase expect, rpc_cb cb, void *arg);

/* verbs.c */
int verb__status(struct ctl *ctl);
int verb__runs(struct ctl *ctl);
int verb__show(struct ctl *ctl);
int verb__export(struct ctl *ctl);
int verb__version(struct ctl *ctl);
int verb__stats(struct ctl *ctl);
int verb__label(struct ctl *ctl);
int verb__reference(struct ctl *ctl);
int verb__model(struct ctl *ctl);
int verb__watch(struct ctl *ctl);

/* learn.c: train, evaluate and rows, which need no daemon. */
int learn__main(int argc, char **argv);

/* table.c: a column-aligned text table that owns copies of its cells. */
struct table {
	size_t n_cols;
	char **cells;
	size_t n_cells, cap;
};

void table__init(struct table *t, size_t n_cols, const char *const *heads);
void table__cell(struct table *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void table__print(const struct table *t, FILE *out);
void table__free(struct table *t);

/* ISO-8601 local time "2024-05-01T12:34:56+02:00", or "-" when !has. */
const char *text__time(char *buf, size_t len, bool has, double t);
/* An optional unsigned number, or "-". */
const char *text__u64(char *buf, size_t len, bool has, uint64_t v);
/* An optional double for people: 6 significant digits, nan/inf/-inf. */
const char *text__double(char *buf, size_t len, bool has, double v);
const char *text__str(const char *s);	/* s, or "-" for NULL/empty */
const char *text__end_status(int status);

/* render.c: human output of status, runs, stats, model and watch. */
void render__status(const Dnnfault__StatusResponse *r, FILE *out);
void render__runs(const Dnnfault__StatusResponse *r, FILE *out);
void render__stats(const Dnnfault__StatsResponse *r, FILE *out);
void render__model(const Dnnfault__ModelResponse *r, FILE *out);
/* What `watch` compares between polls: state, health, most likely cause
 * and symptoms, as one string; malloc'd. */
char *render__watch_key(const Dnnfault__RunSummary *s);
/* One `watch` line about s, stamped with `now` (unix seconds). */
void render__watch_line(const Dnnfault__RunSummary *s, double now, FILE *out);

/* render_show.c */
void render__show(const Dnnfault__RunDetail *d, FILE *out);
/* The rank that reports through `stream`, from the detail's stream list;
 * false when the stream is not listed or names no rank. */
bool render__rank_of(const Dnnfault__RunDetail *d, uint64_t stream, uint32_t *rank);

/* render_json.c */
void render_json__status(const Dnnfault__StatusResponse *r, FILE *out);
void render_json__show(const Dnnfault__RunDetail *d, FILE *out);
void render_json__stats(const Dnnfault__StatsResponse *r, FILE *out);
void render_json__model(const Dnnfault__ModelResponse *r, FILE *out);
void render_json__watch_line(const Dnnfault__RunSummary *s, double now, FILE *out);

/* export.c */
int export__run(struct ctl *ctl, const char *run);

#endif
