#include "api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dashboard.h"
#include "events.h"
#include "fds.h"
#include "list.h"
#include "log.h"
#include "net.h"
#include "secmem.h"
#include "sha256.h"

#define API_MAX_CONNS	64
#define API_TIMEOUT_MS	5000

struct api {
	struct loop *loop;
	int lfd;
	struct watcher lw;
	/* the token's digest: comparing digests takes the same time whatever
	 * the length of the token or of the guess */
	bool has_token;
	uint8_t token_digest[SHA256_LEN];
	char **hosts;
	size_t nhosts;
	struct api_hooks hooks;
	void *arg;
	struct list conns;
	size_t nconns;
};

enum astate { A_READ, A_WRITE, A_LINGER };

struct apiconn {
	struct list link;
	struct api *api;
	int fd;
	struct watcher w;
	struct timer deadline;
	enum astate state;
	char *in;			/* the request: HTTP_MAX_REQUEST, then grown */
	size_t inlen, incap;		/* to its header block and body */
	struct buf out;
	size_t outoff;
};

/* ---- parsing ---- */

static const char *find_crlf2(const char *buf, size_t len)
{
	for (size_t i = 0; i + 3 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
			return buf + i;
	return NULL;
}

static bool is_token_char(char c)
{
	return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static int parse_request_line(const char *p, const char *eol, struct http_request *req,
			      int *status)
{
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p)), *sp2;
	size_t n;

	if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof req->method)
		goto bad;
	for (const char *q = p; q < sp1; q++)
		if (!is_token_char(*q))
			goto bad;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1)
		goto bad;
	n = (size_t)(sp2 - sp1 - 1);
	if (n >= sizeof req->path) {
		*status = 414;
		return -1;
	}
	if ((size_t)(eol - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		*status = (size_t)(eol - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/", 5) == 0 ? 505 : 400;
		return -1;
	}
	if (sp2[8] != '0' && sp2[8] != '1') {
		*status = 505;
		return -1;
	}
	memcpy(req->method, p, (size_t)(sp1 - p));
	req->method[sp1 - p] = '\0';
	memcpy(req->path, sp1 + 1, n);
	req->path[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)req->path[i] <= 32 || req->path[i] == 127)
			goto bad;
	return 0;
bad:
	*status = 400;
	return -1;
}

static int parse_header(const char *p, const char *eol, struct http_request *req, int *status)
{
	const char *colon = memchr(p, ':', (size_t)(eol - p)), *v;
	size_t nlen;

	if (!colon || colon == p)
		goto bad;
	for (const char *q = p; q < colon; q++)
		if (!is_token_char(*q))
			goto bad;
	nlen = (size_t)(colon - p);
	v = colon + 1;
	while (v < eol && (*v == ' ' || *v == '\t'))
		v++;
	while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t'))
		eol--;
	if (nlen == 13 && strncasecmp(p, "authorization", 13) == 0) {
		req->auth = v;
		req->auth_len = (size_t)(eol - v);
	} else if (nlen == 4 && strncasecmp(p, "host", 4) == 0) {
		if (req->host)
			goto bad;	/* two Host headers: which one would count? */
		req->host = v;
		req->host_len = (size_t)(eol - v);
	} else if (nlen == 6 && strncasecmp(p, "origin", 6) == 0) {
		if (req->origin)
			goto bad;
		req->origin = v;
		req->origin_len = (size_t)(eol - v);
	} else if (nlen == 12 && strncasecmp(p, "content-type", 12) == 0) {
		req->content_type = v;
		req->content_type_len = (size_t)(eol - v);
	} else if (nlen == 8 && strncasecmp(p, "if-match", 8) == 0) {
		req->if_match = v;
		req->if_match_len = (size_t)(eol - v);
	} else if (nlen == 15 && strncasecmp(p, "accept-encoding", 15) == 0) {
		req->accept_encoding = v;
		req->accept_encoding_len = (size_t)(eol - v);
	} else if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
		size_t cl = 0;
		if (v == eol)
			goto bad;
		for (const char *q = v; q < eol; q++) {
			if (*q < '0' || *q > '9' || cl > 100 * HTTP_MAX_BODY)
				goto bad;
			cl = cl * 10 + (size_t)(*q - '0');
		}
		req->content_length = cl;
	} else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
		goto bad;	/* we take no request bodies of unknown length */
	}
	return 0;
