/* The server role: authenticates control channels, opens service ports while
 * a service's client is connected, and pairs each visitor with a pooled data
 * channel. See docs/architecture.md for the life of a connection. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "app.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "proxy_protocol.h"
#include "relay.h"
#include "reload.h"
#include "resolve.h"
#include "roles.h"
#include "server_int.h"
#include "transport.h"

#define TCP_POOL_SIZE		8	/* data channels asked for in advance */
#define UDP_POOL_SIZE		2
#define HANDSHAKE_MS		5000	/* from accept to an authenticated channel */
#define MAX_PENDING		1024	/* connections still in their handshake */
#define MAX_POOLED		(2 * TCP_POOL_SIZE) /* idle data channels kept per service */
#define MAX_WAITING		1024	/* visitors waiting for a data channel, per service;
					 * beyond, the port is not read for a while */
#define VISITOR_WAIT_MS		10000
#define ACCEPT_BATCH		64
#define BACKOFF_MAX_MS		1000
#define LINGER_MS		2000	/* waiting for the peer to close after a refusal */

/* A connection on bind_addr that has not yet proven what it is. */
enum pstate { P_HANDSHAKE, P_HELLO, P_AUTH, P_CLOSING };

struct pconn {
	struct list link;
	struct server *srv;
	struct stream *s;
	struct watcher w;
	struct timer deadline;
	enum pstate state;
	uint8_t buf[PROTO_HELLO_LEN];
	size_t have;
	uint8_t nonce[PROTO_DIGEST_LEN];
	struct sservice *svc;		/* P_AUTH: the service asked for */
	char peer[NET_ADDRSTR_MAX];
};

/* A visitor accepted on a service port, waiting for a data channel. */
struct visitor {
	struct list link;
	struct sservice *svc;
	int fd;
	struct net_addr peer;
	struct timer expire;
};

static void pconn_free(struct pconn *p);
static void pconn_advance(struct pconn *p);
static void service_down(struct sservice *svc);
static void service_offer_channel(struct sservice *svc, struct stream *s);

/* ---- small helpers ---- */

static uint32_t backoff_next(uint32_t *cur)
{
	uint32_t d = *cur ? *cur * 2 : 10;

	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	*cur = d;
	return d;
}

static void watch_stream(struct loop *l, struct watcher *w, struct stream *s, uint32_t ev)
{
	if (stream_tx_pending(s))
		ev |= EPOLLOUT;
	loop_watch(l, w, ev);
}

/* ---- the control channel ---- */

static void ctrl_free(struct ctrl *c)
{
	if (!c)
		return;
	loop_unwatch(c->svc->srv->loop, &c->w);
	loop_undefer(c->svc->srv->loop, &c->flush);
	timer_stop(c->svc->srv->loop, &c->heartbeat);
	stream_free(c->s);
	free(c);
}

/* The control channel failed or closed: the service is down until the
 * client comes back. */
static void ctrl_lost(struct ctrl *c, const char *why)
{
	struct sservice *svc = c->svc;

	log_info("service %s: control channel from %s closed (%s)", svc->cfg->name, c->peer, why);
	service_down(svc);
}

static void ctrl_update_interest(struct ctrl *c)
{
	/* EPOLLIN to notice the client leaving; plus whatever the transport's
	 * last read waited for (TLS may need the socket writable to read) */
	watch_stream(c->svc->srv->loop, &c->w, c->s, EPOLLIN | c->s->want);
}

static void ctrl_arm_heartbeat(struct ctrl *c)
{
	int secs = c->svc->srv->cfg->heartbeat_interval;

	if (secs > 0)
		timer_start(c->svc->srv->loop, &c->heartbeat, (uint64_t)secs * 1000);
}

/* Returns -1 when the channel broke (and is gone). */
static int ctrl_send(struct ctrl *c, enum control_cmd cmd)
{
	uint8_t b[PROTO_CMD_LEN];

	proto_encode_u32(b, cmd);
	if (stream_send(c->s, b, sizeof b) < 0) {
		ctrl_lost(c, c->s->err);
		return -1;
	}
	ctrl_arm_heartbeat(c);
	ctrl_update_interest(c);
	return 0;
}

static void on_ctrl_flush(struct loop *l, struct deferred *df)
{
	struct ctrl *c = container_of(df, struct ctrl, flush);

	if (stream_flush(c->s) == ST_ERROR) {
		ctrl_lost(c, c->s->err);
		return;
	}
	ctrl_update_interest(c);
}

/* The requests of one turn of the loop (a burst of visitors) go out in one
 * write, flushed after the turn's events: a syscall and a TCP segment per
 * burst instead of per visitor, on both sides. */
int ctrl_request_channels(struct sservice *svc, int n)
{
	struct ctrl *c = svc->ctrl;
	uint8_t b[PROTO_CMD_LEN];

	if (!c)
		return -1;
	proto_encode_u32(b, CMD_CREATE_DATA_CHANNEL);
	for (int i = 0; i < n; i++) {
		if (stream_queue(c->s, b, sizeof b) < 0) {
			ctrl_lost(c, c->s->err);
			return -1;
		}
	}
	ctrl_arm_heartbeat(c);
	loop_defer(svc->srv->loop, &c->flush);
	return 0;
}

static void on_heartbeat(struct loop *l, struct timer *t)
{
	struct ctrl *c = container_of(t, struct ctrl, heartbeat);

	log_trace("service %s: heartbeat", c->svc->cfg->name);
	ctrl_send(c, CMD_HEARTBEAT);
}

