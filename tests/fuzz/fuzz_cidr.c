/* CIDR parsing for allow/deny lists. */
#include <stdio.h>

#include "acl.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[512], err[256];
	struct cidr c;

	if (size >= sizeof s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	err[0] = '\0';
	if (cidr_parse(s, &c, err, sizeof err) == 0) {
		int bits = c.family == AF_INET ? 32 : 128;

		if ((c.family != AF_INET && c.family != AF_INET6) || c.prefix < 0 ||
		    c.prefix > bits)
			abort();
	} else if (err[0] == '\0') {
		abort();	/* a refusal says why */
	}
	return 0;
}
