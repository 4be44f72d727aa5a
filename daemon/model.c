#include "model.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xgboost/c_api.h>

#include "run_features.h"

__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t len, int rv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return rv;
}

static char *read_all(FILE *f)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	while (buf != NULL) {
		n += fread(buf + n, 1, cap - n - 1, f);
		if (n < cap - 1)
			break;
		char *more = realloc(buf, cap * 2);
		if (more == NULL) {
			free(buf);
			return NULL;
		}
		buf = more;
		cap *= 2;
	}
	if (buf != NULL)
		buf[n] = '\0';
	return buf;
}

/* Loads `id`.json of the bundle directory into b. */
static int load_booster(struct model *m, const char *id, struct model_booster *b, char *err, size_t len)
{
	if (b->present)
		return fail(err, len, -EINVAL, "%s: '%s' twice", m->path, id);
	char file[4096];
	snprintf(file, sizeof file, "%s/%s.json", m->path, id);
	BoosterHandle h;
	if (XGBoosterCreate(NULL, 0, &h) != 0)
		return fail(err, len, -EIO, "%s: %s", file, XGBGetLastError());
	if (XGBoosterLoadModel(h, file) != 0) {
		snprintf(err, len, "%s: %s", file, XGBGetLastError());
		XGBoosterFree(h);
		return -EIO;
	}
	/* The daemon predicts on one worker thread at a time; more threads
	 * would only compete with ingest. */
	XGBoosterSetParam(h, "nthread", "1");
	bst_ulong nf = 0;
	if (XGBoosterGetNumFeature(h, &nf) != 0 || nf != m->n_features) {
		XGBoosterFree(h);
		return fail(err, len, -EINVAL, "%s: model has another number of features than %s", file,
			    "the bundle's schema");
	}
	*b = (struct model_booster){.present = true, .booster = h};
	return 0;
}

/* "fault threshold T suspect S ...": the detector and its thresholds. */
static int load_fault(struct model *m, const char *line, char *err, size_t len)
{
	double thr, sus;
	if (sscanf(line, "fault threshold %lf suspect %lf", &thr, &sus) != 2 || !(thr > 0 && thr <= 1) ||
	    !(sus > 0 && sus <= thr))
		return fail(err, len, -EINVAL, "%s: bad fault line '%.80s'", m->path, line);
	m->threshold = thr;
	m->suspect = sus;
	return load_booster(m, "fault", &m->fault, err, len);
}

/* "cause ID ...": ID's model. */
static int load_cause(struct model *m, const char *line, char *err, size_t len)
{
	char id[64];
	if (sscanf(line, "cause %63s", id) != 1)
		return fail(err, len, -EINVAL, "%s: bad cause line '%.80s'", m->path, line);
	int c = causes__find(id);
	if (c < 0)
		return fail(err, len, -EINVAL, "%s: unknown cause '%s'", m->path, id);
	return load_booster(m, id, &m->cause[c], err, len);
}

/* Whether the line's first word is `key`. */
static bool is_key(const char *line, const char *key)
{
	size_t n = strlen(key);
	return strncmp(line, key, n) == 0 && (line[n] == ' ' || line[n] == '\0');
}

