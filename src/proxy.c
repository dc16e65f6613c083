/* The proxy client: URL parsing, HTTP CONNECT and SOCKS5 negotiation on a
 * connected non-blocking socket.
 *
 * The negotiation must leave every byte after the proxy's reply in the
 * socket, since those belong to the transport (a TLS ServerHello, say).
 * SOCKS5 replies have known lengths, so we read exactly them. An HTTP reply
 * ends with an empty line: we peek, find its end, and take exactly that. */
#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "base64.h"
#include "transport.h"

#define HTTP_REPLY_MAX	8192
#define OUT_MAX		2048	/* CONNECT with Basic auth of 255+255 bytes fits */

enum pstate {
	P_START,
	P_SEND,			/* writing out[], then going to p->next */
	P_HTTP_REPLY,
	P_SOCKS_METHOD,
	P_SOCKS_AUTH,
	P_SOCKS_REPLY,
	P_DONE,
	P_FAILED,
};

struct proxy_conn {
	struct proxy_url u;
	char target[NET_HOST_MAX];
	unsigned target_port;
	enum pstate state, next;
	uint8_t out[OUT_MAX];
	size_t out_len, out_off;
	uint8_t in[HTTP_REPLY_MAX];
	size_t in_len;
	char err[320];
};

/* ---- URL parsing ---- */

