/* job.c: decode and validate a job stream entry; encode its results.
 *
 * Pure code: no I/O, no Redis. Everything a decoded job keeps lives in one
 * arena (a chain of chunks) owned by the job and freed by job_fini, so a job is
 * two or three allocations whatever its size. The message data is copied once.
 *
 * Validation reports the first problem, in a fixed order (missing fields,
 * duplicates, sender, recipients, data, tls, expires, internal fields), so
 * the same bad job always gets the same reason. Rejected jobs keep the raw
 * `to` items, when there are any, so each recipient gets its own `rejected`
 * result (DESIGN.md). Addresses are checked and normalized by the caller's
 * job_addr_fn (sender/msg.c), since queue/ never includes sender/. */
#define _GNU_SOURCE /* memrchr */
#include "queue/job.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- allocation: queue/ keeps its own OOM check (abort, as xmalloc does) ---- */

static void *alloc_or_die(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL) {
		fprintf(stderr, "mxsend: out of memory allocating %zu bytes\n", n);
		abort();
	}
	return p;
}

struct chunk {
	struct chunk *next;
	size_t used, cap;
	char data[];
};

/* hint: the first chunk's size (the decoder sizes it to fit the whole job,
 * so a small job costs one small allocation); later chunks are >= 1 KiB. */
static char *arena_alloc_hint(struct job *j, size_t n, size_t hint)
{
	struct chunk *c = j->arena;
	n = (n + 7) & ~(size_t)7;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > hint ? n : hint;
		struct chunk *nc = alloc_or_die(sizeof(*nc) + cap);
		nc->used = 0;
		nc->cap = cap;
		nc->next = c;
		j->arena = c = nc;
	}
	char *p = c->data + c->used;
	c->used += n;
	return p;
}

static char *arena_alloc(struct job *j, size_t n)
{
	return arena_alloc_hint(j, n, 1024);
}

