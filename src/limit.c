#include "limit.h"

#include <string.h>

#include "buf.h"

#define REFILL_MAX_MS	10000	/* idle longer than this fills the bucket anyway */

static int64_t burst_mb(const struct bucket *b)
{
	uint64_t burst = b->rate / 10;

	if (burst < LIMIT_MIN_BURST)
		burst = LIMIT_MIN_BURST;
	return (int64_t)burst * 1000;
}

/* rate bytes/s for ms milliseconds is rate x ms milli-bytes: no rounding. */
static void refill(struct bucket *b)
{
	uint64_t now = loop_now(b->loop), dt = now - b->last;

	if (now <= b->last)
		return;
	if (dt > REFILL_MAX_MS)
		dt = REFILL_MAX_MS;
	b->tokens += (int64_t)(b->rate * dt);
	if (b->tokens > burst_mb(b))
		b->tokens = burst_mb(b);
	b->last = now;
}

/* Waiters are woken when a quarter of the burst is back: a few dozen
 * wake-ups a second per bucket, each moving a useful amount. */
static void arm(struct bucket *b)
{
	int64_t need = burst_mb(b) / 4 - b->tokens;
	uint64_t ms = need > 0 ? ((uint64_t)need + b->rate - 1) / b->rate : 0;

	if (!timer_armed(&b->timer))
		timer_start(b->loop, &b->timer, ms ? ms : 1);
}

static void on_refill(struct loop *l, struct timer *t)
{
	struct bucket *b = container_of(t, struct bucket, timer);
	struct list woken;

	if (b->rate)
		refill(b);
	/* each may take all there is and wait again (at the end of the queue) */
	list_init(&woken);
	while (!list_empty(&b->waiters)) {
		struct list *n = b->waiters.next;

		list_del(n);
		list_add_tail(&woken, n);
	}
	while (!list_empty(&woken)) {
		struct limit_waiter *w = list_first(&woken, struct limit_waiter, link);

		list_del(&w->link);
		w->woken = true;
		w->cb(w);
	}
	if (!list_empty(&b->waiters) && b->rate)
		arm(b);
}

static void bucket_init(struct bucket *b, struct loop *l, uint64_t rate)
{
	memset(b, 0, sizeof *b);
	b->loop = l;
	b->rate = rate;
	b->last = loop_now(l);
	b->tokens = rate ? burst_mb(b) : 0;
	timer_init(&b->timer, on_refill);
	list_init(&b->waiters);
}

void limit_init(struct limit *lim, struct loop *l, uint64_t rate)
{
	bucket_init(&lim->dir[0], l, rate);
	bucket_init(&lim->dir[1], l, rate);
}

void limit_set_rate(struct limit *lim, uint64_t rate)
{
	for (int i = 0; i < 2; i++) {
		struct bucket *b = &lim->dir[i];

		if (b->rate == rate)
			continue;
		if (b->rate)
			refill(b);
		else
			b->tokens = 0;
		b->last = loop_now(b->loop);
		b->rate = rate;
		if (rate && b->tokens > burst_mb(b))
			b->tokens = burst_mb(b);
		/* the waiters see the new rate on the loop, not inside a reload */
		timer_stop(b->loop, &b->timer);
		if (!list_empty(&b->waiters))
			timer_start(b->loop, &b->timer, 0);
	}
}

void limit_fini(struct limit *lim)
{
	for (int i = 0; i < 2; i++) {
		struct bucket *b = &lim->dir[i];

		timer_stop(b->loop, &b->timer);
		while (!list_empty(&b->waiters))
			list_del(b->waiters.next);
	}
}

size_t bucket_allow(struct bucket *b)
{
	if (!b || !b->rate)
		return SIZE_MAX;
	refill(b);
	return b->tokens >= 1000 ? (size_t)(b->tokens / 1000) : 0;
}

void bucket_take(struct bucket *b, struct limit_waiter *w, size_t n)
{
	if (!b || !b->rate)
		return;
	b->tokens -= (int64_t)n * 1000;
	if (w && w->woken) {
		b->delayed += n;
		w->woken = false;
	}
}

void bucket_wait(struct bucket *b, struct limit_waiter *w)
{
	if (!list_linked(&w->link))
		list_add_tail(&b->waiters, &w->link);
	if (b->rate)
		arm(b);
	else if (!timer_armed(&b->timer))
		timer_start(b->loop, &b->timer, 0);	/* the limit went away */
}

void bucket_cancel(struct limit_waiter *w)
{
	list_del(&w->link);
}

void limit_status(const struct limit *lim, struct buf *b)
{
	buf_printf(b, ", \"bandwidth_limit\": %llu, \"limit_delayed_bytes_in\": %llu, "
		   "\"limit_delayed_bytes_out\": %llu", (unsigned long long)lim->dir[LIMIT_IN].rate,
		   (unsigned long long)lim->dir[LIMIT_IN].delayed,
		   (unsigned long long)lim->dir[LIMIT_OUT].delayed);
}

/* ---- "10MB", "80Mbit" ---- */

static const struct unit {
	const char *name;
	uint64_t bits;		/* per second, for one of the number */
} units[] = {
	{ "B", 8 }, { "KB", 8000 }, { "kB", 8000 }, { "MB", 8000000 }, { "GB", 8000000000ULL },
	{ "bit", 1 }, { "Kbit", 1000 }, { "kbit", 1000 }, { "Mbit", 1000000 },
	{ "Gbit", 1000000000 },
};

int limit_parse(const char *s, uint64_t *rate, const char **why)
{
	uint64_t whole = 0, frac = 0, scale = 1;
	const char *p = s;
	const struct unit *u = NULL;

	if (*p < '0' || *p > '9')
		goto syntax;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((whole = whole * 10 + (uint64_t)(*p - '0')) > 1000000000000ULL) {
			*why = "the number is too large";
			return -1;
		}
	if (*p == '.') {
		if (p[1] < '0' || p[1] > '9')
			goto syntax;
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (scale < 1000000) {	/* 6 decimals are plenty */
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
	}
	if (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strcmp(p, units[i].name) == 0)
			u = &units[i];
	if (!u) {
		*why = "unknown or missing unit (B, KB, MB, GB: bytes per second; bit, Kbit, "
		       "Mbit, Gbit: bits per second)";
		return -1;
	}
	if (whole > 100000000000ULL / (u->bits > 8 ? u->bits / 8 : 1)) {
		*why = "more than 100Gbit";
		return -1;
	}
	/* bits per second, then bytes */
	*rate = (whole * u->bits + frac * u->bits / scale) / 8;
	if (*rate < LIMIT_MIN_RATE) {
		*why = "less than 1KB (8Kbit)";
		return -1;
	}
	if (*rate > LIMIT_MAX_RATE) {
		*why = "more than 100Gbit";
		return -1;
	}
	return 0;
syntax:
	*why = "expected a number and a unit, e.g. \"10MB\" or \"80Mbit\"";
	return -1;
}
