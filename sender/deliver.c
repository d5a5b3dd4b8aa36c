/* deliver.c: one message to the recipients of one domain.
 *
 * resolve MX -> for each MX host (preference order) and each of its addresses:
 * an SMTP session at the domain's TLS level -> per-recipient outcomes.
 *
 * What a failure means is decided here, in one place (Postfix smtp_trouble):
 * - DNS: NXDOMAIN and null MX (RFC 7505) bounce; no address for any MX host
 *   bounces; SERVFAIL/timeouts defer.
 * - Session failures (connect, 4xx/5xx greeting, lost connection, timeout) move
 *   to the next address; recipients a session already decided (RCPT 4xx/5xx)
 *   keep their outcome. When every address has been tried, the remaining
 *   recipients take the class of the last failure.
 * - Opportunistic TLS (`may`) whose handshake fails is retried once on the same
 *   address in plaintext. Required TLS that cannot be had follows the rule's
 *   on_tls_failure: next-mx, defer, hold, bounce (plaintext is not possible
 *   above `may`, so it acts as next-mx there).
 * Ownership: a struct job lives from deliver_submit until req->done returns;
 * its session is handed to QUIT (it frees itself) before we report. */
#include "sender/deliver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/dns.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/msg.h"
#include "sender/smtp.h"
#include "sender/util.h"
#include "tlscache/tlscache.h"

#define MAX_ADDR_TRIES 10
#define POOL_BUCKETS 1024

/* An idle SMTP session parked for reuse, keyed by (MX host, IP, port, TLS
 * level): a connection made under one TLS level only serves that level, so a
 * session made under a weaker verification context never serves a stricter
 * one. Parked sessions report to pool_event; a server that closes or sends
 * 421 while we idle just removes its entry. */
struct idle {
	struct idle *next, **pprev;
	struct deliver *d;
	struct smtp_session *s;
	struct loop_timer t;
	char key[352];
};

struct deliver {
	struct loop *l;
	const struct config *cfg;
	struct deliver_opts o;
	struct dns *dns;
	struct tlscache *tc;
	unsigned active;
	unsigned sessions;
	uint64_t next_id;
	char helo[256];
	struct idle *pool[POOL_BUCKETS];
	unsigned pooled;
	struct deliver_stats st;
};

struct job {
	struct deliver *d;
	struct deliver_req *req;
	uint64_t id;
	uint64_t start;
	struct rule rule;
	enum tls_level level;
	int port;
	struct msg_wire wire;
	bool smtputf8;
	struct dns_mx *mx;
	int host_i, addr_i, tries;
	bool plain_retry;     /* retrying this address without TLS */
	struct smtp_session *sess;
	char key[352];         /* pool key of the current session */
	bool reused;           /* current session came from the pool */
	struct smtp_txn txn;
	struct smtp_result *res;  /* per transaction slot */
	const char **trcpt;   /* recipients of the current transaction */
	int *tidx;            /* their index in req->rcpts */
	bool *reported;
	int nleft;
	/* last attempt, for results */
	char cur_ip[64];
	struct smtp_status last;
	bool have_last;
};

const char *deliver_status_name(enum deliver_status s)
{
	static const char *const n[] = { "delivered", "bounced", "deferred", "held" };
	return s <= DELIVER_HELD ? n[s] : "?";
}

unsigned deliver_active(const struct deliver *d)
{
	return d->active;
}

void deliver_get_stats(const struct deliver *d, struct deliver_stats *st)
{
	*st = d->st;
}

unsigned deliver_sessions(const struct deliver *d)
{
	return d->sessions;
}

