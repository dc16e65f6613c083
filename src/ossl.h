/* OpenSSL, loaded when a transport first needs it.
 *
 * Why: a dynamically linked libcrypto and libssl are mapped and relocated in
 * every process at start, about 1.7 MiB of resident memory per process, while
 * a server or client on the tcp transport never calls them (SHA-256 and random
 * bytes are ours: sha256.h, protocol.h). So the default build does not link
 * them: the noise, tls and websocket transports and --genkey call ossl_load()
 * first, which dlopen()s the libraries of the OpenSSL major version rathole
 * was built against. A static build (STATIC=1) and OSSL_DLOPEN=0 link
 * OpenSSL; ossl_load() then has nothing to do. */
#ifndef OSSL_H
#define OSSL_H

#include <stddef.h>

/* Makes OpenSSL callable. Returns 0, or -1 with the reason in err (such as
 * "libcrypto.so.3: cannot open shared object file"). Cheap after the first
 * success. */
int ossl_load(char *err, size_t errlen);

#endif
