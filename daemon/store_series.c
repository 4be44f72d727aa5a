/* The analysis's loader: a run's telemetry as a series (series.h), read in
 * short pages and thinned to the reader's bound (store_read.h). Training
 * reads the corpus through it too, so train and serve see the same view. */
#include "store_read.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "chunk.h"
#include "series.h"
#include "skipped_steps.h"
#include "store.h"
#include "store_read_private.h"

#define NO_SUCH_RUN DNNFAULT__ERROR_CODE__ERR_NO_SUCH_RUN
#define INTERNAL DNNFAULT__ERROR_CODE__ERR_INTERNAL

/* The static part of a series: layers and configuration from the RunStart. */
static double optimizer_param(const Dnnfault__RunStart *m, const char *key)
{
	for (size_t i = 0; i < m->n_optimizer_params; i++)
		if (strcmp(m->optimizer_params[i]->key, key) == 0 && m->optimizer_params[i]->has_number)
			return m->optimizer_params[i]->number;
	return NAN;
}

/* Inputs per output unit of the layer's first parameter of two or more
 * dimensions (a Linear or Conv weight: all dimensions but the first). */
static uint64_t fan_in(const Dnnfault__Layer *l)
{
	for (size_t i = 0; i < l->n_params; i++) {
		if (l->params[i]->n_dims < 2)
			continue;
		uint64_t f = 1;
		for (size_t d = 1; d < l->params[i]->n_dims; d++)
			f *= l->params[i]->dims[d];
		return f;
	}
	return 0;
}

static int series_description(sqlite3 *db, int64_t run, struct series *out)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT description FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	Dnnfault__RunStart *m = NULL;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB)
		m = store_read__unpack(&dnnfault__run_start__descriptor, st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return -EIO;
	if (m == NULL)
		return -ENOENT;
	struct series_layer *layers = calloc(m->n_layers ? m->n_layers : 1, sizeof *layers);
	int rv = layers ? 0 : -ENOMEM;
	for (size_t i = 0; rv == 0 && i < m->n_layers; i++)
		layers[i] = (struct series_layer){.name = m->layers[i]->name, .type = m->layers[i]->type,
						  .activation = m->layers[i]->activation,
						  .param_count = m->layers[i]->param_count,
						  .fan_in = fan_in(m->layers[i]),
						  .frozen = m->layers[i]->param_count > 0 &&
							    m->layers[i]->has_trainable_count &&
							    m->layers[i]->trainable_count == 0};
	if (rv == 0)
		rv = series__set_layers(out, layers, m->n_layers);
	free(layers);
	out->loss_fn = m->loss_fn ? strdup(m->loss_fn) : NULL;
	out->optimizer = m->optimizer ? strdup(m->optimizer) : NULL;
	out->task = m->task;
	out->num_classes = m->num_classes;
	out->batch_size = m->batch_size;
	out->planned_epochs = m->planned_epochs;
	out->planned_steps = m->planned_steps;
	out->dataset_size = m->dataset_size;
	out->initial_lr = optimizer_param(m, "lr");
	out->momentum = optimizer_param(m, "momentum");
	out->weight_decay = optimizer_param(m, "weight_decay");
	out->beta1 = optimizer_param(m, "betas.0");
	out->beta2 = optimizer_param(m, "betas.1");
	out->alpha = optimizer_param(m, "alpha");
	protobuf_c_message_free_unpacked(&m->base, NULL);
	return rv;
}

void store_read__set_max_samples(struct store_reader *r, size_t max)
{
	r->max_samples = max != 0 && max < 3 ? 3 : max;
}

/* A sample worth keeping over its neighbours when thinning: a non-finite
 * loss or a layer that counted NaN/Inf, the onset of nan_loss/nan_tensor;
 * not an overflow step that the training loop skipped (skipped_steps.h),
 * which mixed-precision runs have now and then all along. */
static bool non_finite(const Dnnfault__Step *m)
{
	if (m->has_loss && !isfinite(m->loss))
		return true;
	bool any = false;
	for (size_t k = 0; k + CHUNK_STATS_PER_LAYER <= m->n_layer_stats && !any; k += CHUNK_STATS_PER_LAYER)
		any = m->layer_stats[k + DNNFAULT__LAYER_STAT__NAN_COUNT] > 0 ||
		      m->layer_stats[k + DNNFAULT__LAYER_STAT__INF_COUNT] > 0;
	return any && !skipped_steps__signature(m->layer_stats, m->n_layer_stats / CHUNK_STATS_PER_LAYER,
						m->has_loss, m->loss);
}

