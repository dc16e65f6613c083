/* The noise transport's streams: the length-prefixed records of the
 * handshake and, after it, of transport messages, read through fill().
 *
 * With NK (rathole's default) the client is anonymous: anyone can finish a
 * handshake and then send any records, so the record parser after the
 * handshake is reachable without a token. The harness plays the peer with
 * noise.h and fixed keys, then encrypts the records described by the input.
 *
 * Byte 0: bit 0 = our side is the client (else the server), bit 1 = raw
 * (the input goes on the wire as it is, from the first handshake byte),
 * bit 2 = XX instead of NK, bit 3 = send a message back between reads.
 * Then records: flags (bit 0: plaintext on the wire unencrypted, bit 1: flip
 * a byte of the ciphertext, bit 2: the length prefix is taken from the
 * input), u16 LE length, that many plaintext bytes. */
#include <stdio.h>

#include "fuzz.h"
#include "noise.h"
#include "transport.h"

static uint8_t spriv[32], spub[32], cpriv[32], cpub[32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	fuzz_load_openssl();
	memset(spriv, 0x53, sizeof spriv);
	memset(cpriv, 0x43, sizeof cpriv);
	if (noise_public_key(spriv, spub) < 0 || noise_public_key(cpriv, cpub) < 0)
		abort();
	return 0;
}

static struct transport *make_transport(bool server, bool xx, struct transport_config *cfg)
{
	char err[256];
	struct transport *t;

	memset(cfg, 0, sizeof *cfg);
	cfg->type = TRANSPORT_NOISE;
	cfg->has_noise = true;
	cfg->noise.pattern = xx ? "Noise_XX_25519_ChaChaPoly_BLAKE2s" : "Noise_NK_25519_ChaChaPoly_BLAKE2s";
	cfg->noise.has_local_private_key = server || xx;
	memcpy(cfg->noise.local_private_key, server ? spriv : cpriv, 32);
	cfg->noise.has_remote_public_key = !server && !xx;
	memcpy(cfg->noise.remote_public_key, spub, 32);
	t = transport_new(cfg, server, "fuzz.example:2333", err, sizeof err);
	if (!t) {
		fprintf(stderr, "fuzz_noise_stream: %s\n", err);
		abort();
	}
	return t;
}

static int send_record(int fd, const uint8_t *msg, size_t len)
{
	uint8_t rec[2 + 1024];

	rec[0] = (uint8_t)len;
	rec[1] = (uint8_t)(len >> 8);
	memcpy(rec + 2, msg, len);
	return send(fd, rec, len + 2, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)(len + 2) ? 0 : -1;
}

/* The stream under test writes its handshake messages synchronously into
 * the socketpair, so a whole record is there to read. */
static long recv_record(int fd, uint8_t *msg, size_t cap)
{
	uint8_t hdr[2];
	size_t len;

	if (recv(fd, hdr, 2, MSG_DONTWAIT) != 2)
		return -1;
	len = (size_t)hdr[0] | (size_t)hdr[1] << 8;
	if (len > cap || recv(fd, msg, len, MSG_DONTWAIT) != (ssize_t)len)
		return -1;
	return (long)len;
}

/* Plays the peer's side of the handshake. Returns its send cipher or NULL. */
static struct noise_cipher *peer_handshake(struct stream *s, int far, bool we_are_client, bool xx)
{
	char err[256];
	struct noise_keys k = { .local_static = we_are_client ? spriv : cpriv,
				.remote_static = we_are_client ? NULL : spub };
	struct noise_hs *hs = noise_hs_new(xx ? "Noise_XX_25519_ChaChaPoly_BLAKE2s" :
					   "Noise_NK_25519_ChaChaPoly_BLAKE2s",
					   we_are_client ? NOISE_RESPONDER : NOISE_INITIATOR, &k,
					   err, sizeof err);
	struct noise_cipher *tx = NULL, *rx = NULL, *c[2] = { NULL, NULL };
	uint8_t msg[1024], payload[1024];
	int rc = stream_handshake(s);	/* the client writes its first message */

