/* The proxy client: URL parsing, and HTTP CONNECT / SOCKS5 negotiations
 * against tiny scripted proxies on loopback threads that answer byte by
 * byte and put "EXTRA" right after their reply (it must stay unread). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "proxy.h"
#include "streampair.h"
#include "transport.h"

/* ---- URL parsing ---- */

static void url_ok(const char *url, enum proxy_kind kind, const char *host, unsigned port,
		   const char *hostport, const char *user, const char *pass, bool auth)
{
	struct proxy_url u;
	char err[256] = "";
	int rc = proxy_parse_url(url, &u, err, sizeof err);

	CHECKF(rc == 0, "%s: %s", url, err);
	if (rc)
		return;
	CHECKF(u.kind == kind, "%s: kind", url);
	CHECK_STR(u.host, host);
	CHECKF(u.port == port, "%s: port %u", url, u.port);
	CHECK_STR(u.hostport, hostport);
	CHECK_STR(u.user, user);
	CHECK_STR(u.pass, pass);
	CHECKF(u.has_auth == auth, "%s: has_auth", url);
}

static void url_bad(const char *url, const char *expect)
{
	struct proxy_url u;
	char err[256] = "";

	CHECKF(proxy_parse_url(url, &u, err, sizeof err) == -1 && strstr(err, expect),
	       "%s: want \"%s\", got \"%s\"", url, expect, err);
}

static void test_urls(void)
{
	char longuser[400];

	url_ok("http://127.0.0.1:8080", PROXY_HTTP, "127.0.0.1", 8080, "127.0.0.1:8080", "", "",
	       false);
	url_ok("http://proxy.example", PROXY_HTTP, "proxy.example", 80, "proxy.example:80", "", "",
	       false);
	url_ok("HTTP://proxy.example:3128/", PROXY_HTTP, "proxy.example", 3128,
	       "proxy.example:3128", "", "", false);
	url_ok("socks5://[::1]", PROXY_SOCKS5, "::1", 1080, "[::1]:1080", "", "", false);
	url_ok("socks5://[2001:db8::7]:9050", PROXY_SOCKS5, "2001:db8::7", 9050,
	       "[2001:db8::7]:9050", "", "", false);
	url_ok("SOCKS5://u%40x:p%3Aw%25@h:1", PROXY_SOCKS5, "h", 1, "h:1", "u@x", "p:w%", true);
	url_ok("http://user:pa@ss@host:3128", PROXY_HTTP, "host", 3128, "host:3128", "user",
	       "pa@ss", true);
	url_ok("http://user@host:1", PROXY_HTTP, "host", 1, "host:1", "user", "", true);
	url_ok("http://a%2Fb:%20@host:1", PROXY_HTTP, "host", 1, "host:1", "a/b", " ", true);

	url_bad("ftp://h:1", "unknown proxy scheme \"ftp\": use http or socks5");
	url_bad("https://h:1", "unknown proxy scheme \"https\"");
	url_bad("socks4://h:1", "unknown proxy scheme");
	url_bad("host:8080", "is not a URL");
	url_bad("http://:8080", "no host");
	url_bad("http://", "no host");
	url_bad("http://user:pw@", "no host");
	url_bad("http://h:0", "port must be a number from 1 to 65535");
	url_bad("http://h:99999", "port must be");
	url_bad("http://h:8a", "port must be");
	url_bad("http://h:", "port must be");
	url_bad("http://::1:80", "brackets");
	url_bad("http://[::1:80", "without ']'");
	url_bad("http://[::1]x", "after ']'");
	url_bad("http://[nothex]:1", "not a valid proxy host");
	url_bad("http://bad host:1", "not a valid proxy host");
	url_bad("http://h:80/path", "must not have a path");
	url_bad("http://h:80?x=1", "must not have a path");
	url_bad("http://u%zz@h:1", "percent-encoding");
	url_bad("http://u%4@h:1", "percent-encoding");
	url_bad("http://u%00@h:1", "percent-encoding");
	memset(longuser, 'a', sizeof longuser);
	memcpy(longuser, "http://", 7);
	memcpy(longuser + 300, "@h:1", 5);
	url_bad(longuser, "limited to 255 bytes");
}

