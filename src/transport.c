#include "transport.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fds.h"
#include "log.h"
#include "ossl.h"
#include "proxy.h"

/* ---- the transport factory ---- */

static const struct transport_impl *impl_for(enum transport_type type)
{
	switch (type) {
	case TRANSPORT_TCP:
		return &transport_tcp;
	case TRANSPORT_NOISE:
		return &transport_noise;
#ifndef RATHOLE_NO_TLS
	/* a TLS=0 build leaves transport_tls.c out: transport_new() then says
	 * that the tls transport is not available in this build */
	case TRANSPORT_TLS:
		return &transport_tls;
#endif
	case TRANSPORT_WEBSOCKET:
		return &transport_websocket;
	default:
		return NULL;
	}
}

struct transport *transport_new(const struct transport_config *cfg, bool server,
				const char *remote_addr, char *err, size_t errlen)
{
	const struct transport_impl *impl = impl_for(cfg->type);
	struct transport *t;

	if (!impl) {
		snprintf(err, errlen, "the %s transport is not available in this build",
			 transport_type_name(cfg->type));
		return NULL;
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->impl = impl;
	t->cfg = cfg;
	t->server = server;
	t->remote_addr = remote_addr;
	if (!server && cfg->tcp.proxy) {
		t->proxy = calloc(1, sizeof *t->proxy);
		if (!t->proxy) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (proxy_parse_url(cfg->tcp.proxy, t->proxy, err, errlen) < 0)
			goto fail;
	}
	if (impl->openssl && ossl_load(err, errlen) < 0)
		goto fail;
	if (impl->init && impl->init(t, err, errlen) < 0)
		goto fail;
	return t;
fail:
	free(t->proxy);
	free(t);
	return NULL;
}

void transport_free(struct transport *t)
{
	if (!t)
		return;
	if (t->impl->fini)
		t->impl->fini(t);
	free(t->proxy);
	free(t);
}

void transport_rebind(struct transport *t, const struct transport_config *cfg,
		      const char *remote_addr)
{
	t->cfg = cfg;
	t->remote_addr = remote_addr;
}

struct stream *transport_wrap(struct transport *t, int fd, bool server)
{
	struct stream *s = t->impl->wrap(t, fd, server);

	if (!s)
		fds_close(fd);
	return s;
}

void transport_tune_socket(const struct transport *t, int fd)
{
	net_set_nodelay(fd, t->cfg->tcp.nodelay);
	net_set_keepalive(fd, t->cfg->tcp.keepalive_secs, t->cfg->tcp.keepalive_interval);
}

/* ---- streams ---- */

/* s->err of a stream that has not failed, and of one whose error text could
 * not be allocated; neither is ever written to. */
static char no_error[1];
static char err_oom[] = "out of memory (recording an error)";

struct stream *stream_alloc(size_t size, const struct stream_ops *ops,
			    struct transport *t, int fd, bool server)
{
	struct stream *s = calloc(1, size);

	if (!s)
		return NULL;
	s->ops = ops;
	s->t = t;
	s->fd = fd;
	s->server = server;
	s->max_chunk = 64 * 1024;
	s->err = no_error;
	return s;
}

void stream_abort(struct stream *s)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (s->fd >= 0 && setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
		log_debug("cannot set SO_LINGER 0 (the close will not reset): %s", strerror(errno));
}

void stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->ops->destroy)
		s->ops->destroy(s);
	if (s->fd >= 0)
		fds_close(s->fd);
	free(s->rx);
	free(s->tx);
	if (s->err != no_error && s->err != err_oom)
		free(s->err);
	free(s);
}

int stream_set_errorv(struct stream *s, const char *fmt, va_list ap)
{
	char text[STREAM_ERR_MAX];

	/* formatted first: the arguments may point into the old text */
	vsnprintf(text, sizeof text, fmt, ap);
	if (s->err == no_error || s->err == err_oom) {
		char *p = malloc(STREAM_ERR_MAX);
		s->err = p ? p : err_oom;
	}
	if (s->err != err_oom)
		memcpy(s->err, text, strlen(text) + 1);
	return ST_ERROR;
}

int stream_set_error(struct stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	stream_set_errorv(s, fmt, ap);
	va_end(ap);
	return ST_ERROR;
}

ssize_t stream_sock_read(struct stream *s, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(s->fd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN) {
		s->want = EPOLLIN;
		return ST_AGAIN;
	}
	return stream_set_error(s, "read: %s", strerror(errno));
}

ssize_t stream_sock_write(struct stream *s, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN) {
		s->want = EPOLLOUT;
		return ST_AGAIN;
	}
	return stream_set_error(s, "write: %s", strerror(errno));
}

