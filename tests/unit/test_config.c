/* The config layer: defaults, effective values, every validation error with
 * its exact message and line, suggestions, Noise key decoding. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static struct config_errors errs;

static struct config *parse(const char *text)
{
	return config_parse("t.toml", text, strlen(text), &errs);
}

static void dump_errors(void)
{
	for (int i = 0; i < errs.count; i++)
		fprintf(stderr, "    got: %s\n", errs.msg[i]);
}

static bool has_error(const char *msg)
{
	for (int i = 0; i < errs.count; i++)
		if (strcmp(errs.msg[i], msg) == 0)
			return true;
	return false;
}

/* The text must be rejected with exactly this message among the errors. */
#define EXPECT_ERROR(text, msg) do { \
	struct config *cfg_ = parse(text); \
	CHECKF(cfg_ == NULL && has_error(msg), "expected error: %s", msg); \
	if (cfg_ != NULL || !has_error(msg)) \
		dump_errors(); \
	config_free(cfg_); \
} while (0)

/* The text must be rejected with exactly one error, this one. */
#define EXPECT_ONLY_ERROR(text, msg) do { \
	EXPECT_ERROR(text, msg); \
	CHECKF(errs.count == 1, "expected 1 error, got %d", errs.count); \
} while (0)

#define EXPECT_OK(text) do { \
	struct config *cfg_ = parse(text); \
	CHECKF(cfg_ != NULL, "expected a valid config"); \
	if (!cfg_) \
		dump_errors(); \
	config_free(cfg_); \
} while (0)

#define SERVER_HEAD "[server]\nbind_addr = \"0.0.0.0:2333\"\n"
#define CLIENT_HEAD "[client]\nremote_addr = \"example.com:2333\"\n"

/* A valid 32-byte key and its base64 (bytes 0..31). */
static const char *KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

static void test_server_defaults(void)
{
	struct config *cfg = parse(SERVER_HEAD
				   "\n"
				   "[server.services.nas]\n"
				   "token = \"secret\"\n"
				   "bind_addr = \"0.0.0.0:5202\"\n");

	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
		return;
	}
	CHECK_STR(cfg->path, "t.toml");
	CHECK(cfg->client == NULL);
	CHECK(cfg->server != NULL);
	CHECK_STR(cfg->server->bind_addr, "0.0.0.0:2333");
	CHECK(cfg->server->default_token == NULL);
	CHECK(cfg->server->heartbeat_interval == 30);
	CHECK(cfg->server->transport.type == TRANSPORT_TCP);
	CHECK(cfg->server->transport.tcp.nodelay == true);
	CHECK(cfg->server->transport.tcp.keepalive_secs == 20);
	CHECK(cfg->server->transport.tcp.keepalive_interval == 8);
	CHECK(cfg->server->transport.tcp.proxy == NULL);
	CHECK(!cfg->server->transport.has_tls && !cfg->server->transport.has_noise &&
	      !cfg->server->transport.has_websocket);
	CHECK_STR(cfg->server->transport.noise.pattern, "Noise_NK_25519_ChaChaPoly_BLAKE2s");
	CHECK(cfg->server->nservices == 1);
	if (cfg->server->nservices == 1) {
		const struct service_config *s = &cfg->server->services[0];

		CHECK_STR(s->name, "nas");
		CHECK(s->type == SERVICE_TCP);
		CHECK_STR(s->token, "secret");
		CHECK(!s->token_from_default);
		CHECK_STR(s->bind_addr, "0.0.0.0:5202");
		CHECK(s->local_addr == NULL);
		CHECK(s->nodelay == true);
		CHECK(s->line == 4);
	}
	config_free(cfg);
}

static void test_client_defaults(void)
{
	struct config *cfg = parse(CLIENT_HEAD
				   "[client.services.ssh]\n"
				   "token = \"t\"\n"
				   "local_addr = \"127.0.0.1:22\"\n");

	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
		return;
	}
	CHECK(cfg->server == NULL);
	CHECK(cfg->client->nremote_addrs == 1);
	CHECK_STR(cfg->client->remote_addrs[0], "example.com:2333");
	CHECK(cfg->client->heartbeat_timeout == 40);
	CHECK(cfg->client->retry_interval == 1);
	CHECK(cfg->client->transport.type == TRANSPORT_TCP);
	CHECK(cfg->client->nservices == 1);
	CHECK_STR(cfg->client->services[0].local_addr, "127.0.0.1:22");
	CHECK(cfg->client->services[0].retry_interval == 1);
	CHECK(cfg->client->services[0].nodelay == true);
	CHECK(cfg->client->services[0].line == 3);
	CHECK(cfg->client->services[0].udp_idle_timeout == 60);
	CHECK(cfg->client->services[0].udp_max_sessions == 1024);
	config_free(cfg);
}

static void test_effective_values(void)
{
	struct config *cfg = parse("[server]\n"
				   "bind_addr = \"[::]:2333\"\n"
				   "default_token = \"dflt\"\n"
				   "[server.transport.tcp]\n"
				   "nodelay = false\n"
				   "[server.services.a]\n"
				   "bind_addr = \"0.0.0.0:1\"\n"
				   "[server.services.b]\n"
				   "bind_addr = \"0.0.0.0:2\"\n"
				   "token = \"own\"\n"
				   "nodelay = true\n"
				   "type = \"udp\"\n"
				   "[client]\n"
				   "remote_addr = \"127.0.0.1:2333\"\n"
				   "retry_interval = 5\n"
				   "[client.services.a]\n"
				   "token = \"x\"\n"
				   "local_addr = \"127.0.0.1:1\"\n"
				   "[client.services.b]\n"
				   "token = \"y\"\n"
				   "local_addr = \"127.0.0.1:2\"\n"
				   "retry_interval = 0\n"
				   "nodelay = false\n");
	const struct service_config *s;

	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
		return;
	}
	CHECK(cfg->server->nservices == 2 && cfg->client->nservices == 2);
	s = config_find_service(cfg->server->services, cfg->server->nservices, "a");
	CHECK(s && strcmp(s->token, "dflt") == 0 && s->token_from_default);
	CHECK(s && s->nodelay == false);	/* from transport.tcp.nodelay */
	CHECK(s && s->type == SERVICE_TCP);
	s = config_find_service(cfg->server->services, cfg->server->nservices, "b");
	CHECK(s && strcmp(s->token, "own") == 0 && !s->token_from_default);
	CHECK(s && s->nodelay == true);
	CHECK(s && s->type == SERVICE_UDP);
	CHECK(config_find_service(cfg->server->services, cfg->server->nservices, "c") == NULL);
	s = config_find_service(cfg->client->services, cfg->client->nservices, "a");
	CHECK(s && s->retry_interval == 5 && s->nodelay == true);
	s = config_find_service(cfg->client->services, cfg->client->nservices, "b");
	CHECK(s && s->retry_interval == 0 && s->nodelay == false);
	/* source order is kept */
	CHECK_STR(cfg->server->services[0].name, "a");
	CHECK_STR(cfg->server->services[1].name, "b");
	config_free(cfg);
}

