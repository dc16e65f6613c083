/* Helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Each target defines LLVMFuzzerTestOneInput(). Built with libFuzzer
 * (`make fuzz`) it explores; built with replay.c (`make fuzz-regress`) it
 * replays the seed corpus and every input that once found a bug.
 *
 * Two ways to feed bytes to the code under test:
 *   - fuzz_mem_stream: a stream (struct stream_ops) over a memory buffer that
 *     hands out the input in chunks of varying size, so split records and
 *     headers are exercised without sockets;
 *   - fuzz_feeder: a non-blocking socketpair whose far end is written from
 *     the input as the code under test reads, then half-closed (for code that
 *     reads a file descriptor itself: websocket, proxy negotiation). */
#ifndef FUZZ_H
#define FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "ossl.h"
#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Logging is off while fuzzing (speed); FUZZ_LOG=trace turns it on, and the
 * replay main() turns it on so format strings see every regression input. */
/* For targets that call the noise or websocket code directly: OpenSSL is
 * loaded first, as transport_new() does (src/ossl.h). */
static inline void fuzz_load_openssl(void)
{
	char err[256];

	if (ossl_load(err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
}

static inline void fuzz_quiet_logs(void)
{
	const char *v = getenv("FUZZ_LOG");
	enum log_level l;

	if (v && log_parse_level(v, &l) == 0)
		log_level = l;
	else
		log_level = (enum log_level)-1;
}

/* ---- a stream over memory ---- */

struct fuzz_mem_stream {
	struct stream s;
	const uint8_t *data;
	size_t len, off;
	unsigned seed;		/* chooses the chunk sizes */
	int agains;		/* ST_AGAIN before each chunk, to test resumption */
};

static inline ssize_t fuzz_mem_fill(struct stream *s)
{
	struct fuzz_mem_stream *m = (struct fuzz_mem_stream *)s;
	size_t n;

	if (m->off >= m->len)
		return 0;
	if (m->agains++ % 2 == 0) {
		s->want = 0x001;	/* EPOLLIN */
		return ST_AGAIN;
	}
	m->seed = m->seed * 1103515245u + 12345u;
	n = 1 + (m->seed >> 16) % 64;
	if (m->seed & 0x8000)
		n = 1 + (m->seed >> 16) % 4096;
	if (n > m->len - m->off)
		n = m->len - m->off;
	/* rx points into the input: the default consume() advances rx_off */
	s->rx = (uint8_t *)(uintptr_t)(m->data + m->off);
	s->rx_off = 0;
	s->rx_len = (uint32_t)n;
	m->off += n;
	return (ssize_t)n;
}

static inline void fuzz_mem_destroy(struct stream *s)
{
	s->rx = NULL;	/* borrowed: stream_free() must not free it */
}

static inline int fuzz_mem_handshake(struct stream *s) { return 0; }

static inline struct stream *fuzz_mem_stream_new(const uint8_t *data, size_t len, unsigned seed)
{
	static const struct stream_ops fuzz_mem_ops = {
		.handshake = fuzz_mem_handshake,
		.fill = fuzz_mem_fill,
		.destroy = fuzz_mem_destroy,
	};
	struct stream *s = stream_alloc(sizeof(struct fuzz_mem_stream), &fuzz_mem_ops, NULL, -1,
					true);
	struct fuzz_mem_stream *m = (struct fuzz_mem_stream *)s;

	if (!s)
		abort();
	m->data = data;
	m->len = len;
	m->seed = seed;
	return s;
}

/* ---- a socketpair fed from the input ---- */

struct fuzz_feeder {
	int ours;		/* given to the code under test */
	int far;		/* written from the input */
	const uint8_t *data;
	size_t len, off;
	bool closed;
};

static inline void fuzz_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static inline void fuzz_feeder_open(struct fuzz_feeder *f, const uint8_t *data, size_t len)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	fuzz_nonblock(sv[0]);
	fuzz_nonblock(sv[1]);
	f->ours = sv[0];
	f->far = sv[1];
	f->data = data;
	f->len = len;
	f->off = 0;
	f->closed = false;
}

/* Writes what the socket takes, drains what the code under test wrote (so
 * it never blocks on a full buffer), and half-closes once all is written. */
static inline void fuzz_feeder_pump(struct fuzz_feeder *f)
{
	char sink[4096];

	while (recv(f->far, sink, sizeof sink, MSG_DONTWAIT) > 0)
		;
	while (f->off < f->len) {
		ssize_t w = send(f->far, f->data + f->off, f->len - f->off, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w <= 0)
			break;
		f->off += (size_t)w;
	}
	if (f->off == f->len && !f->closed) {
		shutdown(f->far, SHUT_WR);
		f->closed = true;
	}
}

/* Drives a stream fed by f: its handshake (unless open already), then reads
 * until the end or an error, consuming one byte at a time (consume_one) or
 * all, and sending a reply of reply_len bytes (<= 64) after each read when
 * asked. Aborts if the stream neither ends nor fails in far more steps than
 * any input needs: that is a busy loop. Returns whether it opened. */
#define FUZZ_DRIVE_MAX_STEPS 100000

static inline bool fuzz_drive_stream(struct stream *s, struct fuzz_feeder *f, bool open,
				     bool consume_one, size_t reply_len)
{
	uint8_t msg[256];
	int steps;

	for (steps = 0; steps < FUZZ_DRIVE_MAX_STEPS; steps++) {
		const uint8_t *p;
		ssize_t n;

		fuzz_feeder_pump(f);
		if (!open) {
			int rc = stream_handshake(s);

			if (rc == ST_ERROR)
				break;
			open = rc == 0;
			continue;
		}
		n = stream_peek(s, &p);
		if (n == ST_AGAIN)
			continue;
		if (n <= 0)
			break;
		/* partial consumption is legal */
		stream_consume(s, consume_one ? 1 : (size_t)n);
		if (reply_len) {
			/* a reply in between (masks, the control queue, boundaries) */
			memset(msg + s->headroom, 'r', reply_len);
			if (stream_send(s, msg + s->headroom, reply_len) == ST_ERROR)
				break;
		}
	}
	if (steps == FUZZ_DRIVE_MAX_STEPS)
		abort();
	return open;
}

static inline void fuzz_feeder_close(struct fuzz_feeder *f)
{
	if (f->ours >= 0)
		close(f->ours);
	close(f->far);
}

#endif
