/* The offline verbs of dnnfaultctl that learn from a corpus: export of the
 * feature rows, training of a model bundle, and the evaluation against the
 * published baselines. Each returns 0 or a negative errno with `err` set. */
#ifndef DNNFAULT_LEARN_H
#define DNNFAULT_LEARN_H

#include <stdio.h>

#include "dataset.h"
#include "fit.h"

/* Rows from `path`: a dnnfault store (SQLite) or a rows CSV ("-": stdin). */
int learn__load(const char *path, struct dataset *d, char *err, size_t len);

/* Selects, trains and writes a bundle to directory `out` (created). */
int learn__train(const struct dataset *d, const char *source, const char *out,
		 const struct fit_opts *o, char *err, size_t len);

/* Leave-one-program-out evaluation of ours and the baselines; writes
 * markdown tables to `out` and, unless `predictions` is NULL, our held-out
 * probabilities and thresholds per row as CSV. */
int learn__evaluate(const struct dataset *d, const struct fit_opts *o, FILE *out, FILE *predictions,
		    char *err, size_t len);

#endif
