/* What the build switches leave in and out: a TLS=0 build (RATHOLE_NO_TLS)
 * refuses the tls transport and websocket over TLS with a clear message, and
 * keeps tcp and websocket over TCP; a normal build has every transport. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "transport.h"

static struct transport *make(enum transport_type type, bool ws_tls, char *err, size_t errlen)
{
	static struct transport_config cfg;

	memset(&cfg, 0, sizeof cfg);
	cfg.type = type;
	cfg.tcp.nodelay = true;
	cfg.has_tls = true;		/* client side: system CAs, name from remote_addr */
	cfg.has_websocket = type == TRANSPORT_WEBSOCKET;
	cfg.websocket.tls = ws_tls;
	err[0] = '\0';
	return transport_new(&cfg, false, "127.0.0.1:2333", err, errlen);
}

static void test_plain_transports(void)
{
	char err[256];
	struct transport *t;

	t = make(TRANSPORT_TCP, false, err, sizeof err);
	CHECKF(t != NULL, "tcp: %s", err);
	transport_free(t);
	t = make(TRANSPORT_WEBSOCKET, false, err, sizeof err);
	CHECKF(t != NULL, "websocket over tcp: %s", err);
	transport_free(t);
}

static void test_tls_transports(void)
{
	char err[256];
	struct transport *t;

	t = make(TRANSPORT_TLS, false, err, sizeof err);
#ifdef RATHOLE_NO_TLS
	CHECK(t == NULL);
	CHECKF(strstr(err, "not available in this build") != NULL, "%s", err);
#else
	CHECKF(t != NULL, "tls: %s", err);
#endif
	transport_free(t);
	t = make(TRANSPORT_WEBSOCKET, true, err, sizeof err);
#ifdef RATHOLE_NO_TLS
	CHECK(t == NULL);
	CHECKF(strstr(err, "TLS=0") != NULL, "%s", err);
#else
	CHECKF(t != NULL, "websocket over tls: %s", err);
#endif
	transport_free(t);
}

int main(void)
{
	test_plain_transports();
	test_tls_transports();
#ifdef RATHOLE_NO_TLS
	return check_report("build (TLS=0)");
#else
	return check_report("build");
#endif
}
