/* Opening a channel to the server (client side): resolve the server (or the
 * proxy), connect over TCP trying each address, negotiate the proxy tunnel if
 * one is configured, wrap the socket in the transport and run its handshake.
 * Everything is asynchronous on the loop and bounded by one deadline. */
#ifndef CONNECT_H
#define CONNECT_H

#include "loop.h"
#include "net.h"
#include "transport.h"

struct connector;

/* On success s is a ready stream (ownership passes to the callee) and addr the
 * address that was connected (the server's, or the proxy's), to be passed
 * back as `cached` for later channels of the same session. On failure s is
 * NULL and err says what went wrong. The connector is freed before the call. */
typedef void (*connect_cb)(void *arg, struct stream *s, const struct net_addr *addr,
			   const char *err);

/* Starts connecting to the transport's remote_addr. With cached non-NULL the
 * address is not resolved again. Returns NULL only when out of memory. */
struct connector *connector_start(struct loop *l, struct transport *t,
				  const struct net_addr *cached, uint32_t timeout_ms,
				  connect_cb cb, void *arg);
/* The callback will not run. */
void connector_cancel(struct connector *c);

/* A plain TCP connection to a local service (no transport, no proxy):
 * resolve hostport unless it is an IP literal, try each address. */
struct connector *connector_start_plain(struct loop *l, const char *hostport,
					uint32_t timeout_ms, connect_cb cb, void *arg);

#endif
