/* The two roles. Each owns its transport, listeners, channels and
 * connections; freeing a role closes everything it owns. */
#ifndef ROLES_H
#define ROLES_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"
#include "loop.h"
#include "reload.h"

struct server;
struct client;

/* Builds the role (the transport too: errors there are the user's, e.g. an
 * unreadable certificate) and starts it. cfg must outlive the role. A server
 * that cannot listen on bind_addr ends the process with status 1 (at start),
 * or keeps retrying (after a reload: retry_bind). */
struct server *server_new(struct loop *l, const struct server_config *cfg, bool retry_bind,
			  char *err, size_t errlen);
void server_free(struct server *s);

struct client *client_new(struct loop *l, const struct client_config *cfg,
			  char *err, size_t errlen);
void client_free(struct client *c);

/* A reload that keeps the role's own settings: services that were added start,
 * removed ones stop (port and connections closed), changed ones restart, and
 * unchanged ones keep every connection. cfg replaces the role's config (the
 * caller frees the old one afterwards). */
void server_apply(struct server *s, const struct server_config *cfg, struct reload_counts *rc);
void client_apply(struct client *c, const struct client_config *cfg, struct reload_counts *rc);

/* For the admin API: Prometheus metrics and a JSON status. */
void server_metrics(struct server *s, struct buf *b);
void server_status(struct server *s, struct buf *b);
void client_metrics(struct client *c, struct buf *b);
void client_status(struct client *c, struct buf *b);

#endif
