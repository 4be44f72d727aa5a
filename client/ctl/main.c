/* dnnfaultctl: command-line client of dnnfaultd. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "dnnfault_config.h"

static const char usage_text[] =
	"usage: dnnfaultctl [--address ADDR] [--json] [--timeout MS] VERB [ARGS]\n"
	"\n"
	"verbs:\n"
	"  status [RUN...]                  health, symptoms and likely causes\n"
	"  runs [--limit N]                 list the runs the daemon knows\n"
	"  show RUN                         description, layers, ranks, epochs of a run\n"
	"  export RUN [--format csv|jsonl]  every stored step of a run, to stdout\n"
	"  label RUN CAUSE...|healthy       set the run's ground-truth root causes\n"
	"  reference RUN REF|--clear        name the run's reference run (an earlier,\n"
	"                                   healthy run of the same program), or clear it\n"
	"  version                          client and daemon versions\n"
	"  stats                            the daemon's counters\n"
	"  model [info|reload]              the daemon's model bundle; reload loads it again\n"
	"  watch [RUN] [--interval MS] [--count N]\n"
	"                                   follow runs: a line when health, top cause\n"
	"                                   or symptoms change (every 2000 ms; N polls)\n"
	"  train CORPUS BUNDLE_DIR          select and train a model bundle (offline)\n"
	"  evaluate CORPUS [REPORT.md] [--predictions FILE.csv]\n"
	"                                   leave-one-program-out evaluation (offline;\n"
	"                                   both take [--references FILE.csv] [--seed N]\n"
	"                                   [--false-alarm SHARE] [--quiet])\n"
	"  rows STORE [ROWS.csv]            export a corpus as feature rows (offline)\n"
	"  help                             this text\n"
	"\n"
	"options:\n"
	"  --address ADDR  unix:/path or tcp://host:port (default: $DNNFAULT_ADDRESS,\n"
	"                  else the daemon's default socket)\n"
	"  --json          machine-readable output (export, watch: jsonl)\n"
	"  --timeout MS    bound on connecting and on each wait for an answer\n"
	"                  (default 5000; 0 waits forever)\n"
	"  --version       print the client version and exit\n"
	"  -h, --help      print this text and exit\n"
	"\n"
	"exit status: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 no such run\n";

struct verb {
	const char *name;
	int (*run)(struct ctl *ctl);
	int min_args, max_args;		/* max -1: any number */
	const char *const *words;	/* what the first operand may be; NULL: anything */
};

static const char *const model_words[] = {"info", "reload", NULL};

static const struct verb verbs[] = {
	{"status", verb__status, 0, -1, NULL},
	{"runs", verb__runs, 0, 0, NULL},
	{"show", verb__show, 1, 1, NULL},
	{"export", verb__export, 1, 1, NULL},
	{"label", verb__label, 2, -1, NULL},
	{"reference", verb__reference, 1, 2, NULL},
	{"version", verb__version, 0, 0, NULL},
	{"stats", verb__stats, 0, 0, NULL},
	{"model", verb__model, 0, 1, model_words},
	{"watch", verb__watch, 0, 1, NULL},
	{"help", NULL, 0, 0, NULL},
};

/* The offline verbs (learn.c): they parse their own arguments, so they
 * must come first. */
static bool is_offline(const char *verb)
{
	return strcmp(verb, "train") == 0 || strcmp(verb, "evaluate") == 0 || strcmp(verb, "rows") == 0;
}

/* Prints a usage error and the usage text to stderr; returns CTL_USAGE. */
__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("dnnfaultctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n\n", stderr);
	va_end(ap);
	fputs(usage_text, stderr);
	return CTL_USAGE;
}

/* Parses a decimal in [min, max]; returns false for anything else. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max,
		       unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* The options that take a value; those of one verb are refused with any
 * other. */
static const struct value_flag {
	const char *name;
	const char *verb;	/* NULL: every verb */
} value_flags[] = {
	{"--address", NULL},
	{"--timeout", NULL},
	{"--limit", "runs"},
	{"--format", "export"},
	{"--interval", "watch"},
	{"--count", "watch"},
};

#define N_VALUE_FLAGS (sizeof value_flags / sizeof value_flags[0])

struct parsed {
	const char *verb;
	const char *address;
	bool version, help, clear;
	bool given[N_VALUE_FLAGS];	/* by index in value_flags */
};

