/* A server service: its port (open while at least one of the service's
 * clients is connected), the intake of visitors, the visitors waiting for a
 * data channel, the choice of the replica (client) that serves one, and
 * pairing a visitor with a data channel into a relay.
 *
 * Visitors wait in one queue per service, whichever replica was asked for
 * their data channel: the first channel to arrive from any replica serves
 * the first visitor, so a replica that is slow or gone delays nobody. */
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

/* ---- choosing a replica ---- */

static bool has_pooled(const struct replica *r)
{
	return r->npool > 0;
}

/* Walks the live replicas once, starting after the last one picked, so
 * that round robin takes them in turn and least_connections breaks ties in
 * turn. A replica's load: its connections in flight, plus (for a visitor
 * that will wait) the data channels already asked of it. */
static struct replica *pick(struct sservice *svc, bool (*ok)(const struct replica *),
			    bool count_requested)
{
	bool least = svc->cfg->has_balance && svc->cfg->balance == BALANCE_LEAST_CONNECTIONS;
	struct list *it = svc->rr_last ? &svc->rr_last->link : &svc->replicas;
	struct replica *best = NULL;
	size_t best_load = 0;

	/* once round the ring: n replicas and the list's head */
	for (size_t step = 0; step <= svc->nreplicas; step++) {
		struct replica *r;
		size_t load;

		it = it->next;
		if (it == &svc->replicas)
			continue;
		r = list_entry(it, struct replica, link);
		if (ok && !ok(r))
			continue;
		load = r->nactive + (count_requested ? r->requested : 0);
		if (!best || load < best_load) {
			best = r;
			best_load = load;
			if (!least)
				break;
		}
	}
	if (best)
		svc->rr_last = best;
	return best;
}

struct replica *service_pick(struct sservice *svc, bool (*ok)(const struct replica *))
{
	return pick(svc, ok, false);
}

/* A visitor will wait: one more data channel, asked of the replica the
 * policy picks. -1 when no replica is left. */
static int request_for_waiting(struct sservice *svc)
{
	struct replica *r;

	/* each failure takes a replica away: this ends */
	while ((r = pick(svc, NULL, true)))
		if (replica_request_channels(r, 1) == 0)
			return 0;
	return -1;
}

