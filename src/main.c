/* The command line: rathole [OPTIONS] [CONFIG].
 *
 * Exit status: 0 success, 1 a config error (messages on stderr, one per line)
 * or an unsupported --genkey curve, 2 a usage error. Running a role hands
 * over to app_run(), whose result is the exit status. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apisvc.h"
#include "app.h"
#include "base64.h"
#include "config.h"
#include "log.h"
#include "noise.h"
#include "ossl.h"
#include "proxy.h"
#include "transport.h"

struct options {
	bool server, client, check, genkey, help, version;
	const char *curve;		/* --genkey's argument, NULL: x25519 */
	const char *config;
};

static void print_usage_hint(void)
{
	fprintf(stderr, "usage: rathole [OPTIONS] [CONFIG]\n"
		"Try 'rathole --help' for more information.\n");
}

static void print_help(void)
{
	printf("rathole %s: a reverse proxy for NAT traversal\n"
	       "\n"
	       "usage: rathole [OPTIONS] [CONFIG]\n"
	       "\n"
	       "  CONFIG            the TOML configuration file\n"
	       "\n"
	       "options:\n"
	       "  -s, --server      run as the server (needed when CONFIG has both [server] and [client])\n"
	       "  -c, --client      run as the client (idem)\n"
	       "      --check       validate CONFIG, print a summary and exit (0: valid, 1: errors)\n"
	       "      --genkey [CURVE]\n"
	       "                    print a new Noise keypair for [*.transport.noise] and exit\n"
	       "                    (CURVE: x25519, the default and the only one supported)\n"
	       "  -h, --help        print this help\n"
	       "  -V, --version     print the version\n"
	       "\n"
	       "With only [server] or only [client] in CONFIG the role is chosen from the file.\n"
	       "Log level: RATHOLE_LOG (or RUST_LOG) = error, warn, info (default), debug, trace;\n"
	       "e.g. RATHOLE_LOG=debug rathole client.toml. See docs/configuration.md.\n",
	       RATHOLE_VERSION);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("rathole: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	print_usage_hint();
	return 2;
}

/* Short options may be grouped ("-sV"); --genkey takes an optional next word. */
static int parse_args(int argc, char **argv, struct options *o)
{
	bool only_positional = false;

	memset(o, 0, sizeof *o);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (only_positional || a[0] != '-' || a[1] == '\0') {
			if (o->config)
				return usage_error("unexpected argument \"%s\": give one config file", a);
			o->config = a;
		} else if (strcmp(a, "--") == 0) {
			only_positional = true;
		} else if (strcmp(a, "--server") == 0) {
			o->server = true;
		} else if (strcmp(a, "--client") == 0) {
			o->client = true;
		} else if (strcmp(a, "--check") == 0) {
			o->check = true;
		} else if (strcmp(a, "--help") == 0) {
			o->help = true;
		} else if (strcmp(a, "--version") == 0) {
			o->version = true;
		} else if (strcmp(a, "--genkey") == 0) {
			o->genkey = true;
			if (i + 1 < argc && argv[i + 1][0] != '-')
				o->curve = argv[++i];
		} else if (strncmp(a, "--genkey=", 9) == 0) {
			o->genkey = true;
			o->curve = a + 9;
		} else if (a[1] == '-') {
			return usage_error("unknown option \"%s\"", a);
		} else {
			for (const char *f = a + 1; *f; f++) {
				switch (*f) {
				case 's': o->server = true; break;
				case 'c': o->client = true; break;
				case 'h': o->help = true; break;
				case 'V': o->version = true; break;
				default: {
					char opt[3] = { '-', *f, '\0' };

					return usage_error("unknown option \"%s\"", opt);
				}
				}
			}
		}
	}
	if (o->help || o->version || o->genkey)
		return 0;
	if (o->server && o->client)
		return usage_error("--server and --client exclude each other: pick one");
	if (!o->config)
		return usage_error("missing the config file");
	return 0;
}

/* The reference's format: "Private Key:\n<b64>\n\nPublic Key:\n<b64>\n". */
static int genkey(const char *curve)
{
	uint8_t priv[NOISE_KEY_LEN], pub[NOISE_KEY_LEN];
	char bpriv[BASE64_ENCODED_LEN(NOISE_KEY_LEN) + 1], bpub[BASE64_ENCODED_LEN(NOISE_KEY_LEN) + 1];
	char err[256];

	if (curve && strcmp(curve, "x25519") != 0) {
		fprintf(stderr, "rathole: curve %s is not supported: use x25519\n", curve);
		return 1;
	}
	if (ossl_load(err, sizeof err) < 0) {
		fprintf(stderr, "rathole: --genkey: %s\n", err);
		return 1;
	}
	if (noise_generate_keypair(priv, pub) < 0) {
		fprintf(stderr, "rathole: cannot generate a keypair (OpenSSL's X25519 failed)\n");
		return 1;
	}
	base64_encode(priv, sizeof priv, bpriv);
	base64_encode(pub, sizeof pub, bpub);
	printf("Private Key:\n%s\n\nPublic Key:\n%s\n", bpriv, bpub);
	fflush(stdout);
	explicit_bzero(priv, sizeof priv);
	explicit_bzero(bpriv, sizeof bpriv);
	return 0;
}