/* Applies one flag (`value` is its argument when it takes one). Returns
 * CTL_OK or CTL_USAGE. */
static int apply_flag(struct ctl *ctl, struct parsed *p, const char *name,
		      const char *value)
{
	unsigned long v;
	if (strcmp(name, "--address") == 0) {
		p->address = value;
	} else if (strcmp(name, "--timeout") == 0) {
		if (!parse_uint(value, 0, 24ul * 3600 * 1000, &v))
			return usage_error("--timeout wants milliseconds, not \"%s\"", value);
		ctl->timeout_ms = v == 0 ? -1 : (int)v;
	} else if (strcmp(name, "--limit") == 0) {
		if (!parse_uint(value, 1, UINT32_MAX, &v))
			return usage_error("--limit wants a number of runs (at least 1), not \"%s\"", value);
		ctl->limit = (uint32_t)v;
	} else if (strcmp(name, "--format") == 0) {
		if (strcmp(value, "csv") == 0)
			ctl->format = CTL_FORMAT_CSV;
		else if (strcmp(value, "jsonl") == 0)
			ctl->format = CTL_FORMAT_JSONL;
		else
			return usage_error("--format is csv or jsonl, not \"%s\"", value);
	} else if (strcmp(name, "--interval") == 0) {
		if (!parse_uint(value, 1, 24ul * 3600 * 1000, &v))
			return usage_error("--interval wants milliseconds, not \"%s\"", value);
		ctl->interval_ms = (uint32_t)v;
	} else if (strcmp(name, "--count") == 0) {
		if (!parse_uint(value, 1, UINT32_MAX, &v))
			return usage_error("--count wants a number of polls, not \"%s\"", value);
		ctl->count = (uint32_t)v;
	}
	return CTL_OK;
}

