/* A model bundle: an XGBoost detector (is the run faulty?) with its
 * calibrated thresholds, optionally a second one for runs compared with a
 * reference run, one XGBoost classifier per root cause (which cause,
 * given a fault), the ranking ratio, the feature schema they were trained
 * on and the training record. On disk a directory:
 *
 *   bundle.txt        "key value..." lines (docs/model.md)
 *   fault.json        the detector, on the run's own features
 *   fault_ref.json    the reference detector, on all of them (optional)
 *   <cause>.json      the model of that cause, on the run's own features
 *
 * Loading refuses a bundle of another format or feature schema.
 * Prediction is blocking work: callers run it off the event loop. */
#ifndef DNNFAULT_MODEL_H
#define DNNFAULT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "causes.h"

#define MODEL_FORMAT 3

struct model_booster {
	bool present;
	void *booster;		/* BoosterHandle */
};

#define MODEL_POINTS_MAX 8

struct model_detector {
	struct model_booster b;
	double threshold;	/* fault probability from which the run is faulty */
	double suspect;		/* ... and from which it is suspect */
	/* Optional: thresholds chosen for each of n_at points of progress
	 * at[0] < at[1] < ... (shares of the planned training), for runs
	 * whose progress is known (model__health). */
	size_t n_at;
	double at[MODEL_POINTS_MAX], threshold_at[MODEL_POINTS_MAX], suspect_at[MODEL_POINTS_MAX];
	/* Optional, the reference detector's only (has_shortfall): the outcome
	 * check at the same points, the shortfall of the validation metric
	 * from its reference's (features__shortfall) from which a run is
	 * faulty whatever its probability; INFINITY: no check there. */
	bool has_shortfall;
	double shortfall_at[MODEL_POINTS_MAX];
};

struct model {
	char *path;
	char *text;		/* bundle.txt as read, for `dnnfaultctl model info` */
	int schema_version;
	uint64_t schema_hash;
	size_t n_features;
	struct model_detector fault;
	struct model_detector fault_ref;	/* b.present: the bundle has one */
	double ratio;		/* causes within this ratio of the top one are reported */
	struct model_booster cause[CAUSE_COUNT];
};

enum model_health { MODEL_HEALTHY, MODEL_SUSPECT, MODEL_FAULTY };

/* Loads the bundle in directory `dir`. Returns 0, or -ENOENT (no bundle
 * there), -EINVAL (malformed or another feature schema) or -EIO, with a
 * message in err. */
int model__load(const char *dir, struct model **out, char *err, size_t len);

void model__free(struct model *m);

/* For n rows of features (row-major, n x m->n_features, NaN = missing):
 * the probability that the run is faulty into fault[n], the reference
 * detector's into fault_ref[n] unless it is NULL (NaN when the bundle has
 * none; meaningful only for rows whose reference block is filled), and
 * each cause's probability given a fault into prob[n * CAUSE_COUNT] (NaN
 * for a cause the bundle lacks). Returns 0, -ENOMEM or -EIO. */
int model__predict(const struct model *m, const double *features, size_t n, double *fault, double *fault_ref,
		   double *prob);

/* Health from the calibrated thresholds: of the reference detector when
 * fault_ref is a number (the run has a reference), else of the detector.
 * With `progress` (features__progress; NaN: unknown) and thresholds per
 * point for that detector, those of the points around the run's progress
 * judge it, the stricter of the two; before the first point, or without
 * them, the detector's own thresholds (the strictest point's). Where the
 * reference detector has an outcome check there, a run whose shortfall
 * (features__shortfall; NaN: none) reaches the check's is faulty. */
enum model_health model__health(const struct model *m, double fault, double fault_ref, double shortfall,
				double progress);

/* The causes to report for a run judged faulty or suspect: the most
 * probable one and every cause within `ratio` of it (NaN: absent). One
 * rule for the daemon and the evaluation. */
cause_set model__report_causes(const double prob[CAUSE_COUNT], double ratio);

const char *model__health_name(enum model_health h);

/* Writes bundle.txt of a trained bundle: `text` is everything after the
 * header lines, which this writes from the current schema. */
int model__write_header(FILE *f);

#endif