/* Every how many samples one is kept so that at most `max` are (0: all):
 * indices 0, stride, 2 stride, ... below total - 1 (at most max - 2 of
 * them), the last, and one NaN/Inf sample of the first bucket. */
static uint64_t thinning_stride(uint64_t total, size_t max)
{
	if (max == 0 || total <= max)
		return 1;
	return (total - 1 + (max - 2) - 1) / (max - 2);
}

/* Keeps one sample of every `stride` (store_read.h): the bucket's first, or
 * its first NaN/Inf sample instead; sample 0 stays and its bucket's first
 * NaN/Inf sample comes as an extra; the last sample is always kept. */
struct thinning {
	uint64_t total, stride, j;	/* samples counted, 1 of `stride` kept, seen */
	bool want_non_finite;		/* the bucket has no NaN/Inf sample yet */
	bool replaceable;		/* its kept sample may give way to one */
};

static int thinning__offer(struct thinning *t, struct series *out, const Dnnfault__Step *m)
{
	int rv = 0;
	if (t->j % t->stride == 0 || t->j + 1 == t->total) {
		rv = series__append(out, m);
		t->want_non_finite = !non_finite(m);
		t->replaceable = t->j != 0;
	} else if (t->want_non_finite && non_finite(m)) {
		if (t->replaceable)
			out->n--;
		rv = series__append(out, m);
		t->want_non_finite = t->replaceable = false;
	}
	t->j++;
	return rv;
}

/* Chunks read per statement. Each page is its own short read transaction,
 * so that an analysis of a long run never pins the WAL for long: a
 * snapshot held for seconds while the writer keeps committing stops the
 * checkpoint from restarting the WAL, which then grows by everything
 * committed meanwhile. */
#define CHUNKS_PER_PAGE 64

/* Decodes the chunks of one stream, after (first_step, rowid) = *after,
 * into `out`, at most one page of them. Sets *more when the page was full. */
static int stream_page(sqlite3_stmt *st, struct thinning *t, struct series *out, float **stats,
		       size_t *stats_layers, int64_t after[2], bool *more)
{
	int rv = 0, rc, rows = 0;
	sqlite3_bind_int64(st, 3, after[0]);
	sqlite3_bind_int64(st, 4, after[1]);
	while (rv == 0 && t->j < t->total && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		rows++;
		size_t layers = (size_t)sqlite3_column_int64(st, 1);
		if (layers > *stats_layers || *stats == NULL) {
			free(*stats);
			*stats = malloc((layers + 1) * CHUNK_STATS_PER_LAYER * sizeof **stats);
			*stats_layers = layers;
			if (*stats == NULL) {
				rv = -ENOMEM;
				break;
			}
		}
		const uint8_t *p = sqlite3_column_blob(st, 2);
		size_t len = (size_t)sqlite3_column_bytes(st, 2);
		/* The rowid bounds hold the load to the counted chunks; the count
		 * still caps it, so the thinning's "last sample" stays the last. */
		for (int i = 0; rv == 0 && i < sqlite3_column_int(st, 0) && t->j < t->total; i++) {
			Dnnfault__Step m = DNNFAULT__STEP__INIT;
			size_t used = chunk__read_record(p, len, &m, *stats, *stats_layers);
			if (used == 0) {
				rv = -EIO;
				break;
			}
			rv = thinning__offer(t, out, &m);
			p += used;
			len -= used;
		}
		after[0] = sqlite3_column_int64(st, 3);
		after[1] = sqlite3_column_int64(st, 4);
	}
	if (rv == 0 && t->j < t->total && rc != SQLITE_DONE)
		rv = -EIO;	/* a busy or broken store must not look like a short run */
	sqlite3_reset(st);	/* ends the page's read transaction */
	*more = rv == 0 && rows == CHUNKS_PER_PAGE && t->j < t->total;
	return rv;
}

/* What of one stream a load reads: its chunks up to the last stored when
 * the load began, so that chunks committed meanwhile (of any stream, at
 * any step) are left to the next analysis and the count stays exact. */
struct stream_extent {
	int64_t stream, last_rowid;
};

/* The lowest rank's streams that have chunks, in the order they started,
 * and their samples in all. */