/* The index of `name` in value_flags, or -1 when it takes no value. */
static int value_flag_index(const char *name)
{
	for (size_t i = 0; i < N_VALUE_FLAGS; i++)
		if (strcmp(value_flags[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Global flags may come before or after the verb; "--" ends flags. The
 * operands are collected in ctl->args, which points into argv: an operand
 * only ever moves to a slot that has already been read. */
static int parse_args(int argc, char **argv, struct ctl *ctl, struct parsed *p)
{
	bool flags_done = false;
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (flags_done || a[0] != '-' || a[1] == '\0') {
			if (p->verb == NULL)
				p->verb = a;
			else
				ctl->args[ctl->n_args++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			flags_done = true;
		} else if (strcmp(a, "--json") == 0) {
			ctl->json = true;
		} else if (strcmp(a, "--version") == 0) {
			p->version = true;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			p->help = true;
		} else if (strcmp(a, "--clear") == 0) {
			p->clear = true;
		} else {
			char *eq = strchr(a, '=');
			if (eq != NULL)
				*eq = '\0';
			int flag = value_flag_index(a);
			if (flag < 0)
				return usage_error("unknown option %s", a);
			p->given[flag] = true;
			const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
			if (value == NULL)
				return usage_error("%s needs a value", a);
			int rv = apply_flag(ctl, p, a, value);
			if (rv != CTL_OK)
				return rv;
		}
	}
	return CTL_OK;
}

/* Resolves the address from --address or the environment. An invalid one
 * is a usage error from either: the caller wrote it. */
static int resolve_address(struct ctl *ctl, const char *text)
{
	const char *env = getenv(ADDRESS_ENV);
	const char *given = text != NULL ? text : env != NULL && *env != '\0' ? env : NULL;
	int rv = text != NULL ? address__parse(text, &ctl->addr) : address__client_default(&ctl->addr);
	if (rv != 0 && given != NULL)
		return usage_error("invalid %s \"%s\" (want unix:/path or tcp://host:port)",
				   text != NULL ? "address" : ADDRESS_ENV, given);
	if (rv != 0) {
		fprintf(stderr, "dnnfaultctl: no default address: %s\n", strerror(-rv));
		return CTL_ERROR;
	}
	address__format(&ctl->addr, ctl->addr_text, sizeof ctl->addr_text);
	return CTL_OK;
}

/* Returns the verb named `name` with its operands checked, or NULL after
 * printing a usage error. */
static const struct verb *find_verb(const struct ctl *ctl, const struct parsed *p)
{
	const struct verb *v = NULL;
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (strcmp(verbs[i].name, p->verb) == 0)
			v = &verbs[i];
	if (v == NULL && is_offline(p->verb)) {
		usage_error("%s takes no daemon options (--address, --json, --timeout): it reads the "
			    "corpus itself (dnnfaultctl %s ...)", p->verb, p->verb);
		return NULL;
	}
	if (v == NULL) {
		usage_error("unknown verb \"%s\"", p->verb);
		return NULL;
	}
	if (ctl->n_args < v->min_args) {
		usage_error("%s needs a RUN (name or id)%s", v->name,
			    strcmp(v->name, "label") == 0 ? " and causes, or healthy" :
			    strcmp(v->name, "reference") == 0 ? " and a REF or --clear" : "");
		return NULL;
	}
	if (v->max_args >= 0 && ctl->n_args > v->max_args) {
		usage_error("too many arguments for %s", v->name);
		return NULL;
	}
	if (v->words != NULL && ctl->n_args > 0) {
		size_t i = 0;
		while (v->words[i] != NULL && strcmp(v->words[i], ctl->args[0]) != 0)
			i++;
		if (v->words[i] == NULL) {
			char want[64] = "";
			for (i = 0; v->words[i] != NULL; i++)
				snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s",
					 i > 0 ? "|" : "", v->words[i]);
			usage_error("%s takes %s, not \"%s\"", v->name, want, ctl->args[0]);
			return NULL;
		}
	}
	bool reference = strcmp(v->name, "reference") == 0;
	if (p->clear && !reference) {
		usage_error("--clear only applies to reference");
		return NULL;
	}
	if (reference && ctl->n_args != (p->clear ? 1 : 2)) {
		usage_error("%s", p->clear ? "reference --clear takes a RUN and no REF"
					   : "reference needs a RUN and a REF (name or id), or --clear");
		return NULL;
	}
	for (size_t i = 0; i < N_VALUE_FLAGS; i++)
		if (p->given[i] && value_flags[i].verb != NULL &&
		    strcmp(value_flags[i].verb, v->name) != 0) {
			usage_error("%s only applies to %s", value_flags[i].name, value_flags[i].verb);
			return NULL;
		}
	return v;
}

/* Whatever stdout could not take: a closed pipe ends quietly, other
 * failures (a full disk) are worth a message. */
static int finish_stdout(int rv)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return rv;
	/* A failed verb has said what went wrong already. */
	if (rv == CTL_OK && errno != EPIPE)
		fprintf(stderr, "dnnfaultctl: writing output: %s\n", strerror(errno));
	return rv == CTL_OK ? CTL_ERROR : rv;
}

int main(int argc, char **argv)
{
	/* A reader that goes away (dnnfaultctl export | head) shows up as
	 * EPIPE on write, which ends the output quietly. */
	signal(SIGPIPE, SIG_IGN);

	if (argc > 1 && is_offline(argv[1]))
		return finish_stdout(learn__main(argc - 1, argv + 1));

	struct ctl ctl = {
		.timeout_ms = CTL_DEFAULT_TIMEOUT_MS,
		.interval_ms = CTL_DEFAULT_INTERVAL_MS,
		.token = getenv("DNNFAULT_TOKEN"),
		.args = argv + 1,
		.next_id = 1,
	};
	struct parsed p = {0};
	int rv = parse_args(argc, argv, &ctl, &p);
	if (rv != CTL_OK)
		return rv;
	if (p.help) {
		fputs(usage_text, stdout);
		return finish_stdout(CTL_OK);
	}
	if (p.version) {
		printf("dnnfaultctl %s\n", DNNFAULT_VERSION);
		return finish_stdout(CTL_OK);
	}
	if (p.verb == NULL)
		return usage_error("no verb given");
	const struct verb *v = find_verb(&ctl, &p);
	if (v == NULL)
		return CTL_USAGE;
	ctl.clear = p.clear;
	if (v->run == NULL) {
		fputs(usage_text, stdout);
		return finish_stdout(CTL_OK);
	}
	rv = resolve_address(&ctl, p.address);
	if (rv != CTL_OK)
		return rv;
	rv = v->run(&ctl);
	rpc__close(&ctl);
	return finish_stdout(rv);
}
