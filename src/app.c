/* The process around a role: limits, signals, the loop, a clean shutdown. */
#include "app.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "relay.h"
#include "resolve.h"
#include "roles.h"

static struct {
	struct loop *loop;
	int status;
	int sigfd;
	struct watcher sigw;
	enum role role;
	struct config *cfg;
	struct server *server;
	struct client *client;
} A = { .sigfd = -1 };

void app_exit(int status)
{
	A.status = status;
	if (A.loop)
		loop_stop(A.loop);
}

/* Each connection costs two descriptors per process: take all we may. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_debug("cannot raise the open file limit: %s", strerror(errno));
}

static void on_signal(struct loop *l, struct watcher *w, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(A.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		switch (si.ssi_signo) {
		case SIGINT:
		case SIGTERM:
			log_info("%s received; shutting down", strsignal((int)si.ssi_signo));
			app_exit(0);
			break;
		case SIGHUP:
			log_warn("SIGHUP received, but configuration reload is not available yet; "
				 "restart rathole to apply changes");
			break;
		}
	}
}

static int setup_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	A.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (A.sigfd < 0)
		return -1;
	watcher_init(&A.sigw, A.sigfd, on_signal);
	return loop_watch(A.loop, &A.sigw, EPOLLIN);
}

static int start_role(void)
{
	char err[512];

	if (A.role == ROLE_SERVER)
		A.server = server_new(A.loop, A.cfg->server, err, sizeof err);
	else
		A.client = client_new(A.loop, A.cfg->client, err, sizeof err);
	if (A.server || A.client)
		return 0;
	log_error("%s: %s", A.cfg->path, err);
	return -1;
}

static void stop_role(void)
{
	server_free(A.server);
	client_free(A.client);
	A.server = NULL;
	A.client = NULL;
}

int app_run(struct config *cfg, enum role role)
{
	A.cfg = cfg;
	A.role = role;
	A.status = 0;
	raise_fd_limit();
	A.loop = loop_new();
	if (!A.loop || setup_signals() < 0 || resolve_init(A.loop) < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		A.status = 1;
		goto out;
	}
	if (start_role() < 0) {
		A.status = 1;
		goto out;
	}
	if (loop_run(A.loop) < 0) {
		log_error("event loop failed: %s", strerror(errno));
		A.status = 1;
	}
	stop_role();
	if (A.status == 0)
		log_info("shut down cleanly");
out:
	resolve_shutdown();
	relay_pools_free();
	if (A.sigfd >= 0) {
		loop_unwatch(A.loop, &A.sigw);
		close(A.sigfd);
		A.sigfd = -1;
	}
	loop_free(A.loop);
	A.loop = NULL;
	config_free(A.cfg);
	return A.status;
}
