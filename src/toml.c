/* TOML 1.0.0 parser: one pass over the raw bytes, building the tree as it
 * goes. The input is not NUL-terminated, so every read goes through peek().
 * Errors stop the parse: the first failure fills struct toml_error and every
 * caller returns false/NULL up to toml_parse, which frees the partial tree. */
#include "toml.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"

/* How a table or array came to exist; TOML's redefinition rules depend on
 * it (spec 1.0.0, "Table" and "Array of Tables"). */
enum {
	NF_HEADER = 1 << 0,	/* table defined by its own [header] */
	NF_IMPLICIT = 1 << 1,	/* table created as a prefix of a [header] path */
	NF_DOTTED = 1 << 2,	/* table created by a dotted key */
	NF_INLINE = 1 << 3,	/* inline table: closed for good */
	NF_AOT = 1 << 4,	/* array created by [[header]] (extensible) */
};

/* Every value the parser creates is a node; the public struct comes first
 * so a toml_value pointer is also a node pointer. */
struct node {
	struct toml_value v;
	unsigned flags;
	int depth;		/* root table is 0 */
};

#define INDEX_MIN_ITEMS 8	/* tables smaller than this are scanned */

struct parser {
	const char *buf;
	size_t len, pos;
	int line;		/* 1-based line of pos */
	size_t line_start;	/* offset of the first byte of that line */
	struct toml_error *err;
	bool failed;
};

/* A key as written: one or more dotted parts. */
struct keypart {
	char *s;
	size_t len;
	int line, col;
};

struct key {
	struct keypart *part;	/* grown as needed, at most TOML_MAX_DEPTH + 1 */
	int n, cap;
};

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* ---- input and errors ---- */

static int peek_at(const struct parser *p, size_t off)
{
	if (p->pos + off >= p->len)
		return -1;
	return (unsigned char)p->buf[p->pos + off];
}

static int peek(const struct parser *p)
{
	return peek_at(p, 0);
}

static int cur_col(const struct parser *p)
{
	size_t c = p->pos - p->line_start + 1;
	return c > 1000000000 ? 1000000000 : (int)c;
}

static bool fail_at(struct parser *p, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static bool fail_at(struct parser *p, int line, int col, const char *fmt, ...)
{
	va_list ap;

	if (p->failed)
		return false;
	p->failed = true;
	p->err->line = line;
	p->err->col = col;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
	va_end(ap);
	return false;
}

#define fail(p, ...) fail_at((p), (p)->line, cur_col(p), __VA_ARGS__)

/* Describes the byte at the cursor for messages: 'x', "end of input", ... */
static const char *describe_here(const struct parser *p, char *out, size_t cap)
{
	int c = peek(p);

	if (c < 0)
		snprintf(out, cap, "end of input");
	else if (c == '\n' || (c == '\r' && peek_at(p, 1) == '\n'))
		snprintf(out, cap, "end of line");
	else if (c > 0x20 && c < 0x7f)
		snprintf(out, cap, "'%c'", c);
	else if (c == ' ')
		snprintf(out, cap, "a space");
	else
		snprintf(out, cap, "byte 0x%02x", (unsigned)c);
	return out;
}

/* A key for messages: printable, shortened, quotes escaped. */
static const char *describe_key(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 8 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 12 >= cap) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

static bool at_newline(const struct parser *p)
{
	int c = peek(p);
	return c == '\n' || (c == '\r' && peek_at(p, 1) == '\n');
}

static void eat_newline(struct parser *p)
{
	p->pos += peek(p) == '\r' ? 2 : 1;
	p->line++;
	p->line_start = p->pos;
}

static bool is_ws(int c)
{
	return c == ' ' || c == '\t';
}

static void skip_ws(struct parser *p)
{
	while (is_ws(peek(p)))
		p->pos++;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Control characters other than tab are not allowed in strings/comments. */
static bool is_forbidden_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* One pass over the whole document before parsing: valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF), no NUL, no bare CR.
 * Later stages can then treat bytes >= 0x80 as opaque. */
static bool validate_bytes(struct parser *p)
{
	const unsigned char *s = (const unsigned char *)p->buf;
	int line = 1;
	size_t line_start = 0;

	for (size_t i = 0; i < p->len;) {
		unsigned c = s[i];
		int col = (int)(i - line_start + 1);
		size_t need;
		unsigned cp, min;

		if (c == '\n') {
			line++;
			line_start = ++i;
			continue;
		}
		if (c == 0)
			return fail_at(p, line, col, "NUL byte in document (TOML text must not contain U+0000)");
		if (c == '\r' && (i + 1 >= p->len || s[i + 1] != '\n'))
			return fail_at(p, line, col, "carriage return not followed by a newline (bare CR is not allowed)");
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1; cp = c & 0x1f; min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2; cp = c & 0x0f; min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3; cp = c & 0x07; min = 0x10000;
		} else {
			return fail_at(p, line, col, "invalid UTF-8 (byte 0x%02x); save the file as UTF-8", c);
		}
		if (p->len - i <= need)
			return fail_at(p, line, col, "truncated UTF-8 sequence at end of document");
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return fail_at(p, line, col, "invalid UTF-8 sequence; save the file as UTF-8");
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return fail_at(p, line, col, "invalid UTF-8 (overlong, surrogate or out-of-range code point)");
		i += need + 1;
	}
	return true;
}

