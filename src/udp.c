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
 * and counted, as a congested network would do. A bandwidth limit is kept
 * by not reading: the visitors' socket (its kernel buffer holds, then
 * drops) or the data channel (TCP holds the peer back), until the
 * service's bucket has room (limit.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "client_int.h"
#include "fds.h"
#include "limit.h"
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

/* A visitor's address, hashed for the session tables of both sides. */
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

/* ---- server ---- */

#define FRAME_BUDGET	64	/* frames per turn before yielding to others */
#define STICKY_IDLE_MS	60000	/* a visitor silent this long may move to another replica */
#define STICKY_MAX	16384	/* sessions remembered per service; the oldest goes first */
#define STICKY_BUCKETS	1024

/* With `balance`, a visitor (source address) sticks to the replica that got
 * its first datagram, so that its session stays on one client (one local
 * socket, one conversation with the local service). */
struct sticky {
	struct sticky *hnext;
	struct list lru;		/* the service's: least recently active first */
	struct list rlink;		/* its replica's */
	struct replica *r;
	struct net_addr visitor;
	uint64_t last;
};

/* The service socket, shared by every replica. */
struct udp_server {
	struct sservice *svc;
	int fd;
	struct watcher uw;
	struct udp_batch batch;
	struct udp_txbatch tx;		/* datagrams to visitors */
	struct limit_waiter lw;		/* held by the bandwidth limit (LIMIT_IN) */
	uint64_t dropped;
	struct sticky **table;		/* with balance */
	struct list lru;
	size_t nsticky;
};

/* A replica's UDP data channel (and its spare in the replica's pool). */
struct udp_replica {
	struct replica *r;
	struct stream *ch;
	struct watcher cw;
	struct deferred more;		/* frames left in the stream's buffer */
	struct udp_framer rx;
	struct list sessions;		/* struct sticky, rlink */
	struct limit_waiter lw;		/* held by the bandwidth limit (LIMIT_OUT) */
};

/* Held by the bandwidth limit: waiting for the service's bucket. */
static bool held(const struct limit_waiter *w)
{
	return list_linked(&w->link);
}

/* ---- sticky sessions ---- */

static struct sticky **sticky_bucket(struct udp_server *u, const struct net_addr *a)
{
	return &u->table[addr_hash(a) & (STICKY_BUCKETS - 1)];
}

static void sticky_free(struct udp_server *u, struct sticky *st)
{
	struct sticky **pp = sticky_bucket(u, &st->visitor);

	while (*pp != st)
		pp = &(*pp)->hnext;
	*pp = st->hnext;
	list_del(&st->lru);
	list_del(&st->rlink);
	st->r->nactive--;
	u->svc->nactive--;
	u->nsticky--;
	free(st);
}

static void sticky_expire(struct udp_server *u, uint64_t now)
{
	while (!list_empty(&u->lru)) {
		struct sticky *st = list_first(&u->lru, struct sticky, lru);
		if (st->last + STICKY_IDLE_MS > now && u->nsticky < STICKY_MAX)
			break;
		sticky_free(u, st);
	}
}

static bool channel_ready(const struct replica *r)
{
	return r->udp && r->udp->ch;
}

/* The replica of a visitor's session, a new session with the replica the
 * policy picks, or NULL (no replica has a channel, or no memory). */
static struct replica *sticky_get(struct udp_server *u, const struct net_addr *visitor,
				  uint64_t now)
{
	struct sticky *st, **b;
	struct replica *r;

	if (!u->table && !(u->table = calloc(STICKY_BUCKETS, sizeof *u->table)))
		return NULL;
	b = sticky_bucket(u, visitor);
	for (st = *b; st; st = st->hnext) {
		if (net_addr_equal(&st->visitor, visitor)) {
			st->last = now;
			list_del(&st->lru);
			list_add_tail(&u->lru, &st->lru);
			return st->r;
		}
	}
	r = service_pick(u->svc, channel_ready);
	if (!r || !(st = calloc(1, sizeof *st)))
		return NULL;
	st->r = r;
	st->visitor = *visitor;
	st->last = now;
	st->hnext = *b;
	*b = st;
	list_add_tail(&u->lru, &st->lru);
	list_add_tail(&r->udp->sessions, &st->rlink);
	u->nsticky++;
	r->nactive++;
	r->visitors_total++;
	u->svc->nactive++;
	return r;
}