static void test_all_keys(void)
{
	char text[2048];
	struct config *cfg;

	snprintf(text, sizeof text,
		 "[client]\n"
		 "remote_addr = \"example.com:2333\"\n"
		 "default_token = \"d\"\n"
		 "heartbeat_timeout = 0\n"
		 "retry_interval = 3600\n"
		 "[client.transport]\n"
		 "type = \"noise\"\n"
		 "[client.transport.tcp]\n"
		 "proxy = \"socks5://user:pass@127.0.0.1:1080\"\n"
		 "nodelay = false\n"
		 "keepalive_secs = 0\n"
		 "keepalive_interval = 32767\n"
		 "[client.transport.tls]\n"
		 "hostname = \"example.com\"\n"
		 "trusted_root = \"ca.pem\"\n"
		 "[client.transport.noise]\n"
		 "pattern = \"Noise_XX_25519_AESGCM_SHA256\"\n"
		 "local_private_key = \"%s\"\n"
		 "remote_public_key = \"%s\"\n"
		 "[client.transport.websocket]\n"
		 "tls = true\n", KEY_B64, KEY_B64);
	cfg = parse(text);
	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
		return;
	}
	const struct client_config *c = cfg->client;
	CHECK_STR(c->default_token, "d");
	CHECK(c->heartbeat_timeout == 0 && c->retry_interval == 3600);
	CHECK(c->transport.type == TRANSPORT_NOISE);
	CHECK_STR(c->transport.tcp.proxy, "socks5://user:pass@127.0.0.1:1080");
	CHECK(c->transport.tcp.nodelay == false);
	CHECK(c->transport.tcp.keepalive_secs == 0 && c->transport.tcp.keepalive_interval == 32767);
	CHECK(c->transport.has_tls && c->transport.has_noise && c->transport.has_websocket);
	CHECK_STR(c->transport.tls.hostname, "example.com");
	CHECK_STR(c->transport.tls.trusted_root, "ca.pem");
	CHECK_STR(c->transport.noise.pattern, "Noise_XX_25519_AESGCM_SHA256");
	CHECK(c->transport.noise.has_local_private_key && c->transport.noise.has_remote_public_key);
	for (int i = 0; i < 32; i++) {
		CHECK(c->transport.noise.local_private_key[i] == i);
		CHECK(c->transport.noise.remote_public_key[i] == i);
	}
	CHECK(c->transport.websocket.tls == true);
	CHECK(c->nservices == 0);	/* no services is valid */
	config_free(cfg);

	cfg = parse("[server]\nbind_addr = \"0.0.0.0:1\"\n[server.transport]\ntype = \"tls\"\n"
		    "[server.transport.tls]\npkcs12 = \"id.pfx\"\npkcs12_password = \"pw\"\n");
	CHECK(cfg && cfg->server->transport.type == TRANSPORT_TLS);
	CHECK(cfg && strcmp(cfg->server->transport.tls.pkcs12, "id.pfx") == 0);
	CHECK(cfg && strcmp(cfg->server->transport.tls.pkcs12_password, "pw") == 0);
	config_free(cfg);
}

static void test_missing_required(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.nas]\nbind_addr = \"0.0.0.0:5202\"\n",
			  "t.toml:3: service \"nas\": missing token (set server.services.nas.token "
			  "or server.default_token)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "\n[client.services.nas]\nlocal_addr = \"127.0.0.1:22\"\n",
			  "t.toml:4: service \"nas\": missing token (set client.services.nas.token "
			  "or client.default_token)");
	EXPECT_ONLY_ERROR("[server]\n", "t.toml:1: missing server.bind_addr (where clients "
			  "connect, e.g. \"0.0.0.0:2333\")");
	EXPECT_ONLY_ERROR("\n[client]\n", "t.toml:2: missing client.remote_addr (the server's "
			  "bind_addr as reachable from here, e.g. \"example.com:2333\")");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.nas]\ntoken = \"x\"\n",
			  "t.toml:3: service \"nas\": missing bind_addr (where visitors connect, "
			  "e.g. \"0.0.0.0:5202\"; set server.services.nas.bind_addr, or hostnames with "
			  "server.http_bind_addr or https_bind_addr)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.services.nas]\ntoken = \"x\"\n",
			  "t.toml:3: service \"nas\": missing local_addr (the service to expose, "
			  "e.g. \"127.0.0.1:22\"; set client.services.nas.local_addr)");
	/* a name that needs quoting is quoted in the key path */
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.\"my.svc\"]\nbind_addr = \"0.0.0.0:1\"\n",
			  "t.toml:3: service \"my.svc\": missing token (set "
			  "server.services.\"my.svc\".token or server.default_token)");
	/* default_token satisfies it */
	EXPECT_OK(SERVER_HEAD "default_token = \"d\"\n[server.services.nas]\nbind_addr = \"0.0.0.0:1\"\n");
}

static void test_neither_block(void)
{
	EXPECT_ONLY_ERROR("", "t.toml:1: neither [server] nor [client] is defined: add a "
			  "[server] table (on the public host) or a [client] table (behind NAT)");
	EXPECT_ERROR("# only a comment\n[sever]\n",
		     "t.toml:2: unknown key \"sever\" at the top level (did you mean \"server\"?)");
	CHECK(has_error("t.toml:1: neither [server] nor [client] is defined: add a [server] "
			"table (on the public host) or a [client] table (behind NAT)"));
}

static void test_addresses(void)
{
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"0.0.0.0\"\n",
			  "t.toml:2: server.bind_addr: \"0.0.0.0\" is not a valid address: expected "
			  "host:port (write \"host:port\", e.g. \"0.0.0.0:2333\" or \"[::1]:2333\")");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"::1:80\"\n",
			  "t.toml:2: server.bind_addr: \"::1:80\" is not a valid address: an IPv6 "
			  "address must be written in brackets: [addr]:port (write \"host:port\", e.g. "
			  "\"0.0.0.0:2333\" or \"[::1]:2333\")");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.services.s]\ntoken = \"t\"\nlocal_addr = \"localhost:65536\"\n",
			  "t.toml:5: client.services.s.local_addr: \"localhost:65536\" is not a valid "
			  "address: the port must be a number from 0 to 65535 (write \"host:port\", "
			  "e.g. \"0.0.0.0:2333\" or \"[::1]:2333\")");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \":2333\"\n",
			  "t.toml:2: client.remote_addr: \":2333\" is not a valid address: the host "
			  "is empty (write \"host:port\", e.g. \"0.0.0.0:2333\" or \"[::1]:2333\")");
	EXPECT_OK("[server]\nbind_addr = \"[::]:0\"\n");
	EXPECT_OK("[client]\nremote_addr = \"host.example:65535\"\n");
}

