/* Virtual hosts: Host and SNI extraction, names and their matching (vhost.c). */
#include <string.h>

#include "check.h"
#include "vhost.h"

static enum vhost_result http(const char *head, char *name)
{
	return vhost_http_host((const uint8_t *)head, strlen(head), name);
}

static void test_http(void)
{
	char name[VHOST_NAME_MAX + 1];
	static uint8_t big[VHOST_HTTP_HEAD_MAX + 100];
	size_t n;

	CHECK(http("GET / HTTP/1.1\r\nHost: Nas.Example.com\r\n\r\n", name) == VHOST_FOUND);
	CHECK_STR(name, "nas.example.com");
	/* found as soon as the Host line is complete */
	CHECK(http("GET / HTTP/1.1\r\nUser-Agent: x\r\nhost:a.b:8080 \r\nAccept", name) == VHOST_FOUND);
	CHECK_STR(name, "a.b");
	CHECK(http("GET / HTTP/1.0\nHOST: \ta.b.\t\n\n", name) == VHOST_FOUND);
	CHECK_STR(name, "a.b");
	CHECK(http("\r\nGET / HTTP/1.1\r\nHost: x.y\r\n", name) == VHOST_FOUND);	/* a leading empty line */
	/* the authority of an absolute-form target wins */
	CHECK(http("GET http://user@Target.org:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n", name) == VHOST_FOUND);
	CHECK_STR(name, "target.org");
	CHECK(http("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", name) == VHOST_FOUND);
	/* not decided yet */
	CHECK(http("", name) == VHOST_MORE);
	CHECK(http("GE", name) == VHOST_MORE);
	CHECK(http("GET / HTTP/1.1\r\n", name) == VHOST_MORE);
	CHECK(http("GET / HTTP/1.1\r\nHost: a.b", name) == VHOST_MORE);
	CHECK(http("GET / HTTP/1.1\r\nX-Host: a.b\r\n", name) == VHOST_MORE);
	/* no usable name */
	CHECK(http("GET / HTTP/1.1\r\nX-Host: a.b\r\n\r\n", name) == VHOST_NONE);
	CHECK(http("GET / HTTP/1.1\r\nHost:\r\n\r\n", name) == VHOST_NONE);
	CHECK(http("GET / HTTP/1.1\r\nHost: [::1]:80\r\n", name) == VHOST_NONE);
	CHECK(http("GET / HTTP/1.1\r\nHost: a b\r\n", name) == VHOST_NONE);
	CHECK(http("GET / HTTP/1.1\r\nHost: a:http\r\n", name) == VHOST_NONE);
	CHECK(http("GET / HTTP/1.1\r\nHost: a..b\r\n", name) == VHOST_NONE);
	CHECK(http("GET http:///x HTTP/1.1\r\nHost: a\r\n", name) == VHOST_NONE);
	/* not HTTP/1.x */
	CHECK(http("\x16\x03\x01\x00", name) == VHOST_BAD);
	CHECK(http("GET /\r\n", name) == VHOST_BAD);
	CHECK(http("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", name) == VHOST_BAD);
	CHECK(http("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", name) == VHOST_BAD);
	CHECK(http("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", name) == VHOST_BAD);
	CHECK(http("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n", name) == VHOST_BAD);
	/* bounded: 16 KiB without a decision */
	n = (size_t)snprintf((char *)big, sizeof big, "GET / HTTP/1.1\r\n");
	memset(big + n, 'x', sizeof big - n);
	CHECK(vhost_http_host(big, VHOST_HTTP_HEAD_MAX - 1, name) == VHOST_MORE);
	CHECK(vhost_http_host(big, VHOST_HTTP_HEAD_MAX, name) == VHOST_TOO_BIG);
	CHECK(vhost_http_host(big, sizeof big, name) == VHOST_TOO_BIG);
}