/* Without balance the one replica there is takes every datagram. */
static struct replica *replica_for(struct udp_server *u, const struct net_addr *visitor,
				   uint64_t now)
{
	struct sservice *svc = u->svc;

	if (svc->cfg->has_balance)
		return sticky_get(u, visitor, now);
	if (!svc->nreplicas)
		return NULL;
	return list_first(&svc->replicas, struct replica, link);
}

/* ---- the service socket ---- */

/* Visitors are read while some replica's channel has room: the kernel
 * drops for us while all are nearly full, cheaper than reading to drop. */
static void us_update(struct udp_server *u)
{
	struct list *n, *tmp;
	bool room = false;

	if (!u || u->fd < 0)
		return;
	list_for_each_safe(n, tmp, &u->svc->replicas) {
		struct replica *r = list_entry(n, struct replica, link);
		if (channel_ready(r) && (size_t)r->udp->ch->tx_len + 2 * UDP_SLOT <= STREAM_TX_MAX)
			room = true;
	}
	loop_watch(u->svc->srv->loop, &u->uw, room && !held(&u->lw) ? EPOLLIN : 0);
}

static void ur_update(struct udp_replica *ur)
{
	loop_watch(ur->r->svc->srv->loop, &ur->cw, (held(&ur->lw) ? 0 : EPOLLIN) |
		   (stream_tx_pending(ur->ch) ? EPOLLOUT : 0));
}

static void ur_free_channel(struct udp_replica *ur)
{
	struct loop *l = ur->r->svc->srv->loop;

	if (!ur->ch)
		return;
	loop_unwatch(l, &ur->cw);
	loop_undefer(l, &ur->more);
	stream_free(ur->ch);
	ur->ch = NULL;
	udp_framer_reset(&ur->rx);
}

/* The channel broke: take the replica's spare, and ask for a replacement.
 * Its sessions stay: the client keeps its visitor sockets. */
static void ur_channel_lost(struct udp_replica *ur, const char *why)
{
	struct replica *r = ur->r;
	struct stream *s;

	log_warn("service %s: UDP data channel lost: %s (client %s)", r->svc->cfg->name, why, r->peer);
	ur_free_channel(ur);
	if (replica_request_channels(r, 1) < 0)
		return;			/* r has left */
	s = replica_take_pooled(r);
	if (s)
		udp_replica_take_channel(r, s);
	else
		us_update(r->svc->udp);
}

static void us_send(struct udp_server *u, const uint8_t *payload, size_t len,
		    const struct net_addr *to)
{
	if (txb_add(&u->tx, payload, len, to))
		return;
	u->dropped += txb_flush(&u->tx, u->fd);
	if (!txb_add(&u->tx, payload, len, to))
		u->dropped++;
}

static void us_flush(struct udp_server *u)
{
	if (u && u->tx.n && u->fd >= 0)
		u->dropped += txb_flush(&u->tx, u->fd);
}

/* Frames from a replica's client go to the visitor in their header. */
static void on_ur_channel(struct loop *l, struct watcher *w, uint32_t events)
{
	struct udp_replica *ur = container_of(w, struct udp_replica, cw);
	struct replica *r = ur->r;
	struct udp_server *u = r->svc->udp;
	struct bucket *out = &r->svc->limit.dir[LIMIT_OUT];

	if (stream_flush(ur->ch) == ST_ERROR) {
		ur_channel_lost(ur, ur->ch->err);
		return;
	}
	for (int i = 0; ; i++) {
		const uint8_t *payload;
		int rc;

		if (bucket_allow(out) == 0) {
			bucket_wait(out, &ur->lw);
			break;
		}
		/* Decoded frames may remain in the stream's buffer, which epoll
		 * does not announce: come back on the next turn. */
		if (i == FRAME_BUDGET) {
			loop_defer(l, &ur->more);
			break;
		}
		rc = udp_framer_next(&ur->rx, ur->ch, &payload);
		if (rc == ST_AGAIN)
			break;
		if (rc != 1) {
			us_flush(u);
			ur_channel_lost(ur, rc == 0 ? "closed by the client" :
					rc == UDP_BAD_FRAME ? "malformed frame from the client" :
					ur->ch->err);
			return;
		}
		r->bytes_out += ur->rx.len;
		r->svc->bytes_out += ur->rx.len;
		if (u && u->fd >= 0)
			us_send(u, payload, ur->rx.len, &ur->rx.from);
		bucket_take(out, &ur->lw, ur->rx.len);
	}
	us_flush(u);
	ur_update(ur);
	us_update(u);
}

