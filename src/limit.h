/* Bandwidth limits (ours): a token bucket per service and direction.
 *
 * A bucket fills at its rate up to a burst of 100 ms of it (at least
 * LIMIT_MIN_BURST bytes). Whoever moves bytes asks how many it may move now
 * (bucket_allow), moves at most that, and takes them (bucket_take). A taker
 * may overdraw (a batch of UDP datagrams): the debt is paid by waiting.
 * With nothing allowed, it waits (bucket_wait): one timer per bucket, on
 * the event loop, wakes the waiters in turn once a quarter of the burst has
 * come back. Nothing polls, and an unlimited bucket (rate 0) costs a test. */
#ifndef LIMIT_H
#define LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "loop.h"

#define LIMIT_MIN_RATE	1000ULL			/* bytes per second: "1KB" */
#define LIMIT_MAX_RATE	12500000000ULL		/* "100Gbit" */
#define LIMIT_MIN_BURST	4096

/* Someone waiting for a bucket (a relay's direction, a UDP socket). */
struct limit_waiter {
	struct list link;
	void (*cb)(struct limit_waiter *w);	/* may free the waiter's owner */
	bool woken;		/* what it takes next waited for the bucket */
};

struct bucket {
	struct loop *loop;
	uint64_t rate;		/* bytes per second; 0: no limit */
	int64_t tokens;		/* in milli-bytes (rate x ms); negative: a debt */
	uint64_t last;		/* loop time of the last refill, ms */
	struct timer timer;
	struct list waiters;	/* struct limit_waiter, first come first woken */
	uint64_t delayed;	/* bytes that waited for the bucket before moving */
};

enum { LIMIT_IN, LIMIT_OUT };	/* from visitors, to visitors */

/* A service's limit: one bucket per direction, the same rate for both. */
struct limit {
	struct bucket dir[2];
};

void limit_init(struct limit *lim, struct loop *l, uint64_t rate);
/* A new rate (a reload): connections in progress follow it at once. */
void limit_set_rate(struct limit *lim, uint64_t rate);
/* Stops the timers. Every waiter must be gone (its owner freed first). */
void limit_fini(struct limit *lim);

static inline void limit_waiter_init(struct limit_waiter *w, void (*cb)(struct limit_waiter *))
{
	list_init(&w->link);
	w->cb = cb;
	w->woken = false;
}

/* Bytes that may move now: SIZE_MAX without a limit, 0 when one must wait. */
size_t bucket_allow(struct bucket *b);
/* n bytes moved (w: the mover, or NULL); counts them as delayed when w had
 * waited for them. */
void bucket_take(struct bucket *b, struct limit_waiter *w, size_t n);
/* w->cb runs once bytes may move again (at the end of the queue; waiting
 * twice keeps its place). */
void bucket_wait(struct bucket *b, struct limit_waiter *w);
void bucket_cancel(struct limit_waiter *w);

/* The limit in a service's /api/status object: its rate (0: none) and the
 * bytes it delayed each way, as ", key: value" pairs. */
struct buf;
void limit_status(const struct limit *lim, struct buf *b);

/* "10MB", "80Mbit", "1.5 Gbit": bytes per second, SI multiples (1000).
 * 0, or -1 with why set. */
int limit_parse(const char *s, uint64_t *rate, const char **why);

#endif
