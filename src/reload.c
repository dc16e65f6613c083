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
/* The config's directory and its symlink target's, and the same for each
 * secret file (token_file = ...); more distinct directories than this are
 * not watched (SIGHUP still reloads them). */
#define MAX_WATCHES	8

struct reloader {
	struct loop *loop;
	char *path;
	char **files;				/* secret files the config names */
	size_t nfiles;
	int fd;
	struct watcher w;
	struct timer debounce;
	int wd[MAX_WATCHES];
	char *dirs[MAX_WATCHES];		/* watched directories, NULL: none */
	uint8_t digest[PROTO_DIGEST_LEN];	/* of the config's text */
	uint8_t files_digest[PROTO_DIGEST_LEN];	/* of the secret files' contents */
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

static void free_files(struct reloader *r)
{
	for (size_t i = 0; i < r->nfiles; i++)
		free(r->files[i]);
	free(r->files);
	r->files = NULL;
	r->nfiles = 0;
}

/* Adds the directory holding path, and the one holding its final target
 * when it is a symlink, to want[] unless already there. */
static void want_dirs_of(const char *path, char **want, size_t *n)
{
	char *real = realpath(path, NULL);
	char *cand[2] = { dir_of(path), real ? dir_of(real) : NULL };

	free(real);
	for (int i = 0; i < 2; i++) {
		bool dup = !cand[i];

		for (size_t j = 0; !dup && j < *n; j++)
			dup = same_dir(cand[i], want[j]);
		if (dup || *n == MAX_WATCHES) {
			if (!dup)
				log_warn("not watching %s for changes: more than %d directories "
					 "(SIGHUP still reloads)", cand[i], MAX_WATCHES);
			free(cand[i]);
			continue;
		}
		want[(*n)++] = cand[i];
	}
}

/* Watch the directories holding the config and the secret files, and
 * those holding their final targets when they are symlinks; re-run after
 * each load, since a swapped symlink may now point elsewhere. */
static void update_watches(struct reloader *r)
{
	const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
			      IN_MOVED_FROM | IN_ATTRIB | IN_DONT_FOLLOW;
	char *want[MAX_WATCHES] = { NULL };
	size_t n = 0;

	want_dirs_of(r->path, want, &n);
	for (size_t i = 0; i < r->nfiles; i++)
		want_dirs_of(r->files[i], want, &n);
	for (int i = 0; i < MAX_WATCHES; i++) {
		bool kept = false;

		for (size_t j = 0; !kept && j < n; j++)
			kept = want[j] && same_dir(want[j], r->dirs[i]);
		if (kept || !r->dirs[i])
			continue;
		if (r->wd[i] >= 0)
			inotify_rm_watch(r->fd, r->wd[i]);
		r->wd[i] = -1;
		free(r->dirs[i]);
		r->dirs[i] = NULL;
	}
	for (size_t j = 0; j < n; j++) {
		int slot = -1;
		bool have = false;

		for (int i = 0; i < MAX_WATCHES && !have; i++) {
			have = same_dir(want[j], r->dirs[i]) && r->dirs[i];
			if (!r->dirs[i] && slot < 0)
				slot = i;
		}
		if (have || slot < 0) {
			free(want[j]);
			continue;
		}
		r->dirs[slot] = want[j];
		r->wd[slot] = inotify_add_watch(r->fd, want[j], mask);
		if (r->wd[slot] < 0)
			log_warn("cannot watch %s for config changes: %s (SIGHUP still reloads)",
				 want[j], strerror(errno));
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
	for (int i = 0; i < MAX_WATCHES; i++)
		r->wd[i] = -1;
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
	free_files(r);
	free(r->path);
	free(r);
}

/* One digest over the contents of the secret files; a file that cannot be
 * read counts as empty (the load that follows says why). */
static void digest_files(struct reloader *r, uint8_t out[PROTO_DIGEST_LEN])
{
	uint8_t *all = calloc(r->nfiles ? r->nfiles : 1, PROTO_DIGEST_LEN);
	char err[256];

	if (!all) {
		memset(out, 0, PROTO_DIGEST_LEN);	/* a reload still follows SIGHUP */
		return;
	}
	for (size_t i = 0; i < r->nfiles; i++) {
		size_t len = 0;
		char *text = config_read_file(r->files[i], &len, err, sizeof err);

		proto_digest(text ? text : "", text ? len : 0, all + i * PROTO_DIGEST_LEN);
		if (text) {
			explicit_bzero(text, len);
			free(text);
		}
	}
	proto_digest(all, r->nfiles * PROTO_DIGEST_LEN, out);
	free(all);
}

bool reloader_content_changed(struct reloader *r, const char *text, size_t len)
{
	uint8_t d[PROTO_DIGEST_LEN], f[PROTO_DIGEST_LEN];
	bool changed;

	proto_digest(text, len, d);
	digest_files(r, f);
	changed = !r->have_digest || memcmp(d, r->digest, sizeof d) != 0 ||
		  memcmp(f, r->files_digest, sizeof f) != 0;
	memcpy(r->digest, d, sizeof d);
	memcpy(r->files_digest, f, sizeof f);
	r->have_digest = true;
	update_watches(r);
	return changed;
}

void reloader_follow_files(struct reloader *r, char *const *files, size_t n)
{
	char **copy = calloc(n ? n : 1, sizeof *copy);
	size_t got = 0;

	if (!copy) {
		log_warn("out of memory: secret files are not watched for changes (SIGHUP "
			 "still reloads)");
		return;
	}
	while (got < n && (copy[got] = strdup(files[got])))
		got++;
	free_files(r);
	r->files = copy;
	r->nfiles = got;
	digest_files(r, r->files_digest);
	update_watches(r);
}

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
			log_event("service %s: changed by the reload; restarting it", nc->name);
			rc->changed++;
		} else {
			log_event("service %s: removed by the reload", oc->name);
			rc->removed++;
		}
		ops->stop(n);
	}
	for (size_t i = 0; i < ncfg; i++) {
		const struct service_config *sc = &cfg[i];

		if (service_running(running, ops, sc))
			continue;
		if (!config_find_service(old, nold, sc->name)) {
			log_event("service %s: added by the reload", sc->name);
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
	       a->tls.record_layer == b->tls.record_layer &&
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
	       a->health_check_interval == b->health_check_interval &&
	       str_eq(a->range_name, b->range_name);	/* a member's pool is smaller */
}

bool server_settings_equal(const struct server_config *a, const struct server_config *b)
{
	return str_eq(a->bind_addr, b->bind_addr) &&
	       a->heartbeat_interval == b->heartbeat_interval &&
	       transport_equal(&a->transport, &b->transport);
}

bool client_settings_equal(const struct client_config *a, const struct client_config *b)
{
	/* remote_addr is not here: client_apply() adds and removes servers */
	return a->heartbeat_timeout == b->heartbeat_timeout &&
	       transport_equal(&a->transport, &b->transport);
}
