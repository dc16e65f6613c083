/* The process's file descriptors against RLIMIT_NOFILE (see fds.h). */
#include "fds.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static struct {
	size_t limit;		/* RLIMIT_NOFILE's soft limit; 0 before fds_init() */
	size_t open;
	uint64_t recount_at;	/* ms, CLOCK_MONOTONIC_COARSE; 0: never */
} F;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Open descriptors numbered below `below` (the directory's own left out). */
static long count_open(size_t below)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char *end;
		unsigned long fd = strtoul(e->d_name, &end, 10);

		if (end == e->d_name || *end || (int)fd == dirfd(d))
			continue;	/* ".", "..", the directory itself */
		if (fd < below)
			n++;
	}
	closedir(d);
	return n;
}

long fds_scan(void)
{
	return count_open(SIZE_MAX);
}

static void read_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > SIZE_MAX / 2)
		F.limit = SIZE_MAX / 2;
	else
		F.limit = (size_t)rl.rlim_cur;
}

/* The limit bounds descriptor numbers: only those below it take a place
 * (a limit lowered under a running process leaves higher ones open). */
static void recount(void)
{
	long n;

	F.recount_at = now_ms();
	read_limit();		/* prlimit(1) may have changed it */
	n = count_open(F.limit);
	if (n >= 0)
		F.open = (size_t)n;
}

void fds_init(void)
{
	recount();
}

void fds_opened(unsigned n)
{
	F.open += n;
}

void fds_closed(unsigned n)
{
	F.open = F.open > n ? F.open - n : 0;
}

void fds_close(int fd)
{
	if (fd < 0)
		return;
	close(fd);
	fds_closed(1);
}

void fds_exhausted(void)
{
	if (F.open < F.limit)
		F.open = F.limit;	/* until a recount says better */
}

size_t fds_limit(void)
{
	if (!F.limit)		/* before fds_init(): unit tests, early errors */
		read_limit();
	return F.limit;
}

size_t fds_open(void) { return F.open; }

size_t fds_free(void)
{
	size_t limit = fds_limit();

	return F.open < limit ? limit - F.open : 0;
}

bool fds_short(size_t want)
{
	if (fds_free() >= want)
		return false;
	if (now_ms() - F.recount_at >= FDS_RECOUNT_MS)
		recount();
	return fds_free() < want;
}