static void test_types_and_ranges(void)
{
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = \"40\"\n",
			  "t.toml:3: client.heartbeat_timeout: expected an integer, found string");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = -5\n",
			  "t.toml:3: client.heartbeat_timeout: expected 0 to 86400 seconds, found -5");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 86401\n",
			  "t.toml:3: server.heartbeat_interval: expected 0 to 86400 seconds, found 86401");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\nretry_interval = 99999999999\n",
			  "t.toml:3: client.retry_interval: expected 0 to 3600 seconds, found 99999999999");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.transport.tcp]\nkeepalive_secs = 40000\n",
			  "t.toml:4: client.transport.tcp.keepalive_secs: expected 0 to 32767 seconds, "
			  "found 40000");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.transport.tcp]\nkeepalive_interval = -1\n",
			  "t.toml:4: client.transport.tcp.keepalive_interval: expected 0 to 32767 "
			  "seconds, found -1");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.services.s]\ntoken = \"t\"\n"
			  "local_addr = \"a:1\"\nretry_interval = 3601\n",
			  "t.toml:6: client.services.s.retry_interval: expected 0 to 3600 seconds, "
			  "found 3601");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.services.s]\ntoken = \"t\"\n"
			  "local_addr = \"a:1\"\nudp_idle_timeout = 0\n",
			  "t.toml:6: client.services.s.udp_idle_timeout: expected 1 to 86400 seconds, "
			  "found 0");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.services.s]\ntoken = \"t\"\n"
			  "local_addr = \"a:1\"\nudp_max_sessions = 65537\n",
			  "t.toml:6: client.services.s.udp_max_sessions: expected 1 to 65536 sessions, "
			  "found 65537");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = \"a:1\"\n[client.transport.tcp]\nnodelay = 1\n",
			  "t.toml:4: client.transport.tcp.nodelay: expected a boolean (true or false), "
			  "found integer");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = 2333\n",
			  "t.toml:2: client.remote_addr: expected a string or an array of strings, found integer");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = []\n",
			  "t.toml:2: client.remote_addr: the array is empty; give at least one value");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = [\"a:1\", 2]\n",
			  "t.toml:2: client.remote_addr[1]: expected a string, found integer");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = [\"a:1\",\n  \"b\"]\n",
			  "t.toml:3: client.remote_addr[1]: \"b\" is not a valid address: expected "
			  "host:port (write \"host:port\", e.g. \"0.0.0.0:2333\" or \"[::1]:2333\")");
	EXPECT_ONLY_ERROR("[client]\nremote_addr = [\"a:1\", \"b:2\", \"a:1\"]\n",
			  "t.toml:2: client.remote_addr[2]: \"a:1\" is listed twice");
	EXPECT_OK("[client]\nremote_addr = [\"a:1\", \"[::1]:2\"]\n");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 30.0\n",
			  "t.toml:3: server.heartbeat_interval: expected an integer, found float");
	EXPECT_ERROR("server = 1\n", "t.toml:1: server: expected a table, found integer");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\ntransport = \"tls\"\n",
			  "t.toml:3: server.transport: expected a table, found string");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\nservices = [1]\n",
			  "t.toml:3: server.services: expected a table, found array");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\n[server.services]\nnas = \"0.0.0.0:1\"\n",
			  "t.toml:4: server.services.nas: expected a table (a service), found string");
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a\\u0000:1\"\n",
			  "t.toml:2: server.bind_addr: the string contains a NUL character (\\u0000)");
}

static void test_enums(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.nas]\ntoken = \"t\"\nbind_addr = \"a:1\"\ntype = \"sctp\"\n",
			  "t.toml:6: server.services.nas.type: expected \"tcp\" or \"udp\", found \"sctp\"");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"quic\"\n",
			  "t.toml:4: server.transport.type: expected \"tcp\", \"tls\", \"noise\" or "
			  "\"websocket\", found \"quic\"");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"TLS\"\n",
			  "t.toml:4: server.transport.type: expected \"tcp\", \"tls\", \"noise\" or "
			  "\"websocket\", found \"TLS\"");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = 1\n",
			  "t.toml:4: server.transport.type: expected a string, found integer");
	CHECK_STR(transport_type_name(TRANSPORT_WEBSOCKET), "websocket");
	CHECK_STR(transport_type_name(TRANSPORT_NOISE), "noise");
	CHECK_STR(service_type_name(SERVICE_UDP), "udp");
	CHECK_STR(service_type_name(SERVICE_TCP), "tcp");
}

static void test_transport_blocks(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"tls\"\n",
			  "t.toml:4: server.transport.type = \"tls\" needs a [server.transport.tls] "
			  "table with pkcs12 and pkcs12_password");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n",
			  "t.toml:4: client.transport.type = \"tls\" needs a [client.transport.tls] "
			  "table (trusted_root and hostname are optional)");
	EXPECT_OK(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n[client.transport.tls]\n");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"noise\"\n",
			  "t.toml:4: server.transport.type = \"noise\" needs a [server.transport.noise] "
			  "table (with local_private_key)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport]\ntype = \"noise\"\n",
			  "t.toml:4: client.transport.type = \"noise\" needs a [client.transport.noise] "
			  "table (with the server's remote_public_key)");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n",
			  "t.toml:4: server.transport.type = \"websocket\" needs a "
			  "[server.transport.websocket] table (with tls = true or false)");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n[server.transport.websocket]\n",
			  "t.toml:5: missing server.transport.websocket.tls (true: websocket over TLS "
			  "with the tls table's settings; false: plain websocket)");
	EXPECT_OK(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n[server.transport.websocket]\ntls = false\n");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n"
			  "[server.transport.websocket]\ntls = true\n",
			  "t.toml:6: server.transport.websocket.tls = true needs a "
			  "[server.transport.tls] table with pkcs12 and pkcs12_password");
	EXPECT_ERROR(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n"
		     "[server.transport.websocket]\ntls = true\n[server.transport.tls]\n",
		     "t.toml:7: missing server.transport.tls.pkcs12 (the server's PKCS#12 archive "
		     "with its certificate chain and private key)");
	EXPECT_OK(CLIENT_HEAD "[client.transport]\ntype = \"websocket\"\n[client.transport.websocket]\n"
		  "tls = true\n[client.transport.tls]\ntrusted_root = \"ca.pem\"\n");
	/* blocks of other transports may be present: the reference ignores them */
	EXPECT_OK(SERVER_HEAD "[server.transport.tls]\nhostname = \"x\"\n");
}

