/* Comparing and wiping secrets without OpenSSL.
 *
 * The tcp transport compares digests (the protocol's session keys, the admin
 * API's token) and wipes secrets; doing it here keeps OpenSSL out of a process
 * that needs nothing else from it (see ossl.h). */
#ifndef SECMEM_H
#define SECMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Whether a and b hold the same n bytes, in time that depends only on n. */
bool secure_equal(const void *a, const void *b, size_t n);

#endif
