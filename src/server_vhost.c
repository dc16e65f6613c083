/* Virtual hosts: the shared listeners (server.http_bind_addr and
 * https_bind_addr). A visitor's first bytes are peeked, never read, until
 * they name a host (the Host of an HTTP/1.x request, the SNI of a TLS
 * ClientHello: vhost.c); the service claiming that name then receives the
 * visitor through service_visitor_arrive(), exactly as its own port would
 * hand it over. The peeked bytes are still in the socket, so the relay
 * forwards them first, untouched (TLS is never decrypted here).
 *
 * Bounds: a head is read within VHOST_HEAD_MS, MAX_PEEKS reads and
 * VHOST_HTTP_HEAD_MAX / VHOST_TLS_HEAD_MAX bytes (which stay in the
 * kernel's receive buffer: no memory of ours per connection), at most
 * MAX_HEADS at once (the oldest goes first). A visitor whose name is
 * unknown gets a 404 page or an unrecognized_name alert, naming nothing of
 * the configuration. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fds.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "resolve.h"
#include "server_int.h"
#include "vhost.h"

#define VHOST_HEAD_MS		5000	/* from accept to a name */
#define MAX_HEADS		1024	/* heads being read at once */
#define MAX_PEEKS		64	/* reads of one head (it is parsed from its start each time) */
#define LINGER_MS		2000	/* after a refusal, waiting for the peer to close */
#define DRAIN_READS		16	/* reads of 16 KiB per event while lingering */

enum vh_kind { VH_HTTP, VH_HTTPS, VH_KINDS };
enum vh_refusal { R_UNKNOWN, R_NO_CLIENT, R_BAD, R_SLOW, R_TOO_BIG, R_FDS, R_REASONS };

static const char *const kind_names[VH_KINDS] = { "http", "https" };
static const char *const reason_labels[R_REASONS] = {
	"reason=\"unknown_name\"", "reason=\"no_client\"", "reason=\"bad_head\"",
	"reason=\"slow\"", "reason=\"too_big\"", "reason=\"fds\"",
};

struct vlistener {
	struct vhosts *vh;
	enum vh_kind kind;
	char *addr;			/* a copy: a reload frees the config */
	struct resolve_req *rr;
	int lfd;
	struct watcher lw;
	struct timer bind_retry, accept_retry;
	uint32_t bind_backoff, accept_backoff;
	bool bind_failed;
};

struct vhosts {
	struct server *srv;
	struct vlistener l[VH_KINDS];
	struct list heads;		/* struct head, oldest first */
	size_t nheads;
	unsigned flood_warned;
	uint64_t routed[VH_KINDS], refused[VH_KINDS][R_REASONS];
};

/* A visitor of a shared listener whose head is being read, or (closing)
 * that was refused and is given its last words. */
struct head {
	struct list link;
	struct vhosts *vh;
	enum vh_kind kind;
	int fd;
	struct net_addr peer;
	struct watcher w;
	struct timer deadline;
	unsigned peeks;
	bool closing;
};

/* Heads are peeked into one buffer: a turn of the loop reads one at a time. */
static uint8_t peekbuf[VHOST_TLS_HEAD_MAX > VHOST_HTTP_HEAD_MAX ?
		       VHOST_TLS_HEAD_MAX : VHOST_HTTP_HEAD_MAX];

/* TLS alerts (RFC 8446 6): fatal unrecognized_name (112), internal_error (80). */
static const uint8_t alert_unrecognized_name[] = { 21, 3, 3, 0, 2, 2, 112 };
static const uint8_t alert_internal_error[] = { 21, 3, 3, 0, 2, 2, 80 };

static void head_free(struct head *h)
{
	struct loop *l = h->vh->srv->loop;

	list_del(&h->link);
	h->vh->nheads--;
	timer_stop(l, &h->deadline);
	if (h->fd >= 0) {
		loop_unwatch_closing(l, &h->w);
		fds_close(h->fd);
	} else {
		loop_unwatch(l, &h->w);
	}
	free(h);
}

/* Reads and drops what the peer sent: 1 while it is open, 0 once it
 * closed its side, -1 on an error. */
