/* The websocket transport (RFC 6455), over TCP or over TLS.
 *
 * Layers: the stream speaks websocket frames over a lower byte layer, which
 * is either the raw socket or a TLS session (tls.h). Each chunk the relay
 * writes becomes one binary frame; received frame payloads are streamed as
 * they arrive, unmasked in place inside one bounded buffer, so a message of
 * any size passes through without being collected.
 *
 * Control frames we send (pong, close) must not land inside a data frame
 * that the relay has only partly written, so they wait in a small queue and
 * go out at a frame boundary: send_wire() never writes past the end of the
 * frame it is in, and writes the queue first when it starts the next one. */
#include "tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base64.h"
#include "log.h"

#define WS_RAW_CAP	(16 * 1024 + 64)	/* wire bytes; holds a whole HTTP header */
#define WS_HEAD_MAX	8192			/* bound of the HTTP handshake header */
#define WS_CTL_PAYLOAD	125
#define WS_CTL_FRAME	(14 + WS_CTL_PAYLOAD)
#define WS_CTL_QUEUE	(4 * WS_CTL_FRAME)
#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN	24			/* base64 of 16 bytes */
#define WS_ACCEPT_LEN	28			/* base64 of a SHA-1 */

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9,
       OP_PONG = 0xA };

enum ws_state {
	WS_TLS,			/* TLS handshake of the lower layer */
	WS_SEND_REQUEST,	/* client */
	WS_READ_RESPONSE,	/* client */
	WS_READ_REQUEST,	/* server */
	WS_SEND_RESPONSE,	/* server: 101 */
	WS_SEND_REJECT,		/* server: 400, then the channel fails */
	WS_OPEN,
};

/* Which write OpenSSL expects to be retried with the same bytes. */
enum ws_owed { OWED_NONE, OWED_DATA, OWED_CTL };

#define WS_CLOSED (-3)	/* parse result: the peer's close frame */
#define WS_TOO_BIG (-4)	/* read_head(): no end of header within WS_HEAD_MAX */

struct ws_stream {
	struct stream s;
	bool use_tls;
	struct tls_session tls;
	enum ws_state state;

	/* handshake */
	char *out;			/* request / response being written */
	size_t out_len, out_off;
	char key[WS_KEY_LEN + 1];	/* client: our Sec-WebSocket-Key */
	char reject[160];		/* server: why the request was refused */

	/* wire bytes from the lower layer, parsed in place */
	uint8_t *raw;
	uint32_t pos, end;

	/* the frame being received */
	bool in_frame, in_message, close_received;
	uint8_t opcode, mask[4];
	bool masked;
	uint32_t mask_phase;
	uint64_t left;			/* payload bytes still to come */
	uint8_t ctl[WS_CTL_PAYLOAD];
	uint8_t ctl_got;

	/* sending */
	uint64_t frame_left;		/* unwritten bytes of the current data frame */
	enum ws_owed owed;
	bool close_queued;
	uint8_t q[WS_CTL_QUEUE];	/* control frames waiting for a boundary */
	uint16_t q_off, q_len;
	uint8_t rnd[64];		/* random bytes for masks */
	uint8_t rnd_off;
};

#define WS(st) ((struct ws_stream *)(st))

/* ---- the lower layer: raw socket or TLS session ---- */

static ssize_t lower_read(struct ws_stream *ws, void *buf, size_t len)
{
	if (ws->use_tls)
		return tls_session_read(&ws->tls, &ws->s, buf, len);
	return stream_sock_read(&ws->s, buf, len);
}

static ssize_t lower_write(struct ws_stream *ws, const void *buf, size_t len)
{
	if (ws->use_tls)
		return tls_session_write(&ws->tls, &ws->s, buf, len);
	return stream_sock_write(&ws->s, buf, len);
}

static int lower_shutdown(struct ws_stream *ws)
{
	if (ws->use_tls)
		return tls_session_shutdown(&ws->tls, &ws->s);
	shutdown(ws->s.fd, SHUT_WR);
	return 0;
}

/* ---- masks and frame headers ---- */

