/* pool.c: connections of one delivery engine (pool.h states the invariant).
 *
 * Idle sessions and broken-host entries sit in two hash tables of
 * POOL_BUCKETS chains, keyed by strings built with key_put (no snprintf on
 * the path every message takes). Parked sessions report to pool_event; a
 * server that closes or sends 421 while we idle just removes its entry. */
#include "sender/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

#define POOL_BUCKETS 1024
#define SWEEP_MS 100
#define BROKEN_BDAT_MS (60 * 60 * 1000)

/* An idle SMTP session parked for reuse, keyed by (MX host, IP, port, TLS
 * level, ...): a connection made under one TLS level only serves that level,
 * so a session made under a weaker verification context never serves a
 * stricter one. */
struct idle {
	struct idle *next, **pprev;
	struct pool *p;
	struct smtp_session *s;
	struct loop_timer t;
	char key[352];
	char slot[256];  /* the connection slot it holds (MX host) */
};

/* A (host, IP) whose opportunistic TLS handshake failed: `may` deliveries go
 * straight to plaintext there until `until` ([tls] broken_tls_ttl). Keys
 * "bdat|host|ip|port": the host offered CHUNKING and refused BDAT; messages go
 * there with DATA for BROKEN_BDAT_MS. */
struct broken {
	struct broken *next;
	uint64_t until;
	char key[352];
};

struct pool {
	struct loop *l;
	const struct config *cfg;
	struct limits_shared *shared;
	const struct limits_peers *peers;
	bool split;               /* some rule sets max_connections_total */
	struct limits *limits;    /* connection slots, rates, address back-off */
	struct idle *idle[POOL_BUCKETS];
	unsigned pooled;
	struct loop_timer sweep;  /* while connections idle and a shared count exists */
	struct broken *broken[POOL_BUCKETS]; /* hosts whose TLS handshake (or BDAT) failed */
	unsigned broken_bdat;     /* entries "bdat|host|ip|port" made (lookups only then) */
};

static void pool_sweep(struct loop_timer *t);

struct pool *pool_new(struct loop *l, const struct config *cfg, struct limits_shared *shared,
		      const struct limits_peers *peers)
{
	struct pool *p = xcalloc(1, sizeof(*p));
	p->l = l;
	p->cfg = cfg;
	p->shared = shared;
	p->peers = peers;
	p->split = config_rules_set(cfg, RULE_MAX_CONN_TOTAL);
	p->limits = limits_new(l, shared);
	loop_timer_init(&p->sweep, pool_sweep);
	return p;
}

void pool_conn_init(struct pool_conn *c, const char *domain, int prio, limits_wake_fn *fn)
{
	c->domain = domain;
	c->wake = fn;
	c->prio = prio;
}

static void sess_ignore(void *arg, struct smtp_session *s, enum smtp_event ev,
			const struct smtp_status *st)
{
	(void)arg;
	(void)s;
	(void)ev;
	(void)st;
}

void pool_discard(struct smtp_session *s)
{
	smtp_session_set_owner(s, sess_ignore, NULL);
	smtp_session_free(s);
}

static void pool_unlink(struct idle *e);

void pool_abandon(struct pool *p)
{
	if (p == NULL || p->limits == NULL)
		return;
	loop_timer_stop(p->l, &p->sweep);
	for (unsigned i = 0; i < POOL_BUCKETS; i++)
		while (p->idle[i]) {
			struct idle *e = p->idle[i];
			pool_unlink(e);
			pool_discard(e->s);
			free(e);
		}
	limits_free(p->limits);
	p->limits = NULL;
}

void pool_free(struct pool *p)
{
	if (p == NULL)
		return;
	pool_abandon(p);
	for (unsigned i = 0; i < POOL_BUCKETS; i++)
		while (p->broken[i]) {
			struct broken *b = p->broken[i];
			p->broken[i] = b->next;
			free(b);
		}
	free(p);
}

static unsigned key_hash(const char *k)
{
	unsigned h = 2166136261u;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h % POOL_BUCKETS;
}

/* Keys are built with these, not snprintf (pool_get runs once per message):
 * key_put appends s, then v in decimal when v >= 0, truncating at cap as
 * snprintf would; returns the new length. */
static size_t key_put(char *k, size_t cap, size_t n, const char *s, int v)
{
	char digits[16], *d = digits + sizeof(digits);
	*--d = '\0';
	if (v >= 0) {
		unsigned u = (unsigned)v;
		do {
			*--d = (char)('0' + u % 10);
			u /= 10;
		} while (u != 0);
	}
	for (const char *q = s; *q != '\0' && n + 1 < cap; q++)
		k[n++] = *q;
	for (const char *q = d; *q != '\0' && n + 1 < cap; q++)
		k[n++] = *q;
	k[n] = '\0';
	return n;
}

