/* Our SHA-256 against the FIPS 180-4 examples and against OpenSSL's for every
 * length from 0 to 1,100 bytes, fed whole and in uneven pieces; and
 * proto_random: filled, and not the same twice. */
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>

#include "check.h"
#include "protocol.h"
#include "sha256.h"

static void hex(const uint8_t *d, char *out)
{
	for (int i = 0; i < SHA256_LEN; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void known(const char *what, const void *msg, size_t len, const char *expect)
{
	uint8_t d[SHA256_LEN];
	char h[2 * SHA256_LEN + 1];

	sha256(msg, len, d);
	hex(d, h);
	CHECKF(strcmp(h, expect) == 0, "%s: %s, expected %s", what, h, expect);
}

static void fips_examples(void)
{
	static uint8_t million[1000000];

	known("empty", "", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	known("abc", "abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	known("448 bits", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	known("896 bits", "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
	      "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu", 112,
	      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
	memset(million, 'a', sizeof million);
	known("a million a", million, sizeof million,
	      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* OpenSSL's SHA-256, through one of the functions rathole loads (ossl.h). */
static void openssl_sha256(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
	const EVP_MD *md = ossl_md("SHA256");

	if (!md || EVP_Digest(data, len, out, NULL, md, NULL) != 1)
		memset(out, 0, SHA256_LEN);
}

static void against_openssl(void)
{
	static uint8_t msg[1100];
	int bad = 0;

	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (uint8_t)(i * 131 + 7);
	for (size_t len = 0; len <= sizeof msg; len++) {
		uint8_t ours[SHA256_LEN], theirs[SHA256_LEN], pieces[SHA256_LEN];
		struct sha256 c;
		size_t off = 0, step = 1;

		sha256(msg, len, ours);
		openssl_sha256(msg, len, theirs);
		/* in pieces of 1, 2, 3, ... bytes: every split of a block */
		sha256_init(&c);
		while (off < len) {
			size_t n = step < len - off ? step : len - off;
			sha256_update(&c, msg + off, n);
			off += n;
			step = step % 67 + 1;
		}
		sha256_final(&c, pieces);
		if (memcmp(ours, theirs, SHA256_LEN) || memcmp(pieces, theirs, SHA256_LEN))
			bad++;
	}
	CHECKF(bad == 0, "%d of %zu lengths differ from OpenSSL", bad, sizeof msg + 1);
}

static void session_key(void)
{
	uint8_t nonce[PROTO_DIGEST_LEN], key[PROTO_DIGEST_LEN], expect[PROTO_DIGEST_LEN];
	uint8_t cat[5 + PROTO_DIGEST_LEN];

	for (int i = 0; i < PROTO_DIGEST_LEN; i++)
		nonce[i] = (uint8_t)(0xa0 + i);
	proto_session_key("token", nonce, key);
	memcpy(cat, "token", 5);
	memcpy(cat + 5, nonce, PROTO_DIGEST_LEN);
	openssl_sha256(cat, sizeof cat, expect);
	CHECK(memcmp(key, expect, sizeof key) == 0);
}

static void random_bytes(void)
{
	uint8_t a[64], b[64], zero[64] = { 0 };

	memset(a, 0, sizeof a);
	memset(b, 0, sizeof b);
	CHECK(proto_random(a, sizeof a) == 0);
	CHECK(proto_random(b, sizeof b) == 0);
	CHECK(memcmp(a, zero, sizeof a) != 0);
	CHECK(memcmp(a, b, sizeof a) != 0);
	CHECK(proto_random(a, 0) == 0);
}

/* ossl_fetch.c: each algorithm is fetched once and the same object comes
 * back; a name OpenSSL does not know gives NULL, and is not kept. */
static void fetched_once(void)
{
	const EVP_MD *md = ossl_md("SHA256");

	CHECK(md != NULL && ossl_md("SHA256") == md);
	CHECK(ossl_cipher("AES-128-GCM") != NULL &&
	      ossl_cipher("AES-128-GCM") == ossl_cipher("AES-128-GCM"));
	CHECK(ossl_cipher("AES-128-GCM") != (const void *)md);	/* kinds kept apart */
	CHECK(ossl_kdf("HKDF") != NULL && ossl_kdf("HKDF") == ossl_kdf("HKDF"));
	CHECK(ossl_keygen("X25519") != NULL && ossl_keygen("X25519") == ossl_keygen("X25519"));
	CHECK(ossl_md("NO-SUCH-HASH") == NULL && ossl_md("NO-SUCH-HASH") == NULL);
}

int main(void)
{
	load_openssl();
	fips_examples();
	against_openssl();
	session_key();
	random_bytes();
	fetched_once();
	return check_report("test_sha256");
}
