/* The tls transport over loopback TCP pairs, with a PKI made at run time. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "streampair.h"
#include "transport.h"

static const char *dir;
static char ca_pem[256], ca2_pem[256];

static const char *file(const char *name)
{
	static char buf[4][256];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
	return buf[i];
}

static struct transport *server_tls(struct transport_config *cfg, const char *p12,
				    const char *pass, char *err, size_t errlen)
{
	sp_config(cfg, TRANSPORT_TLS);
	cfg->has_tls = true;
	cfg->tls.pkcs12 = (char *)p12;
	cfg->tls.pkcs12_password = (char *)pass;
	return transport_new(cfg, true, NULL, err, errlen);
}

static struct transport *client_tls(struct transport_config *cfg, const char *root,
				    const char *hostname, const char *remote, char *err,
				    size_t errlen)
{
	sp_config(cfg, TRANSPORT_TLS);
	cfg->has_tls = true;
	cfg->tls.trusted_root = (char *)root;
	cfg->tls.hostname = (char *)hostname;
	return transport_new(cfg, false, remote, err, errlen);
}

struct pair {
	struct transport_config ccfg, scfg;
	struct transport *ct, *st;
	struct stream *c, *s;
	int rc_c, rc_s;
};

/* Builds both transports and streams and runs the handshakes. */
static int open_pair(struct pair *p, const char *p12, const char *root, const char *hostname,
		     const char *remote)
{
	char err[512];
	int cfd, sfd;

	memset(p, 0, sizeof *p);
	p->st = server_tls(&p->scfg, p12, "secret", err, sizeof err);
	CHECKF(p->st, "server: %s", err);
	p->ct = client_tls(&p->ccfg, root, hostname, remote, err, sizeof err);
	CHECKF(p->ct, "client: %s", err);
	if (!p->st || !p->ct || sp_tcp_pair(&cfd, &sfd) < 0)
		return -1;
	p->c = transport_wrap(p->ct, cfd, false);
	p->s = transport_wrap(p->st, sfd, true);
	if (!p->c || !p->s)
		return -1;
	sp_handshake(p->c, p->s, 5000, &p->rc_c, &p->rc_s);
	return 0;
}

static void close_pair(struct pair *p)
{
	stream_free(p->c);
	stream_free(p->s);
	transport_free(p->ct);
	transport_free(p->st);
}

static void test_init_errors(void)
{
	struct transport_config cfg;
	struct transport *t;
	char err[512];

	t = server_tls(&cfg, file("missing.p12"), "secret", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "cannot read the pkcs12 file") && strstr(err, "missing.p12") &&
	       strstr(err, "No such file"), "%s", err);

	t = server_tls(&cfg, file("good.p12"), "wrong", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "pkcs12_password does not decrypt") && strstr(err, "good.p12"),
	       "%s", err);

	t = server_tls(&cfg, file("garbage.p12"), "secret", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "is not a PKCS#12 archive"), "%s", err);

	t = server_tls(&cfg, dir, "secret", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "is a directory"), "%s", err);

	t = server_tls(&cfg, file("nokey.p12"), "secret", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "holds no private key"), "%s", err);

	t = server_tls(&cfg, NULL, NULL, err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "pkcs12"), "%s", err);

	t = client_tls(&cfg, file("missing.pem"), NULL, "localhost:1", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "trusted_root") && strstr(err, "No such file"), "%s", err);

	t = client_tls(&cfg, file("good.p12"), NULL, "localhost:1", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "holds no PEM certificate"), "%s", err);

	t = client_tls(&cfg, ca_pem, NULL, "no-port", err, sizeof err);
	CHECK(!t);
	CHECKF(strstr(err, "remote_addr"), "%s", err);

	t = client_tls(&cfg, NULL, NULL, "localhost:1", err, sizeof err);
	CHECKF(t, "system store: %s", err);
	transport_free(t);
}

/* In a child (the provider must not be loaded yet in this process): with no
 * module directory, a legacy archive gets the clear message. */