static void random_bytes(struct ws_stream *ws, uint8_t *out, size_t n)
{
	if (ws->rnd_off == 0 || ws->rnd_off + n > sizeof ws->rnd) {
		if (RAND_bytes(ws->rnd, sizeof ws->rnd) != 1)
			log_warn("websocket: no random bytes from OpenSSL; masks are weak");
		ws->rnd_off = 0;
	}
	memcpy(out, ws->rnd + ws->rnd_off, n);
	ws->rnd_off = (uint8_t)((ws->rnd_off + n) % sizeof ws->rnd);
}

/* XORs n bytes with the mask, starting at mask byte phase (0..3). Eight bytes
 * at a time: two turns of the mask per word. */
static void apply_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint32_t phase)
{
	uint8_t m8[8];
	uint64_t w, mw;
	size_t i = 0;
	int j;

	for (j = 0; j < 8; j++)
		m8[j] = mask[(phase + (uint32_t)j) & 3];
	memcpy(&mw, m8, 8);
	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		w ^= mw;
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] ^= mask[(phase + i) & 3];
}

static size_t header_len(uint64_t len, bool masked)
{
	size_t h = len <= 125 ? 2 : len <= 0xffff ? 4 : 10;

	return masked ? h + 4 : h;
}

/* Writes a frame header (FIN set) to out; returns its length. */
static size_t put_header(uint8_t *out, uint8_t opcode, uint64_t len, const uint8_t *mask)
{
	size_t h = 2;
	int i;

	out[0] = (uint8_t)(0x80 | opcode);
	if (len <= 125) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] = 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		h = 10;
	}
	if (mask) {
		out[1] |= 0x80;
		memcpy(out + h, mask, 4);
		h += 4;
	}
	return h;
}

/* The length of the frame whose header starts at p (our own sealed bytes):
 * 0 when fewer than its header's bytes are given. */
static uint64_t frame_total_len(const uint8_t *p, size_t n)
{
	size_t h = 2;
	uint64_t len;
	int i;

	if (n < 2)
		return 0;
	len = p[1] & 0x7f;
	if (len == 126) {
		h = 4;
		if (n < h)
			return 0;
		len = (uint64_t)p[2] << 8 | p[3];
	} else if (len == 127) {
		h = 10;
		if (n < h)
			return 0;
		for (len = 0, i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
	}
	if (p[1] & 0x80)
		h += 4;
	return n < h ? 0 : h + len;
}

/* ---- control frames out ---- */

/* Appends a control frame to the queue. Pongs leave room for the close
 * frame. Bytes already offered to the lower layer keep their content (a
 * TLS write must be retried with the same bytes; moving them is allowed). */
static int queue_control(struct ws_stream *ws, uint8_t opcode, const uint8_t *payload,
			 size_t len)
{
	size_t need = header_len(len, !ws->s.server) + len + (opcode == OP_CLOSE ? 0 : 8);
	uint8_t mask[4], *f;
	size_t h;

	if (ws->q_off) {
		memmove(ws->q, ws->q + ws->q_off, (size_t)(ws->q_len - ws->q_off));
		ws->q_len = (uint16_t)(ws->q_len - ws->q_off);
		ws->q_off = 0;
	}
	if (ws->q_len + need > sizeof ws->q)
		return -1;
	f = ws->q + ws->q_len;
	if (!ws->s.server)
		random_bytes(ws, mask, 4);
	h = put_header(f, opcode, len, ws->s.server ? NULL : mask);
	memcpy(f + h, payload, len);
	if (!ws->s.server)
		apply_mask(f + h, len, mask, 0);
	ws->q_len = (uint16_t)(ws->q_len + h + len);
	return 0;
}

static bool control_pending(const struct ws_stream *ws)
{
	return ws->q_off < ws->q_len;
}

/* Control frames may go out only between data frames, and not while
 * OpenSSL waits for a data write to be retried. */
static bool at_boundary(const struct ws_stream *ws)
{
	return ws->frame_left == 0 && ws->owed != OWED_DATA;
}

static int flush_control(struct ws_stream *ws)
{
	while (control_pending(ws)) {
		ssize_t n = lower_write(ws, ws->q + ws->q_off, (size_t)(ws->q_len - ws->q_off));

		if (n < 0) {
			if (n == ST_AGAIN)
				ws->owed = OWED_CTL;
			return (int)n;
		}
		ws->owed = OWED_NONE;
		ws->q_off = (uint16_t)(ws->q_off + n);
	}
	ws->q_off = ws->q_len = 0;
	return 0;
}

/* ---- the HTTP handshake ---- */

static void accept_value(const char *key, size_t klen, char out[WS_ACCEPT_LEN + 1])
{
	char buf[128];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (klen > sizeof buf - sizeof WS_GUID)
		klen = sizeof buf - sizeof WS_GUID;
	memcpy(buf, key, klen);
	memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
	EVP_Digest(buf, klen + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL);
	base64_encode(md, 20, out);
}

struct http_head {
	const char *first;		/* request or status line */
	size_t first_len;
	bool upgrade_websocket, connection_upgrade;
	const char *key, *accept, *version;
	size_t key_len, accept_len, version_len;
};

/* Whether a comma-separated header value holds token (case-insensitive). */
static bool has_token(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token);
	const char *end = v + len;

	while (v < end) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		const char *e = comma ? comma : end;

		while (v < e && (*v == ' ' || *v == '\t'))
			v++;
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - v) == tl && strncasecmp(v, token, tl) == 0)
			return true;
		v = comma ? comma + 1 : end;
	}
	return false;
}

