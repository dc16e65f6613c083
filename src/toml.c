/* TOML 1.0.0 parser: see toml.h.
 *
 * One pass over the bytes, recursive descent for values. The input is not
 * NUL-terminated, so every look-ahead goes through at()/peek(), which return
 * -1 past the end (a NUL byte inside the document is rejected like any other
 * control character). The whole document is checked to be UTF-8 first, so
 * later code may copy non-ASCII bytes without looking at them. */
#include "toml.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hostile-input bounds: nesting of arrays and inline tables, and the number
 * of parts in one dotted key or header. Together they bound the depth of the
 * tree (to about 3x100), so freeing and walking it recursively is safe. */
#define TOML_MAX_NESTING 100
#define TOML_MAX_KEY_PARTS 100
/* Tables get a hash index once they hold this many keys; below it a linear
 * scan is faster. */
#define INDEX_MIN_KEYS 8
/* Longest key or token quoted back in an error message. */
#define SHOW_MAX 48

/* How a table or array came to exist; the redefinition rules depend on it. */
enum origin {
	ORIGIN_VALUE,		/* scalars and arrays written as values: [1, 2] */
	ORIGIN_INLINE,		/* { ... }: complete once closed */
	ORIGIN_IMPLICIT,	/* parent named in a header: may get its own header once */
	ORIGIN_HEADER,		/* the root, [header] tables and [[header]] elements */
	ORIGIN_DOTTED,		/* created by a dotted key: a.b = 1 creates a */
	ORIGIN_AOT,		/* array of tables created by [[header]] */
};

struct node {
	struct toml_value v;	/* first, so a toml_value * is a node * */
	enum origin origin;
	uint32_t *index;	/* tables: slots hold item index + 1, 0 is empty */
	size_t index_cap;	/* power of two, 0 while there is no index */
};

struct parser {
	const char *s;
	size_t len, pos;
	int line;		/* of pos */
	size_t line_start;	/* offset of the first byte of that line */
	size_t memo_pos;	/* column cache, so long lines stay linear */
	int memo_col;
	int nesting;		/* open arrays and inline tables */
	bool failed;
	struct toml_error *err;
	struct node *root;
	struct node *cur;	/* table that key/value lines go into */
};

struct keypart {
	char *s;
	size_t len;
	int line, col;
	bool moved;		/* s now belongs to a table (and stays readable) */
};

struct keypath {
	struct keypart *part;
	int n, cap;
};

struct sbuf {
	char *p;
	size_t len, cap;
};

static struct node *parse_value(struct parser *p);
static bool parse_keyval(struct parser *p, struct node *table);

/* ---- input and positions ---- */

static int at(const struct parser *p, size_t i)
{
	return i < p->len ? (unsigned char)p->s[i] : -1;
}

static int peek(const struct parser *p)
{
	return at(p, p->pos);
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool is_bare_key_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) ||
	       c == '_' || c == '-';
}

/* Control characters that may not appear in strings or comments (tab may). */
static bool is_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* Column (1-based, in characters) of pos, which must be on the current line. */
static int column_of(struct parser *p, size_t pos)
{
	if (pos < p->line_start)
		return 1;
	if (p->memo_pos < p->line_start || p->memo_pos > pos) {
		p->memo_pos = p->line_start;
		p->memo_col = 1;
	}
	for (; p->memo_pos < pos; p->memo_pos++)
		if (((unsigned char)p->s[p->memo_pos] & 0xC0) != 0x80 && p->memo_col < INT_MAX)
			p->memo_col++;
	return p->memo_col;
}

static int cur_col(struct parser *p)
{
	return column_of(p, p->pos);
}

/* Consumes LF or CRLF at pos. */
static bool take_newline(struct parser *p)
{
	if (peek(p) == '\n')
		p->pos++;
	else if (peek(p) == '\r' && at(p, p->pos + 1) == '\n')
		p->pos += 2;
	else
		return false;
	if (p->line < INT_MAX)
		p->line++;
	p->line_start = p->pos;
	return true;
}

static bool at_newline(const struct parser *p)
{
	return peek(p) == '\n' || peek(p) == '\r';
}

static void skip_ws(struct parser *p)
{
	while (peek(p) == ' ' || peek(p) == '\t')
		p->pos++;
}

/* ---- errors ---- */

__attribute__((format(printf, 4, 0)))
static bool vfail_at(struct parser *p, int line, int col, const char *fmt, va_list ap)
{
	if (!p->failed) {
		p->failed = true;
		p->err->line = line;
		p->err->col = col;
		vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
	}
	return false;
}

__attribute__((format(printf, 4, 5)))
static bool fail_at(struct parser *p, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail_at(p, line, col, fmt, ap);
	va_end(ap);
	return false;
}

/* Reports an error at the current position. */
__attribute__((format(printf, 2, 3)))
static bool fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	int col = cur_col(p);

	va_start(ap, fmt);
	vfail_at(p, p->line, col, fmt, ap);
	va_end(ap);
	return false;
}

static bool fail_oom(struct parser *p)
{
	return fail(p, "out of memory while parsing");
}

static bool fail_bare_cr(struct parser *p)
{
	return fail(p, "carriage return (CR) without a following line feed; "
		    "TOML allows only LF or CRLF line endings");
}

/* Decodes the (already validated) UTF-8 character at i. */
static unsigned long codepoint_at(const struct parser *p, size_t i)
{
	int c = at(p, i);
	int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
	unsigned long cp = (unsigned long)c & (n == 3 ? 0x07 : n == 2 ? 0x0F : n == 1 ? 0x1F : 0x7F);

	for (int k = 1; k <= n && at(p, i + (size_t)k) >= 0; k++)
		cp = cp << 6 | ((unsigned long)at(p, i + (size_t)k) & 0x3F);
	return cp;
}

/* Names the character at i for "found ..." in messages. */
static const char *describe(const struct parser *p, size_t i, char *buf, size_t size)
{
	int c = at(p, i);

	if (c < 0)
		return "end of file";
	if (c == '\n' || c == '\r')
		return "end of line";
	if (c == ' ' || c == '\t')
		return "whitespace";
	if (c > 0x20 && c < 0x7f)
		snprintf(buf, size, "'%c'", c);
	else if (c < 0x80)
		snprintf(buf, size, "control character U+%04X", (unsigned)c);
	else
		snprintf(buf, size, "character U+%04lX", codepoint_at(p, i));
	return buf;
}

/* Copies a key for a message: non-printable bytes become '?', long keys are
 * cut with "...". Appends to buf at *off. */
