/* The admin API's JSON reader (src/jsontree.c) and the services file's TOML
 * writer (src/apisvc.c): the types each JSON value becomes, the refusals
 * with their positions, the limits, and a round trip of awkward strings
 * through the written TOML. The HTTP checks of a request's Host and Origin
 * (src/api.c) are here too: they are pure functions of the request. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "apisvc.h"
#include "check.h"
#include "jsontree.h"

static struct toml_value *parse(const char *s)
{
	struct toml_error err;

	return json_to_toml(s, strlen(s), &err);
}

static void types(void)
{
	struct toml_value *v = parse(" {\"s\": \"a\\u00e9\\ud83d\\ude00\", \"i\": -42, \"big\": 9223372036854775807,"
				     " \"f\": 2.5e1, \"t\": true, \"n\": false, \"a\": [1, \"x\"], \"o\": {}} ");

	CHECK(v && v->type == TOML_TABLE && v->u.table.len == 8);
	if (!v)
		return;
	CHECK(toml_get(v, "s")->type == TOML_STRING);
	CHECK_STR(toml_get(v, "s")->u.str.ptr, "a\xc3\xa9\xf0\x9f\x98\x80");
	CHECK(toml_get(v, "i")->type == TOML_INTEGER && toml_get(v, "i")->u.integer == -42);
	CHECK(toml_get(v, "big")->u.integer == INT64_MAX);
	CHECK(toml_get(v, "f")->type == TOML_FLOAT && toml_get(v, "f")->u.fp == 25.0);
	CHECK(toml_get(v, "t")->type == TOML_BOOL && toml_get(v, "t")->u.boolean);
	CHECK(toml_get(v, "a")->type == TOML_ARRAY && toml_get(v, "a")->u.array.len == 2);
	CHECK(toml_get(v, "o")->type == TOML_TABLE && toml_get(v, "o")->u.table.len == 0);
	toml_free(v);
}

static void refused(const char *json, int line, int col, const char *words)
{
	struct toml_error err;
	struct toml_value *v = json_to_toml(json, strlen(json), &err);

	CHECKF(!v, "%s: accepted", json);
	toml_free(v);
	CHECKF(err.line == line && err.col == col, "%s: at %d:%d, not %d:%d (%s)", json,
	       err.line, err.col, line, col, err.msg);
	CHECKF(strstr(err.msg, words) != NULL, "%s: \"%s\" lacks \"%s\"", json, err.msg, words);
}

static void refusals(void)
{
	char deep[200];

	refused("{\"a\": null}", 1, 7, "null");
	refused("{\"a\": 1, \"a\": 2}", 1, 10, "duplicate");
	refused("{\"a\": 1,\n \"b\" 2}", 2, 6, "':'");
	refused("{\"a\": \"\\ud800\"}", 1, 14, "surrogate");
	refused("{\"a\": \"\\udc00\"}", 1, 14, "lone low surrogate");
	refused("{\"a\": \"\x01\"}", 1, 8, "control character");
	refused("{\"a\": \"\xc0\xaf\"}", 1, 8, "UTF-8");
	refused("{\"a\": 01}", 1, 8, "','");
	refused("{\"a\": 1.}", 1, 9, "decimal point");
	refused("{\"a\": 99999999999999999999}", 1, 7, "out of range");
	refused("{\"a\": tru}", 1, 7, "invalid literal");
	refused("{} x", 1, 4, "after the document");
	refused("", 1, 1, "end of the document");
	memset(deep, '[', sizeof deep - 1);
	deep[sizeof deep - 1] = '\0';
	refused(deep, 1, 34, "nesting too deep");
}

static void round_trip(void)
{
	struct apisvcs set = { 0 };
	struct toml_value *v = parse("{\"token\": \"q\\\"b\\\\s\\n\\t\\u0000\\u007f\\u00e9\","
				     " \"bind_addr\": \"[::1]:80\", \"n\": -0.0, \"allow\": [\"10.0.0.0/8\"],"
				     " \"we ird\": {\"x\": 1}}"), *old, *back, *svc;
	struct toml_error err;
	struct buf text = { 0 };

	CHECK(v != NULL);
	if (!v)
		return;
	CHECK(apisvcs_put(&set, "web-1.a", v, &old) == 0 && !old);
	apisvcs_toml(&set, false, &text);
	back = toml_parse(text.p, text.len, &err);
	CHECKF(back != NULL, "%s\n%.*s", err.msg, (int)text.len, text.p);
	svc = back ? toml_get(toml_get(toml_get(back, "client"), "services"), "web-1.a") : NULL;
	CHECK(svc && svc->u.table.len == 5);
	if (svc) {
		struct toml_value *t = toml_get(svc, "token");

		CHECK(t->u.str.len == 11 && memcmp(t->u.str.ptr, "q\"b\\s\n\t\0\x7f\xc3\xa9", 11) == 0);
		CHECK(toml_get(toml_get(svc, "we ird"), "x")->u.integer == 1);
		CHECK(toml_get(svc, "n")->type == TOML_FLOAT);
	}
	toml_free(back);
	buf_free(&text);
	CHECK(apisvcs_take(&set, "web-1.a") == v);
	toml_free(v);
	CHECK(set.n == 0);
	apisvcs_free(&set);
	CHECK(apisvc_name_ok("a_b-c.9") && !apisvc_name_ok("") && !apisvc_name_ok("a b") &&
	      !apisvc_name_ok("a:1") && !apisvc_name_ok("a/b"));
}

static const char *refusal(const char *method, const char *headers)
{
	static char buf[1024];
	struct http_request req;
	int status;

	snprintf(buf, sizeof buf, "%s /api/reload HTTP/1.1\r\n%s\r\n", method, headers);
	if (http_parse_request(buf, strlen(buf), &req, &status) != 1)
		return "unparsed";
	return api_request_refused(&req, (char *[]){ "admin.example.org" }, 1);
}

static void host_and_origin(void)
{
	CHECK(!refusal("GET", "Host: 127.0.0.1:2334\r\n"));
	CHECK(!refusal("GET", "Host: [::1]:2334\r\n"));
	CHECK(!refusal("GET", "Host: LocalHost\r\n"));
	CHECK(!refusal("GET", "Host: admin.example.org.:8443\r\n"));
	CHECK(!refusal("GET", ""));
	CHECK(refusal("GET", "Host: evil.example\r\n"));
	CHECK(refusal("GET", "Host: 127.0.0.1:x\r\n"));
	CHECK(refusal("GET", "Host: [::1\r\n"));
	CHECK(refusal("GET", "Host: [127.0.0.1]\r\n"));
	CHECK(strcmp(refusal("GET", "Host: a\r\nHost: b\r\n"), "unparsed") == 0);
	CHECK(!refusal("POST", "Host: 127.0.0.1:2334\r\nOrigin: http://127.0.0.1:2334\r\n"));
	CHECK(!refusal("POST", "Host: 127.0.0.1:2334\r\nOrigin: https://127.0.0.1:2334/\r\n"));
	CHECK(refusal("POST", "Host: 127.0.0.1:2334\r\nOrigin: http://127.0.0.1:2335\r\n"));
	CHECK(refusal("POST", "Host: 127.0.0.1:2334\r\nOrigin: null\r\n"));
	CHECK(refusal("DELETE", "Origin: http://127.0.0.1:2334\r\n"));	/* no Host to match */
	CHECK(!refusal("GET", "Host: 127.0.0.1\r\nOrigin: http://elsewhere\r\n"));
	CHECK(refusal("PUT", "Content-Type: text/plain\r\n"));
	CHECK(refusal("POST", "Content-Type: application/x-www-form-urlencoded ; charset=x\r\n"));
	CHECK(refusal("POST", "Content-Type: MULTIPART/form-data; boundary=z\r\n"));
	CHECK(!refusal("POST", "Content-Type: application/json\r\n"));
	CHECK(!refusal("GET", "Content-Type: text/plain\r\n"));
}

int main(void)
{
	types();
	refusals();
	round_trip();
	host_and_origin();
	return check_report("test_jsontree");
}
