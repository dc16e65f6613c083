/* The least relay on io_uring: what two relay processes cost on this
 * machine when they move bytes with the cheapest syscall interface the
 * kernel has (make bench).
 *
 *   urelay LISTEN_PORT TARGET_PORT
 *
 * Accepts on 127.0.0.1:LISTEN_PORT; for each connection connects to
 * 127.0.0.1:TARGET_PORT and copies bytes both ways through a 64 KiB buffer
 * per direction until both sides have ended (a FIN is passed on as a
 * shutdown). Accept (multishot), connect, recv and send are io_uring
 * requests; one io_uring_enter per turn of the loop submits the requests of
 * every connection and waits for completions, so many connections' work
 * shares one syscall, where an epoll relay (bench/minrelay.c, rathole) makes
 * one per recv and send and one per wait. The ring is set up single-issuer
 * with deferred task work where the kernel has it (6.1), so completions run
 * when the loop asks for them.
 *
 * The bench runs two in a chain in front of nginx, like minrelay: the
 * least relay for the HTTP loads, measured against the epoll one. Bench
 * code: it trusts its two peers and stops at the first setup error. */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE	(64 * 1024)
#define RING_ENTRIES	4096

/* user_data: a pointer to the connection or direction, the operation in its low bits */
enum op { OP_ACCEPT, OP_CONNECT, OP_RECV, OP_SEND };
#define OP_MASK		3u

struct conn;

/* Bytes from src to dst. */
struct dir {
	struct conn *c;
	int src, dst;
	char *buf;
	size_t off, len;	/* buf[off, len) is still to send */
	bool done;
};

struct conn {
	int fd[2];		/* visitor side, target side */
	struct dir d[2];	/* d[i] reads fd[i], writes fd[!i] */
	int in_flight;		/* requests not yet completed */
	int ended;		/* directions done */
};

static struct io_uring ring;
static int listen_fd;
static struct sockaddr_in target;

static void die(const char *what, int err)
{
	fprintf(stderr, "urelay: %s: %s\n", what, strerror(err));
	exit(1);
}

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *s = io_uring_get_sqe(&ring);

	if (!s) {		/* the submission queue is full: hand it over */
		io_uring_submit(&ring);
		s = io_uring_get_sqe(&ring);
		if (!s)
			die("io_uring_get_sqe", EBUSY);
	}
	return s;
}

static void tag(struct io_uring_sqe *s, void *p, enum op op)
{
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)p | op);
}

static void post_accept(void)
{
	struct io_uring_sqe *s = get_sqe();

	io_uring_prep_multishot_accept(s, listen_fd, NULL, NULL, SOCK_CLOEXEC);
	tag(s, NULL, OP_ACCEPT);
}

static void post_recv(struct dir *d)
{
	struct io_uring_sqe *s = get_sqe();

	io_uring_prep_recv(s, d->src, d->buf, BUF_SIZE, 0);
	tag(s, d, OP_RECV);
	d->c->in_flight++;
}

static void post_send(struct dir *d)
{
	struct io_uring_sqe *s = get_sqe();

	io_uring_prep_send(s, d->dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
	tag(s, d, OP_SEND);
	d->c->in_flight++;
}

static void conn_free_if_done(struct conn *c)
{
	if (c->in_flight || c->ended < 2)
		return;
	close(c->fd[0]);
	close(c->fd[1]);
	free(c->d[0].buf);
	free(c->d[1].buf);
	free(c);
}

/* A direction ends at its source's FIN (passed on), or at an error, which
 * ends the other direction too: its pending request then completes. */
static void dir_end(struct dir *d, bool failed)
{
	struct conn *c = d->c;

	if (d->done)
		return;
	d->done = true;
	c->ended++;
	if (failed) {
		shutdown(c->fd[0], SHUT_RDWR);
		shutdown(c->fd[1], SHUT_RDWR);
	} else {
		shutdown(d->dst, SHUT_WR);
	}
}

static void on_accept(int fd)
{
	struct conn *c = calloc(1, sizeof *c);
	int one = 1;

	if (!c)
		die("calloc", ENOMEM);
	c->fd[0] = fd;
	c->fd[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd[1] < 0)
		die("socket", errno);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	for (int i = 0; i < 2; i++) {
		c->d[i] = (struct dir){ .c = c, .src = c->fd[i], .dst = c->fd[!i],
					.buf = malloc(BUF_SIZE) };
		if (!c->d[i].buf)
			die("malloc", ENOMEM);
	}
	struct io_uring_sqe *s = get_sqe();
	io_uring_prep_connect(s, c->fd[1], (struct sockaddr *)&target, sizeof target);
	tag(s, c, OP_CONNECT);
	c->in_flight++;
}

static void on_connect(struct conn *c, int res)
{
	c->in_flight--;
	if (res < 0) {
		c->ended = 2;
		conn_free_if_done(c);
		return;
	}
	post_recv(&c->d[0]);
	post_recv(&c->d[1]);
}

static void on_recv(struct dir *d, int res)
{
	d->c->in_flight--;
	if (res > 0) {
		d->off = 0;
		d->len = (size_t)res;
		post_send(d);
	} else {
		dir_end(d, res < 0);
	}
	conn_free_if_done(d->c);
}

static void on_send(struct dir *d, int res)
{
	d->c->in_flight--;
	if (res > 0) {
		d->off += (size_t)res;
		if (d->off < d->len)
			post_send(d);
		else
			post_recv(d);
	} else {
		dir_end(d, true);
	}
	conn_free_if_done(d->c);
}

static void setup(int listen_port, int target_port)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)listen_port) };
	int one = 1, rc;

	target = a;
	target.sin_port = htons((uint16_t)target_port);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		die("socket", errno);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind", errno);
	if (listen(listen_fd, 4096) < 0)
		die("listen", errno);
	rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
	if (rc == -EINVAL) {		/* a kernel before 6.1: no deferred task work */
		memset(&p, 0, sizeof p);
		rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
	}
	if (rc < 0)
		die("io_uring_queue_init", -rc);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: urelay LISTEN_PORT TARGET_PORT\n");
		return 2;
	}
	setup(atoi(argv[1]), atoi(argv[2]));
	post_accept();
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int rc = io_uring_submit_and_wait(&ring, 1);

		if (rc < 0 && rc != -EINTR)
			die("io_uring_submit_and_wait", -rc);
		io_uring_for_each_cqe(&ring, head, cqe) {
			uint64_t data = io_uring_cqe_get_data64(cqe);
			void *p = (void *)(uintptr_t)(data & ~(uint64_t)OP_MASK);

			seen++;
			switch ((enum op)(data & OP_MASK)) {
			case OP_ACCEPT:
				if (cqe->res == -EINVAL)	/* before Linux 5.19 */
					die("multishot accept", EINVAL);
				if (cqe->res >= 0)
					on_accept(cqe->res);
				if (!(cqe->flags & IORING_CQE_F_MORE))
					post_accept();	/* the multishot request ended */
				break;
			case OP_CONNECT:
				on_connect(p, cqe->res);
				break;
			case OP_RECV:
				on_recv(p, cqe->res);
				break;
			case OP_SEND:
				on_send(p, cqe->res);
				break;
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
}
