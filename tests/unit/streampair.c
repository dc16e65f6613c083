#include "streampair.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Until the config branch lands, the library has no transport_type_name();
 * a weak stand-in lets the transport tests link either way. */
__attribute__((weak)) const char *transport_type_name(enum transport_type t)
{
	static const char *const names[] = { "tcp", "tls", "noise", "websocket" };

	return (unsigned)t < 4 ? names[t] : "?";
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int sp_tcp_pair(int *client, int *server)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	int l, c = -1, s = -1, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		goto fail;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0)
		goto fail;
	s = accept(l, NULL, NULL);
	if (s < 0)
		goto fail;
	close(l);
	set_nonblock(c);
	set_nonblock(s);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	*client = c;
	*server = s;
	return 0;
fail:
	perror("sp_tcp_pair");
	if (l >= 0)
		close(l);
	if (c >= 0)
		close(c);
	return -1;
}

int sp_wait(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };

	return poll(&p, 1, timeout_ms);
}

static short poll_events(uint32_t want)
{
	return (short)((want & EPOLLIN ? POLLIN : 0) | (want & EPOLLOUT ? POLLOUT : 0));
}

void sp_handshake(struct stream *a, struct stream *b, int timeout_ms, int *rc_a, int *rc_b)
{
	long long deadline = now_ms() + timeout_ms;

	*rc_a = *rc_b = ST_AGAIN;
	while (now_ms() < deadline) {
		struct pollfd p[2];
		int n = 0;

		if (*rc_a == ST_AGAIN)
			*rc_a = stream_handshake(a);
		if (*rc_b == ST_AGAIN)
			*rc_b = stream_handshake(b);
		if (*rc_a != ST_AGAIN && *rc_b != ST_AGAIN)
			return;
		if (*rc_a == ST_AGAIN)
			p[n++] = (struct pollfd){ .fd = a->fd, .events = poll_events(a->want) };
		if (*rc_b == ST_AGAIN)
			p[n++] = (struct pollfd){ .fd = b->fd, .events = poll_events(b->want) };
		poll(p, (nfds_t)n, 50);
	}
}

/* ---- the checked exchange ---- */

struct dir {
	const char *name;
	struct stream *w, *r;
	size_t total, sent, recvd;
	uint32_t wgen, rgen;		/* generators of the byte stream */
	uint32_t wsum, rsum;		/* FNV-1a of what was sent / received */
	uint8_t *buf, *wire;
	size_t wire_left;
	unsigned chunk_no;
	bool shut, eof, failed;
	uint32_t wwant, rwant;
};

static uint8_t next_byte(uint32_t *g)
{
	*g ^= *g << 13;
	*g ^= *g >> 17;
	*g ^= *g << 5;
	return (uint8_t)*g;
}

static uint32_t fnv(uint32_t h, uint8_t b)
{
	return (h ^ b) * 16777619u;
}

/* Chunk sizes cycle through small, odd and full ones. */
static size_t chunk_size(struct dir *d)
{
	static const size_t sizes[] = { 1, 7, 125, 126, 1000, 65535, 65536, 3, 16384, 100000 };
	size_t n = sizes[d->chunk_no++ % (sizeof sizes / sizeof sizes[0])];

	if (n > d->w->max_chunk)
		n = d->w->max_chunk;
	if (n > d->total - d->sent)
		n = d->total - d->sent;
	return n;
}

static void write_side(struct dir *d)
{
	while (!d->shut && !d->failed) {
		ssize_t n;

		if (d->wire_left == 0) {
			size_t len, i;
			uint8_t *p;

			if (d->sent == d->total) {
				int rc = stream_shutdown(d->w);

				if (rc == 0)
					d->shut = true;
				else if (rc == ST_AGAIN)
					d->wwant = d->w->want;
				else {
					fprintf(stderr, "%s: shutdown: %s\n", d->name, d->w->err);
					d->failed = true;
				}
				return;
			}
			len = chunk_size(d);
			p = d->buf + d->w->headroom;
			for (i = 0; i < len; i++) {
				p[i] = next_byte(&d->wgen);
				d->wsum = fnv(d->wsum, p[i]);
			}
			d->wire_left = stream_seal(d->w, p, len, &d->wire);
			d->sent += len;
		}
		n = stream_send_wire(d->w, d->wire, d->wire_left);
		if (n == ST_AGAIN) {
			d->wwant = d->w->want;
			return;
		}
		if (n < 0) {
			fprintf(stderr, "%s: send_wire: %s\n", d->name, d->w->err);
			d->failed = true;
			return;
		}
		d->wire += n;
		d->wire_left -= (size_t)n;
	}
}

