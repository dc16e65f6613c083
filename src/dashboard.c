/* The dashboard's files, gzip'ed by the build (gzip -9n, into build/dashboard/)
 * and included as they are by the assembler (.incbin): no generator, no xxd,
 * and the same for gcc, clang and the cross compilers. The path is relative
 * to the directory make runs in (the repository's root); the Makefile makes
 * this object depend on the .gz files. Every browser takes gzip: the files
 * cost the binary a third of their size. */
#include "dashboard.h"

#include <string.h>
#include <strings.h>

#define CSP_HEADERS \
	"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; " \
	"img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
	"frame-ancestors 'none'\r\n" \
	"X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n" \
	"Referrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n"

#ifndef RATHOLE_NO_DASHBOARD

#ifndef DASHBOARD_DIR
#define DASHBOARD_DIR "build/dashboard"
#endif

#define EMBED(sym, file) \
	__asm__(".section .rodata\n" \
		".balign 16\n" \
		".globl " #sym "\n" #sym ":\n" \
		".incbin \"" DASHBOARD_DIR "/" file "\"\n" \
		".globl " #sym "_end\n" #sym "_end:\n" \
		".byte 0\n" \
		".previous\n"); \
	extern const char sym[] __attribute__((visibility("hidden"))); \
	extern const char sym##_end[] __attribute__((visibility("hidden")))

EMBED(rathole_dashboard_html, "index.html.gz");
EMBED(rathole_dashboard_css, "dashboard.css.gz");
EMBED(rathole_dashboard_js, "dashboard.js.gz");

const struct dashboard_file *dashboard_find(const char *path, size_t len)
{
	static struct dashboard_file files[] = {
		{ "/", "text/html; charset=utf-8", NULL, 0, true },
		{ "/dashboard.css", "text/css; charset=utf-8", NULL, 0, true },
		{ "/dashboard.js", "text/javascript; charset=utf-8", NULL, 0, true },
	};

	if (!files[0].data) {
		/* the symbols' difference is no C constant: filled in once */
		const char *start[] = { rathole_dashboard_html, rathole_dashboard_css,
					rathole_dashboard_js };
		const char *end[] = { rathole_dashboard_html_end, rathole_dashboard_css_end,
				      rathole_dashboard_js_end };
		for (size_t i = 0; i < 3; i++) {
			files[i].data = start[i];
			files[i].len = (size_t)(end[i] - start[i]);
		}
	}
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (strlen(files[i].path) == len && memcmp(files[i].path, path, len) == 0)
			return &files[i];
	return NULL;
}

#else

/* make DASHBOARD=0: a page that says where the dashboard went */
const struct dashboard_file *dashboard_find(const char *path, size_t len)
{
	static const char page[] = "<!doctype html>\n<title>rathole</title>\n"
		"<p>This build of rathole leaves the dashboard out (make DASHBOARD=0).\n"
		"<p>The API is here: /api/status, /api/events, /metrics.\n";
	static const struct dashboard_file file = {
		"/", "text/html; charset=utf-8", page, sizeof page - 1, false
	};

	return len == 1 && path[0] == '/' ? &file : NULL;
}

#endif

/* The q value of one Accept-Encoding element's parameters: 0 only for
 * "q=0", "q=0.", "q=0.0", ... */
static bool q_zero(const char *p, const char *end)
{
	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *e = semi ? semi : end;

		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		if (e - p >= 2 && (*p == 'q' || *p == 'Q') && p[1] == '=') {
			for (p += 2; p < e && *p != ' ' && *p != '\t'; p++)
				if (*p != '0' && *p != '.')
					return false;
			return true;
		}
		p = semi ? semi + 1 : end;
	}
	return false;
}

bool dashboard_accepts_gzip(const char *ae, size_t len)
{
	const char *p = ae, *end = ae + len;

	while (ae && p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *e = comma ? comma : end, *t, *te;

		for (t = p; t < e && (*t == ' ' || *t == '\t'); t++)
			;
		for (te = t; te < e && *te != ';' && *te != ' ' && *te != '\t'; te++)
			;
		if (((te - t == 4 && strncasecmp(t, "gzip", 4) == 0) ||
		     (te - t == 6 && strncasecmp(t, "x-gzip", 6) == 0) ||
		     (te - t == 1 && *t == '*')) && !q_zero(te, e))
			return true;
		p = comma ? comma + 1 : end;
	}
	return false;
}

/* The page for a client that refuses gzip (a script, wget): no dashboard
 * (there is no uncompressed copy), but where the API is. */
static const char no_gzip_page[] = "<!doctype html>\n<title>rathole</title>\n"
	"<p>The dashboard is kept gzip-compressed in rathole and this client refuses gzip "
	"(Accept-Encoding): open this address in a web browser.\n"
	"<p>The API answers any client: <a href=\"api/status\">/api/status</a>, "
	"<a href=\"api/services\">/api/services</a>, <a href=\"api/events\">/api/events</a>, "
	"<a href=\"metrics\">/metrics</a> (with the bearer token when one is set).\n";

int dashboard_answer(const struct dashboard_file *f, const char *ae, size_t ae_len,
		     struct buf *body, const char **type, const char **headers)
{
	/* no Accept-Encoding at all: any coding is acceptable (RFC 9110, 12.5.3) */
	if (f->gzip && ae && !dashboard_accepts_gzip(ae, ae_len)) {
		*headers = "Vary: Accept-Encoding\r\n" CSP_HEADERS;
		if (f->path[1] == '\0') {
			buf_append(body, no_gzip_page, sizeof no_gzip_page - 1);
			*type = "text/html; charset=utf-8";
			return 200;
		}
		buf_printf(body, "the dashboard is sent gzip-compressed (Accept-Encoding: gzip); "
			   "open it in a web browser\n");
		*type = "text/plain; charset=utf-8";
		return 406;
	}
	buf_append(body, f->data, f->len);
	*type = f->type;
	*headers = f->gzip ? "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n" CSP_HEADERS
			   : CSP_HEADERS;
	return 200;
}