static void test_legacy_unavailable(void)
{
	int status = -1;
	pid_t pid = fork();

	if (pid == 0) {
		struct transport_config cfg;
		char err[512] = "";
		struct transport *t;

		setenv("OPENSSL_MODULES", "/nonexistent-ossl-modules", 1);
		t = server_tls(&cfg, file("legacy.p12"), "secret", err, sizeof err);
		if (t || !strstr(err, "legacy provider is not available")) {
			fprintf(stderr, "legacy without provider: %s\n", t ? "loaded" : err);
			_exit(1);
		}
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
}

static void test_legacy_ok(void)
{
	struct transport_config cfg;
	char err[512];
	struct transport *t = server_tls(&cfg, file("legacy.p12"), "secret", err, sizeof err);

	CHECKF(t, "legacy: %s", err);
	transport_free(t);
}

static void test_expired_warning(void)
{
	struct transport_config cfg;
	char err[512];
	struct transport *t;
	const char *log;

	sp_capture_begin();
	t = server_tls(&cfg, file("expired.p12"), "secret", err, sizeof err);
	log = sp_capture_end();
	CHECKF(t, "expired still loads: %s", err);
	CHECKF(strstr(log, "expired on") && strstr(log, "GMT"), "log: %s", log);
	transport_free(t);
}

static void test_roundtrip(const char *remote, const char *what)
{
	struct pair p;

	if (open_pair(&p, file("good.p12"), ca_pem, NULL, remote) == 0) {
		CHECKF(p.rc_c == 0, "%s client: %s", what, p.c->err);
		CHECKF(p.rc_s == 0, "%s server: %s", what, p.s->err);
		CHECK(!p.c->plain && p.c->max_chunk == 64 * 1024 && p.c->headroom == 0);
		if (p.rc_c == 0 && p.rc_s == 0)
			CHECKF(sp_exchange(p.c, p.s, 1 << 20, 20000) == 0, "%s: exchange", what);
	}
	close_pair(&p);
}

/* Send buffers far smaller than the records of one write: the records
 * collected for one send go out over many calls (ST_AGAIN in between), the
 * caller offers the same bytes again, and nothing is lost or repeated.
 * (Receive buffers stay as they are: shrunk after the handshake, below
 * the window already offered, TCP would drop and retransmit.) */
static void test_roundtrip_small_buffers(void)
{
	int small = 4096;
	struct pair p;

	if (open_pair(&p, file("good.p12"), ca_pem, NULL, "localhost:2333") == 0) {
		CHECKF(p.rc_c == 0 && p.rc_s == 0, "handshake: %s / %s", p.c->err, p.s->err);
		setsockopt(p.c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		setsockopt(p.s->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		if (p.rc_c == 0 && p.rc_s == 0)
			CHECK(sp_exchange(p.c, p.s, 4 << 20, 30000) == 0);
	}
	close_pair(&p);
}

static void test_peer_refused(const char *p12, const char *root, const char *hostname,
			      const char *expect1, const char *expect2)
{
	struct pair p;

	if (open_pair(&p, p12, root, hostname, "localhost:2333") == 0) {
		CHECKF(p.rc_c == ST_ERROR, "client rc %d", p.rc_c);
		CHECKF(strstr(p.c->err, expect1) && strstr(p.c->err, expect2), "client: %s",
		       p.c->err);
		CHECKF(p.rc_s == ST_ERROR, "server rc %d", p.rc_s);
		CHECKF(strstr(p.s->err, "TLS handshake failed"), "server: %s", p.s->err);
	}
	close_pair(&p);
}

static void test_hostname_override(void)
{
	struct pair p;

	if (open_pair(&p, file("other.p12"), ca_pem, "other.example", "127.0.0.1:2333") == 0) {
		CHECKF(p.rc_c == 0, "client: %s", p.c->err);
		CHECKF(p.rc_s == 0, "server: %s", p.s->err);
	}
	close_pair(&p);
}

/* A client that does not speak TLS gets a hint, not OpenSSL jargon alone. */
static void test_plain_peer(void)
{
	struct transport_config cfg;
	struct transport *st;
	struct stream *s = NULL;
	char err[512];
	int cfd, sfd, rc = ST_AGAIN, i;

	st = server_tls(&cfg, file("good.p12"), "secret", err, sizeof err);
	if (!st || sp_tcp_pair(&cfd, &sfd) < 0) {
		CHECK(0);
		transport_free(st);
		return;
	}
	s = transport_wrap(st, sfd, true);
	CHECK(send(cfd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 0) == 27);
	for (i = 0; i < 100 && rc == ST_AGAIN; i++) {
		sp_wait(sfd, POLLIN, 50);
		rc = stream_handshake(s);
	}
	CHECK(rc == ST_ERROR);
	CHECKF(strstr(s->err, "does the peer speak TLS"), "%s", s->err);
	stream_free(s);
	close(cfd);
	transport_free(st);
}

/* The peer's TCP EOF without close_notify ends the stream (like the
 * reference), it is not an error. */
static void test_eof_without_close_notify(void)
{
	struct pair p;
	const uint8_t *d;
	ssize_t n = ST_AGAIN;
	int i;

	if (open_pair(&p, file("good.p12"), ca_pem, NULL, "localhost:1") == 0 && p.rc_c == 0 &&
	    p.rc_s == 0) {
		CHECK(stream_send(p.c, "hello", 5) == 0);
		shutdown(p.c->fd, SHUT_WR);
		for (i = 0; i < 100 && n == ST_AGAIN; i++) {
			sp_wait(p.s->fd, POLLIN, 50);
			n = stream_peek(p.s, &d);
			if (n == 5) {
				CHECK(memcmp(d, "hello", 5) == 0);
				stream_consume(p.s, 5);
				n = ST_AGAIN;
			}
		}
		CHECKF(n == 0, "n = %zd: %s", n, p.s->err);
	} else {
		CHECK(0);
	}
	close_pair(&p);
}

int main(void)
{
	load_openssl();
	signal(SIGPIPE, SIG_IGN);
	log_level = LOG_WARN;
	dir = sp_tmpdir();
	if (!dir || sp_make_pki(dir) < 0) {
		fprintf(stderr, "cannot make the test PKI with the openssl command\n");
		sp_rmtree(dir);
		return 1;
	}
	snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", dir);
	snprintf(ca2_pem, sizeof ca2_pem, "%s/ca2.pem", dir);

	test_legacy_unavailable();
	test_init_errors();
	test_legacy_ok();
	test_expired_warning();
	test_roundtrip("localhost:2333", "name from remote_addr");
	test_roundtrip("127.0.0.1:2333", "IP literal");
	test_roundtrip_small_buffers();
	test_peer_refused(file("good.p12"), ca2_pem, NULL, "not trusted",
			  "self-signed certificate in certificate chain");
	test_peer_refused(file("good.p12"), NULL, NULL, "not trusted", "trusted_root");
	test_peer_refused(file("other.p12"), ca_pem, NULL, "not valid for \"localhost\"",
			  "hostname mismatch");
	test_peer_refused(file("expired.p12"), ca_pem, NULL, "certificate has expired", "renew");
	test_hostname_override();
	test_plain_peer();
	test_eof_without_close_notify();

	sp_rmtree(dir);
	return check_report("test_tls");
}
