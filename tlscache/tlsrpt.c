/* tlsrpt.c: SMTP TLS Reporting (RFC 8460), pure: the counters' key scheme
 * and the report.
 *
 * Counting: every TLS session attempt (struct tls_event) becomes a few Redis
 * commands (tlsrpt_event_cmds) that only ever HINCRBY/HSET/SADD/EXPIRE, so
 * any number of mxsend processes add into the same per-day hash; the policy
 * key inside a field keeps a day on which a domain changed its MTA-STS policy
 * apart (RFC 8460 4.4: one "policies" entry per policy applied). Reading back
 * (tlsrpt_counts_*) accepts the fields in any order (HGETALL has none). The
 * commands are sent, and the hashes read, by queue/tlsrpt_store.c: this file
 * owns the keys and fields, that one only carries them.
 * Reports: jansson builds the JSON, zlib gzips it, the mailto: message is
 * composed here; sending is the caller's (`mxsend tlsrpt`): it enqueues the
 * message as an ordinary job, or POSTs the gzip over HTTPS.
 * Ownership: everything returned is malloc'd and the caller's; the event is
 * borrowed for the call. Aborts on OOM. */
#include "tlscache/tlsrpt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>
#include <zlib.h>

#include "tlscache/sts.h"

static void *must(void *p)
{
	if (p == NULL)
		abort(); /* OOM: as sts.c */
	return p;
}

#define S(x) ((x) ? (x) : "")

/* ---- the event's policy ---- */

void tlsrpt_event_policy(struct tls_event *ev, const char *domain, const struct sts_policy *pol)
{
	snprintf(ev->policy_domain, sizeof(ev->policy_domain), "%s", domain);
	snprintf(ev->policy_type, sizeof(ev->policy_type), "%s", pol ? "sts" : "no-policy-found");
	ev->policy_id[0] = ev->policy_mode[0] = ev->policy_mx[0] = '\0';
	ev->max_age = 0;
	if (pol == NULL)
		return;
	snprintf(ev->policy_id, sizeof(ev->policy_id), "%s", pol->id);
	snprintf(ev->policy_mode, sizeof(ev->policy_mode), "%s", sts_mode_name(pol->mode));
	size_t o = 0;
	for (int i = 0; i < pol->n_mx && o + 2 < sizeof(ev->policy_mx); i++)
		o += (size_t)snprintf(ev->policy_mx + o, sizeof(ev->policy_mx) - o, "%s%s",
				      i ? "," : "", pol->mx[i]);
	ev->max_age = pol->max_age;
}

/* ---- counters: event -> commands ---- */

/* Copy of a name that must be [a-z0-9._-], lowercased (domains, result
 * types), or [A-Za-z0-9] kept as is (policy ids: RFC 8461 3.1); -1 if
 * empty (unless allowed), too long, or with another byte. */
static int clean_name(char *dst, size_t n, const char *s, bool allow_empty, bool id)
{
	size_t i = 0;
	for (; s[i] != '\0'; i++) {
		char c = s[i];
		bool upper = c >= 'A' && c <= 'Z';
		if (upper && !id)
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || upper || c == '.' ||
		      c == '-' || c == '_') ||
		    i + 1 >= n)
			return -1;
		dst[i] = c;
	}
	dst[i] = '\0';
	return (i == 0 && !allow_empty) ? -1 : 0;
}

/* A host or address inside a '|'-separated field: no separators, no controls. */
static void clean_part(char *dst, size_t n, const char *s)
{
	size_t i = 0;
	for (; s[i] != '\0' && i + 1 < n; i++)
		dst[i] = (s[i] == '|' || (unsigned char)s[i] <= 0x20 || s[i] == 0x7f) ? '_' : s[i];
	dst[i] = '\0';
}

static int emit_cmd(tlsrpt_cmd_fn *emit, void *arg, int argc, const char **argv)
{
	size_t len[8];
	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	return emit(arg, argc, argv, len);
}