bad:
	*status = 400;
	return -1;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req, int *status)
{
	const char *end = find_crlf2(buf, len < HTTP_MAX_REQUEST ? len : HTTP_MAX_REQUEST), *p, *eol;

	memset(req, 0, sizeof *req);
	*status = 0;
	if (!end) {
		if (len >= HTTP_MAX_REQUEST) {
			*status = 431;
			return -1;
		}
		return 0;
	}
	req->header_len = (size_t)(end - buf) + 4;
	eol = memchr(buf, '\r', (size_t)(end - buf) + 1);
	if (!eol || eol[1] != '\n' || parse_request_line(buf, eol, req, status) < 0) {
		if (!*status)
			*status = 400;
		return -1;
	}
	for (p = eol + 2; p < end + 2; p = eol + 2) {
		eol = memchr(p, '\r', (size_t)(end + 2 - p));
		if (!eol || eol[1] != '\n')
			goto bad;
		if (eol == p)
			break;
		if (memchr(p, '\n', (size_t)(eol - p)) || parse_header(p, eol, req, status) < 0)
			goto bad;
	}
	if (req->content_length > HTTP_MAX_BODY) {
		*status = 413;
		return -1;
	}
	return 1;
bad:
	*status = 400;
	return -1;
}

/* ---- who may ask ---- */

static bool ip_literal(const char *s, size_t n, int family)
{
	char tmp[64];
	unsigned char out[16];

	if (n == 0 || n >= sizeof tmp)
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(family, tmp, out) == 1;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return n > 0 && n <= 5;
}

/* A Host value (host[:port], [v6][:port]) names us when it is an IP literal,
 * localhost, or a name the operator listed. A browser fetching for a page
 * whose name was rebound to our address sends that page's name: refused. */
static bool host_allowed(const char *h, size_t n, char *const *hosts, size_t nhosts)
{
	const char *colon;

	if (n > 0 && h[0] == '[') {
		const char *close = memchr(h, ']', n);
		size_t rest;

		if (!close)
			return false;
		rest = n - (size_t)(close + 1 - h);
		if (rest && (close[1] != ':' || !all_digits(close + 2, rest - 1)))
			return false;
		return ip_literal(h + 1, (size_t)(close - h - 1), AF_INET6);
	}
	colon = memchr(h, ':', n);
	if (colon) {
		if (!all_digits(colon + 1, n - (size_t)(colon + 1 - h)))
			return false;
		n = (size_t)(colon - h);
	}
	if (n > 0 && h[n - 1] == '.')
		n--;		/* the absolute form of a name is the same name */
	if (n == 0)
		return false;
	if (ip_literal(h, n, AF_INET) || (n == 9 && strncasecmp(h, "localhost", 9) == 0))
		return true;
	for (size_t i = 0; i < nhosts; i++) {
		size_t hl = strlen(hosts[i]);

		if (hl && hosts[i][hl - 1] == '.')
			hl--;
		if (hl == n && strncasecmp(hosts[i], h, n) == 0)
			return true;
	}
	return false;
}

/* The origin (scheme://host[:port]) must be the Host we were asked as:
 * the page that sends the request was served by this API. */
static bool same_origin(const struct http_request *req)
{
	const char *o = req->origin, *sep;
	size_t n = req->origin_len;

	if (!req->host)
		return false;
	sep = n >= 3 ? memmem(o, n, "://", 3) : NULL;
	if (!sep)
		return false;	/* "null" (a sandboxed page, a file), or garbage */
	sep += 3;
	n -= (size_t)(sep - o);
	if (n > 0 && sep[n - 1] == '/')
		n--;
	return n == req->host_len && strncasecmp(sep, req->host, n) == 0;
}

/* The content types an HTML form (or a "simple" fetch) sends without a CORS
 * preflight: a state-changing request carrying one may come from any page. */
static bool form_content_type(const char *ct, size_t n)
{
	static const char *const forms[] = { "application/x-www-form-urlencoded",
					      "multipart/form-data", "text/plain" };
	const char *semi = memchr(ct, ';', n);

	if (semi)
		n = (size_t)(semi - ct);
	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
		if (strlen(forms[i]) == n && strncasecmp(forms[i], ct, n) == 0)
			return true;
	return false;
}