static void on_ctrl_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct ctrl *c = container_of(w, struct ctrl, w);
	const uint8_t *p;
	ssize_t n;

	if (stream_flush(c->s) == ST_ERROR) {
		ctrl_lost(c, c->s->err);
		return;
	}
	/* The client never talks after Auth; reading only tells us it is gone.
	 * Anything it does send is discarded, so it cannot fill our memory. */
	for (int i = 0; i < 4; i++) {
		n = stream_peek(c->s, &p);
		if (n == ST_AGAIN)
			break;
		if (n == 0) {
			ctrl_lost(c, "closed by the client");
			return;
		}
		if (n < 0) {
			ctrl_lost(c, c->s->err);
			return;
		}
		stream_consume(c->s, (size_t)n);
	}
	stream_trim(c->s);
	ctrl_update_interest(c);
}

/* ---- service ports ---- */

static void close_listener(struct sservice *svc)
{
	struct loop *l = svc->srv->loop;

	if (svc->rr) {
		resolve_cancel(svc->rr);
		svc->rr = NULL;
	}
	timer_stop(l, &svc->bind_retry);
	timer_stop(l, &svc->accept_retry);
	svc->accept_held = false;
	if (svc->lfd >= 0) {
		loop_unwatch(l, &svc->lw);
		close(svc->lfd);
		svc->lfd = -1;
		log_info("service %s: stopped listening on %s", svc->cfg->name, svc->cfg->bind_addr);
	}
	if (svc->cfg->type == SERVICE_UDP)
		udp_server_close(svc);
}

/* While too many visitors wait for data channels the service port is not
 * read: the kernel's backlog holds the next ones (backpressure, not refusal). */
static bool waiting_full(const struct sservice *svc)
{
	return svc->nwaiting >= MAX_WAITING;
}

static void accepting_resume(struct sservice *svc)
{
	if (svc->accept_held && svc->nwaiting < MAX_WAITING / 2) {
		svc->accept_held = false;
		if (svc->lfd >= 0 && !timer_armed(&svc->accept_retry))
			loop_watch(svc->srv->loop, &svc->lw, EPOLLIN);
	}
}

static void visitor_free(struct visitor *v)
{
	struct sservice *svc = v->svc;

	list_del(&v->link);
	svc->nwaiting--;
	timer_stop(svc->srv->loop, &v->expire);
	if (v->fd >= 0)
		close(v->fd);
	free(v);
	accepting_resume(svc);
}

static void on_relay_done(void *arg, struct relay *r, const struct relay_stats *st,
			  const char *err)
{
	struct sservice *svc = arg;

	svc->nactive--;
	svc->bytes_in += st->bytes[0];
	svc->bytes_out += st->bytes[1];
	if (err)
		log_debug("service %s: connection ended: %s (%llu bytes in, %llu out)", svc->cfg->name,
			  err, (unsigned long long)st->bytes[0], (unsigned long long)st->bytes[1]);
	else
		log_trace("service %s: connection done (%llu bytes in, %llu out)", svc->cfg->name,
			  (unsigned long long)st->bytes[0], (unsigned long long)st->bytes[1]);
}

/* The PROXY protocol header goes right after StartForwardTcp, so the local
 * service reads it first, whatever client (ours or the reference) relays it. */
static int send_proxy_header(struct sservice *svc, int vfd, const struct net_addr *peer,
			     struct stream *ch)
{
	uint8_t hdr[PP_V1_MAX + PP_V2_MAX];
	struct net_addr dst;
	size_t n;

	dst.len = sizeof dst.u;
	if (getsockname(vfd, &dst.u.sa, &dst.len) < 0)
		memset(&dst, 0, sizeof dst);
	n = pp_encode(svc->cfg->proxy_protocol, peer, &dst, hdr);
	return n ? stream_send(ch, hdr, n) : 0;
}

/* Starts forwarding between a visitor and a data channel. Returns -1 if the
 * data channel turned out to be broken (it is freed; the visitor is not). */
static int pair(struct sservice *svc, int vfd, const struct net_addr *peer, struct stream *ch)
{
	uint8_t b[PROTO_CMD_LEN];
	struct stream *vs;
	struct relay *r;

	proto_encode_u32(b, DATA_START_FORWARD_TCP);
	if (stream_send(ch, b, sizeof b) < 0 ||
	    (svc->cfg->proxy_protocol && send_proxy_header(svc, vfd, peer, ch) < 0)) {
		log_debug("service %s: pooled data channel broken: %s", svc->cfg->name, ch->err);
		stream_free(ch);
		return -1;
	}
	vs = transport_wrap(&svc->srv->plain, vfd, true);
	if (!vs) {
		stream_free(ch);
		return 0;
	}
	r = relay_new(svc->srv->loop, vs, ch, on_relay_done, svc);
	if (!r) {
		log_warn("service %s: out of memory for a connection", svc->cfg->name);
		return 0;
	}
	list_add_tail(&svc->relays, relay_link(r));
	svc->nactive++;
	return 0;
}

static void pooled_free(struct pooled *pc);

struct stream *service_take_pooled(struct sservice *svc)
{
	struct pooled *pc;
	struct stream *s;

	if (list_empty(&svc->pool))
		return NULL;
	pc = list_first(&svc->pool, struct pooled, link);
	s = pc->s;
	pc->s = NULL;
	pooled_free(pc);
	return s;
}

/* Hands a visitor to a pooled data channel, trying the next one when a
 * channel turns out to be dead. Returns 0 if paired, -1 if the pool ran dry. */
static int serve_from_pool(struct sservice *svc, int vfd, const struct net_addr *peer)
{
	struct stream *ch;

	while ((ch = service_take_pooled(svc))) {
		if (pair(svc, vfd, peer, ch) == 0)
			return 0;
		/* like the reference: replace the broken channel */
		if (ctrl_request_channels(svc, 1) < 0)
			break;
	}
	return -1;
}

