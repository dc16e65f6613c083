/* Bytes as text: standard base64 (RFC 4648, padded), as used for Noise keys
 * in the config, and hex digits (TOML escapes, percent-encoding, OpenSSL's
 * key log). */
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

/* The value of a hex digit (either case), or -1. */
static inline int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
