/* The Noise Protocol Framework (revision 34) on OpenSSL's EVP primitives.
 *
 * DH: 25519. Ciphers: ChaChaPoly, AESGCM. Hashes: BLAKE2s, BLAKE2b, SHA256,
 * SHA512. Patterns: the one-way, interactive and deferred patterns without
 * PSK, selected by the full protocol name ("Noise_NK_25519_ChaChaPoly_BLAKE2s").
 *
 * Handshake: create a state, then follow noise_hs_next(): WRITE a message,
 * READ a message, or DONE (then split into two cipher states). Transport
 * messages are encrypted and decrypted in place. Key material is wiped when
 * freed. */
#ifndef NOISE_H
#define NOISE_H

#include <stddef.h>
#include <stdint.h>

#define NOISE_KEY_LEN	32
#define NOISE_TAG_LEN	16
#define NOISE_MAX_MSG	65535	/* bytes of one Noise message on the wire */
#define NOISE_MAX_PLAINTEXT (NOISE_MAX_MSG - NOISE_TAG_LEN)

enum noise_role { NOISE_INITIATOR, NOISE_RESPONDER };
enum noise_next { NOISE_WRITE, NOISE_READ, NOISE_DONE, NOISE_FAILED };

struct noise_hs;
struct noise_cipher;
struct noise_static;

struct noise_keys {
	const uint8_t *local_static;	/* 32-byte private key, or NULL */
	const struct noise_static *prepared_static;	/* instead of local_static */
	const uint8_t *remote_static;	/* 32-byte public key known in advance, or NULL */
	const uint8_t *local_ephemeral;	/* fixed ephemeral (test vectors only), or NULL */
	const uint8_t *prologue;
	size_t prologue_len;
};

/* A local static key made ready once for the handshakes of a transport:
 * OpenSSL derives the public key when it takes a private key, an X25519
 * multiplication as costly as a DH, which each handshake would otherwise
 * repeat. pub, when not NULL, gets the public key. NULL when OpenSSL fails. */
struct noise_static *noise_static_new(const uint8_t priv[NOISE_KEY_LEN],
				      uint8_t pub[NOISE_KEY_LEN]);
void noise_static_free(struct noise_static *st);

/* Checks a protocol name. Returns 0, or -1 with a message in err. Also tells
 * which static keys each side must have for this pattern. */
struct noise_requirements {
	int initiator_static;		/* the initiator needs a local static key */
	int responder_static;
	int initiator_knows_remote;	/* the initiator needs the responder's public key */
	int responder_knows_remote;	/* the responder needs the initiator's public key */
	int one_way;			/* N, K, X: messages flow initiator -> responder only */
};
int noise_check_protocol(const char *name, struct noise_requirements *req,
			 char *err, size_t errlen);

/* Keys the pattern does not use are ignored; remote_static is used only where
 * the pattern has it as a pre-message (compare noise_hs_remote_static() with
 * it yourself to pin a transmitted key). */
struct noise_hs *noise_hs_new(const char *protocol_name, enum noise_role role,
			      const struct noise_keys *keys, char *err, size_t errlen);
enum noise_next noise_hs_next(const struct noise_hs *hs);
/* Writes the next handshake message carrying payload. Returns its length, or
 * -1 (then the state is FAILED). */
long noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
		    uint8_t *out, size_t cap);
/* Reads a handshake message. Returns the payload length, or -1 (bad message:
 * authentication failure, wrong length, payload larger than cap...). After -1
 * the state is FAILED. payload must not overlap msg. */
long noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t len,
		   uint8_t *payload, size_t cap);
/* After DONE: the cipher states for sending and receiving (for one-way
 * patterns the responder's send state is unused). The hs remains valid for
 * noise_hs_hash / noise_hs_remote_static until freed. */
int noise_hs_split(struct noise_hs *hs, struct noise_cipher **send,
		   struct noise_cipher **recv);
const uint8_t *noise_hs_hash(const struct noise_hs *hs, size_t *len);
/* The peer's static public key once known (NULL before / if none). */
const uint8_t *noise_hs_remote_static(const struct noise_hs *hs);
void noise_hs_free(struct noise_hs *hs);

/* A cipher state keyed with key, nonce 0, for a cipher named as in protocol
 * names ("ChaChaPoly", "AESGCM"); NULL for another name. For tests: rathole's
 * cipher states come from noise_hs_split(). */
struct noise_cipher *noise_cipher_new(const char *name, const uint8_t key[NOISE_KEY_LEN]);
/* Encrypts len bytes at buf in place; buf must have NOISE_TAG_LEN spare bytes
 * after them. Returns the ciphertext length (len + 16) or -1 (nonce exhausted,
 * len too large). */
long noise_encrypt(struct noise_cipher *c, uint8_t *buf, size_t len);
/* Decrypts in place. Returns the plaintext length, or -1 if authentication fails. */
long noise_decrypt(struct noise_cipher *c, uint8_t *buf, size_t len);
/* REKEY() of section 4.2 (rathole never rekeys; here for completeness). */
int noise_cipher_rekey(struct noise_cipher *c);
/* The next nonce; setting it is for tests (nonce exhaustion). */
uint64_t noise_cipher_nonce(const struct noise_cipher *c);
void noise_cipher_set_nonce(struct noise_cipher *c, uint64_t n);
void noise_cipher_free(struct noise_cipher *c);

/* X25519 keys. */
int noise_generate_keypair(uint8_t priv[NOISE_KEY_LEN], uint8_t pub[NOISE_KEY_LEN]);
int noise_public_key(const uint8_t priv[NOISE_KEY_LEN], uint8_t pub[NOISE_KEY_LEN]);

#endif
