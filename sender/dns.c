/* dns.c: MX/A/AAAA/TXT resolution with c-ares 1.18.1, driven by the loop.
 *
 * Loop adapter (STYLE §8): the sock-state callback only records the read/write
 * interest per socket in a small fd table and sets a loop watcher; a watcher
 * event calls ares_process_fd() for that socket; one loop timer follows
 * ares_timeout() after every c-ares call that may move it.  A socket c-ares
 * closes has its watcher disarmed at once and freed later from our task (never
 * inside the watcher's own callback).
 *
 * Objects: an `entry` is one (type, name) query: queued (FIFO, over the
 * in-flight cap), in flight (the c-ares arg), or cached (LRU, until its TTL).
 * All three live in one hash, so identical queries coalesce.  Waiters on an
 * entry hold a reference on their `req` (one dns_resolve_* call), the
 * refcounted parent of an MX lookup fanning out to A+AAAA per host [OpenSMTPD
 * dns.c].  When a req's count reaches zero its result is built and it joins the
 * ready list; our single deferred task delivers it, so no user callback ever
 * runs inside dns_resolve_* or inside a c-ares callback.
 * Ownership: dns owns entries, reqs, watchers.  An entry given to c-ares is
 * freed only in its callback (which c-ares always calls, ARES_EDESTRUCTION
 * included).  dns_free destroys the channel with user callbacks suppressed. */
#include "sender/dns.h"

#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#include <ares.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

enum { QT_A = 1, QT_SOA = 6, QT_CNAME = 5, QT_MX = 15, QT_TXT = 16, QT_AAAA = 28 };

#define POS_TTL_MAX 86400u   /* cap positive answers at one day */
#define NEG_TTL_MAX 300u     /* RFC 2308 negative answers: at most 5 minutes */
#define NEG_TTL_NOSOA 60     /* negative answer without a SOA */
#define MX_STORE_MAX 64      /* MX records kept per answer */
#define TXT_LEN_MAX 65535u   /* one concatenated TXT record */

struct mx_rr {
	int pref;
	char *host; /* lowercase, no trailing dot; "" for the root (null MX) */
};

enum entry_state { E_QUEUED, E_INFLIGHT, E_CACHED, E_DONE };

struct waiter {
	struct waiter *next;
	struct req *r;
	int slot; /* -1: the req's own MX/TXT query; else the host index */
};

struct entry {
	struct entry *hnext;              /* hash chain (while in the hash) */
	struct entry *lprev, *lnext;      /* LRU list (E_CACHED) or FIFO (E_QUEUED) */
	struct dns *d;
	int type;
	enum entry_state state;
	enum dns_status status;
	const char *reason;               /* static text for non-OK answers */
	uint64_t expires;                 /* loop_now() ms */
	struct waiter *waiters;
	int n;                            /* items below */
	union {
		struct mx_rr *mx;
		struct in_addr *a;
		struct in6_addr *aaaa;
		char **txt;
	} u;
	char name[];                      /* lowercase, no trailing dot */
};

enum req_kind { REQ_MX, REQ_TXT };

struct host_work {
	struct in_addr v4[DNS_MAX_ADDRS];
	struct in6_addr v6[DNS_MAX_ADDRS];
	int n4, n6;
	enum dns_status st4, st6;
	const char *why4, *why6;
};

struct req {
	struct req *prev, *next; /* d->reqs: every live req */
	struct req *rnext;       /* ready list */
	struct dns *d;
	int refs;
	enum req_kind kind;
	bool hosts_stage;        /* MX answer applied, host lookups started */
	dns_mx_fn *mx_cb;
	dns_txt_fn *txt_cb;
	void *arg;
	char name[256];
	union {
		struct {
			struct dns_mx res;
			struct host_work hw[DNS_MAX_MX];
		} mx;
		struct dns_txt txt;
	} u;
};

struct sock {
	int fd;
	unsigned ev; /* LOOP_READ|LOOP_WRITE wanted by c-ares */
	struct loop_watch *w;
};

/* The deferred task lives apart from struct dns: the loop has no way to
 * un-queue a task, so dns_free orphans a queued one and it frees itself. */
struct pump {
	struct loop_task task;
	struct dns *d;
};

struct dns {
	struct loop *loop;
	ares_channel chan;
	struct loop_timer timer;
	struct pump *pump;
	unsigned max_inflight, cache_max;
	bool destroying;                    /* inside ares_destroy: no deliveries */
	bool in_pump, dying;                /* dns_free called from a user callback */
	struct entry **hash;
	unsigned nbuckets;
	struct entry *lru_head, *lru_tail;  /* most recent first */
	struct entry *fifo_head, *fifo_tail;
	unsigned ncached, nqueued, ninflight;
	struct req *reqs;                   /* every live req */
	unsigned nreqs;
	struct req *ready_head, *ready_tail;
	struct sock *socks;
	unsigned nsocks, capsocks;
	struct loop_watch **dead_w;         /* disarmed, to free from the task */
	unsigned ndead_w, capdead_w;
	struct dns_stats stats;
};

static const char *const status_names[] = {
	[DNS_OK] = "ok",
	[DNS_TEMP] = "temp",
	[DNS_NXDOMAIN] = "nxdomain",
	[DNS_NULLMX] = "nullmx",
	[DNS_NODATA] = "nodata",
};

const char *dns_status_name(enum dns_status s)
{
	if ((unsigned)s < ARRAY_LEN(status_names) && status_names[s] != NULL)
		return status_names[s];
	return "?";
}

