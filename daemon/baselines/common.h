/* What the reimplemented tools (autotrainer.c, deepdiagnosis.c, umlaut.c,
 * deepfd.c) read from a series in the same way: progress, gradient and
 * weight checks, the accuracy history, the loss and the output layer.
 * Internal to the baselines: the bl__ names are not part of baselines.h.
 * Pure functions of a series. */
#ifndef DNNFAULT_BASELINES_COMMON_H
#define DNNFAULT_BASELINES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "causes.h"
#include "dnnfault.pb-c.h"
#include "series.h"
#include "symptoms.h"

#define BIT(id) ((cause_set)1 << CAUSE_##id)
#define STAT(s, i, l, name) series__stat(s, i, l, DNNFAULT__LAYER_STAT__##name)

bool bl__classification(const struct series *s);

/* Samples, and epochs, that had happened by `step`. */
size_t bl__samples_by(const struct series *s, uint64_t step);
size_t bl__epochs_by(const struct series *s, uint64_t step);

/* Whether the judgment point has passed at `step`, after `epochs_done`
 * epochs. */
bool bl__judged(const struct series *s, size_t epochs_done, uint64_t step);

/* Some layer's tensor (`norm`, a LayerStat norm) held NaN/Inf at sample i. */
bool bl__any_nonfinite(const struct series *s, size_t i, int norm);

/* AutoTrainer's gradient rate (first layer's gradient norm over the last's)
 * and its dying-ReLU measure (share of gradient entries that are 0). */
bool bl__grad_rate(const struct series *s, size_t i, double *rate, double *first);
double bl__zero_share(const struct series *s, size_t i);

/* Names as the clients send them: case-insensitive tests. */
bool bl__contains(const char *hay, const char *needle);
bool bl__is_any(const char *a, const char *const *names);
bool bl__dense_or_conv(const struct series_layer *l);
bool bl__act_known(const char *a);
bool bl__act_linear(const char *a);
bool bl__act_probability(const char *a);
const char *bl__output_activation(const struct series *s);

/* What the loss expects of the model's output, from its name (class or
 * function, PyTorch or Keras spelling). A loss given but not recognised (a
 * user's own function) is LOSS_OTHER. */
enum loss_input { LOSS_NONE, LOSS_LOGITS, LOSS_PROBS, LOSS_REGRESSION, LOSS_OTHER };
enum loss_input bl__loss_input(const char *name);

/* The accuracy history, one value per epoch (NaN where absent), and
 * AutoTrainer's judgements of its first `ne` epochs. */
const double *bl__train_acc(const struct series *s);
const double *bl__val_acc(const struct series *s);
bool bl__list_any(const double *x, size_t n);
bool bl__oscillates(const double *a, size_t n, double swing, double share);
const double *bl__swing_acc(const struct series *s, size_t ne);
bool bl__not_converging(const struct series *s, size_t ne, double theta);
bool bl__slow_gain(const struct series *s, size_t ne, const struct symptom_thresholds *t);

/* A broken loss: NaN/Inf or at least t->loss_max; in a sample, or in
 * epoch e's training or validation loss. */
bool bl__loss_broken(double loss, bool has, const struct symptom_thresholds *t);
bool bl__epoch_loss_broken(const struct series *s, size_t e, const struct symptom_thresholds *t);

#endif
