/* TLS 1.3 record protection after the handshake (tls13.h; RFC 8446,
 * sections 4.6, 5 and 7). */
#include "tls13.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "base64.h"
#include "log.h"
#include "ossl.h"

#define HASH_MAX	48
#define KEY_MAX		32
#define IV_LEN		12
#define RBUF_CAP	(64 * 1024 + 512)	/* 4 full records and their overhead */
/* Post-handshake messages gathered across records: a NewSessionTicket is a
 * few hundred bytes; anything near this bound is not one we want. */
#define HS_MSG_MAX	16384
#define HS_CAP		(4 + HS_MSG_MAX + TLS13_PLAINTEXT_MAX)
/* Records we seal under one AES-GCM key before our own KeyUpdate: RFC 8446
 * (5.5) allows 2^24.5 with a safety margin; ChaCha20-Poly1305 has no such
 * limit before the sequence number would wrap. */
#define AES_GCM_REKEY	(1ull << 23)

enum content_type {
	CT_ALERT = 21,
	CT_HANDSHAKE = 22,
	CT_APPLICATION_DATA = 23,
};

enum handshake_type {
	HS_NEW_SESSION_TICKET = 4,
	HS_KEY_UPDATE = 24,
};

struct suite_def {
	uint16_t id;
	const char *cipher;	/* as OpenSSL fetches it */
	size_t key_len;
	const char *digest;	/* the HKDF hash, as OpenSSL names it */
	size_t hash_len;
	size_t head_unit;	/* see cipher_update() */
	uint64_t rekey_after;	/* records under one key before our KeyUpdate */
};

static const struct suite_def suites[] = {
	{ 0x1301, "AES-128-GCM", 16, "SHA256", 32, 0, AES_GCM_REKEY },	/* TLS_AES_128_GCM_SHA256 */
	{ 0x1302, "AES-256-GCM", 32, "SHA384", 48, 0, AES_GCM_REKEY },	/* TLS_AES_256_GCM_SHA384 */
	{ 0x1303, "ChaCha20-Poly1305", 32, "SHA256", 32, 128, UINT64_MAX },	/* TLS_CHACHA20_POLY1305_SHA256 */
};

/* One direction's protection. */
struct dir {
	EVP_CIPHER_CTX *ctx;	/* keyed; each record sets only the nonce */
	uint64_t seq;
	uint8_t iv[IV_LEN];
	uint8_t secret[HASH_MAX];	/* the traffic secret, for KeyUpdate */
};

struct tls13 {
	const struct suite_def *suite;
	struct dir rd, wr;
	uint8_t client_secret[HASH_MAX], server_secret[HASH_MAX];
	size_t client_len, server_len;	/* from the key log, until tls13_start() */
	uint8_t *rbuf;		/* received bytes: rbuf[roff, rlen) not yet opened */
	uint32_t roff, rlen;
	uint8_t *pt;		/* plaintext opened in place in rbuf, not yet taken */
	uint32_t pt_len;
	uint8_t *hs;		/* a post-handshake message spread over records */
	uint32_t hs_len;
	uint64_t rekey_after;	/* the suite's, unless a test set it */
	bool update_owed;	/* the peer asked for our KeyUpdate */
	bool closed;		/* the peer's close_notify or EOF came */
	bool close_notify;	/* ... and it was close_notify */
	bool failed;		/* an error is to be reported (after plaintext given) */
};

bool tls13_cipher_supported(uint16_t suite)
{
	for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
		if (suites[i].id == suite)
			return true;
	return false;
}

/* ---- secrets and keys ---- */

/* "LABEL <64 hex digits of client random> <secret in hex>" */
static int parse_secret(const char *rest, uint8_t *out, size_t *outlen)
{
	const char *hex = strchr(rest, ' ');
	size_t n;

	if (!hex)
		return -1;
	hex++;
	n = strlen(hex);
	if (n % 2 || n / 2 > HASH_MAX || n == 0)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*outlen = n / 2;
	return 0;
}