static void on_visitor_expire(struct loop *l, struct timer *t)
{
	struct visitor *v = container_of(t, struct visitor, expire);

	char a[NET_ADDRSTR_MAX];

	log_warn("service %s: no data channel from the client within %d s; closing visitor %s",
		 v->svc->cfg->name, VISITOR_WAIT_MS / 1000, net_addr_str(&v->peer, a, sizeof a));
	visitor_free(v);
}

static void visitor_wait(struct sservice *svc, int fd, const struct net_addr *peer)
{
	struct visitor *v;

	if (!(v = calloc(1, sizeof *v))) {
		close(fd);
		return;
	}
	v->svc = svc;
	v->fd = fd;
	v->peer = *peer;
	timer_init(&v->expire, on_visitor_expire);
	timer_start(svc->srv->loop, &v->expire, VISITOR_WAIT_MS);
	list_add_tail(&svc->waiting, &v->link);
	svc->nwaiting++;
}

/* At most one line per second for events a flood could repeat. */
static bool ratelimit(uint64_t *last, uint64_t now, unsigned *suppressed, unsigned *report)
{
	if (*last && now - *last < 1000) {
		(*suppressed)++;
		return false;
	}
	*last = now;
	*report = *suppressed;
	*suppressed = 0;
	return true;
}

/* Access lists and max_connections, before any data channel is spent. */
static bool visitor_admitted(struct sservice *svc, const struct net_addr *peer)
{
	const struct service_config *c = svc->cfg;
	uint64_t now = loop_now(svc->srv->loop);
	char a[NET_ADDRSTR_MAX];
	unsigned more;

	if (!acl_permits(c->allow, c->nallow, c->deny, c->ndeny, peer)) {
		svc->refused_acl++;
		if (ratelimit(&svc->refuse_log_at, now, &svc->refuse_suppressed, &more))
			log_info("service %s: visitor %s refused by allow/deny%s", c->name,
				 net_addr_str(peer, a, sizeof a), more ? " (and others)" : "");
		return false;
	}
	if (c->max_connections && svc->nactive + svc->nwaiting >= (size_t)c->max_connections) {
		svc->refused_max++;
		if (ratelimit(&svc->refuse_log_at, now, &svc->refuse_suppressed, &more))
			log_warn("service %s: max_connections (%d) reached; refusing visitor %s%s",
				 c->name, c->max_connections, net_addr_str(peer, a, sizeof a),
				 more ? " (and others)" : "");
		return false;
	}
	return true;
}

static void on_new_visitor(struct sservice *svc, int fd, const struct net_addr *peer)
{
	char a[NET_ADDRSTR_MAX];

	if (!visitor_admitted(svc, peer)) {
		close(fd);
		return;
	}
	svc->visitors_total++;
	log_debug("service %s: new visitor from %s", svc->cfg->name, net_addr_str(peer, a, sizeof a));
	/* One more data channel per visitor keeps the pool topped up. */
	if (ctrl_request_channels(svc, 1) < 0) {
		close(fd);
		return;
	}
	if (serve_from_pool(svc, fd, peer) < 0)
		visitor_wait(svc, fd, peer);
}

static void on_accept_retry(struct loop *l, struct timer *t)
{
	struct sservice *svc = container_of(t, struct sservice, accept_retry);

	if (svc->lfd >= 0 && !svc->accept_held)
		loop_watch(l, &svc->lw, EPOLLIN);
}

/* EMFILE and friends: stop accepting for a while instead of spinning. */
void pause_accepting(struct loop *l, struct watcher *lw, struct timer *retry,
		     uint32_t *backoff, const char *what)
{
	uint32_t d = backoff_next(backoff);

	log_error("%s: cannot accept: %s; pausing for %u ms", what, strerror(errno), d);
	loop_watch(l, lw, 0);
	timer_start(l, retry, d);
}

static void drop_pool(struct sservice *svc);

/* Out of file descriptors: idle pooled data channels are only a cache, and
 * with a low limit they may hold every fd while no visitor can be accepted
 * to use them. Give them back (and the relay's idle pipes). */
static void shed_idle_fds(struct server *srv)
{
	struct list *n, *tmp;
	size_t shed = 0;

	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		shed += svc->npool;
		drop_pool(svc);
	}
	relay_pools_free();
	if (shed)
		log_warn("out of file descriptors: closed %zu idle data channels", shed);
}

static void on_service_accept(struct loop *l, struct watcher *w, uint32_t events)
{
	struct sservice *svc = container_of(w, struct sservice, lw);

	for (int i = 0; i < ACCEPT_BATCH && svc->lfd >= 0; i++) {
		struct net_addr peer;
		int fd;

		if (waiting_full(svc)) {
			if (!svc->accept_held)
				log_warn("service %s: %d visitors are waiting for data channels; "
					 "holding new ones until the client catches up", svc->cfg->name,
					 MAX_WAITING);
			svc->accept_held = true;
			loop_watch(l, &svc->lw, 0);
			return;
		}
		if (i > 0 && !net_accept_pending(svc->lfd))
			return;
		fd = net_accept(svc->lfd, &peer);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				int e = errno;
				shed_idle_fds(svc->srv);
				errno = e;
			}
			pause_accepting(l, &svc->lw, &svc->accept_retry, &svc->accept_backoff,
					svc->cfg->name);
			return;
		}
		svc->accept_backoff = 0;
		on_new_visitor(svc, fd, &peer);
	}
}

static void bind_service(struct sservice *svc, const struct net_addr *a);

static void on_bind_retry(struct loop *l, struct timer *t)
{
	struct sservice *svc = container_of(t, struct sservice, bind_retry);

	bind_service(svc, &svc->bind_addr);
}