static void test_server_tls_identity(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"tls\"\n[server.transport.tls]\n"
			  "pkcs12_password = \"pw\"\n",
			  "t.toml:5: missing server.transport.tls.pkcs12 (the server's PKCS#12 "
			  "archive with its certificate chain and private key)");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"tls\"\n[server.transport.tls]\n"
			  "pkcs12 = \"id.pfx\"\n",
			  "t.toml:5: missing server.transport.tls.pkcs12_password (the password of "
			  "the PKCS#12 archive)");
	EXPECT_ERROR(SERVER_HEAD "[server.transport]\ntype = \"tls\"\n[server.transport.tls]\n",
		     "t.toml:5: missing server.transport.tls.pkcs12_password (the password of "
		     "the PKCS#12 archive)");
	CHECK(errs.count == 2);
}

static void test_proxy(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport.tcp]\nproxy = \"http://127.0.0.1:8080\"\n",
			  "t.toml:4: server.transport.tcp.proxy: proxy is a client setting (the "
			  "server never dials out); remove it here or move it to the client's config");
	EXPECT_ERROR(CLIENT_HEAD "[client.transport.tcp]\nproxy = \"ftp://user:hunter2@127.0.0.1\"\n",
		     "t.toml:4: client.transport.tcp.proxy: unknown proxy scheme \"ftp\": use http "
		     "or socks5 (expected http://[user:pass@]host:port or "
		     "socks5://[user:pass@]host:port)");
	/* the URL's password never appears in a message */
	CHECK(errs.count == 1 && strstr(errs.msg[0], "hunter2") == NULL);
	EXPECT_OK(CLIENT_HEAD "[client.transport.tcp]\nproxy = \"http://127.0.0.1:3128\"\n");
	EXPECT_OK(CLIENT_HEAD "[client.transport.tcp]\nproxy = \"socks5://u:p@[::1]:1080\"\n");
}

#define NOISE_CLIENT CLIENT_HEAD "[client.transport]\ntype = \"noise\"\n[client.transport.noise]\n"

static void test_noise(void)
{
	char text[1024];

	/* (a malformed key is not "missing" too) */
	EXPECT_ONLY_ERROR(NOISE_CLIENT "remote_public_key = \"not base64!\"\n",
			  "t.toml:6: client.transport.noise.remote_public_key: not valid base64 "
			  "(expected a 32-byte X25519 key in base64, 44 characters, as printed by "
			  "rathole --genkey)");
	snprintf(text, sizeof text, NOISE_CLIENT "remote_public_key = \"%s\"\n"
		 "local_private_key = \"AAECAwQFBgcICQoLDA0ODw==\"\n", KEY_B64);
	EXPECT_ONLY_ERROR(text, "t.toml:7: client.transport.noise.local_private_key: decodes to "
			  "16 bytes, expected 32 (an X25519 key in base64, as printed by rathole "
			  "--genkey)");
	EXPECT_ERROR(NOISE_CLIENT "local_private_key = 5\n",
		     "t.toml:6: client.transport.noise.local_private_key: expected a string, "
		     "found integer");
	/* the key's value never appears in a message */
	snprintf(text, sizeof text, NOISE_CLIENT "remote_public_key = \"%s\"\n"
		 "local_private_key = \"c2VjcmV0\"\n", KEY_B64);
	EXPECT_ONLY_ERROR(text, "t.toml:7: client.transport.noise.local_private_key: decodes to 6 "
			  "bytes, expected 32 (an X25519 key in base64, as printed by rathole "
			  "--genkey)");
	CHECK(strstr(errs.msg[0], "c2VjcmV0") == NULL);

	/* the reason comes from noise_check_protocol(); the prefix is ours */
	CHECK(parse(NOISE_CLIENT "pattern = \"Noise_ZZ_25519_ChaChaPoly_BLAKE2s\"\n") == NULL);
	CHECK(errs.count == 1 && strncmp(errs.msg[0], "t.toml:6: client.transport.noise.pattern: \"Noise_ZZ", 51) == 0);
	CHECK(parse(NOISE_CLIENT "pattern = \"Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s\"\n") == NULL);
	CHECK(errs.count == 1 && strstr(errs.msg[0], "client.transport.noise.pattern: ") != NULL);

	/* as in the reference, an unused noise block is not checked beyond key names
	 * and types (its own full.toml has placeholders there) */
	EXPECT_OK(CLIENT_HEAD "[client.transport.noise]\npattern = \"whatever\"\n"
		  "local_private_key = \"key_encoded_in_base64\"\n"
		  "remote_public_key = \"key_encoded_in_base64\"\n");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport.noise]\nlocal_private_key = 1\n",
			  "t.toml:4: client.transport.noise.local_private_key: expected a string, "
			  "found integer");
	{
		struct config *cfg = parse(CLIENT_HEAD "[client.transport.noise]\n"
					   "remote_public_key = \"junk\"\n");

		CHECK(cfg && cfg->client->transport.has_noise &&
		      !cfg->client->transport.noise.has_remote_public_key);
		config_free(cfg);
	}

	/* NK: the client needs the server's public key */
	EXPECT_ONLY_ERROR(NOISE_CLIENT,
			  "t.toml:5: missing client.transport.noise.remote_public_key (pattern "
			  "Noise_NK_25519_ChaChaPoly_BLAKE2s needs the server's public key on the "
			  "client)");
	/* NK server without a key: generated at start, as the reference does */
	EXPECT_OK(SERVER_HEAD "[server.transport]\ntype = \"noise\"\n[server.transport.noise]\n");
	/* XX needs no key known in advance */
	EXPECT_OK(NOISE_CLIENT "pattern = \"Noise_XX_25519_ChaChaPoly_BLAKE2s\"\n");
	/* KK: both sides know each other's key */
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.transport]\ntype = \"noise\"\n[server.transport.noise]\n"
			  "pattern = \"Noise_KK_25519_ChaChaPoly_BLAKE2s\"\n",
			  "t.toml:5: missing server.transport.noise.remote_public_key (pattern "
			  "Noise_KK_25519_ChaChaPoly_BLAKE2s needs the client's public key on the "
			  "server)");
	snprintf(text, sizeof text, NOISE_CLIENT "pattern = \"Noise_KK_25519_ChaChaPoly_BLAKE2s\"\n"
		 "remote_public_key = \"%s\"\n", KEY_B64);
	EXPECT_ONLY_ERROR(text, "t.toml:5: missing client.transport.noise.local_private_key "
			  "(pattern Noise_KK_25519_ChaChaPoly_BLAKE2s: the server knows the client's "
			  "public key in advance; make a pair with rathole --genkey)");
	snprintf(text, sizeof text, NOISE_CLIENT "remote_public_key = \"%s\"\n", KEY_B64);
	EXPECT_OK(text);
}

