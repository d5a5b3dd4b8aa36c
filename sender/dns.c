/* dns.c: MX/A/AAAA/TXT resolution with c-ares 1.18.1, driven by the loop.
 *
 * Loop adapter (STYLE §8): the sock-state callback only records the read/write
 * interest per socket in a small fd table and sets a loop watcher; a watcher
 * event calls ares_process_fd() for that socket; one loop timer follows
 * ares_timeout() after every c-ares call that may move it.  A socket c-ares
 * closes has its watcher disarmed at once and freed later from our task (never
 * inside the watcher's own callback).
 *
 * Entries (one (type, name) query: queued, in flight, cached) and reqs (one
 * dns_resolve_* call) live in dns_cache.c.  Here: parsing an answer into its
 * entry, with the TTL (walked from the raw answer where c-ares 1.18 gives
 * none), and the single deferred task that delivers finished reqs, so no user
 * callback ever runs inside dns_resolve_* or inside a c-ares callback.
 * Ownership: dns owns entries, reqs, watchers.  An entry given to c-ares is
 * freed only in its callback (which c-ares always calls, ARES_EDESTRUCTION
 * included).  dns_free destroys the channel with user callbacks suppressed. */
#include "sender/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#include <ares.h>

#include "sender/dns_int.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

#define POS_TTL_MAX 86400u   /* cap positive answers at one day */
#define NEG_TTL_MAX 300u     /* RFC 2308 negative answers: at most 5 minutes */
#define NEG_TTL_NOSOA 60     /* negative answer without a SOA */
#define TXT_LEN_MAX 65535u   /* one concatenated TXT record */

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

const char *dns_type_name(int type)
{
	return type == QT_A ? "A" : type == QT_AAAA ? "AAAA" : type == QT_MX ? "MX"
	       : type == QT_TLSA ? "TLSA" : "TXT";
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

static int parse_tlsa(struct entry *e, const unsigned char *abuf, int alen)
{
	struct dns_tlsa_rr rr[DNS_MAX_TLSA];
	int n = dns_raw_tlsa(abuf, alen > 0 ? (size_t)alen : 0, e->name, rr, DNS_MAX_TLSA);
	if (n < 0)
		return ARES_EBADRESP;
	if (n == 0)
		return ARES_ENODATA;
	e->u.tlsa = xcalloc((size_t)n, sizeof(*e->u.tlsa));
	memcpy(e->u.tlsa, rr, (size_t)n * sizeof(*rr));
	e->n = n;
	return ARES_SUCCESS;
}

/* ---- an answer into its entry ---- */

long dns_answer_apply(struct entry *e, int status, const unsigned char *abuf, int alen)
{
	long ttl = -1;
	int st = status;
	if (st == ARES_SUCCESS) {
		if (e->type == QT_MX)
			st = parse_mx(e, abuf, alen);
		else if (e->type == QT_TXT)
			st = parse_txt(e, abuf, alen);
		else if (e->type == QT_TLSA)
			st = parse_tlsa(e, abuf, alen);
		else
			st = parse_addrs(e, abuf, alen, &ttl);
		if (st != ARES_SUCCESS)
			dns_entry_free_items(e);
	}
	/* The MX host's CNAME expansion (RFC 7672 2.2.3: a candidate TLSA
	 * base domain), from the address answer's chain. */
	char tgt[256];
	if (st == ARES_SUCCESS && (e->type == QT_A || e->type == QT_AAAA) &&
	    dns_raw_target(abuf, (size_t)alen, e->name, tgt) == 0 && strcmp(tgt, e->name) != 0)
		e->cname = xstrdup(tgt);
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
	return ttl;
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
		dns_entry_free(e);
		return;
	}
	long ttl = dns_answer_apply(e, status, abuf, alen);
	/* RFC 6840 5.7: AD in the answer, believed only because every server
	 * is trusted to validate (dns_new); negative answers carry it too. */
	e->secure = d->dnssec && abuf != NULL && alen >= 12 && (abuf[3] & 0x20) != 0 &&
		    (e->status == DNS_OK || e->status == DNS_NODATA || e->status == DNS_NXDOMAIN);
	log_debug("evt=dns name=%s type=%s status=%s ttl=%ld n=%d%s%s%s", e->name,
		  dns_type_name(e->type), dns_status_name(e->status), ttl, e->n,
		  d->dnssec ? (e->secure ? " dnssec=secure" : " dnssec=insecure") : "",
		  e->reason ? " reason=" : "", e->reason ? e->reason : "");

	struct waiter *w = e->waiters;
	e->waiters = NULL;
	if (ttl > 0 && d->cache_max > 0) {
		e->state = E_CACHED;
		e->expires = loop_now(d->loop) + (uint64_t)ttl * 1000u;
		dns_list_push_head(&d->lru_head, &d->lru_tail, e);
		if (++d->ncached > d->cache_max)
			dns_entry_free(d->lru_tail); /* never e: e is the head */
	} else {
		dns_hash_remove(d, e);
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
		dns_apply(rev->r, rev->slot, e);
		dns_req_unref(rev->r);
		free(rev);
		rev = nx;
	}
	if (e->state == E_DONE)
		dns_entry_free(e);
}

