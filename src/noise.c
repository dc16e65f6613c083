/* The Noise Protocol Framework, revision 34, on OpenSSL 3 EVP primitives.
 *
 * Section numbers in comments refer to the specification
 * (https://noiseprotocol.org/noise.html). Only what rathole can use is here:
 * DH 25519, ChaChaPoly/AESGCM, SHA256/SHA512/BLAKE2s/BLAKE2b, and the
 * one-way, fundamental interactive and deferred patterns without PSK. */
#include "noise.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ossl.h"

#define HASH_MAX	64
#define BLOCK_MAX	128
#define DH_LEN		32
#define MAX_MSGS	4	/* the longest supported pattern has 4 messages */
#define MAX_TOKENS	8
#define NONCE_MAX	UINT64_MAX	/* reserved (section 5.1): never used to encrypt */

/* ---- algorithms ---- */

struct hash_def {
	const char *name;	/* as in protocol names */
	const char *ossl_name;	/* as OpenSSL fetches it */
	size_t len;		/* HASHLEN */
	size_t block;		/* BLOCKLEN, for HMAC */
};

static const struct hash_def hashes[] = {
	{ "SHA256", "SHA256", 32, 64 },
	{ "SHA512", "SHA512", 64, 128 },
	{ "BLAKE2s", "BLAKE2S-256", 32, 64 },
	{ "BLAKE2b", "BLAKE2B-512", 64, 128 },
};

struct cipher_def {
	const char *name;
	const char *ossl_name;
	bool big_endian_nonce;	/* AESGCM: big-endian counter; ChaChaPoly: little */
	size_t head_unit;	/* see aead_update(); 0: one update per message */
};

static const struct cipher_def ciphers[] = {
	{ "ChaChaPoly", "ChaCha20-Poly1305", false, 128 },
	{ "AESGCM", "AES-256-GCM", true, 0 },
};

/* ---- handshake patterns (sections 7.4, 7.5, 18) ----
 *
 * Written in the specification's notation and parsed at run time, so the
 * table can be compared with the specification line by line. Pre-messages
 * come before "...". */

struct pattern_def {
	const char *name;
	const char *text;
};

static const struct pattern_def pattern_defs[] = {
	/* one-way */
	{ "N",    "<- s\n...\n-> e, es" },
	{ "K",    "-> s\n<- s\n...\n-> e, es, ss" },
	{ "X",    "<- s\n...\n-> e, es, s, ss" },
	/* fundamental interactive */
	{ "NN",   "-> e\n<- e, ee" },
	{ "NK",   "<- s\n...\n-> e, es\n<- e, ee" },
	{ "NX",   "-> e\n<- e, ee, s, es" },
	{ "KN",   "-> s\n...\n-> e\n<- e, ee, se" },
	{ "KK",   "-> s\n<- s\n...\n-> e, es, ss\n<- e, ee, se" },
	{ "KX",   "-> s\n...\n-> e\n<- e, ee, se, s, es" },
	{ "XN",   "-> e\n<- e, ee\n-> s, se" },
	{ "XK",   "<- s\n...\n-> e, es\n<- e, ee\n-> s, se" },
	{ "XX",   "-> e\n<- e, ee, s, es\n-> s, se" },
	{ "IN",   "-> e, s\n<- e, ee, se" },
	{ "IK",   "<- s\n...\n-> e, es, s, ss\n<- e, ee, se" },
	{ "IX",   "-> e, s\n<- e, ee, se, s, es" },
	/* deferred */
	{ "NK1",  "<- s\n...\n-> e\n<- e, ee, es" },
	{ "NX1",  "-> e\n<- e, ee, s\n-> es" },
	{ "X1N",  "-> e\n<- e, ee\n-> s\n<- se" },
	{ "X1K",  "<- s\n...\n-> e, es\n<- e, ee\n-> s\n<- se" },
	{ "XK1",  "<- s\n...\n-> e\n<- e, ee, es\n-> s, se" },
	{ "X1K1", "<- s\n...\n-> e\n<- e, ee, es\n-> s\n<- se" },
	{ "X1X",  "-> e\n<- e, ee, s, es\n-> s\n<- se" },
	{ "XX1",  "-> e\n<- e, ee, s\n-> es, s, se" },
	{ "X1X1", "-> e\n<- e, ee, s\n-> es, s\n<- se" },
	{ "K1N",  "-> s\n...\n-> e\n<- e, ee\n-> se" },
	{ "K1K",  "-> s\n<- s\n...\n-> e, es\n<- e, ee\n-> se" },
	{ "KK1",  "-> s\n<- s\n...\n-> e\n<- e, ee, se, es" },
	{ "K1K1", "-> s\n<- s\n...\n-> e\n<- e, ee, es\n-> se" },
	{ "K1X",  "-> s\n...\n-> e\n<- e, ee, s, es\n-> se" },
	{ "KX1",  "-> s\n...\n-> e\n<- e, ee, se, s\n-> es" },
	{ "K1X1", "-> s\n...\n-> e\n<- e, ee, s\n-> se, es" },
	{ "I1N",  "-> e, s\n<- e, ee\n-> se" },
	{ "I1K",  "<- s\n...\n-> e, es, s\n<- e, ee\n-> se" },
	{ "IK1",  "<- s\n...\n-> e, s\n<- e, ee, se, es" },
	{ "I1K1", "<- s\n...\n-> e, s\n<- e, ee, es\n-> se" },
	{ "I1X",  "-> e, s\n<- e, ee, s, es\n-> se" },
	{ "IX1",  "-> e, s\n<- e, ee, se, s\n-> es" },
	{ "I1X1", "-> e, s\n<- e, ee, s\n-> se, es" },
};