static char *arena_strndup(struct job *j, const char *s, size_t n)
{
	char *p = arena_alloc(j, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* ---- names ---- */

static const char *const status_names[] = {
	[JOB_PENDING] = "pending", [JOB_DELIVERED] = "delivered", [JOB_BOUNCED] = "bounced",
	[JOB_DEFERRED] = "deferred", [JOB_EXPIRED] = "expired",   [JOB_REJECTED] = "rejected",
	[JOB_HELD] = "held",	     [JOB_SUPPRESSED] = "suppressed",
};

const char *job_status_name(enum job_status s)
{
	if ((unsigned)s >= sizeof(status_names) / sizeof(status_names[0]))
		return "?";
	return status_names[s];
}

const char *job_tls_name(enum job_tls t)
{
	switch (t) {
	case JOB_TLS_ENCRYPT:
		return "encrypt";
	case JOB_TLS_VERIFY:
		return "verify";
	default:
		return "";
	}
}

const char *const job_result_names[JOB_RESULT_NFIELDS] = {
	"id",  "job", "rcpt",     "status", "code",   "dsn",    "reply",   "mx",         "ip",  "port",
	"tls", "cipher", "verified", "policy", "resumed", "reused", "attempt", "elapsed_ms", "meta",
	"source", "dkim", "class", "shaped",
};

/* ---- small parsers ---- */

int job_entry_id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long a = strtoull(s, &end, 10);
	if (*end != '-' || end[1] < '0' || end[1] > '9')
		return -1;
	unsigned long long b = strtoull(end + 1, &end, 10);
	if (*end != '\0' || errno == ERANGE) /* both parts are 64-bit numbers */
		return -1;
	*ms = a;
	*seq = b;
	return 0;
}

/* A decimal integer in [0, max], nothing else. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* Quote a value for a reason: at most 64 bytes, control bytes shown as '?'. */
static void quote(char *out, size_t n, const char *s)
{
	size_t k = 0, i;
	for (i = 0; s[i] != '\0' && k + 4 < n && i < 64; i++)
		out[k++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	if (s[i] != '\0' && k + 4 < n) {
		memcpy(out + k, "...", 3);
		k += 3;
	}
	out[k] = '\0';
}

/* ---- message content ---- */

/* Lines over JOB_LINE_MAX octets in seg[0..n) (a line that ended at LF, its
 * CR of CRLF already removed), lone CRs splitting it as on the wire. */
static bool seg_too_long(const char *seg, size_t n)
{
	while (n > JOB_LINE_MAX) {
		const char *cr = memchr(seg, '\r', JOB_LINE_MAX + 1);
		if (cr == NULL)
			return true;
		n -= (size_t)(cr - seg) + 1;
		seg = cr + 1;
	}
	return false;
}

/* 1 + the LFs in data[0..x): x's line number. */
static unsigned long line_of(const char *data, const char *x)
{
	unsigned long n = 1;
	for (const char *p = data; (p = memchr(p, '\n', (size_t)(x - p))) != NULL; p++)
		n++;
	return n;
}

int job_data_check(const char *data, size_t len, char *why, size_t whylen)
{
	const char *end = data + len, *p = data, *long_at = NULL;
	const char *nul = len > 0 ? memchr(data, '\0', len) : NULL;

	/* Lines: a window of JOB_LINE_MAX + 1 bytes from a line start that
	 * holds an LF holds only short lines up to its last LF, so most of a
	 * message is passed over one memrchr() per ~1000 bytes, not one
	 * memchr() per line. A window without an LF is looked at exactly. */
	while ((size_t)(end - p) > JOB_LINE_MAX) {
		const char *q = memrchr(p, '\n', JOB_LINE_MAX + 1);
		if (q != NULL) {
			p = q + 1;
			continue;
		}
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		const char *le = lf != NULL ? lf : end;
		size_t n = (size_t)(le - p);
		if (n > 0 && p[n - 1] == '\r')
			n--; /* the CR of CRLF, or a last lone CR: a line end either way */
		if (n > JOB_LINE_MAX && seg_too_long(p, n)) {
			long_at = p;
			break;
		}
		if (lf == NULL)
			break;
		p = lf + 1;
	}
	if (nul != NULL && (long_at == NULL || nul < long_at)) {
		snprintf(why, whylen, "NUL byte at line %lu", line_of(data, nul));
		return -1;
	}
	if (long_at != NULL) {
		snprintf(why, whylen, "line %lu exceeds %d octets", line_of(data, long_at), JOB_LINE_MAX);
		return -1;
	}
	return 0;
}

/* ---- escaping ---- */

/* (job.h) */
size_t job_utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t k;

	if (c >= 0xc2 && c <= 0xdf) {
		k = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		k = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		k = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < k || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return k;
}

/* A byte that is its own escaped form whatever the flags: printable ASCII
 * but the backslash and the double quote (esc_item's first case). */
static const bool esc_plain_tab[256] = { [0x20 ... 0x21] = true, /* '"' is 0x22 */
					  [0x23 ... 0x5b] = true, /* '\\' is 0x5c */
					  [0x5d ... 0x7e] = true };

static inline bool esc_plain(unsigned char c)
{
	return esc_plain_tab[c];
}

/* The escaped form of the item at p (one byte, or one UTF-8 sequence) into
 * e (at least 9 bytes); returns its length and the input consumed in *used. */
static size_t esc_item(const unsigned char *p, size_t n, unsigned flags, char *e, size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = p[0];

	*used = 1;
	if (c >= 0x80) {
		size_t k = job_utf8_seq(p, n);
		if (k > 0 && !(c == 0xc2 && p[1] <= 0x9f)) { /* not a C1 control */
			memcpy(e, p, k);
			*used = k;
			return k;
		}
	} else if (c >= 0x20 && c != 0x7f) {
		if ((c == '\\' && !(flags & JOB_ESC_KEEP_BACKSLASH)) ||
		    (c == '"' && (flags & JOB_ESC_QUOTED))) {
			e[0] = '\\';
			e[1] = (char)c;
			return 2;
		}
		e[0] = (char)c;
		return 1;
	} else if (c == '\r' || c == '\n' || c == '\t') {
		e[0] = '\\';
		e[1] = c == '\r' ? 'r' : c == '\n' ? 'n' : 't';
		return 2;
	}
	e[0] = '\\';
	e[1] = 'x';
	e[2] = hex[c >> 4];
	e[3] = hex[c & 15];
	return 4;
}

size_t job_escape(char *out, size_t outlen, const char *s, size_t len, unsigned flags)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t total = 0, o = 0, used;
	bool full = out == NULL || outlen == 0;
	char e[9];

	for (size_t i = 0; i < len; i += used) {
		if (esc_plain(p[i])) {
			/* a run of printable ASCII: itself, copied at once (results
			 * escape every outcome's texts; esc_item and a copy per byte
			 * cost 8x the strlen+memcpy they replaced) */
			size_t r = i + 1, k;
			while (r < len && esc_plain(p[r]))
				r++;
			used = r - i;
			k = full ? 0 : outlen - 1 - o; /* room: o + 1 < outlen per byte */
			if (k >= used) {
				k = used;
			} else {
				full = true;
			}
			if (k > 0) {
				memcpy(out + o, p + i, k);
				o += k;
			}
			total += used;
			continue;
		}
		size_t k = esc_item(p + i, len - i, flags, e, &used);
		if (!full && o + k < outlen) {
			memcpy(out + o, e, k);
			o += k;
		} else {
			full = true;
		}
		total += k;
	}
	if (out != NULL && outlen > 0)
		out[o] = '\0';
	return total;
}

bool job_escape_needed(const char *s, size_t len, unsigned flags)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t used;
	char e[9];

	for (size_t i = 0; i < len; i += used) {
		used = 1;
		if (esc_plain(p[i]))
			continue;
		if (esc_item(p + i, len - i, flags, e, &used) != used)
			return true;
	}
	return false;
}

