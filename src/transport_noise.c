/* The noise transport: a Noise handshake, then Noise transport messages.
 *
 * Wire format (the reference's, through the snowstorm crate): every handshake
 * and transport message is preceded by its length as a u16 little-endian, so
 * one record is at most 2 + 65535 bytes. Empty prologue, empty handshake
 * payloads; the client is the initiator. There is no close message: the end
 * of the stream is the TCP FIN.
 *
 * Receiving: one buffer of exactly one maximal record. Wire bytes are read
 * into it; each complete record is decrypted in place and its plaintext is
 * exposed as s->rx + s->rx_off. Bytes of the next record may already follow
 * it in the same buffer (ns->wire_off, ns->wire_len).
 *
 * The buffer and stream_trim(): stream_trim() frees s->rx whenever it
 * exposes no plaintext, which would lose a partly received record. So s->rx
 * points to the buffer only while that is safe (plaintext exposed, or no
 * wire bytes pending) and is NULL otherwise; rxbuf_publish() keeps this
 * invariant and rxbuf_reclaim() notices when stream_trim() freed it. */
#include "transport.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base64.h"
#include "log.h"
#include "noise.h"
#include "secmem.h"

#define NOISE_DEFAULT_PATTERN	"Noise_NK_25519_ChaChaPoly_BLAKE2s"
#define RECORD_HDR		2
#define RECORD_MAX		(RECORD_HDR + NOISE_MAX_MSG)
/* Our handshake messages carry empty payloads: at most e, s and a tag. */
#define HS_OUT_MAX		(RECORD_HDR + 256)
/* A handshake payload from the peer is read and ignored; the reference sends none. */
#define HS_PAYLOAD_MAX		1024
/* The receive buffer during the handshake: the largest handshake record we
 * accept. It grows to RECORD_MAX only once the peer is authenticated, so a
 * flood of unauthenticated connections cannot make each hold 64 KiB. */
#define HS_RECORD_MAX		(RECORD_HDR + HS_PAYLOAD_MAX + HS_OUT_MAX)

/* Shared by all streams of a transport. */
struct noise_shared {
	char *pattern;			/* our copy: a reload frees the config's */
	struct noise_requirements req;
	uint8_t local_private[NOISE_KEY_LEN];
	struct noise_static *local_static;	/* local_private, ready for OpenSSL */
	uint8_t remote_public[NOISE_KEY_LEN];
	bool has_remote;
};

struct noise_stream {
	struct stream s;		/* first: a struct stream * is a noise_stream * */
	struct noise_hs *hs;		/* until the handshake is done */
	struct noise_cipher *send, *recv;
	bool failed;			/* after ST_ERROR, every call fails again */

	uint8_t *buf;			/* buf_cap bytes when allocated */
	uint32_t buf_cap;		/* HS_RECORD_MAX, then RECORD_MAX */
	uint32_t wire_off, wire_len;	/* received bytes not yet decrypted */

	uint8_t out[HS_OUT_MAX];	/* the handshake message being written */
	uint32_t out_off, out_len;
};

static struct noise_stream *ns_of(struct stream *s)
{
	return (struct noise_stream *)s;
}

static const char *peer_name(const struct stream *s)
{
	return s->server ? "client" : "server";
}

