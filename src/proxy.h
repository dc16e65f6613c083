/* Reaching the server through a proxy: HTTP CONNECT (with Basic auth) or
 * SOCKS5 (RFC 1928, user/password per RFC 1929), client side only.
 *
 * The connector resolves and connects to the proxy, then drives
 * proxy_conn_step() on the connected non-blocking socket until the tunnel
 * to the target is open; then the transport handshake starts on the same
 * socket. The negotiation never consumes a byte beyond the proxy's reply. */
#ifndef PROXY_H
#define PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

enum proxy_kind { PROXY_HTTP, PROXY_SOCKS5 };

struct proxy_url {
	enum proxy_kind kind;
	char host[NET_HOST_MAX];	/* the proxy's host name or IP literal */
	unsigned port;
	char hostport[NET_HOST_MAX + 8];	/* "host:port" / "[v6]:port", for the resolver */
	char user[256], pass[256];	/* percent-decoded; empty when absent */
	bool has_auth;
};

/* Parses "http://[user:pass@]host:port" or "socks5://[user:pass@]host:port"
 * (the port defaults to 80 / 1080 when omitted). Returns 0, or -1 with a
 * reason in err ("unknown proxy scheme \"ftp\": use http or socks5"). */
int proxy_parse_url(const char *url, struct proxy_url *out, char *err, size_t errlen);

struct proxy_conn;

/* One negotiation asking the proxy for a tunnel to target_host:target_port
 * (the host is passed to the proxy as a name; it resolves it). */
struct proxy_conn *proxy_conn_new(const struct proxy_url *u, const char *target_host,
				  unsigned target_port);
/* Drives the negotiation on fd: 0 when the tunnel is open, ST_AGAIN (see
 * transport.h) with *want set to EPOLLIN or EPOLLOUT, or ST_ERROR with a
 * message in proxy_conn_error() that names the proxy and its answer
 * ("proxy 127.0.0.1:8888 refused CONNECT: HTTP 403 Forbidden"). */
int proxy_conn_step(struct proxy_conn *p, int fd, uint32_t *want);
const char *proxy_conn_error(const struct proxy_conn *p);
void proxy_conn_free(struct proxy_conn *p);

#endif
