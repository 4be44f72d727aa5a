/* Model selection for the diagnosis: a detector (is the run faulty at
 * all?) and one classifier per root cause (which cause, given a fault).
 * Grouped cross-validation (whole base programs held out) chooses the
 * detector's rounds and its thresholds for a target share of false alarms
 * on healthy rows (leaving one program out at a time, so that its models
 * are as confident as the final one, which sets the thresholds' level),
 * each cause's rounds, and the ranking ratio: a run the
 * detector flags is given its most probable cause and every cause within
 * that ratio of it (model__report_causes). */
#ifndef DNNFAULT_FIT_H
#define DNNFAULT_FIT_H

#include <stdbool.h>
#include <stddef.h>

#include "boost.h"
#include "causes.h"
#include "dataset.h"

struct fit {
	struct boost_params fault;		/* the detector */
	double fault_threshold, fault_suspect;	/* faulty from, suspect from */
	/* The same target met at each point of progress on its own, instead
	 * of the strictest point's threshold serving all (fault_threshold is
	 * their maximum): what `evaluate` scores as a threshold per point. */
	double fault_threshold_at[DATASET_POINTS], fault_suspect_at[DATASET_POINTS];
	/* The detector for runs with a reference run (features__apply_reference),
	 * trained on the rows that have one; absent when none do. */
	bool has_ref;
	struct boost_params ref;
	double ref_threshold, ref_suspect, cv_ref_detection, cv_ref_false_alarm;
	double ref_threshold_at[DATASET_POINTS], ref_suspect_at[DATASET_POINTS];	/* as fault_threshold_at */
	/* The outcome check at each point: a run whose validation metric fell
	 * short of its reference's by at least ref_shortfall_at[k]
	 * (features__shortfall; INFINITY: no check) is faulty, the others
	 * when the reference detector's probability reaches
	 * ref_shortfall_threshold_at[k]; together at the target share of
	 * healthy rows flagged. */
	double ref_shortfall_at[DATASET_POINTS], ref_shortfall_threshold_at[DATASET_POINTS];
	struct boost_params cause[CAUSE_COUNT];	/* trained on faulty rows only */
	double ratio;
	/* Out-of-fold measures at the chosen settings, for the record. */
	double cv_detection, cv_false_alarm, cv_macro_f1;
	double cv_precision[CAUSE_COUNT], cv_recall[CAUSE_COUNT], cv_f1[CAUSE_COUNT];
};

struct fit_opts {
	int folds;			/* grouped folds for the causes' selection (2) */
	int detector_folds;		/* ... for the detector's (0: one per program) */
	double false_alarm;		/* target share of healthy rows flagged faulty (0.035) */
	int seed;			/* XGBoost's random seed, for every model (1) */
	bool verbose;			/* progress on stderr */
};

extern const struct fit_opts fit_defaults;

/* The rows of a dataset as floats for XGBoost: x[n x n_cols],
 * y[cause][n] labels, fault[n] (any cause) and has_ref[n] (the row has a
 * reference run). Every model but the reference detector reads the first
 * n_base columns, the features of the run alone. Returns 0 or -ENOMEM;
 * free with fit__free_matrix. */
struct fit_matrix {
	float *x;
	float *y[CAUSE_COUNT];
	float *fault;
	bool *has_ref;
	size_t n, n_cols, n_base;
};
int fit__matrix(const struct dataset *d, bool deepfd, struct fit_matrix *m);
void fit__free_matrix(struct fit_matrix *m);

/* Chooses every setting of struct fit from rows idx[0..n). Returns 0 or a
 * negative errno with `err` set. */
int fit__select(const struct dataset *d, const struct fit_matrix *m, const size_t *idx, size_t n,
		const struct fit_opts *o, struct fit *f, char *err, size_t len);

/* The trained boosters of a fit. */
struct fit_models {
	void *fault;
	void *ref;		/* NULL without fit.has_ref */
	void *cause[CAUSE_COUNT];
};

/* Trains the detector on rows idx and each cause on the faulty ones among
 * them. Returns 0 or a negative errno with `err` set; free with
 * fit__free_models (also after a failure). */
int fit__train(const struct fit_matrix *m, const size_t *idx, size_t n, const struct fit *f,
	       struct fit_models *out, char *err, size_t len);
void fit__free_models(struct fit_models *models);

/* Probabilities of rows idx from trained models: fault[n], the reference
 * detector's fault_ref[n] (NaN for a row without a reference, or without
 * that model) and prob[n * CAUSE_COUNT]. */
int fit__predict(const struct fit_models *models, const struct fit_matrix *m, const size_t *idx, size_t n,
		 double *fault, double *fault_ref, double *prob, char *err, size_t len);

/* The causes reported for one row under f's thresholds and ratio: by the
 * reference detector when fault_ref is a number, else by the detector. */
cause_set fit__decide(const struct fit *f, double fault, double fault_ref, const double prob[CAUSE_COUNT]);

/* The same with the threshold of the row's point of progress (0 ..
 * DATASET_POINTS - 1): ref_threshold_at[point] or fault_threshold_at[point]. */
cause_set fit__decide_at(const struct fit *f, double fault, double fault_ref, int point,
			 const double prob[CAUSE_COUNT]);

/* The same with the outcome check of the row's point when it has a
 * reference (ref_shortfall_at, ref_shortfall_threshold_at); shortfall is
 * features__shortfall of its features. */
cause_set fit__decide_shortfall(const struct fit *f, double fault, double fault_ref, double shortfall, int point,
				const double prob[CAUSE_COUNT]);

/* Per-cause counts of reported against true cause sets: what selection
 * and the evaluation score. */
struct fit_counts {
	size_t tp[CAUSE_COUNT], fp[CAUSE_COUNT], fn[CAUSE_COUNT];
};
void fit__count(struct fit_counts *k, cause_set truth, cause_set pred);
double fit__f1(size_t tp, size_t fp, size_t fn);
double fit__macro_f1(const struct fit_counts *k);

/* A row at one point of progress, for the outcome check: the reference
 * detector's probability and the run's shortfall (features__shortfall). */
struct fit_outcome_row {
	double p, shortfall;
};

/* The outcome check of one point: the shortfall from which a run is
 * faulty whatever its probability (INFINITY: none) and the probability
 * threshold for the rest that together flag at most `share` of the
 * healthy rows (and among such pairs, the most faulty rows; ties keep the
 * larger shortfall). Candidates lie just above each healthy row's
 * shortfall, so the check spends the false-alarm budget one healthy row
 * at a time, and are positive: a run at least as good as its reference
 * is never faulty by its outcome. Sorts healthy; scratch holds nh
 * doubles. */
void fit__outcome_check(struct fit_outcome_row *healthy, size_t nh, const struct fit_outcome_row *faulty, size_t nf,
			double share, double *scratch, double *shortfall, double *threshold);

/* The lowest threshold at which at most `share` of the healthy rows'
 * scores healthy[0..n) reach it (sorts healthy in place). */
double fit__threshold_for(double *healthy, size_t n, double share);

#endif