/* ---- small buffers ---- */

static void sb_grow(struct sbuf *b, size_t extra)
{
	size_t cap;
	char *np;

	if (b->oom || b->len + extra + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 32;
	while (cap < b->len + extra + 1)
		cap *= 2;
	np = realloc(b->p, cap);
	if (!np) {
		b->oom = true;
		return;
	}
	b->p = np;
	b->cap = cap;
}

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	sb_grow(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_putc(struct sbuf *b, char c)
{
	sb_putn(b, &c, 1);
}

static void sb_put_utf8(struct sbuf *b, uint32_t cp)
{
	char o[4];
	size_t n;

	if (cp < 0x80) {
		o[0] = (char)cp; n = 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f)); n = 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
	} else {
		o[0] = (char)(0xf0 | (cp >> 18));
		o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
	}
	sb_putn(b, o, n);
}

/* Hands the buffer's bytes over (always NUL-terminated, never NULL). */
static char *sb_take(struct sbuf *b, size_t *len)
{
	char *s;

	sb_grow(b, 0);
	if (b->oom) {
		free(b->p);
		return NULL;
	}
	s = b->p;
	s[b->len] = '\0';
	*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	return s;
}

/* ---- tree ---- */

static struct node *new_node(struct parser *p, enum toml_type type, int line, int col, int depth)
{
	struct node *n;

	if (depth > TOML_MAX_DEPTH) {
		fail_at(p, line, col, "nesting too deep (more than %d levels of tables/arrays)", TOML_MAX_DEPTH);
		return NULL;
	}
	n = calloc(1, sizeof *n);
	if (!n) {
		fail_at(p, line, col, "out of memory");
		return NULL;
	}
	n->v.type = type;
	n->v.line = line;
	n->v.col = col;
	n->depth = depth;
	return n;
}

static struct node *as_node(const struct toml_value *v)
{
	return (struct node *)v;
}

void toml_free(struct toml_value *v)
{
	if (!v)
		return;
	if (v->type == TOML_TABLE) {
		for (size_t i = 0; i < v->u.table.len; i++) {
			free(v->u.table.items[i].key);
			toml_free(v->u.table.items[i].val);
		}
		free(v->u.table.items);
		free(v->u.table.index);
	} else if (v->type == TOML_ARRAY) {
		for (size_t i = 0; i < v->u.array.len; i++)
			toml_free(v->u.array.items[i]);
		free(v->u.array.items);
	} else if (v->type == TOML_STRING) {
		free(v->u.str.ptr);
	}
	free(v);
}

static size_t hash_key(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 29));
}

static struct toml_kv *table_find(const struct toml_value *t, const char *key, size_t len)
{
	if (!t || t->type != TOML_TABLE)
		return NULL;
	if (t->u.table.index) {
		size_t mask = t->u.table.index_cap - 1;
		for (size_t h = hash_key(key, len) & mask;; h = (h + 1) & mask) {
			size_t slot = t->u.table.index[h];
			struct toml_kv *kv;
			if (!slot)
				return NULL;
			kv = &t->u.table.items[slot - 1];
			if (kv->keylen == len && memcmp(kv->key, key, len) == 0)
				return kv;
		}
	}
	for (size_t i = 0; i < t->u.table.len; i++) {
		struct toml_kv *kv = &t->u.table.items[i];
		if (kv->keylen == len && memcmp(kv->key, key, len) == 0)
			return kv;
	}
	return NULL;
}

static void index_put(struct toml_value *t, size_t item)
{
	size_t mask = t->u.table.index_cap - 1;
	const struct toml_kv *kv = &t->u.table.items[item];
	size_t h = hash_key(kv->key, kv->keylen) & mask;

	while (t->u.table.index[h])
		h = (h + 1) & mask;
	t->u.table.index[h] = item + 1;
}

/* Keeps the index at most half full; rebuilt whenever it doubles. */
static bool index_update(struct toml_value *t)
{
	size_t n = t->u.table.len;

	if (n < INDEX_MIN_ITEMS)
		return true;
	if (t->u.table.index && n * 2 <= t->u.table.index_cap) {
		index_put(t, n - 1);
		return true;
	}
	size_t cap = 32;
	while (cap < n * 4)
		cap *= 2;
	size_t *idx = calloc(cap, sizeof *idx);
	if (!idx)
		return false;
	free(t->u.table.index);
	t->u.table.index = idx;
	t->u.table.index_cap = cap;
	for (size_t i = 0; i < n; i++)
		index_put(t, i);
	return true;
}

/* Takes ownership of kp->s and val (both freed on failure). */
static bool table_add(struct parser *p, struct toml_value *t, struct keypart *kp, struct toml_value *val)
{
	if (t->u.table.len == t->u.table.cap) {
		size_t cap = t->u.table.cap ? t->u.table.cap * 2 : 4;
		struct toml_kv *items = realloc(t->u.table.items, cap * sizeof *items);
		if (!items)
			goto fail;
		t->u.table.items = items;
		t->u.table.cap = cap;
	}
	t->u.table.items[t->u.table.len++] = (struct toml_kv){
		.key = kp->s, .keylen = kp->len, .line = kp->line, .col = kp->col, .val = val,
	};
	kp->s = NULL;
	if (!index_update(t))
		return fail_at(p, kp->line, kp->col, "out of memory");
	return true;
fail:
	free(kp->s);
	kp->s = NULL;
	toml_free(val);
	return fail_at(p, kp->line, kp->col, "out of memory");
}

