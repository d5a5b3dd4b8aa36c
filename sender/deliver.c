/* deliver.c: one message to the recipients of one domain.
 *
 * resolve MX -> for each MX host (preference order) and each of its addresses:
 * an SMTP session at the domain's TLS level -> per-recipient outcomes
 * (struct job_outcome, made and logged once, in report()).
 *
 * The route: route() picks the MX hosts (MTA-STS) and paces the domain,
 * try_next the next address, and for that address pool_get (pool.h) decides
 * the connection: a pooled one, a new one in a free slot, a wait for a slot,
 * or none (backed off). Connections, their slots and reuse are pool.c's.
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
 * - A server that offers CHUNKING and refuses BDAT (500/502/504) gets the
 *   message again on the same address with DATA; the host is remembered.
 * - A session whose replies went out of step (smtp_txn.c) decided nothing: its
 *   recipients go on to the next address, or are deferred.
 * Ownership: a struct job lives from deliver_submit until req->done returns;
 * its session is handed to QUIT (it frees itself) before we report. */
#include "sender/deliver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/bclass.h"
#include "sender/dns.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/metrics.h"
#include "sender/msg.h"
#include "sender/pool.h"
#include "sender/shaping.h"
#include "sender/smtp.h"
#include "sender/policy/dane.h"
#include "sender/policy/stspol.h"
#include "sender/policy/tlspolicy.h"
#include "sender/tls.h"
#include "sender/util.h"
#include "tlscache/sts.h"
#include "tlscache/tlsrpt.h"
#include "tlscache/tlscache.h"

#define MAX_ADDR_TRIES 10

struct deliver {
	struct loop *l;
	const struct config *cfg;
	struct deliver_opts o;
	struct dns *dns;
	struct tlscache *tc;
	unsigned active;
	struct job *jobs; /* every job not yet freed */
	bool abandoned;   /* deliver_abandon ran */
	unsigned sessions;
	struct smtp_session *all; /* every live session (smtp_sessions_close at exit) */
	uint64_t next_id;
	char helo[256];
	struct pool *pool;        /* connections, their slots, reuse, broken hosts */
	struct deliver_stats st;
	struct stspol *sts;       /* NULL when [tls] mta_sts = no */
	struct loop_timer quiesce; /* deliver_quiesce */
	uint64_t quiesce_until;
	deliver_done_fn *quiesce_done;
	void *quiesce_arg;
	/* egress sources (config sources; none: no bind, [mxsend] helo): smooth
	 * weighted round-robin state per pool (pools[n_pools]: every source,
	 * weight 1), and the sources whose address went away */
	int **wrr;
	bool *src_down;
};

struct job_dane {
	struct dane_host h;
	struct dane_lookup lk;
};

struct job {
	struct deliver *d;
	struct job *prev, *next; /* d->jobs: deliver_abandon drops those left */
	struct deliver_req *req;
	uint64_t id;
	uint64_t start;
	struct rule rule;
	struct tlspolicy tls; /* level, on TLS failure, result name (tlspolicy.h) */
	int port;
	struct msg_wire wire;
	bool smtputf8;
	struct dns_mx *mx;
	int host_i, addr_i, tries;
	bool plain_retry;     /* retrying this address without TLS */
	bool no_bdat;         /* DATA, not BDAT: the server refused BDAT */
	struct smtp_session *sess;
	struct pool_conn conn; /* key and slot of the current session (pool.h) */
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
	/* routing inputs, joined before the first session */
	int waiting;          /* answers still to come: MX, MTA-STS */
	struct dns_mx *mx_pending;
	struct sts_policy pol; /* MTA-STS policy in force (copied) */
	bool has_pol;
	struct loop_timer rate_timer;
	struct loop_task lit_task; /* relay given as an IP literal: no DNS */
	int pool_i;           /* egress pool (config pools index; n_pools: every source) */
	/* DANE (policy/dane.h): what the TLSA records of MX host dane_for (-1:
	 * none yet) demand, looked up before its first session; allocated only
	 * when the resolver gives DNSSEC answers (most jobs never need it) */
	struct job_dane *dane;
	int dane_for;
	const struct source *src; /* this attempt's egress source, NULL: none */
	/* shaping (shaping.h): the (source, provider) pair of the first MX host,
	 * -1 none; the domain's max_rate passed (rate_timer then waits for the
	 * pair's); what delayed it; whether a rule acted on this job's replies
	 * already (once per job) */
	int shape_pair;
	bool domain_rate_ok;
	char shaped[160];
	bool shape_acted;
	bool shape_booked;    /* a send time was booked: go when rate_timer fires */
	bool shape_waiting;   /* counted among the pair's waiters (shaping_admit) */
	bool warm_done;       /* its source passed the warm-up budget (warm_source) */
	uint64_t shape_not_before; /* finish_shaped: wall ms it may be tried again */
};

unsigned deliver_active(const struct deliver *d)
{
	return d->active;
}

void deliver_get_stats(const struct deliver *d, struct deliver_stats *st)
{
	*st = d->st;
	struct tlscache_stats ts;
	tlscache_get_stats(d->tc, &ts);
	st->chains_verified = ts.verify_misses;
	st->chains_cached = ts.verify_hits;
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
				 /* Queries in flight per worker. A resolver with default
				  * socket buffers (unbound: 208 KB, about 200 queries) drops
				  * a burst of 1,000: the demo lost 287 queries a run and
				  * sometimes 2,000 deliveries to c-ares timeouts (both tries
				  * of a burst dropped). Lookups past the cap wait in order. */
				 .max_inflight = 128,
				 .cache_max = 10000,
				 .dnssec = (enum dns_dnssec)c->dane,
				 .trusted = c->dnssec_trusted };
	d->dns = dns_new(l, &dopt, err, errlen);
	if (d->dns == NULL)
		goto fail;
	struct tlscache_opts topt = { .ca_file = d->o.ca_file ? d->o.ca_file : c->ca_file,
				      .min_version = c->min_version,
				      .max_sessions = d->o.no_resumption ? 0 : 10000,
				      .verify_cache = d->o.no_verify_cache ? 0 : 1024 };
	d->tc = tlscache_new(&topt, err, errlen);
	if (d->tc == NULL)
		goto fail;
	d->pool = pool_new(l, c, d->o.limits_shared, d->o.peers);
	if (c->n_sources > 0) {
		d->wrr = xcalloc((size_t)c->n_pools + 1, sizeof(*d->wrr));
		for (int i = 0; i <= c->n_pools; i++)
			d->wrr[i] = xcalloc((size_t)c->n_sources, sizeof(int));
		d->src_down = xcalloc((size_t)c->n_sources, sizeof(bool));
	}
	if (c->mta_sts) {
		struct stspol_opts so = { .https_port = d->o.sts_https_port ? d->o.sts_https_port
								    : c->sts_https_port,
					  .on_store = d->o.on_sts_store,
					  .store_arg = d->o.on_sts_store_arg,
					  .metrics = d->o.metrics_shard };
		d->sts = stspol_new(l, d->dns, d->tc, &so);
	}
	return d;
