/* Our TLS 1.3 record reader (src/tls13.c), after the handshake.
 *
 * Whoever completes a handshake reaches it: any client of a server (the
 * server asks for no client certificate), any server a client is pointed
 * at. The harness keys the reader and a peer from fixed traffic secrets,
 * as OpenSSL's key log would, and the peer seals whatever the input
 * describes, so the fuzzer gets past the AEAD to the content types, alerts,
 * post-handshake messages and padding.
 *
 * Byte 0: bits 0-1 the suite (0: TLS_AES_128_GCM_SHA256, 1:
 * TLS_AES_256_GCM_SHA384, else TLS_CHACHA20_POLY1305_SHA256), bit 2 we are
 * the server, bit 3 read in 7-byte pieces (plaintext opened in place and
 * handed out in parts), bit 4 seal a reply after each read (a KeyUpdate we
 * owe goes out first). Then records: flags (bit 0: the bytes go on the wire
 * as they are; bit 1: flip one bit of the sealed record), u16 LE length n,
 * n bytes: unless raw, the inner plaintext (content, content type, zero
 * padding) of one record. */
#include <stdio.h>

#include "fuzz.h"
#include "tls13.h"
#include "transport.h"

#define INNER_MAX (TLS13_PLAINTEXT_MAX + 256)	/* past the limit: the reader must refuse it */

static const uint16_t suite_ids[] = { 0x1301, 0x1302, 0x1303 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	fuzz_load_openssl();
	return 0;
}

static void put_hex(char *out, uint8_t byte, size_t len)
{
	for (size_t i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", (uint8_t)(byte + i));
}

/* A session keyed as OpenSSL's key log would have reported it. */
static struct tls13 *keyed(uint16_t suite, bool server)
{
	size_t hash_len = suite == 0x1302 ? 48 : 32;
	char line[64 + 64 + 2 * 48 + 8], err[128];
	struct tls13 *rl = NULL;
	int n;

	n = snprintf(line, sizeof line, "CLIENT_TRAFFIC_SECRET_0 %064x ", 0);
	put_hex(line + n, 0x11, hash_len);
	if (tls13_take_secret(&rl, line) < 0)
		abort();
	n = snprintf(line, sizeof line, "SERVER_TRAFFIC_SECRET_0 %064x ", 0);
	put_hex(line + n, 0x77, hash_len);
	if (tls13_take_secret(&rl, line) < 0 || tls13_start(rl, suite, server, 0, 0, err, sizeof err) < 0) {
		fprintf(stderr, "fuzz_tls13: %s\n", err);
		abort();
	}
	return rl;
}

static int no_handshake(struct stream *s) { return 0; }
static ssize_t no_fill(struct stream *s) { return 0; }

/* Reads what there is: false once the stream has ended or failed. */
static bool read_all(struct tls13 *rl, struct stream *s, bool small, bool reply)
{
	static uint8_t buf[TLS13_PLAINTEXT_MAX * 4 + 256], out[256];

	for (int i = 0; i < 10000; i++) {
		ssize_t n = tls13_read(rl, s, buf, small ? 7 : sizeof buf);
		size_t taken;

		if (n == ST_AGAIN)
			return true;
		if (n <= 0)
			return false;
		if (reply && tls13_seal(rl, (const uint8_t *)"reply", 5, out, sizeof out, &taken) < 0)
			return false;
	}
	abort();	/* more reads than bytes: a busy loop */
}

/* Writes all of p, reading in between when the socket is full. */
static bool deliver(int far, const uint8_t *p, size_t n, struct tls13 *rl, struct stream *s,
		    bool small, bool reply)
{
	for (int i = 0; n && i < 10000; i++) {
		ssize_t w = send(far, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (!read_all(rl, s, small, reply)) {
			return false;
		}
	}
	return n == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct stream_ops ops = { .handshake = no_handshake, .fill = no_fill };
	static uint8_t wire[INNER_MAX + TLS13_OVERHEAD];
	struct tls13 *ours, *peer;
	struct stream *s;
	bool server, small, reply, open = true;
	uint16_t suite;
	size_t off = 1;
	int sv[2];

	if (size < 1)
		return 0;
	suite = suite_ids[(data[0] & 3) < 2 ? data[0] & 3 : 2];
	server = data[0] & 4;
	small = data[0] & 8;
	reply = data[0] & 16;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	fuzz_nonblock(sv[0]);
	fuzz_nonblock(sv[1]);
	s = stream_alloc(sizeof *s, &ops, NULL, sv[0], server);
	if (!s)
		abort();
	ours = keyed(suite, server);
	peer = keyed(suite, !server);
	while (open && off + 3 <= size) {
		uint8_t flags = data[off];
		size_t n = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
		const uint8_t *p = data + off + 3;

		if (n > size - off - 3)
			n = size - off - 3;
		off += 3 + n;
		if (flags & 1) {
			open = deliver(sv[1], p, n, ours, s, small, reply);
		} else {
			size_t inner = n > INNER_MAX ? INNER_MAX : n;
			size_t content = inner ? inner - 1 : 0;

			if (tls13_seal_record(peer, inner ? p[content] : 0, p, content, wire) < 0)
				break;
			if (flags & 2)
				wire[(n * 7 + flags) % (content + TLS13_OVERHEAD)] ^= 0x10;
			open = deliver(sv[1], wire, content + TLS13_OVERHEAD, ours, s, small, reply);
		}
		if (open)
			open = read_all(ours, s, small, reply);
	}
	shutdown(sv[1], SHUT_WR);
	if (open)
		read_all(ours, s, small, reply);
	tls13_free(ours);
	tls13_free(peer);
	stream_free(s);
	close(sv[1]);
	return 0;
}