static void bind_service(struct sservice *svc, const struct net_addr *a)
{
	struct loop *l = svc->srv->loop;
	int fd;

	svc->bind_addr = *a;
	if (svc->cfg->type == SERVICE_UDP)
		fd = net_bind_udp(a);
	else if ((fd = net_listen_tcp(a, 1024)) >= 0)
		net_set_nodelay(fd, svc->cfg->nodelay);	/* inherited by visitors */
	if (fd < 0) {
		uint32_t d = backoff_next(&svc->bind_backoff);
		if (!svc->bind_failed)
			log_error("service %s: cannot listen on %s: %s; retrying every %u ms or less",
				  svc->cfg->name, svc->cfg->bind_addr, strerror(errno), BACKOFF_MAX_MS);
		svc->bind_failed = true;
		timer_start(l, &svc->bind_retry, d);
		return;
	}
	svc->bind_backoff = 0;
	svc->bind_failed = false;
	svc->lfd = fd;
	log_info("service %s: listening on %s (%s)", svc->cfg->name, svc->cfg->bind_addr,
		 service_type_name(svc->cfg->type));
	if (svc->cfg->type == SERVICE_UDP) {
		udp_server_open(svc, fd);
		return;
	}
	watcher_init(&svc->lw, fd, on_service_accept);
	loop_watch(l, &svc->lw, EPOLLIN);
}

static void on_service_resolved(void *arg, const char *err, const struct net_addr *addrs, int n)
{
	struct sservice *svc = arg;

	svc->rr = NULL;
	if (err) {
		log_error("service %s: bind_addr %s: %s", svc->cfg->name, svc->cfg->bind_addr, err);
		timer_start(svc->srv->loop, &svc->bind_retry, BACKOFF_MAX_MS);
		return;
	}
	bind_service(svc, &addrs[0]);
}

static void open_listener(struct sservice *svc)
{
	if (svc->lfd >= 0 || svc->rr || timer_armed(&svc->bind_retry))
		return;
	svc->rr = resolve_start(svc->cfg->bind_addr,
				svc->cfg->type == SERVICE_UDP ? SOCK_DGRAM : SOCK_STREAM,
				on_service_resolved, svc);
}

/* ---- the pool of idle data channels ---- */

static void pooled_free(struct pooled *pc)
{
	struct sservice *svc = pc->svc;

	list_del(&pc->link);
	svc->npool--;
	loop_unwatch(svc->srv->loop, &pc->w);
	stream_free(pc->s);
	free(pc);
}

static void drop_pool(struct sservice *svc)
{
	while (!list_empty(&svc->pool))
		pooled_free(list_first(&svc->pool, struct pooled, link));
}

/* An idle pooled channel became readable: the client closed it (or sent
 * bytes early, which we keep for the visitor and stop watching). */
static void on_pooled_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct pooled *pc = container_of(w, struct pooled, w);
	const uint8_t *p;
	ssize_t n = stream_peek(pc->s, &p);

	if (n == ST_AGAIN) {
		loop_watch(l, w, pc->s->want);
		return;
	}
	if (n > 0) {
		loop_watch(l, w, 0);
		return;
	}
	log_debug("service %s: pooled data channel closed by the client", pc->svc->cfg->name);
	pooled_free(pc);
}

static void service_offer_channel(struct sservice *svc, struct stream *s)
{
	struct pooled *pc;

	if (svc->cfg->type == SERVICE_UDP && udp_server_wants_channel(svc)) {
		udp_server_take_channel(svc, s);
		return;
	}
	if (!list_empty(&svc->waiting)) {
		struct visitor *v = list_first(&svc->waiting, struct visitor, link);

		if (pair(svc, v->fd, &v->peer, s) == 0) {
			v->fd = -1;
			visitor_free(v);
		} else {
			/* the channel was broken: the visitor waits for its replacement */
			ctrl_request_channels(svc, 1);
		}
		return;
	}
	if (svc->npool >= MAX_POOLED || !(pc = calloc(1, sizeof *pc))) {
		log_debug("service %s: data channel pool full; closing a channel", svc->cfg->name);
		stream_free(s);
		return;
	}
	pc->svc = svc;
	pc->s = s;
	stream_trim(s);
	watcher_init(&pc->w, s->fd, on_pooled_event);
	loop_watch(svc->srv->loop, &pc->w, EPOLLIN | EPOLLRDHUP);
	list_add_tail(&svc->pool, &pc->link);
	svc->npool++;
}

/* ---- service lifetime ---- */

static void close_waiting(struct sservice *svc)
{
	while (!list_empty(&svc->waiting))
		visitor_free(list_first(&svc->waiting, struct visitor, link));
}

static void service_down(struct sservice *svc)
{
	ctrl_free(svc->ctrl);
	svc->ctrl = NULL;
	drop_pool(svc);
	close_waiting(svc);
	close_listener(svc);
}

static void service_up(struct sservice *svc, struct ctrl *c)
{
	int n = svc->cfg->type == SERVICE_UDP ? UDP_POOL_SIZE : TCP_POOL_SIZE;

	if (svc->ctrl) {
		log_warn("service %s: a new control channel from %s replaces the one from %s",
			 svc->cfg->name, c->peer, svc->ctrl->peer);
		ctrl_free(svc->ctrl);
		svc->ctrl = NULL;
		drop_pool(svc);
		if (svc->cfg->type == SERVICE_UDP)
			udp_server_drop_channel(svc);
	}
	svc->ctrl = c;
	svc->ctrl_ups++;
	log_info("service %s: control channel established with %s", svc->cfg->name, c->peer);
	if (ctrl_request_channels(svc, n) < 0)
		return;
	open_listener(svc);
}