/* ---- decoding ---- */

enum { F_FROM, F_TO, F_DATA, F_ID, F_META, F_TLS, F_EXPIRES, F_JOB, F_ATTEMPT, F_SINCE, F_EXEMPT,
       F_EXEMPT_MAC, F_DKIM, F_POOL, F_N };
static const char *const field_names[F_N] = { "from", "to",      "data",   "id",      "meta",
					      "tls",  "expires", "job",    "attempt", "since",
					      "exempt", "exempt_mac", "dkim", "pool" };

struct split_ctx {
	const char *base;
	size_t (*item)[2]; /* offset, length */
	int n, cap;
};

static int split_item(void *arg, const char *item, size_t len)
{
	struct split_ctx *c = arg;
	if (c->n >= JOB_MAX_RCPT) {
		c->n++; /* counted, not kept: the job is rejected */
		return 1;
	}
	if (c->n == c->cap) {
		int cap = c->cap ? c->cap * 2 : 8;
		size_t(*a)[2] = alloc_or_die((size_t)cap * sizeof(*a));
		if (c->n > 0)
			memcpy(a, c->item, (size_t)c->n * sizeof(*a));
		free(c->item);
		c->item = a;
		c->cap = cap;
	}
	c->item[c->n][0] = (size_t)(item - c->base);
	c->item[c->n][1] = len;
	c->n++;
	return 0;
}

