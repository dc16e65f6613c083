/* The server's internal structures and the calls between its files:
 *
 *   server.c          the role: the main listener, the handshake and
 *                     authentication of incoming connections, reloads, status
 *   server_service.c  a service: its port, the intake of a visitor, visitors
 *                     waiting for a data channel, pairing one with a channel
 *   server_replica.c  a service's client: its control channel (heartbeats,
 *                     CreateDataChannel) and its pool of idle data channels
 *   udp.c             UDP services' datagrams */
#ifndef SERVER_INT_H
#define SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "limit.h"
#include "list.h"
#include "loop.h"
#include "net.h"
#include "protocol.h"
#include "transport.h"

struct buf;
struct resolve_req;
struct udp_server;
struct vhosts;
struct udp_replica;

struct server {
	struct loop *loop;
	const struct server_config *cfg;
	struct transport *tr;
	struct transport plain;		/* wraps visitor sockets as tcp streams */
	struct resolve_req *rr;
	int lfd;
	struct watcher lw;
	struct timer accept_retry, bind_retry;
	uint32_t accept_backoff, bind_backoff;
	bool retry_bind;		/* started by a reload: never exit over bind_addr */
	struct list pending;		/* struct pconn, oldest first */
	size_t npending;
	unsigned flood_warned;
	struct list services;		/* struct sservice */
	size_t visitors_waiting;	/* of every service: each will need a data channel */
	size_t fd_reserve;		/* kept for control and data channels (server_fd_reserve()) */
	size_t fd_reserve_replicas;	/* and a pool's worth per replica beyond a service's first */
	uint64_t unknown_service, handshake_failures;
	struct vhosts *vh;		/* the shared listeners (server_vhost.c) */
};

/* A replica: one authenticated client of a service, as the server sees
 * it - its control channel (heartbeats, CreateDataChannel), its pool of
 * idle data channels, and the connections forwarded through it. Without
 * `balance` a service has at most one (a newer client replaces it); with
 * it, every client is one and visitors are shared among them.
 *
 * A replica whose control channel went leaves the service's list of live
 * replicas at once (no visitor is sent to it again, its pool is closed) but
 * lives on in the service's `gone` list while connections forwarded
 * through it are still in flight: they keep running, and their figures
 * still add to the service's. */
struct replica {
	struct list link;		/* svc->replicas, or svc->gone */
	struct sservice *svc;
	struct stream *s;		/* the control channel; NULL once gone */
	struct watcher w;
	struct timer heartbeat;
	struct deferred flush;		/* commands queued this turn go out together */
	uint8_t session_key[PROTO_DIGEST_LEN];
	char peer[NET_ADDRSTR_MAX];

	struct list pool;		/* struct pooled */
	size_t npool;
	size_t requested;		/* data channels asked for, not yet arrived */
	struct list relays;		/* connections forwarded through it (relay_link) */
	size_t nactive;
	uint64_t visitors_total;	/* UDP: sessions started */
	uint64_t bytes_in, bytes_out;	/* of finished connections (UDP: all datagrams) */
	struct udp_replica *udp;	/* UDP: its data channel and sessions */
};

/* An idle data channel waiting for a visitor. */
struct pooled {
	struct list link;
	struct replica *r;
	struct stream *s;
	struct watcher w;
};

struct sservice {
	struct list link;
	struct server *srv;
	const struct service_config *cfg;
	uint8_t digest[PROTO_DIGEST_LEN];	/* sha256(name) */
	struct list replicas;			/* struct replica: live ones, oldest first */
	size_t nreplicas;
	struct list gone;			/* replicas gone, connections still in flight */
	struct replica *rr_last;		/* the last one picked (round robin's cursor) */
	struct deferred rebalance;		/* after one left: waiting visitors re-asked */

	/* the service port, open while at least one replica is up */
	struct resolve_req *rr;
	struct net_addr bind_addr;
	int lfd;
	struct watcher lw;
	struct timer bind_retry, accept_retry;
	uint32_t bind_backoff, accept_backoff;
	bool bind_failed;
	bool accept_held;			/* too many visitors waiting */

	struct list waiting;			/* struct visitor */
	size_t nwaiting;
	size_t nactive;				/* forwarded connections, all replicas */
	struct udp_server *udp;
	struct limit limit;			/* bandwidth_limit (rate 0: none) */

	uint64_t visitors_total, bytes_in, bytes_out, auth_failures, ctrl_ups, udp_dropped;
	uint64_t refused_acl, refused_max, refused_fds;
	uint64_t refuse_log_at;			/* rate limit of refusal lines */
	unsigned refuse_suppressed;
};

#define TCP_POOL_SIZE		8	/* data channels asked for in advance */
#define UDP_POOL_SIZE		2
#define RANGE_POOL_SIZE		1	/* per member of a port range: 100 ports cost
					   200 connections to the client, not 900 */

