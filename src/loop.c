#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define NO_FD	UINT64_MAX	/* a cancelled entry of the batch */

/* What epoll holds for one fd, and who watches it. Events carry the fd,
 * not the watcher: an fd passes from one owner to the next (a channel's
 * handshake, then its pool, then the relay) without leaving epoll, and a
 * watcher removed leaves its fd registered until the fd is closed (which
 * takes it out of epoll) or reports an event nobody wants. So a handover
 * costs one EPOLL_CTL_MOD instead of a DEL and an ADD, and the DEL before a
 * close is never made. */
struct slot {
	struct watcher *w;	/* NULL: nobody watches (the fd may still be registered) */
	uint32_t registered;	/* the events epoll holds for the fd (0: not registered) */
};

struct loop {
	int epfd;
	bool stopping;
	uint64_t now;

	/* the batch being dispatched, so unwatch can cancel stale entries */
	struct epoll_event events[MAX_EVENTS];
	int nevents, cur;

	struct slot *slots;	/* by fd */
	size_t nslots;

	struct timer **heap;
	size_t nheap, capheap;

	struct deferred *dhead, *dtail;	/* to run in this turn */
	struct deferred *nhead, *ntail;	/* ran in this turn already: the next */
	unsigned turn;			/* counts the runs of deferred calls */
	bool in_deferred;
};

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof *l);

	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	l->now = monotonic_ms();
	return l;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	free(l->heap);
	free(l->slots);
	free(l);
}

uint64_t loop_now(struct loop *l) { return l->now; }

uint64_t loop_now_fresh(struct loop *l)
{
	l->now = monotonic_ms();
	return l->now;
}

void loop_stop(struct loop *l) { l->stopping = true; }

static struct slot *slot_of(struct loop *l, int fd)
{
	if ((size_t)fd >= l->nslots) {
		size_t n = l->nslots ? l->nslots : 64;
		struct slot *s;

		while (n <= (size_t)fd)
			n *= 2;
		s = realloc(l->slots, n * sizeof *s);
		if (!s)
			return NULL;
		memset(s + l->nslots, 0, (n - l->nslots) * sizeof *s);
		l->slots = s;
		l->nslots = n;
	}
	return &l->slots[fd];
}

/* Entries for fd later in the current batch are dropped. */
static void forget_pending(struct loop *l, int fd)
{
	for (int i = l->cur + 1; i < l->nevents; i++)
		if (l->events[i].data.u64 == (uint64_t)fd)
			l->events[i].data.u64 = NO_FD;
}

/* Registers fd for events: a MOD when epoll may hold it already, an ADD
 * otherwise. Our record of what epoll holds can be stale either way (an
 * fd closed and reused without us), so each falls back on the other. After
 * an ADD the fd is a new registration, perhaps of a new file under a reused
 * number: what the batch holds for the number is about the old one. */
static int register_fd(struct loop *l, struct slot *sl, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)fd };
	int op = sl->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	if (epoll_ctl(l->epfd, op, fd, &ev) < 0) {
		if (errno != (op == EPOLL_CTL_MOD ? ENOENT : EEXIST))
			return -1;
		op = op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
		if (epoll_ctl(l->epfd, op, fd, &ev) < 0)
			return -1;
	}
	if (op == EPOLL_CTL_ADD)
		forget_pending(l, fd);
	sl->registered = events;
	return 0;
}

int loop_watch(struct loop *l, struct watcher *w, uint32_t events)
{
	struct slot *sl;

	if (events == w->events)
		return 0;
	if (events == 0) {
		loop_unwatch(l, w);
		return 0;
	}
	if (w->fd < 0) {
		errno = EBADF;
		return -1;
	}
	sl = slot_of(l, w->fd);
	if (!sl)
		return -1;
	if (sl->w && sl->w != w) {	/* one watcher per fd, as epoll itself would insist */
		errno = EEXIST;
		return -1;
	}
	if (register_fd(l, sl, w->fd, events) < 0)
		return -1;
	sl->w = w;
	w->events = events;
	return 0;
}

/* The watcher leaves; what epoll holds for its fd stays (see struct slot),
 * unless the fd is about to be closed. The batch's entries for the fd go
 * too, but not when w no longer watches it: the fd may have another owner
 * by then. */
static void detach(struct loop *l, struct watcher *w, bool closing)
{
	struct slot *sl = w->fd >= 0 && (size_t)w->fd < l->nslots ? &l->slots[w->fd] : NULL;

	if (w->events) {
		if (sl && sl->w == w)
			sl->w = NULL;
		forget_pending(l, w->fd);
		w->events = 0;
	}
	if (closing && sl && !sl->w) {
		sl->registered = 0;
		forget_pending(l, w->fd);
	}
}

void loop_unwatch(struct loop *l, struct watcher *w)
{
	detach(l, w, false);
}

void loop_unwatch_closing(struct loop *l, struct watcher *w)
{
	detach(l, w, true);
}

/* An event for an fd nobody watches any more: epoll stops reporting it. */
static void drop_unwatched(struct loop *l, int fd, struct slot *sl)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	sl->registered = 0;
}

/* ---- timers: a binary min-heap of pointers; slot is index + 1 ---- */

static void heap_set(struct loop *l, size_t i, struct timer *t)
{
	l->heap[i] = t;
	t->slot = i + 1;
}

