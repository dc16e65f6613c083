/* The tls transport and the TLS sessions it shares with websocket-over-TLS.
 *
 * OpenSSL runs the handshake and drives the socket itself (a socket BIO on
 * the stream's fd for reading, wbio_write() for writing), so the
 * non-blocking states map directly: SSL_ERROR_WANT_READ/WRITE become
 * ST_AGAIN with s->want = EPOLLIN/EPOLLOUT. After a TLS 1.3 handshake the
 * records are ours (tls13.h) and the SSL object is freed; TLS 1.2 sessions
 * stay with OpenSSL to the end. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/provider.h>
#endif

#include "log.h"
#include "tls13.h"

#define PKCS12_FILE_MAX (1024 * 1024)	/* far above any real identity */
#define TLS_READ_AHEAD (64 * 1024 + 512)	/* 4 full records with their overhead */
#define TLS_CHUNK (64 * 1024)		/* plaintext moved per read or write: 4 records */
#define TLS_WRITE_BUF (TLS_CHUNK + 4 * 256)	/* the records of TLS_CHUNK */
/* Plaintext of TLS_CHUNK's records opened straight into the stream's
 * buffer: each record needs room for its content type too. */
#define TLS_FILL_CAP (TLS_CHUNK + 4 * (TLS13_OVERHEAD - TLS13_HEADER))
#define SMALL_WRITE 4096	/* sealed on the stack and sent at once */
/* Client: session tickets kept for the next connections. One is used per
 * connection and each handshake brings one (server: num_tickets), so the
 * stock settles at the number of handshakes under way at once. */
#define TICKETS_MAX 64

bool tls_records_by_openssl;
uint64_t tls_resume_for_ms = 3600 * 1000;

struct ticket {
	SSL_SESSION *session;
	uint64_t origin;	/* when the full handshake it descends from was */
};

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	BIO_METHOD *write_method;	/* the sessions' write side (see wbio_write) */
	bool server;
	bool records_by_openssl;	/* record_layer = "openssl": never take them over */
	bool name_is_ip;	/* client: verify an IP address, send no SNI */
	unsigned ntickets;
	struct ticket tickets[TICKETS_MAX];	/* client: the newest last */
	char name[NET_HOST_MAX];	/* client: the name to verify */
};

/* ---- OpenSSL errors ---- */

/* The reason of the most recent queued OpenSSL error, then clears the queue. */
static const char *openssl_reason(unsigned long *code)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (code)
		*code = e;
	ERR_clear_error();
	return r ? r : "unknown OpenSSL error";
}

/* ---- the legacy provider (RC2/3DES PKCS#12 archives under OpenSSL 3) ---- */

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static bool legacy_loaded;

/* Loads "legacy" beside "default" (loading any provider explicitly stops the
 * implicit load of "default", so both are named). Kept for the process. */
static int load_legacy_provider(void)
{
	static OSSL_PROVIDER *deflt, *legacy;

	if (legacy_loaded)
		return 0;
	if (!deflt)
		deflt = OSSL_PROVIDER_load(NULL, "default");
	legacy = OSSL_PROVIDER_load(NULL, "legacy");
	ERR_clear_error();
	if (!legacy)
		return -1;
	legacy_loaded = true;
	return 0;
}

/* Whether a failure came from an algorithm no loaded provider implements. */
static bool failed_for_unsupported_algorithm(void)
{
	unsigned long e;

	while ((e = ERR_get_error()) != 0) {
		int r = ERR_GET_REASON(e);

		if (r == ERR_R_UNSUPPORTED || r == EVP_R_UNSUPPORTED_ALGORITHM ||
		    r == EVP_R_UNSUPPORTED_CIPHER)
			return true;
	}
	return false;
}
#endif

/* ---- server identity: the PKCS#12 archive ---- */

static PKCS12 *read_pkcs12(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	PKCS12 *p12 = NULL;
	uint8_t *buf = NULL;
	const unsigned char *p;
	size_t n;

	if (!f) {
		snprintf(err, errlen, "cannot read the pkcs12 file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "pkcs12 %s is a directory: give the path of the .p12/.pfx file",
			 path);
		goto out;
	}
	buf = malloc(PKCS12_FILE_MAX);
	if (!buf) {
		snprintf(err, errlen, "out of memory reading %s", path);
		goto out;
	}
	n = fread(buf, 1, PKCS12_FILE_MAX, f);
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read the pkcs12 file %s: %s", path, strerror(errno));
		goto out;
	}
	p = buf;
	p12 = n < PKCS12_FILE_MAX ? d2i_PKCS12(NULL, &p, (long)n) : NULL;
	ERR_clear_error();
	if (!p12)
		snprintf(err, errlen, "%s is not a PKCS#12 archive: make one with "
			 "`openssl pkcs12 -export -inkey key.pem -in cert.pem -out identity.p12`",
			 path);
out:
	free(buf);
	fclose(f);
	return p12;
}

/* Checks the password against the archive's MAC, so that a wrong password
 * gets its own message. Returns the password to use (an empty password may
 * have been encoded as "no password"), or NULL with err. */
static const char *check_pkcs12_password(PKCS12 *p12, const char *path, const char *pass,
					 bool *ok, char *err, size_t errlen)
{
	*ok = true;
	if (!PKCS12_mac_present(p12))
		return pass;
	if (PKCS12_verify_mac(p12, pass, -1))
		return pass;
	if (!*pass && PKCS12_verify_mac(p12, NULL, 0))
		return NULL;
	ERR_clear_error();
	*ok = false;
	snprintf(err, errlen, "pkcs12_password does not decrypt %s: check "
		 "[server.transport.tls] pkcs12_password", path);
	return NULL;
}

