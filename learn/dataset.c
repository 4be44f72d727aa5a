#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_features.h"
#include "series.h"
#include "store_read.h"

const double dataset_points[DATASET_POINTS] = {0.10, 0.25, 0.50, 1.00};
const char *const baseline_names[BASE_COUNT] = {"autotrainer", "deepdiagnosis", "umlaut"};

/* Room for one more row; returns its index or -ENOMEM. */
static long grow(struct dataset *d)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		double *x = realloc(d->x, cap * d->n_features * sizeof *x);
		if (x == NULL)
			return -ENOMEM;
		d->x = x;
		double *fd = realloc(d->fd, cap * DEEPFD_FEATURES * sizeof *fd);
		if (fd == NULL)
			return -ENOMEM;
		d->fd = fd;
		struct row_meta *m = realloc(d->meta, cap * sizeof *m);
		if (m == NULL)
			return -ENOMEM;
		d->meta = m;
		d->cap = cap;
	}
	return (long)d->n++;
}

static int group_of(struct dataset *d, const char *name, size_t len)
{
	for (size_t g = 0; g < d->n_groups; g++)
		if (strlen(d->groups[g]) == len && strncmp(d->groups[g], name, len) == 0)
			return (int)g;
	char **more = realloc(d->groups, (d->n_groups + 1) * sizeof *more);
	if (more == NULL)
		return -ENOMEM;
	d->groups = more;
	if ((d->groups[d->n_groups] = strndup(name, len)) == NULL)
		return -ENOMEM;
	return (int)d->n_groups++;
}

struct build {
	struct dataset *d;
	struct store_reader *r;
	char *err;
	size_t len;
	size_t skipped;
};

/* The reference run the user named for `run` (runs.reference), with its
 * telemetry in *ref; 0 when it names none, or one the store lacks or that
 * sent no step: such a run is then compared with nothing, as the daemon
 * would (a warning there; here the bundle's runs_with_reference tells). */
static int64_t stored_reference(struct build *b, int64_t run, struct series *ref)
{
	int64_t id = 0;
	char err[256];
	memset(ref, 0, sizeof *ref);
	if (store_read__reference(b->r, run, &id, err, sizeof err) != 0 || id == 0)
		return 0;
	if (store_read__series(b->r, id, ref, err, sizeof err) != 0 || ref->n == 0) {
		series__free(ref);
		return 0;
	}
	return id;
}

static int add_run(int64_t run, const char *name, const char *labels, void *arg)
{
	struct build *b = arg;
	struct dataset *d = b->d;
	cause_set set;
	if (causes__parse(labels, &set) != 0) {
		b->skipped++;
		return 0;
	}
	const char *dash = strchr(name, '-');
	int group = group_of(d, name, dash ? (size_t)(dash - name) : strlen(name));
	if (group < 0)
		return group;
	struct series s;
	memset(&s, 0, sizeof s);
	if (store_read__series(b->r, run, &s, b->err, b->len) != 0 || s.n == 0) {
		/* A corpus run that crashed before its first step: nothing to learn. */
		series__free(&s);
		b->skipped++;
		return 0;
	}
	struct series ref;
	int64_t ref_id = stored_reference(b, run, &ref);
	double *ref_x = ref_id ? malloc(d->n_features * sizeof *ref_x) : NULL;
	int rv = ref_id && ref_x == NULL ? -ENOMEM : 0;
	for (int p = 0; rv == 0 && p < DATASET_POINTS; p++) {
		long i = grow(d);
		if (i < 0) {
			rv = (int)i;
			break;
		}
		size_t upto = features__upto(&s, dataset_points[p]);
		double *x = d->x + (size_t)i * d->n_features;
		rv = features__compute(&s, upto, x);
		struct series v = features__prefix(&s, upto);
		if (rv == 0 && ref_id) {
			/* As the daemon compares them (analyze.c). */
			rv = features__compute(&ref, features__reference_upto(&v, &ref), ref_x);
			features__apply_reference(x, ref_x);
		}
		baselines__deepfd_features(&v, d->fd + (size_t)i * DEEPFD_FEATURES);
		d->meta[i] = (struct row_meta){
			.run = run, .group = group, .point = p, .labels = set, .reference = ref_id,
			.base = {baselines__autotrainer(&v), baselines__deepdiagnosis(&v), baselines__umlaut(&v)},
		};
	}
	free(ref_x);
	series__free(&ref);
	series__free(&s);
	return rv;
}

