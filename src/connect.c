#include "connect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fds.h"
#include "log.h"
#include "proxy.h"
#include "relay.h"
#include "resolve.h"

enum cstate { C_RESOLVING, C_CONNECTING, C_PROXY, C_HANDSHAKE };

struct connector {
	struct loop *loop;
	struct transport *t;		/* NULL: plain connection to a local service */
	enum cstate state;
	struct resolve_req *rr;
	struct net_addr addrs[RESOLVE_MAX_ADDRS];
	int naddrs, cur;
	int fd;				/* while connecting / negotiating the proxy */
	struct stream *s;		/* during the transport handshake */
	struct proxy_conn *proxy;
	struct watcher w;
	struct timer deadline;
	struct deferred use_cached;
	connect_cb cb;
	void *arg;
	char target[NET_HOST_MAX + 8];	/* what we resolve, for messages */
	char last_err[512];
};

/* Plain local connections are tcp streams of this transport. */
static struct transport plain_transport = { .impl = &transport_tcp };

static void finish(struct connector *c, struct stream *s, const char *err)
{
	connect_cb cb = c->cb;
	void *arg = c->arg;
	struct net_addr addr = c->naddrs ? c->addrs[c->cur] : (struct net_addr){ 0 };
	char msg[sizeof c->last_err];

	snprintf(msg, sizeof msg, "%s", err ? err : "");
	if (s)
		c->s = NULL;		/* handed over */
	connector_cancel(c);
	cb(arg, s, &addr, err ? msg : NULL);
}

void connector_cancel(struct connector *c)
{
	if (!c)
		return;
	if (c->rr)
		resolve_cancel(c->rr);
	loop_undefer(c->loop, &c->use_cached);
	loop_unwatch(c->loop, &c->w);
	timer_stop(c->loop, &c->deadline);
	if (c->s)
		stream_free(c->s);
	else if (c->fd >= 0)
		fds_close(c->fd);
	proxy_conn_free(c->proxy);
	free(c);
}

static void try_next_address(struct connector *c);

static void fail_address(struct connector *c, int e)
{
	char a[NET_ADDRSTR_MAX];

	snprintf(c->last_err, sizeof c->last_err, "cannot connect to %s: %s",
		 net_addr_str(&c->addrs[c->cur], a, sizeof a), strerror(e));
	loop_unwatch(c->loop, &c->w);
	if (c->fd >= 0)
		fds_close(c->fd);
	c->fd = -1;
	c->cur++;
	try_next_address(c);
}

static void drive_handshake(struct connector *c)
{
	int rc = stream_handshake(c->s);

	if (rc == 0) {
		loop_unwatch(c->loop, &c->w);
		finish(c, c->s, NULL);
		return;
	}
	if (rc == ST_AGAIN) {
		loop_watch(c->loop, &c->w, c->s->want);
		return;
	}
	snprintf(c->last_err, sizeof c->last_err, "%s handshake with %s failed: %s",
		 c->t->impl->name, c->target, c->s->err);
	finish(c, NULL, c->last_err);
}

static void start_handshake(struct connector *c)
{
	struct transport *t = c->t ? c->t : &plain_transport;

	c->state = C_HANDSHAKE;
	loop_unwatch(c->loop, &c->w);
	c->s = transport_wrap(t, c->fd, false);
	c->fd = -1;
	if (!c->s) {
		finish(c, NULL, "out of memory");
		return;
	}
	if (c->t)
		transport_tune_socket(c->t, c->s->fd);
	watcher_init(&c->w, c->s->fd, c->w.cb);
	drive_handshake(c);
}

static void drive_proxy(struct connector *c)
{
	uint32_t want = 0;
	int rc = proxy_conn_step(c->proxy, c->fd, &want);

	if (rc == 0) {
		start_handshake(c);
	} else if (rc == ST_AGAIN) {
		loop_watch(c->loop, &c->w, want);
	} else {
		snprintf(c->last_err, sizeof c->last_err, "%s", proxy_conn_error(c->proxy));
		finish(c, NULL, c->last_err);
	}
}

static void start_proxy(struct connector *c)
{
	char host[NET_HOST_MAX];
	unsigned port;
	const char *err;

	if (net_split_hostport(c->t->remote_addr, host, sizeof host, &port, &err) < 0) {
		finish(c, NULL, err);
		return;
	}
	c->proxy = proxy_conn_new(c->t->proxy, host, port);
	if (!c->proxy) {
		finish(c, NULL, "out of memory");
		return;
	}
	c->state = C_PROXY;
	drive_proxy(c);
}

