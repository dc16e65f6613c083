/* The process's file descriptors, counted against RLIMIT_NOFILE, so that
 * "how many may we still open?" costs no system call: a connection storm
 * asks it for every visitor.
 *
 * Every socket and pipe rathole opens is counted where it is made (net.c,
 * relay.c, udp.c) and where it is closed (fds_close()). What others open -
 * the loop's own descriptors, the resolver's threads, OpenSSL - is picked up
 * by a recount from /proc/self/fd: once at start, after EMFILE, and when the
 * count says descriptors are short (at most once per FDS_RECOUNT_MS). A
 * miscount thus costs at most that long, never a tunnel that stays shut.
 * Loop thread only. */
#ifndef FDS_H
#define FDS_H

#include <stdbool.h>
#include <stddef.h>

#define FDS_RECOUNT_MS	1000

/* Reads the limit and counts what is open now. */
void fds_init(void);
void fds_opened(unsigned n);
void fds_closed(unsigned n);
/* close() and count it. */
void fds_close(int fd);
/* EMFILE or ENFILE: the kernel says none is free; recount when allowed. */
void fds_exhausted(void);

size_t fds_limit(void);
size_t fds_open(void);
size_t fds_free(void);
/* Whether fewer than `want` descriptors are free. When the count says so,
 * it is checked against /proc first (rate-limited), so that a miscount
 * cannot refuse work for long. */
bool fds_short(size_t want);

/* Open descriptors as /proc/self/fd lists them, or -1 where it cannot be read. */
long fds_scan(void);

#endif