static bool changes_state(const char *method)
{
	return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 &&
	       strcmp(method, "OPTIONS") != 0;
}

const char *api_request_refused(const struct http_request *req, char *const *hosts,
				size_t nhosts)
{
	if (req->host && !host_allowed(req->host, req->host_len, hosts, nhosts))
		return "the Host header names neither an IP address, nor localhost, nor a "
		       "name listed in the api's hosts";
	if (!changes_state(req->method))
		return NULL;
	if (req->origin && !same_origin(req))
		return "a request from another origin (a web page elsewhere) may not change "
		       "anything";
	if (req->content_type && form_content_type(req->content_type, req->content_type_len))
		return "a form's content type is refused: send no body, or application/json";
	return NULL;
}

/* ---- serving ---- */

static const char *reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 201: return "Created";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 409: return "Conflict";
	case 412: return "Precondition Failed";
	case 500: return "Internal Server Error";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 505: return "HTTP Version Not Supported";
	}
	return "Error";
}

static void respond(struct apiconn *c, int code, const char *type, const char *extra,
		    const struct buf *body)
{
	const char *b = body && body->p ? body->p : "";
	size_t blen = body ? body->len : 0;
	struct buf tmp = { 0 };

	if (!body) {
		buf_printf(&tmp, "%d %s\n", code, reason(code));
		b = tmp.p;
		blen = tmp.len;
		type = "text/plain; charset=utf-8";
	}
	buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		   "Connection: close\r\n%s\r\n", code, reason(code), type, blen, extra ? extra : "");
	buf_append(&c->out, b, blen);
	buf_free(&tmp);
	c->state = A_WRITE;
}

