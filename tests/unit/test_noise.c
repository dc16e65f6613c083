/* Noise: every vector of $TESTDATA/noise/vectors.json in both roles, plus
 * the failure paths (tampering, wrong keys, nonce exhaustion, names) and
 * messages from empty to the largest against a one-update encryption. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "base64.h"
#include "check.h"
#include "json.h"
#include "noise.h"

#define BUF_MAX (NOISE_MAX_MSG + 64)

/* ---- helpers ---- */

struct bytes {
	uint8_t *p;
	size_t len;
	int present;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* The hex string member key of obj, decoded; present = 0 when absent. */
static struct bytes get_hex(const struct json *obj, const char *key)
{
	const struct json *j = json_get(obj, key);
	struct bytes b = { NULL, 0, 0 };

	if (!j || j->type != JSON_STRING || j->len % 2)
		return b;
	b.p = malloc(j->len / 2 + 1);
	if (!b.p)
		abort();
	for (size_t i = 0; i < j->len / 2; i++) {
		int hi = hexval(j->str[2 * i]), lo = hexval(j->str[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(b.p);
			b.p = NULL;
			return b;
		}
		b.p[i] = (uint8_t)(hi << 4 | lo);
	}
	b.len = j->len / 2;
	b.present = 1;
	return b;
}

static void bytes_free(struct bytes *b)
{
	free(b->p);
	b->p = NULL;
}

/* ---- the vectors ---- */

struct side {
	struct noise_hs *hs;
	struct noise_cipher *send, *recv;
};

struct vector_keys {
	struct bytes prologue[2], stat[2], eph[2], remote[2];
};

static void load_keys(const struct json *v, struct vector_keys *k)
{
	static const char *const names[2][4] = {
		{ "init_prologue", "init_static", "init_ephemeral", "init_remote_static" },
		{ "resp_prologue", "resp_static", "resp_ephemeral", "resp_remote_static" },
	};

	for (int r = 0; r < 2; r++) {
		k->prologue[r] = get_hex(v, names[r][0]);
		k->stat[r] = get_hex(v, names[r][1]);
		k->eph[r] = get_hex(v, names[r][2]);
		k->remote[r] = get_hex(v, names[r][3]);
	}
}

static void free_keys(struct vector_keys *k)
{
	for (int r = 0; r < 2; r++) {
		bytes_free(&k->prologue[r]);
		bytes_free(&k->stat[r]);
		bytes_free(&k->eph[r]);
		bytes_free(&k->remote[r]);
	}
}

static struct noise_hs *make_side(const char *name, enum noise_role role,
				  const struct vector_keys *k)
{
	int r = role == NOISE_INITIATOR ? 0 : 1;
	struct noise_keys keys = {
		.local_static = k->stat[r].present ? k->stat[r].p : NULL,
		.remote_static = k->remote[r].present ? k->remote[r].p : NULL,
		.local_ephemeral = k->eph[r].present ? k->eph[r].p : NULL,
		.prologue = k->prologue[r].p,
		.prologue_len = k->prologue[r].len,
	};
	char err[256];
	struct noise_hs *hs = noise_hs_new(name, role, &keys, err, sizeof err);

	if (!hs)
		fprintf(stderr, "%s: %s\n", name, err);
	return hs;
}

/* One message: the writer must produce ct exactly, the reader must recover pt. */
static int check_handshake_message(struct side *w, struct side *r,
				   const struct bytes *pt, const struct bytes *ct)
{
	static uint8_t out[BUF_MAX], back[BUF_MAX];
	long n;

	if (noise_hs_next(w->hs) != NOISE_WRITE || noise_hs_next(r->hs) != NOISE_READ)
		return -1;
	n = noise_hs_write(w->hs, pt->p, pt->len, out, sizeof out);
	if (n < 0 || (size_t)n != ct->len || memcmp(out, ct->p, ct->len) != 0)
		return -1;
	n = noise_hs_read(r->hs, ct->p, ct->len, back, sizeof back);
	if (n < 0 || (size_t)n != pt->len || memcmp(back, pt->p, pt->len) != 0)
		return -1;
	return 0;
}

static int check_transport_message(struct side *w, struct side *r,
				   const struct bytes *pt, const struct bytes *ct)
{
	static uint8_t buf[BUF_MAX];
	long n;

	memcpy(buf, pt->p, pt->len);
	n = noise_encrypt(w->send, buf, pt->len);
	if (n < 0 || (size_t)n != ct->len || memcmp(buf, ct->p, ct->len) != 0)
		return -1;
	n = noise_decrypt(r->recv, buf, (size_t)n);
	if (n < 0 || (size_t)n != pt->len || memcmp(buf, pt->p, pt->len) != 0)
		return -1;
	return 0;
}

/* Runs one vector; returns 0 or -1 with why in err. */
static int run_vector(const struct json *v, const char *name, int one_way, char *err, size_t errlen)
{
	struct vector_keys k;
	struct side sides[2] = { { 0 }, { 0 } };
	const struct json *msgs = json_get(v, "messages");
	struct bytes hash = get_hex(v, "handshake_hash");
	int rc = -1;
	size_t i;

	load_keys(v, &k);
	sides[0].hs = make_side(name, NOISE_INITIATOR, &k);
	sides[1].hs = make_side(name, NOISE_RESPONDER, &k);
	if (!sides[0].hs || !sides[1].hs || !msgs || msgs->type != JSON_ARRAY) {
		snprintf(err, errlen, "setup failed");
		goto out;
	}
	for (i = 0; i < msgs->len; i++) {
		int from = one_way ? 0 : (int)(i % 2);
		struct side *w = &sides[from], *r = &sides[1 - from];
		struct bytes pt = get_hex(msgs->items[i], "payload");
		struct bytes ct = get_hex(msgs->items[i], "ciphertext");
		int bad;

		if (noise_hs_next(w->hs) == NOISE_DONE && !w->send) {
			if (noise_hs_next(r->hs) != NOISE_DONE) {
				snprintf(err, errlen, "message %zu: one side done, the other not", i);
				goto msg_fail;
			}
			for (int s = 0; s < 2; s++) {
				size_t hl;
				const uint8_t *h = noise_hs_hash(sides[s].hs, &hl);

				if (hash.present && (hl != hash.len || memcmp(h, hash.p, hl) != 0)) {
					snprintf(err, errlen, "handshake hash of the %s",
						 s ? "responder" : "initiator");
					goto msg_fail;
				}
				if (noise_hs_split(sides[s].hs, &sides[s].send, &sides[s].recv) < 0) {
					snprintf(err, errlen, "split failed");
					goto msg_fail;
				}
			}
			if (!hash.present) {
				size_t l0, l1;
				const uint8_t *h0 = noise_hs_hash(sides[0].hs, &l0);
				const uint8_t *h1 = noise_hs_hash(sides[1].hs, &l1);

				if (l0 != l1 || memcmp(h0, h1, l0) != 0) {
					snprintf(err, errlen, "handshake hashes differ");
					goto msg_fail;
				}
			}
		}
		if (!pt.present || !ct.present) {
			snprintf(err, errlen, "message %zu: bad hex", i);
			goto msg_fail;
		}
		if (w->send)
			bad = check_transport_message(w, r, &pt, &ct);
		else
			bad = check_handshake_message(w, r, &pt, &ct);
		if (bad) {
			snprintf(err, errlen, "%s message %zu differs", w->send ? "transport" : "handshake", i);
			goto msg_fail;
		}
		bytes_free(&pt);
		bytes_free(&ct);
		continue;
msg_fail:
		bytes_free(&pt);
		bytes_free(&ct);
		goto out;
	}
	if (!sides[0].send) {
		snprintf(err, errlen, "the vector ends before the handshake does");
		goto out;
	}
	rc = 0;
out:
	for (int s = 0; s < 2; s++) {
		noise_hs_free(sides[s].hs);
		noise_cipher_free(sides[s].send);
		noise_cipher_free(sides[s].recv);
	}
	bytes_free(&hash);
	free_keys(&k);
	return rc;
}

static void test_vectors(void)
{
	char path[1024];
	struct json *root, *vs;
	int passed = 0, skipped = 0, failed = 0;

	snprintf(path, sizeof path, "%s/noise/vectors.json", testdata_dir());
	root = json_load_file(path);
	CHECKF(root != NULL, "cannot load %s (set TESTDATA)", path);
	if (!root)
		return;
	vs = json_get(root, "vectors");
	CHECK(vs && vs->type == JSON_ARRAY);
	for (size_t i = 0; vs && i < vs->len; i++) {
		const struct json *name = json_get(vs->items[i], "protocol_name");
		const struct json *src = json_get(vs->items[i], "source");
		struct noise_requirements req;
		char err[512];

		if (!name || name->type != JSON_STRING) {
			failed++;
			fprintf(stderr, "vector %zu: no protocol_name\n", i);
			continue;
		}
		if (noise_check_protocol(name->str, &req, err, sizeof err) < 0) {
			skipped++;
			printf("skipped: %s (%s)\n", name->str, err);
			continue;
		}
		if (run_vector(vs->items[i], name->str, req.one_way, err, sizeof err) < 0) {
			failed++;
			fprintf(stderr, "vector %zu %s (%s): %s\n", i, name->str,
				src && src->type == JSON_STRING ? src->str : "?", err);
		} else {
			passed++;
		}
	}
	printf("noise vectors: %d passed, %d skipped, %d failed\n", passed, skipped, failed);
	CHECKF(failed == 0, "%d vectors failed", failed);
	CHECKF(passed == 608, "%d vectors passed, expected 608", passed);
	json_free(root);
}

/* ---- handshakes between fresh keys ---- */

struct pair {
	struct noise_hs *i, *r;
	struct noise_cipher *is, *ir, *rs, *rr;
	uint8_t ipriv[32], ipub[32], rpriv[32], rpub[32];
};

static void pair_init(struct pair *p, const char *name, const uint8_t *i_remote,
		      const uint8_t *r_remote)
{
	struct noise_keys ik = { 0 }, rk = { 0 };
	char err[256];

	memset(p, 0, sizeof *p);
	CHECK(noise_generate_keypair(p->ipriv, p->ipub) == 0);
	CHECK(noise_generate_keypair(p->rpriv, p->rpub) == 0);
	ik.local_static = p->ipriv;
	ik.remote_static = i_remote ? i_remote : p->rpub;
	rk.local_static = p->rpriv;
	rk.remote_static = r_remote ? r_remote : p->ipub;
	p->i = noise_hs_new(name, NOISE_INITIATOR, &ik, err, sizeof err);
	CHECKF(p->i != NULL, "%s", err);
	p->r = noise_hs_new(name, NOISE_RESPONDER, &rk, err, sizeof err);
	CHECKF(p->r != NULL, "%s", err);
}

static void pair_free(struct pair *p)
{
	noise_hs_free(p->i);
	noise_hs_free(p->r);
	noise_cipher_free(p->is);
	noise_cipher_free(p->ir);
	noise_cipher_free(p->rs);
	noise_cipher_free(p->rr);
}

/* Runs the handshake with empty payloads. Returns 0 when both sides are done;
 * -1 when a side fails (*who = 'i' or 'r' for the side that detected it). */
static int pair_handshake(struct pair *p, int *who)
{
	uint8_t msg[256], payload[64];

	for (int step = 0; step < 8; step++) {
		struct noise_hs *w = noise_hs_next(p->i) == NOISE_WRITE ? p->i : p->r;
		struct noise_hs *r = w == p->i ? p->r : p->i;
		long n;

		if (noise_hs_next(p->i) == NOISE_DONE && noise_hs_next(p->r) == NOISE_DONE) {
			CHECK(noise_hs_split(p->i, &p->is, &p->ir) == 0);
			CHECK(noise_hs_split(p->r, &p->rs, &p->rr) == 0);
			return 0;
		}
		n = noise_hs_write(w, NULL, 0, msg, sizeof msg);
		if (n < 0) {
			*who = w == p->i ? 'i' : 'r';
			return -1;
		}
		if (noise_hs_read(r, msg, (size_t)n, payload, sizeof payload) < 0) {
			*who = r == p->i ? 'i' : 'r';
			return -1;
		}
	}
	return -1;
}

static void test_tampering(void)
{
	struct pair p;
	uint8_t buf[128];
	long n;
	int who = 0;

	pair_init(&p, "Noise_NK_25519_ChaChaPoly_BLAKE2s", NULL, NULL);
	CHECK(pair_handshake(&p, &who) == 0);
	memcpy(buf, "hello", 5);
	n = noise_encrypt(p.is, buf, 5);
	CHECK(n == 5 + NOISE_TAG_LEN);
	buf[2] ^= 0x01;
	CHECK(noise_decrypt(p.rr, buf, (size_t)n) == -1);
	for (int i = 0; i < 5; i++)
		CHECK(buf[i] == 0);
	CHECK(noise_cipher_nonce(p.rr) == 0);	/* failure does not consume a nonce */
	/* the untampered message still decrypts afterwards */
	memcpy(buf, "hello", 5);
	noise_cipher_set_nonce(p.is, 0);
	n = noise_encrypt(p.is, buf, 5);
	CHECK(noise_decrypt(p.rr, buf, (size_t)n) == 5 && memcmp(buf, "hello", 5) == 0);
	/* the tag itself */
	memcpy(buf, "hello", 5);
	n = noise_encrypt(p.is, buf, 5);
	buf[n - 1] ^= 0x80;
	CHECK(noise_decrypt(p.rr, buf, (size_t)n) == -1);
	CHECK(noise_decrypt(p.rr, buf, 15) == -1);	/* shorter than a tag */
	/* the other direction */
	memcpy(buf, "world!", 6);
	n = noise_encrypt(p.rs, buf, 6);
	CHECK(noise_decrypt(p.ir, buf, (size_t)n) == 6 && memcmp(buf, "world!", 6) == 0);
	pair_free(&p);

	/* AESGCM too */
	pair_init(&p, "Noise_XX_25519_AESGCM_SHA256", NULL, NULL);
	CHECK(pair_handshake(&p, &who) == 0);
	memcpy(buf, "abc", 3);
	n = noise_encrypt(p.is, buf, 3);
	buf[0] ^= 0x40;
	CHECK(noise_decrypt(p.rr, buf, (size_t)n) == -1);
	/* XX transmits both statics: each side learns the other's key */
	CHECK(noise_hs_remote_static(p.i) && memcmp(noise_hs_remote_static(p.i), p.rpub, 32) == 0);
	CHECK(noise_hs_remote_static(p.r) && memcmp(noise_hs_remote_static(p.r), p.ipub, 32) == 0);
	pair_free(&p);
}

static void test_wrong_keys(void)
{
	struct pair p;
	uint8_t wrong_priv[32], wrong_pub[32], msg[256], payload[64];
	int who = 0;

	CHECK(noise_generate_keypair(wrong_priv, wrong_pub) == 0);

	/* NK: the initiator encrypts message 1's (empty) payload under es with
	 * the wrong key; the responder's tag check fails on reading message 1. */
	pair_init(&p, "Noise_NK_25519_ChaChaPoly_BLAKE2s", wrong_pub, NULL);
	CHECK(pair_handshake(&p, &who) == -1);
	CHECK(who == 'r');
	CHECK(noise_hs_next(p.r) == NOISE_FAILED);
	CHECK(noise_hs_next(p.i) == NOISE_READ);
	/* a failed state stays failed */
	CHECK(noise_hs_write(p.r, NULL, 0, msg, sizeof msg) == -1);
	CHECK(noise_hs_read(p.r, msg, 48, payload, sizeof payload) == -1);
	pair_free(&p);

	/* KK: the responder knows the wrong initiator key: ss differs, so again
	 * message 1 fails on the responder. */
	pair_init(&p, "Noise_KK_25519_ChaChaPoly_BLAKE2s", NULL, wrong_pub);
	CHECK(pair_handshake(&p, &who) == -1);
	CHECK(who == 'r');
	pair_free(&p);

	/* KN: only the second message depends on the initiator's static (se),
	 * so the initiator detects a responder with the wrong initiator key. */
	pair_init(&p, "Noise_KN_25519_AESGCM_BLAKE2b", NULL, wrong_pub);
	CHECK(pair_handshake(&p, &who) == -1);
	CHECK(who == 'i');
	pair_free(&p);

	/* truncated messages fail cleanly */
	pair_init(&p, "Noise_IK_25519_ChaChaPoly_SHA512", NULL, NULL);
	{
		long n = noise_hs_write(p.i, NULL, 0, msg, sizeof msg);

		CHECK(n == 32 + 48 + 16);
		CHECK(noise_hs_read(p.r, msg, (size_t)n - 1, payload, sizeof payload) == -1);
		CHECK(noise_hs_next(p.r) == NOISE_FAILED);
	}
	pair_free(&p);

	/* the output buffer is too small: -1, not an overflow */
	pair_init(&p, "Noise_XX_25519_ChaChaPoly_BLAKE2s", NULL, NULL);
	CHECK(noise_hs_write(p.i, NULL, 0, msg, 31) == -1);
	CHECK(noise_hs_next(p.i) == NOISE_FAILED);
	pair_free(&p);

	/* a payload larger than the caller's buffer */
	pair_init(&p, "Noise_NN_25519_ChaChaPoly_BLAKE2s", NULL, NULL);
	{
		long n = noise_hs_write(p.i, (const uint8_t *)"0123456789", 10, msg, sizeof msg);

		CHECK(n == 42);
		CHECK(noise_hs_read(p.r, msg, (size_t)n, payload, 9) == -1);
	}
	pair_free(&p);

	/* a low-order ephemeral key gives an all-zero DH result: rejected */
	pair_init(&p, "Noise_NN_25519_ChaChaPoly_BLAKE2s", NULL, NULL);
	{
		uint8_t zero_e[32] = { 0 };

		CHECK(noise_hs_read(p.r, zero_e, 32, payload, sizeof payload) == 32 - 32);
		CHECK(noise_hs_next(p.r) == NOISE_WRITE);
		CHECK(noise_hs_write(p.r, NULL, 0, msg, sizeof msg) == -1);	/* ee */
		CHECK(noise_hs_next(p.r) == NOISE_FAILED);
	}
	pair_free(&p);
}

static void test_nonce_exhaustion(void)
{
	struct pair p;
	uint8_t buf[64];
	int who;

	pair_init(&p, "Noise_NN_25519_ChaChaPoly_BLAKE2s", NULL, NULL);
	CHECK(pair_handshake(&p, &who) == 0);
	noise_cipher_set_nonce(p.is, UINT64_MAX - 1);
	noise_cipher_set_nonce(p.rr, UINT64_MAX - 1);
	memcpy(buf, "last", 4);
	CHECK(noise_encrypt(p.is, buf, 4) == 20);	/* 2^64-2: the last usable nonce */
	CHECK(noise_decrypt(p.rr, buf, 20) == 4);
	CHECK(noise_cipher_nonce(p.is) == UINT64_MAX);
	memcpy(buf, "more", 4);
	CHECK(noise_encrypt(p.is, buf, 4) == -1);	/* 2^64-1 is reserved */
	CHECK(noise_decrypt(p.rr, buf, 20) == -1);
	/* too long for one Noise message */
	{
		uint8_t *big = calloc(1, NOISE_MAX_MSG + 16);

		noise_cipher_set_nonce(p.is, 0);
		CHECK(big && noise_encrypt(p.is, big, NOISE_MAX_PLAINTEXT + 1) == -1);
		CHECK(big && noise_encrypt(p.is, big, NOISE_MAX_PLAINTEXT) == NOISE_MAX_MSG);
		free(big);
	}
	pair_free(&p);
}

/* ENCRYPT(k, n, ad, plaintext) of section 5.1 in one EVP update, from the
 * specification: the reference for noise_encrypt(), which splits the update. */
static size_t spec_encrypt(const char *name, const uint8_t key[32], uint64_t n,
			   const uint8_t *pt, size_t len, uint8_t *out)
{
	bool chacha = strcmp(name, "ChaChaPoly") == 0;
	EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, chacha ? "ChaCha20-Poly1305" : "AES-256-GCM",
					      NULL);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t iv[12] = { 0 };
	int outl = 0, finl = 0;
	bool ok;