static void test_heartbeats(void)
{
	const char *both = "[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 30\n"
			   "[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = 30\n";

	EXPECT_ONLY_ERROR(both, "t.toml:6: client.heartbeat_timeout (30) must be greater than "
			  "server.heartbeat_interval (30), or the client reconnects between "
			  "heartbeats; raise it, or set either to 0 to disable heartbeats");
	/* default timeout 40 against a larger interval: the line is the table's */
	EXPECT_ONLY_ERROR("[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 60\n[client]\n"
			  "remote_addr = \"a:1\"\n",
			  "t.toml:4: client.heartbeat_timeout (40) must be greater than "
			  "server.heartbeat_interval (60), or the client reconnects between "
			  "heartbeats; raise it, or set either to 0 to disable heartbeats");
	EXPECT_OK("[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 0\n[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = 5\n");
	EXPECT_OK("[server]\nbind_addr = \"a:1\"\nheartbeat_interval = 60\n[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = 0\n");
	EXPECT_OK("[server]\nbind_addr = \"a:1\"\n[client]\nremote_addr = \"a:1\"\n");
	/* alone, a client's timeout is not compared with anything */
	EXPECT_OK("[client]\nremote_addr = \"a:1\"\nheartbeat_timeout = 1\n");
}

static void test_unknown_keys(void)
{
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.nas]\ntoken = \"t\"\nbind_adr = \"0.0.0.0:5202\"\n"
			  "bind_addr = \"0.0.0.0:5202\"\n",
			  "t.toml:5: unknown key \"bind_adr\" in [server.services.nas] (did you mean "
			  "\"bind_addr\"?)");
	EXPECT_ONLY_ERROR(SERVER_HEAD "colour = 1\n",
			  "t.toml:3: unknown key \"colour\" in [server] (expected one of: bind_addr, "
			  "default_token, http_bind_addr, https_bind_addr, heartbeat_interval, "
			  "transport, services, api)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "heartbeat_timout = 5\n",
			  "t.toml:3: unknown key \"heartbeat_timout\" in [client] (did you mean "
			  "\"heartbeat_timeout\"?)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport]\nTYPE = \"tcp\"\n",
			  "t.toml:4: unknown key \"TYPE\" in [client.transport] (did you mean \"type\"?)");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport.noise]\npsk = \"x\"\n",
			  "t.toml:4: unknown key \"psk\" in [client.transport.noise] (expected one "
			  "of: pattern, local_private_key, remote_public_key)");
	/* a key of the other role is unknown here */
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.s]\ntoken = \"t\"\nbind_addr = \"a:1\"\n"
			  "retry_interval = 1\n",
			  "t.toml:6: unknown key \"retry_interval\" in [server.services.s] (expected "
			  "one of: type, token, bind_addr, nodelay, proxy_protocol, allow, deny, max_connections, "
			  "hostnames, vhost, balance, bandwidth_limit)");
	EXPECT_ERROR("[\"we ird\"]\n",
		     "t.toml:1: unknown key \"we ird\" at the top level (expected one of: server, client)");
	EXPECT_ERROR("[server]\nbind_addr = \"a:1\"\n\"x\\ny\" = 1\n",
		     "t.toml:3: unknown key \"x\\u000Ay\" in [server] (expected one of: bind_addr, "
		     "default_token, http_bind_addr, https_bind_addr, heartbeat_interval, "
		     "transport, services, api)");
}

static void test_toml_syntax_error(void)
{
	struct config *cfg = parse("[server]\nbind_addr = \n");

	CHECK(cfg == NULL);
	CHECK(errs.count == 1);
	CHECKF(strncmp(errs.msg[0], "t.toml:2:", 9) == 0, "%s", errs.msg[0]);
	/* path:line:col: message */
	{
		int line = 0, col = 0, n = 0;

		CHECK(sscanf(errs.msg[0], "t.toml:%d:%d: %n", &line, &col, &n) == 2 && n > 0 &&
		      errs.msg[0][n] != '\0');
		CHECK(line == 2 && col > 0);
	}
	config_free(cfg);
	/* duplicate service names are a TOML error */
	cfg = parse(SERVER_HEAD "[server.services.a]\n[server.services.a]\n");
	CHECK(cfg == NULL && errs.count == 1 && strncmp(errs.msg[0], "t.toml:4:", 9) == 0);
	config_free(cfg);
}

static void test_many_errors(void)
{
	char text[4096];
	size_t n = 0;

	n += (size_t)snprintf(text + n, sizeof text - n, SERVER_HEAD);
	for (int i = 0; i < CONFIG_MAX_ERRORS + 4; i++)
		n += (size_t)snprintf(text + n, sizeof text - n, "unknown%d = 1\n", i);
	CHECK(parse(text) == NULL);
	CHECK(errs.count == CONFIG_MAX_ERRORS);
	CHECK(errs.omitted == 4);
	/* several independent errors are all reported, in source order */
	CHECK(parse("[server]\nbind_addr = \"x\"\nheartbeat_interval = -1\n[server.services.a]\n") == NULL);
	CHECK(errs.count == 4);
	CHECK(errs.count == 4 && strncmp(errs.msg[0], "t.toml:2: server.bind_addr:", 27) == 0);
	CHECK(errs.count == 4 && strncmp(errs.msg[1], "t.toml:3: server.heartbeat_interval:", 36) == 0);
	CHECK(errs.count == 4 && strncmp(errs.msg[2], "t.toml:4: service \"a\": missing bind_addr", 40) == 0);
	CHECK(errs.count == 4 && strncmp(errs.msg[3], "t.toml:4: service \"a\": missing token", 36) == 0);
	/* a nested table's errors do not come before its parent's */
	CHECK(parse("[server]\n[server.services.a]\ntoken = \"t\"\n") == NULL);
	CHECK(errs.count == 2 && strncmp(errs.msg[0], "t.toml:1: missing server.bind_addr", 34) == 0);
	CHECK(errs.count == 2 && strncmp(errs.msg[1], "t.toml:2: service \"a\": missing bind_addr", 40) == 0);
}