static int url_error(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int url_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Percent-decodes [s, s + n) into out (cap bytes with the NUL). */
static int percent_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hex_digit((unsigned char)s[i + 1]);
			lo = hex_digit((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = hi << 4 | lo;
			if (c == 0)
				return -1;
			i += 2;
		}
		if (o + 1 >= cap)
			return -2;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static int parse_userinfo(const char *s, size_t n, struct proxy_url *out, char *err,
			  size_t errlen)
{
	const char *colon = memchr(s, ':', n);
	size_t ulen = colon ? (size_t)(colon - s) : n;
	int rc;

	rc = percent_decode(s, ulen, out->user, sizeof out->user);
	if (rc == 0 && colon)
		rc = percent_decode(colon + 1, n - ulen - 1, out->pass, sizeof out->pass);
	if (rc == -1)
		return url_error(err, errlen, "bad percent-encoding in the proxy URL's user or "
				 "password (write %%XX for special characters, e.g. %%40 for @)");
	if (rc == -2)
		return url_error(err, errlen, "the proxy user and password are limited to 255 "
				 "bytes each");
	out->has_auth = out->user[0] || out->pass[0];
	return 0;
}

static int parse_port(const char *s, size_t n, unsigned *port)
{
	unsigned long v = 0;
	size_t i;

	if (n == 0 || n > 5)
		return -1;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

static bool host_chars_ok(const char *h)
{
	for (; *h; h++)
		if (!isalnum((unsigned char)*h) && *h != '.' && *h != '-' && *h != '_')
			return false;
	return true;
}

/* "host", "host:port", "[v6]", "[v6]:port" */
static int parse_hostport(const char *s, size_t n, struct proxy_url *out, char *err,
			  size_t errlen)
{
	const char *h = s, *hend, *port = NULL, *end = s + n;
	unsigned char tmp[16];
	bool v6 = false;

	if (n && *s == '[') {
		hend = memchr(s, ']', n);
		if (!hend)
			return url_error(err, errlen, "the proxy URL has a '[' without ']'");
		h = s + 1;
		v6 = true;
		if (hend + 1 < end) {
			if (hend[1] != ':')
				return url_error(err, errlen, "unexpected text after ']' in the proxy URL");
			port = hend + 2;
		}
	} else {
		hend = memchr(s, ':', n);
		if (hend) {
			port = hend + 1;
			if (memchr(port, ':', (size_t)(end - port)))
				return url_error(err, errlen, "an IPv6 proxy address must be written in "
						 "brackets: http://[::1]:8080");
		} else {
			hend = end;
		}
	}
	if (hend == h)
		return url_error(err, errlen, "the proxy URL has no host");
	if ((size_t)(hend - h) >= sizeof out->host)
		return url_error(err, errlen, "the proxy host name is too long");
	memcpy(out->host, h, (size_t)(hend - h));
	out->host[hend - h] = '\0';
	if (v6 ? inet_pton(AF_INET6, out->host, tmp) != 1 : !host_chars_ok(out->host))
		return url_error(err, errlen, "\"%s\" is not a valid proxy host", out->host);
	if (port && parse_port(port, (size_t)(end - port), &out->port) < 0)
		return url_error(err, errlen, "the proxy port must be a number from 1 to 65535");
	snprintf(out->hostport, sizeof out->hostport, v6 ? "[%s]:%u" : "%s:%u", out->host,
		 out->port);
	return 0;
}

int proxy_parse_url(const char *url, struct proxy_url *out, char *err, size_t errlen)
{
	const char *sep = strstr(url, "://"), *auth, *aend, *at;
	size_t slen;

	memset(out, 0, sizeof *out);
	if (!sep)
		return url_error(err, errlen, "the proxy \"%s\" is not a URL: write "
				 "http://host:port or socks5://host:port", url);
	slen = (size_t)(sep - url);
	if (slen == 4 && strncasecmp(url, "http", 4) == 0) {
		out->kind = PROXY_HTTP;
		out->port = 80;
	} else if (slen == 6 && strncasecmp(url, "socks5", 6) == 0) {
		out->kind = PROXY_SOCKS5;
		out->port = 1080;
	} else {
		return url_error(err, errlen, "unknown proxy scheme \"%.*s\": use http or socks5",
				 (int)(slen > 32 ? 32 : slen), url);
	}
	auth = sep + 3;
	aend = auth + strcspn(auth, "/?#");
	if (*aend && strcmp(aend, "/") != 0)
		return url_error(err, errlen, "the proxy URL must not have a path, query or "
				 "fragment: write %.*s://host:port", (int)slen, url);
	at = NULL;
	for (const char *c = auth; c < aend; c++)
		if (*c == '@')
			at = c;
	if (at) {
		if (parse_userinfo(auth, (size_t)(at - auth), out, err, errlen) < 0)
			return -1;
		auth = at + 1;
	}
	return parse_hostport(auth, (size_t)(aend - auth), out, err, errlen);
}

/* ---- negotiation ---- */

struct proxy_conn *proxy_conn_new(const struct proxy_url *u, const char *target_host,
				  unsigned target_port)
{
	struct proxy_conn *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->u = *u;
	snprintf(p->target, sizeof p->target, "%s", target_host);
	p->target_port = target_port;
	return p;
}

void proxy_conn_free(struct proxy_conn *p)
{
	if (!p)
		return;
	/* The credentials do not outlive the negotiation in memory. */
	explicit_bzero(p, sizeof *p);
	free(p);
}

const char *proxy_conn_error(const struct proxy_conn *p)
{
	return p->err;
}

static int fail(struct proxy_conn *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(struct proxy_conn *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(p->err, sizeof p->err, "proxy %s ", p->u.hostport);
	va_start(ap, fmt);
	vsnprintf(p->err + n, sizeof p->err - (size_t)n, fmt, ap);
	va_end(ap);
	p->state = P_FAILED;
	return ST_ERROR;
}

static void queue_out(struct proxy_conn *p, size_t len, enum pstate next)
{
	p->out_len = len;
	p->out_off = 0;
	p->in_len = 0;
	p->state = P_SEND;
	p->next = next;
}

static int send_out(struct proxy_conn *p, int fd, uint32_t *want)
{
	while (p->out_off < p->out_len) {
		ssize_t n = send(fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			*want = EPOLLOUT;
			return ST_AGAIN;
		}
		if (n < 0)
			return fail(p, "(sending our request): %s", strerror(errno));
		p->out_off += (size_t)n;
	}
	p->state = p->next;
	return 0;
}

static int read_failed(struct proxy_conn *p, ssize_t n)
{
	if (n == 0)
		return fail(p, "closed the connection during the negotiation (is it a%s proxy?)",
			    p->u.kind == PROXY_HTTP ? "n HTTP" : " SOCKS5");
	return fail(p, "(reading its answer): %s", strerror(errno));
}

/* Reads until in[] holds need bytes; never more. 1 when there, else ST_*. */
static int read_exact(struct proxy_conn *p, int fd, size_t need, uint32_t *want)
{
	while (p->in_len < need) {
		ssize_t n = recv(fd, p->in + p->in_len, need - p->in_len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			*want = EPOLLIN;
			return ST_AGAIN;
		}
		if (n <= 0)
			return read_failed(p, n);
		p->in_len += (size_t)n;
	}
	return 1;
}

/* ---- HTTP CONNECT ---- */

static void target_hostport(const struct proxy_conn *p, char *buf, size_t cap)
{
	snprintf(buf, cap, strchr(p->target, ':') ? "[%s]:%u" : "%s:%u", p->target,
		 p->target_port);
}

static int http_request(struct proxy_conn *p)
{
	char hp[NET_HOST_MAX + 8], cred[512], b64[BASE64_ENCODED_LEN(511) + 1];
	int n, m = 0;

	target_hostport(p, hp, sizeof hp);
	n = snprintf((char *)p->out, sizeof p->out, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", hp, hp);
	if (p->u.has_auth) {
		m = snprintf(cred, sizeof cred, "%s:%s", p->u.user, p->u.pass);
		base64_encode((const uint8_t *)cred, (size_t)m, b64);
		explicit_bzero(cred, sizeof cred);
		n += snprintf((char *)p->out + n, sizeof p->out - (size_t)n,
			      "Proxy-Authorization: Basic %s\r\n", b64);
		explicit_bzero(b64, sizeof b64);
	}
	n += snprintf((char *)p->out + n, sizeof p->out - (size_t)n, "\r\n");
	queue_out(p, (size_t)n, P_HTTP_REPLY);
	return 0;
}

/* The end of the header block in in[0..len) (index after the empty line),
 * searching from from; 0 when not there yet. Accepts bare LF lines too. */
static size_t http_head_end(const uint8_t *b, size_t from, size_t len)
{
	size_t i;

	for (i = from; i < len; i++) {
		if (b[i] != '\n')
			continue;
		if (i >= 1 && b[i - 1] == '\n')
			return i + 1;
		if (i >= 2 && b[i - 1] == '\r' && b[i - 2] == '\n')
			return i + 1;
	}
	return 0;
}

static int http_check_status(struct proxy_conn *p)
{
	const char *line = (const char *)p->in;
	size_t ll = strcspn(line, "\r\n"), i;
	char reason[81];
	int code, n = 0;

	if (ll < 12 || strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[7]) ||
	    line[8] != ' ' || !isdigit((unsigned char)line[9]) ||
	    !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]) ||
	    (ll > 12 && line[12] != ' '))
		return fail(p, "did not answer CONNECT in HTTP (is it an HTTP proxy?)");
	code = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	for (i = 12; i < ll && line[i] == ' '; i++)
		;
	for (; i < ll && n < (int)sizeof reason - 1; i++)
		reason[n++] = isprint((unsigned char)line[i]) ? line[i] : '?';
	reason[n] = '\0';
	if (code >= 200 && code <= 299)
		return 0;
	if (code == 407 || code == 401)	/* tinyproxy says 401 to wrong credentials */
		return fail(p, "refused CONNECT: HTTP %d %s (%s)", code, reason,
			    p->u.has_auth ? "check the user and password in the proxy URL"
					  : "it wants credentials: http://user:password@host:port");
	return fail(p, "refused CONNECT: HTTP %d %s", code, reason);
}

/* Peeks at what has arrived, then takes exactly the bytes of the header. */
static int http_read_reply(struct proxy_conn *p, int fd, uint32_t *want)
{
	for (;;) {
		size_t room = sizeof p->in - 1 - p->in_len, end, take;
		size_t from = p->in_len > 2 ? p->in_len - 2 : 0;
		ssize_t n;

		if (room == 0)
			return fail(p, "sent a reply header larger than %d bytes", HTTP_REPLY_MAX - 1);
		do
			n = recv(fd, p->in + p->in_len, room, MSG_PEEK);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno == EAGAIN) {
			*want = EPOLLIN;
			return ST_AGAIN;
		}
		if (n <= 0)
			return read_failed(p, n);
		end = http_head_end(p->in, from, p->in_len + (size_t)n);
		/* Without the end yet, all peeked bytes belong to the header. */
		take = end ? end - p->in_len : (size_t)n;
		do
			n = recv(fd, p->in + p->in_len, take, 0);
		while (n < 0 && errno == EINTR);
		if (n != (ssize_t)take)
			return fail(p, "(reading its answer): %s", n < 0 ? strerror(errno)
								     : "short read");
		p->in_len += take;
		if (end) {
			p->in[p->in_len] = '\0';
			return http_check_status(p) < 0 ? ST_ERROR : 1;
		}
	}
}

/* ---- SOCKS5 ---- */

static int socks_greeting(struct proxy_conn *p)
{
	uint8_t *o = p->out;

	o[0] = 5;
	if (p->u.has_auth) {
		o[1] = 2;
		o[2] = 0;	/* no authentication */
		o[3] = 2;	/* username/password */
		queue_out(p, 4, P_SOCKS_METHOD);
	} else {
		o[1] = 1;
		o[2] = 0;
		queue_out(p, 3, P_SOCKS_METHOD);
	}
	return 0;
}

static int socks_auth_request(struct proxy_conn *p)
{
	size_t ul = strlen(p->u.user), pl = strlen(p->u.pass);
	uint8_t *o = p->out;

	o[0] = 1;
	o[1] = (uint8_t)ul;
	memcpy(o + 2, p->u.user, ul);
	o[2 + ul] = (uint8_t)pl;
	memcpy(o + 3 + ul, p->u.pass, pl);
	queue_out(p, 3 + ul + pl, P_SOCKS_AUTH);
	return 0;
}

static int socks_connect_request(struct proxy_conn *p)
{
	uint8_t *o = p->out;
	size_t n = 4, hl = strlen(p->target);

	o[0] = 5;
	o[1] = 1;	/* CONNECT */
	o[2] = 0;
	if (inet_pton(AF_INET, p->target, o + 4) == 1) {
		o[3] = 1;
		n += 4;
	} else if (inet_pton(AF_INET6, p->target, o + 4) == 1) {
		o[3] = 4;
		n += 16;
	} else {
		if (hl == 0 || hl > 255)
			return fail(p, "cannot be asked for \"%s\": a SOCKS5 host name is 1 to 255 "
				    "bytes", p->target);
		o[3] = 3;
		o[4] = (uint8_t)hl;
		memcpy(o + 5, p->target, hl);
		n += 1 + hl;
	}
	o[n++] = (uint8_t)(p->target_port >> 8);
	o[n++] = (uint8_t)p->target_port;
	queue_out(p, n, P_SOCKS_REPLY);
	return 0;
}

static int socks_method_reply(struct proxy_conn *p)
{
	if (p->in[0] != 5)
		return fail(p, "did not answer in SOCKS5 (is it a SOCKS5 proxy?)");
	if (p->in[1] == 0)
		return socks_connect_request(p);
	if (p->in[1] == 2 && p->u.has_auth)
		return socks_auth_request(p);
	if (p->in[1] == 2 || p->in[1] == 0xff)
		return fail(p, "wants %s: %s", p->u.has_auth ? "an authentication method we do "
			    "not have" : "a user and password",
			    p->u.has_auth ? "only no-auth and user/password are supported"
					  : "socks5://user:password@host:port");
	return fail(p, "chose an authentication method we did not offer (%u)", p->in[1]);
}

static int socks_auth_reply(struct proxy_conn *p)
{
	if (p->in[1] != 0)
		return fail(p, "rejected the user and password (check them in the proxy URL)");
	return socks_connect_request(p);
}

static const char *socks_reply_text(unsigned rep)
{
	static const char *const text[] = {
		"succeeded",
		"general SOCKS server failure",
		"connection not allowed by ruleset",
		"network unreachable",
		"host unreachable",
		"connection refused by destination host",
		"TTL expired",
		"command not supported",
		"address type not supported",
	};

	return rep < sizeof text / sizeof text[0] ? text[rep] : "unknown error";
}

/* The reply's length depends on its address type: read its head, then
 * exactly the rest. 1 when complete, else ST_*. */
static int socks_read_reply(struct proxy_conn *p, int fd, uint32_t *want)
{
	size_t need = 4;
	int rc = read_exact(p, fd, need, want);

	if (rc != 1)
		return rc;
	if (p->in[0] != 5)
		return fail(p, "did not answer in SOCKS5 (is it a SOCKS5 proxy?)");
	if (p->in[1] != 0) {
		char hp[NET_HOST_MAX + 8];

		target_hostport(p, hp, sizeof hp);
		return fail(p, "could not connect to %s: %s (SOCKS5 reply %u)", hp,
			    socks_reply_text(p->in[1]), p->in[1]);
	}
	switch (p->in[3]) {
	case 1:
		need = 4 + 4 + 2;
		break;
	case 4:
		need = 4 + 16 + 2;
		break;
	case 3:
		rc = read_exact(p, fd, 5, want);
		if (rc != 1)
			return rc;
		need = 5 + p->in[4] + 2;
		break;
	default:
		return fail(p, "answered with an unknown address type %u", p->in[3]);
	}
	return read_exact(p, fd, need, want);
}

/* ---- the state machine ---- */

int proxy_conn_step(struct proxy_conn *p, int fd, uint32_t *want)
{
	int rc;

	for (;;) {
		switch (p->state) {
		case P_START:
			rc = p->u.kind == PROXY_HTTP ? http_request(p) : socks_greeting(p);
			break;
		case P_SEND:
			rc = send_out(p, fd, want);
			break;
		case P_HTTP_REPLY:
			rc = http_read_reply(p, fd, want);
			if (rc == 1)
				p->state = P_DONE;
			break;
		case P_SOCKS_METHOD:
			rc = read_exact(p, fd, 2, want);
			if (rc == 1)
				rc = socks_method_reply(p);
			break;
		case P_SOCKS_AUTH:
			rc = read_exact(p, fd, 2, want);
			if (rc == 1)
				rc = socks_auth_reply(p);
			break;
		case P_SOCKS_REPLY:
			rc = socks_read_reply(p, fd, want);
			if (rc == 1)
				p->state = P_DONE;
			break;
		case P_DONE:
			return 0;
		default:
			return ST_ERROR;
		}
		if (rc < 0)
			return rc;
	}
}
