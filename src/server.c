/* The server role: the main listener (bind_addr), the handshake and
 * authentication of every incoming connection - a control channel goes to
 * its service's client (server_replica.c), a data channel to its service
 * (server_service.c) - and the role's reload, metrics and status. See
 * docs/architecture.md for the life of a connection. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "fds.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "relay.h"
#include "reload.h"
#include "resolve.h"
#include "roles.h"
#include "server_int.h"
#include "transport.h"

#define HANDSHAKE_MS		5000	/* from accept to an authenticated channel */
#define MAX_PENDING		1024	/* connections still in their handshake */
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

static void pconn_free(struct pconn *p);
static void pconn_advance(struct pconn *p);

size_t server_fd_reserve(const struct server_config *cfg)
{
	size_t n = FD_RESERVE_BASE;

	for (size_t i = 0; i < cfg->nservices; i++)
		n += (size_t)service_pool_size(&cfg->services[i]);
	return n;
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

/* A data channel carries the session key of the control channel it
 * belongs to: that names the replica. Constant time in the key: every live
 * session key is compared in full. */
static struct replica *find_replica_by_session(struct server *srv, const uint8_t *key)
{
	struct replica *found = NULL;
	struct list *n, *tmp, *m, *mtmp;

	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		list_for_each_safe(m, mtmp, &svc->replicas) {
			struct replica *r = list_entry(m, struct replica, link);
			if (proto_digest_equal(r->session_key, key))
				found = r;
		}
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
	char peer[NET_ADDRSTR_MAX];
	struct stream *s;
	struct replica *r;
	uint8_t b[PROTO_CMD_LEN];

	proto_session_key(svc->cfg->token, p->nonce, expect);
	if (!proto_digest_equal(expect, p->buf)) {
		svc->auth_failures++;
		log_warn("service %s: authentication failed for %s (wrong token)", svc->cfg->name,
			 p->peer);
		pconn_send_ack(p, ACK_AUTH_FAILED);
		return;
	}
	/* Replicas are bounded: each holds a control channel and a pool. The
	 * client is told nothing (the protocol has no word for it): it sees
	 * its channel close, and retries with its backoff. */
	if (svc->cfg->has_balance && svc->nreplicas >= MAX_REPLICAS) {
		log_warn("service %s: %d clients serve it already; closing the control channel "
			 "from %s", svc->cfg->name, MAX_REPLICAS, p->peer);
		pconn_free(p);
		return;
	}
	proto_encode_u32(b, ACK_OK);
	if (stream_send(p->s, b, sizeof b) < 0) {
		log_debug("service %s: control channel from %s broke during the handshake",
			  svc->cfg->name, p->peer);
		pconn_free(p);
		return;
	}
	memcpy(peer, p->peer, sizeof peer);
	s = pconn_release(p);
	/* keepalive (notices a client that vanished without a FIN) came with
	 * the transport's options from the listening socket */
	if (!srv->tr->cfg->tcp.nodelay)
		net_set_nodelay(s->fd, true);
	r = replica_new(svc, s, expect, peer);
	if (!r) {
		stream_free(s);
		return;
	}
	service_replica_up(svc, r);
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
	struct replica *r = find_replica_by_session(p->srv, h->digest);
	struct sservice *svc;

	if (!r) {
		p->srv->handshake_failures++;
		log_warn("data channel from %s has an unknown session key; closing it", p->peer);
		pconn_free(p);
		return;
	}
	svc = r->svc;
	log_trace("service %s: data channel from %s", svc->cfg->name, p->peer);
	/* the transport's options came from the listening socket */
	if (svc->cfg->nodelay != p->srv->tr->cfg->tcp.nodelay)
		net_set_nodelay(p->s->fd, svc->cfg->nodelay);
	service_offer_channel(r, pconn_release(p));
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
			/* Pooled data channels stay: the visitors they serve are
			 * the way out. Only the relay's idle pipes are a cache. */
			if (errno == EMFILE || errno == ENFILE) {
				int e = errno;
				relay_pools_free();
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
			fds_close(fd);
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

/* A service leaves: connections still in their handshake for it go too. */
static void server_drop_service(struct sservice *svc)
{
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &svc->srv->pending) {
		struct pconn *p = container_of(n, struct pconn, link);
		if (p->svc == svc)
			pconn_free(p);
	}
	service_free(svc);
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
	srv->fd_reserve = server_fd_reserve(cfg);
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
	if (vhost_start(srv) < 0) {
		snprintf(err, errlen, "out of memory");
		server_free(srv);
		return NULL;
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
		fds_close(srv->lfd);
	}
	vhost_stop(srv);
	while (!list_empty(&srv->services))
		server_drop_service(list_first(&srv->services, struct sservice, link));
	while (!list_empty(&srv->pending))
		pconn_free(list_first(&srv->pending, struct pconn, link));
	transport_free(srv->tr);
	free(srv);
}

static const struct service_config *sservice_config(struct list *n)
{
	return container_of(n, struct sservice, link)->cfg;
}

/* Settings read at each use (allow/deny, max_connections, proxy_protocol,
 * balance) change in place: no connection is dropped for them. */
static void sservice_set_config(struct list *n, const struct service_config *sc)
{
	struct sservice *svc = container_of(n, struct sservice, link);

	svc->cfg = sc;
	service_balance_changed(svc);
	limit_set_rate(&svc->limit, sc->bandwidth_rate);	/* applied live */
}

static void sservice_stop(struct list *n)
{
	server_drop_service(container_of(n, struct sservice, link));
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
	srv->fd_reserve = server_fd_reserve(cfg);
	transport_rebind(srv->tr, &cfg->transport, NULL);
	services_apply(&srv->services, &ops, srv, old->services, old->nservices,
		       cfg->services, cfg->nservices, rc);
	if (vhost_apply(srv) < 0)
		log_error("reload: out of memory for the shared listeners");
}

/* ---- metrics and status ---- */

/* Bytes still flowing through a replica's connections. */
static uint64_t relays_bytes(const struct replica *r, int dir)
{
	const struct list *it;
	uint64_t n = 0;

	for (it = r->relays.next; it != &r->relays; it = it->next)
		n += relay_stats(relay_from_link((struct list *)it))->bytes[dir];
	return n;
}

static uint64_t replica_bytes(const struct replica *r, int dir)
{
	return (dir == 0 ? r->bytes_in : r->bytes_out) + relays_bytes(r, dir);
}

/* Bytes of finished connections plus those still flowing, through every
 * replica, those that left included. */
static uint64_t live_bytes(const struct sservice *svc, int dir)
{
	uint64_t n = dir == 0 ? svc->bytes_in : svc->bytes_out;
	const struct list *heads[2] = { &svc->replicas, &svc->gone };

	for (int h = 0; h < 2; h++)
		for (const struct list *it = heads[h]->next; it != heads[h]; it = it->next)
			n += relays_bytes(list_entry(it, struct replica, link), dir);
	return n;
}

static size_t service_pooled(const struct sservice *svc)
{
	size_t n = 0;

	for (const struct list *it = svc->replicas.next; it != &svc->replicas; it = it->next)
		n += list_entry(it, struct replica, link)->npool;
	return n;
}

typedef uint64_t (*svc_value)(const struct sservice *svc);

static uint64_t v_up(const struct sservice *s) { return s->nreplicas > 0; }
static uint64_t v_replicas(const struct sservice *s) { return s->nreplicas; }
static uint64_t v_ups(const struct sservice *s) { return s->ctrl_ups; }
static uint64_t v_active(const struct sservice *s) { return s->nactive; }
static uint64_t v_total(const struct sservice *s) { return s->visitors_total; }
static uint64_t v_authfail(const struct sservice *s) { return s->auth_failures; }
static uint64_t v_pooled(const struct sservice *s) { return service_pooled(s); }
static uint64_t v_waiting(const struct sservice *s) { return s->nwaiting; }
static uint64_t v_in(const struct sservice *s) { return live_bytes(s, 0); }
static uint64_t v_out(const struct sservice *s) { return live_bytes(s, 1); }
static uint64_t v_udp_dropped(const struct sservice *s) { return udp_server_dropped(s); }
static uint64_t v_refused_acl(const struct sservice *s) { return s->refused_acl; }
static uint64_t v_refused_max(const struct sservice *s) { return s->refused_max; }
static uint64_t v_refused_fds(const struct sservice *s) { return s->refused_fds; }
static uint64_t v_limit(const struct sservice *s) { return s->limit.dir[LIMIT_IN].rate; }
static uint64_t v_delayed_in(const struct sservice *s) { return s->limit.dir[LIMIT_IN].delayed; }
static uint64_t v_delayed_out(const struct sservice *s) { return s->limit.dir[LIMIT_OUT].delayed; }

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

typedef uint64_t (*replica_value)(const struct replica *r);

static uint64_t r_active(const struct replica *r) { return r->nactive; }
static uint64_t r_total(const struct replica *r) { return r->visitors_total; }
static uint64_t r_in(const struct replica *r) { return replica_bytes(r, 0); }
static uint64_t r_out(const struct replica *r) { return replica_bytes(r, 1); }
static uint64_t r_pooled(const struct replica *r) { return r->npool; }
static uint64_t r_up(const struct replica *r) { return r->s != NULL; }

/* One series per replica, labelled with its client's address: the live
 * ones, then those that left and still carry connections in flight. */
static void replica_family(struct buf *b, struct server *srv, const char *name,
			   const char *type, const char *help, replica_value get,
			   const char *extra, bool head)
{
	struct list *n, *tmp;
	char label[NET_ADDRSTR_MAX + 64];

	if (head)
		metrics_family(b, name, type, help);
	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		const struct list *heads[2] = { &svc->replicas, &svc->gone };

		for (int h = 0; h < 2; h++)
			for (const struct list *m = heads[h]->next; m != heads[h]; m = m->next) {
				const struct replica *r = list_entry(m, struct replica, link);
				/* an address holds no quote nor backslash: no escaping */
				snprintf(label, sizeof label, "replica=\"%s\"%s%s", r->peer,
					 extra ? "," : "", extra ? extra : "");
				metrics_sample(b, name, svc->cfg->name, label, get(r));
			}
	}
}

static void replica_metrics(struct server *srv, struct buf *b)
{
	replica_family(b, srv, "rathole_replica_control_channel_up", "gauge",
		       "Whether the replica's control channel is up (0: it left, and its "
		       "connections in flight go on).", r_up, NULL, true);
	replica_family(b, srv, "rathole_replica_connections_active", "gauge",
		       "Visitor connections being forwarded through the replica (UDP: sessions).",
		       r_active, NULL, true);
	replica_family(b, srv, "rathole_replica_connections_total", "counter",
		       "Visitors served by the replica (UDP: sessions started).", r_total, NULL, true);
	replica_family(b, srv, "rathole_replica_bytes_total", "counter",
		       "Bytes forwarded through the replica: in = from visitors, out = to visitors.",
		       r_in, "direction=\"in\"", true);
	replica_family(b, srv, "rathole_replica_bytes_total", "counter", NULL, r_out,
		       "direction=\"out\"", false);
	replica_family(b, srv, "rathole_replica_data_channels_pooled", "gauge",
		       "Idle data channels of the replica ready for visitors.", r_pooled, NULL, true);
}

void server_metrics(struct server *srv, struct buf *b)
{
	family(b, srv, "rathole_service_control_channel_up", "gauge",
	       "Whether the service's client is connected.", v_up, NULL, true);
	family(b, srv, "rathole_service_replicas", "gauge",
	       "Clients connected for the service (more than one only with balance).", v_replicas,
	       NULL, true);
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
	       "Visitors (UDP: datagrams) refused: reason = acl (allow/deny), max_connections, "
	       "or fds (file descriptors kept for control and data channels).",
	       v_refused_acl, "reason=\"acl\"", true);
	family(b, srv, "rathole_service_visitors_refused_total", "counter", NULL, v_refused_max,
	       "reason=\"max_connections\"", false);
	family(b, srv, "rathole_service_visitors_refused_total", "counter", NULL, v_refused_fds,
	       "reason=\"fds\"", false);
	replica_metrics(srv, b);
	family(b, srv, "rathole_service_bandwidth_limit_bytes_per_second", "gauge",
	       "The service's bandwidth_limit, each direction (0: none).", v_limit, NULL, true);
	family(b, srv, "rathole_service_limit_delayed_bytes_total", "counter",
	       "Bytes held back by the bandwidth limit before they moved: in = from visitors, "
	       "out = to visitors.", v_delayed_in, "direction=\"in\"", true);
	family(b, srv, "rathole_service_limit_delayed_bytes_total", "counter", NULL, v_delayed_out,
	       "direction=\"out\"", false);
	metrics_family(b, "rathole_connections_handshaking", "gauge",
		       "Connections on bind_addr still in their handshake.");
	metrics_sample(b, "rathole_connections_handshaking", NULL, NULL, srv->npending);
	metrics_family(b, "rathole_handshake_failures_total", "counter",
		       "Connections on bind_addr that failed their handshake.");
	metrics_sample(b, "rathole_handshake_failures_total", NULL, NULL, srv->handshake_failures);
	metrics_family(b, "rathole_unknown_service_total", "counter",
		       "Control channels asking for a service this server does not have.");
	metrics_sample(b, "rathole_unknown_service_total", NULL, NULL, srv->unknown_service);
	metrics_family(b, "rathole_fds_kept_for_channels", "gauge",
		       "File descriptors kept free for control and data channels: a visitor is "
		       "closed at accept while fewer would stay free.");
	metrics_sample(b, "rathole_fds_kept_for_channels", NULL, NULL, fds_kept_for_channels(srv));
	vhost_metrics(srv, b);
	metrics_process(b, "server");
}

