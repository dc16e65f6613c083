/* Known answers for our TLS 1.3 record layer (src/tls13.c).
 *
 * The traffic secrets, keys, IVs and protected records are those of
 * RFC 8448, section 3 ("Simple 1-RTT Handshake", TLS_AES_128_GCM_SHA256):
 * the secrets go in as OpenSSL's key log reports them, and what we seal
 * must be the trace's records byte for byte, and what we open the trace's
 * plaintext. RFC 8448 shows no KeyUpdate: the KeyUpdate answers are
 * computed from the same secrets by tests/unit/tls13_vectors.py (Python's
 * hmac and the cryptography package's AES-GCM, RFC 8446, 7.1-7.3 and 5.2-5.3),
 * which checks itself against RFC 8448's record first. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "tls13.h"
#include "transport.h"

/* RFC 8448, section 3: {server} derive secret "tls13 c ap traffic" and
 * "tls13 s ap traffic" (client_/server_application_traffic_secret_0). */
#define C_AP_TRAFFIC "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
#define S_AP_TRAFFIC "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"

/* RFC 8448, section 3: {server} send handshake record (the NewSessionTicket,
 * the server's record 0 under its application keys). */
static const char nst_record[] =
	"17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24"
	"0e 6c ff ac 11 6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a"
	"01 59 40 25 2f 55 71 3e 06 1d c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1"
	"70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b 9f a1 b6 c0 d4 a3 d0 3f 75 e0"
	"9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce 13 06 46 15"
	"13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77"
	"f8 1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3"
	"47 d1 43 f9 60 5d 64 f6 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74"
	"bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3 bc e1 86 96 12 9c 81 53 55 6b"
	"3b 6c 67 79 b3 7b f1 59 85 68 4f";

/* RFC 8448, section 3: {client} send application_data record (record 0;
 * the payload is the 50 octets 00 01 02 ... 31). */
static const char c_app_record[] =
	"17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea"
	"42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b"
	"62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4";

/* RFC 8448, section 3: {server} send application_data record (record 1,
 * the same payload). */
static const char s_app_record[] =
	"17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc"
	"32 25 d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8"
	"fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d";

/* RFC 8448, section 3: {client} / {server} send alert record (close_notify:
 * the client's record 1, the server's record 2). */
static const char c_alert_record[] =
	"17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3";
static const char s_alert_record[] =
	"17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9";

/* KeyUpdate (tests/unit/tls13_vectors.py, from the secrets above): the
 * server's KeyUpdate (update_requested) as its record 1, then the payload
 * as record 0 under server_application_traffic_secret_1; the client's
 * KeyUpdate (update_not_requested) as its record 1, then the payload as
 * record 0 under client_application_traffic_secret_1. */
static const char s_key_update[] =
	"170303001636927c13ea59b46285db2564c0bcd820b65c350ed832";
static const char s_app_1[] =
	"170303004377ab065981bed2a2301ff7364099a76efccfb0cb41823b21f783c0"
	"3bba01a8736a21e89bd7f58512b41efaa824ef67967fda1c152bdc8ac9baf1e7"
	"ac37450a0dbd1e73";
static const char c_key_update[] =
	"1703030016d08732885f9c2129f801d9251cb34e0cd6a985b7e26e";
static const char c_app_1[] =
	"170303004308dab385c781c25090659835dd8d7c1d003c6ec2e6a058caf903c1"
	"6580776a1b2ab63e00cdedf2c514502b8a361881663b197b2577d50a5707081e"
	"221deb8ed217c624";

static uint8_t payload[50];

static int nibble(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Hex (spaces allowed) into out; returns the length. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (*hex && n < cap) {
		if (*hex == ' ') {
			hex++;
			continue;
		}
		out[n++] = (uint8_t)(nibble(hex[0]) << 4 | nibble(hex[1]));
		hex += 2;
	}
	return n;
}

/* A record layer keyed as OpenSSL's key log reports RFC 8448's secrets
 * (the client random in the line is not used). */
static struct tls13 *keyed(bool server, uint64_t read_seq, uint64_t write_seq)
{
	static const char zero_random[] =
		"0000000000000000000000000000000000000000000000000000000000000000";
	struct tls13 *rl = NULL;
	char line[256], err[128];

