/* Proxy negotiation (client side): the proxy's replies to HTTP CONNECT and
 * SOCKS5 (with and without user/password), read from a socketpair fed with
 * the input. Byte 0 picks the proxy kind and whether it asks for auth. */
#include <stdio.h>

#include "fuzz.h"
#include "proxy.h"

#define MAX_STEPS 100000

static const char *const urls[] = {
	"http://127.0.0.1:8080",
	"http://user:p%40ss@127.0.0.1:8080",
	"socks5://127.0.0.1:1080",
	"socks5://user:pass@127.0.0.1:1080",
};

static const char *const targets[] = { "example.com", "127.0.0.1", "::1",
				       "a-very-long-host-name.example.org" };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_url u;
	struct proxy_conn *p;
	struct fuzz_feeder f;
	char err[256];
	uint32_t want = 0;
	int rc = ST_AGAIN, steps;

	if (size < 1)
		return 0;
	if (proxy_parse_url(urls[data[0] % 4], &u, err, sizeof err) < 0)
		abort();
	p = proxy_conn_new(&u, targets[(data[0] >> 2) % 4], 2333);
	if (!p)
		return 0;
	fuzz_feeder_open(&f, data + 1, size - 1);
	for (steps = 0; steps < MAX_STEPS && rc == ST_AGAIN; steps++) {
		fuzz_feeder_pump(&f);
		rc = proxy_conn_step(p, f.ours, &want);
		if (rc == ST_AGAIN && want != 0x001 && want != 0x004)
			abort();	/* it must say what it waits for */
	}
	if (rc == ST_AGAIN)
		abort();	/* neither done nor failed after all bytes and EOF */
	if (rc == ST_ERROR && strlen(proxy_conn_error(p)) == 0)
		abort();	/* a failure says why (and the text is a string) */
	if (proxy_conn_step(p, f.ours, &want) != rc)
		abort();	/* the result sticks */
	proxy_conn_free(p);
	fuzz_feeder_close(&f);
	return 0;
}