struct deliver *deliver_new(struct loop *l, const struct config *c, const struct deliver_opts *o,
			    char *err, size_t errlen)
{
	struct deliver *d = xcalloc(1, sizeof(*d));
	d->l = l;
	d->cfg = c;
	/* session ids for logs: unique per process and engine */
	d->next_id = ((uint64_t)getpid() << 40) ^ ((uint64_t)(uintptr_t)d & 0xffffff0000ull);
	if (o)
		d->o = *o;
	else
		d->o.tls_level = -1;
	strlcpy_x(d->helo, c->helo ? c->helo : "localhost", sizeof(d->helo));
	struct dns_opts dopt = { .servers = d->o.dns ? d->o.dns : c->dns,
				 .timeout_ms = 2000,
				 .tries = 2,
				 .cache_max = 10000 };
	d->dns = dns_new(l, &dopt, err, errlen);
	if (d->dns == NULL)
		goto fail;
	struct tlscache_opts topt = { .ca_file = d->o.ca_file ? d->o.ca_file : c->ca_file,
				      .min_version = c->min_version,
				      .max_sessions = d->o.no_resumption ? 0 : 10000 };
	d->tc = tlscache_new(&topt, err, errlen);
	if (d->tc == NULL)
		goto fail;
	return d;
fail:
	deliver_free(d);
	return NULL;
}

void deliver_free(struct deliver *d)
{
	if (d == NULL)
		return;
	deliver_flush_pool(d);
	dns_free(d->dns);
	tlscache_free(d->tc);
	free(d);
}

static unsigned key_hash(const char *k)
{
	unsigned h = 2166136261u;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h % POOL_BUCKETS;
}

static void pool_unlink(struct idle *e)
{
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	e->d->pooled--;
	loop_timer_stop(e->d->l, &e->t);
}

static void pool_idle_timeout(struct loop_timer *t)
{
	struct idle *e = container_of(t, struct idle, t);
	pool_unlink(e);
	smtp_session_quit(e->s);
	free(e);
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
	free(e);
}

static void pool_put(struct deliver *d, const char *key, struct smtp_session *s)
{
	struct idle *e = xcalloc(1, sizeof(*e));
	e->d = d;
	e->s = s;
	strlcpy_x(e->key, key, sizeof(e->key));
	struct idle **b = &d->pool[key_hash(key)];
	e->next = *b;
	if (*b)
		(*b)->pprev = &e->next;
	e->pprev = b;
	*b = e;
	d->pooled++;
	loop_timer_init(&e->t, pool_idle_timeout);
	loop_timer_arm(d->l, &e->t, d->cfg->idle_timeout_ms);
	smtp_session_set_owner(s, pool_event, e);
}

static struct smtp_session *pool_take(struct deliver *d, const char *key)
{
	for (struct idle *e = d->pool[key_hash(key)]; e; e = e->next) {
		if (strcmp(e->key, key) != 0)
			continue;
		struct smtp_session *s = e->s;
		pool_unlink(e);
		free(e);
		return s;
	}
	return NULL;
}

/* After a transaction: park the session for the next message, or QUIT when it
 * has served its time (reuse_time) or its count (reuse_max). */
static void session_done(struct job *j, struct smtp_session *s)
{
	const struct config *c = j->d->cfg;
	bool young = loop_now(j->d->l) - smtp_session_born(s) < c->reuse_time_ms;
	bool fresh = c->reuse_max == 0 || smtp_session_txns(s) < (unsigned)c->reuse_max;
	if (young && fresh && c->idle_timeout_ms > 0)
		pool_put(j->d, j->key, s);
	else
		smtp_session_quit(s);
}

void deliver_flush_pool(struct deliver *d)
{
	for (unsigned i = 0; i < POOL_BUCKETS; i++)
		while (d->pool[i]) {
			struct idle *e = d->pool[i];
			pool_unlink(e);
			smtp_session_quit(e->s);
			free(e);
		}
}

static void job_free(struct job *j)
{
	msg_wire_fini(&j->wire);
	free(j->mx);
	free(j->res);
	free(j->trcpt);
	free(j->tidx);
	free(j->reported);
	free(j);
}