/* "host|ip|port": the address part of the pool key, and the broken-TLS key. */
static size_t addr_key(char *k, size_t cap, const char *host, const char *ip, int port)
{
	size_t n = key_put(k, cap, 0, host, -1);
	n = key_put(k, cap, n, "|", -1);
	n = key_put(k, cap, n, ip, -1);
	return key_put(k, cap, n, "|", port);
}

/* ---- the memory of broken hosts ---- */

static bool broken(struct pool *p, const char *key)
{
	uint64_t now = loop_now(p->l);
	for (struct broken **pp = &p->broken[key_hash(key)]; *pp;) {
		struct broken *b = *pp;
		if (b->until <= now) { /* expired: drop on the way */
			*pp = b->next;
			free(b);
			continue;
		}
		if (strcmp(b->key, key) == 0)
			return true;
		pp = &b->next;
	}
	return false;
}

static void remember_broken(struct pool *p, const char *key, uint64_t ttl_ms)
{
	if (ttl_ms == 0 || broken(p, key))
		return;
	struct broken *b = xcalloc(1, sizeof(*b));
	strlcpy_x(b->key, key, sizeof(b->key));
	b->until = loop_now(p->l) + ttl_ms;
	unsigned h = key_hash(key);
	b->next = p->broken[h];
	p->broken[h] = b;
}

void pool_tls_broken(struct pool *p, const char *host, const char *ip, int port,
		     const char *source)
{
	char bk[352];
	size_t n = addr_key(bk, sizeof(bk), host, ip, port);
	if (source) {
		n = key_put(bk, sizeof(bk), n, "@", -1);
		key_put(bk, sizeof(bk), n, source, -1);
	}
	remember_broken(p, bk, p->cfg->broken_tls_ttl_ms);
}

void pool_bdat_broken(struct pool *p, const char *host, const char *ip, int port)
{
	char bk[360];
	size_t n = key_put(bk, sizeof(bk), 0, "bdat|", -1);
	addr_key(bk + n, sizeof(bk) - n, host, ip, port);
	if (!broken(p, bk)) {
		remember_broken(p, bk, BROKEN_BDAT_MS);
		p->broken_bdat++;
	}
}

/* ---- idle connections ---- */

static void pool_unlink(struct idle *e)
{
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	e->p->pooled--;
	loop_timer_stop(e->p->l, &e->t);
}

/* A session ended by QUIT is closed and gone: its connection slot (the MX
 * host: smtp_params.mx_host is the slot key) is free again. */
static void slot_gone(void *arg, const char *mx_host)
{
	struct pool *p = arg;
	if (p->limits) /* NULL: the engine is settling its last sessions */
		limits_slot_release(p->limits, mx_host);
}

/* Close idle connection e: QUIT; its slot is free once the server closed. */
static void pool_close(struct idle *e)
{
	pool_unlink(e);
	smtp_session_quit_notify(e->s, slot_gone, e->p);
	free(e);
}

static void pool_idle_timeout(struct loop_timer *t)
{
	pool_close(container_of(t, struct idle, t));
}

/* Another worker's jobs wait for a host this one keeps idle connections to
 * (the process-wide max_connections): close them (limits_slot_yield). Runs
 * every SWEEP_MS while connections idle; walks the pool only while some
 * worker waits. */
static void pool_sweep(struct loop_timer *t)
{
	struct pool *p = container_of(t, struct pool, sweep);
	if (limits_shared_wanting(p->shared) > 0)
		for (unsigned i = 0; i < POOL_BUCKETS; i++)
			for (struct idle *e = p->idle[i], *next; e; e = next) {
				next = e->next;
				if (limits_slot_yield(p->limits, e->slot))
					pool_close(e);
			}
	if (p->pooled > 0)
		loop_timer_arm(p->l, t, SWEEP_MS);
}

static void pool_event(void *arg, struct smtp_session *s, enum smtp_event ev,
		       const struct smtp_status *st)
{
	struct idle *e = arg;
	(void)st;
	if (ev != SMTP_EV_FAIL) /* a parked session has no transaction */
		log_panic("evt=pool_unexpected_event ev=%d", (int)ev);
	pool_unlink(e);
	smtp_session_free(s);
	limits_slot_release(e->p->limits, e->slot);
	free(e);
}