fail:
	deliver_free(d);
	return NULL;
}

static void job_free(struct job *j);

void deliver_abandon(struct deliver *d)
{
	if (d == NULL || d->abandoned)
		return;
	d->abandoned = true;
	if (d->quiesce_done)
		loop_timer_stop(d->l, &d->quiesce);
	/* Exit: idle sessions and the sessions of jobs still running are closed
	 * at once, without a QUIT; the jobs are dropped without callbacks (the
	 * host gave up on them). Nothing may reach a job once it is freed: the
	 * pool (its limits: slot waiters), the MTA-STS lookups and DNS (their callbacks)
	 * go first. */
	pool_abandon(d->pool);
	for (struct job *j = d->jobs; j != NULL; j = j->next) {
		loop_timer_stop(d->l, &j->rate_timer);
		loop_task_cancel(d->l, &j->lit_task);
		if (j->sess) {
			pool_discard(j->sess);
			j->sess = NULL;
		}
	}
	stspol_free(d->sts);
	d->sts = NULL;
	dns_free(d->dns);
	d->dns = NULL;
	while (d->jobs) {
		d->active--;
		job_free(d->jobs);
	}
	/* Sessions handed back for QUIT are nobody's: a server that never
	 * answers it must not keep them past this point. */
	smtp_sessions_close(d->all);
	/* The sessions' own teardown (a deferred task each) counts them down
	 * in d->sessions: d stays until it has run. */
	if (d->sessions > 0 && loop_drain(d->l, 2000) != 0 && d->sessions > 0)
		log_warn("evt=deliver_abandon_sessions_left n=%u", d->sessions);
}

void deliver_free(struct deliver *d)
{
	if (d == NULL)
		return;
	deliver_abandon(d);
	if (d->sessions > 0)
		return; /* at exit: a leak rather than a use after free */
	pool_free(d->pool);
	tlscache_free(d->tc);
	for (int i = 0; d->wrr && i <= d->cfg->n_pools; i++)
		free(d->wrr[i]);
	free(d->wrr);
	free(d->src_down);
	free(d);
}

static void quiesce_tick(struct loop_timer *t)
{
	struct deliver *d = container_of(t, struct deliver, quiesce);
	uint64_t now = loop_now(d->l);
	if (d->sessions == 0 || now >= d->quiesce_until) {
		deliver_done_fn *done = d->quiesce_done;
		d->quiesce_done = NULL;
		done(d->quiesce_arg);
	} else {
		loop_timer_arm(d->l, t, d->quiesce_until - now);
	}
}

/* The last session ended (smtp_params.live_zero): a quiesce waiting for it is
 * done now, not at its deadline. Through the timer: never inside the session's
 * own teardown. */
static void sessions_zero(void *arg)
{
	struct deliver *d = arg;
	if (d->quiesce_done)
		loop_timer_arm(d->l, &d->quiesce, 0);
}

void deliver_quiesce(struct deliver *d, uint32_t grace_ms, deliver_done_fn *done, void *arg)
{
	deliver_flush_pool(d);
	d->quiesce_until = loop_now(d->l) + grace_ms;
	d->quiesce_done = done;
	d->quiesce_arg = arg;
	loop_timer_init(&d->quiesce, quiesce_tick);
	loop_timer_arm(d->l, &d->quiesce, 0);
}

void deliver_flush_pool(struct deliver *d)
{
	pool_flush(d->pool);
}

void deliver_sts_load(struct deliver *d, const char *domain, const char *encoded)
{
	if (d->sts)
		stspol_load(d->sts, domain, encoded);
}

static void job_free(struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		j->d->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	if (j->has_pol)
		sts_policy_fini(&j->pol);
	shaping_unwait(j->d->o.shaping, j->shape_pair, &j->shape_waiting);
	if (j->dane) {
		dane_host_fini(&j->dane->h);
		free(j->dane);
	}
	free(j->mx_pending);
	msg_wire_fini(&j->wire);
	free(j->mx);
	free(j->res);
	free(j->trcpt);
	free(j->tidx);
	free(j->reported);
	free(j);
}

/* The current MX host's DANE state, once known (NULL: not yet, or no DNSSEC). */
static const struct dane_host *dane_known(const struct job *j)
{
	return j->dane != NULL && j->dane_for >= 0 && j->dane_for == j->host_i ? &j->dane->h : NULL;
}

/* ... when DANE decides its TLS. */
static const struct dane_host *dane_cur(const struct job *j)
{
	const struct dane_host *h = dane_known(j);
	return h && (h->mode == DANE_AUTH || h->mode == DANE_UNUSABLE) ? h : NULL;
}

/* What the current MX host requires (tlspolicy.h): the domain's policy,
 * unless DANE decides for the host. */
static void host_policy(const struct job *j, struct tlspolicy *hp)
{
	const struct dane_host *h = dane_known(j);
	tlspolicy_host(hp, &j->tls, h ? (int)h->mode : DANE_NONE);
}

static void fill_common(struct job *j, struct job_outcome *r)
{
	struct tlspolicy hp;
	host_policy(j, &hp);
	strlcpy_x(r->policy, hp.name, sizeof(r->policy));
	if (j->src)
		strlcpy_x(r->source, j->src->label, sizeof(r->source));
	r->elapsed_ms = (uint32_t)(loop_now(j->d->l) - j->start);
	if (j->mx && j->host_i < j->mx->nhosts && j->have_last) {
		strlcpy_x(r->mx, j->mx->hosts[j->host_i].name, sizeof(r->mx));
		strlcpy_x(r->ip, j->cur_ip, sizeof(r->ip));
		r->port = j->port;
	}
	/* A handshake that reached the server's certificate and failed there
	 * (verify) reports the version negotiated, verified=no: never "none",
	 * which would read as plaintext. */
	if (j->have_last && (j->last.tls || (j->last.tls_tried && j->last.verdict.have_cert))) {
		strlcpy_x(r->tls, j->last.verdict.version, sizeof(r->tls));
		strlcpy_x(r->cipher, j->last.verdict.cipher, sizeof(r->cipher));
		r->verified = j->last.verdict.verified;
		r->resumed = j->last.verdict.resumed;
		r->reused = j->reused;
	} else {
		strlcpy_x(r->tls, "none", sizeof(r->tls));
	}
}