static const char *type_name(int type)
{
	return type == QT_A ? "A" : type == QT_AAAA ? "AAAA" : type == QT_MX ? "MX" : "TXT";
}

/* The one place c-ares statuses become ours (STYLE §4).  Without
 * NOCHECKRESP, c-ares 1.18 answers SERVFAIL/REFUSED/NOTIMP by trying the next
 * server (failover) and, when none is left, reports ECONNREFUSED, as it does
 * for unreachable servers: the rcode is lost, the class (temporary) is not.
 * ESERVFAIL/EREFUSED only appear with NOCHECKRESP, kept here for safety. */
static enum dns_status map_status(int st, const char **reason)
{
	switch (st) {
	case ARES_SUCCESS: *reason = NULL; return DNS_OK;
	case ARES_ENODATA: *reason = "no data"; return DNS_NODATA;
	case ARES_ENOTFOUND: *reason = "NXDOMAIN"; return DNS_NXDOMAIN;
	case ARES_EBADNAME: *reason = "invalid name"; return DNS_NXDOMAIN;
	case ARES_ESERVFAIL: *reason = "SERVFAIL"; return DNS_TEMP;
	case ARES_EREFUSED: *reason = "REFUSED"; return DNS_TEMP;
	case ARES_ETIMEOUT: *reason = "timeout"; return DNS_TEMP;
	case ARES_ECONNREFUSED:
		*reason = "server failure (SERVFAIL, REFUSED or unreachable)";
		return DNS_TEMP;
	case ARES_ENOTIMP: *reason = "NOTIMP"; return DNS_TEMP;
	case ARES_EFORMERR: *reason = "FORMERR"; return DNS_TEMP;
	case ARES_EBADRESP: *reason = "bad response"; return DNS_TEMP;
	case ARES_ENOMEM: *reason = "out of memory"; return DNS_TEMP;
	case ARES_ECANCELLED: *reason = "cancelled"; return DNS_TEMP;
	default: *reason = "resolver error"; return DNS_TEMP;
	}
}

/* snprintf that may truncate (why texts): no -Wformat-truncation noise. */
static void __attribute__((format(printf, 3, 4)))
setwhy(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, len, fmt, ap);
	va_end(ap);
}

/* ---- MX ordering (RFC 5321 5.1) ---- */

void dns_sort_hosts(struct dns_host *h, int n, uint32_t (*rnd)(void))
{
	/* Stable insertion sort by pref (n <= DNS_MAX_MX), then a Fisher-Yates
	 * shuffle inside each run of equal prefs. */
	for (int i = 1; i < n; i++) {
		if (h[i].pref >= h[i - 1].pref)
			continue;
		struct dns_host tmp = h[i];
		int j = i;
		while (j > 0 && h[j - 1].pref > tmp.pref) {
			h[j] = h[j - 1];
			j--;
		}
		h[j] = tmp;
	}
	for (int s = 0; s < n;) {
		int e = s + 1;
		while (e < n && h[e].pref == h[s].pref)
			e++;
		for (int i = e - 1; i > s; i--) {
			int j = s + (int)(rnd() % (uint32_t)(i - s + 1));
			if (j != i) {
				struct dns_host tmp = h[i];
				h[i] = h[j];
				h[j] = tmp;
			}
		}
		s = e;
	}
}

/* ---- raw answer walking (TTLs c-ares 1.18 does not give us) ---- */

static unsigned be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Skip a (possibly compressed) name at *p, which must stay below lim. */
static int skip_name(const unsigned char **p, const unsigned char *lim,
		     const unsigned char *abuf, int alen)
{
	char *s = NULL;
	long enclen = 0;
	if (*p >= lim || ares_expand_name(*p, abuf, alen, &s, &enclen) != ARES_SUCCESS)
		return -1;
	ares_free_string(s);
	if (enclen <= 0 || enclen > lim - *p)
		return -1;
	*p += enclen;
	return 0;
}

/* Positive: the minimum TTL over the answer section (the MX RRs and any CNAME
 * leading to them).  Negative: the RFC 2308 §5 TTL, min(SOA TTL, SOA MINIMUM)
 * from the authority section, 0 without a SOA.  -1 if the message is bad. */
static long answer_ttl(const unsigned char *abuf, int alen, bool negative)
{
	if (abuf == NULL || alen < 12)
		return -1;
	const unsigned char *p = abuf + 12, *end = abuf + alen;
	unsigned qd = be16(abuf + 4), an = be16(abuf + 6), ns = be16(abuf + 8);
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(&p, end, abuf, alen) < 0 || end - p < 4)
			return -1;
		p += 4;
	}
	long min = -1;
	for (unsigned i = 0; i < an + (negative ? ns : 0); i++) {
		if (skip_name(&p, end, abuf, alen) < 0 || end - p < 10)
			return -1;
		unsigned type = be16(p), rdlen = be16(p + 8);
		uint32_t ttl = be32(p + 4);
		if (ttl > 0x7fffffffu) /* RFC 2181 §8 */
			ttl = 0;
		p += 10;
		if ((unsigned long)(end - p) < rdlen)
			return -1;
		if (i < an) {
			if (!negative && (min < 0 || (long)ttl < min))
				min = (long)ttl;
		} else if (type == QT_SOA) {
			const unsigned char *q = p, *rend = p + rdlen;
			if (skip_name(&q, rend, abuf, alen) < 0 ||
			    skip_name(&q, rend, abuf, alen) < 0 || rend - q < 20)
				return -1;
			uint32_t minimum = be32(q + 16);
			return (long)(ttl < minimum ? ttl : minimum);
		}
		p += rdlen;
	}
	return negative ? 0 : min;
}

