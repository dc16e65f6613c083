/* The event loop (src/loop.c). Its fd-keyed registration: an fd handed from
 * one watcher to the next, an fd closed and its number reused behind the
 * loop's back, an fd nobody watches any more, stale entries of a batch, and
 * events masked with what the watcher asked for. Its deferred calls: one
 * deferred from inside another runs in the same turn, none twice a turn. */
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

/* Runs the loop for ms milliseconds, or until a callback stops it. */
static void run_for(struct loop *l, uint64_t ms)
{
	struct timer t;

	timer_init(&t, on_stop);
	timer_start(l, &t, ms);
	CHECK(loop_run(l) == 0);
	timer_stop(l, &t);	/* when something else stopped the loop */
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

/* ---- deferred calls ---- */

static char trace[32];		/* one letter per call, in order */
static size_t ntrace;

static void note(char c)
{
	if (ntrace + 1 < sizeof trace)
		trace[ntrace++] = c;
	trace[ntrace] = 0;
}

struct dprobe {
	struct deferred d;
	char name;
	int calls, max;		/* defers itself again until max calls */
	struct deferred *defers;	/* deferred from inside the call */
	struct deferred *undefers;	/* withdrawn from inside the call */
	struct timer *arms;	/* started (0 ms) from each call */
};

static void on_dprobe(struct loop *l, struct deferred *d)
{
	struct dprobe *p = container_of(d, struct dprobe, d);

	note(p->name);
	if (++p->calls < p->max)
		loop_defer(l, d);
	if (p->defers)
		loop_defer(l, p->defers);
	if (p->undefers)
		loop_undefer(l, p->undefers);
	if (p->arms && !timer_armed(p->arms))
		timer_start(l, p->arms, 0);
}

static void dprobe_init(struct dprobe *p, char name)
{
	memset(p, 0, sizeof *p);
	p->name = name;
	deferred_init(&p->d, on_dprobe);
}

struct tprobe {
	struct timer t;
	int calls, max;		/* stops the loop at the max-th call */
};

static void on_tprobe(struct loop *l, struct timer *t)
{
	struct tprobe *p = container_of(t, struct tprobe, t);

	note('T');
	if (++p->calls == p->max)
		loop_stop(l);
}

/* Timers run before deferred calls in a turn, so a timer started from a
 * deferred call marks where the next turn begins. A deferred from inside a
 * deferred runs before it: in the same turn. */
static void test_deferred_chain(struct loop *l)
{
	struct dprobe a, b;
	struct tprobe t = { .max = 1 };

	ntrace = 0;
	dprobe_init(&a, 'A');
	dprobe_init(&b, 'B');
	timer_init(&t.t, on_tprobe);
	a.defers = &b.d;
	a.arms = &t.t;
	loop_defer(l, &a.d);
	run_for(l, 2000);
	CHECK_STR(trace, "ABT");
}

/* One that defers itself again (to yield) runs once a turn. */
static void test_deferred_yields(struct loop *l)
{
	struct dprobe d;
	struct tprobe t = { .max = 3 };

	ntrace = 0;
	dprobe_init(&d, 'D');
	d.max = 3;
	timer_init(&t.t, on_tprobe);
	d.arms = &t.t;
	loop_defer(l, &d.d);
	run_for(l, 2000);
	CHECK_STR(trace, "DTDTDT");
}

/* Withdrawn while queued, for this turn or for the next: it does not run. */
static void test_undefer(struct loop *l)
{
	struct dprobe a, b, c, y;
	struct tprobe t = { .max = 1 };

	ntrace = 0;
	dprobe_init(&a, 'A');
	dprobe_init(&b, 'B');
	dprobe_init(&c, 'C');
	dprobe_init(&y, 'Y');
	timer_init(&t.t, on_tprobe);
	a.defers = &b.d;	/* queued behind C */
	c.undefers = &b.d;	/* and withdrawn by C */
	y.max = 2;		/* Y defers itself for the next turn... */
	c.arms = &t.t;
	loop_defer(l, &y.d);
	loop_defer(l, &a.d);
	loop_defer(l, &c.d);
	run_for(l, 2000);
	CHECK_STR(trace, "YACTY");	/* the loop stops after the turn */
	CHECK(b.calls == 0);

	ntrace = 0;
	dprobe_init(&y, 'Y');
	dprobe_init(&c, 'C');
	t.calls = 0;
	y.max = 2;
	c.undefers = &y.d;	/* ...and is withdrawn from there */
	c.arms = &t.t;
	loop_defer(l, &y.d);
	loop_defer(l, &c.d);
	run_for(l, 2000);
	CHECK_STR(trace, "YCT");
	CHECK(y.calls == 1);
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
	test_deferred_chain(l);
	test_deferred_yields(l);
	test_undefer(l);
	loop_free(l);
	return check_report("test_loop");
}
