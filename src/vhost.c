/* Virtual hosts: Host and SNI from the first bytes of a connection, and the
 * matching of names (see vhost.h). Every read is checked against the bytes
 * at hand; nothing here allocates or keeps state between calls, so a head
 * that arrives in pieces is simply parsed again from its start (it is at
 * most a few tens of KiB, and a visitor sends it once). */
#include "vhost.h"

#include <string.h>
#include <strings.h>

/* ---- names ---- */

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

int vhost_normalize(const char *in, size_t len, bool port_allowed, char *out)
{
	size_t label = 0;

	if (port_allowed) {
		const char *colon = memchr(in, ':', len);

		/* an IP literal in brackets never names a virtual host */
		if (len && in[0] == '[')
			return -1;
		if (colon) {
			size_t plen = len - (size_t)(colon - in) - 1;

			if (plen == 0 || plen > 5)
				return -1;
			for (size_t i = 0; i < plen; i++)
				if (colon[1 + i] < '0' || colon[1 + i] > '9')
					return -1;
			len = (size_t)(colon - in);
		}
	}
	if (len && in[len - 1] == '.')
		len--;
	if (len == 0 || len > VHOST_NAME_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = lower(in[i]);

		if (c == '.') {
			if (label == 0)
				return -1;	/* an empty label */
			label = 0;
		} else if (!name_char(c) || ++label > 63) {
			return -1;
		}
		out[i] = c;
	}
	if (label == 0)
		return -1;
	out[len] = '\0';
	return (int)len;
}

int vhost_pattern_check(const char *in, char *out, const char **why)
{
	size_t len = strlen(in);
	bool wild = len >= 2 && in[0] == '*' && in[1] == '.';
	const char *rest = wild ? in + 2 : in;

	if (strcmp(in, "*") == 0 || strcmp(in, "*.") == 0) {
		*why = "a wildcard needs a domain after it, e.g. \"*.example.com\"";
		return -1;
	}
	if (strchr(rest, '*')) {
		*why = "a wildcard is only allowed as the whole first label, e.g. \"*.example.com\"";
		return -1;
	}
	if (strchr(rest, ':')) {
		*why = "write the name without a port (the listener's port applies)";
		return -1;
	}
	if (vhost_normalize(rest, strlen(rest), false, out + (wild ? 2 : 0)) < 0 ||
	    (wild && strlen(rest) + 2 > VHOST_NAME_MAX)) {
		*why = "not a host name (letters, digits, '-', '_' in dot-separated labels of at "
		       "most 63 characters, 253 in all)";
		return -1;
	}
	if (wild)
		memcpy(out, "*.", 2);
	return 0;
}

int vhost_match(const char *pattern, const char *host)
{
	size_t plen, hlen;

	if (pattern[0] != '*')
		return strcmp(pattern, host) == 0 ? VHOST_NAME_MAX + 1 : -1;
	/* "*.suffix": the host ends with ".suffix" after one label or more */
	plen = strlen(pattern + 1);
	hlen = strlen(host);
	if (hlen <= plen || strcmp(host + hlen - plen, pattern + 1) != 0)
		return -1;
	return (int)plen - 1;
}

/* ---- HTTP/1.x ---- */

/* The next line from *pos (without its CR LF or LF); false while it has
 * not fully arrived. */
static bool next_line(const uint8_t *p, size_t len, size_t *pos, const char **line,
		      size_t *llen)
{
	const uint8_t *nl = memchr(p + *pos, '\n', len - *pos);
	size_t n;

	if (!nl)
		return false;
	*line = (const char *)p + *pos;
	n = (size_t)(nl - (p + *pos));
	if (n && (*line)[n - 1] == '\r')
		n--;
	*llen = n;
	*pos = (size_t)(nl - p) + 1;
	return true;
}