static int stream_extents(sqlite3 *db, int64_t run, int64_t rank, struct stream_extent **out,
			  size_t *n, uint64_t *total)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT c.stream, total(c.n_steps), max(c.rowid) FROM step_chunks c"
			       " JOIN streams s ON s.id = c.stream WHERE c.run = ?1 AND s.rank = ?2"
			       " GROUP BY c.stream ORDER BY min(s.started), c.stream", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	sqlite3_bind_int64(st, 2, rank);
	size_t cap = 0;
	int rv = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct stream_extent *e = store_batch__push((void **)out, n, &cap, sizeof *e);
		if (e == NULL) {
			rv = -ENOMEM;
			break;
		}
		e->stream = sqlite3_column_int64(st, 0);
		*total += (uint64_t)sqlite3_column_double(st, 1);
		e->last_rowid = sqlite3_column_int64(st, 2);
	}
	if (rv == 0 && rc != SQLITE_DONE)
		rv = -EIO;
	sqlite3_finalize(st);
	return rv;
}

/* Steps of the lowest rank, decoded from its chunks: every stream of that
 * rank in the order the streams started (a resumed job adds a stream), each
 * in step order; as many as were stored when the load began, thinned to
 * `max` samples (store_read.h). */
static int series_steps(sqlite3 *db, int64_t run, int64_t rank, size_t max, struct series *out)
{
	struct thinning t = {0};
	struct stream_extent *streams = NULL;
	size_t n_streams = 0;
	int rv = stream_extents(db, run, rank, &streams, &n_streams, &t.total);
	t.stride = thinning_stride(t.total, max);
	out->n_stored = t.total;
	/* At most `max` are kept (thinning_stride), so this is all the room
	 * the load takes: no doubling past the bound. */
	if (rv == 0 && series__reserve(out, (size_t)(max != 0 && t.total > max ? max : t.total)) != 0)
		rv = -ENOMEM;
	sqlite3_stmt *chunks = NULL;
	if (rv == 0 && sqlite3_prepare_v2(db, "SELECT n_steps, n_layers, data, first_step, rowid FROM step_chunks"
					  " WHERE run = ?1 AND stream = ?2 AND (first_step, rowid) > (?3, ?4)"
					  " AND rowid <= ?6 ORDER BY first_step, rowid LIMIT ?5",
					  -1, &chunks, NULL) != SQLITE_OK)
		rv = -EIO;
	if (rv == 0) {
		sqlite3_bind_int64(chunks, 1, run);
		sqlite3_bind_int(chunks, 5, CHUNKS_PER_PAGE);
	}
	float *stats = NULL;
	size_t stats_layers = 0;
	for (size_t i = 0; rv == 0 && i < n_streams; i++) {
		sqlite3_bind_int64(chunks, 2, streams[i].stream);
		sqlite3_bind_int64(chunks, 6, streams[i].last_rowid);
		int64_t after[2] = {INT64_MIN, INT64_MIN};
		for (bool more = true; rv == 0 && more;)
			rv = stream_page(chunks, &t, out, &stats, &stats_layers, after, &more);
	}
	free(stats);
	free(streams);
	sqlite3_finalize(chunks);
	return rv;
}

static int series_epochs(sqlite3 *db, int64_t run, int64_t rank, struct series *out)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, "SELECT e.message FROM epochs e JOIN streams s ON s.id = e.stream"
			       " WHERE e.run = ?1 AND s.rank = ?2 ORDER BY s.started, s.id, e.epoch, e.rowid",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(st, 1, run);
	sqlite3_bind_int64(st, 2, rank);
	int rv = 0, rc;
	while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		Dnnfault__Epoch *e = store_read__unpack(&dnnfault__epoch__descriptor, st, 0);
		if (e == NULL)
			continue;
		rv = series__append_epoch(out, e);
		protobuf_c_message_free_unpacked(&e->base, NULL);
	}
	if (rv == 0 && rc != SQLITE_DONE)
		rv = -EIO;
	sqlite3_finalize(st);
	return rv;
}

/* The layer sent a gradient at sample i: any of its gradient statistics.
 * The zero fraction is a number even for a gradient of NaN or Inf; the
 * NaN/Inf counts are not evidence, as they count weights and outputs too. */