	for (int i = 0; i < 8; i++) {
		if (chacha)
			iv[4 + i] = (uint8_t)(n >> (8 * i));	/* 32 zero bits, little-endian n */
		else
			iv[11 - i] = (uint8_t)(n >> (8 * i));	/* 32 zero bits, big-endian n */
	}
	ok = ctx && cipher && EVP_CipherInit_ex(ctx, cipher, NULL, key, iv, 1) &&
	     (len == 0 || EVP_CipherUpdate(ctx, out, &outl, pt, (int)len)) &&
	     EVP_CipherFinal_ex(ctx, out + outl, &finl) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, NOISE_TAG_LEN, out + len);
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(cipher);
	return ok ? len + NOISE_TAG_LEN : 0;
}

/* Messages of every size class the split update treats differently: under
 * one 128-byte unit, exactly whole units, whole units and a rest, the
 * largest. Each must be the specification's ciphertext, and must decrypt,
 * and a flipped bit anywhere must fail. */
static void test_long_messages(void)
{
	static const char *names[] = { "ChaChaPoly", "AESGCM" };
	static const size_t lens[] = { 0, 1, 15, 16, 127, 128, 129, 255, 1000, 4096,
				       65519 - 128, 65471, NOISE_MAX_PLAINTEXT };
	uint8_t key[32];
	uint8_t *pt = malloc(NOISE_MAX_MSG), *buf = malloc(NOISE_MAX_MSG),
		*want = malloc(NOISE_MAX_MSG);

	CHECK(pt && buf && want);
	if (!pt || !buf || !want)
		goto out;
	for (size_t i = 0; i < 32; i++)
		key[i] = (uint8_t)(0xa5 ^ i * 7);
	for (size_t i = 0; i < NOISE_MAX_MSG; i++)
		pt[i] = (uint8_t)(i * 131 + (i >> 8));
	for (size_t c = 0; c < 2; c++) {
		struct noise_cipher *enc = noise_cipher_new(names[c], key);
		struct noise_cipher *dec = noise_cipher_new(names[c], key);

		CHECK(enc && dec);
		for (size_t i = 0; enc && dec && i < sizeof lens / sizeof lens[0]; i++) {
			size_t len = lens[i], wlen = spec_encrypt(names[c], key, i, pt, len, want);
			long n;

			memcpy(buf, pt, len);
			n = noise_encrypt(enc, buf, len);
			CHECKF(wlen && n == (long)wlen && memcmp(buf, want, wlen) == 0,
			       "%s: %zu bytes: not the specification's ciphertext", names[c], len);
			buf[(len * 7) % (len + NOISE_TAG_LEN)] ^= 0x10;
			noise_cipher_set_nonce(dec, i);
			CHECKF(noise_decrypt(dec, buf, wlen) == -1,
			       "%s: %zu bytes: a flipped bit authenticated", names[c], len);
			memcpy(buf, want, wlen);
			noise_cipher_set_nonce(dec, i);
			n = noise_decrypt(dec, buf, wlen);
			CHECKF(n == (long)len && memcmp(buf, pt, len) == 0,
			       "%s: %zu bytes: does not decrypt", names[c], len);
		}
		noise_cipher_free(enc);
		noise_cipher_free(dec);
	}
	CHECK(noise_cipher_new("AESGCM256", key) == NULL);
out:
	free(pt);
	free(buf);
	free(want);
}

