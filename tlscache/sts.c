/* sts.c: MTA-STS (RFC 8461) record/policy parsing, MX matching, the policy
 * cache and its decisions, and the TLSRPT (RFC 8460) record parser.
 *
 * Pure code: no I/O and no clock; times come in as wall-clock seconds so the
 * same cache logic serves memory and Redis-loaded policies. The decisions
 * where the RFC leaves room are listed in sts.h, one unit test each.
 *
 * The cache: a hash table of entries by lowercase domain plus an LRU list for
 * the bound. An entry exists for a domain with a policy and/or a recent failed
 * fetch (the 5-minute back-off per policy id must survive without a policy).
 * Policies are owned by their entry; sts_cache_decide hands out borrowed
 * pointers, valid until the next call that changes the cache.
 * Allocation failure aborts (like tlscache.c's must()). */
#include "tlscache/sts.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void *must(void *p)
{
	if (p == NULL) {
		fprintf(stderr, "mxsend: out of memory in sts\n");
		abort();
	}
	return p;
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static const char *const mode_names[] = { "none", "testing", "enforce" };

const char *sts_mode_name(enum sts_mode m)
{
	return (unsigned)m < 3 ? mode_names[m] : "?";
}

const char *sts_txt_rc_name(enum sts_txt_rc rc)
{
	static const char *const n[] = { "ok", "none", "invalid" };
	return (unsigned)rc < 3 ? n[rc] : "?";
}

const char *sts_decision_name(enum sts_decision d)
{
	static const char *const n[] = { "none", "use", "use-refresh", "fetch" };
	return (unsigned)d < 4 ? n[d] : "?";
}

/* ---- TXT records: shared by MTA-STS and TLSRPT ---- */

/* Does rec start with the version tag `v` followed by ';', WSP or its end? */
static bool has_version(const char *rec, const char *v)
{
	size_t n = strlen(v);
	if (strncmp(rec, v, n) != 0)
		return false;
	return rec[n] == ';' || rec[n] == '\0' || is_wsp(rec[n]);
}

/* Pick the one record of the set that carries version tag v. */
static enum sts_txt_rc pick_record(const char *const *rr, int n, const char *v, const char **rec,
				   const char **err)
{
	int found = 0;
	for (int i = 0; i < n; i++) {
		if (rr[i] != NULL && has_version(rr[i], v)) {
			*rec = rr[i];
			found++;
		}
	}
	if (found == 0)
		return STS_TXT_NONE;
	if (found > 1) {
		*err = "more than one record starts with the version tag";
		return STS_TXT_INVALID;
	}
	return STS_TXT_OK;
}

/* Iterator over "; name=value" fields after the version tag (RFC 8461 3.1 and
 * RFC 8460 3 share the shape: field-delim = *WSP ";" *WSP, optional final ";").
 * Returns 1 with name/value spans, 0 at the end, -1 on a syntax error. */
struct fields {
	const char *p;
};

static int next_field(struct fields *f, const char **name, size_t *nlen, const char **val,
		      size_t *vlen, bool value_commas, const char **err)
{
	const char *p = f->p;
	while (is_wsp(*p))
		p++;
	if (*p == '\0')
		return 0;
	if (*p != ';') {
		*err = "expected ';' between fields";
		return -1;
	}
	p++;
	while (is_wsp(*p))
		p++;
	if (*p == '\0') { /* a final ';' */
		f->p = p;
		return 0;
	}
	const char *n0 = p;
	if (!is_alnum(*p)) {
		*err = *p == ';' ? "empty field" : "bad field name";
		return -1;
	}
	while (is_alnum(*p) || *p == '_' || *p == '-' || *p == '.')
		p++;
	if (p - n0 > 32 || *p != '=') {
		*err = "bad field name";
		return -1;
	}
	*name = n0;
	*nlen = (size_t)(p - n0);
	p++;
	const char *v0 = p;
	/* value: %x21-3A / %x3C / %x3E-7E; a URI list may also hold WSP around
	 * its commas (RFC 8460 tlsrpt-rua). */
	for (;;) {
		unsigned char c = (unsigned char)*p;
		if (c >= 0x21 && c <= 0x7e && c != ';' && c != '=') {
			p++;
			continue;
		}
		if (value_commas && c == '=' && p > v0) { /* '=' inside a URI query */
			p++;
			continue;
		}
		if (value_commas && is_wsp((char)c)) {
			const char *q = p;
			while (is_wsp(*q))
				q++;
			if (*q == ',' || (q > p && p > v0 && p[-1] == ',')) {
				p = q;
				continue;
			}
		}
		break;
	}
	if (p == v0) {
		*err = "empty field value";
		return -1;
	}
	*val = v0;
	*vlen = (size_t)(p - v0);
	f->p = p;
	return 1;
}

enum sts_txt_rc sts_txt_parse(const char *const *rr, int n, char *id, const char **err)
{
	const char *dummy, *rec = NULL;
	if (err == NULL)
		err = &dummy;
	*err = "";
	id[0] = '\0';
	enum sts_txt_rc rc = pick_record(rr, n, "v=STSv1", &rec, err);
	if (rc != STS_TXT_OK)
		return rc;
	struct fields f = { rec + strlen("v=STSv1") };
	const char *name, *val;
	size_t nlen, vlen;
	int r, nfields = 0;
	bool have_id = false;
	while ((r = next_field(&f, &name, &nlen, &val, &vlen, false, err)) == 1) {
		nfields++;
		if (nlen == 2 && memcmp(name, "id", 2) == 0) {
			if (have_id) {
				*err = "more than one id";
				return STS_TXT_INVALID;
			}
			if (vlen > STS_ID_MAX) {
				*err = "id longer than 32 characters";
				return STS_TXT_INVALID;
			}
			for (size_t i = 0; i < vlen; i++) {
				if (!is_alnum(val[i])) {
					*err = "id has characters other than letters and digits";
					return STS_TXT_INVALID;
				}
			}
			memcpy(id, val, vlen);
			id[vlen] = '\0';
			have_id = true;
		}
		/* other fields: extensions, ignored */
	}
	if (r < 0) {
		id[0] = '\0';
		return STS_TXT_INVALID;
	}
	if (!have_id) {
		*err = nfields ? "no id field" : "no fields after v=STSv1";
		return STS_TXT_INVALID;
	}
	return STS_TXT_OK;
}

/* ---- host name patterns ---- */

/* Validate a policy mx value (already trimmed, len bytes) and write it
 * lowercase, without a trailing dot, into out (size >= 256). */
static bool mx_pattern_norm(const char *s, size_t len, char *out)
{
	if (len > 0 && s[len - 1] == '.')
		len--;
	size_t off = 0;
	if (len >= 2 && s[0] == '*' && s[1] == '.')
		off = 2;
	if (len - off == 0 || len > 253)
		return false;
	size_t label = 0;
	bool numeric_last = true;
	for (size_t i = off; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			numeric_last = true;
			continue;
		}
		if (!is_alnum(c) && c != '-' && c != '_')
			return false;
		/* A host name label neither starts nor ends with '-' (RFC 1123
		 * 2.1); "-" alone would also read back from Redis as "no mx". */
		if (c == '-' && label == 0)
			return false;
		if (!(c >= '0' && c <= '9'))
			numeric_last = false;
		if (++label > 63)
			return false;
	}
	if (label == 0 || s[len - 1] == '-')
		return false;
	/* An all-digit last label: an IPv4 literal (or a name no MX can have). */
	if (numeric_last)
		return false;
	for (size_t i = 0; i < len; i++)
		out[i] = lower(s[i]);
	out[len] = '\0';
	return true;
}

