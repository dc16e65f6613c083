/* Addresses, CIDR access lists and PROXY protocol headers. */
#include <limits.h>
#include <string.h>

#include "acl.h"
#include "check.h"
#include "proxy_protocol.h"

static struct net_addr addr(const char *s)
{
	struct net_addr a;

	if (net_parse_numeric(s, &a) < 0)
		memset(&a, 0, sizeof a);
	return a;
}

static void test_hostport(void)
{
	static const char *const bad[] = {
		"h:", "h: 80", "h:+80", "h:-0", "h:80 ", "h:8a", "h:65536", "h:99999999999999999999",
		"[::1]80", "::1:80", ":80",
	};
	char host[NET_HOST_MAX];
	unsigned port = 1, v;
	const char *err;

	CHECK(net_split_hostport("example.com:0", host, sizeof host, &port, &err) == 0 &&
	      port == 0 && strcmp(host, "example.com") == 0);
	CHECK(net_split_hostport("[2001:db8::1]:65535", host, sizeof host, &port, &err) == 0 &&
	      port == 65535 && strcmp(host, "2001:db8::1") == 0);
	CHECK(net_split_hostport("h:007", host, sizeof host, &port, &err) == 0 && port == 7);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECKF(net_split_hostport(bad[i], host, sizeof host, &port, &err) < 0, "%s", bad[i]);
	CHECK(net_parse_uint("128", 128, &v) == 0 && v == 128);
	CHECK(net_parse_uint("129", 128, &v) < 0 && net_parse_uint("", 128, &v) < 0);
	CHECK(net_parse_uint("4294967295", UINT_MAX, &v) == 0 && v == UINT_MAX);
	CHECK(net_parse_uint("4294967296", UINT_MAX, &v) < 0);
	CHECK(net_parse_uint("42949672950", UINT_MAX, &v) < 0);
}

static void test_cidr(void)
{
	struct cidr c;
	char err[160];
	struct net_addr a = addr("10.1.2.3:80"), b = addr("11.0.0.1:80");
	struct net_addr m = addr("[::ffff:10.9.9.9]:80"), v6 = addr("[2001:db8::1]:443");

	CHECK(cidr_parse("10.0.0.0/8", &c, err, sizeof err) == 0);
	CHECK(cidr_match(&c, &a) && !cidr_match(&c, &b) && cidr_match(&c, &m) && !cidr_match(&c, &v6));
	CHECK(cidr_parse("2001:db8::/32", &c, err, sizeof err) == 0);
	CHECK(cidr_match(&c, &v6) && !cidr_match(&c, &a));
	CHECK(cidr_parse("10.1.2.3", &c, err, sizeof err) == 0 && c.prefix == 32);
	CHECK(cidr_match(&c, &a) && !cidr_match(&c, &b));
	CHECK(cidr_parse("0.0.0.0/0", &c, err, sizeof err) == 0 && cidr_match(&c, &b));
	CHECK(cidr_parse("10.0.0.0/7", &c, err, sizeof err) == 0 && cidr_match(&c, &b));
	CHECK(cidr_parse("10.0.0.1/8", &c, err, sizeof err) < 0);
	CHECKF(strstr(err, "did you mean 10.0.0.0/8?") != NULL, "%s", err);
	CHECK(cidr_parse("10.0.0.0/33", &c, err, sizeof err) < 0);
	CHECK(cidr_parse("10.0.0.0/", &c, err, sizeof err) < 0);
	CHECK(cidr_parse("10.0.0.0/ 8", &c, err, sizeof err) < 0);
	CHECK(cidr_parse("10.0.0.0/+8", &c, err, sizeof err) < 0);
	CHECK(cidr_parse("example.com/8", &c, err, sizeof err) < 0);
	CHECK(cidr_parse("::/0", &c, err, sizeof err) == 0 && cidr_match(&c, &v6));
	CHECK(cidr_parse("2001:db8:0:0:0:0:0:1/127", &c, err, sizeof err) < 0);
}

static void test_acl(void)
{
	struct cidr allow[2], deny[1];
	char err[160];
	struct net_addr in = addr("192.168.1.7:1"), out = addr("8.8.8.8:1"), bad = addr("192.168.1.66:1");

	cidr_parse("192.168.0.0/16", &allow[0], err, sizeof err);
	cidr_parse("2001:db8::/32", &allow[1], err, sizeof err);
	cidr_parse("192.168.1.64/26", &deny[0], err, sizeof err);
	CHECK(acl_permits(NULL, 0, NULL, 0, &out));		/* no lists: everyone */
	CHECK(acl_permits(allow, 2, NULL, 0, &in));
	CHECK(!acl_permits(allow, 2, NULL, 0, &out));
	CHECK(!acl_permits(allow, 2, deny, 1, &bad));		/* deny wins */
	CHECK(acl_permits(NULL, 0, deny, 1, &out));
	CHECK(!acl_permits(NULL, 0, deny, 1, &bad));
}

static void test_proxy_protocol(void)
{
	uint8_t b[PP_V1_MAX + PP_V2_MAX];
	struct net_addr s4 = addr("203.0.113.7:51234"), d4 = addr("10.0.0.1:443");
	struct net_addr s6 = addr("[2001:db8::7]:51234"), d6 = addr("[2001:db8::1]:443");
	struct net_addr m4 = addr("[::ffff:203.0.113.7]:51234");
	static const uint8_t sig[12] = "\r\n\r\n\0\r\nQUIT\n";
	size_t n;

	n = pp_encode(1, &s4, &d4, b);
	CHECK(n == strlen("PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n"));
	CHECK(memcmp(b, "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n", n) == 0);
	n = pp_encode(1, &s6, &d6, b);
	CHECK(memcmp(b, "PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n", n) == 0);
	n = pp_encode(1, &m4, &d4, b);				/* mapped counts as IPv4 */
	CHECK(memcmp(b, "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n", n) == 0);
	n = pp_encode(1, &s4, &d6, b);
	CHECK(n == 15 && memcmp(b, "PROXY UNKNOWN\r\n", 15) == 0);

	n = pp_encode(2, &s4, &d4, b);
	CHECK(n == 28 && memcmp(b, sig, 12) == 0);
	CHECK(b[12] == 0x21 && b[13] == 0x11 && b[14] == 0 && b[15] == 12);
	CHECK(memcmp(b + 16, "\xcb\x00\x71\x07\x0a\x00\x00\x01\xc8\x22\x01\xbb", 12) == 0);
	n = pp_encode(2, &s6, &d6, b);
	CHECK(n == 52 && b[13] == 0x21 && b[15] == 36);
	CHECK(b[16] == 0x20 && b[17] == 0x01 && b[31] == 0x07 && b[47] == 0x01);
	CHECK(b[48] == 0xc8 && b[49] == 0x22 && b[50] == 0x01 && b[51] == 0xbb);
	n = pp_encode(2, &s4, &d6, b);				/* mixed: IPv4 mapped into IPv6 */
	CHECK(n == 52 && b[13] == 0x21 && b[26] == 0xff && b[27] == 0xff && b[28] == 203);
}

int main(void)
{
	test_hostport();
	test_cidr();
	test_acl();
	test_proxy_protocol();
	return check_report("access");
}