static int parse_pkcs12(PKCS12 *p12, const char *path, const char *pass, EVP_PKEY **key,
			X509 **cert, STACK_OF(X509) **chain, char *err, size_t errlen)
{
	unsigned long last;

	if (PKCS12_parse(p12, pass, key, cert, chain))
		return 0;
	last = ERR_peek_last_error();
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	if (!legacy_loaded && failed_for_unsupported_algorithm()) {
		/* Older `openssl pkcs12 -export` and Windows encrypt with RC2/3DES,
		 * which OpenSSL 3 keeps in its legacy provider. */
		if (load_legacy_provider() < 0) {
			snprintf(err, errlen, "%s is encrypted with legacy algorithms (RC2/3DES) and "
				 "OpenSSL's legacy provider is not available: install it, or "
				 "re-export the archive with modern encryption "
				 "(openssl pkcs12 -export without -legacy)", path);
			return -1;
		}
		log_debug("tls: loaded OpenSSL's legacy provider for %s", path);
		if (PKCS12_parse(p12, pass, key, cert, chain))
			return 0;
		last = ERR_peek_last_error();
	}
#endif
	ERR_clear_error();
	snprintf(err, errlen, "cannot decode the pkcs12 file %s: %s", path,
		 last && ERR_reason_error_string(last) ? ERR_reason_error_string(last)
						       : "unknown OpenSSL error");
	return -1;
}

static void asn1_time_str(const ASN1_TIME *t, char *buf, size_t cap)
{
	BIO *b = BIO_new(BIO_s_mem());
	int n = 0;

	buf[0] = '\0';
	if (!b)
		return;
	if (ASN1_TIME_print(b, t))
		n = BIO_read(b, buf, (int)cap - 1);
	buf[n > 0 ? n : 0] = '\0';
	BIO_free(b);
}

/* An expired certificate still loads (the operator may be renewing it), but
 * every client will refuse it: say so at start. */
static void warn_if_not_current(X509 *cert, const char *path)
{
	char when[64];

	if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
		asn1_time_str(X509_get0_notAfter(cert), when, sizeof when);
		log_warn("tls: the certificate in %s expired on %s: clients will refuse it; "
			 "renew it", path, when);
	} else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
		asn1_time_str(X509_get0_notBefore(cert), when, sizeof when);
		log_warn("tls: the certificate in %s is not valid before %s: clients will "
			 "refuse it until then (check this machine's clock)", path, when);
	}
}

static int use_identity(SSL_CTX *ctx, const char *path, EVP_PKEY *key, X509 *cert,
			STACK_OF(X509) *chain, char *err, size_t errlen)
{
	int i;

	if (!key) {
		snprintf(err, errlen, "%s holds no private key: export it with the key "
			 "(openssl pkcs12 -export -inkey key.pem -in cert.pem)", path);
		return -1;
	}
	if (!cert) {
		snprintf(err, errlen, "%s holds no certificate: export it with the certificate "
			 "(openssl pkcs12 -export -inkey key.pem -in cert.pem)", path);
		return -1;
	}
	if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
		snprintf(err, errlen, "cannot use the identity in %s: %s", path,
			 openssl_reason(NULL));
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "the private key in %s does not match its certificate", path);
		return -1;
	}
	for (i = 0; chain && i < sk_X509_num(chain); i++) {
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
			snprintf(err, errlen, "cannot use the chain in %s: %s", path,
				 openssl_reason(NULL));
			return -1;
		}
	}
	warn_if_not_current(cert, path);
	return 0;
}

static int load_server_identity(SSL_CTX *ctx, const struct tls_config *cfg, char *err,
				size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	STACK_OF(X509) *chain = NULL;
	const char *pass;
	PKCS12 *p12;
	bool ok;
	int rc = -1;

	if (!cfg->pkcs12 || !cfg->pkcs12_password) {
		snprintf(err, errlen, "a tls server needs [server.transport.tls] pkcs12 and "
			 "pkcs12_password");
		return -1;
	}
	p12 = read_pkcs12(cfg->pkcs12, err, errlen);
	if (!p12)
		return -1;
	pass = check_pkcs12_password(p12, cfg->pkcs12, cfg->pkcs12_password, &ok, err, errlen);
	if (!ok)
		goto out;
	if (parse_pkcs12(p12, cfg->pkcs12, pass, &key, &cert, &chain, err, errlen) < 0)
		goto out;
	rc = use_identity(ctx, cfg->pkcs12, key, cert, chain, err, errlen);
out:
	EVP_PKEY_free(key);
	X509_free(cert);
	sk_X509_pop_free(chain, X509_free);
	PKCS12_free(p12);
	return rc;
}

/* ---- client trust ---- */

static int load_client_trust(SSL_CTX *ctx, const struct tls_config *cfg, char *err,
			     size_t errlen)
{
	FILE *f;

	if (!cfg->trusted_root) {
		if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			snprintf(err, errlen, "cannot load the system's trusted certificates: %s "
				 "(or set [client.transport.tls] trusted_root)", openssl_reason(NULL));
			return -1;
		}
		return 0;
	}
	/* Open it first so an unreadable file gets its errno, not a PEM error. */
	f = fopen(cfg->trusted_root, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read the trusted_root file %s: %s", cfg->trusted_root,
			 strerror(errno));
		return -1;
	}
	fclose(f);
	if (SSL_CTX_load_verify_locations(ctx, cfg->trusted_root, NULL) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "trusted_root %s holds no PEM certificate: give the CA "
			 "certificate (-----BEGIN CERTIFICATE-----) that signed the server's",
			 cfg->trusted_root);
		return -1;
	}
	return 0;
}

