/* signer.c: which keys sign a job's message, and signing it (signer.h). */
#include "sender/signer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sender/dkim.h"
#include "sender/msg.h"
#include "sender/util.h"

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
					if (ch == '>' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' ||
					    ch == ',' || ch == ';' || ch == ')' || ch == '(' || ch == '"')
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

int signer_sign(const struct config *c, const char *raw, size_t len, const char *want, int64_t t,
		char **out, size_t *outlen, char result[SIGNER_RESULT_MAX], char *err, size_t errlen)
{
	const struct dkim_conf *use[2] = { NULL, NULL };
	char dom[256];
	*out = NULL;
	*outlen = 0;
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
	if (use[0] == NULL) {
		if (!c->dkim_require)
			return 0;
		snprintf(err, errlen, off ? "dkim: dkim=no, and dkim_require = yes"
					  : "dkim: no key for the From: domain, and dkim_require = yes");
		return -1;
	}
	struct msg_wire w;
	msg_wire_prepare(raw, len, false, &w);
	char *sig[2] = { NULL, NULL };
	size_t total = w.len, rl = 0;
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
	memcpy(m + o, w.data, w.len);
	o += w.len;
	m[o] = '\0';
	msg_wire_fini(&w);
	*out = m;
	*outlen = o;
	return 0;
}
