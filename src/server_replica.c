/* A service's client, as the server sees it: the authenticated control
 * channel (heartbeats, CreateDataChannel requests, noticing the client
 * leave) and the pool of idle data channels the client opened in advance. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "server_int.h"
#include "transport.h"

#define MAX_POOLED		(2 * TCP_POOL_SIZE) /* idle data channels kept per service */

/* ---- the control channel ---- */

void ctrl_free(struct ctrl *c)
{
	if (!c)
		return;
	loop_unwatch(c->svc->srv->loop, &c->w);
	loop_undefer(c->svc->srv->loop, &c->flush);
	timer_stop(c->svc->srv->loop, &c->heartbeat);
	stream_free(c->s);
	free(c);
}

/* The control channel failed or closed: the service is down until the
 * client comes back. */
static void ctrl_lost(struct ctrl *c, const char *why)
{
	struct sservice *svc = c->svc;

	log_info("service %s: control channel from %s closed (%s)", svc->cfg->name, c->peer, why);
	service_down(svc);
}

static void ctrl_update_interest(struct ctrl *c)
{
	/* EPOLLIN to notice the client leaving; plus whatever the transport's
	 * last read waited for (TLS may need the socket writable to read) */
	watch_stream(c->svc->srv->loop, &c->w, c->s, EPOLLIN | c->s->want);
}

static void ctrl_arm_heartbeat(struct ctrl *c)
{
	int secs = c->svc->srv->cfg->heartbeat_interval;

	if (secs > 0)
		timer_start(c->svc->srv->loop, &c->heartbeat, (uint64_t)secs * 1000);
}

/* Returns -1 when the channel broke (and is gone). */
static int ctrl_send(struct ctrl *c, enum control_cmd cmd)
{
	uint8_t b[PROTO_CMD_LEN];

	proto_encode_u32(b, cmd);
	if (stream_send(c->s, b, sizeof b) < 0) {
		ctrl_lost(c, c->s->err);
		return -1;
	}
	ctrl_arm_heartbeat(c);
	ctrl_update_interest(c);
	return 0;
}

static void on_ctrl_flush(struct loop *l, struct deferred *df)
{
	struct ctrl *c = container_of(df, struct ctrl, flush);

	if (stream_flush(c->s) == ST_ERROR) {
		ctrl_lost(c, c->s->err);
		return;
	}
	ctrl_update_interest(c);
}

/* The requests of one turn of the loop (a burst of visitors) go out in one
 * write, flushed after the turn's events: a syscall and a TCP segment per
 * burst instead of per visitor, on both sides. */
int ctrl_request_channels(struct sservice *svc, int n)
{
	struct ctrl *c = svc->ctrl;
	uint8_t b[PROTO_CMD_LEN];

	if (!c)
		return -1;
	proto_encode_u32(b, CMD_CREATE_DATA_CHANNEL);
	for (int i = 0; i < n; i++) {
		if (stream_queue(c->s, b, sizeof b) < 0) {
			ctrl_lost(c, c->s->err);
			return -1;
		}
	}
	ctrl_arm_heartbeat(c);
	loop_defer(svc->srv->loop, &c->flush);
	return 0;
}

static void on_heartbeat(struct loop *l, struct timer *t)
{
	struct ctrl *c = container_of(t, struct ctrl, heartbeat);

	log_trace("service %s: heartbeat", c->svc->cfg->name);
	ctrl_send(c, CMD_HEARTBEAT);
}

static void on_ctrl_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct ctrl *c = container_of(w, struct ctrl, w);
	const uint8_t *p;
	ssize_t n;

	if (stream_flush(c->s) == ST_ERROR) {
		ctrl_lost(c, c->s->err);
		return;
	}
	/* The client never talks after Auth; reading only tells us it is gone.
	 * Anything it does send is discarded, so it cannot fill our memory. */
	for (int i = 0; i < 4; i++) {
		n = stream_peek(c->s, &p);
		if (n == ST_AGAIN)
			break;
		if (n == 0) {
			ctrl_lost(c, "closed by the client");
			return;
		}
		if (n < 0) {
			ctrl_lost(c, c->s->err);
			return;
		}
		stream_consume(c->s, (size_t)n);
	}
	stream_trim(c->s);
	ctrl_update_interest(c);
}

struct ctrl *ctrl_new(struct sservice *svc, struct stream *s, const uint8_t *session_key,
		      const char *peer)
{
	struct ctrl *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->svc = svc;
	c->s = s;
	memcpy(c->session_key, session_key, sizeof c->session_key);
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	stream_trim(c->s);
	watcher_init(&c->w, c->s->fd, on_ctrl_event);
	timer_init(&c->heartbeat, on_heartbeat);
	deferred_init(&c->flush, on_ctrl_flush);
	ctrl_arm_heartbeat(c);
	ctrl_update_interest(c);
	return c;
}

/* ---- the pool of idle data channels ---- */

static void pooled_free(struct pooled *pc)
{
	struct sservice *svc = pc->svc;

	list_del(&pc->link);
	svc->npool--;
	loop_unwatch(svc->srv->loop, &pc->w);
	stream_free(pc->s);
	free(pc);
}

void drop_pool(struct sservice *svc)
{
	while (!list_empty(&svc->pool))
		pooled_free(list_first(&svc->pool, struct pooled, link));
}

struct stream *service_take_pooled(struct sservice *svc)
{
	struct pooled *pc;
	struct stream *s;

	if (list_empty(&svc->pool))
		return NULL;
	pc = list_first(&svc->pool, struct pooled, link);
	s = pc->s;
	pc->s = NULL;
	pooled_free(pc);
	return s;
}

/* An idle pooled channel became readable: the client closed it (or sent
 * bytes early, which we keep for the visitor and stop watching). */
static void on_pooled_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct pooled *pc = container_of(w, struct pooled, w);
	const uint8_t *p;
	ssize_t n = stream_peek(pc->s, &p);

	if (n == ST_AGAIN) {
		loop_watch(l, w, pc->s->want);
		return;
	}
	if (n > 0) {
		loop_watch(l, w, 0);
		return;
	}
	log_debug("service %s: pooled data channel closed by the client", pc->svc->cfg->name);
	pooled_free(pc);
}

void pool_add(struct sservice *svc, struct stream *s)
{
	struct pooled *pc;

	if (svc->npool >= MAX_POOLED || !(pc = calloc(1, sizeof *pc))) {
		log_debug("service %s: data channel pool full; closing a channel", svc->cfg->name);
		stream_free(s);
		return;
	}
	pc->svc = svc;
	pc->s = s;
	stream_trim(s);
	watcher_init(&pc->w, s->fd, on_pooled_event);
	loop_watch(svc->srv->loop, &pc->w, EPOLLIN | EPOLLRDHUP);
	list_add_tail(&svc->pool, &pc->link);
	svc->npool++;
}