/* ---- entries: hash, LRU, FIFO ---- */

static unsigned key_hash(int type, const char *name)
{
	uint32_t h = 2166136261u ^ (uint32_t)type;
	for (const unsigned char *s = (const unsigned char *)name; *s; s++)
		h = (h ^ *s) * 16777619u;
	return h;
}

static struct entry **bucket(struct dns *d, int type, const char *name)
{
	return &d->hash[key_hash(type, name) & (d->nbuckets - 1)];
}

static struct entry *hash_find(struct dns *d, int type, const char *name)
{
	for (struct entry *e = *bucket(d, type, name); e != NULL; e = e->hnext)
		if (e->type == type && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static void hash_remove(struct dns *d, struct entry *e)
{
	for (struct entry **pp = bucket(d, e->type, e->name); *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			e->hnext = NULL;
			return;
		}
	}
}

/* Doubly linked list helpers shared by the LRU and the FIFO. */
static void list_unlink(struct entry **head, struct entry **tail, struct entry *e)
{
	if (e->lprev) e->lprev->lnext = e->lnext; else *head = e->lnext;
	if (e->lnext) e->lnext->lprev = e->lprev; else *tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void list_push_head(struct entry **head, struct entry **tail, struct entry *e)
{
	e->lprev = NULL;
	e->lnext = *head;
	if (*head) (*head)->lprev = e; else *tail = e;
	*head = e;
}

static void list_push_tail(struct entry **head, struct entry **tail, struct entry *e)
{
	e->lnext = NULL;
	e->lprev = *tail;
	if (*tail) (*tail)->lnext = e; else *head = e;
	*tail = e;
}

static void entry_free_items(struct entry *e)
{
	for (int i = 0; i < e->n; i++) {
		if (e->type == QT_MX)
			free(e->u.mx[i].host);
		else if (e->type == QT_TXT)
			free(e->u.txt[i]);
	}
	free(e->u.mx); /* any member: they share the pointer */
	e->u.mx = NULL;
	e->n = 0;
}

/* Unlink from every structure and free; the waiters go too, without touching
 * their reqs (callers decide what happens to those). */
static void entry_free(struct entry *e)
{
	struct dns *d = e->d;
	switch (e->state) {
	case E_QUEUED:
		list_unlink(&d->fifo_head, &d->fifo_tail, e);
		d->nqueued--;
		hash_remove(d, e);
		break;
	case E_CACHED:
		list_unlink(&d->lru_head, &d->lru_tail, e);
		d->ncached--;
		hash_remove(d, e);
		break;
	case E_INFLIGHT:
		hash_remove(d, e);
		break;
	case E_DONE:
		break;
	}
	while (e->waiters) {
		struct waiter *w = e->waiters;
		e->waiters = w->next;
		free(w);
	}
	entry_free_items(e);
	free(e);
}

/* ---- requests ---- */

static void pump_schedule(struct dns *d)
{
	loop_defer(d->loop, &d->pump->task);
}

static struct req *req_new(struct dns *d, enum req_kind kind, void *arg)
{
	/* A TXT request never touches the MX part of the union (~24 KiB that
	 * calloc would clear on every lookup). */
	size_t sz = kind == REQ_TXT ? offsetof(struct req, u) + sizeof(struct dns_txt) : sizeof(struct req);
	struct req *r = xcalloc(1, sz);
	r->d = d;
	r->kind = kind;
	r->refs = 1; /* the caller's hold, dropped at the end of dns_resolve_* */
	r->arg = arg;
	r->next = d->reqs;
	if (d->reqs)
		d->reqs->prev = r;
	d->reqs = r;
	d->nreqs++;
	return r;
}

static void req_free(struct req *r)
{
	struct dns *d = r->d;
	if (r->prev) r->prev->next = r->next; else if (d->reqs == r) d->reqs = r->next;
	if (r->next) r->next->prev = r->prev;
	d->nreqs--;
	if (r->kind == REQ_TXT)
		for (int i = 0; i < r->u.txt.n; i++)
			free(r->u.txt.rr[i]);
	free(r);
}

/* Build the host list once every A/AAAA lookup is in: IPv4 addresses first,
 * then IPv6 (at least half the slots kept for IPv6 when both overflow), hosts
 * with no address dropped but named in `why`, then sorted and shuffled. */
static void mx_finish_hosts(struct req *r)
{
	struct dns_mx *m = &r->u.mx.res;
	bool any_temp = false;
	int out = 0;
	size_t wl = strlen(m->why);
	for (int i = 0; i < m->nhosts; i++) {
		struct host_work *hw = &r->u.mx.hw[i];
		struct dns_host h = m->hosts[i];
		int n6 = hw->n6, n4 = hw->n4;
		int max6 = DNS_MAX_ADDRS - n4 > DNS_MAX_ADDRS / 2 ? DNS_MAX_ADDRS - n4 : DNS_MAX_ADDRS / 2;
		if (n6 > max6)
			n6 = max6;
		if (n4 > DNS_MAX_ADDRS - n6)
			n4 = DNS_MAX_ADDRS - n6;
		h.naddrs = 0;
		memset(h.addrs, 0, sizeof(h.addrs));
		for (int k = 0; k < n4; k++) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&h.addrs[h.naddrs++];
			sin->sin_family = AF_INET;
			sin->sin_addr = hw->v4[k];
		}
		for (int k = 0; k < n6; k++) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h.addrs[h.naddrs++];
			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = hw->v6[k];
		}
		if (h.naddrs > 0) {
			h.status = DNS_OK;
			m->hosts[out++] = h;
			continue;
		}
		const char *why = hw->why4 ? hw->why4 : hw->why6;
		if (hw->st4 == DNS_TEMP || hw->st6 == DNS_TEMP) {
			h.status = DNS_TEMP;
			any_temp = true;
			why = hw->st4 == DNS_TEMP ? hw->why4 : hw->why6;
		} else if (hw->st4 == DNS_NXDOMAIN && hw->st6 == DNS_NXDOMAIN) {
			h.status = DNS_NXDOMAIN;
		} else {
			h.status = DNS_NODATA;
		}
		if (wl < sizeof(m->why)) {
			int k = snprintf(m->why + wl, sizeof(m->why) - wl, "%s%s: %s",
					 wl ? "; " : "", h.name, why ? why : dns_status_name(h.status));
			wl = k < 0 ? sizeof(m->why) : wl + (size_t)k;
		}
	}
	m->nhosts = out;
	dns_sort_hosts(m->hosts, out, rand_u32);
	if (out > 0) {
		m->status = DNS_OK;
		return;
	}
	char detail[sizeof(m->why)];
	strlcpy_x(detail, m->why, sizeof(detail));
	m->status = any_temp ? DNS_TEMP : DNS_NODATA;
	setwhy(m->why, sizeof(m->why), "%s for %s (%s)",
		 any_temp ? "temporary failure resolving MX hosts"
			  : m->implicit ? "no MX and no address" : "no address for any MX host",
		 r->name, detail);
}

