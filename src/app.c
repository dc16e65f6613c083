/* The process around a role: limits, signals, the loop, a clean shutdown. */
#include "app.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "apisvc.h"
#include "fds.h"
#include "jsontree.h"
#include "log.h"
#include "loop.h"
#include "relay.h"
#include "reload.h"
#include "resolve.h"
#include "roles.h"
#include "sha256.h"

static struct {
	struct loop *loop;
	int status;
	int sigfd;
	struct watcher sigw;
	enum role role;
	struct config *cfg;
	struct server *server;
	struct client *client;
	struct reloader *reloader;
	struct api *api;
	struct deferred api_restart;
	/* the main file's text as last applied: a change through the API
	 * rebuilds the configuration from it, not from the file as it is now */
	char *main_text;
	size_t main_len;
	struct apisvcs apisvcs;		/* the services created through the API */
	struct timespec started;		/* CLOCK_MONOTONIC, for the uptime */
} A = { .sigfd = -1 };

static int reload(bool forced);
static void api_services(void *arg, const char *method, const char *name, const char *body,
			 size_t len, const char *if_match, size_t if_match_len, struct api_reply *r);

uint64_t app_uptime_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > A.started.tv_sec ? (uint64_t)(now.tv_sec - A.started.tv_sec) : 0;
}

void app_exit(int status)
{
	A.status = status;
	if (A.loop)
		loop_stop(A.loop);
}

/* Each connection costs two descriptors per process: take all we may. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_debug("cannot raise the open file limit: %s", strerror(errno));
}

static void on_signal(struct loop *l, struct watcher *w, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(A.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		switch (si.ssi_signo) {
		case SIGINT:
		case SIGTERM:
			log_info("%s received; shutting down", strsignal((int)si.ssi_signo));
			app_exit(0);
			break;
		case SIGHUP:
			log_event("SIGHUP received; reloading %s", A.cfg->path);
			reload(true);
			break;
		}
	}
}

static int setup_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	A.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (A.sigfd < 0)
		return -1;
	watcher_init(&A.sigw, A.sigfd, on_signal);
	return loop_watch(A.loop, &A.sigw, EPOLLIN);
}

static int start_role(bool after_reload)
{
	char err[512];

	if (A.role == ROLE_SERVER)
		A.server = server_new(A.loop, A.cfg->server, after_reload, err, sizeof err);
	else
		A.client = client_new(A.loop, A.cfg->client, err, sizeof err);
	if (A.server || A.client)
		return 0;
	log_error("%s: %s", A.cfg->path, err);
	return -1;
}

static void stop_role(void)
{
	server_free(A.server);
	client_free(A.client);
	A.server = NULL;
	A.client = NULL;
}

/* The whole file, bounded; NULL with a message on error. */
static char *read_config(const char *path, size_t *len)
{
	char err[512];
	char *text = config_read_file(path, len, err, sizeof err);

	if (!text)
		log_error("reload rejected: %s", err);
	return text;
}

/* The text holds the services' tokens. */
static void free_config_text(char *text, size_t len)
{
	if (text)
		explicit_bzero(text, len);
	free(text);
}

static bool role_settings_equal(const struct config *a, const struct config *b)
{
	if (A.role == ROLE_SERVER)
		return server_settings_equal(a->server, b->server);
	return client_settings_equal(a->client, b->client);
}

/* ---- the admin API ---- */

static void api_metrics(void *arg, struct buf *b)
{
	if (A.server)
		server_metrics(A.server, b);
	else if (A.client)
		client_metrics(A.client, b);
}

static void api_status(void *arg, struct buf *b)
{
	if (A.server)
		server_status(A.server, b);
	else if (A.client)
		client_status(A.client, b);
	else
		buf_printf(b, "{\"role\": null}\n");
}

static int api_reload(void *arg)
{
	log_event("reload requested through the api");
	return reload(true);
}

static const struct api_config *role_api(const struct config *c)
{
	return A.role == ROLE_SERVER ? c->server->api : c->client->api;
}

