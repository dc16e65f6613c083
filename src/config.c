/* The TOML tree -> typed config, declaratively.
 *
 * Each section of the file ([server], [client.transport.tcp], a service...)
 * is described by one table of keys: name, kind (the TOML type expected),
 * where the value goes in the C struct, its default, its range or choices and
 * an optional validator. One generic walker applies the defaults, stores the
 * values, reports wrong types and unknown keys (with suggestions taken from the
 * same table) and frees everything again. Adding a key is one line in a table.
 *
 * What the tables cannot say - effective values that fall back on another key
 * (a service's token, nodelay, retry_interval), which transport blocks a
 * transport type needs, the Noise keys a pattern needs on each side, and the
 * heartbeat cross-check - is done by the resolve_* functions afterwards. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "acl.h"
#include "base64.h"
#include "buf.h"
#include "limit.h"
#include "net.h"
#include "noise.h"
#include "proxy.h"
#include "toml.h"
#include "vhost.h"

#define PATH_LEN	256	/* a key path in messages: server.services.nas.token */
#define MAX_KEYS	16	/* keys of the largest section */

enum side { SIDE_ANY, SIDE_SERVER, SIDE_CLIENT };

/* State of one parse: where errors go and which role we are inside. */
struct ctx {
	const char *file;
	struct config_errors *errs;
	enum side side;
	int lines[CONFIG_MAX_ERRORS];	/* of each stored message, to sort them */
	struct config *cfg;		/* being built: secret_files are noted there */
	bool no_position;		/* messages without "file:line: " (the API's) */
	/* the API's services: no KEY_file, or whoever holds the API could have
	 * rathole read any file it can (and tell by the error if it exists) */
	bool no_secret_files;
	const char *key;		/* the service key being read, for errs->key */
};

enum kind {
	K_STRING,	/* char *, NUL-free */
	K_INT,		/* int within [min, max] */
	K_BOOL,		/* bool */
	K_ENUM,		/* a string among choices, stored as its index (an enum) */
	K_KEY32,	/* a base64 32-byte key, stored in uint8_t[32] */
	K_TABLE,	/* a nested struct */
	K_PTABLE,	/* an optional nested struct, allocated when present */
	K_SERVICES,	/* a table of services: struct service_config *, size_t count */
	K_CIDRS,	/* an array of CIDR strings: struct cidr *, size_t count */
	K_STRINGS,	/* an array of NUL-free strings: char **, size_t count */
};

#define KEY_REQUIRED	1u	/* "missing ..." when absent */
#define KEY_CLIENT_ONLY	2u	/* an error inside [server] */
#define KEY_SECRET	4u	/* wiped when freed; never printed anyway */
#define KEY_WHEN_USED	8u	/* value checked only when its transport is selected */
#define KEY_ONE_OR_MANY	16u	/* K_STRINGS: a single string is an array of one */
#define KEY_NONEMPTY	32u	/* K_STRINGS: an empty array is an error */
#define KEY_DISTINCT	64u	/* K_STRINGS: a string listed twice is an error */

struct section;

/* A validator of a stored string value: 0, or -1 after reporting. */
typedef int (*check_fn)(struct ctx *c, const char *kpath, int line, const char *value);

struct key {
	const char *name;
	enum kind kind;
	size_t off;			/* the field, from the section's struct */
	size_t has_off;			/* offset + 1 of a bool set when present; 0: none */
	long long def;			/* default of K_INT, K_BOOL, K_ENUM */
	const char *sdef;		/* default of K_STRING (NULL: none) */
	long long min, max;		/* K_INT: range is min..max */
	const char *unit;		/* K_INT: "seconds" */
	const char *const *choices;	/* K_ENUM: names, NULL-terminated, index = value */
	check_fn check;			/* K_STRING, K_STRINGS (each): extra validation */
	const struct section *sub;	/* K_TABLE, K_PTABLE, K_SERVICES */
	size_t count_off;		/* K_SERVICES, K_CIDRS, K_STRINGS: the size_t count */
	unsigned flags;
	const char *hint;		/* what to write, for "missing" messages */
};

struct section {
	const struct key *keys;
	size_t nkeys;
	size_t size;			/* of the struct (K_PTABLE, K_SERVICES elements) */
	enum side side;			/* the role this section starts, or SIDE_ANY */
	bool service;			/* messages say: service "name": ... */
};

#define OFF(T, f)	offsetof(T, f)
#define HAS(T, f)	(offsetof(T, f) + 1)
#define SECTION(k, T, ...) { .keys = k, .nkeys = sizeof k / sizeof k[0], .size = sizeof(T), __VA_ARGS__ }

static const char *const transport_names[] = { "tcp", "tls", "noise", "websocket", NULL };
static const char *const service_names[] = { "tcp", "udp", NULL };
static const char *const proxy_protocol_names[] = { "none", "v1", "v2", NULL };
static const char *const vhost_names[] = { "both", "http", "https", NULL };
static const char *const balance_names[] = { "round_robin", "least_connections", NULL };
static const char *const record_layer_names[] = { "rathole", "openssl", NULL };	/* enum tls_record_layer */

static int check_addr(struct ctx *c, const char *kpath, int line, const char *value);
static int check_vhost_name(struct ctx *c, const char *kpath, int line, const char *value);
static int check_service_addr(struct ctx *c, const char *kpath, int line, const char *value);
static int check_ports(struct ctx *c, const char *kpath, int line, const char *value);
static int check_rate(struct ctx *c, const char *kpath, int line, const char *value);
static int check_proxy(struct ctx *c, const char *kpath, int line, const char *value);
static int check_noise_pattern(struct ctx *c, const char *kpath, int line, const char *value);

/* ---- the key tables ---- */

#define T struct tcp_config
static const struct key tcp_keys[] = {
	{ .name = "proxy", .kind = K_STRING, .off = OFF(T, proxy), .check = check_proxy, .flags = KEY_CLIENT_ONLY },
	{ .name = "nodelay", .kind = K_BOOL, .off = OFF(T, nodelay), .def = 1 },
	{ .name = "keepalive_secs", .kind = K_INT, .off = OFF(T, keepalive_secs), .def = 20, .max = CONFIG_MAX_KEEPALIVE, .unit = "seconds" },
	{ .name = "keepalive_interval", .kind = K_INT, .off = OFF(T, keepalive_interval), .def = 8, .max = CONFIG_MAX_KEEPALIVE, .unit = "seconds" },
};
static const struct section tcp_section = SECTION(tcp_keys, T, .side = SIDE_ANY);
#undef T

#define T struct tls_config
static const struct key tls_keys[] = {
	{ .name = "hostname", .kind = K_STRING, .off = OFF(T, hostname) },
	{ .name = "trusted_root", .kind = K_STRING, .off = OFF(T, trusted_root) },
	{ .name = "pkcs12", .kind = K_STRING, .off = OFF(T, pkcs12) },
	{ .name = "pkcs12_password", .kind = K_STRING, .off = OFF(T, pkcs12_password), .flags = KEY_SECRET },
	{ .name = "record_layer", .kind = K_ENUM, .off = OFF(T, record_layer), .def = TLS_RECORDS_RATHOLE,
	  .choices = record_layer_names },
};
static const struct section tls_section = SECTION(tls_keys, T, .side = SIDE_ANY);
#undef T

#define T struct noise_config
static const struct key noise_keys[] = {
	{ .name = "pattern", .kind = K_STRING, .off = OFF(T, pattern), .sdef = "Noise_NK_25519_ChaChaPoly_BLAKE2s",
	  .check = check_noise_pattern, .flags = KEY_WHEN_USED },
	{ .name = "local_private_key", .kind = K_KEY32, .off = OFF(T, local_private_key),
	  .has_off = HAS(T, has_local_private_key), .flags = KEY_SECRET | KEY_WHEN_USED },
	{ .name = "remote_public_key", .kind = K_KEY32, .off = OFF(T, remote_public_key),
	  .has_off = HAS(T, has_remote_public_key), .flags = KEY_WHEN_USED },
};
static const struct section noise_section = SECTION(noise_keys, T, .side = SIDE_ANY);
#undef T

#define T struct websocket_config
static const struct key websocket_keys[] = {
	{ .name = "tls", .kind = K_BOOL, .off = OFF(T, tls), .flags = KEY_REQUIRED,
	  .hint = "true: websocket over TLS with the tls table's settings; false: plain websocket" },
};
static const struct section websocket_section = SECTION(websocket_keys, T, .side = SIDE_ANY);
#undef T

#define T struct transport_config
static const struct key transport_keys[] = {
	{ .name = "type", .kind = K_ENUM, .off = OFF(T, type), .def = TRANSPORT_TCP, .choices = transport_names },
	{ .name = "tcp", .kind = K_TABLE, .off = OFF(T, tcp), .sub = &tcp_section },
	{ .name = "tls", .kind = K_TABLE, .off = OFF(T, tls), .has_off = HAS(T, has_tls), .sub = &tls_section },
	{ .name = "noise", .kind = K_TABLE, .off = OFF(T, noise), .has_off = HAS(T, has_noise), .sub = &noise_section },
	{ .name = "websocket", .kind = K_TABLE, .off = OFF(T, websocket), .has_off = HAS(T, has_websocket), .sub = &websocket_section },
};
static const struct section transport_section = SECTION(transport_keys, T, .side = SIDE_ANY);
#undef T

#define T struct service_config
static const struct key server_service_keys[] = {
	{ .name = "type", .kind = K_ENUM, .off = OFF(T, type), .def = SERVICE_TCP, .choices = service_names },
	{ .name = "token", .kind = K_STRING, .off = OFF(T, token), .flags = KEY_SECRET },
	/* required unless hostnames is set: resolve_vhosts() */
	{ .name = "bind_addr", .kind = K_STRING, .off = OFF(T, bind_addr), .check = check_service_addr },
	{ .name = "nodelay", .kind = K_BOOL, .off = OFF(T, nodelay), .has_off = HAS(T, has_nodelay), .def = 1 },
	{ .name = "proxy_protocol", .kind = K_ENUM, .off = OFF(T, proxy_protocol), .def = 0, .choices = proxy_protocol_names },
	{ .name = "allow", .kind = K_CIDRS, .off = OFF(T, allow), .count_off = OFF(T, nallow) },
	{ .name = "deny", .kind = K_CIDRS, .off = OFF(T, deny), .count_off = OFF(T, ndeny) },
	{ .name = "max_connections", .kind = K_INT, .off = OFF(T, max_connections), .def = 0, .max = CONFIG_MAX_CONNECTIONS, .unit = "connections (0: no limit)" },
	{ .name = "hostnames", .kind = K_STRINGS, .off = OFF(T, hostnames), .count_off = OFF(T, nhostnames), .check = check_vhost_name },
	{ .name = "vhost", .kind = K_ENUM, .off = OFF(T, vhost), .def = VHOST_ON_BOTH, .choices = vhost_names },
	{ .name = "balance", .kind = K_ENUM, .off = OFF(T, balance), .has_off = HAS(T, has_balance), .def = BALANCE_ROUND_ROBIN, .choices = balance_names },
	{ .name = "bandwidth_limit", .kind = K_STRING, .off = OFF(T, bandwidth_limit), .check = check_rate },
};
static const struct section server_service_section = SECTION(server_service_keys, T, .side = SIDE_SERVER, .service = true);