static size_t name_len(const char *s)
{
	size_t n = strlen(s);
	if (n > 0 && s[n - 1] == '.')
		n--;
	return n;
}

bool sts_mx_match(const char *pattern, const char *host)
{
	size_t pl = name_len(pattern), hl = name_len(host);
	if (pl == 0 || hl == 0)
		return false;
	if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		/* exactly one label, then ".suffix" (RFC 8461 4.1) */
		const char *dot = memchr(host, '.', hl);
		if (dot == NULL || dot == host)
			return false;
		size_t rest = hl - (size_t)(dot + 1 - host);
		return rest == pl - 2 && rest > 0 && strncasecmp(dot + 1, pattern + 2, rest) == 0;
	}
	return pl == hl && strncasecmp(pattern, host, pl) == 0;
}

bool sts_policy_allows(const struct sts_policy *p, const char *host)
{
	for (int i = 0; i < p->n_mx; i++)
		if (sts_mx_match(p->mx[i], host))
			return true;
	return false;
}

/* ---- policy body ---- */

void sts_policy_fini(struct sts_policy *p)
{
	if (p == NULL)
		return;
	for (int i = 0; i < p->n_mx; i++)
		free(p->mx[i]);
	free(p->mx);
	memset(p, 0, sizeof(*p));
}

