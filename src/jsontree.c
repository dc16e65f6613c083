/* JSON -> TOML tree: a recursive descent parser over a bounded buffer. The
 * recursion is bounded by JSON_MAX_DEPTH; every read goes through peek(). */
#include "jsontree.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jp {
	const char *buf;
	size_t len, pos;
	int line;
	size_t line_start;
	struct toml_error *err;
};

static bool fail(struct jp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(struct jp *p, const char *fmt, ...)
{
	va_list ap;

	p->err->line = p->line;
	p->err->col = (int)(p->pos - p->line_start + 1);
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
	va_end(ap);
	return false;
}

static int peek(const struct jp *p)
{
	return p->pos < p->len ? (unsigned char)p->buf[p->pos] : -1;
}

static void skip_ws(struct jp *p)
{
	for (int c; (c = peek(p)) == ' ' || c == '\t' || c == '\n' || c == '\r'; p->pos++) {
		if (c == '\n') {
			p->line++;
			p->line_start = p->pos + 1;
		}
	}
}

static struct toml_value *new_value(struct jp *p, enum toml_type t)
{
	struct toml_value *v = calloc(1, sizeof *v);

	if (!v)
		fail(p, "out of memory");
	else
		v->type = t;
	return v;
}

/* ---- strings ---- */

struct sbuf {
	char *p;
	size_t len, cap;
};

static bool sb_put(struct jp *p, struct sbuf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 32;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(q = realloc(b->p, cap)))
			return fail(p, "out of memory");
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

static bool put_utf8(struct jp *p, struct sbuf *b, uint32_t cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return sb_put(p, b, u, n);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

static int hex4(struct jp *p, uint32_t *out)
{
	uint32_t v = 0;

	if (p->len - p->pos < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int c = (unsigned char)p->buf[p->pos + (size_t)i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	p->pos += 4;
	*out = v;
	return 0;
}

static bool escape(struct jp *p, struct sbuf *b)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	int c = peek(p);
	const char *q;
	uint32_t cp, lo;

	if (c < 0)
		return fail(p, "unterminated string");
	if (c != 'u') {
		if (!c || !(q = strchr(from, c)))
			return fail(p, "invalid escape \\%c in a string", c >= 32 && c < 127 ? c : '?');
		p->pos++;
		return sb_put(p, b, &to[q - from], 1);
	}
	p->pos++;
	if (hex4(p, &cp) < 0)
		return fail(p, "\\u needs 4 hexadecimal digits");
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return fail(p, "a lone low surrogate (\\u%04x) is not a character", (unsigned)cp);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (p->len - p->pos < 6 || p->buf[p->pos] != '\\' || p->buf[p->pos + 1] != 'u')
			return fail(p, "a high surrogate (\\u%04x) must be followed by a low one",
				    (unsigned)cp);
		p->pos += 2;
		if (hex4(p, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
			return fail(p, "a high surrogate (\\u%04x) must be followed by a low one",
				    (unsigned)cp);
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	return put_utf8(p, b, cp);
}

/* At the opening quote; on success *out holds the NUL-terminated bytes. */
static bool parse_string(struct jp *p, char **out, size_t *outlen)
{
	struct sbuf b = { 0 };

	p->pos++;
	if (!sb_put(p, &b, "", 0))
		return false;
	for (;;) {
		int c = peek(p);
		size_t n;

		if (c < 0) {
			fail(p, "unterminated string");
			goto bad;
		}
		if (c == '"') {
			p->pos++;
			break;
		}
		if (c == '\\') {
			p->pos++;
			if (!escape(p, &b))
				goto bad;
			continue;
		}
		if (c < 0x20) {
			fail(p, "a control character (0x%02x) in a string must be escaped", c);
			goto bad;
		}
		n = utf8_len((const unsigned char *)p->buf + p->pos, p->len - p->pos);
		if (!n) {
			fail(p, "invalid UTF-8 in a string");
			goto bad;
		}
		if (!sb_put(p, &b, p->buf + p->pos, n))
			goto bad;
		p->pos += n;
	}
	*out = b.p;
	*outlen = b.len;
	return true;
bad:
	free(b.p);
	return false;
}

/* ---- numbers ---- */

static struct toml_value *parse_number(struct jp *p)
{
	size_t start = p->pos, end;
	bool integer = true;
	char tmp[64];
	struct toml_value *v;

	if (peek(p) == '-')
		p->pos++;
	if (peek(p) == '0') {
		p->pos++;
	} else if (peek(p) >= '1' && peek(p) <= '9') {
		while (peek(p) >= '0' && peek(p) <= '9')
			p->pos++;
	} else {
		fail(p, "invalid number");
		return NULL;
	}
	if (peek(p) == '.') {
		integer = false;
		p->pos++;
		if (!(peek(p) >= '0' && peek(p) <= '9')) {
			fail(p, "a digit must follow the decimal point");
			return NULL;
		}
		while (peek(p) >= '0' && peek(p) <= '9')
			p->pos++;
	}
	if (peek(p) == 'e' || peek(p) == 'E') {
		integer = false;
		p->pos++;
		if (peek(p) == '+' || peek(p) == '-')
			p->pos++;
		if (!(peek(p) >= '0' && peek(p) <= '9')) {
			fail(p, "a digit must follow the exponent");
			return NULL;
		}
		while (peek(p) >= '0' && peek(p) <= '9')
			p->pos++;
	}
	end = p->pos;
	if (end - start >= sizeof tmp) {
		p->pos = start;
		fail(p, "number too long");
		return NULL;
	}
	memcpy(tmp, p->buf + start, end - start);
	tmp[end - start] = '\0';
	if (!(v = new_value(p, integer ? TOML_INTEGER : TOML_FLOAT)))
		return NULL;
	errno = 0;
	if (integer) {
		long long n = strtoll(tmp, NULL, 10);

		if (errno == ERANGE) {
			free(v);
			p->pos = start;
			fail(p, "integer out of range (64-bit signed)");
			return NULL;
		}
		v->u.integer = n;
	} else {
		v->u.fp = strtod(tmp, NULL);
	}
	return v;
}

/* ---- values ---- */

static struct toml_value *parse_value(struct jp *p, int depth);

static bool table_add(struct jp *p, struct toml_value *t, char *key, size_t keylen,
		      struct toml_value *val)
{
	if (t->u.table.len == t->u.table.cap) {
		size_t cap = t->u.table.cap ? t->u.table.cap * 2 : 4;
		struct toml_kv *items = realloc(t->u.table.items, cap * sizeof *items);

		if (!items) {
			free(key);
			toml_free(val);
			return fail(p, "out of memory");
		}
		t->u.table.items = items;
		t->u.table.cap = cap;
	}
	t->u.table.items[t->u.table.len++] = (struct toml_kv){ .key = key, .keylen = keylen,
							       .val = val };
	return true;
}

static bool has_key(const struct toml_value *t, const char *key, size_t len)
{
	for (size_t i = 0; i < t->u.table.len; i++)
		if (t->u.table.items[i].keylen == len && memcmp(t->u.table.items[i].key, key, len) == 0)
			return true;
	return false;
}

static struct toml_value *parse_object(struct jp *p, int depth)
{
	struct toml_value *t = new_value(p, TOML_TABLE);

	if (!t)
		return NULL;
	p->pos++;
	skip_ws(p);
	if (peek(p) == '}') {
		p->pos++;
		return t;
	}
	for (;;) {
		struct toml_value *v;
		size_t klen, kpos;
		char *key;

		skip_ws(p);
		if (peek(p) != '"') {
			fail(p, "expected a key in double quotes");
			goto bad;
		}
		kpos = p->pos;
		if (!parse_string(p, &key, &klen))
			goto bad;
		if (t->u.table.len >= JSON_MAX_KEYS) {
			free(key);
			p->pos = kpos;
			fail(p, "more than %d keys in one object", JSON_MAX_KEYS);
			goto bad;
		}
		if (has_key(t, key, klen)) {
			free(key);
			p->pos = kpos;
			fail(p, "duplicate key");
			goto bad;
		}
		skip_ws(p);
		if (peek(p) != ':') {
			free(key);
			fail(p, "expected ':' after a key");
			goto bad;
		}
		p->pos++;
		if (!(v = parse_value(p, depth + 1))) {
			free(key);
			goto bad;
		}
		if (!table_add(p, t, key, klen, v))
			goto bad;
		skip_ws(p);
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == '}') {
			p->pos++;
			return t;
		}
		fail(p, "expected ',' or '}' in an object");
		goto bad;
	}
bad:
	toml_free(t);
	return NULL;
}

static struct toml_value *parse_array(struct jp *p, int depth)
{
	struct toml_value *a = new_value(p, TOML_ARRAY);

	if (!a)
		return NULL;
	p->pos++;
	skip_ws(p);
	if (peek(p) == ']') {
		p->pos++;
		return a;
	}
	for (;;) {
		struct toml_value *v = parse_value(p, depth + 1);

		if (!v)
			goto bad;
		if (a->u.array.len == a->u.array.cap) {
			size_t cap = a->u.array.cap ? a->u.array.cap * 2 : 4;
			struct toml_value **items = realloc(a->u.array.items, cap * sizeof *items);

			if (!items) {
				toml_free(v);
				fail(p, "out of memory");
				goto bad;
			}
			a->u.array.items = items;
			a->u.array.cap = cap;
		}
		a->u.array.items[a->u.array.len++] = v;
		skip_ws(p);
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == ']') {
			p->pos++;
			return a;
		}
		fail(p, "expected ',' or ']' in an array");
		goto bad;
	}
bad:
	toml_free(a);
	return NULL;
}

static bool literal(struct jp *p, const char *word)
{
	size_t n = strlen(word);

	if (p->len - p->pos < n || memcmp(p->buf + p->pos, word, n) != 0)
		return false;
	p->pos += n;
	return true;
}

static struct toml_value *parse_value(struct jp *p, int depth)
{
	struct toml_value *v;
	int c;

	if (depth > JSON_MAX_DEPTH) {
		fail(p, "nesting too deep (more than %d levels)", JSON_MAX_DEPTH);
		return NULL;
	}
	skip_ws(p);
	c = peek(p);
	if (c == '{')
		return parse_object(p, depth);
	if (c == '[')
		return parse_array(p, depth);
	if (c == '"') {
		if (!(v = new_value(p, TOML_STRING)))
			return NULL;
		if (!parse_string(p, &v->u.str.ptr, &v->u.str.len)) {
			free(v);
			return NULL;
		}
		return v;
	}
	if (c == '-' || (c >= '0' && c <= '9'))
		return parse_number(p);
	if (c == 't' || c == 'f') {
		bool b = c == 't';

		if (!literal(p, b ? "true" : "false")) {
			fail(p, "invalid literal");
			return NULL;
		}
		if ((v = new_value(p, TOML_BOOL)))
			v->u.boolean = b;
		return v;
	}
	if (c == 'n' && literal(p, "null")) {
		p->pos -= 4;
		fail(p, "null has no TOML equivalent: leave the key out for its default");
		return NULL;
	}
	fail(p, c < 0 ? "unexpected end of the document" : "unexpected character");
	return NULL;
}

struct toml_value *json_to_toml(const char *buf, size_t len, struct toml_error *err)
{
	struct jp p = { .buf = buf, .len = len, .line = 1, .err = err };
	struct toml_value *v;

	memset(err, 0, sizeof *err);
	v = parse_value(&p, 0);
	if (!v)
		return NULL;
	skip_ws(&p);
	if (p.pos != p.len) {
		fail(&p, "unexpected data after the document");
		toml_free(v);
		return NULL;
	}
	return v;
}