static void pool_put(struct pool *p, const char *key, const char *slot, struct smtp_session *s)
{
	struct idle *e = xcalloc(1, sizeof(*e));
	e->p = p;
	e->s = s;
	strlcpy_x(e->key, key, sizeof(e->key));
	strlcpy_x(e->slot, slot, sizeof(e->slot));
	struct idle **b = &p->idle[key_hash(key)];
	e->next = *b;
	if (*b)
		(*b)->pprev = &e->next;
	e->pprev = b;
	*b = e;
	p->pooled++;
	loop_timer_init(&e->t, pool_idle_timeout);
	loop_timer_arm(p->l, &e->t, p->cfg->idle_timeout_ms);
	if (p->shared && !loop_timer_armed(&p->sweep))
		loop_timer_arm(p->l, &p->sweep, SWEEP_MS);
	smtp_session_set_owner(s, pool_event, e);
}

static struct smtp_session *pool_take(struct pool *p, const char *key, char *slot, size_t slotlen)
{
	for (struct idle *e = p->idle[key_hash(key)]; e; e = e->next) {
		if (strcmp(e->key, key) != 0)
			continue;
		struct smtp_session *s = e->s;
		strlcpy_x(slot, e->slot, slotlen);
		pool_unlink(e);
		free(e);
		return s;
	}
	return NULL;
}

/* Close one idle connection holding a slot for MX host `slot`, so a job
 * that needs a connection of another kind there can open one. */
static bool pool_evict_slot(struct pool *p, const char *slot)
{
	if (p->pooled == 0)
		return false;
	for (unsigned i = 0; i < POOL_BUCKETS; i++)
		for (struct idle *e = p->idle[i]; e; e = e->next) {
			if (strcmp(e->slot, slot) != 0)
				continue;
			pool_close(e);
			return true;
		}
	return false;
}

void pool_flush(struct pool *p)
{
	for (unsigned i = 0; i < POOL_BUCKETS; i++)
		while (p->idle[i])
			pool_close(p->idle[i]);
}

/* ---- reuse rules and slots ---- */

/* Connections this process may have open to MX host `host` for `domain`:
 * the rule's max_connections, or less: this process's share of the rule's
 * max_connections_total (*total, 0 if none). 0: none now (the others hold
 * them all). */
static int conn_max(const struct pool *p, const char *domain, const char *host, int *total)
{
	struct rule mr;
	config_rule_for(p->cfg, domain, host, &mr);
	*total = mr.max_connections_total;
	if (*total <= 0)
		return mr.max_connections;
	int share = limits_peers_share(p->peers, *total);
	return share < mr.max_connections ? share : mr.max_connections;
}

/* Not past its time (reuse_time) or count (reuse_max), nor when idle
 * connections are not kept. deliver.c asks before the last transaction (to
 * pipeline QUIT), pool_done after it. */
bool pool_reusable(const struct pool *p, struct smtp_session *s, unsigned txns)
{
	const struct config *c = p->cfg;
	bool young = loop_now(p->l) - smtp_session_born(s) < c->reuse_time_ms;
	bool fresh = c->reuse_max == 0 || txns < (unsigned)c->reuse_max;
	return young && fresh && c->idle_timeout_ms > 0;
}

/* The MX host of slot key "host" or "host@source" (host names hold no '@'). */
static const char *slot_host(const char *slot, char *buf, size_t len)
{
	const char *at = strchr(slot, '@');
	if (at == NULL)
		return slot;
	snprintf(buf, len, "%.*s", (int)(at - slot), slot);
	return buf;
}

void pool_done(struct pool *p, struct pool_conn *c, struct smtp_session *s, bool last)
{
	int total;
	char hb[256];
	if (!last && pool_reusable(p, s, smtp_session_txns(s)) &&
	    !limits_slot_yield(p->limits, c->slot) &&
	    (c->max_msgs <= 0 || smtp_session_txns(s) < (unsigned)c->max_msgs) &&
	    (c->shape_max <= 0 || limits_slots_process(p->limits, c->slot) <= c->shape_max) &&
	    (!p->split || /* our share of max_connections_total may have shrunk */
	     limits_slots_process(p->limits, c->slot) <=
		     conn_max(p, c->domain, slot_host(c->slot, hb, sizeof(hb)), &total))) {
		pool_put(p, c->key, c->slot, s);
		limits_slot_kick(p->limits, c->slot); /* a waiter may take it */
	} else {
		smtp_session_quit_notify(s, slot_gone, p);
	}
	c->slot[0] = '\0';
}

