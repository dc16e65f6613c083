#include "events.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

struct event {
	int64_t time;
	enum log_level level;
	char msg[EVENT_MSG_MAX];
};

/* The ring: next is where the next event goes, count how many are kept. The
 * loop is the only writer today; the lock keeps it right if a worker thread
 * ever logs a warning. */
static struct {
	pthread_mutex_t lock;
	struct event ev[EVENTS_MAX];
	size_t next, count;
} R = { .lock = PTHREAD_MUTEX_INITIALIZER };

void events_add(enum log_level lvl, const char *msg)
{
	struct event *e;
	size_t i;

	pthread_mutex_lock(&R.lock);
	e = &R.ev[R.next];
	e->time = (int64_t)time(NULL);
	e->level = lvl <= LOG_ERROR ? LOG_ERROR : lvl <= LOG_WARN ? LOG_WARN : LOG_INFO;
	/* ASCII only: a message may carry a peer's bytes, and the JSON must
	 * stay valid UTF-8 */
	for (i = 0; msg[i] && i < sizeof e->msg - 1; i++)
		e->msg[i] = (unsigned char)msg[i] < 0x20 || (unsigned char)msg[i] > 0x7e ? '?' : msg[i];
	e->msg[i] = '\0';
	R.next = (R.next + 1) % EVENTS_MAX;
	if (R.count < EVENTS_MAX)
		R.count++;
	pthread_mutex_unlock(&R.lock);
}

void events_json(struct buf *out)
{
	static const char *const names[] = { "error", "warn", "info" };

	pthread_mutex_lock(&R.lock);
	buf_printf(out, "{\"events\": [");
	for (size_t k = 0; k < R.count; k++) {
		const struct event *e = &R.ev[(R.next + EVENTS_MAX - R.count + k) % EVENTS_MAX];
		buf_printf(out, "%s\n  {\"time\": %lld, \"level\": \"%s\", \"message\": ",
			   k ? "," : "", (long long)e->time, names[e->level]);
		buf_json_string(out, e->msg);
		buf_printf(out, "}");
	}
	buf_printf(out, "\n]}\n");
	pthread_mutex_unlock(&R.lock);
}

void events_clear(void)
{
	pthread_mutex_lock(&R.lock);
	R.next = R.count = 0;
	pthread_mutex_unlock(&R.lock);
}
