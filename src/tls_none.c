/* The TLS session layer of a build without TLS (make TLS=0): it replaces
 * transport_tls.c, so that the websocket transport still links and works
 * over plain TCP, and says clearly that "tls = true" needs another build.
 * (The tls transport itself is not registered: see impl_for() in transport.c.) */
#include "tls.h"

#include <stdio.h>

struct tls_ctx *tls_ctx_new(const struct tls_config *cfg, bool server,
			    const char *remote_addr, char *err, size_t errlen)
{
	snprintf(err, errlen, "TLS is not available in this build (made with TLS=0): "
		 "use websocket with tls = false, or a build with TLS");
	return NULL;
}

void tls_ctx_free(struct tls_ctx *c)
{
}

/* Never reached: no session exists without a context. */
int tls_session_init(struct tls_session *ts, struct tls_ctx *c, struct stream *s)
{
	return stream_set_error(s, "TLS is not available in this build");
}

void tls_session_free(struct tls_session *ts)
{
}

int tls_session_handshake(struct tls_session *ts, struct stream *s)
{
	return stream_set_error(s, "TLS is not available in this build");
}

ssize_t tls_session_read(struct tls_session *ts, struct stream *s, void *buf, size_t len)
{
	return stream_set_error(s, "TLS is not available in this build");
}

ssize_t tls_session_write(struct tls_session *ts, struct stream *s, const void *buf,
			  size_t len)
{
	return stream_set_error(s, "TLS is not available in this build");
}

int tls_session_shutdown(struct tls_session *ts, struct stream *s)
{
	return stream_set_error(s, "TLS is not available in this build");
}
