/* The least relay: what two relay processes cost on this machine when they
 * do nothing but move bytes (make bench).
 *
 *   minrelay LISTEN_PORT TARGET_PORT [copy | seal CIPHER MAX | open CIPHER MAX]
 *
 * Accepts on 127.0.0.1:LISTEN_PORT; for each connection connects to
 * 127.0.0.1:TARGET_PORT and moves bytes both ways with splice() through a
 * pipe per direction, as rathole's tcp transport does, until both sides
 * have ended (a FIN is passed on as a shutdown). With "copy", through a
 * 64 KiB buffer per direction instead (recv and send), as every encrypting
 * transport must: the least such a transport pays beside its cipher.
 * With "seal", it also encrypts what the listening side sends and decrypts
 * what the target side sends, in records of at most MAX plaintext bytes
 * framed like the noise transport's (a u16 length, then the ciphertext and
 * a 16-byte tag) with OpenSSL's CIPHER (chacha20-poly1305, aes-256-gcm),
 * keyed once, a counter nonce per record; "open" is its mirror, so
 * `seal` -> `open` is an encrypting tunnel with none of a protocol's work:
 * the least an encrypted transport pays in a relay, cipher and copies
 * together (the key is fixed: bench code, not a secure channel). Records
 * smaller than 64 KiB are batched as the tls transport batches its own: the
 * records sealed from one read leave with one send, and the plaintext of
 * the complete records received leaves with one sendmsg.
 * One thread, one level-triggered epoll, no protocol, no pools, no timers,
 * no logging. Two of them in a chain (visitor -> minrelay -> minrelay ->
 * service) cross the same three TCP connections per visitor that a rathole
 * server and client do, without the data channel's protocol: the reference
 * for what the tunnel's own work costs beyond the kernel's. Bench code: it
 * trusts its two peers and stops at the first setup error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define PIPE_SIZE	(256 * 1024)
#define COPY_SIZE	(64 * 1024)
#define HDR		2
#define TAG		16
#define RECORD_MAX	(HDR + 65535)
#define OPEN_BUF	(2 * RECORD_MAX)
#define IOV_MAX_RECS	8		/* records opened per send */

enum crypt { PLAIN, SEAL, OPEN };

struct conn;

/* Bytes from src to dst through a pipe, or a buffer in copy mode. */
struct dir {
	int src, dst;
	int rd, wr;		/* the pipe */
	char *buf;		/* copy mode: what was read (plaintext, or wire bytes to open) */
	char *wire;		/* SEAL: the records sealed from buf */
	size_t off, in_pipe;	/* PLAIN, SEAL: out[off .. off + in_pipe) is pending */
	enum crypt crypt;
	EVP_CIPHER_CTX *ctx;
	uint64_t nonce;
	size_t have, used;	/* OPEN: wire bytes in buf; those of the records in iov */
	struct iovec iov[IOV_MAX_RECS];	/* OPEN: the plaintext of opened records */
	int niov, iov_at;
	bool eof, done;
	bool drained;		/* the last read emptied the socket */
};

struct end {
	struct conn *c;
	int fd;
	uint32_t events;	/* registered with epoll */
};

struct conn {
	struct end e[2];	/* visitor side, target side */
	struct dir d[2];	/* d[i] reads from e[i] and writes to e[!i] */
	bool closed;
	struct conn *next_closed;
};

static int ep;
static bool copy_mode;
static enum crypt listen_side = PLAIN;	/* what d[0] does; d[1] the mirror */
static const EVP_CIPHER *cipher;
static size_t max_plain, seal_read;	/* plaintext per record; per read */
static struct sockaddr_in target;
static struct conn *closed;	/* freed after the batch of events that closed them */

