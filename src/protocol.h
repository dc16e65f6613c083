/* The rathole wire protocol, version 1 (see docs/protocol.md): fixed-size
 * bincode records, little-endian, plus the UDP frame format. */
#ifndef PROTOCOL_H
#define PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define PROTO_VERSION		1
#define PROTO_DIGEST_LEN	32
#define PROTO_HELLO_LEN		37	/* u32 variant, u8 version, 32-byte digest */
#define PROTO_AUTH_LEN		32
#define PROTO_CMD_LEN		4	/* Ack, ControlChannelCmd, DataChannelCmd */

enum hello_kind { HELLO_CONTROL = 0, HELLO_DATA = 1 };
enum ack { ACK_OK = 0, ACK_SERVICE_NOT_EXIST = 1, ACK_AUTH_FAILED = 2 };
enum control_cmd { CMD_CREATE_DATA_CHANNEL = 0, CMD_HEARTBEAT = 1 };
enum data_cmd { DATA_START_FORWARD_TCP = 0, DATA_START_FORWARD_UDP = 1 };

struct hello {
	enum hello_kind kind;
	uint8_t version;
	uint8_t digest[PROTO_DIGEST_LEN];
};

void proto_encode_hello(uint8_t out[PROTO_HELLO_LEN], enum hello_kind kind,
			const uint8_t digest[PROTO_DIGEST_LEN]);
/* Returns 0, or -1 for an unknown variant. The version is returned as is:
 * the caller refuses versions other than PROTO_VERSION. */
int proto_decode_hello(const uint8_t in[PROTO_HELLO_LEN], struct hello *h);

void proto_encode_u32(uint8_t out[PROTO_CMD_LEN], uint32_t v);
/* Decodes a 4-byte enum and checks it is below nvariants; -1 otherwise. */
int proto_decode_enum(const uint8_t in[PROTO_CMD_LEN], uint32_t nvariants);

const char *proto_ack_str(enum ack a);

/* sha256(data) */
void proto_digest(const void *data, size_t len, uint8_t out[PROTO_DIGEST_LEN]);
/* sha256(token || nonce): the Auth digest, which is also the session key */
void proto_session_key(const char *token, const uint8_t nonce[PROTO_DIGEST_LEN],
		       uint8_t out[PROTO_DIGEST_LEN]);
bool proto_digest_equal(const uint8_t *a, const uint8_t *b);	/* constant time */
int proto_random(void *buf, size_t len);			/* CSPRNG */

/* ---- UDP frames: u8 header length, bincode UdpHeader{from, len: u16}, payload ---- */

#define UDP_HDR_V4_LEN	12
#define UDP_HDR_V6_LEN	24
#define UDP_FRAME_MAX_HDR (1 + UDP_HDR_V6_LEN)
#define UDP_MAX_PAYLOAD	65535

/* Writes the 1 + H header bytes for a datagram from `from` of len bytes.
 * Returns the header size, or -1 for an unsupported address family. */
int proto_udp_encode_header(uint8_t out[UDP_FRAME_MAX_HDR], const struct net_addr *from,
			    uint16_t len);
/* Given the header length byte and the H header bytes, extracts the address
 * and payload length. Returns 0, or -1 if the header is malformed. */
int proto_udp_decode_header(uint8_t hlen, const uint8_t *hdr, struct net_addr *from,
			    uint16_t *len);

#endif