/* ---- scripted proxies ---- */

struct fake {
	bool socks;
	/* HTTP: the whole reply */
	const char *reply;
	size_t reply_len;
	/* SOCKS5 */
	uint8_t method, auth_status, rep, atyp;
	bool raw_method;		/* reply[0..1] is sent as the method answer */
	/* both */
	bool close_after_partial;	/* send half the reply and close */

	int lfd;
	unsigned port;
	pthread_t th;
	/* what the client sent */
	uint8_t got[1024], greeting[300], auth[600];
	size_t got_len, greeting_len, auth_len;
	size_t leftover;		/* bytes read after the client closed */
};

static int recv_exact(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, p + got, n - got, 0);

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static size_t split_limit = (size_t)-1;	/* bytes sent one by one, at most */

/* Sends byte by byte; the last byte(s) leave with "EXTRA" in one segment. */
static void send_split(int fd, const uint8_t *p, size_t n, bool extra)
{
	static uint8_t rest[16384];
	size_t i;

	for (i = 0; i + 1 < n && i < split_limit; i++) {
		send(fd, p + i, 1, MSG_NOSIGNAL);
		usleep(500);
	}
	if (i == n || n - i > sizeof rest - 5)
		return;
	memcpy(rest, p + i, n - i);
	memcpy(rest + (n - i), "EXTRA", 5);
	send(fd, rest, n - i + (extra ? 5 : 0), MSG_NOSIGNAL);
}