static bool grad_computed(const struct series *s, size_t i, size_t l)
{
	for (int k = DNNFAULT__LAYER_STAT__GRAD_NORM; k <= DNNFAULT__LAYER_STAT__GRAD_ZERO_FRAC; k++)
		if (!isnan(series__stat(s, i, l, k)))
			return true;
	return false;
}

static bool trained_at_some_sample(const struct series *s, size_t l)
{
	for (size_t i = 0; i < s->n; i++)
		if (grad_computed(s, i, l))
			return true;
	return false;
}

/* Leaves out the layers frozen when the run started (store_read.h) that
 * never trained at a loaded sample, unless every layer with parameters
 * is frozen: then nothing can learn, which is for the detectors to see.
 * A frozen layer that trained later (gradual unfreezing) stays, and
 * leave_out_frozen_samples() takes its frozen stretch. Returns how many
 * layers it left out, or -ENOMEM. */
static int leave_out_frozen(struct series *s)
{
	size_t frozen = 0, trainable = 0;
	bool *keep = malloc((s->n_layers ? s->n_layers : 1) * sizeof *keep);
	if (keep == NULL)
		return -ENOMEM;
	for (size_t l = 0; l < s->n_layers; l++) {
		keep[l] = !s->layers[l].frozen || trained_at_some_sample(s, l);
		frozen += !keep[l];
		trainable += keep[l] && s->layers[l].param_count > 0;
	}
	if (frozen > 0 && trainable > 0)
		series__keep_layers(s, keep);
	free(keep);
	return frozen > 0 && trainable > 0 ? (int)frozen : 0;
}

/* A layer frozen at some samples and trained at others (unfrozen, or
 * frozen part-way): the Python client sends a layer with none of its
 * parameters trainable at a step with its gradient statistics and update
 * ratio NaN, whatever stale gradient it holds. At those samples the
 * layer's statistics are all made NaN ("not computed"), so that the
 * analysis sees it only while it trains, as it does not see a layer
 * frozen throughout. A NaN or Inf that it counted keeps the sample. A
 * layer that never sent a gradient (a client that sends none) is left
 * as it is. Returns how many layer-samples it blanked. */
static size_t leave_out_frozen_samples(struct series *s)
{
	size_t blanked = 0;
	for (size_t l = 0; l < s->n_layers; l++) {
		if (s->layers[l].param_count == 0 || !trained_at_some_sample(s, l))
			continue;
		for (size_t i = 0; i < s->n; i++) {
			if (grad_computed(s, i, l) ||
			    !isnan(series__stat(s, i, l, DNNFAULT__LAYER_STAT__UPDATE_RATIO)) ||
			    series__stat(s, i, l, DNNFAULT__LAYER_STAT__NAN_COUNT) > 0 ||
			    series__stat(s, i, l, DNNFAULT__LAYER_STAT__INF_COUNT) > 0)
				continue;
			float *x = &s->stats[(i * s->n_layers + l) * CHUNK_STATS_PER_LAYER];
			for (size_t k = 0; k < CHUNK_STATS_PER_LAYER; k++)
				x[k] = NAN;
			blanked++;
		}
	}
	return blanked;
}

int store_read__series(struct store_reader *r, int64_t run, struct series *out, char *err, size_t len)
{
	sqlite3_stmt *st;
	int64_t rank = 0;
	if (sqlite3_prepare_v2(r->db, "SELECT min(rank) FROM streams WHERE run = ?1", -1, &st, NULL) != SQLITE_OK)
		return store_read__fail(r->db, err, len);
	sqlite3_bind_int64(st, 1, run);
	int found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
	if (found)
		rank = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (!found) {
		snprintf(err, len, "run %lld has no stream", (long long)run);
		return NO_SUCH_RUN;
	}
	int rv = series_description(r->db, run, out);
	if (rv == 0)
		rv = series_steps(r->db, run, rank, r->max_samples, out);
	if (rv == 0 && (rv = leave_out_frozen(out)) >= 0) {
		out->n_frozen = (size_t)rv;
		out->n_frozen_samples = leave_out_frozen_samples(out);
		out->n_skipped = skipped_steps__leave_out(out);
		rv = series_epochs(r->db, run, rank, out);
	}
	if (rv != 0) {
		snprintf(err, len, "loading run %lld: %s", (long long)run,
			 rv == -EIO ? sqlite3_errmsg(r->db) : strerror(-rv));
		series__free(out);
		return rv == -ENOENT ? NO_SUCH_RUN : INTERNAL;
	}
	return 0;
}
