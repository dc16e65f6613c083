/* Addresses and socket helpers. All sockets are non-blocking and close-on-exec,
 * and counted against the descriptor limit: close them with fds_close(). */
#ifndef NET_H
#define NET_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct net_addr {
	socklen_t len;
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	} u;
};

#define NET_HOST_MAX 256
#define NET_ADDRSTR_MAX (INET6_ADDRSTRLEN + 8)

/* A decimal number of digits only (no sign, no spaces), at most max. */
int net_parse_uint(const char *s, unsigned max, unsigned *out);
/* Splits "host:port" / "[v6]:port" into host and port strings.
 * Returns 0, or -1 with a reason in err. */
int net_split_hostport(const char *s, char *host, size_t hostcap,
		       unsigned *port, const char **err);
/* Parses a numeric "ip:port" / "[v6]:port"; -1 if the host is not an IP literal. */
int net_parse_numeric(const char *s, struct net_addr *out);
/* "1.2.3.4:80" or "[::1]:80" */
const char *net_addr_str(const struct net_addr *a, char *buf, size_t cap);
bool net_addr_equal(const struct net_addr *a, const struct net_addr *b);

/* A listening TCP socket (SO_REUSEADDR; IPV6_V6ONLY left at the system default
 * except that "[::]" listens on both families). Returns fd or -1 (errno set). */
int net_listen_tcp(const struct net_addr *a, int backlog);
int net_bind_udp(const struct net_addr *a);
/* Starts a non-blocking connect. Returns fd (connecting) or -1. */
int net_connect_tcp(const struct net_addr *a);
/* After EPOLLOUT on a connecting socket: 0 when connected, else the errno. */
int net_connect_result(int fd);
/* Right after net_connect_tcp(): 0 when already connected, EINPROGRESS when
 * still connecting, else the errno of the failure. On loopback the kernel
 * completes the handshake inside connect() itself, so this spares waiting
 * for EPOLLOUT (a registration and a turn of the loop). */
int net_connect_now(int fd);
int net_accept(int lfd, struct net_addr *peer);
/* Whether a listening socket may have a connection waiting: asked before
 * accepting again in a batch, because an accept4() that finds the queue
 * empty costs ten times this poll() (it makes a socket and a file first). */
bool net_accept_pending(int lfd);

void net_set_nodelay(int fd, bool on);
void net_set_keepalive(int fd, int idle_secs, int interval_secs);
/* TCP_USER_TIMEOUT: the connection fails when bytes sent stay unacknowledged
 * this long, or keepalive probes go unanswered this long after the last
 * byte received (0: the kernel's default, about 15 minutes of retries). */
void net_set_user_timeout(int fd, unsigned ms);

#endif
