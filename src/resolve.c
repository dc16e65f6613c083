#include "resolve.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_WORKERS 4

struct resolve_req {
	struct resolve_req *next;
	char host[NET_HOST_MAX];
	char port[8];
	int socktype;
	bool cancelled;
	resolve_cb cb;
	void *arg;
	/* result */
	char err[NET_HOST_MAX + 96];
	struct net_addr addrs[RESOLVE_MAX_ADDRS];
	int n;
};

static struct {
	struct loop *loop;
	int efd;
	struct watcher w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct resolve_req *todo, *todo_tail;
	struct resolve_req *done;	/* LIFO is fine: callers do not depend on order */
	int workers, idle;
	bool stopping;
	struct deferred literal_d;	/* delivers literal answers once the caller has returned */
} R = { .efd = -1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void lookup(struct resolve_req *r)
{
	struct addrinfo hints = { .ai_socktype = r->socktype, .ai_flags = AI_ADDRCONFIG };
	struct addrinfo *res = NULL, *ai;
	int rc = getaddrinfo(r->host, r->port, &hints, &res);

	if (rc != 0) {
		snprintf(r->err, sizeof r->err, "cannot resolve %s: %s", r->host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return;
	}
	for (ai = res; ai && r->n < RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		memcpy(&r->addrs[r->n].u, ai->ai_addr, ai->ai_addrlen);
		r->addrs[r->n].len = ai->ai_addrlen;
		r->n++;
	}
	freeaddrinfo(res);
	if (!r->n)
		snprintf(r->err, sizeof r->err, "cannot resolve %s: no IPv4 or IPv6 address", r->host);
}

static void *worker(void *unused)
{
	pthread_mutex_lock(&R.mu);
	for (;;) {
		struct resolve_req *r;
		uint64_t one = 1;

		while (!R.todo && !R.stopping) {
			R.idle++;
			pthread_cond_wait(&R.cv, &R.mu);
			R.idle--;
		}
		if (R.stopping)
			break;
		r = R.todo;
		R.todo = r->next;
		if (!R.todo)
			R.todo_tail = NULL;
		pthread_mutex_unlock(&R.mu);

		lookup(r);

		pthread_mutex_lock(&R.mu);
		r->next = R.done;
		R.done = r;
		if (write(R.efd, &one, sizeof one) < 0) {
			/* the counter cannot overflow in practice; the loop drains it */
		}
	}
	R.workers--;
	pthread_mutex_unlock(&R.mu);
	return NULL;
}

static void deliver(struct resolve_req *r)
{
	if (!r->cancelled)
		r->cb(r->arg, r->err[0] ? r->err : NULL, r->addrs, r->n);
	free(r);
}

static struct resolve_req *take_done(void)
{
	struct resolve_req *list;

	pthread_mutex_lock(&R.mu);
	list = R.done;
	R.done = NULL;
	pthread_mutex_unlock(&R.mu);
	return list;
}

static void on_eventfd(struct loop *l, struct watcher *w, uint32_t events)
{
	uint64_t v;
	struct resolve_req *r;

	if (read(R.efd, &v, sizeof v) < 0 && errno != EAGAIN)
		return;
	r = take_done();
	while (r) {
		struct resolve_req *next = r->next;
		deliver(r);
		r = next;
	}
}

static struct resolve_req *literal_head;

static void on_literals(struct loop *l, struct deferred *d)
{
	struct resolve_req *r = literal_head;

	literal_head = NULL;
	while (r) {
		struct resolve_req *next = r->next;
		deliver(r);
		r = next;
	}
}

int resolve_init(struct loop *l)
{
	R.loop = l;
	R.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (R.efd < 0)
		return -1;
	watcher_init(&R.w, R.efd, on_eventfd);
	deferred_init(&R.literal_d, on_literals);
	return loop_watch(l, &R.w, EPOLLIN);
}

void resolve_shutdown(void)
{
	struct resolve_req *r;

	pthread_mutex_lock(&R.mu);
	R.stopping = true;
	pthread_cond_broadcast(&R.cv);
	while ((r = R.todo)) {
		R.todo = r->next;
		free(r);
	}
	R.todo_tail = NULL;
	pthread_mutex_unlock(&R.mu);
	/* answers already computed are dropped; workers in getaddrinfo exit later */
	while ((r = take_done())) {
		while (r) {
			struct resolve_req *next = r->next;
			free(r);
			r = next;
		}
	}
	while ((r = literal_head)) {
		literal_head = r->next;
		free(r);
	}
	if (R.efd >= 0) {
		loop_unwatch(R.loop, &R.w);
		loop_undefer(R.loop, &R.literal_d);
		close(R.efd);
		R.efd = -1;
	}
}

static int enqueue(struct resolve_req *r)
{
	int rc = 0;

	pthread_mutex_lock(&R.mu);
	r->next = NULL;
	if (R.todo_tail)
		R.todo_tail->next = r;
	else
		R.todo = r;
	R.todo_tail = r;
	if (R.idle == 0 && R.workers < MAX_WORKERS) {
		pthread_t t;
		pthread_attr_t attr;

		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&t, &attr, worker, NULL) == 0)
			R.workers++;
		else if (R.workers == 0)
			rc = -1;
		pthread_attr_destroy(&attr);
	}
	pthread_cond_signal(&R.cv);
	pthread_mutex_unlock(&R.mu);
	return rc;
}

struct resolve_req *resolve_start(const char *hostport, int socktype,
				  resolve_cb cb, void *arg)
{
	struct resolve_req *r = calloc(1, sizeof *r);
	unsigned port;
	const char *err;

	if (!r)
		return NULL;
	r->cb = cb;
	r->arg = arg;
	r->socktype = socktype;
	if (net_split_hostport(hostport, r->host, sizeof r->host, &port, &err) < 0) {
		snprintf(r->err, sizeof r->err, "bad address %s: %s", hostport, err);
	} else if (net_parse_numeric(hostport, &r->addrs[0]) == 0) {
		r->n = 1;
	} else {
		snprintf(r->port, sizeof r->port, "%u", port);
		if (enqueue(r) == 0)
			return r;
		/* the request is queued but no thread could start: fail it now */
		pthread_mutex_lock(&R.mu);
		R.todo = R.todo_tail = NULL;
		pthread_mutex_unlock(&R.mu);
		snprintf(r->err, sizeof r->err, "cannot resolve %s: no resolver thread", r->host);
	}
	r->next = literal_head;
	literal_head = r;
	loop_defer(R.loop, &R.literal_d);
	return r;
}

void resolve_cancel(struct resolve_req *r)
{
	pthread_mutex_lock(&R.mu);
	r->cancelled = true;
	pthread_mutex_unlock(&R.mu);
}
