/* TOML parser: any bytes must give a tree or an error with a position. */
#include "fuzz.h"
#include "toml.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

/* Walks the tree as the config layer would (lookups and all values). */
static void walk(const struct toml_value *v, int depth)
{
	if (depth > TOML_MAX_DEPTH + 1)
		abort();	/* the parser promised a depth limit */
	if (v->type == TOML_TABLE) {
		for (size_t i = 0; i < v->u.table.len; i++) {
			const struct toml_kv *kv = &v->u.table.items[i];

			if (kv->key[kv->keylen] != '\0')
				abort();
			/* lookups are by C string: keys with a NUL (\u0000) are not found */
			if (strlen(kv->key) == kv->keylen && toml_get_kv(v, kv->key) == NULL)
				abort();
			walk(kv->val, depth + 1);
		}
	} else if (v->type == TOML_ARRAY) {
		for (size_t i = 0; i < v->u.array.len; i++)
			walk(v->u.array.items[i], depth + 1);
	} else if (v->type == TOML_STRING && v->u.str.ptr[v->u.str.len] != '\0') {
		abort();	/* strings are always NUL-terminated */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_value *root = toml_parse((const char *)data, size, &err);

	if (root) {
		walk(root, 0);
		toml_free(root);
	} else if (err.msg[0] == '\0' || memchr(err.msg, '\0', sizeof err.msg) == NULL) {
		abort();	/* every failure says why */
	}
	return 0;
}
