/* The published rule-based tools that the learned model is compared with,
 * reimplemented on our telemetry: AutoTrainer (Zhang et al., ICSE 2021),
 * DeepDiagnosis (Wardat et al., ICSE 2022) and UMLAUT (Schoop et al., CHI
 * 2021), each reduced to the root causes of design.md that its repair
 * advice points to; and the features of DeepFD (Cao et al., ICSE 2022),
 * whose learner is trained elsewhere. Pure functions of a series: no I/O.
 * One file per tool in this folder cites the source of every threshold and
 * mapping; common.c holds what they read alike. */
#ifndef DNNFAULT_BASELINES_H
#define DNNFAULT_BASELINES_H

#include <stddef.h>

#include "causes.h"
#include "series.h"

/* Each tool looks at the series (all its n steps and n_epochs epochs: the
 * caller passes a prefix view to judge a run part-way) and returns the set
 * of root causes its repair table would point to (0 = it sees nothing
 * wrong). */
cause_set baselines__autotrainer(const struct series *s);
cause_set baselines__deepdiagnosis(const struct series *s);
cause_set baselines__umlaut(const struct series *s);

/* DeepFD-style features: DEEPFD_COUNTERS per-sample symptom counter series
 * (DeepFD's monitor, evaluated at every sample) aggregated by DEEPFD_STATS
 * statistics (DeepFD's: mean, std, skew, median, var, sem, max, min).
 * Feature i is counter i / DEEPFD_STATS, statistic i % DEEPFD_STATS. */
#define DEEPFD_COUNTERS 18
#define DEEPFD_STATS 8
#define DEEPFD_FEATURES (DEEPFD_COUNTERS * DEEPFD_STATS)

/* Writes the features of `s` to out. A statistic that is undefined (no
 * samples; std, var and sem of one sample; skew of fewer than three) is NaN,
 * as in pandas; so is every feature when memory runs out. */
void baselines__deepfd_features(const struct series *s, double out[DEEPFD_FEATURES]);

/* Name of feature i, e.g. "fd_explode_gradient_max"; NULL when i is out of
 * range. */
const char *baselines__deepfd_name(size_t i);

#endif
