/* The server's internal structures, shared by server.c and udp.c. */
#ifndef SERVER_INT_H
#define SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "list.h"
#include "loop.h"
#include "net.h"
#include "protocol.h"
#include "transport.h"

struct resolve_req;
struct udp_server;

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
	uint64_t unknown_service, handshake_failures;
};

/* An authenticated control channel. */
struct ctrl {
	struct sservice *svc;
	struct stream *s;
	struct watcher w;
	struct timer heartbeat;
	uint8_t session_key[PROTO_DIGEST_LEN];
	char peer[NET_ADDRSTR_MAX];
};

/* An idle data channel waiting for a visitor. */
struct pooled {
	struct list link;
	struct sservice *svc;
	struct stream *s;
	struct watcher w;
};

struct sservice {
	struct list link;
	struct server *srv;
	const struct service_config *cfg;
	uint8_t digest[PROTO_DIGEST_LEN];	/* sha256(name) */
	struct ctrl *ctrl;			/* NULL while the client is away */

	/* the service port, open while the control channel is up */
	struct resolve_req *rr;
	struct net_addr bind_addr;
	int lfd;
	struct watcher lw;
	struct timer bind_retry, accept_retry;
	uint32_t bind_backoff, accept_backoff;
	bool bind_failed;
	bool accept_held;			/* too many visitors waiting */

	struct list pool;			/* struct pooled */
	size_t npool;
	struct list waiting;			/* struct visitor */
	size_t nwaiting;
	struct list relays;			/* active connections (relay_link) */
	size_t nactive;
	struct udp_server *udp;

	uint64_t visitors_total, bytes_in, bytes_out, auth_failures, ctrl_ups, udp_dropped;
	uint64_t refused_acl, refused_max;
	uint64_t refuse_log_at;			/* rate limit of refusal lines */
	unsigned refuse_suppressed;
};

/* Asks the client for n more data channels; -1 if the control channel broke. */
int ctrl_request_channels(struct sservice *svc, int n);
/* Takes an idle data channel out of the pool, or NULL. */
struct stream *service_take_pooled(struct sservice *svc);
void pause_accepting(struct loop *l, struct watcher *lw, struct timer *retry,
		     uint32_t *backoff, const char *what);

/* UDP services (udp.c). */
void udp_server_init(struct sservice *svc);
void udp_server_open(struct sservice *svc, int fd);	/* the service socket is bound */
void udp_server_close(struct sservice *svc);		/* closes socket and channel */
bool udp_server_wants_channel(const struct sservice *svc);
void udp_server_take_channel(struct sservice *svc, struct stream *s);
void udp_server_drop_channel(struct sservice *svc);
uint64_t udp_server_dropped(const struct sservice *svc);

#endif
