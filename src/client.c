/* The client role: one control channel per service and server (an
 * upstream), kept up with the reference's backoff; a data channel per
 * CreateDataChannel, connected to the local service when the server starts
 * forwarding on it. With several servers (remote_addr as an array) each
 * upstream lives on its own: a server that goes costs only its visitors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "client_int.h"
#include "connect.h"
#include "fds.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "reload.h"
#include "roles.h"

#define CONNECT_TIMEOUT_MS	10000	/* resolve + connect + proxy + handshake */
#define BACKOFF_INITIAL_MS	500	/* the reference's backoff: x3, +-20 %, capped */
#define BACKOFF_MIN_MS		100	/* even with retry_interval = 0 */
#define STABLE_MS		3000	/* a channel that lived this long resets the backoff */
#define DATA_RETRY_MS		100	/* data channel connect: retried this far apart */
#define DATA_RETRY_FOR_MS	10000	/* ... for at most this long */
#define LOCAL_CONNECT_MS	10000
#define MAX_DATA_SETUP		4096	/* data channels being set up, per service */
#define FD_RESERVE_BASE		4	/* descriptors kept for the api, the resolver, OpenSSL */
#define HC_FAILS_TO_WITHDRAW	3	/* failed health checks in a row that withdraw a service */
#define HC_TIMEOUT_MAX_MS	10000	/* a health check's connect, at most */

/* A data channel from CreateDataChannel until forwarding starts. */
enum dstate { D_CONNECTING, D_WAIT_CMD, D_LOCAL };

struct cdata {
	struct list link;		/* in up->datas */
	struct cupstream *up;
	struct cservice *svc;		/* up->svc */
	enum dstate state;
	struct connector *conn;
	struct stream *s;
	struct watcher w;
	struct timer retry;
	struct list fd_wait;		/* in cli->fd_waiting */
	unsigned promised;		/* counted in cli->fds_promised */
	uint64_t started;
	uint8_t session_key[PROTO_DIGEST_LEN];
	uint8_t buf[PROTO_CMD_LEN];
	size_t have;
};

static void ctrl_connect(struct cupstream *up);
static void cdata_free(struct cdata *d);

/* ---- file descriptors: control channels, then visitors, then new data channels ---- */

/* Kept free for control channels (one per service and server, and the
 * health checks) and the process's own needs; at most a quarter of the
 * limit. */
static size_t fd_reserve(const struct client *cli)
{
	size_t n = FD_RESERVE_BASE + cli->cfg->nservices * (cli->nservers + 1);

	return n < fds_limit() / 4 ? n : fds_limit() / 4;
}

/* A data channel is of use only with the local connection it will need:
 * one is opened when, beyond the reserve, there is room for both and for
 * what the channels already being set up may still open (connections are
 * made a turn later, after resolving). Otherwise a burst of
 * CreateDataChannel takes every descriptor, and the visitors the channels
 * were opened for find none left for their local connections. */
static bool fds_allow_data_channel(const struct client *cli)
{
	return !fds_short(fd_reserve(cli) + cli->fds_promised + 2);
}

/* The local connection of a visitor being served comes before new data
 * channels: only the reserve and the other local connections under way
 * must stay free. */
static bool fds_allow_local(const struct client *cli)
{
	return !fds_short(fd_reserve(cli) + cli->locals_connecting + 1);
}

static void cdata_promise(struct cdata *d, unsigned n)
{
	struct client *cli = d->svc->cli;

	cli->fds_promised = cli->fds_promised - d->promised + n;
	d->promised = n;
}

/* Descriptors (or promises of them) came back: data channels waiting for
 * some go on at once rather than at their next retry. */
static void fds_released(struct client *cli)
{
	if (!list_empty(&cli->fd_waiting))
		loop_defer(cli->loop, &cli->fd_kick);
}

static void cdata_connect(struct cdata *d);

static void on_fd_kick(struct loop *l, struct deferred *df)
{
	struct client *cli = container_of(df, struct client, fd_kick);

	while (!list_empty(&cli->fd_waiting) && fds_allow_data_channel(cli)) {
		struct cdata *d = list_first(&cli->fd_waiting, struct cdata, fd_wait);

		list_del(&d->fd_wait);
		timer_stop(l, &d->retry);
		cdata_connect(d);
	}
}

/* ---- data channels ---- */

static void cdata_free(struct cdata *d)
{
	struct loop *l = d->svc->cli->loop;

	list_del(&d->link);
	list_del(&d->fd_wait);
	cdata_promise(d, 0);
	if (d->state == D_LOCAL)
		d->svc->cli->locals_connecting--;
	connector_cancel(d->conn);
	loop_unwatch(l, &d->w);
	timer_stop(l, &d->retry);
	stream_free(d->s);
	fds_released(d->svc->cli);
	free(d);
}

static void on_relay_done(void *arg, struct relay *r, const struct relay_stats *st,
			  const char *err)
{
	struct cupstream *up = arg;

	up->nactive--;
	fds_released(up->svc->cli);
	/* [0]: local service -> tunnel, [1]: tunnel -> local service */
	up->bytes_out += st->bytes[0];
	up->bytes_in += st->bytes[1];
	if (err)
		log_debug("service %s: connection ended: %s", up->svc->cfg->name, err);
}