static void die(const char *what)
{
	fprintf(stderr, "minrelay: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

/* Later events of the same batch may still name c: free it after them. */
static void conn_close(struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		close(c->e[i].fd);
		if (copy_mode) {
			free(c->d[i].buf);
			free(c->d[i].wire);
			EVP_CIPHER_CTX_free(c->d[i].ctx);
		} else {
			close(c->d[i].rd);
			close(c->d[i].wr);
		}
	}
	c->closed = true;
	c->next_closed = closed;
	closed = c;
}

/* As src/noise.c does for ChaCha20-Poly1305: a head of whole 128-byte
 * units, then the rest, which keeps OpenSSL's Poly1305 on its fastest path. */
static bool cipher_update(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *in,
			  size_t n)
{
	size_t head = EVP_CIPHER_get_nid(cipher) == NID_chacha20_poly1305 ? n / 128 * 128 : n;
	int outl;

	return (!head || EVP_CipherUpdate(ctx, out, &outl, in, (int)head)) &&
	       (head == n || EVP_CipherUpdate(ctx, out + head, &outl, in + head, (int)(n - head)));
}

static bool set_nonce(struct dir *d, int enc)
{
	unsigned char iv[12] = { 0 };

	for (int i = 0; i < 8; i++)
		iv[4 + i] = (unsigned char)(d->nonce >> (8 * i));
	d->nonce++;
	return EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, iv, enc);
}

/* SEAL: the n plaintext bytes read into buf become records of at most
 * max_plain bytes each, framed, one after the other in wire: one send. */
static bool seal(struct dir *d, size_t n)
{
	const unsigned char *pt = (const unsigned char *)d->buf;
	unsigned char *w = (unsigned char *)d->wire;
	size_t at = 0;
	int finl;

	for (size_t done = 0; done < n; ) {
		size_t len = n - done < max_plain ? n - done : max_plain;

		if (!set_nonce(d, 1) || !cipher_update(d->ctx, w + at + HDR, pt + done, len) ||
		    !EVP_CipherFinal_ex(d->ctx, w + at + HDR + len, &finl) ||
		    !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, TAG, w + at + HDR + len))
			return false;
		w[at] = (unsigned char)(len + TAG);
		w[at + 1] = (unsigned char)((len + TAG) >> 8);
		at += HDR + len + TAG;
		done += len;
	}
	d->off = 0;
	d->in_pipe = at;
	return true;
}

/* OPEN: the records just sent are dropped; the complete ones after them
 * (up to IOV_MAX_RECS) are decrypted in place, their plaintext pending. */
static bool open_records(struct dir *d)
{
	unsigned char *p = (unsigned char *)d->buf;
	size_t at = 0, len;
	int finl;

	if (d->used) {
		d->have -= d->used;
		memmove(p, p + d->used, d->have);
		d->used = 0;
	}
	d->niov = d->iov_at = 0;
	d->in_pipe = 0;
	while (d->niov < IOV_MAX_RECS && d->have - at >= HDR &&
	       d->have - at - HDR >= (len = (size_t)p[at] | (size_t)p[at + 1] << 8)) {
		unsigned char *m = p + at + HDR;

		if (len < TAG || !set_nonce(d, 0) ||
		    !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, TAG, m + len - TAG) ||
		    !cipher_update(d->ctx, m, m, len - TAG) ||
		    !EVP_CipherFinal_ex(d->ctx, m + len - TAG, &finl))
			return false;	/* forged, or out of step */
		d->iov[d->niov++] = (struct iovec){ .iov_base = m, .iov_len = len - TAG };
		d->in_pipe += len - TAG;
		at += HDR + len;
	}
	d->used = at;
	return true;
}

/* Reads into the buffer: plaintext to seal, wire bytes to open, or bytes
 * to pass on. Returns what recv() did. */
static ssize_t fill(struct dir *d)
{
	size_t want = d->crypt == SEAL ? seal_read : d->crypt == OPEN ? OPEN_BUF - d->have
				       : COPY_SIZE;
	ssize_t n = recv(d->src, d->buf + (d->crypt == OPEN ? d->have : 0), want, 0);

	d->drained = n > 0 && (size_t)n < want;
	if (n <= 0)
		return n;
	switch (d->crypt) {
	case SEAL:
		return seal(d, (size_t)n) ? n : -1;
	case OPEN:
		d->have += (size_t)n;
		return open_records(d) ? n : -1;
	default:
		d->off = 0;
		d->in_pipe = (size_t)n;
		return n;
	}
}