int tls13_take_secret(struct tls13 **rl, const char *line)
{
	static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ", server[] = "SERVER_TRAFFIC_SECRET_0 ";
	bool is_client = strncmp(line, client, sizeof client - 1) == 0;
	int rc;

	if (!is_client && strncmp(line, server, sizeof server - 1) != 0)
		return 0;
	if (!*rl && !(*rl = calloc(1, sizeof **rl)))
		return -1;
	line += sizeof client - 1;	/* both labels have the same length */
	if (is_client)
		rc = parse_secret(line, (*rl)->client_secret, &(*rl)->client_len);
	else
		rc = parse_secret(line, (*rl)->server_secret, &(*rl)->server_len);
	return rc;
}

/* HKDF-Expand-Label(secret, label, "", len) (RFC 8446, 7.1). */
static int expand_label(const struct suite_def *sd, const uint8_t *secret, const char *label,
			uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 255 + 1];
	size_t llen = strlen(label), ilen = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, rc = -1;
	EVP_KDF *kdf = ossl_kdf("HKDF");
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;

	info[ilen++] = (uint8_t)(len >> 8);
	info[ilen++] = (uint8_t)len;
	info[ilen++] = (uint8_t)(6 + llen);
	memcpy(info + ilen, "tls13 ", 6);
	ilen += 6;
	memcpy(info + ilen, label, llen);
	ilen += llen;
	info[ilen++] = 0;	/* empty context */
	if (kctx) {
		OSSL_PARAM params[] = {
			OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)sd->digest, 0),
			OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
							  sd->hash_len),
			OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, ilen),
			OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
			OSSL_PARAM_construct_end(),
		};

		rc = EVP_KDF_derive(kctx, out, len, params) == 1 ? 0 : -1;
	}
	EVP_KDF_CTX_free(kctx);
	return rc;
}

/* Keys the direction from its traffic secret (at the start and after each
 * KeyUpdate); the sequence number starts again at 0. */
static int key_direction(const struct suite_def *sd, struct dir *d, int enc)
{
	uint8_t key[KEY_MAX];
	int rc = -1;

	if (expand_label(sd, d->secret, "key", key, sd->key_len) < 0 ||
	    expand_label(sd, d->secret, "iv", d->iv, IV_LEN) < 0)
		goto out;
	if (!d->ctx) {
		d->ctx = EVP_CIPHER_CTX_new();
		if (!d->ctx || !ossl_cipher(sd->cipher) ||
		    !EVP_CipherInit_ex(d->ctx, ossl_cipher(sd->cipher), NULL, key, NULL, enc))
			goto out;
	} else if (!EVP_CipherInit_ex(d->ctx, NULL, NULL, key, NULL, enc)) {
		goto out;
	}
	d->seq = 0;
	rc = 0;
out:
	explicit_bzero(key, sizeof key);
	return rc;
}

/* KeyUpdate: application_traffic_secret_N+1 (RFC 8446, 7.2). */
static int update_direction(const struct suite_def *sd, struct dir *d, int enc)
{
	uint8_t next[HASH_MAX];
	int rc = expand_label(sd, d->secret, "traffic upd", next, sd->hash_len);

	if (rc == 0) {
		memcpy(d->secret, next, sd->hash_len);
		rc = key_direction(sd, d, enc);
	}
	explicit_bzero(next, sizeof next);
	return rc;
}

int tls13_start(struct tls13 *rl, uint16_t suite, bool server, uint64_t read_seq,
		uint64_t write_seq, char *err, size_t errlen)
{
	const struct suite_def *sd = NULL;
	uint8_t *ours, *theirs;
	size_t our_len, their_len;
	int rc = -1;

	for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
		if (suites[i].id == suite)
			sd = &suites[i];
	ours = server ? rl->server_secret : rl->client_secret;
	our_len = server ? rl->server_len : rl->client_len;
	theirs = server ? rl->client_secret : rl->server_secret;
	their_len = server ? rl->client_len : rl->server_len;
	if (!sd) {
		snprintf(err, errlen, "cipher suite 0x%04x is not one of TLS 1.3's", suite);
	} else if (our_len != sd->hash_len || their_len != sd->hash_len) {
		snprintf(err, errlen, "OpenSSL did not report both traffic secrets");
	} else {
		rl->suite = sd;
		rl->rekey_after = sd->rekey_after;
		memcpy(rl->wr.secret, ours, sd->hash_len);
		memcpy(rl->rd.secret, theirs, sd->hash_len);
		if (key_direction(sd, &rl->wr, 1) == 0 && key_direction(sd, &rl->rd, 0) == 0) {
			rl->wr.seq = write_seq;
			rl->rd.seq = read_seq;
			rc = 0;
		} else {
			snprintf(err, errlen, "cannot key the TLS records (OpenSSL failed)");
		}
	}
	explicit_bzero(rl->client_secret, sizeof rl->client_secret);
	explicit_bzero(rl->server_secret, sizeof rl->server_secret);
	rl->client_len = rl->server_len = 0;
	return rc;
}

