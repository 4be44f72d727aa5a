#include "json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

void json__init(struct json *j, FILE *out)
{
	*j = (struct json){.out = out};
	j->first[0] = true;
}

/* Writes the separator a new value needs at the current position. */
static void json__sep(struct json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (!j->first[j->depth])
		fputc(',', j->out);
	j->first[j->depth] = false;
}

static void json__open(struct json *j, char c)
{
	json__sep(j);
	fputc(c, j->out);
	if (j->depth == JSON_MAX_DEPTH) {
		j->broken = true;
		return;
	}
	j->first[++j->depth] = true;
}

static void json__close(struct json *j, char c)
{
	if (j->depth == 0 || j->after_key)
		j->broken = true;
	else
		j->depth--;
	fputc(c, j->out);
}

void json__begin_object(struct json *j) { json__open(j, '{'); }
void json__end_object(struct json *j) { json__close(j, '}'); }
void json__begin_array(struct json *j) { json__open(j, '['); }
void json__end_array(struct json *j) { json__close(j, ']'); }

static void json__escaped(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\b': fputs("\\b", out); break;
		case '\f': fputs("\\f", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

void json__key(struct json *j, const char *key)
{
	json__sep(j);
	json__escaped(j->out, key);
	fputc(':', j->out);
	j->after_key = true;
}

void json__string(struct json *j, const char *s)
{
	if (s == NULL) {
		json__null(j);
		return;
	}
	json__sep(j);
	json__escaped(j->out, s);
}

void json__null(struct json *j)
{
	json__sep(j);
	fputs("null", j->out);
}

void json__bool(struct json *j, bool v)
{
	json__sep(j);
	fputs(v ? "true" : "false", j->out);
}

void json__uint(struct json *j, uint64_t v)
{
	json__sep(j);
	fprintf(j->out, "%" PRIu64, v);
}

void json__int(struct json *j, int64_t v)
{
	json__sep(j);
	fprintf(j->out, "%" PRId64, v);
}

/* Returns the string for a non-finite value, or NULL for a finite one. */
static const char *json__nonfinite(double v)
{
	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "Infinity" : "-Infinity";
	return NULL;
}

int json__format_double(char *buf, size_t len, double v)
{
	/* The shortest of %.15g..%.17g that reads back as the same value:
	 * exact, without the noise digits %.17g alone prints for 0.1. */
	int n = 0;
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return n;
}

int json__format_float(char *buf, size_t len, float v)
{
	int n = 0;
	for (int prec = 6; prec <= 9; prec++) {
		n = snprintf(buf, len, "%.*g", prec, (double)v);
		if (strtof(buf, NULL) == v)
			break;
	}
	return n;
}

void json__double(struct json *j, double v)
{
	const char *s = json__nonfinite(v);
	if (s != NULL) {
		json__string(j, s);
		return;
	}
	char buf[32];
	json__format_double(buf, sizeof buf, v);
	json__sep(j);
	fputs(buf, j->out);
}

void json__float(struct json *j, float v)
{
	const char *s = json__nonfinite(v);
	if (s != NULL) {
		json__string(j, s);
		return;
	}
	char buf[32];
	json__format_float(buf, sizeof buf, v);
	json__sep(j);
	fputs(buf, j->out);
}

void json__kstring(struct json *j, const char *key, const char *s)
{
	json__key(j, key);
	json__string(j, s);
}

void json__kuint(struct json *j, const char *key, uint64_t v)
{
	json__key(j, key);
	json__uint(j, v);
}

void json__kdouble(struct json *j, const char *key, double v)
{
	json__key(j, key);
	json__double(j, v);
}

void json__kopt_uint(struct json *j, const char *key, bool has, uint64_t v)
{
	json__key(j, key);
	if (has)
		json__uint(j, v);
	else
		json__null(j);
}

void json__kopt_double(struct json *j, const char *key, bool has, double v)
{
	json__key(j, key);
	if (has)
		json__double(j, v);
	else
		json__null(j);
}

bool json__ok(const struct json *j)
{
	return !j->broken && j->depth == 0 && !j->after_key && !ferror(j->out);
}
