/* The admin API's HTTP request parser. */
#include "api.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req;
	char *copy;
	int status, rc;

	/* an exact-size copy: ASan sees any read past the bytes received */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	rc = http_parse_request(copy, size, &req, &status);
	if (rc == 1) {
		if (req.header_len > size || req.header_len > HTTP_MAX_REQUEST || req.content_length > HTTP_MAX_BODY ||
		    !memchr(req.method, '\0', sizeof req.method) ||
		    !memchr(req.path, '\0', sizeof req.path))
			abort();
		if (req.auth && (req.auth < copy || req.auth + req.auth_len > copy + size))
			abort();
		if (req.host && (req.host < copy || req.host + req.host_len > copy + size))
			abort();
		if (req.origin && (req.origin < copy || req.origin + req.origin_len > copy + size))
			abort();
		if (req.content_type && (req.content_type < copy ||
					 req.content_type + req.content_type_len > copy + size))
			abort();
		/* the Host, Origin and content type checks read only those bytes */
		(void)api_request_refused(&req, (char *[]){ "admin.example.org" }, 1);
	} else if (rc == -1) {
		if (status < 400 || status > 599)
			abort();
	} else if (rc != 0) {
		abort();
	}
	free(copy);
	return 0;
}
