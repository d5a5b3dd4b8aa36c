/* signer.c: which keys sign a job's message, and signing it (signer.h). */
#include "sender/signer.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sender/dkim.h"
#include "sender/msg.h"
#include "sender/util.h"

/* RFC 6376 5.4.1's list, and RFC 8058's List-Unsubscribe-Post. */
static const char *const dkim_default_headers =
	"from:reply-to:subject:date:to:cc:resent-date:resent-from:resent-to:resent-cc:"
	"in-reply-to:references:list-id:list-help:list-unsubscribe:list-unsubscribe-post:"
	"list-subscribe:list-post:list-owner:list-archive:message-id:mime-version:"
	"content-type:content-transfer-encoding:content-id:content-description:feedback-id";
/* The fields a receiver must not see added (a second From, Subject, ...). */
static const char *const dkim_default_oversign =
	"from:reply-to:subject:date:to:cc:message-id:mime-version:content-type:"
	"content-transfer-encoding:list-unsubscribe:list-unsubscribe-post:list-id:feedback-id";

/* "a:b c,d" -> NULL-terminated lowercase names; NULL with *bad set on a bad name. */
static char **name_list(const char *s, const char **bad)
{
	size_t n = 0, cap = 8;
	char **v = xcalloc(cap, sizeof(*v));
	*bad = NULL;
	for (s += strspn(s, ": ,\t"); *s; s += strspn(s, ": ,\t")) {
		size_t len = strcspn(s, ": ,\t");
		for (size_t i = 0; i < len; i++)
			if (s[i] <= 32 || s[i] >= 127)
				*bad = "a header name is printable ASCII";
		if (len > 64)
			*bad = "a header name of more than 64 characters";
		if (n + 2 > cap)
			v = xrealloc(v, (cap *= 2) * sizeof(*v));
		v[n] = xmalloc(len + 1);
		for (size_t i = 0; i < len; i++)
			v[n][i] = (char)tolower((unsigned char)s[i]);
		v[n++][len] = '\0';
		v[n] = NULL;
		s += len;
	}
	if (*bad != NULL) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return NULL;
	}
	return v;
}

int signer_conf_finish(struct dkim_conf *d, bool *key_err, char *err, size_t errlen)
{
	const char *bad;
	*key_err = false;
	if (d->key_file == NULL || d->selector == NULL) {
		snprintf(err, errlen, "key and selector are required");
		return -1;
	}
	if ((d->headers = name_list(d->headers_s ? d->headers_s : dkim_default_headers, &bad)) == NULL) {
		snprintf(err, errlen, "bad headers: %s", bad);
		return -1;
	}
	bool from = false;
	for (int i = 0; d->headers[i]; i++)
		from |= strcmp(d->headers[i], "from") == 0;
	if (!from) {
		snprintf(err, errlen, "headers must include from (RFC 6376 5.4)");
		return -1;
	}
	const char *os = d->oversign_s ? d->oversign_s : dkim_default_oversign;
	if ((d->oversign = name_list(strcmp(os, "no") == 0 ? "" : os, &bad)) == NULL) {
		snprintf(err, errlen, "bad oversign: %s", bad);
		return -1;
	}
	if ((d->key = dkim_key_load(d->key_file, d->domain, d->selector, err, errlen)) == NULL) {
		*key_err = true;
		return -1;
	}
	return 0;
}

void signer_conf_fini(struct dkim_conf *d)
{
	free(d->domain);
	free(d->key_file);
	free(d->selector);
	free(d->headers_s);
	free(d->oversign_s);
	for (int k = 0; d->headers && d->headers[k]; k++)
		free(d->headers[k]);
	free(d->headers);
	for (int k = 0; d->oversign && d->oversign[k]; k++)
		free(d->oversign[k]);
	free(d->oversign);
	dkim_key_free(d->key);
}

static const struct dkim_conf *find(const struct config *c, const char *dom, size_t n)
{
	for (int i = 0; i < c->n_dkims; i++)
		if (strlen(c->dkims[i].domain) == n && strncasecmp(c->dkims[i].domain, dom, n) == 0)
			return &c->dkims[i];
	return NULL;
}