static bool array_add(struct parser *p, struct toml_value *a, struct toml_value *val)
{
	if (a->u.array.len == a->u.array.cap) {
		size_t cap = a->u.array.cap ? a->u.array.cap * 2 : 4;
		struct toml_value **items = realloc(a->u.array.items, cap * sizeof *items);
		if (!items) {
			toml_free(val);
			return fail(p, "out of memory");
		}
		a->u.array.items = items;
		a->u.array.cap = cap;
	}
	a->u.array.items[a->u.array.len++] = val;
	return true;
}

/* Creates an empty table under t (key taken over). */
static struct toml_value *add_subtable(struct parser *p, struct toml_value *t, struct keypart *kp, unsigned flags)
{
	struct node *n = new_node(p, TOML_TABLE, kp->line, kp->col, as_node(t)->depth + 1);

	if (!n)
		return NULL;
	n->flags = flags;
	if (!table_add(p, t, kp, &n->v))
		return NULL;
	return &n->v;
}

struct toml_value *toml_get(const struct toml_value *t, const char *key)
{
	const struct toml_kv *kv = toml_get_kv(t, key);
	return kv ? kv->val : NULL;
}

const struct toml_kv *toml_get_kv(const struct toml_value *t, const char *key)
{
	if (!key)
		return NULL;
	return table_find(t, key, strlen(key));
}

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

/* ---- comments and line ends ---- */

static bool skip_comment(struct parser *p)
{
	if (peek(p) != '#')
		return true;
	for (;;) {
		int c = peek(p);
		if (c < 0 || at_newline(p))
			return true;
		if (is_forbidden_control(c))
			return fail(p, "control character 0x%02x in comment", (unsigned)c);
		p->pos++;
	}
}

/* After a key/value pair or header: only whitespace and a comment may
 * follow before the newline. */
static bool expect_line_end(struct parser *p, const char *after)
{
	char d[32];

	skip_ws(p);
	if (!skip_comment(p))
		return false;
	if (peek(p) < 0)
		return true;
	if (at_newline(p)) {
		eat_newline(p);
		return true;
	}
	return fail(p, "unexpected %s after %s; expected a newline or '#' comment",
		    describe_here(p, d, sizeof d), after);
}

/* Inside arrays, values may be spread over lines with comments between. */
static bool skip_ws_newlines_comments(struct parser *p)
{
	for (;;) {
		skip_ws(p);
		if (!skip_comment(p))
			return false;
		if (!at_newline(p))
			return true;
		eat_newline(p);
	}
}

/* ---- strings ---- */

static bool parse_unicode_escape(struct parser *p, int ndigits, struct sbuf *out)
{
	uint32_t cp = 0;

	for (int i = 0; i < ndigits; i++) {
		int h = hex_digit(peek_at(p, (size_t)i));
		if (h < 0)
			return fail(p, "\\%c escape needs exactly %d hex digits",
				    ndigits == 4 ? 'u' : 'U', ndigits);
		cp = (cp << 4) | (uint32_t)h;
	}
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fail(p, "escape \\%c%.*s is not a Unicode scalar value (surrogates and values above 10FFFF are not allowed)",
			    ndigits == 4 ? 'u' : 'U', ndigits, p->buf + p->pos);
	p->pos += (size_t)ndigits;
	sb_put_utf8(out, cp);
	return true;
}

/* A backslash at the end of a line in a multi-line basic string swallows
 * the newline and all whitespace/newlines after it. Cursor is after '\'. */
static bool try_line_ending_backslash(struct parser *p, bool *done)
{
	size_t i = 0;

	*done = false;
	while (is_ws(peek_at(p, i)))
		i++;
	if (!(peek_at(p, i) == '\n' || (peek_at(p, i) == '\r' && peek_at(p, i + 1) == '\n')))
		return true;
	p->pos += i;
	for (;;) {
		if (at_newline(p))
			eat_newline(p);
		else if (is_ws(peek(p)))
			p->pos++;
		else
			break;
	}
	*done = true;
	return true;
}

/* Cursor is on the character after '\'. */
static bool parse_escape(struct parser *p, bool multiline, struct sbuf *out)
{
	int c = peek(p);
	char d[32];

	if (multiline) {
		bool done;
		if (!try_line_ending_backslash(p, &done))
			return false;
		if (done)
			return true;
	}
	switch (c) {
	case 'b': sb_putc(out, '\b'); break;
	case 't': sb_putc(out, '\t'); break;
	case 'n': sb_putc(out, '\n'); break;
	case 'f': sb_putc(out, '\f'); break;
	case 'r': sb_putc(out, '\r'); break;
	case '"': sb_putc(out, '"'); break;
	case '\\': sb_putc(out, '\\'); break;
	case 'u':
		p->pos++;
		return parse_unicode_escape(p, 4, out);
	case 'U':
		p->pos++;
		return parse_unicode_escape(p, 8, out);
	default:
		describe_here(p, d, sizeof d);
		return fail_at(p, p->line, cur_col(p) - 1,
			       "invalid escape sequence: backslash followed by %s (valid: \\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX \\UXXXXXXXX)", d);
	}
	p->pos++;
	return true;
}