static void fill_common(struct job *j, struct deliver_result *r)
{
	strlcpy_x(r->policy, tls_level_name(j->level), sizeof(r->policy));
	r->elapsed_ms = (uint32_t)(loop_now(j->d->l) - j->start);
	if (j->mx && j->host_i < j->mx->nhosts && j->have_last) {
		strlcpy_x(r->mx, j->mx->hosts[j->host_i].name, sizeof(r->mx));
		strlcpy_x(r->ip, j->cur_ip, sizeof(r->ip));
		r->port = j->port;
	}
	if (j->have_last && j->last.tls) {
		strlcpy_x(r->tls, j->last.verdict.version, sizeof(r->tls));
		strlcpy_x(r->cipher, j->last.verdict.cipher, sizeof(r->cipher));
		r->verified = j->last.verdict.verified;
		r->resumed = j->last.verdict.resumed;
		r->reused = j->reused;
	} else {
		strlcpy_x(r->tls, "none", sizeof(r->tls));
	}
}

static void report(struct job *j, int idx, enum deliver_status st, int code, const char *dsn,
		   const char *text)
{
	if (j->reported[idx])
		return;
	struct deliver_result r;
	memset(&r, 0, sizeof(r));
	fill_common(j, &r);
	r.status = st;
	r.code = code;
	strlcpy_x(r.dsn, dsn, sizeof(r.dsn));
	strlcpy_x(r.reply, text, sizeof(r.reply));
	j->reported[idx] = true;
	j->nleft--;
	log_info("evt=delivery id=%016llx rcpt=%s status=%s code=%d dsn=%s mx=%s ip=%s port=%d tls=%s "
		 "cipher=%s verified=%s policy=%s reply=\"%s\"",
		 (unsigned long long)j->id, j->req->rcpts[idx], deliver_status_name(st), code, dsn,
		 r.mx[0] ? r.mx : "-", r.ip[0] ? r.ip : "-", r.port, r.tls, r.cipher[0] ? r.cipher : "-",
		 r.verified ? "yes" : "no", r.policy, text);
	j->req->rcpt_done(j->req->arg, idx, &r);
}

static enum deliver_status status_of(enum smtp_class c)
{
	return c == SMTP_OK ? DELIVER_DELIVERED : c == SMTP_TEMP ? DELIVER_DEFERRED : DELIVER_BOUNCED;
}

/* Every remaining recipient gets the same outcome; then the job ends. */
static void finish(struct job *j, enum deliver_status st, int code, const char *dsn, const char *text)
{
	for (int i = 0; i < j->req->nrcpt; i++)
		report(j, i, st, code, dsn, text);
	struct deliver_req *req = j->req;
	j->d->active--;
	job_free(j);
	req->done(req->arg);
}

static void try_next(struct job *j);
static void send_txn(struct job *j, struct smtp_session *s);
static void sess_event(void *arg, struct smtp_session *s, enum smtp_event ev,
		       const struct smtp_status *st);

static void start_session(struct job *j)
{
	struct dns_host *h = &j->mx->hosts[j->host_i];
	struct smtp_params p;
	memset(&p, 0, sizeof(p));
	p.helo = j->d->helo;
	p.mx_host = h->name;
	memcpy(&p.addr, &h->addrs[j->addr_i], sizeof(p.addr));
	if (p.addr.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (void *)&p.addr;
		s4->sin_port = htons((uint16_t)j->port);
		p.addrlen = sizeof(*s4);
		inet_ntop(AF_INET, &s4->sin_addr, j->cur_ip, sizeof(j->cur_ip));
	} else {
		struct sockaddr_in6 *s6 = (void *)&p.addr;
		s6->sin6_port = htons((uint16_t)j->port);
		p.addrlen = sizeof(*s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, j->cur_ip, sizeof(j->cur_ip));
	}
	p.level = j->plain_retry ? TLS_LEVEL_NONE : j->level;
	snprintf(j->key, sizeof(j->key), "%s|%s|%d|%d", h->name, j->cur_ip, j->port, (int)p.level);
	j->have_last = true;
	struct smtp_session *pooled = pool_take(j->d, j->key);
	if (pooled != NULL) {
		j->reused = true;
		j->sess = pooled;
		j->last = *smtp_session_status(pooled);
		j->d->st.reused++;
		smtp_session_set_owner(pooled, sess_event, j);
		send_txn(j, pooled);
		return;
	}
	j->reused = false;
	j->d->st.opened++;
	p.tc = j->d->tc;
	p.to = &j->d->cfg->timeouts;
	p.id = j->id;
	p.live = &j->d->sessions;
	memset(&j->last, 0, sizeof(j->last));
	j->tries++;
	j->sess = smtp_session_new(j->d->l, &p, sess_event, j);
	int r = smtp_session_start(j->sess);
	if (r < 0) {
		smtp_session_free(j->sess);
		j->sess = NULL;
		j->last.fail = SMTP_FAIL_CONNECT;
		j->last.why.cls = SMTP_TEMP;
		j->last.why.code = 451;
		strlcpy_x(j->last.why.esc, "4.4.1", sizeof(j->last.why.esc));
		snprintf(j->last.why.text, sizeof(j->last.why.text), "socket: %s", strerror(-r));
		try_next(j);
	}
}