static void reject(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reject(struct job *j, const char *fmt, ...)
{
	va_list ap;
	if (j->reason[0] != '\0')
		return; /* the first problem wins */
	va_start(ap, fmt);
	vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
	va_end(ap);
}

static void reject_addr(struct job *j, const char *addr, const char *why)
{
	char q[80];
	quote(q, sizeof(q), addr);
	reject(j, "bad address \"%s\": %s", q, why);
}

/* A raw `to` item as a rejected result echoes it: escaped (it may hold
 * anything) and cut to JOB_ADDR_MAX bytes. */
static const char *echo_item(struct job *j, const char *raw)
{
	size_t n = strlen(raw);
	if (n < JOB_ADDR_MAX && !job_escape_needed(raw, n, 0))
		return raw;
	char *e = arena_alloc(j, JOB_ADDR_MAX);
	job_escape(e, JOB_ADDR_MAX, raw, n < JOB_ADDR_MAX ? n : JOB_ADDR_MAX, 0);
	return e;
}

static const char *domain_of(const char *norm)
{
	const char *at = strrchr(norm, '@');
	return at ? at + 1 : norm + strlen(norm);
}

struct sort_ent {
	int idx;
	const char *domain, *norm;
};

static int cmp_ent(const void *pa, const void *pb)
{
	const struct sort_ent *a = pa, *b = pb;
	int c = strcmp(a->domain, b->domain);
	if (c == 0)
		c = strcmp(a->norm, b->norm);
	if (c == 0)
		c = a->idx - b->idx;
	return c;
}

/* Normalize, deduplicate and group the recipients of a job whose items all
 * passed addr_ok. raw[i]/norm[i] are arena strings. */
static void group_rcpts(struct job *j, int n, const char **raw, const char **norm)
{
	struct sort_ent *e = alloc_or_die((size_t)n * sizeof(*e));
	for (int i = 0; i < n; i++) {
		e[i].idx = i;
		e[i].norm = norm[i];
		e[i].domain = domain_of(norm[i]);
	}
	qsort(e, (size_t)n, sizeof(*e), cmp_ent);
	j->rcpts = calloc((size_t)n, sizeof(*j->rcpts));
	j->norm = calloc((size_t)n, sizeof(*j->norm));
	j->domains = calloc((size_t)n, sizeof(*j->domains));
	if (j->rcpts == NULL || j->norm == NULL || j->domains == NULL) {
		fprintf(stderr, "mxsend: out of memory (job recipients)\n");
		abort();
	}
	int k = 0;
	for (int i = 0; i < n; i++) {
		if (k > 0 && strcmp(j->norm[k - 1], e[i].norm) == 0)
			continue; /* duplicate recipient: one RCPT, one result */
		struct job_rcpt *r = &j->rcpts[k];
		r->addr = raw[e[i].idx];
		r->domain = e[i].domain;
		r->status = JOB_PENDING;
		j->norm[k] = e[i].norm;
		if (j->ndomain == 0 || strcmp(j->domains[j->ndomain - 1].name, r->domain) != 0) {
			struct job_domain *d = &j->domains[j->ndomain++];
			d->name = r->domain;
			d->first = k;
			d->n = 0;
			d->addrs = &j->norm[k];
		}
		r->dom = j->ndomain - 1;
		j->domains[r->dom].n++;
		k++;
	}
	j->nrcpt = k;
	free(e);
}

int job_decode(struct job *j, const char *entry_id, size_t nkv, const char *const *kv,
	       const size_t *kvlen, const struct job_limits *lim)
{
	return job_decode_adopt(j, entry_id, nkv, kv, kvlen, NULL, lim);
}

int job_decode_adopt(struct job *j, const char *entry_id, size_t nkv, const char *const *kv,
		     const size_t *kvlen, char **adopt, const struct job_limits *lim)
{
	int pos[F_N];
	char *val[F_N];
	size_t vlen[F_N];
	char norm[JOB_ADDR_MAX];
	const char *err;

	memset(j, 0, sizeof(*j));
	snprintf(j->entry, sizeof(j->entry), "%s", entry_id);
	for (int f = 0; f < F_N; f++) {
		pos[f] = -1;
		val[f] = NULL;
		vlen[f] = 0;
	}
	for (size_t i = 0; i + 1 < nkv; i += 2) {
		for (int f = 0; f < F_N; f++) {
			if (kvlen[i] == strlen(field_names[f]) &&
			    memcmp(kv[i], field_names[f], kvlen[i]) == 0) {
				if (pos[f] >= 0)
					reject(j, "duplicate field: %s", field_names[f]);
				else
					pos[f] = (int)i + 1;
				break;
			}
		}
	}
	/* One chunk for the whole job: each field once (8-byte rounded), the `to`
	 * items twice more (raw and normalized, with their own rounding) and the
	 * normalized sender. */
	bool adopt_data = adopt != NULL && pos[F_DATA] >= 0 && adopt[pos[F_DATA]] == kv[pos[F_DATA]];
	size_t need = 64;
	for (int f = 0; f < F_N; f++) {
		if (pos[f] < 0 || (f == F_DATA && adopt_data))
			continue;
		size_t l = kvlen[pos[f]];
		need += l + 8;
		if (f == F_TO || f == F_FROM) {
			size_t items = 1;
			for (const char *c = kv[pos[f]]; (c = memchr(c, ',', l - (size_t)(c - kv[pos[f]]))) != NULL; c++)
				items++;
			need += 2 * l + 16 * items;
		}
	}
	arena_alloc_hint(j, 0, need);
	/* Copy the fields we know (NUL-terminated; data stays binary). */
	for (int f = 0; f < F_N; f++) {
		if (pos[f] < 0)
			continue;
		vlen[f] = kvlen[pos[f]];
		if (f == F_DATA && adopt_data) {
			val[f] = j->data_owned = adopt[pos[f]];
			adopt[pos[f]] = NULL;
			continue;
		}
		val[f] = arena_strndup(j, kv[pos[f]], vlen[f]);
		if (f != F_DATA && f != F_EXEMPT_MAC && memchr(val[f], '\0', vlen[f]) != NULL)
			reject(j, "bad %s value: contains NUL", field_names[f]);
	}
	j->job_id = j->entry;
	if (val[F_JOB] != NULL) {
		uint64_t a, b;
		if (job_entry_id_parse(val[F_JOB], &a, &b) == 0)
			j->job_id = val[F_JOB];
	}
	/* Caps on what every result echoes: an oversized value rejects the job
	 * and is cut to the cap here, so the rejected results stay small. */
	size_t max_id = lim->max_id ? lim->max_id : JOB_ID_MAX_DEFAULT;
	size_t max_meta = lim->max_meta ? lim->max_meta : JOB_META_MAX_DEFAULT;
	if (val[F_ID] != NULL && vlen[F_ID] > max_id) {
		reject(j, "id exceeds %zu bytes", max_id);
		val[F_ID][max_id] = '\0';
	}
	if (val[F_META] != NULL && vlen[F_META] > max_meta) {
		reject(j, "meta exceeds %zu bytes", max_meta);
		val[F_META][max_meta] = '\0';
	}
	/* id and meta come back in every result and reach logs and terminals:
	 * a control byte there (C0, DEL) rejects the job (issue 17.7), and the
	 * rejected result carries the value escaped. Printable bytes, 8-bit
	 * ones included, stay byte for byte. */
	for (int f = F_ID; f <= F_META; f++) {
		size_t n = val[f] != NULL ? strlen(val[f]) : 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)val[f][i];
			if (c >= 0x20 && c != 0x7f)
				continue;
			reject(j, "%s holds a control byte (0x%02x) at offset %zu", field_names[f], c, i);
			size_t e = job_escape(NULL, 0, val[f], n, 0);
			char *q = arena_alloc(j, e + 1);
			job_escape(q, e + 1, val[f], n, 0);
			val[f] = q;
			break;
		}
	}
	j->id = val[F_ID] ? val[F_ID] : j->job_id;
	j->meta = val[F_META] ? val[F_META] : "";
	j->pool = val[F_POOL] ? val[F_POOL] : "";
	j->from = val[F_FROM] ? val[F_FROM] : "";
	j->data = val[F_DATA] ? val[F_DATA] : "";
	j->len = vlen[F_DATA];
	uint64_t ems = 0, eseq = 0;
	if (job_entry_id_parse(j->entry, &ems, &eseq) == 0)
		j->since_ms = ems;

	/* Split `to` first: rejected results go per recipient when it splits. */
	const char **raw = NULL;
	int nitems = 0;
	if (val[F_TO] != NULL) {
		struct split_ctx sc = { .base = val[F_TO] };
		lim->split(val[F_TO], split_item, &sc);
		if (sc.n > JOB_MAX_RCPT) {
			reject(j, "too many recipients (more than %d)", JOB_MAX_RCPT);
		} else if (sc.n > 0) {
			raw = alloc_or_die((size_t)sc.n * sizeof(*raw));
			for (int i = 0; i < sc.n; i++)
				raw[i] = arena_strndup(j, val[F_TO] + sc.item[i][0], sc.item[i][1]);
			nitems = sc.n;
		}
		free(sc.item);
	}

	/* Validation, in a fixed order (see the header comment). */
	if (val[F_FROM] == NULL)
		reject(j, "missing field: from");
	if (val[F_TO] == NULL)
		reject(j, "missing field: to");
	if (val[F_DATA] == NULL)
		reject(j, "missing field: data");
	if (j->reason[0] == '\0' && j->from[0] != '\0') {
		if (lim->addr_ok(j->from, norm, sizeof(norm), &err) != 0)
			reject_addr(j, j->from, err);
		else
			j->from = arena_strndup(j, norm, strlen(norm));
	}
	if (val[F_TO] != NULL && nitems == 0)
		reject(j, "no recipients");
	const char **nrm = NULL;
	if (nitems > 0) {
		nrm = alloc_or_die((size_t)nitems * sizeof(*nrm));
		for (int i = 0; i < nitems; i++) {
			nrm[i] = NULL;
			if (j->reason[0] != '\0')
				continue;
			if (lim->addr_ok(raw[i], norm, sizeof(norm), &err) != 0)
				reject_addr(j, raw[i], err);
			else if (*domain_of(norm) == '\0')
				reject_addr(j, raw[i], "no domain");
			else if (*domain_of(norm) == '[')
				reject_addr(j, raw[i], "address literals are not supported");
			else
				nrm[i] = arena_strndup(j, norm, strlen(norm));
		}
	}
	if (val[F_DATA] != NULL && vlen[F_DATA] == 0)
		reject(j, "empty data");
	if (val[F_DATA] != NULL && lim->max_size > 0 && vlen[F_DATA] > lim->max_size) {
		reject(j, "data exceeds max_message_size (%llu)", (unsigned long long)lim->max_size);
	}
	if (val[F_DATA] != NULL && j->reason[0] == '\0') {
		char why[64];
		if (job_data_check(j->data, j->len, why, sizeof(why)) != 0)
			reject(j, "data: %s", why);
	}
	if (val[F_TLS] != NULL) {
		char q[80];
		if (strcmp(val[F_TLS], "encrypt") == 0)
			j->tls = JOB_TLS_ENCRYPT;
		else if (strcmp(val[F_TLS], "verify") == 0)
			j->tls = JOB_TLS_VERIFY;
		else {
			quote(q, sizeof(q), val[F_TLS]);
			reject(j, "bad tls value \"%s\"", q);
		}
	}
	if (val[F_POOL] != NULL) {
		int k = 0;
		while (k < lim->npools && strcmp(lim->pools[k], val[F_POOL]) != 0)
			k++;
		if (k == lim->npools) {
			char q[80];
			quote(q, sizeof(q), val[F_POOL]);
			reject(j, "unknown pool \"%s\"", q);
		}
	}
	if (val[F_EXEMPT] != NULL) {
		/* exempt=tlsrpt: a TLSRPT report ASKS to be delivered regardless
		 * of the MTA-STS policy it may be reporting on (RFC 8460 3). Only
		 * asks: the sender honours it when exempt_mac proves that `mxsend
		 * tlsrpt` queued it (sender/exempt.h); a bad or missing proof is
		 * never a rejection, the job just keeps the normal policy. */
		char q[80];
		if (strcmp(val[F_EXEMPT], "tlsrpt") == 0) {
			j->exempt_tlsrpt = true;
			if (val[F_EXEMPT_MAC] != NULL && vlen[F_EXEMPT_MAC] == sizeof(j->exempt_mac) - 1 &&
			    strspn(val[F_EXEMPT_MAC], "0123456789abcdef") == vlen[F_EXEMPT_MAC])
				memcpy(j->exempt_mac, val[F_EXEMPT_MAC], vlen[F_EXEMPT_MAC] + 1);
		} else {
			quote(q, sizeof(q), val[F_EXEMPT]);
			reject(j, "bad exempt value \"%s\"", q);
		}
	}
	if (val[F_DKIM] != NULL) {
		/* dkim=no, or the signing domain (among the configured keys: the
		 * sender checks, sender/signer.h) */
		size_t n = vlen[F_DKIM];
		bool ok = n > 0 && n <= 253 && val[F_DKIM][0] != '.' && val[F_DKIM][n - 1] != '.';
		for (size_t i = 0; ok && i < n; i++) {
			char ch = val[F_DKIM][i];
			ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			     ch == '-' || ch == '.' || ch == '_';
		}
		if (ok) {
			j->dkim = val[F_DKIM];
		} else {
			char q[80];
			quote(q, sizeof(q), val[F_DKIM]);
			reject(j, "bad dkim value \"%s\" (a signing domain, or no)", q);
		}
	}
	const int nums[] = { F_EXPIRES, F_JOB, F_ATTEMPT, F_SINCE };
	for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
		int f = nums[k];
		uint64_t v = 0, s2;
		bool good;
		if (val[f] == NULL)
			continue;
		switch (f) {
		case F_EXPIRES:
			good = parse_uint(val[f], JOB_MAX_EXPIRES, &v) == 0;
			j->has_expires = good;
			j->expires_s = (uint32_t)v;
			break;
		case F_JOB:
			good = job_entry_id_parse(val[f], &v, &s2) == 0;
			break;
		case F_ATTEMPT:
			good = parse_uint(val[f], 1000000, &v) == 0;
			j->attempt = (int)v;
			break;
		default: /* F_SINCE */
			good = parse_uint(val[f], UINT64_MAX / 2, &v) == 0;
			if (good)
				j->since_ms = v;
			break;
		}
		if (!good) {
			char q[80];
			quote(q, sizeof(q), val[f]);
			reject(j, "bad %s value \"%s\"", field_names[f], q);
		}
	}

	int rc = 0;
	if (j->reason[0] != '\0') {
		/* Rejected: keep the raw items (if any) for per-recipient results. */
		if (nitems > 0) {
			j->rcpts = calloc((size_t)nitems, sizeof(*j->rcpts));
			if (j->rcpts == NULL) {
				fprintf(stderr, "mxsend: out of memory (job recipients)\n");
				abort();
			}
			for (int i = 0; i < nitems; i++) {
				j->rcpts[i].addr = echo_item(j, raw[i]);
				j->rcpts[i].domain = "";
				j->rcpts[i].dom = -1;
				j->rcpts[i].status = JOB_REJECTED;
			}
			j->nrcpt = nitems;
		}
		rc = -1;
	} else {
		group_rcpts(j, nitems, raw, nrm);
	}
	free(raw);
	free(nrm);
	return rc;
}

