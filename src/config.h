/* The typed configuration: TOML tree -> validated structs with defaults.
 *
 * Keys and defaults are the reference's (see docs/configuration.md). Every
 * error names the file, the line and the key path; unknown keys are errors
 * with a "did you mean" suggestion. Tokens are kept only here and in the
 * roles; they are never logged. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cidr;

enum transport_type { TRANSPORT_TCP, TRANSPORT_TLS, TRANSPORT_NOISE, TRANSPORT_WEBSOCKET };
enum service_type { SERVICE_TCP, SERVICE_UDP };
enum balance_policy { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONNECTIONS };
/* Who protects the records after a TLS 1.3 handshake (docs/transports.md). */
enum tls_record_layer { TLS_RECORDS_RATHOLE, TLS_RECORDS_OPENSSL };

struct tcp_config {
	char *proxy;			/* client only; NULL when unset */
	bool nodelay;			/* default true */
	int keepalive_secs;		/* default 20 */
	int keepalive_interval;		/* default 8 */
};

struct tls_config {
	char *hostname;			/* client; NULL: host part of remote_addr */
	char *trusted_root;		/* client; NULL: system store */
	char *pkcs12;			/* server */
	char *pkcs12_password;		/* server */
	int record_layer;		/* enum tls_record_layer; default TLS_RECORDS_RATHOLE */
};

struct noise_config {
	char *pattern;			/* default "Noise_NK_25519_ChaChaPoly_BLAKE2s" */
	bool has_local_private_key;
	uint8_t local_private_key[32];
	bool has_remote_public_key;
	uint8_t remote_public_key[32];
};

struct websocket_config {
	bool tls;
};

struct transport_config {
	enum transport_type type;
	struct tcp_config tcp;		/* always present (defaults) */
	bool has_tls, has_noise, has_websocket;
	struct tls_config tls;
	struct noise_config noise;
	struct websocket_config websocket;
};

struct service_config {
	char *name;
	enum service_type type;		/* default tcp */
	char *token;			/* effective: the service's or default_token */
	char *bind_addr;		/* server: where visitors connect */
	char *local_addr;		/* client: the service to expose */
	bool nodelay;			/* effective: the service's or transport.tcp.nodelay */
	int retry_interval;		/* client, effective: the service's or the client's */
	int line;			/* line of the service's table, for messages */
	bool token_from_default;	/* token copied from default_token (for --check) */
	bool has_nodelay;		/* nodelay was set on the service itself */
	bool has_retry_interval;	/* retry_interval was set on the service itself */
	/* ours, client, UDP: visitor sockets forgotten after this many idle
	 * seconds (default 60, as the reference) and at most this many at once
	 * (default 1024; the least recently used is evicted) */
	int udp_idle_timeout;
	int udp_max_sessions;
	/* ours, server: the PROXY protocol header written first on each
	 * forwarded TCP stream (0: none, 1: v1 text, 2: v2 binary) */
	int proxy_protocol;
	/* ours, server: visitors refused unless in allow (when given) and not
	 * in deny; at most max_connections at once (0: no limit) */
	struct cidr *allow, *deny;
	size_t nallow, ndeny;
	int max_connections;
	/* ours, client, TCP: seconds between connects to local_addr (0: no
	 * health check); 3 failures in a row withdraw the service */
	int health_check_interval;
	/* ours: a port range ("0.0.0.0:30000-30009") is expanded at load into
	 * one ordinary service per port, named "NAME:PORT" after the server's
	 * port. Each member keeps the range's name, size and its index in it
	 * (range_name NULL: not a member). The client's remote_ports names the
	 * server's ports when they differ from local_addr's (NULL: the same). */
	char *remote_ports;
	/* ours: bandwidth_limit as written ("10MB", "80Mbit"; NULL: none) and
	 * its rate in bytes per second per direction (0: no limit) */
	char *bandwidth_limit;
	uint64_t bandwidth_rate;
	char *range_name;
	int range_size, range_index;
	/* ours, server, TCP: virtual host names (normalized: lower case, no
	 * trailing dot; "*.example.com" for a wildcard) routed to the service
	 * by the shared listeners, on those vhost says (enum vhost_on) */
	char **hostnames;
	size_t nhostnames;
	int vhost;
	/* ours, server: every authenticated client of the service is a
	 * replica and visitors are shared among them by this policy; unset,
	 * a new client replaces the old one (the reference's behaviour) */
	bool has_balance;
	enum balance_policy balance;
	bool from_api;			/* created through the admin API, not the file */
};

/* Which shared listeners route a service's hostnames. */
enum vhost_on { VHOST_ON_BOTH, VHOST_ON_HTTP, VHOST_ON_HTTPS };