int tlsrpt_key(char *buf, size_t n, const char *prefix, enum tlsrpt_key_kind kind,
	       const char *day, const char *domain)
{
	if (prefix == NULL)
		prefix = TLSRPT_PREFIX;
	int k;
	switch (kind) {
	case TLSRPT_KEY_COUNTS:
		k = snprintf(buf, n, "%s:%s:%s", prefix, day, S(domain));
		break;
	case TLSRPT_KEY_DAYS:
		k = snprintf(buf, n, "%s:days:%s", prefix, day);
		break;
	case TLSRPT_KEY_SENT:
		k = snprintf(buf, n, "%s:sent:%s:%s", prefix, day, S(domain));
		break;
	default:
		return -1;
	}
	return k < 0 || (size_t)k >= n ? -1 : k;
}

int tlsrpt_event_cmds(const struct tls_event *ev, const char *prefix, tlsrpt_cmd_fn *emit,
		      void *arg)
{
	char domain[254], type[24], id[40], result[48], mode[16];
	if (prefix == NULL)
		prefix = TLSRPT_PREFIX;
	const char *ptype = ev->policy_type[0] ? ev->policy_type : "no-policy-found";
	if (clean_name(domain, sizeof(domain), ev->policy_domain, false, false) != 0 ||
	    clean_name(type, sizeof(type), ptype, false, false) != 0 ||
	    clean_name(id, sizeof(id), ev->policy_id, true, true) != 0 ||
	    clean_name(mode, sizeof(mode), ev->policy_mode, true, false) != 0 ||
	    clean_name(result, sizeof(result), ev->result, true, false) != 0 ||
	    strlen(prefix) > 128)
		return -EINVAL;
	bool sts = strcmp(type, "sts") == 0, tlsa = strcmp(type, "tlsa") == 0;
	char pk[72];
	/* a TLSA policy is one MX host's records: its id tells them apart */
	snprintf(pk, sizeof(pk), sts || (tlsa && id[0]) ? "%s:%s" : "%s", type, id);

	char day[11], key[512], days[256], field[640], why[640], pol[1200], mx[600];
	uint64_t ms = ev->when_ms ? ev->when_ms : (uint64_t)time(NULL) * 1000;
	tlsrpt_day_format((int64_t)(ms / 1000), day);
	tlsrpt_key(key, sizeof(key), prefix, TLSRPT_KEY_COUNTS, day, domain);
	tlsrpt_key(days, sizeof(days), prefix, TLSRPT_KEY_DAYS, day, NULL);
	if (result[0] == '\0') {
		snprintf(field, sizeof(field), "ok:%s", pk);
	} else {
		char h[256], ip[64], src[64];
		clean_part(h, sizeof(h), ev->mx);
		clean_part(ip, sizeof(ip), ev->ip);
		clean_part(src, sizeof(src), ev->sending_ip);
		snprintf(field, sizeof(field), "fail:%s|%s|%s|%s|%s", pk, result, h, ip, src);
		snprintf(why, sizeof(why), "why:%s", field + 5);
	}

	const char *hset[8] = { "HSET", key };
	int nh = 2;
	char fpol[96], fmx[96];
	if (sts) {
		/* RFC 8460 4.4 policy-string: the policy's lines (RFC 8461 3.2) */
		size_t o = (size_t)snprintf(pol, sizeof(pol), "version: STSv1\nmode: %s",
					    mode[0] ? mode : "enforce");
		clean_part(mx, sizeof(mx), ev->policy_mx);
		for (char *p = mx; *p && o < sizeof(pol);) {
			size_t l = strcspn(p, ",");
			if (l > 0)
				o += (size_t)snprintf(pol + o, sizeof(pol) - o, "\nmx: %.*s", (int)l, p);
			p += l + (p[l] == ',');
		}
		if (o < sizeof(pol))
			snprintf(pol + o, sizeof(pol) - o, "\nmax_age: %u", (unsigned)ev->max_age);
	} else if (tlsa) {
		/* RFC 8460 4.4 policy-string for "tlsa": the records in
		 * presentation form ("3 1 1 ab..."), one per string (policy_mx
		 * holds them comma-separated); mx-host: the MX host */
		size_t o = 0;
		for (const char *p = ev->policy_mx; *p && o + 1 < sizeof(pol); p++)
			if (*p == ',' || *p == ' ' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
				pol[o++] = *p == ',' ? '\n' : *p;
		pol[o] = '\0';
		clean_part(mx, sizeof(mx), ev->mx);
	}
	if (sts || tlsa) {
		snprintf(fpol, sizeof(fpol), "policy:%s", pk);
		snprintf(fmx, sizeof(fmx), "mx:%s", pk);
		hset[nh++] = fpol;
		hset[nh++] = pol;
		hset[nh++] = fmx;
		hset[nh++] = mx;
	}
	if (result[0] != '\0' && ev->detail[0] != '\0') {
		hset[nh++] = why;
		hset[nh++] = ev->detail;
	}
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%d", TLSRPT_TTL_S);
	const char *c1[] = { "HINCRBY", key, field, "1" }, *c3[] = { "EXPIRE", key, ttl },
		   *c4[] = { "SADD", days, domain }, *c5[] = { "EXPIRE", days, ttl };
	const struct { const char **argv; int argc; } cmds[] = {
		{ c1, 4 }, { hset, nh }, { c3, 3 }, { c4, 3 }, { c5, 3 },
	};
	int n = 0;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (cmds[i].argc == 2)
			continue; /* HSET with nothing to set */
		int rc = emit_cmd(emit, arg, cmds[i].argc, cmds[i].argv);
		if (rc != 0)
			return rc;
		n++;
	}
	return n;
}

