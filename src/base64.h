/* Standard base64 (RFC 4648, padded), as used for Noise keys in the config. */
#ifndef BASE64_H
#define BASE64_H

#include <stddef.h>
#include <stdint.h>

#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Writes BASE64_ENCODED_LEN(len) characters and a NUL to out. */
void base64_encode(const uint8_t *in, size_t len, char *out);
/* Decodes exactly (padding required, no whitespace). Returns the decoded
 * length, or -1 if the text is not valid base64 or does not fit in cap. */
long base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