void tls13_free(struct tls13 *rl)
{
	if (!rl)
		return;
	EVP_CIPHER_CTX_free(rl->rd.ctx);
	EVP_CIPHER_CTX_free(rl->wr.ctx);
	free(rl->rbuf);
	free(rl->hs);
	explicit_bzero(rl, sizeof *rl);
	free(rl);
}

/* An idle session keeps no receive buffer (as OpenSSL's
 * SSL_MODE_RELEASE_BUFFERS did). */
static void release_rbuf(struct tls13 *rl)
{
	if (rl->rbuf && rl->roff == rl->rlen && rl->pt_len == 0) {
		free(rl->rbuf);
		rl->rbuf = NULL;
		rl->roff = rl->rlen = 0;
	}
}

/* ---- the AEAD ---- */

static void record_nonce(const struct dir *d, uint8_t nonce[IV_LEN])
{
	memcpy(nonce, d->iv, IV_LEN);
	for (int i = 0; i < 8; i++)
		nonce[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* In two updates for ChaCha20-Poly1305: whole 128-byte units, then the
 * rest, which keeps OpenSSL 3.0's AVX-512 Poly1305 on its fast path (see
 * noise.c, aead_update). */
static int cipher_update(const struct suite_def *sd, EVP_CIPHER_CTX *ctx, uint8_t *out,
			 const uint8_t *in, size_t len)
{
	size_t head = sd->head_unit ? len / sd->head_unit * sd->head_unit : len;
	int n;

	if (head && !EVP_CipherUpdate(ctx, out, &n, in, (int)head))
		return -1;
	if (len > head && !EVP_CipherUpdate(ctx, out + head, &n, in + head, (int)(len - head)))
		return -1;
	return 0;
}

int tls13_seal_record(struct tls13 *rl, uint8_t ct, const uint8_t *in, size_t len, uint8_t *out)
{
	struct dir *d = &rl->wr;
	size_t wire = len + 1 + TLS13_TAG;
	uint8_t nonce[IV_LEN];
	int outl;

	if (d->seq == UINT64_MAX)
		return -1;
	out[0] = CT_APPLICATION_DATA;
	out[1] = 0x03;
	out[2] = 0x03;
	out[3] = (uint8_t)(wire >> 8);
	out[4] = (uint8_t)wire;
	record_nonce(d, nonce);
	if (!EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nonce, 1) ||
	    !EVP_CipherUpdate(d->ctx, NULL, &outl, out, TLS13_HEADER) ||
	    cipher_update(rl->suite, d->ctx, out + TLS13_HEADER, in, len) < 0 ||
	    !EVP_CipherUpdate(d->ctx, out + TLS13_HEADER + len, &outl, &ct, 1) ||
	    !EVP_CipherFinal_ex(d->ctx, nonce, &outl) ||
	    !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, TLS13_TAG,
				 out + TLS13_HEADER + len + 1))
		return -1;
	d->seq++;
	return 0;
}

/* Opens the record at rec (header, then clen bytes of ciphertext and tag)
 * into out (clen - TLS13_TAG bytes; out == rec + TLS13_HEADER or apart). */
