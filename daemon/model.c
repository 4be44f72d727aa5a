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

/* XGBoost's messages carry a multi-line stack trace: one line of them is
 * what a log entry and `dnnfaultctl model reload` can show. */
static int xgb_fail(char *err, size_t len, const char *file)
{
	snprintf(err, len, "%s: %s", file, XGBGetLastError());
	char *cut = strstr(err, "Stack trace:");
	if (cut != NULL)
		*cut = '\0';
	for (char *p = err; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	for (size_t n = strlen(err); n > 0 && err[n - 1] == ' '; n--)
		err[n - 1] = '\0';
	return -EIO;
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

/* Loads `id`.json of the bundle directory into b: a model of the first
 * `width` features. */
static int load_booster(struct model *m, const char *id, size_t width, struct model_booster *b, char *err,
			size_t len)
{
	if (b->present)
		return fail(err, len, -EINVAL, "%s: '%s' twice", m->path, id);
	char file[4096];
	snprintf(file, sizeof file, "%s/%s.json", m->path, id);
	BoosterHandle h;
	if (XGBoosterCreate(NULL, 0, &h) != 0)
		return xgb_fail(err, len, file);
	if (XGBoosterLoadModel(h, file) != 0) {
		int rv = xgb_fail(err, len, file);
		XGBoosterFree(h);
		return rv;
	}
	/* The daemon predicts on one worker thread at a time; more threads
	 * would only compete with ingest. */
	XGBoosterSetParam(h, "nthread", "1");
	bst_ulong nf = 0;
	if (XGBoosterGetNumFeature(h, &nf) != 0 || nf != width) {
		XGBoosterFree(h);
		return fail(err, len, -EINVAL, "%s: model has another number of features than %s", file,
			    "the bundle's schema");
	}
	*b = (struct model_booster){.present = true, .booster = h};
	return 0;
}

/* "ID threshold T suspect S ...": a detector ("fault", on the run's own
 * features, or "fault_ref", on all of them) and its thresholds. */
static int load_detector(struct model *m, const char *line, const char *id, struct model_detector *det,
			 size_t width, char *err, size_t len)
{
	double thr, sus;
	if (sscanf(line + strlen(id), " threshold %lf suspect %lf", &thr, &sus) != 2 || !(thr > 0 && thr <= 1) || !(sus > 0 && sus <= thr))
		return fail(err, len, -EINVAL, "%s: bad %s line '%.80s'", m->path, id, line);
	det->threshold = thr;
	det->suspect = sus;
	return load_booster(m, id, width, &det->b, err, len);
}

/* "ID_at P T S P T S ...": the detector's thresholds T (faulty) and S
 * (suspect) at each point P of progress, points increasing in (0, 1]. */
static int load_points(struct model *m, const char *line, const char *id, struct model_detector *det)
{
	const char *p = line + strlen(id);
	size_t k = 0;
	int used;
	double at, thr, sus;
	while (sscanf(p, " %lf %lf %lf%n", &at, &thr, &sus, &used) == 3) {
		if (k == MODEL_POINTS_MAX || !(at > 0 && at <= 1) || (k > 0 && !(at > det->at[k - 1])) ||
		    !(thr > 0 && thr <= 1) || !(sus > 0 && sus <= thr))
			return -EINVAL;
		det->at[k] = at;
		det->threshold_at[k] = thr;
		det->suspect_at[k] = sus;
		k++;
		p += used;
	}
	while (*p == ' ')
		p++;
	if (k == 0 || *p != '\0')
		return -EINVAL;
	det->n_at = k;
	return 0;
}

/* "shortfall_at P X P X ...": the reference detector's outcome check at
 * the points of its thresholds per point (the same points, in order),
 * each X above 0 or inf (no check there). */
static int load_shortfalls(const char *line, struct model_detector *det)
{
	const char *p = line + strlen("shortfall_at");
	size_t k = 0;
	int used;
	double at, x;
	while (sscanf(p, " %lf %lf%n", &at, &x, &used) == 2) {
		if (k == det->n_at || at != det->at[k] || !(x > 0))	/* inf passes, NaN does not */
			return -EINVAL;
		det->shortfall_at[k++] = x;
		p += used;
	}
	while (*p == ' ')
		p++;
	if (k != det->n_at || k == 0 || *p != '\0')
		return -EINVAL;
	det->has_shortfall = true;
	return 0;
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
	return load_booster(m, id, features__base_count(), &m->cause[c], err, len);
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
			rv = load_detector(m, line, "fault", &m->fault, features__base_count(), err, len);
		else if (is_key(line, "fault_ref"))
			rv = load_detector(m, line, "fault_ref", &m->fault_ref, features__count(), err, len);
		else if ((is_key(line, "fault_at") && load_points(m, line, "fault_at", &m->fault) != 0) ||
			 (is_key(line, "fault_ref_at") && load_points(m, line, "fault_ref_at", &m->fault_ref) != 0))
			rv = fail(err, len, -EINVAL, "%s: bad thresholds per point '%.80s'", file, line);
		else if (is_key(line, "shortfall_at") && load_shortfalls(line, &m->fault_ref) != 0)
			rv = fail(err, len, -EINVAL, "%s: bad outcome check '%.80s' (it follows fault_ref_at, at its"
				  " points)", file, line);
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
		rv = fail(err, len, -EINVAL, "%s: not a bundle of this feature schema (%zu features, this daemon's"
			  " %zu; retrain it: docs/model.md)", file, m->n_features, features__count());
	bool any = false;
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		any |= m->cause[c].present;
	if (rv == 0 && !any)
		rv = fail(err, len, -EINVAL, "%s: no cause models", file);
	if (rv == 0 && !m->fault.b.present)
		rv = fail(err, len, -EINVAL, "%s: no fault line (the detector)", file);
	if (rv == 0 && m->fault_ref.n_at > 0 && !m->fault_ref.b.present)
		rv = fail(err, len, -EINVAL, "%s: thresholds per point without a fault_ref line", file);
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
	if (m->fault.b.present)
		XGBoosterFree(m->fault.b.booster);
	if (m->fault_ref.b.present)
		XGBoosterFree(m->fault_ref.b.booster);
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

/* An XGBoost matrix of the first `width` columns of n rows of features. */
static int matrix(const double *features, size_t n, size_t stride, size_t width, DMatrixHandle *out)
{
	size_t cells = n * width;
	float *x = malloc((cells ? cells : 1) * sizeof *x);
	if (x == NULL)
		return -ENOMEM;
	/* Features are finite doubles or NaN; beyond float's range they
	 * saturate rather than become Inf, which XGBoost refuses. */
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < width; j++) {
			double v = features[i * stride + j];
			x[i * width + j] = isnan(v) ? NAN : (float)fmax(-FLT_MAX, fmin(FLT_MAX, v));
		}
	int rv = XGDMatrixCreateFromMat(x, n, width, NAN, out) == 0 ? 0 : -EIO;
	free(x);
	return rv;
}

int model__predict(const struct model *m, const double *features, size_t n, double *fault, double *fault_ref,
		   double *prob)
{
	DMatrixHandle d;
	int rv = matrix(features, n, m->n_features, features__base_count(), &d);
	if (rv != 0)
		return rv;
	rv = predict_one(&m->fault.b, d, n, fault, 1);
	for (int c = 0; rv == 0 && c < CAUSE_COUNT; c++)
		rv = predict_one(&m->cause[c], d, n, prob + c, CAUSE_COUNT);
	XGDMatrixFree(d);
	if (rv != 0 || fault_ref == NULL)
		return rv;
	if (!m->fault_ref.b.present) {
		for (size_t i = 0; i < n; i++)
			fault_ref[i] = NAN;
		return 0;
	}
	if ((rv = matrix(features, n, m->n_features, m->n_features, &d)) != 0)
		return rv;
	rv = predict_one(&m->fault_ref.b, d, n, fault_ref, 1);
	XGDMatrixFree(d);
	return rv;
}

enum model_health model__health(const struct model *m, double fault, double fault_ref, double shortfall,
				double progress)
{
	const struct model_detector *det = isnan(fault_ref) ? &m->fault : &m->fault_ref;
	double p = isnan(fault_ref) ? fault : fault_ref;
	double thr = det->threshold, sus = det->suspect, check = INFINITY;
	size_t n = det->n_at;
	if (n > 0 && progress >= det->at[0]) {	/* false for NaN */
		/* The points at or below and at or above the run's progress. */
		size_t lo = 0;
		while (lo + 1 < n && det->at[lo + 1] <= progress)
			lo++;
		size_t hi = lo + 1 < n && det->at[lo] < progress ? lo + 1 : lo;
		thr = fmax(det->threshold_at[lo], det->threshold_at[hi]);
		sus = fmax(det->suspect_at[lo], det->suspect_at[hi]);
		if (det->has_shortfall)
			check = fmax(det->shortfall_at[lo], det->shortfall_at[hi]);
	}
	if (shortfall >= check)	/* false for NaN */
		return MODEL_FAULTY;
	return p >= thr ? MODEL_FAULTY : p >= sus ? MODEL_SUSPECT : MODEL_HEALTHY;
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
