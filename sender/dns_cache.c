/* dns_cache.c: the dns module's entries and requests (see dns.c for the
 * c-ares side, dns_int.h for the shared types).
 *
 * An `entry` is one (type, name) query: queued (FIFO, over the in-flight cap),
 * in flight (the c-ares arg), or cached (LRU, until its TTL).  All three live
 * in one hash, so identical queries coalesce.  Waiters on an entry hold a
 * reference on their `req` (one dns_resolve_* call), the refcounted parent of
 * an MX lookup fanning out to A+AAAA per host [OpenSMTPD dns.c].  When a req's
 * count reaches zero its result (struct dns_mx: hosts picked, addresses laid
 * out, sorted and shuffled; or struct dns_txt) is built and it joins the ready
 * list for dns.c's delivery task.  Nothing here calls a user callback or
 * c-ares.  Ownership: struct dns owns entries and reqs; an entry's waiters are
 * freed with it, their reqs are not. */
#include "sender/dns_int.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

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

void dns_hash_remove(struct dns *d, struct entry *e)
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
void dns_list_unlink(struct entry **head, struct entry **tail, struct entry *e)
{
	if (e->lprev) e->lprev->lnext = e->lnext; else *head = e->lnext;
	if (e->lnext) e->lnext->lprev = e->lprev; else *tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

void dns_list_push_head(struct entry **head, struct entry **tail, struct entry *e)
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

void dns_entry_free_items(struct entry *e)
{
	for (int i = 0; i < e->n; i++) {
		if (e->type == QT_MX)
			free(e->u.mx[i].host);
		else if (e->type == QT_TXT)
			free(e->u.txt[i]);
	}
	if (e->type == QT_TLSA && e->u.tlsa != NULL)
		dns_tlsa_rrs_free(e->u.tlsa, e->n);
	free(e->u.mx); /* any member: they share the pointer */
	e->u.mx = NULL;
	e->n = 0;
	free(e->cname);
	e->cname = NULL;
}

/* Unlink from every structure and free; the waiters go too, without touching
 * their reqs (callers decide what happens to those). */
void dns_entry_free(struct entry *e)
{
	struct dns *d = e->d;
	switch (e->state) {
	case E_QUEUED:
		dns_list_unlink(&d->fifo_head, &d->fifo_tail, e);
		d->nqueued--;
		dns_hash_remove(d, e);
		break;
	case E_CACHED:
		dns_list_unlink(&d->lru_head, &d->lru_tail, e);
		d->ncached--;
		dns_hash_remove(d, e);
		break;
	case E_INFLIGHT:
		dns_hash_remove(d, e);
		break;
	case E_DONE:
		break;
	}
	while (e->waiters) {
		struct waiter *w = e->waiters;
		e->waiters = w->next;
		free(w);
	}
	dns_entry_free_items(e);
	free(e);
}

/* ---- requests ---- */

struct req *dns_req_new(struct dns *d, enum req_kind kind, void *arg)
{
	struct req *r;
	if (kind == REQ_TXT) {
		r = xcalloc(1, offsetof(struct req, u) + sizeof(struct dns_txt));
	} else if (kind == REQ_TLSA) {
		r = xcalloc(1, offsetof(struct req, u) + sizeof(struct dns_tlsa));
	} else {
		r = xcalloc(1, sizeof(*r));
		r->u.mx.res = xcalloc(1, DNS_MX_SIZE(0)); /* no host yet */
	}
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

void dns_req_free(struct req *r)
{
	struct dns *d = r->d;
	if (r->prev) r->prev->next = r->next; else if (d->reqs == r) d->reqs = r->next;
	if (r->next) r->next->prev = r->prev;
	d->nreqs--;
	if (r->kind == REQ_TXT) {
		for (int i = 0; i < r->u.txt.n; i++)
			free(r->u.txt.rr[i]);
	} else if (r->kind == REQ_TLSA) {
		dns_tlsa_fini(&r->u.tlsa);
	} else {
		free(r->u.mx.res);
		free(r->u.mx.hw);
	}
	free(r);
}

void dns_mx_hosts(struct req *r, int n)
{
	r->u.mx.res = xrealloc(r->u.mx.res, DNS_MX_SIZE(n));
	memset(r->u.mx.res->hosts, 0, (size_t)n * sizeof(struct dns_host)); /* cname, secure */
	free(r->u.mx.hw);
	r->u.mx.hw = n > 0 ? xcalloc((size_t)n, sizeof(*r->u.mx.hw)) : NULL;
	r->u.mx.res->nhosts = n;
}

/* Build the host list once every A/AAAA lookup is in: IPv4 addresses first,
 * then IPv6 (at least half the slots kept for IPv6 when both overflow), hosts
 * with no address dropped but named in `why`, then sorted and shuffled. */
static void mx_finish_hosts(struct req *r)
{
	struct dns_mx *m = r->u.mx.res;
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
		/* secure when every address answer that gave addresses was */
		h.secure = (hw->n4 > 0 || hw->n6 > 0) && (hw->n4 == 0 || hw->sec4) &&
			   (hw->n6 == 0 || hw->sec6);
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

void dns_req_unref(struct req *r)
{
	if (--r->refs > 0)
		return;
	if (r->kind == REQ_MX && r->hosts_stage)
		mx_finish_hosts(r);
	struct dns *d = r->d;
	r->rnext = NULL;
	if (d->ready_tail) d->ready_tail->rnext = r; else d->ready_head = r;
	d->ready_tail = r;
	dns_pump_schedule(d);
}

/* ---- lookups ---- */

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

/* Ask for (type, name) on behalf of r; the answer comes through dns_apply(), now
 * (cache hit) or later.  r is always held by the caller here. */
void dns_lookup(struct dns *d, int type, const char *name, struct req *r, int slot)
{
	struct entry *e = hash_find(d, type, name);
	if (e != NULL && e->state == E_CACHED && e->expires <= loop_now(d->loop)) {
		dns_entry_free(e);
		e = NULL;
	}
	if (e != NULL && e->state == E_CACHED) {
		d->stats.cache_hits++;
		dns_list_unlink(&d->lru_head, &d->lru_tail, e);
		dns_list_push_head(&d->lru_head, &d->lru_tail, e);
		log_trace("evt=dns_cache_hit name=%s type=%s status=%s", name, dns_type_name(type),
			  dns_status_name(e->status));
		dns_apply(r, slot, e);
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

void dns_start_host_lookups(struct req *r)
{
	r->hosts_stage = true;
	for (int i = 0; i < r->u.mx.res->nhosts; i++) {
		const char *h = r->u.mx.res->hosts[i].name;
		dns_lookup(r->d, QT_A, h, r, i);
		dns_lookup(r->d, QT_AAAA, h, r, i);
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
	dns_mx_hosts(r, n);
	struct dns_mx *m = r->u.mx.res;
	for (int i = 0; i < n; i++) {
		strlcpy_x(m->hosts[i].name, e->u.mx[idx[i]].host, sizeof(m->hosts[i].name));
		m->hosts[i].pref = e->u.mx[idx[i]].pref;
	}
}

static void apply_mx(struct req *r, const struct entry *e)
{
	struct dns_mx *m = r->u.mx.res;
	switch (e->status) {
	case DNS_OK:
		m->secure = e->secure;
		/* RFC 7505 §3: a single MX whose exchange is "." with preference 0
		 * says the domain accepts no mail. */
		if (e->n == 1 && e->u.mx[0].host[0] == '\0' && e->u.mx[0].pref == 0) {
			m->status = DNS_NULLMX;
			setwhy(m->why, sizeof(m->why), "null MX for %s (RFC 7505)", r->name);
			return;
		}
		mx_pick(r, e);
		dns_start_host_lookups(r); /* no host left: finishes as DNS_NODATA */
		return;
	case DNS_NODATA:
		/* RFC 5321 §5.1: no MX records, the domain itself is the implicit MX. */
		dns_mx_hosts(r, 1);
		m = r->u.mx.res;
		m->secure = e->secure; /* a secure denial of the MX RRset */
		m->implicit = 1;
		strlcpy_x(m->hosts[0].name, r->name, sizeof(m->hosts[0].name));
		m->hosts[0].pref = 0;
		dns_start_host_lookups(r);
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
	struct dns_host *h = &r->u.mx.res->hosts[slot];
	if (e->cname != NULL && h->cname[0] == '\0')
		strlcpy_x(h->cname, e->cname, sizeof(h->cname));
	if (e->type == QT_A) {
		hw->st4 = e->status;
		hw->why4 = e->reason;
		hw->sec4 = e->secure;
		for (int i = 0; i < e->n && hw->n4 < DNS_MAX_ADDRS; i++)
			hw->v4[hw->n4++] = e->u.a[i];
	} else {
		hw->st6 = e->status;
		hw->why6 = e->reason;
		hw->sec6 = e->secure;
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

static void apply_tlsa(struct req *r, const struct entry *e)
{
	struct dns_tlsa *t = &r->u.tlsa;
	t->status = e->status;
	t->secure = e->secure;
	if (e->status != DNS_OK) {
		setwhy(t->why, sizeof(t->why), "%s for %s TLSA", e->reason ? e->reason : "error",
		       r->name);
		return;
	}
	struct dns_tlsa src = { .n = e->n < DNS_MAX_TLSA ? e->n : DNS_MAX_TLSA };
	memcpy(src.rr, e->u.tlsa, (size_t)src.n * sizeof(src.rr[0]));
	struct dns_tlsa tmp;
	dns_tlsa_copy(&tmp, &src);
	t->n = tmp.n;
	memcpy(t->rr, tmp.rr, sizeof(t->rr));
}

void dns_tlsa_copy(struct dns_tlsa *dst, const struct dns_tlsa *src)
{
	*dst = *src;
	for (int i = 0; i < src->n; i++) {
		dst->rr[i].data = xmalloc(src->rr[i].len ? src->rr[i].len : 1);
		memcpy(dst->rr[i].data, src->rr[i].data, src->rr[i].len);
	}
}

void dns_tlsa_fini(struct dns_tlsa *t)
{
	dns_tlsa_rrs_free(t->rr, t->n);
	t->n = 0;
}

void dns_apply(struct req *r, int slot, const struct entry *e)
{
	if (r->kind == REQ_TLSA)
		apply_tlsa(r, e);
	else if (r->kind == REQ_TXT)
		apply_txt(r, e);
	else if (slot < 0)
		apply_mx(r, e);
	else
		apply_addrs(r, slot, e);
}

