/* The websocket transport: stream pairs over TCP and TLS, and one side
 * played by hand ("raw") to send exactly the frames a test needs. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base64.h"
#include "check.h"
#include "log.h"
#include "streampair.h"
#include "transport.h"

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define RAW_BOUND (16 * 1024 + 64)	/* the transport's wire buffer */

static const char *dir;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the raw side ---- */

static int raw_write(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	long long deadline = now_ms() + 5000;

	while (n && now_ms() < deadline) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EAGAIN) {
			sp_wait(fd, POLLOUT, 50);
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return n ? -1 : 0;
}

/* Reads exactly n bytes; returns how many arrived before EOF/timeout. */
static size_t raw_read(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	size_t got = 0;
	long long deadline = now_ms() + 5000;

	while (got < n && now_ms() < deadline) {
		ssize_t r = recv(fd, p + got, n - got, 0);

		if (r < 0 && errno == EAGAIN) {
			sp_wait(fd, POLLIN, 50);
			continue;
		}
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/* Reads an HTTP header byte by byte (so nothing after it is taken). */
static size_t raw_read_head(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap && raw_read(fd, buf + n, 1) == 1) {
		n++;
		if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	buf[n] = '\0';
	return n;
}

static size_t frame(uint8_t *out, int fin, uint8_t op, const void *payload, size_t len,
		    int masked)
{
	static const uint8_t mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
	size_t h = 2, i;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	if (len <= 125) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] = 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		h = 10;
	}
	if (masked) {
		out[1] |= 0x80;
		memcpy(out + h, mask, 4);
		h += 4;
	}
	for (i = 0; i < len; i++)
		out[h + i] = ((const uint8_t *)payload)[i] ^ (masked ? mask[i & 3] : 0);
	return h + len;
}