/* Counts the quote characters q starting at the cursor. */
static size_t quote_run(const struct parser *p, int q)
{
	size_t n = 0;
	while (peek_at(p, n) == q)
		n++;
	return n;
}

/* Parses any of the four string kinds; cursor on the opening quote. */
static bool parse_string(struct parser *p, bool allow_multiline, char **s, size_t *len)
{
	int q = peek(p);
	bool basic = q == '"';
	bool multi = allow_multiline && quote_run(p, q) >= 3;
	int line = p->line, col = cur_col(p);
	struct sbuf out = {0};

	p->pos += multi ? 3 : 1;
	if (multi && at_newline(p))
		eat_newline(p);	/* a newline right after the opening quotes is trimmed */
	for (;;) {
		int c = peek(p);
		if (c < 0) {
			fail_at(p, line, col, "unterminated string (missing closing %s)",
				multi ? (basic ? "\"\"\"" : "'''") : (basic ? "\"" : "'"));
			goto fail;
		}
		if (c == q) {
			if (!multi) {
				p->pos++;
				break;
			}
			size_t n = quote_run(p, q);
			if (n < 3) {
				sb_putn(&out, p->buf + p->pos, n);
				p->pos += n;
				continue;
			}
			if (n > 5) {
				fail(p, "too many quotes at the end of a multi-line string");
				goto fail;
			}
			/* up to two quotes may sit right before the closing three */
			sb_putn(&out, p->buf + p->pos, n - 3);
			p->pos += n;
			break;
		}
		if (at_newline(p)) {
			if (!multi) {
				fail(p, "newline in a single-line string (use %s for multi-line strings)",
				     basic ? "\"\"\"" : "'''");
				goto fail;
			}
			eat_newline(p);
			sb_putc(&out, '\n');
			continue;
		}
		if (c == '\\' && basic) {
			p->pos++;
			if (!parse_escape(p, multi, &out))
				goto fail;
			continue;
		}
		if (is_forbidden_control(c)) {
			fail(p, "control character 0x%02x in string (escape it%s)", (unsigned)c,
			     basic ? ", e.g. \\u0001" : " in a \"basic\" string");
			goto fail;
		}
		sb_putc(&out, (char)c);
		p->pos++;
	}
	*s = sb_take(&out, len);
	if (!*s)
		return fail_at(p, line, col, "out of memory");
	return true;
fail:
	free(out.p);
	return false;
}

/* ---- keys ---- */

static bool is_bare_key_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-';
}

static void key_free(struct key *k)
{
	for (int i = 0; i < k->n; i++)
		free(k->part[i].s);
	free(k->part);
	*k = (struct key){0};
}

static bool parse_simple_key(struct parser *p, struct keypart *kp)
{
	int c = peek(p);
	char d[32];

	kp->line = p->line;
	kp->col = cur_col(p);
	if (c == '"' || c == '\'')
		return parse_string(p, false, &kp->s, &kp->len);
	if (!is_bare_key_char(c))
		return fail(p, "expected a key but found %s (bare keys may use A-Z a-z 0-9 _ -; quote other keys)",
			    describe_here(p, d, sizeof d));
	size_t start = p->pos;
	while (is_bare_key_char(peek(p)))
		p->pos++;
	kp->len = p->pos - start;
	kp->s = malloc(kp->len + 1);
	if (!kp->s)
		return fail(p, "out of memory");
	memcpy(kp->s, p->buf + start, kp->len);
	kp->s[kp->len] = '\0';
	return true;
}

/* key = simple-key *( ws "." ws simple-key ) */
static bool parse_key(struct parser *p, struct key *k)
{
	for (;;) {
		skip_ws(p);
		if (k->n > TOML_MAX_DEPTH)
			return fail(p, "key has too many dotted parts (limit %d)", TOML_MAX_DEPTH);
		if (k->n == k->cap) {
			int cap = k->cap ? k->cap * 2 : 4;
			struct keypart *np = realloc(k->part, (size_t)cap * sizeof *np);
			if (!np)
				return fail(p, "out of memory");
			k->part = np;
			k->cap = cap;
		}
		k->part[k->n].s = NULL;
		if (!parse_simple_key(p, &k->part[k->n]))
			return false;
		k->n++;
		skip_ws(p);
		if (peek(p) != '.')
			return true;
		p->pos++;
	}
}

/* ---- numbers and dates ---- */

/* digit *( digit / "_" digit ); returns the number of digits (0: none). */
static size_t digit_run(const char *s, size_t n, size_t *i, int (*digit)(int))
{
	size_t count = 0;

	while (*i < n) {
		if (digit((unsigned char)s[*i]) >= 0) {
			(*i)++;
			count++;
		} else if (s[*i] == '_' && count && *i + 1 < n && digit((unsigned char)s[*i + 1]) >= 0) {
			(*i)++;
		} else {
			break;
		}
	}
	return count;
}

static int dec_digit(int c) { return is_digit(c) ? c - '0' : -1; }
static int oct_digit(int c) { return c >= '0' && c <= '7' ? c - '0' : -1; }
static int bin_digit(int c) { return c == '0' || c == '1' ? c - '0' : -1; }

static bool is_number_char(int c)
{
	return is_bare_key_char(c) || c == '.' || c == '+';
}

