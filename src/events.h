/* The event log behind GET /api/events: the last EVENTS_MAX reloads,
 * warnings and errors, for the dashboard. Fed by log.c (every warning and
 * error, and what log_event() says at info), whatever the log level; bounded:
 * the oldest event goes when a new one comes. */
#ifndef EVENTS_H
#define EVENTS_H

#include "buf.h"
#include "log.h"

#define EVENTS_MAX	100
#define EVENT_MSG_MAX	240	/* longer messages are cut */

void events_add(enum log_level lvl, const char *msg);
/* {"events": [{"time": unix_seconds, "level": "info", "message": "..."}, ...]}
 * oldest first. */
void events_json(struct buf *out);
/* Forgets every event (unit tests). */
void events_clear(void);

#endif