/* "hostnames": [...] of a service with virtual hosts, and their listeners. */
static void status_hostnames(struct buf *b, const struct service_config *c)
{
	static const char *const on[] = { "both", "http", "https" };

	if (!c->nhostnames)
		return;
	buf_printf(b, ", \"hostnames\": [");
	for (size_t i = 0; i < c->nhostnames; i++) {
		buf_printf(b, "%s", i ? ", " : "");
		buf_json_string(b, c->hostnames[i]);
	}
	buf_printf(b, "], \"vhost\": \"%s\"", on[c->vhost]);
}

/* The live replicas, then those that left and still carry connections. */
static void replicas_status(const struct sservice *svc, struct buf *b)
{
	const struct list *heads[2] = { &svc->replicas, &svc->gone };
	bool first = true;

	for (int h = 0; h < 2; h++)
		for (const struct list *it = heads[h]->next; it != heads[h]; it = it->next) {
			const struct replica *r = list_entry(it, struct replica, link);

			buf_printf(b, "%s{\"peer\": ", first ? "" : ", ");
			buf_json_string(b, r->peer);
			buf_printf(b, ", \"control_channel\": %s, \"connections_active\": %zu, "
				   "\"connections_total\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
				   "\"data_channels_pooled\": %zu}", r->s ? "true" : "false", r->nactive,
				   (unsigned long long)r->visitors_total,
				   (unsigned long long)replica_bytes(r, 0),
				   (unsigned long long)replica_bytes(r, 1), r->npool);
			first = false;
		}
}

