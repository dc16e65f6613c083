/* The dashboard's files, included as they are by the assembler (.incbin):
 * no generator, no xxd, nothing the build does not already have, and the
 * same for gcc, clang and the cross compilers. The paths are relative to
 * the directory make runs in (the repository's root); the Makefile makes
 * this object depend on src/dashboard/. */
#include "dashboard.h"

#include <string.h>

#ifndef RATHOLE_NO_DASHBOARD

#define EMBED(sym, file) \
	__asm__(".section .rodata\n" \
		".balign 16\n" \
		".globl " #sym "\n" #sym ":\n" \
		".incbin \"" file "\"\n" \
		".globl " #sym "_end\n" #sym "_end:\n" \
		".byte 0\n" \
		".previous\n"); \
	extern const char sym[] __attribute__((visibility("hidden"))); \
	extern const char sym##_end[] __attribute__((visibility("hidden")))

EMBED(rathole_dashboard_html, "src/dashboard/index.html");
EMBED(rathole_dashboard_css, "src/dashboard/dashboard.css");
EMBED(rathole_dashboard_js, "src/dashboard/dashboard.js");

const struct dashboard_file *dashboard_find(const char *path, size_t len)
{
	static struct dashboard_file files[] = {
		{ "/", "text/html; charset=utf-8", NULL, 0 },
		{ "/dashboard.css", "text/css; charset=utf-8", NULL, 0 },
		{ "/dashboard.js", "text/javascript; charset=utf-8", NULL, 0 },
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
		"/", "text/html; charset=utf-8", page, sizeof page - 1
	};

	return len == 1 && path[0] == '/' ? &file : NULL;
}

#endif