static bool authorized(const struct api *a, const struct http_request *req)
{
	uint8_t d[SHA256_LEN];
	bool ok;

	if (!a->has_token)
		return true;
	if (!req->auth || req->auth_len < 7 || strncasecmp(req->auth, "Bearer ", 7) != 0)
		return false;
	sha256(req->auth + 7, req->auth_len - 7, d);
	ok = secure_equal(d, a->token_digest, sizeof d);
	explicit_bzero(d, sizeof d);
	return ok;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* %XX-decodes a path segment into out (NUL-terminated); -1 if malformed. */
static int decode_segment(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '%') {
			int hi, lo;

			if (n - i < 3 || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
				return -1;
			ch = (char)(hi << 4 | lo);
			if (!ch)
				return -1;
			i += 2;
		} else if (ch == '/') {
			return -1;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = ch;
	}
	out[o] = '\0';
	return o ? 0 : -1;
}

static void route_services(struct apiconn *c, const struct http_request *req, const char *path,
			   size_t plen)
{
	struct api *a = c->api;
	struct api_reply r = { 0 };
	const char *m = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
	char name[sizeof req->path], extra[96] = "";

	if (plen == 13) {
		if (strcmp(m, "GET") != 0) {
			respond(c, 405, NULL, "Allow: GET\r\n", NULL);
			return;
		}
		a->hooks.services(a->arg, m, NULL, NULL, 0, NULL, 0, &r);
	} else {
		if (strcmp(m, "GET") != 0 && strcmp(m, "PUT") != 0 && strcmp(m, "DELETE") != 0) {
			respond(c, 405, NULL, "Allow: GET, PUT, DELETE\r\n", NULL);
			return;
		}
		if (decode_segment(path + 14, plen - 14, name, sizeof name) < 0) {
			r.status = 404;
			buf_printf(&r.body, "{\"error\": \"not a service's address: "
				   "/api/services/NAME, NAME %%-encoded\"}\n");
		} else {
			a->hooks.services(a->arg, m, name, c->in + req->header_len,
					  req->content_length, req->if_match, req->if_match_len, &r);
		}
	}
	if (r.etag[0])
		snprintf(extra, sizeof extra, "ETag: %s\r\n", r.etag);
	respond(c, r.status, "application/json", extra, &r.body);
	buf_free(&r.body);
}

static void route(struct apiconn *c, const struct http_request *req)
{
	struct api *a = c->api;
	struct buf body = { 0 };
	bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	bool post = strcmp(req->method, "POST") == 0;
	const char *path = req->path;
	size_t plen = strcspn(path, "?");
	const char *refused = api_request_refused(req, a->hosts, a->nhosts);
	const struct dashboard_file *df = get ? dashboard_find(path, plen) : NULL;

	if (refused) {
		buf_printf(&body, "%s\n", refused);
		respond(c, 403, "text/plain; charset=utf-8", NULL, &body);
		buf_free(&body);
		return;
	}
	if (df) {
		/* the page holds no secret: it asks for the token itself */
		const char *type, *headers;
		int code = dashboard_answer(df, req->accept_encoding, req->accept_encoding_len,
					    &body, &type, &headers);
		respond(c, code, type, headers, &body);
	} else if (!authorized(a, req)) {
		respond(c, 401, NULL, "WWW-Authenticate: Bearer realm=\"rathole\"\r\n", NULL);
	} else if (plen == 11 && strncmp(path, "/api/events", 11) == 0) {
		if (!get) {
			respond(c, 405, NULL, "Allow: GET\r\n", NULL);
			return;
		}
		events_json(&body);
		respond(c, 200, "application/json", NULL, &body);
	} else if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
		if (!get) {
			respond(c, 405, NULL, "Allow: GET\r\n", NULL);
			return;
		}
		a->hooks.metrics(a->arg, &body);
		respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, &body);
	} else if (plen == 11 && strncmp(path, "/api/status", 11) == 0) {
		if (!get) {
			respond(c, 405, NULL, "Allow: GET\r\n", NULL);
			return;
		}
		a->hooks.status(a->arg, &body);
		respond(c, 200, "application/json", NULL, &body);
	} else if (plen == 11 && strncmp(path, "/api/reload", 11) == 0) {
		if (!post) {
			respond(c, 405, NULL, "Allow: POST\r\n", NULL);
			return;
		}
		if (a->hooks.reload(a->arg) == 0) {
			buf_printf(&body, "{\"reloaded\": true}\n");
			respond(c, 200, "application/json", NULL, &body);
		} else {
			buf_printf(&body, "{\"reloaded\": false, \"error\": \"the new configuration was "
				   "rejected; the running one stays in force (see the log)\"}\n");
			respond(c, 409, "application/json", NULL, &body);
		}
	} else if (a->hooks.services && plen >= 13 && strncmp(path, "/api/services", 13) == 0 &&
		   (plen == 13 || path[13] == '/')) {
		route_services(c, req, path, plen);
	} else {
		respond(c, 404, NULL, NULL, NULL);
	}
	if (strcmp(req->method, "HEAD") == 0) {
		/* the headers say how long the body would be; send none */
		char *end = strstr(c->out.p ? c->out.p : "", "\r\n\r\n");
		if (end)
			c->out.len = (size_t)(end + 4 - c->out.p);
	}
	buf_free(&body);
}

static void conn_free(struct apiconn *c)
{
	struct api *a = c->api;

	list_del(&c->link);
	a->nconns--;
	loop_unwatch(a->loop, &c->w);
	timer_stop(a->loop, &c->deadline);
	fds_close(c->fd);
	buf_free(&c->out);
	free(c->in);
	free(c);
}

/* Each step returns false when it freed the connection. */
static bool conn_read(struct apiconn *c)
{
	struct http_request req;
	int status;
	ssize_t n;

	do
		n = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return true;
	if (n <= 0) {
		conn_free(c);
		return false;
	}
	c->inlen += (size_t)n;
	switch (http_parse_request(c->in, c->inlen, &req, &status)) {
	case 0:
		return true;
	case -1:
		respond(c, status, NULL, NULL, NULL);
		return true;
	}
	if (c->inlen < req.header_len + req.content_length) {
		size_t need = req.header_len + req.content_length;	/* bounded by the parser */
		char *bigger;

		if (c->incap < need) {
			if (!(bigger = realloc(c->in, need))) {
				respond(c, 413, NULL, NULL, NULL);
				return true;
			}
			c->in = bigger;
			c->incap = need;
		}
		return true;		/* the body is still coming */
	}
	route(c, &req);
	return true;
}

static bool conn_write(struct apiconn *c)
{
	while (c->outoff < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			conn_free(c);
			return false;
		}
		c->outoff += (size_t)n;
	}
	/* all sent: close our side, then wait for the client's close, so that
	 * unread request bytes do not turn our close into a reset */
	shutdown(c->fd, SHUT_WR);
	c->state = A_LINGER;
	return true;
}

