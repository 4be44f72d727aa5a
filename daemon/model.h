/* A model bundle: one XGBoost binary classifier per root cause, the
 * feature schema they were trained on, calibrated thresholds and the
 * training record. On disk a directory:
 *
 *   bundle.txt        "key value..." lines (docs/model.md)
 *   <cause>.json      XGBoost model of that cause
 *
 * Loading refuses a bundle of another feature schema. Prediction is
 * blocking work: callers run it off the event loop. */
#ifndef DNNFAULT_MODEL_H
#define DNNFAULT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "causes.h"

#define MODEL_FORMAT 1

struct model_cause {
	bool present;
	void *booster;		/* BoosterHandle */
	double threshold;	/* probability from which the cause is reported as faulty */
	double suspect;		/* ... and from which the run is suspect */
};

struct model {
	char *path;
	char *text;		/* bundle.txt as read, for `dnnfaultctl model info` */
	int schema_version;
	uint64_t schema_hash;
	size_t n_features;
	struct model_cause cause[CAUSE_COUNT];
};

enum model_health { MODEL_HEALTHY, MODEL_SUSPECT, MODEL_FAULTY };

/* Loads the bundle in directory `dir`. Returns 0, or -ENOENT (no bundle
 * there), -EINVAL (malformed or another feature schema) or -EIO, with a
 * message in err. */
int model__load(const char *dir, struct model **out, char *err, size_t len);

void model__free(struct model *m);

/* Probabilities of every cause for n rows of features (row-major,
 * n x m->n_features, NaN = missing) into prob[n * CAUSE_COUNT]; a cause the
 * bundle lacks gets NaN. Returns 0 or -EIO. */
int model__predict(const struct model *m, const double *features, size_t n, double *prob);

/* Health from one row of probabilities and the calibrated thresholds. */
enum model_health model__health(const struct model *m, const double prob[CAUSE_COUNT]);

const char *model__health_name(enum model_health h);

/* Writes bundle.txt of a trained bundle: `text` is everything after the
 * header lines, which this writes from the current schema. */
int model__write_header(FILE *f);

#endif