static bool api_config_equal(const struct api_config *a, const struct api_config *b)
{
	if (!a || !b)
		return a == b;
	if (a->nhosts != b->nhosts)
		return false;
	for (size_t i = 0; i < a->nhosts; i++)
		if (strcmp(a->hosts[i], b->hosts[i]) != 0)
			return false;
	return strcmp(a->bind_addr, b->bind_addr) == 0 &&
	       (a->token ? b->token && strcmp(a->token, b->token) == 0 : !b->token);
}

static int start_api(void)
{
	static const struct api_hooks hooks = { api_metrics, api_status, api_reload, api_services };
	const struct api_config *ac = role_api(A.cfg);
	char err[256];

	api_free(A.api);
	A.api = NULL;
	if (!ac)
		return 0;
	A.api = api_new(A.loop, ac, &hooks, NULL, err, sizeof err);
	if (A.api)
		return 0;
	log_error("%s: %s", A.cfg->path, err);
	return -1;
}

/* Not from inside a reload: the request that asked for it may be running. */
static void on_api_restart(struct loop *l, struct deferred *d)
{
	start_api();
}

/* The secret files of the config in force are watched with it. */
static void follow_secret_files(void)
{
	if (A.reloader)
		reloader_follow_files(A.reloader, A.cfg->secret_files, A.cfg->nsecret_files);
}

static bool is_server(void)
{
	return A.role == ROLE_SERVER;
}

static void keep_main_text(char *text, size_t len)
{
	free_config_text(A.main_text, A.main_len);
	A.main_text = text;
	A.main_len = len;
}

/* The main file's text plus the API's services: the configuration to run.
 * origin names where the API's services come from in messages (NULL: no
 * position). NULL with errs filled when either part is rejected. */
static struct config *build_config(const char *text, size_t len, const char *origin,
				   struct config_errors *errs)
{
	struct config *cfg = config_parse(A.cfg->path, text, len, errs);