static const struct key client_service_keys[] = {
	{ .name = "type", .kind = K_ENUM, .off = OFF(T, type), .def = SERVICE_TCP, .choices = service_names },
	{ .name = "token", .kind = K_STRING, .off = OFF(T, token), .flags = KEY_SECRET },
	{ .name = "local_addr", .kind = K_STRING, .off = OFF(T, local_addr), .check = check_service_addr, .flags = KEY_REQUIRED,
	  .hint = "the service to expose, e.g. \"127.0.0.1:22\"" },
	{ .name = "remote_ports", .kind = K_STRING, .off = OFF(T, remote_ports), .check = check_ports },
	{ .name = "bandwidth_limit", .kind = K_STRING, .off = OFF(T, bandwidth_limit), .check = check_rate },
	{ .name = "nodelay", .kind = K_BOOL, .off = OFF(T, nodelay), .has_off = HAS(T, has_nodelay), .def = 1 },
	{ .name = "retry_interval", .kind = K_INT, .off = OFF(T, retry_interval), .has_off = HAS(T, has_retry_interval),
	  .def = 1, .max = CONFIG_MAX_RETRY, .unit = "seconds" },
	{ .name = "udp_idle_timeout", .kind = K_INT, .off = OFF(T, udp_idle_timeout), .def = 60, .min = 1, .max = CONFIG_MAX_HEARTBEAT, .unit = "seconds" },
	{ .name = "udp_max_sessions", .kind = K_INT, .off = OFF(T, udp_max_sessions), .def = 1024, .min = 1, .max = CONFIG_MAX_UDP_SESSIONS, .unit = "sessions" },
	{ .name = "health_check_interval", .kind = K_INT, .off = OFF(T, health_check_interval), .def = 0, .max = CONFIG_MAX_HEALTH_CHECK, .unit = "seconds (0: no health check)" },
};
static const struct section client_service_section = SECTION(client_service_keys, T, .side = SIDE_CLIENT, .service = true);
#undef T

static int check_numeric_addr(struct ctx *c, const char *kpath, int line, const char *value);
static int check_host_name(struct ctx *c, const char *kpath, int line, const char *value);

#define T struct api_config
static const struct key server_api_keys[] = {
	{ .name = "bind_addr", .kind = K_STRING, .off = OFF(T, bind_addr), .sdef = "127.0.0.1:2334", .check = check_numeric_addr },
	{ .name = "token", .kind = K_STRING, .off = OFF(T, token), .flags = KEY_SECRET },
	{ .name = "hosts", .kind = K_STRINGS, .off = OFF(T, hosts), .count_off = OFF(T, nhosts), .check = check_host_name },
	{ .name = "services_file", .kind = K_STRING, .off = OFF(T, services_file) },
};
static const struct key client_api_keys[] = {
	{ .name = "bind_addr", .kind = K_STRING, .off = OFF(T, bind_addr), .sdef = "127.0.0.1:2335", .check = check_numeric_addr },
	{ .name = "token", .kind = K_STRING, .off = OFF(T, token), .flags = KEY_SECRET },
	{ .name = "hosts", .kind = K_STRINGS, .off = OFF(T, hosts), .count_off = OFF(T, nhosts), .check = check_host_name },
	{ .name = "services_file", .kind = K_STRING, .off = OFF(T, services_file) },
};
static const struct section server_api_section = SECTION(server_api_keys, T, .side = SIDE_ANY);
static const struct section client_api_section = SECTION(client_api_keys, T, .side = SIDE_ANY);
#undef T

#define T struct server_config
static const struct key server_keys[] = {
	{ .name = "bind_addr", .kind = K_STRING, .off = OFF(T, bind_addr), .check = check_addr, .flags = KEY_REQUIRED,
	  .hint = "where clients connect, e.g. \"0.0.0.0:2333\"" },
	{ .name = "default_token", .kind = K_STRING, .off = OFF(T, default_token), .flags = KEY_SECRET },
	{ .name = "http_bind_addr", .kind = K_STRING, .off = OFF(T, http_bind_addr), .check = check_addr },
	{ .name = "https_bind_addr", .kind = K_STRING, .off = OFF(T, https_bind_addr), .check = check_addr },
	{ .name = "heartbeat_interval", .kind = K_INT, .off = OFF(T, heartbeat_interval), .def = 30, .max = CONFIG_MAX_HEARTBEAT, .unit = "seconds" },
	{ .name = "transport", .kind = K_TABLE, .off = OFF(T, transport), .sub = &transport_section },
	{ .name = "services", .kind = K_SERVICES, .off = OFF(T, services), .count_off = OFF(T, nservices), .sub = &server_service_section },
	{ .name = "api", .kind = K_PTABLE, .off = OFF(T, api), .sub = &server_api_section },
};
static const struct section server_section = SECTION(server_keys, T, .side = SIDE_SERVER);
#undef T

#define T struct client_config
static const struct key client_keys[] = {
	{ .name = "remote_addr", .kind = K_STRINGS, .off = OFF(T, remote_addrs), .count_off = OFF(T, nremote_addrs),
	  .check = check_addr, .flags = KEY_REQUIRED | KEY_ONE_OR_MANY | KEY_NONEMPTY | KEY_DISTINCT,
	  .hint = "the server's bind_addr as reachable from here, e.g. \"example.com:2333\"" },
	{ .name = "default_token", .kind = K_STRING, .off = OFF(T, default_token), .flags = KEY_SECRET },
	{ .name = "heartbeat_timeout", .kind = K_INT, .off = OFF(T, heartbeat_timeout), .def = 40, .max = CONFIG_MAX_HEARTBEAT, .unit = "seconds" },
	{ .name = "retry_interval", .kind = K_INT, .off = OFF(T, retry_interval), .def = 1, .max = CONFIG_MAX_RETRY, .unit = "seconds" },
	{ .name = "transport", .kind = K_TABLE, .off = OFF(T, transport), .sub = &transport_section },
	{ .name = "services", .kind = K_SERVICES, .off = OFF(T, services), .count_off = OFF(T, nservices), .sub = &client_service_section },
	{ .name = "api", .kind = K_PTABLE, .off = OFF(T, api), .sub = &client_api_section },
};
static const struct section client_section = SECTION(client_keys, T, .side = SIDE_CLIENT);
#undef T

static const struct key root_keys[] = {
	{ .name = "server", .kind = K_PTABLE, .off = OFF(struct config, server), .sub = &server_section },
	{ .name = "client", .kind = K_PTABLE, .off = OFF(struct config, client), .sub = &client_section },
};
static const struct section root_section = SECTION(root_keys, struct config, .side = SIDE_ANY);

/* ---- names ---- */

const char *transport_type_name(enum transport_type t)
{
	return (unsigned)t < sizeof transport_names / sizeof transport_names[0] - 1 ?
	       transport_names[t] : "?";
}

const char *service_type_name(enum service_type t)
{
	return (unsigned)t < sizeof service_names / sizeof service_names[0] - 1 ?
	       service_names[t] : "?";
}

const char *balance_policy_name(enum balance_policy b)
{
	return (unsigned)b < sizeof balance_names / sizeof balance_names[0] - 1 ?
	       balance_names[b] : "?";
}

const struct service_config *config_find_service(const struct service_config *s,
						 size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s[i].name, name) == 0)
			return &s[i];
	return NULL;
}

/* ---- bounded string building for messages ---- */

struct sbuf {
	char *p;
	size_t cap, len;
};

static void sb_init(struct sbuf *b, char *p, size_t cap)
{
	b->p = p;
	b->cap = cap;
	b->len = 0;
	p[0] = '\0';
}

static void sb_putc(struct sbuf *b, char ch)
{
	if (b->len + 1 < b->cap) {
		b->p[b->len++] = ch;
		b->p[b->len] = '\0';
	}
}

static void sb_puts(struct sbuf *b, const char *s)
{
	while (*s)
		sb_putc(b, *s++);
}

/* Writes s (n bytes) between double quotes, escaped as a TOML basic string,
 * shortened to max bytes: user text never breaks a message line. */
static void sb_quoted(struct sbuf *b, const char *s, size_t n, size_t max)
{
	char esc[8];

	sb_putc(b, '"');
	for (size_t i = 0; i < n && i < max; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			sb_putc(b, '\\');
			sb_putc(b, (char)ch);
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04X", ch);
			sb_puts(b, esc);
		} else {
			sb_putc(b, (char)ch);
		}
	}
	if (n > max)
		sb_puts(b, "...");
	sb_putc(b, '"');
}

static bool is_bare_key(const char *k, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)k[i]) && k[i] != '_' && k[i] != '-')
			return false;
	return true;
}

/* parent + "." + key, quoting the key when TOML would need it. */
static void path_join(char *out, size_t cap, const char *parent, const char *key, size_t keylen)
{
	struct sbuf b;

	sb_init(&b, out, cap);
	if (parent && *parent) {
		sb_puts(&b, parent);
		sb_putc(&b, '.');
	}
	if (is_bare_key(key, keylen)) {
		for (size_t i = 0; i < keylen; i++)
			sb_putc(&b, key[i]);
	} else {
		sb_quoted(&b, key, keylen, 64);
	}
}

/* ---- errors ---- */