	snprintf(line, sizeof line, "CLIENT_TRAFFIC_SECRET_0 %s %s", zero_random, C_AP_TRAFFIC);
	CHECK(tls13_take_secret(&rl, line) == 0);
	snprintf(line, sizeof line, "SERVER_TRAFFIC_SECRET_0 %s %s", zero_random, S_AP_TRAFFIC);
	CHECK(tls13_take_secret(&rl, line) == 0);
	/* a line of another secret is ignored */
	CHECK(tls13_take_secret(&rl, "EXPORTER_SECRET 00 11") == 0);
	if (!rl)
		return NULL;
	if (tls13_start(rl, 0x1301, server, read_seq, write_seq, err, sizeof err) < 0) {
		CHECKF(0, "tls13_start: %s", err);
		tls13_free(rl);
		return NULL;
	}
	return rl;
}

/* A stream whose socket the test writes the peer's records into. */
static const struct stream_ops no_ops;

static struct stream *reader(int *peer)
{
	int sv[2];
	struct stream *s;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return NULL;
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	s = stream_alloc(sizeof *s, &no_ops, NULL, sv[0], false);
	if (!s) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	*peer = sv[1];
	return s;
}

static void feed(int peer, const char *hex)
{
	uint8_t rec[512];
	size_t n = unhex(hex, rec, sizeof rec);

	CHECK(write(peer, rec, n) == (ssize_t)n);
}

