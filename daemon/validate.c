#include "validate.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "causes.h"

#define INVALID DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD
#define LIMIT DNNFAULT__ERROR_CODE__ERR_LIMIT


int validate__is_cause(const char *id)
{
	return causes__find(id) >= 0;
}

__attribute__((format(printf, 4, 5)))
static int fail(int code, char *why, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return code;
}

/* A stream id of 0 or all ones is reserved (empty and deleted map slots). */
static int check_ids(uint64_t stream, uint64_t seq, char *why, size_t len)
{
	if (stream == 0 || stream == UINT64_MAX)
		return fail(INVALID, why, len, "stream id %" PRIu64 " is reserved", stream);
	if (seq == 0)
		return fail(INVALID, why, len, "sequence numbers start at 1");
	return 0;
}

size_t validate__utf8_len(const unsigned char *s, size_t n)
{
	size_t k;
	unsigned min;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		k = 2, min = 0x80;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		k = 3, min = 0x800;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		k = 4, min = 0x10000;
	else
		return 0;
	if (k > n)
		return 0;
	unsigned cp = s[0] & (0x7f >> k);
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k;
}

/* Names are bounded, free of control characters (they reach terminals)
 * and UTF-8. */
static int check_name(const char *field, const char *s, int required, uint32_t max,
		      char *why, size_t len)
{
	if (s == NULL || *s == '\0')
		return required ? fail(INVALID, why, len, "%s is required", field) : 0;
	size_t n = strlen(s);
	if (n > max)
		return fail(LIMIT, why, len, "%s longer than %" PRIu32 " bytes", field, max);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return fail(INVALID, why, len, "%s contains a control character", field);
	/* Names reach JSON and Prometheus labels, which must be UTF-8; and
	 * two names that differ only in bytes shown as U+FFFD would collide. */
	for (size_t i = 0, k; i < n; i += k)
		if ((k = validate__utf8_len((const unsigned char *)s + i, n - i)) == 0)
			return fail(INVALID, why, len, "%s is not valid UTF-8 (byte %zu)", field, i);
	return 0;
}

int validate__reference(const char *ref, const struct validate_limits *l, char *why, size_t len)
{
	return check_name("reference", ref, 0, l->max_name_bytes, why, len);
}

static int check_time(int has, double t, char *why, size_t len)
{
	if (has && !(isfinite(t) && t >= 0 && t < 1e11))
		return fail(INVALID, why, len, "time %g is not a plausible unix time", t);
	return 0;
}

static int check_kvs(const char *field, Dnnfault__KeyValue **kv, size_t n,
		     const struct validate_limits *l, char *why, size_t len)
{
	if (n > l->max_tags)
		return fail(LIMIT, why, len, "more %s than the limit of %" PRIu32, field, l->max_tags);
	for (size_t i = 0; i < n; i++) {
		int rv = check_name(field, kv[i]->key, 1, l->max_name_bytes, why, len);
		if (rv == 0 && kv[i]->value != NULL && strlen(kv[i]->value) > l->max_name_bytes)
			rv = fail(LIMIT, why, len, "%s value longer than %" PRIu32 " bytes", field, l->max_name_bytes);
		if (rv != 0)
			return rv;
	}
	return 0;
}

