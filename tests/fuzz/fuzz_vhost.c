/* Virtual hosts: the Host and SNI extraction (vhost.c) over any bytes, and
 * the configured-name check over the same bytes as a string. A name found
 * is normalized: lower case, no trailing dot, at most VHOST_NAME_MAX, and
 * it matches itself exactly. Every prefix of the input is tried too, as the
 * shared listeners parse a head again as it arrives. */
#include "fuzz.h"
#include "vhost.h"

static void check_name(const char *name)
{
	size_t n = strnlen(name, VHOST_NAME_MAX + 1);

	if (n == 0 || n > VHOST_NAME_MAX || name[n - 1] == '.')
		abort();
	for (size_t i = 0; i < n; i++)
		if ((name[i] >= 'A' && name[i] <= 'Z') || name[i] == ':' || name[i] == ' ')
			abort();
	if (vhost_match(name, name) <= VHOST_NAME_MAX)
		abort();
}

static void parse(const uint8_t *p, size_t len)
{
	char name[VHOST_NAME_MAX + 1];
	enum vhost_result r;

	r = vhost_http_host(p, len, name);
	if (r == VHOST_FOUND)
		check_name(name);
	else if (r != VHOST_MORE && r != VHOST_NONE && r != VHOST_BAD && r != VHOST_TOO_BIG)
		abort();
	r = vhost_tls_sni(p, len, name);
	if (r == VHOST_FOUND)
		check_name(name);
	else if (r != VHOST_MORE && r != VHOST_NONE && r != VHOST_BAD && r != VHOST_TOO_BIG)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[VHOST_NAME_MAX + 1];
	const char *why;
	uint8_t *copy;

	/* exact-size copies: ASan sees any read past the bytes received */
	for (size_t cut = size > 64 ? size - 64 : 0; cut <= size; cut++) {
		copy = malloc(cut ? cut : 1);
		if (!copy)
			return 0;
		memcpy(copy, data, cut);
		parse(copy, cut);
		free(copy);
	}
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	if (vhost_pattern_check((const char *)copy, out, &why) == 0) {
		if (strlen(out) > VHOST_NAME_MAX)
			abort();
	} else if (!why) {
		abort();
	}
	free(copy);
	return 0;
}
