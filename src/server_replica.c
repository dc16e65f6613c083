/* A service's client, as the server sees it: a replica. Its authenticated
 * control channel (heartbeats, CreateDataChannel requests, noticing the
 * client leave), the pool of idle data channels the client opened in
 * advance, and the connections forwarded through it. Which replica serves
 * a visitor is the service's business (server_service.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "protocol.h"
#include "relay.h"
#include "server_int.h"
#include "transport.h"

#define MAX_POOLED		(2 * TCP_POOL_SIZE) /* idle data channels kept per replica */

static void drop_pool(struct replica *r);

/* ---- the control channel ---- */

static void ctrl_close(struct replica *r)
{
	struct loop *l = r->svc->srv->loop;

	if (!r->s)
		return;
	loop_unwatch(l, &r->w);
	loop_undefer(l, &r->flush);
	timer_stop(l, &r->heartbeat);
	stream_free(r->s);
	r->s = NULL;
}

void replica_leave(struct replica *r, const char *why)
{
	struct sservice *svc = r->svc;

	if (!r->s)
		return;
	/* (why may be the stream's error text: it goes with the stream) */
	if (why && svc->cfg->has_balance)
		log_info("service %s: control channel from %s closed (%s); %zu replica%s left",
			 svc->cfg->name, r->peer, why, svc->nreplicas - 1,
			 svc->nreplicas == 2 ? "" : "s");
	else if (why)
		log_info("service %s: control channel from %s closed (%s)", svc->cfg->name, r->peer,
			 why);
	ctrl_close(r);
	drop_pool(r);
	if (svc->cfg->type == SERVICE_UDP)
		udp_replica_drop(r);
	list_del(&r->link);
	svc->nreplicas--;
	if (svc->rr_last == r)
		svc->rr_last = NULL;
	/* connections in flight through it keep running: it stays for them */
	if (r->nactive)
		list_add_tail(&svc->gone, &r->link);
	service_replica_gone(svc);
	if (!r->nactive)
		replica_free(r);
}

void replica_free(struct replica *r)
{
	if (!r)
		return;
	ctrl_close(r);
	drop_pool(r);
	if (r->svc->cfg->type == SERVICE_UDP)
		udp_replica_drop(r);
	while (!list_empty(&r->relays))
		relay_free(relay_from_link(r->relays.next));
	list_del(&r->link);
	free(r);
}

static void ctrl_update_interest(struct replica *r)
{
	/* EPOLLIN to notice the client leaving; plus whatever the transport's
	 * last read waited for (TLS may need the socket writable to read) */
	watch_stream(r->svc->srv->loop, &r->w, r->s, EPOLLIN | r->s->want);
}

static void ctrl_arm_heartbeat(struct replica *r)
{
	int secs = r->svc->srv->cfg->heartbeat_interval;

	if (secs > 0)
		timer_start(r->svc->srv->loop, &r->heartbeat, (uint64_t)secs * 1000);
}

/* Returns -1 when the channel broke (and the replica has left). */
static int ctrl_send(struct replica *r, enum control_cmd cmd)
{
	uint8_t b[PROTO_CMD_LEN];

	proto_encode_u32(b, cmd);
	if (stream_send(r->s, b, sizeof b) < 0) {
		replica_leave(r, r->s->err);
		return -1;
	}
	ctrl_arm_heartbeat(r);
	ctrl_update_interest(r);
	return 0;
}

static void on_ctrl_flush(struct loop *l, struct deferred *df)
{
	struct replica *r = container_of(df, struct replica, flush);

	if (stream_flush(r->s) == ST_ERROR) {
		replica_leave(r, r->s->err);
		return;
	}
	ctrl_update_interest(r);
}

/* The requests of one turn of the loop (a burst of visitors) go out in one
 * write, flushed after the turn's events: a syscall and a TCP segment per
 * burst instead of per visitor, on both sides. */
int replica_request_channels(struct replica *r, int n)
{
	uint8_t b[PROTO_CMD_LEN];

	if (!r || !r->s)
		return -1;
	proto_encode_u32(b, CMD_CREATE_DATA_CHANNEL);
	for (int i = 0; i < n; i++) {
		if (stream_queue(r->s, b, sizeof b) < 0) {
			replica_leave(r, r->s->err);
			return -1;
		}
		r->requested++;
	}
	ctrl_arm_heartbeat(r);
	loop_defer(r->svc->srv->loop, &r->flush);
	return 0;
}

static void on_heartbeat(struct loop *l, struct timer *t)
{
	struct replica *r = container_of(t, struct replica, heartbeat);

	log_trace("service %s: heartbeat to %s", r->svc->cfg->name, r->peer);
	ctrl_send(r, CMD_HEARTBEAT);
}

