#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

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

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_tags[lvl]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	/* one write per line so lines from concurrent writers never interleave */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}
