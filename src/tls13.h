/* TLS 1.3 records after the handshake, in our hands instead of OpenSSL's.
 *
 * Why: OpenSSL 3.0's record layer copies every record's plaintext once more
 * on each side (SSL_write into its record buffer, SSL_read out of it) and
 * dispatches each record through its provider layer; at bulk rates that was
 * a quarter of the tls transport's CPU (docs/benchmarks.md, change 18). Once
 * OpenSSL has finished a TLS 1.3 handshake, the record protection is a fixed
 * recipe (RFC 8446, section 5): an AEAD keyed from the traffic secrets,
 * which OpenSSL reports through its key log callback. So, as the kernel's
 * TLS offload does, we take over: records are sealed straight from the
 * caller's plaintext into the send buffer, and opened straight from the
 * received bytes into the caller's buffer.
 *
 * What the peer may still send after the handshake is handled here too:
 * NewSessionTicket (ignored: the client keeps the first one, which
 * OpenSSL reads before the records are ours), KeyUpdate (our
 * receiving keys move on; when the peer asks, ours follow with the next
 * records we send, as they do on their own after 2^23 AES-GCM records),
 * close_notify (the end of the stream) and other alerts
 * (an error naming the alert). Anything else ends the session with an error.
 * TLS 1.2 sessions, and ciphers other than the three of RFC 8446, stay with
 * OpenSSL (tls13_cipher_supported). */
#ifndef TLS13_H
#define TLS13_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "transport.h"

#define TLS13_HEADER	5
#define TLS13_TAG	16
/* What one record adds to its plaintext: header, content type, tag. */
#define TLS13_OVERHEAD	(TLS13_HEADER + 1 + TLS13_TAG)
#define TLS13_PLAINTEXT_MAX 16384
/* The largest record a peer may send: 2^14 bytes of content, its type, the
 * tag (RFC 8446, 5.2 and 5.4; padding counts against the content). */
#define TLS13_RECORD_MAX (TLS13_HEADER + TLS13_PLAINTEXT_MAX + 1 + TLS13_TAG)

struct tls13;

/* Whether an IANA cipher suite id (SSL_CIPHER_get_protocol_id) is one we
 * can protect records with. */
bool tls13_cipher_supported(uint16_t suite);

/* Takes one line of OpenSSL's key log (NSS format) and keeps the
 * application traffic secrets; other lines are ignored. *rl is allocated
 * on the first secret kept. Returns 0, or -1 when out of memory or the
 * line is malformed. */
int tls13_take_secret(struct tls13 **rl, const char *line);

/* Derives the keys from the secrets taken (wiping them but for what key
 * updates need). server: which secret is ours. read_seq, write_seq: the
 * records OpenSSL already opened and sealed under these keys (session
 * tickets, a first message). Returns 0, or -1 with err (both secrets
 * missing, or an OpenSSL failure). */
int tls13_start(struct tls13 *rl, uint16_t suite, bool server, uint64_t read_seq,
		uint64_t write_seq, char *err, size_t errlen);

/* Wipes every key and secret, frees buffers and *rl. */
void tls13_free(struct tls13 *rl);

/* Reads from s->fd and opens records into buf: > 0 plaintext bytes, 0 at
 * the end of the peer's stream (close_notify, or EOF without it, logged at
 * debug), ST_AGAIN (s->want = EPOLLIN), ST_ERROR (s->err). Plaintext of
 * several records comes out of one call when buf has room for it. */
ssize_t tls13_read(struct tls13 *rl, struct stream *s, void *buf, size_t len);

/* Whether the end tls13_read() reported was the peer's close_notify (not a
 * bare EOF, which may be a cut on the path). */
bool tls13_close_notify_received(const struct tls13 *rl);

/* Whether tls13_read() has plaintext, or a complete record, without
 * reading the socket. */
bool tls13_pending(const struct tls13 *rl);

/* Seals records of application data from in[0, len) into out (cap bytes),
 * as many as fit, at most TLS13_PLAINTEXT_MAX plaintext each; a KeyUpdate
 * the peer asked for, or that our key's record count calls for, goes first. Sets *taken to the plaintext consumed.
 * Returns the bytes written to out, or -1 (OpenSSL failure or the sequence
 * number exhausted: the session cannot go on). */
ssize_t tls13_seal(struct tls13 *rl, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
		   size_t *taken);

/* One record of content type ct from in[0, len) into out (len +
 * TLS13_OVERHEAD bytes; in and out do not overlap): 0, or -1. The fuzz
 * harness plays a peer with it (tests/fuzz/fuzz_tls13.c). */
int tls13_seal_record(struct tls13 *rl, uint8_t ct, const uint8_t *in, size_t len, uint8_t *out);

/* How many records we seal under one key before our own KeyUpdate. The
 * default is 2^23 for AES-GCM (RFC 8446, 5.5, allows 2^24.5) and no limit for
 * ChaCha20-Poly1305; tests set a small one. */
void tls13_set_rekey_after(struct tls13 *rl, uint64_t records);

/* Seals the close_notify alert into out (at least TLS13_OVERHEAD + 2 +
 * the room for a pending KeyUpdate: 64 bytes suffice). Returns its length or -1. */
ssize_t tls13_seal_close_notify(struct tls13 *rl, uint8_t *out, size_t cap);

#endif
