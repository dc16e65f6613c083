/* The process around a role: limits, signals, the loop, a clean shutdown. */
#include "app.h"

#include <errno.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "fds.h"
#include "log.h"
#include "loop.h"
#include "relay.h"
#include "reload.h"
#include "resolve.h"
#include "roles.h"

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
	struct timespec started;		/* CLOCK_MONOTONIC, for the uptime */
} A = { .sigfd = -1 };

static int reload(bool forced);

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
	static const struct api_hooks hooks = { api_metrics, api_status, api_reload };
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

/* Replaces the running config by the file's, or keeps it if the file is
 * invalid: a reload is never half-applied. Returns 0 when the file's
 * configuration is in force, -1 when it was rejected. */
static int reload(bool forced)
{
	struct config_errors errs;
	struct reload_counts rc = { 0 };
	struct config *cfg, *old = A.cfg;
	size_t len;
	char *text = read_config(old->path, &len);
	const char *block = A.role == ROLE_SERVER ? "[server]" : "[client]";

	if (!text)
		return -1;
	if (A.reloader && !reloader_content_changed(A.reloader, text, len) && !forced) {
		free_config_text(text, len);
		return 0;
	}
	cfg = config_parse(old->path, text, len, &errs);
	free_config_text(text, len);
	if (!cfg) {
		for (int i = 0; i < errs.count; i++)
			log_error("reload rejected: %s", errs.msg[i]);
		log_error("reload rejected: the running configuration stays in force");
		return -1;
	}
	if (A.role == ROLE_SERVER ? !cfg->server : !cfg->client) {
		log_error("reload rejected: %s has no %s block anymore; the running configuration "
			  "stays in force", old->path, block);
		config_free(cfg);
		return -1;
	}
	if (!api_config_equal(role_api(old), role_api(cfg)))
		loop_defer(A.loop, &A.api_restart);
	if (!role_settings_equal(old, cfg)) {
		log_event("reload: %s settings or transport changed; restarting the %s", block,
			 A.role == ROLE_SERVER ? "server" : "client");
		stop_role();
		A.cfg = cfg;
		if (start_role(true) < 0) {
			log_error("reload rejected: going back to the running configuration");
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
	if (A.role == ROLE_SERVER)
		server_apply(A.server, cfg->server, &rc);
	else
		client_apply(A.client, cfg->client, &rc);
	A.cfg = cfg;
	config_free(old);
	follow_secret_files();
	log_event("reload: +%d added, -%d removed, ~%d changed, %d unchanged", rc.added, rc.removed,
		 rc.changed, rc.unchanged);
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
	if (start_role(false) < 0 || start_api() < 0) {
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
	return A.status;
}
