/* Rule detectors: the published symptoms of design.md with their default
 * thresholds. They are what a user sees next to the causes, inputs of the
 * learned model, and the rule-based baseline. Pure functions of a series. */
#ifndef DNNFAULT_SYMPTOMS_H
#define DNNFAULT_SYMPTOMS_H

#include <stddef.h>
#include <stdint.h>

#include "series.h"

#define SYMPTOMS(X)                 \
	X(nan_loss)                 \
	X(nan_tensor)               \
	X(exploding_gradient)       \
	X(vanishing_gradient)       \
	X(dead_relu)                \
	X(saturated_activation)     \
	X(loss_not_decreasing)      \
	X(unstable_loss)            \
	X(slow_convergence)         \
	X(overfitting)              \
	X(unchanged_weights)        \
	X(update_ratio)             \
	X(large_weights)            \
	X(abnormal_input)

enum symptom_id {
#define SYMPTOM_ENUM(name) SYMPTOM_##name,
	SYMPTOMS(SYMPTOM_ENUM)
#undef SYMPTOM_ENUM
	SYMPTOM_COUNT
};

struct symptom_thresholds {
	double loss_max;		/* nan_loss: loss >= this (AutoTrainer 1e3) */
	double explode_ratio;		/* grad norm first/last layer > this (70) */
	double vanish_ratio;		/* first/last < this (1e-3) ... */
	double vanish_first_norm;	/* ... and first-layer grad norm < this (1e-4) */
	double vanish_max_abs;		/* or every gradient below this (1e-7) */
	double dead_frac;		/* ReLU outputs <= 0 at least this share (0.7) */
	double saturated_frac;		/* sigmoid/tanh pre-activations |x|>5 over this share (0.5) */
	size_t loss_window;		/* samples without a new best loss (10) */
	/* ... and at least enough samples to span this many steps: 10
	 * minibatch losses of a densely sampled run are noise. 0 (the
	 * features') counts samples only; users see symptom_loss_window_steps
	 * (500: the span of 10 samples at the client's default interval). */
	uint64_t loss_window_steps;
	double unstable_swing;		/* accuracy change per check at least (0.03) ... */
	double unstable_share;		/* ... on at least this share of checks (0.2) */
	double slow_gain;		/* best per-check accuracy gain below (0.01) */
	double overfit_gap;		/* train - val metric at least (0.1) */
	size_t unchanged_checks;	/* weights unchanged over this many samples (5): */
	double unchanged_rtol;		/* |dw|/|w| below this (1e-5) */
	double update_low, update_high;	/* |dw|/|w| outside [1e-5, 1e-1] */
	/* Samples whose learning rate is below this share of the run's
	 * highest are not judged for small updates when they lie in the last
	 * tenth of the planned steps or the rate rises again after them: a
	 * schedule decays it to 0 (and restarts) on purpose. Users see
	 * SYMPTOM_LR_SCHEDULED_FRAC; 0 (the features') judges every sample. */
	double lr_scheduled_frac;
	/* An Embedding's default initialisation is N(0, 1), whose largest of
	 * a million draws is about 5: an Embedding layer's weights count as
	 * large only when their std is above this too. Users see
	 * SYMPTOM_EMBEDDING_LARGE_STD; 0 (the features') looks at |w| alone. */
	double embedding_large_std;
	double large_weight;		/* |w| above (5) */
	double input_range;		/* inputs outside [-r, r] (1) ... */
	double input_mean;		/* ... with |mean| above this (0.2) or std far from 1 */
	size_t min_checks;		/* epoch-based rules need this many epochs (3) */
	size_t persist;			/* noisy per-sample rules must hold this many samples in a row (3) */
};

extern const struct symptom_thresholds symptom_defaults;

#define SYMPTOM_LR_SCHEDULED_FRAC 0.01
#define SYMPTOM_EMBEDDING_LARGE_STD 2.0

struct symptom {
	enum symptom_id id;
	uint64_t first_step;	/* step where it first held */
	int layer;		/* layer index, or -1 when not about a layer */
	uint32_t count;		/* samples (or checks) where it held */
};

/* Runs every detector over the series; writes one entry per symptom that
 * fired (at most SYMPTOM_COUNT), ordered by first step. Returns how many. */
size_t symptoms__detect(const struct series *s, const struct symptom_thresholds *t,
			struct symptom out[SYMPTOM_COUNT]);

const char *symptoms__name(enum symptom_id id);

#endif