enum token { TOK_E = 1, TOK_S, TOK_EE, TOK_ES, TOK_SE, TOK_SS };

struct pattern {
	bool pre_initiator_s;	/* "-> s" pre-message */
	bool pre_responder_s;	/* "<- s" pre-message */
	int nmsgs;
	int ntokens[MAX_MSGS];
	uint8_t tokens[MAX_MSGS][MAX_TOKENS];
};

struct protocol {
	struct pattern pattern;
	const struct hash_def *hash;
	const struct cipher_def *cipher;
};

static int token_from_text(const char *p, size_t n)
{
	static const char *const names[] = { NULL, "e", "s", "ee", "es", "se", "ss" };

	for (int i = 1; i < 7; i++)
		if (strlen(names[i]) == n && memcmp(names[i], p, n) == 0)
			return i;
	return -1;
}

/* Parses one line "-> e, es" into tokens. Returns the direction ('>' for
 * initiator to responder, '<' for the other way) or -1. */
static int parse_pattern_line(const char *line, size_t len, uint8_t *tokens, int *ntokens)
{
	const char *p = line + 3, *end = line + len;
	int dir;

	if (len < 4 || line[2] != ' ')
		return -1;
	if (line[0] == '-' && line[1] == '>')
		dir = '>';
	else if (line[0] == '<' && line[1] == '-')
		dir = '<';
	else
		return -1;
	*ntokens = 0;
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;
		int tok = token_from_text(p, (size_t)(stop - p));

		if (tok < 0 || *ntokens == MAX_TOKENS)
			return -1;
		tokens[(*ntokens)++] = (uint8_t)tok;
		if (!comma)
			break;
		if (comma + 2 > end || comma[1] != ' ')
			return -1;
		p = comma + 2;
	}
	return dir;
}

/* Parses a pattern_def's text. The table is ours, so failure is a bug;
 * it is still reported rather than trusted. */
static int parse_pattern(const char *text, struct pattern *pat)
{
	bool has_pre = strstr(text, "\n...\n") != NULL;
	bool in_pre = has_pre;
	const char *line = text;

	memset(pat, 0, sizeof *pat);
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		uint8_t tokens[MAX_TOKENS];
		int ntokens, dir;

		if (len == 3 && memcmp(line, "...", 3) == 0) {
			in_pre = false;
		} else {
			dir = parse_pattern_line(line, len, tokens, &ntokens);
			if (dir < 0)
				return -1;
			if (in_pre) {
				/* only static keys appear in our pre-messages */
				if (ntokens != 1 || tokens[0] != TOK_S)
					return -1;
				if (dir == '>')
					pat->pre_initiator_s = true;
				else
					pat->pre_responder_s = true;
			} else {
				/* messages alternate, starting with the initiator */
				if (pat->nmsgs == MAX_MSGS || dir != (pat->nmsgs % 2 ? '<' : '>'))
					return -1;
				memcpy(pat->tokens[pat->nmsgs], tokens, (size_t)ntokens);
				pat->ntokens[pat->nmsgs++] = ntokens;
			}
		}
		line += len + (nl ? 1 : 0);
	}
	return pat->nmsgs > 0 ? 0 : -1;
}

static bool pattern_sends_s(const struct pattern *pat, bool initiator)
{
	for (int m = initiator ? 0 : 1; m < pat->nmsgs; m += 2)
		for (int i = 0; i < pat->ntokens[m]; i++)
			if (pat->tokens[m][i] == TOK_S)
				return true;
	return false;
}

static void list_patterns(char *buf, size_t cap)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sizeof pattern_defs / sizeof pattern_defs[0]; i++) {
		int n = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "", pattern_defs[i].name);

		if (n < 0 || (size_t)n >= cap - off)
			break;
		off += (size_t)n;
	}
}