/* The pair of the address being tried (its MX host's provider), -1 none. */
static int cur_pair(const struct job *j)
{
	struct shaping *sh = j->d->o.shaping;
	if (sh == NULL || j->mx == NULL || j->host_i >= j->mx->nhosts)
		return j->shape_pair;
	int prov = shaping_provider(sh, j->mx->hosts[j->host_i].name);
	return shaping_pair(sh, j->src ? (int)(j->src - j->d->cfg->sources) : -1, prov);
}

/* What shaping makes of a reply: a good one counts for the pair (AIMD adds
 * back); a failure that a [response] rule matches may change its status
 * (reclassify), preset its class (unless the caller has one), and act on the pair (throttle, suspend:
 * once per job). Returns the status. */
static enum job_status shape_reply(struct job *j, enum job_status st, int code, const char *dsn,
				   const char *text, unsigned *preset)
{
	struct shaping *sh = j->d->o.shaping;
	int pair = cur_pair(j);
	if (st == JOB_DELIVERED) {
		shaping_ok(sh, pair);
		return st;
	}
	struct shape_match m;
	if (!shaping_match(sh, pair, code, dsn, text, &m))
		return st;
	metrics_shape_match(j->d->o.metrics_shard, m.rule, shaping_pair_prov(sh, pair), 1);
	int c = m.class_name ? bclass_parse(m.class_name) : -1; /* checked by the config */
	if (c > 0 && *preset == 0)
		*preset = (unsigned)c;
	if ((m.action == SHAPE_ACT_TEMP || m.action == SHAPE_ACT_SUSPEND) && st == JOB_BOUNCED)
		st = JOB_DEFERRED; /* a suspension's mail waits for its end, never bounces */
	else if (m.action == SHAPE_ACT_PERM && st == JOB_DEFERRED)
		st = JOB_BOUNCED;
	if (!j->shape_acted && (m.action == SHAPE_ACT_THROTTLE || m.action == SHAPE_ACT_SUSPEND)) {
		j->shape_acted = true;
		shaping_act(sh, pair, &m, j->shaped, sizeof(j->shaped));
		if (pair >= 0)
			log_info("evt=shaping_%s rule=%s source=%s provider=%s code=%d dsn=%s state=\"%s\"",
				 m.action == SHAPE_ACT_THROTTLE ? "throttle" : "suspend", m.name,
				 shaping_pair_source(sh, pair), shaping_pair_provider(sh, pair), code,
				 dsn && dsn[0] ? dsn : "-", j->shaped);
	} else if (!j->shaped[0] && m.action != SHAPE_ACT_NONE) {
		snprintf(j->shaped, sizeof(j->shaped), "%s:%s", m.name,
			 m.action == SHAPE_ACT_TEMP ? "reclassify temporary"
			 : m.action == SHAPE_ACT_PERM ? "reclassify permanent"
			 : m.action == SHAPE_ACT_THROTTLE ? "throttle" : "suspend");
	}
	return st;
}

/* origin: where a failure came from (bclass.h); preset: the class a response
 * rule gave the reply (smtp_result.bclass), 0: classify it here. Only failures
 * are classified (a delivered recipient costs nothing). */
static void report(struct job *j, int idx, enum job_status st, int code, const char *dsn,
		   const char *text, enum bclass_origin origin, unsigned preset)
{
	if (j->reported[idx])
		return;
	struct job_outcome r;
	memset(&r, 0, sizeof(r));
	fill_common(j, &r);
	if (j->shape_not_before > 0)
		r.not_before_ms = j->shape_not_before;
	else if (j->d->o.shaping && st != JOB_HELD)
		st = shape_reply(j, st, code, dsn, text, &preset);
	strlcpy_x(r.shaped, j->shaped, sizeof(r.shaped));
	r.status = st;
	r.code = code;
	strlcpy_x(r.dsn, dsn, sizeof(r.dsn));
	strlcpy_x(r.reply, text, sizeof(r.reply));
	if (st == JOB_BOUNCED || st == JOB_DEFERRED) {
		enum bclass c = preset > BCLASS_NONE && preset < BCLASS_N
					? (enum bclass)preset
					: bclass_classify(j->d->cfg->classes, code, dsn, text, origin);
		strlcpy_x(r.cls, bclass_name(c), sizeof(r.cls));
		metrics_bclass(j->d->o.metrics_shard, st == JOB_BOUNCED, (int)c);
	}
	j->reported[idx] = true;
	j->nleft--;
	/* The one log line of an outcome. Recipient and reply escaped (log.h);
	 * the caller's tag (the queue's job, id and attempt) comes escaped. */
	if (log_enabled(LOG_INFO)) {
		char qrcpt[640], qreply[sizeof(r.reply) * 2];
		const char *tag = j->req->log_tag;
		log_info("evt=delivery id=%016llx %s%srcpt=\"%s\" status=%s code=%d dsn=%s mx=%s ip=%s "
			 "port=%d tls=%s cipher=%s verified=%s policy=%s reply=\"%s\"%s%s",
			 (unsigned long long)j->id, tag ? tag : "", tag ? " " : "",
			 log_q(qrcpt, sizeof(qrcpt), j->req->rcpts[idx]),
			 job_status_name(st), code, dsn, r.mx[0] ? r.mx : "-", r.ip[0] ? r.ip : "-",
			 r.port, r.tls, r.cipher[0] ? r.cipher : "-", r.verified ? "yes" : "no", r.policy,
			 log_q(qreply, sizeof(qreply), r.reply), r.cls[0] ? " class=" : "", r.cls);
	}
	j->req->rcpt_done(j->req->arg, idx, &r);
}

static enum job_status status_of(enum smtp_class c)
{
	return c == SMTP_OK ? JOB_DELIVERED : c == SMTP_TEMP ? JOB_DEFERRED : JOB_BOUNCED;
}

/* Where a session's failure came from: the server's reply, or mxsend's side
 * of the connection (a 421 is the server's; other LOST codes are ours). */
static enum bclass_origin origin_of(const struct smtp_status *st)
{
	if (st->timed_out)
		return BCLASS_O_TIMEOUT;
	switch (st->fail) {
	case SMTP_FAIL_CONNECT:
		return BCLASS_O_CONNECT;
	case SMTP_FAIL_TLS:
	case SMTP_FAIL_TLS_MAY:
		return BCLASS_O_TLS;
	case SMTP_FAIL_GREETING:
		return BCLASS_O_REPLY;
	case SMTP_FAIL_LOST:
	default:
		return st->why.code == 451 ? BCLASS_O_CONNECT : BCLASS_O_REPLY;
	}
}