/* ours: the admin API ([server.api] / [client.api]) */
struct api_config {
	char *bind_addr;		/* default 127.0.0.1:2334 (server), :2335 (client) */
	char *token;			/* bearer token; NULL: no authentication */
	/* host names besides IP literals and localhost that a request's Host
	 * header may carry (DNS rebinding: any other name is refused) */
	char **hosts;
	size_t nhosts;
	/* where services created through the API are kept (TOML, rewritten
	 * atomically); NULL: they last until the process ends */
	char *services_file;
};

struct server_config {
	char *bind_addr;
	/* ours: the shared listeners of virtual hosts (NULL: off) */
	char *http_bind_addr;		/* routed by the Host of the first request */
	char *https_bind_addr;		/* routed by the SNI of the TLS ClientHello */
	char *default_token;
	int heartbeat_interval;		/* default 30; 0 disables */
	struct transport_config transport;
	struct service_config *services;
	size_t nservices;
	struct api_config *api;		/* NULL when there is no [server.api] */
};

struct client_config {
	/* the servers, "host:port" each: `remote_addr` as a string (one, the
	 * reference's) or an array (ours: the client serves through each) */
	char **remote_addrs;
	size_t nremote_addrs;
	char *default_token;
	int heartbeat_timeout;		/* default 40; 0 disables */
	int retry_interval;		/* default 1 */
	struct transport_config transport;
	struct service_config *services;
	size_t nservices;
	struct api_config *api;		/* NULL when there is no [client.api] */
};

/* A secret read from a file (KEY_file = "path") is at most this long. */
#define CONFIG_MAX_SECRET_SIZE	4096

struct config {
	char *path;			/* as given on the command line */
	struct server_config *server;	/* NULL when the file has no [server] */
	struct client_config *client;	/* NULL when the file has no [client] */
	/* ours: the files secrets were read from (token_file = ...), which a
	 * reload watches like the config file itself */
	char **secret_files;
	size_t nsecret_files;
	bool inline_secrets;		/* a secret is written in the file itself */
};

/* Up to CONFIG_MAX_ERRORS messages, each "path:line: message". */
#define CONFIG_MAX_ERRORS 16
struct config_errors {
	int count;
	int omitted;			/* errors beyond CONFIG_MAX_ERRORS, not stored */
	char msg[CONFIG_MAX_ERRORS][512];
	/* the key of a service's table each message is about ("" when none):
	 * the admin API names it in its answer */
	char key[CONFIG_MAX_ERRORS][32];
};

/* Parses and validates text read from path. Returns NULL and fills errs on error. */
struct config *config_parse(const char *path, const char *text, size_t len,
			    struct config_errors *errs);
/* Reads a whole file of at most CONFIG_MAX_FILE_SIZE bytes; NULL with a
 * message naming the file in err_msg. The text holds tokens: wipe it
 * (explicit_bzero) before freeing it. */
char *config_read_file(const char *path, size_t *len, char *err_msg, size_t errlen);
/* Reads the file and parses it; errors (unreadable file too) go to errs. */
struct config *config_load(const char *path, struct config_errors *errs);
void config_free(struct config *cfg);

struct toml_value;
struct buf;

/* Adds one service, given as the TOML table of its keys, to a parsed
 * config's role (server or client), with the file's rules and messages and
 * the role's defaults (default_token, nodelay, retry_interval). origin names
 * where the table came from for the messages ("path:line: ..."); NULL: from
 * the admin API, messages without a position. Returns 0, or -1 with errs
 * filled (a name the config already has is an error too). */
int config_add_service(struct config *cfg, bool server, const char *name,
		       const struct toml_value *tbl, const char *origin,
		       struct config_errors *errs);
/* A service's settings as JSON, the keys as in its TOML table, tokens and
 * other secrets shown as "(redacted)". */
void config_service_json(struct buf *b, const struct service_config *s, bool server);

const struct service_config *config_find_service(const struct service_config *s,
						 size_t n, const char *name);
const char *transport_type_name(enum transport_type t);
const char *service_type_name(enum service_type t);
const char *balance_policy_name(enum balance_policy b);

/* Limits of the integer keys (seconds), also quoted in the error messages. */
#define CONFIG_MAX_HEARTBEAT	86400	/* heartbeat_interval, heartbeat_timeout */
#define CONFIG_MAX_RETRY	3600	/* retry_interval */
#define CONFIG_MAX_UDP_SESSIONS	65536	/* udp_max_sessions */
#define CONFIG_MAX_HEALTH_CHECK	86400	/* health_check_interval */
#define CONFIG_MAX_CONNECTIONS	1000000	/* max_connections */
#define CONFIG_MAX_RANGE	1024	/* ports in one bind_addr / local_addr range */
#define CONFIG_MAX_KEEPALIVE	32767	/* keepalive_secs/interval: the kernel's limit */
/* Largest config file read (a config is a few KiB; this bounds memory). */
#define CONFIG_MAX_FILE_SIZE	(4 * 1024 * 1024)

#endif