	if (!cfg || (is_server() ? !cfg->server : !cfg->client))
		return cfg;	/* the caller says what is missing */
	for (size_t i = 0; i < A.apisvcs.n; i++) {
		if (config_add_service(cfg, is_server(), A.apisvcs.v[i].name, A.apisvcs.v[i].tbl,
				       origin, errs) < 0) {
			config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

/* Puts cfg in force (taking it over): the role restarts if its own settings
 * changed, otherwise only the services that changed do. Returns 0, or -1
 * when the role could not start with it (the running config stays). */
static int apply_config(struct config *cfg, const char *what)
{
	struct reload_counts rc = { 0 };
	struct config *old = A.cfg;
	const char *block = is_server() ? "[server]" : "[client]";

	if (!api_config_equal(role_api(old), role_api(cfg)))
		loop_defer(A.loop, &A.api_restart);
	if (!role_settings_equal(old, cfg)) {
		log_event("%s: %s settings or transport changed; restarting the %s", what, block,
			  is_server() ? "server" : "client");
		stop_role();
		A.cfg = cfg;
		if (start_role(true) < 0) {
			log_error("%s rejected: going back to the running configuration", what);
			A.cfg = old;
			if (start_role(true) < 0)
				app_exit(1);
			loop_undefer(A.loop, &A.api_restart);
			config_free(cfg);
			return -1;
		}
		config_free(old);
		follow_secret_files();
		return 0;
	}
	if (is_server())
		server_apply(A.server, cfg->server, &rc);
	else
		client_apply(A.client, cfg->client, &rc);
	A.cfg = cfg;
	config_free(old);
	follow_secret_files();
	log_event("%s: +%d added, -%d removed, ~%d changed, %d unchanged", what, rc.added,
		  rc.removed, rc.changed, rc.unchanged);
	return 0;
}

/* Replaces the running config by the file's (with the API's services), or
 * keeps it if the file is invalid: a reload is never half-applied. Returns 0
 * when the file's configuration is in force, -1 when it was rejected. */
static int reload(bool forced)
{
	struct config_errors errs;
	struct config *cfg, *old = A.cfg;
	size_t len;
	char *text = read_config(old->path, &len);
	const char *block = is_server() ? "[server]" : "[client]";

	if (!text)
		return -1;
	if (A.reloader && !reloader_content_changed(A.reloader, text, len) && !forced) {
		free_config_text(text, len);
		return 0;
	}
	cfg = build_config(text, len, NULL, &errs);
	if (!cfg) {
		free_config_text(text, len);
		for (int i = 0; i < errs.count; i++)
			log_error("reload rejected: %s", errs.msg[i]);
		if (A.apisvcs.n)
			log_error("reload rejected: (the services created through the api are "
				  "checked with the file's settings too)");
		log_error("reload rejected: the running configuration stays in force");
		return -1;
	}
	if (is_server() ? !cfg->server : !cfg->client) {
		free_config_text(text, len);
		log_error("reload rejected: %s has no %s block anymore; the running configuration "
			  "stays in force", old->path, block);
		config_free(cfg);
		return -1;
	}
	if (apply_config(cfg, "reload") < 0) {
		free_config_text(text, len);
		return -1;
	}
	keep_main_text(text, len);
	return 0;
}

/* ---- services through the API ---- */

static const struct service_config *running_services(size_t *n)
{
	if (is_server()) {
		*n = A.cfg->server->nservices;
		return A.cfg->server->services;
	}
	*n = A.cfg->client->nservices;
	return A.cfg->client->services;
}

static const char *services_file(void)
{
	const struct api_config *ac = role_api(A.cfg);

	return ac ? ac->services_file : NULL;
}

static const char *persisted(void)
{
	return services_file() ? "true" : "false";
}

/* A strong ETag: changes whenever anything of the service does, its token
 * included (which it does not show). */
static void etag_of(const struct service_config *sc, char out[48])
{
	struct buf b = { 0 };
	uint8_t d[SHA256_LEN];

	buf_printf(&b, "%s\n%s\n", sc->from_api ? "api" : "file", sc->name);
	config_service_json(&b, sc, is_server());
	buf_printf(&b, "\n%s", sc->token ? sc->token : "");
	sha256(b.p, b.len, d);
	explicit_bzero(b.p, b.len);
	buf_free(&b);
	out[0] = '"';
	for (int i = 0; i < 16; i++)
		snprintf(out + 1 + 2 * i, 3, "%02x", d[i]);
	out[33] = '"';
	out[34] = '\0';
}

static void service_json(struct buf *b, const struct service_config *sc, bool with_etag)
{
	char etag[48];

	buf_printf(b, "{\"name\": ");
	buf_json_string(b, sc->name);
	buf_printf(b, ", \"source\": \"%s\"", sc->from_api ? "api" : "file");
	if (with_etag) {
		etag_of(sc, etag);
		buf_printf(b, ", \"etag\": ");
		buf_json_string(b, etag);
	}
	buf_printf(b, ", \"config\": ");
	config_service_json(b, sc, is_server());
	buf_printf(b, "}");
}

static void reply_error(struct api_reply *r, int status, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply_error(struct api_reply *r, int status, const char *key, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	r->status = status;
	buf_printf(&r->body, "{\"error\": ");
	buf_json_string(&r->body, msg);
	if (key) {
		buf_printf(&r->body, ", \"key\": ");
		buf_json_string(&r->body, key);
	}
	buf_printf(&r->body, "}\n");
}

/* If-Match: "*" or one of a list of ETags; a service that does not exist
 * matches nothing (RFC 9110, 13.1.1). */
static bool if_match_ok(const struct service_config *sc, const char *im, size_t n)
{
	char etag[48];
	size_t elen;

	if (!im)
		return true;
	if (!sc)
		return false;
	if (n == 1 && im[0] == '*')
		return true;
	etag_of(sc, etag);
	elen = strlen(etag);
	for (const char *p = im, *end = im + n; p < end;) {
		const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end;

		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - p) == elen && memcmp(p, etag, elen) == 0)
			return true;
		p = comma ? comma + 1 : end;
	}
	return false;
}

static void drop_key(struct toml_value *t, const char *key)
{
	for (size_t i = 0; i < t->u.table.len; i++) {
		struct toml_kv *kv = &t->u.table.items[i];

		if (strcmp(kv->key, key) != 0)
			continue;
		free(kv->key);
		toml_free(kv->val);
		memmove(kv, kv + 1, (t->u.table.len - i - 1) * sizeof *kv);
		t->u.table.len--;
		return;
	}
}

/* The body of a PUT: a JSON object of the service's TOML keys. A token sent
 * back as GET shows it ("(redacted)") keeps the one the service has. */
static struct toml_value *put_body(const char *body, size_t len, const char *name,
				   struct api_reply *r)
{
	struct toml_error terr;
	struct toml_value *tbl, *tok;
	struct apisvc *cur;

	if (len == 0) {
		reply_error(r, 400, NULL, "the body must be a JSON object of the service's keys, "
			    "e.g. {\"%s\": \"127.0.0.1:8080\", \"token\": \"...\"}",
			    is_server() ? "bind_addr" : "local_addr");
		return NULL;
	}
	tbl = json_to_toml(body, len, &terr);
	if (!tbl) {
		reply_error(r, 400, NULL, "the body is not valid JSON: line %d, column %d: %s",
			    terr.line, terr.col, terr.msg);
		return NULL;
	}
	if (tbl->type != TOML_TABLE) {
		reply_error(r, 400, NULL, "the body must be a JSON object of the service's keys, "
			    "not %s", toml_type_name(tbl->type));
		toml_free(tbl);
		return NULL;
	}
	tok = toml_get(tbl, "token");
	if (tok && tok->type == TOML_STRING && strcmp(tok->u.str.ptr, "(redacted)") == 0) {
		const struct toml_value *keep = (cur = apisvcs_find(&A.apisvcs, name)) ?
						toml_get(cur->tbl, "token") : NULL;
		char *dup = keep && keep->type == TOML_STRING ?
			    malloc(keep->u.str.len + 1) : NULL;

		if (cur && !keep) {
			drop_key(tbl, "token");	/* it had default_token's: so again */
			return tbl;
		}
		if (!dup) {
			reply_error(r, 400, "token", "\"(redacted)\" stands for the token of an "
				    "existing service; send the token itself");
			toml_free(tbl);
			return NULL;
		}
		memcpy(dup, keep->u.str.ptr, keep->u.str.len + 1);
		free(tok->u.str.ptr);
		tok->u.str.ptr = dup;
		tok->u.str.len = keep->u.str.len;
	}
	return tbl;
}

/* The API's services changed (already in A.apisvcs): check and build the
 * configuration, write the services_file, put it in force. 0, or -1 with
 * r filled (the caller undoes the change). */
static int commit_services(struct api_reply *r)
{
	struct config_errors errs;
	struct config *cfg = build_config(A.main_text, A.main_len, NULL, &errs);
	char err[512];

	if (!cfg) {
		r->status = 400;
		buf_printf(&r->body, "{\"error\": ");
		buf_json_string(&r->body, errs.count ? errs.msg[0] : "rejected");
		if (errs.count && errs.key[0][0]) {
			buf_printf(&r->body, ", \"key\": ");
			buf_json_string(&r->body, errs.key[0]);
		}
		buf_printf(&r->body, ", \"errors\": [");
		for (int i = 0; i < errs.count; i++) {
			buf_printf(&r->body, "%s{\"error\": ", i ? ", " : "");
			buf_json_string(&r->body, errs.msg[i]);
			buf_printf(&r->body, ", \"key\": ");
			buf_json_string(&r->body, errs.key[i]);
			buf_printf(&r->body, "}");
		}
		buf_printf(&r->body, "]}\n");
		return -1;
	}
	if (services_file() &&
	    apisvcs_save(&A.apisvcs, services_file(), is_server(), err, sizeof err) < 0) {
		log_error("api: %s; the change is not applied", err);
		reply_error(r, 500, NULL, "%s; the change is not applied", err);
		config_free(cfg);
		return -1;
	}
	if (apply_config(cfg, "api") < 0) {
		reply_error(r, 500, NULL, "the %s could not restart with the change (see the log)",
			    is_server() ? "server" : "client");
		return -1;
	}
	return 0;
}

static void undo_put(const char *name, struct toml_value *old)
{
	struct toml_value *mine;

	if (old) {
		apisvcs_put(&A.apisvcs, name, old, &mine);	/* an existing entry: no allocation */
		toml_free(mine);
	} else {
		toml_free(apisvcs_take(&A.apisvcs, name));
	}
}

static void put_service(const char *name, const char *body, size_t len,
			const struct service_config *sc, struct api_reply *r)
{
	struct toml_value *tbl, *old;
	const struct service_config *svcs;
	char etag[48];
	size_t n = 0;

	if (!apisvc_name_ok(name)) {
		reply_error(r, 400, "name", "a service created through the api is named with 1 to "
			    "64 of A-Z a-z 0-9 _ - .");
		return;
	}
	if (!(tbl = put_body(body, len, name, r)))
		return;
	if (apisvcs_put(&A.apisvcs, name, tbl, &old) < 0) {
		toml_free(tbl);
		reply_error(r, 500, NULL, "out of memory");
		return;
	}
	if (commit_services(r) < 0) {
		undo_put(name, old);
		return;
	}
	toml_free(old);
	log_event("api: service %s %s", name, sc ? "replaced" : "created");
	r->status = sc ? 200 : 201;
	buf_printf(&r->body, "{\"name\": ");
	buf_json_string(&r->body, name);
	buf_printf(&r->body, ", \"persisted\": %s}\n", persisted());
	svcs = running_services(&n);
	sc = config_find_service(svcs, n, name);
	if (sc) {
		etag_of(sc, etag);
		memcpy(r->etag, etag, sizeof etag);
	}
}

static void delete_service(const char *name, struct api_reply *r)
{
	struct toml_value *old = apisvcs_take(&A.apisvcs, name), *none;

	if (commit_services(r) < 0) {
		if (old && apisvcs_put(&A.apisvcs, name, old, &none) < 0)
			toml_free(old);
		return;
	}
	toml_free(old);
	log_event("api: service %s deleted", name);
	r->status = 200;
	buf_printf(&r->body, "{\"name\": ");
	buf_json_string(&r->body, name);
	buf_printf(&r->body, ", \"persisted\": %s}\n", persisted());
}

static void api_services(void *arg, const char *method, const char *name, const char *body,
			 size_t len, const char *if_match, size_t if_match_len, struct api_reply *r)
{
	const struct service_config *svcs, *sc;
	size_t n = 0;

	svcs = running_services(&n);
	if (!name) {
		buf_printf(&r->body, "{\"persisted\": %s, \"services\": [", persisted());
		for (size_t i = 0; i < n; i++) {
			buf_printf(&r->body, "%s", i ? ", " : "");
			service_json(&r->body, &svcs[i], true);
		}
		buf_printf(&r->body, "]}\n");
		r->status = 200;
		return;
	}
	sc = config_find_service(svcs, n, name);
	for (size_t i = 0; !sc && i < n; i++) {
		/* a port range of the file: its members are services of their own */
		const struct service_config *m = &svcs[i], *last = m;

		if (!m->range_name || m->from_api || strcmp(m->range_name, name) != 0)
			continue;
		while (last + 1 < svcs + n && last[1].range_name &&
		       strcmp(last[1].range_name, name) == 0)
			last++;
		reply_error(r, strcmp(method, "GET") == 0 ? 404 : 409, "name", "service %s is a "
			    "port range defined in %s: its members are services of their own "
			    "(%s to %s)%s", name, A.cfg->path, m->name, last->name,
			    strcmp(method, "GET") == 0 ? "" : "; change the range there");
		return;
	}
	if (strcmp(method, "GET") == 0) {
		if (!sc) {
			reply_error(r, 404, NULL, "no service named %s", name);
			return;
		}
		service_json(&r->body, sc, false);
		r->body.len--;		/* reopen the object */
		buf_printf(&r->body, ", \"persisted\": %s}\n", persisted());
		etag_of(sc, r->etag);
		r->status = 200;
		return;
	}
	if (sc && !sc->from_api) {
		reply_error(r, 409, "name", "service %s is defined in %s: change it there (the api "
			    "changes only the services it created)", name, A.cfg->path);
		return;
	}
	if (!if_match_ok(sc, if_match, if_match_len)) {
		reply_error(r, 412, NULL, "If-Match: service %s %s", name, sc ?
			    "changed since that ETag was read; GET it again" : "does not exist");
		return;
	}
	if (strcmp(method, "PUT") == 0) {
		put_service(name, body, len, sc, r);
	} else if (!sc) {
		reply_error(r, 404, NULL, "no service named %s", name);
	} else {
		delete_service(name, r);
	}
}

/* At start: keep the main file's text, and add the services the API
 * created before (its services_file), checked with the file's rules. */
static int load_api_services(void)
{
	const char *path = services_file();
	struct config_errors errs;
	struct config *cfg;
	char err[512];

	A.main_text = read_config(A.cfg->path, &A.main_len);
	if (!A.main_text)
		return -1;
	if (!path)
		return 0;
	if (apisvcs_load(&A.apisvcs, path, is_server(), err, sizeof err) < 0) {
		log_error("%s", err);
		return -1;
	}
	if (A.apisvcs.n == 0)
		return 0;
	cfg = build_config(A.main_text, A.main_len, path, &errs);
	if (!cfg) {
		for (int i = 0; i < errs.count; i++)
			log_error("%s", errs.msg[i]);
		log_error("%s: the services created through the api do not fit %s (fix or remove "
			  "them there)", path, A.cfg->path);
		return -1;
	}
	log_info("api: %zu service%s loaded from %s", A.apisvcs.n, A.apisvcs.n == 1 ? "" : "s",
		 path);
	config_free(A.cfg);	/* path was in it */
	A.cfg = cfg;
	return 0;
}

static void on_file_changed(void *arg)
{
	reload(false);
}

static void start_reloader(void)
{
	size_t len;
	char *text;

	A.reloader = reloader_new(A.loop, A.cfg->path, on_file_changed, NULL);
	if (!A.reloader) {
		log_warn("cannot watch %s for changes: %s; reload with SIGHUP", A.cfg->path,
			 strerror(errno));
		return;
	}
	text = read_config(A.cfg->path, &len);
	if (text)
		reloader_content_changed(A.reloader, text, len);
	free_config_text(text, len);
	follow_secret_files();
}

int app_run(struct config *cfg, enum role role)
{
	A.cfg = cfg;
	A.role = role;
	A.status = 0;
	clock_gettime(CLOCK_MONOTONIC, &A.started);
	raise_fd_limit();
	A.loop = loop_new();
	if (!A.loop || setup_signals() < 0 || resolve_init(A.loop) < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		A.status = 1;
		goto out;
	}
	deferred_init(&A.api_restart, on_api_restart);
	if (load_api_services() < 0 || start_role(false) < 0 || start_api() < 0) {
		A.status = 1;
		goto out;
	}
	log_event("%s started (rathole %s, %s)", role == ROLE_SERVER ? "server" : "client",
		  RATHOLE_VERSION, A.cfg->path);
	start_reloader();
	fds_init();	/* what is open once the role is set up */
	if (loop_run(A.loop) < 0) {
		log_error("event loop failed: %s", strerror(errno));
		A.status = 1;
	}
	api_free(A.api);
	A.api = NULL;
	stop_role();
	if (A.status == 0)
		log_info("shut down cleanly");
out:
	api_free(A.api);
	A.api = NULL;
	if (A.loop)
		loop_undefer(A.loop, &A.api_restart);
	reloader_free(A.reloader);
	A.reloader = NULL;
	resolve_shutdown();
	relay_pools_free();
	if (A.sigfd >= 0) {
		loop_unwatch(A.loop, &A.sigw);
		close(A.sigfd);
		A.sigfd = -1;
	}
	loop_free(A.loop);
	A.loop = NULL;
	config_free(A.cfg);
	A.cfg = NULL;
	keep_main_text(NULL, 0);
	apisvcs_free(&A.apisvcs);
	return A.status;
}
