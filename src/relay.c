#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "fds.h"
#include "limit.h"
#include "log.h"

#define RELAY_PIPE_SIZE	(256 * 1024)	/* asked of the kernel; it may give less */
#define RELAY_BUF_SIZE	(64 * 1024 + 128) /* headroom + 64 KiB record + tailroom */
#define PIPES_MAX	8		/* idle pipes kept: 16 fds at most */
#define BUFS_MAX	16		/* idle 64 KiB buffers kept */
#define PUMP_BUDGET	16		/* chunks per direction before yielding */
#define PIPE_FDS_SLACK	64		/* descriptors left free when a pipe is made */
#define BURST_MIN	64		/* relays at once that make a burst worth trimming after */

/* ---- pools: pipes and buffers are held only while bytes flow ---- */

struct pipe_pair { int rd, wr, size; };

static struct pipe_pair pipe_pool[PIPES_MAX];
static int npipes;
static void *buf_pool[BUFS_MAX];
static int nbufs;

static int pipe_get(struct pipe_pair *p)
{
	int fds[2];

	if (npipes) {
		*p = pipe_pool[--npipes];
		return 0;
	}
	/* A pipe only saves copies: it never takes the last descriptors, which
	 * control and data channels need (fds.h). The direction copies instead. */
	if (fds_short(PIPE_FDS_SLACK))
		return -1;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	fds_opened(2);
	/* A bigger pipe means fewer splice calls per megabyte. */
	p->size = fcntl(fds[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
	if (p->size <= 0)
		p->size = fcntl(fds[1], F_GETPIPE_SZ);
	if (p->size <= 0)
		p->size = 4096;		/* the least a pipe holds */
	p->rd = fds[0];
	p->wr = fds[1];
	return 0;
}

static void pipe_put(struct pipe_pair *p)
{
	if (p->rd < 0)
		return;
	if (npipes < PIPES_MAX && !fds_short(PIPE_FDS_SLACK)) {
		pipe_pool[npipes++] = *p;
	} else {
		fds_close(p->rd);
		fds_close(p->wr);
	}
	p->rd = p->wr = -1;
}

/* Only an empty pipe may go back to the pool; one holding bytes is closed. */
static void pipe_drop(struct pipe_pair *p)
{
	if (p->rd < 0)
		return;
	fds_close(p->rd);
	fds_close(p->wr);
	p->rd = p->wr = -1;
}

static uint8_t *buf_get(void)
{
	return nbufs ? buf_pool[--nbufs] : malloc(RELAY_BUF_SIZE);
}

static void buf_put(uint8_t **b)
{
	if (!*b)
		return;
	if (nbufs < BUFS_MAX)
		buf_pool[nbufs++] = *b;
	else
		free(*b);
	*b = NULL;
}

void relay_pools_free(void)
{
	while (npipes) {
		npipes--;
		fds_close(pipe_pool[npipes].rd);
		fds_close(pipe_pool[npipes].wr);
	}
	while (nbufs)
		free(buf_pool[--nbufs]);
}

/* ---- after a burst ---- */

static size_t nlive, npeak;	/* relays alive; the most in the current burst */
static bool quartered;		/* given back once the burst fell to a quarter */

static void burst_relay_started(void)
{
	if (++nlive > npeak)
		npeak = nlive;
	if (nlive * 2 > npeak)
		quartered = false;	/* still going, or going again */
}

/* When a burst of connections (BURST_MIN at once or more) has fallen to a
 * quarter of its peak, and again when its last connection ends, the pools
 * and the heap give back what it took: the pooled buffers and pipes, and
 * the free pages glibc's malloc keeps (malloc_trim). So RSS and fds come
 * back to where they were before it. At most twice per burst. */
static void burst_relay_ended(void)
{
	nlive--;
	if (npeak < BURST_MIN || (nlive > 0 && (quartered || nlive * 4 > npeak)))
		return;
	relay_pools_free();
#ifdef __GLIBC__
	malloc_trim(0);
#endif
	quartered = true;
	if (nlive == 0)
		npeak = 0;
}

/* ---- the relay ---- */

enum pump_result { PUMP_WAIT, PUMP_DONE, PUMP_ERROR };

/* Direction k moves bytes from stream k to stream !k. The structs are kept
 * small: a relay lives as long as its connection, idle ones included. */
struct dir {
	struct pipe_pair pipe;
	uint32_t in_pipe;
	uint8_t *buf;			/* buffered path */
	uint8_t *wire;			/* sealed bytes not yet written */
	uint32_t wire_len;
	uint32_t wait_from, wait_to;	/* events awaited on each endpoint */
	bool eof, done, no_splice;
	bool drained;			/* the last socket read got less than it asked */
};

struct relay {
	struct list link;		/* the owner's */
	struct loop *loop;
	struct stream *s[2];
	struct watcher w[2];		/* on s[0]->fd and s[1]->fd */
	struct dir d[2];
	struct deferred again;
	bool again_dir[2];
	struct bucket *lim[2];		/* each direction's bandwidth limit, or NULL */
	struct limit_waiter lw[2];
	struct relay_stats stats;
	relay_done_cb cb;
	void *arg;
	const char *err;		/* a stream's err or a static string */
};

static int dir_index(const struct relay *r, const struct dir *d)
{
	return (int)(d - r->d);
}

static struct stream *dir_src(const struct relay *r, const struct dir *d)
{
	return r->s[dir_index(r, d)];
}

static struct stream *dir_dst(const struct relay *r, const struct dir *d)
{
	return r->s[!dir_index(r, d)];
}

static bool can_splice(const struct relay *r, const struct dir *d)
{
	const struct stream *from = dir_src(r, d), *to = dir_dst(r, d);

	return !d->no_splice && from->plain && to->plain && from->rx_len == 0;
}

/* The message stays valid until the relay is freed: the streams' own
 * buffers outlive the done callback, and strerror()'s are static. */
static enum pump_result fail(struct relay *r, struct stream *s, const char *what)
{
	if (!r->err)
		r->err = s ? s->err : what;
	return PUMP_ERROR;
}

static enum pump_result fail_errno(struct relay *r)
{
	if (!r->err)
		r->err = strerror(errno);
	return PUMP_ERROR;
}

/* Nothing is in flight in this direction: give back what it borrowed. */
static void go_idle(struct relay *r, struct dir *d)
{
	if (d->in_pipe == 0)
		pipe_put(&d->pipe);
	if (d->wire_len == 0)
		buf_put(&d->buf);
	stream_trim(dir_src(r, d));
}

/* Writes what the direction holds (queued messages, sealed bytes, pipe
 * contents). PUMP_DONE here means "nothing left to write". */
static enum pump_result drain(struct relay *r, struct dir *d)
{
	struct stream *to = dir_dst(r, d);

	if (stream_tx_pending(to)) {
		int rc = stream_flush(to);
		if (rc == ST_AGAIN) {
			d->wait_to = to->want;
			return PUMP_WAIT;
		}
		if (rc < 0)
			return fail(r, to, NULL);
	}
	while (d->wire_len) {
		ssize_t n = stream_send_wire(to, d->wire, d->wire_len);
		if (n == ST_AGAIN) {
			d->wait_to = to->want;
			return PUMP_WAIT;
		}
		if (n < 0)
			return fail(r, to, NULL);
		d->wire += n;
		d->wire_len -= (uint32_t)n;
	}
	while (d->in_pipe) {
		ssize_t n = splice(d->pipe.rd, NULL, to->fd, NULL, d->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0 && errno == EAGAIN) {
			d->wait_to = EPOLLOUT;
			return PUMP_WAIT;
		}
		if (n <= 0)
			return fail_errno(r);
		d->in_pipe -= (uint32_t)n;
	}
	return PUMP_DONE;
}

/* Reads one chunk (at most max bytes) into the pipe. */
static enum pump_result read_splice(struct relay *r, struct dir *d, bool *eof, size_t max)
{
	struct stream *from = dir_src(r, d);
	size_t len;
	ssize_t n;

	if (d->pipe.rd < 0 && pipe_get(&d->pipe) < 0) {
		d->no_splice = true;	/* out of fds for pipes: copy instead */
		return PUMP_DONE;
	}
	len = (size_t)d->pipe.size < max ? (size_t)d->pipe.size : max;
	n = splice(from->fd, NULL, d->pipe.wr, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	if (n > 0) {
		d->in_pipe = (uint32_t)n;
		d->drained = (size_t)n < len;
		r->stats.bytes[dir_index(r, d)] += (uint64_t)n;
		return PUMP_DONE;
	}
	if (n == 0) {
		*eof = true;
		return PUMP_DONE;
	}
	if (errno == EAGAIN) {
		d->wait_from = EPOLLIN;
		return PUMP_WAIT;
	}
	if (errno == EINVAL) {		/* not spliceable after all */
		d->no_splice = true;
		return PUMP_DONE;
	}
	return fail_errno(r);
}

/* The destination takes plaintext as is (tcp, tls): write it straight from
 * the source's buffer. */
static enum pump_result read_passthrough(struct relay *r, struct dir *d, bool *eof, size_t max)
{
	struct stream *from = dir_src(r, d), *to = dir_dst(r, d);
	const uint8_t *p;
	ssize_t n = stream_peek(from, &p), m;

	if (n == 0) {
		*eof = true;
		return PUMP_DONE;
	}
	if (n == ST_AGAIN) {
		d->wait_from = from->want;
		return PUMP_WAIT;
	}
	if (n < 0)
		return fail(r, from, NULL);
	if ((size_t)n > to->max_chunk)
		n = to->max_chunk;
	if ((size_t)n > max)
		n = (ssize_t)max;
	m = stream_send_wire(to, p, (size_t)n);
	if (m == ST_AGAIN) {
		d->wait_to = to->want;
		return PUMP_WAIT;
	}
	if (m < 0)
		return fail(r, to, NULL);
	stream_consume(from, (size_t)m);
	r->stats.bytes[dir_index(r, d)] += (uint64_t)m;
	return PUMP_DONE;
}

/* Read plaintext into our buffer (from a plain socket, straight; otherwise
 * out of the source's buffer), leaving room for the destination's header and
 * tag when it seals in place (noise, websocket). Plain sockets always come
 * this way when splice is out, so that their streams never need a receive
 * buffer of their own while they relay. */
static enum pump_result read_buffered(struct relay *r, struct dir *d, bool *eof, size_t max)
{
	struct stream *from = dir_src(r, d), *to = dir_dst(r, d);
	size_t cap = to->max_chunk;
	uint8_t *p;
	ssize_t n;

	if (to->headroom + cap + to->tailroom > RELAY_BUF_SIZE)
		cap = RELAY_BUF_SIZE - to->headroom - to->tailroom;
	if (cap > max)
		cap = max;
	if (!d->buf && !(d->buf = buf_get()))
		return fail(r, NULL, "out of memory");
	p = d->buf + to->headroom;
	if (from->plain && from->rx_len == 0) {
		n = stream_sock_read(from, p, cap);
		d->drained = n > 0 && (size_t)n < cap;
	} else {
		const uint8_t *q;
		n = stream_peek(from, &q);
		if (n > 0) {
			if ((size_t)n > cap)
				n = (ssize_t)cap;
			memcpy(p, q, (size_t)n);
			stream_consume(from, (size_t)n);
		}
	}
	if (n == 0) {
		*eof = true;
		return PUMP_DONE;
	}
	if (n == ST_AGAIN) {
		d->wait_from = from->want;
		return PUMP_WAIT;
	}
	if (n < 0)
		return fail(r, from, NULL);
	d->wire_len = (uint32_t)stream_seal(to, p, (size_t)n, &d->wire);
	r->stats.bytes[dir_index(r, d)] += (uint64_t)n;
	return PUMP_DONE;
}

static enum pump_result pump(struct relay *r, struct dir *d)
{
	struct stream *from = dir_src(r, d), *to = dir_dst(r, d);
	int k = dir_index(r, d);

	d->wait_from = d->wait_to = 0;
	for (int budget = PUMP_BUDGET; budget > 0; budget--) {
		enum pump_result res = drain(r, d);
		uint64_t before = r->stats.bytes[k];
		bool eof = false;
		size_t allow;

		if (res != PUMP_DONE)
			return res;
		if (d->eof) {
			int rc = stream_shutdown(to);
			if (rc == ST_AGAIN) {
				d->wait_to = to->want;
				return PUMP_WAIT;
			}
			d->done = true;
			go_idle(r, d);
			/* a peer that already closed is not an error here */
			return PUMP_DONE;
		}
		if (d->drained) {
			/* A short read emptied the socket: asking again would only
			 * return EAGAIN (a syscall per message on interactive
			 * traffic). Level-triggered epoll tells us about anything
			 * that arrived since, and about the end of the stream. */
			d->drained = false;
			d->wait_from = EPOLLIN;
			go_idle(r, d);
			return PUMP_WAIT;
		}
		/* Over the bandwidth limit: stop reading (the sender's TCP
		 * window closes) until the bucket's timer says there is room. */
		allow = bucket_allow(r->lim[k]);
		if (allow == 0) {
			bucket_wait(r->lim[k], &r->lw[k]);
			go_idle(r, d);
			return PUMP_WAIT;
		}
		if (can_splice(r, d))
			res = read_splice(r, d, &eof, allow);
		else if (to->ops->seal || (from->plain && from->rx_len == 0))
			res = read_buffered(r, d, &eof, allow);
		else
			res = read_passthrough(r, d, &eof, allow);
		if (r->stats.bytes[k] != before)
			bucket_take(r->lim[k], &r->lw[k], r->stats.bytes[k] - before);
		if (res == PUMP_ERROR)
			return res;
		if (res == PUMP_WAIT) {
			if (d->wait_from)
				go_idle(r, d);
			return res;
		}
		/* An end its transport did not announce is not passed on as a
		 * clean end (a FIN): the relay fails, and both sides are reset. */
		if (eof && from->cut)
			return fail(r, NULL, "the stream ended without its transport's "
				    "end message (cut on the path?)");
		d->eof = eof;
	}
	/* Yield to other connections; come back on the next turn, since the
	 * source may hold decrypted bytes that epoll will not announce. */
	r->again_dir[d == &r->d[1]] = true;
	loop_defer(r->loop, &r->again);
	return PUMP_WAIT;
}

static void update_interest(struct relay *r)
{
	for (int i = 0; i < 2; i++) {
		/* stream i is the source of direction i, the destination of !i */
		uint32_t ev = (r->d[i].done ? 0 : r->d[i].wait_from) |
			      (r->d[!i].done ? 0 : r->d[!i].wait_to);

		if (loop_watch(r->loop, &r->w[i], ev) < 0 && !r->err)
			r->err = strerror(errno);
	}
}

/* A relay that failed (an error, or a stream cut) resets both connections:
 * the far ends see ECONNRESET and know the stream is incomplete, where a
 * FIN would tell them it ended as sent. The failed side is reset too: if
 * it is a channel, the peer's relay fails in turn and resets its side. */
static void destroy(struct relay *r);

static void finish(struct relay *r)
{
	relay_done_cb cb = r->cb;

	if (r->err) {
		stream_abort(r->s[0]);
		stream_abort(r->s[1]);
	}

	if (cb)
		cb(r->arg, r, &r->stats, r->err);
	destroy(r);
}

static void run(struct relay *r, bool which[2])
{
	for (int k = 0; k < 2; k++) {
		if (!which[k] || r->d[k].done)
			continue;
		if (pump(r, &r->d[k]) == PUMP_ERROR) {
			finish(r);
			return;
		}
	}
	if (r->d[0].done && r->d[1].done) {
		finish(r);
		return;
	}
	update_interest(r);
	if (r->err)
		finish(r);
}

/* An event on stream i: direction i may read, direction !i may write. */
static void on_event(struct relay *r, int i, uint32_t events)
{
	bool which[2];
	bool hup = events & (EPOLLERR | EPOLLHUP);

	which[i] = hup || (r->d[i].wait_from & events);
	which[!i] = hup || (r->d[!i].wait_to & events);
	run(r, which);
}

static void on_event0(struct loop *l, struct watcher *w, uint32_t events)
{
	on_event(container_of(w, struct relay, w[0]), 0, events);
}

static void on_event1(struct loop *l, struct watcher *w, uint32_t events)
{
	on_event(container_of(w, struct relay, w[1]), 1, events);
}

/* The bucket has room again for direction k. */
static void on_limit(struct relay *r, int k)
{
	bool which[2] = { k == 0, k == 1 };

	run(r, which);
}

static void on_limit0(struct limit_waiter *w)
{
	on_limit(container_of(w, struct relay, lw[0]), 0);
}

static void on_limit1(struct limit_waiter *w)
{
	on_limit(container_of(w, struct relay, lw[1]), 1);
}

static void on_again(struct loop *l, struct deferred *df)
{
	struct relay *r = container_of(df, struct relay, again);
	bool which[2] = { r->again_dir[0], r->again_dir[1] };

	r->again_dir[0] = r->again_dir[1] = false;
	run(r, which);
}

struct relay *relay_new(struct loop *l, struct stream *a, struct stream *b,
			relay_done_cb cb, void *arg)
{
	struct relay *r = calloc(1, sizeof *r);

	if (!r) {
		stream_free(a);
		stream_free(b);
		return NULL;
	}
	list_init(&r->link);
	r->loop = l;
	r->s[0] = a;
	r->s[1] = b;
	r->cb = cb;
	r->arg = arg;
	for (int i = 0; i < 2; i++) {
		watcher_init(&r->w[i], r->s[i]->fd, i ? on_event1 : on_event0);
		limit_waiter_init(&r->lw[i], i ? on_limit1 : on_limit0);
		r->d[i].pipe.rd = r->d[i].pipe.wr = -1;
	}
	/* Bytes may already wait in either stream's buffer. Start once the
	 * caller has returned, so the callback never runs before it has the relay. */
	deferred_init(&r->again, on_again);
	r->again_dir[0] = r->again_dir[1] = true;
	loop_defer(l, &r->again);
	burst_relay_started();
	return r;
}

/* An end the owner forces (a service removed, a replica gone, the process
 * stopping) cuts both streams short: both are reset, as after an error. */
void relay_free(struct relay *r)
{
	if (!r)
		return;
	stream_abort(r->s[0]);
	stream_abort(r->s[1]);
	destroy(r);
}

static void destroy(struct relay *r)
{
	list_del(&r->link);
	loop_undefer(r->loop, &r->again);
	for (int i = 0; i < 2; i++) {
		struct dir *d = &r->d[i];

		/* stream_free() below closes the fd */
		loop_unwatch_closing(r->loop, &r->w[i]);
		bucket_cancel(&r->lw[i]);
		if (d->in_pipe)
			pipe_drop(&d->pipe);
		else
			pipe_put(&d->pipe);
		buf_put(&d->buf);
		stream_free(r->s[i]);
	}
	free(r);
	burst_relay_ended();
}

void relay_set_limits(struct relay *r, struct bucket *a_to_b, struct bucket *b_to_a)
{
	r->lim[0] = a_to_b;
	r->lim[1] = b_to_a;
}

const struct relay_stats *relay_stats(const struct relay *r)
{
	return &r->stats;
}

struct list *relay_link(struct relay *r)
{
	return &r->link;
}

struct relay *relay_from_link(struct list *node)
{
	return container_of(node, struct relay, link);
}