/* Splits "Noise_<pattern>_<dh>_<cipher>_<hash>" strictly. */
static int parse_protocol(const char *name, struct protocol *proto, char *err, size_t errlen)
{
	char part[4][32];
	const char *p;
	size_t i;

	if (!name || strncmp(name, "Noise_", 6) != 0) {
		snprintf(err, errlen, "\"%s\" is not a Noise protocol name (expected "
			 "Noise_<pattern>_25519_<cipher>_<hash>, for example "
			 "Noise_NK_25519_ChaChaPoly_BLAKE2s)", name ? name : "");
		return -1;
	}
	p = name + 6;
	for (i = 0; i < 4; i++) {
		const char *us = strchr(p, '_');
		size_t len = us && i < 3 ? (size_t)(us - p) : strlen(p);

		if ((i < 3 && !us) || len == 0 || len >= sizeof part[i]) {
			snprintf(err, errlen, "\"%s\" is not a Noise protocol name (expected "
				 "Noise_<pattern>_25519_<cipher>_<hash>, for example "
				 "Noise_NK_25519_ChaChaPoly_BLAKE2s)", name);
			return -1;
		}
		memcpy(part[i], p, len);
		part[i][len] = '\0';
		p += len + 1;
	}
	if (strchr(part[3], '_')) {
		snprintf(err, errlen, "\"%s\" is not a Noise protocol name: too many "
			 "'_'-separated parts (expected Noise_<pattern>_25519_<cipher>_<hash>)", name);
		return -1;
	}

	if (strstr(part[0], "psk")) {
		snprintf(err, errlen, "\"%s\": PSK patterns are not supported; use a pattern "
			 "without psk, such as NK, XX, KK or IK", name);
		return -1;
	}
	if (strstr(part[0], "fallback") || strchr(part[0], '+')) {
		snprintf(err, errlen, "\"%s\": pattern modifiers (%s) are not supported",
			 name, part[0]);
		return -1;
	}
	for (i = 0; i < sizeof pattern_defs / sizeof pattern_defs[0]; i++)
		if (strcmp(part[0], pattern_defs[i].name) == 0)
			break;
	if (i == sizeof pattern_defs / sizeof pattern_defs[0]) {
		char list[256];

		list_patterns(list, sizeof list);
		snprintf(err, errlen, "\"%s\": unknown handshake pattern \"%s\" (supported: %s)",
			 name, part[0], list);
		return -1;
	}
	if (parse_pattern(pattern_defs[i].text, &proto->pattern) < 0) {
		snprintf(err, errlen, "\"%s\": internal error in the pattern table", name);
		return -1;
	}

	if (strcmp(part[1], "25519") != 0) {
		snprintf(err, errlen, "\"%s\": DH function \"%s\" is not supported (only 25519)",
			 name, part[1]);
		return -1;
	}

	proto->cipher = NULL;
	for (i = 0; i < sizeof ciphers / sizeof ciphers[0]; i++)
		if (strcmp(part[2], ciphers[i].name) == 0)
			proto->cipher = &ciphers[i];
	if (!proto->cipher) {
		snprintf(err, errlen, "\"%s\": unknown cipher \"%s\" (supported: ChaChaPoly, AESGCM)",
			 name, part[2]);
		return -1;
	}

	proto->hash = NULL;
	for (i = 0; i < sizeof hashes / sizeof hashes[0]; i++)
		if (strcmp(part[3], hashes[i].name) == 0)
			proto->hash = &hashes[i];
	if (!proto->hash) {
		snprintf(err, errlen, "\"%s\": unknown hash \"%s\" (supported: BLAKE2s, BLAKE2b, "
			 "SHA256, SHA512)", name, part[3]);
		return -1;
	}
	return 0;
}

int noise_check_protocol(const char *name, struct noise_requirements *req,
			 char *err, size_t errlen)
{
	struct protocol proto;
	const struct pattern *pat = &proto.pattern;

	if (parse_protocol(name, &proto, err, errlen) < 0)
		return -1;
	if (req) {
		req->initiator_static = pat->pre_initiator_s || pattern_sends_s(pat, true);
		req->responder_static = pat->pre_responder_s || pattern_sends_s(pat, false);
		req->initiator_knows_remote = pat->pre_responder_s;
		req->responder_knows_remote = pat->pre_initiator_s;
		req->one_way = pat->nmsgs == 1;
	}
	return 0;
}

/* ---- CipherState (section 5.1) ---- */

struct noise_cipher {
	const struct cipher_def *def;
	EVP_CIPHER_CTX *ctx;	/* keyed once; each message only sets the nonce */
	bool has_key;
	uint64_t n;
	uint8_t k[NOISE_KEY_LEN];	/* kept for rekey */
};

static int cipher_set_key(struct noise_cipher *c, const struct cipher_def *def,
			  const uint8_t key[NOISE_KEY_LEN])
{
	if (!c->ctx) {
		c->ctx = EVP_CIPHER_CTX_new();
		if (!c->ctx || !ossl_cipher(def->ossl_name) ||
		    !EVP_CipherInit_ex(c->ctx, ossl_cipher(def->ossl_name), NULL, key, NULL, 1))
			return -1;
	} else if (!EVP_CipherInit_ex(c->ctx, NULL, NULL, key, NULL, -1)) {
		return -1;
	}
	c->def = def;
	memcpy(c->k, key, NOISE_KEY_LEN);
	c->has_key = true;
	c->n = 0;
	return 0;
}

static void cipher_wipe(struct noise_cipher *c)
{
	EVP_CIPHER_CTX_free(c->ctx);
	explicit_bzero(c, sizeof *c);
}

/* The message through the cipher, in two updates for ChaChaPoly: a head of
 * whole 128-byte units, then the rest. OpenSSL's AVX-512 IFMA Poly1305
 * (3.0) hashes a call 8 blocks at a time only when its count of 16-byte
 * blocks is 0 to 3 modulo 8, and otherwise 4 at a time for the whole call:
 * a full 65519-byte message (4094 blocks) went the slow way, ChaCha20-
 * Poly1305 at 2.0 instead of 2.5 GB/s (docs/benchmarks.md, change 14).
 * A head of 8-block multiples always takes the fast way; the rest is
 * under 128 bytes. AES-GCM measured slower split, so it is not. */