/* A ClientHello with the given extensions, in records of at most frag bytes. */
static size_t client_hello(uint8_t *out, const uint8_t *ext, size_t extlen, bool with_ext,
			   size_t frag)
{
	uint8_t msg[512];
	size_t n = 0, o = 0;

	msg[n++] = 1;
	n += 3;				/* length, below */
	msg[n++] = 3;
	msg[n++] = 3;
	memset(msg + n, 0xaa, 32);	/* random */
	n += 32;
	msg[n++] = 0;			/* session id */
	msg[n++] = 0;
	msg[n++] = 2;
	msg[n++] = 0x13;
	msg[n++] = 0x01;		/* TLS_AES_128_GCM_SHA256 */
	msg[n++] = 1;
	msg[n++] = 0;			/* null compression */
	if (with_ext) {
		msg[n++] = (uint8_t)(extlen >> 8);
		msg[n++] = (uint8_t)extlen;
		memcpy(msg + n, ext, extlen);
		n += extlen;
	}
	msg[1] = 0;
	msg[2] = (uint8_t)((n - 4) >> 8);
	msg[3] = (uint8_t)(n - 4);
	for (size_t i = 0; i < n; i += frag) {
		size_t f = n - i < frag ? n - i : frag;

		out[o++] = 22;
		out[o++] = 3;
		out[o++] = 1;
		out[o++] = (uint8_t)(f >> 8);
		out[o++] = (uint8_t)f;
		memcpy(out + o, msg + i, f);
		o += f;
	}
	return o;
}

/* A server_name extension for name, after another extension. */
static size_t sni_ext(uint8_t *e, const char *name, uint8_t type)
{
	size_t l = strlen(name), n = 0;

	memcpy(e, "\x00\x0b\x00\x02\x01\x00", 6);	/* ec_point_formats first */
	n = 6;
	e[n++] = 0;
	e[n++] = 0;				/* server_name */
	e[n++] = (uint8_t)((l + 5) >> 8);
	e[n++] = (uint8_t)(l + 5);
	e[n++] = (uint8_t)((l + 3) >> 8);
	e[n++] = (uint8_t)(l + 3);
	e[n++] = type;
	e[n++] = (uint8_t)(l >> 8);
	e[n++] = (uint8_t)l;
	memcpy(e + n, name, l);
	return n + l;
}

static void test_tls(void)
{
	char name[VHOST_NAME_MAX + 1];
	uint8_t ext[300], ch[1200];
	size_t el = sni_ext(ext, "NAS.example.com", 0), n;

	n = client_hello(ch, ext, el, true, 1000);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_FOUND);
	CHECK_STR(name, "nas.example.com");
	/* every prefix is "more", never a wrong answer */
	for (size_t i = 0; i < n; i++)
		CHECKF(vhost_tls_sni(ch, i, name) == VHOST_MORE, "prefix %zu", i);
	/* fragmented into records of 7 bytes */
	n = client_hello(ch, ext, el, true, 7);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_FOUND);
	CHECK_STR(name, "nas.example.com");
	for (size_t i = 0; i < n; i++)
		CHECKF(vhost_tls_sni(ch, i, name) == VHOST_MORE, "fragmented prefix %zu", i);
	/* no SNI, no extensions, another name type, a bad name */
	n = client_hello(ch, ext, 6, true, 1000);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_NONE);
	n = client_hello(ch, NULL, 0, false, 1000);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_NONE);
	el = sni_ext(ext, "nas.example.com", 1);
	n = client_hello(ch, ext, el, true, 1000);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_NONE);
	el = sni_ext(ext, "nas.example.com:443", 0);
	n = client_hello(ch, ext, el, true, 1000);
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_NONE);
	/* malformed: an extension longer than the message, not a handshake,
	 * not a ClientHello, SSLv2, an empty record */
	el = sni_ext(ext, "nas.example.com", 0);
	n = client_hello(ch, ext, el, true, 1000);
	ch[5 + 4 + 2 + 32 + 1 + 2 + 2 + 1 + 1] = 0x7f;
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_BAD);
	n = client_hello(ch, ext, el, true, 1000);
	ch[0] = 23;
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_BAD);
	n = client_hello(ch, ext, el, true, 1000);
	ch[5] = 2;
	CHECK(vhost_tls_sni(ch, n, name) == VHOST_BAD);
	CHECK(vhost_tls_sni((const uint8_t *)"\x80\x2e\x01\x03\x01", 5, name) == VHOST_BAD);
	CHECK(vhost_tls_sni((const uint8_t *)"\x16\x03\x01\x00\x00", 5, name) == VHOST_BAD);
	CHECK(vhost_tls_sni((const uint8_t *)"GET / HTTP/1.1\r\n", 16, name) == VHOST_BAD);
	/* a ClientHello larger than the bound */
	CHECK(vhost_tls_sni((const uint8_t *)"\x16\x03\x01\x40\x00\x01\x00\x40\x01", 9, name) ==
	      VHOST_TOO_BIG);
	CHECK(vhost_tls_sni((const uint8_t *)"\x16\x03\x01\x40\x00\x01\x00\x40\x00", 9, name) ==
	      VHOST_MORE);
}