static void on_local_connected(void *arg, struct stream *local, const struct net_addr *addr,
			       const char *err)
{
	struct cdata *d = arg;
	struct cservice *svc = d->svc;
	struct cupstream *up = d->up;
	struct stream *tunnel;
	struct relay *r;

	d->conn = NULL;
	if (!local) {
		svc->local_failures++;
		log_warn("service %s: cannot reach the local service %s: %s; closing the visitor's connection",
			 svc->cfg->name, svc->cfg->local_addr, err);
		cdata_free(d);
		return;
	}
	net_set_nodelay(local->fd, svc->cfg->nodelay);
	tunnel = d->s;
	d->s = NULL;
	cdata_free(d);
	r = relay_new(svc->cli->loop, local, tunnel, on_relay_done, up);
	if (!r) {
		log_warn("service %s: out of memory for a connection", svc->cfg->name);
		return;
	}
	/* local -> tunnel goes to the visitor: "out", as on the server */
	relay_set_limits(r, &svc->limit.dir[LIMIT_OUT], &svc->limit.dir[LIMIT_IN]);
	list_add_tail(&up->relays, relay_link(r));
	up->nactive++;
}

/* No descriptor for the local connection: the data channel is closed, and
 * the server closes the visitor (a FIN), rather than the visitor waiting
 * for a connection that cannot be made. */
static void shed_visitor(struct cdata *d)
{
	struct cservice *svc = d->svc;
	struct client *cli = svc->cli;
	uint64_t now = loop_now(cli->loop);

	svc->refused_fds++;
	relay_pools_free();	/* idle pipes are only a cache */
	if (!cli->shed_log_at || now - cli->shed_log_at >= 1000) {
		log_warn("service %s: file descriptors run short (%zu free, %zu kept for control "
			 "channels and local connections under way); closing a visitor's "
			 "connection%s (raise the open file limit, LimitNOFILE= with systemd)",
			 svc->cfg->name, fds_free(), fd_reserve(cli) + cli->locals_connecting,
			 cli->shed_suppressed ? " (and others)" : "");
		cli->shed_log_at = now;
		cli->shed_suppressed = 0;
	} else {
		cli->shed_suppressed++;
	}
	cdata_free(d);
}

static void cdata_start_forward(struct cdata *d, enum data_cmd cmd)
{
	struct cservice *svc = d->svc;
	enum service_type want = cmd == DATA_START_FORWARD_TCP ? SERVICE_TCP : SERVICE_UDP;
	struct stream *s;

	if (svc->cfg->type != want) {
		log_error("service %s: the server forwards %s but this service is %s here: "
			  "make `type` the same in both configs", svc->cfg->name,
			  service_type_name(want), service_type_name(svc->cfg->type));
		cdata_free(d);
		return;
	}
	if (want == SERVICE_UDP) {
		struct cupstream *up = d->up;

		s = d->s;
		d->s = NULL;
		cdata_free(d);
		udp_client_start(up, s);
		return;
	}
	d->up->visitors_total++;
	if (!fds_allow_local(svc->cli)) {
		shed_visitor(d);
		return;
	}
	loop_unwatch(svc->cli->loop, &d->w);
	d->state = D_LOCAL;
	svc->cli->locals_connecting++;
	d->conn = connector_start_plain(svc->cli->loop, svc->cfg->local_addr, LOCAL_CONNECT_MS,
					on_local_connected, d);
	if (!d->conn)
		cdata_free(d);
}

static void on_cdata_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct cdata *d = container_of(w, struct cdata, w);
	int rc;

	if (stream_flush(d->s) == ST_ERROR) {
		log_debug("service %s: data channel broke: %s", d->svc->cfg->name, d->s->err);
		cdata_free(d);
		return;
	}
	rc = stream_read_exact(d->s, d->buf, sizeof d->buf, &d->have);
	if (rc == 1) {
		int cmd = proto_decode_enum(d->buf, 2);
		if (cmd < 0) {
			log_warn("service %s: unknown data channel command from the server; closing it",
				 d->svc->cfg->name);
			cdata_free(d);
			return;
		}
		cdata_start_forward(d, (enum data_cmd)cmd);
		return;
	}
	if (rc == ST_AGAIN) {
		uint32_t ev = d->s->want | (stream_tx_pending(d->s) ? EPOLLOUT : 0);
		loop_watch(l, w, ev);
		return;
	}
	/* The server drops pooled channels it no longer needs (e.g. when a new
	 * control channel replaced the old one): not worth more than debug. */
	log_debug("service %s: data channel closed before use: %s", d->svc->cfg->name,
		  rc == 0 ? "closed by the server" : d->s->err);
	cdata_free(d);
}

static void on_cdata_retry(struct loop *l, struct timer *t)
{
	cdata_connect(container_of(t, struct cdata, retry));
}

static void on_data_connected(void *arg, struct stream *s, const struct net_addr *addr,
			      const char *err)
{
	struct cdata *d = arg;
	struct cservice *svc = d->svc;
	struct loop *l = svc->cli->loop;
	uint8_t hello[PROTO_HELLO_LEN];

	d->conn = NULL;
	if (!s) {
		cdata_promise(d, 0);
		if (loop_now(l) - d->started + DATA_RETRY_MS > DATA_RETRY_FOR_MS) {
			log_warn("service %s: cannot open a data channel: %s; giving up on it",
				 svc->cfg->name, err);
			cdata_free(d);
			return;
		}
		log_debug("service %s: data channel: %s; retrying", svc->cfg->name, err);
		timer_start(l, &d->retry, DATA_RETRY_MS);
		return;
	}
	d->s = s;
	cdata_promise(d, 1);	/* the local connection */
	/* the connector applied the transport's options */
	if (svc->cfg->nodelay != d->up->srv->tr->cfg->tcp.nodelay)
		net_set_nodelay(s->fd, svc->cfg->nodelay);
	proto_encode_hello(hello, HELLO_DATA, d->session_key);
	if (stream_send(s, hello, sizeof hello) < 0) {
		log_debug("service %s: data channel broke: %s", svc->cfg->name, s->err);
		cdata_free(d);
		return;
	}
	d->state = D_WAIT_CMD;
	watcher_init(&d->w, s->fd, on_cdata_event);
	loop_watch(l, &d->w, EPOLLIN | (stream_tx_pending(s) ? EPOLLOUT : 0));
}