static void add_error(struct ctx *c, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_error(struct ctx *c, int line, const char *fmt, ...)
{
	struct config_errors *e = c->errs;
	va_list ap;
	char *m;
	int n;

	if (e->count >= CONFIG_MAX_ERRORS) {
		e->omitted++;
		return;
	}
	c->lines[e->count] = line;
	snprintf(e->key[e->count], sizeof e->key[0], "%s", c->key ? c->key : "");
	m = e->msg[e->count++];
	n = c->no_position ? 0 : snprintf(m, sizeof e->msg[0], "%s:%d: ", c->file, line > 0 ? line : 1);
	if (n < 0 || (size_t)n >= sizeof e->msg[0])
		return;
	va_start(ap, fmt);
	vsnprintf(m + n, sizeof e->msg[0] - (size_t)n, fmt, ap);
	va_end(ap);
}

static void add_oom(struct ctx *c, int line)
{
	add_error(c, line, "out of memory while reading the configuration");
}

static const char *expected_phrase(enum kind k)
{
	switch (k) {
	case K_INT:
		return "an integer";
	case K_BOOL:
		return "a boolean (true or false)";
	case K_CIDRS:
		return "an array of addresses or CIDR blocks, e.g. [\"10.0.0.0/8\", \"2001:db8::/32\"]";
	case K_STRINGS:
		return "an array of strings";
	case K_TABLE:
	case K_PTABLE:
	case K_SERVICES:
		return "a table";
	default:
		return "a string";
	}
}

static enum toml_type toml_type_of(enum kind k)
{
	switch (k) {
	case K_INT:
		return TOML_INTEGER;
	case K_BOOL:
		return TOML_BOOL;
	case K_CIDRS:
	case K_STRINGS:
		return TOML_ARRAY;
	case K_TABLE:
	case K_PTABLE:
	case K_SERVICES:
		return TOML_TABLE;
	default:
		return TOML_STRING;
	}
}

static bool expect_type(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			const char *kpath)
{
	if (kv->val->type == toml_type_of(k->kind))
		return true;
	add_error(c, kv->line, "%s: expected %s, found %s", kpath, expected_phrase(k->kind),
		  toml_type_name(kv->val->type));
	return false;
}

/* ---- "did you mean" ---- */

/* Levenshtein distance, case-insensitive; keys are short (bounded at 64). */
static size_t edit_distance(const char *a, size_t n, const char *b)
{
	size_t m = strlen(b), row[65];

	if (n > 64 || m > 64)
		return 1000;
	for (size_t j = 0; j <= m; j++)
		row[j] = j;
	for (size_t i = 1; i <= n; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= m; j++) {
			size_t up = row[j];
			size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			size_t best = diag + cost;

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[m];
}

/* The section's key closest to an unknown one, when close enough to be a typo. */
static const char *suggest_key(const struct section *s, const char *key, size_t keylen)
{
	const char *best = NULL;
	size_t bestd = (size_t)-1;

	for (size_t i = 0; i < s->nkeys; i++) {
		size_t d = edit_distance(key, keylen, s->keys[i].name);
		size_t limit = strlen(s->keys[i].name) / 3;

		if (limit < 1)
			limit = 1;
		if (d <= limit && d < bestd) {
			best = s->keys[i].name;
			bestd = d;
		}
	}
	return best;
}

static void report_unknown_key(struct ctx *c, const struct section *s,
			       const struct toml_kv *kv, const char *path)
{
	char name[PATH_LEN], where[PATH_LEN + 8], tail[PATH_LEN];
	const char *guess = suggest_key(s, kv->key, kv->keylen);
	struct sbuf b;

	sb_init(&b, name, sizeof name);
	sb_quoted(&b, kv->key, kv->keylen, 64);
	if (*path)
		snprintf(where, sizeof where, "in [%s]", path);
	else
		snprintf(where, sizeof where, "at the top level");
	sb_init(&b, tail, sizeof tail);
	if (guess) {
		sb_puts(&b, "(did you mean \"");
		sb_puts(&b, guess);
		sb_puts(&b, "\"?)");
	} else {
		sb_puts(&b, "(expected one of: ");
		for (size_t i = 0; i < s->nkeys; i++) {
			if (i)
				sb_puts(&b, ", ");
			sb_puts(&b, s->keys[i].name);
		}
		sb_putc(&b, ')');
	}
	add_error(c, kv->line, "unknown key %s %s %s", name, where, tail);
}

/* ---- validators ---- */

/* The admin API binds without the resolver: an IP literal and a port. */
static int check_numeric_addr(struct ctx *c, const char *kpath, int line, const char *value)
{
	struct net_addr a;
	char shown[96];
	struct sbuf b;

	if (net_parse_numeric(value, &a) == 0)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s must be an IP address and a port, e.g. \"127.0.0.1:2334\"",
		  kpath, shown);
	return -1;
}

/* A name the admin API answers to: a DNS name, without port or scheme. */
static int check_host_name(struct ctx *c, const char *kpath, int line, const char *value)
{
	size_t n = strlen(value);
	char shown[96];
	struct sbuf b;

	if (n > 0 && n < NET_HOST_MAX && strspn(value, "abcdefghijklmnopqrstuvwxyz"
						 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, n, 64);
	add_error(c, line, "%s: %s is not a host name (write the name alone, e.g. "
		  "\"admin.example.org\", without scheme or port)", kpath, shown);
	return -1;
}

/* A name of a service's hostnames (vhost_pattern_check()); it is stored as
 * written and normalized by resolve_vhosts(). */
static int check_vhost_name(struct ctx *c, const char *kpath, int line, const char *value)
{
	char norm[VHOST_NAME_MAX + 1], shown[96];
	const char *why;
	struct sbuf b;

	if (vhost_pattern_check(value, norm, &why) == 0)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s: %s", kpath, shown, why);
	return -1;
}

static int check_addr(struct ctx *c, const char *kpath, int line, const char *value)
{
	char host[NET_HOST_MAX], shown[96];
	const char *why = NULL;
	unsigned port;
	struct sbuf b;

	if (net_split_hostport(value, host, sizeof host, &port, &why) == 0)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s is not a valid address: %s (write \"host:port\", "
		  "e.g. \"0.0.0.0:2333\" or \"[::1]:2333\")", kpath, shown, why ? why : "bad syntax");
	return -1;
}

/* "FIRST-LAST": a port range of at most CONFIG_MAX_RANGE ports. */
static int parse_ports(const char *s, unsigned *lo, unsigned *hi, const char **why)
{
	unsigned v[2] = { 0, 0 };

	for (int i = 0; i < 2; i++) {
		const char *start = s;

		for (; *s >= '0' && *s <= '9'; s++)
			if ((v[i] = v[i] * 10 + (unsigned)(*s - '0')) > 65535) {
				*why = "a port is at most 65535";
				return -1;
			}
		if (s == start || (i == 0 && *s != '-') || (i == 1 && *s)) {
			*why = "expected FIRST-LAST, two port numbers";
			return -1;
		}
		if (v[i] == 0) {
			*why = "a port is at least 1";
			return -1;
		}
		s++;
	}
	if (v[0] > v[1]) {
		*why = "the first port is greater than the last";
		return -1;
	}
	if (v[1] - v[0] + 1 > CONFIG_MAX_RANGE) {
		*why = "more than 1024 ports";
		return -1;
	}
	*lo = v[0];
	*hi = v[1];
	return 0;
}

/* An address with a port range, "host:FIRST-LAST": 0 with the host's length
 * (brackets kept) and the ports; 1 when addr holds no range (a single port,
 * checked as any address); -1 for a malformed range. */
static int split_range(const char *addr, size_t *hostlen, unsigned *lo, unsigned *hi,
		       const char **why)
{
	const char *colon = strrchr(addr, ':');

	if (!colon || !strchr(colon, '-'))
		return 1;
	*hostlen = (size_t)(colon - addr);
	return parse_ports(colon + 1, lo, hi, why);
}

static int check_ports(struct ctx *c, const char *kpath, int line, const char *value)
{
	const char *why = NULL;
	char shown[96];
	unsigned lo, hi;
	struct sbuf b;

	if (parse_ports(value, &lo, &hi, &why) == 0)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s is not a port range: %s (write \"FIRST-LAST\", e.g. "
		  "\"30000-30009\", at most %d ports)", kpath, shown, why, CONFIG_MAX_RANGE);
	return -1;
}

static int check_rate(struct ctx *c, const char *kpath, int line, const char *value)
{
	const char *why = NULL;
	char shown[96];
	uint64_t rate;
	struct sbuf b;

	if (limit_parse(value, &rate, &why) == 0)
		return 0;
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s: %s (a rate per direction such as \"10MB\" or \"80Mbit\", "
		  "from 1KB to 100Gbit)", kpath, shown, why);
	return -1;
}

/* A service's address: one port, or a range of ports (one service each). */
static int check_service_addr(struct ctx *c, const char *kpath, int line, const char *value)
{
	char first[NET_HOST_MAX + 8], shown[96];
	const char *why = NULL;
	unsigned lo, hi;
	size_t hl;
	struct sbuf b;
	int r = split_range(value, &hl, &lo, &hi, &why);

	if (r == 1)
		return check_addr(c, kpath, line, value);
	if (r == 0 && hl < NET_HOST_MAX) {
		snprintf(first, sizeof first, "%.*s:%u", (int)hl, value, lo);
		return check_addr(c, kpath, line, first);
	}
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, value, strlen(value), 64);
	add_error(c, line, "%s: %s is not a valid port range: %s (write \"host:FIRST-LAST\", "
		  "e.g. \"0.0.0.0:30000-30009\", at most %d ports)", kpath, shown,
		  why ? why : "the host is too long", CONFIG_MAX_RANGE);
	return -1;
}

static int check_proxy(struct ctx *c, const char *kpath, int line, const char *value)
{
	struct proxy_url u;
	char why[256] = "";

	if (proxy_parse_url(value, &u, why, sizeof why) == 0) {
		explicit_bzero(&u, sizeof u);
		return 0;
	}
	explicit_bzero(&u, sizeof u);
	/* the URL may carry a password: never echo it */
	if (strchr(value, '@') && strstr(why, value))
		snprintf(why, sizeof why, "not a proxy URL");
	add_error(c, line, "%s: %s (expected http://[user:pass@]host:port or "
		  "socks5://[user:pass@]host:port)", kpath, why[0] ? why : "not a valid proxy URL");
	return -1;
}

static int check_noise_pattern(struct ctx *c, const char *kpath, int line, const char *value)
{
	struct noise_requirements req;
	char why[256] = "";

	if (noise_check_protocol(value, &req, why, sizeof why) == 0)
		return 0;
	add_error(c, line, "%s: %s", kpath, why[0] ? why : "not a supported Noise protocol name");
	return -1;
}

/* ---- storing one value ---- */

static bool has_nul(const struct toml_value *v)
{
	return memchr(v->u.str.ptr, '\0', v->u.str.len) != NULL;
}

static void store_string(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			 void *field, const char *kpath)
{
	char **slot = field, *dup;

	if (has_nul(kv->val)) {
		add_error(c, kv->line, "%s: the string contains a NUL character (\\u0000)", kpath);
		return;
	}
	dup = strdup(kv->val->u.str.ptr);
	if (!dup) {
		add_oom(c, kv->line);
		return;
	}
	free(*slot);
	*slot = dup;
	if (k->check && !(k->flags & KEY_WHEN_USED))
		k->check(c, kpath, kv->line, dup);
}

static void store_int(struct ctx *c, const struct key *k, const struct toml_kv *kv,
		      void *field, const char *kpath)
{
	int64_t v = kv->val->u.integer;

	if (v < k->min || v > k->max) {
		add_error(c, kv->line, "%s: expected %lld to %lld %s, found %lld", kpath, k->min,
			  k->max, k->unit ? k->unit : "", (long long)v);
		return;
	}
	*(int *)field = (int)v;
}

static void store_enum(struct ctx *c, const struct key *k, const struct toml_kv *kv,
		       void *field, const char *kpath)
{
	char list[160], found[96];
	struct sbuf b;
	size_t n = 0;

	for (int i = 0; k->choices[i]; i++) {
		if (strlen(k->choices[i]) == kv->val->u.str.len &&
		    memcmp(k->choices[i], kv->val->u.str.ptr, kv->val->u.str.len) == 0) {
			*(int *)field = i;
			return;
		}
		n++;
	}
	sb_init(&b, list, sizeof list);
	for (size_t i = 0; i < n; i++) {
		if (i)
			sb_puts(&b, i + 1 == n ? " or " : ", ");
		sb_putc(&b, '"');
		sb_puts(&b, k->choices[i]);
		sb_putc(&b, '"');
	}
	sb_init(&b, found, sizeof found);
	sb_quoted(&b, kv->val->u.str.ptr, kv->val->u.str.len, 64);
	add_error(c, kv->line, "%s: expected %s, found %s", kpath, list, found);
}

/* Noise keys: base64 of exactly 32 bytes. The value is never echoed. */
static bool store_key32(struct ctx *c, const struct toml_kv *kv, void *field, const char *kpath)
{
	uint8_t buf[96];
	const char *s = kv->val->u.str.ptr;
	size_t len = kv->val->u.str.len;
	long n = -1;

	if (len <= 128)
		n = base64_decode(s, len, buf, sizeof buf);
	if (n < 0) {
		add_error(c, kv->line, "%s: not valid base64 (expected a 32-byte X25519 key in "
			  "base64, 44 characters, as printed by rathole --genkey)", kpath);
		explicit_bzero(buf, sizeof buf);
		return false;
	}
	if (n != NOISE_KEY_LEN) {
		add_error(c, kv->line, "%s: decodes to %ld bytes, expected 32 (an X25519 key in "
			  "base64, as printed by rathole --genkey)", kpath, n);
		explicit_bzero(buf, sizeof buf);
		return false;
	}
	memcpy(field, buf, NOISE_KEY_LEN);
	explicit_bzero(buf, sizeof buf);
	return true;
}

/* ---- the generic walker ---- */

static void parse_section(struct ctx *c, const struct section *s, const struct toml_value *tbl,
			  void *base, const char *path, int line);

static int value_line(const struct toml_kv *kv)
{
	return kv->val->line > 0 ? kv->val->line : kv->line;
}

static void apply_defaults(struct ctx *c, const struct section *s, void *base)
{
	for (size_t i = 0; i < s->nkeys; i++) {
		const struct key *k = &s->keys[i];
		void *field = (char *)base + k->off;

		switch (k->kind) {
		case K_INT:
		case K_ENUM:
			*(int *)field = (int)k->def;
			break;
		case K_BOOL:
			*(bool *)field = k->def != 0;
			break;
		case K_STRING:
			if (k->sdef && !(*(char **)field = strdup(k->sdef)))
				add_oom(c, 0);
			break;
		case K_TABLE:
			apply_defaults(c, k->sub, field);
			break;
		default:
			break;
		}
	}
}

static void free_section(const struct section *s, void *base);

static void parse_services(struct ctx *c, const struct key *k, const struct toml_value *tbl,
			   void *base, const char *path)
{
	struct service_config **arr = (void *)((char *)base + k->off);
	size_t *count = (void *)((char *)base + k->count_off);
	size_t n = tbl->u.table.len;

	*count = 0;
	*arr = calloc(n ? n : 1, sizeof **arr);
	if (!*arr) {
		add_oom(c, tbl->line);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_kv *kv = &tbl->u.table.items[i];
		struct service_config *svc = &(*arr)[*count];
		char spath[PATH_LEN];

		path_join(spath, sizeof spath, path, kv->key, kv->keylen);
		if (kv->val->type != TOML_TABLE) {
			add_error(c, kv->line, "%s: expected a table (a service), found %s", spath,
				  toml_type_name(kv->val->type));
			continue;
		}
		if (memchr(kv->key, '\0', kv->keylen)) {
			add_error(c, kv->line, "%s: a service name cannot contain a NUL character", spath);
			continue;
		}
		svc->name = strdup(kv->key);
		if (!svc->name) {
			add_oom(c, kv->line);
			continue;
		}
		svc->line = value_line(kv);
		(*count)++;
		apply_defaults(c, k->sub, svc);
		parse_section(c, k->sub, kv->val, svc, spath, svc->line);
	}
}

static bool store_cidrs(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			void *base, const char *kpath)
{
	struct cidr **arr = (void *)((char *)base + k->off);
	size_t *count = (void *)((char *)base + k->count_off);
	const struct toml_value *a = kv->val;
	bool ok = true;

	*count = 0;
	*arr = calloc(a->u.array.len ? a->u.array.len : 1, sizeof **arr);
	if (!*arr) {
		add_oom(c, kv->line);
		return false;
	}
	for (size_t i = 0; i < a->u.array.len; i++) {
		const struct toml_value *v = a->u.array.items[i];
		char err[200];

		if (v->type != TOML_STRING || memchr(v->u.str.ptr, '\0', v->u.str.len)) {
			add_error(c, v->line, "%s[%zu]: expected a string such as \"10.0.0.0/8\", found %s",
				  kpath, i, toml_type_name(v->type));
			ok = false;
			continue;
		}
		if (cidr_parse(v->u.str.ptr, &(*arr)[*count], err, sizeof err) < 0) {
			add_error(c, v->line, "%s[%zu]: %s", kpath, i, err);
			ok = false;
			continue;
		}
		(*count)++;
	}
	return ok;
}

static void free_strings(char **arr, size_t n)
{
	for (size_t i = 0; arr && i < n; i++)
		free(arr[i]);
	free(arr);
}

/* One string is an array of one where the key allows it (KEY_ONE_OR_MANY:
 * its messages then name the key alone, as for a K_STRING); an empty array
 * (KEY_NONEMPTY) and a string given twice (KEY_DISTINCT) are errors where
 * the key says so. */
static bool store_strings(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			  void *base, const char *kpath)
{
	char ***arr = (void *)((char *)base + k->off);
	size_t *count = (void *)((char *)base + k->count_off);
	const struct toml_value *v = kv->val;
	const struct toml_value *const *items = (const struct toml_value *const *)&kv->val;
	bool one = v->type == TOML_STRING, ok = true;
	size_t n = 1;

	if (one && !(k->flags & KEY_ONE_OR_MANY)) {
		add_error(c, kv->line, "%s: expected an array of strings, found string", kpath);
		return false;
	}
	if (!one && v->type != TOML_ARRAY) {
		add_error(c, kv->line, "%s: expected %s, found %s", kpath,
			  k->flags & KEY_ONE_OR_MANY ? "a string or an array of strings" :
			  "an array of strings", toml_type_name(v->type));
		return false;
	}
	if (!one) {
		items = (const struct toml_value *const *)v->u.array.items;
		n = v->u.array.len;
	}
	if (n == 0 && (k->flags & KEY_NONEMPTY)) {
		add_error(c, kv->line, "%s: the array is empty; give at least one value", kpath);
		return false;
	}
	free_strings(*arr, *count);
	*count = 0;
	*arr = calloc(n ? n : 1, sizeof **arr);
	if (!*arr) {
		add_oom(c, kv->line);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *e = items[i];
		char epath[PATH_LEN + 24], shown[96];
		struct sbuf b;
		bool dup = false;

		if (one)
			snprintf(epath, sizeof epath, "%s", kpath);
		else
			snprintf(epath, sizeof epath, "%s[%zu]", kpath, i);
		if (e->type != TOML_STRING) {
			add_error(c, e->line, "%s: expected a string, found %s", epath,
				  toml_type_name(e->type));
			ok = false;
			continue;
		}
		if (memchr(e->u.str.ptr, '\0', e->u.str.len)) {
			add_error(c, e->line, "%s: the string contains a NUL character (\\u0000)", epath);
			ok = false;
			continue;
		}
		for (size_t j = 0; j < *count && !dup && (k->flags & KEY_DISTINCT); j++)
			dup = strcmp((*arr)[j], e->u.str.ptr) == 0;
		if (dup) {
			sb_init(&b, shown, sizeof shown);
			sb_quoted(&b, e->u.str.ptr, e->u.str.len, 64);
			add_error(c, e->line, "%s: %s is listed twice", epath, shown);
			ok = false;
			continue;
		}
		if (!((*arr)[*count] = strdup(e->u.str.ptr))) {
			add_oom(c, e->line);
			return false;
		}
		if (k->check && k->check(c, epath, e->line > 0 ? e->line : kv->line,
					 (*arr)[*count]) < 0)
			ok = false;
		(*count)++;
	}
	return ok;
}

static bool store_value(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			void *base, const char *kpath)
{
	void *field = (char *)base + k->off;

	if ((k->flags & KEY_CLIENT_ONLY) && c->side == SIDE_SERVER) {
		add_error(c, kv->line, "%s: %s is a client setting (the server never dials out); "
			  "remove it here or move it to the client's config", kpath, k->name);
		return false;
	}
	if (k->kind == K_STRINGS)
		return store_strings(c, k, kv, base, kpath);
	if (k->kind != K_ENUM && k->kind != K_KEY32 && !expect_type(c, k, kv, kpath))
		return false;
	if ((k->kind == K_ENUM || k->kind == K_KEY32) && kv->val->type != TOML_STRING) {
		add_error(c, kv->line, "%s: expected a string, found %s", kpath,
			  toml_type_name(kv->val->type));
		return false;
	}
	switch (k->kind) {
	case K_STRING:
		store_string(c, k, kv, field, kpath);
		return *(char **)field != NULL;
	case K_INT:
		store_int(c, k, kv, field, kpath);
		return true;
	case K_BOOL:
		*(bool *)field = kv->val->u.boolean;
		return true;
	case K_ENUM:
		store_enum(c, k, kv, field, kpath);
		return true;
	case K_KEY32:
		if (k->flags & KEY_WHEN_USED)
			return false;	/* decoded by check_when_used() */
		return store_key32(c, kv, field, kpath);
	case K_TABLE:
		parse_section(c, k->sub, kv->val, field, kpath, value_line(kv));
		return true;
	case K_PTABLE: {
		void **slot = field;

		*slot = calloc(1, k->sub->size);
		if (!*slot) {
			add_oom(c, kv->line);
			return false;
		}
		apply_defaults(c, k->sub, *slot);
		parse_section(c, k->sub, kv->val, *slot, kpath, value_line(kv));
		return true;
	}
	case K_SERVICES:
		parse_services(c, k, kv->val, base, kpath);
		return true;
	case K_CIDRS:
		return store_cidrs(c, k, kv, base, kpath);
	case K_STRINGS:
		break;		/* stored above, before the type check */
	}
	return false;
}

static const struct key *find_key(const struct section *s, const char *name, size_t len)
{
	for (size_t i = 0; i < s->nkeys; i++)
		if (strlen(s->keys[i].name) == len && memcmp(s->keys[i].name, name, len) == 0)
			return &s->keys[i];
	return NULL;
}

static void report_missing(struct ctx *c, const struct section *s, const struct key *k,
			   const void *base, const char *path, int line)
{
	char kpath[PATH_LEN], shown[PATH_LEN];
	struct sbuf b;

	path_join(kpath, sizeof kpath, path, k->name, strlen(k->name));
	if (s->service) {
		const char *name = ((const struct service_config *)base)->name;

		sb_init(&b, shown, sizeof shown);
		sb_quoted(&b, name, strlen(name), 64);
		add_error(c, line, "service %s: missing %s (%s; set %s)", shown, k->name, k->hint,
			  kpath);
	} else {
		add_error(c, line, "missing %s (%s)", kpath, k->hint);
	}
}

/* ---- secrets from files ----
 *
 * Every secret key (token, default_token, local_private_key,
 * pkcs12_password) may instead be given as KEY_file = "path": the file's
 * content, without its trailing newlines, is the value. A deployment can
 * then keep the config in a ConfigMap and only the secrets in a Secret
 * (Docker / Kubernetes mount them as files). A relative path is taken from
 * the working directory, as pkcs12 and trusted_root are. */

#define FILE_SUFFIX	"_file"
#define FILE_SUFFIX_LEN	(sizeof FILE_SUFFIX - 1)

/* The secret key that kv (KEY_file) stands for, or NULL. */
static const struct key *secret_file_key(const struct section *s, const struct toml_kv *kv)
{
	const struct key *k;

	if (kv->keylen <= FILE_SUFFIX_LEN ||
	    memcmp(kv->key + kv->keylen - FILE_SUFFIX_LEN, FILE_SUFFIX, FILE_SUFFIX_LEN) != 0)
		return NULL;
	k = find_key(s, kv->key, kv->keylen - FILE_SUFFIX_LEN);
	return k && (k->flags & KEY_SECRET) ? k : NULL;
}

static void note_secret_file(struct ctx *c, const char *file, int line)
{
	struct config *cfg = c->cfg;
	char **more;

	for (size_t i = 0; i < cfg->nsecret_files; i++)
		if (strcmp(cfg->secret_files[i], file) == 0)
			return;
	more = realloc(cfg->secret_files, (cfg->nsecret_files + 1) * sizeof *more);
	if (!more || !(more[cfg->nsecret_files] = strdup(file))) {
		if (more)
			cfg->secret_files = more;
		add_oom(c, line);
		return;
	}
	cfg->secret_files = more;
	cfg->nsecret_files++;
}

/* Reads the secret that kv (KEY_file = "path") names into *val, a string
 * value standing for "KEY = ..." in out. false after reporting; else the
 * caller wipes and frees val->u.str.ptr. */
static bool read_secret_file(struct ctx *c, const struct toml_kv *kv, const char *kpath,
			     struct toml_kv *out, struct toml_value *val)
{
	char err[300], *text;
	size_t len = 0;

	if (kv->val->type != TOML_STRING || memchr(kv->val->u.str.ptr, '\0', kv->val->u.str.len)) {
		add_error(c, kv->line, "%s%s: expected the path of a file holding the secret (a "
			  "string), found %s", kpath, FILE_SUFFIX, toml_type_name(kv->val->type));
		return false;
	}
	text = config_read_file(kv->val->u.str.ptr, &len, err, sizeof err);
	if (!text) {
		add_error(c, kv->line, "%s%s: %s", kpath, FILE_SUFFIX, err);
		return false;
	}
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	if (len == 0 || len > CONFIG_MAX_SECRET_SIZE || memchr(text, '\0', len)) {
		add_error(c, kv->line, "%s%s: %s %s", kpath, FILE_SUFFIX, kv->val->u.str.ptr,
			  len == 0 ? "is empty" : len > CONFIG_MAX_SECRET_SIZE ?
			  "is too long for a secret (over 4096 bytes)" : "holds a NUL byte");
		explicit_bzero(text, len);
		free(text);
		return false;
	}
	text[len] = '\0';	/* config_read_file leaves room: len shrank or stays under cap */
	note_secret_file(c, kv->val->u.str.ptr, kv->line);
	*val = (struct toml_value){ .type = TOML_STRING, .line = kv->val->line, .col = kv->val->col };
	val->u.str.ptr = text;
	val->u.str.len = len;
	*out = (struct toml_kv){ .key = kv->key, .keylen = kv->keylen - FILE_SUFFIX_LEN,
				 .line = kv->line, .col = kv->col, .val = val };
	return true;
}

static void wipe_secret_value(struct toml_value *val)
{
	explicit_bzero(val->u.str.ptr, val->u.str.len);
	free(val->u.str.ptr);
}

/* Stores "KEY_file = path" as KEY; a key decoded later (KEY_WHEN_USED) is
 * read then, by check_when_used(). */
static bool store_secret_file(struct ctx *c, const struct key *k, const struct toml_kv *kv,
			      void *base, const char *kpath)
{
	struct toml_value val;
	struct toml_kv skv;
	bool ok;

	if (k->flags & KEY_WHEN_USED)
		return false;
	if (!read_secret_file(c, kv, kpath, &skv, &val))
		return false;
	ok = store_value(c, k, &skv, base, kpath);
	wipe_secret_value(&val);
	return ok;
}

static void parse_section(struct ctx *c, const struct section *s, const struct toml_value *tbl,
			  void *base, const char *path, int line)
{
	bool seen[MAX_KEYS] = { false };
	enum side saved = c->side;

	if (s->side != SIDE_ANY)
		c->side = s->side;
	for (size_t i = 0; i < tbl->u.table.len; i++) {
		const struct toml_kv *kv = &tbl->u.table.items[i];
		const struct key *k = find_key(s, kv->key, kv->keylen);
		const struct key *fk = k ? NULL : secret_file_key(s, kv);
		char kpath[PATH_LEN];
		bool stored;

		c->key = s->service ? kv->key : NULL;
		if (!k && !fk) {
			report_unknown_key(c, s, kv, path);
			c->key = NULL;
			continue;
		}
		if (fk && c->no_secret_files) {
			path_join(kpath, sizeof kpath, path, fk->name, strlen(fk->name));
			add_error(c, kv->line, "%s%s: secrets cannot be read from files through the "
				  "API; send %s itself", kpath, FILE_SUFFIX, fk->name);
			continue;
		}
		if (fk) {
			k = fk;
			if (seen[k - s->keys]) {
				path_join(kpath, sizeof kpath, path, k->name, strlen(k->name));
				add_error(c, kv->line, "%s: give either %s or %s%s, not both", kpath,
					  k->name, k->name, FILE_SUFFIX);
				continue;
			}
		} else if (seen[k - s->keys]) {	/* its _file came first */
			path_join(kpath, sizeof kpath, path, k->name, strlen(k->name));
			add_error(c, kv->line, "%s: give either %s or %s%s, not both", kpath, k->name,
				  k->name, FILE_SUFFIX);
			continue;
		}
		seen[k - s->keys] = true;
		path_join(kpath, sizeof kpath, path, k->name, strlen(k->name));
		if (!fk && (k->flags & KEY_SECRET))
			c->cfg->inline_secrets = true;
		stored = fk ? store_secret_file(c, k, kv, base, kpath) : store_value(c, k, kv, base, kpath);
		if (stored && k->has_off)
			*(bool *)((char *)base + k->has_off - 1) = true;
		c->key = NULL;
	}
	for (size_t i = 0; i < s->nkeys; i++) {
		if (!(s->keys[i].flags & KEY_REQUIRED) || seen[i])
			continue;
		if (s->service)
			c->key = s->keys[i].name;
		report_missing(c, s, &s->keys[i], base, path, line);
		c->key = NULL;
	}
	c->side = saved;
}

static void free_string(char *s, bool secret)
{
	if (s && secret)
		explicit_bzero(s, strlen(s));
	free(s);
}

static void free_section(const struct section *s, void *base)
{
	for (size_t i = 0; i < s->nkeys; i++) {
		const struct key *k = &s->keys[i];
		void *field = (char *)base + k->off;

		switch (k->kind) {
		case K_STRING:
			free_string(*(char **)field, k->flags & KEY_SECRET);
			*(char **)field = NULL;
			break;
		case K_KEY32:
			if (k->flags & KEY_SECRET)
				explicit_bzero(field, NOISE_KEY_LEN);
			break;
		case K_TABLE:
			free_section(k->sub, field);
			break;
		case K_PTABLE:
			if (*(void **)field)
				free_section(k->sub, *(void **)field);
			free(*(void **)field);
			*(void **)field = NULL;
			break;
		case K_SERVICES: {
			struct service_config *arr = *(struct service_config **)field;
			size_t n = *(size_t *)((char *)base + k->count_off);

			for (size_t j = 0; arr && j < n; j++) {
				free_section(k->sub, &arr[j]);
				free(arr[j].name);
				free(arr[j].range_name);
			}
			free(arr);
			*(struct service_config **)field = NULL;
			break;
		}
		case K_CIDRS:
			free(*(struct cidr **)field);
			*(struct cidr **)field = NULL;
			break;
		case K_STRINGS:
			free_strings(*(char ***)field, *(size_t *)((char *)base + k->count_off));
			*(char ***)field = NULL;
			break;
		default:
			break;
		}
	}
}

/* ---- effective values and cross-key rules ---- */

/* The reference checks Noise settings only in the Noise transport: a [noise]
 * block beside type = "tcp" may hold placeholders (its own full.toml does).
 * So these values are checked, and keys decoded, once the block is in use. */
static void check_when_used(struct ctx *c, const struct section *s, const struct toml_value *tbl,
			    void *base, const char *path)
{
	for (size_t i = 0; tbl && tbl->type == TOML_TABLE && i < tbl->u.table.len; i++) {
		const struct toml_kv *kv = &tbl->u.table.items[i];
		const struct key *k = find_key(s, kv->key, kv->keylen);
		const struct key *fk = k ? NULL : secret_file_key(s, kv);
		struct toml_value val = { .type = TOML_BOOL };
		struct toml_kv skv;
		void *field;
		char kpath[PATH_LEN];

		if (fk && (fk->flags & KEY_WHEN_USED)) {
			path_join(kpath, sizeof kpath, path, fk->name, strlen(fk->name));
			if (!read_secret_file(c, kv, kpath, &skv, &val))
				continue;
			k = fk;
			kv = &skv;
		}
		if (!k || !(k->flags & KEY_WHEN_USED) || kv->val->type != TOML_STRING)
			continue;	/* unknown or mistyped: already reported */
		field = (char *)base + k->off;
		path_join(kpath, sizeof kpath, path, k->name, strlen(k->name));
		if (k->kind == K_STRING && k->check && *(char **)field)
			k->check(c, kpath, kv->line, *(char **)field);
		if (k->kind == K_KEY32 && store_key32(c, kv, field, kpath) && k->has_off)
			*(bool *)((char *)base + k->has_off - 1) = true;
		if (val.type == TOML_STRING)
			wipe_secret_value(&val);
	}
}

static const struct toml_value *child(const struct toml_value *t, const char *key)
{
	return t && t->type == TOML_TABLE ? toml_get(t, key) : NULL;
}

static int line_of(const struct toml_value *t, int fallback)
{
	return t && t->line > 0 ? t->line : fallback;
}

static int key_line(const struct toml_value *t, const char *key, int fallback)
{
	const struct toml_kv *kv = t && t->type == TOML_TABLE ? toml_get_kv(t, key) : NULL;

	return kv ? kv->line : fallback;
}

/* Keys a UDP service would silently ignore: a datagram carries no PROXY
 * header, and the server keeps no per-visitor state to count (the client's
 * udp_max_sessions bounds the visitors). Said at load, not ignored. */
static void reject_tcp_only_keys(struct ctx *c, const struct service_config *s,
				 const struct toml_value *node, const char *role)
{
	char rpath[64], spath[PATH_LEN], kpath[PATH_LEN];

	snprintf(rpath, sizeof rpath, "%s.services", role);
	path_join(spath, sizeof spath, rpath, s->name, strlen(s->name));
	if (s->max_connections) {
		c->key = "max_connections";
		path_join(kpath, sizeof kpath, spath, "max_connections", 15);
		add_error(c, key_line(node, "max_connections", s->line),
			  "%s: applies to tcp services only; a udp service's visitors are "
			  "bounded by the client's udp_max_sessions", kpath);
	}
	if (s->proxy_protocol) {
		c->key = "proxy_protocol";
		path_join(kpath, sizeof kpath, spath, "proxy_protocol", 14);
		add_error(c, key_line(node, "proxy_protocol", s->line),
			  "%s: applies to tcp services only (no PROXY header is sent with "
			  "datagrams); remove it or set it to \"none\"", kpath);
	}
	if (s->health_check_interval) {
		c->key = "health_check_interval";
		path_join(kpath, sizeof kpath, spath, "health_check_interval", 21);
		add_error(c, key_line(node, "health_check_interval", s->line),
			  "%s: applies to tcp services only (the check is a TCP connect to "
			  "local_addr, which a udp service cannot answer); remove it", kpath);
	}
	c->key = NULL;
}

/* Tokens, nodelay and retry_interval fall back on the role's values. */
static void resolve_services(struct ctx *c, struct service_config *svcs, size_t n,
			     const char *default_token, const struct transport_config *t,
			     int retry_interval, const struct toml_value *services_node,
			     const char *role)
{
	for (size_t i = 0; i < n; i++) {
		struct service_config *s = &svcs[i];
		char spath[PATH_LEN], shown[PATH_LEN], rpath[64];
		const char *why;
		struct sbuf b;

		if (!s->has_nodelay)
			s->nodelay = t->tcp.nodelay;
		if (!s->has_retry_interval)
			s->retry_interval = retry_interval;
		if (s->bandwidth_limit && limit_parse(s->bandwidth_limit, &s->bandwidth_rate, &why) < 0)
			s->bandwidth_rate = 0;	/* reported where it was read */
		if (s->type == SERVICE_UDP)
			reject_tcp_only_keys(c, s, child(services_node, s->name), role);
		if (s->token || child(child(services_node, s->name), "token"))
			continue;	/* set, or already reported as malformed */
		if (default_token) {
			s->token = strdup(default_token);
			s->token_from_default = true;
			if (!s->token)
				add_oom(c, s->line);
			continue;
		}
		snprintf(rpath, sizeof rpath, "%s.services", role);
		path_join(spath, sizeof spath, rpath, s->name, strlen(s->name));
		sb_init(&b, shown, sizeof shown);
		sb_quoted(&b, s->name, strlen(s->name), 64);
		c->key = "token";
		add_error(c, s->line, "service %s: missing token (set %s.token or %s.default_token)",
			  shown, spath, role);
		c->key = NULL;
	}
}

/* ---- port ranges ---- */

/* A service's range as written: the address that holds it (bind_addr on the
 * server, local_addr on the client), its ports, and the server's ports that
 * name the members (the client's remote_ports, or the same ports). */
struct range {
	const char *addr;
	size_t hostlen;
	unsigned lo, hi;	/* ports of addr */
	unsigned name_lo;	/* the first member's name is NAME:name_lo */
};

/* Whether s is a range (parsed into r). Malformed ranges were reported. */
static bool service_range(const struct service_config *s, bool server, struct range *r)
{
	const char *why;

	r->addr = server ? s->bind_addr : s->local_addr;
	if (!r->addr || split_range(r->addr, &r->hostlen, &r->lo, &r->hi, &why) != 0)
		return false;
	r->name_lo = r->lo;
	if (!server && s->remote_ports) {
		unsigned hi;

		if (parse_ports(s->remote_ports, &r->name_lo, &hi, &why) != 0)
			return false;
	}
	return true;
}

static unsigned range_len(const struct range *r)
{
	return r->hi - r->lo + 1;
}

static bool wildcard_host(const char *h, size_t n)
{
	return (n == 7 && memcmp(h, "0.0.0.0", 7) == 0) || (n == 4 && memcmp(h, "[::]", 4) == 0);
}

/* Two server ports on the same host (or a wildcard) and the same protocol. */
static bool ranges_overlap(const struct service_config *a, const struct range *ra,
			   const struct service_config *b, const struct range *rb)
{
	if (a->type != b->type || ra->hi < rb->lo || rb->hi < ra->lo)
		return false;
	return wildcard_host(ra->addr, ra->hostlen) || wildcard_host(rb->addr, rb->hostlen) ||
	       (ra->hostlen == rb->hostlen && memcmp(ra->addr, rb->addr, ra->hostlen) == 0);
}

/* The port of a single address, as a one-port range (false: unparsable). */
static bool single_port(const struct service_config *s, struct range *r)
{
	char host[NET_HOST_MAX];
	const char *why;
	unsigned port;

	if (!s->bind_addr || net_split_hostport(s->bind_addr, host, sizeof host, &port, &why) < 0)
		return false;
	r->addr = s->bind_addr;
	r->hostlen = (size_t)(strrchr(s->bind_addr, ':') - s->bind_addr);
	r->lo = r->hi = r->name_lo = port;
	return true;
}

/* Server: a range may not share a port with another range or a single
 * port (two single ports are left to bind(), as before ranges). */
static void check_overlaps(struct ctx *c, const struct service_config *svcs, size_t n,
			   const struct toml_value *services_node)
{
	for (size_t i = 0; i < n; i++) {
		struct range ri;
		bool ri_range = service_range(&svcs[i], true, &ri);

		if (!ri_range && !single_port(&svcs[i], &ri))
			continue;
		for (size_t j = 0; j < i; j++) {
			char shown[PATH_LEN], spath[PATH_LEN];
			struct range rj;
			bool rj_range = service_range(&svcs[j], true, &rj);
			struct sbuf b;

			if ((!ri_range && !rj_range) || (!rj_range && !single_port(&svcs[j], &rj)))
				continue;
			if (!ranges_overlap(&svcs[i], &ri, &svcs[j], &rj))
				continue;
			path_join(spath, sizeof spath, "server.services", svcs[i].name,
				  strlen(svcs[i].name));
			sb_init(&b, shown, sizeof shown);
			sb_quoted(&b, svcs[j].name, strlen(svcs[j].name), 64);
			add_error(c, key_line(child(services_node, svcs[i].name), "bind_addr",
					      svcs[i].line),
				  "%s.bind_addr: \"%s\" overlaps the ports of service %s "
				  "(bind_addr \"%s\"); ranges may not share a port", spath,
				  svcs[i].bind_addr, shown, svcs[j].bind_addr);
		}
	}
}

/* Server: a tcp range may not take the port of one of the server's own
 * listeners (the control channels, the virtual hosts, the admin API). */
static void check_range_listeners(struct ctx *c, const struct server_config *s,
				  const struct toml_value *services_node)
{
	const struct { const char *key, *addr; } own[] = {
		{ "server.bind_addr", s->bind_addr },
		{ "server.http_bind_addr", s->http_bind_addr },
		{ "server.https_bind_addr", s->https_bind_addr },
		{ "server.api.bind_addr", s->api ? s->api->bind_addr : NULL },
	};

	for (size_t i = 0; i < s->nservices; i++) {
		const struct service_config *svc = &s->services[i];
		char spath[PATH_LEN];
		struct range ri;

		if (svc->type != SERVICE_TCP || !service_range(svc, true, &ri))
			continue;
		for (size_t k = 0; k < sizeof own / sizeof own[0]; k++) {
			struct service_config l = { .type = SERVICE_TCP, .bind_addr = (char *)own[k].addr };
			struct range rl;

			if (!own[k].addr || !single_port(&l, &rl) || !ranges_overlap(svc, &ri, &l, &rl))
				continue;
			path_join(spath, sizeof spath, "server.services", svc->name, strlen(svc->name));
			add_error(c, key_line(child(services_node, svc->name), "bind_addr", svc->line),
				  "%s.bind_addr: \"%s\" takes the port of %s \"%s\"", spath,
				  svc->bind_addr, own[k].key, own[k].addr);
		}
	}
}

/* Client: remote_ports needs a range of the same length in local_addr. */
static void check_remote_ports(struct ctx *c, const struct service_config *s,
			       const struct toml_value *node)
{
	char spath[PATH_LEN];
	const char *why;
	unsigned lo, hi;
	struct range r;

	if (!s->remote_ports || parse_ports(s->remote_ports, &lo, &hi, &why) != 0)
		return;
	path_join(spath, sizeof spath, "client.services", s->name, strlen(s->name));
	if (!service_range(s, false, &r)) {
		if (s->local_addr && split_range(s->local_addr, &r.hostlen, &r.lo, &r.hi, &why) == 1)
			add_error(c, key_line(node, "remote_ports", s->line),
				  "%s.remote_ports: needs a port range in local_addr too (of %u ports)",
				  spath, hi - lo + 1);
		return;
	}
	if (hi - lo + 1 != range_len(&r))
		add_error(c, key_line(node, "remote_ports", s->line),
			  "%s.remote_ports: \"%s\" has %u ports but local_addr \"%s\" has %u; "
			  "the ranges must have the same length", spath, s->remote_ports,
			  hi - lo + 1, s->local_addr, range_len(&r));
}

/* A copy of a service owning its own strings and lists, by its key table. */
static bool dup_service(const struct section *sec, struct service_config *dst,
			const struct service_config *src)
{
	bool ok = true;

	*dst = *src;
	dst->name = dst->range_name = NULL;
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct key *k = &sec->keys[i];
		void *df = (char *)dst + k->off;
		const void *sf = (const char *)src + k->off;

		switch (k->kind) {
		case K_STRING: {
			const char *str = *(char *const *)sf;

			*(char **)df = str ? strdup(str) : NULL;
			ok = ok && (!str || *(char **)df);
			break;
		}
		case K_CIDRS: {
			size_t cnt = *(const size_t *)((const char *)src + k->count_off);
			struct cidr *arr = *(struct cidr *const *)sf;

			*(struct cidr **)df = arr ? calloc(cnt ? cnt : 1, sizeof *arr) : NULL;
			if (arr && *(struct cidr **)df)
				memcpy(*(struct cidr **)df, arr, cnt * sizeof *arr);
			ok = ok && (!arr || *(struct cidr **)df);
			break;
		}
		case K_STRINGS: {
			size_t cnt = *(const size_t *)((const char *)src + k->count_off);
			char *const *arr = *(char **const *)sf;
			char **copy = arr ? calloc(cnt ? cnt : 1, sizeof *copy) : NULL;

			*(char ***)df = copy;
			for (size_t j = 0; copy && j < cnt; j++)
				ok = (copy[j] = strdup(arr[j])) && ok;
			ok = ok && (!arr || copy);
			break;
		}
		case K_INT:
		case K_BOOL:
		case K_ENUM:
		case K_KEY32:
			break;		/* copied with the struct */
		case K_TABLE:
		case K_PTABLE:
		case K_SERVICES:
			ok = false;	/* no service has one */
			break;
		}
	}
	return ok;
}