int model__load(const char *dir, struct model **out, char *err, size_t len)
{
	char file[4096];
	snprintf(file, sizeof file, "%s/bundle.txt", dir);
	FILE *f = fopen(file, "r");
	if (f == NULL)
		return fail(err, len, errno == ENOENT ? -ENOENT : -EIO, "%s: %s", file, strerror(errno));
	struct model *m = calloc(1, sizeof *m);
	int rv = m ? 0 : -ENOMEM;
	if (rv == 0 && ((m->path = strdup(dir)) == NULL || (m->text = read_all(f)) == NULL))
		rv = -ENOMEM;
	fclose(f);
	int format = 0;
	bool have_hash = false;
	for (char *line = m && m->text ? m->text : NULL, *next; rv == 0 && line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next = '\0';
		unsigned long long u;
		if (sscanf(line, "format dnnfault-bundle %d", &format) == 1 && format != MODEL_FORMAT)
			rv = fail(err, len, -EINVAL, "%s: bundle format %s unsupported", file, line + 22);
		else if (sscanf(line, "schema_version %d", &m->schema_version) == 1 &&
			 m->schema_version != FEATURES_SCHEMA_VERSION)
			rv = fail(err, len, -EINVAL, "%s: trained on feature schema %s; this daemon has another",
				  file, line + 15);
		else if (sscanf(line, "schema_hash %llx", &u) == 1)
			m->schema_hash = u, have_hash = true;
		else if (sscanf(line, "features %llu", &u) == 1)
			m->n_features = (size_t)u;
		else if (is_key(line, "fault"))
			rv = load_fault(m, line, err, len);
		else if (is_key(line, "rank") &&
			 (sscanf(line, "rank ratio %lf", &m->ratio) != 1 || !(m->ratio > 0 && m->ratio <= 1)))
			rv = fail(err, len, -EINVAL, "%s: bad rank line '%.80s'", file, line);
		else if (is_key(line, "cause"))
			rv = load_cause(m, line, err, len);
		if (next != NULL)
			*next++ = '\n';
	}
	if (rv == 0 && (format != MODEL_FORMAT || m->schema_version != FEATURES_SCHEMA_VERSION || !have_hash ||
			m->schema_hash != features__schema_hash() || m->n_features != features__count()))
		rv = fail(err, len, -EINVAL, "%s: not a bundle of this feature schema%s", file,
			  " (retrain it: docs/model.md)");
	bool any = false;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		any |= m->cause[c].present;
	if (rv == 0 && !any)
		rv = fail(err, len, -EINVAL, "%s: no cause models", file);
	if (rv == 0 && !m->fault.present)
		rv = fail(err, len, -EINVAL, "%s: no fault line (the detector)", file);
	if (rv == 0 && !(m->ratio > 0))
		rv = fail(err, len, -EINVAL, "%s: no rank ratio", file);
	if (rv != 0) {
		model__free(m);
		return rv;
	}
	*out = m;
	return 0;
}

void model__free(struct model *m)
{
	if (m == NULL)
		return;
	if (m->fault.present)
		XGBoosterFree(m->fault.booster);
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (m->cause[c].present)
			XGBoosterFree(m->cause[c].booster);
	free(m->path);
	free(m->text);
	free(m);
}

/* One booster's probabilities for the n rows of d into out[i * stride]. */
static int predict_one(const struct model_booster *b, DMatrixHandle d, size_t n, double *out, size_t stride)
{
	const float *p;
	bst_ulong got;
	if (!b->present) {
		for (size_t i = 0; i < n; i++)
			out[i * stride] = NAN;
		return 0;
	}
	if (XGBoosterPredict(b->booster, d, 0, 0, 0, &got, &p) != 0 || got != n)
		return -EIO;
	for (size_t i = 0; i < n; i++)
		out[i * stride] = p[i];
	return 0;
}

int model__predict(const struct model *m, const double *features, size_t n, double *fault, double *prob)
{
	size_t cells = n * m->n_features;
	float *x = malloc((cells ? cells : 1) * sizeof *x);
	if (x == NULL)
		return -ENOMEM;
	/* Features are finite doubles or NaN; beyond float's range they
	 * saturate rather than become Inf, which XGBoost refuses. */
	for (size_t i = 0; i < cells; i++)
		x[i] = isnan(features[i]) ? NAN : (float)fmax(-FLT_MAX, fmin(FLT_MAX, features[i]));
	DMatrixHandle d;
	int rv = XGDMatrixCreateFromMat(x, n, m->n_features, NAN, &d) == 0 ? 0 : -EIO;
	free(x);
	if (rv != 0)
		return rv;
	rv = predict_one(&m->fault, d, n, fault, 1);
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		rv = predict_one(&m->cause[c], d, n, prob + c, CAUSE_COUNT);
	XGDMatrixFree(d);
	return rv;
}

enum model_health model__health(const struct model *m, double fault)
{
	return fault >= m->threshold ? MODEL_FAULTY : fault >= m->suspect ? MODEL_SUSPECT : MODEL_HEALTHY;
}

cause_set model__report_causes(const double prob[CAUSE_COUNT], double ratio)
{
	double top = -1;
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (prob[c] > top)	/* false for NaN */
			top = prob[c];
	cause_set out = 0;
	for (int c = 0; top > 0 && c < CAUSE_COUNT; c++)
		if (prob[c] >= ratio * top)
			out |= (cause_set)1 << c;
	return out;
}

const char *model__health_name(enum model_health h)
{
	static const char *const names[] = {"healthy", "suspect", "faulty"};
	return (unsigned)h < 3 ? names[h] : "unknown";
}

int model__write_header(FILE *f)
{
	return fprintf(f, "format dnnfault-bundle %d\nschema_version %d\nschema_hash %016" PRIx64 "\nfeatures %zu\n",
		       MODEL_FORMAT, FEATURES_SCHEMA_VERSION, features__schema_hash(), features__count()) < 0
		       ? -EIO : 0;
}
