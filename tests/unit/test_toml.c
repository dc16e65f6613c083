/* TOML parser: the toml-test conformance suite (every file listed for TOML
 * 1.0.0), plus focused checks of positions, lookups and hostile-input limits.
 *
 * Every document is parsed from a buffer of exactly its size (no NUL after
 * it), so a sanitizer build catches any read past the end. */
#include "check.h"
#include "json.h"
#include "toml.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <strings.h>
#include <time.h>

/* ---- helpers ---- */

/* Parses a copy of text[0..len) that has no terminator after it. */
static struct toml_value *parse_exact(const char *text, size_t len, struct toml_error *err)
{
	char *copy = malloc(len ? len : 1);
	struct toml_value *v;

	if (!copy)
		abort();
	memcpy(copy, text, len);
	v = toml_parse(copy, len, err);
	free(copy);
	return v;
}

static struct toml_value *parse_str(const char *text, struct toml_error *err)
{
	return parse_exact(text, strlen(text), err);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Growable text for generated documents. */
struct text {
	char *p;
	size_t len, cap;
};

__attribute__((format(printf, 2, 3)))
static void text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if (t->p && (size_t)n < t->cap - t->len)
			break;
		t->cap = (t->cap + (size_t)n + 1) * 2;
		t->p = realloc(t->p, t->cap);
		if (!t->p)
			abort();
	}
	t->len += (size_t)n;
}

/* ---- comparison with toml-test's tagged JSON ---- */

static const char *tagged_type(enum toml_type t)
{
	switch (t) {
	case TOML_STRING: return "string";
	case TOML_INTEGER: return "integer";
	case TOML_FLOAT: return "float";
	case TOML_BOOL: return "bool";
	case TOML_DATETIME: return "datetime";
	case TOML_DATETIME_LOCAL: return "datetime-local";
	case TOML_DATE_LOCAL: return "date-local";
	case TOML_TIME_LOCAL: return "time-local";
	default: return "?";
	}
}

static int digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Reads an expected date/time the way toml-test compares them: a space
 * separator means 'T', lowercase t/z mean T/Z. Returns false if malformed. */
static bool parse_expected_datetime(const char *in, enum toml_type type, struct toml_datetime *dt)
{
	char s[64];
	size_t n = strlen(in), i = 0;

	if (n >= sizeof s)
		return false;
	for (size_t k = 0; k <= n; k++)
		s[k] = in[k] == ' ' || in[k] == 't' ? 'T' : in[k] == 'z' ? 'Z' : in[k];
	memset(dt, 0, sizeof *dt);
	if (type != TOML_TIME_LOCAL) {
		if (n < 10 || s[4] != '-' || s[7] != '-')
			return false;
		dt->year = digits(s, 4);
		dt->month = digits(s + 5, 2);
		dt->day = digits(s + 8, 2);
		if (dt->year < 0 || dt->month < 0 || dt->day < 0)
			return false;
		i = 10;
		if (type == TOML_DATE_LOCAL)
			return i == n;
		if (s[i++] != 'T')
			return false;
	}
	if (n < i + 8 || s[i + 2] != ':' || s[i + 5] != ':')
		return false;
	dt->hour = digits(s + i, 2);
	dt->minute = digits(s + i + 3, 2);
	dt->second = digits(s + i + 6, 2);
	i += 8;
	if (s[i] == '.') {
		size_t start = ++i;

		while (s[i] >= '0' && s[i] <= '9')
			i++;
		for (size_t k = 0; k < 9; k++)
			dt->nanosecond = dt->nanosecond * 10 + (start + k < i ? s[start + k] - '0' : 0);
		dt->frac_digits = (int)(i - start);
	}
	if (type != TOML_DATETIME)
		return i == n;
	if (s[i] == 'Z')
		return i + 1 == n;
	if ((s[i] != '+' && s[i] != '-') || n != i + 6 || s[i + 3] != ':')
		return false;
	dt->offset_minutes = (s[i] == '-' ? -1 : 1) * (digits(s + i + 1, 2) * 60 + digits(s + i + 4, 2));
	return true;
}

/* Days since 1970-01-01 (proleptic Gregorian). */
static long days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

