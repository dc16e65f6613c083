/* The wire protocol against bytes captured from the reference rathole 0.5.0
 * (shared/testdata/rathole-wire): every message decodes, every Auth digest and
 * session key is recomputed from nonce and token, our encoders produce the
 * same bytes, and UDP frames parse (also split and malformed). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "json.h"
#include "protocol.h"
#include "transport.h"
#include "udp.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;

	for (; s[0] && s[1] && n < cap; s += 2) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
	}
	return n;
}

static const char *str(const struct json *o, const char *k)
{
	const struct json *v = json_get(o, k);
	return v && v->type == JSON_STRING ? v->str : "";
}

/* What the control channel of each service agreed on, to check data channels. */
struct session { char service[32]; uint8_t key[PROTO_DIGEST_LEN]; };
static struct session sessions[8];
static int nsessions;

static const uint8_t *session_of(const char *service)
{
	for (int i = 0; i < nsessions; i++)
		if (strcmp(sessions[i].service, service) == 0)
			return sessions[i].key;
	return NULL;
}

/* c2s: ControlChannelHello + Auth; s2c: hello(nonce) + Ack + n commands */
static void check_control(const char *service, const char *token, const uint8_t *c2s,
			  size_t c2s_len, const uint8_t *s2c, size_t s2c_len, int expect_cmds)
{
	struct hello h, n;
	uint8_t digest[PROTO_DIGEST_LEN], key[PROTO_DIGEST_LEN], ours[PROTO_HELLO_LEN];
	size_t cmds;

	CHECK(c2s_len == PROTO_HELLO_LEN + PROTO_AUTH_LEN);
	CHECK(proto_decode_hello(c2s, &h) == 0);
	CHECK(h.kind == HELLO_CONTROL && h.version == PROTO_VERSION);
	proto_digest(service, strlen(service), digest);
	CHECK_MEM(h.digest, digest, PROTO_DIGEST_LEN);
	proto_encode_hello(ours, HELLO_CONTROL, digest);
	CHECK_MEM(ours, c2s, PROTO_HELLO_LEN);

	CHECK(proto_decode_hello(s2c, &n) == 0 && n.kind == HELLO_CONTROL);
	proto_session_key(token, n.digest, key);
	CHECKF(memcmp(key, c2s + PROTO_HELLO_LEN, PROTO_AUTH_LEN) == 0, "auth of %s", service);
	CHECK(proto_decode_enum(s2c + PROTO_HELLO_LEN, 3) == ACK_OK);
	cmds = (s2c_len - PROTO_HELLO_LEN - PROTO_CMD_LEN) / PROTO_CMD_LEN;
	CHECKF((int)cmds == expect_cmds, "%s: %zu commands", service, cmds);
	for (size_t i = 0; i < cmds; i++)
		CHECK(proto_decode_enum(s2c + PROTO_HELLO_LEN + PROTO_CMD_LEN * (1 + i), 2) ==
		      CMD_CREATE_DATA_CHANNEL);
	if (nsessions < 8) {
		snprintf(sessions[nsessions].service, sizeof sessions[0].service, "%s", service);
		memcpy(sessions[nsessions++].key, key, sizeof key);
	}
}

/* A stream over one end of a socketpair, with the test writing the other. */
static struct transport plain = { .impl = &transport_tcp };

static struct stream *pair_stream(int *other)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
		return NULL;
	*other = sv[1];
	return transport_wrap(&plain, sv[0], false);
}

static void check_frame_bytes(const uint8_t *frame, size_t len, const char *payload,
			      int family, unsigned port)
{
	int other = -1;
	struct stream *s = pair_stream(&other);
	struct udp_framer f = { 0 };
	const uint8_t *p;
	uint8_t hdr[UDP_FRAME_MAX_HDR];
	int h;

	CHECK(write(other, frame, len) == (ssize_t)len);
	CHECK(udp_framer_next(&f, s, &p) == 1);
	CHECK(f.len == strlen(payload) && memcmp(p, payload, f.len) == 0);
	CHECK(f.from.u.sa.sa_family == family);
	CHECK(ntohs(family == AF_INET ? f.from.u.in4.sin_port : f.from.u.in6.sin6_port) == port);
	/* our encoder writes the same header */
	h = proto_udp_encode_header(hdr, &f.from, f.len);
	CHECK(h > 0 && (size_t)h + f.len == len && memcmp(hdr, frame, (size_t)h) == 0);
	CHECK(udp_framer_next(&f, s, &p) == ST_AGAIN);
	udp_framer_reset(&f);
	stream_free(s);
	close(other);
}