static void add_mx(struct sts_policy *p, const char *pat)
{
	if ((p->n_mx & (p->n_mx - 1)) == 0) { /* 0, 1, 2, 4, ...: grow */
		size_t cap = p->n_mx ? (size_t)p->n_mx * 2 : 4;
		p->mx = must(realloc(p->mx, cap * sizeof(*p->mx)));
	}
	p->mx[p->n_mx++] = must(strdup(pat));
}

void sts_policy_copy(struct sts_policy *dst, const struct sts_policy *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->mode = src->mode;
	dst->max_age = src->max_age;
	dst->n_bad_mx = src->n_bad_mx;
	memcpy(dst->id, src->id, sizeof(dst->id));
	for (int i = 0; i < src->n_mx; i++)
		add_mx(dst, src->mx[i]);
}

static int parse_max_age(const char *v, size_t n, uint32_t *out)
{
	if (n == 0 || n > 10)
		return -1;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : (uint32_t)x;
	return 0;
}

static bool span_is(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int sts_policy_parse(const char *body, size_t len, struct sts_policy *p, const char **err)
{
	const char *dummy;
	if (err == NULL)
		err = &dummy;
	memset(p, 0, sizeof(*p));
	if (memchr(body, '\0', len) != NULL) {
		*err = "NUL byte in policy";
		return -1;
	}
	bool have_version = false, have_mode = false, have_age = false;
	const char *end = body + len;
	for (const char *line = body; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *le = nl ? nl : end;
		const char *next = nl ? nl + 1 : end;
		if (le > line && le[-1] == '\r')
			le--;
		const char *s = line;
		while (s < le && is_wsp(*s))
			s++;
		const char *e = le;
		while (e > s && is_wsp(e[-1]))
			e--;
		line = next;
		if (s == e)
			continue; /* blank line */
		const char *colon = memchr(s, ':', (size_t)(e - s));
		if (colon == NULL || colon == s) {
			*err = "line without \"key:\"";
			goto fail;
		}
		const char *k = s, *ke = colon;
		while (ke > k && is_wsp(ke[-1]))
			ke--;
		const char *v = colon + 1;
		while (v < e && is_wsp(*v))
			v++;
		size_t kn = (size_t)(ke - k), vn = (size_t)(e - v);
		if (span_is(k, kn, "version")) {
			if (have_version)
				continue; /* first instance counts */
			if (!span_is(v, vn, "STSv1")) {
				*err = "version is not STSv1";
				goto fail;
			}
			have_version = true;
		} else if (span_is(k, kn, "mode")) {
			if (have_mode)
				continue;
			if (span_is(v, vn, "enforce"))
				p->mode = STS_MODE_ENFORCE;
			else if (span_is(v, vn, "testing"))
				p->mode = STS_MODE_TESTING;
			else if (span_is(v, vn, "none"))
				p->mode = STS_MODE_NONE;
			else {
				*err = "mode is not enforce, testing or none";
				goto fail;
			}
			have_mode = true;
		} else if (span_is(k, kn, "max_age")) {
			if (have_age)
				continue;
			if (parse_max_age(v, vn, &p->max_age) != 0) {
				*err = "max_age is not an integer of 1-10 digits";
				goto fail;
			}
			have_age = true;
		} else if (span_is(k, kn, "mx")) {
			char pat[256];
			if (vn < sizeof(pat) && mx_pattern_norm(v, vn, pat))
				add_mx(p, pat);
			else
				p->n_bad_mx++;
		}
		/* unknown keys: ignored (RFC 8461 3.2) */
	}
	if (!have_version) {
		*err = "missing version";
		goto fail;
	}
	if (!have_mode) {
		*err = "missing mode";
		goto fail;
	}
	if (!have_age) {
		*err = "missing max_age";
		goto fail;
	}
	if (p->mode != STS_MODE_NONE && p->n_mx == 0) {
		*err = p->n_bad_mx ? "no valid mx pattern" : "missing mx";
		goto fail;
	}
	return 0;
fail:
	sts_policy_fini(p);
	return -1;
}

/* ---- Redis form ---- */

size_t sts_policy_encode(const struct sts_policy *p, int64_t fetched_at, char *buf, size_t buflen)
{
	size_t need = (size_t)snprintf(buf, buflen, "1 %" PRId64 " %s %" PRIu32 " %s ", fetched_at,
				       sts_mode_name(p->mode), p->max_age, p->id[0] ? p->id : "-");
	if (p->n_mx == 0) {
		if (need + 1 < buflen)
			memcpy(buf + need, "-", 2);
		return need + 1;
	}
	for (int i = 0; i < p->n_mx; i++) {
		size_t l = strlen(p->mx[i]);
		size_t at = need + (i > 0);
		if (at + l < buflen) {
			if (i > 0)
				buf[need] = ',';
			memcpy(buf + at, p->mx[i], l + 1);
		}
		need = at + l;
	}
	return need;
}

int sts_policy_decode(const char *s, struct sts_policy *p, int64_t *fetched_at, const char **err)
{
	const char *dummy;
	if (err == NULL)
		err = &dummy;
	memset(p, 0, sizeof(*p));
	char mode[16], id[64];
	long long at;
	unsigned long age;
	int used = 0;
	if (strncmp(s, "1 ", 2) != 0 ||
	    sscanf(s + 2, "%lld %15s %lu %63s %n", &at, mode, &age, id, &used) != 4 || used == 0) {
		*err = "not an encoded policy (version 1)";
		goto fail;
	}
	if (strcmp(mode, "enforce") == 0)
		p->mode = STS_MODE_ENFORCE;
	else if (strcmp(mode, "testing") == 0)
		p->mode = STS_MODE_TESTING;
	else if (strcmp(mode, "none") == 0)
		p->mode = STS_MODE_NONE;
	else {
		*err = "bad mode";
		goto fail;
	}
	if (age > STS_MAX_AGE_MAX || s[2] < '0' || s[2] > '9') { /* %lld skips blanks, takes a sign */
		*err = "bad max_age or time";
		goto fail;
	}
	p->max_age = (uint32_t)age;
	if (strcmp(id, "-") != 0) {
		size_t il = strlen(id);
		for (size_t i = 0; i < il; i++)
			if (!is_alnum(id[i]))
				il = 0;
		if (il == 0 || il > STS_ID_MAX) {
			*err = "bad id";
			goto fail;
		}
		memcpy(p->id, id, il + 1);
	}
	*fetched_at = at;
	const char *m = s + 2 + used;
	if (strcmp(m, "-") != 0) {
		while (*m) {
			const char *c = strchr(m, ',');
			size_t l = c ? (size_t)(c - m) : strlen(m);
			char pat[256];
			if (l >= sizeof(pat) || !mx_pattern_norm(m, l, pat)) {
				*err = "bad mx pattern";
				goto fail;
			}
			add_mx(p, pat);
			m += l + (c != NULL);
		}
	}
	if (p->mode != STS_MODE_NONE && p->n_mx == 0) {
		*err = "no mx";
		goto fail;
	}
	return 0;
fail:
	sts_policy_fini(p);
	return -1;
}

int64_t sts_policy_ttl(const char *s, int64_t now)
{
	struct sts_policy p;
	int64_t fetched_at;
	if (sts_policy_decode(s, &p, &fetched_at, NULL) != 0)
		return 0;
	int64_t max_age = p.max_age;
	sts_policy_fini(&p);
	if (fetched_at > INT64_MAX / 2 || now < -(INT64_MAX / 2)) /* no overflow below */
		return 0;
	return fetched_at + max_age - now;
}

int sts_redis_key(char *buf, size_t n, const char *prefix, const char *domain)
{
	int k = snprintf(buf, n, "%s:sts:%s", prefix ? prefix : STS_REDIS_DEFAULT, domain);
	return k < 0 || (size_t)k >= n ? -1 : k;
}

int sts_redis_match(char *buf, size_t n, const char *prefix)
{
	size_t o = 0;
	for (const char *p = prefix ? prefix : STS_REDIS_DEFAULT; *p; p++) {
		if (o + 2 >= n)
			return -1;
		if (strchr("*?[]\\", *p) != NULL)
			buf[o++] = '\\';
		buf[o++] = *p;
	}
	if (o + sizeof(":sts:*") > n)
		return -1;
	memcpy(buf + o, ":sts:*", sizeof(":sts:*"));
	return (int)(o + sizeof(":sts:*") - 1);
}

const char *sts_redis_domain(const char *key, const char *prefix)
{
	const char *p = prefix ? prefix : STS_REDIS_DEFAULT;
	size_t l = strlen(p);
	if (strncmp(key, p, l) != 0 || strncmp(key + l, ":sts:", 5) != 0)
		return NULL;
	return key[l + 5] != '\0' ? key + l + 5 : NULL;
}

/* ---- cache ---- */

struct entry {
	struct entry *prev, *next; /* LRU, most recent at head */
	struct entry *hnext;
	unsigned hash;
	bool has_pol, has_fail;
	struct sts_policy pol;
	int64_t fetched_at;
	char fail_id[STS_ID_MAX + 1];
	int64_t fail_at;
	char domain[];
};

struct sts_cache {
	unsigned max, n, nbuckets;
	struct entry **buckets;
	struct entry *head, *tail;
};

/* Lowercase, no trailing dot; false if too long. */
static bool domain_norm(const char *in, char *out)
{
	size_t n = name_len(in);
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = lower(in[i]);
	out[n] = '\0';
	return true;
}

static unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

struct sts_cache *sts_cache_new(unsigned max_entries)
{
	struct sts_cache *c = must(calloc(1, sizeof(*c)));
	c->max = max_entries ? max_entries : 10000;
	c->nbuckets = 64;
	while (c->nbuckets < c->max && c->nbuckets < (1u << 20))
		c->nbuckets *= 2;
	c->buckets = must(calloc(c->nbuckets, sizeof(*c->buckets)));
	return c;
}

static void entry_free(struct entry *e)
{
	sts_policy_fini(&e->pol);
	free(e);
}

void sts_cache_free(struct sts_cache *c)
{
	if (c == NULL)
		return;
	for (struct entry *e = c->head, *nx; e; e = nx) {
		nx = e->next;
		entry_free(e);
	}
	free(c->buckets);
	free(c);
}

static void lru_unlink(struct sts_cache *c, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct sts_cache *c, struct entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
}

static struct entry **find_slot(const struct sts_cache *c, const char *dom, unsigned h)
{
	struct entry **pp = &c->buckets[h % c->nbuckets];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->domain, dom) != 0))
		pp = &(*pp)->hnext;
	return pp;
}

