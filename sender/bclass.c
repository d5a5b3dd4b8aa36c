/* bclass.c: bounce classes (bclass.h): the rule file's parser and compiler,
 * and the classifier.
 *
 * A rule keeps its code as a range (5xx -> 500..599) and its DSN as three
 * components (-1 = any), so most rules are decided by two integer compares;
 * the regular expression (regcomp, REG_EXTENDED | REG_ICASE | REG_NOSUB) runs
 * only for rules whose code and DSN matched. Rules are immutable once
 * loaded: the worker threads share them without locks (regexec takes no
 * state from the caller beyond the compiled pattern). */
#include "sender/bclass.h"

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/util.h"

#define BCLASS_LINE_MAX 4096   /* bytes per rule line */
#define BCLASS_RULES_MAX 10000 /* rules over all files */

static const char *const names[BCLASS_N] = {
	[BCLASS_NONE] = "",
	[BCLASS_INVALID_RECIPIENT] = "invalid-recipient",
	[BCLASS_MAILBOX_FULL] = "mailbox-full",
	[BCLASS_REPUTATION] = "reputation",
	[BCLASS_RATE_LIMITED] = "rate-limited",
	[BCLASS_POLICY] = "policy",
	[BCLASS_CONTENT] = "content",
	[BCLASS_AUTHENTICATION] = "authentication",
	[BCLASS_GREYLISTED] = "greylisted",
	[BCLASS_DNS] = "dns",
	[BCLASS_TLS] = "tls",
	[BCLASS_CONNECTION] = "connection",
	[BCLASS_TIMEOUT] = "timeout",
	[BCLASS_OTHER] = "other",
};

const char *bclass_name(enum bclass c)
{
	return (unsigned)c < BCLASS_N ? names[c] : "";
}

