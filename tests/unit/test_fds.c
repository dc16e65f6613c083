/* The descriptor count (src/fds.c): sockets made and closed through net.c
 * are counted as they come and go, a miscount is corrected by a recount
 * from /proc/self/fd when it says descriptors are short (not sooner than
 * FDS_RECOUNT_MS after the last one), and EMFILE counts as "none free". */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fds.h"
#include "net.h"

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static struct net_addr loopback(void)
{
	struct net_addr a = { .len = sizeof a.u.in4 };

	a.u.in4.sin_family = AF_INET;
	a.u.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

/* Sockets opened and closed through net.c move the count, and it agrees
 * with /proc. */
static void test_counted(void)
{
	struct net_addr a = loopback();
	int fds[8];
	size_t before;

	fds_init();
	before = fds_open();
	CHECKF((long)before == fds_scan(), "%zu counted, %ld in /proc", before, fds_scan());
	for (int i = 0; i < 8; i++)
		fds[i] = net_bind_udp(&a);
	CHECK(fds_open() == before + 8);
	CHECK((long)fds_open() == fds_scan());
	CHECK(fds_free() == fds_limit() - fds_open());
	for (int i = 0; i < 8; i++)
		fds_close(fds[i]);
	CHECK(fds_open() == before);
	CHECK((long)fds_open() == fds_scan());
}

/* A count that drifted (here: 100 opens that never happened) refuses no
 * longer than until the next recount is allowed. */
static void test_drift_corrected(void)
{
	fds_init();
	fds_opened(100000);
	CHECK(fds_free() == 0);
	CHECK(fds_short(8));		/* a recount was made just now: not yet */
	sleep_ms(FDS_RECOUNT_MS + 50);
	CHECK(!fds_short(8));		/* recounted */
	CHECK((long)fds_open() == fds_scan());
}

/* The highest descriptor number open. */
static int highest_fd(void)
{
	int hi = -1;

	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			hi = fd;
	return hi;
}

/* Under a lowered limit the count says how many more open (the limit
 * bounds descriptor numbers: the places below it not taken; the limit is
 * set 4 above the highest descriptor open, whatever holes lie below it),
 * then EMFILE: nothing is free until descriptors are closed. */
static void test_exhausted(void)
{
	struct rlimit old, rl;
	struct net_addr a = loopback();
	int fds[1024], n = 0, fd;
	size_t predicted;

	if (getrlimit(RLIMIT_NOFILE, &old) < 0)
		return;
	fds_init();
	rl = old;
	rl.rlim_cur = (rlim_t)highest_fd() + 1 + 4;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	fds_init();
	CHECK(fds_limit() == rl.rlim_cur);
	predicted = fds_free();
	CHECK(predicted >= 4 && predicted < 1024);
	while (n < 1024 && (fd = net_bind_udp(&a)) >= 0)
		fds[n++] = fd;
	CHECKF((size_t)n == predicted && errno == EMFILE, "%d opened, %zu predicted, errno %d",
	       n, predicted, errno);
	CHECK(fds_free() == 0);
	for (int i = 0; i < n; i++)
		fds_close(fds[i]);
	CHECKF(fds_free() == predicted, "%zu free after closing %d", fds_free(), n);
	setrlimit(RLIMIT_NOFILE, &old);
	fds_init();
}

int main(void)
{
	test_counted();
	test_exhausted();
	test_drift_corrected();
	return check_report("test_fds");
}