static int aead_update(struct noise_cipher *c, const uint8_t *in, uint8_t *out, size_t len,
		       int *outl)
{
	size_t unit = c->def->head_unit;
	size_t head = unit ? len / unit * unit : len;
	int n1 = 0, n2 = 0;

	if (head && !EVP_CipherUpdate(c->ctx, out, &n1, in, (int)head))
		return -1;
	if (len > head && !EVP_CipherUpdate(c->ctx, out + head, &n2, in + head, (int)(len - head)))
		return -1;
	*outl = n1 + n2;
	return 0;
}

/* One AEAD operation with nonce n. in and out may be the same buffer (not
 * otherwise overlapping). Encrypting writes the tag to tag; decrypting
 * checks it and returns -1 on mismatch (out then holds garbage the caller
 * must wipe). */
static int aead(struct noise_cipher *c, int enc, uint64_t n,
		const uint8_t *ad, size_t adlen, const uint8_t *in, uint8_t *out,
		size_t len, uint8_t tag[NOISE_TAG_LEN])
{
	uint8_t iv[12] = { 0 };
	int outl, finl;

	for (int i = 0; i < 8; i++) {
		uint8_t b = (uint8_t)(n >> (8 * i));

		if (c->def->big_endian_nonce)
			iv[11 - i] = b;
		else
			iv[4 + i] = b;
	}
	if (len > NOISE_MAX_MSG || adlen > INT32_MAX)
		return -1;
	if (!EVP_CipherInit_ex(c->ctx, NULL, NULL, NULL, iv, enc))
		return -1;
	if (adlen && !EVP_CipherUpdate(c->ctx, NULL, &outl, ad, (int)adlen))
		return -1;
	if (!enc && !EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_AEAD_SET_TAG, NOISE_TAG_LEN, tag))
		return -1;
	outl = 0;
	if (len && aead_update(c, in, out, len, &outl) < 0)
		return -1;
	/* AEAD finals write nothing; out may be NULL for an empty message */
	if (!EVP_CipherFinal_ex(c->ctx, out ? out + outl : iv, &finl))
		return -1;
	if (enc && !EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_AEAD_GET_TAG, NOISE_TAG_LEN, tag))
		return -1;
	return 0;
}

/* EncryptWithAd: buf holds len plaintext bytes and room for the tag. */
static long cipher_encrypt_ad(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
			      uint8_t *buf, size_t len)
{
	if (!c->has_key)
		return (long)len;
	if (c->n == NONCE_MAX || len > NOISE_MAX_PLAINTEXT)
		return -1;
	if (aead(c, 1, c->n, ad, adlen, buf, buf, len, buf + len) < 0)
		return -1;
	c->n++;
	return (long)(len + NOISE_TAG_LEN);
}

/* DecryptWithAd from in to out (which may be in). On failure out is wiped
 * and the nonce is unchanged. */
static long cipher_decrypt_ad(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
			      const uint8_t *in, uint8_t *out, size_t len)
{
	uint8_t tag[NOISE_TAG_LEN];
	size_t plen;

	if (!c->has_key) {
		if (out != in && len)
			memmove(out, in, len);
		return (long)len;
	}
	if (len < NOISE_TAG_LEN || c->n == NONCE_MAX)
		return -1;
	plen = len - NOISE_TAG_LEN;
	memcpy(tag, in + plen, NOISE_TAG_LEN);
	if (aead(c, 0, c->n, ad, adlen, in, out, plen, tag) < 0) {
		explicit_bzero(out, plen);
		return -1;
	}
	c->n++;
	return (long)plen;
}

long noise_encrypt(struct noise_cipher *c, uint8_t *buf, size_t len)
{
	if (!c || !c->has_key)
		return -1;
	return cipher_encrypt_ad(c, NULL, 0, buf, len);
}

long noise_decrypt(struct noise_cipher *c, uint8_t *buf, size_t len)
{
	if (!c || !c->has_key || len > NOISE_MAX_MSG)
		return -1;
	return cipher_decrypt_ad(c, NULL, 0, buf, buf, len);
}

int noise_cipher_rekey(struct noise_cipher *c)
{
	uint8_t k[NOISE_KEY_LEN + NOISE_TAG_LEN] = { 0 };
	uint64_t n;
	int rc = -1;

	if (!c || !c->has_key)
		return -1;
	n = c->n;
	if (aead(c, 1, NONCE_MAX, NULL, 0, k, k, NOISE_KEY_LEN, k + NOISE_KEY_LEN) == 0 &&
	    cipher_set_key(c, c->def, k) == 0) {
		c->n = n;	/* REKEY keeps the nonce (section 4.2) */
		rc = 0;
	}
	explicit_bzero(k, sizeof k);
	return rc;
}

void noise_cipher_set_nonce(struct noise_cipher *c, uint64_t n)
{
	c->n = n;
}

uint64_t noise_cipher_nonce(const struct noise_cipher *c)
{
	return c->n;
}

void noise_cipher_free(struct noise_cipher *c)
{
	if (!c)
		return;
	cipher_wipe(c);
	free(c);
}

/* ---- hashing: HASH, HMAC-HASH, HKDF (section 4.3) ---- */

struct hasher {
	const struct hash_def *def;
	const EVP_MD *md;
	EVP_MD_CTX *ctx;
};

struct chunk {
	const uint8_t *p;
	size_t len;
};