static void read_side(struct dir *d)
{
	while (!d->eof && !d->failed) {
		const uint8_t *p;
		ssize_t n = stream_peek(d->r, &p), i, take;

		if (n == ST_AGAIN) {
			d->rwant = d->r->want;
			return;
		}
		if (n < 0) {
			fprintf(stderr, "%s: read: %s\n", d->name, d->r->err);
			d->failed = true;
			return;
		}
		if (n == 0) {
			d->eof = true;
			return;
		}
		/* Take odd amounts to exercise partial consumption. */
		take = n > 3 && (d->recvd & 1) ? n - 3 : n;
		for (i = 0; i < take; i++) {
			uint8_t want = next_byte(&d->rgen);

			if (p[i] != want) {
				fprintf(stderr, "%s: byte %zu differs (%u != %u)\n", d->name,
					d->recvd + (size_t)i, p[i], want);
				d->failed = true;
				return;
			}
			d->rsum = fnv(d->rsum, p[i]);
		}
		d->recvd += (size_t)take;
		if (d->recvd > d->total) {
			fprintf(stderr, "%s: more bytes than sent\n", d->name);
			d->failed = true;
			return;
		}
		stream_consume(d->r, (size_t)take);
	}
}

static bool dir_done(const struct dir *d)
{
	return d->failed || (d->shut && d->eof);
}

static int dir_init(struct dir *d, const char *name, struct stream *w, struct stream *r,
		    size_t total, uint32_t seed)
{
	memset(d, 0, sizeof *d);
	d->name = name;
	d->w = w;
	d->r = r;
	d->total = total;
	d->wgen = d->rgen = seed;
	d->wsum = d->rsum = 2166136261u;
	d->wwant = EPOLLOUT;
	d->rwant = EPOLLIN;
	d->buf = malloc((size_t)w->headroom + w->max_chunk + w->tailroom);
	return d->buf ? 0 : -1;
}

static int dir_check(const struct dir *d)
{
	if (d->failed)
		return -1;
	if (!d->shut || !d->eof) {
		fprintf(stderr, "%s: timed out (%zu of %zu bytes received; %zu sealed, %zu of them "
			"not yet sent; waiting for %s to write, %s to read)\n", d->name, d->recvd,
			d->total, d->sent, d->wire_left, d->wwant == EPOLLOUT ? "EPOLLOUT" : "EPOLLIN",
			d->rwant == EPOLLOUT ? "EPOLLOUT" : "EPOLLIN");
		return -1;
	}
	if (d->recvd != d->total || d->wsum != d->rsum) {
		fprintf(stderr, "%s: %zu of %zu bytes, checksum %08x != %08x\n", d->name,
			d->recvd, d->total, d->rsum, d->wsum);
		return -1;
	}
	return 0;
}

int sp_exchange(struct stream *a, struct stream *b, size_t nbytes, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	struct dir ab, ba;
	int rc = -1;

	if (dir_init(&ab, "a->b", a, b, nbytes, 0x12345678u) < 0 ||
	    dir_init(&ba, "b->a", b, a, nbytes, 0x9abcdef1u) < 0)
		goto out;
	while (now_ms() < deadline && !(dir_done(&ab) && dir_done(&ba))) {
		struct pollfd p[2];

		write_side(&ab);
		write_side(&ba);
		read_side(&ab);
		read_side(&ba);
		if (dir_done(&ab) && dir_done(&ba))
			break;
		p[0] = (struct pollfd){ .fd = a->fd };
		p[1] = (struct pollfd){ .fd = b->fd };
		if (!ab.shut)
			p[0].events |= poll_events(ab.wwant);
		if (!ba.eof)
			p[0].events |= poll_events(ba.rwant);
		if (!ba.shut)
			p[1].events |= poll_events(ba.wwant);
		if (!ab.eof)
			p[1].events |= poll_events(ab.rwant);
		poll(p, 2, 50);
	}
	rc = dir_check(&ab) < 0 || dir_check(&ba) < 0 ? -1 : 0;
out:
	free(ab.buf);
	free(ba.buf);
	return rc;
}