static long long instant(const struct toml_datetime *dt)
{
	return (long long)days_from_civil(dt->year, dt->month, dt->day) * 86400 +
	       dt->hour * 3600 + dt->minute * 60 + dt->second - dt->offset_minutes * 60;
}

static bool same_datetime(const struct toml_value *v, const char *expected)
{
	struct toml_datetime e;
	const struct toml_datetime *a = &v->u.dt;

	if (!parse_expected_datetime(expected, v->type, &e))
		return false;
	if (a->nanosecond != e.nanosecond)
		return false;
	if (v->type == TOML_DATETIME)
		return instant(a) == instant(&e);
	if (v->type != TOML_TIME_LOCAL &&
	    (a->year != e.year || a->month != e.month || a->day != e.day))
		return false;
	if (v->type != TOML_DATE_LOCAL &&
	    (a->hour != e.hour || a->minute != e.minute || a->second != e.second))
		return false;
	return true;
}

static bool same_float(double a, const char *expected)
{
	char *end;
	double e;

	if (strcasestr(expected, "nan"))
		return isnan(a);
	errno = 0;
	e = strtod(expected, &end);
	if (*end || isnan(a))
		return false;
	return a == e;
}

static bool same_scalar(const struct toml_value *v, const char *val, size_t len)
{
	char *end;
	long long i;

	switch (v->type) {
	case TOML_STRING:
		return v->u.str.len == len && memcmp(v->u.str.ptr, val, len) == 0 &&
		       v->u.str.ptr[len] == '\0';
	case TOML_INTEGER:
		errno = 0;
		i = strtoll(val, &end, 10);
		return !errno && !*end && i == v->u.integer;
	case TOML_FLOAT:
		return same_float(v->u.fp, val);
	case TOML_BOOL:
		return strcasecmp(val, v->u.boolean ? "true" : "false") == 0;
	default:
		return same_datetime(v, val);
	}
}

/* The JSON reader keeps object keys as C strings, so a key written with
 * \u0000 reaches us cut at the NUL; accept that prefix for such keys. */
static bool key_matches(const char *jkey, const struct toml_kv *kv)
{
	size_t jl = strlen(jkey);
	const char *nul = memchr(kv->key, '\0', kv->keylen);

	if (jl == kv->keylen && memcmp(jkey, kv->key, jl) == 0)
		return true;
	return nul && jl == (size_t)(nul - kv->key) && memcmp(jkey, kv->key, jl) == 0;
}

static char mismatch[512];

static bool same_tree(const struct toml_value *v, const struct json *j, const char *path)
{
	char sub[256];

	if (v->type == TOML_TABLE) {
		if (j->type != JSON_OBJECT || j->len != v->u.table.len) {
			snprintf(mismatch, sizeof mismatch, "%s: table with %zu keys, expected %s of %zu",
				 path, v->u.table.len, j->type == JSON_OBJECT ? "object" : "non-object", j->len);
			return false;
		}
		for (size_t i = 0; i < v->u.table.len; i++) {
			const struct toml_kv *kv = &v->u.table.items[i];
			size_t k = 0;

			while (k < j->len && !key_matches(j->keys[k], kv))
				k++;
			snprintf(sub, sizeof sub, "%s.%s", path, kv->key);
			if (k == j->len) {
				snprintf(mismatch, sizeof mismatch, "%s: unexpected key", sub);
				return false;
			}
			if (!same_tree(kv->val, j->items[k], sub))
				return false;
		}
		return true;
	}
	if (v->type == TOML_ARRAY) {
		if (j->type != JSON_ARRAY || j->len != v->u.array.len) {
			snprintf(mismatch, sizeof mismatch, "%s: array of %zu, expected %s of %zu",
				 path, v->u.array.len, j->type == JSON_ARRAY ? "array" : "non-array", j->len);
			return false;
		}
		for (size_t i = 0; i < v->u.array.len; i++) {
			snprintf(sub, sizeof sub, "%s[%zu]", path, i);
			if (!same_tree(v->u.array.items[i], j->items[i], sub))
				return false;
		}
		return true;
	}
	const struct json *type = json_get(j, "type"), *val = json_get(j, "value");

	if (j->type != JSON_OBJECT || j->len != 2 || !type || !val ||
	    type->type != JSON_STRING || val->type != JSON_STRING) {
		snprintf(mismatch, sizeof mismatch, "%s: %s, expected a non-scalar", path,
			 toml_type_name(v->type));
		return false;
	}
	if (strcmp(type->str, tagged_type(v->type)) != 0) {
		snprintf(mismatch, sizeof mismatch, "%s: type %s, expected %s", path,
			 tagged_type(v->type), type->str);
		return false;
	}
	if (!same_scalar(v, val->str, val->len)) {
		snprintf(mismatch, sizeof mismatch, "%s: %s value differs from \"%s\"", path,
			 tagged_type(v->type), val->str);
		return false;
	}
	return true;
}

