/* Services created through the admin API: kept as the TOML tables of their
 * keys (as sent, before defaults), so that each rebuild of the running
 * configuration checks them with the file's code, and written to the API's
 * services_file as TOML.
 *
 * The file is rewritten whole and atomically (a temporary file beside it,
 * fsync, rename, fsync of the directory): after a crash it holds either the
 * old or the new set of services, never half of one. The operator's main
 * config file is never written. */
#ifndef APISVC_H
#define APISVC_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "toml.h"

struct apisvc {
	char *name;
	struct toml_value *tbl;
};

struct apisvcs {
	struct apisvc *v;
	size_t n;
};

void apisvcs_free(struct apisvcs *s);
struct apisvc *apisvcs_find(const struct apisvcs *s, const char *name);
/* Puts tbl under name, taking it over; *old gets the table it replaced (NULL:
 * none), for an undo. Returns -1 when out of memory (tbl is then not taken). */
int apisvcs_put(struct apisvcs *s, const char *name, struct toml_value *tbl,
		struct toml_value **old);
/* Takes the service out; returns its table (NULL: there was none). */
struct toml_value *apisvcs_take(struct apisvcs *s, const char *name);

/* The services as a TOML document of [server.services.NAME] (or client) tables. */
void apisvcs_toml(const struct apisvcs *s, bool server, struct buf *out);
/* Reads path (a missing file is an empty set). Returns 0, or -1 with a
 * message naming the file and line in err. */
int apisvcs_load(struct apisvcs *s, const char *path, bool server, char *err, size_t errlen);
/* Writes the set atomically (mode 0600: it holds tokens). Returns 0 or -1. */
int apisvcs_save(const struct apisvcs *s, const char *path, bool server, char *err,
		 size_t errlen);

/* A service name the API creates: 1 to 64 of A-Z a-z 0-9 _ - . */
bool apisvc_name_ok(const char *name);

#endif