static struct sservice *find_service_by_digest(struct server *srv, const uint8_t *digest)
{
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		if (memcmp(svc->digest, digest, PROTO_DIGEST_LEN) == 0)
			return svc;
	}
	return NULL;
}

/* Constant time in the key: every live session key is compared in full. */
static struct sservice *find_service_by_session(struct server *srv, const uint8_t *key)
{
	struct sservice *found = NULL;
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		if (svc->ctrl && proto_digest_equal(svc->ctrl->session_key, key))
			found = svc;
	}
	return found;
}

/* ---- connections in their handshake ---- */

static void pconn_free(struct pconn *p)
{
	struct server *srv = p->srv;

	list_del(&p->link);
	srv->npending--;
	loop_unwatch(srv->loop, &p->w);
	timer_stop(srv->loop, &p->deadline);
	stream_free(p->s);
	free(p);
}

/* Sends the last words and closes politely: our side first, then we wait
 * briefly for the peer's close, so that it reads the words instead of a
 * reset caused by bytes it was still sending. */
static void pconn_close_after(struct pconn *p, const void *msg, size_t len)
{
	if (stream_send(p->s, msg, len) < 0) {
		pconn_free(p);
		return;
	}
	p->state = P_CLOSING;
	timer_start(p->srv->loop, &p->deadline, LINGER_MS);
	pconn_advance(p);
}

static void pconn_send_ack(struct pconn *p, enum ack a)
{
	uint8_t b[PROTO_CMD_LEN];

	proto_encode_u32(b, a);
	pconn_close_after(p, b, sizeof b);
}

/* The stream leaves the pending list for a new owner. */
static struct stream *pconn_release(struct pconn *p)
{
	struct stream *s = p->s;

	p->s = NULL;
	loop_unwatch(p->srv->loop, &p->w);
	pconn_free(p);
	return s;
}

static void handle_auth(struct pconn *p)
{
	struct sservice *svc = p->svc;
	struct server *srv = p->srv;
	uint8_t expect[PROTO_DIGEST_LEN];
	struct ctrl *c;
	uint8_t b[PROTO_CMD_LEN];

	proto_session_key(svc->cfg->token, p->nonce, expect);
	if (!proto_digest_equal(expect, p->buf)) {
		svc->auth_failures++;
		log_warn("service %s: authentication failed for %s (wrong token)", svc->cfg->name,
			 p->peer);
		pconn_send_ack(p, ACK_AUTH_FAILED);
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		pconn_free(p);
		return;
	}
	c->svc = svc;
	memcpy(c->session_key, expect, sizeof expect);
	memcpy(c->peer, p->peer, sizeof c->peer);
	proto_encode_u32(b, ACK_OK);
	if (stream_send(p->s, b, sizeof b) < 0) {
		log_debug("service %s: control channel from %s broke during the handshake",
			  svc->cfg->name, p->peer);
		free(c);
		pconn_free(p);
		return;
	}
	c->s = pconn_release(p);
	/* keepalive (notices a client that vanished without a FIN) came with
	 * the transport's options from the listening socket */
	if (!srv->tr->cfg->tcp.nodelay)
		net_set_nodelay(c->s->fd, true);
	stream_trim(c->s);
	watcher_init(&c->w, c->s->fd, on_ctrl_event);
	timer_init(&c->heartbeat, on_heartbeat);
	deferred_init(&c->flush, on_ctrl_flush);
	ctrl_arm_heartbeat(c);
	ctrl_update_interest(c);
	service_up(svc, c);
}

/* Returns true when p goes on to read the Auth. */
static bool handle_control_hello(struct pconn *p, const struct hello *h)
{
	uint8_t out[PROTO_HELLO_LEN];
	char hex[2 * PROTO_DIGEST_LEN + 1];

	if (proto_random(p->nonce, sizeof p->nonce) < 0) {
		log_error("no random bytes for a nonce; closing %s", p->peer);
		pconn_free(p);
		return false;
	}
	/* The nonce goes out before the lookup, as in the reference. */
	proto_encode_hello(out, HELLO_CONTROL, p->nonce);
	if (stream_send(p->s, out, sizeof out) < 0) {
		pconn_free(p);
		return false;
	}
	p->svc = find_service_by_digest(p->srv, h->digest);
	if (!p->svc) {
		for (int i = 0; i < PROTO_DIGEST_LEN; i++)
			snprintf(hex + 2 * i, 3, "%02x", h->digest[i]);
		log_warn("control channel from %s asks for an unknown service (sha256 %.16s...)",
			 p->peer, hex);
		p->srv->unknown_service++;
		pconn_send_ack(p, ACK_SERVICE_NOT_EXIST);
		return false;
	}
	p->state = P_AUTH;
	p->have = 0;
	return true;
}

static void handle_data_hello(struct pconn *p, const struct hello *h)
{
	struct sservice *svc = find_service_by_session(p->srv, h->digest);

	if (!svc) {
		p->srv->handshake_failures++;
		log_warn("data channel from %s has an unknown session key; closing it", p->peer);
		pconn_free(p);
		return;
	}
	log_trace("service %s: data channel from %s", svc->cfg->name, p->peer);
	/* the transport's options came from the listening socket */
	if (svc->cfg->nodelay != p->srv->tr->cfg->tcp.nodelay)
		net_set_nodelay(p->s->fd, svc->cfg->nodelay);
	service_offer_channel(svc, pconn_release(p));
}

/* Returns true when p goes on to read the Auth; otherwise p has a new
 * owner, is closing, or is gone. */