	for (int step = 0; hs && step < 8 && rc != ST_ERROR; step++) {
		enum noise_next next = noise_hs_next(hs);
		long n;

		if (next == NOISE_DONE) {
			if (noise_hs_split(hs, &c[0], &c[1]) < 0)
				break;
			tx = c[0];
			rx = c[1];
			break;
		}
		if (next == NOISE_WRITE) {
			n = noise_hs_write(hs, NULL, 0, msg, sizeof msg);
			if (n < 0 || send_record(far, msg, (size_t)n) < 0)
				break;
		} else if (next == NOISE_READ) {
			n = recv_record(far, msg, sizeof msg);
			if (n < 0 || noise_hs_read(hs, msg, (size_t)n, payload, sizeof payload) < 0)
				break;
		} else {
			break;
		}
		rc = stream_handshake(s);
	}
	/* the stream may still owe its last message: let it finish */
	for (int i = 0; i < 4 && rc == ST_AGAIN; i++)
		rc = stream_handshake(s);
	noise_cipher_free(rx);
	noise_hs_free(hs);
	if (rc != 0) {
		noise_cipher_free(tx);
		return NULL;
	}
	return tx;
}

/* Turns the input's record descriptions into wire bytes. */
static uint8_t *build_wire(struct noise_cipher *tx, const uint8_t *d, size_t n, size_t *out_len)
{
	/* a record of 3 + len input bytes is at most 2 + len + 16 on the wire */
	uint8_t *wire = malloc(n * 6 + 64), *rec;
	size_t w = 0;

	if (!wire)
		abort();
	rec = malloc(NOISE_MAX_MSG + NOISE_TAG_LEN);
	if (!rec)
		abort();
	while (n >= 3) {
		uint8_t flags = d[0];
		size_t len = (size_t)d[1] | (size_t)d[2] << 8, wlen;

		d += 3;
		n -= 3;
		if (len > n)
			len = n;
		if (len > 1024)
			len = 1024;
		memcpy(rec, d, len);
		wlen = len;
		if (!(flags & 1)) {
			long c = noise_encrypt(tx, rec, len);

			if (c < 0)
				break;
			wlen = (size_t)c;
			if (flags & 2)
				rec[(len ? d[0] : 0) % wlen] ^= 0x5a;
		}
		if (flags & 4) {
			wire[w++] = (uint8_t)(flags >> 3);	/* a lying length prefix */
			wire[w++] = 0;
		} else {
			wire[w++] = (uint8_t)wlen;
			wire[w++] = (uint8_t)(wlen >> 8);
		}
		memcpy(wire + w, rec, wlen);
		w += wlen;
		d += len;
		n -= len;
	}
	free(rec);
	*out_len = w;
	return wire;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct transport_config cfg;
	struct transport *t;
	struct fuzz_feeder f;
	struct noise_cipher *tx = NULL;
	struct stream *s;
	uint8_t *wire = NULL;
	size_t wlen = 0;
	bool client, raw, xx;

	if (size < 1)
		return 0;
	client = data[0] & 1;
	raw = data[0] & 2;
	xx = data[0] & 4;
	t = make_transport(!client, xx, &cfg);
	fuzz_feeder_open(&f, NULL, 0);
	s = transport_wrap(t, f.ours, !client);
	if (!s)
		abort();
	f.ours = -1;
	if (!raw) {
		tx = peer_handshake(s, f.far, client, xx);
		if (!tx)
			abort();	/* the honest handshake with fixed keys works */
		wire = build_wire(tx, data + 1, size - 1, &wlen);
		f.data = wire;
		f.len = wlen;
	} else {
		f.data = data + 1;
		f.len = size - 1;
	}
	fuzz_drive_stream(s, &f, !raw, false, data[0] & 8 ? 8 : 0);
	stream_free(s);
	fuzz_feeder_close(&f);
	noise_cipher_free(tx);
	free(wire);
	transport_free(t);
	return 0;
}