int dataset__from_store(const char *db, struct dataset *d, char *err, size_t len)
{
	memset(d, 0, sizeof *d);
	d->n_features = features__count();
	struct build b = {.d = d, .err = err, .len = len};
	int rv = store_read__open(db, &b.r, err, len);
	if (rv != 0)
		return rv;
	rv = store_read__labelled(b.r, add_run, &b, err, len);
	store_read__close(b.r);
	if (rv > 0)
		rv = -EIO;
	if (rv == -ENOMEM)
		snprintf(err, len, "out of memory");
	if (rv == 0 && d->n == 0) {
		snprintf(err, len, "%s has no labelled runs with telemetry", db);
		rv = -ENOENT;
	}
	return rv;
}

void dataset__write_set(FILE *f, cause_set set)
{
	bool first = true;
	for (int c = 0; c < CAUSE_COUNT; c++)
		if (set & ((cause_set)1 << c)) {
			fprintf(f, "%s%s", first ? "" : "|", causes__name((enum cause_id)c));
			first = false;
		}
}

static void write_num(FILE *f, double v)
{
	if (isnan(v))
		fputs(",nan", f);
	else
		fprintf(f, ",%.6g", v);
}

int dataset__write_csv(const struct dataset *d, FILE *f)
{
	fputs("run,program,point,labels", f);
	for (int b = 0; b < BASE_COUNT; b++)
		fprintf(f, ",%s", baseline_names[b]);
	/* The reference block is derived (dataset__set_references), never stored. */
	size_t base = features__base_count();
	for (size_t j = 0; j < base; j++)
		fprintf(f, ",%s", features__name(j));
	for (size_t j = 0; j < DEEPFD_FEATURES; j++)
		fprintf(f, ",%s", baselines__deepfd_name(j));
	fputc('\n', f);
	for (size_t i = 0; i < d->n; i++) {
		const struct row_meta *m = &d->meta[i];
		fprintf(f, "%lld,%s,%.2f,", (long long)m->run, d->groups[m->group], dataset_points[m->point]);
		dataset__write_set(f, m->labels);
		for (int b = 0; b < BASE_COUNT; b++) {
			fputc(',', f);
			dataset__write_set(f, m->base[b]);
		}
		for (size_t j = 0; j < base; j++)
			write_num(f, d->x[i * d->n_features + j]);
		for (size_t j = 0; j < DEEPFD_FEATURES; j++)
			write_num(f, d->fd[i * DEEPFD_FEATURES + j]);
		fputc('\n', f);
	}
	return ferror(f) ? -EIO : 0;
}

/* Next comma-separated field of *p (cut in place). */
static char *field(char **p)
{
	char *start = *p;
	if (start == NULL)
		return NULL;
	char *end = strpbrk(start, ",\n");
	if (end == NULL || *end == '\n') {
		if (end != NULL)
			*end = '\0';
		*p = NULL;
	} else {
		*end = '\0';
		*p = end + 1;
	}
	return start;
}

static int parse_set(char *text, cause_set *out)
{
	for (char *c = text; *c; c++)
		if (*c == '|')
			*c = ',';
	return causes__parse(text, out);
}

/* The header must name exactly this build's columns, in order. */
static int check_header(char *line, char *err, size_t len)
{
	char *p = line;
	const char *fixed[] = {"run", "program", "point", "labels"};
	size_t col = 0;
	for (size_t j = 0; j < 4; j++, col++) {
		char *f = field(&p);
		if (f == NULL || strcmp(f, fixed[j]) != 0)
			goto bad;
	}
	for (int b = 0; b < BASE_COUNT; b++, col++) {
		char *f = field(&p);
		if (f == NULL || strcmp(f, baseline_names[b]) != 0)
			goto bad;
	}
	for (size_t j = 0; j < features__base_count(); j++, col++) {
		char *f = field(&p);
		if (f == NULL || strcmp(f, features__name(j)) != 0)
			goto bad;
	}
	for (size_t j = 0; j < DEEPFD_FEATURES; j++, col++) {
		char *f = field(&p);
		if (f == NULL || strcmp(f, baselines__deepfd_name(j)) != 0)
			goto bad;
	}
	if (p == NULL)
		return 0;
bad:
	snprintf(err, len, "rows of another feature schema (column %zu differs from schema %d); "
		 "rebuild them from the corpus store (docs/corpus.md)", col + 1, FEATURES_SCHEMA_VERSION);
	return -EINVAL;
}

