/* A TLS-terminating relay made with GnuTLS, for test_tls_interop.py: a TLS
 * stack that is not OpenSSL between rathole's client and rathole's server.
 *
 *   gnutls_relay LISTEN_PORT UPSTREAM_PORT CERT KEY CA NAME KEYUPDATE_EVERY
 *
 * Each connection accepted on 127.0.0.1:LISTEN_PORT is a TLS 1.3 server
 * session (CERT, KEY; session tickets on, so the client may resume); the
 * relay then opens a TLS 1.3 client session to 127.0.0.1:UPSTREAM_PORT
 * (checked against CA for NAME; resuming with the last ticket the upstream
 * gave) and moves the plaintext both ways. Every KEYUPDATE_EVERY bytes sent
 * on a session it sends a KeyUpdate that asks for the peer's, at most one
 * per KU_GAP_MS: GnuTLS refuses more than 8 KeyUpdates a second from its
 * peer, and a peer may answer each request with one. When a
 * connection ends it prints one line:
 *   conn N down_resumed R up_resumed R ku_sent_down K ku_sent_up K
 *   ku_recv_down K ku_recv_up K bytes_down B bytes_up B end WHY
 * (down: towards the rathole client; ku_recv: the peer's KeyUpdates).
 * Test code only: every wait is bounded, and it stops when killed. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#define PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define IDLE_LIMIT_MS 60000
#define KU_GAP_MS 150

static gnutls_certificate_credentials_t server_cred, client_cred;
static gnutls_datum_t ticket_key;
static const char *name;
static int upstream_port;
static uint64_t ku_every;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static gnutls_datum_t saved_session;	/* the upstream's last ticket */
static int next_id;

struct side {
	gnutls_session_t s;
	int fd;
	unsigned ku_recv;
};

struct dir {
	struct side *src, *dst;
	char buf[16384];
	size_t len, off;
	uint64_t bytes, since_ku, last_ku_ms;
	unsigned ku_sent;
	bool eof, shut;
};

static int count_key_update(gnutls_session_t s, unsigned htype, unsigned when,
			    unsigned incoming, const gnutls_datum_t *msg)
{
	struct side *side = gnutls_session_get_ptr(s);

	(void)when;
	(void)msg;
	if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE && incoming)
		side->ku_recv++;
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void set_blocking(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

static int dial(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(upstream_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void keep_ticket(gnutls_session_t s)
{
	gnutls_datum_t d;

	if (!(gnutls_session_get_flags(s) & GNUTLS_SFLAGS_SESSION_TICKET) ||
	    gnutls_session_get_data2(s, &d) < 0)
		return;
	pthread_mutex_lock(&lock);
	gnutls_free(saved_session.data);
	saved_session = d;
	pthread_mutex_unlock(&lock);
}

/* One step of a direction: true when something moved. */
static bool step(struct dir *d, const char **why)
{
	bool moved = false;
	ssize_t r;

	if (!d->eof && d->len == 0) {
		r = gnutls_record_recv(d->src->s, d->buf, sizeof d->buf);
		if (r > 0) {
			d->len = (size_t)r;
			d->off = 0;
			moved = true;
		} else if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION) {
			d->eof = true;
			moved = true;
		} else if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
			*why = gnutls_strerror((int)r);
			return false;
		}
	}
	if (d->len && d->since_ku >= ku_every && now_ms() - d->last_ku_ms >= KU_GAP_MS) {
		set_blocking(d->dst->fd, true);
		if (gnutls_session_key_update(d->dst->s, GNUTLS_KU_PEER) == 0)
			d->ku_sent++;
		set_blocking(d->dst->fd, false);
		d->since_ku = 0;
		d->last_ku_ms = now_ms();
	}
	if (d->len) {
		r = gnutls_record_send(d->dst->s, d->buf + d->off, d->len - d->off);
		if (r > 0) {
			d->off += (size_t)r;
			d->bytes += (uint64_t)r;
			d->since_ku += (uint64_t)r;
			if (d->off == d->len)
				d->len = 0;
			moved = true;
		} else if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
			*why = gnutls_strerror((int)r);
			return false;
		}
	}
	if (d->eof && d->len == 0 && !d->shut) {
		set_blocking(d->dst->fd, true);
		gnutls_bye(d->dst->s, GNUTLS_SHUT_WR);
		set_blocking(d->dst->fd, false);
		shutdown(d->dst->fd, SHUT_WR);
		d->shut = true;
		moved = true;
	}
	return moved;
}

static const char *pump(struct side *down, struct side *up, struct dir *to_up, struct dir *to_down)
{
	struct dir *dirs[2] = { to_up, to_down };
	const char *why = NULL;
	int idle_ms = 0;

	set_blocking(down->fd, false);
	set_blocking(up->fd, false);
	while (!(to_up->shut && to_down->shut)) {
		struct pollfd p[4];
		bool moved = false, pending = false;
		int n = 0;

		for (int i = 0; i < 2; i++) {
			moved |= step(dirs[i], &why);
			if (why)
				return why;
		}
		keep_ticket(up->s);
		if (moved) {
			idle_ms = 0;
			continue;
		}
		for (int i = 0; i < 2; i++) {
			struct dir *d = dirs[i];

			if (!d->eof && d->len == 0) {
				if (gnutls_record_check_pending(d->src->s))
					pending = true;
				p[n++] = (struct pollfd){ .fd = d->src->fd, .events = POLLIN };
			}
			if (d->len)
				p[n++] = (struct pollfd){ .fd = d->dst->fd, .events = POLLOUT };
		}
		if (pending)
			continue;
		if (poll(p, (nfds_t)n, 200) == 0 && (idle_ms += 200) >= IDLE_LIMIT_MS)
			return "idle";
	}
	return "closed";
}