static int set_client_name(struct tls_ctx *c, const struct tls_config *cfg,
			   const char *remote_addr, char *err, size_t errlen)
{
	unsigned char ip[16];
	const char *why;
	unsigned port;

	if (cfg->hostname && *cfg->hostname) {
		if (strlen(cfg->hostname) >= sizeof c->name) {
			snprintf(err, errlen, "[client.transport.tls] hostname is too long");
			return -1;
		}
		strcpy(c->name, cfg->hostname);
	} else if (!remote_addr ||
		   net_split_hostport(remote_addr, c->name, sizeof c->name, &port, &why) < 0) {
		snprintf(err, errlen, "cannot take the TLS name from remote_addr \"%s\": %s "
			 "(or set [client.transport.tls] hostname)",
			 remote_addr ? remote_addr : "", remote_addr ? why : "not set");
		return -1;
	}
	c->name_is_ip = inet_pton(AF_INET, c->name, ip) == 1 ||
			inet_pton(AF_INET6, c->name, ip) == 1;
	return 0;
}

/* ---- contexts ---- */

/* OpenSSL reports each secret it derives as a key log line: the
 * application traffic secrets are what our record layer needs. */
static void keep_secret(const SSL *ssl, const char *line)
{
	struct tls_session *ts = SSL_get_ex_data(ssl, 0);

	if (ts && ts->want_rl && tls13_take_secret(&ts->rl, line) < 0)
		ts->rl_broken = true;
}

/* ---- session resumption ----
 *
 * A full handshake costs both ends about 1 ms of CPU each (the server's
 * RSA signature, the client's parsing and check of the certificate chain);
 * one resumed from a session ticket (RFC 8446, 2.2, with a fresh X25519
 * exchange: psk_dhe_ke) costs a third of that. Every data channel is a
 * handshake, so the client keeps the tickets the server issues and offers
 * one per new connection, as the reference's client (rust-openssl's
 * SslConnector) does. A chain of resumptions ends tls_resume_for_ms after
 * its full handshake: the certificate is checked again at least that often. */

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* OpenSSL's new-session callback (client): the ticket joins the stock. A
 * copy is kept because OpenSSL marks its own session unusable when the SSL
 * is freed without a shutdown, as it is once the records are ours. */
static int keep_ticket(SSL *ssl, SSL_SESSION *session)
{
	struct tls_session *ts = SSL_get_ex_data(ssl, 0);
	struct tls_ctx *c;
	SSL_SESSION *copy;

	if (!ts)
		return 0;
	ts->await_ticket = false;	/* it came: the records may be ours */
	c = ts->ctx;
	copy = SSL_SESSION_dup(session);
	if (!copy)
		return 0;
	if (c->ntickets == TICKETS_MAX) {	/* the oldest makes room */
		SSL_SESSION_free(c->tickets[0].session);
		memmove(c->tickets, c->tickets + 1, (TICKETS_MAX - 1) * sizeof c->tickets[0]);
		c->ntickets--;
	}
	c->tickets[c->ntickets].session = copy;
	c->tickets[c->ntickets].origin = SSL_session_reused(ssl) ? ts->origin : now_ms();
	c->ntickets++;
	return 0;
}

/* Client: offers the newest ticket still within its chain's time; each is
 * used once (RFC 8446, C.4). */
static int offer_ticket(struct tls_ctx *c, struct tls_session *ts, SSL *ssl)
{
	uint64_t now = now_ms();

	ts->origin = now;	/* unless a ticket is offered: a full handshake */
	while (c->ntickets) {
		struct ticket t = c->tickets[--c->ntickets];
		bool usable = now - t.origin < tls_resume_for_ms &&
			      SSL_SESSION_is_resumable(t.session);
		int rc = usable ? SSL_set_session(ssl, t.session) : 1;

		SSL_SESSION_free(t.session);	/* the SSL holds its own reference */
		if (rc != 1)
			return -1;
		if (usable) {
			ts->origin = t.origin;
			return 0;
		}
	}
	return 0;
}

static void drop_tickets(struct tls_ctx *c)
{
	while (c->ntickets)
		SSL_SESSION_free(c->tickets[--c->ntickets].session);
}

/* OpenSSL's message callback, while the records may still become ours:
 * counts the records sealed and opened under the application keys (those
 * after each side's Finished), where our sequence numbers must start. A
 * record read counts once OpenSSL has decrypted it (its inner content
 * type is reported), not when its header came: a header whose body has not
 * come yet is a record OpenSSL holds (rd_headers > rd_records), and the
 * takeover waits (openssl_holds_nothing). A record sealed counts at once
 * (its sequence number is spent); whether its bytes left is ossl_unsent.
 * A KeyUpdate read meanwhile would leave our keys behind: the records then
 * stay with OpenSSL. */
static void count_records(int write_p, int version, int content_type, const void *buf,
			  size_t len, SSL *ssl, void *arg)
{
	struct tls_session *ts = arg;
	const uint8_t *p = buf;

	(void)version;
	(void)ssl;
	if (content_type == SSL3_RT_HEADER) {
		if (write_p && ts->wr_app)
			ts->wr_records++;
		else if (!write_p && ts->rd_app)
			ts->rd_headers++;
	} else if (content_type == SSL3_RT_INNER_CONTENT_TYPE) {
		if (!write_p && ts->rd_app)
			ts->rd_records++;
	} else if (content_type == SSL3_RT_HANDSHAKE && len > 0) {
		if (p[0] == SSL3_MT_FINISHED) {
			if (write_p)
				ts->wr_app = true;
			else
				ts->rd_app = true;
		} else if (p[0] == SSL3_MT_KEY_UPDATE && !write_p) {
			ts->rl_broken = true;
		}
	}
}

