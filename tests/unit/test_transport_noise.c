/* The noise transport over a socketpair: handshakes, records, tampering,
 * wrong keys, configuration errors. Every loop is bounded. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base64.h"
#include "check.h"
#include "noise.h"
#include "transport.h"

#define NK "Noise_NK_25519_ChaChaPoly_BLAKE2s"

/* transport.c names transport types through config.c, which this unit test
 * does not need; the real definition wins when it is linked. */
__attribute__((weak)) const char *transport_type_name(enum transport_type t)
{
	return t == TRANSPORT_NOISE ? "noise" : "other";
}

struct keys {
	uint8_t cpriv[32], cpub[32], spriv[32], spub[32];
};

static void make_keys(struct keys *k)
{
	CHECK(noise_generate_keypair(k->cpriv, k->cpub) == 0);
	CHECK(noise_generate_keypair(k->spriv, k->spub) == 0);
}

static void make_cfg(struct transport_config *cfg, const char *pattern,
		     const uint8_t *local, const uint8_t *remote)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->type = TRANSPORT_NOISE;
	cfg->tcp.nodelay = true;
	cfg->tcp.keepalive_secs = 20;
	cfg->tcp.keepalive_interval = 8;
	cfg->has_noise = true;
	cfg->noise.pattern = (char *)pattern;
	if (local) {
		cfg->noise.has_local_private_key = true;
		memcpy(cfg->noise.local_private_key, local, 32);
	}
	if (remote) {
		cfg->noise.has_remote_public_key = true;
		memcpy(cfg->noise.remote_public_key, remote, 32);
	}
}

/* A client and a server transport and one connected stream pair. */
struct setup {
	struct transport_config ccfg, scfg;
	struct transport *ct, *st;
	struct stream *c, *s;
};

static int setup_open(struct setup *x, const char *pattern,
		      const uint8_t *clocal, const uint8_t *cremote,
		      const uint8_t *slocal, const uint8_t *sremote)
{
	char err[512];
	int fds[2];

	memset(x, 0, sizeof *x);
	make_cfg(&x->ccfg, pattern, clocal, cremote);
	make_cfg(&x->scfg, pattern, slocal, sremote);
	x->ct = transport_new(&x->ccfg, false, "127.0.0.1:2333", err, sizeof err);
	CHECKF(x->ct != NULL, "client: %s", err);
	x->st = transport_new(&x->scfg, true, NULL, err, sizeof err);
	CHECKF(x->st != NULL, "server: %s", err);
	if (!x->ct || !x->st)
		return -1;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
	x->c = transport_wrap(x->ct, fds[0], false);
	x->s = transport_wrap(x->st, fds[1], true);
	CHECK(x->c && x->s);
	return x->c && x->s ? 0 : -1;
}

/* Another stream pair on the same transports. */
static void setup_reconnect(struct setup *x)
{
	int fds[2];

	stream_free(x->c);
	stream_free(x->s);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
	x->c = transport_wrap(x->ct, fds[0], false);
	x->s = transport_wrap(x->st, fds[1], true);
	CHECK(x->c && x->s);
}

static void setup_close(struct setup *x)
{
	stream_free(x->c);
	stream_free(x->s);
	transport_free(x->ct);
	transport_free(x->st);
}

static void wait_for(struct stream *a, uint32_t wa, struct stream *b, uint32_t wb)
{
	struct pollfd p[2] = {
		{ .fd = a ? a->fd : -1, .events = (short)(wa & EPOLLIN ? POLLIN : 0) |
						  (short)(wa & EPOLLOUT ? POLLOUT : 0) },
		{ .fd = b ? b->fd : -1, .events = (short)(wb & EPOLLIN ? POLLIN : 0) |
						  (short)(wb & EPOLLOUT ? POLLOUT : 0) },
	};

	poll(p, 2, 20);
}

/* Drives both handshakes; *crc and *src get each side's last result. */
static void drive_handshake(struct setup *x, int *crc, int *src)
{
	*crc = *src = ST_AGAIN;
	for (int i = 0; i < 200; i++) {
		if (*crc == ST_AGAIN)
			*crc = stream_handshake(x->c);
		if (*src == ST_AGAIN)
			*src = stream_handshake(x->s);
		if (*crc != ST_AGAIN && *src != ST_AGAIN)
			return;
		if (*crc == ST_ERROR || *src == ST_ERROR)
			return;
		wait_for(*crc == ST_AGAIN ? x->c : NULL, x->c->want,
			 *src == ST_AGAIN ? x->s : NULL, x->s->want);
	}
}

