/* The dashboard: a page, its stylesheet and its script, built into the
 * binary (src/dashboard/, gzip'ed by the build) and served by the admin API
 * at GET /. */
#ifndef DASHBOARD_H
#define DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct dashboard_file {
	const char *path;		/* "/", "/dashboard.css", "/dashboard.js" */
	const char *type;		/* its Content-Type */
	const char *data;
	size_t len;
	bool gzip;			/* data is gzip'ed */
};

/* The file served at this path (len bytes of path, no query), or NULL. */
const struct dashboard_file *dashboard_find(const char *path, size_t len);

/* The answer to a GET of the file: its status code, body, Content-Type and
 * extra headers. A gzip'ed file is sent as it is unless Accept-Encoding
 * (ae_len bytes; NULL when the request has none: anything goes) refuses
 * gzip; then "/" is a short uncompressed page that points to the API, the
 * other files a 406. Every answer carries a
 * Content-Security-Policy that allows nothing but this origin's own script,
 * style and API (no inline script or style, no frames, no form posts). */
int dashboard_answer(const struct dashboard_file *f, const char *ae, size_t ae_len,
		     struct buf *body, const char **type, const char **headers);

/* Whether an Accept-Encoding value takes gzip ("gzip", "x-gzip" or "*",
 * not with q=0). */
bool dashboard_accepts_gzip(const char *ae, size_t len);

#endif
