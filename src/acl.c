#include "acl.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

int cidr_parse(const char *s, struct cidr *out, char *err, size_t errlen)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t iplen = slash ? (size_t)(slash - s) : strlen(s);
	int max;

	memset(out, 0, sizeof *out);
	if (iplen == 0 || iplen >= sizeof ip) {
		snprintf(err, errlen, "\"%s\" is not an address or CIDR block", s);
		return -1;
	}
	memcpy(ip, s, iplen);
	ip[iplen] = '\0';
	if (inet_pton(AF_INET, ip, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address", ip);
		return -1;
	}
	out->prefix = max;
	if (slash) {
		unsigned p;
		if (net_parse_uint(slash + 1, (unsigned)max, &p) < 0) {
			snprintf(err, errlen, "\"%s\": the prefix length must be 0..%d", s, max);
			return -1;
		}
		out->prefix = (int)p;
	}
	for (int bit = out->prefix; bit < max; bit++) {
		if (out->addr[bit / 8] & (0x80 >> (bit % 8))) {
			char net[INET6_ADDRSTRLEN];
			struct cidr c = *out;
			for (int b = c.prefix; b < max; b++)
				c.addr[b / 8] &= (uint8_t)~(0x80 >> (b % 8));
			inet_ntop(c.family, c.addr, net, sizeof net);
			snprintf(err, errlen, "\"%s\" has bits set after the prefix (did you mean %s/%d?)",
				 s, net, c.prefix);
			return -1;
		}
	}
	return 0;
}

bool cidr_match(const struct cidr *c, const struct net_addr *a)
{
	const uint8_t *ip;
	int full, rest;

	if (a->u.sa.sa_family == AF_INET && c->family == AF_INET) {
		ip = (const uint8_t *)&a->u.in4.sin_addr;
	} else if (a->u.sa.sa_family == AF_INET6) {
		const struct in6_addr *v6 = &a->u.in6.sin6_addr;
		if (c->family == AF_INET && IN6_IS_ADDR_V4MAPPED(v6))
			ip = v6->s6_addr + 12;
		else if (c->family == AF_INET6)
			ip = v6->s6_addr;
		else
			return false;
	} else {
		return false;
	}
	full = c->prefix / 8;
	rest = c->prefix % 8;
	if (memcmp(ip, c->addr, (size_t)full) != 0)
		return false;
	return rest == 0 || ((ip[full] ^ c->addr[full]) & (0xFF << (8 - rest))) == 0;
}

bool acl_permits(const struct cidr *allow, size_t nallow, const struct cidr *deny,
		 size_t ndeny, const struct net_addr *a)
{
	for (size_t i = 0; i < ndeny; i++)
		if (cidr_match(&deny[i], a))
			return false;
	if (nallow == 0)
		return true;
	for (size_t i = 0; i < nallow; i++)
		if (cidr_match(&allow[i], a))
			return true;
	return false;
}