/* Accumulates digits (underscores already validated) into a magnitude. */
static bool accumulate(const char *s, size_t n, int (*digit)(int), unsigned base,
		       uint64_t limit, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		int d = digit((unsigned char)s[i]);
		if (d < 0)
			continue;	/* '_' */
		if (v > (limit - (uint64_t)d) / base)
			return false;
		v = v * base + (uint64_t)d;
	}
	*out = v;
	return true;
}

static bool parse_number(struct parser *p, struct node *n)
{
	const char *s = p->buf + p->pos;
	size_t len = 0, i = 0, sign = 0;	/* sign: 1 if there is one */
	bool neg = false, is_float = false;

	while (p->pos + len < p->len && is_number_char((unsigned char)s[len]))
		len++;
	if (len && (s[0] == '+' || s[0] == '-')) {
		sign = 1;
		neg = s[0] == '-';
		i = 1;
	}
	if (len - i == 3 && (memcmp(s + i, "inf", 3) == 0 || memcmp(s + i, "nan", 3) == 0)) {
		n->v.type = TOML_FLOAT;
		n->v.u.fp = s[i] == 'i' ? INFINITY : NAN;
		if (neg)
			n->v.u.fp = -n->v.u.fp;
		p->pos += len;
		return true;
	}
	if (len - i >= 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'o' || s[i + 1] == 'b')) {
		int (*digit)(int) = s[i + 1] == 'x' ? hex_digit : s[i + 1] == 'o' ? oct_digit : bin_digit;
		unsigned base = s[i + 1] == 'x' ? 16 : s[i + 1] == 'o' ? 8 : 2;
		if (sign)
			return fail(p, "a sign is not allowed on hexadecimal, octal or binary integers");
		i += 2;
		size_t start = i;
		if (!digit_run(s, len, &i, digit) || i != len)
			return fail(p, "invalid %s integer '%.*s'", base == 16 ? "hexadecimal" : base == 8 ? "octal" : "binary",
				    (int)(len > 40 ? 40 : len), s);
		uint64_t v;
		if (!accumulate(s + start, len - start, digit, base, INT64_MAX, &v))
			return fail(p, "integer '%.*s' does not fit in 64 bits", (int)(len > 40 ? 40 : len), s);
		n->v.type = TOML_INTEGER;
		n->v.u.integer = (int64_t)v;
		p->pos += len;
		return true;
	}
	size_t int_start = i;
	size_t ndig = digit_run(s, len, &i, dec_digit);
	if (!ndig)
		goto bad;
	if (s[int_start] == '0' && ndig > 1)
		return fail(p, "leading zeros are not allowed in numbers ('%.*s')", (int)(len > 40 ? 40 : len), s);
	size_t int_end = i;
	if (i < len && s[i] == '.') {
		i++;
		if (!digit_run(s, len, &i, dec_digit))
			goto bad;
		is_float = true;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (!digit_run(s, len, &i, dec_digit))
			goto bad;
		is_float = true;
	}
	if (i != len)
		goto bad;
	if (is_float) {
		char small[64], *tmp = len < sizeof small ? small : malloc(len + 1);
		size_t t = 0;
		if (!tmp)
			return fail(p, "out of memory");
		for (size_t k = 0; k < len; k++)
			if (s[k] != '_')
				tmp[t++] = s[k];
		tmp[t] = '\0';
		double d = strtod(tmp, NULL);
		if (tmp != small)
			free(tmp);
		if (isinf(d))
			return fail(p, "float '%.*s' is out of range for a 64-bit float", (int)(len > 40 ? 40 : len), s);
		n->v.type = TOML_FLOAT;
		n->v.u.fp = d;
	} else {
		uint64_t v;
		if (!accumulate(s + int_start, int_end - int_start, dec_digit, 10,
				neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v))
			return fail(p, "integer '%.*s' does not fit in 64 bits", (int)(len > 40 ? 40 : len), s);
		n->v.type = TOML_INTEGER;
		n->v.u.integer = neg ? (int64_t)(0 - v) : (int64_t)v;
	}
	p->pos += len;
	return true;
bad:
	if (!len) {
		char d[32];
		return fail(p, "expected a value but found %s", describe_here(p, d, sizeof d));
	}
	if (sign < len && !is_digit((unsigned char)s[sign]) && s[sign] != '.')
		return fail(p, "invalid value '%.*s' (strings must be quoted: \"...\" or '...')",
			    (int)(len > 40 ? 40 : len), s);
	return fail(p, "invalid number '%.*s'", (int)(len > 40 ? 40 : len), s);
}

/* Reads exactly n digits at offset off; -1 if they are not all there. */
static int fixed_digits(const struct parser *p, size_t off, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		int c = peek_at(p, off + (size_t)i);
		if (!is_digit(c))
			return -1;
		v = v * 10 + (c - '0');
	}
	return v;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* YYYY-MM-DD */
static bool parse_date(struct parser *p, struct toml_datetime *dt)
{
	dt->year = fixed_digits(p, 0, 4);
	dt->month = peek_at(p, 4) == '-' ? fixed_digits(p, 5, 2) : -1;
	dt->day = peek_at(p, 7) == '-' ? fixed_digits(p, 8, 2) : -1;
	if (dt->year < 0 || dt->month < 0 || dt->day < 0)
		return fail(p, "invalid date (expected YYYY-MM-DD)");
	if (dt->month < 1 || dt->month > 12)
		return fail(p, "invalid month %02d in date", dt->month);
	if (dt->day < 1 || dt->day > days_in_month(dt->year, dt->month))
		return fail(p, "invalid day %02d for month %02d of %04d", dt->day, dt->month, dt->year);
	p->pos += 10;
	if (is_digit(peek(p)))
		return fail(p, "invalid date (expected YYYY-MM-DD)");
	return true;
}

