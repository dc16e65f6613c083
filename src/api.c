#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fds.h"
#include "list.h"
#include "log.h"
#include "net.h"
#include "secmem.h"

#define API_MAX_CONNS	64
#define API_TIMEOUT_MS	5000

struct api {
	struct loop *loop;
	int lfd;
	struct watcher lw;
	char *token;
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
	char in[HTTP_MAX_REQUEST];
	size_t inlen;
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
	} else if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
		size_t cl = 0;
		if (v == eol)
			goto bad;
		for (const char *q = v; q < eol; q++) {
			if (*q < '0' || *q > '9' || cl > HTTP_MAX_REQUEST)
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
	const char *end = find_crlf2(buf, len), *p, *eol;

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
	if (req->header_len + req->content_length > HTTP_MAX_REQUEST) {
		*status = 413;
		return -1;
	}
	return 1;
bad:
	*status = 400;
	return -1;
}

/* ---- serving ---- */

static const char *reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
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
	size_t tlen;

	if (!a->token)
		return true;
	tlen = strlen(a->token);
	if (!req->auth || req->auth_len != 7 + tlen || strncasecmp(req->auth, "Bearer ", 7) != 0)
		return false;
	return secure_equal(req->auth + 7, a->token, tlen);
}

static void route(struct apiconn *c, const struct http_request *req)
{
	struct api *a = c->api;
	struct buf body = { 0 };
	bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	bool post = strcmp(req->method, "POST") == 0;
	const char *path = req->path;
	size_t plen = strcspn(path, "?");

	if (!authorized(a, req)) {
		respond(c, 401, NULL, "WWW-Authenticate: Bearer realm=\"rathole\"\r\n", NULL);
		return;
	}
	if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
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
	free(c);
}

/* Each step returns false when it freed the connection. */
static bool conn_read(struct apiconn *c)
{
	struct http_request req;
	int status;
	ssize_t n;

	do
		n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
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
	if (c->inlen < req.header_len + req.content_length)
		return true;		/* the body is still coming */
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

struct api *api_new(struct loop *l, const char *bind_addr, const char *token,
		    const struct api_hooks *hooks, void *arg, char *err, size_t errlen)
{
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
	if (token && !(a->token = strdup(token))) {
		free(a);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->lfd = net_listen_tcp(&addr, 64);
	if (a->lfd < 0) {
		snprintf(err, errlen, "cannot listen on %s for the api: %s", bind_addr, strerror(errno));
		free(a->token);
		free(a);
		return NULL;
	}
	watcher_init(&a->lw, a->lfd, on_accept);
	loop_watch(l, &a->lw, EPOLLIN);
	log_info("api listening on http://%s (/metrics, /api/status, /api/reload)%s", bind_addr,
		 token ? ", bearer token required" : "");
	return a;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	while (!list_empty(&a->conns))
		conn_free(list_first(&a->conns, struct apiconn, link));
	loop_unwatch(a->loop, &a->lw);
	fds_close(a->lfd);
	if (a->token)
		explicit_bzero(a->token, strlen(a->token));
	free(a->token);
	free(a);
}