static void on_us_socket(struct loop *l, struct watcher *w, uint32_t events)
{
	struct udp_server *u = container_of(w, struct udp_server, uw);
	const struct service_config *c = u->svc->cfg;
	uint64_t now = loop_now(l);
	struct bucket *in = &u->svc->limit.dir[LIMIT_IN];
	struct list *n, *tmp;
	size_t moved = 0;
	int got;

	if (batch_init(&u->batch) < 0) {
		us_update(u);
		return;
	}
	if (bucket_allow(in) == 0) {
		bucket_wait(in, &u->lw);
		us_update(u);
		return;
	}
	if (c->has_balance)
		sticky_expire(u, now);
	got = batch_recv(&u->batch, u->fd, true);
	for (int i = 0; i < got; i++) {
		struct replica *r;
		size_t flen;
		uint8_t *frame;

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
		r = replica_for(u, &u->batch.from[i], now);
		if (!r || !channel_ready(r)) {
			u->dropped++;
			continue;
		}
		frame = batch_frame(&u->batch, i, &u->batch.from[i], &flen);
		if (!frame || udp_queue_frame(r->udp->ch, frame, flen) != 0) {
			u->dropped++;
			continue;
		}
		r->bytes_in += u->batch.msgs[i].msg_len;
		u->svc->bytes_in += u->batch.msgs[i].msg_len;
		moved += u->batch.msgs[i].msg_len;
	}
	/* a batch may overdraw the bucket: the debt is waited for next time */
	bucket_take(in, &u->lw, moved);
	/* A channel that fails to flush is dealt with from its own deferred
	 * call: losing it here could take the service (and u) away. */
	list_for_each_safe(n, tmp, &u->svc->replicas) {
		struct replica *r = list_entry(n, struct replica, link);
		if (!channel_ready(r) || !stream_tx_pending(r->udp->ch))
			continue;
		if (stream_flush(r->udp->ch) == ST_ERROR)
			loop_defer(l, &r->udp->more);
		else
			ur_update(r->udp);
	}
	us_update(u);
}

static void on_ur_more(struct loop *l, struct deferred *d)
{
	struct udp_replica *ur = container_of(d, struct udp_replica, more);

	if (ur->ch)
		on_ur_channel(l, &ur->cw, EPOLLIN);
}

static void on_us_limit(struct limit_waiter *w)
{
	struct udp_server *u = container_of(w, struct udp_server, lw);

	on_us_socket(u->svc->srv->loop, &u->uw, EPOLLIN);
}

static void on_ur_limit(struct limit_waiter *w)
{
	struct udp_replica *ur = container_of(w, struct udp_replica, lw);

	if (ur->ch)
		on_ur_channel(ur->r->svc->srv->loop, &ur->cw, EPOLLIN);
}

void udp_server_open(struct sservice *svc, int fd)
{
	struct udp_server *u = calloc(1, sizeof *u);

	if (!u) {
		log_error("service %s: out of memory for the UDP socket", svc->cfg->name);
		return;		/* the socket stays the listener's, unread */
	}
	u->svc = svc;
	u->fd = fd;
	list_init(&u->lru);
	limit_waiter_init(&u->lw, on_us_limit);
	udp_sock_buffers(fd);
	watcher_init(&u->uw, fd, on_us_socket);
	svc->udp = u;
	us_update(u);
}

void udp_server_close(struct sservice *svc)
{
	struct udp_server *u = svc->udp;

	if (!u)
		return;
	if (u->dropped)
		log_info("service %s: %llu datagrams dropped (queue full, oversized, or no client "
			 "channel)", svc->cfg->name, (unsigned long long)u->dropped);
	svc->udp_dropped += u->dropped;
	while (!list_empty(&u->lru))
		sticky_free(u, list_first(&u->lru, struct sticky, lru));
	free(u->table);
	bucket_cancel(&u->lw);
	loop_unwatch(svc->srv->loop, &u->uw);
	/* the socket itself is the service's listener: server_service.c closed it */
	batch_free(&u->batch);
	txb_free(&u->tx);
	free(u);
	svc->udp = NULL;
}

bool udp_replica_wants_channel(const struct replica *r)
{
	return !channel_ready(r);
}