static int hash_chunks(struct hasher *hs, const struct chunk *c, int n, uint8_t *out)
{
	if (!EVP_DigestInit_ex(hs->ctx, hs->md, NULL))
		return -1;
	for (int i = 0; i < n; i++)
		if (c[i].len && !EVP_DigestUpdate(hs->ctx, c[i].p, c[i].len))
			return -1;
	return EVP_DigestFinal_ex(hs->ctx, out, NULL) ? 0 : -1;
}

/* HMAC per RFC 2104 with the hash's block size. The key is at most HASHLEN
 * bytes here, never longer than a block, so it is only zero-padded. The
 * message is the concatenation of two pieces (HKDF needs "out || byte"). */
static int hmac(struct hasher *hs, const uint8_t *key, size_t keylen,
		const uint8_t *m1, size_t m1len, const uint8_t *m2, size_t m2len,
		uint8_t *out)
{
	uint8_t pad[BLOCK_MAX], inner[HASH_MAX];
	size_t block = hs->def->block;
	int rc;

	memset(pad, 0, block);
	memcpy(pad, key, keylen);
	for (size_t i = 0; i < block; i++)
		pad[i] ^= 0x36;
	rc = hash_chunks(hs, (struct chunk[]){ { pad, block }, { m1, m1len }, { m2, m2len } },
			 3, inner);
	for (size_t i = 0; rc == 0 && i < block; i++)
		pad[i] ^= 0x36 ^ 0x5c;
	if (rc == 0)
		rc = hash_chunks(hs, (struct chunk[]){ { pad, block },
				 { inner, hs->def->len } }, 2, out);
	explicit_bzero(pad, sizeof pad);
	explicit_bzero(inner, sizeof inner);
	return rc;
}

/* HKDF(ck, ikm, 2 or 3): out3 may be NULL. */
static int hkdf(struct hasher *hs, const uint8_t *ck, const uint8_t *ikm, size_t ikmlen,
		uint8_t *out1, uint8_t *out2, uint8_t *out3)
{
	const uint8_t one = 1, two = 2, three = 3;
	size_t hl = hs->def->len;
	uint8_t temp[HASH_MAX];
	int rc;

	rc = hmac(hs, ck, hl, ikm, ikmlen, NULL, 0, temp);
	if (rc == 0)
		rc = hmac(hs, temp, hl, &one, 1, NULL, 0, out1);
	if (rc == 0)
		rc = hmac(hs, temp, hl, out1, hl, &two, 1, out2);
	if (rc == 0 && out3)
		rc = hmac(hs, temp, hl, out2, hl, &three, 1, out3);
	explicit_bzero(temp, sizeof temp);
	return rc;
}

/* ---- DH 25519 (section 12.1) ---- */

struct keypair {
	EVP_PKEY *pkey;		/* holds the private key */
	uint8_t pub[DH_LEN];
	bool present;
};

static int keypair_from_private(struct keypair *kp, const uint8_t priv[DH_LEN])
{
	size_t len = DH_LEN;

	kp->pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, DH_LEN);
	if (!kp->pkey)
		return -1;
	if (!EVP_PKEY_get_raw_public_key(kp->pkey, kp->pub, &len) || len != DH_LEN) {
		EVP_PKEY_free(kp->pkey);
		kp->pkey = NULL;
		return -1;
	}
	kp->present = true;
	return 0;
}

/* An ephemeral key pair, from the process's one X25519 key generation
 * context (ossl.h). */
static int keypair_generate(struct keypair *kp)
{
	EVP_PKEY_CTX *gen = ossl_keygen("X25519");
	size_t len = DH_LEN;

	kp->pkey = NULL;
	if (!gen || EVP_PKEY_generate(gen, &kp->pkey) != 1 ||
	    !EVP_PKEY_get_raw_public_key(kp->pkey, kp->pub, &len) || len != DH_LEN) {
		EVP_PKEY_free(kp->pkey);
		kp->pkey = NULL;
		return -1;
	}
	kp->present = true;
	return 0;
}

static void keypair_wipe(struct keypair *kp)
{
	EVP_PKEY_free(kp->pkey);
	explicit_bzero(kp, sizeof *kp);
}

struct noise_static {
	struct keypair kp;
};

struct noise_static *noise_static_new(const uint8_t priv[NOISE_KEY_LEN],
				      uint8_t pub[NOISE_KEY_LEN])
{
	struct noise_static *st = calloc(1, sizeof *st);

	if (!st)
		return NULL;
	if (keypair_from_private(&st->kp, priv) < 0) {
		free(st);
		return NULL;
	}
	if (pub)
		memcpy(pub, st->kp.pub, NOISE_KEY_LEN);
	return st;
}

void noise_static_free(struct noise_static *st)
{
	if (!st)
		return;
	keypair_wipe(&st->kp);
	free(st);
}

/* A handshake's reference to a prepared static key. */
static int keypair_share(struct keypair *kp, const struct noise_static *st)
{
	if (EVP_PKEY_up_ref(st->kp.pkey) != 1)
		return -1;
	*kp = st->kp;
	return 0;
}

/* DH(kp, pub). An all-zero result (a low-order peer key) is rejected, as
 * section 12.1 allows, so a peer cannot force a known shared secret. */
