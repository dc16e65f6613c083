/* The PROXY protocol (HAProxy, versions 1 and 2): the server writes it as the
 * first bytes of a forwarded stream, so the local service behind the client
 * learns the visitor's real address. */
#ifndef PROXY_PROTOCOL_H
#define PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define PP_V1_MAX	108	/* "PROXY TCP6 <39> <39> <5> <5>\r\n" */
#define PP_V2_MAX	52	/* 16-byte preamble + two IPv6 addresses and ports */

/* Writes the header for a TCP connection from src (the visitor) to dst (the
 * service port). version is 1 or 2. IPv4-mapped IPv6 addresses are written as
 * IPv4; if the families still differ, v1 says UNKNOWN and v2 maps IPv4 into
 * IPv6. Returns the length (at most PP_V2_MAX or PP_V1_MAX bytes). */
size_t pp_encode(int version, const struct net_addr *src, const struct net_addr *dst,
		 uint8_t *out);

#endif