static void req_unref(struct req *r)
{
	if (--r->refs > 0)
		return;
	if (r->kind == REQ_MX && r->hosts_stage)
		mx_finish_hosts(r);
	struct dns *d = r->d;
	r->rnext = NULL;
	if (d->ready_tail) d->ready_tail->rnext = r; else d->ready_head = r;
	d->ready_tail = r;
	pump_schedule(d);
}

/* ---- lookups ---- */

static void apply(struct req *r, int slot, const struct entry *e);

static struct entry *entry_new(struct dns *d, int type, const char *name)
{
	size_t len = strlen(name);
	struct entry *e = xcalloc(1, sizeof(*e) + len + 1);
	memcpy(e->name, name, len + 1);
	e->d = d;
	e->type = type;
	e->state = E_QUEUED;
	struct entry **b = bucket(d, type, name);
	e->hnext = *b;
	*b = e;
	list_push_tail(&d->fifo_head, &d->fifo_tail, e);
	d->nqueued++;
	return e;
}

/* Ask for (type, name) on behalf of r; the answer comes through apply(), now
 * (cache hit) or later.  r is always held by the caller here. */
static void lookup(struct dns *d, int type, const char *name, struct req *r, int slot)
{
	struct entry *e = hash_find(d, type, name);
	if (e != NULL && e->state == E_CACHED && e->expires <= loop_now(d->loop)) {
		entry_free(e);
		e = NULL;
	}
	if (e != NULL && e->state == E_CACHED) {
		d->stats.cache_hits++;
		list_unlink(&d->lru_head, &d->lru_tail, e);
		list_push_head(&d->lru_head, &d->lru_tail, e);
		log_trace("evt=dns_cache_hit name=%s type=%s status=%s", name, type_name(type),
			  dns_status_name(e->status));
		apply(r, slot, e);
		return;
	}
	if (e != NULL)
		d->stats.coalesced++;
	else
		e = entry_new(d, type, name);
	struct waiter *w = xmalloc(sizeof(*w));
	w->r = r;
	w->slot = slot;
	w->next = e->waiters;
	e->waiters = w;
	r->refs++;
}

static void start_host_lookups(struct req *r)
{
	r->hosts_stage = true;
	for (int i = 0; i < r->u.mx.res.nhosts; i++) {
		const char *h = r->u.mx.res.hosts[i].name;
		lookup(r->d, QT_A, h, r, i);
		lookup(r->d, QT_AAAA, h, r, i);
	}
}

/* Choose up to DNS_MAX_MX hosts from an MX answer (stored sorted by pref):
 * duplicates keep their lowest pref, root targets are skipped, and when the
 * cut falls inside a run of equal prefs the survivors are drawn at random. */
static void mx_pick(struct req *r, const struct entry *e)
{
	int idx[MX_STORE_MAX], n = 0;
	for (int i = 0; i < e->n; i++) {
		if (e->u.mx[i].host[0] == '\0')
			continue;
		bool dup = false;
		for (int k = 0; k < n && !dup; k++)
			dup = strcmp(e->u.mx[idx[k]].host, e->u.mx[i].host) == 0;
		if (!dup)
			idx[n++] = i;
	}
	if (n > DNS_MAX_MX) {
		int cut = e->u.mx[idx[DNS_MAX_MX - 1]].pref, lo = 0, hi = n;
		while (e->u.mx[idx[lo]].pref < cut)
			lo++;
		while (e->u.mx[idx[hi - 1]].pref > cut)
			hi--;
		for (int i = lo; i < DNS_MAX_MX; i++) { /* partial Fisher-Yates on [lo,hi) */
			int j = i + (int)(rand_u32() % (uint32_t)(hi - i));
			int t = idx[i];
			idx[i] = idx[j];
			idx[j] = t;
		}
		n = DNS_MAX_MX;
	}
	struct dns_mx *m = &r->u.mx.res;
	for (int i = 0; i < n; i++) {
		strlcpy_x(m->hosts[i].name, e->u.mx[idx[i]].host, sizeof(m->hosts[i].name));
		m->hosts[i].pref = e->u.mx[idx[i]].pref;
	}
	m->nhosts = n;
}