static bool handle_hello(struct pconn *p)
{
	struct hello h;

	if (proto_decode_hello(p->buf, &h) < 0) {
		p->srv->handshake_failures++;
		log_warn("connection from %s: not a rathole hello; closing it", p->peer);
		pconn_free(p);
		return false;
	}
	if (h.version != PROTO_VERSION) {
		p->srv->handshake_failures++;
		log_warn("connection from %s: protocol version mismatched (%u, we speak %u); closing it",
			 p->peer, h.version, PROTO_VERSION);
		pconn_free(p);
		return false;
	}
	if (h.kind == HELLO_CONTROL)
		return handle_control_hello(p, &h);
	handle_data_hello(p, &h);
	return false;
}

static void pconn_linger(struct pconn *p)
{
	int rc = stream_shutdown(p->s);

	if (rc == 0) {
		for (int i = 0; i < 8; i++) {
			const uint8_t *d;
			ssize_t n = stream_peek(p->s, &d);
			if (n <= 0) {
				rc = (int)n;
				break;
			}
			stream_consume(p->s, (size_t)n);
		}
	}
	if (rc == ST_AGAIN)
		loop_watch(p->srv->loop, &p->w, p->s->want);
	else
		pconn_free(p);
}

/* Runs the handshake as far as the bytes at hand allow. */
static void pconn_advance(struct pconn *p)
{
	struct loop *l = p->srv->loop;
	int rc = ST_ERROR;

	for (;;) {
		switch (p->state) {
		case P_HANDSHAKE:
			rc = stream_handshake(p->s);
			if (rc == 0) {
				p->state = P_HELLO;
				continue;
			}
			break;
		case P_HELLO:
			rc = stream_read_exact(p->s, p->buf, PROTO_HELLO_LEN, &p->have);
			if (rc == 1) {
				if (!handle_hello(p))
					return;
				continue;
			}
			break;
		case P_AUTH:
			rc = stream_read_exact(p->s, p->buf, PROTO_AUTH_LEN, &p->have);
			if (rc == 1) {
				handle_auth(p);
				return;
			}
			break;
		case P_CLOSING:
			pconn_linger(p);
			return;
		}
		if (rc == ST_AGAIN) {
			/* A partial hello or auth is kept in p->buf: an idle
			 * half-open connection need not hold a receive buffer
			 * (16 KiB for tcp) while it waits for the rest. */
			if (p->state != P_HANDSHAKE)
				stream_trim(p->s);
			watch_stream(l, &p->w, p->s, p->s->want);
			return;
		}
		p->srv->handshake_failures++;
		if (rc == 0)
			log_debug("connection from %s closed during the handshake", p->peer);
		else
			log_warn("connection from %s: %s handshake failed: %s", p->peer,
				 p->srv->tr->impl->name, p->s->err);
		pconn_free(p);
		return;
	}
}

static void on_pconn_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct pconn *p = container_of(w, struct pconn, w);

	if (p->state != P_CLOSING && stream_tx_pending(p->s) && stream_flush(p->s) == ST_ERROR) {
		pconn_free(p);
		return;
	}
	pconn_advance(p);
}

static void on_pconn_deadline(struct loop *l, struct timer *t)
{
	struct pconn *p = container_of(t, struct pconn, deadline);

	if (p->state != P_CLOSING) {
		p->srv->handshake_failures++;
		log_warn("connection from %s: no complete handshake within %d s; closing it",
			 p->peer, HANDSHAKE_MS / 1000);
	}
	pconn_free(p);
}

static void on_main_accept_retry(struct loop *l, struct timer *t)
{
	struct server *srv = container_of(t, struct server, accept_retry);

	loop_watch(l, &srv->lw, EPOLLIN);
}

static void on_main_accept(struct loop *l, struct watcher *w, uint32_t events)
{
	struct server *srv = container_of(w, struct server, lw);

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct net_addr peer;
		struct pconn *p;
		int fd;

		if (i > 0 && !net_accept_pending(srv->lfd))
			return;
		fd = net_accept(srv->lfd, &peer);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				int e = errno;
				shed_idle_fds(srv);
				errno = e;
			}
			pause_accepting(l, &srv->lw, &srv->accept_retry, &srv->accept_backoff,
					"bind_addr");
			return;
		}
		srv->accept_backoff = 0;
		if (srv->npending >= MAX_PENDING) {
			/* Under a flood of idle connections the oldest goes first. */
			struct pconn *old = list_first(&srv->pending, struct pconn, link);
			if (!srv->flood_warned++)
				log_warn("more than %d connections in their handshake; closing the oldest (from %s)",
					 MAX_PENDING, old->peer);
			pconn_free(old);
		}
		p = calloc(1, sizeof *p);
		if (p)
			p->s = transport_wrap(srv->tr, fd, true);
		else
			close(fd);
		if (!p || !p->s) {
			free(p);
			continue;
		}
		p->srv = srv;
		net_addr_str(&peer, p->peer, sizeof p->peer);
		watcher_init(&p->w, fd, on_pconn_event);
		timer_init(&p->deadline, on_pconn_deadline);
		timer_start(l, &p->deadline, HANDSHAKE_MS);
		list_add_tail(&srv->pending, &p->link);
		srv->npending++;
		pconn_advance(p);
	}
}

/* ---- building and freeing ---- */

static struct sservice *service_new(struct server *srv, const struct service_config *cfg)
{
	struct sservice *svc = calloc(1, sizeof *svc);

	if (!svc)
		return NULL;
	svc->srv = srv;
	svc->cfg = cfg;
	svc->lfd = -1;
	proto_digest(cfg->name, strlen(cfg->name), svc->digest);
	list_init(&svc->pool);
	list_init(&svc->waiting);
	list_init(&svc->relays);
	timer_init(&svc->bind_retry, on_bind_retry);
	timer_init(&svc->accept_retry, on_accept_retry);
	watcher_init(&svc->lw, -1, on_service_accept);
	udp_server_init(svc);
	list_add_tail(&srv->services, &svc->link);
	return svc;
}