static int setup_common(SSL_CTX *ctx, bool server)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
		return -1;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
			    (server ? SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA : 0));
	/* TLS 1.3: AES-128-GCM first (OpenSSL's default puts AES-256-GCM
	 * first). It is RFC 8446's mandatory suite and, with the 128-bit
	 * security of the X25519 key exchange, as strong in practice; 10 AES
	 * rounds instead of 14 cost 2-14 % less CPU per GB of bulk TLS
	 * (docs/benchmarks.md, change 18). ChaCha20 next, and first for a
	 * client that asks for it first (one without AES instructions). */
	if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
				     "TLS_AES_256_GCM_SHA384") != 1)
		return -1;
	/* The relay resends the rest of a partial write from wherever its buffer
	 * now is; one record at a time keeps writes bounded. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* An idle channel keeps no record buffers (measured: heap in use per
	 * idle TLS connection 48 -> 15 KB on the server, 57 -> 25 KB on the
	 * client; see docs/transports.md). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Read-ahead: one read() takes up to 64 KiB of records instead of two
	 * reads (header, body) per record; about 15 % less CPU per byte. Every
	 * reader of a stream reads until ST_AGAIN (or comes back through a
	 * deferred call), so records buffered here are never left unannounced
	 * by epoll. A session that will take its records over reads ahead only
	 * after the handshake (take_over_records). */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_AHEAD);
	SSL_CTX_set_keylog_callback(ctx, keep_secret);
	/* Resumption (see keep_ticket): the server's tickets are stateless, so
	 * it keeps no sessions; one ticket per handshake, since each resumed
	 * one uses one. The client keeps its tickets itself. */
	if (server) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
					       SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, keep_ticket);
	}
	return 0;
}

/* ---- the write side of a session ----
 *
 * OpenSSL hands its write BIO one record at a time, at most 16 KiB of
 * plaintext each. Sent one by one, every record costs a send and a wakeup
 * of the receiver: while tls_session_write() encrypts more than a record,
 * the records collect in ts->wbuf and leave in one send (bulk TLS 11-15 %
 * less CPU per byte, docs/benchmarks.md, change 11). Everything else (handshake, small
 * writes, alerts) is sent at once, without a copy. wbuf exists only while
 * it holds bytes, so an idle session keeps no buffer. */

/* Sends what wbuf holds: 0 when all is out (wbuf freed), -1 with errno. */
static int send_collected(struct tls_session *ts)
{
	while (ts->woff < ts->wlen) {
		ssize_t n = send(ts->fd, ts->wbuf + ts->woff, ts->wlen - ts->woff, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		ts->woff += (uint32_t)n;
	}
	free(ts->wbuf);
	ts->wbuf = NULL;
	ts->woff = ts->wlen = 0;
	return 0;
}

static int write_failed(BIO *b)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		BIO_set_flags(b, BIO_FLAGS_WRITE | BIO_FLAGS_SHOULD_RETRY);
	return -1;
}

static int wbio_take(struct tls_session *ts, BIO *b, const char *data, int len)
{
	ssize_t n;

	/* collected bytes go first; a full buffer makes room by sending */
	if (ts->wlen && (!ts->batching || ts->wlen + (size_t)len > TLS_WRITE_BUF) &&
	    send_collected(ts) < 0)
		return write_failed(b);
	if (ts->batching && (size_t)len <= TLS_WRITE_BUF) {
		if (!ts->wbuf && !(ts->wbuf = malloc(TLS_WRITE_BUF))) {
			errno = ENOMEM;
			return -1;
		}
		memcpy(ts->wbuf + ts->wlen, data, (size_t)len);
		ts->wlen += (uint32_t)len;
		return len;
	}
	n = send(ts->fd, data, (size_t)len, MSG_NOSIGNAL);
	return n >= 0 ? (int)n : write_failed(b);
}

/* OpenSSL writes a record's bytes and, when they are not all taken, the
 * rest again later: until a call takes all it offers, OpenSSL holds bytes
 * of a record that must not die with it (ossl_unsent). */
static int wbio_write(BIO *b, const char *data, int len)
{
	struct tls_session *ts = BIO_get_data(b);
	int n;

	BIO_clear_flags(b, BIO_FLAGS_RWS | BIO_FLAGS_SHOULD_RETRY);
	if (len <= 0)
		return 0;
	n = wbio_take(ts, b, data, len);
	ts->ossl_unsent = n != len;
	return n;
}

static long wbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_session *ts = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		BIO_clear_flags(b, BIO_FLAGS_RWS | BIO_FLAGS_SHOULD_RETRY);
		if (send_collected(ts) == 0)
			return 1;
		write_failed(b);
		return 0;
	case BIO_CTRL_WPENDING:
		return (long)(ts->wlen - ts->woff);
	default:
		return 0;
	}
}

static BIO_METHOD *new_write_method(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rathole tls");

	if (m && (BIO_meth_set_write(m, wbio_write) != 1 || BIO_meth_set_ctrl(m, wbio_ctrl) != 1)) {
		BIO_meth_free(m);
		m = NULL;
	}
	return m;
}