int bclass_parse(const char *s)
{
	for (int i = 1; i < BCLASS_N; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

struct brule {
	unsigned char cls;
	bool has_re;
	short code_lo, code_hi; /* inclusive; 0..999 = any */
	short d[3];             /* DSN class.subject.detail, -1 = any */
	regex_t re;
};

struct bclass_rules {
	int n, cap;
	struct brule *v;
};

void bclass_free(struct bclass_rules *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->n; i++)
		if (r->v[i].has_re)
			regfree(&r->v[i].re);
	free(r->v);
	free(r);
}

int bclass_count(const struct bclass_rules *r)
{
	return r ? r->n : 0;
}

/* "*", "5xx", "55x", "550" -> [lo, hi]. 0 or -1. */
static int parse_code(const char *s, short *lo, short *hi)
{
	if (strcmp(s, "*") == 0) {
		*lo = 0, *hi = 999;
		return 0;
	}
	if (strlen(s) != 3 || s[0] < '2' || s[0] > '5')
		return -1;
	int l = 0, h = 0;
	bool wild = false;
	for (int i = 0; i < 3; i++) {
		if (s[i] == 'x' || s[i] == 'X') {
			wild = true;
			l = l * 10, h = h * 10 + 9;
		} else if (s[i] >= '0' && s[i] <= '9' && !wild) {
			l = l * 10 + (s[i] - '0'), h = h * 10 + (s[i] - '0');
		} else {
			return -1;
		}
	}
	*lo = (short)l, *hi = (short)h;
	return 0;
}

/* One DSN component: 1-3 digits -> 0..999. -1 if not. */
static int dsn_part(const char *s, size_t n)
{
	if (n == 0 || n > 3)
		return -1;
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* "5.1.10" -> {5, 1, 10}; with wild, "*" stands for any component (-1), and
 * "*" alone for any DSN. 0 or -1. */
static int parse_dsn(const char *s, short d[3], bool wild)
{
	if (wild && strcmp(s, "*") == 0) {
		d[0] = d[1] = d[2] = -1;
		return 0;
	}
	for (int k = 0; k < 3; k++) {
		size_t n = strcspn(s, ".");
		if ((k < 2) != (s[n] == '.'))
			return -1;
		if (wild && n == 1 && s[0] == '*') {
			d[k] = -1;
		} else {
			int v = dsn_part(s, n);
			if (v < 0 || (k == 0 && v != 2 && v != 4 && v != 5))
				return -1;
			d[k] = (short)v;
		}
		s += n + (k < 2);
	}
	return 0;
}

static int fail(char *err, size_t errlen, const char *name, int line, const char *fmt,
		const char *arg)
{
	char msg[300];
	snprintf(msg, sizeof(msg), fmt, arg);
	if (errlen > 0)
		snprintf(err, errlen, "%s:%d: %s", name, line, msg);
	return -1;
}

/* Next blank-separated token of *p ("" at the end); the rest stays in *p. */
static char *token(char **p)
{
	char *s = *p;
	while (*s == ' ' || *s == '\t')
		s++;
	char *t = s;
	while (*s != '\0' && *s != ' ' && *s != '\t')
		s++;
	if (*s != '\0')
		*s++ = '\0';
	*p = s;
	return t;
}

/* Parse one line (NUL-terminated, no newline) into r; 0 added, 1 nothing
 * (blank/comment), -1 error. */
static int parse_line(struct bclass_rules *r, char *s, const char *name, int line, char *err,
		      size_t errlen)
{
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return fail(err, errlen, name, line, "control byte in a rule%s", "");
	char *p = s;
	char *cls = token(&p);
	if (cls[0] == '\0' || cls[0] == '#')
		return 1;
	char *code = token(&p), *dsn = token(&p);
	while (*p == ' ' || *p == '\t')
		p++;
	size_t rl = strlen(p);
	while (rl > 0 && (p[rl - 1] == ' ' || p[rl - 1] == '\t'))
		p[--rl] = '\0';
	struct brule b;
	memset(&b, 0, sizeof(b));
	int c = bclass_parse(cls);
	if (c < 0)
		return fail(err, errlen, name, line,
			    "unknown class \"%s\" (invalid-recipient, mailbox-full, reputation, "
			    "rate-limited, policy, content, authentication, greylisted, dns, tls, "
			    "connection, timeout, other)",
			    cls);
	b.cls = (unsigned char)c;
	if (code[0] == '\0' || dsn[0] == '\0')
		return fail(err, errlen, name, line, "want: CLASS CODE DSN [REGEX]%s", "");
	if (parse_code(code, &b.code_lo, &b.code_hi) != 0)
		return fail(err, errlen, name, line, "bad code \"%s\" (*, 5xx, 55x, 550)", code);
	if (parse_dsn(dsn, b.d, true) != 0)
		return fail(err, errlen, name, line,
			    "bad enhanced status code \"%s\" (*, 5.1.1, *.2.2, 4.7.*)", dsn);
	if (rl > 0) {
		int rc = regcomp(&b.re, p, REG_EXTENDED | REG_ICASE | REG_NOSUB);
		if (rc != 0) {
			char why[160];
			regerror(rc, &b.re, why, sizeof(why));
			return fail(err, errlen, name, line, "bad regular expression: %s", why);
		}
		b.has_re = true;
	}
	if (r->n == BCLASS_RULES_MAX) {
		if (b.has_re)
			regfree(&b.re);
		return fail(err, errlen, name, line, "more than %s rules", "10000");
	}
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->v = xrealloc(r->v, (size_t)r->cap * sizeof(*r->v));
	}
	r->v[r->n++] = b;
	return 0;
}

static int load_text(struct bclass_rules *r, const char *text, size_t len, const char *name,
		     char *err, size_t errlen)
{
	char buf[BCLASS_LINE_MAX + 1];
	int line = 0;
	size_t off = 0;
	while (off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
		line++;
		if (n > 0 && text[off + n - 1] == '\r')
			n--;
		if (n > BCLASS_LINE_MAX)
			return fail(err, errlen, name, line, "line longer than %s bytes", "4096");
		if (memchr(text + off, '\0', n) != NULL)
			return fail(err, errlen, name, line, "NUL byte in a rule%s", "");
		memcpy(buf, text + off, n);
		buf[n] = '\0';
		if (parse_line(r, buf, name, line, err, errlen) < 0)
			return -1;
		off += (nl ? (size_t)(nl - (text + off)) + 1 : len - off);
	}
	return 0;
}

struct bclass_rules *bclass_load_mem(const char *text, size_t len, const char *name, char *err,
				     size_t errlen)
{
	struct bclass_rules *r = xcalloc(1, sizeof(*r));
	if (load_text(r, text, len, name, err, errlen) != 0) {
		bclass_free(r);
		return NULL;
	}
	return r;
}

struct bclass_rules *bclass_load(const char *const *paths, int n, char *err, size_t errlen)
{
	struct bclass_rules *r = xcalloc(1, sizeof(*r));
	for (int i = 0; i < n; i++) {
		if (paths[i] == NULL)
			continue;
		FILE *f = fopen(paths[i], "r");
		if (f == NULL) {
			snprintf(err, errlen, "%s: %s", paths[i], strerror(errno));
			goto fail;
		}
		char *text = NULL;
		size_t len = 0, cap = 0;
		char chunk[8192];
		size_t got;
		while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
			if (len + got > (size_t)BCLASS_RULES_MAX * 256) {
				snprintf(err, errlen, "%s: larger than %d bytes", paths[i],
					 BCLASS_RULES_MAX * 256);
				free(text);
				fclose(f);
				goto fail;
			}
			if (len + got > cap) {
				cap = (len + got) * 2;
				text = xrealloc(text, cap);
			}
			memcpy(text + len, chunk, got);
			len += got;
		}
		bool bad = ferror(f);
		fclose(f);
		if (bad) {
			snprintf(err, errlen, "%s: read error", paths[i]);
			free(text);
			goto fail;
		}
		int rc = load_text(r, text ? text : "", len, paths[i], err, errlen);
		free(text);
		if (rc != 0)
			goto fail;
	}
	return r;
fail:
	bclass_free(r);
	return NULL;
}