/* Reads until want bytes of plaintext came (or an end, or an error). */
static ssize_t read_all(struct tls13 *rl, struct stream *s, uint8_t *buf, size_t want)
{
	size_t got = 0;
	int i;

	for (i = 0; i < 16 && got < want; i++) {
		ssize_t n = tls13_read(rl, s, buf + got, want - got);

		if (n <= 0)
			return got ? (ssize_t)got : n;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void check_sealed(struct tls13 *rl, const char *expect, const char *what)
{
	uint8_t want[512], out[512];
	size_t n = unhex(expect, want, sizeof want), taken = 0;
	ssize_t w = tls13_seal(rl, payload, sizeof payload, out, sizeof out, &taken);

	CHECKF(w == (ssize_t)n && taken == sizeof payload && memcmp(out, want, n) == 0,
	       "%s: sealed %zd bytes, not the %zu expected", what, w, n);
}

/* RFC 8448, section 3, from the client's side: our record 0 is the
 * trace's; the server's ticket (skipped), its data and its close_notify
 * open to the trace's plaintext and the end of the stream. */
static void test_client_records(void)
{
	struct tls13 *rl = keyed(false, 0, 0);
	uint8_t buf[128], alert[64], want[64];
	struct stream *s;
	ssize_t n;
	int peer;

	if (!rl)
		return;
	/* the client application write key and iv (RFC 8448: 17422dda...
	 * and 5b78923d...) and the record's nonce, header and tag */
	check_sealed(rl, c_app_record, "the client's application_data record");
	n = tls13_seal_close_notify(rl, alert, sizeof alert);
	CHECK(n == (ssize_t)unhex(c_alert_record, want, sizeof want) &&
	      memcmp(alert, want, (size_t)n) == 0);
	s = reader(&peer);
	if (s) {
		feed(peer, nst_record);
		feed(peer, s_app_record);
		feed(peer, s_alert_record);
		n = read_all(rl, s, buf, sizeof buf);
		CHECKF(n == (ssize_t)sizeof payload && memcmp(buf, payload, sizeof payload) == 0,
		       "the server's records: %zd, %s", n, s->err);
		CHECK(tls13_read(rl, s, buf, sizeof buf) == 0);	/* close_notify */
		close(peer);
		stream_free(s);
	}
	tls13_free(rl);
}

/* The same trace from the server's side: its ticket was record 0 (sealed
 * by OpenSSL before the takeover), so ours start at 1. */
static void test_server_records(void)
{
	struct tls13 *rl = keyed(true, 0, 1);
	uint8_t buf[128], alert[64], want[64];
	struct stream *s;
	ssize_t n;
	int peer;

	if (!rl)
		return;
	/* the server application write key and iv (RFC 8448: 9f02283b...
	 * and cf782b88...) */
	check_sealed(rl, s_app_record, "the server's application_data record");
	n = tls13_seal_close_notify(rl, alert, sizeof alert);
	CHECK(n == (ssize_t)unhex(s_alert_record, want, sizeof want) &&
	      memcmp(alert, want, (size_t)n) == 0);
	s = reader(&peer);
	if (s) {
		feed(peer, c_app_record);
		feed(peer, c_alert_record);
		n = read_all(rl, s, buf, sizeof buf);
		CHECKF(n == (ssize_t)sizeof payload && memcmp(buf, payload, sizeof payload) == 0,
		       "the client's records: %zd, %s", n, s->err);
		CHECK(tls13_read(rl, s, buf, sizeof buf) == 0);
		close(peer);
		stream_free(s);
	}
	tls13_free(rl);
}

/* One bit changed anywhere in a record of the trace: it fails
 * authentication, and nothing of it comes out. */
static void test_tampered_record(void)
{
	uint8_t rec[128], buf[128];
	size_t len = unhex(c_app_record, rec, sizeof rec);
	size_t failed = 0;

	for (size_t i = 5; i < len; i++) {
		struct tls13 *rl = keyed(true, 0, 1);
		struct stream *s;
		int peer;

		if (!rl)
			return;
		s = reader(&peer);
		if (s) {
			rec[i] ^= 0x01;
			CHECK(write(peer, rec, len) == (ssize_t)len);
			rec[i] ^= 0x01;
			if (tls13_read(rl, s, buf, sizeof buf) != ST_ERROR ||
			    !strstr(s->err, "bad_record_mac"))
				failed++;
			close(peer);
			stream_free(s);
		}
		tls13_free(rl);
	}
	CHECKF(failed == 0, "%zu tampered records were not refused", failed);
}

/* KeyUpdate both ways, from the RFC 8448 secrets: the server updates its
 * keys and asks for ours; our reading keys follow (its next record opens),
 * and our KeyUpdate (update_not_requested) goes out before our next record,
 * which is sealed under the client's next secret. */
static void test_key_update(void)
{
	struct tls13 *rl = keyed(false, 1, 0);	/* the ticket was OpenSSL's */
	uint8_t buf[128], want[256], out[256];
	size_t n, taken = 0;
	struct stream *s;
	ssize_t w, got;
	int peer;

	if (!rl)
		return;
	check_sealed(rl, c_app_record, "before the KeyUpdate");
	s = reader(&peer);
	if (!s) {
		tls13_free(rl);
		return;
	}
	feed(peer, s_key_update);
	feed(peer, s_app_1);
	got = read_all(rl, s, buf, sizeof payload);
	CHECKF(got == (ssize_t)sizeof payload && memcmp(buf, payload, sizeof payload) == 0,
	       "the record after the server's KeyUpdate: %zd, %s", got, s->err);
	n = unhex(c_key_update, want, sizeof want);
	n += unhex(c_app_1, want + n, sizeof want - n);
	w = tls13_seal(rl, payload, sizeof payload, out, sizeof out, &taken);
	CHECKF(w == (ssize_t)n && taken == sizeof payload && memcmp(out, want, n) == 0,
	       "our KeyUpdate and the next record: %zd bytes, %zu expected", w, n);
	/* owed once: the next record needs no other KeyUpdate */
	w = tls13_seal(rl, payload, sizeof payload, out, sizeof out, &taken);
	CHECK(w == (ssize_t)(sizeof payload + TLS13_OVERHEAD));
	close(peer);
	stream_free(s);
	tls13_free(rl);
}

/* Our own KeyUpdate once a key has sealed its share of records (1 here):
 * the same bytes as the one the peer asked for above. */
static void test_key_update_by_count(void)
{
	struct tls13 *rl = keyed(false, 1, 0);
	uint8_t want[256], out[256];
	size_t n, taken = 0;
	ssize_t w;

	if (!rl)
		return;
	tls13_set_rekey_after(rl, 1);
	check_sealed(rl, c_app_record, "record 0");
	n = unhex(c_key_update, want, sizeof want);
	n += unhex(c_app_1, want + n, sizeof want - n);
	w = tls13_seal(rl, payload, sizeof payload, out, sizeof out, &taken);
	CHECKF(w == (ssize_t)n && memcmp(out, want, n) == 0,
	       "the KeyUpdate after 1 record: %zd bytes, %zu expected", w, n);
	tls13_free(rl);
}

/* Several post-handshake messages in one record, and one message spread
 * over two (as stacks that pack their handshake messages send them): two
 * tickets and the server's KeyUpdate in one record (its record 1), then
 * the trace's payload under the server's next secret; and a ticket cut in
 * two records. */
static void test_messages_in_one_record(void)
{
	static const uint8_t ticket[] = { 4, 0, 0, 13, 0, 0, 0x0e, 0x10, 1, 2, 3, 4, 0, 0, 2,
					  0xaa, 0xbb };
	struct tls13 *rl = keyed(false, 1, 0), *peer_rl = keyed(true, 0, 1);
	uint8_t inner[64], rec[128], buf[128];
	size_t n = 0;
	struct stream *s;
	ssize_t got;
	int peer;

	if (!rl || !peer_rl || !(s = reader(&peer))) {
		tls13_free(rl);
		tls13_free(peer_rl);
		return;
	}
	check_sealed(rl, c_app_record, "record 0");
	memcpy(inner, ticket, sizeof ticket);
	memcpy(inner + sizeof ticket, ticket, sizeof ticket);
	n = 2 * sizeof ticket;
	memcpy(inner + n, "\x18\x00\x00\x01\x01", 5);	/* KeyUpdate, update_requested */
	n += 5;
	CHECK(tls13_seal_record(peer_rl, 22, inner, n, rec) == 0);
	CHECK(write(peer, rec, n + TLS13_OVERHEAD) == (ssize_t)(n + TLS13_OVERHEAD));
	feed(peer, s_app_1);
	got = read_all(rl, s, buf, sizeof payload);
	CHECKF(got == (ssize_t)sizeof payload && memcmp(buf, payload, sizeof payload) == 0,
	       "after two tickets and a KeyUpdate in one record: %zd, %s", got, s->err);
	/* our KeyUpdate goes first, as in test_key_update */
	{
		uint8_t want[256], out[256];
		size_t wn = unhex(c_key_update, want, sizeof want), taken;
		ssize_t w;

		wn += unhex(c_app_1, want + wn, sizeof want - wn);
		w = tls13_seal(rl, payload, sizeof payload, out, sizeof out, &taken);
		CHECKF(w == (ssize_t)wn && memcmp(out, want, wn) == 0,
		       "our KeyUpdate and record: %zd bytes, %zu expected", w, wn);
	}
	close(peer);
	stream_free(s);
	tls13_free(rl);
	tls13_free(peer_rl);

	/* a ticket in two records, then data: nothing comes out of the ticket */
	rl = keyed(false, 0, 0);
	peer_rl = keyed(true, 0, 0);
	if (!rl || !peer_rl || !(s = reader(&peer))) {
		tls13_free(rl);
		tls13_free(peer_rl);
		return;
	}
	CHECK(tls13_seal_record(peer_rl, 22, ticket, 6, rec) == 0);
	CHECK(write(peer, rec, 6 + TLS13_OVERHEAD) == 6 + TLS13_OVERHEAD);
	CHECK(tls13_read(rl, s, buf, sizeof buf) == ST_AGAIN);
	CHECK(tls13_seal_record(peer_rl, 22, ticket + 6, sizeof ticket - 6, rec) == 0);
	CHECK(write(peer, rec, sizeof ticket - 6 + TLS13_OVERHEAD) ==
	      (ssize_t)(sizeof ticket - 6 + TLS13_OVERHEAD));
	CHECK(tls13_seal_record(peer_rl, 23, payload, 5, rec) == 0);
	CHECK(write(peer, rec, 5 + TLS13_OVERHEAD) == 5 + TLS13_OVERHEAD);
	got = read_all(rl, s, buf, 5);
	CHECKF(got == 5 && memcmp(buf, payload, 5) == 0, "after a ticket in two records: %zd, %s",
	       got, s->err);
	close(peer);
	stream_free(s);
	tls13_free(rl);
	tls13_free(peer_rl);
}

int main(void)
{
	load_openssl();
	log_level = LOG_WARN;
	for (size_t i = 0; i < sizeof payload; i++)
		payload[i] = (uint8_t)i;
	test_client_records();
	test_server_records();
	test_tampered_record();
	test_key_update();
	test_key_update_by_count();
	test_messages_in_one_record();
	return check_report("test_tls13");
}