static void fake_http(struct fake *f, int fd)
{
	while (f->got_len < sizeof f->got - 1 && recv_exact(fd, f->got + f->got_len, 1) == 0) {
		f->got_len++;
		if (f->got_len >= 4 && memcmp(f->got + f->got_len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	f->got[f->got_len] = 0;
	if (f->close_after_partial) {
		send_split(fd, (const uint8_t *)f->reply, f->reply_len / 2, false);
		return;
	}
	send_split(fd, (const uint8_t *)f->reply, f->reply_len, true);
}

static void fake_socks(struct fake *f, int fd)
{
	uint8_t r[64], *q = f->got;
	size_t n = 0, alen;

	if (recv_exact(fd, f->greeting, 2) || recv_exact(fd, f->greeting + 2, f->greeting[1]))
		return;
	f->greeting_len = 2u + f->greeting[1];
	if (f->raw_method) {
		send_split(fd, (const uint8_t *)f->reply, 2, false);
		return;
	}
	r[0] = 5;
	r[1] = f->method;
	send_split(fd, r, 2, false);
	if (f->method == 0xff)
		return;
	if (f->method == 2) {
		uint8_t *a = f->auth;

		if (recv_exact(fd, a, 2) || recv_exact(fd, a + 2, a[1] + 1u) ||
		    recv_exact(fd, a + 3 + a[1], a[2 + a[1]]))
			return;
		f->auth_len = 3u + a[1] + a[2 + a[1]];
		r[0] = 1;
		r[1] = f->auth_status;
		send_split(fd, r, 2, false);
		if (f->auth_status)
			return;
	}
	if (recv_exact(fd, q, 4))
		return;
	alen = q[3] == 1 ? 4 : q[3] == 4 ? 16 : 0;
	if (q[3] == 3 && recv_exact(fd, q + 4, 1) == 0)
		alen = 1u + q[4];
	if (recv_exact(fd, q + 4 + (q[3] == 3), alen - (q[3] == 3) + 2))
		return;
	f->got_len = 4 + alen + 2;
	/* the answer, with a bound address of the scripted type */
	r[n++] = 5;
	r[n++] = f->rep;
	r[n++] = 0;
	r[n++] = f->atyp;
	if (f->atyp == 1) {
		memcpy(r + n, "\x7f\x00\x00\x01", 4);
		n += 4;
	} else if (f->atyp == 4) {
		memset(r + n, 0, 16);
		r[n + 15] = 1;
		n += 16;
	} else {
		r[n++] = 11;
		memcpy(r + n, "proxy.local", 11);
		n += 11;
	}
	r[n++] = 0x1f;
	r[n++] = 0x90;
	if (f->close_after_partial) {
		send_split(fd, r, n / 2, false);
		return;
	}
	send_split(fd, r, n, f->rep == 0);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct timeval tv = { .tv_sec = 5 };
	struct pollfd p = { .fd = f->lfd, .events = POLLIN };
	uint8_t sink[256];
	ssize_t r;
	int fd, one = 1;

	if (poll(&p, 1, 5000) != 1)
		return NULL;
	fd = accept(f->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);	/* one byte, one segment */
	if (f->socks)
		fake_socks(f, fd);
	else
		fake_http(f, fd);
	if (f->close_after_partial)
		shutdown(fd, SHUT_WR);
	/* Wait for the client to close; count anything it still sends. */
	while ((r = recv(fd, sink, sizeof sink, 0)) > 0)
		f->leftover += (size_t)r;
	close(fd);
	return NULL;
}

static int fake_start(struct fake *f)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    listen(f->lfd, 1) < 0 || getsockname(f->lfd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	f->port = ntohs(a.sin_port);
	return pthread_create(&f->th, NULL, fake_main, f) == 0 ? 0 : -1;
}

/* Negotiates through the fake proxy. Returns proxy_conn_step's final
 * result; on success checks that "EXTRA" is still in the socket. */
static int negotiate(struct fake *f, const char *scheme_auth, const char *host, unsigned port,
		     char *err, size_t errlen)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char url[256], extra[8] = "";
	struct proxy_url u;
	struct proxy_conn *p;
	uint32_t want = 0;
	int fd, rc = ST_ERROR, i;

	err[0] = '\0';
	if (fake_start(f) < 0) {
		snprintf(err, errlen, "cannot start the fake proxy");
		return ST_ERROR;
	}
	snprintf(url, sizeof url, "%s127.0.0.1:%u", scheme_auth, f->port);
	if (proxy_parse_url(url, &u, err, errlen) < 0)
		goto out_join;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)f->port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		close(fd);
		goto out_join;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	p = proxy_conn_new(&u, host, port);
	for (i = 0; i < 500; i++) {
		rc = proxy_conn_step(p, fd, &want);
		if (rc != ST_AGAIN)
			break;
		CHECK(want == EPOLLIN || want == EPOLLOUT);
		sp_wait(fd, want == EPOLLIN ? POLLIN : POLLOUT, 20);
	}
	if (rc == ST_ERROR)
		snprintf(err, errlen, "%s", proxy_conn_error(p));
	CHECK(rc != ST_AGAIN);
	CHECK(proxy_conn_step(p, fd, &want) == rc);	/* the result sticks */
	if (rc == 0) {
		for (i = 0; i < 100 && recv(fd, extra, 5, MSG_PEEK) < 5; i++)
			sp_wait(fd, POLLIN, 20);
		CHECKF(recv(fd, extra, 5, 0) == 5 && memcmp(extra, "EXTRA", 5) == 0,
		       "bytes after the reply were consumed: \"%.5s\"", extra);
	}
	proxy_conn_free(p);
	close(fd);
out_join:
	pthread_join(f->th, NULL);
	close(f->lfd);
	CHECKF(f->leftover == 0, "the client sent %zu bytes after its request", f->leftover);
	return rc;
}

#define HTTP_REPLY(f, text) do { (f).reply = (text); (f).reply_len = strlen(text); } while (0)

static void test_http(void)
{
	struct fake f;
	char err[512], want[128];
	int rc;

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.1 200 Connection established\r\nVia: fake\r\n\r\n");
	rc = negotiate(&f, "http://user:p%40ss@", "example.com", 2333, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK_STR((char *)f.got, "CONNECT example.com:2333 HTTP/1.1\r\nHost: example.com:2333\r\n"
		  "Proxy-Authorization: Basic dXNlcjpwQHNz\r\n\r\n");

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.0 200 OK\n\n");	/* bare LF lines, HTTP/1.0 */
	rc = negotiate(&f, "http://", "::1", 22, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK_STR((char *)f.got, "CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\n\r\n");

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
	rc = negotiate(&f, "http://", "example.com", 2333, err, sizeof err);
	snprintf(want, sizeof want, "proxy 127.0.0.1:%u refused CONNECT: HTTP 403 Forbidden",
		 f.port);
	CHECK(rc == ST_ERROR);
	CHECK_STR(err, want);

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
	rc = negotiate(&f, "http://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "HTTP 407 Proxy Authentication Required") &&
	       strstr(err, "wants credentials"), "%s", err);

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
	rc = negotiate(&f, "http://a:b@", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "check the user and password"), "%s", err);

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "SSH-2.0-OpenSSH\r\n\r\n");
	rc = negotiate(&f, "http://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "did not answer CONNECT in HTTP"), "%s", err);

	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, "HTTP/1.1 200 OK\r\nX: y\r\n\r\n");
	f.close_after_partial = true;
	rc = negotiate(&f, "http://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "closed the connection during the negotiation"),
	       "%s", err);
}

/* A reply header without an end is refused at its bound. */
static void test_http_oversized(void)
{
	static char big[9100];
	struct fake f;
	char err[512];
	int rc;

	memset(big, 'x', sizeof big - 1);
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	memset(&f, 0, sizeof f);
	HTTP_REPLY(f, big);
	split_limit = 50;
	rc = negotiate(&f, "http://", "example.com", 2333, err, sizeof err);
	split_limit = (size_t)-1;
	CHECKF(rc == ST_ERROR && strstr(err, "larger than"), "%s", err);
}

static void test_socks(void)
{
	static const uint8_t req_name[] = "\x05\x01\x00\x03\x0b" "example.com" "\x09\x1d";
	static const uint8_t req_v4[] = "\x05\x01\x00\x01\x0a\x00\x00\x07\x00\x16";
	static const uint8_t req_v6[] = "\x05\x01\x00\x04\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07"
					"\x01\xbb";
	struct fake f;
	char err[512];
	int rc;

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.atyp = 1;
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(f.greeting_len == 3 && memcmp(f.greeting, "\x05\x01\x00", 3) == 0);
	CHECK(f.got_len == sizeof req_name - 1 && memcmp(f.got, req_name, f.got_len) == 0);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.method = 2;
	f.atyp = 3;	/* a reply with a domain name: its length decides */
	rc = negotiate(&f, "socks5://user:p%40ss@", "example.com", 2333, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(f.greeting_len == 4 && memcmp(f.greeting, "\x05\x02\x00\x02", 4) == 0);
	CHECK(f.auth_len == 11 && memcmp(f.auth, "\x01\x04user\x04p@ss", 11) == 0);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.atyp = 4;
	rc = negotiate(&f, "socks5://", "10.0.0.7", 22, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(f.got_len == 10 && memcmp(f.got, req_v4, 10) == 0);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.atyp = 1;
	rc = negotiate(&f, "socks5://", "2001:db8::7", 443, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(f.got_len == 22 && memcmp(f.got, req_v6, 22) == 0);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.method = 2;
	f.auth_status = 1;
	rc = negotiate(&f, "socks5://user:bad@", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "rejected the user and password"), "%s", err);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.method = 0xff;
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "wants a user and password"), "%s", err);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.rep = 5;
	f.atyp = 1;
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "could not connect to example.com:2333: connection "
					"refused by destination host"), "%s", err);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.rep = 2;
	f.atyp = 1;
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "connection not allowed by ruleset"), "%s", err);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.raw_method = true;
	f.reply = "HT";
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "did not answer in SOCKS5"), "%s", err);

	memset(&f, 0, sizeof f);
	f.socks = true;
	f.atyp = 1;
	f.close_after_partial = true;
	rc = negotiate(&f, "socks5://", "example.com", 2333, err, sizeof err);
	CHECKF(rc == ST_ERROR && strstr(err, "closed the connection"), "%s", err);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_urls();
	test_http();
	test_http_oversized();
	test_socks();
	return check_report("test_proxy");
}