void job_fini(struct job *j)
{
	if (j == NULL)
		return;
	for (int i = 0; i < j->nrcpt && j->rcpts != NULL; i++)
		free(j->rcpts[i].text);
	free(j->rcpts);
	free(j->norm);
	free(j->domains);
	struct chunk *c = j->arena;
	while (c != NULL) {
		struct chunk *next = c->next;
		free(c);
		c = next;
	}
	j->arena = NULL;
	free(j->data_owned);
	j->data_owned = NULL;
	j->rcpts = NULL;
	j->norm = NULL;
	j->domains = NULL;
	j->nrcpt = j->ndomain = 0;
}

/* ---- outcomes ---- */

static const char *text_at(const struct job_rcpt *r, int k);

enum { T_DSN, T_REPLY, T_MX, T_IP, T_TLS, T_CIPHER, T_POLICY, T_SOURCE, T_CLASS, T_SHAPED, T_N };

void job_set_outcome(struct job *j, int idx, const struct job_outcome *o)
{
	struct job_rcpt *r = &j->rcpts[idx];
	const char *t[T_N] = { o->dsn, o->reply, o->mx, o->ip, o->tls, o->cipher, o->policy,
			       o->source, o->cls, o->shaped };
	size_t n = 0, l[T_N], e[T_N];
	/* A remote server wrote the reply (and DNS the MX name): results carry
	 * them escaped (job_escape), never a raw control byte. */
	for (int k = 0; k < T_N; k++) {
		l[k] = t[k] ? strlen(t[k]) : 0;
		e[k] = job_escape(NULL, 0, t[k] ? t[k] : "", l[k], 0);
		n += e[k] + 1;
	}
	char *p = alloc_or_die(n);
	free(r->text);
	r->text = p;
	for (int k = 0; k < T_N; k++) {
		if (e[k] == l[k] && l[k] > 0)
			memcpy(p, t[k], l[k]);
		else if (l[k] > 0)
			job_escape(p, e[k] + 1, t[k], l[k], 0);
		p[e[k]] = '\0';
		p += e[k] + 1;
	}
	r->status = o->status;
	r->code = o->code;
	r->port = o->port;
	r->elapsed_ms = o->elapsed_ms;
	r->verified = o->verified;
	r->resumed = o->resumed;
	r->reused = o->reused;
	r->not_before_ms = o->not_before_ms;
}

