/* TLS sessions over a non-blocking socket (OpenSSL), shared by the tls
 * transport and the websocket transport's TLS layer. Private to those two.
 *
 * A tls_ctx is built once per transport from the [transport.tls] settings
 * (server: the PKCS#12 identity; client: the trust store and the name to
 * verify). A tls_session is one connection. Its operations report through
 * the stream that owns it: ST_AGAIN sets s->want, ST_ERROR fills s->err. */
#ifndef TLS_H
#define TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "transport.h"

/* The largest plaintext of one TLS record: one write of it is one record. */
#define TLS_RECORD_MAX 16384

struct tls_ctx;
struct tls13;

/* Tests set it to get a peer whose records OpenSSL protects throughout, as
 * in the reference (tls13.h): read when a session starts. */
extern bool tls_records_by_openssl;
/* How long a client resumes sessions descended from one full handshake
 * (ms; tests shorten it): after it, the server's certificate is checked
 * again. */
extern uint64_t tls_resume_for_ms;

struct tls_session {
	struct ssl_st *ssl;	/* NULL once the records are ours (rl) */
	struct tls13 *rl;	/* the key log's secrets, then our TLS 1.3 records (tls13.h) */
	struct tls_ctx *ctx;
	uint8_t *wbuf;		/* records of one large write, not yet sent (or NULL) */
	uint64_t origin;	/* client: when the full handshake of its ticket chain was */
	uint32_t woff, wlen;	/* wbuf[woff, wlen) is still to send */
	uint32_t taken;		/* plaintext written whose records wait in wbuf */
	/* records OpenSSL opened (decrypted) and sealed under the application
	 * keys, before the records became ours: where our sequence numbers
	 * start. rd_headers counts the records whose header OpenSSL has read:
	 * more than rd_records while it holds a record cut short. */
	uint32_t rd_records, wr_records, rd_headers;
	int fd;
	bool batching;		/* collect records in wbuf instead of sending each */
	bool want_rl;		/* take the records over after a TLS 1.3 handshake */
	bool rl_broken;		/* the key log could not be taken, or the peer updated its
				 * keys while OpenSSL read: leave the records to OpenSSL */
	bool rd_app, wr_app;	/* the peer's / our Finished has passed: records counted */
	bool await_ticket;	/* client: OpenSSL reads on until a ticket (or data) comes */
	bool ossl_unsent;	/* OpenSSL holds bytes of a record the socket refused */
	bool resumed;		/* the handshake resumed a session from a ticket */
	bool done;		/* handshake finished */
	bool fatal;		/* the session failed: no close_notify may follow */
	bool sent_close;	/* our close_notify is out */
};

/* Server: loads the PKCS#12 identity. Client: trust store (trusted_root or
 * the system's), the name to verify (hostname, else the host of remote_addr).
 * Errors are config-level and name the file and what to do. */
struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, bool server,
			    const char *remote_addr, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *c);

/* Prepares a session on fd (the fd stays owned by the caller's stream).
 * Returns 0, or ST_ERROR with s->err. */
int tls_session_init(struct tls_session *ts, struct tls_ctx *c, struct stream *s);
void tls_session_free(struct tls_session *ts);

/* 0 when the handshake is done, ST_AGAIN, ST_ERROR. */
int tls_session_handshake(struct tls_session *ts, struct stream *s);
/* Plaintext in: > 0 bytes, 0 at the end of the peer's stream (close_notify,
 * or an EOF without it, logged at debug), ST_AGAIN, ST_ERROR. */
ssize_t tls_session_read(struct tls_session *ts, struct stream *s, void *buf, size_t len);
/* Whether a read would return plaintext (or an error) without the socket. */
bool tls_session_pending(const struct tls_session *ts);
/* Plaintext out: > 0 bytes taken (as many records as the socket takes;
 * those of one call leave in one send), ST_AGAIN, ST_ERROR. A retry after
 * ST_AGAIN must offer the same bytes again (at least as many): some of them
 * may be encrypted already and waiting to be sent. */
ssize_t tls_session_write(struct tls_session *ts, struct stream *s, const void *buf,
			  size_t len);
/* The session of a tls transport's stream (NULL for other streams): for
 * tests and diagnostics. */
struct tls_session *tls_stream_session(struct stream *s);

/* Sends close_notify once, then shuts the TCP write side: 0, ST_AGAIN, ST_ERROR.
 * Reading goes on until the peer's close_notify or EOF. */
int tls_session_shutdown(struct tls_session *ts, struct stream *s);

#endif
