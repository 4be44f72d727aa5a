/* The offline verbs: they read a corpus (a store or its rows export)
 * directly, not through the daemon. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "learn.h"

static const char train_usage[] =
	"usage: dnnfaultctl train CORPUS BUNDLE_DIR [--references FILE.csv] [--seed N]\n"
	"                         [--false-alarm SHARE] [--quiet]\n";
static const char evaluate_usage[] =
	"usage: dnnfaultctl evaluate CORPUS [REPORT.md] [--references FILE.csv] [--predictions FILE.csv]\n"
	"                            [--seed N] [--false-alarm SHARE] [--quiet]\n";
static const char rows_usage[] =
	"usage: dnnfaultctl rows STORE [ROWS.csv]\n"
	"STORE is a dnnfault store (SQLite file).\n";
/* What train's and evaluate's operands and --references are. */
static const char corpus_usage[] =
	"CORPUS is a dnnfault store (SQLite file) or a rows CSV (\"-\": stdin).\n"
	"--references lists each program's known-healthy runs (\"program,run\" lines), with\n"
	"which its other runs are compared (docs/model.md).\n";

/* The usage of `verb` to stderr; returns CTL_USAGE. */
static int learn__usage(const char *verb)
{
	if (strcmp(verb, "rows") == 0) {
		fputs(rows_usage, stderr);
		return CTL_USAGE;
	}
	fputs(strcmp(verb, "train") == 0 ? train_usage : evaluate_usage, stderr);
	fputs(corpus_usage, stderr);
	return CTL_USAGE;
}

int learn__main(int argc, char **argv)
{
	const char *verb = argv[0], *pos[2] = {0}, *predictions = NULL, *references = NULL;
	int n_pos = 0;
	struct fit_opts o = fit_defaults;
	o.verbose = true;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quiet") == 0)
			o.verbose = false;
		else if (strcmp(argv[i], "--predictions") == 0 && i + 1 < argc && strcmp(verb, "evaluate") == 0)
			predictions = argv[++i];
		else if (strcmp(argv[i], "--references") == 0 && i + 1 < argc && strcmp(verb, "rows") != 0)
			references = argv[++i];
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc && strcmp(verb, "rows") != 0) {
			/* XGBoost's seed: how much a result owes to chance shows
			 * in the spread over a few seeds (docs/evaluation.md). */
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (*end != '\0' || end == argv[i] || v < 0 || v > 1000000000) {
				fprintf(stderr, "dnnfaultctl: --seed wants a number from 0 to 1000000000\n");
				return CTL_USAGE;
			}
			o.seed = (int)v;
		}
		else if (strcmp(argv[i], "--false-alarm") == 0 && i + 1 < argc && strcmp(verb, "rows") != 0) {
			/* The detector's budget: the share of healthy rows it may
			 * flag in its own validation (docs/model.md). */
			char *end;
			double v = strtod(argv[++i], &end);
			if (*end != '\0' || end == argv[i] || !(v > 0 && v < 0.5)) {
				fprintf(stderr, "dnnfaultctl: --false-alarm wants a share above 0 and below 0.5\n");
				return CTL_USAGE;
			}
			o.false_alarm = v;
		}
		else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && n_pos < 2)
			pos[n_pos++] = argv[i];
		else {
			fprintf(stderr, "dnnfaultctl: unexpected argument \"%s\"\n", argv[i]);
			return learn__usage(verb);
		}
	}
	bool train = strcmp(verb, "train") == 0, rows = strcmp(verb, "rows") == 0;
	if (n_pos < 1 || (train && n_pos < 2))
		return learn__usage(verb);
	char err[512] = "";
	struct dataset d;
	int rv = learn__load(pos[0], &d, err, sizeof err);
	if (rv != 0) {
		fprintf(stderr, "dnnfaultctl: %s\n", err);
		return CTL_ERROR;
	}
	if (references != NULL) {
		FILE *f = fopen(references, "r");
		if (f == NULL)
			snprintf(err, sizeof err, "%s: %s", references, strerror(errno));
		rv = f != NULL ? dataset__set_references(&d, f, err, sizeof err) : -errno;
		if (f != NULL)
			fclose(f);
		if (rv != 0) {
			fprintf(stderr, "dnnfaultctl: %s\n", err);
			dataset__free(&d);
			return CTL_ERROR;
		}
	}
	if (o.verbose) {
		size_t with = 0;
		for (size_t i = 0; i < d.n; i++)
			with += d.meta[i].reference != 0;
		fprintf(stderr, "%zu rows of %zu program%s from %s, %zu with a reference run\n", d.n, d.n_groups,
			d.n_groups == 1 ? "" : "s", pos[0], with);
	}
	FILE *out = stdout;
	if (!train && pos[1] != NULL && (out = fopen(pos[1], "w")) == NULL) {
		fprintf(stderr, "dnnfaultctl: %s: %s\n", pos[1], strerror(errno));
		dataset__free(&d);
		return CTL_ERROR;
	}
	FILE *pred = NULL;
	if (predictions != NULL && (pred = fopen(predictions, "w")) == NULL) {
		snprintf(err, sizeof err, "%s: %s", predictions, strerror(errno));
		rv = -errno;
	} else if (train)
		rv = learn__train(&d, pos[0], pos[1], &o, err, sizeof err);
	else if (rows)
		rv = dataset__write_csv(&d, out);
	else
		rv = learn__evaluate(&d, &o, out, pred, err, sizeof err);
	if (pred != NULL && fclose(pred) != 0 && rv == 0) {
		snprintf(err, sizeof err, "%s: %s", predictions, strerror(errno));
		rv = -EIO;
	}
	if (out != stdout && fclose(out) != 0 && rv == 0) {
		snprintf(err, sizeof err, "%s: %s", pos[1], strerror(errno));
		rv = -EIO;
	}
	if (rv != 0)
		fprintf(stderr, "dnnfaultctl: %s\n", err[0] ? err : strerror(-rv));
	dataset__free(&d);
	return rv == 0 ? CTL_OK : CTL_ERROR;
}