static int ns_error(struct noise_stream *ns, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int ns_error(struct noise_stream *ns, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	stream_set_errorv(&ns->s, fmt, ap);
	va_end(ap);
	ns->failed = true;
	return ST_ERROR;
}

/* Prefixes the socket error already in s->err. */
static int ns_socket_error(struct noise_stream *ns, const char *what)
{
	return ns_error(ns, "%s: %s", what, ns->s.err);
}

/* ---- the receive buffer ---- */

static void rxbuf_reclaim(struct noise_stream *ns)
{
	/* Published with no wire bytes pending and now gone: stream_trim() freed it. */
	if (ns->buf && ns->s.rx != ns->buf && ns->wire_len == 0) {
		ns->buf = NULL;
		ns->buf_cap = 0;
	}
}

static void rxbuf_publish(struct noise_stream *ns)
{
	struct stream *s = &ns->s;

	if (s->rx_len > 0 || ns->wire_len == 0) {
		s->rx = ns->buf;
		s->rx_cap = ns->buf ? ns->buf_cap : 0;
	} else {
		s->rx = NULL;	/* hidden from stream_trim(): a record is half read */
		s->rx_cap = 0;
		s->rx_off = 0;
	}
}

/* Length of the complete record at the start of the pending wire bytes, or
 * -1 while it is incomplete. */
static long rxbuf_record(const struct noise_stream *ns)
{
	const uint8_t *p;
	size_t mlen;

	if (ns->wire_len < RECORD_HDR)
		return -1;
	p = ns->buf + ns->wire_off;
	mlen = (size_t)p[0] | (size_t)p[1] << 8;
	return ns->wire_len - RECORD_HDR >= mlen ? (long)mlen : -1;
}

static void rxbuf_drop_record(struct noise_stream *ns, size_t mlen)
{
	ns->wire_off += (uint32_t)(RECORD_HDR + mlen);
	ns->wire_len -= (uint32_t)(RECORD_HDR + mlen);
	if (ns->wire_len == 0 && ns->s.rx_len == 0)
		ns->wire_off = 0;
}

/* Reads more wire bytes after the pending ones. Only called with no
 * plaintext exposed, so the pending bytes can move to the front. Returns the
 * count read, 0 at end of stream, ST_AGAIN or ST_ERROR. */
static ssize_t rxbuf_read(struct noise_stream *ns)
{
	size_t cap = ns->hs ? HS_RECORD_MAX : RECORD_MAX;
	ssize_t n;

	if (ns->buf_cap < cap) {
		bool published = ns->buf && ns->s.rx == ns->buf;
		uint8_t *p = realloc(ns->buf, cap);	/* keeps pending wire bytes */

		if (!p)
			return ns_error(ns, "noise: out of memory");
		ns->buf = p;
		ns->buf_cap = (uint32_t)cap;
		if (published) {
			ns->s.rx = p;
			ns->s.rx_cap = ns->buf_cap;
		}
	}
	if (ns->wire_off) {
		memmove(ns->buf, ns->buf + ns->wire_off, ns->wire_len);
		ns->wire_off = 0;
	}
	/* A full buffer always holds a complete record: this never reads 0 bytes. */
	n = stream_sock_read(&ns->s, ns->buf + ns->wire_len, ns->buf_cap - ns->wire_len);
	if (n > 0)
		ns->wire_len += (uint32_t)n;
	else if (n == ST_ERROR)
		ns->failed = true;
	return n;
}

/* ---- the handshake ---- */

static int hs_flush_out(struct noise_stream *ns)
{
	while (ns->out_off < ns->out_len) {
		ssize_t n = stream_sock_write(&ns->s, ns->out + ns->out_off,
					      ns->out_len - ns->out_off);

		if (n == ST_AGAIN)
			return ST_AGAIN;
		if (n < 0)
			return ns_socket_error(ns, "noise handshake failed");
		ns->out_off += (uint32_t)n;
	}
	return 0;
}

static int hs_write_message(struct noise_stream *ns)
{
	long n = noise_hs_write(ns->hs, NULL, 0, ns->out + RECORD_HDR, sizeof ns->out - RECORD_HDR);

	if (n < 0)
		return ns_error(ns, "noise handshake failed: cannot write handshake message "
				"(bad local_private_key, or a key the pattern needs is missing)");
	ns->out[0] = (uint8_t)n;
	ns->out[1] = (uint8_t)(n >> 8);
	ns->out_off = 0;
	ns->out_len = (uint32_t)(RECORD_HDR + n);
	return hs_flush_out(ns);
}

/* Where a handshake failure most likely comes from, for the user. */
static const char *hs_hint(const struct stream *s)
{
	const struct noise_shared *sh = s->t->priv;

	if (!s->server && sh->req.initiator_knows_remote)
		return "does remote_public_key match the server's public key, and is the "
		       "pattern the same on both sides?";
	if (s->server && sh->req.responder_knows_remote)
		return "does the client's remote_public_key match this server's key, does "
		       "this server's remote_public_key match the client's key, and is the "
		       "pattern the same on both sides?";
	if (s->server && sh->req.initiator_knows_remote)
		return "does the client's remote_public_key match this server's key, and is "
		       "the pattern the same on both sides?";
	return "is the pattern the same on both sides?";
}

/* A transmitted static key must match remote_public_key when one is set. */
static int hs_check_pinned_key(struct noise_stream *ns)
{
	const struct noise_shared *sh = ns->s.t->priv;
	const uint8_t *rs = noise_hs_remote_static(ns->hs);

	if (!sh->has_remote || !rs || secure_equal(rs, sh->remote_public, NOISE_KEY_LEN))
		return 0;
	return ns_error(ns, "noise handshake failed: the %s's static key does not match "
			"remote_public_key", peer_name(&ns->s));
}

static int hs_read_message(struct noise_stream *ns)
{
	uint8_t payload[HS_PAYLOAD_MAX];
	long mlen;

	while ((mlen = rxbuf_record(ns)) < 0) {
		ssize_t n;

		/* An unauthenticated peer may not make us buffer a 64 KiB record:
		 * no handshake message of ours is anywhere near this size. */
		if (ns->wire_len >= RECORD_HDR &&
		    ((size_t)ns->buf[ns->wire_off] | (size_t)ns->buf[ns->wire_off + 1] << 8) >
		    HS_PAYLOAD_MAX + HS_OUT_MAX)
			return ns_error(ns, "noise handshake failed: the %s sent an oversized "
					"handshake message (not a rathole noise peer?)", peer_name(&ns->s));
		n = rxbuf_read(ns);

		if (n == 0)
			return ns_error(ns, "noise handshake failed: the %s closed the connection "
					"(%s)", peer_name(&ns->s), hs_hint(&ns->s));
		if (n == ST_AGAIN)
			return ST_AGAIN;
		if (n < 0)
			return ns_socket_error(ns, "noise handshake failed");
	}
	if (noise_hs_read(ns->hs, ns->buf + ns->wire_off + RECORD_HDR, (size_t)mlen,
			  payload, sizeof payload) < 0) {
		explicit_bzero(payload, sizeof payload);
		return ns_error(ns, "noise handshake failed: the %s's handshake message is "
				"malformed or does not authenticate (%s)", peer_name(&ns->s), hs_hint(&ns->s));
	}
	explicit_bzero(payload, sizeof payload);
	rxbuf_drop_record(ns, (size_t)mlen);
	return hs_check_pinned_key(ns);
}

static int hs_finish(struct noise_stream *ns)
{
	if (noise_hs_split(ns->hs, &ns->send, &ns->recv) < 0)
		return ns_error(ns, "noise handshake failed: cannot derive the session keys");
	noise_hs_free(ns->hs);
	ns->hs = NULL;
	return 0;
}

static int noise_handshake(struct stream *s)
{
	struct noise_stream *ns = ns_of(s);
	int rc = 0;

	if (ns->failed)
		return ST_ERROR;
	rxbuf_reclaim(ns);
	while (rc == 0 && ns->hs) {
		rc = hs_flush_out(ns);
		if (rc < 0)
			break;
		switch (noise_hs_next(ns->hs)) {
		case NOISE_WRITE:
			rc = hs_write_message(ns);
			break;
		case NOISE_READ:
			rc = hs_read_message(ns);
			break;
		case NOISE_DONE:
			rc = hs_finish(ns);
			break;
		default:
			rc = ns_error(ns, "noise handshake failed");
		}
	}
	rxbuf_publish(ns);
	return rc;
}

/* ---- the transport phase ---- */

/* Decrypts the complete record at the front of the pending wire bytes in
 * place and exposes its plaintext. Returns its length (0 for an empty
 * record) or ST_ERROR. */
static ssize_t open_record(struct noise_stream *ns, size_t mlen)
{
	struct stream *s = &ns->s;
	uint8_t *msg = ns->buf + ns->wire_off + RECORD_HDR;
	long n = noise_decrypt(ns->recv, msg, mlen);

	if (n < 0)
		return ns_error(ns, "noise: message authentication failed (corrupted or "
				"forged data from the %s)", peer_name(s));
	rxbuf_drop_record(ns, mlen);
	if (n > 0) {
		s->rx_off = (uint32_t)(msg - ns->buf);
		s->rx_len = (uint32_t)n;
	}
	return n;
}

static ssize_t noise_fill(struct stream *s)
{
	struct noise_stream *ns = ns_of(s);
	ssize_t n;

	if (ns->failed)
		return ST_ERROR;
	if (!ns->recv)
		return ns_error(ns, "noise: read before the handshake finished");
	rxbuf_reclaim(ns);
	for (;;) {
		long mlen = rxbuf_record(ns);

		if (mlen >= 0) {
			n = open_record(ns, (size_t)mlen);
			if (n != 0)
				break;
			continue;	/* an empty record carries nothing */
		}
		n = rxbuf_read(ns);
		if (n == 0 && ns->wire_len)
			n = ns_error(ns, "noise: the %s closed the connection in the middle "
				     "of a message", peer_name(s));
		if (n <= 0)
			break;
	}
	rxbuf_publish(ns);
	return n;
}

static void noise_consume(struct stream *s, size_t n)
{
	s->rx_off += (uint32_t)n;
	s->rx_len -= (uint32_t)n;
	if (s->rx_len == 0)
		s->rx_off = 0;
	rxbuf_publish(ns_of(s));
}

static size_t noise_seal(struct stream *s, uint8_t *p, size_t len, uint8_t **wire)
{
	struct noise_stream *ns = ns_of(s);
	long n;

	*wire = p;
	if (len == 0)	/* an empty record would read as end of stream to the reference */
		return 0;
	n = ns->send && !ns->failed ? noise_encrypt(ns->send, p, len) : -1;
	if (n < 0) {
		/* Only a caller bug (too long, before the handshake) or 2^64
		 * messages get here; the next send_wire reports it. */
		if (!ns->failed)
			ns_error(ns, "noise: cannot encrypt %zu bytes", len);
		return 0;
	}
	p[-2] = (uint8_t)n;
	p[-1] = (uint8_t)(n >> 8);
	*wire = p - RECORD_HDR;
	return (size_t)n + RECORD_HDR;
}

static ssize_t noise_send_wire(struct stream *s, const uint8_t *p, size_t n)
{
	ssize_t rc;

	if (ns_of(s)->failed)
		return ST_ERROR;
	rc = stream_sock_write(s, p, n);
	if (rc == ST_ERROR)
		ns_of(s)->failed = true;
	return rc;
}

/* Noise has no close message: like the reference, end our direction with a FIN. */
static int noise_shutdown(struct stream *s)
{
	shutdown(s->fd, SHUT_WR);
	return 0;
}

static void noise_destroy(struct stream *s)
{
	struct noise_stream *ns = ns_of(s);

	noise_hs_free(ns->hs);
	noise_cipher_free(ns->send);
	noise_cipher_free(ns->recv);
	rxbuf_reclaim(ns);
	if (ns->buf && s->rx != ns->buf)
		free(ns->buf);		/* hidden from stream_free() */
	ns->buf = NULL;
}

static const struct stream_ops noise_ops = {
	.handshake = noise_handshake,
	.fill = noise_fill,
	.consume = noise_consume,
	.seal = noise_seal,
	.send_wire = noise_send_wire,
	.shutdown = noise_shutdown,
	.destroy = noise_destroy,
};

static struct stream *noise_wrap(struct transport *t, int fd, bool server)
{
	const struct noise_shared *sh = t->priv;
	struct noise_keys keys = {
		.local_static = sh->local_private,
		.prepared_static = sh->local_static,
		.remote_static = sh->has_remote ? sh->remote_public : NULL,
	};
	struct noise_stream *ns;
	char err[256];

	ns = (struct noise_stream *)stream_alloc(sizeof *ns, &noise_ops, t, fd, server);
	if (!ns)
		return NULL;
	ns->hs = noise_hs_new(sh->pattern, server ? NOISE_RESPONDER : NOISE_INITIATOR,
			      &keys, err, sizeof err);
	if (!ns->hs) {
		log_error("noise: %s", err);
		ns->s.fd = -1;		/* transport_wrap() closes it */
		stream_free(&ns->s);
		return NULL;
	}
	ns->s.headroom = RECORD_HDR;
	ns->s.tailroom = NOISE_TAG_LEN;
	ns->s.max_chunk = NOISE_MAX_PLAINTEXT;
	return &ns->s;
}

/* ---- the shared state ---- */

static int check_pattern(struct noise_shared *sh, char *err, size_t errlen)
{
	char why[512];

	if (noise_check_protocol(sh->pattern, &sh->req, why, sizeof why) < 0) {
		snprintf(err, errlen, "transport.noise.pattern: %s", why);
		return -1;
	}
	if (sh->req.one_way) {
		snprintf(err, errlen, "transport.noise.pattern: \"%s\" is a one-way pattern "
			 "(only the client could send); use a two-way pattern such as "
			 NOISE_DEFAULT_PATTERN, sh->pattern);
		return -1;
	}
	return 0;
}

/* The local key: configured, or generated for this run as the reference does. */
static int set_local_key(struct noise_shared *sh, const struct noise_config *nc,
			 bool server, char *err, size_t errlen)
{
	bool needed = server ? sh->req.responder_static : sh->req.initiator_static;
	bool peer_must_know = server ? sh->req.initiator_knows_remote
				     : sh->req.responder_knows_remote;
	uint8_t pub[NOISE_KEY_LEN];
	char b64[BASE64_ENCODED_LEN(NOISE_KEY_LEN) + 1];

	if (nc->has_local_private_key) {
		memcpy(sh->local_private, nc->local_private_key, NOISE_KEY_LEN);
		sh->local_static = noise_static_new(sh->local_private, pub);
		if (!sh->local_static) {
			snprintf(err, errlen, "transport.noise.local_private_key: not a usable "
				 "X25519 private key");
			return -1;
		}
		return 0;
	}
	if (needed && !server && peer_must_know) {
		snprintf(err, errlen, "transport.noise: pattern \"%s\" needs local_private_key "
			 "on the client (its public key is the server's remote_public_key; "
			 "make a pair with --genkey)", sh->pattern);
		return -1;
	}
	if (noise_generate_keypair(sh->local_private, pub) < 0 ||
	    !(sh->local_static = noise_static_new(sh->local_private, NULL))) {
		snprintf(err, errlen, "transport.noise: cannot generate a key pair (OpenSSL)");
		return -1;
	}
	if (!needed)
		return 0;
	base64_encode(pub, NOISE_KEY_LEN, b64);
	if (server && peer_must_know)
		log_info("noise: no local_private_key configured, generated one for this run; "
			 "its public key (the clients' remote_public_key) is %s", b64);
	else if (server)
		log_info("noise: no local_private_key configured, generated one for this run "
			 "(public key %s)", b64);
	else
		log_debug("noise: no local_private_key configured, using a generated key "
			  "(public key %s)", b64);
	return 0;
}

static int noise_init(struct transport *t, char *err, size_t errlen)
{
	const struct noise_config *nc = &t->cfg->noise;
	struct noise_shared *sh = calloc(1, sizeof *sh);
	bool need_remote;

	if (!sh) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* A copy, not the config's string: after a reload with the same
	 * settings the transport lives on and the old config is freed. */
	sh->pattern = strdup(nc->pattern ? nc->pattern : NOISE_DEFAULT_PATTERN);
	if (!sh->pattern) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (check_pattern(sh, err, errlen) < 0)
		goto fail;
	need_remote = t->server ? sh->req.responder_knows_remote : sh->req.initiator_knows_remote;
	if (need_remote && !nc->has_remote_public_key) {
		snprintf(err, errlen, "transport.noise: pattern \"%s\" needs remote_public_key "
			 "on the %s (%s)", sh->pattern, t->server ? "server" : "client",
			 t->server ? "the client's public key"
				   : "the server's public key, logged by the server at start "
				     "or printed with its key by --genkey");
		goto fail;
	}
	if (nc->has_remote_public_key) {
		memcpy(sh->remote_public, nc->remote_public_key, NOISE_KEY_LEN);
		sh->has_remote = true;
	}
	if (set_local_key(sh, nc, t->server, err, errlen) < 0)
		goto fail;
	t->priv = sh;
	return 0;
fail:
	free(sh->pattern);
	noise_static_free(sh->local_static);
	explicit_bzero(sh, sizeof *sh);
	free(sh);
	return -1;
}

static void noise_fini(struct transport *t)
{
	if (!t->priv)
		return;
	free(((struct noise_shared *)t->priv)->pattern);
	noise_static_free(((struct noise_shared *)t->priv)->local_static);
	explicit_bzero(t->priv, sizeof(struct noise_shared));
	free(t->priv);
	t->priv = NULL;
}

const struct transport_impl transport_noise = {
	.name = "noise",
	.openssl = true,
	.init = noise_init,
	.fini = noise_fini,
	.wrap = noise_wrap,
};