static void service_free(struct sservice *svc)
{
	struct server *srv = svc->srv;
	struct list *n, *tmp;

	/* connections still in their handshake for this service go too */
	list_for_each_safe(n, tmp, &srv->pending) {
		struct pconn *p = container_of(n, struct pconn, link);
		if (p->svc == svc)
			pconn_free(p);
	}
	service_down(svc);
	while (!list_empty(&svc->relays))
		relay_free(relay_from_link(svc->relays.next));
	list_del(&svc->link);
	free(svc);
}

static void main_bind_failed(struct server *srv, const char *what, const char *why)
{
	uint32_t d;

	if (!srv->retry_bind) {
		log_error("cannot listen on server.bind_addr %s: %s", what, why);
		app_exit(1);
		return;
	}
	d = backoff_next(&srv->bind_backoff);
	if (d < BACKOFF_MAX_MS || srv->bind_backoff == 0)
		log_error("cannot listen on server.bind_addr %s: %s; retrying", what, why);
	timer_start(srv->loop, &srv->bind_retry, d);
}

static void on_main_resolved(void *arg, const char *err, const struct net_addr *addrs, int n)
{
	struct server *srv = arg;
	char a[NET_ADDRSTR_MAX];

	srv->rr = NULL;
	if (err) {
		main_bind_failed(srv, srv->cfg->bind_addr, err);
		return;
	}
	srv->lfd = net_listen_tcp(&addrs[0], 1024);
	if (srv->lfd < 0) {
		main_bind_failed(srv, net_addr_str(&addrs[0], a, sizeof a), strerror(errno));
		return;
	}
	/* Accepted sockets inherit these options (Linux): no setsockopt per
	 * connection. (Not TCP_DEFER_ACCEPT: connections that never speak must
	 * still count against MAX_PENDING and meet the handshake deadline.) */
	transport_tune_socket(srv->tr, srv->lfd);
	srv->bind_backoff = 0;
	watcher_init(&srv->lw, srv->lfd, on_main_accept);
	loop_watch(srv->loop, &srv->lw, EPOLLIN);
	log_info("listening on %s (transport %s)", srv->cfg->bind_addr, srv->tr->impl->name);
}

static void on_main_bind_retry(struct loop *l, struct timer *t)
{
	struct server *srv = container_of(t, struct server, bind_retry);

	srv->rr = resolve_start(srv->cfg->bind_addr, SOCK_STREAM, on_main_resolved, srv);
}

struct server *server_new(struct loop *l, const struct server_config *cfg, bool retry_bind,
			  char *err, size_t errlen)
{
	struct server *srv = calloc(1, sizeof *srv);

	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->loop = l;
	srv->cfg = cfg;
	srv->lfd = -1;
	srv->retry_bind = retry_bind;
	srv->plain.impl = &transport_tcp;
	list_init(&srv->pending);
	list_init(&srv->services);
	timer_init(&srv->accept_retry, on_main_accept_retry);
	timer_init(&srv->bind_retry, on_main_bind_retry);
	srv->tr = transport_new(&cfg->transport, true, NULL, err, errlen);
	if (!srv->tr) {
		free(srv);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nservices; i++) {
		if (!service_new(srv, &cfg->services[i])) {
			snprintf(err, errlen, "out of memory");
			server_free(srv);
			return NULL;
		}
	}
	srv->rr = resolve_start(cfg->bind_addr, SOCK_STREAM, on_main_resolved, srv);
	return srv;
}

void server_free(struct server *srv)
{
	if (!srv)
		return;
	if (srv->rr)
		resolve_cancel(srv->rr);
	timer_stop(srv->loop, &srv->accept_retry);
	timer_stop(srv->loop, &srv->bind_retry);
	if (srv->lfd >= 0) {
		loop_unwatch(srv->loop, &srv->lw);
		close(srv->lfd);
	}
	while (!list_empty(&srv->services))
		service_free(list_first(&srv->services, struct sservice, link));
	while (!list_empty(&srv->pending))
		pconn_free(list_first(&srv->pending, struct pconn, link));
	transport_free(srv->tr);
	free(srv);
}

static const struct service_config *sservice_config(struct list *n)
{
	return container_of(n, struct sservice, link)->cfg;
}

static void sservice_set_config(struct list *n, const struct service_config *sc)
{
	container_of(n, struct sservice, link)->cfg = sc;
}

static void sservice_stop(struct list *n)
{
	service_free(container_of(n, struct sservice, link));
}

static bool sservice_start(void *srv, const struct service_config *sc)
{
	return service_new(srv, sc) != NULL;
}

void server_apply(struct server *srv, const struct server_config *cfg, struct reload_counts *rc)
{
	static const struct service_ops ops = {
		sservice_config, sservice_set_config, sservice_stop, sservice_start
	};
	const struct server_config *old = srv->cfg;

	srv->cfg = cfg;
	transport_rebind(srv->tr, &cfg->transport, NULL);
	services_apply(&srv->services, &ops, srv, old->services, old->nservices,
		       cfg->services, cfg->nservices, rc);
}

/* ---- metrics and status ---- */

/* Bytes of finished connections plus those still flowing. */
static uint64_t live_bytes(const struct sservice *svc, int dir)
{
	uint64_t n = dir == 0 ? svc->bytes_in : svc->bytes_out;
	const struct list *it;

	for (it = svc->relays.next; it != &svc->relays; it = it->next)
		n += relay_stats(relay_from_link((struct list *)it))->bytes[dir];
	return n;
}