/* ---- the conformance suite ---- */

static bool run_valid(const char *dir, const char *name)
{
	char path[2100];
	size_t len;
	char *text;
	struct toml_error err;
	struct toml_value *v;
	struct json *j;
	bool ok = false;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	text = read_file(path, &len);
	if (!text) {
		printf("  FAIL %s: cannot read\n", name);
		return false;
	}
	v = parse_exact(text, len, &err);
	free(text);
	snprintf(path + strlen(path) - 5, 6, ".json");
	j = json_load_file(path);
	if (!v)
		printf("  FAIL %s: rejected: %d:%d: %s\n", name, err.line, err.col, err.msg);
	else if (!j)
		printf("  FAIL %s: cannot read the expected JSON\n", name);
	else if (!(ok = same_tree(v, j, "")))
		printf("  FAIL %s: %s\n", name, mismatch);
	toml_free(v);
	json_free(j);
	return ok;
}

static bool run_invalid(const char *dir, const char *name, bool verbose)
{
	char path[2100];
	size_t len;
	char *text;
	struct toml_error err;
	struct toml_value *v;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	text = read_file(path, &len);
	if (!text) {
		printf("  FAIL %s: cannot read\n", name);
		return false;
	}
	v = parse_exact(text, len, &err);
	free(text);
	if (v) {
		printf("  FAIL %s: accepted\n", name);
		toml_free(v);
		return false;
	}
	if (verbose)
		printf("  ok %s: %d:%d: %s\n", name, err.line, err.col, err.msg);
	CHECKF(err.line > 0 && err.col > 0 && err.msg[0], "%s: error without position", name);
	return true;
}

static void test_conformance(void)
{
	char dir[1024], list[1100], line[1024];
	int valid = 0, valid_ok = 0, invalid = 0, invalid_ok = 0;
	bool verbose = getenv("TOML_TEST_VERBOSE") != NULL;
	FILE *f;

	snprintf(dir, sizeof dir, "%s/toml-test", testdata_dir());
	snprintf(list, sizeof list, "%s/files-toml-1.0.0", dir);
	f = fopen(list, "r");
	CHECKF(f != NULL, "cannot open %s (set TESTDATA)", list);
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		size_t n = strcspn(line, "\r\n");

		line[n] = '\0';
		if (n < 5 || strcmp(line + n - 5, ".toml") != 0)
			continue;
		if (strncmp(line, "valid/", 6) == 0) {
			valid++;
			valid_ok += run_valid(dir, line);
		} else if (strncmp(line, "invalid/", 8) == 0) {
			invalid++;
			invalid_ok += run_invalid(dir, line, verbose);
		}
	}
	fclose(f);
	printf("toml-test 1.0.0: valid %d/%d passed, invalid %d/%d rejected\n",
	       valid_ok, valid, invalid_ok, invalid);
	CHECK(valid == 210 && invalid == 499);
	CHECK(valid_ok == valid);
	CHECK(invalid_ok == invalid);
}

/* ---- focused checks ---- */

static void expect_error(const char *text, int line, int col, const char *fragment)
{
	struct toml_error err;
	struct toml_value *v = parse_str(text, &err);

	CHECKF(v == NULL, "accepted: %s", text);
	toml_free(v);
	if (v)
		return;
	CHECKF(err.line == line && err.col == col, "%d:%d, expected %d:%d (%s) for: %s",
	       err.line, err.col, line, col, err.msg, text);
	CHECKF(strstr(err.msg, fragment) != NULL, "message \"%s\" lacks \"%s\"", err.msg, fragment);
}