/* Member k of a range: "NAME:PORT" at "host:PORT". */
static bool make_member(const struct section *sec, struct service_config *m,
			const struct service_config *s, const struct range *r, unsigned k,
			bool server)
{
	char **addr = server ? &m->bind_addr : &m->local_addr;
	size_t nlen = strlen(s->name) + 8, alen = r->hostlen + 8;
	bool ok = dup_service(sec, m, s);

	m->name = malloc(nlen);
	m->range_name = strdup(s->name);
	free(*addr);
	*addr = malloc(alen);
	if (!ok || !m->name || !m->range_name || !*addr)
		return false;
	snprintf(m->name, nlen, "%s:%u", s->name, r->name_lo + k);
	snprintf(*addr, alen, "%.*s:%u", (int)r->hostlen, r->addr, r->lo + k);
	m->range_size = (int)range_len(r);
	m->range_index = (int)k;
	return true;
}

/* A service named like a member ("web:30001" beside the range "web"). */
static void check_member_names(struct ctx *c, const struct service_config *svcs, size_t n,
			       const char *role)
{
	for (size_t i = 0; i < n; i++) {
		char shown[PATH_LEN];
		struct sbuf b;

		if (svcs[i].range_name || !strchr(svcs[i].name, ':'))
			continue;
		for (size_t j = 0; j < n; j++) {
			if (!svcs[j].range_name || strcmp(svcs[i].name, svcs[j].name) != 0)
				continue;
			sb_init(&b, shown, sizeof shown);
			sb_quoted(&b, svcs[i].name, strlen(svcs[i].name), 64);
			add_error(c, svcs[i].line, "%s.services: service %s has the name of a member "
				  "of the port range of service \"%s\"; rename one", role, shown,
				  svcs[j].range_name);
			break;
		}
	}
}

