/* JSON (RFC 8259) read into the TOML parser's tree (toml.h), so that a
 * service sent to the admin API as JSON is checked by the same code, with
 * the same messages, as one written in the config file.
 *
 * object -> table, array -> array, string -> string, number -> integer
 * (no fraction or exponent, within int64) or float, true/false -> bool.
 * null has no TOML equivalent and is an error, as are duplicate keys,
 * invalid UTF-8, lone surrogates, nesting deeper than JSON_MAX_DEPTH and
 * objects of more than JSON_MAX_KEYS keys.
 * Values carry line 0: they have no place in a file. */
#ifndef JSONTREE_H
#define JSONTREE_H

#include <stddef.h>

#include "toml.h"

#define JSON_MAX_DEPTH 32
#define JSON_MAX_KEYS 256	/* in one object (duplicates are looked for) */

/* Returns the tree, or NULL with err filled (line and column of the error). */
struct toml_value *json_to_toml(const char *buf, size_t len, struct toml_error *err);

#endif
