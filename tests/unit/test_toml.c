/* The TOML parser against the toml-test suite for TOML 1.0.0 (every valid
 * file must parse to its tagged JSON, every invalid file must be rejected),
 * plus focused checks: error positions, toml_get, the nesting limit, big
 * tables, and truncated input (run under SANITIZE=1 to catch over-reads). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "check.h"
#include "json.h"
#include "toml.h"

/* ---- comparison with toml-test's tagged JSON ---- */

static char mismatch[512];

static bool differ(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records the first mismatch found for the report line. */
static bool differ(const char *fmt, ...)
{
	va_list ap;

	if (!mismatch[0]) {
		va_start(ap, fmt);
		vsnprintf(mismatch, sizeof mismatch, fmt, ap);
		va_end(ap);
	}
	return false;
}

static const char *tag_of(enum toml_type t)
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

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Our own reading of the expected JSON text, as toml-test does: space
 * separator and lowercase t/z normalised, then parsed by type. */
static bool parse_expected_dt(const char *text, const char *type, struct toml_datetime *dt)
{
	char s[64];
	size_t n = strlen(text);
	const char *t;

	if (n >= sizeof s)
		return false;
	for (size_t i = 0; i <= n; i++)
		s[i] = text[i] == 't' ? 'T' : text[i] == 'z' ? 'Z' : text[i];
	if (n > 10 && s[10] == ' ')
		s[10] = 'T';
	memset(dt, 0, sizeof *dt);
	t = s;
	if (strcmp(type, "time-local") != 0) {
		if (sscanf(s, "%4d-%2d-%2d", &dt->year, &dt->month, &dt->day) != 3)
			return false;
		t = s + 10;
		if (strcmp(type, "date-local") == 0)
			return *t == '\0';
		if (*t++ != 'T')
			return false;
	}
	if (sscanf(t, "%2d:%2d:%2d", &dt->hour, &dt->minute, &dt->second) != 3)
		return false;
	t += 8;
	if (*t == '.') {
		t++;
		while (*t >= '0' && *t <= '9') {
			if (dt->frac_digits < 9) {
				dt->nanosecond = dt->nanosecond * 10 + (*t - '0');
				dt->frac_digits++;
			}
			t++;
		}
		for (int k = dt->frac_digits; k < 9; k++)
			dt->nanosecond *= 10;
	}
	if (strcmp(type, "datetime") != 0)
		return *t == '\0';
	if (*t == 'Z')
		return t[1] == '\0';
	int oh, om;
	if ((*t != '+' && *t != '-') || sscanf(t + 1, "%2d:%2d", &oh, &om) != 2 || t[6] != '\0')
		return false;
	dt->offset_minutes = (*t == '-' ? -1 : 1) * (oh * 60 + om);
	return true;
}

static int64_t instant_seconds(const struct toml_datetime *dt)
{
	return days_from_civil(dt->year, dt->month, dt->day) * 86400 +
	       dt->hour * 3600 + dt->minute * 60 + dt->second - dt->offset_minutes * 60;
}

static bool same_datetime(enum toml_type type, const struct toml_datetime *a, const struct toml_datetime *b)
{
	bool date = type != TOML_TIME_LOCAL, time = type != TOML_DATE_LOCAL;

	if (type == TOML_DATETIME)
		return instant_seconds(a) == instant_seconds(b) && a->nanosecond == b->nanosecond;
	if (date && (a->year != b->year || a->month != b->month || a->day != b->day))
		return false;
	if (time && (a->hour != b->hour || a->minute != b->minute || a->second != b->second ||
		     a->nanosecond != b->nanosecond))
		return false;
	return true;
}

static bool same_scalar(const struct toml_value *v, const struct json *j)
{
	const struct json *type = json_get(j, "type"), *val = json_get(j, "value");
	char buf[64];

	if (j->type != JSON_OBJECT || j->len != 2 || !type || !val ||
	    type->type != JSON_STRING || val->type != JSON_STRING)
		return differ("expected %s%s, got a scalar", "a tagged value", "");
	if (strcmp(type->str, tag_of(v->type)) != 0)
		return differ("type %s, expected %s", tag_of(v->type), type->str);
	switch (v->type) {
	case TOML_STRING:
		if (v->u.str.len != val->len || memcmp(v->u.str.ptr, val->str, val->len) != 0)
			return differ("string \"%s\", expected \"%s\"", v->u.str.ptr, val->str);
		return true;
	case TOML_INTEGER:
		snprintf(buf, sizeof buf, "%lld", (long long)v->u.integer);
		if (strcmp(buf, val->str) != 0)
			return differ("integer %s, expected %s", buf, val->str);
		return true;
	case TOML_FLOAT: {
		double want = strtod(val->str, NULL);
		snprintf(buf, sizeof buf, "%.17g", v->u.fp);
		if (isnan(want) || isnan(v->u.fp)) {
			if (!(isnan(want) && isnan(v->u.fp)))
				return differ("float %s, expected %s", buf, val->str);
		} else if (want != v->u.fp) {
			return differ("float %s, expected %s", buf, val->str);
		}
		return true;
	}
	case TOML_BOOL:
		if (strcasecmp(v->u.boolean ? "true" : "false", val->str) != 0)
			return differ("bool %s, expected %s", v->u.boolean ? "true" : "false", val->str);
		return true;
	default: {
		struct toml_datetime want;
		snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09d%+d",
			 v->u.dt.year, v->u.dt.month, v->u.dt.day, v->u.dt.hour, v->u.dt.minute,
			 v->u.dt.second, v->u.dt.nanosecond, v->u.dt.offset_minutes);
		if (!parse_expected_dt(val->str, type->str, &want))
			return differ("cannot read expected date-time %s%s", val->str, "");
		if (!same_datetime(v->type, &v->u.dt, &want))
			return differ("date-time %s, expected %s", buf, val->str);
		return true;
	}
	}
}

