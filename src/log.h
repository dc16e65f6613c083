/* Logging: one timestamped line per event on stderr.
 * The level comes from RATHOLE_LOG, or RUST_LOG for drop-in compatibility with
 * the reference ("info", "debug", "rathole=trace", "warn,rathole=debug"). */
#ifndef LOG_H
#define LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

extern enum log_level log_level;

/* Reads RATHOLE_LOG / RUST_LOG. Returns -1 (and keeps "info") when the value
 * is not understood, so the caller can warn once. */
int log_init_from_env(void);
int log_parse_level(const char *spec, enum log_level *out);

/* A time in seconds since the epoch, in the proleptic Gregorian calendar
 * (UTC): the timestamp of every log line. */
struct log_utc { int year, month, day, hour, min, sec; };
struct log_utc log_utc(int64_t t);

/* Writes the line when lvl is enabled. Warnings and errors also go to the
 * event log (events.h) whatever the level, so the macros below always call
 * log_msg() for them. */
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* An info line that also goes to the event log: what an operator looks for
 * after the fact (reloads, services added or removed). */
void log_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_enabled(lvl) ((lvl) <= log_level)
#define LOG_AT(lvl, ...) do { if (log_enabled(lvl)) log_msg(lvl, __VA_ARGS__); } while (0)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)
#define log_trace(...) LOG_AT(LOG_TRACE, __VA_ARGS__)

#endif
