/* Fixed-size protocol records: Hello, the 4-byte enums, UDP frame headers. */
#include "fuzz.h"
#include "protocol.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

static void hello(const uint8_t *data, size_t size)
{
	uint8_t in[PROTO_HELLO_LEN] = { 0 }, again[PROTO_HELLO_LEN];
	struct hello h;

	memcpy(in, data, size < sizeof in ? size : sizeof in);
	if (proto_decode_hello(in, &h) == 0) {
		/* what decodes re-encodes to the same bytes (version aside) */
		proto_encode_hello(again, h.kind, h.digest);
		if (memcmp(again, in, 4) != 0 || memcmp(again + 5, in + 5, PROTO_DIGEST_LEN) != 0)
			abort();
	}
}

static void enums(const uint8_t *data, size_t size)
{
	uint8_t in[PROTO_CMD_LEN] = { 0 };
	uint32_t n = size > 4 ? data[4] : 3;
	int v;

	memcpy(in, data, size < sizeof in ? size : sizeof in);
	v = proto_decode_enum(in, n);
	if (v != -1 && (v < 0 || (uint32_t)v >= n))
		abort();
}

static void udp_header(const uint8_t *data, size_t size)
{
	uint8_t hdr[255] = { 0 }, out[UDP_FRAME_MAX_HDR];
	struct net_addr from;
	uint16_t len;
	uint8_t hlen;

	if (size < 1)
		return;
	hlen = data[0];
	/* the framer only ever passes 12 or 24; the decoder must still cope */
	memcpy(hdr, data + 1, size - 1 < sizeof hdr ? size - 1 : sizeof hdr);
	if (proto_udp_decode_header(hlen, hdr, &from, &len) == 0) {
		int n = proto_udp_encode_header(out, &from, len);

		if (n != 1 + hlen || out[0] != hlen)
			abort();	/* a decoded header re-encodes to the same size */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hello(data, size);
	enums(data, size);
	udp_header(data, size);
	return 0;
}
