/* The root causes of design.md: stable ids, the fix shown to the user, and
 * whether the diagnosis names a layer to change. One table, used by the
 * models, the baselines, the corpus labels and the output. */
#ifndef DNNFAULT_CAUSES_H
#define DNNFAULT_CAUSES_H

#include <stdbool.h>
#include <stdint.h>

/* X(id, layer_specific, fix) */
#define CAUSES(X)                                                                              \
	X(lr_high, false, "lower the learning rate (x0.1), add warm-up or gradient clipping")     \
	X(lr_low, false, "raise the learning rate (x10), or use an adaptive optimizer")          \
	X(loss, false, "use the loss that matches the output and labels")                        \
	X(activation, true, "change the activation of the named layer")                          \
	X(init, true, "use the default (Kaiming/Xavier) initialiser")                            \
	X(optimizer, false, "switch optimizer (e.g. Adam) or fix its momentum/betas")            \
	X(epochs, false, "train longer")                                                         \
	X(batch_size, false, "change the batch size")                                            \
	X(data, false, "standardise the inputs")                                                 \
	X(labels, false, "check the labels and their pairing with inputs")                       \
	X(regularization, false, "lower dropout / weight decay")

enum cause_id {
#define CAUSE_ENUM(id, layer, fix) CAUSE_##id,
	CAUSES(CAUSE_ENUM)
#undef CAUSE_ENUM
	CAUSE_COUNT
};

/* A set of causes, bit (1 << cause_id). */
typedef uint32_t cause_set;

const char *causes__name(enum cause_id id);
const char *causes__fix(enum cause_id id);
bool causes__layer_specific(enum cause_id id);
/* The id of `name`, or -1. */
int causes__find(const char *name);
/* Parses a comma list ("lr_high,init"; "" is the empty set). Returns 0, or
 * -EINVAL when a name is unknown. */
int causes__parse(const char *list, cause_set *out);

#endif