/* ---- a day's counters, read back ---- */

static char *dupn(const char *s, size_t n)
{
	char *d = must(malloc(n + 1));
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Room for one more element in *v (n elements of size sz). */
static void *grow(void *v, int n, size_t sz)
{
	return must(realloc(v, (size_t)(n + 1) * sz));
}

static struct tlsrpt_policy *policy_get(struct tlsrpt_counts *c, const char *pk, size_t n)
{
	for (int i = 0; i < c->npol; i++)
		if (strlen(c->pol[i].key) == n && memcmp(c->pol[i].key, pk, n) == 0)
			return &c->pol[i];
	c->pol = grow(c->pol, c->npol, sizeof(*c->pol));
	struct tlsrpt_policy *p = &c->pol[c->npol++];
	memset(p, 0, sizeof(*p));
	p->key = dupn(pk, n);
	const char *colon = memchr(pk, ':', n);
	p->type = dupn(pk, colon ? (size_t)(colon - pk) : n);
	return p;
}

/* "PK|RESULT|MX|IP|SRC" -> the policy's failure entry (found or added). */
static struct tlsrpt_fail *fail_get(struct tlsrpt_counts *c, const char *s, size_t n)
{
	const char *part[5];
	size_t plen[5];
	int k = 0;
	const char *p = s, *e = s + n;
	while (k < 5) {
		const char *bar = memchr(p, '|', (size_t)(e - p));
		part[k] = p;
		plen[k] = bar ? (size_t)(bar - p) : (size_t)(e - p);
		k++;
		if (bar == NULL)
			break;
		p = bar + 1;
	}
	if (k != 5 || plen[0] == 0 || plen[1] == 0 || part[4] + plen[4] != e)
		return NULL;
	struct tlsrpt_policy *pol = policy_get(c, part[0], plen[0]);
	for (int i = 0; i < pol->nfail; i++) {
		struct tlsrpt_fail *f = &pol->fail[i];
		const char *have[4] = { f->result, f->mx, f->ip, f->sending_ip };
		bool same = true;
		for (int j = 0; j < 4 && same; j++)
			same = strlen(have[j]) == plen[j + 1] && memcmp(have[j], part[j + 1], plen[j + 1]) == 0;
		if (same)
			return f;
	}
	pol->fail = grow(pol->fail, pol->nfail, sizeof(*pol->fail));
	struct tlsrpt_fail *f = &pol->fail[pol->nfail++];
	f->result = dupn(part[1], plen[1]);
	f->mx = dupn(part[2], plen[2]);
	f->ip = dupn(part[3], plen[3]);
	f->sending_ip = dupn(part[4], plen[4]);
	f->detail = dupn("", 0);
	f->count = 0;
	return f;
}

static uint64_t parse_u64(const char *s, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	return v;
}

static bool has_prefix(const char *s, size_t n, const char *pre, size_t *plen)
{
	*plen = strlen(pre);
	return n > *plen && memcmp(s, pre, *plen) == 0;
}

int tlsrpt_counts_add(struct tlsrpt_counts *c, const char *field, size_t flen, const char *val,
		      size_t vlen)
{
	size_t pl;
	struct tlsrpt_fail *f;
	if (has_prefix(field, flen, "ok:", &pl)) {
		policy_get(c, field + pl, flen - pl)->ok += parse_u64(val, vlen);
	} else if (has_prefix(field, flen, "fail:", &pl)) {
		if ((f = fail_get(c, field + pl, flen - pl)) == NULL)
			return -1;
		f->count += parse_u64(val, vlen);
	} else if (has_prefix(field, flen, "why:", &pl)) {
		if ((f = fail_get(c, field + pl, flen - pl)) == NULL)
			return -1;
		free(f->detail);
		f->detail = dupn(val, vlen);
	} else if (has_prefix(field, flen, "policy:", &pl)) {
		struct tlsrpt_policy *p = policy_get(c, field + pl, flen - pl);
		free(p->strings);
		p->strings = dupn(val, vlen);
	} else if (has_prefix(field, flen, "mx:", &pl)) {
		struct tlsrpt_policy *p = policy_get(c, field + pl, flen - pl);
		free(p->mx);
		p->mx = dupn(val, vlen);
	} else {
		return -1;
	}
	return 0;
}

static int cmp_policy(const void *a, const void *b)
{
	return strcmp(((const struct tlsrpt_policy *)a)->key, ((const struct tlsrpt_policy *)b)->key);
}

static int cmp_fail(const void *a, const void *b)
{
	const struct tlsrpt_fail *x = a, *y = b;
	int r = strcmp(x->result, y->result);
	if (r == 0)
		r = strcmp(x->mx, y->mx);
	if (r == 0)
		r = strcmp(x->ip, y->ip);
	if (r == 0)
		r = strcmp(x->sending_ip, y->sending_ip);
	return r;
}

static void fail_fini(struct tlsrpt_fail *f)
{
	free(f->result);
	free(f->mx);
	free(f->ip);
	free(f->sending_ip);
	free(f->detail);
}

static void policy_fini(struct tlsrpt_policy *p)
{
	for (int i = 0; i < p->nfail; i++)
		fail_fini(&p->fail[i]);
	free(p->fail);
	free(p->key);
	free(p->type);
	free(p->strings);
	free(p->mx);
}

void tlsrpt_counts_finish(struct tlsrpt_counts *c)
{
	int np = 0;
	for (int i = 0; i < c->npol; i++) {
		struct tlsrpt_policy *p = &c->pol[i];
		int nf = 0;
		p->failed = 0;
		for (int k = 0; k < p->nfail; k++) {
			if (p->fail[k].count == 0) { /* a reason without a count */
				fail_fini(&p->fail[k]);
				continue;
			}
			p->failed += p->fail[k].count;
			p->fail[nf++] = p->fail[k];
		}
		p->nfail = nf;
		if (p->ok + p->failed == 0) {
			policy_fini(p);
			continue;
		}
		if (p->nfail > 1)
			qsort(p->fail, (size_t)p->nfail, sizeof(*p->fail), cmp_fail);
		c->pol[np++] = *p;
	}
	c->npol = np;
	if (np > 1)
		qsort(c->pol, (size_t)np, sizeof(*c->pol), cmp_policy);
}

void tlsrpt_counts_fini(struct tlsrpt_counts *c)
{
	for (int i = 0; i < c->npol; i++)
		policy_fini(&c->pol[i]);
	free(c->pol);
	c->pol = NULL;
	c->npol = 0;
}

/* ---- the report (RFC 8460 4.4) ---- */

/* A JSON string; text that is not UTF-8 (a peer's error text) loses its
 * non-ASCII bytes rather than the whole report. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	if (j != NULL)
		return j;
	char *t = strdup(s);
	if (t == NULL)
		return NULL;
	for (char *p = t; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(t);
	free(t);
	return j;
}

/* A JSON array of the parts of s split at sep (empty parts skipped). */
static json_t *jsplit(const char *s, char sep)
{
	json_t *a = json_array();
	for (const char *p = s; a != NULL && *p;) {
		size_t l = strcspn(p, (char[]){ sep, '\0' });
		if (l > 0) {
			char *part = dupn(p, l);
			json_array_append_new(a, jstr(part));
			free(part);
		}
		p += l + (p[l] == sep);
	}
	return a;
}

static json_t *policy_json(const struct tlsrpt_policy *p, const char *domain)
{
	json_t *pol = json_object(), *o = json_object(), *sum = json_object();
	json_object_set_new(pol, "policy-type", jstr(p->type));
	if (p->strings && p->strings[0])
		json_object_set_new(pol, "policy-string", jsplit(p->strings, '\n'));
	json_object_set_new(pol, "policy-domain", jstr(domain));
	if (p->mx && p->mx[0])
		json_object_set_new(pol, "mx-host", jsplit(p->mx, ','));
	json_object_set_new(o, "policy", pol);
	json_object_set_new(sum, "total-successful-session-count", json_integer((json_int_t)p->ok));
	json_object_set_new(sum, "total-failure-session-count", json_integer((json_int_t)p->failed));
	json_object_set_new(o, "summary", sum);
	if (p->nfail > 0) {
		json_t *fd = json_array();
		for (int i = 0; i < p->nfail; i++) {
			const struct tlsrpt_fail *f = &p->fail[i];
			json_t *d = json_object();
			json_object_set_new(d, "result-type", jstr(f->result));
			if (f->sending_ip[0])
				json_object_set_new(d, "sending-mta-ip", jstr(f->sending_ip));
			if (f->mx[0])
				json_object_set_new(d, "receiving-mx-hostname", jstr(f->mx));
			if (f->ip[0])
				json_object_set_new(d, "receiving-ip", jstr(f->ip));
			json_object_set_new(d, "failed-session-count", json_integer((json_int_t)f->count));
			if (f->detail[0])
				json_object_set_new(d, "failure-reason-code", jstr(f->detail));
			json_array_append_new(fd, d);
		}
		json_object_set_new(o, "failure-details", fd);
	}
	return o;
}

char *tlsrpt_json(const struct tlsrpt_counts *c, const struct tlsrpt_meta *m, bool pretty)
{
	char day[11], start[32], end[32];
	tlsrpt_day_format(m->day_start, day);
	snprintf(start, sizeof(start), "%sT00:00:00Z", day);
	snprintf(end, sizeof(end), "%sT23:59:59Z", day);
	json_t *root = json_object(), *range = json_object(), *pols = json_array();
	json_object_set_new(root, "organization-name", jstr(S(m->org)));
	json_object_set_new(range, "start-datetime", json_string(start));
	json_object_set_new(range, "end-datetime", json_string(end));
	json_object_set_new(root, "date-range", range);
	json_object_set_new(root, "contact-info", jstr(S(m->contact)));
	json_object_set_new(root, "report-id", jstr(S(m->report_id)));
	for (int i = 0; i < c->npol; i++)
		json_array_append_new(pols, policy_json(&c->pol[i], c->domain));
	json_object_set_new(root, "policies", pols);
	char *out = json_dumps(root, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return out;
}

int tlsrpt_gzip(const void *in, size_t n, unsigned char **out, size_t *outlen)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	/* windowBits 15 + 16: a gzip wrapper (RFC 1952), not zlib's */
	if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	size_t cap = deflateBound(&zs, (uLong)n) + 32;
	unsigned char *buf = malloc(cap);
	if (buf == NULL) {
		deflateEnd(&zs);
		return -ENOMEM;
	}
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)n;
	zs.next_out = buf;
	zs.avail_out = (uInt)cap;
	int rc = deflate(&zs, Z_FINISH);
	size_t got = cap - zs.avail_out;
	deflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*outlen = got;
	return 0;
}

