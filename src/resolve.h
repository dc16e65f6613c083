/* Asynchronous name resolution: getaddrinfo on a few worker threads, results
 * delivered on the loop thread, so a slow DNS server never stalls forwarding.
 * IP literals are answered without a thread (still asynchronously). */
#ifndef RESOLVE_H
#define RESOLVE_H

#include "loop.h"
#include "net.h"

#define RESOLVE_MAX_ADDRS 8

struct resolve_req;

/* err is NULL on success (n >= 1 addresses), else a human-readable reason. */
typedef void (*resolve_cb)(void *arg, const char *err,
			   const struct net_addr *addrs, int n);

int resolve_init(struct loop *l);
void resolve_shutdown(void);

/* Resolves "host:port" for a TCP or UDP socket (socktype SOCK_STREAM/SOCK_DGRAM).
 * The callback runs later on the loop thread, exactly once, unless the
 * request is cancelled first. Returns NULL only when out of memory. */
struct resolve_req *resolve_start(const char *hostport, int socktype,
				  resolve_cb cb, void *arg);
/* The callback will not run; the request must not be used afterwards. */
void resolve_cancel(struct resolve_req *r);

#endif