/* HH:MM:SS[.fraction] */
static bool parse_time(struct parser *p, struct toml_datetime *dt)
{
	dt->hour = fixed_digits(p, 0, 2);
	dt->minute = peek_at(p, 2) == ':' ? fixed_digits(p, 3, 2) : -1;
	dt->second = peek_at(p, 5) == ':' ? fixed_digits(p, 6, 2) : -1;
	if (dt->hour < 0 || dt->minute < 0 || dt->second < 0)
		return fail(p, "invalid time (expected HH:MM:SS, seconds are required)");
	if (dt->hour > 23 || dt->minute > 59 || dt->second > 59)
		return fail(p, "time %02d:%02d:%02d is out of range", dt->hour, dt->minute, dt->second);
	p->pos += 8;
	if (is_digit(peek(p)))
		return fail(p, "invalid time (expected HH:MM:SS)");
	dt->nanosecond = 0;
	dt->frac_digits = 0;
	if (peek(p) == '.') {
		p->pos++;
		if (!is_digit(peek(p)))
			return fail(p, "expected digits after '.' in time");
		while (is_digit(peek(p))) {
			if (dt->frac_digits < 9)
				dt->nanosecond = dt->nanosecond * 10 + (peek(p) - '0');
			if (dt->frac_digits < 1000)
				dt->frac_digits++;
			p->pos++;
		}
		for (int k = dt->frac_digits; k < 9; k++)
			dt->nanosecond *= 10;
	}
	return true;
}

/* Z, or +HH:MM / -HH:MM; returns false without error if absent. */
static bool parse_offset(struct parser *p, struct toml_datetime *dt, bool *present)
{
	int c = peek(p);

	*present = false;
	if (c == 'Z' || c == 'z') {
		p->pos++;
		dt->offset_minutes = 0;
		*present = true;
		return true;
	}
	if (c != '+' && c != '-')
		return true;
	int h = fixed_digits(p, 1, 2);
	int m = peek_at(p, 3) == ':' ? fixed_digits(p, 4, 2) : -1;
	if (h < 0 || m < 0)
		return fail(p, "invalid time zone offset (expected Z, +HH:MM or -HH:MM)");
	if (h > 23 || m > 59)
		return fail(p, "time zone offset %c%02d:%02d is out of range", c, h, m);
	dt->offset_minutes = (c == '-' ? -1 : 1) * (h * 60 + m);
	p->pos += 6;
	*present = true;
	return true;
}

static bool looks_like_date(const struct parser *p)
{
	return fixed_digits(p, 0, 4) >= 0 && peek_at(p, 4) == '-';
}

static bool looks_like_time(const struct parser *p, size_t off)
{
	return fixed_digits(p, off, 2) >= 0 && peek_at(p, off + 2) == ':';
}

static bool parse_datetime(struct parser *p, struct node *n)
{
	struct toml_datetime *dt = &n->v.u.dt;
	bool has_offset;

	if (!looks_like_date(p)) {
		n->v.type = TOML_TIME_LOCAL;
		return parse_time(p, dt);
	}
	n->v.type = TOML_DATE_LOCAL;
	if (!parse_date(p, dt))
		return false;
	int c = peek(p);
	/* the T may be a space, but only if a time follows */
	if (c == 'T' || c == 't' || (c == ' ' && looks_like_time(p, 1))) {
		p->pos++;
		if (!parse_time(p, dt) || !parse_offset(p, dt, &has_offset))
			return false;
		n->v.type = has_offset ? TOML_DATETIME : TOML_DATETIME_LOCAL;
	}
	return true;
}

/* ---- values ---- */

static struct toml_value *parse_value(struct parser *p, int depth);

static bool match_word(struct parser *p, const char *w)
{
	size_t n = strlen(w);

	if (p->len - p->pos < n || memcmp(p->buf + p->pos, w, n) != 0)
		return false;
	if (is_bare_key_char(peek_at(p, n)))
		return false;
	p->pos += n;
	return true;
}

static struct toml_value *parse_array(struct parser *p, int depth)
{
	struct node *n = new_node(p, TOML_ARRAY, p->line, cur_col(p), depth);
	char d[32];

	if (!n)
		return NULL;
	p->pos++;
	for (;;) {
		if (!skip_ws_newlines_comments(p))
			goto fail;
		if (peek(p) == ']')
			break;
		struct toml_value *item = parse_value(p, depth + 1);
		if (!item || !array_add(p, &n->v, item))
			goto fail;
		if (!skip_ws_newlines_comments(p))
			goto fail;
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == ']')
			break;
		fail(p, "expected ',' or ']' in array but found %s", describe_here(p, d, sizeof d));
		goto fail;
	}
	p->pos++;
	return &n->v;
fail:
	toml_free(&n->v);
	return NULL;
}

/* Walks the dotted prefix of key from table t, creating tables as needed.
 * Dotted keys may only go through tables that dotted keys created (in the
 * same table section or inline table). */
static struct toml_value *walk_dotted(struct parser *p, struct toml_value *t, struct key *k)
{
	char d[96];

