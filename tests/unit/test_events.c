/* The event log behind GET /api/events: bounded to EVENTS_MAX (oldest out
 * first), valid JSON whatever the message holds, warnings and errors fed by
 * the log whatever its level, and log_event() lines at info. */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "events.h"
#include "json.h"
#include "log.h"

static struct json *events_now(void)
{
	struct buf b = { 0 };
	struct json *j;

	events_json(&b);
	CHECK(!b.oom);
	j = json_parse(b.p, b.len);
	CHECKF(j != NULL, "not JSON: %s", b.p);
	buf_free(&b);
	return j;
}

static struct json *event_list(struct json *j)
{
	struct json *ev = j ? json_get(j, "events") : NULL;

	CHECK(ev && ev->type == JSON_ARRAY);
	return ev && ev->type == JSON_ARRAY ? ev : NULL;
}

static void test_ring(void)
{
	char msg[32];
	struct json *j, *ev;

	events_clear();
	j = events_now();
	ev = event_list(j);
	CHECK(ev && ev->len == 0);
	json_free(j);
	for (int i = 0; i < EVENTS_MAX + 25; i++) {
		snprintf(msg, sizeof msg, "event %d", i);
		events_add(i % 2 ? LOG_WARN : LOG_ERROR, msg);
	}
	j = events_now();
	ev = event_list(j);
	if (ev) {
		CHECKF(ev->len == EVENTS_MAX, "%zu events kept", ev->len);
		/* the 25 oldest went, the rest in order */
		for (size_t i = 0; i < ev->len; i++) {
			struct json *m = json_get(ev->items[i], "message");
			struct json *l = json_get(ev->items[i], "level");
			struct json *t = json_get(ev->items[i], "time");

			snprintf(msg, sizeof msg, "event %zu", i + 25);
			CHECK(m && m->type == JSON_STRING && strcmp(m->str, msg) == 0);
			CHECK(l && strcmp(l->str, (i + 25) % 2 ? "warn" : "error") == 0);
			CHECK(t && t->type == JSON_NUMBER && strtoll(t->str, NULL, 10) > 1600000000);
		}
	}
	json_free(j);
}

static void test_hostile_and_long(void)
{
	char big[EVENT_MSG_MAX * 2];
	struct json *j, *ev;

	events_clear();
	events_add(LOG_WARN, "quote \" backslash \\ newline \n tab \t byte \xff\xfe end");
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	events_add(LOG_INFO, big);
	j = events_now();
	ev = event_list(j);
	if (ev && ev->len == 2) {
		struct json *m0 = json_get(ev->items[0], "message");
		struct json *m1 = json_get(ev->items[1], "message");

		CHECK(m0 && strcmp(m0->str, "quote \" backslash \\ newline ? tab ? byte ?? end") == 0);
		CHECK(m1 && m1->len == EVENT_MSG_MAX - 1);
		CHECK(strcmp(json_get(ev->items[1], "level")->str, "info") == 0);
	} else {
		CHECK(0);
	}
	json_free(j);
}

/* Warnings and errors reach the ring even when the log level hides them;
 * plain info lines do not, log_event() lines do. */
static void test_from_log(void)
{
	enum log_level saved = log_level;
	struct json *j, *ev;

	events_clear();
	log_level = LOG_ERROR;
	log_warn("a warning nobody %s", "printed");
	log_info("plain info");
	log_event("service %s: added by the reload", "web");
	log_level = saved;
	j = events_now();
	ev = event_list(j);
	CHECKF(ev && ev->len == 2, "%zu events", ev ? ev->len : 0);
	if (ev && ev->len == 2) {
		CHECK_STR(json_get(ev->items[0], "message")->str, "a warning nobody printed");
		CHECK_STR(json_get(ev->items[0], "level")->str, "warn");
		CHECK_STR(json_get(ev->items[1], "message")->str, "service web: added by the reload");
		CHECK_STR(json_get(ev->items[1], "level")->str, "info");
	}
	json_free(j);
	events_clear();
}

int main(void)
{
	test_ring();
	test_hostile_and_long();
	test_from_log();
	return check_report("test_events");
}
