/* UDP services: datagrams travel through one data channel per service in the
 * reference's frames (u8 header length, bincode UdpHeader{from, len}, payload).
 *
 * Server: the service socket's datagrams are framed to the client with the
 * visitor's address; frames from the client are sent to the address in
 * their header. Client: one local socket per visitor address, connected to
 * local_addr, forgotten after udp_idle_timeout seconds, at most
 * udp_max_sessions of them (the least recently used goes first).
 *
 * UDP never waits: a datagram that finds the channel's queue full is dropped
 * and counted, as a congested network would do. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "client_int.h"
#include "fds.h"
#include "log.h"
#include "resolve.h"
#include "server_int.h"
#include "udp.h"

#define UDP_BATCH	16			/* datagrams per recvmmsg */
#define UDP_SLOT	(UDP_FRAME_MAX_HDR + UDP_MAX_PAYLOAD)
#define UDP_SWEEP_MS	1000
#define UDP_SOCKBUF	(4 * 1024 * 1024)	/* asked; the kernel caps it (net.core.[rw]mem_max) */

/* Room for bursts: at 500 Mb/s the default 208 KiB receive buffer holds
 * 2 ms of datagrams, and a process that is not scheduled for longer than
 * that loses the rest. A limit, not an allocation: memory is used only by
 * datagrams actually waiting. */
