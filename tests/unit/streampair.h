/* Helpers for transport tests: loopback TCP pairs, a bounded poll() loop
 * that drives two streams (handshakes, a checked exchange both ways), test
 * certificates made at run time with the openssl command, and capture of
 * what the code logs. */
#ifndef STREAMPAIR_H
#define STREAMPAIR_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

/* A connected non-blocking pair on 127.0.0.1. Returns 0 or -1. */
int sp_tcp_pair(int *client, int *server);

/* Drives both handshakes until each is done or failed (bounded by
 * timeout_ms). Each of rc_a and rc_b gets 0, ST_ERROR, or ST_AGAIN on timeout. */
void sp_handshake(struct stream *a, struct stream *b, int timeout_ms, int *rc_a, int *rc_b);

/* Sends nbytes of pseudo-random data each way at once in chunks of varying
 * size, half-closes both, and checks every byte, the checksums and both
 * ends of stream. Returns 0, or -1 after printing why. */
int sp_exchange(struct stream *a, struct stream *b, size_t nbytes, int timeout_ms);

/* Waits up to timeout_ms for events on fd (poll). Returns > 0 when ready. */
int sp_wait(int fd, short events, int timeout_ms);

/* Runs a shell command quietly; returns its exit status (0 = success). */
int sp_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A fresh temporary directory (static buffer) and its removal. */
const char *sp_tmpdir(void);
void sp_rmtree(const char *dir);

/* Test PKI in dir, made with the openssl command:
 *   ca.pem, ca2.pem (an unrelated CA)
 *   good.p12 (localhost + 127.0.0.1, modern encryption), legacy.p12 (same,
 *   -legacy), expired.p12, other.p12 (for other.example), nokey.p12,
 *   garbage.p12 (not PKCS#12). Every password is "secret".
 * Returns 0, or -1 (the openssl command failed). */
int sp_make_pki(const char *dir);

/* Captures what is written to stderr (the log) between begin and end. */
void sp_capture_begin(void);
/* Returns the captured text (static buffer, NUL-terminated). */
const char *sp_capture_end(void);

/* A transport configuration for tests (strings are borrowed). */
void sp_config(struct transport_config *cfg, enum transport_type type);

#endif