int signer_from_domain(const char *raw, size_t len, char *dom, size_t n)
{
	size_t i = 0;
	while (i < len) { /* header lines only: stop at the empty line */
		size_t e = i;
		while (e < len && raw[e] != '\n' && raw[e] != '\r')
			e++;
		if (e == i)
			return -1;
		if (e - i >= 5 && strncasecmp(raw + i, "from", 4) == 0) {
			size_t k = i + 4;
			while (k < e && (raw[k] == ' ' || raw[k] == '\t'))
				k++;
			if (k < e && raw[k] == ':') {
				/* the value, with its continuation lines: the address is
				 * after the last '@' that is followed by a domain */
				size_t v = k + 1, end = e;
				while (end < len) {
					size_t nl = end;
					if (nl < len && raw[nl] == '\r')
						nl++;
					if (nl < len && raw[nl] == '\n')
						nl++;
					if (nl < len && (raw[nl] == ' ' || raw[nl] == '\t')) {
						end = nl;
						while (end < len && raw[end] != '\n' && raw[end] != '\r')
							end++;
					} else {
						break;
					}
				}
				size_t at = end;
				for (size_t q = v; q < end; q++)
					if (raw[q] == '@')
						at = q;
				if (at == end)
					return -1;
				size_t d = at + 1, o = 0;
				while (d < end && o + 1 < n) {
					char ch = raw[d++];
					if ((unsigned char)ch <= ' ' || ch == 0x7f || ch == '>' || ch == ',' ||
					    ch == ';' || ch == ')' || ch == '(' || ch == '"') /* NUL, CTL, SP too */
						break;
					dom[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
				}
				while (o > 0 && dom[o - 1] == '.')
					o--;
				dom[o] = '\0';
				return o > 0 ? 0 : -1;
			}
		}
		i = e;
		if (i < len && raw[i] == '\r')
			i++;
		if (i < len && raw[i] == '\n')
			i++;
	}
	return -1;
}

/* The key for From: domain dom: exact, then parents allowing subdomains. */
static const struct dkim_conf *for_from(const struct config *c, const char *dom)
{
	const struct dkim_conf *d = find(c, dom, strlen(dom));
	if (d != NULL)
		return d;
	for (const char *p = strchr(dom, '.'); p != NULL; p = strchr(p + 1, '.'))
		if ((d = find(c, p + 1, strlen(p + 1))) != NULL && d->subdomains)
			return d;
	return NULL;
}

int signer_plan(const struct config *c, const char *raw, size_t len, const char *want,
		struct signer_plan *p, char result[SIGNER_RESULT_MAX], char *err, size_t errlen)
{
	const struct dkim_conf **use = p->use;
	char dom[256];
	use[0] = use[1] = NULL;
	snprintf(result, SIGNER_RESULT_MAX, "none");
	bool off = want != NULL && strcmp(want, "no") == 0;
	if (want != NULL && !off) {
		if ((use[0] = find(c, want, strlen(want))) == NULL) {
			snprintf(err, errlen, "dkim: no [dkim %.253s] key configured", want);
			return -1;
		}
	} else if (!off && c->n_dkims > 0 && signer_from_domain(raw, len, dom, sizeof(dom)) == 0) {
		use[0] = for_from(c, dom);
	}
	if (!off && c->dkim_extra != NULL) {
		const struct dkim_conf *x = find(c, c->dkim_extra, strlen(c->dkim_extra));
		if (x != NULL && x != use[0])
			use[use[0] ? 1 : 0] = x;
	}
	if (use[0] != NULL)
		return 1;
	if (!c->dkim_require)
		return 0;
	snprintf(err, errlen, off ? "dkim: dkim=no, and dkim_require = yes"
				  : "dkim: no key for the From: domain, and dkim_require = yes");
	return -1;
}

size_t signed_msg_bytes(const struct signed_msg *m)
{
	return m->wire.pre_len + (m->wire.borrowed ? 0 : m->wire.len);
}

void signed_msg_free(struct signed_msg *m)
{
	free(m->pre);
	msg_wire_fini(&m->wire);
	memset(m, 0, sizeof(*m));
}

int signer_apply(const struct signer_plan *p, const char *raw, size_t len, int64_t t,
		 struct signed_msg *out, char result[SIGNER_RESULT_MAX], char *err, size_t errlen)
{
	const struct dkim_conf *const *use = p->use;
	memset(out, 0, sizeof(*out));
	struct msg_wire w;
	msg_wire_prepare(raw, len, false, &w);
	char *sig[2] = { NULL, NULL };
	size_t total = 0, rl = 0;
	result[0] = '\0';
	for (int i = 0; i < 2 && use[i] != NULL; i++) {
		const struct dkim_conf *d = use[i];
		struct dkim_sign_opts o = { .headers = (const char *const *)d->headers,
					    .oversign = (const char *const *)d->oversign,
					    .simple = d->canon & 1 };
		if ((sig[i] = dkim_sign_opts(d->key, w.data, w.len, &o, t, err, errlen)) == NULL) {
			free(sig[0]);
			msg_wire_fini(&w);
			snprintf(result, SIGNER_RESULT_MAX, "none");
			return -1;
		}
		total += strlen(sig[i]);
		rl += (size_t)snprintf(result + rl, SIGNER_RESULT_MAX - rl, "%sd=%s s=%s", i ? "; " : "",
				       dkim_key_domain(d->key), dkim_key_selector(d->key));
		if (rl >= SIGNER_RESULT_MAX)
			rl = SIGNER_RESULT_MAX - 1;
	}
	char *m = xmalloc(total + 1);
	size_t o = 0;
	for (int i = 1; i >= 0; i--) { /* the extra (platform) signature outermost */
		if (sig[i] == NULL)
			continue;
		size_t n = strlen(sig[i]);
		memcpy(m + o, sig[i], n);
		o += n;
		free(sig[i]);
	}
	m[o] = '\0';
	/* the signatures are folded lines of ASCII; the longest line counts them */
	for (const char *l = m, *nl; l < m + o; l = nl + 1) {
		nl = memchr(l, '\n', (size_t)(m + o - l));
		if (nl == NULL)
			nl = m + o - 1;
		size_t text = (size_t)(nl - l) - (nl > l && nl[-1] == '\r');
		if (text > w.longest_line)
			w.longest_line = text;
	}
	out->pre = m;
	out->wire = w;
	out->wire.pre = m;
	out->wire.pre_len = o;
	return 0;
}

int signer_sign(const struct config *c, const char *raw, size_t len, const char *want, int64_t t,
		struct signed_msg *out, char result[SIGNER_RESULT_MAX], char *err, size_t errlen)
{
	struct signer_plan p;
	memset(out, 0, sizeof(*out));
	int rc = signer_plan(c, raw, len, want, &p, result, err, errlen);
	if (rc <= 0)
		return rc;
	return signer_apply(&p, raw, len, t, out, result, err, errlen);
}
