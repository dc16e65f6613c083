/* Noise: handshake messages read by a responder or an initiator with fixed
 * keys, and transport messages decrypted by a split cipher state.
 *
 * Input: byte 0 picks the protocol, byte 1 the mode, the rest is the message
 * (modes 0, 1, 3) or a sequence of records "u16 length, bytes" (mode 2). */
#include <stdio.h>

#include "fuzz.h"
#include "noise.h"

static const char *const protocols[] = {
	"Noise_NK_25519_ChaChaPoly_BLAKE2s",	/* rathole's default */
	"Noise_XX_25519_ChaChaPoly_BLAKE2s",
	"Noise_KK_25519_AESGCM_SHA256",
	"Noise_IK_25519_ChaChaPoly_SHA512",
	"Noise_N_25519_ChaChaPoly_BLAKE2b",
	"Noise_XK1_25519_AESGCM_BLAKE2s",
	"Noise_NN_25519_ChaChaPoly_SHA256",
};
#define NPROTOCOLS (sizeof protocols / sizeof protocols[0])

static uint8_t priv[2][NOISE_KEY_LEN], pub[2][NOISE_KEY_LEN], eph[2][NOISE_KEY_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	fuzz_load_openssl();
	for (int i = 0; i < 2; i++) {
		memset(priv[i], 0x41 + i, NOISE_KEY_LEN);
		memset(eph[i], 0x61 + i, NOISE_KEY_LEN);
		if (noise_public_key(priv[i], pub[i]) < 0)
			abort();
	}
	return 0;
}

static struct noise_hs *side(const char *name, enum noise_role role)
{
	int me = role == NOISE_INITIATOR ? 0 : 1;
	struct noise_keys k = {
		.local_static = priv[me],
		.remote_static = pub[1 - me],
		.local_ephemeral = eph[me],
	};
	char err[256];
	struct noise_hs *hs = noise_hs_new(name, role, &k, err, sizeof err);

	if (!hs)
		abort();	/* every protocol in the list is supported */
	return hs;
}

/* The message, read into an exact-size heap copy so ASan sees overreads. */
static long read_msg(struct noise_hs *hs, const uint8_t *msg, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1), payload[NOISE_MAX_MSG];
	long n;

	if (!copy)
		return -1;
	memcpy(copy, msg, len);
	n = noise_hs_read(hs, copy, len, payload, sizeof payload);
	free(copy);
	if (n >= 0 && (size_t)n > len)
		abort();	/* a payload cannot be longer than its message */
	if (n < 0 && noise_hs_next(hs) != NOISE_FAILED)
		abort();	/* a rejected message fails the handshake */
	return n;
}

/* Runs an honest handshake; returns 0 with both sides split. */
static int handshake(const char *name, struct noise_cipher *c[2][2])
{
	struct noise_hs *hs[2] = { side(name, NOISE_INITIATOR), side(name, NOISE_RESPONDER) };
	uint8_t msg[512], payload[512];
	int rc = -1;

	for (int step = 0; step < 8; step++) {
		int w = noise_hs_next(hs[0]) == NOISE_WRITE ? 0 : 1;
		long n;

		if (noise_hs_next(hs[0]) == NOISE_DONE && noise_hs_next(hs[1]) == NOISE_DONE) {
			if (noise_hs_split(hs[0], &c[0][0], &c[0][1]) < 0 ||
			    noise_hs_split(hs[1], &c[1][0], &c[1][1]) < 0)
				abort();
			rc = 0;
			break;
		}
		n = noise_hs_write(hs[w], NULL, 0, msg, sizeof msg);
		if (n < 0 || noise_hs_read(hs[1 - w], msg, (size_t)n, payload, sizeof payload) < 0)
			abort();	/* the honest handshake with fixed keys works */
	}
	noise_hs_free(hs[0]);
	noise_hs_free(hs[1]);
	return rc;
}

static void transport_records(const char *name, const uint8_t *data, size_t size)
{
	struct noise_cipher *c[2][2] = { { NULL, NULL }, { NULL, NULL } };
	static uint8_t buf[NOISE_MAX_MSG + NOISE_TAG_LEN];

	if (handshake(name, c) < 0)
		abort();
	while (size >= 2) {
		size_t len = (size_t)data[0] | (size_t)data[1] << 8;
		long n;

		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		/* forged ciphertext: the responder's receiving state refuses it */
		memcpy(buf, data, len);
		n = noise_decrypt(c[1][1], buf, len);
		if (n >= 0 && (size_t)n + NOISE_TAG_LEN != len)
			abort();
		/* and genuine ciphertext of the same bytes round-trips */
		if (len <= NOISE_MAX_PLAINTEXT && c[0][0] && c[1][1]) {
			memcpy(buf, data, len);
			n = noise_encrypt(c[0][0], buf, len);
			if (n != (long)(len + NOISE_TAG_LEN) || noise_decrypt(c[1][1], buf, (size_t)n) != (long)len ||
			    memcmp(buf, data, len) != 0)
				abort();
		}
		data += len;
		size -= len;
	}
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++)
			noise_cipher_free(c[i][j]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *name;
	struct noise_hs *r, *i;
	uint8_t msg[NOISE_MAX_MSG];
	long n;

	if (size < 2)
		return 0;
	name = protocols[data[0] % NPROTOCOLS];
	switch (data[1] % 4) {
	case 0:		/* the responder reads a first message */
		r = side(name, NOISE_RESPONDER);
		read_msg(r, data + 2, size - 2);
		noise_hs_free(r);
		break;
	case 1:		/* the initiator sent its first message and reads the answer */
		i = side(name, NOISE_INITIATOR);
		n = noise_hs_write(i, NULL, 0, msg, sizeof msg);
		if (n < 0)
			abort();
		if (noise_hs_next(i) == NOISE_READ)
			read_msg(i, data + 2, size - 2);
		noise_hs_free(i);
		break;
	case 2:
		transport_records(name, data + 2, size - 2);
		break;
	case 3:		/* a genuine first message (payload from the input), one byte changed */
		if (size < 4)
			break;
		i = side(name, NOISE_INITIATOR);
		r = side(name, NOISE_RESPONDER);
		n = noise_hs_write(i, data + 4, size - 4 > 1024 ? 1024 : size - 4, msg, sizeof msg);
		if (n < 0)
			abort();
		msg[data[2] % n] ^= data[3];
		n = read_msg(r, msg, (size_t)n);
		if (data[3] == 0 && n < 0)
			abort();	/* unchanged: it must be accepted */
		noise_hs_free(i);
		noise_hs_free(r);
		break;
	}
	return 0;
}