static void apply_mx(struct req *r, const struct entry *e)
{
	struct dns_mx *m = &r->u.mx.res;
	switch (e->status) {
	case DNS_OK:
		/* RFC 7505 §3: a single MX whose exchange is "." with preference 0
		 * says the domain accepts no mail. */
		if (e->n == 1 && e->u.mx[0].host[0] == '\0' && e->u.mx[0].pref == 0) {
			m->status = DNS_NULLMX;
			setwhy(m->why, sizeof(m->why), "null MX for %s (RFC 7505)", r->name);
			return;
		}
		mx_pick(r, e);
		start_host_lookups(r); /* no host left: finishes as DNS_NODATA */
		return;
	case DNS_NODATA:
		/* RFC 5321 §5.1: no MX records, the domain itself is the implicit MX. */
		m->implicit = 1;
		m->nhosts = 1;
		strlcpy_x(m->hosts[0].name, r->name, sizeof(m->hosts[0].name));
		m->hosts[0].pref = 0;
		start_host_lookups(r);
		return;
	default:
		m->status = e->status;
		setwhy(m->why, sizeof(m->why), "%s for %s MX", e->reason ? e->reason : "error",
			 r->name);
		return;
	}
}

static void apply_addrs(struct req *r, int slot, const struct entry *e)
{
	struct host_work *hw = &r->u.mx.hw[slot];
	if (e->type == QT_A) {
		hw->st4 = e->status;
		hw->why4 = e->reason;
		for (int i = 0; i < e->n && hw->n4 < DNS_MAX_ADDRS; i++)
			hw->v4[hw->n4++] = e->u.a[i];
	} else {
		hw->st6 = e->status;
		hw->why6 = e->reason;
		for (int i = 0; i < e->n && hw->n6 < DNS_MAX_ADDRS; i++)
			hw->v6[hw->n6++] = e->u.aaaa[i];
	}
}

static void apply_txt(struct req *r, const struct entry *e)
{
	struct dns_txt *t = &r->u.txt;
	t->status = e->status;
	if (e->status != DNS_OK) {
		setwhy(t->why, sizeof(t->why), "%s for %s TXT", e->reason ? e->reason : "error",
			 r->name);
		return;
	}
	for (int i = 0; i < e->n && t->n < (int)ARRAY_LEN(t->rr); i++)
		t->rr[t->n++] = xstrdup(e->u.txt[i]);
}

static void apply(struct req *r, int slot, const struct entry *e)
{
	if (r->kind == REQ_TXT)
		apply_txt(r, e);
	else if (slot < 0)
		apply_mx(r, e);
	else
		apply_addrs(r, slot, e);
}

/* ---- parsing answers into entries ---- */

static int cmp_mx(const void *a, const void *b)
{
	const struct mx_rr *x = a, *y = b;
	return (x->pref > y->pref) - (x->pref < y->pref);
}

static void host_norm(char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	if (n > 0 && s[n - 1] == '.')
		s[n - 1] = '\0';
}

static int parse_mx(struct entry *e, const unsigned char *abuf, int alen)
{
	struct ares_mx_reply *mx = NULL;
	int st = ares_parse_mx_reply(abuf, alen, &mx);
	if (st != ARES_SUCCESS)
		return st;
	int n = 0;
	for (struct ares_mx_reply *p = mx; p; p = p->next)
		n++;
	if (n > MX_STORE_MAX)
		n = MX_STORE_MAX; /* XXX(dns): keeps answer order past 64 records */
	e->u.mx = xcalloc((size_t)n, sizeof(*e->u.mx));
	for (struct ares_mx_reply *p = mx; p && e->n < n; p = p->next) {
		e->u.mx[e->n].pref = p->priority;
		e->u.mx[e->n].host = xstrdup(p->host ? p->host : "");
		host_norm(e->u.mx[e->n].host);
		e->n++;
	}
	ares_free_data(mx);
	qsort(e->u.mx, (size_t)e->n, sizeof(*e->u.mx), cmp_mx); /* equal prefs: shuffled later */
	return e->n > 0 ? ARES_SUCCESS : ARES_ENODATA;
}

static int parse_addrs(struct entry *e, const unsigned char *abuf, int alen, long *ttl)
{
	int n = DNS_MAX_ADDRS, st;
	if (e->type == QT_A) {
		struct ares_addrttl at[DNS_MAX_ADDRS];
		st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
		if (st != ARES_SUCCESS)
			return st;
		e->u.a = xcalloc((size_t)(n ? n : 1), sizeof(*e->u.a));
		for (int i = 0; i < n; i++) {
			e->u.a[i] = at[i].ipaddr;
			if (*ttl < 0 || at[i].ttl < *ttl)
				*ttl = at[i].ttl;
		}
	} else {
		struct ares_addr6ttl at[DNS_MAX_ADDRS];
		st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
		if (st != ARES_SUCCESS)
			return st;
		e->u.aaaa = xcalloc((size_t)(n ? n : 1), sizeof(*e->u.aaaa));
		for (int i = 0; i < n; i++) {
			memcpy(&e->u.aaaa[i], &at[i].ip6addr, sizeof(e->u.aaaa[i]));
			if (*ttl < 0 || at[i].ttl < *ttl)
				*ttl = at[i].ttl;
		}
	}
	e->n = n;
	return n > 0 ? ARES_SUCCESS : ARES_ENODATA;
}