static bool name_is(const char *n, size_t len, const char *want)
{
	return strlen(want) == len && strncasecmp(n, want, len) == 0;
}

static void note_header(struct http_head *h, const char *name, size_t nlen, const char *v,
			size_t vlen)
{
	if (name_is(name, nlen, "upgrade")) {
		h->upgrade_websocket |= has_token(v, vlen, "websocket");
	} else if (name_is(name, nlen, "connection")) {
		h->connection_upgrade |= has_token(v, vlen, "upgrade");
	} else if (name_is(name, nlen, "sec-websocket-key")) {
		h->key = v;
		h->key_len = vlen;
	} else if (name_is(name, nlen, "sec-websocket-accept")) {
		h->accept = v;
		h->accept_len = vlen;
	} else if (name_is(name, nlen, "sec-websocket-version")) {
		h->version = v;
		h->version_len = vlen;
	}
}

/* Splits a header block (ending with its empty line) into the fields we
 * need. Returns NULL or what is malformed. */
static const char *parse_head(const char *p, size_t len, struct http_head *h)
{
	const char *end = p + len;
	bool first = true;

	memset(h, 0, sizeof *h);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end, *colon, *v, *ve;

		if (e > p && e[-1] == '\r')
			e--;
		if (e == p)
			break;		/* the empty line */
		if (first) {
			h->first = p;
			h->first_len = (size_t)(e - p);
			first = false;
		} else {
			if (*p == ' ' || *p == '\t')
				return "folded header lines are not allowed";
			colon = memchr(p, ':', (size_t)(e - p));
			if (!colon || colon == p || colon[-1] == ' ' || colon[-1] == '\t')
				return "a header line without a name";
			for (v = colon + 1; v < e && (*v == ' ' || *v == '\t'); v++)
				;
			for (ve = e; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
				;
			note_header(h, p, (size_t)(colon - p), v, (size_t)(ve - v));
		}
		p = nl ? nl + 1 : end;
	}
	return first ? "an empty header" : NULL;
}

/* "HTTP/1.1" or a later 1.x. */
static bool http_version_ok(const char *v, size_t len)
{
	return len == 8 && memcmp(v, "HTTP/1.", 7) == 0 && v[7] >= '1' && v[7] <= '9';
}

/* The server's checks of the client's upgrade request. Returns NULL or why
 * it is refused. */