bool job_complete(const struct job *j)
{
	for (int i = 0; i < j->nrcpt; i++)
		if (j->rcpts[i].status == JOB_PENDING)
			return false;
	return true;
}

void job_rcpt_texts(const struct job *j, int idx, const char **dsn, const char **reply,
		    const char **cls)
{
	const struct job_rcpt *r = &j->rcpts[idx];
	*dsn = text_at(r, T_DSN);
	*reply = text_at(r, T_REPLY);
	*cls = text_at(r, T_CLASS);
}

int job_prune_decided(struct job *j)
{
	int left = 0, nd = 0;
	for (int d = 0; d < j->ndomain; d++) {
		struct job_domain *dom = &j->domains[d];
		int w = dom->first;
		for (int i = dom->first; i < dom->first + dom->n; i++) {
			if (j->rcpts[i].status != JOB_PENDING)
				continue;
			if (i != w) { /* swap i into the next undecided slot */
				struct job_rcpt tr = j->rcpts[w];
				const char *tn = j->norm[w];
				j->rcpts[w] = j->rcpts[i];
				j->norm[w] = j->norm[i];
				j->rcpts[i] = tr;
				j->norm[i] = tn;
			}
			w++;
		}
		int n = w - dom->first;
		for (int i = w; i < dom->first + dom->n; i++)
			j->rcpts[i].dom = -1; /* decided: in no delivery domain */
		left += n;
		if (n == 0)
			continue;
		dom->n = n;
		for (int i = dom->first; i < dom->first + n; i++)
			j->rcpts[i].dom = nd;
		j->domains[nd++] = *dom;
	}
	j->ndomain = nd;
	return left;
}