static int by_run_point(const void *a, const void *b, void *arg)
{
	const struct row_meta *m = arg;
	const struct row_meta *x = &m[*(const size_t *)a], *y = &m[*(const size_t *)b];
	if (x->run != y->run)
		return x->run < y->run ? -1 : 1;
	return (x->point > y->point) - (x->point < y->point);
}

/* Rows sorted by run and point, groups numbered in order of first
 * appearance: the order the store export writes, so the same rows give
 * the same folds and models however the files were split or concatenated.
 * A run twice at one point (a file read twice) is an error. */
static int canonical_order(struct dataset *d, char *err, size_t len)
{
	size_t n = d->n, nf = d->n_features;
	size_t *idx = malloc((n ? n : 1) * sizeof *idx);
	int *renum = malloc((d->n_groups ? d->n_groups : 1) * sizeof *renum);
	char **groups = malloc((d->n_groups ? d->n_groups : 1) * sizeof *groups);
	double *x = malloc((n ? n : 1) * nf * sizeof *x);
	double *fd = malloc((n ? n : 1) * DEEPFD_FEATURES * sizeof *fd);
	struct row_meta *meta = malloc((n ? n : 1) * sizeof *meta);
	int rv = idx && renum && groups && x && fd && meta ? 0 : -ENOMEM;
	for (size_t i = 0; rv == 0 && i < n; i++)
		idx[i] = i;
	if (rv == 0)
		qsort_r(idx, n, sizeof *idx, by_run_point, d->meta);
	for (size_t i = 1; rv == 0 && i < n; i++)
		if (by_run_point(&idx[i - 1], &idx[i], d->meta) == 0) {
			const struct row_meta *m = &d->meta[idx[i]];
			snprintf(err, len, "rows of run %lld at point %.2f appear twice",
				 (long long)m->run, dataset_points[m->point]);
			rv = -EINVAL;
		}
	size_t used = 0;
	for (size_t g = 0; rv == 0 && g < d->n_groups; g++)
		renum[g] = -1;
	for (size_t i = 0; rv == 0 && i < n; i++) {
		struct row_meta m = d->meta[idx[i]];
		if (renum[m.group] < 0) {
			groups[used] = d->groups[m.group];
			renum[m.group] = (int)used++;
		}
		m.group = renum[m.group];
		meta[i] = m;
		memcpy(&x[i * nf], &d->x[idx[i] * nf], nf * sizeof *x);
		memcpy(&fd[i * DEEPFD_FEATURES], &d->fd[idx[i] * DEEPFD_FEATURES],
		       DEEPFD_FEATURES * sizeof *fd);
	}
	if (rv == 0) {
		/* every group has a row: a group is created by its first row */
		free(d->x), free(d->fd), free(d->meta), free(d->groups);
		d->x = x, d->fd = fd, d->meta = meta, d->groups = groups;
		d->cap = n;
		x = fd = NULL, meta = NULL, groups = NULL;
	}
	free(idx), free(renum), free(groups), free(x), free(fd), free(meta);
	return rv;
}