static void accept_for(const char *key, char out[29])
{
	char buf[128];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned n;

	snprintf(buf, sizeof buf, "%.64s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	EVP_Digest(buf, strlen(buf), md, &n, EVP_sha1(), NULL);
	base64_encode(md, 20, out);
}

/* ---- driving a stream ---- */

static int drive_handshake(struct stream *s)
{
	int rc = ST_AGAIN;
	long long deadline = now_ms() + 5000;

	while (rc == ST_AGAIN && now_ms() < deadline) {
		rc = stream_handshake(s);
		if (rc == ST_AGAIN)
			sp_wait(s->fd, s->want & EPOLLOUT ? POLLOUT : POLLIN, 50);
	}
	return rc;
}

/* Reads up to cap bytes of plaintext until want bytes, EOF (returns with
 * *end = 0), an error (*end = ST_ERROR) or a timeout. */
static size_t drive_read_for(struct stream *s, uint8_t *out, size_t cap, size_t want, int *end,
			     int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	size_t got = 0;

	*end = ST_AGAIN;
	while (got < want && now_ms() < deadline) {
		const uint8_t *p;
		ssize_t n = stream_peek(s, &p);

		if (n == ST_AGAIN) {
			sp_wait(s->fd, s->want & EPOLLOUT ? POLLOUT : POLLIN, 50);
			continue;
		}
		if (n <= 0) {
			*end = (int)n;
			break;
		}
		if ((size_t)n > cap - got)
			n = (ssize_t)(cap - got);
		memcpy(out + got, p, (size_t)n);
		got += (size_t)n;
		stream_consume(s, (size_t)n);
	}
	return got;
}

static size_t drive_read(struct stream *s, uint8_t *out, size_t cap, size_t want, int *end)
{
	return drive_read_for(s, out, cap, want, end, 5000);
}

/* ---- pairs ---- */

struct ws {
	struct transport_config ccfg, scfg;
	struct transport *ct, *st;
	int cfd, sfd;
};

static int ws_open(struct ws *w, bool tls)
{
	char err[512];

	memset(w, 0, sizeof *w);
	sp_config(&w->scfg, TRANSPORT_WEBSOCKET);
	sp_config(&w->ccfg, TRANSPORT_WEBSOCKET);
	w->scfg.has_websocket = w->ccfg.has_websocket = true;
	if (tls) {
		static char p12[256], ca[256];

		snprintf(p12, sizeof p12, "%s/good.p12", dir);
		snprintf(ca, sizeof ca, "%s/ca.pem", dir);
		w->scfg.websocket.tls = w->ccfg.websocket.tls = true;
		w->scfg.has_tls = w->ccfg.has_tls = true;
		w->scfg.tls.pkcs12 = p12;
		w->scfg.tls.pkcs12_password = "secret";
		w->ccfg.tls.trusted_root = ca;
	}
	w->st = transport_new(&w->scfg, true, NULL, err, sizeof err);
	CHECKF(w->st, "server: %s", err);
	w->ct = transport_new(&w->ccfg, false, tls ? "localhost:2333" : "127.0.0.1:2333", err,
			      sizeof err);
	CHECKF(w->ct, "client: %s", err);
	if (!w->st || !w->ct || sp_tcp_pair(&w->cfd, &w->sfd) < 0)
		return -1;
	return 0;
}

static void ws_close(struct ws *w)
{
	transport_free(w->ct);
	transport_free(w->st);
}

static void test_pair(bool tls)
{
	struct ws w;
	struct stream *c, *s;
	int rc_c, rc_s;

	if (ws_open(&w, tls) < 0) {
		CHECK(0);
		ws_close(&w);
		return;
	}
	c = transport_wrap(w.ct, w.cfd, false);
	s = transport_wrap(w.st, w.sfd, true);
	sp_handshake(c, s, 5000, &rc_c, &rc_s);
	CHECKF(rc_c == 0, "client: %s", c->err);
	CHECKF(rc_s == 0, "server: %s", s->err);
	CHECK(c->headroom == 14 && s->headroom == 10 && !c->plain);
	if (tls)
		CHECK(c->max_chunk + 8 == 16384 && s->max_chunk + 4 == 16384);
	if (rc_c == 0 && rc_s == 0)
		CHECKF(sp_exchange(c, s, 1 << 20, 20000) == 0, "ws %s exchange", tls ? "tls" : "tcp");
	stream_free(c);
	stream_free(s);
	ws_close(&w);
}

/* A server stream with a raw client that did the handshake by hand;
 * extra bytes (frames) may follow the request in the same write. */
static struct stream *raw_client(struct ws *w, const char *request, const void *extra,
				 size_t extra_len)
{
	char head[1024], want[64];
	uint8_t buf[1024];
	struct stream *s;
	int rc;

	if (ws_open(w, false) < 0)
		return NULL;
	s = transport_wrap(w->st, w->sfd, true);
	if (!request)
		request = "GET /any/path?q=1 HTTP/1.1\r\nHost: example\r\nupgrade: WebSocket\r\n"
			  "CONNECTION: keep-alive, Upgrade\r\nSec-WebSocket-Key: " RFC_KEY "\r\n"
			  "Sec-WebSocket-Version: 13\r\n\r\n";
	memcpy(buf, request, strlen(request));
	memcpy(buf + strlen(request), extra, extra_len);
	raw_write(w->cfd, buf, strlen(request) + extra_len);
	rc = drive_handshake(s);
	CHECKF(rc == 0, "server handshake: %s", s->err);
	raw_read_head(w->cfd, head, sizeof head);
	snprintf(want, sizeof want, "Sec-WebSocket-Accept: %s\r\n", RFC_ACCEPT);
	CHECKF(strncmp(head, "HTTP/1.1 101 ", 13) == 0 && strstr(head, want), "%s", head);
	return s;
}

static void test_fragments_ping_big_close(void)
{
	static const uint8_t close_frame[4] = { 0x88, 0x02, 0x03, 0xe8 };
	struct ws w;
	struct stream *s;
	uint8_t wire[512], *big, out[64];
	size_t n = 0, got, total, sent, max_peek = 0, i;
	int end;

	s = raw_client(&w, NULL, "", 0);
	if (!s)
		goto out;
	n += frame(wire + n, 0, 0x1, "Hello, ", 7, 1);		/* text, not final */
	n += frame(wire + n, 1, 0x9, "p1", 2, 1);		/* ping between fragments */
	n += frame(wire + n, 0, 0x0, "web", 3, 1);
	n += frame(wire + n, 1, 0xA, "x", 1, 1);		/* unsolicited pong */
	n += frame(wire + n, 1, 0x0, "socket!", 7, 1);		/* final continuation */
	n += frame(wire + n, 1, 0x2, "", 0, 1);			/* empty binary message */
	n += frame(wire + n, 1, 0x2, "end", 3, 1);
	raw_write(w.cfd, wire, n);
	got = drive_read(s, out, sizeof out, 20, &end);
	CHECKF(got == 20 && memcmp(out, "Hello, websocket!end", 20) == 0, "got %zu: %.*s", got,
	       (int)got, out);
	CHECK(raw_read(w.cfd, wire, 4) == 4 && memcmp(wire, "\x8a\x02p1", 4) == 0);

	/* One 1 MiB message streams through the bounded buffer. */
	total = 1 << 20;
	{
		uint8_t *payload = malloc(total);

		for (i = 0; i < total; i++)
			payload[i] = (uint8_t)(i * 7 + (i >> 9));
		big = malloc(total + 14);
		n = frame(big, 1, 0x2, payload, total, 1);
		free(payload);
	}
	sent = got = 0;
	for (long long deadline = now_ms() + 10000; got < total && now_ms() < deadline;) {
		const uint8_t *p;
		ssize_t r;

		if (sent < n) {
			ssize_t k = send(w.cfd, big + sent, n - sent, MSG_NOSIGNAL);

			if (k > 0)
				sent += (size_t)k;
		}
		r = stream_peek(s, &p);
		if (r == ST_AGAIN) {
			sp_wait(s->fd, POLLIN, 10);
			continue;
		}
		if (r <= 0)
			break;
		for (i = 0; i < (size_t)r; i++)
			if (p[i] != (uint8_t)((got + i) * 7 + ((got + i) >> 9)))
				break;
		CHECKF(i == (size_t)r, "1 MiB message: byte %zu differs", got + i);
		if ((size_t)r > max_peek)
			max_peek = (size_t)r;
		CHECK(s->rx_cap <= RAW_BOUND);
		got += (size_t)r;
		stream_consume(s, (size_t)r);
	}
	free(big);
	CHECKF(got == total, "1 MiB message: %zu bytes", got);
	CHECKF(max_peek <= RAW_BOUND, "largest piece %zu", max_peek);

	/* The peer's close ends our stream; our shutdown answers it. */
	n = frame(wire, 1, 0x8, "\x03\xe8", 2, 1);
	raw_write(w.cfd, wire, n);
	drive_read(s, out, sizeof out, 1, &end);
	CHECKF(end == 0, "end %d: %s", end, s->err);
	CHECK(stream_shutdown(s) == 0);
	CHECK(raw_read(w.cfd, wire, 4) == 4 && memcmp(wire, close_frame, 4) == 0);
	/* The connection stays open (a proxy in between would end both
	 * directions at a TCP EOF) until the stream is freed. */
	CHECK(recv(w.cfd, wire, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);
	stream_free(s);
	CHECK(raw_read(w.cfd, wire, 1) == 0);
out:
	ws_close(&w);
}

/* A ping that arrives while a data frame is half written is answered after
 * that frame, never inside it. */
static void test_pong_at_frame_boundary(void)
{
	struct ws w;
	struct stream *s = raw_client(&w, NULL, "", 0);
	size_t len = 65536, left, got = 0, i, n;
	uint8_t *buf, *wire, *seen, ping[16];
	const uint8_t *d;
	int small = 4096;
	ssize_t k;

	if (!s) {
		ws_close(&w);
		return;
	}
	setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	setsockopt(w.cfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	buf = malloc(s->headroom + len);
	seen = malloc(len + 64);
	for (i = 0; i < len; i++)
		buf[s->headroom + i] = (uint8_t)i;
	left = stream_seal(s, buf + s->headroom, len, &wire);
	while ((k = stream_send_wire(s, wire, left)) > 0) {
		wire += k;
		left -= (size_t)k;
	}
	CHECKF(k == ST_AGAIN && left > 0, "the frame should be half written (%zd, %zu)", k, left);
	n = frame(ping, 1, 0x9, "p1", 2, 1);
	raw_write(w.cfd, ping, n);
	sp_wait(s->fd, POLLIN, 1000);
	CHECK(stream_peek(s, &d) == ST_AGAIN);	/* the ping is taken, the pong waits */
	for (long long deadline = now_ms() + 5000; now_ms() < deadline && got < len + 14;) {
		ssize_t r = recv(w.cfd, seen + got, len + 64 - got, 0);

		if (r > 0)
			got += (size_t)r;
		if (left) {
			k = stream_send_wire(s, wire, left);
			if (k > 0) {
				wire += k;
				left -= (size_t)k;
			}
		} else {
			stream_peek(s, &d);	/* at the boundary: the pong goes out */
		}
		if (r <= 0)
			sp_wait(w.cfd, POLLIN, 10);
	}
	CHECKF(got == len + 10 + 4, "got %zu", got);
	CHECK(seen[0] == 0x82 && seen[1] == 127);
	for (i = 0; i < len && seen[10 + i] == (uint8_t)i; i++)
		;
	CHECKF(i == len, "data differs at %zu", i);
	CHECK(memcmp(seen + 10 + len, "\x8a\x02p1", 4) == 0);
	free(buf);
	free(seen);
	stream_free(s);
	ws_close(&w);
}

/* Frames arriving one byte at a time: headers, masks and control payloads
 * are put together across reads. */
static void test_byte_by_byte(void)
{
	struct ws w;
	struct stream *s = raw_client(&w, NULL, "", 0);
	uint8_t wire[1024], data[300], out[600], pong[16];
	size_t n = 0, got = 0, i;

	if (!s) {
		ws_close(&w);
		return;
	}
	for (i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)(i * 13);
	n += frame(wire + n, 0, 0x2, data, 200, 1);		/* 16-bit length */
	n += frame(wire + n, 1, 0x9, "ping-payload", 12, 1);
	n += frame(wire + n, 1, 0x0, data + 200, 100, 1);
	for (i = 0; i < n; i++) {
		const uint8_t *d;
		ssize_t r;

		raw_write(w.cfd, wire + i, 1);
		sp_wait(s->fd, POLLIN, 100);
		while ((r = stream_peek(s, &d)) > 0) {
			if (got + (size_t)r <= sizeof out)
				memcpy(out + got, d, (size_t)r);
			got += (size_t)r;
			stream_consume(s, (size_t)r);
		}
		CHECKF(r == ST_AGAIN, "byte %zu: %zd %s", i, r, s->err);
	}
	CHECKF(got == 300 && memcmp(out, data, 300) == 0, "got %zu", got);
	CHECK(raw_read(w.cfd, pong, 14) == 14 && memcmp(pong, "\x8a\x0cping-payload", 14) == 0);
	stream_free(s);
	ws_close(&w);
}

/* Frames that arrive with the upgrade request are not lost. */
static void test_frame_with_request(void)
{
	struct ws w;
	struct stream *s;
	uint8_t f[32], out[16];
	size_t n = frame(f, 1, 0x2, "early", 5, 1);
	int end;

	s = raw_client(&w, NULL, f, n);
	if (s) {
		CHECK(drive_read(s, out, sizeof out, 5, &end) == 5 && memcmp(out, "early", 5) == 0);
		stream_free(s);
	}
	ws_close(&w);
}

/* Each protocol violation closes the channel with a clear message. */
static void violation(const uint8_t *frames, size_t n, const char *expect)
{
	struct ws w;
	struct stream *s = raw_client(&w, NULL, "", 0);
	uint8_t out[64];
	int end;

	if (s) {
		raw_write(w.cfd, frames, n);
		drive_read(s, out, sizeof out, sizeof out, &end);
		CHECKF(end == ST_ERROR && strstr(s->err, expect), "want \"%s\": end %d, %s", expect,
		       end, s->err);
		stream_free(s);
	}
	ws_close(&w);
}

static void test_violations(void)
{
	uint8_t f[256], payload[126] = { 0 };
	size_t n;

	n = frame(f, 1, 0x2, "abc", 3, 0);
	violation(f, n, "unmasked frame from the client");
	n = frame(f, 1, 0x2, "abc", 3, 1);
	f[0] |= 0x40;
	violation(f, n, "reserved bits");
	n = frame(f, 1, 0x3, "abc", 3, 1);
	violation(f, n, "reserved opcode");
	n = frame(f, 1, 0xB, "abc", 3, 1);
	violation(f, n, "reserved opcode");
	n = frame(f, 1, 0x9, payload, 126, 1);
	violation(f, n, "control frame longer than 125 bytes");
	n = frame(f, 0, 0x9, "x", 1, 1);
	violation(f, n, "fragmented control frame");
	n = frame(f, 1, 0x0, "abc", 3, 1);
	violation(f, n, "continuation frame without a message");
	n = frame(f, 0, 0x2, "abc", 3, 1);
	n += frame(f + n, 1, 0x2, "def", 3, 1);
	violation(f, n, "new message before the previous one ended");
	n = frame(f, 1, 0x8, "\x03", 1, 1);
	violation(f, n, "close frame with a 1-byte payload");
	memcpy(f, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01" "abcd", 14);
	violation(f, 14, "2^63");
}

/* The connection ends in the middle of a frame: an error, not a clean end. */
static void test_truncated_frame(void)
{
	struct ws w;
	struct stream *s = raw_client(&w, NULL, "", 0);
	uint8_t f[64], out[64];
	size_t n = frame(f, 1, 0x2, "abcdef", 6, 1);
	int end;

	if (s) {
		raw_write(w.cfd, f, n - 3);
		shutdown(w.cfd, SHUT_WR);
		CHECK(drive_read(s, out, sizeof out, sizeof out, &end) == 3);
		CHECKF(end == ST_ERROR && strstr(s->err, "middle of a frame"), "%d %s", end, s->err);
		stream_free(s);
	}
	ws_close(&w);
}

/* A whole frame, then the TCP end: without a close frame the end is marked
 * as a possible cut (s->cut, issue 23); after a close frame it is clean. */
static void test_end_without_close_frame(void)
{
	for (int with_close = 0; with_close < 2; with_close++) {
		struct ws w;
		struct stream *s = raw_client(&w, NULL, "", 0);
		uint8_t f[64], out[64];
		size_t n = frame(f, 1, 0x2, "abcdef", 6, 1);
		int end;

		if (s) {
			if (with_close)
				n += frame(f + n, 1, 0x8, "\x03\xe8", 2, 1);
			raw_write(w.cfd, f, n);
			shutdown(w.cfd, SHUT_WR);
			CHECK(drive_read(s, out, sizeof out, sizeof out, &end) == 6);
			CHECKF(end == 0 && s->cut == !with_close, "close frame %d: end %d cut %d %s",
			       with_close, end, s->cut, s->err);
			stream_free(s);
		}
		ws_close(&w);
	}
}

static void bad_request(const char *request, const char *expect)
{
	struct ws w;
	struct stream *s;
	char head[512];
	int rc;

	if (ws_open(&w, false) < 0) {
		CHECK(0);
		ws_close(&w);
		return;
	}
	s = transport_wrap(w.st, w.sfd, true);
	raw_write(w.cfd, request, strlen(request));
	rc = drive_handshake(s);
	CHECKF(rc == ST_ERROR && strstr(s->err, expect), "want \"%s\": %d %s", expect, rc, s->err);
	raw_read_head(w.cfd, head, sizeof head);
	CHECKF(strncmp(head, "HTTP/1.1 400 Bad Request\r\n", 26) == 0, "%s", head);
	stream_free(s);
	close(w.cfd);
	ws_close(&w);
}

static void test_bad_requests(void)
{
	static char huge[9000];

	bad_request("POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "the method is not GET");
	bad_request("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "not an HTTP/1.1 request");
	bad_request("GET / HTTP/1.1\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "Upgrade: websocket");
	bad_request("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
		    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "Connection: Upgrade");
	bad_request("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n",
		    "Version is not 13");
	bad_request("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Version: 13\r\n\r\n", "Sec-WebSocket-Key");
	bad_request("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "Sec-WebSocket-Key");
	memset(huge, 'x', sizeof huge - 1);
	memcpy(huge, "GET / HTTP/1.1\r\nX-Padding: ", 27);
	bad_request(huge, "larger than 8192");
}

/* A client stream with a raw server: the server's answer is given. */
static struct stream *raw_server(struct ws *w, const char *status_and_headers,
				 bool good_accept, const void *extra, size_t extra_len,
				 int *rc)
{
	char head[1024], accept[29], resp[1024];
	const char *k;
	struct stream *c;
	size_t n;
	int i;

	if (ws_open(w, false) < 0)
		return NULL;
	c = transport_wrap(w->ct, w->cfd, false);
	*rc = stream_handshake(c);
	raw_read_head(w->sfd, head, sizeof head);
	CHECKF(strncmp(head, "GET / HTTP/1.1\r\nHost: 127.0.0.1:2333\r\n", 38) == 0 &&
	       strstr(head, "\r\nUpgrade: websocket\r\n") &&
	       strstr(head, "\r\nConnection: Upgrade\r\n") &&
	       strstr(head, "\r\nSec-WebSocket-Version: 13\r\n"), "request: %s", head);
	k = strstr(head, "Sec-WebSocket-Key: ");
	CHECK(k && strlen(k) >= 19 + 24);
	if (!k)
		return c;
	memcpy(resp, k + 19, 24);
	resp[24] = '\0';
	accept_for(resp, accept);
	if (!good_accept)
		accept[0] = accept[0] == 'A' ? 'B' : 'A';
	n = (size_t)snprintf(resp, sizeof resp, "%s\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			     status_and_headers, accept);
	memcpy(resp + n, extra, extra_len);
	raw_write(w->sfd, resp, n + extra_len);
	for (i = 0; i < 100 && (*rc = stream_handshake(c)) == ST_AGAIN; i++)
		sp_wait(c->fd, POLLIN, 50);
	return c;
}

static void test_client_side(void)
{
	struct ws w;
	struct stream *c;
	uint8_t f[64], out[16];
	size_t n = frame(f, 1, 0x2, "early", 5, 0);
	int rc, end;

	c = raw_server(&w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		       "Connection: upgrade", true, f, n, &rc);
	if (c && rc == 0) {
		/* the frame sent with the 101 answer */
		CHECK(drive_read(c, out, sizeof out, 5, &end) == 5 && memcmp(out, "early", 5) == 0);
		/* our frames are masked */
		CHECK(stream_send(c, "abc", 3) == 0);
		CHECK(raw_read(w.sfd, f, 9) == 9 && f[0] == 0x82 && f[1] == 0x83);
		for (int i = 0; i < 3; i++)
			f[6 + i] ^= f[2 + (i & 3)];
		CHECK(memcmp(f + 6, "abc", 3) == 0);
		/* ping answered with a masked pong */
		n = frame(f, 1, 0x9, "pp", 2, 0);
		raw_write(w.sfd, f, n);
		drive_read_for(c, out, sizeof out, 1, &end, 200);
		CHECK(raw_read(w.sfd, f, 8) == 8 && f[0] == 0x8a && f[1] == 0x82);
		/* a masked frame from the server is a violation */
		n = frame(f, 1, 0x2, "zz", 2, 1);
		raw_write(w.sfd, f, n);
		drive_read(c, out, sizeof out, sizeof out, &end);
		CHECKF(end == ST_ERROR && strstr(c->err, "masked frame from the server"), "%s",
		       c->err);
	} else {
		CHECKF(0, "handshake %d: %s", rc, c ? c->err : "");
	}
	stream_free(c);
	close(w.sfd);
	ws_close(&w);

	c = raw_server(&w, "HTTP/1.1 404 Not Found", true, "", 0, &rc);
	CHECKF(rc == ST_ERROR && strstr(c->err, "answered HTTP 404 Not Found"), "%s", c->err);
	stream_free(c);
	close(w.sfd);
	ws_close(&w);

	c = raw_server(&w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		       "Connection: Upgrade", false, "", 0, &rc);
	CHECKF(rc == ST_ERROR && strstr(c->err, "does not match"), "%s", c->err);
	stream_free(c);
	close(w.sfd);
	ws_close(&w);

	c = raw_server(&w, "SSH-2.0-OpenSSH_9.2", true, "", 0, &rc);
	CHECKF(rc == ST_ERROR && strstr(c->err, "did not answer in HTTP"), "%s", c->err);
	stream_free(c);
	close(w.sfd);
	ws_close(&w);
}

/* The status code is exactly three digits after "HTTP/1.x " (sscanf's %3d
 * took " 101", "+101" and the "101" of "1011"); otherwise good answers. */
static void test_bad_status_lines(void)
{
	static const char *const lines[] = {
		"HTTP/1.1 1011 Switching Protocols", "HTTP/1.1  101 Switching Protocols",
		"HTTP/1.1 +101 Switching Protocols", "HTTP/1.1 10 Switching Protocols",
		"HTTP/1.1 10a Switching Protocols", "HTTP/1.1 -01 Switching Protocols",
		"HTTP/1.1 101Switching Protocols", "HTTP/1.0 101 Switching Protocols",
	};
	char answer[256];
	struct ws w;
	struct stream *c;
	int rc;

	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		snprintf(answer, sizeof answer, "%s\r\nUpgrade: websocket\r\nConnection: Upgrade",
			 lines[i]);
		c = raw_server(&w, answer, true, "", 0, &rc);
		CHECKF(rc == ST_ERROR && strstr(c->err, "did not answer in HTTP"), "%s: %d %s",
		       lines[i], rc, c->err);
		stream_free(c);
		close(w.sfd);
		ws_close(&w);
	}
	/* a 101 without a reason is a 101; a reason is printed without controls */
	c = raw_server(&w, "HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade", true,
		       "", 0, &rc);
	CHECKF(rc == 0, "%d %s", rc, c->err);
	stream_free(c);
	close(w.sfd);
	ws_close(&w);
	c = raw_server(&w, "HTTP/1.1 503 Busy\x1b[2J now", true, "", 0, &rc);
	CHECKF(rc == ST_ERROR && strstr(c->err, "answered HTTP 503 Busy?[2J now instead"), "%s",
	       c->err);
	stream_free(c);
	close(w.sfd);
	ws_close(&w);
}

int main(void)
{
	load_openssl();
	signal(SIGPIPE, SIG_IGN);
	log_level = LOG_WARN;
	dir = sp_tmpdir();
	if (!dir || sp_make_pki(dir) < 0) {
		fprintf(stderr, "cannot make the test PKI with the openssl command\n");
		sp_rmtree(dir);
		return 1;
	}
	test_pair(false);
	test_pair(true);
	test_fragments_ping_big_close();
	test_frame_with_request();
	test_pong_at_frame_boundary();
	test_byte_by_byte();
	test_violations();
	test_truncated_frame();
	test_end_without_close_frame();
	test_bad_requests();
	test_client_side();
	test_bad_status_lines();
	sp_rmtree(dir);
	return check_report("test_ws");
}
