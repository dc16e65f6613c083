/* WebSocket transport (no TLS): the server's upgrade request parser, the
 * client's answer parser, and frames received through fill(), all read from
 * a socketpair fed with the input.
 *
 * Byte 0 picks the mode:
 *   0  server: the input is the upgrade request (and frames after it)
 *   1  server: a valid request, then the input as the client's frames
 *   2  client: the input is the server's answer (and frames)
 *   3  client: a valid 101 answer, then the input as the server's frames
 *
 * Byte 1 holds flags: 1 consume one byte at a time, 2 reply after each read,
 * 4 shut down at the end, 8 pad the input with 'x' up to the size of the
 * receive buffer (WS_RAW_CAP), so that a short input still fills it: the
 * answer's header then has no NUL after it anywhere in the buffer (issue 23:
 * the status line was read with sscanf, past the buffer's end), which inputs
 * of libFuzzer's default length never reach. */
#include <stdio.h>

#include <openssl/evp.h>

#include "base64.h"
#include "fuzz.h"
#include "transport.h"

#define WS_RAW_CAP	(16 * 1024 + 64)	/* transport_ws.c: the receive buffer */

static const char valid_request[] =
	"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	fuzz_load_openssl();
	return 0;
}

/* The answer to the client's request (read from the far end). */
static size_t answer_for(int far, char *out, size_t cap)
{
	char req[2048], acc[64], buf[128];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	ssize_t n = recv(far, req, sizeof req - 1, MSG_DONTWAIT);
	const char *k, *e;

	if (n <= 0)
		abort();	/* the client writes its request at once */
	req[n] = '\0';
	k = strstr(req, "Sec-WebSocket-Key: ");
	e = k ? strstr(k, "\r\n") : NULL;
	if (!e || e - k - 19 != 24)
		abort();
	snprintf(buf, sizeof buf, "%.24s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", k + 19);
	EVP_Digest(buf, strlen(buf), md, &mdlen, EVP_sha1(), NULL);
	base64_encode(md, 20, acc);
	return (size_t)snprintf(out, cap, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct transport_config cfg;
	struct transport t;
	struct fuzz_feeder f;
	struct stream *s;
	uint8_t mode, flags, *input = NULL;
	size_t len = 0, pad;
	char head[512];

	if (size < 2)
		return 0;
	mode = data[0] % 4;
	flags = data[1];
	data += 2;
	size -= 2;
	memset(&cfg, 0, sizeof cfg);
	cfg.type = TRANSPORT_WEBSOCKET;
	memset(&t, 0, sizeof t);
	t.impl = &transport_websocket;
	t.cfg = &cfg;
	t.server = mode < 2;
	t.remote_addr = "fuzz.example:2333";

	fuzz_feeder_open(&f, NULL, 0);
	s = transport_websocket.wrap(&t, f.ours, t.server);
	if (!s)
		abort();
	f.ours = -1;	/* the stream owns it now */
	if (mode == 3) {
		/* let the client write its request, answer it, then the input */
		if (stream_handshake(s) != ST_AGAIN)
			abort();
		len = answer_for(f.far, head, sizeof head);
	} else if (mode == 1) {
		len = sizeof valid_request - 1;
		memcpy(head, valid_request, len);
	}
	pad = flags & 8 && len + size < WS_RAW_CAP ? WS_RAW_CAP - len - size : 0;
	input = malloc(len + size + pad + 1);
	if (!input)
		abort();
	memcpy(input, head, len);
	memcpy(input + len, data, size);
	memset(input + len + size, 'x', pad);
	f.data = input;
	f.len = len + size + pad;
	if (fuzz_drive_stream(s, &f, false, flags & 1, flags & 2 ? 16 : 0) && flags & 4)
		stream_shutdown(s);
	stream_free(s);
	fuzz_feeder_close(&f);
	free(input);
	return 0;
}