/* Reads exactly len bytes from s into out (bounded wait). */
static int recv_exact(struct stream *s, uint8_t *out, size_t len)
{
	size_t have = 0;

	for (int i = 0; i < 500; i++) {
		int rc = stream_read_exact(s, out, len, &have);

		if (rc != ST_AGAIN)
			return rc;
		wait_for(s, EPOLLIN, NULL, 0);
	}
	return ST_AGAIN;
}

static int send_all(struct stream *s, const void *p, size_t len)
{
	int rc = stream_send(s, p, len);

	for (int i = 0; rc == 0 && stream_tx_pending(s) && i < 500; i++) {
		wait_for(s, EPOLLOUT, NULL, 0);
		rc = stream_flush(s);
		if (rc == ST_AGAIN)
			rc = 0;
	}
	return rc;
}

/* Messages both ways after a finished handshake. */
static void exchange(struct setup *x, const char *what)
{
	uint8_t buf[64];

	CHECKF(send_all(x->c, "Hello from the client", 21) == 0, "%s", what);
	CHECKF(recv_exact(x->s, buf, 21) == 1 && memcmp(buf, "Hello from the client", 21) == 0,
	       "%s: %s", what, x->s->err);
	CHECKF(send_all(x->s, "Hi from the server", 18) == 0, "%s", what);
	CHECKF(recv_exact(x->c, buf, 18) == 1 && memcmp(buf, "Hi from the server", 18) == 0,
	       "%s: %s", what, x->c->err);
}

/* ---- tests ---- */

static void test_patterns(void)
{
	static const char *const patterns[] = {
		NK, "Noise_XX_25519_ChaChaPoly_BLAKE2s", "Noise_KK_25519_ChaChaPoly_BLAKE2s",
		"Noise_IK_25519_ChaChaPoly_BLAKE2s", "Noise_NN_25519_AESGCM_SHA256",
		"Noise_XK1_25519_AESGCM_BLAKE2b", "Noise_IX_25519_ChaChaPoly_SHA512",
	};

	for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
		struct setup x;
		struct keys k;
		int crc, src;

		make_keys(&k);
		if (setup_open(&x, patterns[i], k.cpriv, k.spub, k.spriv, k.cpub) == 0) {
			drive_handshake(&x, &crc, &src);
			CHECKF(crc == 0 && src == 0, "%s: client %d (%s), server %d (%s)",
			       patterns[i], crc, x.c->err, src, x.s->err);
			CHECK(x.c->headroom == 2 && x.c->tailroom == 16 && x.c->max_chunk == 65519);
			CHECK(!x.c->plain && !x.s->plain);
			exchange(&x, patterns[i]);
		}
		setup_close(&x);
	}
}

/* Runs transport_new() with stderr captured, to read what it logs. */
static struct transport *new_capturing_log(const struct transport_config *cfg, bool server,
					   char *log, size_t cap, char *err, size_t errlen)
{
	FILE *tmp = tmpfile();
	int saved = dup(2);
	struct transport *t;
	size_t n = 0;

	fflush(stderr);
	if (tmp && saved >= 0)
		dup2(fileno(tmp), 2);
	t = transport_new(cfg, server, server ? NULL : "x:1", err, errlen);
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, 2);
		close(saved);
	}
	if (tmp) {
		rewind(tmp);
		n = fread(log, 1, cap - 1, tmp);
		fclose(tmp);
	}
	log[n] = '\0';
	return t;
}

/* The default configuration: NK, the server has no key and makes one, and
 * logs its public key for the clients' remote_public_key. */