/* Sends the records collected by a write: 0 when all are out, ST_AGAIN
 * (s->want set), ST_ERROR. */
static int flush_records(struct tls_session *ts, struct stream *s)
{
	if (ts->wlen == 0 || send_collected(ts) == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		s->want = EPOLLOUT;
		return ST_AGAIN;
	}
	ts->fatal = true;
	return stream_set_error(s, "TLS write: %s", strerror(errno));
}

struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, bool server,
			    const char *remote_addr, char *err, size_t errlen)
{
	struct tls_ctx *c = calloc(1, sizeof *c);

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->server = server;
	c->records_by_openssl = cfg->record_layer == TLS_RECORDS_OPENSSL;
	c->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	c->write_method = new_write_method();
	if (!c->ssl_ctx || !c->write_method || setup_common(c->ssl_ctx, server) < 0) {
		snprintf(err, errlen, "cannot set up OpenSSL: %s", openssl_reason(NULL));
		goto fail;
	}
	if (server) {
		if (load_server_identity(c->ssl_ctx, cfg, err, errlen) < 0)
			goto fail;
	} else {
		if (load_client_trust(c->ssl_ctx, cfg, err, errlen) < 0 ||
		    set_client_name(c, cfg, remote_addr, err, errlen) < 0)
			goto fail;
		SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
	}
	return c;
fail:
	tls_ctx_free(c);
	return NULL;
}

void tls_ctx_free(struct tls_ctx *c)
{
	if (!c)
		return;
	drop_tickets(c);
	SSL_CTX_free(c->ssl_ctx);
	BIO_meth_free(c->write_method);
	free(c);
}

/* ---- sessions ---- */

/* Reads from the socket (OpenSSL reads ahead by itself); writes through
 * wbio_write(). */
static int set_bios(struct tls_session *ts, SSL *ssl)
{
	BIO *rb = BIO_new_socket(ts->fd, BIO_NOCLOSE), *wb = BIO_new(ts->ctx->write_method);

	if (!rb || !wb) {
		BIO_free(rb);
		BIO_free(wb);
		return -1;
	}
	BIO_set_data(wb, ts);
	BIO_set_init(wb, 1);
	SSL_set_bio(ssl, rb, wb);
	return 0;
}

int tls_session_init(struct tls_session *ts, struct tls_ctx *c, struct stream *s)
{
	SSL *ssl;

	memset(ts, 0, sizeof *ts);
	ts->ctx = c;
	ts->fd = s->fd;
	ssl = SSL_new(c->ssl_ctx);
	if (!ssl || set_bios(ts, ssl) < 0)
		goto fail;
	ts->ssl = ssl;
	ts->want_rl = !tls_records_by_openssl && !c->records_by_openssl;
	if (SSL_set_ex_data(ssl, 0, ts) != 1)
		goto fail;
	if (ts->want_rl) {
		/* nothing beyond the handshake's last record may stay in OpenSSL */
		SSL_set_read_ahead(ssl, 0);
		SSL_set_msg_callback(ssl, count_records);
		SSL_set_msg_callback_arg(ssl, ts);
	}
	if (c->server) {
		SSL_set_accept_state(ssl);
		return 0;
	}
	SSL_set_connect_state(ssl);
	if (offer_ticket(c, ts, ssl) < 0)
		goto fail;
	if (c->name_is_ip) {
		/* RFC 6066: SNI carries host names only; an IP is checked against
		 * the certificate's IP addresses. */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->name) != 1)
			goto fail;
	} else {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, c->name) != 1 ||
		    SSL_set_tlsext_host_name(ssl, c->name) != 1)
			goto fail;
	}
	return 0;
fail:
	SSL_free(ssl);
	ts->ssl = NULL;
	return stream_set_error(s, "cannot start a TLS session: %s", openssl_reason(NULL));
}

void tls_session_free(struct tls_session *ts)
{
	SSL_free(ts->ssl);
	ts->ssl = NULL;
	tls13_free(ts->rl);
	ts->rl = NULL;
	free(ts->wbuf);
	ts->wbuf = NULL;
}

/* The client refused the server's certificate: one message per cause, with
 * OpenSSL's verify error and what to change. */
static int certificate_error(struct tls_session *ts, struct stream *s, long v)
{
	const char *why = X509_verify_cert_error_string(v);

	ERR_clear_error();
	switch (v) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return stream_set_error(s, "TLS: the server's certificate is not valid for \"%s\" "
					"(%s): set [client.transport.tls] hostname to a name it holds",
					ts->ctx->name, why);
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return stream_set_error(s, "TLS: the server's certificate is rejected (%s): renew "
					"it, or check the clocks", why);
	default:
		return stream_set_error(s, "TLS: the server's certificate is not trusted (%s): "
					"set [client.transport.tls] trusted_root to the CA that signed it",
					why);
	}
}

/* A failed TLS operation: an OpenSSL error (fatal for the session). */
static int protocol_error(struct tls_session *ts, struct stream *s, const char *op)
{
	unsigned long code;
	const char *why;

	ts->fatal = true;
	if (!ts->done && !ts->ctx->server) {
		long v = SSL_get_verify_result(ts->ssl);

		if (v != X509_V_OK)
			return certificate_error(ts, s, v);
	}
	why = openssl_reason(&code);
	switch (ERR_GET_REASON(code)) {
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
		return stream_set_error(s, "TLS %s failed: %s (does the peer speak TLS? check "
					"both transport types)", op, why);
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
		return stream_set_error(s, "TLS %s failed: the %s refused our certificate (%s)",
					op, ts->ctx->server ? "client" : "server", why);
	default:
		return stream_set_error(s, "TLS %s failed: %s", op, why);
	}
}