static int drain(int fd)
{
	for (int i = 0; i < DRAIN_READS; i++) {
		ssize_t n = recv(fd, peekbuf, VHOST_HTTP_HEAD_MAX, MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n == 0)
			return 0;
		return errno == EAGAIN || errno == EINTR ? 1 : -1;
	}
	return 1;
}

/* Says the last words, ends our side, and waits briefly for the peer's
 * close: closing with its request unread would reset the connection, and
 * the reset could overtake the words. */
static void head_refuse(struct head *h, enum vh_refusal why, const void *msg, size_t len)
{
	struct loop *l = h->vh->srv->loop;

	h->vh->refused[h->kind][why]++;
	if (!msg || drain(h->fd) < 0 || send(h->fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ||
	    shutdown(h->fd, SHUT_WR) < 0) {
		head_free(h);
		return;
	}
	h->closing = true;
	timer_stop(l, &h->deadline);
	timer_start(l, &h->deadline, LINGER_MS);
	loop_watch(l, &h->w, EPOLLIN);
}

/* A small page that names nothing of the configuration. */
static void refuse_page(struct head *h, enum vh_refusal why, const char *status)
{
	char page[512], body[200];
	int bn, n;

	bn = snprintf(body, sizeof body, "<html><head><title>%s</title></head><body><h1>%s</h1>"
		      "</body></html>\n", status, status);
	n = snprintf(page, sizeof page, "HTTP/1.1 %s\r\nContent-Type: text/html\r\n"
		     "Content-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n%s",
		     status, bn, body);
	head_refuse(h, why, page, n > 0 && (size_t)n < sizeof page ? (size_t)n : 0);
}

static void refuse_unknown(struct head *h)
{
	if (h->kind == VH_HTTP)
		refuse_page(h, R_UNKNOWN, "404 Not Found");
	else
		head_refuse(h, R_UNKNOWN, alert_unrecognized_name, sizeof alert_unrecognized_name);
}

/* The service whose hostnames match best (vhost_match()) on this listener. */
static struct sservice *lookup(struct server *srv, enum vh_kind kind, const char *name)
{
	int skip = kind == VH_HTTP ? VHOST_ON_HTTPS : VHOST_ON_HTTP;
	struct sservice *found = NULL;
	struct list *n, *tmp;
	int best = -1;

	list_for_each_safe(n, tmp, &srv->services) {
		struct sservice *svc = container_of(n, struct sservice, link);
		const struct service_config *c = svc->cfg;

		if (c->vhost == skip)
			continue;
		for (size_t i = 0; i < c->nhostnames; i++) {
			int m = vhost_match(c->hostnames[i], name);

			if (m > best) {
				best = m;
				found = svc;
			}
		}
	}
	return found;
}

static void route(struct head *h, const char *name)
{
	struct vhosts *vh = h->vh;
	struct sservice *svc = lookup(vh->srv, h->kind, name);
	struct net_addr peer = h->peer;
	enum vh_kind kind = h->kind;
	char a[NET_ADDRSTR_MAX];
	int fd;

	if (!svc) {
		log_debug("%s_bind_addr: visitor %s asks for an unknown name", kind_names[h->kind],
			  net_addr_str(&h->peer, a, sizeof a));
		refuse_unknown(h);
		return;
	}
	if (!service_has_client(svc)) {
		log_debug("service %s: visitor %s on %s_bind_addr while the client is away",
			  svc->cfg->name, net_addr_str(&h->peer, a, sizeof a), kind_names[h->kind]);
		if (h->kind == VH_HTTP)
			refuse_page(h, R_NO_CLIENT, "503 Service Unavailable");
		else
			head_refuse(h, R_NO_CLIENT, alert_internal_error, sizeof alert_internal_error);
		return;
	}
	/* the fd goes to the service; the listener's nodelay (on) was inherited */
	fd = h->fd;
	h->fd = -1;
	head_free(h);
	if (!svc->cfg->nodelay)
		net_set_nodelay(fd, false);
	vh->routed[kind]++;
	service_visitor_arrive(svc, fd, &peer);
}

/* Peeks at what has arrived and decides when it names a host. */
static void head_read(struct head *h, uint32_t events)
{
	size_t cap = h->kind == VH_HTTP ? VHOST_HTTP_HEAD_MAX : VHOST_TLS_HEAD_MAX;
	char name[VHOST_NAME_MAX + 1];
	enum vhost_result r;
	ssize_t n;

	n = recv(h->fd, peekbuf, cap, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLERR | EPOLLHUP)))
		return;
	if (n <= 0) {
		head_free(h);	/* gone before it said anything useful */
		return;
	}
	r = h->kind == VH_HTTP ? vhost_http_host(peekbuf, (size_t)n, name) :
				 vhost_tls_sni(peekbuf, (size_t)n, name);
	switch (r) {
	case VHOST_FOUND:
		route(h, name);
		return;
	case VHOST_NONE:
		refuse_unknown(h);
		return;
	case VHOST_MORE:
		/* a peer that ended its side will send no more */
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			head_refuse(h, R_BAD, NULL, 0);
		/* one that sends its head a few bytes at a time would have it
		 * copied and parsed again for each: as slow as a silent one */
		else if (++h->peeks >= MAX_PEEKS)
			head_refuse(h, R_SLOW, NULL, 0);
		return;
	case VHOST_BAD:
		if (h->kind == VH_HTTP)
			refuse_page(h, R_BAD, "400 Bad Request");
		else
			head_refuse(h, R_BAD, NULL, 0);
		return;
	case VHOST_TOO_BIG:
		head_refuse(h, R_TOO_BIG, NULL, 0);
		return;
	}
}