static void test_server_generates_key(void)
{
	struct setup x;
	char log[2048], err[512];
	const char *at;
	uint8_t spub[33];
	int crc, src;

	memset(&x, 0, sizeof x);
	make_cfg(&x.scfg, NULL, NULL, NULL);	/* default pattern, no key */
	x.st = new_capturing_log(&x.scfg, true, log, sizeof log, err, sizeof err);
	CHECKF(x.st != NULL, "%s", err);
	at = strstr(log, "remote_public_key) is ");
	CHECKF(at != NULL, "log: %s", log);
	if (!x.st || !at)
		goto out;
	at += strlen("remote_public_key) is ");
	CHECK(base64_decode(at, 44, spub, sizeof spub) == 32);

	/* a client without it is told what to do */
	make_cfg(&x.ccfg, NULL, NULL, NULL);
	x.ct = transport_new(&x.ccfg, false, "x:1", err, sizeof err);
	CHECK(x.ct == NULL);
	CHECKF(strstr(err, "needs remote_public_key on the client") != NULL, "%s", err);

	/* with the logged key it connects */
	make_cfg(&x.ccfg, NULL, NULL, spub);
	x.ct = transport_new(&x.ccfg, false, "x:1", err, sizeof err);
	CHECKF(x.ct != NULL, "%s", err);
	if (!x.ct)
		goto out;
	{
		int fds[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
		x.c = transport_wrap(x.ct, fds[0], false);
		x.s = transport_wrap(x.st, fds[1], true);
	}
	drive_handshake(&x, &crc, &src);
	CHECKF(crc == 0 && src == 0, "%s / %s", x.c->err, x.s->err);
	exchange(&x, "generated key");
out:
	setup_close(&x);
}

static void test_config_errors(void)
{
	struct transport_config cfg;
	struct transport *t;
	struct keys k;
	char err[512];

	make_keys(&k);
	make_cfg(&cfg, "Noise_N_25519_ChaChaPoly_BLAKE2s", k.spriv, k.spub);
	t = transport_new(&cfg, false, "x:1", err, sizeof err);
	CHECK(t == NULL);
	CHECKF(strstr(err, "one-way") != NULL, "%s", err);

	make_cfg(&cfg, "Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s", k.spriv, k.spub);
	t = transport_new(&cfg, true, NULL, err, sizeof err);
	CHECK(t == NULL);
	CHECKF(strstr(err, "transport.noise.pattern") && strstr(err, "PSK"), "%s", err);

	make_cfg(&cfg, "Noise_NK_448_ChaChaPoly_BLAKE2s", k.spriv, k.spub);
	t = transport_new(&cfg, true, NULL, err, sizeof err);
	CHECK(t == NULL);
	CHECKF(strstr(err, "448") != NULL, "%s", err);

	make_cfg(&cfg, "Noise_KK_25519_ChaChaPoly_BLAKE2s", NULL, k.spub);
	t = transport_new(&cfg, false, "x:1", err, sizeof err);
	CHECK(t == NULL);
	CHECKF(strstr(err, "needs local_private_key on the client") != NULL, "%s", err);

	make_cfg(&cfg, "Noise_KK_25519_ChaChaPoly_BLAKE2s", k.spriv, NULL);
	t = transport_new(&cfg, true, NULL, err, sizeof err);
	CHECK(t == NULL);
	CHECKF(strstr(err, "needs remote_public_key on the server") != NULL, "%s", err);

	/* IK: a client without a key gets a generated one (it is transmitted) */
	make_cfg(&cfg, "Noise_IK_25519_ChaChaPoly_BLAKE2s", NULL, k.spub);
	t = transport_new(&cfg, false, "x:1", err, sizeof err);
	CHECKF(t != NULL, "%s", err);
	transport_free(t);
}

static void test_bulk_transfer(void)
{
	enum { TOTAL = 1 << 20, APP_CHUNK = 64 * 1024 };
	struct setup x;
	struct keys k;
	uint8_t *data = malloc(TOTAL), *got = malloc(TOTAL);
	uint8_t *wbuf = malloc(2 + NOISE_MAX_PLAINTEXT + 16);
	size_t sent = 0, wire_left = 0, recvd = 0, records = 0;
	uint8_t *wire = NULL;
	uint32_t sum_in = 0, sum_out = 0;
	int crc, src, i;

	make_keys(&k);
	if (!data || !got || !wbuf || setup_open(&x, NK, NULL, k.spub, k.spriv, NULL) < 0)
		goto out;
	drive_handshake(&x, &crc, &src);
	CHECK(crc == 0 && src == 0);
	for (size_t j = 0; j < TOTAL; j++) {
		data[j] = (uint8_t)(j * 7 + (j >> 11));
		sum_in = sum_in * 31 + data[j];
	}
	for (i = 0; i < 20000 && recvd < TOTAL; i++) {
		/* the sender: the application hands 64 KiB chunks, cut to max_chunk */
		while (sent < TOTAL || wire_left) {
			ssize_t n;

			if (!wire_left) {
				size_t end = (sent / APP_CHUNK + 1) * APP_CHUNK;
				size_t take = end - sent;

				if (take > x.c->max_chunk)
					take = x.c->max_chunk;
				memcpy(wbuf + x.c->headroom, data + sent, take);
				wire_left = stream_seal(x.c, wbuf + x.c->headroom, take, &wire);
				sent += take;
				records++;
			}
			n = stream_send_wire(x.c, wire, wire_left);
			if (n == ST_AGAIN)
				break;
			CHECK(n > 0);
			if (n <= 0)
				goto out;
			wire += n;
			wire_left -= (size_t)n;
		}
		/* the receiver */
		for (;;) {
			const uint8_t *p;
			ssize_t n = stream_peek(x.s, &p);

			if (n == ST_AGAIN)
				break;
			CHECKF(n > 0 && recvd + (size_t)n <= TOTAL, "peek %zd: %s", n, x.s->err);
			if (n <= 0 || recvd + (size_t)n > TOTAL)
				goto out;
			CHECK(n <= 65519);
			memcpy(got + recvd, p, (size_t)n);
			recvd += (size_t)n;
			stream_consume(x.s, (size_t)n);
		}
		wait_for(x.c, sent < TOTAL || wire_left ? EPOLLOUT : 0, x.s, EPOLLIN);
	}
	for (size_t j = 0; j < recvd; j++)
		sum_out = sum_out * 31 + got[j];
	CHECKF(recvd == TOTAL, "received %zu of %d", recvd, TOTAL);
	CHECK(sum_in == sum_out);
	CHECK(memcmp(data, got, TOTAL) == 0);
	CHECK(records == 32);	/* each 64 KiB chunk: 65519 + 17 bytes */
	/* end of stream after everything */
	CHECK(stream_shutdown(x.c) == 0);
	{
		const uint8_t *p;
		ssize_t n = ST_AGAIN;

		for (i = 0; i < 100 && n == ST_AGAIN; i++) {
			n = stream_peek(x.s, &p);
			if (n == ST_AGAIN)
				wait_for(x.s, EPOLLIN, NULL, 0);
		}
		CHECKF(n == 0, "peek after shutdown: %zd", n);
	}
out:
	setup_close(&x);
	free(data);
	free(got);
	free(wbuf);
}

/* Seals len bytes of msg into out (which gets headroom/tailroom) and returns
 * the wire length; *wire points into out. */
static size_t seal_into(struct stream *s, uint8_t *out, const char *msg, size_t len, uint8_t **wire)
{
	memcpy(out + s->headroom, msg, len);
	return stream_seal(s, out + s->headroom, len, wire);
}

static void test_split_and_coalesced_records(void)
{
	struct setup x;
	struct keys k;
	uint8_t out[256], both[512], *wire;
	const uint8_t *p;
	size_t wlen, w2;
	ssize_t n;
	int crc, src;

	make_keys(&k);
	if (setup_open(&x, NK, NULL, k.spub, k.spriv, NULL) < 0)
		goto out;
	drive_handshake(&x, &crc, &src);
	CHECK(crc == 0 && src == 0);

	/* one record trickles in byte by byte; an idle trim keeps the partial record */
	wlen = seal_into(x.c, out, "split across reads", 18, &wire);
	CHECK(wlen == 2 + 18 + 16);
	CHECK(wire[0] == 34 && wire[1] == 0);	/* u16 little-endian length */
	for (size_t j = 0; j < wlen; j++) {
		CHECK(write(x.c->fd, wire + j, 1) == 1);
		n = stream_peek(x.s, &p);
		if (j + 1 < wlen) {
			CHECKF(n == ST_AGAIN, "byte %zu: %zd", j, n);
			stream_trim(x.s);
			CHECK(x.s->rx == NULL);	/* nothing exposed */
		} else {
			CHECK(n == 18 && memcmp(p, "split across reads", 18) == 0);
		}
	}
	/* partial consumption */
	stream_consume(x.s, 6);
	n = stream_peek(x.s, &p);
	CHECK(n == 12 && memcmp(p, "across reads", 12) == 0);
	stream_consume(x.s, 12);
	/* idle: the buffer can go */
	stream_trim(x.s);
	CHECK(x.s->rx == NULL && x.s->rx_cap == 0);

	/* two records and the start of a third in one write */
	wlen = seal_into(x.c, out, "first", 5, &wire);
	memcpy(both, wire, wlen);
	w2 = seal_into(x.c, out, "second", 6, &wire);
	memcpy(both + wlen, wire, w2);
	wlen += w2;
	w2 = seal_into(x.c, out, "third", 5, &wire);
	memcpy(both + wlen, wire, 4);
	CHECK(write(x.c->fd, both, wlen + 4) == (ssize_t)(wlen + 4));
	n = stream_peek(x.s, &p);
	CHECK(n == 5 && memcmp(p, "first", 5) == 0);
	stream_consume(x.s, 5);
	n = stream_peek(x.s, &p);
	CHECK(n == 6 && memcmp(p, "second", 6) == 0);
	stream_consume(x.s, 6);
	stream_trim(x.s);	/* must not lose the 4 bytes of "third" */
	n = stream_peek(x.s, &p);
	CHECK(n == ST_AGAIN);
	CHECK(write(x.c->fd, wire + 4, w2 - 4) == (ssize_t)(w2 - 4));
	n = stream_peek(x.s, &p);
	CHECK(n == 5 && memcmp(p, "third", 5) == 0);
	stream_consume(x.s, 5);

	/* an empty plaintext makes no record at all */
	CHECK(seal_into(x.c, out, "", 0, &wire) == 0);

	/* a record cut short by the end of the stream is an error, not an end */
	wlen = seal_into(x.c, out, "truncated", 9, &wire);
	CHECK(write(x.c->fd, wire, wlen - 1) == (ssize_t)(wlen - 1));
	shutdown(x.c->fd, SHUT_WR);
	n = stream_peek(x.s, &p);
	CHECKF(n == ST_ERROR && strstr(x.s->err, "middle"), "%zd %s", n, x.s->err);
out:
	setup_close(&x);
}

static void test_tampering(void)
{
	struct setup x;
	struct keys k;
	uint8_t out[256], *wire, buf[16];
	const uint8_t *p;
	size_t wlen;
	ssize_t n;
	int crc, src;

	make_keys(&k);
	if (setup_open(&x, NK, NULL, k.spub, k.spriv, NULL) < 0)
		goto out;
	drive_handshake(&x, &crc, &src);
	CHECK(crc == 0 && src == 0);
	wlen = seal_into(x.c, out, "do not touch", 12, &wire);
	wire[5] ^= 0x20;
	CHECK(write(x.c->fd, wire, wlen) == (ssize_t)wlen);
	n = stream_peek(x.s, &p);
	CHECKF(n == ST_ERROR && strstr(x.s->err, "authentication failed"), "%zd %s", n, x.s->err);
	CHECK(stream_peek(x.s, &p) == ST_ERROR);	/* stays failed */
	CHECK(x.s->rx_len == 0);		/* nothing unauthenticated exposed */
	/* the sender is not affected: it can still send and receive */
	CHECK(stream_send(x.c, "still fine", 10) == 0);
	CHECK(x.c->err[0] == '\0');
	/* and other channels of the same transports are not either */
	setup_reconnect(&x);
	drive_handshake(&x, &crc, &src);
	CHECK(crc == 0 && src == 0);
	exchange(&x, "after tampering");
	/* a forged length (shorter than a tag) fails too */
	buf[0] = 3;
	buf[1] = 0;
	memcpy(buf + 2, "abc", 3);
	CHECK(write(x.c->fd, buf, 5) == 5);
	n = stream_peek(x.s, &p);
	CHECKF(n == ST_ERROR && strstr(x.s->err, "authentication"), "%s", x.s->err);
out:
	setup_close(&x);
}

static void test_wrong_keys(void)
{
	struct setup x;
	struct keys k, other;
	int crc, src;

	make_keys(&k);
	make_keys(&other);

	/* NK with the wrong server key: the server cannot authenticate message
	 * 1; when it drops the connection the client learns it failed. */
	if (setup_open(&x, NK, NULL, other.spub, k.spriv, NULL) == 0) {
		drive_handshake(&x, &crc, &src);
		CHECK(src == ST_ERROR);
		CHECKF(strstr(x.s->err, "noise handshake failed") &&
		       strstr(x.s->err, "does not authenticate") &&
		       strstr(x.s->err, "remote_public_key"), "%s", x.s->err);
		CHECK(crc == ST_AGAIN);
		stream_free(x.s);	/* the server closes the channel */
		x.s = NULL;
		for (int i = 0; i < 100 && crc == ST_AGAIN; i++) {
			crc = stream_handshake(x.c);
			if (crc == ST_AGAIN)
				wait_for(x.c, x.c->want, NULL, 0);
		}
		CHECK(crc == ST_ERROR);
		CHECKF(strstr(x.c->err, "the server closed the connection") &&
		       strstr(x.c->err, "remote_public_key"), "%s", x.c->err);
		CHECK(stream_handshake(x.c) == ST_ERROR);
	}
	setup_close(&x);

	/* KK where the server expects another client */
	if (setup_open(&x, "Noise_KK_25519_ChaChaPoly_BLAKE2s", k.cpriv, k.spub,
		       k.spriv, other.cpub) == 0) {
		drive_handshake(&x, &crc, &src);
		CHECK(src == ST_ERROR);
		CHECKF(strstr(x.s->err, "does not authenticate"), "%s", x.s->err);
	}
	setup_close(&x);

	/* XX transmits the client's key: a server's remote_public_key pins it */
	if (setup_open(&x, "Noise_XX_25519_ChaChaPoly_BLAKE2s", k.cpriv, NULL,
		       k.spriv, other.cpub) == 0) {
		drive_handshake(&x, &crc, &src);
		CHECK(src == ST_ERROR);
		CHECKF(strstr(x.s->err, "client's static key does not match remote_public_key"),
		       "%s", x.s->err);
	}
	setup_close(&x);

	/* ... and the client's remote_public_key pins the server's */
	if (setup_open(&x, "Noise_XX_25519_ChaChaPoly_BLAKE2s", k.cpriv, other.spub,
		       k.spriv, NULL) == 0) {
		drive_handshake(&x, &crc, &src);
		CHECK(crc == ST_ERROR);
		CHECKF(strstr(x.c->err, "server's static key does not match remote_public_key"),
		       "%s", x.c->err);
	}
	setup_close(&x);

	/* garbage instead of a handshake */
	if (setup_open(&x, NK, NULL, k.spub, k.spriv, NULL) == 0) {
		CHECK(write(x.c->fd, "\x05\x00hello", 7) == 7);
		src = stream_handshake(x.s);
		CHECK(src == ST_ERROR);
		CHECKF(strstr(x.s->err, "does not authenticate"), "%s", x.s->err);
	}
	setup_close(&x);
}

/* XX ends with a client message: data the client sends right after it may
 * arrive in the same read as that message and must not be lost. */
static void test_data_right_after_handshake(void)
{
	struct setup x;
	struct keys k;
	uint8_t buf[32];

	make_keys(&k);
	if (setup_open(&x, "Noise_XX_25519_ChaChaPoly_BLAKE2s", k.cpriv, NULL, k.spriv, NULL) < 0)
		goto out;
	CHECK(stream_handshake(x.c) == ST_AGAIN);	/* -> e */
	CHECK(stream_handshake(x.s) == ST_AGAIN);	/* <- e, ee, s, es */
	CHECK(stream_handshake(x.c) == 0);		/* -> s, se */
	CHECK(stream_send(x.c, "early data", 10) == 0);
	CHECK(!stream_tx_pending(x.c));
	CHECK(stream_handshake(x.s) == 0);		/* reads msg 3 and the record */
	CHECK(recv_exact(x.s, buf, 10) == 1 && memcmp(buf, "early data", 10) == 0);
	CHECK(stream_handshake(x.s) == 0);		/* idempotent once done */
out:
	setup_close(&x);
}

int main(void)
{
	load_openssl();
	test_patterns();
	test_server_generates_key();
	test_config_errors();
	test_bulk_transfer();
	test_split_and_coalesced_records();
	test_tampering();
	test_wrong_keys();
	test_data_right_after_handshake();
	return check_report("test_transport_noise");
}