/* Maps the result of an SSL_* call that did not succeed (SSL_get_error).
 * Returns ST_AGAIN, ST_ERROR, or 0 for the end of the peer's stream. */
static int ssl_failure(struct tls_session *ts, struct stream *s, int rc, int saved_errno,
		       const char *op)
{
	switch (SSL_get_error(ts->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		s->want = EPOLLIN;
		return ST_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		s->want = EPOLLOUT;
		return ST_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		if (!ts->done)
			return stream_set_error(s, "TLS %s: the peer closed the session", op);
		return 0;
	case SSL_ERROR_SYSCALL:
		ts->fatal = true;
		ERR_clear_error();
		if (saved_errno == 0 || saved_errno == EAGAIN) {
			if (!ts->done)
				return stream_set_error(s, "the connection closed during the TLS "
							"handshake (does the peer speak TLS?)");
			return 0;
		}
		return stream_set_error(s, "TLS %s: %s", op, strerror(saved_errno));
	default:
		return protocol_error(ts, s, op);
	}
}

static bool records_ours(const struct tls_session *ts)
{
	return ts->rl && !ts->ssl;
}

/* Whether OpenSSL holds nothing that would die with its session: no
 * record read in part (a header without all its body; with read-ahead off
 * it reads no further than the record it is on), no plaintext not yet
 * taken, no post-handshake message in part (spread over records: OpenSSL
 * is then back in its handshake state), and no record sealed whose bytes
 * the socket has not all taken. */
static bool openssl_holds_nothing(const struct tls_session *ts)
{
	return ts->rd_headers == ts->rd_records && !SSL_has_pending(ts->ssl) &&
	       !SSL_in_init(ts->ssl) && !ts->ossl_unsent;
}

/* After the handshake (client: after the first ticket, or data, has come):
 * a TLS 1.3 session with one of RFC 8446's ciphers goes on with our record
 * layer and frees OpenSSL's session (about 30 KiB per connection); any
 * other stays with OpenSSL, now reading ahead. While OpenSSL holds part of
 * a record, the takeover waits: the next read tries again. */
static int take_over_records(struct tls_session *ts, struct stream *s)
{
	uint16_t suite;
	char err[128];

	if (!ts->want_rl)
		return 0;
	suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ts->ssl));
	if (ts->rl && !ts->rl_broken && SSL_version(ts->ssl) == TLS1_3_VERSION &&
	    tls13_cipher_supported(suite)) {
		if (!openssl_holds_nothing(ts)) {
			log_debug("tls: OpenSSL holds part of a record: the records stay "
				  "with it for now");
			return 0;
		}
		if (tls13_start(ts->rl, suite, ts->ctx->server, ts->rd_records, ts->wr_records,
				err, sizeof err) < 0) {
			ts->fatal = true;
			return stream_set_error(s, "TLS: %s", err);
		}
		SSL_free(ts->ssl);
		ts->ssl = NULL;
		log_debug("tls: the records are ours from here on (%u opened, %u sealed by "
			  "OpenSSL)", ts->rd_records, ts->wr_records);
		return 0;
	}
	log_debug("tls: the records stay with OpenSSL");
	tls13_free(ts->rl);
	ts->rl = NULL;
	ts->want_rl = false;
	SSL_set_msg_callback(ts->ssl, NULL);
	SSL_set_read_ahead(ts->ssl, 1);
	return 0;
}

/* A TLS 1.3 client takes its records over only once OpenSSL has read the
 * server's first session ticket, which comes before any data (or the first
 * data, from a server that issues none). */
static bool awaits_ticket(const struct tls_session *ts)
{
	return ts->want_rl && !ts->ctx->server && SSL_version(ts->ssl) == TLS1_3_VERSION &&
	       ts->rl && !ts->rl_broken;
}

int tls_session_handshake(struct tls_session *ts, struct stream *s)
{
	int rc;

	if (ts->done)
		return 0;
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(ts->ssl);
	if (rc == 1) {
		ts->done = true;
		ts->resumed = SSL_session_reused(ts->ssl);
		log_debug("tls: %s %s%s", SSL_get_version(ts->ssl), SSL_get_cipher_name(ts->ssl),
			  ts->resumed ? ", resumed" : "");
		ts->await_ticket = awaits_ticket(ts);
		if (ts->await_ticket)
			return 0;
		return take_over_records(ts, s);
	}
	return ssl_failure(ts, s, rc, errno, "handshake");
}

/* After an SSL_read while the takeover waits (client: for the first
 * ticket; either side: for OpenSSL to let go of a record): whether to try
 * it now. The ticket (or data) has come and the read went well;
 * take_over_records() checks what OpenSSL still holds. */
static bool ready_to_take_over(struct tls_session *ts, int rc)
{
	if (!ts->want_rl || !ts->done || (ts->await_ticket && rc != 1))
		return false;
	return rc == 1 || SSL_get_error(ts->ssl, rc) == SSL_ERROR_WANT_READ;
}

