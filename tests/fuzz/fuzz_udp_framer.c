/* The UDP framer over a stream that hands out the input in chunks of
 * varying size (with ST_AGAIN in between). Byte 0 seeds the chunk sizes. */
#include "fuzz.h"
#include "protocol.h"
#include "udp.h"

#define MAX_STEPS 1000000

static volatile uint8_t sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct udp_framer fr;
	struct stream *s;
	int rc = ST_AGAIN, steps;

	if (size < 1)
		return 0;
	memset(&fr, 0, sizeof fr);
	s = fuzz_mem_stream_new(data + 1, size - 1, data[0]);
	for (steps = 0; steps < MAX_STEPS; steps++) {
		const uint8_t *payload = NULL;

		rc = udp_framer_next(&fr, s, &payload);
		if (rc == ST_AGAIN)
			continue;
		if (rc != 1)
			break;
		if (fr.len && !payload)
			abort();
		for (size_t i = 0; i < fr.len; i++)
			sink ^= payload[i];	/* ASan checks every payload byte */
	}
	if (steps == MAX_STEPS || (rc != 0 && rc != UDP_BAD_FRAME))
		abort();	/* a memory stream ends: 0 or a bad frame, never a hang */
	udp_framer_reset(&fr);
	stream_free(s);
	return 0;
}