static void drop(struct sts_cache *c, struct entry *e)
{
	struct entry **slot = find_slot(c, e->domain, e->hash);
	*slot = e->hnext;
	lru_unlink(c, e);
	entry_free(e);
	c->n--;
}

static struct entry *lookup(const struct sts_cache *c, const char *domain)
{
	char dom[256];
	if (!domain_norm(domain, dom))
		return NULL;
	return *find_slot(c, dom, hash_str(dom));
}

/* Find or create the entry for domain (moved to the LRU head). */
static struct entry *get_entry(struct sts_cache *c, const char *domain)
{
	char dom[256];
	if (!domain_norm(domain, dom))
		return NULL;
	unsigned h = hash_str(dom);
	struct entry **slot = find_slot(c, dom, h);
	if (*slot) {
		lru_unlink(c, *slot);
		lru_push(c, *slot);
		return *slot;
	}
	if (c->n >= c->max && c->tail) {
		drop(c, c->tail);
		slot = find_slot(c, dom, h);
	}
	size_t dl = strlen(dom) + 1;
	struct entry *e = must(calloc(1, sizeof(*e) + dl));
	memcpy(e->domain, dom, dl);
	e->hash = h;
	e->hnext = NULL;
	*slot = e;
	lru_push(c, e);
	c->n++;
	return e;
}