/* Replaces each range by its members, so that everything past the config
 * (the roles, reloads, the API) sees ordinary services. Only called on a
 * config without errors so far. */
static void expand_ranges(struct ctx *c, const struct section *sec, struct service_config **arr,
			  size_t *n, bool server, const char *role)
{
	struct service_config *svcs = *arr, *out;
	size_t total = 0, j = 0;
	struct range r;

	for (size_t i = 0; i < *n; i++)
		total += service_range(&svcs[i], server, &r) ? range_len(&r) : 1;
	if (total == *n)
		return;
	out = calloc(total, sizeof *out);
	if (!out) {
		add_oom(c, 0);
		return;
	}
	for (size_t i = 0; i < *n; i++) {
		if (!service_range(&svcs[i], server, &r)) {
			out[j++] = svcs[i];
			continue;
		}
		for (unsigned k = 0; k < range_len(&r); k++)
			if (!make_member(sec, &out[j++], &svcs[i], &r, k, server))
				add_oom(c, svcs[i].line);
		free_section(sec, &svcs[i]);
		free(svcs[i].name);
		free(svcs[i].range_name);
	}
	free(svcs);
	*arr = out;
	*n = total;
	check_member_names(c, out, total, role);
}

/* Both roles in one file: a service that is a range on one side is a range
 * of the same length on the other. */
