/* Hot reload: noticing that the config file (or a secret file it names)
 * changed, and telling what changed.
 *
 * The watcher follows the file through the ways editors and deployment tools
 * replace it: written in place, replaced by a rename (vim, sed -i, ansible),
 * or behind a symlink that is swapped (Kubernetes ConfigMaps). It watches the
 * directories, not the inode, and reports a change only when the file's
 * content differs from what was last loaded. */
#ifndef RELOAD_H
#define RELOAD_H

#include <stdbool.h>

#include "config.h"
#include "list.h"
#include "loop.h"

struct reloader;

typedef void (*reload_cb)(void *arg);

/* Watches path; cb runs (debounced) when its content may have changed. Returns
 * NULL if inotify is unavailable (SIGHUP still works); errno is set. */
struct reloader *reloader_new(struct loop *l, const char *path, reload_cb cb, void *arg);
void reloader_free(struct reloader *r);
/* After a load: remember the content and re-resolve symlinks. Returns true if
 * the text differs from the previous one. */
bool reloader_content_changed(struct reloader *r, const char *text, size_t len);
/* After a load: the secret files the config names (cfg->secret_files) are
 * watched too, and a change of their content counts as a change. */
void reloader_follow_files(struct reloader *r, char *const *files, size_t n);

/* Applying a reload to a role's running services (a list of the role's own
 * service structs): those whose config is unchanged get the new config's
 * copy, removed and changed ones are stopped, added and changed ones started. */
struct reload_counts { int added, removed, changed, unchanged; };

struct service_ops {
	const struct service_config *(*config_of)(struct list *node);
	void (*set_config)(struct list *node, const struct service_config *sc);
	void (*stop)(struct list *node);
	bool (*start)(void *role, const struct service_config *sc);
};

void services_apply(struct list *running, const struct service_ops *ops, void *role,
		    const struct service_config *old, size_t nold,
		    const struct service_config *cfg, size_t ncfg, struct reload_counts *rc);

/* What a reload has to do. */
bool service_config_equal(const struct service_config *a, const struct service_config *b);
bool server_settings_equal(const struct server_config *a, const struct server_config *b);
bool client_settings_equal(const struct client_config *a, const struct client_config *b);

#endif
