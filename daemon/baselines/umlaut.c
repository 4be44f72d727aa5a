#include "baselines.h"

#include <math.h>

#include "common.h"

/*
 * UMLAUT (Schoop et al., CHI 2021; heuristics.py and errors.py of
 * github.com/BerkeleyHCI/umlaut). Checks of the program before training,
 * then checks at every epoch end; each error carries a fix:
 * - "Missing Softmax layer before loss": a classification loss that wants
 *   probabilities (from_logits off) and an output layer without softmax.
 *   Keras losses default to from_logits off, and UMLAUT assumes it for a
 *   loss it cannot inspect (a user's function); PyTorch's CrossEntropyLoss
 *   and BCEWithLogitsLoss take logits, like from_logits on. First fix:
 *   the loss's from_logits setting -> loss;
 * - "Last model layer has nonlinear activation" before the loss's softmax
 *   (a logits loss) -> remove it: activation;
 * - "Missing activation functions": a Dense/Conv layer with a linear
 *   activation feeding another (the stack collapses) -> activation;
 * - "Input data exceeds typical limits" (and NaN in the input when the
 *   loss is NaN) -> data; design.md's abnormal_input rule stands for its
 *   [-1, 1] test, which every standardised input fails;
 * - "Learning Rate is high/low": outside Adam's typical [1e-5, 1e-2]; plain
 *   SGD's typical rates are ten times Adam's (Keras defaults 0.01 and
 *   0.001), so it gets [1e-4, 1e-1]; Adadelta and L-BFGS, whose lr is a
 *   scale around 1, are not judged -> lr_high / lr_low;
 * - "Check validation accuracy" (above 0.95, or above the training
 *   accuracy, from epoch 3): labels or the train/validation split ->
 *   labels.
 * Its "Possible overfitting" fix adds dropout or shrinks the model, the
 * opposite of our regularization cause: no cause. "High dropout rate"
 * needs the dropout probability, which we do not receive; the image shape
 * and integer input checks have nothing to read.
 * Classification checks apply to classification runs only: on regression
 * UMLAUT would demand a softmax too.
 */

/* UMLAUT errors.py LRError: "Typical learning rates for the Adam optimizer
 * are between 0.00001 and 0.01" (heuristics.py flags lr > 0.01). */
#define UM_ADAM_LR_LOW 1e-5
#define UM_ADAM_LR_HIGH 1e-2
/* UMLAUT heuristics.py check_high_validation_acc: from epoch 3 on (0-based),
 * validation accuracy above 0.95 or above the training accuracy. */
#define UM_VAL_EPOCH 3
#define UM_VAL_HIGH 0.95

static cause_set um_program(const struct series *s)
{
	cause_set out = 0;
	const char *a = bl__output_activation(s);
	enum loss_input kind = bl__loss_input(s->loss_fn);
	if (bl__classification(s) && kind != LOSS_NONE && bl__act_known(a)) {
		if (kind == LOSS_LOGITS && !bl__act_linear(a))
			out |= BIT(activation);
		if (kind != LOSS_LOGITS && !bl__act_probability(a))
			out |= BIT(loss);
	}
	for (size_t l = 0; l + 1 < s->n_layers; l++)
		if (bl__dense_or_conv(&s->layers[l]) && bl__act_linear(s->layers[l].activation) &&
		    bl__dense_or_conv(&s->layers[l + 1]))
			out |= BIT(activation);
	return out;
}

static cause_set um_learning_rate(const struct series *s)
{
	static const char *const adaptive[] = {"adam", "adamw", "adamax", "nadam", "radam",
					       "sparseadam", "rmsprop", NULL};
	static const char *const unitless[] = {"adadelta", "lbfgs", NULL};
	double lr = s->initial_lr;
	for (size_t i = 0; !(lr > 0 && isfinite(lr)) && i < s->n; i++)
		lr = s->col[SERIES_LR][i];
	const char *opt = s->optimizer ? s->optimizer : "";
	if (!(lr > 0 && isfinite(lr)) || bl__is_any(opt, unitless))
		return 0;
	double scale = bl__is_any(opt, adaptive) ? 1 : 10;
	if (lr > UM_ADAM_LR_HIGH * scale)
		return BIT(lr_high);
	if (lr < UM_ADAM_LR_LOW * scale)
		return BIT(lr_low);
	return 0;
}

static bool um_nan_input(const struct series *s)
{
	bool nan_input = false, nan_loss = false;
	for (size_t i = 0; i < s->n; i++) {
		nan_input |= s->has[SERIES_INPUT_MEAN][i] && !isfinite(s->col[SERIES_INPUT_MEAN][i]);
		nan_loss |= s->has[SERIES_LOSS][i] && isnan(s->col[SERIES_LOSS][i]);
	}
	return nan_input && nan_loss;
}

static bool um_overconfident(const struct series *s)
{
	for (size_t e = UM_VAL_EPOCH; bl__classification(s) && e < s->n_epochs; e++) {
		double v = bl__val_acc(s)[e], tr = bl__train_acc(s)[e];
		if (v > UM_VAL_HIGH || v > tr)
			return true;
	}
	return false;
}

cause_set baselines__umlaut(const struct series *s)
{
	cause_set out = um_program(s);
	/* The rest runs at epoch ends. */
	if (s->n_epochs == 0)
		return out;
	struct symptom found[SYMPTOM_COUNT];
	size_t n = symptoms__detect(s, &symptom_defaults, found);
	for (size_t j = 0; j < n; j++)
		if (found[j].id == SYMPTOM_abnormal_input)
			out |= BIT(data);
	if (um_nan_input(s))
		out |= BIT(data);
	out |= um_learning_rate(s);
	if (um_overconfident(s))
		out |= BIT(labels);
	return out;
}