static int dh(const struct keypair *kp, const uint8_t pub[DH_LEN], uint8_t out[DH_LEN])
{
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pub, DH_LEN);
	EVP_PKEY_CTX *ctx = peer ? EVP_PKEY_CTX_new(kp->pkey, NULL) : NULL;
	size_t len = DH_LEN;
	uint8_t acc = 0;
	int rc = -1;

	if (ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
	    EVP_PKEY_derive(ctx, out, &len) == 1 && len == DH_LEN) {
		for (size_t i = 0; i < DH_LEN; i++)
			acc |= out[i];
		rc = acc ? 0 : -1;
	}
	if (rc < 0)
		explicit_bzero(out, DH_LEN);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	return rc;
}

int noise_generate_keypair(uint8_t priv[NOISE_KEY_LEN], uint8_t pub[NOISE_KEY_LEN])
{
	if (RAND_priv_bytes(priv, NOISE_KEY_LEN) != 1)
		return -1;
	if (noise_public_key(priv, pub) < 0) {
		explicit_bzero(priv, NOISE_KEY_LEN);
		return -1;
	}
	return 0;
}

int noise_public_key(const uint8_t priv[NOISE_KEY_LEN], uint8_t pub[NOISE_KEY_LEN])
{
	struct keypair kp = { 0 };

	if (keypair_from_private(&kp, priv) < 0)
		return -1;
	memcpy(pub, kp.pub, NOISE_KEY_LEN);
	keypair_wipe(&kp);
	return 0;
}

/* ---- SymmetricState and HandshakeState (sections 5.2, 5.3) ---- */

struct noise_hs {
	struct protocol proto;
	enum noise_role role;
	enum noise_next next;
	int msg;			/* index of the next handshake message */
	bool split_done;

	struct hasher hasher;
	uint8_t ck[HASH_MAX], h[HASH_MAX];
	struct noise_cipher cs;

	struct keypair s, e;
	uint8_t rs[DH_LEN], re[DH_LEN];
	bool has_rs, has_re;
};

static size_t hashlen(const struct noise_hs *hs)
{
	return hs->proto.hash->len;
}

static int mix_hash(struct noise_hs *hs, const uint8_t *data, size_t len)
{
	return hash_chunks(&hs->hasher, (struct chunk[]){ { hs->h, hashlen(hs) },
			   { data, len } }, 2, hs->h);
}

static int mix_key(struct noise_hs *hs, const uint8_t *ikm, size_t len)
{
	uint8_t temp_k[HASH_MAX];
	int rc;

	rc = hkdf(&hs->hasher, hs->ck, ikm, len, hs->ck, temp_k, NULL);
	if (rc == 0)	/* only the first 32 bytes of a 64-byte output are a key */
		rc = cipher_set_key(&hs->cs, hs->proto.cipher, temp_k);
	explicit_bzero(temp_k, sizeof temp_k);
	return rc;
}

/* EncryptAndHash: buf holds len plaintext bytes and room for the tag. */
static long encrypt_and_hash(struct noise_hs *hs, uint8_t *buf, size_t len)
{
	long n = cipher_encrypt_ad(&hs->cs, hs->h, hashlen(hs), buf, len);

	if (n < 0 || mix_hash(hs, buf, (size_t)n) < 0)
		return -1;
	return n;
}

/* DecryptAndHash from in to out; in and out must not overlap. */
static long decrypt_and_hash(struct noise_hs *hs, const uint8_t *in, size_t len, uint8_t *out)
{
	long n = cipher_decrypt_ad(&hs->cs, hs->h, hashlen(hs), in, out, len);

	if (n < 0)
		return -1;
	if (mix_hash(hs, in, len) < 0) {
		explicit_bzero(out, (size_t)n);
		return -1;
	}
	return n;
}

/* The DH of a token; es/se are named from the initiator's point of view. */
static int mix_dh_token(struct noise_hs *hs, int tok)
{
	bool init = hs->role == NOISE_INITIATOR;
	const struct keypair *mine;
	const uint8_t *theirs;
	bool have_theirs;
	uint8_t out[DH_LEN];
	int rc;

	switch (tok) {
	case TOK_EE:
		mine = &hs->e, theirs = hs->re, have_theirs = hs->has_re;
		break;
	case TOK_ES:
		mine = init ? &hs->e : &hs->s;
		theirs = init ? hs->rs : hs->re;
		have_theirs = init ? hs->has_rs : hs->has_re;
		break;
	case TOK_SE:
		mine = init ? &hs->s : &hs->e;
		theirs = init ? hs->re : hs->rs;
		have_theirs = init ? hs->has_re : hs->has_rs;
		break;
	default: /* TOK_SS */
		mine = &hs->s, theirs = hs->rs, have_theirs = hs->has_rs;
		break;
	}
	if (!mine->present || !have_theirs)
		return -1;
	rc = dh(mine, theirs, out);
	if (rc == 0)
		rc = mix_key(hs, out, DH_LEN);
	explicit_bzero(out, sizeof out);
	return rc;
}

static int initialize_symmetric(struct noise_hs *hs, const char *name)
{
	size_t len = strlen(name), hl = hashlen(hs);

	if (len <= hl) {
		memset(hs->h, 0, sizeof hs->h);
		memcpy(hs->h, name, len);
	} else if (hash_chunks(&hs->hasher, (struct chunk[]){ { (const uint8_t *)name, len } },
			       1, hs->h) < 0) {
		return -1;
	}
	memcpy(hs->ck, hs->h, hl);
	return 0;
}

