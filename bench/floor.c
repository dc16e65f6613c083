/* The kernel's least work for what a tunnel adds to a request (make bench).
 *
 *   floor hop REQ RESP N      CPU µs per exchange over one loopback TCP
 *                             connection: REQ bytes one way, RESP back
 *                             (RESP 0: one way only)
 *   floor conn REQ RESP N [UP DOWN]
 *                             CPU µs per TCP connection's whole life, both
 *                             ends: socket, connect, accept, UP bytes from
 *                             the connecting end and DOWN back (a protocol's
 *                             hello), the exchange, close
 *
 * Both ends live in this one thread and never wait: on loopback a send
 * delivers into the peer's receive queue before it returns, so every read
 * finds its bytes. No epoll, no wakeups, no socket options, no work in user
 * space but the syscalls: what any relay must at least pay for a TCP hop
 * or a TCP connection, measured on this machine's kernel. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG_MAX (64 * 1024)

static char buf[MSG_MAX];

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void send_all(int fd, size_t n)
{
	while (n) {
		ssize_t k = send(fd, buf, n, MSG_NOSIGNAL);

		if (k <= 0)
			die("send");
		n -= (size_t)k;
	}
}

static void recv_all(int fd, size_t n)
{
	while (n) {
		ssize_t k = recv(fd, buf, n, 0);

		if (k <= 0)
			die(k ? "recv" : "recv: early end of stream");
		n -= (size_t)k;
	}
}

static int listener(struct sockaddr_in *a)
{
	socklen_t len = sizeof *a;
	int l = socket(AF_INET, SOCK_STREAM, 0);

	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l < 0 || bind(l, (struct sockaddr *)a, sizeof *a) < 0 || listen(l, 128) < 0 ||
	    getsockname(l, (struct sockaddr *)a, &len) < 0)
		die("listen");
	return l;
}

static double cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_usec;
}

static void exchange(int a, int b, size_t req, size_t resp)
{
	send_all(a, req);
	recv_all(b, req);
	if (resp) {
		send_all(b, resp);
		recv_all(a, resp);
	}
}

static double hop(size_t req, size_t resp, long n)
{
	struct sockaddr_in addr;
	int l = listener(&addr), a = socket(AF_INET, SOCK_STREAM, 0), b;
	double t0;

	if (a < 0 || connect(a, (struct sockaddr *)&addr, sizeof addr) < 0)
		die("connect");
	if ((b = accept(l, NULL, NULL)) < 0)
		die("accept");
	for (long i = 0; i < n / 10; i++)	/* warm up */
		exchange(a, b, req, resp);
	t0 = cpu_us();
	for (long i = 0; i < n; i++)
		exchange(a, b, req, resp);
	t0 = cpu_us() - t0;
	close(a);
	close(b);
	close(l);
	return t0 / (double)n;
}

static void one_connection(int l, const struct sockaddr_in *addr, size_t req, size_t resp,
			   size_t up, size_t down)
{
	int a = socket(AF_INET, SOCK_STREAM, 0), b;

	if (a < 0 || connect(a, (const struct sockaddr *)addr, sizeof *addr) < 0)
		die("connect");
	if ((b = accept(l, NULL, NULL)) < 0)
		die("accept");
	if (up)
		exchange(a, b, up, down);
	exchange(a, b, req, resp);
	close(b);
	close(a);
}

static double conn(size_t req, size_t resp, size_t up, size_t down, long n)
{
	struct sockaddr_in addr;
	int l = listener(&addr);
	double t0;

	for (long i = 0; i < n / 10; i++)
		one_connection(l, &addr, req, resp, up, down);
	t0 = cpu_us();
	for (long i = 0; i < n; i++)
		one_connection(l, &addr, req, resp, up, down);
	t0 = cpu_us() - t0;
	close(l);
	return t0 / (double)n;
}

static size_t size_arg(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*end || v > MSG_MAX) {
		fprintf(stderr, "floor: %s: a size from 0 to %d\n", s, MSG_MAX);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	int is_hop = argc == 5 && !strcmp(argv[1], "hop");
	int is_conn = (argc == 5 || argc == 7) && !strcmp(argv[1], "conn");
	long n = argc >= 5 ? atol(argv[4]) : 0;

	if ((!is_hop && !is_conn) || n <= 0) {
		fprintf(stderr, "usage: floor hop REQ RESP N | floor conn REQ RESP N [UP DOWN]\n");
		return 2;
	}
	if (is_hop)
		printf("%.3f\n", hop(size_arg(argv[2]), size_arg(argv[3]), n));
	else
		printf("%.3f\n", conn(size_arg(argv[2]), size_arg(argv[3]),
				      argc == 7 ? size_arg(argv[5]) : 0,
				      argc == 7 ? size_arg(argv[6]) : 0, n));
	return 0;
}