	for (int i = 0; i + 1 < k->n; i++) {
		struct keypart *kp = &k->part[i];
		struct toml_kv *kv = table_find(t, kp->s, kp->len);
		if (!kv) {
			t = add_subtable(p, t, kp, NF_DOTTED);
			if (!t)
				return NULL;
			continue;
		}
		struct toml_value *v = kv->val;
		describe_key(kp->s, kp->len, d, sizeof d);
		if (v->type != TOML_TABLE) {
			fail_at(p, kp->line, kp->col, "key \"%s\" is already a %s (line %d), cannot add keys to it",
				d, toml_type_name(v->type), kv->line);
			return NULL;
		}
		if (as_node(v)->flags & NF_INLINE) {
			fail_at(p, kp->line, kp->col, "cannot add keys to inline table \"%s\" (line %d); inline tables are complete once closed",
				d, kv->line);
			return NULL;
		}
		if (!(as_node(v)->flags & NF_DOTTED)) {
			fail_at(p, kp->line, kp->col, "cannot use dotted keys to add to table \"%s\" already defined with a [header] (line %d)",
				d, kv->line);
			return NULL;
		}
		t = v;
	}
	return t;
}

/* key = value, into table t; cursor at the key. */
static bool parse_keyval(struct parser *p, struct toml_value *t)
{
	struct key k = {0};
	char d[96];
	bool ok = false;

	if (!parse_key(p, &k))
		goto out;
	skip_ws(p);
	if (peek(p) != '=') {
		char here[32];
		fail(p, "expected '=' after key but found %s", describe_here(p, here, sizeof here));
		goto out;
	}
	p->pos++;
	skip_ws(p);
	struct toml_value *parent = walk_dotted(p, t, &k);
	if (!parent)
		goto out;
	struct keypart *last = &k.part[k.n - 1];
	struct toml_kv *dup = table_find(parent, last->s, last->len);
	if (dup) {
		fail_at(p, last->line, last->col, "duplicate key \"%s\" (first defined on line %d)",
			describe_key(last->s, last->len, d, sizeof d), dup->line);
		goto out;
	}
	struct toml_value *v = parse_value(p, as_node(parent)->depth + 1);
	if (!v)
		goto out;
	ok = table_add(p, parent, last, v);
out:
	key_free(&k);
	return ok;
}

static struct toml_value *parse_inline_table(struct parser *p, int depth)
{
	struct node *n = new_node(p, TOML_TABLE, p->line, cur_col(p), depth);
	char d[32];

	if (!n)
		return NULL;
	p->pos++;
	skip_ws(p);
	if (peek(p) != '}') {
		for (;;) {
			if (!parse_keyval(p, &n->v))
				goto fail;
			skip_ws(p);
			if (peek(p) == '}')
				break;
			if (peek(p) != ',') {
				if (at_newline(p))
					fail(p, "newline inside inline table (inline tables must be on one line; use a [table] for more)");
				else
					fail(p, "expected ',' or '}' in inline table but found %s", describe_here(p, d, sizeof d));
				goto fail;
			}
			p->pos++;
			skip_ws(p);
			if (peek(p) == '}') {
				fail(p, "trailing comma not allowed in inline table");
				goto fail;
			}
		}
	}
	p->pos++;
	n->flags |= NF_INLINE;
	return &n->v;
fail:
	toml_free(&n->v);
	return NULL;
}

static struct toml_value *parse_value(struct parser *p, int depth)
{
	int line = p->line, col = cur_col(p);
	int c = peek(p);
	struct node *n;

	if (c == '[')
		return parse_array(p, depth);
	if (c == '{')
		return parse_inline_table(p, depth);
	n = new_node(p, TOML_STRING, line, col, depth);
	if (!n)
		return NULL;
	if (c == '"' || c == '\'') {
		if (parse_string(p, true, &n->v.u.str.ptr, &n->v.u.str.len))
			return &n->v;
	} else if (c == 't' && match_word(p, "true")) {
		n->v.type = TOML_BOOL;
		n->v.u.boolean = true;
		return &n->v;
	} else if (c == 'f' && match_word(p, "false")) {
		n->v.type = TOML_BOOL;
		return &n->v;
	} else if (looks_like_date(p) || looks_like_time(p, 0)) {
		if (parse_datetime(p, n))
			return &n->v;
		n->v.type = TOML_INTEGER;	/* nothing to free */
	} else {
		n->v.type = TOML_INTEGER;
		if (parse_number(p, n))
			return &n->v;
	}
	toml_free(&n->v);
	return NULL;
}

/* ---- headers ---- */

/* [a.b.c] or [[a.b.c]]: returns the table that following keys go into. */
static struct toml_value *open_header(struct parser *p, struct toml_value *root, struct key *k, bool aot)
{
	struct toml_value *t = root;
	char d[96];