static void on_ctrl_event(struct loop *l, struct watcher *w, uint32_t events)
{
	struct replica *r = container_of(w, struct replica, w);
	const uint8_t *p;
	ssize_t n;

	if (stream_flush(r->s) == ST_ERROR) {
		replica_leave(r, r->s->err);
		return;
	}
	/* The client never talks after Auth; reading only tells us it is gone.
	 * Anything it does send is discarded, so it cannot fill our memory. */
	for (int i = 0; i < 4; i++) {
		n = stream_peek(r->s, &p);
		if (n == ST_AGAIN)
			break;
		if (n == 0) {
			replica_leave(r, "closed by the client");
			return;
		}
		if (n < 0) {
			replica_leave(r, r->s->err);
			return;
		}
		stream_consume(r->s, (size_t)n);
	}
	stream_trim(r->s);
	ctrl_update_interest(r);
}

/* A client whose network vanished without a word (a cut, a host that lost
 * power) sends neither FIN nor reset, and its client never talks on the
 * control channel: only TCP can tell. Keepalive probes start after
 * keepalive_secs of silence, but a heartbeat or a CreateDataChannel left
 * unacknowledged stops them, and retransmissions then take the kernel
 * about 15 minutes to give up - during which visitors would be sent to a
 * replica that is gone. So the control channel fails once what we sent, or
 * our probes, stay unanswered for keepalive_secs + keepalive_interval
 * (28 s by default): a replica lost this way leaves within about that
 * much, twice that at worst (docs/ha.md). Data channels are left as they
 * were: a visitor's slow connection is its own business. */
static void ctrl_bound_silence(struct replica *r)
{
	const struct tcp_config *t = &r->svc->srv->tr->cfg->tcp;

	if (t->keepalive_secs > 0)
		net_set_user_timeout(r->s->fd, (unsigned)(t->keepalive_secs +
					    (t->keepalive_interval > 0 ? t->keepalive_interval : 0)) * 1000u);
}

struct replica *replica_new(struct sservice *svc, struct stream *s, const uint8_t *session_key,
			    const char *peer)
{
	struct replica *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->svc = svc;
	r->s = s;
	memcpy(r->session_key, session_key, sizeof r->session_key);
	snprintf(r->peer, sizeof r->peer, "%s", peer);
	list_init(&r->link);
	list_init(&r->pool);
	list_init(&r->relays);
	ctrl_bound_silence(r);
	stream_trim(r->s);
	watcher_init(&r->w, r->s->fd, on_ctrl_event);
	timer_init(&r->heartbeat, on_heartbeat);
	deferred_init(&r->flush, on_ctrl_flush);
	ctrl_arm_heartbeat(r);
	ctrl_update_interest(r);
	return r;
}

/* ---- the pool of idle data channels ---- */

static void pooled_free(struct pooled *pc)
{
	struct replica *r = pc->r;

	list_del(&pc->link);
	r->npool--;
	loop_unwatch(r->svc->srv->loop, &pc->w);
	stream_free(pc->s);
	free(pc);
}

static void drop_pool(struct replica *r)
{
	while (!list_empty(&r->pool))
		pooled_free(list_first(&r->pool, struct pooled, link));
}

/* Whether an idle channel's socket has seen the client's end (a FIN or a
 * reset not yet processed: the client died in this very turn). */
static bool pooled_dead(const struct pooled *pc)
{
	uint8_t b;
	ssize_t n = recv(pc->s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

/* The channel handed out must be alive as far as we can know: a visitor
 * given a channel whose client just died would be lost, where another
 * channel (or replica) serves it. */
struct stream *replica_take_pooled(struct replica *r)
{
	while (!list_empty(&r->pool)) {
		struct pooled *pc = list_first(&r->pool, struct pooled, link);
		struct stream *s = pc->s;

		if (pooled_dead(pc)) {
			log_debug("service %s: pooled data channel of %s closed by the client",
				  r->svc->cfg->name, r->peer);
			pooled_free(pc);
			continue;
		}
		pc->s = NULL;
		pooled_free(pc);
		return s;
	}
	return NULL;
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
	log_debug("service %s: pooled data channel closed by the client %s", pc->r->svc->cfg->name,
		  pc->r->peer);
	pooled_free(pc);
}

void replica_pool_add(struct replica *r, struct stream *s)
{
	struct pooled *pc;

	if (r->npool >= MAX_POOLED || !(pc = calloc(1, sizeof *pc))) {
		log_debug("service %s: data channel pool of %s full; closing a channel",
			  r->svc->cfg->name, r->peer);
		stream_free(s);
		return;
	}
	pc->r = r;
	pc->s = s;
	stream_trim(s);
	watcher_init(&pc->w, s->fd, on_pooled_event);
	loop_watch(r->svc->srv->loop, &pc->w, EPOLLIN | EPOLLRDHUP);
	list_add_tail(&r->pool, &pc->link);
	r->npool++;
}
