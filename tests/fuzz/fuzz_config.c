/* Config layer: TOML text to a validated config, or file:line errors. */
#include <stdio.h>

#include "config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors errs;
	struct config *cfg;

	memset(&errs, 0, sizeof errs);
	cfg = config_parse("fuzz.toml", (const char *)data, size, &errs);
	if (cfg) {
		config_free(cfg);
		return 0;
	}
	if (errs.count < 1 || errs.count > CONFIG_MAX_ERRORS)
		abort();	/* a refused config always says why */
	for (int i = 0; i < errs.count; i++)
		if (strncmp(errs.msg[i], "fuzz.toml", 9) != 0 ||
		    !memchr(errs.msg[i], '\0', sizeof errs.msg[i]))
			abort();
	return 0;
}
