/* Training and prediction of one XGBoost binary classifier on a subset of
 * rows, with the class weighting and the parameters the selection tries.
 * Blocking and CPU-heavy: for the offline training and evaluation verbs. */
#ifndef DNNFAULT_BOOST_H
#define DNNFAULT_BOOST_H

#include <stdbool.h>
#include <stddef.h>

struct boost_params {
	int max_depth;
	double eta;
	int rounds;
	double min_child_weight;
	double subsample, colsample;
	bool forest;		/* a random forest of `rounds` trees (DeepFD's learner) */
	int seed;
};

/* A matrix of float features, row-major, NaN = missing: the first n_cols
 * columns of rows `stride` floats apart (stride 0: n_cols). */
struct boost_rows {
	const float *x;
	size_t n_cols;
	const size_t *idx;	/* the rows used */
	size_t n;
	size_t stride;
};

/* Trains on rows r with labels y[idx[i]] (0 or 1), positives weighted by
 * sqrt(negatives/positives) so that a rare cause still counts. Returns 0
 * or -EIO with `err` set; *out is freed with boost__free. */
int boost__train(const struct boost_rows *r, const float *y, const struct boost_params *p,
		 void **out, char *err, size_t len);

/* Probabilities for rows r into out[r->n], using the first `rounds` rounds
 * (0: all). Returns 0 or -EIO with `err` set. */
int boost__predict(void *b, const struct boost_rows *r, int rounds, float *out, char *err, size_t len);

int boost__save(void *b, const char *path, char *err, size_t len);

void boost__free(void *b);

#endif