static int64_t expires_at(const struct entry *e)
{
	return e->fetched_at + (int64_t)e->pol.max_age;
}

static void set_why(char *why, const char *fmt, const char *a, const char *b)
{
	if (why)
		snprintf(why, STS_WHY_LEN, fmt, a, b);
}

enum sts_decision sts_cache_decide(struct sts_cache *c, const char *domain, const char *txt_id,
				   int64_t now, const struct sts_policy **pol, char *fetch_id,
				   char *why)
{
	*pol = NULL;
	fetch_id[0] = '\0';
	if (txt_id && (txt_id[0] == '\0' || strlen(txt_id) > STS_ID_MAX))
		txt_id = NULL;
	struct entry *e = lookup(c, domain);
	if (e && e->has_pol && now >= expires_at(e)) {
		sts_policy_fini(&e->pol);
		e->has_pol = false;
	}
	if (e && e->has_fail && now - e->fail_at >= STS_FETCH_RETRY_S)
		e->has_fail = false;
	if (e && !e->has_pol && !e->has_fail) {
		drop(c, e);
		e = NULL;
	}
	if (e) {
		lru_unlink(c, e);
		lru_push(c, e);
	}
	const struct sts_policy *cached = e && e->has_pol ? &e->pol : NULL;
	const char *want = txt_id ? txt_id : cached ? cached->id : NULL;
	bool backoff = e && e->has_fail && want && strcmp(e->fail_id, want) == 0;
	*pol = cached;

	if (cached == NULL) {
		if (txt_id == NULL) {
			set_why(why, "no TXT record and no cached policy%s%s", "", "");
			return STS_D_NONE;
		}
		if (backoff) {
			set_why(why, "fetch for id %s failed < 5 min ago%s", txt_id, "");
			return STS_D_NONE;
		}
		snprintf(fetch_id, STS_ID_MAX + 1, "%s", txt_id);
		set_why(why, "no cached policy; fetch id %s%s", txt_id, "");
		return STS_D_FETCH;
	}
	bool id_changed = txt_id && strcmp(txt_id, cached->id) != 0;
	uint32_t refresh = cached->max_age / 2;
	if (refresh > STS_REFRESH_MAX_S)
		refresh = STS_REFRESH_MAX_S;
	bool due = now - e->fetched_at >= (int64_t)refresh;
	if (id_changed && !backoff) {
		snprintf(fetch_id, STS_ID_MAX + 1, "%s", txt_id);
		set_why(why, "TXT id changed (%s -> %s)", cached->id, txt_id);
		return STS_D_FETCH;
	}
	enum sts_decision d = cached->mode == STS_MODE_NONE ? STS_D_NONE : STS_D_USE;
	if (due && !backoff && want && want[0]) {
		snprintf(fetch_id, STS_ID_MAX + 1, "%s", want);
		set_why(why, "cached policy id %s is due for refresh%s", cached->id, "");
		return STS_D_USE_REFRESH;
	}
	if (backoff)
		set_why(why, "cached policy id %s (fetch for %s failed < 5 min ago)", cached->id, want);
	else
		set_why(why, "cached policy id %s%s", cached->id, "");
	return d;
}

