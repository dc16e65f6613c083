#include "apisvc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define NAME_MAX_LEN 64

bool apisvc_name_ok(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= NAME_MAX_LEN &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == n;
}

void apisvcs_free(struct apisvcs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].name);
		toml_free(s->v[i].tbl);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

struct apisvc *apisvcs_find(const struct apisvcs *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i].name, name) == 0)
			return &s->v[i];
	return NULL;
}

int apisvcs_put(struct apisvcs *s, const char *name, struct toml_value *tbl,
		struct toml_value **old)
{
	struct apisvc *e = apisvcs_find(s, name), *bigger;
	char *dup;

	*old = NULL;
	if (e) {
		*old = e->tbl;
		e->tbl = tbl;
		return 0;
	}
	if (!(dup = strdup(name)))
		return -1;
	bigger = realloc(s->v, (s->n + 1) * sizeof *s->v);
	if (!bigger) {
		free(dup);
		return -1;
	}
	s->v = bigger;
	s->v[s->n++] = (struct apisvc){ .name = dup, .tbl = tbl };
	return 0;
}

struct toml_value *apisvcs_take(struct apisvcs *s, const char *name)
{
	struct apisvc *e = apisvcs_find(s, name);
	struct toml_value *t;

	if (!e)
		return NULL;
	t = e->tbl;
	free(e->name);
	memmove(e, e + 1, (size_t)(s->v + s->n - (e + 1)) * sizeof *e);
	s->n--;
	return t;
}

/* ---- writing TOML ---- */

static void toml_string(struct buf *b, const char *s, size_t n)
{
	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		switch (c) {
		case '"': buf_append(b, "\\\"", 2); break;
		case '\\': buf_append(b, "\\\\", 2); break;
		case '\b': buf_append(b, "\\b", 2); break;
		case '\t': buf_append(b, "\\t", 2); break;
		case '\n': buf_append(b, "\\n", 2); break;
		case '\f': buf_append(b, "\\f", 2); break;
		case '\r': buf_append(b, "\\r", 2); break;
		default:
			if (c < 0x20 || c == 0x7f)
				buf_printf(b, "\\u%04x", c);
			else
				buf_append(b, &s[i], 1);	/* UTF-8, checked when read */
		}
	}
	buf_append(b, "\"", 1);
}

static void toml_key(struct buf *b, const char *k, size_t n)
{
	bool bare = n > 0;

	for (size_t i = 0; i < n && bare; i++)
		bare = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", k[i]) &&
		       k[i];
	if (bare)
		buf_append(b, k, n);
	else
		toml_string(b, k, n);
}

/* Inline forms only: a service table holds scalars and arrays (the tree was
 * checked against the service's keys before it was stored). */
static void toml_value_out(struct buf *b, const struct toml_value *v)
{
	switch (v->type) {
	case TOML_STRING:
		toml_string(b, v->u.str.ptr, v->u.str.len);
		break;
	case TOML_INTEGER:
		buf_printf(b, "%" PRId64, v->u.integer);
		break;
	case TOML_FLOAT:
		if (isnan(v->u.fp))
			buf_printf(b, "nan");
		else if (isinf(v->u.fp))
			buf_printf(b, "%sinf", v->u.fp < 0 ? "-" : "");
		else {
			char num[40];

			snprintf(num, sizeof num, "%.17g", v->u.fp);
			buf_printf(b, "%s%s", num, strpbrk(num, ".e") ? "" : ".0");
		}
		break;
	case TOML_BOOL:
		buf_printf(b, "%s", v->u.boolean ? "true" : "false");
		break;
	case TOML_ARRAY:
		buf_append(b, "[", 1);
		for (size_t i = 0; i < v->u.array.len; i++) {
			if (i)
				buf_append(b, ", ", 2);
			toml_value_out(b, v->u.array.items[i]);
		}
		buf_append(b, "]", 1);
		break;
	case TOML_TABLE:
		buf_append(b, "{ ", 2);
		for (size_t i = 0; i < v->u.table.len; i++) {
			if (i)
				buf_append(b, ", ", 2);
			toml_key(b, v->u.table.items[i].key, v->u.table.items[i].keylen);
			buf_append(b, " = ", 3);
			toml_value_out(b, v->u.table.items[i].val);
		}
		buf_append(b, " }", 2);
		break;
	default:
		/* dates do not come from JSON, and no service key takes one */
		buf_printf(b, "\"\"");
		break;
	}
}