/* ares_send (a query we built, with AD set) hands over any answer as
 * ARES_SUCCESS: the rcode mapping ares_query does (its qcallback) is ours to
 * do. c-ares has already moved on to the next server for SERVFAIL, REFUSED
 * and NOTIMP, and ends those as ECONNREFUSED (map_status). */
static void on_sent(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	if (status == ARES_SUCCESS) {
		if (abuf == NULL || alen < 12) {
			status = ARES_EBADRESP;
		} else {
			unsigned rcode = abuf[3] & 0x0f, ancount = be16(abuf + 6);
			status = rcode == 0 ? (ancount == 0 ? ARES_ENODATA : ARES_SUCCESS)
				 : rcode == 1 ? ARES_EFORMERR
				 : rcode == 2 ? ARES_ESERVFAIL
				 : rcode == 3 ? ARES_ENOTFOUND
				 : rcode == 4 ? ARES_ENOTIMP
				 : ARES_EREFUSED;
		}
	}
	on_answer(arg, status, timeouts, abuf, alen);
}

/* The query with the AD bit set (RFC 6840 5.7: a validating resolver then
 * says in AD whether the answer is secure), no EDNS (dns_new). */
static void send_ad(struct dns *d, struct entry *e)
{
	unsigned char *q = NULL;
	int qlen = 0;
	if (ares_create_query(e->name, 1 /* C_IN */, e->type, 0, 1, &q, &qlen, 0) != ARES_SUCCESS ||
	    qlen < 12) {
		if (q)
			ares_free_string(q);
		on_answer(e, ARES_EBADNAME, 0, NULL, 0);
		return;
	}
	q[3] |= 0x20; /* AD */
	ares_send(d->chan, q, qlen, on_sent, e);
	ares_free_string(q);
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
		dns_list_unlink(&d->fifo_head, &d->fifo_tail, e);
		d->nqueued--;
		e->state = E_INFLIGHT;
		d->ninflight++;
		d->stats.queries++;
		log_trace("evt=dns_query name=%s type=%s", e->name, dns_type_name(e->type));
		if (d->dnssec)
			send_ad(d, e);
		else
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
			dns_pump_schedule(d);
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

void dns_pump_schedule(struct dns *d)
{
	loop_defer(d->loop, &d->pump->task);
}

static void destroy(struct dns *d);

static void deliver(struct req *r)
{
	if (r->kind == REQ_MX) {
		struct dns_mx *m = r->u.mx.res;
		log_debug("evt=dns_mx domain=%s status=%s hosts=%d implicit=%d why=\"%s\"", r->name,
			  dns_status_name(m->status), m->nhosts, m->implicit, m->why);
		r->mx_cb(r->arg, m);
	} else if (r->kind == REQ_TLSA) {
		r->tlsa_cb(r->arg, &r->u.tlsa);
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
		dns_req_free(r);
		r = nx;
	}
	d->in_pump = false;
	if (d->dying)
		destroy(d);
}

/* ---- public API ---- */

static bool servers_trusted(struct dns *d, const char *list, char *who, size_t wholen);

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
	if (o->dnssec != DNS_DNSSEC_NO) {
		char who[80] = "";
		bool trusted = servers_trusted(d, o->trusted, who, sizeof(who));
		if (!trusted && o->dnssec == DNS_DNSSEC_YES) {
			snprintf(err, errlen,
				 "dane = yes: resolver %s is not trusted to validate DNSSEC (loopback, "
				 "or list it in [dns] dnssec_trusted)", who);
			goto fail;
		}
		d->dnssec = trusted;
	}
	return d;
fail:
	dns_free(d);
	return NULL;
}