static int open_record(struct tls13 *rl, uint8_t *rec, size_t clen, uint8_t *out)
{
	struct dir *d = &rl->rd;
	size_t len = clen - TLS13_TAG;
	uint8_t nonce[IV_LEN];
	int outl;

	if (d->seq == UINT64_MAX)
		return -1;
	record_nonce(d, nonce);
	if (!EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nonce, 0) ||
	    !EVP_CipherUpdate(d->ctx, NULL, &outl, rec, TLS13_HEADER) ||
	    !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, TLS13_TAG,
				 rec + TLS13_HEADER + len) ||
	    cipher_update(rl->suite, d->ctx, out, rec + TLS13_HEADER, len) < 0 ||
	    !EVP_CipherFinal_ex(d->ctx, nonce, &outl))
		return -1;
	d->seq++;
	return 0;
}

/* ---- sending ---- */

/* Our KeyUpdate (update_not_requested), then our keys move on: when the
 * peer asked for it, or when our key has sealed its share of records. */
static ssize_t seal_owed_update(struct tls13 *rl, uint8_t *out, size_t cap)
{
	static const uint8_t msg[] = { HS_KEY_UPDATE, 0, 0, 1, 0 };
	bool worn = rl->wr.seq >= rl->rekey_after;

	if (!rl->update_owed && !worn)
		return 0;
	if (cap < sizeof msg + TLS13_OVERHEAD ||
	    tls13_seal_record(rl, CT_HANDSHAKE, msg, sizeof msg, out) < 0 ||
	    update_direction(rl->suite, &rl->wr, 1) < 0)
		return -1;
	if (rl->update_owed)
		log_debug("tls: sent KeyUpdate (the peer asked for it)");
	else
		log_debug("tls: sent KeyUpdate (%llu records under one key)",
			  (unsigned long long)rl->rekey_after);
	rl->update_owed = false;
	return (ssize_t)(sizeof msg + TLS13_OVERHEAD);
}

void tls13_set_rekey_after(struct tls13 *rl, uint64_t records)
{
	rl->rekey_after = records;
}

ssize_t tls13_seal(struct tls13 *rl, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
		   size_t *taken)
{
	ssize_t o = seal_owed_update(rl, out, cap);

	*taken = 0;
	if (o < 0)
		return -1;
	while (*taken < len && cap - (size_t)o > TLS13_OVERHEAD) {
		size_t n = len - *taken;

		if (n > TLS13_PLAINTEXT_MAX)
			n = TLS13_PLAINTEXT_MAX;
		if (n > cap - (size_t)o - TLS13_OVERHEAD)
			n = cap - (size_t)o - TLS13_OVERHEAD;
		if (tls13_seal_record(rl, CT_APPLICATION_DATA, in + *taken, n, out + o) < 0)
			return -1;
		o += (ssize_t)(n + TLS13_OVERHEAD);
		*taken += n;
	}
	return o;
}

ssize_t tls13_seal_close_notify(struct tls13 *rl, uint8_t *out, size_t cap)
{
	static const uint8_t alert[] = { 1, 0 };	/* warning, close_notify */
	ssize_t o = seal_owed_update(rl, out, cap);

	if (o < 0 || cap - (size_t)o < sizeof alert + TLS13_OVERHEAD ||
	    tls13_seal_record(rl, CT_ALERT, alert, sizeof alert, out + o) < 0)
		return -1;
	return o + (ssize_t)(sizeof alert + TLS13_OVERHEAD);
}

/* ---- receiving ---- */

static int fail(struct tls13 *rl, struct stream *s, const char *why)
{
	rl->failed = true;
	return stream_set_error(s, "TLS read: %s", why);
}

static const char *alert_name(uint8_t desc)
{
	switch (desc) {
	case 10: return "unexpected_message";
	case 20: return "bad_record_mac";
	case 22: return "record_overflow";
	case 40: return "handshake_failure";
	case 47: return "illegal_parameter";
	case 50: return "decode_error";
	case 51: return "decrypt_error";
	case 80: return "internal_error";
	case 90: return "user_canceled";
	default: return NULL;
	}
}

static int on_alert(struct tls13 *rl, struct stream *s, const uint8_t *p, size_t len)
{
	char what[96];
	const char *name;

	if (len != 2)
		return fail(rl, s, "a malformed alert from the peer");
	if (p[1] == 0) {	/* close_notify */
		rl->closed = rl->close_notify = true;
		return 0;
	}
	name = alert_name(p[1]);
	if (name)
		snprintf(what, sizeof what, "the peer sent the alert %s", name);
	else
		snprintf(what, sizeof what, "the peer sent the alert number %u", p[1]);
	return fail(rl, s, what);
}

