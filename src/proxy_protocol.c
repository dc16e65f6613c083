#include "proxy_protocol.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_signature[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

/* An IPv4 visitor of a dual-stack socket shows up as ::ffff:a.b.c.d. */
static struct net_addr unmap(const struct net_addr *a)
{
	struct net_addr r = *a;

	if (a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr)) {
		memset(&r, 0, sizeof r);
		r.u.in4.sin_family = AF_INET;
		r.u.in4.sin_port = a->u.in6.sin6_port;
		memcpy(&r.u.in4.sin_addr, a->u.in6.sin6_addr.s6_addr + 12, 4);
		r.len = sizeof r.u.in4;
	}
	return r;
}

static struct net_addr map6(const struct net_addr *a)
{
	struct net_addr r = *a;

	if (a->u.sa.sa_family == AF_INET) {
		memset(&r, 0, sizeof r);
		r.u.in6.sin6_family = AF_INET6;
		r.u.in6.sin6_port = a->u.in4.sin_port;
		r.u.in6.sin6_addr.s6_addr[10] = 0xff;
		r.u.in6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(r.u.in6.sin6_addr.s6_addr + 12, &a->u.in4.sin_addr, 4);
		r.len = sizeof r.u.in6;
	}
	return r;
}

static uint16_t port_of(const struct net_addr *a)
{
	return ntohs(a->u.sa.sa_family == AF_INET ? a->u.in4.sin_port : a->u.in6.sin6_port);
}

static const void *ip_of(const struct net_addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return &a->u.in4.sin_addr;
	return &a->u.in6.sin6_addr;
}

static size_t encode_v1(const struct net_addr *s, const struct net_addr *d, uint8_t *out)
{
	char sip[INET6_ADDRSTRLEN], dip[INET6_ADDRSTRLEN];
	int fam = s->u.sa.sa_family, n;

	if (fam != d->u.sa.sa_family || (fam != AF_INET && fam != AF_INET6)) {
		memcpy(out, "PROXY UNKNOWN\r\n", 15);
		return 15;
	}
	inet_ntop(fam, ip_of(s), sip, sizeof sip);
	inet_ntop(fam, ip_of(d), dip, sizeof dip);
	n = snprintf((char *)out, PP_V1_MAX, "PROXY %s %s %s %u %u\r\n",
		     fam == AF_INET ? "TCP4" : "TCP6", sip, dip, port_of(s), port_of(d));
	return n > 0 && n < PP_V1_MAX ? (size_t)n : 0;
}

static size_t encode_v2(struct net_addr s, struct net_addr d, uint8_t *out)
{
	uint8_t *p = out + 16;
	size_t alen = 4;
	uint16_t sp, dp;

	if (s.u.sa.sa_family != d.u.sa.sa_family) {
		s = map6(&s);
		d = map6(&d);
	}
	if (s.u.sa.sa_family == AF_INET6)
		alen = 16;
	memcpy(out, v2_signature, sizeof v2_signature);
	out[12] = 0x21;					/* version 2, command PROXY */
	out[13] = alen == 4 ? 0x11 : 0x21;		/* TCP over IPv4 / IPv6 */
	out[14] = 0;
	out[15] = (uint8_t)(2 * alen + 4);
	memcpy(p, ip_of(&s), alen);
	memcpy(p + alen, ip_of(&d), alen);
	sp = port_of(&s);
	dp = port_of(&d);
	p += 2 * alen;
	p[0] = (uint8_t)(sp >> 8);
	p[1] = (uint8_t)sp;
	p[2] = (uint8_t)(dp >> 8);
	p[3] = (uint8_t)dp;
	return 16 + 2 * alen + 4;
}

size_t pp_encode(int version, const struct net_addr *src, const struct net_addr *dst,
		 uint8_t *out)
{
	struct net_addr s = unmap(src), d = unmap(dst);

	if (version == 1)
		return encode_v1(&s, &d, out);
	return encode_v2(s, d, out);
}
