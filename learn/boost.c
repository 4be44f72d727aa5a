#include "boost.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <xgboost/c_api.h>

static int matrix(const struct boost_rows *r, DMatrixHandle *out)
{
	float *x = malloc((r->n ? r->n : 1) * r->n_cols * sizeof *x);
	if (x == NULL)
		return -ENOMEM;
	size_t stride = r->stride ? r->stride : r->n_cols;
	for (size_t i = 0; i < r->n; i++)
		for (size_t j = 0; j < r->n_cols; j++)
			x[i * r->n_cols + j] = r->x[r->idx[i] * stride + j];
	/* XGBoost takes NaN as missing but refuses Inf. */
	for (size_t i = 0; i < r->n * r->n_cols; i++)
		if (isinf(x[i]))
			x[i] = x[i] > 0 ? FLT_MAX : -FLT_MAX;
	int rv = XGDMatrixCreateFromMat(x, r->n, r->n_cols, NAN, out) == 0 ? 0 : -EIO;
	free(x);
	return rv;
}

static int set(BoosterHandle b, const char *key, double v)
{
	char text[32];
	snprintf(text, sizeof text, "%.17g", v);
	return XGBoosterSetParam(b, key, text);
}

int boost__train(const struct boost_rows *r, const float *y, const struct boost_params *p,
		 void **out, char *err, size_t len)
{
	DMatrixHandle d;
	int rv = matrix(r, &d);
	if (rv != 0) {
		snprintf(err, len, "training matrix: %s", rv == -ENOMEM ? "out of memory" : XGBGetLastError());
		return rv;
	}
	float *labels = malloc((r->n ? r->n : 1) * sizeof *labels);
	size_t pos = 0;
	for (size_t i = 0; labels != NULL && i < r->n; i++)
		pos += (labels[i] = y[r->idx[i]] > 0.5f) != 0;
	BoosterHandle b = NULL;
	if (labels == NULL || XGDMatrixSetFloatInfo(d, "label", labels, r->n) != 0 ||
	    XGBoosterCreate(&d, 1, &b) != 0)
		rv = -EIO;
	/* Half-way (square root) towards balancing the classes: the rare
	 * cause gets weight, the thresholds chosen afterwards do the rest. */
	double weight = pos ? sqrt((double)(r->n - pos) / (double)pos) : 1.0;
	rv = rv ? rv
		: XGBoosterSetParam(b, "objective", "binary:logistic") ||
			  XGBoosterSetParam(b, "tree_method", "hist") ||
			  XGBoosterSetParam(b, "verbosity", "0") ||
			  /* 64 bins: a third of the default's time, same quality here. */
			  XGBoosterSetParam(b, "max_bin", "64") ||
			  set(b, "max_depth", p->max_depth) ||
			  set(b, "min_child_weight", p->min_child_weight) ||
			  set(b, "subsample", p->subsample) ||
			  set(b, "seed", p->seed) ||
			  set(b, "scale_pos_weight", weight);
	if (rv == 0 && p->forest)
		/* XGBoost's random-forest mode: many parallel trees, one round,
		 * sampled rows and sqrt-like feature sampling per node. */
		rv = set(b, "num_parallel_tree", p->rounds) || set(b, "eta", 1.0) ||
		     set(b, "colsample_bynode", p->colsample) ||
		     set(b, "max_depth", p->max_depth);
	else if (rv == 0)
		rv = set(b, "eta", p->eta) || set(b, "colsample_bytree", p->colsample);
	int rounds = p->forest ? 1 : p->rounds;
	for (int i = 0; rv == 0 && i < rounds; i++)
		rv = XGBoosterUpdateOneIter(b, i, d) ? -EIO : 0;
	if (rv != 0) {
		rv = -EIO;
		snprintf(err, len, "training: %s", XGBGetLastError());
		if (b != NULL)
			XGBoosterFree(b);
	} else {
		*out = b;
	}
	free(labels);
	XGDMatrixFree(d);
	return rv;
}

int boost__predict(void *b, const struct boost_rows *r, int rounds, float *out, char *err, size_t len)
{
	DMatrixHandle d;
	int rv = matrix(r, &d);
	if (rv != 0) {
		snprintf(err, len, "prediction matrix: %s", rv == -ENOMEM ? "out of memory" : XGBGetLastError());
		return rv;
	}
	const float *p;
	bst_ulong n;
	if (XGBoosterPredict(b, d, 0, (unsigned)rounds, 0, &n, &p) != 0 || n != r->n) {
		snprintf(err, len, "prediction: %s", XGBGetLastError());
		rv = -EIO;
	}
	for (size_t i = 0; rv == 0 && i < r->n; i++)
		out[i] = p[i];
	XGDMatrixFree(d);
	return rv;
}

int boost__save(void *b, const char *path, char *err, size_t len)
{
	if (XGBoosterSaveModel(b, path) != 0) {
		snprintf(err, len, "%s: %s", path, XGBGetLastError());
		return -EIO;
	}
	return 0;
}

void boost__free(void *b)
{
	if (b != NULL)
		XGBoosterFree(b);
}
