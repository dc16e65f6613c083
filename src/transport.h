/* Transports and streams.
 *
 * A transport (tcp, tls, noise, websocket) is built once per role from the
 * config; it wraps each connected TCP socket into a stream. A stream is a
 * reliable byte stream with a non-blocking interface shaped for zero copy:
 *
 *   reading:  stream_peek() exposes received plaintext inside the stream's own
 *             buffer; stream_consume() releases it. Transports decrypt in place.
 *   writing:  the caller puts plaintext in its own buffer with s->headroom bytes
 *             free before it and s->tailroom after it; stream_seal() turns it
 *             into wire bytes in place (header, tag, mask); stream_send_wire()
 *             writes them. stream_send() does all of this for small messages
 *             through a bounded queue.
 *
 * Operations return ST_AGAIN when they would block; s->want then holds the
 * epoll events (EPOLLIN/EPOLLOUT) to wait for before retrying. A plain TCP
 * stream (s->plain) carries its bytes unchanged on s->fd, which lets the relay
 * splice() it. */
#ifndef TRANSPORT_H
#define TRANSPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "net.h"

#define ST_AGAIN	(-1)
#define ST_ERROR	(-2)

#define STREAM_TX_MAX	(256 * 1024)	/* bound of the message queue (UDP frames use it) */

struct stream;
struct transport;
struct proxy_url;

struct stream_ops {
	/* Drives the transport handshake: 0 when done, ST_AGAIN, ST_ERROR. */
	int (*handshake)(struct stream *s);
	/* Called with no plaintext pending: receives and makes plaintext
	 * available at s->rx + s->rx_off (s->rx_len bytes). Returns the number
	 * available (> 0), 0 at end of stream, ST_AGAIN or ST_ERROR. A
	 * transport whose protocol announces the end of a stream (TLS's
	 * close_notify, websocket's close frame) sets s->cut when it returns 0
	 * for an end that came without that announcement: a bare TCP FIN,
	 * which anyone on the path can forge to truncate the stream. */
	ssize_t (*fill)(struct stream *s);
	/* Releases n bytes of the exposed plaintext (optional; default moves rx_off). */
	void (*consume)(struct stream *s, size_t n);
	/* Turns len plaintext bytes at p into wire bytes in place, using up to
	 * s->headroom bytes before p and s->tailroom after. Sets *wire and
	 * returns the wire length. NULL: identity. */
	size_t (*seal)(struct stream *s, uint8_t *p, size_t len, uint8_t **wire);
	/* Writes wire bytes: returns how many were taken (> 0), ST_AGAIN or ST_ERROR. */
	ssize_t (*send_wire)(struct stream *s, const uint8_t *p, size_t n);
	/* Ends our sending direction (after all queued bytes): 0, ST_AGAIN, ST_ERROR. */
	int (*shutdown)(struct stream *s);
	/* Frees the transport's per-stream state (the fd is closed by stream_free). */
	void (*destroy)(struct stream *s);
};

/* Two streams per forwarded connection in each process: the struct is kept
 * small (fields ordered without padding; the error text is allocated only
 * when there is an error). */
struct stream {
	const struct stream_ops *ops;
	struct transport *t;
	uint8_t *rx;		/* plaintext exposed by fill() */
	uint8_t *tx;		/* wire bytes queued by stream_send() */
	char *err;		/* why the last ST_ERROR happened ("" until then) */
	int fd;
	uint32_t want;		/* events the last ST_AGAIN waits for */
	uint32_t max_chunk;	/* largest plaintext one seal() accepts */
	uint32_t rx_off, rx_len, rx_cap;
	uint32_t tx_off, tx_len, tx_cap;
	uint16_t headroom, tailroom;
	bool server;		/* accepted by the server (responder) */
	bool plain;		/* wire bytes == plaintext: splice() is possible */
	bool eof;		/* fill() reported end of stream */
	bool cut;		/* ... without the transport's own end message
				 * (close_notify, close frame): may be a cut */
	bool shut;		/* our sending direction is closed */
};

#define STREAM_ERR_MAX	160	/* longest error text kept (longer is cut) */

/* ---- transports ---- */

