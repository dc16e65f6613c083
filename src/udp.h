/* UDP frames on a data channel (see protocol.h for the header encoding). */
#ifndef UDP_H
#define UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "transport.h"

#define UDP_BAD_FRAME	(-3)

/* Reassembles frames from a stream. */
struct udp_framer {
	uint8_t hdr[1 + 24];		/* length byte + header */
	size_t hhave;
	struct net_addr from;		/* of the current frame */
	uint16_t len;			/* its payload length */
	uint8_t *payload;		/* used only when a payload is split across reads */
	size_t phave;
	size_t consume;			/* bytes of the stream to release on the next call */
	bool ready;
};

/* Returns 1 with the next frame (from, len; *payload valid until the next
 * call), ST_AGAIN, 0 at end of stream, ST_ERROR (stream error) or
 * UDP_BAD_FRAME (a header that is not a valid UdpHeader). */
int udp_framer_next(struct udp_framer *f, struct stream *s, const uint8_t **payload);
void udp_framer_reset(struct udp_framer *f);

/* Queues a whole frame (header + payload, len bytes) on the stream in records
 * the transport can seal. Returns 0, 1 if it does not fit now (drop it), or
 * -1 on error. */
int udp_queue_frame(struct stream *s, uint8_t *frame, size_t len);

#endif
