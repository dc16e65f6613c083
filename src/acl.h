/* Access control lists of CIDR blocks (IPv4 and IPv6) for service ports. */
#ifndef ACL_H
#define ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

struct cidr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];	/* network order, host bits cleared */
	int prefix;
};

/* Parses "10.0.0.0/8", "2001:db8::/32" or a single address. Returns 0, or -1
 * with a reason in err (e.g. host bits set: "did you mean 10.0.0.0/8?"). */
int cidr_parse(const char *s, struct cidr *out, char *err, size_t errlen);
bool cidr_match(const struct cidr *c, const struct net_addr *a);

/* A visitor is refused if it matches a deny entry, or if there are allow
 * entries and it matches none. IPv4-mapped IPv6 addresses count as IPv4. */
bool acl_permits(const struct cidr *allow, size_t nallow, const struct cidr *deny,
		 size_t ndeny, const struct net_addr *a);

#endif