static void test_names(void)
{
	char out[VHOST_NAME_MAX + 1], longname[300];
	const char *why = NULL;

	CHECK(vhost_normalize("A.B.", 4, false, out) == 3 && strcmp(out, "a.b") == 0);
	CHECK(vhost_normalize("a.b:443", 7, true, out) == 3);
	CHECK(vhost_normalize("a.b:443", 7, false, out) < 0);
	CHECK(vhost_normalize("a.b:", 4, true, out) < 0);
	CHECK(vhost_normalize(".a", 2, false, out) < 0);
	CHECK(vhost_normalize("a\0b", 3, false, out) < 0);
	CHECK(vhost_normalize(".", 1, false, out) < 0);
	memset(longname, 'a', sizeof longname);
	CHECK(vhost_normalize(longname, 63, false, out) == 63);
	CHECK(vhost_normalize(longname, 64, false, out) < 0);		/* a label of 64 */
	for (int i = 63; i < 253; i += 64)
		longname[i] = '.';
	CHECK(vhost_normalize(longname, 253, false, out) == 253);
	CHECK(vhost_normalize(longname, 254, false, out) < 0);

	CHECK(vhost_pattern_check("*.Home.Example.COM.", out, &why) == 0);
	CHECK_STR(out, "*.home.example.com");
	CHECK(vhost_pattern_check("nas_1.example.com", out, &why) == 0);
	CHECK(vhost_pattern_check("*", out, &why) < 0 && strstr(why, "needs a domain"));
	CHECK(vhost_pattern_check("a.*.com", out, &why) < 0 && strstr(why, "first label"));
	CHECK(vhost_pattern_check("*a.com", out, &why) < 0);
	CHECK(vhost_pattern_check("a.com:80", out, &why) < 0 && strstr(why, "port"));
	CHECK(vhost_pattern_check("", out, &why) < 0);
	CHECK(vhost_pattern_check("a com", out, &why) < 0);

	CHECK(vhost_match("a.example.com", "a.example.com") > vhost_match("*.example.com", "a.example.com"));
	CHECK(vhost_match("*.example.com", "a.example.com") >= 0);
	CHECK(vhost_match("*.example.com", "b.a.example.com") >= 0);
	CHECK(vhost_match("*.example.com", "example.com") < 0);
	CHECK(vhost_match("*.example.com", "aexample.com") < 0);
	CHECK(vhost_match("a.example.com", "b.example.com") < 0);
	CHECK(vhost_match("*.b.example.com", "x.b.example.com") >
	      vhost_match("*.example.com", "x.b.example.com"));
}

int main(void)
{
	test_http();
	test_tls();
	test_names();
	return check_report("vhost");
}