/* Every remaining recipient gets the same outcome; then the job ends. */
static void finish(struct job *j, enum job_status st, int code, const char *dsn, const char *text,
		   enum bclass_origin origin, unsigned preset)
{
	for (int i = 0; i < j->req->nrcpt; i++)
		report(j, i, st, code, dsn, text, origin, preset);
	struct deliver_req *req = j->req;
	j->d->active--;
	job_free(j);
	req->done(req->arg);
}

static void try_next(struct job *j);
static void send_txn(struct job *j, struct smtp_session *s);

/* Shaping holds the job back without an attempt (a suspension, or a rate
 * wait past max_wait): every recipient is deferred until `until` (wall ms),
 * using up no retry (queue_commit.c). */
static void finish_shaped(struct job *j, uint64_t until, const char *why,
			  enum metrics_shape_defer reason)
{
	char text[256];
	metrics_shape_defer(j->d->o.metrics_shard, shaping_pair_prov(j->d->o.shaping, j->shape_pair),
			    reason, (unsigned)j->nleft);
	j->shape_not_before = until > 0 ? until : 1;
	strlcpy_x(j->shaped, why, sizeof(j->shaped));
	snprintf(text, sizeof(text), "held back by shaping (%s)", why);
	/* mxsend's own pacing: classed rate-limited, whatever the reply that
	 * started it was (that job's result carries its class) */
	finish(j, JOB_DEFERRED, 451, "4.4.5", text, BCLASS_O_INTERNAL, BCLASS_RATE_LIMITED);
}

/* This address cannot be tried now: a temporary failure (451 esc, text from
 * fmt) becomes the job's last one, and the next address is tried. */
static void skip_fail(struct job *j, enum smtp_fail fail, const char *esc, const char *text)
{
	memset(&j->last, 0, sizeof(j->last));
	j->last.fail = fail; /* the bounce class if it ends the job (origin_of) */
	j->last.why.cls = SMTP_TEMP;
	j->last.why.code = 451;
	strlcpy_x(j->last.why.esc, esc, sizeof(j->last.why.esc));
	strlcpy_x(j->last.why.text, text, sizeof(j->last.why.text));
	try_next(j);
}