/* Writes what is pending; the count written, or -1 with errno. */
static ssize_t flush(struct dir *d)
{
	ssize_t n;

	if (!copy_mode)
		return splice(d->rd, NULL, d->dst, NULL, d->in_pipe,
			      SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	if (d->crypt != OPEN) {
		n = send(d->dst, (d->crypt == SEAL ? d->wire : d->buf) + d->off, d->in_pipe,
			 MSG_NOSIGNAL);
		if (n > 0)
			d->off += (size_t)n;
		return n;
	}
	n = sendmsg(d->dst, &(struct msghdr){ .msg_iov = d->iov + d->iov_at,
					      .msg_iovlen = (size_t)(d->niov - d->iov_at) },
		    MSG_NOSIGNAL);
	for (size_t left = n > 0 ? (size_t)n : 0; left; ) {
		struct iovec *v = &d->iov[d->iov_at];
		size_t k = left < v->iov_len ? left : v->iov_len;

		v->iov_base = (char *)v->iov_base + k;
		v->iov_len -= k;
		left -= k;
		if (v->iov_len == 0)
			d->iov_at++;
	}
	return n;
}

/* Moves what it can, then waits for epoll; false when the connection
 * failed. Like rathole's relay, a read that got less than it asked has
 * emptied the socket, and asking again would only return EAGAIN. */
static bool pump(struct dir *d)
{
	while (!d->done) {
		ssize_t n;

		while (d->in_pipe) {
			n = flush(d);
			if (n < 0 && errno == EAGAIN)
				return true;
			if (n <= 0)
				return false;
			d->in_pipe -= (size_t)n;
		}
		if (d->crypt == OPEN && d->used) {
			if (!open_records(d))
				return false;
			if (d->in_pipe || d->used)
				continue;	/* a record of empty plaintext is dropped too */
		}
		if (d->eof) {
			shutdown(d->dst, SHUT_WR);
			d->done = true;
			break;
		}
		if (d->drained) {
			d->drained = false;
			return true;
		}
		if (copy_mode) {
			n = fill(d);
		} else {
			n = splice(d->src, NULL, d->wr, NULL, PIPE_SIZE,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			d->in_pipe = n > 0 ? (size_t)n : 0;
			d->drained = n > 0 && n < PIPE_SIZE;
		}
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n < 0)
			return false;
		if (n == 0 && d->crypt == OPEN && d->have)
			return false;	/* ended inside a record */
		d->eof = n == 0;
	}
	return true;
}

/* Reading from a side whose direction is stuck on a full destination
 * would only fill the pipe: watch the destination instead. */
static void update_interest(struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		struct dir *out = &c->d[i], *in = &c->d[!i];
		uint32_t ev = 0;
		struct epoll_event e = { .data.ptr = &c->e[i] };

		if (!out->done && out->in_pipe == 0)
			ev |= EPOLLIN;
		if (!in->done && in->in_pipe)
			ev |= EPOLLOUT;
		if (ev == c->e[i].events)
			continue;
		e.events = ev;
		if (epoll_ctl(ep, EPOLL_CTL_MOD, c->e[i].fd, &e) < 0)
			die("epoll_ctl");
		c->e[i].events = ev;
	}
}

/* Readable end i: direction i reads; writable end i: direction !i writes. */
static void on_event(struct end *e, uint32_t events)
{
	struct conn *c = e->c;
	int i = e == &c->e[1];
	bool all = events & (EPOLLERR | EPOLLHUP);

	if (c->closed)
		return;
	if (((all || (events & EPOLLIN)) && !pump(&c->d[i])) ||
	    ((all || (events & EPOLLOUT)) && !pump(&c->d[!i])) ||
	    (c->d[0].done && c->d[1].done)) {
		conn_close(c);
		return;
	}
	update_interest(c);
}

