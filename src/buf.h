/* A growable byte buffer for text we build (metrics, status, HTTP replies). */
#ifndef BUF_H
#define BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *p;
	size_t len, cap;
	bool oom;		/* an append failed: the content is incomplete */
};

void buf_append(struct buf *b, const void *data, size_t len);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes and escapes included). */
void buf_json_string(struct buf *b, const char *s);
void buf_free(struct buf *b);

#endif
