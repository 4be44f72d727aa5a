/* A small streaming JSON writer onto a stdio stream. It places commas and
 * colons itself; the caller only opens, closes and emits values. */
#ifndef DNNFAULT_JSON_H
#define DNNFAULT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 32

struct json {
	FILE *out;
	int depth;
	bool first[JSON_MAX_DEPTH + 1];	/* no value written yet at this level */
	bool after_key;
	bool broken;			/* nesting misuse; output is invalid */
};

void json__init(struct json *j, FILE *out);

void json__begin_object(struct json *j);
void json__end_object(struct json *j);
void json__begin_array(struct json *j);
void json__end_array(struct json *j);

/* The key of the next value in an object. */
void json__key(struct json *j, const char *key);

/* Strings are escaped as JSON requires; bytes >= 0x80 pass unchanged, so
 * UTF-8 stays UTF-8 and invalid sequences are left as they are. NULL
 * writes null. */
void json__string(struct json *j, const char *s);
void json__null(struct json *j);
void json__bool(struct json *j, bool v);
void json__uint(struct json *j, uint64_t v);
void json__int(struct json *j, int64_t v);

/* Numbers are written so that they read back exactly, with as few digits
 * as that needs (at most %.17g for doubles, %.9g for floats); NaN and the
 * infinities, which JSON cannot express, become the strings "NaN",
 * "Infinity" and "-Infinity". */
void json__double(struct json *j, double v);
void json__float(struct json *j, float v);

/* The finite-number formatting above into buf (32 bytes suffice);
 * returns what snprintf returned. Shared with the CSV writer. */
int json__format_double(char *buf, size_t len, double v);
int json__format_float(char *buf, size_t len, float v);

/* key + value in one call, for the common case. */
void json__kstring(struct json *j, const char *key, const char *s);
void json__kuint(struct json *j, const char *key, uint64_t v);
void json__kdouble(struct json *j, const char *key, double v);

/* Optional protobuf fields: the value, or null when !has. */
void json__kopt_uint(struct json *j, const char *key, bool has, uint64_t v);
void json__kopt_double(struct json *j, const char *key, bool has, double v);

/* True when every begin had its end and the stream reports no error. */
bool json__ok(const struct json *j);

#endif
