/* The dashboard's files as built in (gzip'ed, found by path, not by a
 * prefix) and the Accept-Encoding values that take them. */
#include <string.h>

#include "buf.h"
#include "check.h"
#include "dashboard.h"

static void test_accepts_gzip(void)
{
	static const struct { const char *v; bool ok; } cases[] = {
		{ "gzip", true }, { "GZIP", true }, { "gzip, deflate, br", true },
		{ "deflate, gzip;q=0.8", true }, { "br,x-gzip", true }, { "*", true },
		{ " gzip ; q=1", true }, { "gzip;q=0.001", true },
		{ "", false }, { "identity", false }, { "deflate, br", false },
		{ "gzip;q=0", false }, { "gzip; q=0.000", false }, { "gzipx", false },
		{ "x-gzipped", false }, { "*;q=0", false }, { "gzi", false },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		CHECKF(dashboard_accepts_gzip(cases[i].v, strlen(cases[i].v)) == cases[i].ok,
		       "\"%s\"", cases[i].v);
	CHECK(!dashboard_accepts_gzip(NULL, 0));
}

#ifndef RATHOLE_NO_DASHBOARD
static void test_files(void)
{
	static const char *const paths[] = { "/", "/dashboard.css", "/dashboard.js" };
	struct buf b = { 0 };
	const char *type, *headers;

	for (size_t i = 0; i < 3; i++) {
		const struct dashboard_file *f = dashboard_find(paths[i], strlen(paths[i]));

		CHECKF(f != NULL, "%s", paths[i]);
		if (!f)
			continue;
		/* gzip's magic, and no more than the "few tens of KiB" */
		CHECK(f->gzip && f->len > 100 && f->len < 32768);
		CHECK((unsigned char)f->data[0] == 0x1f && (unsigned char)f->data[1] == 0x8b);
		CHECK(dashboard_answer(f, "gzip", 4, &b, &type, &headers) == 200);
		CHECK(b.len == f->len && memcmp(b.p, f->data, f->len) == 0);
		CHECK(strstr(headers, "Content-Encoding: gzip\r\n") != NULL);
		CHECK(strstr(headers, "Content-Security-Policy: default-src 'none'; ") != NULL);
		buf_free(&b);
		/* no Accept-Encoding: any coding is acceptable (RFC 9110) */
		CHECK(dashboard_answer(f, NULL, 0, &b, &type, &headers) == 200);
		CHECK(b.len == f->len && strstr(headers, "Content-Encoding: gzip\r\n") != NULL);
		buf_free(&b);
		/* gzip refused: the page says where the API is, the others 406 */
		CHECK(dashboard_answer(f, "br", 2, &b, &type, &headers) == (i == 0 ? 200 : 406));
		CHECK(strstr(headers, "Content-Encoding") == NULL && strstr(b.p, "gzip") != NULL);
		CHECK(i != 0 || (strstr(b.p, "api/status") && strncmp(type, "text/html", 9) == 0));
		buf_free(&b);
		CHECK(dashboard_answer(f, "", 0, &b, &type, &headers) == (i == 0 ? 200 : 406));
		CHECK(strstr(headers, "Content-Encoding") == NULL);
		buf_free(&b);
	}
	CHECK(dashboard_find("/dashboard", 10) == NULL);
	CHECK(dashboard_find("/dashboard.jsx", 14) == NULL);
	CHECK(dashboard_find("", 0) == NULL);
	CHECK(dashboard_find("/index.html", 11) == NULL);
}
#else
/* make DASHBOARD=0: a plain page that says so, nothing else */
static void test_files(void)
{
	const struct dashboard_file *f = dashboard_find("/", 1);
	struct buf b = { 0 };
	const char *type, *headers;

	CHECK(f && !f->gzip && strstr(f->data, "DASHBOARD=0"));
	CHECK(f && dashboard_answer(f, NULL, 0, &b, &type, &headers) == 200);
	buf_free(&b);
	CHECK(dashboard_find("/dashboard.js", 13) == NULL);
}
#endif

int main(void)
{
	test_accepts_gzip();
	test_files();
	return check_report("test_dashboard");
}
