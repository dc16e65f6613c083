/* A minimal unit test harness: CHECK records a failure and continues,
 * check_report() prints a summary and returns the exit status. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ossl.h"

static int check_failures;
static int check_count;
static int check_reported;

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

/* A binary that ran no check at all failed too: its checks were skipped
 * (an early return, a missing data directory) or never written. */
static inline int check_report(const char *name)
{
	check_reported = 1;
	printf("%-16s %d checks, %d failed\n", name, check_count, check_failures);
	if (!check_count) {
		fprintf(stderr, "%s: no checks ran: that is a failure, not a pass\n", name);
		return 1;
	}
	return check_failures ? 1 : 0;
}

/* A main() that returns before check_report() (an early "return 0") has not
 * tested what it claims: the exit status becomes 1. */
static void check_at_exit(void)
{
	if (!check_reported) {
		fflush(stdout);
		fprintf(stderr, "check.h: exited without check_report(): %d checks, %d failed; "
			"that is a failure\n", check_count, check_failures);
		_exit(1);
	}
}

__attribute__((constructor)) static void check_register_exit(void)
{
	atexit(check_at_exit);
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