/* json.h keeps object keys NUL-terminated without their length, so a key
 * decoded from "\u0000" arrives cut short: accept a TOML key that holds a
 * NUL when the part before it matches. */
static const struct toml_kv *find_json_key(const struct toml_value *t, const char *key)
{
	const struct toml_kv *kv = toml_get_kv(t, key);

	for (size_t i = 0; !kv && i < t->u.table.len; i++) {
		const struct toml_kv *c = &t->u.table.items[i];
		if (memchr(c->key, '\0', c->keylen) && strcmp(c->key, key) == 0)
			kv = c;
	}
	return kv;
}

static bool same_tree(const struct toml_value *v, const struct json *j)
{
	if (v->type == TOML_TABLE) {
		if (j->type != JSON_OBJECT || j->len != v->u.table.len)
			return differ("table with different keys%s%s", "", "");
		for (size_t i = 0; i < j->len; i++) {
			const struct toml_kv *kv = find_json_key(v, j->keys[i]);
			if (!kv)
				return differ("missing key \"%s\"%s", j->keys[i], "");
			if (!same_tree(kv->val, j->items[i]))
				return false;
		}
		return true;
	}
	if (v->type == TOML_ARRAY) {
		if (j->type != JSON_ARRAY || j->len != v->u.array.len)
			return differ("array of different length%s%s", "", "");
		for (size_t i = 0; i < j->len; i++)
			if (!same_tree(v->u.array.items[i], j->items[i]))
				return false;
		return true;
	}
	return same_scalar(v, j);
}

/* ---- the conformance suite ---- */

/* An exact-size copy: the parser must not rely on a trailing NUL. */
static char *load_exact(const char *path, size_t *len)
{
	char *text = read_file(path, len);
	char *exact;

	if (!text)
		return NULL;
	exact = malloc(*len ? *len : 1);
	if (exact)
		memcpy(exact, text, *len);
	free(text);
	return exact;
}

/* Every prefix of a document must be handled without reading past it. */
static void parse_all_prefixes(const char *text, size_t len)
{
	for (size_t n = 0; n < len && n < 4096; n++) {
		char *copy = malloc(n ? n : 1);
		struct toml_error err;
		if (!copy)
			return;
		memcpy(copy, text, n);
		toml_free(toml_parse(copy, n, &err));
		free(copy);
	}
}