static void on_head_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct head *h = container_of(w, struct head, w);

	if (!h->closing) {
		head_read(h, events);
		return;
	}
	if ((events & (EPOLLERR | EPOLLHUP)) || drain(h->fd) <= 0)
		head_free(h);
}

static void on_head_deadline(struct loop *l, struct timer *t)
{
	struct head *h = container_of(t, struct head, deadline);
	char a[NET_ADDRSTR_MAX];

	if (!h->closing) {
		h->vh->refused[h->kind][R_SLOW]++;
		log_debug("%s_bind_addr: visitor %s sent no complete head within %d s; closing it",
			  kind_names[h->kind], net_addr_str(&h->peer, a, sizeof a),
			  VHOST_HEAD_MS / 1000);
	}
	head_free(h);
}

static void head_new(struct vlistener *vl, int fd, const struct net_addr *peer)
{
	struct vhosts *vh = vl->vh;
	struct loop *l = vh->srv->loop;
	struct head *h;

	if (vh->nheads >= MAX_HEADS) {
		/* under a flood of idle connections the oldest goes first */
		struct head *old = list_first(&vh->heads, struct head, link);
		char a[NET_ADDRSTR_MAX];

		if (!vh->flood_warned++)
			log_warn("more than %d visitors of the shared listeners are sending their "
				 "first request; closing the oldest (from %s)", MAX_HEADS,
				 net_addr_str(&old->peer, a, sizeof a));
		if (!old->closing)
			vh->refused[old->kind][R_SLOW]++;
		head_free(old);
	}
	if (!(h = calloc(1, sizeof *h))) {
		fds_close(fd);
		return;
	}
	h->vh = vh;
	h->kind = vl->kind;
	h->fd = fd;
	h->peer = *peer;
	list_add_tail(&vh->heads, &h->link);
	vh->nheads++;
	timer_init(&h->deadline, on_head_deadline);
	timer_start(l, &h->deadline, VHOST_HEAD_MS);
	/* Edge-triggered: the bytes are only peeked, so a level-triggered
	 * EPOLLIN would fire all along while the rest of the head is awaited. */
	watcher_init(&h->w, fd, on_head_event);
	loop_watch(l, &h->w, EPOLLIN | EPOLLRDHUP | EPOLLET);
	head_read(h, 0);
}

/* ---- the listeners ---- */

static void on_accept_retry(struct loop *l, struct timer *t)
{
	struct vlistener *vl = container_of(t, struct vlistener, accept_retry);

	if (vl->lfd >= 0)
		loop_watch(l, &vl->lw, EPOLLIN);
}