static void test_error_positions(void)
{
	expect_error("a = 1\nb = 2\nc 3\n", 3, 3, "expected '=' after key \"c\"");
	expect_error("a = 1\na = 2\n", 2, 1, "duplicate key \"a\" (first defined at line 1, column 1)");
	expect_error("[t]\nx.y = 1\n[t.x]\nz.w = 1\nx.y = 2\n", 3, 1, "dotted key");
	expect_error("[t]\nx = 1\n[t]\n", 3, 1, "defined twice");
	expect_error("  [t]\n  x = { y = 1 }\n[t.x.z]\n", 3, 4, "inline table");
	expect_error("a = [1, 2\n", 1, 5, "unterminated array");
	expect_error("s = \"abc\n", 1, 9, "not closed");
	expect_error("k = \"\xc3\xa9\\q\"\n", 1, 7, "invalid escape");
	expect_error("a = 1\r\nb = \r\n", 2, 5, "missing value");
	expect_error("a = 0x\n", 1, 5, "invalid integer");
	expect_error("a = 9223372036854775808\n", 1, 5, "64 bits");
	expect_error("a = 1\nb = \"\xff\"\n", 2, 6, "UTF-8");
	expect_error("a = 1 2\n", 1, 7, "after the value");
	expect_error("a = 2021-02-29\n", 1, 5, "day 29");
	expect_error("[[a]]\n[a]\n", 2, 1, "array of tables");
	expect_error("a = [1]\n[[a]]\n", 2, 1, "array value");
	expect_error("a = 1\r\rb = 2\n", 1, 6, "carriage return");
	expect_error("x = \"\\uD800\"\n", 1, 6, "surrogates");
	expect_error("a = 1 # ok\x01\n", 1, 11, "control character U+0001");
}

static void test_nul_bytes(void)
{
	static const char doc[] = "a = \"x\0y\"\n";
	static const char key[] = "a\0 = 1\n";
	struct toml_error err;
	struct toml_value *v;

	v = parse_exact(doc, sizeof doc - 1, &err);
	CHECK(v == NULL && err.line == 1 && err.col == 7);
	toml_free(v);
	v = parse_exact(key, sizeof key - 1, &err);
	CHECK(v == NULL && err.line == 1 && err.col == 2);
	toml_free(v);
	v = parse_exact("", 0, &err);
	CHECK(v && v->type == TOML_TABLE && v->u.table.len == 0);
	toml_free(v);
	v = toml_parse(NULL, 0, &err);
	CHECK(v && v->u.table.len == 0);
	toml_free(v);
}