	for (int i = 0; i + 1 < k->n; i++) {
		struct keypart *kp = &k->part[i];
		struct toml_kv *kv = table_find(t, kp->s, kp->len);
		if (!kv) {
			t = add_subtable(p, t, kp, NF_IMPLICIT);
			if (!t)
				return NULL;
			continue;
		}
		struct toml_value *v = kv->val;
		describe_key(kp->s, kp->len, d, sizeof d);
		if (v->type == TOML_TABLE && (as_node(v)->flags & NF_INLINE)) {
			fail_at(p, kp->line, kp->col, "cannot extend inline table \"%s\" (line %d) with a [header]", d, kv->line);
			return NULL;
		}
		if (v->type == TOML_TABLE) {
			t = v;
		} else if (v->type == TOML_ARRAY && (as_node(v)->flags & NF_AOT)) {
			t = v->u.array.items[v->u.array.len - 1];	/* the latest [[element]] */
		} else {
			fail_at(p, kp->line, kp->col, "key \"%s\" is already a %s (line %d), not a table",
				d, v->type == TOML_ARRAY ? "static array" : toml_type_name(v->type), kv->line);
			return NULL;
		}
	}

	struct keypart *kp = &k->part[k->n - 1];
	int line = kp->line, col = kp->col;
	struct toml_kv *kv = table_find(t, kp->s, kp->len);
	describe_key(kp->s, kp->len, d, sizeof d);
	if (aot) {
		struct toml_value *arr;
		if (!kv) {
			struct node *a = new_node(p, TOML_ARRAY, line, col, as_node(t)->depth + 1);
			if (!a)
				return NULL;
			a->flags = NF_AOT;
			if (!table_add(p, t, kp, &a->v))
				return NULL;
			arr = &a->v;
		} else if (kv->val->type == TOML_ARRAY && (as_node(kv->val)->flags & NF_AOT)) {
			arr = kv->val;
		} else {
			fail_at(p, line, col, "cannot use [[%s]]: \"%s\" is already a %s (line %d)", d, d,
				kv->val->type == TOML_ARRAY ? "static array" : toml_type_name(kv->val->type), kv->line);
			return NULL;
		}
		struct node *elem = new_node(p, TOML_TABLE, line, col, as_node(arr)->depth + 1);
		if (!elem)
			return NULL;
		elem->flags = NF_HEADER;
		if (!array_add(p, arr, &elem->v))
			return NULL;
		return &elem->v;
	}
	if (!kv)
		return add_subtable(p, t, kp, NF_HEADER);
	struct toml_value *v = kv->val;
	unsigned fl = as_node(v)->flags;
	if (v->type != TOML_TABLE) {
		fail_at(p, line, col, "cannot define table [%s]: \"%s\" is already a%s %s (line %d)", d, d,
			v->type == TOML_ARRAY && (fl & NF_AOT) ? "n" : "",
			v->type == TOML_ARRAY && (fl & NF_AOT) ? "array of tables" : toml_type_name(v->type), kv->line);
		return NULL;
	}
	if (fl & NF_INLINE) {
		fail_at(p, line, col, "cannot define table [%s]: it is an inline table (line %d)", d, kv->line);
		return NULL;
	}
	if (fl & NF_HEADER) {
		fail_at(p, line, col, "table [%s] defined twice (first on line %d)", d, v->line);
		return NULL;
	}
	if (fl & NF_DOTTED) {
		fail_at(p, line, col, "cannot define table [%s]: already defined by dotted keys (line %d)", d, kv->line);
		return NULL;
	}
	as_node(v)->flags = (fl & ~(unsigned)NF_IMPLICIT) | NF_HEADER;
	v->line = line;
	v->col = col;
	return v;
}

static struct toml_value *parse_header(struct parser *p, struct toml_value *root)
{
	struct key k = {0};
	bool aot = peek_at(p, 1) == '[';
	struct toml_value *t = NULL;
	char d[32];

	p->pos += aot ? 2 : 1;
	if (!parse_key(p, &k))
		goto out;
	skip_ws(p);
	if (peek(p) != ']' || (aot && peek_at(p, 1) != ']')) {
		fail(p, "expected '%s' to close the table header but found %s", aot ? "]]" : "]",
		     describe_here(p, d, sizeof d));
		goto out;
	}
	p->pos += aot ? 2 : 1;
	t = open_header(p, root, &k, aot);
out:
	key_free(&k);
	return t;
}

/* ---- document ---- */

static bool parse_document(struct parser *p, struct toml_value *root)
{
	struct toml_value *cur = root;

	if (p->len >= 3 && memcmp(p->buf, "\xef\xbb\xbf", 3) == 0)
		p->pos = p->line_start = 3;	/* UTF-8 byte order mark */
	for (;;) {
		skip_ws(p);
		int c = peek(p);
		if (c < 0)
			return true;
		if (c == '[') {
			cur = parse_header(p, root);
			if (!cur || !expect_line_end(p, "table header"))
				return false;
		} else if (c == '#' || at_newline(p)) {
			if (!expect_line_end(p, "comment"))
				return false;
		} else {
			if (!parse_keyval(p, cur) || !expect_line_end(p, "value"))
				return false;
		}
	}
}

struct toml_value *toml_parse(const char *buf, size_t len, struct toml_error *err)
{
	struct toml_error dummy;
	struct parser p = {
		.buf = buf, .len = buf ? len : 0, .line = 1, .err = err ? err : &dummy,
	};
	struct node *root;

	memset(p.err, 0, sizeof *p.err);
	if (!validate_bytes(&p))
		return NULL;
	root = new_node(&p, TOML_TABLE, 1, 1, 0);
	if (!root)
		return NULL;
	root->flags = NF_HEADER;
	if (!parse_document(&p, &root->v)) {
		toml_free(&root->v);
		return NULL;
	}
	return &root->v;
}