static ssize_t session_read(struct tls_session *ts, struct stream *s, void *buf, size_t len)
{
	size_t n = 0;
	unsigned long code;
	int rc, saved_errno;

	if (ts->fatal)
		return 0;
	if (records_ours(ts)) {
		ssize_t got = tls13_read(ts->rl, s, buf, len);

		if (got == ST_ERROR)
			ts->fatal = true;
		return got;
	}
	ERR_clear_error();
	errno = 0;
	rc = SSL_read_ex(ts->ssl, buf, len, &n);
	saved_errno = errno;
	if (ready_to_take_over(ts, rc)) {
		if (take_over_records(ts, s) < 0)
			return ST_ERROR;
		if (rc != 1 && records_ours(ts))
			return session_read(ts, s, buf, len);
	}
	if (rc == 1)
		return (ssize_t)n;
	code = ERR_peek_last_error();
	if (SSL_get_error(ts->ssl, rc) == SSL_ERROR_SSL &&
	    ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		/* Like the reference: the stream simply ends. */
		log_debug("tls: the peer closed the connection without close_notify");
		ERR_clear_error();
		ts->fatal = true;
		return 0;
	}
	return ssl_failure(ts, s, rc, saved_errno, "read");
}

/* Whether the peer ended its stream with close_notify. */
static bool close_notify_received(const struct tls_session *ts)
{
	if (records_ours(ts))
		return tls13_close_notify_received(ts->rl);
	return ts->ssl && (SSL_get_shutdown(ts->ssl) & SSL_RECEIVED_SHUTDOWN);
}

/* The end of the peer's stream without close_notify (a bare TCP FIN) is
 * marked as a cut (s->cut): anyone on the path can forge it to truncate
 * the stream, and the relay resets the other side rather than pass it on
 * as a clean end. Every peer of ours, and the reference's, sends
 * close_notify before its FIN. */
ssize_t tls_session_read(struct tls_session *ts, struct stream *s, void *buf, size_t len)
{
	ssize_t n = session_read(ts, s, buf, len);

	if (n == 0)
		s->cut = !close_notify_received(ts);
	return n;
}

bool tls_session_pending(const struct tls_session *ts)
{
	if (records_ours(ts))
		return tls13_pending(ts->rl);
	return ts->ssl && SSL_has_pending(ts->ssl);
}

/* Sends n bytes of records; what the socket does not take waits in wbuf.
 * 0 when all are out, ST_AGAIN, ST_ERROR. */
static int send_records(struct tls_session *ts, struct stream *s, const uint8_t *p, size_t n)
{
	ssize_t sent = send(ts->fd, p, n, MSG_NOSIGNAL);

	if (sent == (ssize_t)n)
		return 0;
	if (sent < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			ts->fatal = true;
			return stream_set_error(s, "TLS write: %s", strerror(errno));
		}
		sent = 0;
	}
	ts->wbuf = malloc(n - (size_t)sent);
	if (!ts->wbuf) {
		ts->fatal = true;
		return stream_set_error(s, "TLS write: out of memory");
	}
	memcpy(ts->wbuf, p + sent, n - (size_t)sent);
	ts->woff = 0;
	ts->wlen = (uint32_t)(n - (size_t)sent);
	s->want = EPOLLOUT;
	return ST_AGAIN;
}

/* Our record layer: a small write is sealed on the stack, a large one
 * (up to TLS_CHUNK) into wbuf; all its records leave in one send. */
static ssize_t write_records(struct tls_session *ts, struct stream *s, const uint8_t *buf,
			     size_t len)
{
	uint8_t small[SMALL_WRITE + 2 * TLS13_OVERHEAD + 8];
	size_t taken = 0;
	ssize_t w;
	int rc;

	/* records of an earlier call that took no plaintext (a KeyUpdate
	 * alone) go first: wbuf is then free for this call's */
	if (ts->wlen && (rc = flush_records(ts, s)) < 0)
		return rc;
	if (len <= SMALL_WRITE) {
		w = tls13_seal(ts->rl, buf, len, small, sizeof small, &taken);
		rc = w < 0 ? ST_ERROR : send_records(ts, s, small, (size_t)w);
	} else {
		if (!ts->wbuf && !(ts->wbuf = malloc(TLS_WRITE_BUF))) {
			ts->fatal = true;
			return stream_set_error(s, "TLS write: out of memory");
		}
		w = tls13_seal(ts->rl, buf, len, ts->wbuf, TLS_WRITE_BUF, &taken);
		ts->woff = 0;
		ts->wlen = w < 0 ? 0 : (uint32_t)w;
		rc = w < 0 ? ST_ERROR : flush_records(ts, s);
	}
	if (w < 0) {
		ts->fatal = true;
		return stream_set_error(s, "TLS write: cannot seal a record (OpenSSL failed)");
	}
	if (rc == ST_AGAIN)
		ts->taken = (uint32_t)taken;
	return rc < 0 ? rc : (ssize_t)taken;
}

ssize_t tls_session_write(struct tls_session *ts, struct stream *s, const void *buf,
			  size_t len)
{
	size_t done = 0;
	int rc;

	if (ts->fatal)
		return stream_set_error(s, "TLS write: the session has failed");
	/* Plaintext is reported written only once its records are out of the
	 * buffer: until then the caller offers the same bytes again, as after
	 * any ST_AGAIN. */
	if (ts->taken) {
		rc = flush_records(ts, s);
		if (rc < 0)
			return rc;
		done = ts->taken;
		ts->taken = 0;
		return (ssize_t)done;
	}
	if (records_ours(ts))
		return write_records(ts, s, buf, len);
	/* With SSL_MODE_ENABLE_PARTIAL_WRITE each call writes one record:
	 * go on while the buffer takes them. A record refused with WANT_WRITE
	 * stays pending inside OpenSSL; the caller offers the same bytes
	 * again. */
	ts->batching = len > TLS_RECORD_MAX;
	for (;;) {
		size_t n = 0;

		ERR_clear_error();
		errno = 0;
		rc = SSL_write_ex(ts->ssl, (const uint8_t *)buf + done, len - done, &n);
		if (rc != 1)
			break;
		done += n;
		if (done == len)
			break;
	}
	ts->batching = false;
	if (done < len) {
		rc = ssl_failure(ts, s, rc, errno, "write");
		if (rc == 0)
			return stream_set_error(s, "TLS write: the session is closed");
		if (done == 0 || rc != ST_AGAIN)
			return rc;
	}
	rc = flush_records(ts, s);
	if (rc == ST_AGAIN)
		ts->taken = done;
	return rc < 0 ? rc : (ssize_t)done;
}