static void on_relay_done(void *arg, struct relay *rl, const struct relay_stats *st,
			  const char *err)
{
	struct replica *r = arg;
	struct sservice *svc = r->svc;

	list_del(relay_link(rl));
	r->nactive--;
	svc->nactive--;
	r->bytes_in += st->bytes[0];
	r->bytes_out += st->bytes[1];
	svc->bytes_in += st->bytes[0];
	svc->bytes_out += st->bytes[1];
	if (err)
		log_debug("service %s: connection ended: %s (%llu bytes in, %llu out)", svc->cfg->name,
			  err, (unsigned long long)st->bytes[0], (unsigned long long)st->bytes[1]);
	else
		log_trace("service %s: connection done (%llu bytes in, %llu out)", svc->cfg->name,
			  (unsigned long long)st->bytes[0], (unsigned long long)st->bytes[1]);
	/* a replica that left stayed for its connections in flight */
	if (!r->s && !r->nactive)
		replica_free(r);
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

/* Starts forwarding between a visitor and a data channel of replica r.
 * Returns -1 if the data channel turned out to be broken (it is freed; the
 * visitor is not). */
static int pair(struct replica *r, int vfd, const struct net_addr *peer, struct stream *ch)
{
	struct sservice *svc = r->svc;
	uint8_t b[PROTO_CMD_LEN];
	struct stream *vs;
	struct relay *rl;

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
	rl = relay_new(svc->srv->loop, vs, ch, on_relay_done, r);
	if (!rl) {
		log_warn("service %s: out of memory for a connection", svc->cfg->name);
		return 0;
	}
	relay_set_limits(rl, &svc->limit.dir[LIMIT_IN], &svc->limit.dir[LIMIT_OUT]);
	list_add_tail(&r->relays, relay_link(rl));
	r->nactive++;
	r->visitors_total++;
	svc->nactive++;
	return 0;
}

#define POOL_TRIES	64	/* broken pooled channels tried for one visitor */

/* Hands a visitor to a pooled data channel of the replica the policy
 * picks, trying the next one when a channel turns out to be dead. Returns
 * 0 if paired, -1 if no replica has a channel ready. */
static int serve_from_pool(struct sservice *svc, int vfd, const struct net_addr *peer)
{
	struct replica *r;

	for (int i = 0; i < POOL_TRIES && (r = pick(svc, has_pooled, false)); i++) {
		/* One more data channel for each one taken keeps the replica's
		 * pool topped up, and replaces a broken one as the reference
		 * does. A replica whose control channel broke has left. */
		struct stream *ch;

		if (replica_request_channels(r, 1) < 0)
			continue;
		if ((ch = replica_take_pooled(r)) && pair(r, vfd, peer, ch) == 0)
			return 0;
	}
	return -1;
}

/* Visitors waiting while some replica has a channel pooled (one that came
 * while they were being served elsewhere) take it now. */
static void serve_waiting(struct sservice *svc)
{
	while (!list_empty(&svc->waiting)) {
		struct visitor *v = list_first(&svc->waiting, struct visitor, link);

		loop_unwatch(svc->srv->loop, &v->w);	/* the relay watches it now */
		if (serve_from_pool(svc, v->fd, &v->peer) < 0) {
			visitor_watch(v);
			return;
		}
		v->fd = -1;
		visitor_free(v);
	}
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
 * reserve (server_fd_reserve(), plus a pool per replica beyond a service's
 * first; at most a quarter of the limit) and one for the data channel of
 * every visitor waiting. */
size_t fds_kept_for_channels(const struct server *srv)
{
	size_t reserve = srv->fd_reserve + srv->fd_reserve_replicas;

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
	if (serve_from_pool(svc, fd, peer) == 0)
		return;
	if (request_for_waiting(svc) < 0) {
		fds_close(fd);
		return;
	}
	visitor_wait(svc, fd, peer);
}

void service_offer_channel(struct replica *r, struct stream *s)
{
	struct sservice *svc = r->svc;

	if (r->requested)
		r->requested--;
	if (svc->cfg->type == SERVICE_UDP) {
		if (udp_replica_wants_channel(r))
			udp_replica_take_channel(r, s);
		else
			replica_pool_add(r, s);
		return;
	}
	if (!list_empty(&svc->waiting)) {
		struct visitor *v = list_first(&svc->waiting, struct visitor, link);

		loop_unwatch(svc->srv->loop, &v->w);	/* the relay watches it now */
		if (pair(r, v->fd, &v->peer, s) == 0) {
			v->fd = -1;
			visitor_free(v);
		} else {
			/* the channel was broken: the visitor waits for its replacement */
			visitor_watch(v);
			replica_request_channels(r, 1);	/* if r left, see on_rebalance() */
		}
		return;
	}
	replica_pool_add(r, s);
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
	return svc->nreplicas > 0;
}

static void close_waiting(struct sservice *svc)
{
	while (!list_empty(&svc->waiting))
		visitor_free(list_first(&svc->waiting, struct visitor, link));
}

/* The last replica went: the port closes and waiting visitors go. */
static void service_down(struct sservice *svc)
{
	close_waiting(svc);
	close_listener(svc);
}

/* After a replica left: with none left the port closes and the waiting
 * visitors go; otherwise the channels asked of it will not come, so its
 * share of the waiting visitors is asked of the others. Deferred to the end
 * of the turn: a replica can leave from deep inside serving a visitor (a
 * write on its control channel failed), where the waiting list and the
 * port must not change under the caller. */
static void on_rebalance(struct loop *l, struct deferred *d)
{
	struct sservice *svc = container_of(d, struct sservice, rebalance);
	size_t asked = 0;
	struct list *n, *tmp;

	if (!svc->nreplicas) {
		service_down(svc);
		return;
	}
	serve_waiting(svc);
	list_for_each_safe(n, tmp, &svc->replicas)
		asked += list_entry(n, struct replica, link)->requested;
	for (size_t i = asked; i < svc->nwaiting; i++)
		if (request_for_waiting(svc) < 0)
			return;
}

/* Every replica beyond the first keeps a pool of its own: the descriptors
 * kept for channels grow and shrink with them. */
static void reserve_replicas(struct sservice *svc, size_t n, bool add)
{
	size_t d = n * (size_t)service_pool_size(svc->cfg), *r = &svc->srv->fd_reserve_replicas;

	*r = add ? *r + d : *r > d ? *r - d : 0;
}

void service_replica_gone(struct sservice *svc)
{
	if (svc->nreplicas)
		reserve_replicas(svc, 1, false);
	loop_defer(svc->srv->loop, &svc->rebalance);
}

/* Without `balance`, as the reference: the newest client is the one. */
static void replace_older(struct sservice *svc, struct replica *r)
{
	while (svc->nreplicas > 1) {
		struct replica *old = list_first(&svc->replicas, struct replica, link);

		if (old == r)
			old = list_entry(r->link.next, struct replica, link);
		log_warn("service %s: a new control channel from %s replaces the one from %s",
			 svc->cfg->name, r->peer, old->peer);
		replica_leave(old, NULL);
	}
}

void service_replica_up(struct sservice *svc, struct replica *r)
{
	int n = service_pool_size(svc->cfg);

	list_add_tail(&svc->replicas, &r->link);
	if (svc->nreplicas++)
		reserve_replicas(svc, 1, true);
	svc->ctrl_ups++;
	if (svc->cfg->has_balance)
		log_info("service %s: control channel established with %s; %zu replica%s",
			 svc->cfg->name, r->peer, svc->nreplicas, svc->nreplicas == 1 ? "" : "s");
	else
		log_info("service %s: control channel established with %s", svc->cfg->name, r->peer);
	if (!svc->cfg->has_balance)
		replace_older(svc, r);
	if (replica_request_channels(r, n) < 0)
		return;
	open_listener(svc);
}

void service_balance_changed(struct sservice *svc)
{
	if (svc->cfg->has_balance || svc->nreplicas < 2)
		return;
	log_info("service %s: balance removed by the reload; keeping the newest of its %zu "
		 "clients", svc->cfg->name, svc->nreplicas);
	replace_older(svc, list_entry(svc->replicas.prev, struct replica, link));
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
	list_init(&svc->replicas);
	list_init(&svc->gone);
	list_init(&svc->waiting);
	timer_init(&svc->bind_retry, on_bind_retry);
	timer_init(&svc->accept_retry, on_accept_retry);
	deferred_init(&svc->rebalance, on_rebalance);
	watcher_init(&svc->lw, -1, on_service_accept);
	limit_init(&svc->limit, srv->loop, cfg->bandwidth_rate);
	list_add_tail(&srv->services, &svc->link);
	return svc;
}

void service_free(struct sservice *svc)
{
	if (svc->nreplicas > 1)
		reserve_replicas(svc, svc->nreplicas - 1, false);
	/* replicas first: a UDP one's channel uses the service socket's state */
	while (!list_empty(&svc->replicas))
		replica_free(list_first(&svc->replicas, struct replica, link));
	while (!list_empty(&svc->gone))
		replica_free(list_first(&svc->gone, struct replica, link));
	svc->nreplicas = 0;
	loop_undefer(svc->srv->loop, &svc->rebalance);
	service_down(svc);
	limit_fini(&svc->limit);
	list_del(&svc->link);
	free(svc);
}