static void cdata_connect(struct cdata *d)
{
	struct cservice *svc = d->svc;
	struct loop *l = svc->cli->loop;

	if (!fds_allow_data_channel(svc->cli)) {
		/* it goes on when descriptors come back, or gives up in time */
		if (loop_now(l) - d->started + DATA_RETRY_MS > DATA_RETRY_FOR_MS) {
			log_debug("service %s: no file descriptor free for a data channel within %d s; "
				  "giving up on it", svc->cfg->name, DATA_RETRY_FOR_MS / 1000);
			cdata_free(d);
			return;
		}
		if (!list_linked(&d->fd_wait))
			list_add_tail(&svc->cli->fd_waiting, &d->fd_wait);
		timer_start(l, &d->retry, DATA_RETRY_MS);
		return;
	}
	list_del(&d->fd_wait);
	cdata_promise(d, 2);
	d->conn = connector_start(svc->cli->loop, d->up->srv->tr,
				  d->up->have_addr ? &d->up->server_addr : NULL,
				  CONNECT_TIMEOUT_MS, on_data_connected, d);
	if (!d->conn)
		cdata_free(d);
}

static void open_data_channel(struct cupstream *up)
{
	struct cservice *svc = up->svc;
	struct cdata *d;
	size_t n = 0;
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &up->datas)
		n++;
	if (n >= MAX_DATA_SETUP) {
		log_warn("service %s: %zu data channels to %s already being opened; ignoring the "
			 "request", svc->cfg->name, n, up->srv->addr);
		return;
	}
	d = calloc(1, sizeof *d);
	if (!d)
		return;
	d->up = up;
	d->svc = svc;
	d->state = D_CONNECTING;
	d->started = loop_now(svc->cli->loop);
	memcpy(d->session_key, up->session_key, sizeof d->session_key);
	watcher_init(&d->w, -1, on_cdata_event);
	timer_init(&d->retry, on_cdata_retry);
	list_init(&d->fd_wait);
	list_add_tail(&up->datas, &d->link);
	cdata_connect(d);
}

/* ---- the control channel ---- */

/* Names the server in a service's lines when there are several. */
static const char *via(const struct cupstream *up)
{
	static char buf[NET_HOST_MAX + 32];

	if (up->svc->cli->nservers < 2)
		return "";
	snprintf(buf, sizeof buf, " (server %s)", up->srv->addr);
	return buf;
}

static void ctrl_close(struct cupstream *up)
{
	struct loop *l = up->svc->cli->loop;

	connector_cancel(up->conn);
	up->conn = NULL;
	loop_unwatch(l, &up->w);
	timer_stop(l, &up->heartbeat);
	stream_free(up->s);
	up->s = NULL;
}

static uint32_t next_backoff(struct cupstream *up)
{
	uint32_t cap = (uint32_t)up->svc->cfg->retry_interval * 1000, d, jitter;
	uint32_t r;

	if (cap < BACKOFF_MIN_MS)
		cap = BACKOFF_MIN_MS;
	if (!up->backoff_ms)
		up->backoff_ms = BACKOFF_INITIAL_MS;
	if (up->backoff_ms > cap)
		up->backoff_ms = cap;
	d = up->backoff_ms;
	/* +-20 % so that many clients do not reconnect in lockstep */
	if (proto_random(&r, sizeof r) < 0)
		r = 0;
	jitter = d / 5;
	d = d - jitter + (jitter ? r % (2 * jitter + 1) : 0);
	up->backoff_ms = up->backoff_ms > cap / 3 ? cap : up->backoff_ms * 3;
	return d;
}

/* The control channel failed: retry later, like the reference, forever. */
static void ctrl_failed(struct cupstream *up, const char *why)
{
	struct loop *l = up->svc->cli->loop;
	char msg[512];
	uint32_t d;

	/* why may be the stream's own err, which ctrl_close() frees */
	snprintf(msg, sizeof msg, "%s", why);
	why = msg;
	ctrl_close(up);
	if (loop_now(l) - up->attempt_at > STABLE_MS)
		up->backoff_ms = 0;
	d = next_backoff(up);
	up->state = CS_BACKOFF;
	up->reconnects++;
	log_error("service %s%s: %s; retrying in %u ms", up->svc->cfg->name, via(up), why, d);
	timer_start(l, &up->retry, d);
}

static void on_retry(struct loop *l, struct timer *t)
{
	ctrl_connect(container_of(t, struct cupstream, retry));
}

static void on_heartbeat_timeout(struct loop *l, struct timer *t)
{
	struct cupstream *up = container_of(t, struct cupstream, heartbeat);
	char why[96];

	snprintf(why, sizeof why, "no heartbeat from the server for %d s",
		 up->svc->cli->cfg->heartbeat_timeout);
	ctrl_failed(up, why);
}

static void arm_heartbeat_timeout(struct cupstream *up)
{
	int secs = up->svc->cli->cfg->heartbeat_timeout;

	if (secs > 0)
		timer_start(up->svc->cli->loop, &up->heartbeat, (uint64_t)secs * 1000);
}

static int handle_hello(struct cupstream *up)
{
	struct hello h;
	uint8_t auth[PROTO_AUTH_LEN];

	if (proto_decode_hello(up->buf, &h) < 0 || h.kind != HELLO_CONTROL) {
		ctrl_failed(up, "the server did not answer with a control channel hello");
		return -1;
	}
	if (h.version != PROTO_VERSION) {
		ctrl_failed(up, "protocol version mismatched");
		return -1;
	}
	proto_session_key(up->svc->cfg->token, h.digest, up->session_key);
	memcpy(auth, up->session_key, sizeof auth);
	if (stream_send(up->s, auth, sizeof auth) < 0) {
		ctrl_failed(up, up->s->err);
		return -1;
	}
	up->state = CS_ACK;
	up->have = 0;
	return 0;
}

