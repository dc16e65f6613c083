/* The event loop's fd-keyed registration (src/loop.c): an fd handed from
 * one watcher to the next, an fd closed and its number reused behind the
 * loop's back, an fd nobody watches any more, stale entries of a batch, and
 * events masked with what the watcher asked for. */
#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "loop.h"

struct probe {
	struct watcher w;
	int calls;
	uint32_t last;		/* events of the last call */
	uint32_t seen;		/* of every call */
	struct probe *other;	/* unwatched by the first of the two to run */
	struct probe *heir;	/* takes the fd over from inside the callback */
	uint32_t heir_events;
};

static void on_probe(struct loop *l, struct watcher *w, uint32_t events)
{
	struct probe *p = container_of(w, struct probe, w);
	char buf[64];

	p->calls++;
	p->last = events;
	p->seen |= events;
	if (events & EPOLLIN)
		while (read(w->fd, buf, sizeof buf) > 0)
			;
	if (p->other && p->other->w.events)
		loop_unwatch(l, &p->other->w);
	if (p->heir) {
		loop_unwatch(l, w);
		CHECK(loop_watch(l, &p->heir->w, p->heir_events) == 0);
		p->heir = NULL;
	}
}

static void probe_init(struct probe *p, int fd)
{
	memset(p, 0, sizeof *p);
	watcher_init(&p->w, fd, on_probe);
}

static void on_stop(struct loop *l, struct timer *t)
{
	(void)t;
	loop_stop(l);
}

/* Runs the loop for ms milliseconds. */
static void run_for(struct loop *l, uint64_t ms)
{
	struct timer t;

	timer_init(&t, on_stop);
	timer_start(l, &t, ms);
	CHECK(loop_run(l) == 0);
}

static bool make_pair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0;
}

static void poke(int fd)
{
	CHECK(write(fd, "x", 1) == 1);
}

/* A takes the fd, hands it to B from its callback; B gets what follows. */
static void test_handover(struct loop *l)
{
	struct probe a, b;
	int sv[2];

	CHECK(make_pair(sv));
	probe_init(&a, sv[0]);
	probe_init(&b, sv[0]);
	a.heir = &b;
	a.heir_events = EPOLLIN;
	CHECK(loop_watch(l, &a.w, EPOLLIN) == 0);
	poke(sv[1]);
	run_for(l, 20);
	CHECK(a.calls == 1 && b.calls == 0);
	poke(sv[1]);
	run_for(l, 20);
	CHECKF(a.calls == 1 && b.calls >= 1, "a %d b %d", a.calls, b.calls);
	loop_unwatch_closing(l, &b.w);
	close(sv[0]);
	close(sv[1]);
}

/* Unwatched (still registered in epoll), then closed without telling the
 * loop; the number comes back for a new socket, which must be watched. */
static void test_number_reused(struct loop *l)
{
	struct probe c, d;
	int sv[2], nv[2], old;

	CHECK(make_pair(sv));
	old = sv[0];
	probe_init(&c, sv[0]);
	CHECK(loop_watch(l, &c.w, EPOLLIN) == 0);
	loop_unwatch(l, &c.w);
	close(sv[0]);
	close(sv[1]);
	CHECK(make_pair(nv));
	CHECKF(nv[0] == old || nv[1] == old, "the number %d did not come back", old);
	if (nv[1] == old) {	/* watch the one under the old number */
		int t = nv[0];

		nv[0] = nv[1];
		nv[1] = t;
	}
	probe_init(&d, nv[0]);
	CHECKF(loop_watch(l, &d.w, EPOLLIN) == 0, "watch: %s", strerror(errno));
	poke(nv[1]);
	run_for(l, 20);
	CHECK(c.calls == 0 && d.calls == 1);
	loop_unwatch_closing(l, &d.w);
	close(nv[0]);
	close(nv[1]);
}

/* Readable, but nobody watches it any more: no callback; watched again, it
 * reports again. */
static void test_unwatched_fd(struct loop *l)
{
	struct probe e;
	int sv[2];

	CHECK(make_pair(sv));
	probe_init(&e, sv[0]);
	CHECK(loop_watch(l, &e.w, EPOLLIN) == 0);
	poke(sv[1]);
	loop_unwatch(l, &e.w);
	run_for(l, 30);
	CHECK(e.calls == 0);
	CHECK(loop_watch(l, &e.w, EPOLLIN) == 0);
	run_for(l, 20);
	CHECK(e.calls == 1 && (e.last & EPOLLIN));
	loop_unwatch_closing(l, &e.w);
	close(sv[0]);
	close(sv[1]);
}

/* Two fds ready in one batch; whichever runs first unwatches the other,
 * which must not be called from that batch. */