/* Advance to the next address (or host) and start a session there, or finish
 * with the last failure when nothing is left to try. */
static void try_next(struct job *j)
{
	struct dns_host *h = &j->mx->hosts[j->host_i];
	if (j->plain_retry) {
		/* stays on this address; start_session uses TLS_LEVEL_NONE */
	} else if (j->addr_i + 1 < h->naddrs) {
		j->addr_i++;
	} else if (j->host_i + 1 < j->mx->nhosts) {
		j->host_i++;
		j->addr_i = 0;
	} else {
		j->tries = MAX_ADDR_TRIES;
	}
	if (j->tries >= MAX_ADDR_TRIES) {
		const struct smtp_result *w = &j->last.why;
		finish(j, status_of(w->cls == SMTP_OK ? SMTP_TEMP : w->cls), w->code, w->esc, w->text);
		return;
	}
	start_session(j);
}

/* The recipients not yet decided go into one transaction. */
static void send_txn(struct job *j, struct smtp_session *s)
{
	int n = 0;
	for (int i = 0; i < j->req->nrcpt; i++) {
		if (j->reported[i])
			continue;
		j->trcpt[n] = j->req->rcpts[i];
		j->tidx[n] = i;
		n++;
	}
	j->txn.from = j->req->from;
	j->txn.rcpts = j->trcpt;
	j->txn.nrcpt = n;
	j->txn.wire = &j->wire;
	j->txn.smtputf8_needed = j->smtputf8;
	j->txn.res = j->res;
	smtp_session_send(s, &j->txn);
}

static void sess_event(void *arg, struct smtp_session *s, enum smtp_event ev,
		       const struct smtp_status *st)
{
	struct job *j = arg;
	j->last = *st;
	switch (ev) {
	case SMTP_EV_READY:
		send_txn(j, s);
		return;
	case SMTP_EV_TXN_DONE:
		j->sess = NULL;
		session_done(j, s);
		for (int k = 0; k < j->txn.nrcpt; k++) {
			const struct smtp_result *r = &j->res[k];
			report(j, j->tidx[k], status_of(r->cls), r->code, r->esc, r->text);
		}
		finish(j, DELIVER_DEFERRED, 451, "4.3.0", "internal: recipient left undecided");
		return;
	case SMTP_EV_FAIL:
		break;
	}
	/* Session failure: keep what it decided, then choose the next step. */
	j->sess = NULL;
	smtp_session_free(s);
	if (j->txn.rcpts != NULL) {
		for (int k = 0; k < j->txn.nrcpt; k++) {
			const struct smtp_result *r = &j->res[k];
			if (r->final)
				report(j, j->tidx[k], status_of(r->cls), r->code, r->esc, r->text);
		}
		j->txn.rcpts = NULL;
	}
	if (j->nleft == 0) {
		finish(j, DELIVER_DEFERRED, 451, "4.3.0", "");
		return;
	}
	bool was_plain_retry = j->plain_retry;
	j->plain_retry = false;
	if (st->fail == SMTP_FAIL_TLS_MAY && !was_plain_retry) {
		/* Opportunistic TLS broke: same address, plaintext, once. */
		j->plain_retry = true;
		start_session(j);
		return;
	}
	if (st->fail == SMTP_FAIL_TLS) {
		switch (j->rule.on_tls_failure) {
		case TLS_FAIL_DEFER:
			finish(j, DELIVER_DEFERRED, st->why.code, st->why.esc, st->why.text);
			return;
		case TLS_FAIL_HOLD:
			finish(j, DELIVER_HELD, st->why.code, st->why.esc, st->why.text);
			return;
		case TLS_FAIL_BOUNCE:
			finish(j, DELIVER_BOUNCED, 550, "5.7.10", st->why.text);
			return;
		case TLS_FAIL_NEXT_MX:
		case TLS_FAIL_PLAINTEXT:
			break;
		}
	}
	try_next(j);
}