static void check_range_pairs(struct ctx *c, const struct config *cfg)
{
	const struct client_config *cl = cfg->client;

	for (size_t i = 0; i < cl->nservices; i++) {
		const struct service_config *cs = &cl->services[i], *ss;
		const char *name = cs->range_name ? cs->range_name : cs->name;
		size_t slen = 0;

		for (size_t j = 0; j < cfg->server->nservices; j++) {
			ss = &cfg->server->services[j];
			if (strcmp(ss->range_name ? ss->range_name : ss->name, name) == 0)
				slen = ss->range_name ? (size_t)ss->range_size : 1;
		}
		if (slen && slen != (cs->range_name ? (size_t)cs->range_size : 1)) {
			add_error(c, cs->line, "service \"%s\": the server's bind_addr has %zu "
				  "port(s) but the client's local_addr has %d; a range needs the "
				  "same length on both sides", name, slen,
				  cs->range_name ? cs->range_size : 1);
		} else if (slen > 1 && cs->range_name && !config_find_service(cfg->server->services,
					cfg->server->nservices, cs->name)) {
			/* same length, other ports: the members' names differ */
			add_error(c, cs->line, "service \"%s\": the client's members are named "
				  "after ports the server's range does not have (\"%s\"); set "
				  "client.services.%s.remote_ports to the ports of the server's "
				  "bind_addr", name, cs->name, name);
		}
		if (cs->range_name)
			i += (size_t)cs->range_size - 1;
	}
}

static void require_server_identity(struct ctx *c, const struct transport_config *t,
				    const struct toml_value *tnode, const char *tpath, int line)
{
	const struct toml_value *tls = child(tnode, "tls");
	int tl = line_of(tls, line);

	if (!t->tls.pkcs12 && !child(tls, "pkcs12"))
		add_error(c, tl, "missing %s.tls.pkcs12 (the server's PKCS#12 archive with its "
			  "certificate chain and private key)", tpath);
	if (!t->tls.pkcs12_password && !child(tls, "pkcs12_password"))
		add_error(c, tl, "missing %s.tls.pkcs12_password (the password of the PKCS#12 "
			  "archive)", tpath);
}

/* The Noise block in use: its pattern, its keys, and the static keys the
 * pattern needs on this side. A server without local_private_key generates
 * one at start and logs its public key (as the reference does), so only keys
 * that cannot be generated are required. */
