/* The optional admin API ([server.api] / [client.api]): a small HTTP/1.1
 * endpoint on the event loop, loopback by default.
 *
 *   GET  /metrics      Prometheus text format
 *   GET  /api/status   JSON
 *   GET  /api/events   JSON: recent reloads, warnings and errors (events.h)
 *   POST /api/reload   reloads the configuration file
 *   GET  /             the dashboard (dashboard.h), and its /dashboard.css, /dashboard.js
 *
 * With a token set, every request but those of the dashboard's files needs
 * "Authorization: Bearer <token>" (401 otherwise). Whatever the token, a
 * request is refused (403) when its Host is a name the operator did not list
 * (DNS rebinding), and a request that changes state when it comes from
 * another origin or as a form (a cross-site POST from a page in the
 * operator's browser). One request per
 * connection; requests are bounded in size (8 KiB of headers, 64 KiB of
 * body) and time (5 s), and at most 64 connections are served at once. */
#ifndef API_H
#define API_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"
#include "loop.h"

struct api;

/* The answer to a request about services. */
struct api_reply {
	int status;
	struct buf body;		/* JSON */
	char etag[48];			/* "" or a quoted ETag for the ETag header */
};

struct api_hooks {
	void (*metrics)(void *arg, struct buf *out);
	void (*status)(void *arg, struct buf *out);
	/* Returns 0 if the reload was applied, -1 if it was rejected. */
	int (*reload)(void *arg);
	/* /api/services (name NULL) and /api/services/NAME: method is GET,
	 * PUT or DELETE; body the request's (PUT); if_match the If-Match value
	 * or NULL. Fills r. */
	void (*services)(void *arg, const char *method, const char *name, const char *body,
			 size_t len, const char *if_match, size_t if_match_len, struct api_reply *r);
};

struct api *api_new(struct loop *l, const struct api_config *ac,
		    const struct api_hooks *hooks, void *arg, char *err, size_t errlen);
void api_free(struct api *a);

/* ---- the request parser, separate so that it can be fuzzed ---- */

#define HTTP_MAX_REQUEST 8192		/* the request line and headers */
#define HTTP_MAX_BODY (64 * 1024)

struct http_request {
	char method[8];
	char path[256];
	/* header values inside the buffer (trimmed), or NULL when absent */
	const char *auth;		/* Authorization */
	size_t auth_len;
	const char *host;		/* Host */
	size_t host_len;
	const char *origin;		/* Origin */
	size_t origin_len;
	const char *content_type;	/* Content-Type */
	size_t content_type_len;
	const char *if_match;		/* If-Match */
	size_t if_match_len;
	const char *accept_encoding;	/* Accept-Encoding */
	size_t accept_encoding_len;
	size_t header_len;		/* bytes up to and including the blank line */
	size_t content_length;
};

/* Returns 1 when the header block is complete and valid, 0 when more bytes
 * are needed, or -1 (with a status code in *status: 400, 405, 413, 414, 431,
 * 505) for a request we refuse. The body (content_length bytes, at most
 * HTTP_MAX_BODY) follows the header block. */
int http_parse_request(const char *buf, size_t len, struct http_request *req, int *status);

/* Why a parsed request must be refused whatever its token (403), or NULL:
 * a Host that is neither an IP literal, nor localhost, nor one of hosts; or,
 * for a method that changes state, an Origin other than the Host itself or a
 * content type an HTML form can send without the browser asking first. */
const char *api_request_refused(const struct http_request *req, char *const *hosts,
				size_t nhosts);

#endif
