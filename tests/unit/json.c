#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jp {
	const char *p, *end;
	int depth;
};

static struct json *parse_value(struct jp *jp);

static void skip_ws(struct jp *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

static struct json *new_node(enum json_type t)
{
	struct json *j = calloc(1, sizeof *j);

	if (!j)
		abort();
	j->type = t;
	return j;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
		else return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) { o[0] = (char)cp; return 1; }
	if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63));
		o[2] = (char)(0x80 | (cp & 63)); return 3;
	}
	o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
	o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
	return 4;
}

/* jp->p is on the opening quote. */
static char *parse_string(struct jp *jp, size_t *outlen)
{
	const char *s = ++jp->p;
	char *out, *o;

	while (jp->p < jp->end && *jp->p != '"')
		jp->p += (*jp->p == '\\') ? 2 : 1;
	if (jp->p >= jp->end)
		return NULL;
	out = o = malloc((size_t)(jp->p - s) + 1);
	if (!out)
		abort();
	for (const char *q = s; q < jp->p; q++) {
		unsigned cp, lo;

		if (*q != '\\') {
			*o++ = *q;
			continue;
		}
		switch (*++q) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (jp->p - q < 5 || hex4(q + 1, &cp) < 0)
				goto bad;
			q += 4;
			if (cp >= 0xD800 && cp < 0xDC00 && jp->p - q >= 7 && q[1] == '\\' &&
			    q[2] == 'u' && hex4(q + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				q += 6;
			}
			o += put_utf8(o, cp);
			break;
		default:
			goto bad;
		}
	}
	*o = '\0';
	*outlen = (size_t)(o - out);
	jp->p++;
	return out;
bad:
	free(out);
	return NULL;
}

static void push(struct json *j, char *key, struct json *item)
{
	if ((j->len & (j->len - 1)) == 0 || j->len == 0) {
		size_t cap = j->len ? j->len * 2 : 4;
		j->items = realloc(j->items, cap * sizeof *j->items);
		if (j->type == JSON_OBJECT)
			j->keys = realloc(j->keys, cap * sizeof *j->keys);
		if (!j->items || (j->type == JSON_OBJECT && !j->keys))
			abort();
	}
	if (j->type == JSON_OBJECT)
		j->keys[j->len] = key;
	j->items[j->len++] = item;
}

static struct json *parse_container(struct jp *jp, enum json_type t)
{
	char close = t == JSON_OBJECT ? '}' : ']';
	struct json *j = new_node(t);

	jp->p++;
	skip_ws(jp);
	if (jp->p < jp->end && *jp->p == close) {
		jp->p++;
		return j;
	}
	for (;;) {
		char *key = NULL;
		struct json *v;
		size_t klen;

		skip_ws(jp);
		if (t == JSON_OBJECT) {
			if (jp->p >= jp->end || *jp->p != '"' || !(key = parse_string(jp, &klen)))
				goto bad;
			skip_ws(jp);
			if (jp->p >= jp->end || *jp->p++ != ':') {
				free(key);
				goto bad;
			}
		}
		v = parse_value(jp);
		if (!v) {
			free(key);
			goto bad;
		}
		push(j, key, v);
		skip_ws(jp);
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == close) {
			jp->p++;
			return j;
		}
		goto bad;
	}
bad:
	json_free(j);
	return NULL;
}

static struct json *parse_value(struct jp *jp)
{
	struct json *j;

	skip_ws(jp);
	if (jp->p >= jp->end || ++jp->depth > 200)
		return NULL;
	switch (*jp->p) {
	case '{':
		j = parse_container(jp, JSON_OBJECT);
		break;
	case '[':
		j = parse_container(jp, JSON_ARRAY);
		break;
	case '"':
		j = new_node(JSON_STRING);
		if (!(j->str = parse_string(jp, &j->len))) {
			free(j);
			j = NULL;
		}
		break;
	default:
		if (jp->end - jp->p >= 4 && !memcmp(jp->p, "true", 4)) {
			j = new_node(JSON_BOOL); j->boolean = 1; jp->p += 4;
		} else if (jp->end - jp->p >= 5 && !memcmp(jp->p, "false", 5)) {
			j = new_node(JSON_BOOL); jp->p += 5;
		} else if (jp->end - jp->p >= 4 && !memcmp(jp->p, "null", 4)) {
			j = new_node(JSON_NULL); jp->p += 4;
		} else {
			const char *s = jp->p;
			while (jp->p < jp->end && strchr("+-0123456789.eE", *jp->p))
				jp->p++;
			if (jp->p == s)
				return NULL;
			j = new_node(JSON_NUMBER);
			j->len = (size_t)(jp->p - s);
			j->str = strndup(s, j->len);
		}
	}
	jp->depth--;
	return j;
}

struct json *json_parse(const char *text, size_t len)
{
	struct jp jp = { text, text + len, 0 };
	struct json *j = parse_value(&jp);

	skip_ws(&jp);
	if (j && jp.p != jp.end) {
		json_free(j);
		j = NULL;
	}
	if (!j)
		fprintf(stderr, "json: syntax error near offset %ld\n", (long)(jp.p - text));
	return j;
}

char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		if (r == 0)
			break;
		n += r;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

struct json *json_load_file(const char *path)
{
	size_t len;
	char *text = read_file(path, &len);
	struct json *j;

	if (!text) {
		fprintf(stderr, "json: cannot read %s\n", path);
		return NULL;
	}
	j = json_parse(text, len);
	free(text);
	return j;
}

void json_free(struct json *j)
{
	if (!j)
		return;
	if (j->type == JSON_ARRAY || j->type == JSON_OBJECT) {
		for (size_t i = 0; i < j->len; i++) {
			if (j->keys)
				free(j->keys[i]);
			json_free(j->items[i]);
		}
	}
	free(j->keys);
	free(j->items);
	free(j->str);
	free(j);
}

struct json *json_get(const struct json *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->len; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}