/* Is addr (text) loopback, or in the trusted list? */
static bool addr_trusted(int family, const void *addr, const char *txt, const char *list)
{
	if (family == AF_INET && (((const unsigned char *)addr)[0] == 127))
		return true;
	if (family == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)addr))
		return true;
	for (const char *p = list ? list : ""; *p;) {
		size_t n = strcspn(p, " ,\t");
		if (n > 0 && n == strlen(txt) && strncmp(p, txt, n) == 0)
			return true;
		p += n;
		p += strspn(p, " ,\t");
	}
	return false;
}

/* DANE trusts the AD bit only when every server c-ares may ask is trusted
 * to validate: a loopback resolver (the operator's own), or one listed in
 * [dns] dnssec_trusted. The first untrusted one goes to who. */
static bool servers_trusted(struct dns *d, const char *list, char *who, size_t wholen)
{
	struct ares_addr_port_node *servers = NULL;
	if (ares_get_servers_ports(d->chan, &servers) != ARES_SUCCESS || servers == NULL) {
		snprintf(who, wholen, "(none configured)");
		return false;
	}
	bool ok = true;
	for (struct ares_addr_port_node *s = servers; s != NULL && ok; s = s->next) {
		char txt[INET6_ADDRSTRLEN] = "";
		const void *a = s->family == AF_INET ? (const void *)&s->addr.addr4
						     : (const void *)&s->addr.addr6;
		inet_ntop(s->family, a, txt, sizeof(txt));
		if (!addr_trusted(s->family, a, txt, list)) {
			ok = false;
			snprintf(who, wholen, "%s", txt);
		}
	}
	ares_free_data(servers);
	return ok;
}

bool dns_dnssec_on(const struct dns *d)
{
	return d->dnssec;
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
			dns_entry_free(d->hash[b]);
	while (d->reqs != NULL)
		dns_req_free(d->reqs);
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
		dns_lookup(r->d, type, r->name, r, -1);
		start_queued(r->d);
	} else if (r->kind == REQ_MX) {
		r->u.mx.res->status = DNS_NXDOMAIN;
		strlcpy_x(r->u.mx.res->why, "invalid domain name", sizeof(r->u.mx.res->why));
	} else if (r->kind == REQ_TLSA) {
		r->u.tlsa.status = DNS_NXDOMAIN;
		strlcpy_x(r->u.tlsa.why, "invalid name", sizeof(r->u.tlsa.why));
	} else {
		r->u.txt.status = DNS_NXDOMAIN;
		strlcpy_x(r->u.txt.why, "invalid name", sizeof(r->u.txt.why));
	}
	dns_req_unref(r);
}

void dns_resolve_mx(struct dns *d, const char *domain, dns_mx_fn *cb, void *arg)
{
	struct req *r = dns_req_new(d, REQ_MX, arg);
	r->mx_cb = cb;
	resolve(r, domain, QT_MX);
}

void dns_resolve_addr(struct dns *d, const char *host, dns_mx_fn *cb, void *arg)
{
	struct req *r = dns_req_new(d, REQ_MX, arg);
	r->mx_cb = cb;
	struct dns_mx *m = r->u.mx.res;
	if (!name_norm(host, r->name, sizeof(r->name))) {
		m->status = DNS_NXDOMAIN;
		strlcpy_x(m->why, "invalid host name", sizeof(m->why));
	} else {
		/* The host itself, as for an implicit MX, without asking for MX. */
		dns_mx_hosts(r, 1);
		m = r->u.mx.res;
		m->implicit = 1;
		strlcpy_x(m->hosts[0].name, r->name, sizeof(m->hosts[0].name));
		dns_start_host_lookups(r);
		start_queued(d);
	}
	dns_req_unref(r);
}

void dns_resolve_txt(struct dns *d, const char *name, dns_txt_fn *cb, void *arg)
{
	struct req *r = dns_req_new(d, REQ_TXT, arg);
	r->txt_cb = cb;
	resolve(r, name, QT_TXT);
}

void dns_resolve_tlsa(struct dns *d, const char *name, dns_tlsa_fn *cb, void *arg)
{
	struct req *r = dns_req_new(d, REQ_TLSA, arg);
	r->tlsa_cb = cb;
	resolve(r, name, QT_TLSA);
}

void dns_get_stats(const struct dns *d, struct dns_stats *st)
{
	*st = d->stats;
	st->inflight = d->ninflight;
	st->queued = d->nqueued;
	st->cached = d->ncached;
	st->pending = d->nreqs;
}