static int handle_ack(struct cupstream *up)
{
	int a = proto_decode_enum(up->buf, 3);
	char why[160];

	if (a == ACK_OK) {
		/* the backoff stays: a channel the server accepts and drops at
		 * once is retried ever more slowly; only one that lived longer
		 * than STABLE_MS resets it (ctrl_failed), as in the reference */
		up->state = CS_READY;
		up->have = 0;
		log_info("service %s%s: control channel established", up->svc->cfg->name, via(up));
		arm_heartbeat_timeout(up);
		stream_trim(up->s);
		return 0;
	}
	if (a == ACK_SERVICE_NOT_EXIST)
		snprintf(why, sizeof why, "the server has no service named \"%s\" "
			 "(the names in both configs must match)", up->svc->cfg->name);
	else if (a == ACK_AUTH_FAILED)
		snprintf(why, sizeof why, "authentication failed: the token differs from the server's");
	else
		snprintf(why, sizeof why, "the server sent an unknown answer to the handshake");
	ctrl_failed(up, why);
	return -1;
}

static int handle_command(struct cupstream *up)
{
	int cmd = proto_decode_enum(up->buf, 2);

	up->have = 0;
	arm_heartbeat_timeout(up);
	switch (cmd) {
	case CMD_CREATE_DATA_CHANNEL:
		log_trace("service %s: CreateDataChannel", up->svc->cfg->name);
		open_data_channel(up);
		return 0;
	case CMD_HEARTBEAT:
		log_trace("service %s: heartbeat", up->svc->cfg->name);
		return 0;
	}
	ctrl_failed(up, "the server sent an unknown command");
	return -1;
}

static void on_ctrl_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct cupstream *up = container_of(w, struct cupstream, w);

	if (stream_flush(up->s) == ST_ERROR) {
		ctrl_failed(up, up->s->err);
		return;
	}
	/* bounded: yield after a burst of commands */
	for (int i = 0; i < 256; i++) {
		size_t need = up->state == CS_HELLO ? PROTO_HELLO_LEN : PROTO_CMD_LEN;
		int rc = stream_read_exact(up->s, up->buf, need, &up->have), res;

		if (rc == ST_AGAIN) {
			loop_watch(l, w, up->s->want | (stream_tx_pending(up->s) ? EPOLLOUT : 0));
			return;
		}
		if (rc == 0) {
			ctrl_failed(up, up->state == CS_READY ? "the server closed the control channel"
				    : "the server closed the connection during the handshake");
			return;
		}
		if (rc < 0) {
			ctrl_failed(up, up->s->err);
			return;
		}
		if (up->state == CS_HELLO)
			res = handle_hello(up);
		else if (up->state == CS_ACK)
			res = handle_ack(up);
		else
			res = handle_command(up);
		if (res < 0)
			return;
	}
	loop_watch(l, w, EPOLLIN | EPOLLOUT);	/* come back soon */
}

static void on_ctrl_connected(void *arg, struct stream *s, const struct net_addr *addr,
			      const char *err)
{
	struct cupstream *up = arg;
	uint8_t hello[PROTO_HELLO_LEN];

	up->conn = NULL;
	if (!s) {
		ctrl_failed(up, err);
		return;
	}
	up->s = s;
	up->server_addr = *addr;
	up->have_addr = true;
	proto_encode_hello(hello, HELLO_CONTROL, up->svc->digest);
	if (stream_send(s, hello, sizeof hello) < 0) {
		ctrl_failed(up, s->err);
		return;
	}
	up->state = CS_HELLO;
	up->have = 0;
	watcher_init(&up->w, s->fd, on_ctrl_event);
	loop_watch(up->svc->cli->loop, &up->w, EPOLLIN | (stream_tx_pending(s) ? EPOLLOUT : 0));
}

static void ctrl_connect(struct cupstream *up)
{
	up->state = CS_CONNECTING;
	up->attempt_at = loop_now(up->svc->cli->loop);
	up->have_addr = false;
	log_debug("service %s: connecting to %s", up->svc->cfg->name, up->srv->addr);
	up->conn = connector_start(up->svc->cli->loop, up->srv->tr, NULL, CONNECT_TIMEOUT_MS,
				   on_ctrl_connected, up);
	if (!up->conn)
		ctrl_failed(up, "out of memory");
}

/* ---- the health check of the local service ---- */

/* The checks keep a steady pace: one starts every interval, whatever the
 * previous one took. */
static void hc_schedule(struct cservice *svc)
{
	timer_start(svc->cli->loop, &svc->hc_timer,
		    (uint64_t)svc->cfg->health_check_interval * 1000);
}

static void up_withdraw(struct cupstream *up)
{
	ctrl_close(up);
	timer_stop(up->svc->cli->loop, &up->retry);
	up->state = CS_WITHDRAWN;
}

/* Every control channel of the service closes, so the servers stop sending
 * visitors here (with balance, the other replicas get them); the checks go
 * on. Forwarded connections stay: they end on their own. */
static void hc_withdraw(struct cservice *svc, const char *why)
{
	struct list *n, *tmp;

	log_warn("service %s: the local service %s failed %d health checks in a row (last: %s); "
		 "withdrawing the service from the server until it answers again",
		 svc->cfg->name, svc->cfg->local_addr, HC_FAILS_TO_WITHDRAW, why);
	svc->healthy = false;
	list_for_each_safe(n, tmp, &svc->ups)
		up_withdraw(container_of(n, struct cupstream, link));
}

