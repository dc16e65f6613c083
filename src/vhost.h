/* Virtual hosts: the name a visitor asks for, read from the first bytes of
 * its connection, and the matching of names against a service's hostnames.
 *
 * Pure functions over bytes (no sockets, no state): the server's shared
 * listeners (server_vhost.c) call them on what they peeked so far, the fuzz
 * target (tests/fuzz/fuzz_vhost.c) and the unit tests on anything. The
 * bytes are never changed: they are forwarded as they came. */
#ifndef VHOST_H
#define VHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHOST_NAME_MAX		253	/* a DNS name, without the trailing dot */
#define VHOST_HTTP_HEAD_MAX	16384	/* the request head read to find Host */
#define VHOST_TLS_HELLO_MAX	16384	/* the ClientHello message itself */
#define VHOST_TLS_HEAD_MAX	32768	/* its records: room for fragmentation */

enum vhost_result {
	VHOST_MORE = 0,		/* not decided yet: read more (within the bounds) */
	VHOST_FOUND = 1,	/* name holds the normalized name */
	VHOST_NONE = 2,		/* a complete head without a usable name */
	VHOST_BAD = -1,		/* not HTTP/1.x, or not a TLS ClientHello */
	VHOST_TOO_BIG = -2,	/* undecided within the size bound */
};

/* The Host of an HTTP/1.x request head (the authority of an absolute-form
 * target wins over the Host header, as RFC 9112 says). len is what has
 * arrived; more may follow. name must hold VHOST_NAME_MAX + 1 bytes. */
enum vhost_result vhost_http_host(const uint8_t *p, size_t len, char *name);

/* The server_name (host_name) of a TLS ClientHello, across fragmented
 * records. name must hold VHOST_NAME_MAX + 1 bytes. */
enum vhost_result vhost_tls_sni(const uint8_t *p, size_t len, char *name);

/* A name as a visitor sent it (Host value or SNI) -> lower case, without a
 * port (port_allowed: Host) and without the trailing dot. Returns its
 * length, or -1 if it is no host name (bad characters, too long, empty). */
int vhost_normalize(const char *in, size_t len, bool port_allowed, char *out);

/* A configured name ("nas.example.com", "*.example.com") -> normalized in
 * out (VHOST_NAME_MAX + 1 bytes). Returns 0, or -1 with the reason in why. */
int vhost_pattern_check(const char *in, char *out, const char **why);

/* How well a normalized pattern matches a normalized host: -1 not at all;
 * an exact name beats every wildcard; between wildcards, the longer suffix
 * wins ("*.b.example.com" over "*.example.com"). A wildcard matches one
 * label or more: "*.example.com" matches "a.example.com" and
 * "a.b.example.com", not "example.com". */
int vhost_match(const char *pattern, const char *host);

#endif
