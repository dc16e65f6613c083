/* The least relay: what two relay processes cost on this machine when they
 * do nothing but move bytes (make bench).
 *
 *   minrelay LISTEN_PORT TARGET_PORT [copy]
 *
 * Accepts on 127.0.0.1:LISTEN_PORT; for each connection connects to
 * 127.0.0.1:TARGET_PORT and moves bytes both ways with splice() through a
 * pipe per direction, as rathole's tcp transport does, until both sides
 * have ended (a FIN is passed on as a shutdown). With "copy", through a
 * 64 KiB buffer per direction instead (recv and send), as every encrypting
 * transport must: the least such a transport pays beside its cipher.
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
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_SIZE	(256 * 1024)
#define COPY_SIZE	(64 * 1024)

struct conn;

/* Bytes from src to dst through a pipe, or a buffer in copy mode. */
struct dir {
	int src, dst;
	int rd, wr;		/* the pipe */
	char *buf;		/* copy mode: buf[off .. off + in_pipe) is pending */
	size_t off;
	size_t in_pipe;
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
		} else {
			close(c->d[i].rd);
			close(c->d[i].wr);
		}
	}
	c->closed = true;
	c->next_closed = closed;
	closed = c;
}

/* Moves what it can, then waits for epoll; false when the connection
 * failed. Like rathole's relay, a read that got less than it asked has
 * emptied the socket, and asking again would only return EAGAIN. */
static bool pump(struct dir *d)
{
	while (!d->done) {
		ssize_t n;

		while (d->in_pipe) {
			if (copy_mode)
				n = send(d->dst, d->buf + d->off, d->in_pipe, MSG_NOSIGNAL);
			else
				n = splice(d->rd, NULL, d->dst, NULL, d->in_pipe,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n < 0 && errno == EAGAIN)
				return true;
			if (n <= 0)
				return false;
			d->in_pipe -= (size_t)n;
			d->off += (size_t)n;
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
		if (copy_mode)
			n = recv(d->src, d->buf, COPY_SIZE, 0);
		else
			n = splice(d->src, NULL, d->wr, NULL, PIPE_SIZE,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n < 0)
			return false;
		d->eof = n == 0;
		d->in_pipe = (size_t)n;
		d->off = 0;
		d->drained = n > 0 && n < (copy_mode ? COPY_SIZE : PIPE_SIZE);
	}
	return true;
}

/* Reading from a side whose direction is stuck on a full destination
 * would only fill the pipe: watch the destination instead. */
static void update(struct conn *c)
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
	update(c);
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
			if (!(c->d[i].buf = malloc(COPY_SIZE)))
				die("malloc");
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

	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "copy"))) {
		fprintf(stderr, "usage: minrelay LISTEN_PORT TARGET_PORT [copy]\n");
		return 2;
	}
	copy_mode = argc == 4;
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
