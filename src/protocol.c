#include "protocol.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "secmem.h"
#include "sha256.h"

static void put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void proto_encode_hello(uint8_t out[PROTO_HELLO_LEN], enum hello_kind kind,
			const uint8_t digest[PROTO_DIGEST_LEN])
{
	put_u32le(out, (uint32_t)kind);
	out[4] = PROTO_VERSION;
	memcpy(out + 5, digest, PROTO_DIGEST_LEN);
}

int proto_decode_hello(const uint8_t in[PROTO_HELLO_LEN], struct hello *h)
{
	uint32_t kind = get_u32le(in);

	if (kind > HELLO_DATA)
		return -1;
	h->kind = (enum hello_kind)kind;
	h->version = in[4];
	memcpy(h->digest, in + 5, PROTO_DIGEST_LEN);
	return 0;
}

void proto_encode_u32(uint8_t out[PROTO_CMD_LEN], uint32_t v)
{
	put_u32le(out, v);
}

int proto_decode_enum(const uint8_t in[PROTO_CMD_LEN], uint32_t nvariants)
{
	uint32_t v = get_u32le(in);

	return v < nvariants ? (int)v : -1;
}

const char *proto_ack_str(enum ack a)
{
	switch (a) {
	case ACK_OK: return "Ok";
	case ACK_SERVICE_NOT_EXIST: return "the service does not exist on the server";
	case ACK_AUTH_FAILED: return "authentication failed (wrong token)";
	}
	return "unknown";
}

/* Our own SHA-256 and the kernel's random bytes: a tcp-transport process
 * then never initializes OpenSSL's providers (about 2 MiB less resident
 * memory per process; see src/sha256.h). */
void proto_digest(const void *data, size_t len, uint8_t out[PROTO_DIGEST_LEN])
{
	sha256(data, len, out);
}

void proto_session_key(const char *token, const uint8_t nonce[PROTO_DIGEST_LEN],
		       uint8_t out[PROTO_DIGEST_LEN])
{
	struct sha256 c;

	sha256_init(&c);
	sha256_update(&c, token, strlen(token));
	sha256_update(&c, nonce, PROTO_DIGEST_LEN);
	sha256_final(&c, out);
}

bool proto_digest_equal(const uint8_t *a, const uint8_t *b)
{
	return secure_equal(a, b, PROTO_DIGEST_LEN);
}

int proto_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		/* blocks only until the kernel's pool is first initialized */
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int proto_udp_encode_header(uint8_t out[UDP_FRAME_MAX_HDR], const struct net_addr *from,
			    uint16_t len)
{
	uint8_t *p = out + 1;

	if (from->u.sa.sa_family == AF_INET) {
		put_u32le(p, 0);
		memcpy(p + 4, &from->u.in4.sin_addr, 4);
		uint16_t port = ntohs(from->u.in4.sin_port);
		p[8] = (uint8_t)port;
		p[9] = (uint8_t)(port >> 8);
		p[10] = (uint8_t)len;
		p[11] = (uint8_t)(len >> 8);
		out[0] = UDP_HDR_V4_LEN;
		return 1 + UDP_HDR_V4_LEN;
	}
	if (from->u.sa.sa_family == AF_INET6) {
		put_u32le(p, 1);
		memcpy(p + 4, &from->u.in6.sin6_addr, 16);
		uint16_t port = ntohs(from->u.in6.sin6_port);
		p[20] = (uint8_t)port;
		p[21] = (uint8_t)(port >> 8);
		p[22] = (uint8_t)len;
		p[23] = (uint8_t)(len >> 8);
		out[0] = UDP_HDR_V6_LEN;
		return 1 + UDP_HDR_V6_LEN;
	}
	return -1;
}

int proto_udp_decode_header(uint8_t hlen, const uint8_t *hdr, struct net_addr *from,
			    uint16_t *len)
{
	memset(from, 0, sizeof *from);
	if (hlen == UDP_HDR_V4_LEN && get_u32le(hdr) == 0) {
		from->u.in4.sin_family = AF_INET;
		memcpy(&from->u.in4.sin_addr, hdr + 4, 4);
		from->u.in4.sin_port = htons((uint16_t)(hdr[8] | hdr[9] << 8));
		from->len = sizeof from->u.in4;
		*len = (uint16_t)(hdr[10] | hdr[11] << 8);
		return 0;
	}
	if (hlen == UDP_HDR_V6_LEN && get_u32le(hdr) == 1) {
		from->u.in6.sin6_family = AF_INET6;
		memcpy(&from->u.in6.sin6_addr, hdr + 4, 16);
		from->u.in6.sin6_port = htons((uint16_t)(hdr[20] | hdr[21] << 8));
		from->len = sizeof from->u.in6;
		*len = (uint16_t)(hdr[22] | hdr[23] << 8);
		return 0;
	}
	return -1;
}