static int parse_txt(struct entry *e, const unsigned char *abuf, int alen)
{
	struct ares_txt_ext *txt = NULL;
	int st = ares_parse_txt_reply_ext(abuf, alen, &txt);
	if (st != ARES_SUCCESS)
		return st;
	int n = 0;
	for (struct ares_txt_ext *p = txt; p; p = p->next)
		n += p->record_start || p == txt;
	if (n > (int)ARRAY_LEN(((struct dns_txt *)0)->rr))
		n = (int)ARRAY_LEN(((struct dns_txt *)0)->rr);
	e->u.txt = xcalloc((size_t)(n ? n : 1), sizeof(char *));
	size_t len = 0;
	for (struct ares_txt_ext *p = txt; p; p = p->next) {
		if (p->record_start || p == txt) {
			if (e->n == n)
				break;
			e->u.txt[e->n++] = xstrdup("");
			len = 0;
		}
		/* character-strings of one record are concatenated (RFC 7208 §3.3,
		 * RFC 8461 §3.1); a NUL inside one would cut it short: fine for the
		 * ASCII policy records we read */
		if (len + p->length > TXT_LEN_MAX)
			continue;
		char *s = xrealloc(e->u.txt[e->n - 1], len + p->length + 1);
		memcpy(s + len, p->txt, p->length);
		len += p->length;
		s[len] = '\0';
		e->u.txt[e->n - 1] = s;
	}
	ares_free_data(txt);
	return e->n > 0 ? ARES_SUCCESS : ARES_ENODATA;
}

/* ---- c-ares callback ---- */

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct entry *e = arg;
	struct dns *d = e->d;
	(void)timeouts;
	d->ninflight--;
	if (status == ARES_EDESTRUCTION || d->destroying) {
		/* dns_free: its reqs are freed there, no user callback runs */
		entry_free(e);
		return;
	}
	long ttl = -1;
	int st = status;
	if (st == ARES_SUCCESS) {
		if (e->type == QT_MX)
			st = parse_mx(e, abuf, alen);
		else if (e->type == QT_TXT)
			st = parse_txt(e, abuf, alen);
		else
			st = parse_addrs(e, abuf, alen, &ttl);
		if (st != ARES_SUCCESS)
			entry_free_items(e);
	}
	e->status = map_status(st, &e->reason);
	if (e->status == DNS_OK) {
		long t = answer_ttl(abuf, alen, false);
		if (t >= 0 && (ttl < 0 || t < ttl))
			ttl = t;
		if (ttl > (long)POS_TTL_MAX)
			ttl = POS_TTL_MAX;
	} else if (e->status == DNS_NXDOMAIN || e->status == DNS_NODATA) {
		ttl = st == ARES_EBADNAME ? 0 : answer_ttl(abuf, alen, true);
		/* No SOA in the answer (some local servers): still cache briefly,
		 * or every delivery re-asks for an AAAA that does not exist. */
		if (ttl == 0 && st != ARES_EBADNAME)
			ttl = NEG_TTL_NOSOA;
		if (ttl > (long)NEG_TTL_MAX)
			ttl = NEG_TTL_MAX;
	} else {
		ttl = 0; /* temporary failures are not cached */
	}
	if (ttl < 0)
		ttl = 0;
	log_debug("evt=dns name=%s type=%s status=%s ttl=%ld n=%d%s%s", e->name,
		  type_name(e->type), dns_status_name(e->status), ttl, e->n,
		  e->reason ? " reason=" : "", e->reason ? e->reason : "");

	struct waiter *w = e->waiters;
	e->waiters = NULL;
	if (ttl > 0 && d->cache_max > 0) {
		e->state = E_CACHED;
		e->expires = loop_now(d->loop) + (uint64_t)ttl * 1000u;
		list_push_head(&d->lru_head, &d->lru_tail, e);
		if (++d->ncached > d->cache_max)
			entry_free(d->lru_tail); /* never e: e is the head */
	} else {
		hash_remove(d, e);
		e->state = E_DONE;
	}
	/* Waiters were pushed at the head: reverse to serve them in FIFO order. */
	struct waiter *rev = NULL;
	while (w) {
		struct waiter *nx = w->next;
		w->next = rev;
		rev = w;
		w = nx;
	}
	while (rev) {
		struct waiter *nx = rev->next;
		apply(rev->r, rev->slot, e);
		req_unref(rev->r);
		free(rev);
		rev = nx;
	}
	if (e->state == E_DONE)
		entry_free(e);
}

/* ---- loop adapter ---- */

static void arm_timer(struct dns *d)
{
	struct timeval tv, *tvp = ares_timeout(d->chan, NULL, &tv);
	if (tvp == NULL) {
		loop_timer_stop(d->loop, &d->timer);
		return;
	}
	uint64_t ms = (uint64_t)tvp->tv_sec * 1000u + ((uint64_t)tvp->tv_usec + 999u) / 1000u;
	/* at least 1 ms: a timer re-armed for "now" from its own callback must not
	 * run again in the same pass */
	loop_timer_arm(d->loop, &d->timer, ms ? ms : 1);
}

/* Start queued queries while under the in-flight cap.  ares_query may call
 * on_answer before returning (no usable server, out of memory); that only
 * touches the entry and may queue more lookups, which this loop then starts. */
static void start_queued(struct dns *d)
{
	while (d->fifo_head != NULL && d->ninflight < d->max_inflight) {
		struct entry *e = d->fifo_head;
		list_unlink(&d->fifo_head, &d->fifo_tail, e);
		d->nqueued--;
		e->state = E_INFLIGHT;
		d->ninflight++;
		d->stats.queries++;
		log_trace("evt=dns_query name=%s type=%s", e->name, type_name(e->type));
		ares_query(d->chan, e->name, 1 /* C_IN */, e->type, on_answer, e);
	}
	arm_timer(d);
}

