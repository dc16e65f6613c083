/* OpenSSL, loaded when a transport first needs it.
 *
 * Why: a dynamically linked libcrypto and libssl are mapped and relocated in
 * every process at start, about 1.7 MiB of resident memory per process, while
 * a server or client on the tcp transport never calls them (SHA-256 and random
 * bytes are ours: sha256.h, protocol.h). So the default build does not link
 * them: the noise, tls and websocket transports and --genkey call ossl_load()
 * first, which dlopen()s the libraries of the OpenSSL major version rathole
 * was built against. A static build (STATIC=1) and OSSL_DLOPEN=0 link
 * OpenSSL; ossl_load() then has nothing to do. */
#ifndef OSSL_H
#define OSSL_H

#include <stddef.h>

#include <openssl/types.h>

/* Makes OpenSSL callable. Returns 0, or -1 with the reason in err (such as
 * "libcrypto.so.3: cannot open shared object file"). Cheap after the first
 * success. */
int ossl_load(char *err, size_t errlen);

/* Algorithms fetched once for the life of the process (and given back at
 * exit), by OpenSSL's names ("BLAKE2S-256", "AES-128-GCM", "HKDF", "X25519"):
 * given a legacy EVP_MD or EVP_CIPHER, or a name, OpenSSL 3.0 looks the
 * algorithm up again at every init or new context (4 % of a noise
 * handshake's CPU, docs/benchmarks.md, change 20). NULL when OpenSSL has no
 * such algorithm. ossl_keygen() is a key generation context for that key
 * type, ready for EVP_PKEY_generate(). Call after ossl_load(). */
const EVP_MD *ossl_md(const char *name);
const EVP_CIPHER *ossl_cipher(const char *name);
EVP_KDF *ossl_kdf(const char *name);
EVP_PKEY_CTX *ossl_keygen(const char *name);

#endif
