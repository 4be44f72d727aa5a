/* Model selection for the per-cause classifiers: grouped cross-validation
 * (whole base programs held out) chooses each cause's tree depth and number
 * of rounds, then its decision threshold, then raises thresholds until the
 * false alarms on healthy rows meet the target. */
#ifndef DNNFAULT_FIT_H
#define DNNFAULT_FIT_H

#include <stdbool.h>
#include <stddef.h>

#include "boost.h"
#include "causes.h"
#include "dataset.h"

struct cause_fit {
	struct boost_params params;
	double threshold, suspect;
	double f1, precision, recall;	/* out-of-fold, at the threshold */
};

struct fit_opts {
	int folds;			/* grouped folds for selection (2) */
	double false_alarm;		/* healthy rows with any cause, target share (0.04) */
	bool verbose;			/* progress on stderr */
};

extern const struct fit_opts fit_defaults;

/* The rows of a dataset as floats for XGBoost: x[n x n_features], and
 * y[cause][n] labels. Returns 0 or -ENOMEM; free with fit__free_matrix. */
struct fit_matrix {
	float *x;
	float *y[CAUSE_COUNT];
	size_t n, n_cols;
};
int fit__matrix(const struct dataset *d, bool deepfd, struct fit_matrix *m);
void fit__free_matrix(struct fit_matrix *m);

/* Chooses parameters and thresholds of every cause from rows idx[0..n).
 * Returns 0 or a negative errno with `err` set. */
int fit__select(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		const struct fit_opts *o, struct cause_fit fit[CAUSE_COUNT], char *err, size_t len);

/* Trains every cause's final model on rows idx with its chosen parameters
 * into boosters[] (free each with boost__free). */
int fit__train(const struct fit_matrix *m, const size_t *idx, size_t n,
	       const struct cause_fit fit[CAUSE_COUNT], void *boosters[CAUSE_COUNT], char *err, size_t len);

#endif