static const char *check_request(const struct http_head *h)
{
	const char *line = h->first, *sp1, *sp2, *end = h->first + h->first_len;
	uint8_t key[32];

	sp1 = memchr(line, ' ', h->first_len);
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
	if (!sp2 || sp2 == sp1 + 1 || !http_version_ok(sp2 + 1, (size_t)(end - sp2 - 1)))
		return "not an HTTP/1.1 request";
	if (sp1 - line != 3 || memcmp(line, "GET", 3) != 0)
		return "the method is not GET";
	if (!h->upgrade_websocket)
		return "no \"Upgrade: websocket\" header";
	if (!h->connection_upgrade)
		return "no \"Connection: Upgrade\" header";
	if (!h->version || h->version_len != 2 || memcmp(h->version, "13", 2) != 0)
		return "Sec-WebSocket-Version is not 13";
	if (!h->key || base64_decode(h->key, h->key_len, key, sizeof key) != 16)
		return "Sec-WebSocket-Key is missing or not 16 bytes in base64";
	return NULL;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* The status code of "HTTP/1.x NNN[ reason]", or -1. Parsed by hand: the
 * line lies in the receive buffer, which need not hold a NUL anywhere (the
 * frames after the header may fill it), so no str* or scanf function may
 * read it; and the code is exactly three digits, not what %d would take
 * (" 101", "+101", "1011"). */
static int status_code(const char *line, size_t len)
{
	if (len < 12 || !http_version_ok(line, 8) || line[8] != ' ' || !is_digit(line[9]) ||
	    !is_digit(line[10]) || !is_digit(line[11]) || (len > 12 && line[12] != ' '))
		return -1;
	return (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
}

static int check_response(struct ws_stream *ws, const struct http_head *h)
{
	char want[WS_ACCEPT_LEN + 1], reason[61];
	int code = status_code(h->first, h->first_len);
	size_t i, n = 0;

	if (code < 0)
		return stream_set_error(&ws->s, "websocket: the server did not answer in HTTP "
					"(is remote_addr a websocket server?)");
	if (code != 101) {
		/* "HTTP/1.1 404 Not Found": the reason, printable, cut for the log */
		for (i = 13; i < h->first_len && n < sizeof reason - 1; i++)
			reason[n++] = h->first[i] >= 0x20 && h->first[i] < 0x7f ? h->first[i] : '?';
		reason[n] = '\0';
		return stream_set_error(&ws->s, "websocket: the server answered HTTP %d %s "
					"instead of 101 Switching Protocols", code, reason);
	}
	if (!h->upgrade_websocket || !h->connection_upgrade)
		return stream_set_error(&ws->s, "websocket: the server's 101 answer lacks "
					"\"Upgrade: websocket\" / \"Connection: Upgrade\"");
	accept_value(ws->key, WS_KEY_LEN, want);
	if (!h->accept || h->accept_len != WS_ACCEPT_LEN ||
	    memcmp(h->accept, want, WS_ACCEPT_LEN) != 0)
		return stream_set_error(&ws->s, "websocket: the server's Sec-WebSocket-Accept "
					"does not match our key");
	return 0;
}

static int set_output(struct ws_stream *ws, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int set_output(struct ws_stream *ws, const char *fmt, ...)
{
	va_list ap;
	int n;

	free(ws->out);
	ws->out = NULL;
	va_start(ap, fmt);
	n = vasprintf(&ws->out, fmt, ap);
	va_end(ap);
	if (n < 0) {
		ws->out = NULL;
		return stream_set_error(&ws->s, "out of memory");
	}
	ws->out_len = (size_t)n;
	ws->out_off = 0;
	return 0;
}

static int write_output(struct ws_stream *ws)
{
	while (ws->out_off < ws->out_len) {
		ssize_t n = lower_write(ws, ws->out + ws->out_off, ws->out_len - ws->out_off);

		if (n < 0)
			return (int)n;
		ws->out_off += (size_t)n;
	}
	free(ws->out);
	ws->out = NULL;
	return 0;
}

static int prepare_request(struct ws_stream *ws)
{
	uint8_t nonce[16];

	random_bytes(ws, nonce, sizeof nonce);
	base64_encode(nonce, sizeof nonce, ws->key);
	return set_output(ws, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
			  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
			  "Sec-WebSocket-Version: 13\r\n\r\n",
			  ws->s.t->remote_addr ? ws->s.t->remote_addr : "localhost", ws->key);
}

/* Reads until the header block is complete. Bytes after it stay in the
 * buffer: they are the first frames. Returns the header's length, 0 when
 * the peer closed, ST_AGAIN, ST_ERROR or WS_TOO_BIG. */
static ssize_t read_head(struct ws_stream *ws)
{
	for (;;) {
		size_t from = ws->end > 3 ? ws->end - 3 : 0;
		ssize_t n;
		uint8_t *e;

		if (!ws->raw) {
			ws->raw = malloc(WS_RAW_CAP);
			if (!ws->raw)
				return stream_set_error(&ws->s, "out of memory");
		}
		n = lower_read(ws, ws->raw + ws->end, WS_RAW_CAP - ws->end);
		if (n <= 0)
			return n;
		ws->end += (uint32_t)n;
		e = memmem(ws->raw + from, ws->end - from, "\r\n\r\n", 4);
		if (e && e + 4 - ws->raw <= WS_HEAD_MAX)
			return e + 4 - ws->raw;
		if (ws->end >= WS_HEAD_MAX)
			return WS_TOO_BIG;
	}
}

static int client_read_response(struct ws_stream *ws)
{
	struct http_head h;
	const char *bad;
	ssize_t n = read_head(ws);

	if (n == 0)
		return stream_set_error(&ws->s, "websocket: the server closed the connection "
					"during the handshake");
	if (n == WS_TOO_BIG)
		return stream_set_error(&ws->s, "websocket: the server's answer header is larger "
					"than %d bytes", WS_HEAD_MAX);
	if (n < 0)
		return (int)n;
	bad = parse_head((const char *)ws->raw, (size_t)n, &h);
	if (bad)
		return stream_set_error(&ws->s, "websocket: bad handshake answer: %s", bad);
	if (check_response(ws, &h) < 0)
		return ST_ERROR;
	ws->pos = (uint32_t)n;
	return 0;
}

static int server_read_request(struct ws_stream *ws)
{
	char accept[WS_ACCEPT_LEN + 1];
	struct http_head h;
	const char *bad;
	ssize_t n = read_head(ws);

	if (n == 0)
		return stream_set_error(&ws->s, "websocket: the client closed the connection "
					"during the handshake");
	if (n == WS_TOO_BIG)
		bad = "the header is larger than 8192 bytes";
	else if (n < 0)
		return (int)n;
	else
		bad = parse_head((const char *)ws->raw, (size_t)n, &h);
	if (!bad)
		bad = check_request(&h);
	if (bad) {
		snprintf(ws->reject, sizeof ws->reject, "websocket: bad upgrade request: %s", bad);
		ws->state = WS_SEND_REJECT;
		return set_output(ws, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
				  "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n");
	}
	accept_value(h.key, h.key_len, accept);
	ws->pos = (uint32_t)n;
	ws->state = WS_SEND_RESPONSE;
	return set_output(ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
}

static int ws_handshake(struct stream *s)
{
	struct ws_stream *ws = WS(s);
	int rc;

	for (;;) {
		switch (ws->state) {
		case WS_TLS:
			rc = tls_session_handshake(&ws->tls, s);
			if (rc < 0)
				return rc;
			ws->state = s->server ? WS_READ_REQUEST : WS_SEND_REQUEST;
			if (!s->server && prepare_request(ws) < 0)
				return ST_ERROR;
			break;
		case WS_SEND_REQUEST:
			rc = write_output(ws);
			if (rc < 0)
				return rc;
			ws->state = WS_READ_RESPONSE;
			break;
		case WS_READ_RESPONSE:
			rc = client_read_response(ws);
			if (rc < 0)
				return rc;
			ws->state = WS_OPEN;
			break;
		case WS_READ_REQUEST:
			rc = server_read_request(ws);
			if (rc < 0)
				return rc;
			break;
		case WS_SEND_RESPONSE:
			rc = write_output(ws);
			if (rc < 0)
				return rc;
			ws->state = WS_OPEN;
			break;
		case WS_SEND_REJECT:
			rc = write_output(ws);
			if (rc == ST_AGAIN)
				return rc;
			return stream_set_error(s, "%s", ws->reject);
		case WS_OPEN:
			return 0;
		}
	}
}

/* ---- receiving frames ---- */

static int frame_error(struct ws_stream *ws, const char *what)
{
	return stream_set_error(&ws->s, "websocket protocol error: %s", what);
}

/* Parses the header at pos. Returns 1 when parsed, 0 when more bytes are
 * needed, ST_ERROR on a protocol violation. */
static int parse_frame_header(struct ws_stream *ws)
{
	const uint8_t *p = ws->raw + ws->pos;
	size_t avail = ws->end - ws->pos, h = 2;
	uint8_t op, len7;
	bool fin, masked;
	uint64_t len;
	int i;

	if (avail < 2)
		return 0;
	fin = p[0] & 0x80;
	op = p[0] & 0x0f;
	masked = p[1] & 0x80;
	len7 = p[1] & 0x7f;
	if (p[0] & 0x70)
		return frame_error(ws, "reserved bits set (no extension was negotiated)");
	if (op > OP_BINARY && op != OP_CLOSE && op != OP_PING && op != OP_PONG)
		return frame_error(ws, "reserved opcode");
	if (ws->s.server && !masked)
		return frame_error(ws, "unmasked frame from the client");
	if (!ws->s.server && masked)
		return frame_error(ws, "masked frame from the server");
	if (op & 0x8) {
		if (!fin)
			return frame_error(ws, "fragmented control frame");
		if (len7 > WS_CTL_PAYLOAD)
			return frame_error(ws, "control frame longer than 125 bytes");
	} else if (op == OP_CONT && !ws->in_message) {
		return frame_error(ws, "continuation frame without a message to continue");
	} else if (op != OP_CONT && ws->in_message) {
		return frame_error(ws, "new message before the previous one ended");
	}
	h += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
	if (masked)
		h += 4;
	if (avail < h)
		return 0;
	len = len7;
	if (len7 == 126) {
		len = (uint64_t)p[2] << 8 | p[3];
	} else if (len7 == 127) {
		for (len = 0, i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		if (len >> 63)
			return frame_error(ws, "frame length of 2^63 or more");
	}
	if (masked)
		memcpy(ws->mask, p + h - 4, 4);
	ws->masked = masked;
	ws->mask_phase = 0;
	ws->opcode = op;
	ws->left = len;
	ws->ctl_got = 0;
	ws->in_frame = true;
	if (!(op & 0x8))
		ws->in_message = !fin;
	ws->pos += (uint32_t)h;
	return 1;
}

/* Acts on a complete control frame: 1 to go on, WS_CLOSED, ST_ERROR. */
static int handle_control(struct ws_stream *ws)
{
	switch (ws->opcode) {
	case OP_PING:
		if (queue_control(ws, OP_PONG, ws->ctl, ws->ctl_got) < 0)
			log_debug("websocket: pong dropped (the peer does not read our pongs)");
		/* Answer now if no data frame is half written; else at the
		 * next frame boundary. */
		if (at_boundary(ws) && flush_control(ws) == ST_ERROR)
			return ST_ERROR;
		return 1;
	case OP_PONG:
		return 1;
	default:	/* OP_CLOSE */
		if (ws->ctl_got == 1)
			return frame_error(ws, "close frame with a 1-byte payload");
		if (ws->ctl_got >= 2)
			log_debug("websocket: close from the peer, code %u",
				  (unsigned)ws->ctl[0] << 8 | ws->ctl[1]);
		ws->close_received = true;
		return WS_CLOSED;
	}
}

/* Takes control payload bytes into ws->ctl as they arrive. */
static int take_control_payload(struct ws_stream *ws)
{
	size_t k = ws->end - ws->pos;

	if (k > ws->left)
		k = (size_t)ws->left;
	memcpy(ws->ctl + ws->ctl_got, ws->raw + ws->pos, k);
	if (ws->masked)
		apply_mask(ws->ctl + ws->ctl_got, k, ws->mask, ws->ctl_got & 3);
	ws->ctl_got = (uint8_t)(ws->ctl_got + k);
	ws->pos += (uint32_t)k;
	ws->left -= k;
	if (ws->left)
		return 0;
	ws->in_frame = false;
	return handle_control(ws);
}

/* Exposes the data payload bytes at pos (unmasked in place) to the reader. */
static ssize_t expose_data(struct ws_stream *ws)
{
	size_t k = ws->end - ws->pos;

	if (k > ws->left)
		k = (size_t)ws->left;
	if (ws->masked) {
		apply_mask(ws->raw + ws->pos, k, ws->mask, ws->mask_phase);
		ws->mask_phase = (uint32_t)((ws->mask_phase + k) & 3);
	}
	ws->s.rx = ws->raw;
	ws->s.rx_cap = WS_RAW_CAP;
	ws->s.rx_off = ws->pos;
	ws->s.rx_len = (uint32_t)k;
	ws->pos += (uint32_t)k;
	ws->left -= k;
	if (!ws->left)
		ws->in_frame = false;
	return (ssize_t)k;
}

/* Parses buffered frames: > 0 data bytes exposed, 0 when more bytes are
 * needed, WS_CLOSED, ST_ERROR. */
static ssize_t parse_frames(struct ws_stream *ws)
{
	for (;;) {
		int rc;

		if (!ws->in_frame) {
			rc = parse_frame_header(ws);
			if (rc <= 0)
				return rc;
		}
		if (ws->opcode & 0x8) {
			rc = take_control_payload(ws);
			if (rc <= 0)
				return rc;	/* more bytes needed, closed, error */
			continue;
		}
		if (ws->left == 0) {
			ws->in_frame = false;	/* an empty data frame */
			continue;
		}
		if (ws->pos == ws->end)
			return 0;
		return expose_data(ws);
	}
}

/* Reads more wire bytes after the unparsed rest (a partial frame header at
 * most, so the move is small). */
static ssize_t read_more(struct ws_stream *ws)
{
	ssize_t n;

	if (!ws->raw) {
		ws->raw = malloc(WS_RAW_CAP);
		if (!ws->raw)
			return stream_set_error(&ws->s, "out of memory");
		ws->pos = ws->end = 0;
	}
	if (ws->pos) {
		memmove(ws->raw, ws->raw + ws->pos, ws->end - ws->pos);
		ws->end -= ws->pos;
		ws->pos = 0;
	}
	n = lower_read(ws, ws->raw + ws->end, WS_RAW_CAP - ws->end);
	if (n > 0)
		ws->end += (uint32_t)n;
	return n;
}

/* An idle stream keeps no buffer. */
static void release_raw(struct ws_stream *ws)
{
	if (ws->raw && ws->pos == ws->end) {
		free(ws->raw);
		ws->raw = NULL;
		ws->pos = ws->end = 0;
	}
}

static ssize_t end_of_lower(struct ws_stream *ws)
{
	if (ws->in_frame || ws->pos != ws->end)
		return stream_set_error(&ws->s, "websocket: the connection closed in the "
					"middle of a frame");
	/* a bare end, which anyone on the path can forge: the relay resets
	 * the other side rather than pass it on as a clean end (every peer of
	 * ours, and the reference's, sends a close frame first) */
	log_debug("websocket: the peer closed the connection without a close frame");
	ws->s.cut = true;
	return 0;
}

static ssize_t ws_fill(struct stream *s)
{
	struct ws_stream *ws = WS(s);

	if (s->rx == ws->raw) {
		s->rx = NULL;
		s->rx_cap = 0;
	}
	if (ws->close_received)
		return 0;
	for (;;) {
		ssize_t n;

		if (ws->raw) {
			n = parse_frames(ws);
			if (n > 0 || n == ST_ERROR)
				return n;
			if (n == WS_CLOSED)
				return 0;
		}
		/* Answer pings now if no data frame is half written. */
		if (control_pending(ws) && at_boundary(ws) && flush_control(ws) == ST_ERROR)
			return ST_ERROR;
		n = read_more(ws);
		if (n == 0)
			return end_of_lower(ws);
		if (n < 0) {
			if (n == ST_AGAIN)
				release_raw(ws);
			return n;
		}
	}
}

/* Keeps the wire buffer out of the generic stream code (stream_trim would
 * free it while frames are still buffered after the exposed bytes). */
static void ws_consume(struct stream *s, size_t n)
{
	s->rx_off += (uint32_t)n;
	s->rx_len -= (uint32_t)n;
	if (s->rx_len == 0) {
		s->rx = NULL;
		s->rx_off = 0;
		s->rx_cap = 0;
	}
}

/* ---- sending frames ---- */

static size_t ws_seal(struct stream *s, uint8_t *p, size_t len, uint8_t **wire)
{
	struct ws_stream *ws = WS(s);
	uint8_t mask[4];
	size_t h = header_len(len, !s->server);

	if (!s->server) {
		random_bytes(ws, mask, 4);
		apply_mask(p, len, mask, 0);
	}
	put_header(p - h, OP_BINARY, len, s->server ? NULL : mask);
	*wire = p - h;
	return h + len;
}

/* Writes sealed frames, never past the end of the current one, so that a
 * queued control frame can go out at the next boundary. */
static ssize_t ws_send_wire(struct stream *s, const uint8_t *p, size_t n)
{
	struct ws_stream *ws = WS(s);
	uint64_t total = ws->frame_left;
	ssize_t w;
	int rc;

	if (ws->close_queued)
		return stream_set_error(s, "websocket: data after our close frame");
	if (control_pending(ws) && at_boundary(ws)) {
		rc = flush_control(ws);
		if (rc < 0)
			return rc;
	}
	if (total == 0) {
		total = frame_total_len(p, n);
		if (total == 0)
			return stream_set_error(s, "websocket: send_wire() must start at a "
						"sealed frame");
	}
	w = lower_write(ws, p, n < total ? n : (size_t)total);
	if (w < 0) {
		if (w == ST_AGAIN)
			ws->owed = OWED_DATA;
		return w;
	}
	ws->owed = OWED_NONE;
	ws->frame_left = total - (uint64_t)w;
	return w;
}

/* Our half-close is the close frame (code 1000) alone. The TCP connection
 * (and TLS session) stay open until the stream is freed: a proxy such as
 * nginx ends the whole upgraded connection at the first TCP EOF, which
 * would cut the other direction short. */
static int ws_shutdown(struct stream *s)
{
	static const uint8_t normal[2] = { 0x03, 0xe8 };
	struct ws_stream *ws = WS(s);

	if (ws->state != WS_OPEN)
		return lower_shutdown(ws);
	if (!ws->close_queued) {
		if (!at_boundary(ws))
			return stream_set_error(s, "websocket: shutdown in the middle of a frame");
		if (queue_control(ws, OP_CLOSE, normal, sizeof normal) < 0)
			return stream_set_error(s, "websocket: no room for the close frame");
		ws->close_queued = true;
	}
	return flush_control(ws);
}

static void ws_destroy(struct stream *s)
{
	struct ws_stream *ws = WS(s);

	if (s->rx == ws->raw)
		s->rx = NULL;
	free(ws->raw);
	free(ws->out);
	if (ws->use_tls)
		tls_session_free(&ws->tls);
}

static const struct stream_ops ws_ops = {
	.handshake = ws_handshake,
	.fill = ws_fill,
	.consume = ws_consume,
	.seal = ws_seal,
	.send_wire = ws_send_wire,
	.shutdown = ws_shutdown,
	.destroy = ws_destroy,
};

/* ---- the transport ---- */

static int ws_init(struct transport *t, char *err, size_t errlen)
{
	t->priv = NULL;
	if (!t->cfg->websocket.tls)
		return 0;
	t->priv = tls_ctx_new(&t->cfg->tls, t->server, t->remote_addr, err, errlen);
	return t->priv ? 0 : -1;
}

static void ws_fini(struct transport *t)
{
	tls_ctx_free(t->priv);
	t->priv = NULL;
}

static struct stream *ws_wrap(struct transport *t, int fd, bool server)
{
	struct stream *s = stream_alloc(sizeof(struct ws_stream), &ws_ops, t, fd, server);
	struct ws_stream *ws;

	if (!s)
		return NULL;
	ws = WS(s);
	s->headroom = server ? 10 : 14;
	s->tailroom = 0;
	ws->use_tls = t->priv != NULL;
	/* Over TLS, a frame fits one record: one SSL_write per frame. */
	s->max_chunk = ws->use_tls ? TLS_RECORD_MAX - (server ? 4 : 8) : 64 * 1024;
	if (!ws->use_tls) {
		ws->state = server ? WS_READ_REQUEST : WS_SEND_REQUEST;
		if (!server && prepare_request(ws) < 0)
			goto fail;
		return s;
	}
	ws->state = WS_TLS;
	if (tls_session_init(&ws->tls, t->priv, s) < 0)
		goto fail;
	return s;
fail:
	log_error("%s", s->err);
	ws->use_tls = false;
	s->fd = -1;	/* transport_wrap() closes it */
	stream_free(s);
	return NULL;
}

const struct transport_impl transport_websocket = {
	.name = "websocket",
	.openssl = true,
	.init = ws_init,
	.fini = ws_fini,
	.wrap = ws_wrap,
};