void server_status(struct server *srv, struct buf *b)
{
	struct list *n, *tmp;
	bool first = true;

	buf_printf(b, "{\"role\": \"server\", \"version\": \"%s\", \"uptime_seconds\": %llu, "
		   "\"bind_addr\": ", RATHOLE_VERSION, (unsigned long long)app_uptime_seconds());
	buf_json_string(b, srv->cfg->bind_addr);
	buf_printf(b, ", \"listening\": %s, \"transport\": \"%s\", \"handshaking\": %zu, ",
		   srv->lfd >= 0 ? "true" : "false", srv->tr->impl->name, srv->npending);
	vhost_status(srv, b);
	buf_printf(b, "\"services\": [");
	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		buf_printf(b, "%s\n  {\"name\": ", first ? "" : ",");
		buf_json_string(b, svc->cfg->name);
		buf_printf(b, ", \"type\": \"%s\", \"bind_addr\": ", service_type_name(svc->cfg->type));
		if (svc->cfg->bind_addr)
			buf_json_string(b, svc->cfg->bind_addr);
		else
			buf_printf(b, "null");
		if (svc->cfg->range_name) {
			buf_printf(b, ", \"range\": ");
			buf_json_string(b, svc->cfg->range_name);
		}
		status_hostnames(b, svc->cfg);
		limit_status(&svc->limit, b);
		buf_printf(b, ", \"control_channel\": %s", svc->nreplicas ? "true" : "false");
		if (svc->nreplicas) {
			/* the newest client: without balance, the only one */
			buf_printf(b, ", \"client\": ");
			buf_json_string(b, list_entry(svc->replicas.prev, struct replica, link)->peer);
		}
		if (svc->cfg->has_balance)
			buf_printf(b, ", \"balance\": \"%s\"", balance_policy_name(svc->cfg->balance));
		buf_printf(b, ", \"listening\": %s, \"connections_active\": %zu, "
			   "\"connections_total\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
			   "\"data_channels_pooled\": %zu, \"visitors_refused\": %llu, \"replicas\": [",
			   svc->lfd >= 0 || (service_has_client(svc) && vhost_reachable(srv, svc)) ? "true" : "false",
			   svc->nactive,
			   (unsigned long long)svc->visitors_total, (unsigned long long)live_bytes(svc, 0),
			   (unsigned long long)live_bytes(svc, 1), service_pooled(svc),
			   (unsigned long long)(svc->refused_acl + svc->refused_max + svc->refused_fds));
		replicas_status(svc, b);
		buf_printf(b, "]}");
		first = false;
	}
	buf_printf(b, "\n]}\n");
}