static void hc_restore(struct cservice *svc)
{
	struct list *n, *tmp;

	if (svc->hc_passed)
		log_info("service %s: the local service %s answers again; registering with the "
			 "server", svc->cfg->name, svc->cfg->local_addr);
	else if (svc->hc_failures)
		log_info("service %s: the local service %s answers now; registering with the "
			 "server", svc->cfg->name, svc->cfg->local_addr);
	else
		log_debug("service %s: the local service %s passed its first health check; "
			  "registering with the server", svc->cfg->name, svc->cfg->local_addr);
	svc->hc_passed = true;
	svc->healthy = true;
	list_for_each_safe(n, tmp, &svc->ups) {
		struct cupstream *up = container_of(n, struct cupstream, link);

		up->backoff_ms = 0;
		ctrl_connect(up);
	}
}

static void hc_result(struct cservice *svc, bool ok, const char *why)
{
	if (ok) {
		svc->hc_fails = 0;
		if (!svc->healthy)
			hc_restore(svc);
		return;
	}
	svc->hc_failures++;
	svc->hc_fails++;
	log_debug("service %s: health check of %s failed (%u in a row): %s", svc->cfg->name,
		  svc->cfg->local_addr, svc->hc_fails, why);
	if (!svc->hc_passed && svc->hc_fails == 1)
		log_warn("service %s: the local service %s failed its first health check (%s); "
			 "the service registers with the server once a check passes",
			 svc->cfg->name, svc->cfg->local_addr, why);
	if (svc->healthy && svc->hc_fails >= HC_FAILS_TO_WITHDRAW)
		hc_withdraw(svc, why);
}

static void on_hc_done(void *arg, struct stream *s, const struct net_addr *addr,
		       const char *err)
{
	struct cservice *svc = arg;

	svc->hc_conn = NULL;
	stream_free(s);		/* a connection accepted is the whole check */
	hc_result(svc, s != NULL, err);
}

static void on_hc_timer(struct loop *l, struct timer *t)
{
	struct cservice *svc = container_of(t, struct cservice, hc_timer);
	uint64_t timeout = (uint64_t)svc->cfg->health_check_interval * 1000;

	hc_schedule(svc);
	if (svc->hc_conn) {
		connector_cancel(svc->hc_conn);
		svc->hc_conn = NULL;
		hc_result(svc, false, "no answer within health_check_interval");
	}
	if (timeout > HC_TIMEOUT_MAX_MS)
		timeout = HC_TIMEOUT_MAX_MS;
	svc->hc_conn = connector_start_plain(l, svc->cfg->local_addr, (uint32_t)timeout,
					     on_hc_done, svc);
}

/* ---- building and freeing ---- */

/* A withdrawn service's new upstream waits for the health check too. */
static struct cupstream *up_new(struct cservice *svc, struct cserver *srv)
{
	struct cupstream *up = calloc(1, sizeof *up);

	if (!up)
		return NULL;
	up->svc = svc;
	up->srv = srv;
	list_init(&up->datas);
	list_init(&up->relays);
	watcher_init(&up->w, -1, on_ctrl_event);
	timer_init(&up->retry, on_retry);
	timer_init(&up->heartbeat, on_heartbeat_timeout);
	list_add_tail(&svc->ups, &up->link);
	if (svc->healthy)
		ctrl_connect(up);
	else
		up->state = CS_WITHDRAWN;
	return up;
}

/* Everything that went through this server ends with it (its streams use
 * the server's transport); its counts stay in the service's totals. */
static void up_free(struct cupstream *up)
{
	struct cservice *svc = up->svc;

	ctrl_close(up);
	timer_stop(svc->cli->loop, &up->retry);
	while (!list_empty(&up->datas))
		cdata_free(list_first(&up->datas, struct cdata, link));
	while (!list_empty(&up->relays)) {
		struct relay *r = relay_from_link(up->relays.next);

		up->bytes_out += relay_stats(r)->bytes[0];
		up->bytes_in += relay_stats(r)->bytes[1];
		relay_free(r);
	}
	udp_client_stop(up);		/* adds its drops to svc->udp_dropped */
	svc->reconnects += up->reconnects;
	svc->visitors_total += up->visitors_total;
	svc->bytes_in += up->bytes_in;
	svc->bytes_out += up->bytes_out;
	list_del(&up->link);
	free(up);
}

static void service_free(struct cservice *svc);

static struct cservice *service_new(struct client *cli, const struct service_config *cfg)
{
	struct cservice *svc = calloc(1, sizeof *svc);
	struct list *n, *tmp;

	if (!svc)
		return NULL;
	svc->cli = cli;
	svc->cfg = cfg;
	limit_init(&svc->limit, cli->loop, cfg->bandwidth_rate);
	/* with a health check the service registers after the first check that
	 * passes (it runs at once), as frp's: a client started before its local
	 * service gets no visitors meanwhile */
	svc->healthy = !cfg->health_check_interval;
	proto_digest(cfg->name, strlen(cfg->name), svc->digest);
	list_init(&svc->ups);
	timer_init(&svc->hc_timer, on_hc_timer);
	list_add_tail(&cli->services, &svc->link);
	list_for_each_safe(n, tmp, &cli->servers) {
		if (!up_new(svc, container_of(n, struct cserver, link))) {
			service_free(svc);
			return NULL;
		}
	}
	if (cfg->health_check_interval)
		timer_start(cli->loop, &svc->hc_timer, 0);	/* the first check at once */
	return svc;
}

static void service_free(struct cservice *svc)
{
	timer_stop(svc->cli->loop, &svc->hc_timer);
	connector_cancel(svc->hc_conn);
	while (!list_empty(&svc->ups))
		up_free(list_first(&svc->ups, struct cupstream, link));
	limit_fini(&svc->limit);
	list_del(&svc->link);
	free(svc);
}

static struct cserver *cserver_new(struct client *cli, const char *addr, char *err, size_t errlen)
{
	struct cserver *srv = calloc(1, sizeof *srv);