void pool_drop(struct pool *p, struct pool_conn *c, struct smtp_session *s)
{
	if (s)
		smtp_session_free(s);
	if (c->slot[0]) {
		limits_slot_release(p->limits, c->slot);
		c->slot[0] = '\0';
	}
}

/* ---- the decision ---- */

enum pool_got pool_get(struct pool *p, struct pool_conn *c, const char *ip, int port,
		       struct smtp_params *sp, bool *no_bdat, struct smtp_session **reused,
		       char *why, size_t whylen)
{
	const char *host = sp->mx_host;
	size_t kn = addr_key(c->key, sizeof(c->key), host, ip, port);
	/* a host known to refuse BDAT (whichever source saw it): DATA, on a
	 * pooled connection too */
	if (p->broken_bdat > 0 && !*no_bdat) {
		char bk[360];
		key_put(bk, sizeof(bk), key_put(bk, sizeof(bk), 0, "bdat|", -1), c->key, -1);
		*no_bdat = broken(p, bk);
	}
	if (sp->source) { /* an egress source: its own connections, TLS memory, slots */
		kn = key_put(c->key, sizeof(c->key), kn, "@", -1);
		kn = key_put(c->key, sizeof(c->key), kn, sp->source->name, -1);
	}
	/* a host known to break TLS: opportunistic delivery goes plaintext */
	if (sp->level == TLS_LEVEL_MAY && broken(p, c->key))
		sp->level = TLS_LEVEL_NONE;
	/* the pool key: address, TLS level and minimum version, and the user:
	 * authenticated sessions serve only the same credentials */
	kn = key_put(c->key, sizeof(c->key), kn, "|", (int)sp->level);
	kn = key_put(c->key, sizeof(c->key), kn, "|", sp->min_tls);
	if (sp->dane) /* DANE: reuse only within the same TLSA context */
		kn = key_put(c->key, sizeof(c->key), key_put(c->key, sizeof(c->key), kn, "|", -1),
			     sp->dane->tag, -1);
	kn = key_put(c->key, sizeof(c->key), kn, sp->auth_insecure ? "|!" : "|", -1);
	key_put(c->key, sizeof(c->key), kn, sp->auth_user ? sp->auth_user : "", -1);
	*reused = pool_take(p, c->key, c->slot, sizeof(c->slot));
	if (*reused != NULL)
		return POOL_REUSED;
	/* An address that keeps failing is backed off, not hammered. */
	char addr[128];
	snprintf(addr, sizeof(addr), "%s:%d", ip, port);
	if (limits_addr_down(p->limits, addr)) {
		snprintf(why, whylen, "%s backed off after repeated connection failures", addr);
		return POOL_DOWN;
	}
	/* Connection slots per MX host ([domain]/[mx] max_connections, and this
	 * process's share of max_connections_total). */
	int total, max = conn_max(p, c->domain, host, &total);
	if (max == 0) {
		snprintf(why, whylen, "%s: the other mxsend processes hold all of its "
			 "max_connections_total (%d)", host, total);
		return POOL_NO_SHARE;
	}
	const char *slot = host;
	char sslot[256];
	if (sp->source) { /* max_connections per (source, MX host), as receivers count */
		key_put(sslot, sizeof(sslot), key_put(sslot, sizeof(sslot), 0, host, -1), "@", -1);
		key_put(sslot, sizeof(sslot), strlen(sslot), sp->source->name, -1);
		slot = sslot;
	}
	if (c->shape_max > 0) { /* the (source, provider) budget, over all its MX hosts */
		slot = c->shape_slot;
		max = c->shape_max;
	}
	if (!limits_slot_take(p->limits, slot, max) &&
	    !(pool_evict_slot(p, slot) && limits_slot_take(p->limits, slot, max))) {
		c->waiter.prio = c->prio;
		limits_slot_wait(p->limits, slot, &c->waiter, c->wake);
		return POOL_WAIT;
	}
	strlcpy_x(c->slot, slot, sizeof(c->slot));
	sp->slot = sp->source || c->shape_max > 0 ? c->slot : NULL;
	return POOL_OPEN;
}

void pool_addr_result(struct pool *p, const char *ip, int port, bool ok)
{
	char addr[128];
	snprintf(addr, sizeof(addr), "%s:%d", ip, port);
	limits_addr_result(p->limits, addr, ok);
}

uint64_t pool_rate_delay(struct pool *p, const char *domain, double per_sec)
{
	return limits_rate_delay(p->limits, domain, per_sec);
}