/* ---- processes, files, certificates ---- */

int sp_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
	return rc;
}

const char *sp_tmpdir(void)
{
	static char dir[64];

	snprintf(dir, sizeof dir, "/tmp/rathole-test-XXXXXX");
	return mkdtemp(dir);
}

void sp_rmtree(const char *dir)
{
	if (dir && strncmp(dir, "/tmp/rathole-test-", 18) == 0)
		sp_sh("rm -rf '%s'", dir);
}

#define Q " >/dev/null 2>&1"
#define EC "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

/* A certificate for the names in san, signed by ca, with days of validity
 * (negative: already expired), as name.pem/name.key. */
static int make_cert(const char *dir, const char *name, const char *cn, const char *san,
		     const char *ca, int days)
{
	return sp_sh("cd '%s' && printf 'subjectAltName=%s\\n' > %s.ext && "
		     "openssl req " EC " -keyout %s.key -out %s.csr -subj /CN=%s" Q " && "
		     "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial "
		     "-days %d -extfile %s.ext -out %s.pem" Q,
		     dir, san, name, name, name, cn, name, ca, ca, days, name, name);
}

static int make_p12(const char *dir, const char *name, const char *cert, const char *extra)
{
	return sp_sh("cd '%s' && openssl pkcs12 -export %s -in %s.pem -inkey %s.key "
		     "-certfile ca.pem -passout pass:secret -out %s.p12" Q,
		     dir, extra, cert, cert, name);
}

int sp_make_pki(const char *dir)
{
	if (sp_sh("cd '%s' && openssl req -x509 " EC " -keyout ca.key -out ca.pem -days 3 "
		  "-subj /CN=rathole-test-CA" Q " && openssl req -x509 " EC
		  " -keyout ca2.key -out ca2.pem -days 3 -subj /CN=another-CA" Q, dir) ||
	    make_cert(dir, "srv", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", 3) ||
	    make_cert(dir, "exp", "localhost", "DNS:localhost,IP:127.0.0.1", "ca", -1) ||
	    make_cert(dir, "oth", "other.example", "DNS:other.example", "ca", 3) ||
	    make_p12(dir, "good", "srv", "") || make_p12(dir, "legacy", "srv", "-legacy") ||
	    make_p12(dir, "expired", "exp", "") || make_p12(dir, "other", "oth", "") ||
	    sp_sh("cd '%s' && openssl pkcs12 -export -nokeys -in srv.pem -passout pass:secret "
		  "-out nokey.p12" Q " && cp srv.pem garbage.p12", dir))
		return -1;
	return 0;
}

/* ---- log capture ---- */

static int saved_stderr = -1;
static FILE *capture_file;

void sp_capture_begin(void)
{
	fflush(stderr);
	capture_file = tmpfile();
	if (!capture_file)
		return;
	saved_stderr = dup(2);
	dup2(fileno(capture_file), 2);
}

const char *sp_capture_end(void)
{
	static char text[16384];
	size_t n = 0;

	text[0] = '\0';
	if (!capture_file)
		return text;
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	rewind(capture_file);
	n = fread(text, 1, sizeof text - 1, capture_file);
	text[n] = '\0';
	fclose(capture_file);
	capture_file = NULL;
	fputs(text, stderr);	/* still visible in the test output */
	return text;
}

void sp_config(struct transport_config *cfg, enum transport_type type)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->type = type;
	cfg->tcp.nodelay = true;
	cfg->tcp.keepalive_secs = 20;
	cfg->tcp.keepalive_interval = 8;
}