static inline int service_pool_size(const struct service_config *cfg)
{
	if (cfg->range_name)
		return RANGE_POOL_SIZE;
	return cfg->type == SERVICE_UDP ? UDP_POOL_SIZE : TCP_POOL_SIZE;
}
#define MAX_REPLICAS		64	/* clients of one service with balance */
#define ACCEPT_BATCH		64	/* connections accepted per readiness event */
#define BACKOFF_MAX_MS		1000	/* bind and accept retries */

/* Retry delays: 10 ms doubling up to BACKOFF_MAX_MS. */
static inline uint32_t backoff_next(uint32_t *cur)
{
	uint32_t d = *cur ? *cur * 2 : 10;

	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	*cur = d;
	return d;
}

/* Watches a stream for ev, plus writability while it has bytes queued. */
static inline void watch_stream(struct loop *l, struct watcher *w, struct stream *s, uint32_t ev)
{
	if (stream_tx_pending(s))
		ev |= EPOLLOUT;
	loop_watch(l, w, ev);
}

/* Descriptors kept for control and data channels when they run short: a
 * few for the main listener's handshakes and a reconnecting control
 * channel, and a pool's worth per service. At most a quarter of the limit,
 * so that a low limit still leaves room for visitors. (server.c) */
#define FD_RESERVE_BASE		8
size_t server_fd_reserve(const struct server_config *cfg);

/* A service (server_service.c). */
struct sservice *service_new(struct server *srv, const struct service_config *cfg);
/* Closes everything the service owns, forwarded connections included. */
void service_free(struct sservice *svc);
/* The intake of a visitor: every accepted visitor of a TCP service enters
 * here (fd and ownership of it pass to the service), whichever listener
 * accepted it. It is checked (allow/deny, max_connections), counted, and
 * paired with a data channel now or when one arrives. */
void service_visitor_arrive(struct sservice *svc, int fd, const struct net_addr *peer);
/* An authenticated client for the service: it joins the replicas (with
 * `balance`) or replaces the one there (without). */
void service_replica_up(struct sservice *svc, struct replica *r);
/* A replica's control channel went (it is unlinked and its pool closed
 * already): at the end of the turn, visitors waiting are given to the
 * others; with none left the port closes and they are dropped. */
void service_replica_gone(struct sservice *svc);
/* A data channel arrived from replica r: it serves a waiting visitor, or
 * the UDP service, or goes to r's pool. */
void service_offer_channel(struct replica *r, struct stream *s);
/* The live replica the policy picks among those ok() accepts (NULL: all),
 * by their connections in flight; NULL if none qualifies. */
struct replica *service_pick(struct sservice *svc, bool (*ok)(const struct replica *));
/* A reload changed the service's config in place: without `balance` now,
 * only the newest replica stays. */
void service_balance_changed(struct sservice *svc);
/* Whether the service has a client connected (visitors can be served). */
bool service_has_client(const struct sservice *svc);
/* Descriptors kept free for control and data channels, the waiting
 * visitors' included: a visitor is admitted only beyond them. */
size_t fds_kept_for_channels(const struct server *srv);
/* EMFILE and friends: stop accepting for a while instead of spinning. */
void pause_accepting(struct loop *l, struct watcher *lw, struct timer *retry,
		     uint32_t *backoff, const char *what);

/* A service's client (server_replica.c). */
/* A control channel that passed authentication (s: the stream, after Ack). */
struct replica *replica_new(struct sservice *svc, struct stream *s, const uint8_t *session_key,
			    const char *peer);
/* The control channel goes (why: for the log line, NULL: no line): r
 * leaves the live replicas, its pool and UDP channel close; connections in
 * flight through it stay. The service is told (service_replica_gone()). */
void replica_leave(struct replica *r, const char *why);
/* Frees r with whatever it still holds (its connections in flight too). */
void replica_free(struct replica *r);
/* Asks the client for n more data channels; -1 if the control channel
 * broke (r has then left: see replica_leave()). */
int replica_request_channels(struct replica *r, int n);
/* Takes an idle data channel out of r's pool, or NULL. */
struct stream *replica_take_pooled(struct replica *r);
/* Keeps an idle data channel for a later visitor (or closes it when the
 * pool is full). */
void replica_pool_add(struct replica *r, struct stream *s);

/* Virtual hosts: the shared listeners (server_vhost.c). vhost_apply()
 * follows srv->cfg after a reload: a changed address closes the old
 * listener and opens the new one; hostnames are read at each visitor. */
int vhost_start(struct server *srv);
int vhost_apply(struct server *srv);
void vhost_stop(struct server *srv);
/* Whether a shared listener that routes the service's hostnames is open. */
bool vhost_reachable(const struct server *srv, const struct sservice *svc);
void vhost_status(const struct server *srv, struct buf *b);
void vhost_metrics(const struct server *srv, struct buf *b);

/* UDP services (udp.c). */
void udp_server_open(struct sservice *svc, int fd);	/* the service socket is bound */
void udp_server_close(struct sservice *svc);		/* closes socket and channels */
bool udp_replica_wants_channel(const struct replica *r);
void udp_replica_take_channel(struct replica *r, struct stream *s);
void udp_replica_drop(struct replica *r);		/* its channel and its sessions */
uint64_t udp_server_dropped(const struct sservice *svc);

#endif