static void heap_up(struct loop *l, size_t i)
{
	struct timer *t = l->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (l->heap[parent]->when <= t->when)
			break;
		heap_set(l, i, l->heap[parent]);
		i = parent;
	}
	heap_set(l, i, t);
}

static void heap_down(struct loop *l, size_t i)
{
	struct timer *t = l->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= l->nheap)
			break;
		if (c + 1 < l->nheap && l->heap[c + 1]->when < l->heap[c]->when)
			c++;
		if (t->when <= l->heap[c]->when)
			break;
		heap_set(l, i, l->heap[c]);
		i = c;
	}
	heap_set(l, i, t);
}

void timer_stop(struct loop *l, struct timer *t)
{
	size_t i;

	if (!t->slot)
		return;
	i = t->slot - 1;
	t->slot = 0;
	l->nheap--;
	if (i == l->nheap)
		return;
	heap_set(l, i, l->heap[l->nheap]);
	heap_down(l, i);
	heap_up(l, l->heap[i]->slot - 1);
}

void timer_start(struct loop *l, struct timer *t, uint64_t after_ms)
{
	timer_stop(l, t);
	if (l->nheap == l->capheap) {
		size_t cap = l->capheap ? l->capheap * 2 : 64;
		struct timer **h = realloc(l->heap, cap * sizeof *h);
		if (!h)
			abort();	/* out of memory for a timer: nothing sane left to do */
		l->heap = h;
		l->capheap = cap;
	}
	t->when = l->now + after_ms;
	heap_set(l, l->nheap++, t);
	heap_up(l, l->nheap - 1);
}

static int next_timeout(struct loop *l)
{
	uint64_t when;

	if (l->dhead)
		return 0;
	if (!l->nheap)
		return -1;
	when = l->heap[0]->when;
	if (when <= l->now)
		return 0;
	return when - l->now > 60000 ? 60000 : (int)(when - l->now);
}

static void run_timers(struct loop *l)
{
	/* Bounded: at most as many calls as there were timers at the start. A
	 * timer armed for "now" from a callback may run again within that. */
	uint64_t now = l->now;
	size_t budget = l->nheap;

	while (budget-- && l->nheap && l->heap[0]->when <= now) {
		struct timer *t = l->heap[0];
		timer_stop(l, t);
		t->cb(l, t);
	}
}

/* ---- deferred calls ---- */

static void append_deferred(struct deferred **head, struct deferred **tail,
			    struct deferred *d)
{
	d->next = NULL;
	if (*tail)
		(*tail)->next = d;
	else
		*head = d;
	*tail = d;
}

void loop_defer(struct loop *l, struct deferred *d)
{
	if (d->queued)
		return;
	d->queued = true;
	if (l->in_deferred && d->turn == l->turn)
		append_deferred(&l->nhead, &l->ntail, d);
	else
		append_deferred(&l->dhead, &l->dtail, d);
}

static bool unlink_deferred(struct deferred **head, struct deferred **tail,
			    struct deferred *d)
{
	struct deferred *prev = NULL;

	for (struct deferred **pp = head; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			if (*tail == d)
				*tail = prev;
			return true;
		}
	}
	return false;
}

void loop_undefer(struct loop *l, struct deferred *d)
{
	if (!d->queued)
		return;
	if (!unlink_deferred(&l->dhead, &l->dtail, d))
		unlink_deferred(&l->nhead, &l->ntail, d);
	d->queued = false;
}

/* Runs what is queued, and what those calls defer, each at most once: the
 * queue ends because every deferred belongs to an object, and an object's
 * call that defers itself again goes to the next turn. */
static void run_deferred(struct loop *l)
{
	l->turn++;
	l->in_deferred = true;
	while (l->dhead) {
		struct deferred *d = l->dhead;

		l->dhead = d->next;
		if (!l->dhead)
			l->dtail = NULL;
		d->queued = false;
		d->turn = l->turn;
		d->cb(l, d);
	}
	l->in_deferred = false;
	l->dhead = l->nhead;
	l->dtail = l->ntail;
	l->nhead = l->ntail = NULL;
}

int loop_run(struct loop *l)
{
	while (!l->stopping) {
		int n = epoll_wait(l->epfd, l->events, MAX_EVENTS, next_timeout(l));

		if (n < 0 && errno != EINTR)
			return -1;
		l->now = monotonic_ms();
		l->nevents = n > 0 ? n : 0;
		for (l->cur = 0; l->cur < l->nevents; l->cur++) {
			uint64_t fd = l->events[l->cur].data.u64;
			struct slot *sl;
			uint32_t ev;

			if (fd == NO_FD || fd >= l->nslots)
				continue;
			sl = &l->slots[fd];
			if (!sl->w) {
				drop_unwatched(l, (int)fd, sl);
				continue;
			}
			/* what the watcher asked for (an entry may date from the
			 * fd's previous owner), and errors */
			ev = l->events[l->cur].events & (sl->w->events | EPOLLERR | EPOLLHUP);
			if (ev)
				sl->w->cb(l, sl->w, ev);
		}
		l->nevents = 0;
		l->cur = 0;
		run_timers(l);
		run_deferred(l);
	}
	l->stopping = false;	/* a later loop_run() runs again */
	return 0;
}
