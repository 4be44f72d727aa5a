/* Steps that the training loop skipped because their gradients overflowed.
 *
 * Mixed-precision training scales the loss up so that small float16
 * gradients do not round to zero; when a step's gradients overflow instead
 * (Inf/NaN), torch.cuda.amp.GradScaler skips optimizer.step(), lowers the
 * scale and goes on. Loops with manual loss scaling, or that skip any step
 * with non-finite gradients, do the same. Such a sample shows non-finite
 * gradients beside finite weights that did not move: the overflow never
 * reached the model, and calling it nan_tensor (or the frozen weights
 * unchanged_weights) would be a false alarm on every such run.
 *
 * The loader leaves those samples out, as if they had not been sampled,
 * where a run of them in a row spans at most SKIPPED_STEPS_SPAN_MAX steps:
 * overflow that does not clear is a fault and stays visible. Left out, not
 * masked: their frozen weights and missing gradients would otherwise read
 * as a stalled start to the detectors and to the learned model. */
#ifndef DNNFAULT_SKIPPED_STEPS_H
#define DNNFAULT_SKIPPED_STEPS_H

#include <stdbool.h>
#include <stddef.h>

#include "series.h"

/* GradScaler starts at a scale of 2^16 and halves it at each skipped step:
 * after 16 in a row the scale is 1, and gradients that still overflow do
 * so without any loss scaling. Counted in steps, not samples: two sampled
 * steps 50 apart that both overflowed mean it overflows all along. */
#define SKIPPED_STEPS_SPAN_MAX 16

/* Whether one sample has the signature of a skipped overflow step: a finite
 * loss (or none), no update (every update ratio 0 or not computed), and at
 * least one layer with NaN/Inf counted, every such layer's count explained
 * by its gradients (non-finite gradient norm, finite weights, activations
 * finite or not recorded). `stats` holds n_layers x 16 floats. */
bool skipped_steps__signature(const float *stats, size_t n_layers, bool has_loss, double loss);

/* Leaves out the samples of `s` with the signature whose run in a row
 * spans at most SKIPPED_STEPS_SPAN_MAX steps (from its first step to its
 * last, both counted), keeping the others in order. Returns how
 * many it left out. */
size_t skipped_steps__leave_out(struct series *s);

#endif