static bool conn_linger(struct apiconn *c)
{
	char sink[512];
	ssize_t n = read(c->fd, sink, sizeof sink);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_free(c);
		return false;
	}
	return true;
}

static void on_conn_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct apiconn *c = container_of(w, struct apiconn, w);

	if (c->state == A_READ && !conn_read(c))
		return;
	if (c->state == A_WRITE && !conn_write(c))
		return;
	if (c->state == A_LINGER && (events & EPOLLIN) && !conn_linger(c))
		return;
	loop_watch(l, &c->w, c->state == A_WRITE ? EPOLLOUT : EPOLLIN);
}

static void on_deadline(struct loop *l, struct timer *t)
{
	conn_free(container_of(t, struct apiconn, deadline));
}

static void on_accept(struct loop *l, struct watcher *w, uint32_t events)
{
	struct api *a = container_of(w, struct api, lw);

	for (int i = 0; i < 16; i++) {
		struct net_addr peer;
		struct apiconn *c;
		int fd;

		if (i > 0 && !net_accept_pending(a->lfd))
			return;
		fd = net_accept(a->lfd, &peer);
		if (fd < 0)
			return;
		if (a->nconns >= API_MAX_CONNS || !(c = calloc(1, sizeof *c))) {
			fds_close(fd);
			continue;
		}
		if (!(c->in = malloc(HTTP_MAX_REQUEST))) {
			free(c);
			fds_close(fd);
			continue;
		}
		c->incap = HTTP_MAX_REQUEST;
		c->api = a;
		c->fd = fd;
		c->state = A_READ;
		watcher_init(&c->w, fd, on_conn_event);
		timer_init(&c->deadline, on_deadline);
		timer_start(l, &c->deadline, API_TIMEOUT_MS);
		list_add_tail(&a->conns, &c->link);
		a->nconns++;
		loop_watch(l, &c->w, EPOLLIN);
	}
}

static void free_hosts(struct api *a)
{
	for (size_t i = 0; i < a->nhosts; i++)
		free(a->hosts[i]);
	free(a->hosts);
}

struct api *api_new(struct loop *l, const struct api_config *ac,
		    const struct api_hooks *hooks, void *arg, char *err, size_t errlen)
{
	const char *bind_addr = ac->bind_addr, *token = ac->token;
	struct api *a;
	struct net_addr addr;

	if (net_parse_numeric(bind_addr, &addr) < 0) {
		snprintf(err, errlen, "api bind_addr %s must be an IP address and port", bind_addr);
		return NULL;
	}
	a = calloc(1, sizeof *a);
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->loop = l;
	a->hooks = *hooks;
	a->arg = arg;
	list_init(&a->conns);
	if (token) {
		a->has_token = true;
		sha256(token, strlen(token), a->token_digest);
	}
	a->hosts = calloc(ac->nhosts ? ac->nhosts : 1, sizeof *a->hosts);
	for (size_t i = 0; a->hosts && i < ac->nhosts; i++, a->nhosts++)
		if (!(a->hosts[i] = strdup(ac->hosts[i])))
			break;
	if (!a->hosts || a->nhosts < ac->nhosts) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	a->lfd = net_listen_tcp(&addr, 64);
	if (a->lfd < 0) {
		snprintf(err, errlen, "cannot listen on %s for the api: %s", bind_addr, strerror(errno));
		goto fail;
	}
	watcher_init(&a->lw, a->lfd, on_accept);
	loop_watch(l, &a->lw, EPOLLIN);
	log_info("api listening on http://%s (/metrics, /api/status, /api/reload, /api/services)%s", bind_addr,
		 token ? ", bearer token required" : "");
	return a;
fail:
	explicit_bzero(a->token_digest, sizeof a->token_digest);
	free_hosts(a);
	free(a);
	return NULL;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	while (!list_empty(&a->conns))
		conn_free(list_first(&a->conns, struct apiconn, link));
	loop_unwatch(a->loop, &a->lw);
	fds_close(a->lfd);
	explicit_bzero(a->token_digest, sizeof a->token_digest);
	free_hosts(a);
	free(a);
}