static void connected(struct connector *c)
{
	if (c->t && c->t->proxy)
		start_proxy(c);
	else
		start_handshake(c);
}

static void on_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct connector *c = container_of(w, struct connector, w);
	int e;

	switch (c->state) {
	case C_CONNECTING:
		e = net_connect_result(c->fd);
		if (e == 0)
			connected(c);
		else
			fail_address(c, e);
		break;
	case C_PROXY:
		drive_proxy(c);
		break;
	case C_HANDSHAKE:
		drive_handshake(c);
		break;
	case C_RESOLVING:
		break;
	}
}

static void try_next_address(struct connector *c)
{
	while (c->cur < c->naddrs) {
		int e;

		c->fd = net_connect_tcp(&c->addrs[c->cur]);
		if (c->fd >= 0) {
			c->state = C_CONNECTING;
			watcher_init(&c->w, c->fd, on_event);
			e = net_connect_now(c->fd);
			if (e == 0) {
				connected(c);
				return;
			}
			if (e != EINPROGRESS) {
				fail_address(c, e);
				return;
			}
			if (loop_watch(c->loop, &c->w, EPOLLOUT) == 0)
				return;
			e = errno;
			fds_close(c->fd);
			c->fd = -1;
		} else {
			e = errno;
		}
		if (e == EMFILE || e == ENFILE)
			relay_pools_free();	/* idle pipes hold fds */
		snprintf(c->last_err, sizeof c->last_err, "cannot connect to %s: %s",
			 c->target, strerror(e));
		c->cur++;
	}
	c->cur = c->naddrs ? c->naddrs - 1 : 0;
	finish(c, NULL, c->last_err[0] ? c->last_err : "no address to connect to");
}

static void on_resolved(void *arg, const char *err, const struct net_addr *addrs, int n)
{
	struct connector *c = arg;

	c->rr = NULL;
	if (err) {
		finish(c, NULL, err);
		return;
	}
	memcpy(c->addrs, addrs, (size_t)n * sizeof *addrs);
	c->naddrs = n;
	c->cur = 0;
	try_next_address(c);
}

static void on_use_cached(struct loop *l, struct deferred *d)
{
	struct connector *c = container_of(d, struct connector, use_cached);

	c->naddrs = 1;
	c->cur = 0;
	try_next_address(c);
}

static void on_deadline(struct loop *l, struct timer *t)
{
	struct connector *c = container_of(t, struct connector, deadline);
	static const char *const what[] = {
		[C_RESOLVING] = "resolving", [C_CONNECTING] = "connecting to",
		[C_PROXY] = "negotiating with the proxy for", [C_HANDSHAKE] = "in the handshake with",
	};

	snprintf(c->last_err, sizeof c->last_err, "timed out %s %s", what[c->state], c->target);
	finish(c, NULL, c->last_err);
}

static struct connector *start(struct loop *l, struct transport *t, const char *hostport,
			       const struct net_addr *cached, uint32_t timeout_ms,
			       connect_cb cb, void *arg)
{
	struct connector *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->loop = l;
	c->t = t;
	c->fd = -1;
	c->cb = cb;
	c->arg = arg;
	snprintf(c->target, sizeof c->target, "%s", hostport);
	watcher_init(&c->w, -1, on_event);
	timer_init(&c->deadline, on_deadline);
	timer_start(l, &c->deadline, timeout_ms);
	deferred_init(&c->use_cached, on_use_cached);
	c->state = C_RESOLVING;
	if (cached) {
		/* Not synchronously: a failure would call back before the caller
		 * has even stored the connector. */
		c->addrs[0] = *cached;
		loop_defer(l, &c->use_cached);
		return c;
	}
	c->rr = resolve_start(hostport, SOCK_STREAM, on_resolved, c);
	if (!c->rr) {
		timer_stop(l, &c->deadline);
		free(c);
		return NULL;
	}
	return c;
}

struct connector *connector_start(struct loop *l, struct transport *t,
				  const struct net_addr *cached, uint32_t timeout_ms,
				  connect_cb cb, void *arg)
{
	const char *target = t->proxy ? t->proxy->hostport : t->remote_addr;

	return start(l, t, target, cached, timeout_ms, cb, arg);
}

struct connector *connector_start_plain(struct loop *l, const char *hostport,
					uint32_t timeout_ms, connect_cb cb, void *arg)
{
	return start(l, NULL, hostport, NULL, timeout_ms, cb, arg);
}