static void init_logging(void)
{
	const char *var = getenv("RATHOLE_LOG") && *getenv("RATHOLE_LOG") ? "RATHOLE_LOG" : "RUST_LOG";

	if (log_init_from_env() < 0)
		log_warn("%s=\"%s\" is not understood; logging at info. Accepted levels: error, "
			 "warn, info, debug, trace (or directives such as \"rathole=debug\")",
			 var, getenv(var));
}

/* Secrets should be private: the config file when it holds them, and the
 * files they are read from (token_file = ...). Readable by its group is
 * fine when that group is our own (root:rathole 0640, the service's setup);
 * readable by anyone else is worth a warning. */
static void warn_if_readable(const char *path, const char *what)
{
	struct stat st;
	bool other, group;

	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	other = st.st_mode & S_IROTH;
	group = (st.st_mode & S_IRGRP) && st.st_gid != getegid();
	if (other || group)
		log_warn("%s holds %s but is readable by %s (mode %03o); they are secrets: "
			 "chmod 600 %s", path, what, other ? "other users" : "its group",
			 (unsigned)(st.st_mode & 0777), path);
}

static void warn_if_secrets_readable(const struct config *cfg)
{
	if (cfg->inline_secrets)
		warn_if_readable(cfg->path, "tokens");
	for (size_t i = 0; i < cfg->nsecret_files; i++)
		warn_if_readable(cfg->secret_files[i], "a secret");
}

static void print_config_errors(const char *path, const struct config_errors *errs)
{
	for (int i = 0; i < errs->count; i++)
		fprintf(stderr, "%s\n", errs->msg[i]);
	if (errs->omitted)
		fprintf(stderr, "%s: %d more errors not shown; fix the ones above first\n", path,
			errs->omitted);
}

/* The role from the flags and the file. Returns 0, or 1 after an error. */
static int choose_role(const struct config *cfg, const struct options *o, enum role *role)
{
	if (o->server && !cfg->server) {
		fprintf(stderr, "%s: --server was given but the file has no [server] table "
			"(it has [client]: drop --server)\n", cfg->path);
		return 1;
	}
	if (o->client && !cfg->client) {
		fprintf(stderr, "%s: --client was given but the file has no [client] table "
			"(it has [server]: drop --client)\n", cfg->path);
		return 1;
	}
	if (o->server || o->client) {
		*role = o->server ? ROLE_SERVER : ROLE_CLIENT;
		return 0;
	}
	if (cfg->server && cfg->client) {
		fprintf(stderr, "%s: the file has both [server] and [client]: pass --server or "
			"--client to choose the role\n", cfg->path);
		return 1;
	}
	*role = cfg->server ? ROLE_SERVER : ROLE_CLIENT;
	return 0;
}

static void warn_if_no_services(const struct config *cfg, enum role role)
{
	size_t n = role == ROLE_SERVER ? cfg->server->nservices : cfg->client->nservices;

	if (n == 0)
		log_warn("%s: [%s] has no services: nothing will be forwarded until some are added",
			 cfg->path, role == ROLE_SERVER ? "server" : "client");
}

/* ---- --check ---- */

static const char *yes_no(bool b)
{
	return b ? "true" : "false";
}

static void print_seconds(const char *name, int secs)
{
	if (secs)
		printf("  %-19s %ds\n", name, secs);
	else
		printf("  %-19s 0 (disabled)\n", name);
}

