/* TOML 1.0.0 parser producing a small tree.
 *
 * Every value remembers the line and column where it was defined, so the
 * config layer can report "server.toml:12: ..." for any key. Strings are
 * byte strings (they may contain NUL from \u0000) and always NUL-terminated. */
#ifndef TOML_H
#define TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type {
	TOML_TABLE,
	TOML_ARRAY,
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,		/* offset date-time: 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL,	/* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,	/* 1979-05-27 */
	TOML_TIME_LOCAL,	/* 07:32:00 */
};

struct toml_datetime {
	int year, month, day;		/* unused for TOML_TIME_LOCAL */
	int hour, minute, second;	/* unused for TOML_DATE_LOCAL */
	int nanosecond;			/* fraction, truncated to 9 digits */
	int frac_digits;		/* digits written in the source (0: none) */
	int offset_minutes;		/* TOML_DATETIME only; Z is 0 */
};

struct toml_value;

struct toml_kv {
	char *key;
	size_t keylen;
	int line, col;			/* where the key was (first) defined */
	struct toml_value *val;
};

struct toml_value {
	enum toml_type type;
	int line, col;			/* position of the value, or a table's header/first key */
	union {
		struct { char *ptr; size_t len; } str;
		int64_t integer;
		double fp;
		bool boolean;
		struct toml_datetime dt;
		struct {
			struct toml_kv *items;	/* in source order */
			size_t len, cap;
			/* Private lookup index (slot = item index + 1), built by the
			 * parser for big tables; NULL means toml_get scans items. */
			size_t *index;
			size_t index_cap;
		} table;
		struct { struct toml_value **items; size_t len, cap; } array;
	} u;
};

struct toml_error {
	int line, col;			/* 1-based; 0 when unknown */
	char msg[256];
};

/* Parses a whole document (raw bytes, any length; NUL bytes are errors).
 * Returns the root table, or NULL with *err filled in. */
struct toml_value *toml_parse(const char *buf, size_t len, struct toml_error *err);
void toml_free(struct toml_value *v);

/* Looks up a key in a table (NULL if absent or if t is not a table). */
struct toml_value *toml_get(const struct toml_value *t, const char *key);
const struct toml_kv *toml_get_kv(const struct toml_value *t, const char *key);

const char *toml_type_name(enum toml_type t);	/* "string", "integer", ... */

/* Nesting limit: tables, arrays and inline tables deeper than this (counting
 * the root table as 0) are rejected, so hostile input cannot exhaust the
 * stack in the parser, toml_free or tree walkers. */
#define TOML_MAX_DEPTH 100

#endif