void sts_cache_store(struct sts_cache *c, const char *domain, const char *id,
		     const struct sts_policy *p, int64_t fetched_at)
{
	struct entry *e = get_entry(c, domain);
	if (e == NULL)
		return;
	if (e->has_pol)
		sts_policy_fini(&e->pol);
	sts_policy_copy(&e->pol, p);
	snprintf(e->pol.id, sizeof(e->pol.id), "%s", id ? id : "");
	e->has_pol = true;
	e->fetched_at = fetched_at;
	if (e->has_fail && id && strcmp(e->fail_id, id) == 0)
		e->has_fail = false;
}

void sts_cache_fetch_failed(struct sts_cache *c, const char *domain, const char *id, int64_t now)
{
	struct entry *e = get_entry(c, domain);
	if (e == NULL)
		return;
	e->has_fail = true;
	snprintf(e->fail_id, sizeof(e->fail_id), "%s", id ? id : "");
	e->fail_at = now;
}

void sts_cache_load(struct sts_cache *c, const char *domain, const struct sts_policy *p,
		    int64_t fetched_at, int64_t now)
{
	if (fetched_at + (int64_t)p->max_age <= now)
		return;
	struct entry *e = lookup(c, domain);
	if (e && e->has_pol && e->fetched_at >= fetched_at)
		return;
	sts_cache_store(c, domain, p->id, p, fetched_at);
}

