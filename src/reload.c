#include "reload.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "protocol.h"

#define DEBOUNCE_MS	300	/* editors write a file in several steps */
#define MAX_WATCHES	2	/* the path's directory and its symlink target's */

struct reloader {
	struct loop *loop;
	char *path;
	int fd;
	struct watcher w;
	struct timer debounce;
	int wd[MAX_WATCHES];
	char *dirs[MAX_WATCHES];		/* watched directories, NULL: none */
	uint8_t digest[PROTO_DIGEST_LEN];
	bool have_digest;
	reload_cb cb;
	void *arg;
};

/* The directory part of a path, allocated; NULL when out of memory. */
static char *dir_of(const char *path)
{
	char *tmp = strdup(path), *dir;

	if (!tmp)
		return NULL;
	dir = strdup(dirname(tmp));
	free(tmp);
	return dir;
}

static bool same_dir(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

/* Watch the directory holding the path, and the one holding its final
 * target when it is a symlink; re-run after each load, since a swapped
 * symlink may now point elsewhere. */
static void update_watches(struct reloader *r)
{
	const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
			      IN_MOVED_FROM | IN_ATTRIB | IN_DONT_FOLLOW;
	char *want[MAX_WATCHES] = { dir_of(r->path), NULL };
	char *real = realpath(r->path, NULL);

	if (real)
		want[1] = dir_of(real);
	free(real);
	if (same_dir(want[0], want[1])) {
		free(want[1]);
		want[1] = NULL;
	}
	for (int i = 0; i < MAX_WATCHES; i++) {
		if (same_dir(want[i], r->dirs[i])) {
			free(want[i]);
			continue;
		}
		if (r->wd[i] >= 0)
			inotify_rm_watch(r->fd, r->wd[i]);
		r->wd[i] = -1;
		free(r->dirs[i]);
		r->dirs[i] = want[i];
		if (!want[i])
			continue;
		r->wd[i] = inotify_add_watch(r->fd, want[i], mask);
		if (r->wd[i] < 0)
			log_warn("cannot watch %s for config changes: %s (SIGHUP still reloads)",
				 want[i], strerror(errno));
	}
}

static void on_debounce(struct loop *l, struct timer *t)
{
	struct reloader *r = container_of(t, struct reloader, debounce);

	r->cb(r->arg);
}

static void on_inotify(struct loop *l, struct watcher *w, uint32_t events)
{
	struct reloader *r = container_of(w, struct reloader, w);
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool any = false;

	/* Any event in the watched directories may concern us (the file, its
	 * symlink, the directory a symlink swap renames): the content check
	 * after loading filters out the rest. */
	while (read(r->fd, buf, sizeof buf) > 0)
		any = true;
	if (any)
		timer_start(l, &r->debounce, DEBOUNCE_MS);
}

struct reloader *reloader_new(struct loop *l, const char *path, reload_cb cb, void *arg)
{
	struct reloader *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->loop = l;
	r->cb = cb;
	r->arg = arg;
	r->wd[0] = r->wd[1] = -1;
	r->path = strdup(path);
	r->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (!r->path || r->fd < 0) {
		int e = errno;
		if (r->fd >= 0)
			close(r->fd);
		free(r->path);
		free(r);
		errno = e;
		return NULL;
	}
	timer_init(&r->debounce, on_debounce);
	watcher_init(&r->w, r->fd, on_inotify);
	loop_watch(l, &r->w, EPOLLIN);
	update_watches(r);
	return r;
}

void reloader_free(struct reloader *r)
{
	if (!r)
		return;
	loop_unwatch(r->loop, &r->w);
	timer_stop(r->loop, &r->debounce);
	close(r->fd);
	for (int i = 0; i < MAX_WATCHES; i++)
		free(r->dirs[i]);
	free(r->path);
	free(r);
}

bool reloader_content_changed(struct reloader *r, const char *text, size_t len)
{
	uint8_t d[PROTO_DIGEST_LEN];
	bool changed;

	proto_digest(text, len, d);
	changed = !r->have_digest || memcmp(d, r->digest, sizeof d) != 0;
	memcpy(r->digest, d, sizeof d);
	r->have_digest = true;
	update_watches(r);
	return changed;
}

/* ---- applying it ---- */

static bool service_running(struct list *running, const struct service_ops *ops,
			    const struct service_config *sc)
{
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, running)
		if (ops->config_of(n) == sc)
			return true;
	return false;
}