static void check_data(const char *service, const uint8_t *c2s, size_t c2s_len,
		       const uint8_t *s2c, size_t s2c_len)
{
	struct hello h;
	const uint8_t *key = session_of(service);

	CHECK(c2s_len >= PROTO_HELLO_LEN);
	CHECK(proto_decode_hello(c2s, &h) == 0 && h.kind == HELLO_DATA);
	CHECKF(key && memcmp(h.digest, key, PROTO_DIGEST_LEN) == 0, "session key of %s", service);
	if (s2c_len < PROTO_CMD_LEN)
		return;		/* pooled, never used */
	if (strcmp(service, "dns") == 0) {
		CHECK(proto_decode_enum(s2c, 2) == DATA_START_FORWARD_UDP);
		check_frame_bytes(s2c + 4, s2c_len - 4, "ping-udp", AF_INET, 23630);
		check_frame_bytes(c2s + PROTO_HELLO_LEN, c2s_len - PROTO_HELLO_LEN, "ping-udp",
				  AF_INET, 23630);
	} else {
		CHECK(proto_decode_enum(s2c, 2) == DATA_START_FORWARD_TCP);
		CHECK(memcmp(s2c + 4, "hello through the tunnel\n", s2c_len - 4) == 0);
	}
}

static void test_capture(void)
{
	char path[512];
	struct json *j, *conns;
	static uint8_t c2s[8192], s2c[8192];
	int ncontrol = 0, ndata = 0;

	snprintf(path, sizeof path, "%s/rathole-wire/capture-tcp-udp.json", testdata_dir());
	j = json_load_file(path);
	CHECKF(j != NULL, "cannot load %s", path);
	if (!j)
		return;
	conns = json_get(j, "connections");
	/* control channels first: data channels are checked against them */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; conns && i < conns->len; i++) {
			const struct json *c = conns->items[i];
			const char *kind = str(c, "connection");
			size_t n1 = unhex(str(c, "client_to_server"), c2s, sizeof c2s);
			size_t n2 = unhex(str(c, "server_to_client"), s2c, sizeof s2c);
			bool control = strcmp(kind, "control channel") == 0;

			if (pass == 0 && control) {
				/* the pool (2 for UDP, 8 for TCP), plus one per TCP
				 * visitor: the echo service had one */
				bool udp = strcmp(str(c, "service"), "dns") == 0;
				check_control(str(c, "service"), str(c, "token"), c2s, n1, s2c, n2,
					      udp ? 2 : 8 + 1);
				ncontrol++;
			} else if (pass == 1 && !control) {
				check_data(str(c, "service"), c2s, n1, s2c, n2);
				ndata++;
			}
		}
	}
	CHECK(ncontrol == 2);
	CHECK(ndata == 11);
	json_free(j);
}

static void test_server_replies(void)
{
	char path[512];
	struct json *j, *ex;
	static uint8_t c2s[4096], s2c[4096];
	size_t n1, n2;
	struct hello h;
	const struct json *e;

	snprintf(path, sizeof path, "%s/rathole-wire/server-replies.json", testdata_dir());
	j = json_load_file(path);
	CHECKF(j != NULL, "cannot load %s", path);
	if (!j)
		return;
	ex = json_get(j, "exchanges");

	e = json_get(ex, "unknown_service");
	n2 = unhex(str(e, "server_to_client"), s2c, sizeof s2c);
	CHECK(n2 == PROTO_HELLO_LEN + PROTO_CMD_LEN);
	CHECK(proto_decode_hello(s2c, &h) == 0 && h.kind == HELLO_CONTROL);
	CHECK(proto_decode_enum(s2c + PROTO_HELLO_LEN, 3) == ACK_SERVICE_NOT_EXIST);

	e = json_get(ex, "wrong_token");
	n1 = unhex(str(e, "client_to_server"), c2s, sizeof c2s);
	n2 = unhex(str(e, "server_to_client"), s2c, sizeof s2c);
	CHECK(n1 == PROTO_HELLO_LEN + PROTO_AUTH_LEN);
	CHECK(n2 == PROTO_HELLO_LEN + PROTO_CMD_LEN);
	CHECK(proto_decode_enum(s2c + PROTO_HELLO_LEN, 3) == ACK_AUTH_FAILED);
	{
		uint8_t key[PROTO_DIGEST_LEN];
		CHECK(proto_decode_hello(s2c, &h) == 0);
		proto_session_key("123", h.digest, key);
		CHECK(!proto_digest_equal(key, c2s + PROTO_HELLO_LEN));	/* it was wrong */
	}

	e = json_get(ex, "heartbeats");
	n1 = unhex(str(e, "client_to_server"), c2s, sizeof c2s);
	n2 = unhex(str(e, "server_to_client"), s2c, sizeof s2c);
	check_control("echo", "123", c2s, n1, s2c, PROTO_HELLO_LEN + PROTO_CMD_LEN * 9, 8);
	for (size_t off = PROTO_HELLO_LEN + PROTO_CMD_LEN * 9; off + 4 <= n2; off += 4)
		CHECK(proto_decode_enum(s2c + off, 2) == CMD_HEARTBEAT);
	CHECK(n2 > PROTO_HELLO_LEN + PROTO_CMD_LEN * 9);

	e = json_get(ex, "udp_ipv6");
	n2 = unhex(str(e, "data_channel_server_to_client"), s2c, sizeof s2c);
	CHECK(proto_decode_enum(s2c, 2) == DATA_START_FORWARD_UDP);
	check_frame_bytes(s2c + 4, n2 - 4, str(e, "visitor_got_back"), AF_INET6, 23710);
	json_free(j);
}

