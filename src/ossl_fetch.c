/* Algorithms fetched from OpenSSL once for the life of the process (ossl.h). */
#include "ossl.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>

enum kind { MD, CIPHER, KDF, KEYGEN };

/* Room for every name rathole fetches: noise's hashes and ciphers, the TLS
 * 1.3 ciphers, the HKDF, X25519 key generation. */
#define FETCHED_MAX 12

static struct fetched {
	enum kind kind;
	const char *name;
	void *alg;
} fetched[FETCHED_MAX];
static size_t nfetched;

static void release(enum kind kind, void *alg)
{
	switch (kind) {
	case MD:
		EVP_MD_free(alg);
		break;
	case CIPHER:
		EVP_CIPHER_free(alg);
		break;
	case KDF:
		EVP_KDF_free(alg);
		break;
	case KEYGEN:
		EVP_PKEY_CTX_free(alg);
		break;
	}
}

/* Registered with atexit() after OpenSSL has registered its own cleanup,
 * so it runs first: what we hold goes back to OpenSSL, and a leak checker
 * finds every block freed. */
static void release_fetched(void)
{
	while (nfetched) {
		nfetched--;
		release(fetched[nfetched].kind, fetched[nfetched].alg);
	}
}

static void *new_alg(enum kind kind, const char *name)
{
	EVP_PKEY_CTX *gen;

	switch (kind) {
	case MD:
		return EVP_MD_fetch(NULL, name, NULL);
	case CIPHER:
		return EVP_CIPHER_fetch(NULL, name, NULL);
	case KDF:
		return EVP_KDF_fetch(NULL, name, NULL);
	case KEYGEN:
		gen = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
		if (gen && EVP_PKEY_keygen_init(gen) != 1) {
			EVP_PKEY_CTX_free(gen);
			gen = NULL;
		}
		return gen;
	}
	return NULL;
}

static void *fetch(enum kind kind, const char *name)
{
	void *alg;

	for (size_t i = 0; i < nfetched; i++)
		if (fetched[i].kind == kind && strcmp(fetched[i].name, name) == 0)
			return fetched[i].alg;
	if (nfetched == FETCHED_MAX || !(alg = new_alg(kind, name)))
		return NULL;
	if (nfetched == 0)
		atexit(release_fetched);
	fetched[nfetched++] = (struct fetched){ kind, name, alg };
	return alg;
}

const EVP_MD *ossl_md(const char *name)
{
	return fetch(MD, name);
}

const EVP_CIPHER *ossl_cipher(const char *name)
{
	return fetch(CIPHER, name);
}

EVP_KDF *ossl_kdf(const char *name)
{
	return fetch(KDF, name);
}

EVP_PKEY_CTX *ossl_keygen(const char *name)
{
	return fetch(KEYGEN, name);
}