static void __attribute__((format(printf, 3, 4))) skip_addr(struct job *j, const char *esc,
							    const char *fmt, ...)
{
	char text[sizeof(j->last.why.text)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	skip_fail(j, SMTP_FAIL_CONNECT, esc, text);
}

static void sess_event(void *arg, struct smtp_session *s, enum smtp_event ev,
		       const struct smtp_status *st);

/* TLSRPT (RFC 8460): one event per TLS session attempt. With a policy, a
 * session succeeds only with verified TLS to an MX the policy names; without
 * one, when TLS was negotiated at all. */
static void tls_event(struct job *j, const char *mx, const char *ip, const char *result,
		      const char *detail)
{
	struct deliver *d = j->d;
	if (d->o.on_tls == NULL)
		return;
	struct tls_event ev;
	memset(&ev, 0, sizeof(ev));
	tlsrpt_event_policy(&ev, j->req->domain, j->has_pol ? &j->pol : NULL);
	/* RFC 8460 4.2: a DANE host's sessions count under its TLSA policy,
	 * the records as policy strings */
	const struct dane_host *dh = dane_known(j);
	if (mx != NULL && dh != NULL && dh->mode != DANE_NONE) {
		strlcpy_x(ev.policy_type, "tlsa", sizeof(ev.policy_type));
		strlcpy_x(ev.policy_id, dh->tls.tag[0] ? dh->tls.tag + 5 : "",
			  sizeof(ev.policy_id)); /* the hex of "dane-HEX" */
		ev.policy_mode[0] = '\0';
		ev.max_age = 0;
		dane_policy_strings(dh, ",", ev.policy_mx, sizeof(ev.policy_mx));
	}
	strlcpy_x(ev.mx, mx ? mx : "", sizeof(ev.mx));
	strlcpy_x(ev.ip, ip ? ip : "", sizeof(ev.ip));
	strlcpy_x(ev.result, result ? result : "", sizeof(ev.result));
	strlcpy_x(ev.detail, detail ? detail : "", sizeof(ev.detail));
	if (j->src) /* RFC 8460 4.4 sending-mta-ip: the egress source's address */
		strlcpy_x(ev.sending_ip, j->src->address, sizeof(ev.sending_ip));
	ev.when_ms = wall_ms();
	d->o.on_tls(d->o.on_tls_arg, &ev);
}

/* The TLSRPT verdict on a new session that reached READY. */
static void tls_event_ready(struct job *j, const struct smtp_status *st, enum tls_level lvl)
{
	const char *mx = j->mx->hosts[j->host_i].name;
	if (dane_cur(j) != NULL) { /* READY: the TLS the records demand was had */
		tls_event(j, mx, j->cur_ip, NULL, NULL);
		return;
	}
	if (lvl == TLS_LEVEL_NONE)
		return; /* no TLS attempted by choice: nothing to report */
	if (!st->tls) {
		tls_event(j, mx, j->cur_ip, "starttls-not-supported", "STARTTLS not offered");
		return;
	}
	if (j->has_pol && !st->verdict.verified) {
		tls_event(j, mx, j->cur_ip, tls_tlsrpt_result(&st->verdict), st->verdict.verify_text);
		return;
	}
	if (j->has_pol && !sts_policy_allows(&j->pol, mx)) {
		tls_event(j, mx, j->cur_ip, "validation-failure", "MX host not listed in the MTA-STS policy");
		return;
	}
	tls_event(j, mx, j->cur_ip, NULL, NULL);
}

static void start_session(struct job *j);

/* The next source of the job's pool (smooth weighted round-robin: each
 * member gains its weight, the largest is chosen and loses the total;
 * deterministic), skipping sources gone from the host and, when af is not 0,
 * sources of another address family; NULL when none is configured or left. */
static const struct source *pick_source(struct deliver *d, int pool_i, int af)
{
	const struct config *c = d->cfg;
	if (c->n_sources == 0)
		return NULL;
	const struct egress_pool *ep = pool_i < c->n_pools ? &c->pools[pool_i] : NULL;
	int n = ep ? ep->n : c->n_sources, *cur = d->wrr[pool_i], best = -1, total = 0;
	for (int k = 0; k < n; k++) {
		int si = ep ? ep->src[k] : k, w = ep ? ep->weight[k] : 1;
		if (d->src_down[si] || (af != 0 && c->sources[si].sa.ss_family != af))
			continue;
		cur[k] += w;
		total += w;
		if (best < 0 || cur[k] > cur[best])
			best = k;
	}
	if (best < 0)
		return NULL;
	cur[best] -= total;
	return &c->sources[ep ? ep->src[best] : best];
}

/* j's source could not be bound (its address left the host): out of every
 * pool in this engine, said once; true when another source is there. */
static bool source_gone(struct job *j)
{
	struct deliver *d = j->d;
	int si = (int)(j->src - d->cfg->sources);
	if (!d->src_down[si]) {
		d->src_down[si] = true;
		log_error("evt=source_down source=%s why=\"cannot bind the address: its mail goes out "
			  "through the pool's other sources\"", j->src->label);
		metrics_source_down(d->o.metrics_shard);
	}
	j->src = pick_source(d, j->pool_i, 0);
	return j->src != NULL;
}

/* j's source cannot reach an address of family af (an IPv6 source, an IPv4
 * MX): another source of the pool that can, or false. */
static bool source_for_family(struct job *j, int af)
{
	const struct source *s = pick_source(j->d, j->pool_i, af);
	if (s != NULL)
		j->src = s;
	return s != NULL;
}

/* The rate key: [domain] max_rate counts per (domain, source). */
static const char *rate_key(struct job *j, char *buf, size_t len)
{
	if (j->src == NULL)
		return j->req->domain;
	snprintf(buf, len, "%s@%s", j->req->domain, j->src->name);
	return buf;
}

static void slot_wake(struct limits_waiter *w)
{
	start_session(container_of(w, struct job, conn.waiter));
}

static void dane_done(void *arg, struct dane_host *h);

/* An MX host whose MX and address answers were DNSSEC-secure (RFC 7672 2.2.1,
 * 2.2.2): its TLSA records decide its TLS. */
static bool dane_candidate(const struct job *j, const struct dns_host *h)
{
	return dns_dnssec_on(j->d->dns) && !j->rule.relay_host && j->mx->secure && h->secure;
}

/* Before the first session to the current MX host: its DANE state. True when
 * a TLSA lookup was started (dane_done then calls start_session again). */
static bool dane_step(struct job *j)
{
	if (j->dane_for == j->host_i)
		return false;
	const struct dns_host *h = &j->mx->hosts[j->host_i];
	j->dane_for = j->host_i;
	if (j->dane != NULL) { /* a host before had records: none known for this one yet */
		dane_host_fini(&j->dane->h);
		dane_host_none(&j->dane->h, h->name);
	}
	if (!dane_candidate(j, h))
		return false; /* no DANE state (~2 KB) for a host that cannot have it */
	if (j->dane == NULL) {
		j->dane = xcalloc(1, sizeof(*j->dane));
		dane_host_none(&j->dane->h, h->name);
	}
	dane_lookup_start(&j->dane->lk, j->d->dns, h->name, h->cname, j->port, &j->dane->h, dane_done,
			  j);
	return true;
}

/* The current MX host cannot be used: a temporary failure for every one of
 * its addresses, then the next host. */
static void skip_host(struct job *j, const char *why)
{
	const struct dns_host *h = &j->mx->hosts[j->host_i];
	const struct sockaddr_storage *sa = &h->addrs[0];
	/* the result names the host not used (its first address) */
	inet_ntop(sa->ss_family,
		  sa->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
					    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr,
		  j->cur_ip, sizeof(j->cur_ip));
	j->have_last = true;
	j->addr_i = h->naddrs - 1;
	j->plain_retry = false;
	j->tries++;
	skip_fail(j, SMTP_FAIL_TLS, "4.7.5", why); /* DANE: bounce class tls */
}

static void dane_done(void *arg, struct dane_host *h)
{
	struct job *j = arg;
	const char *mx = j->mx->hosts[j->host_i].name;
	log_info("evt=dane id=%016llx mx=%s mode=%s why=\"%s\"", (unsigned long long)j->id, mx,
		 dane_mode_name(h->mode), h->why);
	if (h->mode == DANE_FAIL) { /* RFC 7672 2.2: never without what the zone may demand */
		tls_event(j, mx, NULL, "dnssec-invalid", h->why);
		skip_host(j, h->why);
		return;
	}
	if (h->mode == DANE_NONE && j->has_pol && j->pol.mode == STS_MODE_ENFORCE &&
	    !sts_policy_allows(&j->pol, mx)) {
		/* kept by route() until its TLSA was known: no DANE, so MTA-STS */
		skip_host(j, "MX host not listed in the MTA-STS policy (enforce)");
		return;
	}
	start_session(j);
}

static void start_session(struct job *j)
{
	struct dns_host *h = &j->mx->hosts[j->host_i];
	struct smtp_params p;
	if (dane_step(j))
		return;
	struct tlspolicy hp;
	host_policy(j, &hp);
	if (!hp.usable) { /* tls = dane-only, and no DANE for this host */
		tls_event(j, h->name, NULL, "dane-required", "tls = dane-only: no usable TLSA records");
		skip_host(j, "no DNSSEC-validated usable TLSA records for the MX host (tls = dane-only)");
		return;
	}
	memset(&p, 0, sizeof(p));
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
	if (j->src && j->src->sa.ss_family != p.addr.ss_family &&
	    !source_for_family(j, p.addr.ss_family)) {
		j->tries++;
		skip_addr(j, "4.4.1", "no egress source of the pool has an %s address",
			  p.addr.ss_family == AF_INET6 ? "IPv6" : "IPv4");
		return;
	}
	p.helo = j->src ? j->src->ehlo : j->d->helo;
	p.source = j->src;
	p.level = j->plain_retry ? TLS_LEVEL_NONE : hp.level;
	const struct dane_host *dk = dane_known(j);
	if (dk != NULL && dk->mode == DANE_AUTH) /* RFC 7672 2.2: verified by the records */
		p.dane = &dk->tls;
	p.min_tls = j->rule.min_tls;
	p.max_handshakes = (unsigned)j->d->cfg->max_handshakes;
	if (j->rule.relay_host) {
		p.implicit_tls = j->port == 465; /* RFC 8314 submissions port */
		p.auth_user = j->rule.auth_user;
		p.auth_password = j->rule.auth_password;
		p.auth_insecure = j->rule.auth_insecure;
	}
	j->have_last = true;
	if (j->d->o.shaping) { /* the (source, provider) connection budget */
		int pair = cur_pair(j);
		j->conn.shape_max = shaping_slot(j->d->o.shaping, pair, j->conn.shape_slot,
						 sizeof(j->conn.shape_slot));
		j->conn.max_msgs = shaping_max_messages(j->d->o.shaping, pair);
	}
	struct smtp_session *pooled;
	char why[400];
	j->reused = false;
	switch (pool_get(j->d->pool, &j->conn, j->cur_ip, j->port, &p, &j->no_bdat, &pooled, why,
			 sizeof(why))) {
	case POOL_REUSED:
		j->reused = true;
		j->sess = pooled;
		j->last = *smtp_session_status(pooled);
		j->d->st.reused++;
		metrics_conn(j->d->o.metrics_shard, METRICS_CONN_REUSED);
		smtp_session_set_owner(pooled, sess_event, j);
		send_txn(j, pooled);
		return;
	case POOL_DOWN:
		j->tries++;
		skip_addr(j, "4.4.1", "%s", why);
		return;
	case POOL_NO_SHARE:
		j->tries++;
		skip_addr(j, "4.4.5", "%s", why);
		return;
	case POOL_WAIT:
		j->d->st.slot_waits++;
		metrics_slot_wait(j->d->o.metrics_shard);
		return;
	case POOL_OPEN:
		break;
	}
	j->d->st.opened++;
	p.tc = j->d->tc;
	p.to = &j->d->cfg->timeouts;
	p.id = j->id;
	p.live = &j->d->sessions;
	p.all = &j->d->all;
	p.live_zero = sessions_zero;
	p.live_arg = j->d;
	p.metrics = j->d->o.metrics_shard;
	memset(&j->last, 0, sizeof(j->last));
	j->tries++;
	j->sess = smtp_session_new(j->d->l, &p, sess_event, j);
	int r = smtp_session_start(j->sess);
	if (r < 0) {
		pool_drop(j->d->pool, &j->conn, j->sess);
		j->sess = NULL;
		if (j->src && (r == -EADDRNOTAVAIL || r == -EADDRINUSE) && source_gone(j)) {
			j->tries--; /* not this address's fault: another source tries it */
			start_session(j);
			return;
		}
		skip_addr(j, "4.4.1", "socket: %s", strerror(-r));
	}
}

/* Advance to the next address (or host) and start a session there, or finish
 * with the last failure when nothing is left to try. */
static void try_next(struct job *j)
{
	struct dns_host *h = &j->mx->hosts[j->host_i];
	bool more = j->plain_retry || j->addr_i + 1 < h->naddrs || j->host_i + 1 < j->mx->nhosts;
	if (!more || j->tries >= MAX_ADDR_TRIES) {
		/* decided before moving on: the result names the host and address
		 * tried last (host_i, cur_ip), never the next one with the last's IP */
		const struct smtp_result *w = &j->last.why;
		finish(j, status_of(w->cls == SMTP_OK ? SMTP_TEMP : w->cls), w->code, w->esc, w->text,
		       origin_of(&j->last), w->bclass);
		return;
	}
	if (j->plain_retry) {
		/* stays on this address; start_session uses TLS_LEVEL_NONE */
	} else if (j->addr_i + 1 < h->naddrs) {
		j->addr_i++;
	} else {
		j->host_i++;
		j->addr_i = 0;
	}
	start_session(j);
}

/* The recipients not yet decided go into one transaction. */
static void send_txn(struct job *j, struct smtp_session *s)
{
	int n = 0, max = j->rule.max_rcpt > 0 ? j->rule.max_rcpt : j->req->nrcpt;
	for (int i = 0; i < j->req->nrcpt && n < max; i++) {
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
	j->txn.no_bdat = j->no_bdat;
	j->txn.last = j->nleft == n && !pool_reusable(j->d->pool, s, smtp_session_txns(s) + 1);
	smtp_session_send(s, &j->txn);
}

/* The chain counts live in this engine's tlscache, bumped by its verify
 * callback during handshakes on this thread (SMTP and MTA-STS HTTPS alike).
 * The shard gets a copy of the totals when a new session is READY or fails,
 * the only moments right after a handshake: one copy per connection, nothing
 * per message, and this thread stays the shard's one writer. A chain verified
 * for an MTA-STS fetch shows at the next such moment. */
static void chains_to_metrics(struct deliver *d)
{
	if (d->o.metrics_shard == NULL)
		return;
	struct tlscache_stats ts;
	tlscache_get_stats(d->tc, &ts);
	metrics_set_tls_chains(d->o.metrics_shard, ts.verify_misses, ts.verify_hits);
}

static void sess_event(void *arg, struct smtp_session *s, enum smtp_event ev,
		       const struct smtp_status *st)
{
	struct job *j = arg;
	j->last = *st;
	if (!j->reused && ev != SMTP_EV_TXN_DONE)
		chains_to_metrics(j->d);
	switch (ev) {
	case SMTP_EV_READY:
		if (!j->reused) {
			pool_addr_result(j->d->pool, j->cur_ip, j->port, true);
			tls_event_ready(j, st, j->plain_retry ? TLS_LEVEL_NONE : j->tls.level);
		}
		send_txn(j, s);
		return;
	case SMTP_EV_TXN_DONE:
		for (int k = 0; k < j->txn.nrcpt; k++) {
			const struct smtp_result *r = &j->res[k];
			report(j, j->tidx[k], status_of(r->cls), r->code, r->esc, r->text,
				       BCLASS_O_REPLY, r->bclass);
		}
		if (j->nleft > 0) { /* more than max_rcpt recipients: next transaction */
			send_txn(j, s);
			return;
		}
		j->sess = NULL;
		pool_done(j->d->pool, &j->conn, s, j->txn.last);
		finish(j, JOB_DEFERRED, 451, "4.3.0", "internal: recipient left undecided",
		       BCLASS_O_INTERNAL, 0);
		return;
	case SMTP_EV_FAIL:
		break;
	}
	/* Session failure: keep what it decided, then choose the next step. */
	j->sess = NULL;
	pool_drop(j->d->pool, &j->conn, s);
	if (st->fail == SMTP_FAIL_CONNECT)
		pool_addr_result(j->d->pool, j->cur_ip, j->port, false);
	if (j->txn.rcpts != NULL) {
		for (int k = 0; k < j->txn.nrcpt; k++) {
			const struct smtp_result *r = &j->res[k];
			if (r->final)
				report(j, j->tidx[k], status_of(r->cls), r->code, r->esc, r->text,
				       BCLASS_O_REPLY, r->bclass);
		}
		j->txn.rcpts = NULL;
	}
	if (j->nleft == 0) {
		finish(j, JOB_DEFERRED, 451, "4.3.0", "", BCLASS_O_INTERNAL, 0);
		return;
	}
	struct shape_match m;
	if (st->why.cls != SMTP_OK &&
	    shaping_match(j->d->o.shaping, cur_pair(j), st->why.code, st->why.esc, st->why.text, &m) &&
	    (m.action == SHAPE_ACT_THROTTLE || m.action == SHAPE_ACT_SUSPEND)) {
		/* the provider asked us to slow down or stop: not its next MX host
		 * (the same provider), the queue (report() acts on the rule) */
		finish(j, status_of(st->why.cls), st->why.code, st->why.esc, st->why.text,
		       origin_of(st), 0);
		return;
	}
	const char *mxname = j->mx->hosts[j->host_i].name;
	if (st->bdat_refused && !j->no_bdat) {
		/* CHUNKING offered, BDAT refused: the same address again, with
		 * DATA, on a new connection; later jobs there use DATA at once. */
		pool_bdat_broken(j->d->pool, mxname, j->cur_ip, j->port);
		j->no_bdat = true;
		start_session(j);
		return;
	}
	bool was_plain_retry = j->plain_retry;
	j->plain_retry = false;
	const struct dane_host *dh = dane_cur(j);
	if (st->fail == SMTP_FAIL_TLS || st->fail == SMTP_FAIL_TLS_MAY)
		tls_event(j, mxname, j->cur_ip,
			  st->no_starttls ? "starttls-not-supported"
			  : (st->tls_tried && st->verdict.have_cert && !st->verdict.verified)
				  ? (dh ? "tlsa-invalid" : tls_tlsrpt_result(&st->verdict))
				  : "validation-failure",
			  st->why.text);

	if (st->fail == SMTP_FAIL_TLS_MAY && !was_plain_retry) {
		/* Opportunistic TLS broke: same address, plaintext, once; and
		 * remember the host so the next delivery does not try again. */
		pool_tls_broken(j->d->pool, mxname, j->cur_ip, j->port, j->src ? j->src->name : NULL);
		j->plain_retry = true;
		start_session(j);
		return;
	}
	if (st->fail == SMTP_FAIL_TLS) {
		/* MTA-STS enforce: never bounce; DANE: the next MX (tlspolicy.c) */
		struct tlspolicy hp;
		host_policy(j, &hp);
		switch (hp.on_failure) {
		case TLS_FAIL_DEFER:
			finish(j, JOB_DEFERRED, st->why.code, st->why.esc, st->why.text, origin_of(st), 0);
			return;
		case TLS_FAIL_HOLD:
			finish(j, JOB_HELD, st->why.code, st->why.esc, st->why.text, origin_of(st), 0);
			return;
		case TLS_FAIL_BOUNCE:
			finish(j, JOB_BOUNCED, 550, "5.7.10", st->why.text, origin_of(st), 0);
			return;
		case TLS_FAIL_NEXT_MX:
		case TLS_FAIL_PLAINTEXT:
			break;
		}
	}
	try_next(j);
}

static void admit(struct job *j);

#define WARM_ASK_MS 250

/* Warm-up ([source] warmup, shaping.h): a source whose budget for the
 * provider is spent today passes the job to the pool's next source; with
 * none left the job waits for the next UTC day, using up no retry. While a
 * source's count for today is not known yet (the first sync after start)
 * and no other source has room, the job asks again shortly. True: go on
 * with j->src. */
static bool warm_source(struct job *j)
{
	struct shaping *sh = j->d->o.shaping;
	if (j->src == NULL || !shaping_warm_any(sh))
		return true;
	bool later = false;
	for (int k = 0; k < 4 * j->d->cfg->n_sources; k++) { /* the weighted turns, bounded */
		enum shape_warm w = shaping_warm_take(sh, j->shape_pair);
		if (w == SHAPE_WARM_OK)
			return true;
		later |= w == SHAPE_WARM_LATER;
		const struct source *s = pick_source(j->d, j->pool_i, 0);
		if (s == NULL)
			break;
		j->src = s;
		j->shape_pair = cur_pair(j);
	}
	if (later) {
		loop_timer_arm(j->d->l, &j->rate_timer, WARM_ASK_MS);
		return false;
	}
	char why[160];
	shaping_warm_why(sh, j->shape_pair, why, sizeof(why));
	uint64_t now = wall_ms();
	finish_shaped(j, now - now % 86400000u + 86400000u, why, METRICS_DEFER_WARMUP);
	return false;
}

/* Both answers are in (MX, and MTA-STS when enabled): decide the route. */
static void route(struct job *j)
{
	struct dns_mx *mx = j->mx_pending;
	j->mx_pending = NULL;
	switch (mx->status) {
	case DNS_OK:
		break;
	case DNS_NXDOMAIN:
		finish(j, JOB_BOUNCED, 550, "5.1.2", mx->why[0] ? mx->why : "domain does not exist",
		       BCLASS_O_DNS, 0);
		free(mx);
		return;
	case DNS_NULLMX:
		/* RFC 7505 4.1: the domain accepts no mail. */
		free(mx);
		finish(j, JOB_BOUNCED, 556, "5.1.10", "recipient domain has a null MX (RFC 7505)",
		       BCLASS_O_DNS, 0);
		return;
	case DNS_NODATA:
		finish(j, JOB_BOUNCED, 550, "5.4.4", mx->why[0] ? mx->why : "no address for any MX host",
		       BCLASS_O_DNS, 0);
		free(mx);
		return;
	case DNS_TEMP:
	default:
		finish(j, JOB_DEFERRED, 451, "4.4.3", mx->why[0] ? mx->why : "DNS lookup failed",
		       BCLASS_O_DNS, 0);
		free(mx);
		return;
	}
	j->mx = mx;
	tlspolicy_decide(&j->tls, &j->rule, j->req->tls_min_level, j->d->o.tls_level,
			 j->has_pol ? &j->pol : NULL);
	if (j->has_pol && j->pol.mode == STS_MODE_ENFORCE) {
		/* RFC 8461 4.1/5.1: only MX hosts the policy names (and, by
		 * tlspolicy_decide, only with verified TLS); none left is a
		 * temporary failure. */
		int n = 0;
		/* RFC 8461 2: DANE comes first: a candidate stays until its
		 * TLSA records are known (dane_done) */
		for (int i = 0; i < mx->nhosts; i++)
			if (sts_policy_allows(&j->pol, mx->hosts[i].name) ||
			    dane_candidate(j, &mx->hosts[i]))
				mx->hosts[n++] = mx->hosts[i];
		mx->nhosts = n;
		if (n == 0) {
			tls_event(j, NULL, NULL, "validation-failure",
				  "no MX host matches the MTA-STS policy");
			finish(j, JOB_DEFERRED, 451, "4.7.5",
			       "no MX host matches the domain's MTA-STS policy (enforce)", BCLASS_O_TLS, 0);
			return;
		}
	}
	j->host_i = 0;
	j->addr_i = 0;
	if (j->d->cfg->n_sources > 0 && (j->src = pick_source(j->d, j->pool_i, 0)) == NULL) {
		finish(j, JOB_DEFERRED, 451, "4.4.1", "no egress source of the pool can be used",
		       BCLASS_O_CONNECT, 0);
		return;
	}
	j->shape_pair = cur_pair(j);
	admit(j);
}

/* Pace the job: the domain's max_rate, then its (source, provider) pair's
 * rate and suspension (shaping.h); then the first session. */
static void admit(struct job *j)
{
	if (!j->warm_done) {
		if (!warm_source(j))
			return; /* asks again (rate_timer), or finished */
		j->warm_done = true;
	}
	if (!j->domain_rate_ok) {
		char rk[320];
		uint64_t wait = pool_rate_delay(j->d->pool, rate_key(j, rk, sizeof(rk)), j->rule.max_rate);
		if (wait > 0) { /* [domain] max_rate: messages per second */
			loop_timer_arm(j->d->l, &j->rate_timer, wait);
			return;
		}
		j->domain_rate_ok = true;
	}
	struct shaping *sh = j->d->o.shaping;
	if (sh && j->shape_pair >= 0 && !j->shape_booked) {
		uint64_t wait, until = 0;
		bool booked;
		char why[160];
		enum shape_admit r = shaping_admit(sh, j->shape_pair, &j->shape_waiting, &wait, &booked,
						   &until, why, sizeof(why));
		switch (r) {
		case SHAPE_GO:
			break;
		case SHAPE_DEFER:
		case SHAPE_SUSPENDED:
			finish_shaped(j, until, why,
				      r == SHAPE_DEFER ? METRICS_DEFER_RATE : METRICS_DEFER_SUSPEND);
			return;
		case SHAPE_WAIT:
			strlcpy_x(j->shaped, why, sizeof(j->shaped));
			j->shape_booked = booked;
			loop_timer_arm(j->d->l, &j->rate_timer, wait);
			return;
		}
	}
	start_session(j);
}

static void rate_fn(struct loop_timer *t)
{
	admit(container_of(t, struct job, rate_timer));
}

static void dns_done(void *arg, const struct dns_mx *mx)
{
	struct job *j = arg;
	/* Keep only the hosts in use: the full struct is ~20 KiB, a job with
	 * one MX needs ~1.5 KiB (thousands of jobs are in flight at once). */
	size_t sz = DNS_MX_SIZE(mx->nhosts);
	j->mx_pending = xmalloc(sz);
	memcpy(j->mx_pending, mx, sz);
	if (--j->waiting == 0)
		route(j);
}

static void sts_done(void *arg, const struct stspol_answer *a)
{
	struct job *j = arg;
	if (a->pol) {
		sts_policy_copy(&j->pol, a->pol);
		j->has_pol = true;
	}
	if (a->fail) /* discovery failed: reported whatever policy applies now */
		tls_event(j, NULL, NULL, a->fail, a->detail);
	if (--j->waiting == 0)
		route(j);
}

static void lit_task_fn(struct loop_task *t)
{
	struct job *j = container_of(t, struct job, lit_task);
	if (--j->waiting == 0)
		route(j);
}

/* relay = an IP address: the answer is known without DNS; continue from a
 * deferred task (callbacks never run inside deliver_submit). */
static bool relay_literal(struct job *j)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (void *)&ss;
	struct sockaddr_in6 *s6 = (void *)&ss;
	if (inet_pton(AF_INET, j->rule.relay_host, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, j->rule.relay_host, &s6->sin6_addr) == 1)
		s6->sin6_family = AF_INET6;
	else
		return false;
	size_t sz = DNS_MX_SIZE(1);
	j->mx_pending = xcalloc(1, sz);
	j->mx_pending->status = DNS_OK;
	j->mx_pending->implicit = 1;
	j->mx_pending->nhosts = 1;
	strlcpy_x(j->mx_pending->hosts[0].name, j->rule.relay_host, sizeof(j->mx_pending->hosts[0].name));
	j->mx_pending->hosts[0].naddrs = 1;
	memcpy(&j->mx_pending->hosts[0].addrs[0], &ss, sizeof(ss));
	loop_task_init(&j->lit_task, lit_task_fn);
	loop_defer(j->d->l, &j->lit_task);
	return true;
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
	j->next = d->jobs;
	if (d->jobs)
		d->jobs->prev = j;
	d->jobs = j;
	j->id = ++d->next_id;
	j->start = loop_now(d->l);
	config_rule_for(d->cfg, req->domain, NULL, &j->rule);
	/* egress pool: the job's, else its domain rule's, else every source */
	j->pool_i = d->cfg->n_pools;
	if (d->cfg->n_sources > 0) {
		const char *pn = req->pool ? req->pool : (j->rule.set & RULE_POOL) ? j->rule.pool : NULL;
		int pi = pn ? config_pool_find(d->cfg, pn) : -1;
		if (pi >= 0)
			j->pool_i = pi;
	}
	/* the local requirement, until the MX and MTA-STS answers are in (route) */
	tlspolicy_decide(&j->tls, &j->rule, req->tls_min_level, d->o.tls_level, NULL);
	j->port = d->o.port > 0 ? d->o.port
		  : j->rule.relay_host ? j->rule.relay_port
				       : j->rule.port;
	if (req->wire != NULL) { /* prepared (and signed) by the caller: its bytes */
		j->wire = *req->wire;
		j->wire.borrowed = true;
	} else {
		msg_wire_prepare(req->data, req->len, false, &j->wire);
	}
	j->smtputf8 = nonascii(req->from);
	for (int i = 0; i < req->nrcpt; i++)
		j->smtputf8 |= nonascii(req->rcpts[i]);
	j->res = xcalloc((size_t)req->nrcpt, sizeof(*j->res));
	j->trcpt = xcalloc((size_t)req->nrcpt, sizeof(*j->trcpt));
	j->tidx = xcalloc((size_t)req->nrcpt, sizeof(*j->tidx));
	j->reported = xcalloc((size_t)req->nrcpt, sizeof(*j->reported));
	loop_timer_init(&j->rate_timer, rate_fn);
	j->dane_for = -1;
	pool_conn_init(&j->conn, req->domain, req->prio, slot_wake);
	j->nleft = req->nrcpt;
	j->shape_pair = -1;
	d->active++;
	j->waiting = 1;
	/* MTA-STS applies whatever the local level: a discovered policy can only
	 * make delivery stricter (even a domain rule tls = none never sends
	 * plaintext to an enforce domain). */
	if (j->rule.relay_host) {
		/* A smarthost: its own address (no MX), and MTA-STS does not apply
		 * (it governs the domain's MX hosts, which we do not contact). */
		if (relay_literal(j))
			return 0;
		dns_resolve_addr(d->dns, j->rule.relay_host, dns_done, j);
		return 0;
	}
	if (d->sts && !req->sts_exempt) {
		j->waiting++;
		stspol_lookup(d->sts, req->domain, sts_done, j);
	}
	dns_resolve_mx(d->dns, req->domain, dns_done, j);
	return 0;
}