static int new_session(struct side *side, unsigned flags)
{
	if (gnutls_init(&side->s, flags) < 0 ||
	    gnutls_priority_set_direct(side->s, PRIORITY, NULL) < 0)
		return -1;
	gnutls_session_set_ptr(side->s, side);
	gnutls_transport_set_int(side->s, side->fd);
	gnutls_handshake_set_timeout(side->s, 10000);
	gnutls_handshake_set_hook_function(side->s, GNUTLS_HANDSHAKE_KEY_UPDATE,
					   GNUTLS_HOOK_POST, count_key_update);
	return 0;
}

static int handshake(gnutls_session_t s)
{
	int rc;

	do
		rc = gnutls_handshake(s);
	while (rc < 0 && !gnutls_error_is_fatal(rc));
	return rc;
}

static void *connection(void *arg)
{
	struct side down = { .fd = (int)(intptr_t)arg }, up = { .fd = -1 };
	struct dir *to_up = calloc(1, sizeof *to_up), *to_down = calloc(1, sizeof *to_down);
	const char *why = "setup";
	int id, down_resumed = 0, up_resumed = 0;

	pthread_mutex_lock(&lock);
	id = ++next_id;
	pthread_mutex_unlock(&lock);
	if (!to_up || !to_down || new_session(&down, GNUTLS_SERVER) < 0)
		goto out;
	gnutls_credentials_set(down.s, GNUTLS_CRD_CERTIFICATE, server_cred);
	gnutls_session_ticket_enable_server(down.s, &ticket_key);
	why = "down handshake";
	if (handshake(down.s) < 0)
		goto out;
	down_resumed = gnutls_session_is_resumed(down.s);
	why = "upstream connect";
	up.fd = dial();
	if (up.fd < 0 || new_session(&up, GNUTLS_CLIENT) < 0)
		goto out;
	gnutls_credentials_set(up.s, GNUTLS_CRD_CERTIFICATE, client_cred);
	gnutls_server_name_set(up.s, GNUTLS_NAME_DNS, name, strlen(name));
	gnutls_session_set_verify_cert(up.s, name, 0);
	pthread_mutex_lock(&lock);
	if (saved_session.data)
		gnutls_session_set_data(up.s, saved_session.data, saved_session.size);
	pthread_mutex_unlock(&lock);
	why = "up handshake";
	if (handshake(up.s) < 0)
		goto out;
	up_resumed = gnutls_session_is_resumed(up.s);
	to_up->src = &down;
	to_up->dst = &up;
	to_down->src = &up;
	to_down->dst = &down;
	why = pump(&down, &up, to_up, to_down);
out:
	printf("conn %d down_resumed %d up_resumed %d ku_sent_down %u ku_sent_up %u "
	       "ku_recv_down %u ku_recv_up %u bytes_down %llu bytes_up %llu end %s\n", id,
	       down_resumed, up_resumed, to_down ? to_down->ku_sent : 0,
	       to_up ? to_up->ku_sent : 0, down.ku_recv, up.ku_recv,
	       to_down ? (unsigned long long)to_down->bytes : 0,
	       to_up ? (unsigned long long)to_up->bytes : 0, why);
	fflush(stdout);
	if (down.s)
		gnutls_deinit(down.s);
	if (up.s)
		gnutls_deinit(up.s);
	close(down.fd);
	if (up.fd >= 0)
		close(up.fd);
	free(to_up);
	free(to_down);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int l, one = 1;

	if (argc != 8) {
		fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT CERT KEY CA NAME "
			"KEYUPDATE_EVERY\n", argv[0]);
		return 2;
	}
	upstream_port = atoi(argv[2]);
	name = argv[6];
	ku_every = strtoull(argv[7], NULL, 10);
	if (gnutls_global_init() < 0 ||
	    gnutls_certificate_allocate_credentials(&server_cred) < 0 ||
	    gnutls_certificate_set_x509_key_file(server_cred, argv[3], argv[4],
						 GNUTLS_X509_FMT_PEM) < 0 ||
	    gnutls_certificate_allocate_credentials(&client_cred) < 0 ||
	    gnutls_certificate_set_x509_trust_file(client_cred, argv[5], GNUTLS_X509_FMT_PEM) < 1 ||
	    gnutls_session_ticket_key_generate(&ticket_key) < 0) {
		fprintf(stderr, "gnutls_relay: cannot set up GnuTLS\n");
		return 1;
	}
	a.sin_port = htons(atoi(argv[1]));
	l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 64) < 0) {
		perror("gnutls_relay: listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int fd = accept(l, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, connection, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}
