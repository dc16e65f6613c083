/* A small JSON reader for the unit tests (conformance data is JSON).
 * Strings are decoded to UTF-8 and may contain NUL (see len); numbers keep
 * their source text. Not for untrusted input of unbounded size. */
#ifndef TEST_JSON_H
#define TEST_JSON_H

#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	char *str;		/* STRING: decoded; NUMBER: source text */
	size_t len;		/* STRING/NUMBER: bytes in str; ARRAY/OBJECT: items */
	int boolean;
	char **keys;		/* OBJECT: keys[i] names items[i] (source order) */
	struct json **items;
};

/* Returns NULL on a syntax error (with a message on stderr). */
struct json *json_parse(const char *text, size_t len);
struct json *json_load_file(const char *path);
void json_free(struct json *j);

/* Object member by key, or NULL. */
struct json *json_get(const struct json *obj, const char *key);
/* Reads a whole file; NUL-terminated; *len gets its size. NULL on error. */
char *read_file(const char *path, size_t *len);

#endif