/* Our keys beyond the reference's. */
static void test_our_keys(void)
{
	struct config *cfg = parse(SERVER_HEAD
				   "[server.api]\ntoken = \"t\"\n"
				   "[server.services.web]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:80\"\n"
				   "proxy_protocol = \"v2\"\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n"
				   "deny = [\"10.0.0.7\"]\nmax_connections = 100\n");

	CHECK(cfg && cfg->server && cfg->server->api);
	if (cfg && cfg->server && cfg->server->api) {
		const struct service_config *s = &cfg->server->services[0];
		CHECK_STR(cfg->server->api->bind_addr, "127.0.0.1:2334");
		CHECK_STR(cfg->server->api->token, "t");
		CHECK(s->proxy_protocol == 2 && s->nallow == 2 && s->ndeny == 1);
		CHECK(s->max_connections == 100);
	} else {
		dump_errors();
	}
	config_free(cfg);

	cfg = parse(CLIENT_HEAD "[client.services.dns]\ntype = \"udp\"\ntoken = \"x\"\n"
		    "local_addr = \"127.0.0.1:53\"\n");
	CHECK(cfg && cfg->client->services[0].udp_idle_timeout == 60);
	CHECK(cfg && cfg->client->services[0].udp_max_sessions == 1024);
	CHECK(cfg && cfg->client->api == NULL);
	config_free(cfg);

	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.services.dns]\ntoken = \"x\"\nlocal_addr = \"127.0.0.1:53\"\n"
			  "udp_max_sessions = 0\n",
			  "t.toml:6: client.services.dns.udp_max_sessions: expected 1 to 65536 sessions, found 0");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.w]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:80\"\n"
			  "proxy_protocol = \"v3\"\n",
			  "t.toml:6: server.services.w.proxy_protocol: expected \"none\", \"v1\" or \"v2\", found \"v3\"");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.w]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:80\"\n"
			  "allow = [\"10.0.0.1/8\"]\n",
			  "t.toml:6: server.services.w.allow[0]: \"10.0.0.1/8\" has bits set after the prefix "
			  "(did you mean 10.0.0.0/8?)");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.w]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:80\"\n"
			  "deny = [\"10.0.0.0/8\", 7]\n",
			  "t.toml:6: server.services.w.deny[1]: expected a string such as \"10.0.0.0/8\", found integer");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.w]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:80\"\n"
			  "allow = \"10.0.0.0/8\"\n",
			  "t.toml:6: server.services.w.allow: expected an array of addresses or CIDR blocks, "
			  "e.g. [\"10.0.0.0/8\", \"2001:db8::/32\"], found string");
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.api]\nbind_addr = \"localhost:9000\"\n",
			  "t.toml:4: server.api.bind_addr: \"localhost:9000\" must be an IP address and a port, "
			  "e.g. \"127.0.0.1:2334\"");
}

/* [transport.tls] record_layer: who protects the records after a TLS 1.3
 * handshake (ours by default). */
static void test_record_layer(void)
{
	struct config *cfg = parse(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n"
				   "[client.transport.tls]\nrecord_layer = \"openssl\"\n");

	CHECK(cfg && cfg->client->transport.tls.record_layer == TLS_RECORDS_OPENSSL);
	config_free(cfg);
	cfg = parse(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n[client.transport.tls]\n");
	CHECK(cfg && cfg->client->transport.tls.record_layer == TLS_RECORDS_RATHOLE);
	config_free(cfg);
	cfg = parse(SERVER_HEAD "[server.transport]\ntype = \"websocket\"\n"
		    "[server.transport.websocket]\ntls = true\n[server.transport.tls]\n"
		    "pkcs12 = \"id.p12\"\npkcs12_password = \"pw\"\nrecord_layer = \"rathole\"\n");
	CHECK(cfg && cfg->server->transport.tls.record_layer == TLS_RECORDS_RATHOLE);
	config_free(cfg);
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n[client.transport.tls]\n"
			  "record_layer = \"kernel\"\n",
			  "t.toml:6: client.transport.tls.record_layer: expected \"rathole\" or "
			  "\"openssl\", found \"kernel\"");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.transport]\ntype = \"tls\"\n[client.transport.tls]\n"
			  "record_layer = false\n",
			  "t.toml:6: client.transport.tls.record_layer: expected a string, found boolean");
}

/* A range becomes ordinary services, each owning copies of its settings. */
static void test_port_ranges(void)
{
	struct config *cfg = parse(SERVER_HEAD
				   "[server.services.g]\ntoken = \"x\"\nbind_addr = \"[::]:30000-30002\"\n"
				   "allow = [\"10.0.0.0/8\"]\nmax_connections = 5\n"
				   "[server.services.one]\ntoken = \"y\"\nbind_addr = \"0.0.0.0:30003\"\n");

	CHECK(cfg && cfg->server->nservices == 4);
	if (cfg && cfg->server->nservices == 4) {
		const struct service_config *s = cfg->server->services;

		CHECK_STR(s[0].name, "g:30000");
		CHECK_STR(s[2].name, "g:30002");
		CHECK_STR(s[2].bind_addr, "[::]:30002");
		CHECK_STR(s[1].range_name, "g");
		CHECK(s[1].range_size == 3 && s[1].range_index == 1);
		CHECK(s[2].nallow == 1 && s[2].allow != s[0].allow && s[2].max_connections == 5);
		CHECK(s[2].token != s[0].token);
		CHECK_STR(s[2].token, "x");
		CHECK_STR(s[3].name, "one");
		CHECK(s[3].range_name == NULL);
	} else {
		dump_errors();
	}
	config_free(cfg);

	cfg = parse(CLIENT_HEAD "[client.services.g]\ntoken = \"x\"\n"
		    "local_addr = \"127.0.0.1:40000-40001\"\nremote_ports = \"30000-30001\"\n");
	CHECK(cfg && cfg->client->nservices == 2);
	if (cfg && cfg->client->nservices == 2) {
		CHECK_STR(cfg->client->services[1].name, "g:30001");
		CHECK_STR(cfg->client->services[1].local_addr, "127.0.0.1:40001");
	}
	config_free(cfg);

	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.services.g]\ntoken = \"x\"\n"
			  "local_addr = \"127.0.0.1:1-2\"\nremote_ports = \"0-1\"\n",
			  "t.toml:6: client.services.g.remote_ports: \"0-1\" is not a port range: a port "
			  "is at least 1 (write \"FIRST-LAST\", e.g. \"30000-30009\", at most 1024 ports)");
	EXPECT_OK(SERVER_HEAD "[server.services.a]\ntoken = \"x\"\nbind_addr = \"127.0.0.1:1-1024\"\n"
		  "[server.services.b]\ntoken = \"x\"\nbind_addr = \"127.0.0.2:1-1024\"\n"
		  "[server.services.c]\ntoken = \"x\"\ntype = \"udp\"\nbind_addr = \"0.0.0.0:1-1024\"\n");
}