void services_apply(struct list *running, const struct service_ops *ops, void *role,
		    const struct service_config *old, size_t nold,
		    const struct service_config *cfg, size_t ncfg, struct reload_counts *rc)
{
	struct list *n, *tmp;

	memset(rc, 0, sizeof *rc);
	list_for_each_safe(n, tmp, running) {
		const struct service_config *oc = ops->config_of(n);
		const struct service_config *nc = config_find_service(cfg, ncfg, oc->name);

		if (nc && service_config_equal(oc, nc)) {
			ops->set_config(n, nc);	/* the old config is about to be freed */
			rc->unchanged++;
			continue;
		}
		if (nc) {
			log_info("service %s: changed by the reload; restarting it", nc->name);
			rc->changed++;
		} else {
			log_info("service %s: removed by the reload", oc->name);
			rc->removed++;
		}
		ops->stop(n);
	}
	for (size_t i = 0; i < ncfg; i++) {
		const struct service_config *sc = &cfg[i];

		if (service_running(running, ops, sc))
			continue;
		if (!config_find_service(old, nold, sc->name)) {
			log_info("service %s: added by the reload", sc->name);
			rc->added++;
		}
		if (!ops->start(role, sc))
			log_error("service %s: out of memory; not started", sc->name);
	}
}

/* ---- what changed ---- */

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool transport_equal(const struct transport_config *a, const struct transport_config *b)
{
	return a->type == b->type &&
	       str_eq(a->tcp.proxy, b->tcp.proxy) &&
	       a->tcp.nodelay == b->tcp.nodelay &&
	       a->tcp.keepalive_secs == b->tcp.keepalive_secs &&
	       a->tcp.keepalive_interval == b->tcp.keepalive_interval &&
	       a->has_tls == b->has_tls && a->has_noise == b->has_noise &&
	       a->has_websocket == b->has_websocket &&
	       str_eq(a->tls.hostname, b->tls.hostname) &&
	       str_eq(a->tls.trusted_root, b->tls.trusted_root) &&
	       str_eq(a->tls.pkcs12, b->tls.pkcs12) &&
	       str_eq(a->tls.pkcs12_password, b->tls.pkcs12_password) &&
	       str_eq(a->noise.pattern, b->noise.pattern) &&
	       a->noise.has_local_private_key == b->noise.has_local_private_key &&
	       memcmp(a->noise.local_private_key, b->noise.local_private_key,
		      sizeof a->noise.local_private_key) == 0 &&
	       a->noise.has_remote_public_key == b->noise.has_remote_public_key &&
	       memcmp(a->noise.remote_public_key, b->noise.remote_public_key,
		      sizeof a->noise.remote_public_key) == 0 &&
	       a->websocket.tls == b->websocket.tls;
}

bool service_config_equal(const struct service_config *a, const struct service_config *b)
{
	return str_eq(a->name, b->name) && a->type == b->type &&
	       str_eq(a->token, b->token) && str_eq(a->bind_addr, b->bind_addr) &&
	       str_eq(a->local_addr, b->local_addr) && a->nodelay == b->nodelay &&
	       a->retry_interval == b->retry_interval &&
	       a->udp_idle_timeout == b->udp_idle_timeout &&
	       a->udp_max_sessions == b->udp_max_sessions &&
	       a->health_check_interval == b->health_check_interval;
}

bool server_settings_equal(const struct server_config *a, const struct server_config *b)
{
	return str_eq(a->bind_addr, b->bind_addr) &&
	       a->heartbeat_interval == b->heartbeat_interval &&
	       transport_equal(&a->transport, &b->transport);
}

bool client_settings_equal(const struct client_config *a, const struct client_config *b)
{
	return str_eq(a->remote_addr, b->remote_addr) &&
	       a->heartbeat_timeout == b->heartbeat_timeout &&
	       transport_equal(&a->transport, &b->transport);
}