static void udp_sock_buffers(int fd)
{
	int size = UDP_SOCKBUF;

	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* ---- frames ---- */

void udp_framer_reset(struct udp_framer *f)
{
	free(f->payload);
	memset(f, 0, sizeof *f);
}

int udp_framer_next(struct udp_framer *f, struct stream *s, const uint8_t **payload)
{
	const uint8_t *p;
	ssize_t n;

	if (f->consume) {
		stream_consume(s, f->consume);
		f->consume = 0;
	}
	if (f->ready) {
		f->ready = false;
		f->hhave = f->phave = 0;
	}
	/* the header: 1 length byte, then that many bytes */
	while (f->hhave < 1 || f->hhave < 1 + (size_t)f->hdr[0]) {
		size_t need;

		n = stream_peek(s, &p);
		if (n <= 0)
			return (int)n;
		if (f->hhave == 0 && p[0] != UDP_HDR_V4_LEN && p[0] != UDP_HDR_V6_LEN)
			return UDP_BAD_FRAME;
		need = f->hhave == 0 ? 1 + (size_t)p[0] : 1 + (size_t)f->hdr[0] - f->hhave;
		if ((size_t)n < need)
			need = (size_t)n;
		memcpy(f->hdr + f->hhave, p, need);
		f->hhave += need;
		stream_consume(s, need);
	}
	if (f->phave == 0 && proto_udp_decode_header(f->hdr[0], f->hdr + 1, &f->from, &f->len) < 0)
		return UDP_BAD_FRAME;
	/* the payload: straight from the stream's buffer when it is all there */
	while (f->phave < f->len) {
		n = stream_peek(s, &p);
		if (n <= 0)
			return (int)n;
		if (f->phave == 0 && (size_t)n >= f->len) {
			*payload = p;
			f->consume = f->len;
			f->ready = true;
			return 1;
		}
		if (!f->payload && !(f->payload = malloc(UDP_MAX_PAYLOAD)))
			return ST_ERROR;
		if ((size_t)n > (size_t)f->len - f->phave)
			n = (ssize_t)(f->len - f->phave);
		memcpy(f->payload + f->phave, p, (size_t)n);
		f->phave += (size_t)n;
		stream_consume(s, (size_t)n);
	}
	*payload = f->payload;
	f->ready = true;
	return 1;
}

/* The frame's plaintext is split into records the transport can seal. */
static size_t frame_wire_size(const struct stream *s, size_t plain)
{
	size_t chunks = (plain + s->max_chunk - 1) / s->max_chunk;

	return plain + chunks * ((size_t)s->headroom + s->tailroom);
}

int udp_queue_frame(struct stream *s, uint8_t *frame, size_t len)
{
	if ((size_t)s->tx_len + frame_wire_size(s, len) > STREAM_TX_MAX)
		return 1;
	while (len) {
		size_t n = len < s->max_chunk ? len : s->max_chunk;
		if (stream_queue(s, frame, n) < 0)
			return -1;
		frame += n;
		len -= n;
	}
	return 0;
}

/* A receive batch: each slot leaves room for the frame header before the
 * datagram, so a frame is contiguous without copying the payload. */
struct udp_batch {
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct net_addr from[UDP_BATCH];
	uint8_t *slots;
};

static int batch_init(struct udp_batch *b)
{
	if (!b->slots && !(b->slots = malloc((size_t)UDP_BATCH * UDP_SLOT)))
		return -1;
	return 0;
}

static int batch_recv(struct udp_batch *b, int fd, bool want_from)
{
	int n;

	for (int i = 0; i < UDP_BATCH; i++) {
		b->iov[i].iov_base = b->slots + (size_t)i * UDP_SLOT + UDP_FRAME_MAX_HDR;
		b->iov[i].iov_len = UDP_MAX_PAYLOAD;
		memset(&b->msgs[i].msg_hdr, 0, sizeof b->msgs[i].msg_hdr);
		b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
		b->msgs[i].msg_hdr.msg_iovlen = 1;
		if (want_from) {
			b->msgs[i].msg_hdr.msg_name = &b->from[i].u;
			b->msgs[i].msg_hdr.msg_namelen = sizeof b->from[i].u;
		}
	}
	do
		n = recvmmsg(fd, b->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Frames datagram i of the batch in place; returns its start and length. */
static uint8_t *batch_frame(struct udp_batch *b, int i, const struct net_addr *from,
			    size_t *flen)
{
	uint8_t hdr[UDP_FRAME_MAX_HDR];
	uint8_t *payload = b->iov[i].iov_base;
	size_t len = b->msgs[i].msg_len;
	int h = proto_udp_encode_header(hdr, from, (uint16_t)len);

	if (h < 0)
		return NULL;
	memcpy(payload - h, hdr, (size_t)h);
	*flen = (size_t)h + len;
	return payload - h;
}

static void batch_free(struct udp_batch *b)
{
	free(b->slots);
	b->slots = NULL;
}

/* A send batch: the datagrams decoded in one turn go out with sendmmsg, a
 * syscall per UDP_BATCH instead of one each. Their payloads are copied in:
 * a decoded payload lives in the stream's buffer only until the next frame. */
#define UDP_TX_BYTES	(64 * 1024)	/* >= UDP_MAX_PAYLOAD: any datagram fits */

struct udp_txbatch {
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct net_addr to[UDP_BATCH];	/* server: each datagram's visitor */
	uint8_t *buf;
	size_t used;
	int n;
};

/* Adds a datagram (to: NULL on a connected socket). Returns false when the
 * batch has no room for it (flush first) or no memory. */
static bool txb_add(struct udp_txbatch *b, const uint8_t *p, size_t len,
		    const struct net_addr *to)
{
	struct msghdr *h;

	if (!b->buf && !(b->buf = malloc(UDP_TX_BYTES)))
		return false;
	if (b->n == UDP_BATCH || b->used + len > UDP_TX_BYTES)
		return false;
	memcpy(b->buf + b->used, p, len);
	b->iov[b->n].iov_base = b->buf + b->used;
	b->iov[b->n].iov_len = len;
	h = &b->msgs[b->n].msg_hdr;
	memset(h, 0, sizeof *h);
	h->msg_iov = &b->iov[b->n];
	h->msg_iovlen = 1;
	if (to) {
		b->to[b->n] = *to;
		h->msg_name = &b->to[b->n].u;
		h->msg_namelen = to->len;
	}
	b->used += len;
	b->n++;
	return true;
}

/* Sends the batch; returns how many datagrams were dropped. A datagram the
 * kernel refuses is dropped alone, as sendto() would have done. */
static uint64_t txb_flush(struct udp_txbatch *b, int fd)
{
	uint64_t dropped = 0;
	int i = 0;

	while (i < b->n) {
		int r = sendmmsg(fd, b->msgs + i, (unsigned)(b->n - i), MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		i += r > 0 ? r : 0;
		if (i < b->n) {		/* message i failed: drop it, go on */
			dropped++;
			i++;
		}
	}
	b->n = 0;
	b->used = 0;
	return dropped;
}

static void txb_free(struct udp_txbatch *b)
{
	free(b->buf);
	b->buf = NULL;
	b->n = 0;
	b->used = 0;
}

/* ---- server ---- */

#define FRAME_BUDGET	64	/* frames per turn before yielding to others */

struct udp_server {
	struct sservice *svc;
	int fd;
	struct watcher uw;
	struct stream *ch;
	struct watcher cw;
	struct deferred more;		/* frames left in the stream's buffer */
	struct udp_framer rx;
	struct udp_batch batch;
	struct udp_txbatch tx;		/* datagrams to visitors */
	uint64_t dropped;
};

static void us_update(struct udp_server *u)
{
	struct loop *l = u->svc->srv->loop;
	bool room;

	if (!u->ch) {
		loop_watch(l, &u->uw, 0);
		return;
	}
	/* stop reading visitors while the channel's queue is nearly full: the
	 * kernel drops for us, cheaper than reading to drop */
	room = (size_t)u->ch->tx_len + 2 * UDP_SLOT <= STREAM_TX_MAX;
	if (u->fd >= 0)
		loop_watch(l, &u->uw, room ? EPOLLIN : 0);
	loop_watch(l, &u->cw, EPOLLIN | (stream_tx_pending(u->ch) ? EPOLLOUT : 0));
}

static void us_free_channel(struct udp_server *u)
{
	if (!u->ch)
		return;
	loop_unwatch(u->svc->srv->loop, &u->cw);
	loop_undefer(u->svc->srv->loop, &u->more);
	stream_free(u->ch);
	u->ch = NULL;
	udp_framer_reset(&u->rx);
}

/* The channel broke: take the next pooled one, and ask for a replacement. */
static void us_channel_lost(struct udp_server *u, const char *why)
{
	struct sservice *svc = u->svc;
	struct stream *s;

	log_warn("service %s: UDP data channel lost: %s", svc->cfg->name, why);
	us_free_channel(u);
	if (ctrl_request_channels(svc, 1) < 0)
		return;
	s = service_take_pooled(svc);
	if (s)
		udp_server_take_channel(svc, s);
	else
		us_update(u);
}

static void us_send(struct udp_server *u, const uint8_t *payload, size_t len)
{
	if (u->fd < 0)
		return;
	if (txb_add(&u->tx, payload, len, &u->rx.from))
		return;
	u->dropped += txb_flush(&u->tx, u->fd);
	if (!txb_add(&u->tx, payload, len, &u->rx.from))
		u->dropped++;
}

static void us_flush(struct udp_server *u)
{
	if (u->tx.n && u->fd >= 0)
		u->dropped += txb_flush(&u->tx, u->fd);
	u->tx.n = 0;
	u->tx.used = 0;
}

static void on_us_channel(struct loop *l, struct watcher *w, uint32_t events)
{
	struct udp_server *u = container_of(w, struct udp_server, cw);

	if (stream_flush(u->ch) == ST_ERROR) {
		us_channel_lost(u, u->ch->err);
		return;
	}
	for (int i = 0; ; i++) {
		const uint8_t *payload;
		int rc;

		/* Decoded frames may remain in the stream's buffer, which epoll
		 * does not announce: come back on the next turn. */
		if (i == FRAME_BUDGET) {
			loop_defer(l, &u->more);
			break;
		}
		rc = udp_framer_next(&u->rx, u->ch, &payload);
		if (rc == ST_AGAIN)
			break;
		if (rc != 1) {
			us_flush(u);
			us_channel_lost(u, rc == 0 ? "closed by the client" :
					rc == UDP_BAD_FRAME ? "malformed frame from the client" :
					u->ch->err);
			return;
		}
		us_send(u, payload, u->rx.len);
	}
	us_flush(u);
	us_update(u);
}

static void on_us_socket(struct loop *l, struct watcher *w, uint32_t events)
{
	struct udp_server *u = container_of(w, struct udp_server, uw);
	int n;

	if (!u->ch || batch_init(&u->batch) < 0) {
		us_update(u);
		return;
	}
	n = batch_recv(&u->batch, u->fd, true);
	for (int i = 0; i < n; i++) {
		size_t flen;
		uint8_t *frame;

		const struct service_config *c = u->svc->cfg;

		u->batch.from[i].len = u->batch.msgs[i].msg_hdr.msg_namelen;
		if (u->batch.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
			u->dropped++;
			continue;
		}
		if ((c->nallow || c->ndeny) &&
		    !acl_permits(c->allow, c->nallow, c->deny, c->ndeny, &u->batch.from[i])) {
			u->svc->refused_acl++;
			continue;
		}
		frame = batch_frame(&u->batch, i, &u->batch.from[i], &flen);
		if (!frame || udp_queue_frame(u->ch, frame, flen) != 0)
			u->dropped++;
	}
	if (stream_flush(u->ch) == ST_ERROR) {
		us_channel_lost(u, u->ch->err);
		return;
	}
	us_update(u);
}

static void on_us_more(struct loop *l, struct deferred *d)
{
	struct udp_server *u = container_of(d, struct udp_server, more);

	if (u->ch)
		on_us_channel(l, &u->cw, EPOLLIN);
}

void udp_server_init(struct sservice *svc)
{
	svc->udp = NULL;
}

static struct udp_server *us_get(struct sservice *svc)
{
	struct udp_server *u = svc->udp;

	if (u)
		return u;
	u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->svc = svc;
	u->fd = -1;
	watcher_init(&u->uw, -1, on_us_socket);
	watcher_init(&u->cw, -1, on_us_channel);
	deferred_init(&u->more, on_us_more);
	svc->udp = u;
	return u;
}

void udp_server_open(struct sservice *svc, int fd)
{
	struct udp_server *u = us_get(svc);

	if (!u) {
		fds_close(fd);
		return;
	}
	u->fd = fd;
	udp_sock_buffers(fd);
	watcher_init(&u->uw, fd, on_us_socket);
	if (!u->ch) {
		struct stream *s = service_take_pooled(svc);
		if (s) {
			udp_server_take_channel(svc, s);
			return;
		}
	}
	us_update(u);
}

void udp_server_close(struct sservice *svc)
{
	struct udp_server *u = svc->udp;

	if (!u)
		return;
	if (u->dropped)
		log_info("service %s: %llu datagrams dropped (queue full or oversized)",
			 svc->cfg->name, (unsigned long long)u->dropped);
	svc->udp_dropped += u->dropped;
	us_free_channel(u);
	loop_unwatch(svc->srv->loop, &u->uw);
	/* the socket itself is the service's listener: server_service.c closed it */
	batch_free(&u->batch);
	txb_free(&u->tx);
	free(u);
	svc->udp = NULL;
}

bool udp_server_wants_channel(const struct sservice *svc)
{
	return !svc->udp || !svc->udp->ch;
}

void udp_server_take_channel(struct sservice *svc, struct stream *s)
{
	struct udp_server *u = us_get(svc);
	uint8_t b[PROTO_CMD_LEN];

	if (!u) {
		stream_free(s);
		return;
	}
	proto_encode_u32(b, DATA_START_FORWARD_UDP);
	if (stream_send(s, b, sizeof b) < 0) {
		stream_free(s);
		us_channel_lost(u, "broken before use");
		return;
	}
	u->ch = s;
	watcher_init(&u->cw, s->fd, on_us_channel);
	log_debug("service %s: UDP data channel ready", svc->cfg->name);
	us_update(u);
}

void udp_server_drop_channel(struct sservice *svc)
{
	if (svc->udp) {
		us_free_channel(svc->udp);
		us_update(svc->udp);
	}
}

uint64_t udp_server_dropped(const struct sservice *svc)
{
	return svc->udp_dropped + (svc->udp ? svc->udp->dropped : 0);
}

/* ---- client ---- */

struct usess {
	struct list lru;		/* least recently used first */
	struct usess *hnext;
	struct udp_client *uc;
	struct net_addr visitor;
	int fd;
	struct watcher w;
	uint64_t last;			/* loop time of the last datagram */
};

struct udp_client {
	struct cservice *svc;
	struct cupstream *up;
	struct stream *ch;
	struct watcher cw;
	struct deferred more;		/* frames left in the stream's buffer */
	struct udp_framer rx;
	struct net_addr local;
	bool have_local;
	struct resolve_req *rr;
	struct usess **table;
	size_t nbuckets, nsess;
	struct list lru;
	struct timer sweep;
	struct udp_batch batch;
	struct udp_txbatch tx;		/* datagrams to one session's local socket */
	int tx_fd;			/* ... that socket */
	struct net_addr tx_visitor;	/* ... and its visitor */
	uint64_t dropped, evicted;
};

static uint32_t addr_hash(const struct net_addr *a)
{
	const uint8_t *p;
	size_t n;
	uint32_t h = 2166136261u;
	uint16_t port;

	if (a->u.sa.sa_family == AF_INET) {
		p = (const uint8_t *)&a->u.in4.sin_addr;
		n = 4;
		port = a->u.in4.sin_port;
	} else {
		p = (const uint8_t *)&a->u.in6.sin6_addr;
		n = 16;
		port = a->u.in6.sin6_port;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	h = (h ^ (port & 0xff)) * 16777619u;
	h = (h ^ (port >> 8)) * 16777619u;
	return h;
}

static struct usess **bucket(struct udp_client *uc, const struct net_addr *a)
{
	return &uc->table[addr_hash(a) & (uc->nbuckets - 1)];
}

static void sess_free(struct usess *s)
{
	struct udp_client *uc = s->uc;
	struct usess **pp = bucket(uc, &s->visitor);

	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	list_del(&s->lru);
	uc->nsess--;
	loop_unwatch(uc->svc->cli->loop, &s->w);
	fds_close(s->fd);
	free(s);
}

static void uc_update(struct udp_client *uc);

static void uc_channel_lost(struct udp_client *uc, const char *why)
{
	struct cservice *svc = uc->svc;

	bool several = svc->cli->nservers > 1;

	log_warn("service %s%s%s%s: UDP data channel lost: %s", svc->cfg->name,
		 several ? " (server " : "", several ? uc->up->srv->addr : "", several ? ")" : "",
		 why);
	/* the server will hand a new channel out of its pool */
	udp_client_stop(uc->up);
}

static void on_sess_readable(struct loop *l, struct watcher *w, uint32_t events)
{
	struct usess *s = container_of(w, struct usess, w);
	struct udp_client *uc = s->uc;
	int n;

	if (batch_init(&uc->batch) < 0)
		return;
	n = batch_recv(&uc->batch, s->fd, false);
	if (n <= 0)
		return;
	s->last = loop_now(l);
	list_del(&s->lru);
	list_add_tail(&uc->lru, &s->lru);
	for (int i = 0; i < n; i++) {
		size_t flen;
		uint8_t *frame;

		if (uc->batch.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
			uc->dropped++;
			continue;
		}
		frame = batch_frame(&uc->batch, i, &s->visitor, &flen);
		if (!frame || udp_queue_frame(uc->ch, frame, flen) != 0)
			uc->dropped++;
	}
	if (stream_flush(uc->ch) == ST_ERROR) {
		uc_channel_lost(uc, uc->ch->err);
		return;
	}
	uc_update(uc);
}

static void arm_sweep(struct udp_client *uc)
{
	struct usess *oldest;
	uint64_t timeout = (uint64_t)uc->svc->cfg->udp_idle_timeout * 1000, when;
	struct loop *l = uc->svc->cli->loop;

	if (list_empty(&uc->lru)) {
		timer_stop(l, &uc->sweep);
		return;
	}
	oldest = list_first(&uc->lru, struct usess, lru);
	when = oldest->last + timeout;
	timer_start(l, &uc->sweep, when > loop_now(l) ? when - loop_now(l) : 0);
}

static void on_sweep(struct loop *l, struct timer *t)
{
	struct udp_client *uc = container_of(t, struct udp_client, sweep);
	uint64_t timeout = (uint64_t)uc->svc->cfg->udp_idle_timeout * 1000;

	while (!list_empty(&uc->lru)) {
		struct usess *s = list_first(&uc->lru, struct usess, lru);
		char a[NET_ADDRSTR_MAX];
		if (s->last + timeout > loop_now(l))
			break;
		log_debug("service %s: UDP session of %s idle for %d s; forgetting it",
			  uc->svc->cfg->name, net_addr_str(&s->visitor, a, sizeof a),
			  uc->svc->cfg->udp_idle_timeout);
		sess_free(s);
	}
	arm_sweep(uc);
}

static struct usess *sess_get(struct udp_client *uc, const struct net_addr *visitor)
{
	struct loop *l = uc->svc->cli->loop;
	struct usess *s, **b = bucket(uc, visitor);
	int fd;

	for (s = *b; s; s = s->hnext)
		if (net_addr_equal(&s->visitor, visitor))
			return s;
	if (uc->nsess >= (size_t)uc->svc->cfg->udp_max_sessions) {
		if (!uc->evicted++)
			log_warn("service %s: more than %d UDP visitors at once; forgetting the least "
				 "recently active ones (udp_max_sessions)", uc->svc->cfg->name,
				 uc->svc->cfg->udp_max_sessions);
		sess_free(list_first(&uc->lru, struct usess, lru));
	}
	fd = socket(uc->local.u.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	fds_opened(1);
	if (connect(fd, &uc->local.u.sa, uc->local.len) < 0 || !(s = calloc(1, sizeof *s))) {
		fds_close(fd);
		return NULL;
	}
	udp_sock_buffers(fd);
	s->uc = uc;
	s->visitor = *visitor;
	s->fd = fd;
	s->last = loop_now(l);
	watcher_init(&s->w, fd, on_sess_readable);
	loop_watch(l, &s->w, EPOLLIN);
	s->hnext = *b;
	*b = s;
	list_add_tail(&uc->lru, &s->lru);
	uc->nsess++;
	if (!timer_armed(&uc->sweep))
		arm_sweep(uc);
	return s;
}

static void uc_flush(struct udp_client *uc)
{
	if (uc->tx.n)
		uc->dropped += txb_flush(&uc->tx, uc->tx_fd);
}

static void uc_deliver(struct udp_client *uc, const uint8_t *payload, size_t len)
{
	struct usess *s;

	if (!uc->have_local) {
		uc->dropped++;		/* local_addr is still being resolved */
		return;
	}
	/* a batch holds one session's datagrams; flushed before sess_get()
	 * may evict (close) the session it is for */
	if (uc->tx.n && !net_addr_equal(&uc->tx_visitor, &uc->rx.from))
		uc_flush(uc);
	s = sess_get(uc, &uc->rx.from);
	if (!s) {
		uc->dropped++;
		return;
	}
	s->last = loop_now(uc->svc->cli->loop);
	list_del(&s->lru);
	list_add_tail(&uc->lru, &s->lru);
	if (!txb_add(&uc->tx, payload, len, NULL)) {
		uc_flush(uc);
		if (!txb_add(&uc->tx, payload, len, NULL)) {
			uc->dropped++;
			return;
		}
	}
	uc->tx_fd = s->fd;
	uc->tx_visitor = s->visitor;
}

static void on_uc_channel(struct loop *l, struct watcher *w, uint32_t events)
{
	struct udp_client *uc = container_of(w, struct udp_client, cw);

	if (stream_flush(uc->ch) == ST_ERROR) {
		uc_channel_lost(uc, uc->ch->err);
		return;
	}
	for (int i = 0; ; i++) {
		const uint8_t *payload;
		int rc;

		if (i == FRAME_BUDGET) {
			loop_defer(l, &uc->more);
			break;
		}
		rc = udp_framer_next(&uc->rx, uc->ch, &payload);
		if (rc == ST_AGAIN)
			break;
		if (rc != 1) {
			uc_flush(uc);
			uc_channel_lost(uc, rc == 0 ? "closed by the server" :
					rc == UDP_BAD_FRAME ? "malformed frame from the server" :
					uc->ch->err);
			return;
		}
		uc_deliver(uc, payload, uc->rx.len);
	}
	uc_flush(uc);
	uc_update(uc);
}

static void uc_update(struct udp_client *uc)
{
	loop_watch(uc->svc->cli->loop, &uc->cw,
		   EPOLLIN | (stream_tx_pending(uc->ch) ? EPOLLOUT : 0));
}

static void on_local_resolved(void *arg, const char *err, const struct net_addr *addrs, int n)
{
	struct udp_client *uc = arg;

	uc->rr = NULL;
	if (err) {
		log_error("service %s: local_addr %s: %s", uc->svc->cfg->name,
			  uc->svc->cfg->local_addr, err);
		return;
	}
	uc->local = addrs[0];
	uc->have_local = true;
}

static void on_uc_more(struct loop *l, struct deferred *d)
{
	on_uc_channel(l, &container_of(d, struct udp_client, more)->cw, EPOLLIN);
}

void udp_client_start(struct cupstream *up, struct stream *ch)
{
	struct cservice *svc = up->svc;
	struct udp_client *uc;
	size_t nb = 16;

	udp_client_stop(up);
	uc = calloc(1, sizeof *uc);
	while (nb < (size_t)svc->cfg->udp_max_sessions && nb < 65536)
		nb *= 2;
	if (!uc || !(uc->table = calloc(nb, sizeof *uc->table))) {
		free(uc);
		stream_free(ch);
		return;
	}
	uc->svc = svc;
	uc->up = up;
	uc->ch = ch;
	uc->nbuckets = nb;
	list_init(&uc->lru);
	timer_init(&uc->sweep, on_sweep);
	watcher_init(&uc->cw, ch->fd, on_uc_channel);
	deferred_init(&uc->more, on_uc_more);
	up->udp = uc;
	if (net_parse_numeric(svc->cfg->local_addr, &uc->local) == 0)
		uc->have_local = true;
	else
		uc->rr = resolve_start(svc->cfg->local_addr, SOCK_DGRAM, on_local_resolved, uc);
	log_debug("service %s: UDP forwarding to %s", svc->cfg->name, svc->cfg->local_addr);
	/* frames may already be buffered behind the command */
	on_uc_channel(svc->cli->loop, &uc->cw, EPOLLIN);
}

void udp_client_stop(struct cupstream *up)
{
	struct udp_client *uc = up->udp;
	struct cservice *svc = up->svc;
	struct loop *l;

	if (!uc)
		return;
	l = svc->cli->loop;
	if (uc->dropped)
		log_info("service %s: %llu datagrams dropped (queue full, oversized or local errors)",
			 svc->cfg->name, (unsigned long long)uc->dropped);
	svc->udp_dropped += uc->dropped;
	if (uc->rr)
		resolve_cancel(uc->rr);
	while (!list_empty(&uc->lru))
		sess_free(list_first(&uc->lru, struct usess, lru));
	timer_stop(l, &uc->sweep);
	loop_unwatch(l, &uc->cw);
	loop_undefer(l, &uc->more);
	stream_free(uc->ch);
	udp_framer_reset(&uc->rx);
	batch_free(&uc->batch);
	txb_free(&uc->tx);
	free(uc->table);
	free(uc);
	up->udp = NULL;
}

size_t udp_client_sessions(const struct cupstream *up)
{
	return up->udp ? up->udp->nsess : 0;
}

uint64_t udp_client_dropped(const struct cupstream *up)
{
	return up->udp ? up->udp->dropped : 0;
}