enum bclass bclass_classify(const struct bclass_rules *r, int code, const char *dsn,
			    const char *reply, enum bclass_origin origin)
{
	short d[3];
	bool have_dsn = dsn != NULL && dsn[0] != '\0' && parse_dsn(dsn, d, false) == 0;
	switch (origin) {
	case BCLASS_O_REPLY:
		break;
	case BCLASS_O_DNS: /* RFC 7505 3: a null MX says the domain takes no mail */
		return have_dsn && d[1] == 1 && d[2] == 10 ? BCLASS_INVALID_RECIPIENT : BCLASS_DNS;
	case BCLASS_O_TLS:
		return BCLASS_TLS;
	case BCLASS_O_CONNECT:
		return BCLASS_CONNECTION;
	case BCLASS_O_TIMEOUT:
		return BCLASS_TIMEOUT;
	default:
		return BCLASS_OTHER;
	}
	if (!have_dsn) { /* as smtp.c makes one for a reply without it: N.0.0 */
		d[0] = (short)(code >= 200 && code < 600 ? code / 100 : 0);
		d[1] = d[2] = 0;
	}
	if (r == NULL)
		return BCLASS_OTHER;
	for (int i = 0; i < r->n; i++) {
		const struct brule *b = &r->v[i];
		if (code < b->code_lo || code > b->code_hi)
			continue;
		if ((b->d[0] >= 0 && b->d[0] != d[0]) || (b->d[1] >= 0 && b->d[1] != d[1]) ||
		    (b->d[2] >= 0 && b->d[2] != d[2]))
			continue;
		if (b->has_re && regexec(&b->re, reply ? reply : "", 0, NULL, 0) != 0)
			continue;
		return (enum bclass)b->cls;
	}
	return BCLASS_OTHER;
}

static bool readable(const char *p)
{
	return access(p, R_OK) == 0;
}

int bclass_default_path(const char *cfg_path, char *out, size_t outlen)
{
	char dir[PATH_MAX];
	if (cfg_path != NULL) {
		const char *slash = strrchr(cfg_path, '/');
		if (slash == NULL)
			snprintf(out, outlen, "classes.conf");
		else
			snprintf(out, outlen, "%.*s/classes.conf", (int)(slash - cfg_path), cfg_path);
		if (readable(out))
			return 0;
	}
	ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	if (n > 0) {
		dir[n] = '\0';
		char *slash = strrchr(dir, '/');
		if (slash != NULL) {
			*slash = '\0';
			snprintf(out, outlen, "%s/../share/mxsend/classes.conf", dir);
			if (readable(out))
				return 0;
			snprintf(out, outlen, "%s/../sender/classes.conf", dir);
			if (readable(out))
				return 0;
			snprintf(out, outlen, "%s/../../sender/classes.conf", dir); /* build/asan/ */
			if (readable(out))
				return 0;
		}
	}
	snprintf(out, outlen, "/usr/share/mxsend/classes.conf");
	return readable(out) ? 0 : -1;
}