static struct sock *sock_find(struct dns *d, int fd)
{
	for (unsigned i = 0; i < d->nsocks; i++)
		if (d->socks[i].fd == fd)
			return &d->socks[i];
	return NULL;
}

static int bytes_waiting(int fd)
{
	int n = 0;
	return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

static void on_watch(void *arg, int fd, unsigned revents)
{
	struct dns *d = arg;
	struct sock *s = sock_find(d, fd);
	log_trace("evt=dns_ready fd=%d revents=%u", fd, revents);
	if (s == NULL)
		return;
	ares_socket_t rfd = (revents & LOOP_READ) && (s->ev & LOOP_READ) ? fd : ARES_SOCKET_BAD;
	ares_socket_t wfd = (revents & LOOP_WRITE) && (s->ev & LOOP_WRITE) ? fd : ARES_SOCKET_BAD;
	if (rfd == ARES_SOCKET_BAD && wfd == ARES_SOCKET_BAD)
		return;
	ares_process_fd(d->chan, rfd, wfd); /* s may be gone after this */
	/* Multishot poll reports wake-ups, not levels, and c-ares 1.18 reads a
	 * TCP answer one step per call (length, then body): if both arrived in
	 * one segment no second event comes.  Go on while c-ares keeps eating. */
	int left = rfd == ARES_SOCKET_BAD ? 0 : bytes_waiting(fd), prev = INT_MAX;
	while (left > 0 && left < prev && sock_find(d, fd) != NULL) {
		ares_process_fd(d->chan, fd, ARES_SOCKET_BAD);
		prev = left;
		left = bytes_waiting(fd);
	}
	start_queued(d);
}

static void on_timer(struct loop_timer *t)
{
	struct dns *d = container_of(t, struct dns, timer);
	ares_process_fd(d->chan, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	start_queued(d);
}

/* c-ares tells us which sockets it wants watched.  Record and forward only:
 * calling back into c-ares from here is not allowed. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct sock *s = sock_find(d, fd);
	unsigned ev = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
	log_trace("evt=dns_sock fd=%d read=%d write=%d", fd, readable, writable);
	if (ev == 0) {
		if (s == NULL)
			return;
		/* c-ares closes fd right after this: disarm now, free the watcher
		 * from our task (we may be inside this watcher's own callback). */
		loop_watch_set(s->w, 0);
		if (d->ndead_w == d->capdead_w) {
			d->capdead_w = d->capdead_w ? d->capdead_w * 2 : 8;
			d->dead_w = xrealloc(d->dead_w, d->capdead_w * sizeof(*d->dead_w));
		}
		d->dead_w[d->ndead_w++] = s->w;
		*s = d->socks[--d->nsocks];
		if (!d->destroying)
			pump_schedule(d);
		return;
	}
	if (s == NULL) {
		if (d->nsocks == d->capsocks) {
			d->capsocks = d->capsocks ? d->capsocks * 2 : 8;
			d->socks = xrealloc(d->socks, d->capsocks * sizeof(*d->socks));
		}
		s = &d->socks[d->nsocks++];
		s->fd = fd;
		s->w = loop_watch_new(d->loop, fd, on_watch, d);
	}
	s->ev = ev;
	loop_watch_set(s->w, ev);
}

static void free_dead_watchers(struct dns *d)
{
	for (unsigned i = 0; i < d->ndead_w; i++)
		loop_watch_free(d->dead_w[i]);
	d->ndead_w = 0;
}

/* ---- delivery task ---- */

static void destroy(struct dns *d);

static void deliver(struct req *r)
{
	if (r->kind == REQ_MX) {
		struct dns_mx *m = &r->u.mx.res;
		log_debug("evt=dns_mx domain=%s status=%s hosts=%d implicit=%d why=\"%s\"", r->name,
			  dns_status_name(m->status), m->nhosts, m->implicit, m->why);
		r->mx_cb(r->arg, m);
	} else {
		r->txt_cb(r->arg, &r->u.txt);
	}
}

static void run_pump(struct loop_task *t)
{
	struct pump *p = container_of(t, struct pump, task);
	struct dns *d = p->d;
	if (d == NULL) { /* orphaned by dns_free */
		free(p);
		return;
	}
	free_dead_watchers(d);
	/* Serve only what is ready now; reqs completed by these callbacks wait for
	 * the next run (the task re-queues itself through req_unref). */
	struct req *r = d->ready_head;
	d->ready_head = d->ready_tail = NULL;
	d->in_pump = true;
	while (r != NULL) {
		struct req *nx = r->rnext;
		if (!d->dying)
			deliver(r);
		req_free(r);
		r = nx;
	}
	d->in_pump = false;
	if (d->dying)
		destroy(d);
}

/* ---- public API ---- */

struct dns *dns_new(struct loop *l, const struct dns_opts *o, char *err, size_t errlen)
{
	struct dns *d = xcalloc(1, sizeof(*d));
	struct ares_options ao;
	int st;
	d->loop = l;
	d->max_inflight = o->max_inflight ? o->max_inflight : 1000;
	d->cache_max = o->cache_max ? o->cache_max : 10000;
	d->nbuckets = 256;
	while (d->nbuckets < d->cache_max + d->max_inflight && d->nbuckets < (1u << 20))
		d->nbuckets *= 2;
	d->hash = xcalloc(d->nbuckets, sizeof(*d->hash));
	d->pump = xcalloc(1, sizeof(*d->pump));
	d->pump->d = d;
	loop_task_init(&d->pump->task, run_pump);
	loop_timer_init(&d->timer, on_timer);