static void on_accept(struct loop *l, struct watcher *w, uint32_t events)
{
	struct vlistener *vl = container_of(w, struct vlistener, lw);
	struct server *srv = vl->vh->srv;
	char what[32];

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct net_addr peer;
		int fd;

		if (i > 0 && !net_accept_pending(vl->lfd))
			return;
		fd = net_accept(vl->lfd, &peer);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				int e = errno;
				relay_pools_free();
				errno = e;
			}
			snprintf(what, sizeof what, "%s_bind_addr", kind_names[vl->kind]);
			pause_accepting(l, &vl->lw, &vl->accept_retry, &vl->accept_backoff, what);
			return;
		}
		vl->accept_backoff = 0;
		/* control and data channels come first (see visitor_admitted()) */
		if (fds_short(fds_kept_for_channels(srv) + 1)) {
			vl->vh->refused[vl->kind][R_FDS]++;
			relay_pools_free();
			fds_close(fd);
			continue;
		}
		head_new(vl, fd, &peer);
	}
}

static void listener_open(struct vlistener *vl);

static void on_bind_retry(struct loop *l, struct timer *t)
{
	listener_open(container_of(t, struct vlistener, bind_retry));
}

static void bind_failed(struct vlistener *vl, const char *why)
{
	uint32_t d = backoff_next(&vl->bind_backoff);

	if (!vl->bind_failed)
		log_error("cannot listen on server.%s_bind_addr %s: %s; retrying every %u ms or less",
			  kind_names[vl->kind], vl->addr, why, BACKOFF_MAX_MS);
	vl->bind_failed = true;
	timer_start(vl->vh->srv->loop, &vl->bind_retry, d);
}

static void on_resolved(void *arg, const char *err, const struct net_addr *addrs, int n)
{
	struct vlistener *vl = arg;
	struct loop *l = vl->vh->srv->loop;

	vl->rr = NULL;
	if (err) {
		bind_failed(vl, err);
		return;
	}
	vl->lfd = net_listen_tcp(&addrs[0], 1024);
	if (vl->lfd < 0) {
		bind_failed(vl, strerror(errno));
		return;
	}
	net_set_nodelay(vl->lfd, true);		/* inherited by visitors */
	vl->bind_backoff = 0;
	vl->bind_failed = false;
	watcher_init(&vl->lw, vl->lfd, on_accept);
	loop_watch(l, &vl->lw, EPOLLIN);
	log_info("listening on %s for virtual hosts (%s)", vl->addr,
		 vl->kind == VH_HTTP ? "HTTP, by Host" : "TLS, by SNI");
}

static void listener_open(struct vlistener *vl)
{
	if (vl->addr && vl->lfd < 0 && !vl->rr)
		vl->rr = resolve_start(vl->addr, SOCK_STREAM, on_resolved, vl);
}

static void listener_close(struct vlistener *vl)
{
	struct loop *l = vl->vh->srv->loop;

	if (vl->rr) {
		resolve_cancel(vl->rr);
		vl->rr = NULL;
	}
	timer_stop(l, &vl->bind_retry);
	timer_stop(l, &vl->accept_retry);
	if (vl->lfd >= 0) {
		loop_unwatch(l, &vl->lw);
		fds_close(vl->lfd);
		vl->lfd = -1;
		log_info("stopped listening on %s for virtual hosts", vl->addr);
	}
	free(vl->addr);
	vl->addr = NULL;
	vl->bind_failed = false;
	vl->bind_backoff = vl->accept_backoff = 0;
}

static const char *configured_addr(const struct server_config *cfg, enum vh_kind kind)
{
	return kind == VH_HTTP ? cfg->http_bind_addr : cfg->https_bind_addr;
}

/* (Re)opens a listener whose address changed; heads being read stay. */
static int listener_set(struct vlistener *vl, const char *addr)
{
	if ((!addr && !vl->addr) || (addr && vl->addr && strcmp(addr, vl->addr) == 0))
		return 0;
	listener_close(vl);
	if (!addr)
		return 0;
	if (!(vl->addr = strdup(addr)))
		return -1;
	listener_open(vl);
	return 0;
}

