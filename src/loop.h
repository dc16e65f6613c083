/* The event loop: epoll readiness, a timer heap, deferred calls.
 *
 * Objects embed a struct watcher (per fd) and struct timer, and recover
 * themselves with container_of in the callback. A watcher removed during a
 * batch of events never receives a stale event from that batch, so objects
 * may be freed from inside any callback. One thread, no locks. */
#ifndef LOOP_H
#define LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

struct loop;
struct watcher;
struct timer;

typedef void (*watcher_cb)(struct loop *l, struct watcher *w, uint32_t events);
typedef void (*timer_cb)(struct loop *l, struct timer *t);

struct watcher {
	int fd;
	uint32_t events;	/* currently registered (0: not registered) */
	watcher_cb cb;
};

struct timer {
	uint64_t when;		/* loop time in ms */
	size_t slot;		/* index in the heap + 1; 0 when not armed */
	timer_cb cb;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);

/* Runs until loop_stop() is called (before or during the run; the next
 * run starts afresh). Returns 0, or -1 if epoll fails. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

/* Monotonic milliseconds, cached once per iteration. */
uint64_t loop_now(struct loop *l);
uint64_t loop_now_fresh(struct loop *l);

static inline void watcher_init(struct watcher *w, int fd, watcher_cb cb)
{
	w->fd = fd;
	w->events = 0;
	w->cb = cb;
}

/* Sets the interest of a watcher: adds, modifies or (events == 0) removes it
 * from epoll. Does nothing when the interest is unchanged. Returns -1 on error. */
int loop_watch(struct loop *l, struct watcher *w, uint32_t events);
/* Removes the watcher (if registered) and drops its pending events.
 * Does not close the fd, which stays registered in epoll until it is
 * closed, watched again, or reports an event (loop.c: struct slot). */
void loop_unwatch(struct loop *l, struct watcher *w);
/* loop_unwatch() for a watcher whose fd is closed right after: the loop
 * then forgets what epoll held for it (closing takes an fd out of epoll).
 * Only for an fd that no other descriptor shares: rathole never dups one,
 * nor forks. */
void loop_unwatch_closing(struct loop *l, struct watcher *w);

static inline void timer_init(struct timer *t, timer_cb cb)
{
	t->when = 0;
	t->slot = 0;
	t->cb = cb;
}
static inline bool timer_armed(const struct timer *t) { return t->slot != 0; }
void timer_start(struct loop *l, struct timer *t, uint64_t after_ms);
void timer_stop(struct loop *l, struct timer *t);

/* Deferred calls run after the current batch of events, in FIFO order.
 * One deferred from inside another runs in the same turn (a resolved address
 * that starts a connection whose relay starts), but none runs twice in a
 * turn: one that defers itself again, to yield, waits for the next. */
struct deferred {
	struct deferred *next;
	bool queued;
	unsigned turn;		/* the last turn it ran in */
	void (*cb)(struct loop *l, struct deferred *d);
};
static inline void deferred_init(struct deferred *d, void (*cb)(struct loop *, struct deferred *))
{
	d->next = NULL;
	d->queued = false;
	d->turn = 0;
	d->cb = cb;
}
void loop_defer(struct loop *l, struct deferred *d);
void loop_undefer(struct loop *l, struct deferred *d);

#endif