void udp_replica_take_channel(struct replica *r, struct stream *s)
{
	struct udp_replica *ur = r->udp;
	uint8_t b[PROTO_CMD_LEN];

	if (!ur) {
		if (!(ur = calloc(1, sizeof *ur))) {
			stream_free(s);
			return;
		}
		ur->r = r;
		list_init(&ur->sessions);
		limit_waiter_init(&ur->lw, on_ur_limit);
		watcher_init(&ur->cw, -1, on_ur_channel);
		deferred_init(&ur->more, on_ur_more);
		r->udp = ur;
	}
	proto_encode_u32(b, DATA_START_FORWARD_UDP);
	if (stream_send(s, b, sizeof b) < 0) {
		stream_free(s);
		ur_channel_lost(ur, "broken before use");
		return;
	}
	ur->ch = s;
	watcher_init(&ur->cw, s->fd, on_ur_channel);
	log_debug("service %s: UDP data channel from %s ready", r->svc->cfg->name, r->peer);
	ur_update(ur);
	us_update(r->svc->udp);
}

void udp_replica_drop(struct replica *r)
{
	struct udp_replica *ur = r->udp;
	struct udp_server *u = r->svc->udp;

	if (!ur)
		return;
	ur_free_channel(ur);
	bucket_cancel(&ur->lw);
	/* its sessions go with it: those visitors pick another replica at
	 * their next datagram */
	while (!list_empty(&ur->sessions)) {
		struct sticky *st = list_first(&ur->sessions, struct sticky, rlink);
		if (u)
			sticky_free(u, st);
		else
			list_del(&st->rlink);	/* not reached: the table outlives replicas */
	}
	free(ur);
	r->udp = NULL;
	us_update(u);
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
	struct limit_waiter lw[2];	/* [LIMIT_IN]: the channel, [LIMIT_OUT]: the sessions */
	uint64_t dropped, evicted;
};

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
	struct bucket *out = &uc->svc->limit.dir[LIMIT_OUT];
	size_t moved = 0;
	int n;

	if (batch_init(&uc->batch) < 0)
		return;
	if (bucket_allow(out) == 0) {
		/* this session's socket waits; the bucket wakes them all */
		bucket_wait(out, &uc->lw[LIMIT_OUT]);
		loop_watch(l, &s->w, 0);
		return;
	}
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
		else
			moved += uc->batch.msgs[i].msg_len;
	}
	bucket_take(out, &uc->lw[LIMIT_OUT], moved);
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
	struct bucket *in = &uc->svc->limit.dir[LIMIT_IN];

	if (stream_flush(uc->ch) == ST_ERROR) {
		uc_channel_lost(uc, uc->ch->err);
		return;
	}
	for (int i = 0; ; i++) {
		const uint8_t *payload;
		int rc;

		if (bucket_allow(in) == 0) {
			bucket_wait(in, &uc->lw[LIMIT_IN]);
			break;
		}
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
		bucket_take(in, &uc->lw[LIMIT_IN], uc->rx.len);
	}
	uc_flush(uc);
	uc_update(uc);
}

static void uc_update(struct udp_client *uc)
{
	loop_watch(uc->svc->cli->loop, &uc->cw, (held(&uc->lw[LIMIT_IN]) ? 0 : EPOLLIN) |
		   (stream_tx_pending(uc->ch) ? EPOLLOUT : 0));
}

static void on_uc_limit_in(struct limit_waiter *w)
{
	struct udp_client *uc = container_of(w, struct udp_client, lw[LIMIT_IN]);

	on_uc_channel(uc->svc->cli->loop, &uc->cw, EPOLLIN);
}

/* The sessions' sockets that waited are read again. */
static void on_uc_limit_out(struct limit_waiter *w)
{
	struct udp_client *uc = container_of(w, struct udp_client, lw[LIMIT_OUT]);
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &uc->lru)
		loop_watch(uc->svc->cli->loop, &container_of(n, struct usess, lru)->w, EPOLLIN);
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
	limit_waiter_init(&uc->lw[LIMIT_IN], on_uc_limit_in);
	limit_waiter_init(&uc->lw[LIMIT_OUT], on_uc_limit_out);
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
	bucket_cancel(&uc->lw[LIMIT_IN]);
	bucket_cancel(&uc->lw[LIMIT_OUT]);
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
