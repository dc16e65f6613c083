/* The two roles. Each owns its transport, listeners, channels and
 * connections; freeing a role closes everything it owns. */
#ifndef ROLES_H
#define ROLES_H

#include <stddef.h>

#include "config.h"
#include "loop.h"

struct server;
struct client;

/* Builds the role (the transport too: errors there are the user's, e.g. an
 * unreadable certificate) and starts it. cfg must outlive the role. */
struct server *server_new(struct loop *l, const struct server_config *cfg,
			  char *err, size_t errlen);
void server_free(struct server *s);

struct client *client_new(struct loop *l, const struct client_config *cfg,
			  char *err, size_t errlen);
void client_free(struct client *c);

#endif
