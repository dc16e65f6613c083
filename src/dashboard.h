/* The dashboard: a page, its stylesheet and its script, built into the
 * binary (src/dashboard/) and served by the admin API at GET /. */
#ifndef DASHBOARD_H
#define DASHBOARD_H

#include <stddef.h>

struct dashboard_file {
	const char *path;		/* "/", "/dashboard.css", "/dashboard.js" */
	const char *type;		/* its Content-Type */
	const char *data;
	size_t len;
};

/* The file served at this path (len bytes of path, no query), or NULL. */
const struct dashboard_file *dashboard_find(const char *path, size_t len);

/* The headers every dashboard file goes out with: a Content-Security-Policy
 * that allows nothing but this origin's own script, style and API (no
 * inline script or style, no frames, no form posts elsewhere). */
#define DASHBOARD_HEADERS \
	"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; " \
	"img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
	"frame-ancestors 'none'\r\n" \
	"X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n" \
	"Referrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n"

#endif