const struct sts_policy *sts_cache_peek(const struct sts_cache *c, const char *domain,
				       int64_t *fetched_at)
{
	struct entry *e = lookup(c, domain);
	if (e == NULL || !e->has_pol)
		return NULL;
	if (fetched_at)
		*fetched_at = e->fetched_at;
	return &e->pol;
}

unsigned sts_cache_count(const struct sts_cache *c)
{
	return c->n;
}

/* ---- TLSRPT (RFC 8460 3) ---- */

enum sts_txt_rc sts_tlsrpt_parse(const char *const *rr, int n, struct sts_tlsrpt *out,
				 const char **err)
{
	const char *dummy, *rec = NULL;
	if (err == NULL)
		err = &dummy;
	*err = "";
	memset(out, 0, sizeof(*out));
	enum sts_txt_rc rc = pick_record(rr, n, "v=TLSRPTv1", &rec, err);
	if (rc != STS_TXT_OK)
		return rc;
	struct fields f = { rec + strlen("v=TLSRPTv1") };
	const char *name, *val;
	size_t nlen, vlen;
	int r, nrua = 0, skipped = 0;
	while ((r = next_field(&f, &name, &nlen, &val, &vlen, true, err)) == 1) {
		if (!(nlen == 3 && memcmp(name, "rua", 3) == 0))
			continue; /* extension */
		if (nrua++) {
			*err = "more than one rua field";
			goto invalid;
		}
		const char *p = val, *e = val + vlen;
		while (p < e) {
			while (p < e && (is_wsp(*p) || *p == ','))
				p++;
			const char *u = p;
			while (p < e && *p != ',' && !is_wsp(*p))
				p++;
			size_t ul = (size_t)(p - u);
			if (ul == 0)
				continue;
			bool ok = (ul > 7 && strncasecmp(u, "mailto:", 7) == 0) ||
				  (ul > 8 && strncasecmp(u, "https://", 8) == 0);
			if (!ok || ul >= sizeof(out->rua[0]) || out->n_rua == STS_TLSRPT_MAX_RUA) {
				skipped++;
				continue;
			}
			memcpy(out->rua[out->n_rua], u, ul);
			out->rua[out->n_rua][ul] = '\0';
			out->n_rua++;
		}
	}
	if (r < 0)
		goto invalid;
	if (nrua == 0) {
		*err = "no rua field";
		goto invalid;
	}
	if (out->n_rua == 0) {
		*err = skipped ? "no mailto: or https: URI in rua" : "empty rua";
		goto invalid;
	}
	return STS_TXT_OK;
invalid:
	memset(out, 0, sizeof(*out));
	return STS_TXT_INVALID;
}