static const char *text_at(const struct job_rcpt *r, int k)
{
	if (r == NULL || r->text == NULL)
		return "";
	const char *p = r->text;
	for (int i = 0; i < k; i++)
		p += strlen(p) + 1;
	return p;
}

/* ---- results ---- */

size_t u64_dec(char *out, uint64_t v)
{
	char tmp[20];
	size_t k = 0, n = 0;
	do {
		tmp[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (k > 0)
		out[n++] = tmp[--k];
	out[n] = '\0';
	return n;
}

static size_t int_dec(char *out, int v)
{
	if (v >= 0)
		return u64_dec(out, (uint64_t)v);
	out[0] = '-';
	return 1 + u64_dec(out + 1, (uint64_t)-(int64_t)v);
}

void job_result_values(const struct job *j, int idx, enum job_status st, int attempt,
		       const char *val[JOB_RESULT_NFIELDS], size_t len[JOB_RESULT_NFIELDS],
		       char scratch[JOB_RESULT_SCRATCH])
{
	const struct job_rcpt *r = idx >= 0 ? &j->rcpts[idx] : NULL;
	const struct job_rcpt *o = (r != NULL && r->text != NULL) ? r : NULL;
	char *num = scratch;
	const char *code, *port, *att, *el;

	code = num;
	num += int_dec(num, o ? o->code : 0) + 1;
	port = num;
	num += int_dec(num, o ? o->port : 0) + 1;
	att = num;
	num += int_dec(num, attempt) + 1;
	el = num;
	u64_dec(num, o ? o->elapsed_ms : 0u);

	const char *tls = text_at(o, T_TLS);
	val[0] = j->id;
	val[1] = j->job_id;
	val[2] = r ? r->addr : "";
	val[3] = job_status_name(st);
	val[4] = code;
	val[5] = text_at(o, T_DSN);
	val[6] = st == JOB_REJECTED ? j->reason : text_at(o, T_REPLY);
	val[7] = text_at(o, T_MX);
	val[8] = text_at(o, T_IP);
	val[9] = port;
	val[10] = tls[0] ? tls : "none";
	val[11] = text_at(o, T_CIPHER);
	val[12] = o && o->verified ? "yes" : "no";
	val[13] = text_at(o, T_POLICY);
	val[14] = o && o->resumed ? "yes" : "no";
	val[15] = o && o->reused ? "yes" : "no";
	val[16] = att;
	val[17] = el;
	val[18] = j->meta;
	const char *src = text_at(o, T_SOURCE);
	val[19] = src[0] ? src : "-";
	val[20] = j->dkim_result[0] ? j->dkim_result : "none";
	/* the class of a failure only: a deferred outcome keeps it when it
	 * becomes expired; delivered, held, rejected, suppressed have none */
	val[21] = st == JOB_BOUNCED || st == JOB_DEFERRED || st == JOB_EXPIRED ? text_at(o, T_CLASS)
										: "";
	const char *shaped = text_at(o, T_SHAPED);
	val[22] = shaped[0] ? shaped : "-";
	for (int k = 0; k < JOB_RESULT_NFIELDS; k++)
		len[k] = strlen(val[k]);
}

char *job_join_rcpts(const struct job *j, const int *idx, int n)
{
	size_t total = 1;
	for (int i = 0; i < n; i++)
		total += strlen(j->rcpts[idx[i]].addr) + 1;
	char *s = malloc(total), *p = s;
	if (s == NULL)
		return NULL;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(j->rcpts[idx[i]].addr);
		if (i > 0)
			*p++ = ',';
		memcpy(p, j->rcpts[idx[i]].addr, l);
		p += l;
	}
	*p = '\0';
	return s;
}