static void watch(struct end *e)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = e };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
		die("epoll_ctl");
	e->events = EPOLLIN;
}

static void on_accept(int l)
{
	int one = 1, v = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), t, p[2][2];
	struct conn *c;

	if (v < 0)
		return;		/* the visitor gave up already */
	t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (t < 0)
		die("socket");
	/* a blocking connect: on loopback the handshake completes inside it */
	if (connect(t, (struct sockaddr *)&target, sizeof target) < 0) {
		fprintf(stderr, "minrelay: connect to the target: %s\n", strerror(errno));
		close(t);
		close(v);
		return;
	}
	if (fcntl(t, F_SETFL, O_NONBLOCK) < 0 || !(c = calloc(1, sizeof *c)))
		die("setup");
	setsockopt(v, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	for (int i = 0; i < 2; i++) {
		c->d[i] = (struct dir){ .src = i ? t : v, .dst = i ? v : t };
		if (copy_mode) {
			struct dir *d = &c->d[i];

			d->crypt = listen_side == PLAIN ? PLAIN : i == 0 ? listen_side
				   : listen_side == SEAL ? OPEN : SEAL;
			d->buf = malloc(d->crypt == OPEN ? OPEN_BUF : COPY_SIZE);
			if (!d->buf || (d->crypt == SEAL &&
					!(d->wire = malloc(seal_read / max_plain * (HDR + TAG) +
							   seal_read))))
				die("malloc");
			if (d->crypt != PLAIN) {
				static const unsigned char key[32];

				if (!(d->ctx = EVP_CIPHER_CTX_new()) ||
				    !EVP_CipherInit_ex(d->ctx, cipher, NULL, key, NULL, d->crypt == SEAL))
					die("EVP_CipherInit_ex");
			}
		} else {
			if (pipe2(p[i], O_NONBLOCK | O_CLOEXEC) < 0)
				die("pipe2");
			fcntl(p[i][1], F_SETPIPE_SZ, PIPE_SIZE);
			c->d[i].rd = p[i][0];
			c->d[i].wr = p[i][1];
		}
		c->e[i] = (struct end){ .c = c, .fd = i ? t : v };
		watch(&c->e[i]);
	}
}

int main(int argc, char **argv)
{
	struct epoll_event evs[256], lev = { .events = EPOLLIN, .data.ptr = NULL };
	struct sockaddr_in a;
	int l, one = 1;

	if (argc == 6 && (!strcmp(argv[3], "seal") || !strcmp(argv[3], "open"))) {
		listen_side = !strcmp(argv[3], "seal") ? SEAL : OPEN;
		cipher = EVP_get_cipherbyname(argv[4]);
		max_plain = (size_t)atol(argv[5]);
		/* as many whole records as fit 64 KiB, or one */
		seal_read = max_plain && max_plain < COPY_SIZE ? COPY_SIZE / max_plain * max_plain
							       : max_plain;
	}
	if (!(argc == 3 || (argc == 4 && !strcmp(argv[3], "copy")) ||
	      (listen_side != PLAIN && cipher && max_plain > 0 && max_plain <= 65535 - TAG))) {
		fprintf(stderr, "usage: minrelay LISTEN_PORT TARGET_PORT "
			"[copy | seal CIPHER MAX | open CIPHER MAX]\n");
		return 2;
	}
	copy_mode = argc > 3;
	signal(SIGPIPE, SIG_IGN);	/* a peer gone: splice() fails with EPIPE instead */
	a = loopback(atoi(argv[1]));
	target = loopback(atoi(argv[2]));
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0)
		die("listen");
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &lev) < 0)
		die("epoll");
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				on_accept(l);
			else
				on_event(evs[i].data.ptr, evs[i].events);
		}
		while (closed) {
			struct conn *c = closed;

			closed = c->next_closed;
			free(c);
		}
	}
}