static void show_append(char *buf, size_t size, size_t *off, const char *k, size_t n)
{
	for (size_t i = 0; i < n && *off + 4 < size; i++) {
		unsigned char c = (unsigned char)k[i];
		buf[(*off)++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
		if (*off >= SHOW_MAX && i + 1 < n) {
			memcpy(buf + *off, "...", 3);
			*off += 3;
			break;
		}
	}
	buf[*off] = '\0';
}

/* "a.b.c" from the first n parts of a key path. */
static const char *show_path(const struct keypath *kp, int n, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && off < SHOW_MAX; i++) {
		if (i && off + 2 < size) {
			buf[off++] = '.';
			buf[off] = '\0';
		}
		show_append(buf, size, &off, kp->part[i].s, kp->part[i].len);
	}
	return buf;
}

/* ---- tree ---- */

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE: return "table";
	case TOML_ARRAY: return "array";
	case TOML_STRING: return "string";
	case TOML_INTEGER: return "integer";
	case TOML_FLOAT: return "float";
	case TOML_BOOL: return "boolean";
	case TOML_DATETIME: return "offset date-time";
	case TOML_DATETIME_LOCAL: return "local date-time";
	case TOML_DATE_LOCAL: return "local date";
	case TOML_TIME_LOCAL: return "local time";
	}
	return "unknown";
}

/* "an integer", "a table": for "already defined as ..." messages. */
static const char *type_with_article(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE: return "a table";
	case TOML_ARRAY: return "an array";
	case TOML_STRING: return "a string";
	case TOML_INTEGER: return "an integer";
	case TOML_FLOAT: return "a float";
	case TOML_BOOL: return "a boolean";
	case TOML_DATETIME: return "an offset date-time";
	case TOML_DATETIME_LOCAL: return "a local date-time";
	case TOML_DATE_LOCAL: return "a local date";
	case TOML_TIME_LOCAL: return "a local time";
	}
	return "a value";
}

static struct node *new_node(struct parser *p, enum toml_type type, enum origin origin,
			     int line, int col)
{
	struct node *n = calloc(1, sizeof *n);

	if (!n) {
		fail_oom(p);
		return NULL;
	}
	n->v.type = type;
	n->v.line = line;
	n->v.col = col;
	n->origin = origin;
	return n;
}

void toml_free(struct toml_value *v)
{
	struct node *n = (struct node *)v;

	if (!v)
		return;
	switch (v->type) {
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.table.len; i++) {
			free(v->u.table.items[i].key);
			toml_free(v->u.table.items[i].val);
		}
		free(v->u.table.items);
		free(n->index);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.array.len; i++)
			toml_free(v->u.array.items[i]);
		free(v->u.array.items);
		break;
	case TOML_STRING:
		free(v->u.str.ptr);
		break;
	default:
		break;
	}
	free(n);
}

/* FNV-1a: keys are short and not chosen to collide with each other on
 * purpose often enough to matter; probing stays linear in the worst case per
 * lookup, never worse. */