static void test_get_and_positions(void)
{
	static const char doc[] =
		"\xEF\xBB\xBF" "title = \"x\"\n"
		"[server]\n"
		"  bind_addr = \"0.0.0.0:2333\"  # comment\n"
		"  [server.services.ssh]\n"
		"  token = 'k'\n"
		"  nodelay = false\n"
		"[[arr]]\n"
		"n = -9223372036854775808\n"
		"[[arr]]\n"
		"n = 0x7FFFFFFFFFFFFFFF\n"
		"f = [1.5, -inf, nan, 1e3, \"m\"]\n"
		"d = 1979-05-27T00:32:00.999999-07:00\n"
		"s = \"a\\u0000b\"\n";
	struct toml_error err;
	struct toml_value *root = parse_str(doc, &err), *server, *ssh, *arr, *v;
	const struct toml_kv *kv;

	CHECKF(root != NULL, "%d:%d: %s", err.line, err.col, err.msg);
	if (!root)
		return;
	v = toml_get(root, "title");
	CHECK(v && v->type == TOML_STRING && strcmp(v->u.str.ptr, "x") == 0);
	CHECK(v && v->line == 1 && v->col == 9);
	kv = toml_get_kv(root, "title");
	CHECK(kv && kv->line == 1 && kv->col == 1 && kv->keylen == 5);
	server = toml_get(root, "server");
	CHECK(server && server->type == TOML_TABLE && server->line == 2 && server->col == 1);
	v = toml_get(server, "bind_addr");
	CHECK(v && v->u.str.len == 12 && v->line == 3 && v->col == 15);
	ssh = toml_get(toml_get(server, "services"), "ssh");
	CHECK(ssh && ssh->line == 4 && ssh->col == 3);
	v = toml_get(ssh, "nodelay");
	CHECK(v && v->type == TOML_BOOL && !v->u.boolean);
	CHECK(toml_get(ssh, "missing") == NULL);
	CHECK(toml_get(v, "x") == NULL);		/* not a table */
	CHECK(toml_get(NULL, "x") == NULL);
	arr = toml_get(root, "arr");
	CHECK(arr && arr->type == TOML_ARRAY && arr->u.array.len == 2);
	if (arr && arr->u.array.len == 2) {
		struct toml_value *a0 = arr->u.array.items[0], *a1 = arr->u.array.items[1];
		struct toml_value *f, *d, *s;

		v = toml_get(a0, "n");
		CHECK(v && v->type == TOML_INTEGER && v->u.integer == INT64_MIN);
		v = toml_get(a1, "n");
		CHECK(v && v->u.integer == INT64_MAX);
		f = toml_get(a1, "f");
		CHECK(f && f->type == TOML_ARRAY && f->u.array.len == 5);
		if (f && f->u.array.len == 5) {
			CHECK(f->u.array.items[0]->u.fp == 1.5);
			CHECK(isinf(f->u.array.items[1]->u.fp) && f->u.array.items[1]->u.fp < 0);
			CHECK(isnan(f->u.array.items[2]->u.fp));
			CHECK(f->u.array.items[3]->u.fp == 1000.0);
			CHECK(f->u.array.items[4]->type == TOML_STRING);
			CHECK(f->u.array.items[4]->line == 11 && f->u.array.items[4]->col == 27);
		}
		d = toml_get(a1, "d");
		CHECK(d && d->type == TOML_DATETIME);
		if (d) {
			CHECK(d->u.dt.year == 1979 && d->u.dt.month == 5 && d->u.dt.day == 27);
			CHECK(d->u.dt.hour == 0 && d->u.dt.minute == 32 && d->u.dt.second == 0);
			CHECK(d->u.dt.nanosecond == 999999000 && d->u.dt.frac_digits == 6);
			CHECK(d->u.dt.offset_minutes == -420);
		}
		s = toml_get(a1, "s");
		CHECK(s && s->u.str.len == 3 && memcmp(s->u.str.ptr, "a\0b", 4) == 0);
	}
	CHECK_STR(toml_type_name(TOML_INTEGER), "integer");
	CHECK_STR(toml_type_name(TOML_DATE_LOCAL), "local date");
	toml_free(root);
}

static void check_nesting(const char *open, const char *close, int depth, bool ok)
{
	struct text t = { 0 };
	struct toml_error err;
	struct toml_value *v;

	text_add(&t, "x = ");
	for (int i = 0; i < depth; i++)
		text_add(&t, "%s", open);
	text_add(&t, "1");
	for (int i = 0; i < depth; i++)
		text_add(&t, "%s", close);
	text_add(&t, "\n");
	v = parse_exact(t.p, t.len, &err);
	CHECKF((v != NULL) == ok, "depth %d of %s: %s", depth, open, v ? "accepted" : err.msg);
	if (!ok && !v)
		CHECKF(strstr(err.msg, "nested") != NULL, "message: %s", err.msg);
	toml_free(v);
	free(t.p);
}

static void test_depth_limits(void)
{
	struct text t = { 0 };
	struct toml_error err;
	struct toml_value *v;

	check_nesting("[", "]", 100, true);
	check_nesting("[", "]", 128, false);
	check_nesting("{a = ", "}", 100, true);
	check_nesting("{a = ", "}", 128, false);
	check_nesting("[{a = ", "}]", 64, false);
	check_nesting("[", "", 1000000, false);		/* unterminated and deep */

	/* Dotted keys and headers are bounded too (they also make the tree deep). */
	for (int i = 0; i < 101; i++)
		text_add(&t, "%sk", i ? "." : "");
	text_add(&t, " = 1\n");
	v = parse_exact(t.p, t.len, &err);
	CHECK(v == NULL && strstr(err.msg, "dotted parts"));
	toml_free(v);
	t.len = 0;
	text_add(&t, "[");
	for (int i = 0; i < 100; i++)
		text_add(&t, "%sk", i ? "." : "");
	text_add(&t, "]\n");
	for (int i = 0; i < 99; i++)
		text_add(&t, "%sk", i ? "." : "");
	text_add(&t, " = [[[1]]]\n");
	v = parse_exact(t.p, t.len, &err);
	CHECKF(v != NULL, "%s", err.msg);
	toml_free(v);
	free(t.p);
}

