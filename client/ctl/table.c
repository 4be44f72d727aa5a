#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "ctl.h"

void table__init(struct table *t, size_t n_cols, const char *const *heads)
{
	*t = (struct table){.n_cols = n_cols};
	for (size_t i = 0; i < n_cols; i++)
		table__cell(t, "%s", heads[i]);
}

void table__cell(struct table *t, const char *fmt, ...)
{
	if (t->n_cells == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **cells = realloc(t->cells, cap * sizeof *cells);
		if (cells == NULL)
			abort();	/* a table of a few thousand cells; no recovery */
		t->cells = cells;
		t->cap = cap;
	}
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&t->cells[t->n_cells], fmt, ap) < 0)
		abort();
	va_end(ap);
	t->n_cells++;
}

/* Terminal columns of a UTF-8 string: wcwidth() under C.UTF-8 whatever the
 * caller's locale, so that a CJK run name takes its two columns and a
 * combining mark none. Bytes that are not UTF-8, and every character where
 * that locale is missing, count one column each. */
static size_t table__width(const char *s)
{
	static locale_t utf8;
	static bool tried;
	if (!tried) {
		utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
		tried = true;
	}
	size_t w = 0;
	if (utf8 == (locale_t)0) {
		for (; *s != '\0'; s++)
			if (((unsigned char)*s & 0xc0) != 0x80)
				w++;
		return w;
	}
	locale_t old = uselocale(utf8);
	mbstate_t st;
	memset(&st, 0, sizeof st);
	for (size_t left = strlen(s); left > 0;) {
		wchar_t wc;
		size_t n = mbrtowc(&wc, s, left, &st);
		if (n == (size_t)-1 || n == (size_t)-2 || n == 0) {
			memset(&st, 0, sizeof st);
			n = 1;
			w++;
		} else {
			int cw = wcwidth(wc);
			w += cw < 0 ? 1 : (size_t)cw;
		}
		s += n;
		left -= n;
	}
	uselocale(old);
	return w;
}

/* Columns are two spaces apart; the last one is not padded, so that long
 * texts (symptoms, fixes) do not leave trailing blanks. */
void table__print(const struct table *t, FILE *out)
{
	size_t *width = calloc(t->n_cols, sizeof *width);
	if (width == NULL)
		abort();
	for (size_t i = 0; i < t->n_cells; i++) {
		size_t w = table__width(t->cells[i]);
		if (w > width[i % t->n_cols])
			width[i % t->n_cols] = w;
	}
	for (size_t i = 0; i < t->n_cells; i++) {
		size_t col = i % t->n_cols;
		fputs(t->cells[i], out);
		if (col + 1 == t->n_cols || i + 1 == t->n_cells) {
			fputc('\n', out);
			continue;
		}
		for (size_t w = table__width(t->cells[i]); w < width[col] + 2; w++)
			fputc(' ', out);
	}
	free(width);
}

void table__free(struct table *t)
{
	for (size_t i = 0; i < t->n_cells; i++)
		free(t->cells[i]);
	free(t->cells);
	*t = (struct table){0};
}

const char *text__time(char *buf, size_t len, bool has, double t)
{
	struct tm tm;
	time_t secs = (time_t)t;
	if (!has || !isfinite(t) || localtime_r(&secs, &tm) == NULL) {
		snprintf(buf, len, "-");
		return buf;
	}
	char zone[8];
	strftime(zone, sizeof zone, "%z", &tm);
	char stamp[32];
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	/* %z gives +0200; ISO 8601's extended format wants +02:00. */
	if (strlen(zone) == 5)
		snprintf(buf, len, "%s%.3s:%s", stamp, zone, zone + 3);
	else
		snprintf(buf, len, "%s%s", stamp, zone);
	return buf;
}

const char *text__u64(char *buf, size_t len, bool has, uint64_t v)
{
	if (has)
		snprintf(buf, len, "%" PRIu64, v);
	else
		snprintf(buf, len, "-");
	return buf;
}

const char *text__double(char *buf, size_t len, bool has, double v)
{
	if (!has)
		snprintf(buf, len, "-");
	else if (isnan(v))
		snprintf(buf, len, "nan");
	else if (isinf(v))
		snprintf(buf, len, "%s", v > 0 ? "inf" : "-inf");
	else
		snprintf(buf, len, "%.6g", v);
	return buf;
}

const char *text__str(const char *s)
{
	return s != NULL && *s != '\0' ? s : "-";
}

const char *text__end_status(int status)
{
	switch (status) {
	case DNNFAULT__END_STATUS__END_COMPLETED: return "completed";
	case DNNFAULT__END_STATUS__END_CRASHED: return "crashed";
	case DNNFAULT__END_STATUS__END_INTERRUPTED: return "interrupted";
	default: return "unknown";
	}
}
