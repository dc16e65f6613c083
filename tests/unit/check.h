/* A minimal unit test harness: CHECK records a failure and continues,
 * test_main_end() prints a summary and returns the exit status. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ossl.h"

static int check_failures;
static int check_count;

#define CHECK(cond) do { \
	check_count++; \
	if (!(cond)) { \
		check_failures++; \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	} \
} while (0)

#define CHECKF(cond, ...) do { \
	check_count++; \
	if (!(cond)) { \
		check_failures++; \
		fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
	} \
} while (0)

#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)
#define CHECK_STR(a, b) CHECKF(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))

static inline int check_report(const char *name)
{
	printf("%-16s %d checks, %d failed\n", name, check_count, check_failures);
	return check_failures ? 1 : 0;
}

/* For tests that call the noise, TLS or websocket code directly: OpenSSL
 * is loaded first, as transport_new() and --genkey do (src/ossl.h). */
static inline void load_openssl(void)
{
	char err[256];

	if (ossl_load(err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
}

/* Directory of the shared conformance data (../shared/testdata by default). */
static inline const char *testdata_dir(void)
{
	const char *d = getenv("TESTDATA");
	return d && *d ? d : "../shared/testdata";
}

#endif