static void dns_done(void *arg, const struct dns_mx *mx)
{
	struct job *j = arg;
	switch (mx->status) {
	case DNS_OK:
		break;
	case DNS_NXDOMAIN:
		finish(j, DELIVER_BOUNCED, 550, "5.1.2", mx->why[0] ? mx->why : "domain does not exist");
		return;
	case DNS_NULLMX:
		/* RFC 7505 4.1: the domain accepts no mail. */
		finish(j, DELIVER_BOUNCED, 556, "5.1.10", "recipient domain has a null MX (RFC 7505)");
		return;
	case DNS_NODATA:
		finish(j, DELIVER_BOUNCED, 550, "5.4.4", mx->why[0] ? mx->why : "no address for any MX host");
		return;
	case DNS_TEMP:
	default:
		finish(j, DELIVER_DEFERRED, 451, "4.4.3", mx->why[0] ? mx->why : "DNS lookup failed");
		return;
	}
	/* Keep only the hosts in use: the full struct is ~20 KiB, a job with
	 * one MX needs ~1.5 KiB (thousands of jobs are in flight at once). */
	size_t sz = offsetof(struct dns_mx, hosts) + (size_t)mx->nhosts * sizeof(mx->hosts[0]);
	j->mx = xmalloc(sz);
	memcpy(j->mx, mx, sz);
	j->host_i = 0;
	j->addr_i = 0;
	start_session(j);
}

static bool nonascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

int deliver_submit(struct deliver *d, struct deliver_req *req)
{
	if (req->nrcpt <= 0 || req->domain == NULL || req->from == NULL || req->data == NULL ||
	    req->rcpt_done == NULL || req->done == NULL)
		return -EINVAL;
	struct job *j = xcalloc(1, sizeof(*j));
	j->d = d;
	j->req = req;
	j->id = ++d->next_id;
	j->start = loop_now(d->l);
	config_rule_for(d->cfg, req->domain, NULL, &j->rule);
	int lvl = j->rule.tls;
	if (req->tls_min_level > lvl)
		lvl = req->tls_min_level;
	if (d->o.tls_level >= 0)
		lvl = d->o.tls_level;
	j->level = (enum tls_level)lvl;
	j->port = d->o.port > 0 ? d->o.port : j->rule.port;
	msg_wire_prepare(req->data, req->len, false, &j->wire);
	j->smtputf8 = nonascii(req->from);
	for (int i = 0; i < req->nrcpt; i++)
		j->smtputf8 |= nonascii(req->rcpts[i]);
	j->res = xcalloc((size_t)req->nrcpt, sizeof(*j->res));
	j->trcpt = xcalloc((size_t)req->nrcpt, sizeof(*j->trcpt));
	j->tidx = xcalloc((size_t)req->nrcpt, sizeof(*j->tidx));
	j->reported = xcalloc((size_t)req->nrcpt, sizeof(*j->reported));
	j->nleft = req->nrcpt;
	d->active++;
	dns_resolve_mx(d->dns, req->domain, dns_done, j);
	return 0;
}
