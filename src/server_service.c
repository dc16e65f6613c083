/* A server service: its port (open while the service's client is
 * connected), the intake of visitors, the visitors waiting for a data
 * channel, and pairing a visitor with a data channel into a relay. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "fds.h"
#include "log.h"
#include "protocol.h"
#include "proxy_protocol.h"
#include "relay.h"
#include "resolve.h"
#include "server_int.h"
#include "transport.h"

#define MAX_WAITING		1024	/* visitors waiting for a data channel, per service;
					 * beyond, the port is not read for a while */
#define VISITOR_WAIT_MS		10000

/* A visitor accepted on a service port, waiting for a data channel. It is
 * watched while it waits, so that one that hangs up is closed at once
 * instead of holding a CLOSE-WAIT socket until its wait expires. */
struct visitor {
	struct list link;
	struct sservice *svc;
	int fd;
	struct net_addr peer;
	struct timer expire;
	struct watcher w;
	bool spoke;		/* sent bytes: they wait for the data channel */
};

/* ---- visitors ---- */

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
	svc->srv->visitors_waiting--;
	timer_stop(svc->srv->loop, &v->expire);
	if (v->fd >= 0) {
		loop_unwatch_closing(svc->srv->loop, &v->w);
		fds_close(v->fd);
	} else {
		loop_unwatch(svc->srv->loop, &v->w);
	}
	free(v);
	accepting_resume(svc);
}

/* What a waiting visitor is watched for: hanging up. Until it sends bytes,
 * readability (a FIN or a reset); afterwards only errors and a full hang-up
 * (EPOLLERR, EPOLLHUP: a reset), since its bytes stay unread until a data
 * channel comes and a level-triggered EPOLLIN would fire all along. */
static void visitor_watch(struct visitor *v)
{
	loop_watch(v->svc->srv->loop, &v->w, v->spoke ? EPOLLERR : EPOLLIN | EPOLLRDHUP);
}

/* A waiting visitor is gone when it was reset (EPOLLERR, EPOLLHUP, or a read
 * error) or ended its sending direction without having sent a byte (a FIN
 * with nothing before it: a visitor that gave up, or a port scan). One that
 * sent bytes and then a FIN is still served: `printf req | nc -N` sends its
 * request and half-closes, and waits for the answer. */
static void on_visitor_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct visitor *v = container_of(w, struct visitor, w);
	char a[NET_ADDRSTR_MAX];
	uint8_t b;
	ssize_t n;

	if (!(events & (EPOLLERR | EPOLLHUP))) {
		n = recv(v->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n > 0) {
			v->spoke = true;
			visitor_watch(v);
			return;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
	}
	log_debug("service %s: visitor %s left before a data channel came", v->svc->cfg->name,
		  net_addr_str(&v->peer, a, sizeof a));
	visitor_free(v);
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
		fds_close(fd);
		return;
	}
	v->svc = svc;
	v->fd = fd;
	v->peer = *peer;
	timer_init(&v->expire, on_visitor_expire);
	timer_start(svc->srv->loop, &v->expire, VISITOR_WAIT_MS);
	watcher_init(&v->w, fd, on_visitor_event);
	visitor_watch(v);
	list_add_tail(&svc->waiting, &v->link);
	svc->nwaiting++;
	svc->srv->visitors_waiting++;
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

/* Descriptors that must stay free for control and data channels: the
 * reserve (server_fd_reserve(), at most a quarter of the limit) and one for
 * the data channel of every visitor waiting. */
size_t fds_kept_for_channels(const struct server *srv)
{
	size_t reserve = srv->fd_reserve;

	if (reserve > fds_limit() / 4)
		reserve = fds_limit() / 4;
	return reserve + srv->visitors_waiting;
}

