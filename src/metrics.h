/* Writing the Prometheus text format (version 0.0.4). */
#ifndef METRICS_H
#define METRICS_H

#include <stdint.h>

#include "buf.h"

/* Starts a metric family: "# HELP" and "# TYPE" lines. All of a family's
 * samples must follow before the next family starts. */
void metrics_family(struct buf *b, const char *name, const char *type, const char *help);
/* name{service="...",extra} value   (extra: e.g. direction="in", or NULL) */
void metrics_sample(struct buf *b, const char *name, const char *service, const char *extra,
		    uint64_t value);
/* Appends a label value, escaped (backslash, double quote, newline). */
void metrics_label_value(struct buf *b, const char *v);
/* Process-wide families: open fds, resident memory, build info. */
void metrics_process(struct buf *b, const char *role);

#endif
