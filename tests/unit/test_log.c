/* Logging: the level specs of RATHOLE_LOG / RUST_LOG, and the UTC timestamp
 * of each line against the C library's gmtime_r(). */
#include <stdint.h>
#include <time.h>

#include "check.h"
#include "log.h"

static void check_utc(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	struct log_utc u = log_utc(t);

	if ((int64_t)tt != t)
		return;		/* a 32-bit time_t (armhf) cannot say: see test_utc_fixed() */
	if (!gmtime_r(&tt, &tm)) {
		CHECKF(0, "gmtime_r(%lld) failed", (long long)t);
		return;
	}
	CHECKF(u.year == tm.tm_year + 1900 && u.month == tm.tm_mon + 1 && u.day == tm.tm_mday &&
	       u.hour == tm.tm_hour && u.min == tm.tm_min && u.sec == tm.tm_sec,
	       "%lld: %04d-%02d-%02d %02d:%02d:%02d, gmtime_r %04d-%02d-%02d %02d:%02d:%02d",
	       (long long)t, u.year, u.month, u.day, u.hour, u.min, u.sec, tm.tm_year + 1900,
	       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Known dates, checked without the C library (its time_t may be 32 bits),
 * then each against gmtime_r() where it can say. */
static void test_utc_fixed(void)
{
	static const struct { int64_t t; struct log_utc u; } known[] = {
		{ 0, { 1970, 1, 1, 0, 0, 0 } },
		{ -1, { 1969, 12, 31, 23, 59, 59 } },
		{ 86399, { 1970, 1, 1, 23, 59, 59 } },
		{ -86401, { 1969, 12, 30, 23, 59, 59 } },
		{ 951782400, { 2000, 2, 29, 0, 0, 0 } },	/* leap: divisible by 400 */
		{ 1709164800, { 2024, 2, 29, 0, 0, 0 } },
		{ 1796124245, { 2026, 12, 1, 11, 24, 5 } },	/* when this test was written */
		{ 4107456000LL, { 2100, 2, 28, 0, 0, 0 } },
		{ 4107542400LL, { 2100, 3, 1, 0, 0, 0 } },	/* 2100 is no leap year */
		{ -2208988800LL, { 1900, 1, 1, 0, 0, 0 } },
		{ -5364662400LL, { 1800, 1, 1, 0, 0, 0 } },
		{ 253402300799LL, { 9999, 12, 31, 23, 59, 59 } },
	};

	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		struct log_utc u = log_utc(known[i].t), w = known[i].u;

		CHECKF(u.year == w.year && u.month == w.month && u.day == w.day &&
		       u.hour == w.hour && u.min == w.min && u.sec == w.sec,
		       "%lld: %04d-%02d-%02d %02d:%02d:%02d", (long long)known[i].t, u.year,
		       u.month, u.day, u.hour, u.min, u.sec);
		check_utc(known[i].t);
	}
}

/* Every day from 1800 to 2300, at a time of day that moves. */
static void test_utc_days(void)
{
	for (int64_t t = -5364662400LL, k = 0; t < 10413792000LL; t += 86400, k++)
		check_utc(t + k * 7919 % 86400);
}

static void test_levels(void)
{
	enum log_level l = LOG_INFO;

	CHECK(log_parse_level("debug", &l) == 0 && l == LOG_DEBUG);
	CHECK(log_parse_level("WARN", &l) == 0 && l == LOG_WARN);
	CHECK(log_parse_level("rathole=trace", &l) == 0 && l == LOG_TRACE);
	CHECK(log_parse_level("warn,rathole=debug", &l) == 0 && l == LOG_DEBUG);
	l = LOG_INFO;
	CHECK(log_parse_level("loud", &l) == -1 && l == LOG_INFO);
}

int main(void)
{
	test_utc_fixed();
	test_utc_days();
	test_levels();
	return check_report("test_log");
}
