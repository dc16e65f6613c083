#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "events.h"

enum log_level log_level = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug", "trace" };
static const char *const level_tags[] = { "ERROR", " WARN", " INFO", "DEBUG", "TRACE" };

static int level_from_word(const char *w, size_t n, enum log_level *out)
{
	for (int i = 0; i <= LOG_TRACE; i++) {
		if (strlen(level_names[i]) == n && strncasecmp(w, level_names[i], n) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (n == 3 && strncasecmp(w, "off", 3) == 0) {
		*out = LOG_ERROR;	/* errors are always reported */
		return 0;
	}
	return -1;
}

/* Accepts env_logger-style directives: a bare level applies unless a
 * "rathole=<level>" directive names our target explicitly. */
int log_parse_level(const char *spec, enum log_level *out)
{
	enum log_level bare = LOG_INFO, ours = LOG_INFO;
	int have_bare = 0, have_ours = 0, bad = 0;
	const char *p = spec;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		enum log_level l;

		while (n && (*p == ' ')) { p++; n--; }
		while (n && p[n - 1] == ' ')
			n--;
		if (n == 0) {
			/* empty directive */
		} else if (!eq) {
			if (level_from_word(p, n, &l) == 0) { bare = l; have_bare = 1; }
			else bad = 1;
		} else {
			size_t tn = (size_t)(eq - p);
			if (level_from_word(eq + 1, n - tn - 1, &l) != 0)
				bad = 1;
			else if (tn == 7 && strncmp(p, "rathole", 7) == 0) { ours = l; have_ours = 1; }
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (have_ours)
		*out = ours;
	else if (have_bare)
		*out = bare;
	else
		return bad ? -1 : 0;
	return bad ? -1 : 0;
}

int log_init_from_env(void)
{
	const char *spec = getenv("RATHOLE_LOG");
	enum log_level l = LOG_INFO;

	if (!spec || !*spec)
		spec = getenv("RUST_LOG");
	if (!spec || !*spec)
		return 0;
	if (log_parse_level(spec, &l) != 0) {
		log_level = l;
		return -1;
	}
	log_level = l;
	return 0;
}

/* Done here rather than with gmtime_r(), which first loads the time zone
 * rules (TZ, /etc/localtime) that a UTC timestamp never needs. */
struct log_utc log_utc(int64_t t)
{
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	int64_t secs = t - days * 86400;
	/* Count from 0000-03-01 in 400-year eras of 146,097 days, so that
	 * the leap day is the last day of a year. */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;					/* 0..146096 */
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;	/* 0..399 */
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);		/* 0..365 */
	int64_t mp = (5 * doy + 2) / 153;				/* 0 = March */
	struct log_utc u;

	u.day = (int)(doy - (153 * mp + 2) / 5 + 1);
	u.month = (int)(mp < 10 ? mp + 3 : mp - 9);
	u.year = (int)(yoe + era * 400 + (u.month <= 2));
	u.hour = (int)(secs / 3600);
	u.min = (int)(secs / 60 % 60);
	u.sec = (int)(secs % 60);
	return u;
}

__attribute__((format(printf, 3, 0)))
static void vlog(enum log_level lvl, bool event, const char *fmt, va_list ap)
{
	char line[1024];
	struct timespec ts;
	struct log_utc u;
	int n, m;

	if (!event && !log_enabled(lvl))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	u = log_utc(ts.tv_sec);
	n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
		     u.year, u.month, u.day, u.hour, u.min, u.sec, ts.tv_nsec / 1000000,
		     level_tags[lvl]);
	m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	if (event)
		events_add(lvl, line + n);
	if (!log_enabled(lvl))
		return;
	n += m;
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	/* one write per line so lines from concurrent writers never interleave */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, lvl <= LOG_WARN, fmt, ap);
	va_end(ap);
}

void log_event(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_INFO, true, fmt, ap);
	va_end(ap);
}