int validate__run_start(const Dnnfault__RunStart *m, const struct validate_limits *l,
			char *why, size_t len)
{
	int rv;
	if ((rv = check_ids(m->stream, m->seq, why, len)) != 0 ||
	    (rv = check_name("run_id", m->run_id, 1, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_name("run_name", m->run_name, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = validate__reference(m->reference, l, why, len)) != 0 ||
	    (rv = check_name("host", m->host, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_name("framework", m->framework, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_name("framework_version", m->framework_version, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_name("loss_fn", m->loss_fn, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_name("optimizer", m->optimizer, 0, l->max_name_bytes, why, len)) != 0 ||
	    (rv = check_time(m->has_time, m->time, why, len)) != 0)
		return rv;
	if (m->world_size == 0 || m->world_size > l->max_world_size)
		return fail(LIMIT, why, len, "world_size %" PRIu32 " outside 1..%" PRIu32, m->world_size, l->max_world_size);
	if (m->rank >= m->world_size)
		return fail(INVALID, why, len, "rank %" PRIu32 " is not below world_size %" PRIu32, m->rank, m->world_size);
	if (m->num_classes > 10000000)
		return fail(INVALID, why, len, "num_classes %" PRIu32 " is absurd", m->num_classes);
	if (m->n_layers > l->max_layers)
		return fail(LIMIT, why, len, "%zu layers exceed the limit of %" PRIu32, m->n_layers, l->max_layers);
	for (size_t i = 0; i < m->n_layers; i++) {
		const Dnnfault__Layer *layer = m->layers[i];
		if ((rv = check_name("layer name", layer->name, 1, l->max_name_bytes, why, len)) != 0 ||
		    (rv = check_name("layer type", layer->type, 0, l->max_name_bytes, why, len)) != 0 ||
		    (rv = check_name("layer activation", layer->activation, 0, l->max_name_bytes, why, len)) != 0)
			return rv;
		if (layer->n_params > 64)
			return fail(LIMIT, why, len, "layer %s has more than 64 parameter tensors", layer->name);
		for (size_t j = 0; j < layer->n_params; j++)
			if (layer->params[j]->n_dims > 16)
				return fail(LIMIT, why, len, "layer %s: tensor with more than 16 dims", layer->name);
	}
	if ((rv = check_kvs("tags", m->tags, m->n_tags, l, why, len)) != 0 ||
	    (rv = check_kvs("optimizer_params", m->optimizer_params, m->n_optimizer_params, l, why, len)) != 0)
		return rv;
	for (size_t i = 0; i < m->n_labels; i++)
		if (!validate__is_cause(m->labels[i]))
			return fail(INVALID, why, len, "unknown cause label '%.64s'", m->labels[i]);
	return 0;
}

int validate__step(const Dnnfault__Step *m, uint32_t n_layers, const struct validate_limits *l,
		   char *why, size_t len)
{
	int rv;
	if ((rv = check_ids(m->stream, m->seq, why, len)) != 0 ||
	    (rv = check_time(m->has_time, m->time, why, len)) != 0)
		return rv;
	if (m->step > VALIDATE_MAX_STEP)
		return fail(INVALID, why, len, "step %" PRIu64 " is absurd", m->step);
	if (m->has_dropped && m->dropped > VALIDATE_MAX_STEP)
		return fail(INVALID, why, len, "dropped %" PRIu64 " is absurd", m->dropped);
	if (m->n_layer_stats % DNNFAULT__LAYER_STAT__STATS_PER_LAYER != 0)
		return fail(INVALID, why, len, "layer_stats holds %zu floats, not a multiple of 16", m->n_layer_stats);
	size_t layers = m->n_layer_stats / DNNFAULT__LAYER_STAT__STATS_PER_LAYER;
	if (layers > l->max_layers)
		return fail(LIMIT, why, len, "%zu layers exceed the limit of %" PRIu32, layers, l->max_layers);
	if (layers != 0 && layers != n_layers)
		return fail(INVALID, why, len, "step has %zu layers but the run declared %" PRIu32, layers, n_layers);
	return 0;
}

int validate__epoch(const Dnnfault__Epoch *m, char *why, size_t len)
{
	int rv;
	if ((rv = check_ids(m->stream, m->seq, why, len)) != 0 ||
	    (rv = check_time(m->has_time, m->time, why, len)) != 0)
		return rv;
	if (m->epoch > VALIDATE_MAX_EPOCH || (m->has_step && m->step > VALIDATE_MAX_STEP))
		return fail(INVALID, why, len, "epoch %" PRIu32 " or its step is absurd", m->epoch);
	return 0;
}

int validate__run_end(const Dnnfault__RunEnd *m, char *why, size_t len)
{
	int rv;
	if ((rv = check_ids(m->stream, m->seq, why, len)) != 0 ||
	    (rv = check_time(m->has_time, m->time, why, len)) != 0)
		return rv;
	if (m->status < DNNFAULT__END_STATUS__END_COMPLETED ||
	    m->status > DNNFAULT__END_STATUS__END_INTERRUPTED)
		return fail(INVALID, why, len, "unknown end status %d", (int)m->status);
	if (m->has_step && m->step > VALIDATE_MAX_STEP)
		return fail(INVALID, why, len, "step %" PRIu64 " is absurd", m->step);
	if (m->has_dropped && m->dropped > VALIDATE_MAX_STEP)
		return fail(INVALID, why, len, "dropped %" PRIu64 " is absurd", m->dropped);
	return 0;
}