int dataset__read_csv(FILE *f, struct dataset *d, char *err, size_t len)
{
	memset(d, 0, sizeof *d);
	d->n_features = features__count();
	char *line = NULL;
	size_t cap = 0;
	size_t lineno = 1;
	int rv = getline(&line, &cap, f) > 0 ? check_header(line, err, len) : -EINVAL;
	if (rv == -EINVAL && err[0] == '\0')
		snprintf(err, len, "empty rows file");
	while (rv == 0 && getline(&line, &cap, f) > 0) {
		lineno++;
		/* Rows files concatenated (one per program, docs/corpus.md):
		 * each header is checked like the first. */
		if (strncmp(line, "run,", 4) == 0) {
			rv = check_header(line, err, len);
			continue;
		}
		long i = grow(d);
		if (i < 0) {
			rv = (int)i;
			break;
		}
		struct row_meta *m = &d->meta[i];
		char *p = line, *run = field(&p), *prog = field(&p), *point = field(&p), *labels = field(&p);
		rv = labels != NULL ? 0 : -EINVAL;
		if (rv == 0) {
			m->run = strtoll(run, NULL, 10);
			int g = group_of(d, prog, strlen(prog));
			m->group = g;
			rv = g < 0 ? g : parse_set(labels, &m->labels);
			double pt = strtod(point, NULL);
			m->point = -1;
			for (int k = 0; k < DATASET_POINTS; k++)
				if (fabs(dataset_points[k] - pt) < 1e-6)
					m->point = k;
			if (m->point < 0)
				rv = -EINVAL;
		}
		for (int b = 0; rv == 0 && b < BASE_COUNT; b++) {
			char *t = field(&p);
			rv = t ? parse_set(t, &m->base[b]) : -EINVAL;
		}
		size_t base = features__base_count(), total = base + DEEPFD_FEATURES;
		double *x = d->x + (size_t)i * d->n_features;
		for (size_t j = 0; rv == 0 && j < total; j++) {
			char *t = field(&p), *end;
			double v = t ? strtod(t, &end) : NAN;
			if (t == NULL || end == t)
				rv = -EINVAL;
			else if (j < base)
				x[j] = v;
			else
				d->fd[(size_t)i * DEEPFD_FEATURES + j - base] = v;
		}
		if (rv == 0)
			features__apply_reference(x, NULL);
		if (rv == -EINVAL)
			snprintf(err, len, "rows line %zu is malformed", lineno);
	}
	free(line);
	if (rv == 0)
		rv = canonical_order(d, err, len);
	if (rv == -ENOMEM)
		snprintf(err, len, "out of memory");
	if (rv != 0)
		dataset__free(d);
	return rv;
}

/* The row of `run` at `point`, by bisection over the canonical order;
 * -1 if none. */
static long row_of(const struct dataset *d, int64_t run, int point)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct row_meta *m = &d->meta[mid];
		if (m->run < run || (m->run == run && m->point < point))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < d->n && d->meta[lo].run == run && d->meta[lo].point == point ? (long)lo : -1;
}

int dataset__set_references(struct dataset *d, FILE *f, char *err, size_t len)
{
	size_t n_ref = 0, cap = 0;
	struct { int group; int64_t run; } *ref = NULL;
	char *line = NULL;
	size_t line_cap = 0, lineno = 0;
	int rv = 0;
	while (rv == 0 && getline(&line, &line_cap, f) > 0) {
		lineno++;
		char *p = line, *prog = field(&p), *run = field(&p), *end;
		if (lineno == 1 && prog != NULL && strcmp(prog, "program") == 0)
			continue;
		long long id = run != NULL ? strtoll(run, &end, 10) : 0;
		if (prog == NULL || run == NULL || end == run || id <= 0) {
			snprintf(err, len, "references line %zu is not \"program,run\"", lineno);
			rv = -EINVAL;
			break;
		}
		int g = -1;
		for (size_t k = 0; k < d->n_groups; k++)
			if (strcmp(d->groups[k], prog) == 0)
				g = (int)k;
		if (g < 0 || row_of(d, id, DATASET_POINTS - 1) < 0)
			continue;	/* a program or run these rows lack */
		if (n_ref == cap) {
			cap = cap ? 2 * cap : 64;
			void *more = realloc(ref, cap * sizeof *ref);
			if (more == NULL) {
				rv = -ENOMEM;
				break;
			}
			ref = more;
		}
		ref[n_ref].group = g;
		ref[n_ref++].run = id;
	}
	free(line);
	int64_t *mine = malloc((n_ref ? n_ref : 1) * sizeof *mine);
	if (rv == 0 && mine == NULL)
		rv = -ENOMEM;
	for (size_t i = 0; rv == 0 && i < d->n; i++) {
		struct row_meta *m = &d->meta[i];
		size_t k = 0;
		for (size_t j = 0; j < n_ref; j++)
			if (ref[j].group == m->group && ref[j].run != m->run)
				mine[k++] = ref[j].run;
		m->reference = k ? mine[(uint64_t)m->run % k] : 0;
		long r = m->reference ? row_of(d, m->reference, m->point) : -1;
		features__apply_reference(d->x + i * d->n_features, r >= 0 ? d->x + (size_t)r * d->n_features : NULL);
		if (r < 0)
			m->reference = 0;
	}
	if (rv == -ENOMEM)
		snprintf(err, len, "out of memory");
	free(mine);
	free(ref);
	return rv;
}

void dataset__free(struct dataset *d)
{
	free(d->x);
	free(d->fd);
	free(d->meta);
	for (size_t g = 0; g < d->n_groups; g++)
		free(d->groups[g]);
	free(d->groups);
	memset(d, 0, sizeof *d);
}