struct transport_impl {
	const char *name;
	bool openssl;	/* calls OpenSSL: transport_new() loads it first (ossl.h) */
	/* Prepares shared state (contexts, keys). Returns 0 or -1 with err. */
	int (*init)(struct transport *t, char *err, size_t errlen);
	void (*fini)(struct transport *t);
	/* Wraps a connected socket (ownership of fd passes to the stream). */
	struct stream *(*wrap)(struct transport *t, int fd, bool server);
};

struct transport {
	const struct transport_impl *impl;
	const struct transport_config *cfg;
	bool server;
	const char *remote_addr;	/* client: the server's "host:port" */
	struct proxy_url *proxy;	/* client: [transport.tcp] proxy, parsed; or NULL */
	void *priv;			/* the implementation's shared state */
};

/* Builds the transport of a role. Errors are for the user (config-level). */
struct transport *transport_new(const struct transport_config *cfg, bool server,
				const char *remote_addr, char *err, size_t errlen);
void transport_free(struct transport *t);
/* After a reload with equal transport settings: the transport keeps its
 * state but must read the new config (the old one is about to be freed). */
void transport_rebind(struct transport *t, const struct transport_config *cfg,
		      const char *remote_addr);
struct stream *transport_wrap(struct transport *t, int fd, bool server);
/* Applies the transport's TCP options (nodelay, keepalive) to a channel socket. */
void transport_tune_socket(const struct transport *t, int fd);

extern const struct transport_impl transport_tcp;
extern const struct transport_impl transport_noise;
extern const struct transport_impl transport_tls;
extern const struct transport_impl transport_websocket;

/* ---- streams: the generic part ---- */

/* Allocates a stream of size bytes (>= sizeof(struct stream)) for a transport. */
struct stream *stream_alloc(size_t size, const struct stream_ops *ops,
			    struct transport *t, int fd, bool server);
void stream_free(struct stream *s);

static inline int stream_handshake(struct stream *s) { return s->ops->handshake(s); }

/* Exposes received plaintext: > 0 bytes at *data, 0 at end, ST_AGAIN, ST_ERROR. */
ssize_t stream_peek(struct stream *s, const uint8_t **data);
void stream_consume(struct stream *s, size_t n);
/* Reads exactly len bytes into out if they are all available (possibly after
 * several calls: *have counts progress). Returns 1 when complete, 0 at end of
 * stream, ST_AGAIN or ST_ERROR. */
int stream_read_exact(struct stream *s, uint8_t *out, size_t len, size_t *have);

size_t stream_seal(struct stream *s, uint8_t *p, size_t len, uint8_t **wire);
ssize_t stream_send_wire(struct stream *s, const uint8_t *p, size_t n);
/* Queues a small message (sealed) and tries to write it: 0 (all written or
 * queued), ST_ERROR (queue bound exceeded or write error). */
int stream_send(struct stream *s, const void *data, size_t len);
/* Queues a message without writing yet (to batch several): 0 or ST_ERROR. */
int stream_queue(struct stream *s, const void *data, size_t len);
/* Whether a message of len plaintext bytes fits in the queue right now. */
bool stream_queue_fits(const struct stream *s, size_t len);
/* Writes queued bytes: 0 when the queue is empty, ST_AGAIN, ST_ERROR. */
int stream_flush(struct stream *s);
static inline bool stream_tx_pending(const struct stream *s) { return s->tx_len != 0; }
/* Flushes, then ends our sending direction: 0, ST_AGAIN, ST_ERROR. */
int stream_shutdown(struct stream *s);
/* Drops buffers that hold nothing (an idle stream costs only its struct). */
void stream_trim(struct stream *s);
/* Makes stream_free() end the connection abortively: a TCP reset (SO_LINGER
 * 0), so the peer sees ECONNRESET, not an end that looks complete; what is
 * still unsent is dropped. For a relay whose other stream failed or was cut. */
void stream_abort(struct stream *s);

/* Helpers for implementations: plain socket I/O with errno mapped to ST_*. */
ssize_t stream_sock_read(struct stream *s, void *buf, size_t len);
ssize_t stream_sock_write(struct stream *s, const void *buf, size_t len);
/* Records why the stream failed (s->err); returns ST_ERROR. */
int stream_set_error(struct stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int stream_set_errorv(struct stream *s, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
int stream_rx_reserve(struct stream *s, size_t cap);

#endif