	if (!srv || !(srv->addr = strdup(addr))) {
		free(srv);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->tr = transport_new(&cli->cfg->transport, false, srv->addr, err, errlen);
	if (!srv->tr) {
		free(srv->addr);
		free(srv);
		return NULL;
	}
	list_add_tail(&cli->servers, &srv->link);
	cli->nservers++;
	return srv;
}

/* The server's upstreams go first: their streams use its transport. */
static void cserver_free(struct client *cli, struct cserver *srv)
{
	struct list *n, *tmp, *u, *utmp;

	list_for_each_safe(n, tmp, &cli->services) {
		struct cservice *svc = container_of(n, struct cservice, link);

		list_for_each_safe(u, utmp, &svc->ups)
			if (container_of(u, struct cupstream, link)->srv == srv)
				up_free(container_of(u, struct cupstream, link));
	}
	list_del(&srv->link);
	cli->nservers--;
	transport_free(srv->tr);
	free(srv->addr);
	free(srv);
}

static bool config_lists(const struct client_config *cfg, const char *addr)
{
	for (size_t i = 0; i < cfg->nremote_addrs; i++)
		if (strcmp(cfg->remote_addrs[i], addr) == 0)
			return true;
	return false;
}

struct client *client_new(struct loop *l, const struct client_config *cfg,
			  char *err, size_t errlen)
{
	struct client *cli = calloc(1, sizeof *cli);

	if (!cli) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	cli->loop = l;
	cli->cfg = cfg;
	list_init(&cli->servers);
	list_init(&cli->services);
	list_init(&cli->fd_waiting);
	deferred_init(&cli->fd_kick, on_fd_kick);
	for (size_t i = 0; i < cfg->nremote_addrs; i++) {
		if (!cserver_new(cli, cfg->remote_addrs[i], err, errlen)) {
			client_free(cli);
			return NULL;
		}
	}
	for (size_t i = 0; i < cfg->nservices; i++) {
		if (!service_new(cli, &cfg->services[i])) {
			snprintf(err, errlen, "out of memory");
			client_free(cli);
			return NULL;
		}
	}
	return cli;
}

void client_free(struct client *cli)
{
	if (!cli)
		return;
	while (!list_empty(&cli->services))
		service_free(list_first(&cli->services, struct cservice, link));
	while (!list_empty(&cli->servers))
		cserver_free(cli, list_first(&cli->servers, struct cserver, link));
	loop_undefer(cli->loop, &cli->fd_kick);
	free(cli);
}

static const struct service_config *cservice_config(struct list *n)
{
	return container_of(n, struct cservice, link)->cfg;
}

static void cservice_set_config(struct list *n, const struct service_config *sc)
{
	struct cservice *svc = container_of(n, struct cservice, link);

	svc->cfg = sc;
	limit_set_rate(&svc->limit, sc->bandwidth_rate);	/* applied live */
}

static void cservice_stop(struct list *n)
{
	service_free(container_of(n, struct cservice, link));
}

static bool cservice_start(void *cli, const struct service_config *sc)
{
	return service_new(cli, sc) != NULL;
}

/* remote_addr changed (the transport did not: that restarts the client):
 * a server no longer listed takes its upstreams with it, a new one gets an
 * upstream for every running service; the others are untouched. */
static void servers_apply(struct client *cli, const struct client_config *cfg)
{
	struct list *n, *tmp;
	char err[512];

	list_for_each_safe(n, tmp, &cli->servers) {
		struct cserver *srv = container_of(n, struct cserver, link);

		if (config_lists(cfg, srv->addr)) {
			transport_rebind(srv->tr, &cfg->transport, srv->addr);
			continue;
		}
		log_info("server %s: removed by the reload; closing its channels and connections",
			 srv->addr);
		cserver_free(cli, srv);
	}
	for (size_t i = 0; i < cfg->nremote_addrs; i++) {
		struct cserver *srv;
		bool known = false;

		list_for_each_safe(n, tmp, &cli->servers)
			known = known || strcmp(container_of(n, struct cserver, link)->addr,
						cfg->remote_addrs[i]) == 0;
		if (known)
			continue;
		srv = cserver_new(cli, cfg->remote_addrs[i], err, sizeof err);
		if (!srv) {
			log_error("server %s: added by the reload but not started: %s",
				  cfg->remote_addrs[i], err);
			continue;
		}
		log_info("server %s: added by the reload", srv->addr);
		list_for_each_safe(n, tmp, &cli->services)
			if (!up_new(container_of(n, struct cservice, link), srv))
				log_error("server %s: out of memory; a service is not served there",
					  srv->addr);
	}
}

void client_apply(struct client *cli, const struct client_config *cfg, struct reload_counts *rc)
{
	static const struct service_ops ops = {
		cservice_config, cservice_set_config, cservice_stop, cservice_start
	};
	const struct client_config *old = cli->cfg;

	cli->cfg = cfg;
	servers_apply(cli, cfg);
	services_apply(&cli->services, &ops, cli, old->services, old->nservices,
		       cfg->services, cfg->nservices, rc);
}

/* ---- metrics and status ---- */

/* dir 0: from the tunnel to the local service (in), 1: back (out) */
static uint64_t up_bytes(const struct cupstream *up, int dir)
{
	uint64_t n = dir == 0 ? up->bytes_in : up->bytes_out;
	const struct list *it;

	for (it = up->relays.next; it != &up->relays; it = it->next)
		n += relay_stats(relay_from_link((struct list *)it))->bytes[dir == 0 ? 1 : 0];
	return n;
}

typedef uint64_t (*up_value)(const struct cupstream *up);

static uint64_t u_up(const struct cupstream *u) { return u->state == CS_READY; }
static uint64_t u_reconnects(const struct cupstream *u) { return u->reconnects; }
static uint64_t u_active(const struct cupstream *u) { return u->nactive; }
static uint64_t u_total(const struct cupstream *u) { return u->visitors_total; }
static uint64_t u_in(const struct cupstream *u) { return up_bytes(u, 0); }
static uint64_t u_out(const struct cupstream *u) { return up_bytes(u, 1); }
static uint64_t u_udp_sessions(const struct cupstream *u) { return udp_client_sessions(u); }
static uint64_t u_udp_dropped(const struct cupstream *u) { return udp_client_dropped(u); }

/* A service's figure: the sum over its upstreams, plus what removed
 * upstreams had counted (base). */
static uint64_t sum_ups(const struct cservice *svc, up_value get, uint64_t base)
{
	const struct list *it;

	for (it = svc->ups.next; it != &svc->ups; it = it->next)
		base += get(container_of(it, struct cupstream, link));
	return base;
}

typedef uint64_t (*svc_value)(const struct cservice *svc);

/* control_channel_up: 1 when the service is registered with any server */
static uint64_t v_up(const struct cservice *s) { return sum_ups(s, u_up, 0) > 0; }
static uint64_t v_reconnects(const struct cservice *s) { return sum_ups(s, u_reconnects, s->reconnects); }
static uint64_t v_active(const struct cservice *s) { return sum_ups(s, u_active, 0); }
static uint64_t v_total(const struct cservice *s) { return sum_ups(s, u_total, s->visitors_total); }
static uint64_t v_in(const struct cservice *s) { return sum_ups(s, u_in, s->bytes_in); }
static uint64_t v_out(const struct cservice *s) { return sum_ups(s, u_out, s->bytes_out); }
static uint64_t v_local_fail(const struct cservice *s) { return s->local_failures; }
static uint64_t v_udp_sessions(const struct cservice *s) { return sum_ups(s, u_udp_sessions, 0); }
static uint64_t v_udp_dropped(const struct cservice *s) { return sum_ups(s, u_udp_dropped, s->udp_dropped); }
static uint64_t v_refused_fds(const struct cservice *s) { return s->refused_fds; }
static uint64_t v_healthy(const struct cservice *s) { return s->healthy; }
static uint64_t v_hc_failures(const struct cservice *s) { return s->hc_failures; }
static uint64_t v_limit(const struct cservice *s) { return s->limit.dir[LIMIT_IN].rate; }
static uint64_t v_delayed_in(const struct cservice *s) { return s->limit.dir[LIMIT_IN].delayed; }
static uint64_t v_delayed_out(const struct cservice *s) { return s->limit.dir[LIMIT_OUT].delayed; }

static void family(struct buf *b, struct client *cli, const char *name, const char *type,
		   const char *help, svc_value get, const char *extra, bool head)
{
	struct list *n, *tmp;

	if (head)
		metrics_family(b, name, type, help);
	list_for_each_safe(n, tmp, &cli->services) {
		struct cservice *svc = container_of(n, struct cservice, link);
		metrics_sample(b, name, svc->cfg->name, extra, get(svc));
	}
}

/* The same per upstream, labelled with the server's address too. */
static void up_family(struct buf *b, struct client *cli, const char *name, const char *type,
		      const char *help, up_value get)
{
	struct list *n, *tmp, *u, *utmp;

	metrics_family(b, name, type, help);
	list_for_each_safe(n, tmp, &cli->services) {
		struct cservice *svc = container_of(n, struct cservice, link);

		list_for_each_safe(u, utmp, &svc->ups) {
			struct cupstream *up = container_of(u, struct cupstream, link);
			struct buf label = { 0 };

			buf_append(&label, "remote_addr=\"", 13);
			metrics_label_value(&label, up->srv->addr);
			buf_append(&label, "\"", 1);
			if (!label.oom)
				metrics_sample(b, name, svc->cfg->name, label.p, get(up));
			buf_free(&label);
		}
	}
}

void client_metrics(struct client *cli, struct buf *b)
{
	family(b, cli, "rathole_service_control_channel_up", "gauge",
	       "Whether the service's control channel is established (to any of its servers).",
	       v_up, NULL, true);
	family(b, cli, "rathole_service_reconnects_total", "counter",
	       "Control channel failures followed by a reconnection attempt.", v_reconnects, NULL, true);
	family(b, cli, "rathole_service_connections_active", "gauge",
	       "Connections being forwarded to the local service.", v_active, NULL, true);
	family(b, cli, "rathole_service_connections_total", "counter",
	       "Connections forwarded to the local service.", v_total, NULL, true);
	family(b, cli, "rathole_service_bytes_total", "counter",
	       "Bytes forwarded: in = to the local service, out = from it.", v_in, "direction=\"in\"", true);
	family(b, cli, "rathole_service_bytes_total", "counter", NULL, v_out, "direction=\"out\"", false);
	family(b, cli, "rathole_service_local_connect_failures_total", "counter",
	       "Visitors closed because the local service could not be reached.", v_local_fail, NULL, true);
	family(b, cli, "rathole_service_visitors_refused_total", "counter",
	       "Visitors closed because file descriptors ran short (kept for control channels).",
	       v_refused_fds, "reason=\"fds\"", true);
	family(b, cli, "rathole_service_healthy", "gauge",
	       "Whether the local service passes its health checks (1 without health_check_interval).",
	       v_healthy, NULL, true);
	family(b, cli, "rathole_service_health_check_failures_total", "counter",
	       "Health checks of the local service that failed.", v_hc_failures, NULL, true);
	family(b, cli, "rathole_service_udp_sessions", "gauge",
	       "UDP visitors with a local socket.", v_udp_sessions, NULL, true);
	family(b, cli, "rathole_service_udp_dropped_total", "counter",
	       "UDP datagrams dropped (queue full, oversized, local errors).", v_udp_dropped, NULL, true);
	up_family(b, cli, "rathole_upstream_control_channel_up", "gauge",
		  "Whether the service's control channel to this server is established.", u_up);
	up_family(b, cli, "rathole_upstream_reconnects_total", "counter",
		  "Control channel failures to this server followed by a reconnection attempt.",
		  u_reconnects);
	up_family(b, cli, "rathole_upstream_connections_active", "gauge",
		  "Connections from this server being forwarded to the local service.", u_active);
	up_family(b, cli, "rathole_upstream_connections_total", "counter",
		  "Connections from this server forwarded to the local service.", u_total);
	family(b, cli, "rathole_service_bandwidth_limit_bytes_per_second", "gauge",
	       "The service's bandwidth_limit, each direction (0: none).", v_limit, NULL, true);
	family(b, cli, "rathole_service_limit_delayed_bytes_total", "counter",
	       "Bytes held back by the bandwidth limit before they moved: in = to the local "
	       "service, out = from it.", v_delayed_in, "direction=\"in\"", true);
	family(b, cli, "rathole_service_limit_delayed_bytes_total", "counter", NULL, v_delayed_out,
	       "direction=\"out\"", false);
	metrics_process(b, "client");
}

static const char *state_name(enum cstate st)
{
	switch (st) {
	case CS_CONNECTING: return "connecting";
	case CS_HELLO:
	case CS_ACK: return "handshake";
	case CS_READY: return "established";
	case CS_BACKOFF: return "retrying";
	case CS_WITHDRAWN: return "withdrawn";
	}
	return "unknown";
}

/* The service's state in one word: the best of its upstreams'. */
static enum cstate service_state(const struct cservice *svc)
{
	static const enum cstate rank[] = {
		CS_READY, CS_ACK, CS_HELLO, CS_CONNECTING, CS_BACKOFF, CS_WITHDRAWN
	};
	const struct list *it;