static void test_conformance(void)
{
	char path[4096], list[4096], line[1024];
	int valid = 0, valid_ok = 0, invalid = 0, invalid_ok = 0;
	FILE *f;

	snprintf(list, sizeof list, "%s/toml-test/files-toml-1.0.0", testdata_dir());
	f = fopen(list, "r");
	CHECKF(f != NULL, "cannot open %s (set TESTDATA)", list);
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = '\0';
		size_t n = strlen(line);
		if (n < 5 || strcmp(line + n - 5, ".toml") != 0)
			continue;
		bool is_valid = strncmp(line, "valid/", 6) == 0;
		snprintf(path, sizeof path, "%s/toml-test/%s", testdata_dir(), line);
		size_t len;
		char *text = load_exact(path, &len);
		struct toml_error err;
		CHECKF(text != NULL, "cannot read %s", path);
		if (!text)
			continue;
		struct toml_value *root = toml_parse(text, len, &err);
		if (is_valid) {
			valid++;
			if (!root) {
				printf("FAIL %s: rejected: %d:%d: %s\n", line, err.line, err.col, err.msg);
			} else {
				char jpath[4096];
				snprintf(jpath, sizeof jpath, "%.*s.json", (int)(strlen(path) - 5), path);
				struct json *want = json_load_file(jpath);
				mismatch[0] = '\0';
				if (want && same_tree(root, want))
					valid_ok++;
				else
					printf("FAIL %s: %s\n", line, want ? mismatch : "cannot load expected JSON");
				json_free(want);
			}
		} else {
			invalid++;
			if (root)
				printf("FAIL %s: accepted\n", line);
			else
				invalid_ok++;
		}
		toml_free(root);
		parse_all_prefixes(text, len);
		free(text);
	}
	fclose(f);
	printf("toml-test 1.0.0: valid %d/%d passed, invalid %d/%d rejected\n",
	       valid_ok, valid, invalid_ok, invalid);
	CHECK(valid == 210 && valid_ok == valid);
	CHECK(invalid == 499 && invalid_ok == invalid);
}

/* ---- focused checks ---- */

static struct toml_value *parse_str(const char *s, struct toml_error *err)
{
	return toml_parse(s, strlen(s), err);
}

static void expect_error(const char *doc, int line, int col, const char *part)
{
	struct toml_error err;
	struct toml_value *v = parse_str(doc, &err);

	CHECKF(v == NULL, "accepted: %s", doc);
	toml_free(v);
	if (v)
		return;
	CHECKF(err.line == line && err.col == col, "error at %d:%d, expected %d:%d (%s)",
	       err.line, err.col, line, col, err.msg);
	CHECKF(strstr(err.msg, part) != NULL, "message \"%s\" lacks \"%s\"", err.msg, part);
}

static void test_error_positions(void)
{
	expect_error("a = 1\nb c\n", 2, 3, "expected '=' after key");
	expect_error("a = 1\nb =\n", 2, 4, "expected a value");
	expect_error("a = 1\n\na = 2\n", 3, 1, "duplicate key \"a\"");
	expect_error("[t]\nx = 1\n[t]\n", 3, 2, "defined twice");
	expect_error("s = \"abc\\q\"\n", 1, 9, "invalid escape");
	expect_error("x = 1\ny = \"\xff\"\n", 2, 6, "UTF-8");
	expect_error("x = 1\r\ny = 2\rz = 3\n", 2, 6, "bare CR");
	expect_error("n = 9223372036854775808\n", 1, 5, "64 bits");
	expect_error("d = 2021-02-29\n", 1, 5, "invalid day");
	expect_error("t = {a = 1}\n[t]\n", 2, 2, "inline table");
	expect_error("a = [1, 2\nb = 3\n", 2, 1, "expected ',' or ']'");
	expect_error("x = \"open\n", 1, 10, "newline in a single-line string");
	expect_error("mode = tcp\n", 1, 8, "strings must be quoted");
	expect_error("a = +\n", 1, 5, "invalid number");
	expect_error("a = {x = 1,}\n", 1, 12, "trailing comma");
	expect_error("a = {x = 1,\n y = 2}\n", 1, 12, "expected a key");
	expect_error("[[a]]\n[a]\n", 2, 2, "array of tables");
	expect_error("a = []\n[[a]]\n", 2, 3, "static array");
	expect_error("[a]\nb.c = 1\n[a.b]\n", 3, 4, "dotted keys");
	expect_error("a.b = 1\na = 2\n", 2, 1, "duplicate key");
}