/* Virtual hosts: shared listeners, hostnames (normalized), vhost, claims. */
static void test_vhosts(void)
{
	const struct service_config *sc;
	struct config *cfg;

	cfg = parse(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
		    "https_bind_addr = \"[::]:443\"\n"
		    "[server.services.a]\nhostnames = [\"NAS.Example.com.\", \"*.Home.example.com\"]\n"
		    "vhost = \"http\"\n"
		    "[server.services.b]\nhostnames = [\"nas.example.com\"]\nvhost = \"https\"\n"
		    "bind_addr = \"0.0.0.0:1\"\n");
	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
		return;
	}
	CHECK_STR(cfg->server->http_bind_addr, "0.0.0.0:80");
	CHECK_STR(cfg->server->https_bind_addr, "[::]:443");
	sc = config_find_service(cfg->server->services, cfg->server->nservices, "a");
	CHECK(sc && sc->bind_addr == NULL && sc->nhostnames == 2 && sc->vhost == VHOST_ON_HTTP);
	CHECK(sc && strcmp(sc->hostnames[0], "nas.example.com") == 0 &&
	      strcmp(sc->hostnames[1], "*.home.example.com") == 0);
	sc = config_find_service(cfg->server->services, cfg->server->nservices, "b");
	CHECK(sc && sc->vhost == VHOST_ON_HTTPS && sc->nhostnames == 1);
	config_free(cfg);
	/* the second claim of a name on a listener names both services */
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
			  "[server.services.a]\nhostnames = [\"x.org\"]\n"
			  "[server.services.b]\nhostnames = [\"y.org\",\n \"X.org\"]\n",
			  "t.toml:9: server.services.b.hostnames[1]: \"x.org\" is already claimed "
			  "by service \"a\" (line 5); a name routes to one service on each listener");
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\nhttps_bind_addr = \"0.0.0.0:443\"\n"
			  "[server.services.a]\nhostnames = [\"x.org\", \"x.org.\"]\n",
			  "t.toml:6: server.services.a.hostnames[1]: \"x.org\" is already claimed "
			  "by service \"a\" (line 5); a name routes to one service on each listener");
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
			  "[server.services.a]\nhostnames = [\"x.org\"]\nvhost = \"https\"\n",
			  "t.toml:6: server.services.a.hostnames: no shared listener routes them: "
			  "set server.https_bind_addr");
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\n[server.services.a]\n"
			  "bind_addr = \"0.0.0.0:1\"\nvhost = \"http\"\n",
			  "t.toml:6: server.services.a.vhost: applies to a service with hostnames; "
			  "add hostnames or remove it");
	EXPECT_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
			  "[server.services.a]\nhostnames = [\"x.org\", 1, \"*\"]\n",
			  "t.toml:6: server.services.a.hostnames[1]: expected a string, found integer");
	EXPECT_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
		     "[server.services.a]\nhostnames = [\"x.org\", 1, \"*\"]\n",
		     "t.toml:6: server.services.a.hostnames[2]: \"*\": a wildcard needs a domain "
		     "after it, e.g. \"*.example.com\"");
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
			  "[server.services.a]\nhostnames = \"x.org\"\n",
			  "t.toml:6: server.services.a.hostnames: expected an array of strings, found string");
	EXPECT_ONLY_ERROR(SERVER_HEAD "default_token = \"t\"\nhttp_bind_addr = \"0.0.0.0:80\"\n"
			  "[server.services.a]\nbind_addr = \"0.0.0.0:1-2\"\nhostnames = [\"x.org\"]\n",
			  "t.toml:7: server.services.a.hostnames: a port range (bind_addr "
			  "\"0.0.0.0:1-2\") cannot have hostnames: give them to a service of their own");
	EXPECT_ONLY_ERROR(CLIENT_HEAD "[client.services.a]\nlocal_addr = \"a:1\"\ntoken = \"t\"\n"
			  "hostnames = [\"x.org\"]\n",
			  "t.toml:6: unknown key \"hostnames\" in [client.services.a] (expected one of: "
			  "type, token, local_addr, remote_ports, bandwidth_limit, nodelay, retry_interval, "
			  "udp_idle_timeout, udp_max_sessions, health_check_interval)");
}

/* bandwidth_limit: SI units, bits or bytes, each way. */
static void test_bandwidth_limit(void)
{
	static const struct { const char *v; uint64_t rate; } ok[] = {
		{ "10MB", 10000000 }, { "80Mbit", 10000000 }, { "1.5Gbit", 187500000 },
		{ "1KB", 1000 }, { "8Kbit", 1000 }, { "100Gbit", 12500000000ULL },
		{ "2 GB", 2000000000 }, { "12345B", 12345 }, { "0.5MB", 500000 },
	};
	static const char *const bad[] = {
		"10Mb", "10", "MB", "1.MB", "-1MB", "999B", "101Gbit", "13GB", "10MB ", "1e6B",
		"99999999999999999999B",
	};
	char text[512];

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct config *cfg;

		snprintf(text, sizeof text, SERVER_HEAD "[server.services.a]\ntoken = \"x\"\n"
			 "bind_addr = \"0.0.0.0:1\"\nbandwidth_limit = \"%s\"\n", ok[i].v);
		cfg = parse(text);
		CHECKF(cfg && cfg->server->services[0].bandwidth_rate == ok[i].rate, "%s", ok[i].v);
		if (!cfg)
			dump_errors();
		config_free(cfg);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct config *cfg;

		snprintf(text, sizeof text, CLIENT_HEAD "[client.services.a]\ntoken = \"x\"\n"
			 "local_addr = \"127.0.0.1:1\"\nbandwidth_limit = \"%s\"\n", bad[i]);
		cfg = parse(text);
		CHECKF(!cfg && errs.count == 1 &&
		       strstr(errs.msg[0], "t.toml:6: client.services.a.bandwidth_limit: "), "%s", bad[i]);
		config_free(cfg);
	}
	EXPECT_ONLY_ERROR(SERVER_HEAD "[server.services.a]\ntoken = \"x\"\nbind_addr = \"0.0.0.0:1\"\n"
			  "bandwidth_limit = \"10Mb\"\n",
			  "t.toml:6: server.services.a.bandwidth_limit: \"10Mb\": unknown or missing unit "
			  "(B, KB, MB, GB: bytes per second; bit, Kbit, Mbit, Gbit: bits per second) "
			  "(a rate per direction such as \"10MB\" or \"80Mbit\", from 1KB to 100Gbit)");
}