static void test_large_documents(void)
{
	struct text t = { 0 };
	struct toml_error err;
	struct toml_value *v;
	double start;

	for (int i = 0; i < 10000; i++)
		text_add(&t, "key_%d = %d\n", i, i);
	start = now_ms();
	v = parse_exact(t.p, t.len, &err);
	printf("10000 keys in one table: %.1f ms\n", now_ms() - start);
	CHECK(v && v->u.table.len == 10000);
	CHECK(v && toml_get(v, "key_9999") && toml_get(v, "key_9999")->u.integer == 9999);
	CHECK(v && toml_get(v, "key_0") && toml_get(v, "key_0")->line == 1);
	CHECK(v && toml_get_kv(v, "key_5000") && toml_get_kv(v, "key_5000")->line == 5001);
	CHECK(v && toml_get(v, "key_10000") == NULL);
	toml_free(v);

	/* The duplicate check goes through the index as well. */
	text_add(&t, "key_1234 = 0\n");
	v = parse_exact(t.p, t.len, &err);
	CHECK(v == NULL && err.line == 10001 && strstr(err.msg, "duplicate key \"key_1234\""));
	toml_free(v);

	/* One long line: columns are counted incrementally. */
	t.len = 0;
	text_add(&t, "t = {");
	for (int i = 0; i < 10000; i++)
		text_add(&t, "%sk%d = [%d, \"s\"]", i ? ", " : "", i, i);
	text_add(&t, "}\n");
	start = now_ms();
	v = parse_exact(t.p, t.len, &err);
	printf("10000-key inline table on one line: %.1f ms\n", now_ms() - start);
	CHECK(v && toml_get(v, "t") && toml_get(v, "t")->u.table.len == 10000);
	toml_free(v);

	t.len = 0;
	for (int i = 0; i < 10000; i++)
		text_add(&t, "[[aot]]\nn = %d\n[aot.sub]\nm = 1\n", i);
	start = now_ms();
	v = parse_exact(t.p, t.len, &err);
	printf("10000 [[aot]] elements: %.1f ms\n", now_ms() - start);
	CHECK(v && toml_get(v, "aot") && toml_get(v, "aot")->u.array.len == 10000);
	toml_free(v);
	free(t.p);
}

/* Every prefix of a document that uses most of the syntax must parse or fail
 * cleanly, without reading past its end (caught by the sanitizer build). */
static void test_truncated_inputs(void)
{
	static const char doc[] =
		"# c\n[a . \"b\" . 'c']\nk = \"\\u00e9\\U0001F600\\t\"\n"
		"m = \"\"\"\nx\\\n  y\"\"\"\"\"\nl = '''\r\nz'''\n"
		"d = 1979-05-27 07:32:00.5+01:00\nt = 07:32:00\nld = 1979-05-27\n"
		"[[x.y]]\ni = [0x1f, 0o7, 0b1, +1_000, -0.5e-3, inf, nan, true, false]\n"
		"it = { a.b = 1, c = [ { } ] }\n";
	int accepted = 0;

	for (size_t n = 0; n <= sizeof doc - 1; n++) {
		struct toml_error err;
		struct toml_value *v = parse_exact(doc, n, &err);

		accepted += v != NULL;
		CHECKF(v || (err.line > 0 && err.col > 0 && err.msg[0]), "prefix %zu", n);
		toml_free(v);
	}
	CHECK(accepted > 5);
	struct toml_error err;
	struct toml_value *v = parse_exact(doc, sizeof doc - 1, &err);

	CHECKF(v != NULL, "%d:%d: %s", err.line, err.col, err.msg);
	if (v) {
		struct toml_value *m = toml_get(toml_get(toml_get(toml_get(v, "a"), "b"), "c"), "m");

		CHECK(m && m->u.str.len == 4 && memcmp(m->u.str.ptr, "xy\"\"", 4) == 0);
	}
	toml_free(v);
}

int main(void)
{
	test_conformance();
	test_error_positions();
	test_nul_bytes();
	test_get_and_positions();
	test_depth_limits();
	test_large_documents();
	test_truncated_inputs();
	return check_report("test_toml");
}
