/* Features of a run so far (named run_features so as not to shadow glibc's
 * <features.h>): the one implementation that model training,
 * evaluation and live diagnosis all use, so that train and serve never
 * drift apart. docs/features.md lists every feature.
 *
 * The schema is the ordered list of feature names. Changing it (a feature
 * added, removed, reordered or computed differently) means a new
 * FEATURES_SCHEMA_VERSION; a model bundle records the version and the hash
 * of the names and refuses to load against any other. */
#ifndef DNNFAULT_FEATURES_H
#define DNNFAULT_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "series.h"

#define FEATURES_SCHEMA_VERSION 4
#define FEATURES_NAME_MAX 48

/* The number of features of this schema version. */
size_t features__count(void);

/* The features of the run alone, which come first; the rest ("ref_...")
 * compare the run with a reference run of the same program. */
size_t features__base_count(void);

/* Name of feature `i` (< features__count()), e.g. "loss_slope". */
const char *features__name(size_t i);

/* FNV-1a hash of the schema's names, in order. */
uint64_t features__schema_hash(void);

/* Computes the features of the first `upto` steps of `s` (and the epochs
 * that ended by then) into out[features__count()]. upto > s->n is
 * clamped. A feature that cannot be computed (no data, no such layer) is
 * NaN, which the models treat as missing; so is the reference block until
 * features__apply_reference fills it. Returns 0 or -ENOMEM. */
int features__compute(const struct series *s, size_t upto, double *out);

/* Fills the reference block of x (a run's features, computed by
 * features__compute) from ref, the features of its reference run at the
 * same share of its planned training: each compared feature's difference,
 * NaN where either is missing, then the validation metric's differences
 * over the reference's noise. ref NULL: no reference, all NaN. */
void features__apply_reference(double *x, const double *ref);

/* How far the run's validation metric fell short of its reference's at
 * the same point of training (the reference's minus the run's: positive
 * when the run is worse), from x with its reference block filled; NaN
 * without a reference or where either has no metric. What a bundle's
 * `shortfall_at` line judges (docs/model.md). */
double features__shortfall(const double *x);

/* How many samples of s lie within `share` (0..1] of its planned steps
 * (of the steps it ran, when it planned none); share 1 is all of them. At
 * least one when s has any. */
size_t features__upto(const struct series *s, double share);

/* How far s is into its planned training: (last step + 1) / planned steps,
 * above 1 past the plan; NaN when it planned none or has no sample. The
 * same measure as the training rows' points (features__upto). */
double features__progress(const struct series *s);

/* How many samples of the reference run `ref` to compare `run` with: as
 * far into its planned training as run is into its own (the same step
 * when either planned none). */
size_t features__reference_upto(const struct series *run, const struct series *ref);

/* A view of the first `upto` steps of `s` and the epochs that ended by
 * then, sharing its arrays: what a detector would have seen at that step. */
struct series features__prefix(const struct series *s, size_t upto);

#endif