	for (size_t i = 0; i < sizeof rank / sizeof rank[0]; i++)
		for (it = svc->ups.next; it != &svc->ups; it = it->next)
			if (container_of(it, struct cupstream, link)->state == rank[i])
				return rank[i];
	return svc->healthy ? CS_CONNECTING : CS_WITHDRAWN;
}

static void status_upstreams(struct buf *b, const struct cservice *svc)
{
	const struct list *it;

	buf_printf(b, ", \"upstreams\": [");
	for (it = svc->ups.next; it != &svc->ups; it = it->next) {
		const struct cupstream *up = container_of(it, struct cupstream, link);

		buf_printf(b, "%s{\"remote_addr\": ", it == svc->ups.next ? "" : ", ");
		buf_json_string(b, up->srv->addr);
		buf_printf(b, ", \"control_channel\": %s, \"state\": \"%s\", \"reconnects\": %llu, "
			   "\"connections_active\": %zu, \"connections_total\": %llu, "
			   "\"bytes_in\": %llu, \"bytes_out\": %llu, \"udp_sessions\": %zu}",
			   up->state == CS_READY ? "true" : "false", state_name(up->state),
			   (unsigned long long)up->reconnects, up->nactive,
			   (unsigned long long)up->visitors_total, (unsigned long long)up_bytes(up, 0),
			   (unsigned long long)up_bytes(up, 1), udp_client_sessions(up));
	}
	buf_printf(b, "]");
}

void client_status(struct client *cli, struct buf *b)
{
	struct list *n, *tmp;
	bool first = true;

	buf_printf(b, "{\"role\": \"client\", \"version\": \"%s\", \"uptime_seconds\": %llu, "
		   "\"remote_addr\": ", RATHOLE_VERSION, (unsigned long long)app_uptime_seconds());
	buf_json_string(b, cli->cfg->remote_addrs[0]);
	buf_printf(b, ", \"remote_addrs\": [");
	for (size_t i = 0; i < cli->cfg->nremote_addrs; i++) {
		buf_printf(b, "%s", i ? ", " : "");
		buf_json_string(b, cli->cfg->remote_addrs[i]);
	}
	buf_printf(b, "], \"transport\": \"%s\", \"services\": [",
		   transport_type_name(cli->cfg->transport.type));
	list_for_each_safe(n, tmp, &cli->services) {
		struct cservice *svc = container_of(n, struct cservice, link);
		buf_printf(b, "%s\n  {\"name\": ", first ? "" : ",");
		buf_json_string(b, svc->cfg->name);
		buf_printf(b, ", \"type\": \"%s\", \"local_addr\": ", service_type_name(svc->cfg->type));
		buf_json_string(b, svc->cfg->local_addr);
		if (svc->cfg->range_name) {
			buf_printf(b, ", \"range\": ");
			buf_json_string(b, svc->cfg->range_name);
		}
		limit_status(&svc->limit, b);
		buf_printf(b, ", \"control_channel\": \"%s\", \"reconnects\": %llu, "
			   "\"connections_active\": %llu, \"connections_total\": %llu, "
			   "\"bytes_in\": %llu, \"bytes_out\": %llu, \"udp_sessions\": %llu, "
			   "\"healthy\": %s, \"health_check_interval\": %d, "
			   "\"health_check_failures\": %llu, \"visitors_refused\": %llu",
			   state_name(service_state(svc)), (unsigned long long)v_reconnects(svc),
			   (unsigned long long)v_active(svc), (unsigned long long)v_total(svc),
			   (unsigned long long)v_in(svc), (unsigned long long)v_out(svc),
			   (unsigned long long)v_udp_sessions(svc), svc->healthy ? "true" : "false",
			   svc->cfg->health_check_interval, (unsigned long long)svc->hc_failures,
			   (unsigned long long)svc->refused_fds);
		status_upstreams(b, svc);
		buf_printf(b, "}");
		first = false;
	}
	buf_printf(b, "\n]}\n");
}