static void test_rekey(void)
{
	struct pair p;
	uint8_t buf[64], copy[64];
	int who;

	pair_init(&p, "Noise_NN_25519_AESGCM_SHA256", NULL, NULL);
	CHECK(pair_handshake(&p, &who) == 0);
	CHECK(noise_cipher_rekey(p.is) == 0);
	memcpy(buf, "rekeyed", 7);
	CHECK(noise_encrypt(p.is, buf, 7) == 23);
	memcpy(copy, buf, 23);
	CHECK(noise_decrypt(p.rr, buf, 23) == -1);	/* the receiver did not rekey */
	CHECK(noise_cipher_rekey(p.rr) == 0);
	CHECK(noise_decrypt(p.rr, copy, 23) == 7 && memcmp(copy, "rekeyed", 7) == 0);
	pair_free(&p);
}

/* ---- names, requirements, keys ---- */

static void expect_error(const char *name, const char *needle)
{
	char err[512] = "";

	CHECKF(noise_check_protocol(name, NULL, err, sizeof err) == -1, "%s accepted", name);
	CHECKF(strstr(err, needle) != NULL, "%s: \"%s\" lacks \"%s\"", name, err, needle);
}

static void test_names(void)
{
	struct noise_requirements r;
	char err[512];
	struct noise_keys k = { 0 };

	expect_error("Noise_NK_448_ChaChaPoly_BLAKE2s", "448");
	expect_error("Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s", "PSK");
	expect_error("Noise_XXfallback_25519_ChaChaPoly_BLAKE2s", "modifiers");
	expect_error("Noise_ZZ_25519_ChaChaPoly_BLAKE2s", "unknown handshake pattern \"ZZ\"");
	expect_error("Noise_NK_25519_AES_BLAKE2s", "unknown cipher");
	expect_error("Noise_NK_25519_ChaChaPoly_MD5", "unknown hash");
	expect_error("Noise_NK_25519_ChaChaPoly", "not a Noise protocol name");
	expect_error("Noise_NK_25519_ChaChaPoly_BLAKE2s_", "too many");
	expect_error("noise_NK_25519_ChaChaPoly_BLAKE2s", "not a Noise protocol name");
	expect_error("", "not a Noise protocol name");
	expect_error("Noise__25519_ChaChaPoly_BLAKE2s", "not a Noise protocol name");
	expect_error("Noise_nk_25519_ChaChaPoly_BLAKE2s", "unknown handshake pattern");

	CHECK(noise_check_protocol("Noise_NK_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(!r.initiator_static && r.responder_static && r.initiator_knows_remote &&
	      !r.responder_knows_remote && !r.one_way);
	CHECK(noise_check_protocol("Noise_XX_25519_AESGCM_SHA512", &r, err, sizeof err) == 0);
	CHECK(r.initiator_static && r.responder_static && !r.initiator_knows_remote &&
	      !r.responder_knows_remote && !r.one_way);
	CHECK(noise_check_protocol("Noise_KK_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(r.initiator_static && r.responder_static && r.initiator_knows_remote &&
	      r.responder_knows_remote);
	CHECK(noise_check_protocol("Noise_IK_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(r.initiator_static && r.responder_static && r.initiator_knows_remote &&
	      !r.responder_knows_remote);
	CHECK(noise_check_protocol("Noise_NN_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(!r.initiator_static && !r.responder_static);
	CHECK(noise_check_protocol("Noise_N_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(r.one_way && r.responder_static && r.initiator_knows_remote && !r.initiator_static);
	CHECK(noise_check_protocol("Noise_KN_25519_ChaChaPoly_BLAKE2s", &r, err, sizeof err) == 0);
	CHECK(r.initiator_static && !r.responder_static && r.responder_knows_remote);

	/* missing keys are reported when the state is created */
	CHECK(noise_hs_new("Noise_NK_25519_ChaChaPoly_BLAKE2s", NOISE_INITIATOR, &k,
			   err, sizeof err) == NULL);
	CHECKF(strstr(err, "responder's static public key") != NULL, "%s", err);
	CHECK(noise_hs_new("Noise_NK_25519_ChaChaPoly_BLAKE2s", NOISE_RESPONDER, &k,
			   err, sizeof err) == NULL);
	CHECKF(strstr(err, "local static private key") != NULL, "%s", err);
}

static void test_keys(void)
{
	uint8_t priv[32], pub[32], pub2[32], back[33];
	char b64[BASE64_ENCODED_LEN(32) + 1];
	/* RFC 7748 section 6.1: Alice's key pair */
	static const uint8_t alice_priv[32] = {
		0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72,
		0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a,
		0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
	};
	static const uint8_t alice_pub[32] = {
		0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc,
		0xb4, 0x3e, 0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4,
		0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
	};

	CHECK(noise_public_key(alice_priv, pub) == 0);
	CHECK_MEM(pub, alice_pub, 32);

	CHECK(noise_generate_keypair(priv, pub) == 0);
	CHECK(noise_public_key(priv, pub2) == 0);
	CHECK_MEM(pub, pub2, 32);
	base64_encode(priv, 32, b64);
	CHECK(strlen(b64) == 44 && b64[43] == '=');
	CHECK(base64_decode(b64, strlen(b64), back, sizeof back) == 32);
	CHECK_MEM(back, priv, 32);
	/* a key from the reference's documentation style: 44 characters */
	CHECK(base64_decode("2/+BWnY2SpJiY47frsqD2FzfOQsSnmmPGMnmrI2YtmM=", 44, back, sizeof back) == 32);
}

int main(void)
{
	load_openssl();
	test_vectors();
	test_tampering();
	test_wrong_keys();
	test_nonce_exhaustion();
	test_long_messages();
	test_rekey();
	test_names();
	test_keys();
	return check_report("test_noise");
}