static uint64_t hash_key(const char *k, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static struct toml_kv *table_find(const struct toml_value *t, const char *k, size_t n)
{
	const struct node *nd = (const struct node *)t;
	struct toml_kv *items = t->u.table.items;

	if (nd->index) {
		size_t mask = nd->index_cap - 1;

		for (size_t i = hash_key(k, n) & mask;; i = (i + 1) & mask) {
			uint32_t slot = nd->index[i];

			if (!slot)
				return NULL;
			if (items[slot - 1].keylen == n && memcmp(items[slot - 1].key, k, n) == 0)
				return &items[slot - 1];
		}
	}
	for (size_t i = 0; i < t->u.table.len; i++)
		if (items[i].keylen == n && memcmp(items[i].key, k, n) == 0)
			return &items[i];
	return NULL;
}

static void index_put(struct node *t, size_t item)
{
	const struct toml_kv *kv = &t->v.u.table.items[item];
	size_t mask = t->index_cap - 1;
	size_t i = hash_key(kv->key, kv->keylen) & mask;

	while (t->index[i])
		i = (i + 1) & mask;
	t->index[i] = (uint32_t)(item + 1);
}

/* Keeps the index at most a quarter full, so probe runs stay short. */
static bool index_update(struct parser *p, struct node *t)
{
	size_t len = t->v.u.table.len;
	size_t cap;
	uint32_t *slots;

	if (len < INDEX_MIN_KEYS)
		return true;
	if (t->index && len * 4 <= t->index_cap) {
		index_put(t, len - 1);
		return true;
	}
	if (len >= UINT32_MAX / 8)
		return fail(p, "too many keys in one table");
	for (cap = 32; cap < len * 8; cap *= 2)
		;
	slots = calloc(cap, sizeof *slots);
	if (!slots)
		return fail_oom(p);
	free(t->index);
	t->index = slots;
	t->index_cap = cap;
	for (size_t i = 0; i < len; i++)
		index_put(t, i);
	return true;
}

/* Appends key = val to a table. Takes ownership of key and val, also when it
 * fails. The caller has checked that the key is new. */
static bool table_add(struct parser *p, struct node *t, char *key, size_t keylen,
		      int line, int col, struct node *val)
{
	struct toml_value *v = &t->v;

	if (v->u.table.len == v->u.table.cap) {
		size_t cap = v->u.table.cap ? v->u.table.cap * 2 : 4;
		struct toml_kv *items = cap < SIZE_MAX / sizeof *items ?
			realloc(v->u.table.items, cap * sizeof *items) : NULL;

		if (!items) {
			free(key);
			toml_free(&val->v);
			return fail_oom(p);
		}
		v->u.table.items = items;
		v->u.table.cap = cap;
	}
	v->u.table.items[v->u.table.len++] = (struct toml_kv){
		.key = key, .keylen = keylen, .line = line, .col = col, .val = &val->v,
	};
	return index_update(p, t);
}

/* Takes ownership of item, also when it fails. */
static bool array_push(struct parser *p, struct node *a, struct node *item)
{
	struct toml_value *v = &a->v;

	if (v->u.array.len == v->u.array.cap) {
		size_t cap = v->u.array.cap ? v->u.array.cap * 2 : 4;
		struct toml_value **items = cap < SIZE_MAX / sizeof *items ?
			realloc(v->u.array.items, cap * sizeof *items) : NULL;

		if (!items) {
			toml_free(&item->v);
			return fail_oom(p);
		}
		v->u.array.items = items;
		v->u.array.cap = cap;
	}
	v->u.array.items[v->u.array.len++] = &item->v;
	return true;
}

struct toml_value *toml_get(const struct toml_value *t, const char *key)
{
	const struct toml_kv *kv = toml_get_kv(t, key);

	return kv ? kv->val : NULL;
}

const struct toml_kv *toml_get_kv(const struct toml_value *t, const char *key)
{
	if (!t || !key || t->type != TOML_TABLE)
		return NULL;
	return table_find(t, key, strlen(key));
}

/* ---- strings ---- */

/* Appends n bytes, keeping room for a final NUL. */
static bool sbuf_put(struct parser *p, struct sbuf *b, const char *src, size_t n)
{
	if (b->cap - b->len <= n) {
		size_t cap = b->cap ? b->cap : 32;
		char *np;

		while (cap - b->len <= n) {
			if (cap > SIZE_MAX / 2)
				return fail_oom(p);
			cap *= 2;
		}
		np = realloc(b->p, cap);
		if (!np)
			return fail_oom(p);
		b->p = np;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, src, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

static bool sbuf_put_utf8(struct parser *p, struct sbuf *b, unsigned long cp)
{
	char o[4];
	size_t n;

	if (cp < 0x80) {
		o[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xC0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xE0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		o[0] = (char)(0xF0 | cp >> 18);
		o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return sbuf_put(p, b, o, n);
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* pos is on the backslash of \uXXXX or \UXXXXXXXX. */
static bool parse_unicode_escape(struct parser *p, struct sbuf *b)
{
	int letter = at(p, p->pos + 1);
	int ndigits = letter == 'u' ? 4 : 8;
	unsigned long cp = 0;

	for (int k = 0; k < ndigits; k++) {
		int h = hex_value(at(p, p->pos + 2 + (size_t)k));

		if (h < 0)
			return fail(p, "the \\%c escape needs exactly %d hex digits", letter, ndigits);
		cp = cp << 4 | (unsigned long)h;
	}
	if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return fail(p, "escape \\%c%.*s is not a Unicode scalar value "
			    "(surrogates D800-DFFF and values above 10FFFF are not allowed)",
			    letter, ndigits, p->s + p->pos + 2);
	p->pos += 2 + (size_t)ndigits;
	return sbuf_put_utf8(p, b, cp);
}

/* A backslash at the end of a line in a multi-line basic string removes
 * itself, the newline and all whitespace and newlines after it. pos is on the
 * backslash, which is followed by whitespace or a newline. */
static bool skip_line_ending_backslash(struct parser *p)
{
	size_t i = p->pos + 1;

	while (at(p, i) == ' ' || at(p, i) == '\t')
		i++;
	if (at(p, i) != '\n' && !(at(p, i) == '\r' && at(p, i + 1) == '\n'))
		return fail(p, "a backslash followed by whitespace must end the line "
			    "(line-ending backslash); to write a backslash, use \\\\");
	p->pos = i;
	for (;;) {
		skip_ws(p);
		if (take_newline(p))
			continue;
		if (peek(p) == '\r')
			return fail_bare_cr(p);
		return true;
	}
}

/* pos is on a backslash inside a basic string. */
static bool parse_escape(struct parser *p, struct sbuf *b, bool multiline)
{
	int c = at(p, p->pos + 1);
	const char *rep = NULL;
	char buf[40];

	switch (c) {
	case 'b': rep = "\b"; break;
	case 't': rep = "\t"; break;
	case 'n': rep = "\n"; break;
	case 'f': rep = "\f"; break;
	case 'r': rep = "\r"; break;
	case '"': rep = "\""; break;
	case '\\': rep = "\\"; break;
	case 'u':
	case 'U':
		return parse_unicode_escape(p, b);
	default:
		break;
	}
	if (rep) {
		p->pos += 2;
		return sbuf_put(p, b, rep, 1);
	}
	if (multiline && (c == ' ' || c == '\t' || c == '\n' || c == '\r'))
		return skip_line_ending_backslash(p);
	if (c < 0)
		return fail(p, "unterminated escape sequence at end of file");
	return fail(p, "invalid escape sequence: backslash followed by %s; TOML 1.0 allows "
		    "\\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX and \\UXXXXXXXX",
		    describe(p, p->pos + 1, buf, sizeof buf));
}

static bool fail_control_in_string(struct parser *p, int c)
{
	return fail(p, "control character U+%04X is not allowed in a string; "
		    "write it as the escape \\u%04X in a basic string", (unsigned)c, (unsigned)c);
}

/* Copies bytes up to the next quote, backslash (if escapes) or control
 * character. */
static bool copy_plain_run(struct parser *p, struct sbuf *b, int quote, bool escapes)
{
	size_t start = p->pos;

	while (p->pos < p->len) {
		int c = (unsigned char)p->s[p->pos];

		if (c == quote || (escapes && c == '\\') || is_control(c))
			break;
		p->pos++;
	}
	return sbuf_put(p, b, p->s + start, p->pos - start);
}

/* "..." or '...' on one line. pos is on the opening quote. */
static bool parse_line_string(struct parser *p, struct sbuf *b)
{
	int quote = peek(p);
	bool escapes = quote == '"';
	int line = p->line, col = cur_col(p);

	if (!sbuf_put(p, b, "", 0))	/* an empty string still gets a buffer */
		return false;
	p->pos++;
	for (;;) {
		int c;

		if (!copy_plain_run(p, b, quote, escapes))
			return false;
		c = peek(p);
		if (c == quote) {
			p->pos++;
			return true;
		}
		if (c == '\\') {
			if (!parse_escape(p, b, false))
				return false;
			continue;
		}
		if (c < 0)
			return fail_at(p, line, col, "unterminated string: missing closing %c", quote);
		if (c == '\n' || c == '\r')
			return fail(p, "string starting at line %d, column %d is not closed on its line; "
				    "add the closing %c, or use %c%c%c for a multi-line string",
				    line, col, quote, quote, quote, quote);
		return fail_control_in_string(p, c);
	}
}

/* """...""" or '''...'''. pos is on the first of the three opening quotes.
 * One or two quotes may sit right before the closing three. */
static bool parse_multiline_string(struct parser *p, struct sbuf *b)
{
	int quote = peek(p);
	bool escapes = quote == '"';
	int line = p->line, col = cur_col(p);

	if (!sbuf_put(p, b, "", 0))
		return false;
	p->pos += 3;
	/* A newline right after the opening delimiter is trimmed. */
	if (!take_newline(p) && peek(p) == '\r')
		return fail_bare_cr(p);
	for (;;) {
		int c;

		if (!copy_plain_run(p, b, quote, escapes))
			return false;
		c = peek(p);
		if (c == quote) {
			size_t n = 0;

			while (at(p, p->pos + n) == quote)
				n++;
			if (n < 3) {
				if (!sbuf_put(p, b, p->s + p->pos, n))
					return false;
				p->pos += n;
				continue;
			}
			if (n > 5)
				return fail(p, "too many %c characters: at most two may come right "
					    "before the closing %c%c%c", quote, quote, quote, quote);
			if (!sbuf_put(p, b, p->s + p->pos, n - 3))
				return false;
			p->pos += n;
			return true;
		}
		if (c == '\\') {
			if (!parse_escape(p, b, true))
				return false;
			continue;
		}
		if (c == '\n' || c == '\r') {
			if (!take_newline(p))
				return fail_bare_cr(p);
			if (!sbuf_put(p, b, "\n", 1))
				return false;
			continue;
		}
		if (c < 0)
			return fail_at(p, line, col, "unterminated multi-line string: missing closing %c%c%c",
				       quote, quote, quote);
		return fail_control_in_string(p, c);
	}
}

static bool starts_multiline(const struct parser *p)
{
	int q = peek(p);

	return at(p, p->pos + 1) == q && at(p, p->pos + 2) == q;
}

static struct node *parse_string_value(struct parser *p, int line, int col)
{
	struct sbuf b = { 0 };
	bool ok = starts_multiline(p) ? parse_multiline_string(p, &b) : parse_line_string(p, &b);
	struct node *n = ok ? new_node(p, TOML_STRING, ORIGIN_VALUE, line, col) : NULL;

	if (!n) {
		free(b.p);
		return NULL;
	}
	n->v.u.str.ptr = b.p;
	n->v.u.str.len = b.len;
	return n;
}

/* ---- comments and line ends ---- */

/* pos is on '#'; stops before the line end. */
static bool skip_comment(struct parser *p)
{
	for (p->pos++; p->pos < p->len; p->pos++) {
		int c = peek(p);

		if (c == '\n')
			return true;
		if (c == '\r') {
			if (at(p, p->pos + 1) == '\n')
				return true;
			return fail_bare_cr(p);
		}
		if (is_control(c))
			return fail(p, "control character U+%04X is not allowed in a comment",
				    (unsigned)c);
	}
	return true;
}

/* After a key/value pair or a header: optional comment, then a newline or
 * the end of the document. */
static bool end_of_line(struct parser *p, const char *after)
{
	char buf[40];

	skip_ws(p);
	if (peek(p) == '#' && !skip_comment(p))
		return false;
	if (peek(p) < 0 || take_newline(p))
		return true;
	if (peek(p) == '\r')
		return fail_bare_cr(p);
	return fail(p, "unexpected %s after %s; it must be followed by a newline or a comment",
		    describe(p, p->pos, buf, sizeof buf), after);
}

/* Whitespace, comments and newlines, as allowed between array elements. */
static bool skip_ws_comments_newlines(struct parser *p)
{
	for (;;) {
		skip_ws(p);
		if (peek(p) == '#') {
			if (!skip_comment(p))
				return false;
		} else if (!take_newline(p)) {
			return peek(p) == '\r' ? fail_bare_cr(p) : true;
		}
	}
}

/* ---- keys ---- */

static void keypath_free(struct keypath *kp)
{
	for (int i = 0; i < kp->n; i++)
		if (!kp->part[i].moved)
			free(kp->part[i].s);
	free(kp->part);
}

static bool parse_key_part(struct parser *p, struct keypart *part)
{
	int c = peek(p);
	char buf[40];

	part->line = p->line;
	part->col = cur_col(p);
	if (c == '"' || c == '\'') {
		struct sbuf b = { 0 };

		if (starts_multiline(p))
			return fail(p, "a multi-line string cannot be a key");
		if (!parse_line_string(p, &b)) {
			free(b.p);
			return false;
		}
		part->s = b.p;
		part->len = b.len;
		return true;
	}
	if (!is_bare_key_char(c))
		return fail(p, "expected a key, found %s (bare keys may contain only "
			    "A-Z a-z 0-9 _ -; quote other keys)", describe(p, p->pos, buf, sizeof buf));
	size_t start = p->pos;

	while (is_bare_key_char(peek(p)))
		p->pos++;
	part->len = p->pos - start;
	part->s = malloc(part->len + 1);
	if (!part->s)
		return fail_oom(p);
	memcpy(part->s, p->s + start, part->len);
	part->s[part->len] = '\0';
	return true;
}

/* key, "key", 'key' or dotted a."b".c; leaves pos after trailing whitespace. */
static bool parse_key(struct parser *p, struct keypath *kp)
{
	for (;;) {
		if (kp->n >= TOML_MAX_KEY_PARTS)
			return fail(p, "key has more than %d dotted parts", TOML_MAX_KEY_PARTS);
		if (kp->n == kp->cap) {
			int cap = kp->cap ? kp->cap * 2 : 4;
			struct keypart *np;

			np = realloc(kp->part, (size_t)cap * sizeof *np);
			if (!np)
				return fail_oom(p);
			kp->part = np;
			kp->cap = cap;
		}
		kp->part[kp->n] = (struct keypart){ 0 };
		if (!parse_key_part(p, &kp->part[kp->n]))
			return false;
		kp->n++;
		skip_ws(p);
		if (peek(p) != '.')
			return true;
		p->pos++;
		skip_ws(p);
	}
}

/* ---- tables: navigation and the redefinition rules ---- */

/* Creates part as a new table in t; the part's key moves into t. */
static struct node *add_table(struct parser *p, struct node *t, struct keypart *part,
			      enum origin origin, int line, int col)
{
	struct node *child = new_node(p, TOML_TABLE, origin, line, col);

	if (!child)
		return NULL;
	part->moved = true;
	if (!table_add(p, t, part->s, part->len, part->line, part->col, child))
		return NULL;
	return child;
}

/* One step of a dotted key (a.b = 1): the intermediate table part i of kp in t.
 * Dotted keys may only extend tables that dotted keys created. */
static struct node *descend_dotted(struct parser *p, struct node *t, struct keypath *kp, int i)
{
	struct keypart *part = &kp->part[i];
	struct toml_kv *kv = table_find(&t->v, part->s, part->len);
	struct node *n;
	char name[SHOW_MAX + 8];

	if (!kv)
		return add_table(p, t, part, ORIGIN_DOTTED, part->line, part->col);
	n = (struct node *)kv->val;
	if (n->v.type == TOML_TABLE && n->origin == ORIGIN_DOTTED)
		return n;
	show_path(kp, i + 1, name, sizeof name);
	if (n->v.type != TOML_TABLE)
		fail_at(p, part->line, part->col, "key \"%s\" is already defined as %s at line %d, "
			"column %d; it cannot also be a table", name, type_with_article(n->v.type),
			kv->line, kv->col);
	else if (n->origin == ORIGIN_INLINE)
		fail_at(p, part->line, part->col, "cannot add keys to \"%s\": it is an inline table "
			"(line %d, column %d), which is complete once closed", name, n->v.line, n->v.col);
	else
		fail_at(p, part->line, part->col, "cannot add keys to table \"%s\" with a dotted key: "
			"the table comes from a [header] at line %d; put the key under that header",
			name, n->v.line);
	return NULL;
}

/* One step of a header path ([a.b.c] walks a, then b): headers may walk
 * through any table except inline ones, and into the last element of an
 * array of tables. */
static struct node *descend_header(struct parser *p, struct node *t, struct keypath *kp, int i)
{
	struct keypart *part = &kp->part[i];
	struct toml_kv *kv = table_find(&t->v, part->s, part->len);
	struct node *n;
	char name[SHOW_MAX + 8];

	if (!kv)
		return add_table(p, t, part, ORIGIN_IMPLICIT, part->line, part->col);
	n = (struct node *)kv->val;
	if (n->v.type == TOML_TABLE && n->origin != ORIGIN_INLINE)
		return n;
	if (n->v.type == TOML_ARRAY && n->origin == ORIGIN_AOT)
		return (struct node *)n->v.u.array.items[n->v.u.array.len - 1];
	show_path(kp, i + 1, name, sizeof name);
	if (n->v.type == TOML_TABLE)
		fail_at(p, part->line, part->col, "cannot add to \"%s\": it is an inline table "
			"(line %d, column %d), which is complete once closed", name, n->v.line, n->v.col);
	else if (n->v.type == TOML_ARRAY)
		fail_at(p, part->line, part->col, "\"%s\" is an array value (line %d, column %d), "
			"not an array of tables; a header cannot add to it", name, kv->line, kv->col);
	else
		fail_at(p, part->line, part->col, "key \"%s\" is already defined as %s at line %d, "
			"column %d; it cannot also be a table", name, type_with_article(n->v.type),
			kv->line, kv->col);
	return NULL;
}

/* [a.b.c]: defines the last part as a table, once. */
static struct node *define_table(struct parser *p, struct node *t, struct keypath *kp,
				 int line, int col)
{
	struct keypart *part = &kp->part[kp->n - 1];
	struct toml_kv *kv = table_find(&t->v, part->s, part->len);
	struct node *n;
	char name[SHOW_MAX + 8];

	if (!kv)
		return add_table(p, t, part, ORIGIN_HEADER, line, col);
	n = (struct node *)kv->val;
	if (n->v.type == TOML_TABLE && n->origin == ORIGIN_IMPLICIT) {
		n->origin = ORIGIN_HEADER;
		n->v.line = line;
		n->v.col = col;
		return n;
	}
	show_path(kp, kp->n, name, sizeof name);
	if (n->v.type == TOML_TABLE && n->origin == ORIGIN_HEADER)
		fail_at(p, line, col, "table [%s] is defined twice (first at line %d); "
			"merge the two sections", name, n->v.line);
	else if (n->v.type == TOML_TABLE && n->origin == ORIGIN_DOTTED)
		fail_at(p, line, col, "table [%s] was already created by a dotted key at line %d, "
			"column %d; a header cannot define it again", name, kv->line, kv->col);
	else if (n->v.type == TOML_TABLE)
		fail_at(p, line, col, "table [%s] is already defined as an inline table at line %d, "
			"column %d", name, n->v.line, n->v.col);
	else if (n->origin == ORIGIN_AOT)
		fail_at(p, line, col, "[%s] is an array of tables (line %d); use [[%s]] to add "
			"an element", name, n->v.line, name);
	else
		fail_at(p, line, col, "key \"%s\" is already defined as %s at line %d, column %d; "
			"it cannot also be a table", name, type_with_article(n->v.type),
			kv->line, kv->col);
	return NULL;
}

/* [[a.b.c]]: appends a new table to the array of tables a.b.c. */
static struct node *append_table(struct parser *p, struct node *t, struct keypath *kp,
				 int line, int col)
{
	struct keypart *part = &kp->part[kp->n - 1];
	struct toml_kv *kv = table_find(&t->v, part->s, part->len);
	struct node *arr, *elem;
	char name[SHOW_MAX + 8];

	if (!kv) {
		arr = new_node(p, TOML_ARRAY, ORIGIN_AOT, line, col);
		if (!arr)
			return NULL;
		part->moved = true;
		if (!table_add(p, t, part->s, part->len, part->line, part->col, arr))
			return NULL;
	} else {
		arr = (struct node *)kv->val;
		if (arr->v.type != TOML_ARRAY || arr->origin != ORIGIN_AOT) {
			show_path(kp, kp->n, name, sizeof name);
			if (arr->v.type == TOML_ARRAY)
				fail_at(p, line, col, "cannot append to \"%s\" with [[%s]]: it is an "
					"array value (line %d, column %d), not an array of tables",
					name, name, kv->line, kv->col);
			else
				fail_at(p, line, col, "[[%s]]: \"%s\" is already defined as %s at "
					"line %d, column %d, not an array of tables", name, name,
					type_with_article(arr->v.type), kv->line, kv->col);
			return NULL;
		}
	}
	elem = new_node(p, TOML_TABLE, ORIGIN_HEADER, line, col);
	if (!elem || !array_push(p, arr, elem))
		return NULL;
	return elem;
}

/* pos is on '['. */
static bool parse_header(struct parser *p)
{
	int line = p->line, col = cur_col(p);
	bool aot = at(p, p->pos + 1) == '[';
	struct keypath kp = { 0 };
	struct node *t = p->root;
	bool ok = false;
	char buf[40];

	p->pos += aot ? 2 : 1;
	skip_ws(p);
	if (!parse_key(p, &kp))
		goto out;
	if (peek(p) != ']' || (aot && at(p, p->pos + 1) != ']')) {
		fail(p, "expected '%s' to close the %s header, found %s", aot ? "]]" : "]",
		     aot ? "array-of-tables" : "table", describe(p, p->pos, buf, sizeof buf));
		goto out;
	}
	p->pos += aot ? 2 : 1;
	for (int i = 0; t && i < kp.n - 1; i++)
		t = descend_header(p, t, &kp, i);
	if (t)
		t = aot ? append_table(p, t, &kp, line, col) : define_table(p, t, &kp, line, col);
	if (!t)
		goto out;
	p->cur = t;
	ok = end_of_line(p, "the table header");
out:
	keypath_free(&kp);
	return ok;
}

/* ---- numbers, booleans, dates ---- */

/* Digits of the base with single underscores between them. */
static const char *check_digits(const char *s, size_t n, int base)
{
	if (n == 0)
		return "digits are missing";
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '_') {
			if (i == 0 || i == n - 1 || s[i + 1] == '_')
				return "an underscore must be between two digits";
			continue;
		}
		int d = hex_value((unsigned char)s[i]);

		if (d < 0 || d >= base)
			return base == 16 ? "it contains a character that is not a hex digit" :
			       base == 8 ? "it contains a character that is not an octal digit" :
			       base == 2 ? "it contains a character that is not a binary digit" :
			       "it contains a character that is not a digit";
	}
	return NULL;
}

static struct node *number_node(struct parser *p, enum toml_type type, int line, int col)
{
	return new_node(p, type, ORIGIN_VALUE, line, col);
}

/* Digits already checked; accumulates with an overflow check against limit. */
static bool accumulate(const char *s, size_t n, int base, uint64_t limit, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '_')
			continue;
		uint64_t d = (uint64_t)hex_value((unsigned char)s[i]);

		if (v > (limit - d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + d;
	}
	*out = v;
	return true;
}

static struct node *parse_integer(struct parser *p, const char *tok, size_t n, int line, int col)
{
	bool neg = tok[0] == '-', sign = tok[0] == '-' || tok[0] == '+';
	const char *b = tok + sign, *why;
	size_t bn = n - sign;
	int base = 10;
	uint64_t v;
	struct node *node;

	if (bn >= 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'o' || b[1] == 'b')) {
		if (sign) {
			fail_at(p, line, col, "invalid integer \"%.*s\": a sign is not allowed on hex, "
				"octal or binary integers", (int)(n < SHOW_MAX ? n : SHOW_MAX), tok);
			return NULL;
		}
		base = b[1] == 'x' ? 16 : b[1] == 'o' ? 8 : 2;
		b += 2;
		bn -= 2;
	}
	why = check_digits(b, bn, base);
	if (!why && base == 10 && bn > 1 && b[0] == '0')
		why = "leading zeros are not allowed";
	if (why) {
		fail_at(p, line, col, "invalid integer \"%.*s\": %s",
			(int)(n < SHOW_MAX ? n : SHOW_MAX), tok, why);
		return NULL;
	}
	if (!accumulate(b, bn, base, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v)) {
		fail_at(p, line, col, "integer \"%.*s\" does not fit in 64 bits (%s)",
			(int)(n < SHOW_MAX ? n : SHOW_MAX), tok,
			neg ? "the minimum is -9223372036854775808" : "the maximum is 9223372036854775807");
		return NULL;
	}
	node = number_node(p, TOML_INTEGER, line, col);
	if (node)
		node->v.u.integer = neg ? (int64_t)(0 - v) : (int64_t)v;
	return node;
}

static size_t span_digits_underscores(const char *s, size_t i, size_t n)
{
	while (i < n && (is_digit((unsigned char)s[i]) || s[i] == '_'))
		i++;
	return i;
}

/* [+-] int [. frac] [e [+-] exp], with at least a fraction or an exponent. */
static struct node *parse_float(struct parser *p, const char *tok, size_t n, int line, int col)
{
	size_t i = (tok[0] == '+' || tok[0] == '-') ? 1 : 0;
	size_t int_start = i, int_end, part;
	const char *why;
	char *clean = NULL;
	struct node *node = NULL;
	int show = (int)(n < SHOW_MAX ? n : SHOW_MAX);

	int_end = span_digits_underscores(tok, i, n);
	why = check_digits(tok + int_start, int_end - int_start, 10);
	if (!why && int_end - int_start > 1 && tok[int_start] == '0')
		why = "leading zeros are not allowed";
	i = int_end;
	if (!why && i < n && tok[i] == '.') {
		part = ++i;
		i = span_digits_underscores(tok, i, n);
		if (check_digits(tok + part, i - part, 10))
			why = i == part ? "digits must follow the decimal point" :
			      check_digits(tok + part, i - part, 10);
	}
	if (!why && i < n && (tok[i] == 'e' || tok[i] == 'E')) {
		i++;
		if (i < n && (tok[i] == '+' || tok[i] == '-'))
			i++;
		part = i;
		i = span_digits_underscores(tok, i, n);
		if (check_digits(tok + part, i - part, 10))
			why = i == part ? "digits must follow the exponent" :
			      check_digits(tok + part, i - part, 10);
	}
	if (!why && i != n)
		why = "unexpected characters";
	if (why) {
		fail_at(p, line, col, "invalid float \"%.*s\": %s", show, tok, why);
		return NULL;
	}
	clean = malloc(n + 1);
	if (!clean) {
		fail_oom(p);
		return NULL;
	}
	size_t o = 0;

	for (i = 0; i < n; i++)
		if (tok[i] != '_')
			clean[o++] = tok[i];
	clean[o] = '\0';
	node = number_node(p, TOML_FLOAT, line, col);
	if (node)
		node->v.u.fp = strtod(clean, NULL);	/* too large rounds to inf */
	free(clean);
	return node;
}

/* A value token without quotes or brackets: boolean, integer or float. */
static struct node *parse_number_or_bool(struct parser *p, const char *tok, size_t n,
					 int line, int col)
{
	const char *b = tok + (tok[0] == '+' || tok[0] == '-');
	size_t bn = n - (size_t)(b - tok);
	struct node *node;
	int show = (int)(n < SHOW_MAX ? n : SHOW_MAX);

	if ((n == 4 && memcmp(tok, "true", 4) == 0) || (n == 5 && memcmp(tok, "false", 5) == 0)) {
		node = new_node(p, TOML_BOOL, ORIGIN_VALUE, line, col);
		if (node)
			node->v.u.boolean = n == 4;
		return node;
	}
	if (bn == 3 && (memcmp(b, "inf", 3) == 0 || memcmp(b, "nan", 3) == 0)) {
		node = number_node(p, TOML_FLOAT, line, col);
		if (node)
			node->v.u.fp = copysign(b[0] == 'i' ? INFINITY : NAN, tok[0] == '-' ? -1.0 : 1.0);
		return node;
	}
	if (bn == 0 || !(is_digit((unsigned char)b[0]) || b[0] == '.')) {
		fail_at(p, line, col, "invalid value \"%.*s\": expected a string, number, boolean, "
			"date/time, array or inline table (strings need quotes)", show, tok);
		return NULL;
	}
	if (!(bn >= 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'o' || b[1] == 'b')) &&
	    (memchr(b, '.', bn) || memchr(b, 'e', bn) || memchr(b, 'E', bn)))
		return parse_float(p, tok, n, line, col);
	return parse_integer(p, tok, n, line, col);
}

static bool digits_at(const struct parser *p, size_t i, int n)
{
	for (int k = 0; k < n; k++)
		if (!is_digit(at(p, i + (size_t)k)))
			return false;
	return true;
}

static int num_at(const struct parser *p, size_t i, int n)
{
	int v = 0;

	for (int k = 0; k < n; k++)
		v = v * 10 + (at(p, i + (size_t)k) - '0');
	return v;
}

/* YYYY- starts a date, HH: a time. */
static bool looks_like_datetime(const struct parser *p)
{
	return (digits_at(p, p->pos, 4) && at(p, p->pos + 4) == '-') ||
	       (digits_at(p, p->pos, 2) && at(p, p->pos + 2) == ':');
}

static bool is_leap_year(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* HH:MM:SS[.frac] at *i. */
static bool parse_time_part(struct parser *p, size_t *i, struct toml_datetime *dt,
			    int line, int col)
{
	size_t j = *i;

	if (!digits_at(p, j, 2) || at(p, j + 2) != ':' || !digits_at(p, j + 3, 2) ||
	    at(p, j + 5) != ':' || !digits_at(p, j + 6, 2))
		return fail_at(p, line, col, "invalid time: expected HH:MM:SS with two digits each "
			       "(seconds are required in TOML 1.0)");
	dt->hour = num_at(p, j, 2);
	dt->minute = num_at(p, j + 3, 2);
	dt->second = num_at(p, j + 6, 2);
	j += 8;
	if (at(p, j) == '.') {
		size_t start = ++j;

		while (is_digit(at(p, j)))
			j++;
		if (j == start)
			return fail_at(p, line, col, "invalid time: digits must follow the '.' "
				       "after the seconds");
		for (size_t k = 0; k < 9; k++)
			dt->nanosecond = dt->nanosecond * 10 +
				(start + k < j ? at(p, start + k) - '0' : 0);
		dt->frac_digits = j - start > 1000000 ? 1000000 : (int)(j - start);
	}
	if (dt->hour > 23)
		return fail_at(p, line, col, "invalid time: hour %02d is out of range (00-23)", dt->hour);
	if (dt->minute > 59)
		return fail_at(p, line, col, "invalid time: minute %02d is out of range (00-59)",
			       dt->minute);
	if (dt->second > 60)
		return fail_at(p, line, col, "invalid time: second %02d is out of range "
			       "(00-59, or 60 for a leap second)", dt->second);
	*i = j;
	return true;
}

/* Z, z, +HH:MM or -HH:MM at *i, if present. */
static bool parse_offset(struct parser *p, size_t *i, struct toml_datetime *dt, bool *has,
			 int line, int col)
{
	size_t j = *i;
	int c = at(p, j), h, m;

	*has = false;
	if (c == 'Z' || c == 'z') {
		*has = true;
		*i = j + 1;
		return true;
	}
	if (c != '+' && c != '-')
		return true;
	if (!digits_at(p, j + 1, 2) || at(p, j + 3) != ':' || !digits_at(p, j + 4, 2))
		return fail_at(p, line, col, "invalid UTC offset: expected Z, +HH:MM or -HH:MM");
	h = num_at(p, j + 1, 2);
	m = num_at(p, j + 4, 2);
	if (h > 23 || m > 59)
		return fail_at(p, line, col, "invalid UTC offset %c%02d:%02d: hours must be 00-23 "
			       "and minutes 00-59", c, h, m);
	dt->offset_minutes = (c == '-' ? -1 : 1) * (h * 60 + m);
	*has = true;
	*i = j + 6;
	return true;
}

/* Offset date-time, local date-time, local date or local time. pos is on
 * the first digit and looks_like_datetime() holds. */
static struct node *parse_datetime(struct parser *p, int line, int col)
{
	struct toml_datetime dt = { 0 };
	enum toml_type type = TOML_TIME_LOCAL;
	size_t i = p->pos;
	struct node *n;

	if (at(p, i + 4) == '-') {
		if (!digits_at(p, i + 5, 2) || at(p, i + 7) != '-' || !digits_at(p, i + 8, 2)) {
			fail_at(p, line, col, "invalid date: expected YYYY-MM-DD with four digits "
				"for the year and two for month and day");
			return NULL;
		}
		dt.year = num_at(p, i, 4);
		dt.month = num_at(p, i + 5, 2);
		dt.day = num_at(p, i + 8, 2);
		if (dt.month < 1 || dt.month > 12) {
			fail_at(p, line, col, "invalid date: month %02d is out of range (01-12)", dt.month);
			return NULL;
		}
		if (dt.day < 1 || dt.day > days_in_month(dt.year, dt.month)) {
			fail_at(p, line, col, "invalid date: day %02d is out of range for %04d-%02d "
				"(01-%02d)", dt.day, dt.year, dt.month, days_in_month(dt.year, dt.month));
			return NULL;
		}
		i += 10;
		type = TOML_DATE_LOCAL;
		/* A space separates date and time only when a time follows;
		 * otherwise it ends the value. */
		bool time_follows = at(p, i) == 'T' || at(p, i) == 't' ||
			(at(p, i) == ' ' && digits_at(p, i + 1, 2) && at(p, i + 3) == ':');

		if (time_follows) {
			bool has_offset;

			i++;
			if (!parse_time_part(p, &i, &dt, line, col) ||
			    !parse_offset(p, &i, &dt, &has_offset, line, col))
				return NULL;
			type = has_offset ? TOML_DATETIME : TOML_DATETIME_LOCAL;
		}
	} else if (!parse_time_part(p, &i, &dt, line, col)) {
		return NULL;
	}
	p->pos = i;
	n = new_node(p, type, ORIGIN_VALUE, line, col);
	if (n)
		n->v.u.dt = dt;
	return n;
}

static bool is_token_char(int c)
{
	return is_bare_key_char(c) || c == '+' || c == '.';
}

static struct node *parse_token_value(struct parser *p, int line, int col)
{
	size_t start = p->pos;
	char buf[40];

	while (is_token_char(peek(p)))
		p->pos++;
	if (p->pos == start) {
		fail(p, "expected a value, found %s", describe(p, p->pos, buf, sizeof buf));
		return NULL;
	}
	return parse_number_or_bool(p, p->s + start, p->pos - start, line, col);
}

/* ---- arrays and inline tables ---- */

static bool enter_nesting(struct parser *p)
{
	if (p->nesting >= TOML_MAX_NESTING)
		return fail(p, "arrays and inline tables are nested more than %d levels deep",
			    TOML_MAX_NESTING);
	p->nesting++;
	return true;
}

/* pos is on '['. Newlines and comments may appear between elements, and a
 * trailing comma is allowed. */
static struct node *parse_array(struct parser *p, int line, int col)
{
	struct node *a;
	char buf[40];

	if (!enter_nesting(p))
		return NULL;
	a = new_node(p, TOML_ARRAY, ORIGIN_VALUE, line, col);
	if (!a)
		goto fail;
	p->pos++;
	for (;;) {
		struct node *item;

		if (!skip_ws_comments_newlines(p))
			goto fail;
		if (peek(p) == ']')
			break;
		if (peek(p) == ',') {
			fail(p, "unexpected ',' in array: a value is missing");
			goto fail;
		}
		if (peek(p) < 0) {
			fail_at(p, line, col, "unterminated array: missing ']'");
			goto fail;
		}
		item = parse_value(p);
		if (!item || !array_push(p, a, item))
			goto fail;
		if (!skip_ws_comments_newlines(p))
			goto fail;
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == ']')
			break;
		if (peek(p) < 0)
			fail_at(p, line, col, "unterminated array: missing ']'");
		else
			fail(p, "expected ',' or ']' after an array element, found %s",
			     describe(p, p->pos, buf, sizeof buf));
		goto fail;
	}
	p->pos++;
	p->nesting--;
	return a;
fail:
	toml_free(a ? &a->v : NULL);
	p->nesting--;
	return NULL;
}

/* pos is on '{'. TOML 1.0 inline tables are on one line, with no trailing
 * comma, and cannot be extended once closed. */
static struct node *parse_inline_table(struct parser *p, int line, int col)
{
	struct node *t;
	char buf[40];

	if (!enter_nesting(p))
		return NULL;
	t = new_node(p, TOML_TABLE, ORIGIN_INLINE, line, col);
	if (!t)
		goto fail;
	p->pos++;
	skip_ws(p);
	if (peek(p) == '}')
		goto done;
	for (;;) {
		if (at_newline(p)) {
			fail(p, "newline inside an inline table; in TOML 1.0 an inline table must "
			     "be on one line (use a [table] section for longer tables)");
			goto fail;
		}
		if (!parse_keyval(p, t))
			goto fail;
		skip_ws(p);
		if (peek(p) == ',') {
			p->pos++;
			skip_ws(p);
			if (peek(p) == '}') {
				fail(p, "trailing comma is not allowed in an inline table");
				goto fail;
			}
			continue;
		}
		if (peek(p) == '}')
			goto done;
		if (peek(p) < 0)
			fail_at(p, line, col, "unterminated inline table: missing '}'");
		else if (at_newline(p) || peek(p) == '#')
			fail(p, "inline table opened at line %d, column %d must be closed with '}' "
			     "on the same line", line, col);
		else
			fail(p, "expected ',' or '}' after a value in an inline table, found %s",
			     describe(p, p->pos, buf, sizeof buf));
		goto fail;
	}
done:
	p->pos++;
	p->nesting--;
	return t;
fail:
	toml_free(t ? &t->v : NULL);
	p->nesting--;
	return NULL;
}

static struct node *parse_value(struct parser *p)
{
	int line = p->line, col = cur_col(p);

	switch (peek(p)) {
	case '"':
	case '\'':
		return parse_string_value(p, line, col);
	case '[':
		return parse_array(p, line, col);
	case '{':
		return parse_inline_table(p, line, col);
	default:
		break;
	}
	if (is_digit(peek(p)) && looks_like_datetime(p))
		return parse_datetime(p, line, col);
	return parse_token_value(p, line, col);
}

/* key = value, into table (the current section or an inline table). */
static bool parse_keyval(struct parser *p, struct node *table)
{
	struct keypath kp = { 0 };
	struct node *t = table, *val;
	struct keypart *last;
	struct toml_kv *kv;
	bool ok = false;
	char name[SHOW_MAX + 8], buf[40];

	if (!parse_key(p, &kp))
		goto out;
	if (peek(p) != '=') {
		fail(p, "expected '=' after key \"%s\", found %s",
		     show_path(&kp, kp.n, name, sizeof name), describe(p, p->pos, buf, sizeof buf));
		goto out;
	}
	p->pos++;
	skip_ws(p);
	if (peek(p) < 0 || at_newline(p) || peek(p) == '#') {
		fail(p, "missing value after '=' for key \"%s\"", show_path(&kp, kp.n, name, sizeof name));
		goto out;
	}
	for (int i = 0; t && i < kp.n - 1; i++)
		t = descend_dotted(p, t, &kp, i);
	if (!t)
		goto out;
	last = &kp.part[kp.n - 1];
	kv = table_find(&t->v, last->s, last->len);
	if (kv) {
		fail_at(p, last->line, last->col, "duplicate key \"%s\" (first defined at line %d, "
			"column %d)", show_path(&kp, kp.n, name, sizeof name), kv->line, kv->col);
		goto out;
	}
	val = parse_value(p);
	if (!val)
		goto out;
	last->moved = true;
	ok = table_add(p, t, last->s, last->len, last->line, last->col, val);
out:
	keypath_free(&kp);
	return ok;
}

/* ---- document ---- */

/* Rejects anything that is not well-formed UTF-8: overlong forms, surrogates,
 * code points above 10FFFF, truncated sequences. */
static bool check_utf8(struct parser *p)
{
	const unsigned char *s = (const unsigned char *)p->s;
	size_t i = 0;

	while (i < p->len) {
		unsigned c = s[i];
		unsigned long cp, min;
		size_t n;

		if (c < 0x80) {
			if (c == '\n') {
				p->line++;
				p->line_start = i + 1;
			}
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1; cp = c & 0x1F; min = 0x80;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2; cp = c & 0x0F; min = 0x800;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3; cp = c & 0x07; min = 0x10000;
		} else {
			goto bad;
		}
		if (n > p->len - i - 1)
			goto bad;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				goto bad;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			goto bad;
		i += n + 1;
		continue;
bad:
		return fail_at(p, p->line, column_of(p, i), "invalid UTF-8 (byte 0x%02X); "
			       "TOML documents must be UTF-8 encoded", c);
	}
	p->line = 1;
	p->line_start = 0;
	p->memo_pos = 0;
	p->memo_col = 1;
	return true;
}

struct toml_value *toml_parse(const char *buf, size_t len, struct toml_error *err)
{
	struct toml_error dummy;
	struct parser p = {
		.s = buf, .len = buf ? len : 0, .line = 1, .memo_col = 1,
		.err = err ? err : &dummy,
	};

	memset(p.err, 0, sizeof *p.err);
	if (!check_utf8(&p))
		return NULL;
	/* A byte order mark may start the document; columns start after it. */
	if (p.len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0)
		p.pos = p.line_start = 3;
	p.root = p.cur = new_node(&p, TOML_TABLE, ORIGIN_HEADER, 1, 1);
	if (!p.root)
		return NULL;
	while (!p.failed) {
		skip_ws(&p);
		if (peek(&p) < 0)
			break;
		if (peek(&p) == '#')
			skip_comment(&p);
		else if (at_newline(&p)) {
			if (!take_newline(&p))
				fail_bare_cr(&p);
		}
		else if (peek(&p) == '[')
			parse_header(&p);
		else if (parse_keyval(&p, p.cur))
			end_of_line(&p, "the value");
	}
	if (p.failed) {
		toml_free(&p.root->v);
		return NULL;
	}
	return &p.root->v;
}