/* Access lists, descriptors and max_connections, before any data channel
 * is spent. */
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
	/* Control and data channels come first: a visitor (already holding its
	 * fd) is admitted only while its own data channel can come beside what
	 * is kept. One that cannot be served is closed at once (a FIN; a reset
	 * if it already sent bytes, which the kernel does for unread bytes)
	 * rather than left in the accept queue, to be accepted later and wait
	 * in vain; pooled data channels are never closed to make room for it. */
	if (fds_short(fds_kept_for_channels(svc->srv) + 1)) {
		svc->refused_fds++;
		relay_pools_free();	/* idle pipes are only a cache */
		if (ratelimit(&svc->refuse_log_at, now, &svc->refuse_suppressed, &more))
			log_warn("service %s: file descriptors run short (%zu free, %zu kept for "
				 "control and data channels); closing visitor %s%s (raise the open "
				 "file limit, LimitNOFILE= with systemd)", c->name, fds_free(),
				 fds_kept_for_channels(svc->srv), net_addr_str(peer, a, sizeof a),
				 more ? " (and others)" : "");
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

void service_visitor_arrive(struct sservice *svc, int fd, const struct net_addr *peer)
{
	char a[NET_ADDRSTR_MAX];

	if (!visitor_admitted(svc, peer)) {
		fds_close(fd);
		return;
	}
	svc->visitors_total++;
	log_debug("service %s: new visitor from %s", svc->cfg->name, net_addr_str(peer, a, sizeof a));
	/* One more data channel per visitor keeps the pool topped up. */
	if (ctrl_request_channels(svc, 1) < 0) {
		fds_close(fd);
		return;
	}
	if (serve_from_pool(svc, fd, peer) < 0)
		visitor_wait(svc, fd, peer);
}

void service_offer_channel(struct sservice *svc, struct stream *s)
{
	if (svc->cfg->type == SERVICE_UDP && udp_server_wants_channel(svc)) {
		udp_server_take_channel(svc, s);
		return;
	}
	if (!list_empty(&svc->waiting)) {
		struct visitor *v = list_first(&svc->waiting, struct visitor, link);

		loop_unwatch(svc->srv->loop, &v->w);	/* the relay watches it now */
		if (pair(svc, v->fd, &v->peer, s) == 0) {
			v->fd = -1;
			visitor_free(v);
		} else {
			/* the channel was broken: the visitor waits for its replacement */
			visitor_watch(v);
			ctrl_request_channels(svc, 1);
		}
		return;
	}
	pool_add(svc, s);
}

/* ---- the service port ---- */

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
		fds_close(svc->lfd);
		svc->lfd = -1;
		log_info("service %s: stopped listening on %s", svc->cfg->name, svc->cfg->bind_addr);
	}
	if (svc->cfg->type == SERVICE_UDP)
		udp_server_close(svc);
}

static void on_accept_retry(struct loop *l, struct timer *t)
{
	struct sservice *svc = container_of(t, struct sservice, accept_retry);

	if (svc->lfd >= 0 && !svc->accept_held)
		loop_watch(l, &svc->lw, EPOLLIN);
}

void pause_accepting(struct loop *l, struct watcher *lw, struct timer *retry,
		     uint32_t *backoff, const char *what)
{
	uint32_t d = backoff_next(backoff);

	log_error("%s: cannot accept: %s; pausing for %u ms", what, strerror(errno), d);
	loop_watch(l, lw, 0);
	timer_start(l, retry, d);
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
			/* pooled data channels stay (see on_main_accept()) */
			if (errno == EMFILE || errno == ENFILE) {
				int e = errno;
				relay_pools_free();
				errno = e;
			}
			pause_accepting(l, &svc->lw, &svc->accept_retry, &svc->accept_backoff,
					svc->cfg->name);
			return;
		}
		svc->accept_backoff = 0;
		service_visitor_arrive(svc, fd, &peer);
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
	if (!svc->cfg->bind_addr)
		return;		/* reached by its hostnames only (server_vhost.c) */
	if (svc->lfd >= 0 || svc->rr || timer_armed(&svc->bind_retry))
		return;
	svc->rr = resolve_start(svc->cfg->bind_addr,
				svc->cfg->type == SERVICE_UDP ? SOCK_DGRAM : SOCK_STREAM,
				on_service_resolved, svc);
}

/* ---- service lifetime ---- */

bool service_has_client(const struct sservice *svc)
{
	return svc->ctrl != NULL;
}

static void close_waiting(struct sservice *svc)
{
	while (!list_empty(&svc->waiting))
		visitor_free(list_first(&svc->waiting, struct visitor, link));
}

void service_down(struct sservice *svc)
{
	ctrl_free(svc->ctrl);
	svc->ctrl = NULL;
	drop_pool(svc);
	close_waiting(svc);
	close_listener(svc);
}

void service_up(struct sservice *svc, struct ctrl *c)
{
	int n = service_pool_size(svc->cfg);

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

struct sservice *service_new(struct server *srv, const struct service_config *cfg)
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

void service_free(struct sservice *svc)
{
	service_down(svc);
	while (!list_empty(&svc->relays))
		relay_free(relay_from_link(svc->relays.next));
	list_del(&svc->link);
	free(svc);
}
