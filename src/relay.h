/* Moves bytes both ways between two streams until both directions end.
 *
 * - plain TCP to plain TCP goes through splice() and a pipe per direction
 *   (taken from a small pool while bytes flow, returned when idle);
 * - otherwise one bounded buffer per direction, also only while bytes flow:
 *   plaintext is read straight into it and sealed (encrypted, framed) in
 *   place, or written from the source transport's own buffer when the
 *   destination takes plaintext;
 * - a direction stops reading while its destination cannot take more
 *   (backpressure), and an end of stream becomes a shutdown of the other
 *   side's sending direction (half-close);
 * - an error on either side, or an end of stream that its transport did not
 *   announce (s->cut: no close_notify, no close frame), ends the relay and
 *   resets both connections (RST), so that a truncated stream never looks
 *   complete to the far end. */
#ifndef RELAY_H
#define RELAY_H

#include <stdint.h>

#include "list.h"
#include "loop.h"
#include "transport.h"

struct relay;

struct relay_stats {
	uint64_t bytes[2];	/* [0]: a -> b, [1]: b -> a */
};

/* Called once when the relay ends, just before it frees itself and both
 * streams. err is NULL after a clean end (both directions finished). */
typedef void (*relay_done_cb)(void *arg, struct relay *r, const struct relay_stats *st,
			      const char *err);

/* Takes ownership of both streams. Returns NULL (and frees both streams)
 * when out of resources. */
struct relay *relay_new(struct loop *l, struct stream *a, struct stream *b,
			relay_done_cb cb, void *arg);
/* Ends the relay now without calling back: both connections are reset (an
 * end forced in the middle is not a complete stream). */
void relay_free(struct relay *r);
/* Bandwidth limits (limit.h) of each direction, NULL for none; the buckets
 * must outlive the relay. Set before the relay's first turn. */
struct bucket;
void relay_set_limits(struct relay *r, struct bucket *a_to_b, struct bucket *b_to_a);
const struct relay_stats *relay_stats(const struct relay *r);
/* A list node for the owner's use (its list of active connections), so the
 * owner needs no allocation of its own per connection. */
struct list *relay_link(struct relay *r);
struct relay *relay_from_link(struct list *node);

/* Frees the pooled pipes and buffers: at exit (leak checkers stay quiet),
 * and when the process runs out of file descriptors (idle pipes hold some). */
void relay_pools_free(void);

#endif
