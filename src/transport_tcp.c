/* The tcp transport: the stream is the socket itself. */
#include "transport.h"

#include <stdlib.h>
#include <sys/socket.h>

/* The receive buffer serves control messages and UDP frames (the relay
 * reads forwarded bytes into its own pooled buffers, or splices them). It
 * starts small, so that thousands of data channels in their handshake cost
 * little, and doubles whenever a read fills it (a UDP channel's stream). */
#define TCP_RX_MIN (1024)
#define TCP_RX_MAX (64 * 1024)

static int tcp_handshake(struct stream *s)
{
	return 0;
}

static ssize_t tcp_fill(struct stream *s)
{
	ssize_t n;

	if (stream_rx_reserve(s, s->rx_cap ? s->rx_cap : TCP_RX_MIN) < 0)
		return ST_ERROR;
	n = stream_sock_read(s, s->rx, s->rx_cap);
	if (n > 0) {
		s->rx_off = 0;
		s->rx_len = (uint32_t)n;
		/* full: more is waiting; read more at a time from now on */
		if ((size_t)n == s->rx_cap && s->rx_cap < TCP_RX_MAX) {
			uint8_t *p = realloc(s->rx, 2 * (size_t)s->rx_cap);
			if (p) {
				s->rx = p;
				s->rx_cap *= 2;
			}
		}
	}
	return n;
}

static ssize_t tcp_send_wire(struct stream *s, const uint8_t *p, size_t n)
{
	return stream_sock_write(s, p, n);
}

static int tcp_shutdown(struct stream *s)
{
	shutdown(s->fd, SHUT_WR);
	return 0;
}

static const struct stream_ops tcp_ops = {
	.handshake = tcp_handshake,
	.fill = tcp_fill,
	.send_wire = tcp_send_wire,
	.shutdown = tcp_shutdown,
};

static struct stream *tcp_wrap(struct transport *t, int fd, bool server)
{
	struct stream *s = stream_alloc(sizeof *s, &tcp_ops, t, fd, server);

	if (s)
		s->plain = true;
	return s;
}

const struct transport_impl transport_tcp = {
	.name = "tcp",
	.wrap = tcp_wrap,
};