static void test_load(void)
{
	char path[] = "/tmp/test_config_XXXXXX";
	const char *text = SERVER_HEAD "[server.services.a]\ntoken = \"t\"\nbind_addr = \"a:1\"\n";
	struct config *cfg;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	cfg = config_load(path, &errs);
	CHECK(cfg != NULL && cfg->server->nservices == 1);
	CHECK(cfg && strcmp(cfg->path, path) == 0);
	config_free(cfg);
	unlink(path);

	cfg = config_load(path, &errs);
	CHECK(cfg == NULL && errs.count == 1);
	{
		char want[600];

		snprintf(want, sizeof want, "%s: cannot read: %s", path, strerror(ENOENT));
		CHECK_STR(errs.msg[0], want);
	}
	cfg = config_load("/tmp", &errs);
	CHECK(cfg == NULL && errs.count == 1);
	CHECK_STR(errs.msg[0], "/tmp: cannot read: Is a directory");
	config_free(NULL);
}

/* Writes text to a new temporary file; its path is left in path. */
static bool write_temp(char *path, const char *text)
{
	int fd = mkstemp(path);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok;
}

/* token_file, default_token_file, local_private_key_file: the value is the
 * file's content without trailing newlines, the file is noted for the
 * reloader, and every misuse is an error naming the key. */
static void test_secret_files(void)
{
	char tok[] = "/tmp/test_config_tok_XXXXXX", key[] = "/tmp/test_config_key_XXXXXX";
	char empty[] = "/tmp/test_config_empty_XXXXXX", text[1024], want[600];
	struct config *cfg;

	CHECK(write_temp(tok, "s3cret\r\n\n"));
	CHECK(write_temp(key, KEY_B64));
	CHECK(write_temp(empty, "\n"));

	snprintf(text, sizeof text, SERVER_HEAD "default_token_file = \"%s\"\n"
		 "[server.transport]\ntype = \"noise\"\n[server.transport.noise]\n"
		 "local_private_key_file = \"%s\"\n"
		 "[server.services.a]\nbind_addr = \"a:1\"\n"
		 "[server.services.b]\ntoken_file = \"%s\"\nbind_addr = \"a:2\"\n", tok, key, tok);
	cfg = parse(text);
	CHECK(cfg != NULL);
	if (!cfg) {
		dump_errors();
	} else {
		CHECK_STR(cfg->server->services[0].token, "s3cret");
		CHECK_STR(cfg->server->services[1].token, "s3cret");
		CHECK(cfg->server->transport.noise.has_local_private_key);
		CHECK(cfg->server->transport.noise.local_private_key[31] == 31);
		CHECK(cfg->nsecret_files == 2);	/* each file once */
		CHECK(cfg->nsecret_files == 2 && strcmp(cfg->secret_files[0], tok) == 0 &&
		      strcmp(cfg->secret_files[1], key) == 0);
		CHECK(!cfg->inline_secrets);
	}
	config_free(cfg);

	cfg = parse(SERVER_HEAD "[server.services.a]\ntoken = \"t\"\nbind_addr = \"a:1\"\n");
	CHECK(cfg && cfg->inline_secrets && cfg->nsecret_files == 0);
	config_free(cfg);

	snprintf(text, sizeof text, SERVER_HEAD "[server.services.a]\ntoken = \"t\"\n"
		 "token_file = \"%s\"\nbind_addr = \"a:1\"\n", tok);
	EXPECT_ONLY_ERROR(text, "t.toml:5: server.services.a.token: give either token or "
			  "token_file, not both");
	EXPECT_ERROR(SERVER_HEAD "[server.services.a]\ntoken_file = \"/nonexistent/tok\"\n"
		     "bind_addr = \"a:1\"\n", "t.toml:4: server.services.a.token_file: "
		     "/nonexistent/tok: cannot read: No such file or directory");
	EXPECT_ERROR(SERVER_HEAD "[server.services.a]\ntoken_file = 1\nbind_addr = \"a:1\"\n",
		     "t.toml:4: server.services.a.token_file: expected the path of a file holding "
		     "the secret (a string), found integer");
	snprintf(text, sizeof text, SERVER_HEAD "[server.services.a]\ntoken_file = \"%s\"\n"
		 "bind_addr = \"a:1\"\n", empty);
	snprintf(want, sizeof want, "t.toml:4: server.services.a.token_file: %s is empty", empty);
	EXPECT_ERROR(text, want);
	/* only secrets come from files */
	EXPECT_ERROR(SERVER_HEAD "[server.services.a]\ntoken = \"t\"\nbind_addr_file = \"x\"\n",
		     "t.toml:5: unknown key \"bind_addr_file\" in [server.services.a] (expected one "
		     "of: type, token, bind_addr, nodelay, proxy_protocol, allow, deny, max_connections, "
		     "hostnames, vhost, balance, bandwidth_limit)");
	snprintf(text, sizeof text, CLIENT_HEAD "[client.transport]\ntype = \"noise\"\n"
		 "[client.transport.noise]\nremote_public_key = \"%s\"\n"
		 "local_private_key_file = \"%s\"\n"
		 "[client.services.a]\ntoken = \"t\"\nlocal_addr = \"a:1\"\n", KEY_B64, tok);
	cfg = parse(text);	/* a token is no key: the key's own check says so */
	CHECK(cfg == NULL && errs.count >= 1 && strstr(errs.msg[0], "local_private_key") != NULL);
	if (cfg || !errs.count)
		dump_errors();
	config_free(cfg);
	unlink(tok);
	unlink(key);
	unlink(empty);
}

int main(void)
{
	test_server_defaults();
	test_client_defaults();
	test_effective_values();
	test_all_keys();
	test_missing_required();
	test_neither_block();
	test_addresses();
	test_types_and_ranges();
	test_enums();
	test_transport_blocks();
	test_server_tls_identity();
	test_proxy();
	test_noise();
	test_heartbeats();
	test_unknown_keys();
	test_toml_syntax_error();
	test_many_errors();
	test_our_keys();
	test_record_layer();
	test_port_ranges();
	test_vhosts();
	test_bandwidth_limit();
	test_load();
	test_secret_files();
	return check_report("test_config");
}