static void test_get(void)
{
	const char *doc =
		"# config\n"
		"title = \"demo\"\n"
		"[server]\n"
		"bind_addr = \"0.0.0.0:2333\"\n"
		"[server.services.ssh]\n"
		"token = 'secret'\n"
		"nodelay = false\n"
		"port = 0x10\n"
		"\"\" = 1.5\n";
	struct toml_error err;
	struct toml_value *root = parse_str(doc, &err);

	CHECKF(root != NULL, "%d:%d: %s", err.line, err.col, err.msg);
	if (!root)
		return;
	struct toml_value *title = toml_get(root, "title");
	CHECK(title && title->type == TOML_STRING && strcmp(title->u.str.ptr, "demo") == 0);
	CHECK(title && title->line == 2 && title->col == 9);
	struct toml_value *server = toml_get(root, "server");
	CHECK(server && server->type == TOML_TABLE && server->line == 3);
	const struct toml_kv *kv = toml_get_kv(server, "bind_addr");
	CHECK(kv && kv->line == 4 && kv->col == 1 && kv->val->type == TOML_STRING);
	struct toml_value *ssh = toml_get(toml_get(server, "services"), "ssh");
	CHECK(ssh && ssh->type == TOML_TABLE);
	CHECK(toml_get(ssh, "nodelay") && toml_get(ssh, "nodelay")->type == TOML_BOOL &&
	      !toml_get(ssh, "nodelay")->u.boolean);
	CHECK(toml_get(ssh, "port") && toml_get(ssh, "port")->u.integer == 16);
	CHECK(toml_get(ssh, "") && toml_get(ssh, "")->type == TOML_FLOAT);
	CHECK(toml_get(ssh, "missing") == NULL);
	CHECK(toml_get(title, "x") == NULL);	/* not a table */
	CHECK(toml_get(NULL, "x") == NULL);
	CHECK(toml_get(root, "server.bind_addr") == NULL);	/* one key, no paths */
	CHECK_STR(toml_type_name(TOML_INTEGER), "integer");
	toml_free(root);

	/* the smallest integer, and NUL inside strings */
	root = parse_str("a = -9223372036854775808\nb = \"x\\u0000y\"\n", &err);
	CHECK(root && toml_get(root, "a")->u.integer == INT64_MIN);
	CHECK(root && toml_get(root, "b")->u.str.len == 3);
	toml_free(root);
}

static char *repeat_doc(const char *head, const char *unit, int n, const char *tail)
{
	size_t ul = strlen(unit), len = strlen(head) + ul * (size_t)n + strlen(tail) + 1;
	char *s = malloc(len), *o = s;

	if (!s)
		return NULL;
	o += sprintf(o, "%s", head);
	for (int i = 0; i < n; i++)
		o += sprintf(o, "%s", unit);
	sprintf(o, "%s", tail);
	return s;
}

/* head + n*open + "1" + n*close: true if it parses; a rejection must be
 * the depth limit, not something else. */
static bool nesting_parses(const char *head, const char *open, int n, const char *close)
{
	char *opens = repeat_doc(head, open, n, "1");
	char *doc = opens ? repeat_doc(opens, close, n, "\n") : NULL;
	struct toml_error err;
	bool ok = false;

	if (doc) {
		struct toml_value *v = parse_str(doc, &err);
		ok = v != NULL;
		if (!v)
			CHECKF(strstr(err.msg, "too deep") != NULL, "%s", err.msg);
		toml_free(v);
	}
	free(doc);
	free(opens);
	return ok;
}