static void check_noise(struct ctx *c, struct transport_config *t,
			const struct toml_value *tnode, const char *tpath, bool server, int line)
{
	const struct toml_value *nn = child(tnode, "noise");
	struct noise_requirements req;
	char why[256], npath[48];
	int nl = line_of(nn, line);
	bool need_remote, need_local;

	snprintf(npath, sizeof npath, "%s.noise", tpath);
	check_when_used(c, &noise_section, nn, &t->noise, npath);
	if (!t->noise.pattern || noise_check_protocol(t->noise.pattern, &req, why, sizeof why) < 0)
		return;		/* reported where the pattern was read */
	need_remote = server ? req.responder_knows_remote : req.initiator_knows_remote;
	need_local = !server && req.responder_knows_remote;
	if (need_remote && !t->noise.has_remote_public_key && !child(nn, "remote_public_key"))
		add_error(c, nl, "missing %s.noise.remote_public_key (pattern %s needs the %s's "
			  "public key on the %s)", tpath, t->noise.pattern,
			  server ? "client" : "server", server ? "server" : "client");
	if (need_local && !t->noise.has_local_private_key && !child(nn, "local_private_key"))
		add_error(c, nl, "missing %s.noise.local_private_key (pattern %s: the server knows "
			  "the client's public key in advance; make a pair with rathole --genkey)",
			  tpath, t->noise.pattern);
}

static void resolve_transport(struct ctx *c, struct transport_config *t,
			      const struct toml_value *role_node, const char *role, bool server)
{
	const struct toml_value *tnode = child(role_node, "transport");
	int tl = line_of(tnode, line_of(role_node, 1));
	int type_line = key_line(tnode, "type", tl);
	char tpath[32];

	snprintf(tpath, sizeof tpath, "%s.transport", role);
	switch (t->type) {
	case TRANSPORT_TCP:
		break;
	case TRANSPORT_TLS:
		if (!t->has_tls)
			add_error(c, type_line, "%s.type = \"tls\" needs a [%s.tls] table%s", tpath,
				  tpath, server ? " with pkcs12 and pkcs12_password" :
				  " (trusted_root and hostname are optional)");
		else if (server)
			require_server_identity(c, t, tnode, tpath, tl);
		break;
	case TRANSPORT_NOISE:
		if (!t->has_noise)
			add_error(c, type_line, "%s.type = \"noise\" needs a [%s.noise] table%s", tpath,
				  tpath, server ? " (with local_private_key)" :
				  " (with the server's remote_public_key)");
		else
			check_noise(c, t, tnode, tpath, server, tl);
		break;
	case TRANSPORT_WEBSOCKET:
		if (!t->has_websocket) {
			add_error(c, type_line, "%s.type = \"websocket\" needs a [%s.websocket] table "
				  "(with tls = true or false)", tpath, tpath);
		} else if (t->websocket.tls && !t->has_tls) {
			add_error(c, key_line(child(tnode, "websocket"), "tls", tl),
				  "%s.websocket.tls = true needs a [%s.tls] table%s", tpath, tpath,
				  server ? " with pkcs12 and pkcs12_password" :
				  " (trusted_root and hostname are optional)");
		} else if (t->websocket.tls && server) {
			require_server_identity(c, t, tnode, tpath, tl);
		}
		break;
	}
}

static void service_path(char *out, size_t cap, const struct service_config *s)
{
	path_join(out, cap, "server.services", s->name, strlen(s->name));
}

static bool vhost_overlap(int a, int b)
{
	return a == VHOST_ON_BOTH || b == VHOST_ON_BOTH || a == b;
}

/* A name routes to one service per listener: the second claim is an error
 * naming both services. */
static void check_hostname_claims(struct ctx *c, const struct server_config *s,
				  const struct toml_value *services_node)
{
	for (size_t i = 0; i < s->nservices; i++) {
		const struct service_config *a = &s->services[i];
		const struct toml_value *an = child(child(services_node, a->name), "hostnames");

		for (size_t x = 0; x < a->nhostnames; x++) {
			for (size_t j = 0; j <= i; j++) {
				const struct service_config *b = &s->services[j];
				size_t ylim = j == i ? x : b->nhostnames;
				char apath[PATH_LEN], shown[PATH_LEN];
				struct sbuf sb;
				size_t y;

				if (!vhost_overlap(a->vhost, b->vhost))
					continue;
				for (y = 0; y < ylim; y++)
					if (strcmp(a->hostnames[x], b->hostnames[y]) == 0)
						break;
				if (y == ylim)
					continue;
				service_path(apath, sizeof apath, a);
				sb_init(&sb, shown, sizeof shown);
				sb_quoted(&sb, b->name, strlen(b->name), 64);
				add_error(c, an && an->type == TOML_ARRAY && x < an->u.array.len ?
					  line_of(an->u.array.items[x], a->line) : a->line,
					  "%s.hostnames[%zu]: \"%s\" is already claimed by service %s "
					  "(line %d); a name routes to one service on each listener",
					  apath, x, a->hostnames[x], shown, b->line);
				break;		/* once per name */
			}
		}
	}
}

/* bind_addr, or hostnames on a shared listener: a service needs a way in. */
static void resolve_vhosts(struct ctx *c, struct server_config *s, const struct toml_value *node)
{
	const struct toml_value *services_node = child(node, "services");

	for (size_t i = 0; i < s->nservices; i++) {
		struct service_config *sc = &s->services[i];
		const struct toml_value *sn = child(services_node, sc->name);
		char spath[PATH_LEN], shown[PATH_LEN];
		const struct toml_value *names = child(sn, "hostnames");
		bool http = s->http_bind_addr && sc->vhost != VHOST_ON_HTTPS;
		bool https = s->https_bind_addr && sc->vhost != VHOST_ON_HTTP;
		struct range r;
		struct sbuf b;

		service_path(spath, sizeof spath, sc);
		sb_init(&b, shown, sizeof shown);
		sb_quoted(&b, sc->name, strlen(sc->name), 64);
		c->key = "bind_addr";
		/* hostnames = [] is no way in either (a bad value was reported) */
		if (!sc->bind_addr && !sc->nhostnames && !child(sn, "bind_addr") &&
		    (!names || (names->type == TOML_ARRAY && names->u.array.len == 0)))
			add_error(c, sc->line, "service %s: missing bind_addr (where visitors connect, "
				  "e.g. \"0.0.0.0:5202\"; set %s.bind_addr, or hostnames with "
				  "server.http_bind_addr or https_bind_addr)", shown, spath);
		c->key = "vhost";
		if (child(sn, "vhost") && !names)
			add_error(c, key_line(sn, "vhost", sc->line), "%s.vhost: applies to a "
				  "service with hostnames; add hostnames or remove it", spath);
		c->key = "hostnames";
		if (!sc->nhostnames)
			continue;
		/* as the listeners compare them: lower case, no trailing dot (never
		 * longer than written; each passed check_vhost_name()) */
		for (size_t j = 0; j < sc->nhostnames; j++) {
			char norm[VHOST_NAME_MAX + 1];
			const char *why;

			if (vhost_pattern_check(sc->hostnames[j], norm, &why) == 0)
				memcpy(sc->hostnames[j], norm, strlen(norm) + 1);
		}
		if (service_range(sc, true, &r))
			add_error(c, key_line(sn, "hostnames", sc->line), "%s.hostnames: a port range "
				  "(bind_addr \"%s\") cannot have hostnames: give them to a service "
				  "of their own", spath, sc->bind_addr);
		else if (sc->type == SERVICE_UDP)
			add_error(c, key_line(sn, "hostnames", sc->line), "%s.hostnames: applies to tcp "
				  "services only (HTTP and TLS are routed by name); remove it or give "
				  "the service a bind_addr", spath);
		else if (!http && !https)
			add_error(c, key_line(sn, "hostnames", sc->line), "%s.hostnames: no shared "
				  "listener routes them: set server.%s", spath,
				  sc->vhost == VHOST_ON_HTTP ? "http_bind_addr" :
				  sc->vhost == VHOST_ON_HTTPS ? "https_bind_addr" :
				  "http_bind_addr or server.https_bind_addr (e.g. \"0.0.0.0:80\", "
				  "\"0.0.0.0:443\")");
	}
	check_hostname_claims(c, s, services_node);
	c->key = NULL;
}

static bool loopback(const struct net_addr *a)
{
	const uint8_t *b6 = a->u.in6.sin6_addr.s6_addr;
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (a->u.sa.sa_family == AF_INET)
		return (ntohl(a->u.in4.sin_addr.s_addr) >> 24) == 127;
	if (a->u.sa.sa_family != AF_INET6)
		return false;
	return IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr) ||
	       (memcmp(b6, mapped, sizeof mapped) == 0 && b6[12] == 127);
}

/* The API can change services: where others can reach it, only with a
 * token. */
static void check_api(struct ctx *c, const struct api_config *api, const struct toml_value *node,
		      const char *role)
{
	const struct toml_value *an = child(node, "api");
	struct net_addr a;

	if (!api || api->token || !api->bind_addr || net_parse_numeric(api->bind_addr, &a) < 0 ||
	    loopback(&a))
		return;
	add_error(c, key_line(an, "bind_addr", line_of(an, 1)),
		  "%s.api.token: required when %s.api.bind_addr (\"%s\") is not a loopback "
		  "address: whoever reaches it could change the services; set a token, or bind "
		  "the api to 127.0.0.1 and reach it through an SSH tunnel", role, role,
		  api->bind_addr);
}

static void resolve_server(struct ctx *c, struct server_config *s, const struct toml_value *node)
{
	check_api(c, s->api, node, "server");
	resolve_vhosts(c, s, node);
	resolve_services(c, s->services, s->nservices, s->default_token, &s->transport, 0,
			 child(node, "services"), "server");
	resolve_transport(c, &s->transport, node, "server", true);
	check_overlaps(c, s->services, s->nservices, child(node, "services"));
	check_range_listeners(c, s, child(node, "services"));
	if (c->errs->count == 0)
		expand_ranges(c, &server_service_section, &s->services, &s->nservices, true,
			      "server");
}

static void resolve_client(struct ctx *c, struct client_config *cl, const struct toml_value *node)
{
	check_api(c, cl->api, node, "client");
	resolve_services(c, cl->services, cl->nservices, cl->default_token, &cl->transport,
			 cl->retry_interval, child(node, "services"), "client");
	resolve_transport(c, &cl->transport, node, "client", false);
	for (size_t i = 0; i < cl->nservices; i++)
		check_remote_ports(c, &cl->services[i],
				   child(child(node, "services"), cl->services[i].name));
	if (c->errs->count == 0)
		expand_ranges(c, &client_service_section, &cl->services, &cl->nservices, false,
			      "client");
}

/* With both roles in one file, the client must not time out between two
 * heartbeats of the server. */
static void check_heartbeats(struct ctx *c, const struct config *cfg, const struct toml_value *root)
{
	const struct toml_value *cn = child(root, "client");
	int interval = cfg->server->heartbeat_interval, timeout = cfg->client->heartbeat_timeout;

	if (interval == 0 || timeout == 0 || timeout > interval)
		return;
	add_error(c, key_line(cn, "heartbeat_timeout", line_of(cn, 1)),
		  "client.heartbeat_timeout (%d) must be greater than server.heartbeat_interval "
		  "(%d), or the client reconnects between heartbeats; raise it, or set either to "
		  "0 to disable heartbeats", timeout, interval);
}

/* ---- entry points ---- */

/* Nested tables are checked before their parent's required keys: put the
 * messages back in file order (stable, so one line's messages keep theirs). */
static void sort_errors(struct ctx *c)
{
	struct config_errors *e = c->errs;
	char tmp[sizeof e->msg[0]], ktmp[sizeof e->key[0]];

	for (int i = 1; i < e->count; i++) {
		int line = c->lines[i], j = i;

		if (c->lines[i - 1] <= line)
			continue;
		memcpy(tmp, e->msg[i], sizeof tmp);
		memcpy(ktmp, e->key[i], sizeof ktmp);
		for (; j > 0 && c->lines[j - 1] > line; j--) {
			memcpy(e->msg[j], e->msg[j - 1], sizeof tmp);
			memcpy(e->key[j], e->key[j - 1], sizeof ktmp);
			c->lines[j] = c->lines[j - 1];
		}
		memcpy(e->msg[j], tmp, sizeof tmp);
		memcpy(e->key[j], ktmp, sizeof ktmp);
		c->lines[j] = line;
	}
}