int tlsrpt_filename(char *buf, size_t n, const char *submitter, const char *domain,
		    int64_t begin, int64_t end, const char *uniq)
{
	int k = snprintf(buf, n, "%s!%s!%lld!%lld%s%s.json.gz", submitter, domain, (long long)begin,
			 (long long)end, uniq && *uniq ? "!" : "", S(uniq));
	return (k < 0 || (size_t)k >= n) ? -1 : k;
}

/* ---- the mailto: message (RFC 8460 5.3) ---- */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (np == NULL)
			abort();
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (k > 0)
		sb_add(b, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* Base64 (RFC 4648) of n <= 57 bytes into out (77 bytes at least), no
 * line end; returns the length. */
static size_t base64_line(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

char *tlsrpt_base64(const unsigned char *in, size_t n, size_t *outlen)
{
	struct sbuf b = { 0 };
	char line[80];
	sb_add(&b, "", 0);
	for (size_t i = 0; i < n; i += 57) { /* 57 bytes = 76 characters, RFC 2045 6.8's limit */
		size_t k = base64_line(in + i, n - i < 57 ? n - i : 57, line);
		memcpy(line + k, "\r\n", 2);
		sb_add(&b, line, k + 2);
	}
	if (outlen)
		*outlen = b.len;
	return b.p;
}

static bool header_safe(const char *s)
{
	return s != NULL && strpbrk(s, "\r\n") == NULL;
}

char *tlsrpt_mail_build(const struct tlsrpt_mail *m, size_t *len)
{
	if (!header_safe(m->from) || !header_safe(m->to) || !header_safe(m->domain) ||
	    !header_safe(m->submitter) || !header_safe(m->report_id) ||
	    !header_safe(m->filename) || strchr(m->filename, '"') != NULL || !header_safe(m->day))
		return NULL;
	/* The boundary: never at the start of a base64 line ('=' and '_' are
	 * not in its alphabet where a line can start with "--"). */
	char boundary[96] = "=_tlsrpt_";
	size_t bl = strlen(boundary);
	for (const char *p = m->report_id; *p && bl + 1 < sizeof(boundary); p++)
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
			boundary[bl++] = *p;
	boundary[bl] = '\0';
	char date[64];
	time_t t = (time_t)m->date;
	struct tm tm;
	gmtime_r(&t, &tm);
	static const char *const wd[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const mo[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	snprintf(date, sizeof(date), "%s, %02d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday],
		 tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);

	struct sbuf b = { 0 };
	sb_printf(&b, "From: %s\r\nTo: %s\r\nDate: %s\r\n", m->from, m->to, date);
	/* RFC 8460 5.3 subject ABNF; folded (FWS) like the RFC's example */
	sb_printf(&b, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
		  m->domain, m->submitter, m->report_id);
	sb_printf(&b, "Message-ID: <%s>\r\n", m->report_id);
	sb_printf(&b, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n", m->domain,
		  m->submitter);
	sb_printf(&b, "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n");
	sb_printf(&b, "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"%s\"\r\n",
		  boundary);
	sb_printf(&b, "\r\nThis is a multipart message in MIME format.\r\n\r\n");
	sb_printf(&b, "--%s\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n"
		      "Content-Transfer-Encoding: 7bit\r\n\r\n",
		  boundary);
	sb_printf(&b, "This is an aggregate TLS report (RFC 8460) from %s\r\nfor %s, %s (UTC).\r\n\r\n",
		  m->submitter, m->domain, m->day);
	sb_printf(&b, "--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\n"
		      "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n",
		  boundary, TLSRPT_MEDIA_TYPE, m->filename);
	size_t n64;
	char *b64 = tlsrpt_base64(m->gz, m->gzlen, &n64);
	sb_add(&b, b64, n64);
	free(b64);
	sb_printf(&b, "\r\n--%s--\r\n", boundary);
	*len = b.len;
	return b.p;
}

/* ---- URIs and days ---- */

static int hexval(char c)
{
	return (c >= '0' && c <= '9') ? c - '0'
	       : (c >= 'a' && c <= 'f') ? c - 'a' + 10
	       : (c >= 'A' && c <= 'F') ? c - 'A' + 10
					: -1;
}

int tlsrpt_mailto(const char *uri, char *addr, size_t n)
{
	if (strncasecmp(uri, "mailto:", 7) != 0)
		return -1;
	size_t k = 0, at = 0, nat = 0;
	for (const char *p = uri + 7; *p && *p != '?'; p++) {
		int c = (unsigned char)*p;
		if (c == '%') {
			int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
			if (l < 0)
				return -1;
			c = h * 16 + l;
			p += 2;
		}
		if (c <= 0x20 || c >= 0x7f || strchr("<>()[],;:\\\"", c) != NULL || k + 1 >= n)
			return -1;
		if (c == '@') {
			at = k;
			nat++;
		}
		addr[k++] = (char)c;
	}
	addr[k] = '\0';
	return (nat == 1 && at > 0 && at + 1 < k) ? 0 : -1;
}

int tlsrpt_https(const char *uri, char *host, size_t hostlen, int *port, char *path,
		 size_t pathlen)
{
	if (strncasecmp(uri, "https://", 8) != 0)
		return -1;
	const char *a = uri + 8, *e = a + strcspn(a, "/?#");
	const char *colon = memchr(a, ':', (size_t)(e - a));
	const char *he = colon ? colon : e;
	size_t hl = (size_t)(he - a);
	if (hl == 0 || hl >= hostlen)
		return -1;
	for (size_t i = 0; i < hl; i++) {
		char c = a[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
			return -1; /* '@' (userinfo), '[' (IP literal), anything else */
		host[i] = c;
	}
	host[hl] = '\0';
	*port = 0;
	if (colon) {
		long v = 0;
		if (colon + 1 == e || e - colon > 6)
			return -1;
		for (const char *p = colon + 1; p < e; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			v = v * 10 + (*p - '0');
		}
		if (v < 1 || v > 65535)
			return -1;
		*port = (int)v;
	}
	size_t pl = strcspn(e, "#"), o = 0;
	if (*e != '/') /* "https://h?x" -> "/?x" */
		path[o++] = '/';
	if (o + pl >= pathlen)
		return -1;
	for (size_t i = 0; i < pl; i++)
		if ((unsigned char)e[i] <= 0x20 || e[i] == 0x7f)
			return -1;
	memcpy(path + o, e, pl);
	path[o + pl] = '\0';
	return 0;
}

int tlsrpt_day_parse(const char *s, int64_t *start)
{
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return -1;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
			return -1;
	struct tm tm = { 0 };
	tm.tm_year = atoi(s) - 1900;
	tm.tm_mon = atoi(s + 5) - 1;
	tm.tm_mday = atoi(s + 8);
	time_t t = timegm(&tm);
	char back[11];
	tlsrpt_day_format((int64_t)t, back);
	if (t == (time_t)-1 || strcmp(back, s) != 0) /* 2024-02-30 is not a day */
		return -1;
	*start = (int64_t)t;
	return 0;
}

void tlsrpt_day_format(int64_t t, char out[11])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	if (tt < 0 || tm.tm_year + 1900 > 9999) { /* outside what "YYYY-MM-DD" can say */
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = 70;
		tm.tm_mday = 1;
	}
	strftime(out, 11, "%Y-%m-%d", &tm);
}
