/* The admin API's JSON reader (src/jsontree.c), and the round trip a service
 * makes: JSON -> TOML tree -> the services_file's TOML text -> TOML parser.
 * Whatever JSON object is accepted must come back as the same tree. */
#include <string.h>

#include "apisvc.h"
#include "fuzz.h"
#include "jsontree.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

static bool same(const struct toml_value *a, const struct toml_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case TOML_STRING:
		return a->u.str.len == b->u.str.len && memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
	case TOML_INTEGER:
		return a->u.integer == b->u.integer;
	case TOML_FLOAT:
		return a->u.fp == b->u.fp || (a->u.fp != a->u.fp && b->u.fp != b->u.fp);
	case TOML_BOOL:
		return a->u.boolean == b->u.boolean;
	case TOML_ARRAY:
		if (a->u.array.len != b->u.array.len)
			return false;
		for (size_t i = 0; i < a->u.array.len; i++)
			if (!same(a->u.array.items[i], b->u.array.items[i]))
				return false;
		return true;
	case TOML_TABLE:
		if (a->u.table.len != b->u.table.len)
			return false;
		for (size_t i = 0; i < a->u.table.len; i++) {
			const struct toml_kv *x = &a->u.table.items[i], *y = &b->u.table.items[i];

			if (x->keylen != y->keylen || memcmp(x->key, y->key, x->keylen) != 0 ||
			    !same(x->val, y->val))
				return false;
		}
		return true;
	default:
		return false;	/* JSON makes no dates */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct apisvcs set = { 0 };
	struct toml_error err;
	struct toml_value *v, *back, *old;
	struct buf text = { 0 };
	char *copy;

	copy = malloc(size ? size : 1);		/* exact size: ASan sees overreads */
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	v = json_to_toml(copy, size, &err);
	free(copy);
	if (!v) {
		if (!err.msg[0] || err.line < 1 || err.col < 1)
			abort();	/* every refusal says where and why */
		return 0;
	}
	if (v->type != TOML_TABLE || apisvcs_put(&set, "s", v, &old) < 0) {
		toml_free(v);
		return 0;
	}
	apisvcs_toml(&set, true, &text);
	back = toml_parse(text.p, text.len, &err);
	if (!back) {
		fprintf(stderr, "written TOML does not parse: %d:%d: %s\n%.*s\n", err.line, err.col,
			err.msg, (int)text.len, text.p);
		abort();
	}
	if (!same(v, toml_get(toml_get(toml_get(back, "server"), "services"), "s")))
		abort();
	toml_free(back);
	buf_free(&text);
	apisvcs_free(&set);
	return 0;
}