/* A service name as the user would write it in TOML (quoted when needed). */
static void print_name(const char *name)
{
	bool bare = *name != '\0';

	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			bare = false;
	if (bare) {
		printf("%s", name);
		return;
	}
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04X", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void print_key(const char *what, const uint8_t key[NOISE_KEY_LEN])
{
	char b64[BASE64_ENCODED_LEN(NOISE_KEY_LEN) + 1];

	base64_encode(key, NOISE_KEY_LEN, b64);
	printf("%s %s", what, b64);
}

static void print_tls(const struct tls_config *tls, bool server)
{
	if (server)
		printf("pkcs12 %s", tls->pkcs12 ? tls->pkcs12 : "(none)");
	else
		printf("trusted_root %s, hostname %s", tls->trusted_root ? tls->trusted_root :
		       "(system roots)", tls->hostname ? tls->hostname : "(from remote_addr)");
	if (tls->record_layer == TLS_RECORDS_OPENSSL)
		printf("; record_layer openssl (OpenSSL protects every record)");
}

static void print_transport(const struct transport_config *t, bool server)
{
	const struct noise_config *n = &t->noise;
	uint8_t pub[NOISE_KEY_LEN];

	printf("  %-19s %s", "transport", transport_type_name(t->type));
	switch (t->type) {
	case TRANSPORT_TCP:
		break;
	case TRANSPORT_TLS:
		printf(" (");
		print_tls(&t->tls, server);
		printf(")");
		break;
	case TRANSPORT_NOISE:
		printf(" (%s; ", n->pattern);
		/* the public half of our key, for the peer's remote_public_key */
		if (n->has_local_private_key && noise_public_key(n->local_private_key, pub) == 0)
			print_key("local public key", pub);
		else
			printf("local key generated at start");
		if (n->has_remote_public_key) {
			printf("; ");
			print_key("remote_public_key", n->remote_public_key);
		}
		printf(")");
		break;
	case TRANSPORT_WEBSOCKET:
		printf(" (tls %s", yes_no(t->websocket.tls));
		if (t->websocket.tls) {
			printf(": ");
			print_tls(&t->tls, server);
		}
		printf(")");
		break;
	}
	printf("\n  %-19s nodelay %s, keepalive_secs %d, keepalive_interval %d", "tcp",
	       yes_no(t->tcp.nodelay), t->tcp.keepalive_secs, t->tcp.keepalive_interval);
	if (t->tcp.proxy) {
		struct proxy_url u;
		char why[128];

		/* never the credentials: scheme, host and port only */
		if (proxy_parse_url(t->tcp.proxy, &u, why, sizeof why) == 0)
			printf(", proxy %s://%s%s", u.kind == PROXY_SOCKS5 ? "socks5" : "http",
			       u.hostport, u.has_auth ? " (with credentials)" : "");
		explicit_bzero(&u, sizeof u);
	}
	printf("\n");
}

/* A server service's virtual host names and the listeners routing them. */
static void print_hostnames(const struct service_config *s)
{
	static const char *const on[] = { "http and https", "http", "https" };

	printf(", hostnames");
	for (size_t j = 0; j < s->nhostnames; j++)
		printf("%s %s", j ? "," : "", s->hostnames[j]);
	printf(" (on %s)", on[s->vhost]);
}

static void print_services(const struct service_config *s, size_t n, bool server)
{
	printf("  %-19s %zu\n", "services", n);
	for (size_t i = 0; i < n; i++) {
		const struct service_config *last = &s[i];

		printf("    ");
		if (s[i].range_name) {	/* a port range: one line for its members */
			last = &s[i + (size_t)s[i].range_size - 1];
			print_name(s[i].range_name);
			printf(": port range of %d, services ", s[i].range_size);
			print_name(s[i].name);
			printf(" .. ");
			print_name(last->name);
			printf(", %s %s .. %s%s", server ? "bind_addr" : "local_addr",
			       server ? s[i].bind_addr : s[i].local_addr,
			       server ? last->bind_addr : last->local_addr,
			       server ? ", 1 pooled data channel each" : "");
			printf(", %s, nodelay %s", service_type_name(s[i].type), yes_no(s[i].nodelay));
		} else {
			const char *addr = server ? s[i].bind_addr : s[i].local_addr;

			print_name(s[i].name);
			printf(": %s", service_type_name(s[i].type));
			if (addr)
				printf(", %s %s", server ? "bind_addr" : "local_addr", addr);
			printf(", nodelay %s", yes_no(s[i].nodelay));
		}
		if (server && s[i].nhostnames)
			print_hostnames(&s[i]);
		if (!server)
			printf(", retry_interval %ds", s[i].retry_interval);
		if (!server && s[i].health_check_interval)
			printf(", health_check_interval %ds", s[i].health_check_interval);
		if (server && s[i].has_balance)
			printf(", balance %s", balance_policy_name(s[i].balance));
		if (s[i].bandwidth_limit)
			printf(", bandwidth_limit %s (%llu bytes/s each way%s)", s[i].bandwidth_limit,
			       (unsigned long long)s[i].bandwidth_rate,
			       s[i].range_name ? ", for each port" : "");
		printf(", token: %s\n", s[i].token_from_default ? "default_token" : "service");
		i += (size_t)(last - &s[i]);
	}
}

static void print_summary(const struct config *cfg, bool server, bool client)
{
	printf("%s: valid\n", cfg->path);
	if (server) {
		const struct server_config *s = cfg->server;

		printf("role: server\n");
		printf("  %-19s %s\n", "bind_addr", s->bind_addr);
		if (s->http_bind_addr)
			printf("  %-19s %s (virtual hosts by Host)\n", "http_bind_addr", s->http_bind_addr);
		if (s->https_bind_addr)
			printf("  %-19s %s (virtual hosts by TLS SNI)\n", "https_bind_addr",
			       s->https_bind_addr);
		print_transport(&s->transport, true);
		print_seconds("heartbeat_interval", s->heartbeat_interval);
		print_services(s->services, s->nservices, true);
	}
	if (client) {
		const struct client_config *c = cfg->client;

		printf("role: client\n");
		printf("  %-19s", "remote_addr");
		for (size_t i = 0; i < c->nremote_addrs; i++)
			printf("%s %s", i ? "," : "", c->remote_addrs[i]);
		printf("\n");
		print_transport(&c->transport, false);
		print_seconds("heartbeat_timeout", c->heartbeat_timeout);
		print_seconds("retry_interval", c->retry_interval);
		print_services(c->services, c->nservices, false);
	}
	fflush(stdout);
}

/* Builds the role's transport as a start would and frees it again: that is
 * where the PKCS#12 archive and trusted_root are read and the Noise pattern
 * is matched with the keys, so --check finds what would stop a start. */
static bool transport_ok(const struct config *cfg, const struct transport_config *tc,
			 bool server, const char *remote_addr)
{
	enum log_level level = log_level;
	struct transport *t;
	char err[512];

	/* its info lines ("generated a key for this run") describe a start */
	if (log_level > LOG_WARN)
		log_level = LOG_WARN;
	t = transport_new(tc, server, remote_addr, err, sizeof err);
	log_level = level;
	if (!t) {
		fprintf(stderr, "%s: [%s.transport]: %s\n", cfg->path,
			server ? "server" : "client", err);
		return false;
	}
	transport_free(t);
	return true;
}

/* The services the admin API created (its services_file), checked as a
 * start loads them; they join the summary. */
static bool api_services_ok(struct config *cfg, bool server)
{
	const struct api_config *ac = server ? cfg->server->api : cfg->client->api;
	struct config_errors errs;
	struct apisvcs set;
	char err[512];
	bool ok = true;

	if (!ac || !ac->services_file)
		return true;
	if (apisvcs_load(&set, ac->services_file, server, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return false;
	}
	for (size_t i = 0; ok && i < set.n; i++) {
		if (config_add_service(cfg, server, set.v[i].name, set.v[i].tbl, ac->services_file,
				       &errs) < 0) {
			print_config_errors(ac->services_file, &errs);
			ok = false;
		}
	}
	apisvcs_free(&set);
	return ok;
}

/* --check without a role flag summarizes every role in the file. */
static int check_config(struct config *cfg, const struct options *o)
{
	bool server = cfg->server && !o->client, client = cfg->client && !o->server;
	bool ok = true;
	enum role role;

	if ((o->server || o->client) && choose_role(cfg, o, &role) != 0) {
		config_free(cfg);
		return 1;
	}
	if (server)
		ok = api_services_ok(cfg, true) && transport_ok(cfg, &cfg->server->transport, true, NULL);
	if (client)
		ok = api_services_ok(cfg, false) && ok;
	if (client)
		for (size_t i = 0; i < cfg->client->nremote_addrs; i++)
			ok = transport_ok(cfg, &cfg->client->transport, false,
					  cfg->client->remote_addrs[i]) && ok;
	if (!ok) {
		config_free(cfg);
		return 1;
	}
	if (server)
		warn_if_no_services(cfg, ROLE_SERVER);
	if (client)
		warn_if_no_services(cfg, ROLE_CLIENT);
	print_summary(cfg, server, client);
	config_free(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	struct config_errors errs;
	struct options o;
	struct config *cfg;
	enum role role;
	int rc;

	init_logging();
	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	if (o.help) {
		print_help();
		return 0;
	}
	if (o.version) {
		printf("rathole %s\n", RATHOLE_VERSION);
		return 0;
	}
	if (o.genkey)
		return genkey(o.curve);

	cfg = config_load(o.config, &errs);
	if (!cfg) {
		print_config_errors(o.config, &errs);
		return 1;
	}
	warn_if_secrets_readable(cfg);
	if (o.check)
		return check_config(cfg, &o);
	if (choose_role(cfg, &o, &role) != 0) {
		config_free(cfg);
		return 1;
	}
	warn_if_no_services(cfg, role);
	return app_run(cfg, role);
}