typedef uint64_t (*svc_value)(const struct sservice *svc);

static uint64_t v_up(const struct sservice *s) { return s->ctrl != NULL; }
static uint64_t v_ups(const struct sservice *s) { return s->ctrl_ups; }
static uint64_t v_active(const struct sservice *s) { return s->nactive; }
static uint64_t v_total(const struct sservice *s) { return s->visitors_total; }
static uint64_t v_authfail(const struct sservice *s) { return s->auth_failures; }
static uint64_t v_pooled(const struct sservice *s) { return s->npool; }
static uint64_t v_waiting(const struct sservice *s) { return s->nwaiting; }
static uint64_t v_in(const struct sservice *s) { return live_bytes(s, 0); }
static uint64_t v_out(const struct sservice *s) { return live_bytes(s, 1); }
static uint64_t v_udp_dropped(const struct sservice *s) { return udp_server_dropped(s); }
static uint64_t v_refused_acl(const struct sservice *s) { return s->refused_acl; }
static uint64_t v_refused_max(const struct sservice *s) { return s->refused_max; }

static void family(struct buf *b, struct server *srv, const char *name, const char *type,
		   const char *help, svc_value get, const char *extra, bool head)
{
	struct list *n, *tmp;

	if (head)
		metrics_family(b, name, type, help);
	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		metrics_sample(b, name, svc->cfg->name, extra, get(svc));
	}
}

void server_metrics(struct server *srv, struct buf *b)
{
	family(b, srv, "rathole_service_control_channel_up", "gauge",
	       "Whether the service's client is connected.", v_up, NULL, true);
	family(b, srv, "rathole_service_control_channel_connects_total", "counter",
	       "Control channels established (a reconnecting client counts again).", v_ups, NULL, true);
	family(b, srv, "rathole_service_connections_active", "gauge",
	       "Visitor connections being forwarded.", v_active, NULL, true);
	family(b, srv, "rathole_service_connections_total", "counter",
	       "Visitor connections accepted.", v_total, NULL, true);
	family(b, srv, "rathole_service_bytes_total", "counter",
	       "Bytes forwarded: in = from visitors, out = to visitors.", v_in, "direction=\"in\"", true);
	family(b, srv, "rathole_service_bytes_total", "counter", NULL, v_out, "direction=\"out\"", false);
	family(b, srv, "rathole_service_auth_failures_total", "counter",
	       "Control channels refused for a wrong token.", v_authfail, NULL, true);
	family(b, srv, "rathole_service_data_channels_pooled", "gauge",
	       "Idle data channels ready for visitors.", v_pooled, NULL, true);
	family(b, srv, "rathole_service_visitors_waiting", "gauge",
	       "Visitors waiting for a data channel.", v_waiting, NULL, true);
	family(b, srv, "rathole_service_udp_dropped_total", "counter",
	       "UDP datagrams dropped (queue full or oversized).", v_udp_dropped, NULL, true);
	family(b, srv, "rathole_service_visitors_refused_total", "counter",
	       "Visitors (UDP: datagrams) refused: reason = acl (allow/deny) or max_connections.",
	       v_refused_acl, "reason=\"acl\"", true);
	family(b, srv, "rathole_service_visitors_refused_total", "counter", NULL, v_refused_max,
	       "reason=\"max_connections\"", false);
	metrics_family(b, "rathole_connections_handshaking", "gauge",
		       "Connections on bind_addr still in their handshake.");
	metrics_sample(b, "rathole_connections_handshaking", NULL, NULL, srv->npending);
	metrics_family(b, "rathole_handshake_failures_total", "counter",
		       "Connections on bind_addr that failed their handshake.");
	metrics_sample(b, "rathole_handshake_failures_total", NULL, NULL, srv->handshake_failures);
	metrics_family(b, "rathole_unknown_service_total", "counter",
		       "Control channels asking for a service this server does not have.");
	metrics_sample(b, "rathole_unknown_service_total", NULL, NULL, srv->unknown_service);
	metrics_process(b, "server");
}

void server_status(struct server *srv, struct buf *b)
{
	struct list *n, *tmp;
	bool first = true;

	buf_printf(b, "{\"role\": \"server\", \"version\": \"%s\", \"bind_addr\": ", RATHOLE_VERSION);
	buf_json_string(b, srv->cfg->bind_addr);
	buf_printf(b, ", \"listening\": %s, \"transport\": \"%s\", \"handshaking\": %zu, \"services\": [",
		   srv->lfd >= 0 ? "true" : "false", srv->tr->impl->name, srv->npending);
	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		buf_printf(b, "%s\n  {\"name\": ", first ? "" : ",");
		buf_json_string(b, svc->cfg->name);
		buf_printf(b, ", \"type\": \"%s\", \"bind_addr\": ", service_type_name(svc->cfg->type));
		buf_json_string(b, svc->cfg->bind_addr);
		buf_printf(b, ", \"control_channel\": %s", svc->ctrl ? "true" : "false");
		if (svc->ctrl) {
			buf_printf(b, ", \"client\": ");
			buf_json_string(b, svc->ctrl->peer);
		}
		buf_printf(b, ", \"listening\": %s, \"connections_active\": %zu, "
			   "\"connections_total\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
			   "\"data_channels_pooled\": %zu}",
			   svc->lfd >= 0 ? "true" : "false", svc->nactive,
			   (unsigned long long)svc->visitors_total, (unsigned long long)live_bytes(svc, 0),
			   (unsigned long long)live_bytes(svc, 1), svc->npool);
		first = false;
	}
	buf_printf(b, "\n]}\n");
}