static void test_decoders_reject(void)
{
	uint8_t b[PROTO_HELLO_LEN] = { 2, 0, 0, 0, 1 };
	struct hello h;
	struct net_addr a;
	uint16_t len;
	uint8_t hdr[24] = { 0 };

	CHECK(proto_decode_hello(b, &h) < 0);		/* variant 2 */
	b[0] = 0; b[3] = 1;
	CHECK(proto_decode_hello(b, &h) < 0);		/* variant 2^24 */
	CHECK(proto_decode_enum((const uint8_t *)"\x03\0\0\0", 3) < 0);
	CHECK(proto_decode_enum((const uint8_t *)"\x02\0\0\0", 3) == 2);
	CHECK(proto_udp_decode_header(13, hdr, &a, &len) < 0);	/* no such header size */
	hdr[0] = 1;
	CHECK(proto_udp_decode_header(12, hdr, &a, &len) < 0);	/* V6 tag in a V4-sized header */
	hdr[0] = 0;
	CHECK(proto_udp_decode_header(24, hdr, &a, &len) < 0);	/* V4 tag in a V6-sized header */
}

/* Frames arriving one byte at a time, a big one, and a lying header. */
static void test_framer_split_and_bad(void)
{
	int other = -1;
	struct stream *s = pair_stream(&other);
	struct udp_framer f = { 0 };
	static uint8_t frame[UDP_FRAME_MAX_HDR + 60000];
	struct net_addr from;
	const uint8_t *p;
	int h, rc = ST_AGAIN;

	CHECK(net_parse_numeric("[2001:db8::7]:4242", &from) == 0);
	h = proto_udp_encode_header(frame, &from, 60000);
	for (int i = 0; i < 60000; i++)
		frame[h + i] = (uint8_t)(i * 7);
	for (int i = 0; i < h + 60000 && rc == ST_AGAIN; ) {
		int chunk = i < h + 10 ? 1 : 4096;	/* header byte by byte */
		if (chunk > h + 60000 - i)
			chunk = h + 60000 - i;
		CHECK(write(other, frame + i, (size_t)chunk) == chunk);
		i += chunk;
		rc = udp_framer_next(&f, s, &p);
		if (i < h + 60000)
			CHECK(rc == ST_AGAIN);
	}
	CHECK(rc == 1);
	CHECK(f.len == 60000 && memcmp(p, frame + h, 60000) == 0);
	CHECK(net_addr_equal(&f.from, &from));

	/* an empty datagram is a valid frame */
	h = proto_udp_encode_header(frame, &from, 0);
	CHECK(write(other, frame, (size_t)h) == h);
	CHECK(udp_framer_next(&f, s, &p) == 1 && f.len == 0);

	/* a header length that is no UdpHeader: the channel is bad */
	CHECK(write(other, "\x0d\0\0\0\0", 5) == 5);
	CHECK(udp_framer_next(&f, s, &p) == UDP_BAD_FRAME);
	udp_framer_reset(&f);
	stream_free(s);
	close(other);

	/* end of stream in the middle of a frame */
	s = pair_stream(&other);
	CHECK(write(other, "\x0c\0\0\0\0\x7f\0\0\x01", 9) == 9);
	close(other);
	CHECK(udp_framer_next(&f, s, &p) == 0);
	udp_framer_reset(&f);
	stream_free(s);
}

int main(void)
{
	test_capture();
	test_server_replies();
	test_decoders_reject();
	test_framer_split_and_bad();
	return check_report("protocol");
}