static void test_stale_entry(struct loop *l)
{
	struct probe p, q;
	int a[2], b[2];

	CHECK(make_pair(a) && make_pair(b));
	probe_init(&p, a[0]);
	probe_init(&q, b[0]);
	p.other = &q;
	q.other = &p;
	CHECK(loop_watch(l, &p.w, EPOLLIN) == 0 && loop_watch(l, &q.w, EPOLLIN) == 0);
	poke(a[1]);
	poke(b[1]);
	run_for(l, 20);
	CHECKF(p.calls + q.calls == 1, "p %d q %d", p.calls, q.calls);
	loop_unwatch_closing(l, &p.w);
	loop_unwatch_closing(l, &q.w);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

/* A batch holds an EPOLLIN entry for an fd nobody watches (its reader
 * left); an earlier callback of the batch gives the fd to a watcher that
 * asks only for EPOLLOUT, which must not hear of the EPOLLIN. */
static void test_events_masked(struct loop *l)
{
	struct probe r, w, y;
	int sv[2], yv[2];

	CHECK(make_pair(sv) && make_pair(yv));
	probe_init(&r, sv[0]);
	probe_init(&w, sv[0]);
	probe_init(&y, yv[0]);
	y.heir = &w;		/* y's callback watches sv[0] for w ... */
	y.heir_events = EPOLLOUT;
	y.w.fd = yv[0];
	CHECK(loop_watch(l, &r.w, EPOLLIN) == 0);
	loop_unwatch(l, &r.w);	/* ... whose entry, EPOLLIN, comes after y's */
	CHECK(loop_watch(l, &y.w, EPOLLIN) == 0);
	poke(yv[1]);
	poke(sv[1]);
	run_for(l, 20);
	CHECK(y.calls == 1 && r.calls == 0);
	CHECKF(w.calls >= 1 && (w.seen & EPOLLOUT) && !(w.seen & EPOLLIN), "calls %d seen %#x",
	       w.calls, w.seen);
	loop_unwatch_closing(l, &w.w);
	close(sv[0]);
	close(sv[1]);
	close(yv[0]);
	close(yv[1]);
}

/* In one batch: an entry for fd X, whose reader left; an earlier callback
 * closes X and makes a socket that gets X's number, and watches it. The
 * entry is about the old file: the new socket's watcher must not hear of
 * it (nothing was written to the new socket). */
struct reuse {
	struct probe y;
	int x, peer;		/* the old pair, closed in y's callback */
	int nv[2];		/* the new pair */
	struct probe fresh;
};

static void on_reuse(struct loop *l, struct watcher *w, uint32_t events)
{
	struct reuse *r = container_of(w, struct reuse, y.w);
	char buf[8];

	(void)events;
	r->y.calls++;
	while (read(w->fd, buf, sizeof buf) > 0)
		;
	loop_unwatch(l, w);
	close(r->x);
	close(r->peer);
	CHECK(make_pair(r->nv));
	if (r->nv[1] == r->x) {
		int t = r->nv[0];

		r->nv[0] = r->nv[1];
		r->nv[1] = t;
	}
	CHECKF(r->nv[0] == r->x, "the number %d did not come back", r->x);
	probe_init(&r->fresh, r->nv[0]);
	CHECK(loop_watch(l, &r->fresh.w, EPOLLIN) == 0);
}

static void test_number_reused_in_batch(struct loop *l)
{
	struct reuse r;
	struct probe old;
	int sv[2], yv[2];

	memset(&r, 0, sizeof r);
	CHECK(make_pair(sv) && make_pair(yv));
	r.x = sv[0];
	r.peer = sv[1];
	watcher_init(&r.y.w, yv[0], on_reuse);
	probe_init(&old, sv[0]);
	CHECK(loop_watch(l, &old.w, EPOLLIN) == 0);
	loop_unwatch(l, &old.w);	/* registered still, nobody watching */
	CHECK(loop_watch(l, &r.y.w, EPOLLIN) == 0);
	poke(yv[1]);
	poke(sv[1]);		/* X's entry comes after y's */
	run_for(l, 20);
	CHECK(r.y.calls == 1 && old.calls == 0);
	CHECKF(r.fresh.calls == 0, "the new socket heard of the old one's data");
	loop_unwatch_closing(l, &r.fresh.w);
	close(r.nv[0]);
	close(r.nv[1]);
	close(yv[0]);
	close(yv[1]);
}

/* One watcher per fd, as before the table. */
static void test_second_watcher_refused(struct loop *l)
{
	struct probe x, y;
	int sv[2];

	CHECK(make_pair(sv));
	probe_init(&x, sv[0]);
	probe_init(&y, sv[0]);
	CHECK(loop_watch(l, &x.w, EPOLLIN) == 0);
	errno = 0;
	CHECK(loop_watch(l, &y.w, EPOLLIN) < 0 && errno == EEXIST);
	loop_unwatch_closing(l, &x.w);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	struct loop *l = loop_new();

	CHECK(l != NULL);
	if (!l)
		return check_report("test_loop");
	test_handover(l);
	test_number_reused(l);
	test_unwatched_fd(l);
	test_stale_entry(l);
	test_events_masked(l);
	test_number_reused_in_batch(l);
	test_second_watcher_refused(l);
	loop_free(l);
	return check_report("test_loop");
}