/* RFC 9110 token characters, those a method is made of. */
static bool tchar(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* What a request line says: BAD, MORE (fine so far), or FOUND when its
 * target is absolute-form (the authority is the host). */
static enum vhost_result request_line(const char *l, size_t n, bool complete, char *name)
{
	const char *sp1, *sp2, *t, *end;
	size_t i;

	for (i = 0; i < n && l[i] != ' '; i++)
		if (!tchar(l[i]))
			return VHOST_BAD;
	if (!complete)
		return VHOST_MORE;
	sp1 = memchr(l, ' ', n);
	if (!sp1 || sp1 == l)
		return VHOST_BAD;
	t = sp1 + 1;
	sp2 = memchr(t, ' ', (size_t)(l + n - t));
	if (!sp2 || sp2 == t || (size_t)(l + n - sp2) != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    sp2[8] < '0' || sp2[8] > '9')
		return VHOST_BAD;
	if ((size_t)(sp2 - t) > 7 && strncasecmp(t, "http://", 7) == 0)
		t += 7;
	else if ((size_t)(sp2 - t) > 8 && strncasecmp(t, "https://", 8) == 0)
		t += 8;
	else
		return VHOST_MORE;
	for (end = t; end < sp2 && *end != '/' && *end != '?' && *end != '#'; end++)
		if (*end == '@')
			t = end + 1;	/* userinfo@ */
	return vhost_normalize(t, (size_t)(end - t), true, name) < 0 ? VHOST_NONE : VHOST_FOUND;
}

enum vhost_result vhost_http_host(const uint8_t *p, size_t len, char *name)
{
	bool capped = len >= VHOST_HTTP_HEAD_MAX;
	size_t pos = 0, n;
	const char *l;
	enum vhost_result r;
	int blank = 0;

	if (capped)
		len = VHOST_HTTP_HEAD_MAX;
	/* a few empty lines may come before the request line (RFC 9112 2.2) */
	for (;;) {
		size_t start = pos;

		if (!next_line(p, len, &pos, &l, &n)) {
			r = request_line((const char *)p + start, len - start, false, name);
			return r != VHOST_MORE ? r : capped ? VHOST_TOO_BIG : VHOST_MORE;
		}
		if (n || ++blank > 4)
			break;
	}
	r = request_line(l, n, true, name);
	if (r != VHOST_MORE)
		return r;
	while (next_line(p, len, &pos, &l, &n)) {
		const char *v, *e;

		if (n == 0)
			return VHOST_NONE;	/* the end of the head, and no Host */
		if (n < 5 || strncasecmp(l, "host:", 5) != 0)
			continue;		/* another field, or a continuation */
		v = l + 5;
		e = l + n;
		while (v < e && (*v == ' ' || *v == '\t'))
			v++;
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		return vhost_normalize(v, (size_t)(e - v), true, name) < 0 ? VHOST_NONE : VHOST_FOUND;
	}
	return capped ? VHOST_TOO_BIG : VHOST_MORE;
}

/* ---- TLS ---- */

#define TLS_RECORD_HANDSHAKE	22
#define TLS_HANDSHAKE_CLIENT_HELLO 1
#define TLS_EXT_SERVER_NAME	0
#define TLS_RECORD_MAX		16384	/* plaintext fragment, RFC 8446 5.1 */

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* The server_name extension's body: the first host_name entry. */
static enum vhost_result server_name(const uint8_t *p, size_t n, char *name)
{
	size_t off = 2, list;

	if (n < 2 || (list = be16(p)) > n - 2)
		return VHOST_BAD;
	n = 2 + list;
	while (off + 3 <= n) {
		unsigned type = p[off];
		size_t len = be16(p + off + 1);

		off += 3;
		if (len > n - off)
			return VHOST_BAD;
		if (type == 0)
			return vhost_normalize((const char *)p + off, len, false, name) < 0 ?
			       VHOST_NONE : VHOST_FOUND;
		off += len;
	}
	return VHOST_NONE;
}

/* A whole ClientHello body (after its 4-byte handshake header). */
static enum vhost_result client_hello(const uint8_t *b, size_t n, char *name)
{
	size_t off = 34, ext_end;	/* legacy_version, random */

	if (off + 1 > n || b[off] > 32)
		return VHOST_BAD;
	off += 1 + b[off];			/* legacy_session_id */
	if (off + 2 > n)
		return VHOST_BAD;
	off += 2 + be16(b + off);		/* cipher_suites */
	if (off + 1 > n)
		return VHOST_BAD;
	off += 1 + b[off];			/* legacy_compression_methods */
	if (off > n)
		return VHOST_BAD;
	if (off == n)
		return VHOST_NONE;		/* no extensions at all */
	if (off + 2 > n || be16(b + off) > n - off - 2)
		return VHOST_BAD;
	ext_end = off + 2 + be16(b + off);
	off += 2;
	while (off + 4 <= ext_end) {
		unsigned type = be16(b + off);
		size_t len = be16(b + off + 2);

		off += 4;
		if (len > ext_end - off)
			return VHOST_BAD;
		if (type == TLS_EXT_SERVER_NAME)
			return server_name(b + off, len, name);
		off += len;
	}
	return VHOST_NONE;
}

enum vhost_result vhost_tls_sni(const uint8_t *p, size_t len, char *name)
{
	uint8_t msg[4 + VHOST_TLS_HELLO_MAX];
	bool capped = len >= VHOST_TLS_HEAD_MAX;
	size_t pos = 0, have = 0, need = 4;

	if (capped)
		len = VHOST_TLS_HEAD_MAX;
	/* the handshake message, gathered from as many records as it spans */
	while (have < need) {
		size_t rlen, take;

		if (len - pos < 5)
			return capped ? VHOST_TOO_BIG : VHOST_MORE;
		rlen = be16(p + pos + 3);
		if (p[pos] != TLS_RECORD_HANDSHAKE || p[pos + 1] != 3 || rlen == 0 ||
		    rlen > TLS_RECORD_MAX)
			return VHOST_BAD;
		pos += 5;
		take = len - pos < rlen ? len - pos : rlen;
		if (take > sizeof msg - have)
			take = sizeof msg - have;
		memcpy(msg + have, p + pos, take);
		have += take;
		pos += take;
		if (have >= 4 && need == 4) {
			size_t mlen = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];

			if (msg[0] != TLS_HANDSHAKE_CLIENT_HELLO)
				return VHOST_BAD;
			if (mlen > VHOST_TLS_HELLO_MAX)
				return VHOST_TOO_BIG;
			need = 4 + mlen;
		}
		if (take < rlen && have < need)
			return capped ? VHOST_TOO_BIG : VHOST_MORE;	/* the record is still arriving */
	}
	return client_hello(msg + 4, need - 4, name);
}