/* close_notify from our record layer: 0 when out, ST_AGAIN, ST_ERROR. */
static int send_close_notify(struct tls_session *ts, struct stream *s)
{
	uint8_t rec[64];
	ssize_t n;
	int rc;

	if (ts->wlen && (rc = flush_records(ts, s)) < 0)
		return rc;
	n = tls13_seal_close_notify(ts->rl, rec, sizeof rec);
	if (n < 0) {
		log_debug("tls: close_notify not sent: cannot seal it");
		return 0;
	}
	ts->sent_close = true;
	rc = send_records(ts, s, rec, (size_t)n);
	return rc == ST_ERROR ? 0 : rc;	/* the TCP shutdown is the end of our stream */
}

int tls_session_shutdown(struct tls_session *ts, struct stream *s)
{
	if (records_ours(ts) && !ts->sent_close && !ts->fatal) {
		int rc = send_close_notify(ts, s);

		if (rc == ST_AGAIN && !ts->sent_close)
			return ST_AGAIN;
	} else if (!ts->sent_close && ts->done && !ts->fatal) {
		int rc;

		ERR_clear_error();
		rc = SSL_shutdown(ts->ssl);
		if (rc < 0) {
			int e = SSL_get_error(ts->ssl, rc);

			if (e == SSL_ERROR_WANT_WRITE) {
				s->want = EPOLLOUT;
				return ST_AGAIN;
			}
			/* Nothing more can be said on this session: the TCP
			 * shutdown below is the end of our stream. */
			log_debug("tls: close_notify not sent: %s", openssl_reason(NULL));
		}
	}
	ts->sent_close = true;
	if (!ts->fatal && flush_records(ts, s) == ST_AGAIN)
		return ST_AGAIN;
	shutdown(s->fd, SHUT_WR);
	return 0;
}

/* ---- the tls transport ---- */

struct tls_stream {
	struct stream s;
	struct tls_session ts;
	bool held_error;	/* fill() has an error to report after its plaintext */
};

#define TS(s) (&((struct tls_stream *)(s))->ts)

static int tls_handshake(struct stream *s)
{
	return tls_session_handshake(TS(s), s);
}

/* Plaintext of the records read ahead (by OpenSSL, or by one read() of
 * ours), up to TLS_CHUNK: the relay then writes it on with one send
 * instead of one per 16 KiB record.
 * An error after some plaintext is held for the next call, so that the
 * plaintext is delivered and the error still reported (not taken for the
 * end of the stream). */
static ssize_t tls_fill(struct stream *s)
{
	struct tls_stream *t = (struct tls_stream *)s;
	size_t got = 0;
	ssize_t n;

	if (t->held_error)
		return ST_ERROR;
	if (stream_rx_reserve(s, TLS_FILL_CAP) < 0)
		return ST_ERROR;
	do {
		n = tls_session_read(&t->ts, s, s->rx + got, s->rx_cap - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	} while (t->ts.ssl && got < s->rx_cap && tls_session_pending(&t->ts));
	if (got == 0)
		return n;
	t->held_error = n == ST_ERROR;
	s->rx_off = 0;
	s->rx_len = (uint32_t)got;
	return (ssize_t)got;
}

static ssize_t tls_send_wire(struct stream *s, const uint8_t *p, size_t n)
{
	return tls_session_write(TS(s), s, p, n);
}

static int tls_shutdown(struct stream *s)
{
	return tls_session_shutdown(TS(s), s);
}

static void tls_destroy(struct stream *s)
{
	tls_session_free(TS(s));
}

static const struct stream_ops tls_ops = {
	.handshake = tls_handshake,
	.fill = tls_fill,
	.send_wire = tls_send_wire,
	.shutdown = tls_shutdown,
	.destroy = tls_destroy,
};

struct tls_session *tls_stream_session(struct stream *s)
{
	return s->ops == &tls_ops ? TS(s) : NULL;
}

static int tls_init(struct transport *t, char *err, size_t errlen)
{
	t->priv = tls_ctx_new(&t->cfg->tls, t->server, t->remote_addr, err, errlen);
	return t->priv ? 0 : -1;
}

static void tls_fini(struct transport *t)
{
	tls_ctx_free(t->priv);
	t->priv = NULL;
}

static struct stream *tls_wrap(struct transport *t, int fd, bool server)
{
	struct stream *s = stream_alloc(sizeof(struct tls_stream), &tls_ops, t, fd, server);

	if (!s)
		return NULL;
	s->max_chunk = TLS_CHUNK;
	if (tls_session_init(TS(s), t->priv, s) < 0) {
		log_error("%s", s->err);
		s->fd = -1;	/* transport_wrap() closes it */
		stream_free(s);
		return NULL;
	}
	return s;
}

const struct transport_impl transport_tls = {
	.name = "tls",
	.openssl = true,
	.init = tls_init,
	.fini = tls_fini,
	.wrap = tls_wrap,
};
