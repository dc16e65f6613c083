/* The client's internal structures, shared by client.c and udp.c. */
#ifndef CLIENT_INT_H
#define CLIENT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "limit.h"
#include "list.h"
#include "loop.h"
#include "net.h"
#include "protocol.h"
#include "transport.h"

struct connector;
struct udp_client;

/* A server the client serves through: one of `remote_addr`. The transport
 * is per server (TLS names and WebSocket hosts come from the address). */
struct cserver {
	struct list link;		/* in client.servers, in the config's order */
	char *addr;			/* "host:port", our own copy */
	struct transport *tr;
};

struct client {
	struct loop *loop;
	const struct client_config *cfg;
	struct list servers;		/* struct cserver */
	size_t nservers;
	struct list services;		/* struct cservice */
	/* descriptors that data channels being set up may still open (fds.h):
	 * two for a channel being connected (itself, then its local
	 * connection), one for a channel waiting for its command or connecting
	 * to the local service */
	size_t fds_promised;
	size_t locals_connecting;	/* data channels connecting to the local service */
	struct list fd_waiting;		/* data channels waiting for descriptors, oldest first */
	struct deferred fd_kick;	/* descriptors came back: the waiting go on */
	uint64_t shed_log_at;		/* rate limit of the lines about shedding */
	unsigned shed_suppressed;
};

/* CS_WITHDRAWN: no control channel while the local service fails its
 * health checks */
enum cstate { CS_CONNECTING, CS_HELLO, CS_ACK, CS_READY, CS_BACKOFF, CS_WITHDRAWN };

struct cservice;

/* A service as served through one server: its control channel, backoff,
 * data channels and forwarded connections. Each is independent of the
 * service's other upstreams. */
struct cupstream {
	struct list link;			/* in cservice.ups */
	struct cservice *svc;
	struct cserver *srv;

	/* the control channel */
	enum cstate state;
	struct connector *conn;
	struct stream *s;
	struct watcher w;
	uint8_t buf[PROTO_HELLO_LEN];
	size_t have;
	uint8_t session_key[PROTO_DIGEST_LEN];
	struct net_addr server_addr;		/* resolved by the control channel */
	bool have_addr;
	struct timer retry, heartbeat;
	uint32_t backoff_ms;
	uint64_t attempt_at;			/* loop time of the last connect attempt */

	struct list datas;			/* data channels being set up */
	struct list relays;			/* active connections (relay_link) */
	size_t nactive;
	struct udp_client *udp;			/* the UDP data channel, if any */

	uint64_t reconnects, visitors_total, bytes_in, bytes_out;
};

struct cservice {
	struct list link;
	struct client *cli;
	const struct service_config *cfg;
	uint8_t digest[PROTO_DIGEST_LEN];	/* sha256(name) */
	struct list ups;			/* struct cupstream, one per server */
	struct limit limit;			/* bandwidth_limit, all upstreams together */

	/* the health check of the local service (health_check_interval) */
	struct timer hc_timer;
	struct connector *hc_conn;
	unsigned hc_fails;			/* failed checks in a row */
	bool healthy;				/* false: withdrawn from the servers */
	bool hc_passed;				/* a check passed since the service started */
	uint64_t hc_failures;			/* failed checks, all told */

	/* counters of upstreams removed by a reload, so totals never go back */
	uint64_t reconnects, visitors_total, bytes_in, bytes_out;
	uint64_t local_failures, udp_dropped;
	uint64_t refused_fds;			/* visitors closed: descriptors short */
};

/* UDP services (udp.c), per upstream. Takes the data channel; replaces any
 * previous one of the same upstream. */
void udp_client_start(struct cupstream *up, struct stream *s);
void udp_client_stop(struct cupstream *up);
size_t udp_client_sessions(const struct cupstream *up);
/* datagrams dropped by the upstream's current channel (stopped ones add to
 * the service's udp_dropped) */
uint64_t udp_client_dropped(const struct cupstream *up);

#endif