struct config *config_parse(const char *path, const char *text, size_t len,
			    struct config_errors *errs)
{
	struct ctx c = { .file = path, .errs = errs, .side = SIDE_ANY };
	struct toml_error terr;
	struct toml_value *root;
	struct config *cfg;

	/* only the counts: the 8 KiB of messages are written as errors occur */
	errs->count = errs->omitted = 0;
	memset(&terr, 0, sizeof terr);
	root = toml_parse(text, len, &terr);
	if (!root) {
		if (terr.line > 0)
			snprintf(errs->msg[0], sizeof errs->msg[0], "%s:%d:%d: %s", path, terr.line,
				 terr.col, terr.msg);
		else
			snprintf(errs->msg[0], sizeof errs->msg[0], "%s: %s", path, terr.msg);
		errs->count = 1;
		return NULL;
	}
	cfg = calloc(1, sizeof *cfg);
	if (!cfg || !(cfg->path = strdup(path))) {
		add_oom(&c, 0);
		goto fail;
	}
	c.cfg = cfg;
	parse_section(&c, &root_section, root, cfg, "", 1);
	if (!cfg->server && !cfg->client)
		add_error(&c, 1, "neither [server] nor [client] is defined: add a [server] table "
			  "(on the public host) or a [client] table (behind NAT)");
	if (cfg->server)
		resolve_server(&c, cfg->server, child(root, "server"));
	if (cfg->client)
		resolve_client(&c, cfg->client, child(root, "client"));
	if (cfg->server && cfg->client)
		check_heartbeats(&c, cfg, root);
	if (cfg->server && cfg->client && errs->count == 0)
		check_range_pairs(&c, cfg);
	if (errs->count == 0)
		goto done;
	sort_errors(&c);
fail:
	config_free(cfg);
	cfg = NULL;
done:
	toml_free(root);
	return cfg;
}

char *config_read_file(const char *path, size_t *len, char *err_msg, size_t errlen)
{
	size_t have = 0, cap;
	char *buf = NULL;
	struct stat st;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		err = EISDIR;
		goto fail;
	}
	/* the size is a hint (it may change, or be 0 for a pipe): read until EOF */
	cap = st.st_size > 0 && st.st_size < CONFIG_MAX_FILE_SIZE ? (size_t)st.st_size + 1 : 4096;
	for (;;) {
		ssize_t n;

		if (have == cap) {
			char *bigger;

			if (cap > CONFIG_MAX_FILE_SIZE) {
				err = EFBIG;
				goto fail;
			}
			cap = cap * 2 > CONFIG_MAX_FILE_SIZE + 1 ? CONFIG_MAX_FILE_SIZE + 1 : cap * 2;
			bigger = realloc(buf, cap);
			if (!bigger) {
				err = ENOMEM;
				goto fail;
			}
			buf = bigger;
		} else if (!buf && !(buf = malloc(cap))) {
			err = ENOMEM;
			goto fail;
		}
		n = read(fd, buf + have, cap - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			goto fail;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	*len = have;
	return buf;
fail:
	if (err == EFBIG)
		snprintf(err_msg, errlen, "%s: cannot read: the file is larger than %d bytes; "
			 "is it really a config file?", path, CONFIG_MAX_FILE_SIZE);
	else
		snprintf(err_msg, errlen, "%s: cannot read: %s", path, strerror(err));
	if (buf) {
		explicit_bzero(buf, have);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
	struct config *cfg;
	size_t len = 0;
	char *text;

	errs->count = errs->omitted = 0;
	text = config_read_file(path, &len, errs->msg[0], sizeof errs->msg[0]);
	if (!text) {
		errs->count = 1;
		return NULL;
	}
	cfg = config_parse(path, text, len, errs);
	explicit_bzero(text, len);	/* it holds the tokens */
	free(text);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free_section(&root_section, cfg);
	for (size_t i = 0; i < cfg->nsecret_files; i++)
		free(cfg->secret_files[i]);
	free(cfg->secret_files);
	free(cfg->path);
	free(cfg);
}

/* ---- services from elsewhere (the admin API, its services_file) ---- */

/* The ranges are expanded by then: a port of one is a member's, which
 * check_overlaps() takes for a single port. The file's rule holds still. */
static void check_member_overlaps(struct ctx *c, const struct service_config *svcs, size_t n,
				  const struct service_config *s, const char *spath)
{
	struct range rs, rm;

	if (!single_port(s, &rs))
		return;
	for (size_t i = 0; i < n; i++) {
		char shown[PATH_LEN];
		struct sbuf b;

		if (!svcs[i].range_name || !single_port(&svcs[i], &rm) ||
		    !ranges_overlap(s, &rs, &svcs[i], &rm))
			continue;
		sb_init(&b, shown, sizeof shown);
		sb_quoted(&b, svcs[i].range_name, strlen(svcs[i].range_name), 64);
		c->key = "bind_addr";
		add_error(c, s->line, "%s.bind_addr: \"%s\" overlaps the ports of service %s "
			  "(its member %s, bind_addr \"%s\"); ranges may not share a port", spath,
			  s->bind_addr, shown, svcs[i].name, svcs[i].bind_addr);
		return;
	}
}

int config_add_service(struct config *cfg, bool server, const char *name,
		       const struct toml_value *tbl, const char *origin,
		       struct config_errors *errs)
{
	struct ctx c = { .file = origin ? origin : "api", .errs = errs, .cfg = cfg,
			 .side = server ? SIDE_SERVER : SIDE_CLIENT, .no_position = !origin,
			 .no_secret_files = !origin };
	const struct section *sec = server ? &server_service_section : &client_service_section;
	struct service_config **arr, *svc, *bigger;
	size_t *count;
	const char *role = server ? "server" : "client", *dtok;
	const struct transport_config *t;
	char rpath[32], spath[PATH_LEN], shown[PATH_LEN];
	int retry = 0;
	struct sbuf b;

	errs->count = errs->omitted = 0;
	if (server ? !cfg->server : !cfg->client) {
		add_error(&c, 0, "the configuration has no [%s] block", role);
		return -1;
	}
	if (server) {
		arr = &cfg->server->services;
		count = &cfg->server->nservices;
		dtok = cfg->server->default_token;
		t = &cfg->server->transport;
	} else {
		arr = &cfg->client->services;
		count = &cfg->client->nservices;
		dtok = cfg->client->default_token;
		t = &cfg->client->transport;
		retry = cfg->client->retry_interval;
	}
	snprintf(rpath, sizeof rpath, "%s.services", role);
	path_join(spath, sizeof spath, rpath, name, strlen(name));
	sb_init(&b, shown, sizeof shown);
	sb_quoted(&b, name, strlen(name), 64);
	if (config_find_service(*arr, *count, name)) {
		add_error(&c, tbl ? tbl->line : 0, "service %s is already defined in %s", shown,
			  cfg->path);
		return -1;
	}
	if (!tbl || tbl->type != TOML_TABLE) {
		add_error(&c, tbl ? tbl->line : 0, "%s: expected a table (a service), found %s",
			  spath, tbl ? toml_type_name(tbl->type) : "nothing");
		return -1;
	}
	bigger = realloc(*arr, (*count + 1) * sizeof **arr);
	if (!bigger) {
		add_oom(&c, tbl->line);
		return -1;
	}
	*arr = bigger;
	svc = &bigger[*count];
	memset(svc, 0, sizeof *svc);
	svc->name = strdup(name);
	if (!svc->name) {
		add_oom(&c, tbl->line);
		return -1;
	}
	svc->line = tbl->line;
	svc->from_api = true;
	apply_defaults(&c, sec, svc);
	parse_section(&c, sec, tbl, svc, spath, svc->line);
	if (errs->count == 0) {
		struct range r;

		if (service_range(svc, server, &r)) {
			c.key = server ? "bind_addr" : "local_addr";
			add_error(&c, svc->line, "%s.%s: \"%s\" is a port range, which the api "
				  "does not create (it makes services of one port): write the range "
				  "in the config file, or create one service per port", spath, c.key,
				  server ? svc->bind_addr : svc->local_addr);
		} else if (!server && svc->remote_ports) {
			c.key = "remote_ports";
			check_remote_ports(&c, svc, tbl);	/* as the file: needs a range */
		}
	}
	(*count)++;
	if (errs->count == 0) {
		/* the cross-service checks look keys up under the role's node:
		 * one that holds this service alone (the others passed them) */
		struct toml_kv kv = { .key = (char *)name, .keylen = strlen(name),
				      .val = (struct toml_value *)tbl };
		struct toml_value services = { .type = TOML_TABLE }, rnode = { .type = TOML_TABLE };
		struct toml_kv rkv = { .key = "services", .keylen = 8, .val = &services };

		services.u.table.items = &kv;
		services.u.table.len = services.u.table.cap = 1;
		rnode.u.table.items = &rkv;
		rnode.u.table.len = rnode.u.table.cap = 1;
		if (server)
			resolve_vhosts(&c, cfg->server, &rnode);
		resolve_services(&c, svc, 1, dtok, t, retry, &services, role);
		if (server)
			check_overlaps(&c, *arr, *count, &services);
		if (server && errs->count == 0)
			check_member_overlaps(&c, *arr, *count - 1, svc, spath);
	}
	if (errs->count) {
		(*count)--;
		sort_errors(&c);
		free_section(sec, svc);
		free(svc->name);
		return -1;
	}
	return 0;
}

static void json_secret(struct buf *b)
{
	buf_printf(b, "\"(redacted)\"");
}

void config_service_json(struct buf *b, const struct service_config *s, bool server)
{
	const struct section *sec = server ? &server_service_section : &client_service_section;
	bool first = true;

	buf_printf(b, "{");
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct key *k = &sec->keys[i];
		const void *field = (const char *)s + k->off;

		if (k->kind == K_STRING && !*(char *const *)field)
			continue;
		if ((k->kind == K_CIDRS || k->kind == K_STRINGS) &&
		    !*(const size_t *)((const char *)s + k->count_off))
			continue;
		if (strcmp(k->name, "vhost") == 0 && !s->nhostnames)
			continue;	/* meaningless (and refused) without hostnames */
		if (k->kind == K_ENUM && k->has_off &&
		    !*(const bool *)((const char *)s + k->has_off - 1))
			continue;	/* unset is a choice of its own (balance) */
		buf_printf(b, "%s\"%s\": ", first ? "" : ", ", k->name);
		first = false;
		switch (k->kind) {
		case K_STRING:
			if (k->flags & KEY_SECRET)
				json_secret(b);
			else
				buf_json_string(b, *(char *const *)field);
			break;
		case K_INT:
			buf_printf(b, "%d", *(const int *)field);
			break;
		case K_BOOL:
			buf_printf(b, "%s", *(const bool *)field ? "true" : "false");
			break;
		case K_ENUM:
			buf_json_string(b, k->choices[*(const int *)field]);
			break;
		case K_CIDRS: {
			const struct cidr *cs = *(struct cidr *const *)field;
			size_t n = *(const size_t *)((const char *)s + k->count_off);

			buf_printf(b, "[");
			for (size_t j = 0; j < n; j++) {
				char addr[INET6_ADDRSTRLEN];

				inet_ntop(cs[j].family, cs[j].addr, addr, sizeof addr);
				buf_printf(b, "%s\"%s/%d\"", j ? ", " : "", addr, cs[j].prefix);
			}
			buf_printf(b, "]");
			break;
		}
		case K_STRINGS: {
			char *const *strs = *(char **const *)field;
			size_t n = *(const size_t *)((const char *)s + k->count_off);

			buf_printf(b, "[");
			for (size_t j = 0; j < n; j++) {
				buf_printf(b, "%s", j ? ", " : "");
				buf_json_string(b, strs[j]);
			}
			buf_printf(b, "]");
			break;
		}
		default:
			buf_printf(b, "null");	/* no other kind in a service table */
			break;
		}
	}
	buf_printf(b, "}");
}