static void test_depth_limit(void)
{
	struct toml_error err;
	struct toml_value *v;

	CHECK(nesting_parses("a = ", "[", 50, "]"));
	CHECK(!nesting_parses("a = ", "[", 128, "]"));
	CHECK(!nesting_parses("a = ", "[", 100000, "]"));
	CHECK(nesting_parses("a = ", "{b = ", 50, "}"));
	CHECK(!nesting_parses("a = ", "{b = ", 128, "}"));
	CHECK(!nesting_parses("a = ", "[{b = ", 64, "}]"));

	/* depth built from dotted keys or headers instead of brackets */
	char *doc = repeat_doc("", "a.", 200, "z = 1\n");
	v = doc ? parse_str(doc, &err) : NULL;
	CHECK(doc && !v);
	toml_free(v);
	free(doc);
	char *path = repeat_doc("x", ".x", 59, "");
	char *path2 = repeat_doc("y", ".y", 59, "");
	doc = NULL;
	if (path && path2 && asprintf(&doc, "[%s]\n%s = 1\n", path, path2) < 0)
		doc = NULL;
	v = doc ? parse_str(doc, &err) : NULL;
	CHECKF(doc && !v && strstr(err.msg, "too deep"), "%s", v ? "accepted" : err.msg);
	toml_free(v);
	free(doc);
	free(path2);
	free(path);
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_big_tables(void)
{
	enum { N = 10000 };
	size_t cap = (size_t)N * 40 + 64, len = 0;
	char *doc = malloc(cap);
	struct toml_error err;

	if (!doc)
		return;
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(doc + len, cap - len, "key_%d = %d\n", i, i);
	double t0 = now_seconds();
	struct toml_value *root = toml_parse(doc, len, &err);
	double t1 = now_seconds();
	CHECKF(root != NULL, "%d:%d: %s", err.line, err.col, err.msg);
	CHECK(root && root->u.table.len == N);
	CHECK(root && toml_get(root, "key_9999") && toml_get(root, "key_9999")->u.integer == 9999);
	CHECK(root && toml_get(root, "key_0") && toml_get(root, "key_0")->u.integer == 0);
	CHECK(root && toml_get(root, "key_10000") == NULL);
	toml_free(root);

	/* 10,000 headers in the root and 10,000 [[array]] elements */
	len = 0;
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(doc + len, cap - len, "[t%d]\n[[aot]]\nv=%d\n", i, i);
	double t2 = now_seconds();
	root = toml_parse(doc, len, &err);
	double t3 = now_seconds();
	CHECKF(root != NULL, "%d:%d: %s", err.line, err.col, err.msg);
	CHECK(root && toml_get(root, "aot") && toml_get(root, "aot")->u.array.len == N);
	toml_free(root);
	printf("10,000 keys in one table: %.1f ms; 10,000 headers + [[aot]] elements: %.1f ms\n",
	       (t1 - t0) * 1e3, (t3 - t2) * 1e3);
	free(doc);
}

static void test_misc(void)
{
	struct toml_error err;
	struct toml_value *v;

	/* not NUL-terminated: the parser must stop at len */
	v = toml_parse("a = 12345", 6, &err);
	CHECK(v && toml_get(v, "a") && toml_get(v, "a")->u.integer == 12);
	toml_free(v);
	v = toml_parse("a = \"xy\"", 7, &err);
	CHECK(v == NULL);
	toml_free(v);
	v = toml_parse("a = 1\0b = 2", 11, &err);
	CHECK(v == NULL && err.line == 1 && err.col == 6);
	toml_free(v);
	v = toml_parse("", 0, &err);
	CHECK(v && v->type == TOML_TABLE && v->u.table.len == 0);
	toml_free(v);
	/* a float longer than any fixed buffer */
	char *longf = repeat_doc("f = 0.", "0", 300, "15e1\n");
	v = longf ? parse_str(longf, &err) : NULL;
	CHECK(v && toml_get(v, "f") && toml_get(v, "f")->u.fp > 0 && toml_get(v, "f")->u.fp < 1e-290);
	toml_free(v);
	free(longf);
	v = parse_str("d = 1979-05-27T07:32:00.999999-07:00\n", &err);
	CHECK(v && toml_get(v, "d")->type == TOML_DATETIME &&
	      toml_get(v, "d")->u.dt.nanosecond == 999999000 &&
	      toml_get(v, "d")->u.dt.frac_digits == 6 &&
	      toml_get(v, "d")->u.dt.offset_minutes == -420);
	toml_free(v);
}

int main(void)
{
	test_conformance();
	test_error_positions();
	test_get();
	test_depth_limit();
	test_big_tables();
	test_misc();
	return check_report("test_toml");
}