/* One complete post-handshake message; last: it ends its record. */
static int on_handshake_message(struct tls13 *rl, struct stream *s, const uint8_t *m, size_t len,
				bool last)
{
	char what[96];

	switch (m[0]) {
	case HS_NEW_SESSION_TICKET:
		return 0;	/* we keep no sessions */
	case HS_KEY_UPDATE:
		if (len != 5 || m[4] > 1)
			return fail(rl, s, "a malformed KeyUpdate from the peer");
		/* the keys change after this record: nothing may follow it */
		if (!last)
			return fail(rl, s, "the peer's KeyUpdate is not at the end of "
				    "its record");
		if (update_direction(rl->suite, &rl->rd, 0) < 0)
			return fail(rl, s, "cannot follow the peer's KeyUpdate (OpenSSL failed)");
		if (m[4] == 1)
			rl->update_owed = true;
		log_debug("tls: the peer's KeyUpdate%s", m[4] ? ", ours to follow" : "");
		return 0;
	default:
		snprintf(what, sizeof what, "an unexpected post-handshake message (type %u) "
			 "from the peer", m[0]);
		return fail(rl, s, what);
	}
}

static size_t message_len(const uint8_t *p)
{
	return 4 + ((size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
}

/* The content of a handshake record: whole messages, possibly the start or
 * the rest of one spread over records (gathered in rl->hs). */
static int on_handshake(struct tls13 *rl, struct stream *s, const uint8_t *p, size_t len)
{
	const uint8_t *m;
	size_t have;

	if (len == 0)
		return fail(rl, s, "an empty handshake record from the peer");
	if (rl->hs_len) {
		memcpy(rl->hs + rl->hs_len, p, len);	/* HS_CAP holds a message and a record */
		rl->hs_len += (uint32_t)len;
		m = rl->hs;
		have = rl->hs_len;
	} else {
		m = p;
		have = len;
	}
	while (have >= 4 && have >= message_len(m)) {
		size_t n = message_len(m);

		if (on_handshake_message(rl, s, m, n, n == have) < 0)
			return -1;
		m += n;
		have -= n;
	}
	if (have && have >= 4 && message_len(m) > 4 + HS_MSG_MAX)
		return fail(rl, s, "a post-handshake message too large");
	if (have && !rl->hs && !(rl->hs = malloc(HS_CAP)))
		return fail(rl, s, "out of memory");
	if (have)
		memmove(rl->hs, m, have);
	rl->hs_len = (uint32_t)have;
	if (!have) {
		free(rl->hs);
		rl->hs = NULL;
	}
	return 0;
}

/* The content type of an opened record: its last non-zero byte. Sets *len
 * to the content's length; 0 when the record is all padding. */
static uint8_t strip_padding(const uint8_t *p, size_t *len)
{
	size_t n = *len;

	while (n && p[n - 1] == 0)
		n--;
	if (!n)
		return 0;
	*len = n - 1;
	return p[n - 1];
}

/* Opens the complete records in rbuf into buf[*got, len) (or, when the
 * first does not fit, in place as rl->pt). Returns 0 or ST_ERROR. */
static int open_records(struct tls13 *rl, struct stream *s, uint8_t *buf, size_t len, size_t *got)
{
	while (rl->rlen - rl->roff >= TLS13_HEADER && !rl->closed && !rl->pt_len) {
		uint8_t *rec = rl->rbuf + rl->roff, *out;
		size_t clen = (size_t)rec[3] << 8 | rec[4], inner;
		uint8_t ct;

		if (rec[0] != CT_APPLICATION_DATA)
			return fail(rl, s, rec[0] == CT_ALERT ?
				    "an unprotected alert from the peer" :
				    "a record of unexpected type from the peer");
		/* content, type and padding: at most 2^14 + 1 bytes (RFC 8446, 5.4) */
		if (clen > TLS13_PLAINTEXT_MAX + 1 + TLS13_TAG)
			return fail(rl, s, "a record longer than TLS allows");
		if (clen < TLS13_TAG + 1)
			return fail(rl, s, "a record too short to be protected");
		if (rl->rlen - rl->roff < TLS13_HEADER + clen)
			break;
		inner = clen - TLS13_TAG;
		if (len - *got >= inner)
			out = buf + *got;
		else if (*got)
			break;
		else
			out = rec + TLS13_HEADER;
		if (open_record(rl, rec, clen, out) < 0) {
			explicit_bzero(out, inner);
			return fail(rl, s, "a record failed authentication "
				    "(bad_record_mac)");
		}
		rl->roff += (uint32_t)(TLS13_HEADER + clen);
		ct = strip_padding(out, &inner);
		if (rl->hs_len && ct != CT_HANDSHAKE)
			return fail(rl, s, "the peer interleaved a record with a "
				    "handshake message");
		switch (ct) {
		case CT_APPLICATION_DATA:
			if (out == buf + *got) {
				*got += inner;
			} else {
				rl->pt = out;
				rl->pt_len = (uint32_t)inner;
			}
			break;
		case CT_ALERT:
			if (on_alert(rl, s, out, inner) < 0)
				return ST_ERROR;
			break;
		case CT_HANDSHAKE:
			if (on_handshake(rl, s, out, inner) < 0)
				return ST_ERROR;
			break;
		default:
			return fail(rl, s, "a record of unexpected content type from "
				    "the peer");
		}
	}
	if (rl->roff == rl->rlen && !rl->pt_len)
		rl->roff = rl->rlen = 0;
	return 0;
}

/* More bytes from the socket behind those not yet opened: > 0, 0 at EOF,
 * ST_AGAIN, ST_ERROR. */
static ssize_t receive(struct tls13 *rl, struct stream *s)
{
	ssize_t n;

	if (!rl->rbuf && !(rl->rbuf = malloc(RBUF_CAP)))
		return fail(rl, s, "out of memory");
	if (rl->roff) {
		memmove(rl->rbuf, rl->rbuf + rl->roff, rl->rlen - rl->roff);
		rl->rlen -= rl->roff;
		rl->roff = 0;
	}
	n = stream_sock_read(s, rl->rbuf + rl->rlen, RBUF_CAP - rl->rlen);
	if (n > 0)
		rl->rlen += (uint32_t)n;
	else if (n == ST_ERROR)
		rl->failed = true;
	return n;
}

static size_t take_pending(struct tls13 *rl, uint8_t *buf, size_t len)
{
	size_t n = rl->pt_len < len ? rl->pt_len : len;

	memcpy(buf, rl->pt, n);
	rl->pt += n;
	rl->pt_len -= (uint32_t)n;
	if (!rl->pt_len && rl->roff == rl->rlen)
		rl->roff = rl->rlen = 0;
	return n;
}

ssize_t tls13_read(struct tls13 *rl, struct stream *s, void *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	if (rl->failed)
		return ST_ERROR;
	if (len == 0)
		return stream_set_error(s, "TLS read: no room to read into");
	for (;;) {
		if (rl->pt_len)
			return (ssize_t)take_pending(rl, buf, len);
		if (open_records(rl, s, buf, len, &got) < 0)
			return got ? (ssize_t)got : ST_ERROR;	/* rl->failed: next call */
		if (got)
			return (ssize_t)got;
		if (rl->pt_len)
			continue;
		if (rl->closed)
			return 0;
		n = receive(rl, s);
		if (n == 0) {
			log_debug("tls: the peer closed the connection without close_notify");
			rl->closed = true;
			return 0;
		}
		if (n == ST_AGAIN)
			release_rbuf(rl);
		if (n < 0)
			return n;
	}
}

bool tls13_close_notify_received(const struct tls13 *rl)
{
	return rl->close_notify;
}

bool tls13_pending(const struct tls13 *rl)
{
	const uint8_t *rec;

	if (rl->pt_len || rl->failed)
		return true;
	if (!rl->rbuf)
		return false;
	rec = rl->rbuf + rl->roff;
	return rl->rlen - rl->roff >= TLS13_HEADER &&
	       rl->rlen - rl->roff >= TLS13_HEADER + ((size_t)rec[3] << 8 | rec[4]);
}
