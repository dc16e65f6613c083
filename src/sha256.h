/* SHA-256 (FIPS 180-4) for the protocol's digests: service names, session
 * keys, the config file's fingerprint.
 *
 * Why not OpenSSL's: its first use loads the default provider, which costs a
 * process about 2 MiB of resident memory. A tcp-transport server or client
 * needs nothing else from OpenSSL, so it never pays that. Not for bulk data:
 * the transports keep OpenSSL's optimized primitives. */
#ifndef SHA256_H
#define SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

struct sha256 {
	uint32_t h[8];
	uint64_t total;		/* bytes hashed so far */
	uint8_t block[64];	/* a partial block */
	size_t fill;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* The digest of one buffer. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);

#endif