/* Checks that the caller gave every key the pattern needs for this role. */
static int check_keys(const struct noise_hs *hs, const char *name,
		      const struct noise_keys *keys, char *err, size_t errlen)
{
	const struct pattern *pat = &hs->proto.pattern;
	bool init = hs->role == NOISE_INITIATOR;
	bool need_s = init ? pat->pre_initiator_s || pattern_sends_s(pat, true)
			   : pat->pre_responder_s || pattern_sends_s(pat, false);
	bool need_rs = init ? pat->pre_responder_s : pat->pre_initiator_s;
	const char *me = init ? "initiator" : "responder";

	if (need_s && !keys->local_static) {
		snprintf(err, errlen, "%s: the %s needs a local static private key", name, me);
		return -1;
	}
	if (need_rs && !keys->remote_static) {
		snprintf(err, errlen, "%s: the %s needs the %s's static public key", name, me,
			 init ? "responder" : "initiator");
		return -1;
	}
	return 0;
}

/* Initialize() of section 5.3: prologue, then the pre-message keys, the
 * initiator's first. */
static int hs_initialize(struct noise_hs *hs, const char *name, const struct noise_keys *keys)
{
	const struct pattern *pat = &hs->proto.pattern;
	bool init = hs->role == NOISE_INITIATOR;

	if (initialize_symmetric(hs, name) < 0)
		return -1;
	if (mix_hash(hs, keys->prologue, keys->prologue ? keys->prologue_len : 0) < 0)
		return -1;
	if (keys->prepared_static) {
		if (keypair_share(&hs->s, keys->prepared_static) < 0)
			return -1;
	} else if (keys->local_static && keypair_from_private(&hs->s, keys->local_static) < 0) {
		return -1;
	}
	if (keys->local_ephemeral && keypair_from_private(&hs->e, keys->local_ephemeral) < 0)
		return -1;
	if ((init && pat->pre_responder_s) || (!init && pat->pre_initiator_s)) {
		memcpy(hs->rs, keys->remote_static, DH_LEN);
		hs->has_rs = true;
	}
	if (pat->pre_initiator_s &&
	    mix_hash(hs, init ? hs->s.pub : hs->rs, DH_LEN) < 0)
		return -1;
	if (pat->pre_responder_s &&
	    mix_hash(hs, init ? hs->rs : hs->s.pub, DH_LEN) < 0)
		return -1;
	return 0;
}

struct noise_hs *noise_hs_new(const char *protocol_name, enum noise_role role,
			      const struct noise_keys *keys, char *err, size_t errlen)
{
	struct noise_hs *hs = calloc(1, sizeof *hs);

	if (!hs) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	hs->role = role;
	if (parse_protocol(protocol_name, &hs->proto, err, errlen) < 0)
		goto fail;
	if (check_keys(hs, protocol_name, keys, err, errlen) < 0)
		goto fail;
	hs->hasher.def = hs->proto.hash;
	hs->hasher.md = ossl_md(hs->proto.hash->ossl_name);
	hs->hasher.ctx = EVP_MD_CTX_new();
	if (!hs->hasher.md || !hs->hasher.ctx || hs_initialize(hs, protocol_name, keys) < 0) {
		snprintf(err, errlen, "%s: cannot set up the handshake (OpenSSL error; is the "
			 "private key valid?)", protocol_name);
		goto fail;
	}
	hs->next = role == NOISE_INITIATOR ? NOISE_WRITE : NOISE_READ;
	return hs;
fail:
	noise_hs_free(hs);
	return NULL;
}

enum noise_next noise_hs_next(const struct noise_hs *hs)
{
	return hs->next;
}

/* After message hs->msg was written or read: whose turn is next. */
static void advance(struct noise_hs *hs)
{
	hs->msg++;
	if (hs->msg == hs->proto.pattern.nmsgs)
		hs->next = NOISE_DONE;
	else
		hs->next = hs->next == NOISE_WRITE ? NOISE_READ : NOISE_WRITE;
}

static long hs_fail(struct noise_hs *hs)
{
	hs->next = NOISE_FAILED;
	return -1;
}

/* Room left in the output for n more bytes? */
#define ROOM(off, n, cap) ((off) <= (cap) && (n) <= (cap) - (off))

long noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
		    uint8_t *out, size_t cap)
{
	const uint8_t *tokens;
	size_t off = 0, need;
	long n;

	if (hs->next != NOISE_WRITE)
		return hs_fail(hs);
	if (cap > NOISE_MAX_MSG)
		cap = NOISE_MAX_MSG;
	tokens = hs->proto.pattern.tokens[hs->msg];
	for (int i = 0; i < hs->proto.pattern.ntokens[hs->msg]; i++) {
		switch (tokens[i]) {
		case TOK_E:
			if (!hs->e.present && keypair_generate(&hs->e) < 0)
				return hs_fail(hs);
			if (!ROOM(off, DH_LEN, cap) || mix_hash(hs, hs->e.pub, DH_LEN) < 0)
				return hs_fail(hs);
			memcpy(out + off, hs->e.pub, DH_LEN);
			off += DH_LEN;
			break;
		case TOK_S:
			need = DH_LEN + (hs->cs.has_key ? NOISE_TAG_LEN : 0);
			if (!hs->s.present || !ROOM(off, need, cap))
				return hs_fail(hs);
			memcpy(out + off, hs->s.pub, DH_LEN);
			n = encrypt_and_hash(hs, out + off, DH_LEN);
			if (n < 0)
				return hs_fail(hs);
			off += (size_t)n;
			break;
		default:
			if (mix_dh_token(hs, tokens[i]) < 0)
				return hs_fail(hs);
		}
	}
	if (!ROOM(off, plen, cap) || (hs->cs.has_key && !ROOM(off + plen, NOISE_TAG_LEN, cap)))
		return hs_fail(hs);
	if (plen)
		memmove(out + off, payload, plen);
	n = encrypt_and_hash(hs, out + off, plen);
	if (n < 0)
		return hs_fail(hs);
	advance(hs);
	return (long)(off + (size_t)n);
}

long noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t len,
		   uint8_t *payload, size_t cap)
{
	const uint8_t *tokens;
	size_t off = 0, need;
	long n;

	if (hs->next != NOISE_READ || len > NOISE_MAX_MSG)
		return hs_fail(hs);
	tokens = hs->proto.pattern.tokens[hs->msg];
	for (int i = 0; i < hs->proto.pattern.ntokens[hs->msg]; i++) {
		switch (tokens[i]) {
		case TOK_E:
			if (len - off < DH_LEN)
				return hs_fail(hs);
			memcpy(hs->re, msg + off, DH_LEN);
			hs->has_re = true;
			if (mix_hash(hs, hs->re, DH_LEN) < 0)
				return hs_fail(hs);
			off += DH_LEN;
			break;
		case TOK_S:
			need = DH_LEN + (hs->cs.has_key ? NOISE_TAG_LEN : 0);
			if (len - off < need || decrypt_and_hash(hs, msg + off, need, hs->rs) < 0)
				return hs_fail(hs);
			hs->has_rs = true;
			off += need;
			break;
		default:
			if (mix_dh_token(hs, tokens[i]) < 0)
				return hs_fail(hs);
		}
	}
	need = len - off;
	if (hs->cs.has_key && need < NOISE_TAG_LEN)
		return hs_fail(hs);
	if ((hs->cs.has_key ? need - NOISE_TAG_LEN : need) > cap)
		return hs_fail(hs);
	n = decrypt_and_hash(hs, msg + off, need, payload);
	if (n < 0)
		return hs_fail(hs);
	advance(hs);
	return n;
}

static struct noise_cipher *cipher_new(const struct cipher_def *def, const uint8_t *key)
{
	struct noise_cipher *c = calloc(1, sizeof *c);

	if (c && cipher_set_key(c, def, key) < 0) {
		noise_cipher_free(c);
		c = NULL;
	}
	return c;
}

struct noise_cipher *noise_cipher_new(const char *name, const uint8_t key[NOISE_KEY_LEN])
{
	for (size_t i = 0; i < sizeof ciphers / sizeof ciphers[0]; i++)
		if (strcmp(name, ciphers[i].name) == 0)
			return cipher_new(&ciphers[i], key);
	return NULL;
}

int noise_hs_split(struct noise_hs *hs, struct noise_cipher **send,
		   struct noise_cipher **recv)
{
	uint8_t k1[HASH_MAX], k2[HASH_MAX];
	struct noise_cipher *c1 = NULL, *c2 = NULL;
	int rc = -1;

	*send = *recv = NULL;
	if (hs->next != NOISE_DONE || hs->split_done)
		return -1;
	if (hkdf(&hs->hasher, hs->ck, NULL, 0, k1, k2, NULL) == 0) {
		c1 = cipher_new(hs->proto.cipher, k1);	/* initiator -> responder */
		c2 = cipher_new(hs->proto.cipher, k2);	/* responder -> initiator */
	}
	if (c1 && c2) {
		*send = hs->role == NOISE_INITIATOR ? c1 : c2;
		*recv = hs->role == NOISE_INITIATOR ? c2 : c1;
		hs->split_done = true;
		rc = 0;
	} else {
		noise_cipher_free(c1);
		noise_cipher_free(c2);
	}
	/* Nothing secret is needed any more: only h stays, for noise_hs_hash. */
	explicit_bzero(k1, sizeof k1);
	explicit_bzero(k2, sizeof k2);
	explicit_bzero(hs->ck, sizeof hs->ck);
	cipher_wipe(&hs->cs);
	keypair_wipe(&hs->e);
	keypair_wipe(&hs->s);
	if (rc < 0)
		hs->next = NOISE_FAILED;
	return rc;
}

const uint8_t *noise_hs_hash(const struct noise_hs *hs, size_t *len)
{
	*len = hashlen(hs);
	return hs->h;
}

const uint8_t *noise_hs_remote_static(const struct noise_hs *hs)
{
	return hs->has_rs ? hs->rs : NULL;
}

void noise_hs_free(struct noise_hs *hs)
{
	if (!hs)
		return;
	cipher_wipe(&hs->cs);
	keypair_wipe(&hs->s);
	keypair_wipe(&hs->e);
	EVP_MD_CTX_free(hs->hasher.ctx);
	explicit_bzero(hs, sizeof *hs);
	free(hs);
}
