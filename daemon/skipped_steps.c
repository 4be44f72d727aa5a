#include "skipped_steps.h"

#include <math.h>

#include "chunk.h"

#define STAT(x, name) ((x)[DNNFAULT__LAYER_STAT__##name])

bool skipped_steps__signature(const float *stats, size_t n_layers, bool has_loss, double loss)
{
	if (has_loss && !isfinite(loss))
		return false;
	bool overflow = false;
	for (size_t l = 0; l < n_layers; l++) {
		const float *x = stats + l * CHUNK_STATS_PER_LAYER;
		float ratio = STAT(x, UPDATE_RATIO);
		if (!isnan(ratio) && ratio != 0)
			return false;	/* the weights moved: a step was taken */
		if (!(STAT(x, NAN_COUNT) > 0 || STAT(x, INF_COUNT) > 0))
			continue;
		/* Non-finite activations have a non-finite mean beside a finite
		 * share <= 0 (not recorded: both NaN). */
		bool act_bad = !isfinite(STAT(x, ACT_MEAN)) && isfinite(STAT(x, ACT_NONPOS_FRAC));
		if (!isfinite(STAT(x, WEIGHT_NORM)) || act_bad || isfinite(STAT(x, GRAD_NORM)))
			return false;
		overflow = true;
	}
	return overflow;
}

static bool has_signature(const struct series *s, size_t i)
{
	return skipped_steps__signature(s->stats + i * s->n_layers * CHUNK_STATS_PER_LAYER, s->n_layers,
					s->has[SERIES_LOSS][i], s->col[SERIES_LOSS][i]);
}

size_t skipped_steps__leave_out(struct series *s)
{
	size_t kept = 0;
	if (s->n > 0)
		s->last_step = s->step[s->n - 1];
	for (size_t i = 0; i < s->n;) {
		size_t end = i;
		/* A run of them ends where the steps go back (a resumed job's
		 * next stream): the span is measured within one stretch. */
		while (end < s->n && s->n_layers > 0 && has_signature(s, end) &&
		       (end == i || s->step[end] > s->step[end - 1]))
			end++;
		if (end > i && s->step[end - 1] - s->step[i] < SKIPPED_STEPS_SPAN_MAX) {
			i = end;	/* a streak that cleared, or may still */
			continue;
		}
		if (end == i)
			end = i + 1;
		for (; i < end; i++, kept++)
			if (kept != i)
				series__move(s, kept, i);
	}
	size_t left_out = s->n - kept;
	s->n = kept;
	return left_out;
}
