#include "metrics.h"

#include <stdio.h>
#include <unistd.h>

#include "fds.h"

void metrics_family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_label_value(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			buf_append(b, "\\\\", 2);
		else if (*v == '"')
			buf_append(b, "\\\"", 2);
		else if (*v == '\n')
			buf_append(b, "\\n", 2);
		else
			buf_append(b, v, 1);
	}
}

void metrics_sample(struct buf *b, const char *name, const char *service, const char *extra,
		    uint64_t value)
{
	buf_printf(b, "%s", name);
	if (service || extra) {
		buf_append(b, "{", 1);
		if (service) {
			buf_append(b, "service=\"", 9);
			metrics_label_value(b, service);
			buf_append(b, "\"", 1);
		}
		if (extra)
			buf_printf(b, "%s%s", service ? "," : "", extra);
		buf_append(b, "}", 1);
	}
	buf_printf(b, " %llu\n", (unsigned long long)value);
}

static uint64_t resident_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, rss = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &rss) != 2)
		rss = 0;
	fclose(f);
	return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

void metrics_process(struct buf *b, const char *role)
{
	long fds = fds_scan();

	metrics_family(b, "rathole_build_info", "gauge", "Version and role of this process.");
	buf_printf(b, "rathole_build_info{version=\"%s\",role=\"%s\"} 1\n", RATHOLE_VERSION, role);
	metrics_family(b, "rathole_process_open_fds", "gauge", "Open file descriptors.");
	metrics_sample(b, "rathole_process_open_fds", NULL, NULL, fds > 0 ? (uint64_t)fds : 0);
	metrics_family(b, "rathole_process_max_fds", "gauge",
		       "The open file descriptor limit (RLIMIT_NOFILE).");
	metrics_sample(b, "rathole_process_max_fds", NULL, NULL, fds_limit());
	metrics_family(b, "rathole_process_resident_memory_bytes", "gauge", "Resident memory size.");
	metrics_sample(b, "rathole_process_resident_memory_bytes", NULL, NULL, resident_bytes());
}
