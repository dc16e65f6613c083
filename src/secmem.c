#include "secmem.h"

#include <stdint.h>

bool secure_equal(const void *a, const void *b, size_t n)
{
	/* volatile: the compiler may not stop at the first difference */
	const volatile uint8_t *x = a, *y = b;
	uint8_t diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}