	memset(&ao, 0, sizeof(ao));
	/* STAYOPEN: keep the UDP sockets (and their watchers) between bursts.
	 * No NOCHECKRESP: a SERVFAIL/REFUSED answer moves on to the next server
	 * (failover) and, from the last one, ends as ECONNREFUSED (map_status).
	 * No EDNS: c-ares 1.18 has no fallback for servers that reject it;
	 * truncated answers are retried over TCP. */
	ao.flags = ARES_FLAG_STAYOPEN | ARES_FLAG_NOSEARCH;
	ao.timeout = (int)(o->timeout_ms ? o->timeout_ms : 2000);
	ao.tries = (int)(o->tries ? o->tries : 3);
	ao.sock_state_cb = sock_state_cb;
	ao.sock_state_cb_data = d;
	/* Bursts of thousands of lookups: a default-size UDP receive buffer
	 * drops answers (bench/ saw 1,500 lost of 10,000). */
	ao.socket_receive_buffer_size = 4 << 20;
	st = ares_init_options(&d->chan, &ao,
			       ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
				       ARES_OPT_SOCK_STATE_CB | ARES_OPT_SOCK_RCVBUF);
	if (st != ARES_SUCCESS) {
		d->chan = NULL;
		snprintf(err, errlen, "dns: c-ares init failed: %s", ares_strerror(st));
		goto fail;
	}
	if (o->servers != NULL && o->servers[0] != '\0') {
		st = ares_set_servers_ports_csv(d->chan, o->servers);
		if (st != ARES_SUCCESS) {
			snprintf(err, errlen, "bad dns servers \"%s\": %s", o->servers,
				 ares_strerror(st));
			goto fail;
		}
	}
	return d;
fail:
	dns_free(d);
	return NULL;
}

static void destroy(struct dns *d)
{
	d->destroying = true;
	if (d->chan != NULL)
		ares_destroy(d->chan); /* on_answer(ARES_EDESTRUCTION) frees in-flight entries */
	d->chan = NULL;
	free_dead_watchers(d);
	for (unsigned i = 0; i < d->nsocks; i++) /* normally none left */
		loop_watch_free(d->socks[i].w);
	loop_timer_stop(d->loop, &d->timer);
	for (unsigned b = 0; d->hash && b < d->nbuckets; b++)
		while (d->hash[b] != NULL)
			entry_free(d->hash[b]);
	while (d->reqs != NULL)
		req_free(d->reqs);
	if (d->pump != NULL) {
		if (d->pump->task.queued)
			d->pump->d = NULL; /* it frees itself when the loop runs it */
		else
			free(d->pump);
	}
	free(d->hash);
	free(d->socks);
	free(d->dead_w);
	free(d);
}

void dns_free(struct dns *d)
{
	if (d == NULL)
		return;
	if (d->in_pump) { /* called from one of our callbacks: finish after it */
		d->dying = true;
		return;
	}
	destroy(d);
}

/* Lowercase, drop one trailing dot, refuse what cannot be a DNS name. */
static bool name_norm(const char *in, char *out, size_t outlen)
{
	size_t n = strlen(in);
	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > 253 || n >= outlen)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c <= 0x20 || c >= 0x7f || c == '\\') {
			out[0] = '\0';
			return false;
		}
		out[i] = (char)tolower(c);
	}
	out[n] = '\0';
	return true;
}

/* A name that cannot be asked fails at once, permanently, like NXDOMAIN. */
static void resolve(struct req *r, const char *in, int type)
{
	if (name_norm(in, r->name, sizeof(r->name))) {
		lookup(r->d, type, r->name, r, -1);
		start_queued(r->d);
	} else if (r->kind == REQ_MX) {
		r->u.mx.res.status = DNS_NXDOMAIN;
		strlcpy_x(r->u.mx.res.why, "invalid domain name", sizeof(r->u.mx.res.why));
	} else {
		r->u.txt.status = DNS_NXDOMAIN;
		strlcpy_x(r->u.txt.why, "invalid name", sizeof(r->u.txt.why));
	}
	req_unref(r);
}

void dns_resolve_mx(struct dns *d, const char *domain, dns_mx_fn *cb, void *arg)
{
	struct req *r = req_new(d, REQ_MX, arg);
	r->mx_cb = cb;
	resolve(r, domain, QT_MX);
}

void dns_resolve_addr(struct dns *d, const char *host, dns_mx_fn *cb, void *arg)
{
	struct req *r = req_new(d, REQ_MX, arg);
	r->mx_cb = cb;
	struct dns_mx *m = &r->u.mx.res;
	if (!name_norm(host, r->name, sizeof(r->name))) {
		m->status = DNS_NXDOMAIN;
		strlcpy_x(m->why, "invalid host name", sizeof(m->why));
	} else {
		/* The host itself, as for an implicit MX, without asking for MX. */
		m->implicit = 1;
		m->nhosts = 1;
		strlcpy_x(m->hosts[0].name, r->name, sizeof(m->hosts[0].name));
		start_host_lookups(r);
		start_queued(d);
	}
	req_unref(r);
}

void dns_resolve_txt(struct dns *d, const char *name, dns_txt_fn *cb, void *arg)
{
	struct req *r = req_new(d, REQ_TXT, arg);
	r->txt_cb = cb;
	resolve(r, name, QT_TXT);
}

void dns_get_stats(const struct dns *d, struct dns_stats *st)
{
	*st = d->stats;
	st->inflight = d->ninflight;
	st->queued = d->nqueued;
	st->cached = d->ncached;
	st->pending = d->nreqs;
}
