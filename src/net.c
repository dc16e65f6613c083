#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fds.h"

int net_parse_uint(const char *s, unsigned max, unsigned *out)
{
	uint64_t v = 0;		/* at most max * 10 + 9: no overflow for any max */

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned)(*s - '0');
		if (v > max)
			return -1;
	}
	*out = (unsigned)v;
	return 0;
}

int net_split_hostport(const char *s, char *host, size_t hostcap,
		       unsigned *port, const char **err)
{
	const char *colon, *h = s, *hend;
	unsigned p;

	if (*s == '[') {
		hend = strchr(s, ']');
		if (!hend || hend[1] != ':') {
			*err = "expected [ipv6]:port";
			return -1;
		}
		h = s + 1;
		colon = hend + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			*err = "expected host:port";
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s))) {
			*err = "an IPv6 address must be written in brackets: [addr]:port";
			return -1;
		}
		hend = colon;
	}
	if (hend == h) {
		*err = "the host is empty";
		return -1;
	}
	if ((size_t)(hend - h) >= hostcap) {
		*err = "the host name is too long";
		return -1;
	}
	if (net_parse_uint(colon + 1, 65535, &p) < 0) {
		*err = "the port must be a number from 0 to 65535";
		return -1;
	}
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	*port = p;
	return 0;
}

int net_parse_numeric(const char *s, struct net_addr *out)
{
	char host[NET_HOST_MAX];
	unsigned port;
	const char *err;

	if (net_split_hostport(s, host, sizeof host, &port, &err) < 0)
		return -1;
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, host, &out->u.in4.sin_addr) == 1) {
		out->u.in4.sin_family = AF_INET;
		out->u.in4.sin_port = htons((uint16_t)port);
		out->len = sizeof out->u.in4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &out->u.in6.sin6_addr) == 1) {
		out->u.in6.sin6_family = AF_INET6;
		out->u.in6.sin6_port = htons((uint16_t)port);
		out->len = sizeof out->u.in6;
		return 0;
	}
	return -1;
}

const char *net_addr_str(const struct net_addr *a, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->u.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->u.in4.sin_addr, ip, sizeof ip);
		snprintf(buf, cap, "%s:%u", ip, ntohs(a->u.in4.sin_port));
	} else if (a->u.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
		snprintf(buf, cap, "[%s]:%u", ip, ntohs(a->u.in6.sin6_port));
	} else {
		snprintf(buf, cap, "(unknown)");
	}
	return buf;
}

bool net_addr_equal(const struct net_addr *a, const struct net_addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in4.sin_port == b->u.in4.sin_port &&
		       a->u.in4.sin_addr.s_addr == b->u.in4.sin_addr.s_addr;
	if (a->u.sa.sa_family == AF_INET6)
		return a->u.in6.sin6_port == b->u.in6.sin6_port &&
		       memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0;
	return false;
}

/* Every socket made here is counted (fds.h); fds_close() closes it. */
static int new_socket(int family, int type)
{
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd >= 0)
		fds_opened(1);
	else if (errno == EMFILE || errno == ENFILE)
		fds_exhausted();
	return fd;
}

int net_listen_tcp(const struct net_addr *a, int backlog)
{
	int one = 1, zero = 0;
	int fd = new_socket(a->u.sa.sa_family, SOCK_STREAM);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (a->u.sa.sa_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr))
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	if (bind(fd, &a->u.sa, a->len) < 0 || listen(fd, backlog) < 0) {
		int e = errno;
		fds_close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int net_bind_udp(const struct net_addr *a)
{
	int zero = 0;
	int fd = new_socket(a->u.sa.sa_family, SOCK_DGRAM);

	if (fd < 0)
		return -1;
	if (a->u.sa.sa_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr))
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	if (bind(fd, &a->u.sa, a->len) < 0) {
		int e = errno;
		fds_close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int net_connect_tcp(const struct net_addr *a)
{
	int fd = new_socket(a->u.sa.sa_family, SOCK_STREAM);

	if (fd < 0)
		return -1;
	if (connect(fd, &a->u.sa, a->len) < 0 && errno != EINPROGRESS) {
		int e = errno;
		fds_close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int net_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

int net_connect_now(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	int e;

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return EINPROGRESS;	/* leave it to EPOLLOUT */
	switch (ti.tcpi_state) {
	case TCP_ESTABLISHED:
	case TCP_CLOSE_WAIT:	/* connected, and the peer already sent its FIN */
		return 0;
	case TCP_SYN_SENT:
		return EINPROGRESS;
	default:
		e = net_connect_result(fd);
		return e ? e : EINPROGRESS;
	}
}

int net_accept(int lfd, struct net_addr *peer)
{
	int fd;

	peer->len = sizeof peer->u;
	fd = accept4(lfd, &peer->u.sa, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0)
		fds_opened(1);
	else if (errno == EMFILE || errno == ENFILE)
		fds_exhausted();
	return fd;
}

bool net_accept_pending(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	/* An error (or a failed poll) is left for accept4() to report. */
	return poll(&p, 1, 0) != 0;
}

void net_set_nodelay(int fd, bool on)
{
	int v = on;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
}

void net_set_keepalive(int fd, int idle_secs, int interval_secs)
{
	int one = 1;

	if (idle_secs <= 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_secs, sizeof idle_secs);
	if (interval_secs > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_secs, sizeof interval_secs);
}

void net_set_user_timeout(int fd, unsigned ms)
{
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
}