int stream_rx_reserve(struct stream *s, size_t cap)
{
	uint8_t *p;

	if (s->rx_cap >= cap)
		return 0;
	p = realloc(s->rx, cap);
	if (!p)
		return stream_set_error(s, "out of memory");
	s->rx = p;
	s->rx_cap = (uint32_t)cap;
	return 0;
}

ssize_t stream_peek(struct stream *s, const uint8_t **data)
{
	if (s->rx_len == 0) {
		ssize_t n;

		if (s->eof)
			return 0;
		n = s->ops->fill(s);
		if (n == 0)
			s->eof = true;
		if (n <= 0)
			return n;
	}
	*data = s->rx + s->rx_off;
	return s->rx_len;
}

void stream_consume(struct stream *s, size_t n)
{
	if (s->ops->consume) {
		s->ops->consume(s, n);
		return;
	}
	s->rx_off += (uint32_t)n;
	s->rx_len -= (uint32_t)n;
	if (s->rx_len == 0)
		s->rx_off = 0;
}

int stream_read_exact(struct stream *s, uint8_t *out, size_t len, size_t *have)
{
	while (*have < len) {
		const uint8_t *p;
		ssize_t n = stream_peek(s, &p);

		if (n <= 0)
			return (int)n;
		if ((size_t)n > len - *have)
			n = (ssize_t)(len - *have);
		memcpy(out + *have, p, (size_t)n);
		*have += (size_t)n;
		stream_consume(s, (size_t)n);
	}
	return 1;
}

size_t stream_seal(struct stream *s, uint8_t *p, size_t len, uint8_t **wire)
{
	if (!s->ops->seal) {
		*wire = p;
		return len;
	}
	return s->ops->seal(s, p, len, wire);
}

ssize_t stream_send_wire(struct stream *s, const uint8_t *p, size_t n)
{
	return s->ops->send_wire(s, p, n);
}

int stream_flush(struct stream *s)
{
	while (s->tx_len) {
		ssize_t n = s->ops->send_wire(s, s->tx + s->tx_off, s->tx_len);

		if (n < 0)
			return (int)n;
		s->tx_off += (uint32_t)n;
		s->tx_len -= (uint32_t)n;
	}
	s->tx_off = 0;
	return 0;
}

bool stream_queue_fits(const struct stream *s, size_t len)
{
	return len <= s->max_chunk &&
	       (size_t)s->tx_len + s->headroom + len + s->tailroom <= STREAM_TX_MAX;
}

int stream_queue(struct stream *s, const void *data, size_t len)
{
	size_t need, room, wlen;
	uint8_t *p, *wire;

	if (len > s->max_chunk)
		return stream_set_error(s, "message too large");
	if (s->tx_off && s->tx_len)
		memmove(s->tx, s->tx + s->tx_off, s->tx_len);
	s->tx_off = 0;
	need = s->tx_len + s->headroom + len + s->tailroom;
	if (need > STREAM_TX_MAX)
		return stream_set_error(s, "peer is not reading (send queue full)");
	if (need > s->tx_cap) {
		room = s->tx_cap ? s->tx_cap : 256;
		while (room < need)
			room *= 2;
		if (room > STREAM_TX_MAX)
			room = STREAM_TX_MAX;
		p = realloc(s->tx, room);
		if (!p)
			return stream_set_error(s, "out of memory");
		s->tx = p;
		s->tx_cap = (uint32_t)room;
	}
	p = s->tx + s->tx_len + s->headroom;
	memcpy(p, data, len);
	wlen = stream_seal(s, p, len, &wire);
	if (wire != s->tx + s->tx_len)
		memmove(s->tx + s->tx_len, wire, wlen);
	s->tx_len += (uint32_t)wlen;
	return 0;
}

int stream_send(struct stream *s, const void *data, size_t len)
{
	if (stream_queue(s, data, len) < 0)
		return ST_ERROR;
	return stream_flush(s) == ST_ERROR ? ST_ERROR : 0;
}

int stream_shutdown(struct stream *s)
{
	int rc;

	if (s->shut)
		return 0;
	rc = stream_flush(s);
	if (rc < 0)
		return rc;
	rc = s->ops->shutdown ? s->ops->shutdown(s) : 0;
	if (rc == 0)
		s->shut = true;
	return rc;
}

void stream_trim(struct stream *s)
{
	if (s->rx && s->rx_len == 0) {
		free(s->rx);
		s->rx = NULL;
		s->rx_cap = 0;
		s->rx_off = 0;
	}
	if (s->tx && s->tx_len == 0) {
		free(s->tx);
		s->tx = NULL;
		s->tx_cap = 0;
		s->tx_off = 0;
	}
}