void apisvcs_toml(const struct apisvcs *s, bool server, struct buf *out)
{
	const char *role = server ? "server" : "client";

	buf_printf(out, "# Services created through rathole's admin API ([%s.api] services_file).\n"
		   "# rathole rewrites this file whole at each change through the API.\n", role);
	for (size_t i = 0; i < s->n; i++) {
		const struct toml_value *t = s->v[i].tbl;

		buf_printf(out, "\n[%s.services.", role);
		toml_key(out, s->v[i].name, strlen(s->v[i].name));
		buf_printf(out, "]\n");
		for (size_t j = 0; j < t->u.table.len; j++) {
			toml_key(out, t->u.table.items[j].key, t->u.table.items[j].keylen);
			buf_append(out, " = ", 3);
			toml_value_out(out, t->u.table.items[j].val);
			buf_append(out, "\n", 1);
		}
	}
}

/* ---- the file ---- */

int apisvcs_load(struct apisvcs *s, const char *path, bool server, char *err, size_t errlen)
{
	const char *role = server ? "server" : "client";
	struct toml_error terr;
	struct toml_value *root, *rt, *svcs;
	size_t len;
	char *text;

	s->v = NULL;
	s->n = 0;
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 0;	/* no service created yet */
	text = config_read_file(path, &len, err, errlen);
	if (!text)
		return -1;
	root = toml_parse(text, len, &terr);
	explicit_bzero(text, len);
	free(text);
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, terr.line, terr.col, terr.msg);
		return -1;
	}
	rt = toml_get(root, role);
	svcs = rt ? toml_get(rt, "services") : NULL;
	if (root->u.table.len > (rt ? 1u : 0u) || (rt && (rt->type != TOML_TABLE ||
	    rt->u.table.len > (svcs ? 1u : 0u))) || (svcs && svcs->type != TOML_TABLE)) {
		snprintf(err, errlen, "%s: a services_file holds [%s.services.NAME] tables only "
			 "(it is written by rathole's admin API)", path, role);
		toml_free(root);
		return -1;
	}
	for (size_t i = 0; svcs && i < svcs->u.table.len; i++) {
		struct toml_kv *kv = &svcs->u.table.items[i];
		struct toml_value *old;

		if (strlen(kv->key) != kv->keylen || !apisvc_name_ok(kv->key)) {
			snprintf(err, errlen, "%s:%d: a service name here is 1 to 64 of A-Z a-z 0-9 "
				 "_ - .", path, kv->line);
			goto bad;
		}
		if (kv->val->type != TOML_TABLE) {
			snprintf(err, errlen, "%s:%d: %s.services.%s: expected a table (a service), "
				 "found %s", path, kv->line, role, kv->key, toml_type_name(kv->val->type));
			goto bad;
		}
		if (apisvcs_put(s, kv->key, kv->val, &old) < 0) {
			snprintf(err, errlen, "%s: out of memory", path);
			goto bad;
		}
		kv->val = NULL;		/* the store has it now */
	}
	toml_free(root);
	return 0;
bad:
	toml_free(root);
	apisvcs_free(s);
	return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int apisvcs_save(const struct apisvcs *s, const char *path, bool server, char *err,
		 size_t errlen)
{
	struct buf text = { 0 };
	char *tmp = NULL, *dcopy = NULL;
	int fd = -1, dfd, rc = -1;
	const char *what = "cannot write";

	apisvcs_toml(s, server, &text);
	if (asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		errno = ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write_all(fd, text.p ? text.p : "", text.len) < 0 || fsync(fd) < 0)
		goto out;
	if (close(fd) < 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	what = "cannot replace";
	if (rename(tmp, path) < 0)
		goto out;
	/* the rename itself is durable once the directory is */
	dcopy = strdup(path);
	if (dcopy && (dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	rc = 0;
out:
	if (rc < 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		if (tmp)
			unlink(tmp);
	}
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(dcopy);
	if (text.p)
		explicit_bzero(text.p, text.len);
	buf_free(&text);
	return rc;
}