/* ---- the role's calls (server_int.h) ---- */

int vhost_start(struct server *srv)
{
	struct vhosts *vh = calloc(1, sizeof *vh);

	if (!vh)
		return -1;
	vh->srv = srv;
	list_init(&vh->heads);
	for (int k = 0; k < VH_KINDS; k++) {
		struct vlistener *vl = &vh->l[k];

		vl->vh = vh;
		vl->kind = (enum vh_kind)k;
		vl->lfd = -1;
		watcher_init(&vl->lw, -1, on_accept);
		timer_init(&vl->bind_retry, on_bind_retry);
		timer_init(&vl->accept_retry, on_accept_retry);
	}
	srv->vh = vh;
	return vhost_apply(srv);
}

int vhost_apply(struct server *srv)
{
	int rc = 0;

	for (int k = 0; k < VH_KINDS; k++)
		if (listener_set(&srv->vh->l[k], configured_addr(srv->cfg, (enum vh_kind)k)) < 0)
			rc = -1;
	return rc;
}

void vhost_stop(struct server *srv)
{
	struct vhosts *vh = srv->vh;

	if (!vh)
		return;
	for (int k = 0; k < VH_KINDS; k++)
		listener_close(&vh->l[k]);
	while (!list_empty(&vh->heads))
		head_free(list_first(&vh->heads, struct head, link));
	free(vh);
	srv->vh = NULL;
}

bool vhost_reachable(const struct server *srv, const struct sservice *svc)
{
	const struct vhosts *vh = srv->vh;

	if (!vh || !svc->cfg->nhostnames)
		return false;
	return (svc->cfg->vhost != VHOST_ON_HTTPS && vh->l[VH_HTTP].lfd >= 0) ||
	       (svc->cfg->vhost != VHOST_ON_HTTP && vh->l[VH_HTTPS].lfd >= 0);
}

void vhost_status(const struct server *srv, struct buf *b)
{
	for (int k = 0; k < VH_KINDS; k++) {
		const struct vlistener *vl = &srv->vh->l[k];

		buf_printf(b, "\"%s_bind_addr\": ", kind_names[k]);
		if (vl->addr)
			buf_json_string(b, vl->addr);
		else
			buf_printf(b, "null");
		buf_printf(b, ", \"%s_listening\": %s, ", kind_names[k], vl->lfd >= 0 ? "true" : "false");
	}
	buf_printf(b, "\"vhost_heads_reading\": %zu, ", srv->vh->nheads);
}

void vhost_metrics(const struct server *srv, struct buf *b)
{
	const struct vhosts *vh = srv->vh;
	char extra[64];

	metrics_family(b, "rathole_vhost_connections_total", "counter",
		       "Visitors of the shared listeners routed to a service by name.");
	for (int k = 0; k < VH_KINDS; k++) {
		snprintf(extra, sizeof extra, "listener=\"%s\"", kind_names[k]);
		metrics_sample(b, "rathole_vhost_connections_total", NULL, extra, vh->routed[k]);
	}
	metrics_family(b, "rathole_vhost_refused_total", "counter",
		       "Visitors of the shared listeners not routed: reason = unknown_name (or "
		       "none), no_client (the service's client is away), bad_head (not HTTP/1.x "
		       "or TLS), slow (no name within 5 s or 64 reads), too_big, fds.");
	for (int k = 0; k < VH_KINDS; k++)
		for (int r = 0; r < R_REASONS; r++) {
			snprintf(extra, sizeof extra, "listener=\"%s\",%s", kind_names[k],
				 reason_labels[r]);
			metrics_sample(b, "rathole_vhost_refused_total", NULL, extra,
				       vh->refused[k][r]);
		}
	metrics_family(b, "rathole_vhost_heads_reading", "gauge",
		       "Visitors of the shared listeners whose first request is being read.");
	metrics_sample(b, "rathole_vhost_heads_reading", NULL, NULL, vh->nheads);
}
