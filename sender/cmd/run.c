/* sender/cmd/run.c: `mxsend run`: drain the Redis queue until stopped.
 *
 * cmd_run_parse (run.h) reads the flags; cmd_run_run wires and runs, in steps:
 * run_open_engine, run_open_queue, run_loop, run_close.
 *
 * Wiring only: the feeder loop (this thread) runs the queue (queue/, through
 * redis_uring) and hands each claimed job to the worker pool, one request per
 * recipient domain; outcomes come back per recipient and go into the job
 * (job_set_outcome); when a job's last domain is done the queue commits it.
 *
 * Shutdown (SIGTERM/SIGINT): stop claiming, let in-flight deliveries finish
 * for up to RUN_DRAIN_MS, then commit every job as it stands (unfinished
 * recipients go back to the queue, without a result), wait up to RUN_FINAL_MS
 * for those commits, exit 0. A second signal skips the wait. Jobs whose commit
 * could not be written stay pending in Redis and are reclaimed later.
 *
 * DKIM (signer.h): on_job plans the job's signing (cheap: which keys); a job
 * to sign goes to the signing threads (sign_pool.h), one signature per job,
 * and comes back to on_signed, on this thread, which submits its domains with
 * the signatures in front of the job's own bytes (no copy of the message,
 * unless it had to be normalised: bare LF or CR). What signing holds counts in
 * max_inflight_bytes (queue_job_bytes): the message's size is reserved when the
 * job is handed to a signer (the copy it may need), set to what it made (the
 * signatures, and that copy) when it comes back, and given back when the job
 * is done.
 *
 * Ownership: a struct run_job exists per job handed to us, a struct run_req per
 * (job, domain) submitted; both are freed when the pool reports done, or at
 * exit after workers_free (which abandons what is still running), or
 * sign_pool_stop (which hands back the jobs still being signed). */
#include "sender/cmd/run.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue.h"
#include "queue/shape_store.h"
#include "queue/sts_store.h"
#include "queue/tlsrpt_store.h"
#include "sender/bclass.h"
#include "sender/config.h"
#include "sender/deliver.h"
#include "sender/exempt.h"
#include "sender/limits.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/metrics.h"
#include "sender/msg.h"
#include "sender/redis_tls.h"
#include "sender/redis_uring.h"
#include "sender/sign_pool.h"
#include "sender/shaping.h"
#include "sender/signer.h"
#include "sender/util.h"
#include "sender/workers.h"

#define RUN_DRAIN_MS 10000   /* finish in-flight work after SIGTERM, at most */
#define RUN_FINAL_MS 5000    /* then write what we have, at most */
#define RUN_TTY_MS 1000      /* live status line on a terminal */
#define RUN_LOG_MS 5000      /* status line in a log */

struct run_job;

struct run_req {
	struct deliver_req req;
	struct run *r;
	struct run_job *rj;
	int first; /* index of the domain's first recipient in the job */
	struct run_req *prev, *next;
};

struct run_job {
	struct job *j;
	int left; /* domains not done */
	struct signed_msg sm; /* the DKIM signatures (and a normalised copy), signer.h */
	size_t counted;    /* bytes added to the job's in max_inflight_bytes (queue_job_bytes) */
	bool exempt;
	char log_tag[400]; /* deliver_req.log_tag: job, id (escaped) and attempt */
};

/* A job with the signing threads (allocated then only: ~1 KB that unsigned
 * jobs do not carry). */
struct run_sign {
	struct sign_job sj;
	struct run_job *rj;
};

struct run {
	struct loop *l;
	struct config cfg;
	const char **pool_names; /* the [pool NAME] names, for job_limits */
	const char *supp_auto[BCLASS_N]; /* [suppress] auto as class names */
	struct workers *w;
	struct queue *q;
	struct metrics *m;      /* NULL without [mxsend] metrics */
	struct metrics_shard *ms; /* the feeder's shard */
	uint64_t m_expired, m_rejected, m_suppressed; /* reported so far */
	struct run_req *reqs; /* submitted, not done */
	struct sign_pool *signers; /* NULL without [dkim] sections */
	bool stopping, released, until_empty, tty, exiting;
	int settle_ticks;
	int empty_ticks;
	struct loop_timer status, drain, final;
	struct loop_op sig_op;
	int sigfd;
	struct signalfd_siginfo si;
	uint64_t started, last_status, last_delivered, status_ms, signal_at;
	uint64_t n_delivered, n_bounced, n_deferred, n_held, n_tls;
	char consumer[300]; /* HOST:PID, our name in the consumer group */
	struct queue_host qh; /* borrowed by the queue for its life */
	struct redis_tls *rtls; /* rediss://: TLS settings loaded at start (NULL: redis://, unix:) */
	/* shaping (sender/shaping.h): shared with the workers; its state goes
	 * to and comes from Redis every [shaping] sync (on_shape_sync) */
	struct shaping *sh;
	struct limits_peers sh_peers; /* the processes sharing the queue, for the split */
	struct loop_timer shape_t;
	struct shape_call *shape_calls; /* one per pair */
	unsigned shape_out;  /* script calls on the wire */
	bool have_exempt_key; /* [tlsrpt] dkim_key loaded: report jobs can prove themselves */
	unsigned char exempt_key[EXEMPT_KEY_LEN];
};

/* ---- queue host services ---- */

struct queue_timer {
	struct loop_timer t;
	struct loop *l;
	queue_timer_fn *fn;
	void *arg;
};

static void qt_fire(struct loop_timer *t)
{
	struct queue_timer *qt = container_of(t, struct queue_timer, t);
	qt->fn(qt->arg);
}

static struct queue_timer *qt_new(void *ctx, queue_timer_fn *fn, void *arg)
{
	struct run *r = ctx;
	struct queue_timer *qt = xcalloc(1, sizeof(*qt));
	loop_timer_init(&qt->t, qt_fire);
	qt->l = r->l;
	qt->fn = fn;
	qt->arg = arg;
	return qt;
}

static void qt_arm(struct queue_timer *qt, uint64_t ms)
{
	loop_timer_arm(qt->l, &qt->t, ms);
}

static void qt_free(struct queue_timer *qt)
{
	if (qt == NULL)
		return;
	loop_timer_stop(qt->l, &qt->t);
	free(qt);
}

static uint64_t q_now(void *ctx)
{
	struct run *r = ctx;
	return loop_now(r->l);
}

static int q_attach(void *ctx, struct redisAsyncContext *ac)
{
	struct run *r = ctx;
	return redis_uring_attach(r->l, ac);
}

static struct redisAsyncContext *q_connect_tls(void *ctx, const struct queue_tls *t,
					       const char *host, int port, char *why, size_t n)
{
	struct run *r = ctx;
	(void)t; /* loaded once, at start: r->rtls */
	if (r->rtls == NULL) {
		snprintf(why, n, "rediss:// (TLS) is not set up");
		return NULL;
	}
	return redis_tls_connect_async(r->l, r->rtls, host, port, why, n);
}

static void q_log(void *ctx, int level, const char *line)
{
	static const enum log_level map[] = { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
	(void)ctx;
	enum log_level lvl = map[level < 0 ? 0 : level > 3 ? 3 : level];
	if (log_enabled(lvl))
		log_msg(lvl, "%s", line);
}

/* ---- deliveries ---- */

static void on_rcpt(void *arg, int idx, const struct job_outcome *res)
{
	struct run_req *rr = arg;
	struct run *r = rr->r;
	struct job *j = rr->rj->j;
	int i = rr->first + idx;
	if (idx < 0 || idx >= rr->req.nrcpt)
		log_panic("evt=bad_rcpt_index idx=%d n=%d", idx, rr->req.nrcpt);
	job_set_outcome(j, i, res); /* logged by the engine (evt=delivery) */
	/* Metrics: workers report to this thread, so the feeder's shard sees
	 * every outcome (expired is counted when the queue decides it). */
	static const enum metrics_status ms_of[] = {
		[JOB_DELIVERED] = METRICS_DELIVERED, [JOB_BOUNCED] = METRICS_BOUNCED,
		[JOB_DEFERRED] = METRICS_DEFERRED, [JOB_HELD] = METRICS_HELD,
	};
	metrics_delivery(r->ms, ms_of[res->status], res->elapsed_ms);
	if (r->cfg.n_sources > 0 && r->ms != NULL && res->source[0] != '\0')
		for (int k = 0; k < r->cfg.n_sources; k++)
			if (strcmp(r->cfg.sources[k].label, res->source) == 0) {
				metrics_source_delivery(r->ms, k, ms_of[res->status]);
				break;
			}
	/* Connections and TLS sessions are counted by the workers, in their
	 * shards, when they happen (smtp.c, deliver.c). */
	switch (res->status) {
	case JOB_DELIVERED:
		r->n_delivered++;
		if (res->tls[0] != '\0' && strcmp(res->tls, "none") != 0)
			r->n_tls++;
		break;
	case JOB_BOUNCED:
		r->n_bounced++;
		break;
	case JOB_HELD:
		r->n_held++;
		break;
	default:
		r->n_deferred++;
		break;
	}
}

/* The bytes of the job's signed copy (or the copy being made) in the queue's
 * max_inflight_bytes. */
static void count_bytes(struct run *r, struct run_job *rj, size_t n)
{
	if (n != rj->counted)
		queue_job_bytes(r->q, rj->j, (int64_t)n - (int64_t)rj->counted);
	rj->counted = n;
}

static void job_left(struct run *r, struct run_job *rj)
{
	if (--rj->left > 0)
		return;
	count_bytes(r, rj, 0);
	queue_job_done(r->q, rj->j);
	signed_msg_free(&rj->sm);
	free(rj);
}

static void req_unlink(struct run *r, struct run_req *rr)
{
	if (rr->prev)
		rr->prev->next = rr->next;
	else
		r->reqs = rr->next;
	if (rr->next)
		rr->next->prev = rr->prev;
}

static void maybe_exit(struct run *r);

static void on_req_done(void *arg)
{
	struct run_req *rr = arg;
	struct run *r = rr->r;
	req_unlink(r, rr);
	job_left(r, rr->rj);
	free(rr);
	if (r->stopping)
		maybe_exit(r);
}

/* exempt=tlsrpt is honoured only for a job `mxsend tlsrpt` queued: its
 * exempt_mac verifies under the key both derive from [tlsrpt] dkim_key. Any
 * other job asking is delivered under the normal policy, with a warning. */
static bool exempt_ok(struct run *r, const struct job *j)
{
	if (!j->exempt_tlsrpt)
		return false;
	struct exempt_msg m = {
		.kind = "tlsrpt", .from = j->from, .rcpts = j->norm, .nrcpt = j->nrcpt,
		.data = j->data, .len = j->len, .has_expires = j->has_expires, .expires_s = j->expires_s,
	};
	const char *why = !r->have_exempt_key ? "no [tlsrpt] dkim_key in this config"
			  : j->exempt_mac[0] == '\0' ? "no valid exempt_mac field"
			  : !exempt_mac_ok(r->exempt_key, &m, j->exempt_mac) ? "exempt_mac does not verify"
								      : NULL;
	if (why != NULL) {
		char id[160];
		log_warn("evt=exempt_ignored job=%s id=\"%s\" why=\"%s\" (delivered under the normal policy)",
			 j->job_id, log_q(id, sizeof(id), j->id), why);
		return false;
	}
	return true;
}

/* The signer refused the job (an unknown dkim domain, dkim_require, a key
 * that failed): rejected, all recipients. */
static void dkim_reject(struct run *r, struct run_job *rj, const char *why)
{
	struct job *j = rj->j;
	snprintf(j->reason, sizeof(j->reason), "%s", why);
	struct job_outcome o = { .status = JOB_REJECTED, .code = 550, .dsn = "5.7.0" };
	for (int i = 0; i < j->nrcpt; i++)
		job_set_outcome(j, i, &o);
	log_warn("evt=dkim_rejected job=%s why=\"%s\"", j->job_id, why);
	rj->left = 1;
	job_left(r, rj);
}

/* One request per recipient domain, all carrying the same bytes (signed
 * once), then the hold on the job (left = ndomain + 1) is let go. */
static void submit_domains(struct run *r, struct run_job *rj)
{
	struct job *j = rj->j;
	int tls = j->tls == JOB_TLS_VERIFY ? TLS_LEVEL_VERIFY
		  : j->tls == JOB_TLS_ENCRYPT ? TLS_LEVEL_ENCRYPT
					      : -1;
	rj->left = j->ndomain + 1; /* +1: held until every domain is submitted */
	for (int d = 0; d < j->ndomain; d++) {
		const struct job_domain *dom = &j->domains[d];
		struct run_req *rr = xcalloc(1, sizeof(*rr));
		rr->r = r;
		rr->rj = rj;
		rr->first = dom->first;
		rr->req = (struct deliver_req){
			.from = j->from, .domain = dom->name, .rcpts = dom->addrs, .nrcpt = dom->n,
			.data = j->data, .len = j->len, .wire = rj->sm.pre ? &rj->sm.wire : NULL,
			.tls_min_level = tls,
			.sts_exempt = rj->exempt, .pool = j->pool[0] ? j->pool : NULL, .prio = j->lane,
			.log_tag = rj->log_tag[0] ? rj->log_tag : NULL,
			.rcpt_done = on_rcpt, .done = on_req_done, .arg = rr,
		};
		rr->next = r->reqs;
		if (r->reqs)
			r->reqs->prev = rr;
		r->reqs = rr;
		if (workers_submit(r->w, &rr->req) != 0) {
			/* Our bug if it happens; deferring keeps the job safe. */
			log_error("evt=submit_failed job=%s domain=%s", j->job_id, dom->name);
			struct job_outcome o = { .status = JOB_DEFERRED, .code = 451, .dsn = "4.3.0",
						 .reply = "internal error: request refused", .cls = "other" };
			for (int i = 0; i < dom->n; i++)
				job_set_outcome(j, dom->first + i, &o);
			req_unlink(r, rr);
			free(rr);
			rj->left--;
		}
	}
	job_left(r, rj);
}

/* A job back from the signing threads (sign_pool.h), on this thread. */
static void on_signed(void *arg, struct sign_job *sj, bool abandoned)
{
	struct run *r = arg;
	struct run_sign *rs = container_of(sj, struct run_sign, sj);
	struct run_job *rj = rs->rj;
	if (abandoned) { /* at exit: the queue frees the job (left pending) */
		signed_msg_free(&sj->out);
		free(rj);
		free(rs);
		return;
	}
	if (sj->rc != 0) {
		dkim_reject(r, rj, sj->err);
	} else if (r->released) {
		/* committed as it stood at the deadline: not sent */
		signed_msg_free(&sj->out);
		rj->left = 1;
		job_left(r, rj);
	} else {
		rj->sm = sj->out;
		count_bytes(r, rj, signed_msg_bytes(&rj->sm));
		snprintf(rj->j->dkim_result, sizeof(rj->j->dkim_result), "%s", sj->result);
		if (log_enabled(LOG_DEBUG))
			log_debug("evt=dkim_signed job=%s dkim=\"%s\" bytes=%zu", rj->j->job_id,
				  sj->result, signed_msg_bytes(&rj->sm));
		submit_domains(r, rj);
	}
	free(rs);
	if (r->stopping)
		maybe_exit(r);
}

static void on_job(void *ctx, struct job *j)
{
	struct run *r = ctx;
	struct run_job *rj = xcalloc(1, sizeof(*rj));
	rj->j = j;
	rj->exempt = exempt_ok(r, j);
	if (log_enabled(LOG_INFO)) { /* id is the application's: escaped (log.h) */
		char qid[256];
		snprintf(rj->log_tag, sizeof(rj->log_tag), "job=%s app_id=\"%s\" attempt=%d",
			 j->job_id, log_q(qid, sizeof(qid), j->id), j->attempt + 1);
	}
	/* DKIM: once per job, whatever its domains and transactions: every
	 * request carries the same signed bytes. The plan is cheap (which keys);
	 * the signature is made on a signing thread. Without [dkim] sections
	 * nothing is planned and no thread is involved. */
	char why[JOB_REASON_MAX];
	struct signer_plan sp;
	int plan = signer_plan(&r->cfg, j->data, j->len, j->dkim, &sp, j->dkim_result, why, sizeof(why));
	if (plan < 0) {
		dkim_reject(r, rj, why);
		return;
	}
	if (plan == 0 || r->signers == NULL) { /* NULL: no key, so plan is 0 */
		submit_domains(r, rj);
		return;
	}
	struct run_sign *rs = xmalloc(sizeof(*rs));
	rs->rj = rj;
	rs->sj.plan = sp;
	rs->sj.raw = j->data;
	rs->sj.len = j->len;
	rs->sj.t = (int64_t)time(NULL);
	rj->left = 1; /* the signing threads' */
	count_bytes(r, rj, j->len); /* the copy it may have to make */
	sign_pool_submit(r->signers, &rs->sj);
}

/* ---- status ---- */

/* TLSRPT: one event per TLS session attempt (relayed to this thread by
 * workers.c), counted in Redis so every process adds to the same day. */
static void on_peers(void *ctx, int n, int rank)
{
	struct run *r = ctx;
	log_info("evt=peers processes=%d rank=%d", n, rank);
	workers_set_peers(r->w, n, rank);
	limits_peers_set(&r->sh_peers, n, rank);
}

/* ---- shaping state <-> Redis ---- */

struct shape_call {
	struct run *r;
	int pair;
	char key[400];
	char wkey[400];   /* J:warmup:SOURCE */
	uint32_t wdelta;  /* warm-up messages in the call on the wire */
};

static void on_warm_state(void *arg, const struct shape_warm_out *out)
{
	struct shape_call *c = arg;
	struct run *r = c->r;
	r->shape_out--;
	if (r->sh != NULL)
		shaping_warm_apply(r->sh, c->pair, out != NULL, out ? out->day : 0, out ? out->count : 0,
				   c->wdelta);
}

/* The rate gauge of pair (metrics.h): the pairs with no source are left
 * out when the config has sources (never used then). */
static void shape_gauge(struct run *r, int pair)
{
	if (r->cfg.n_sources == 0 || shaping_pair_src(r->sh, pair) >= 0)
		metrics_set_shape_rate(r->ms, pair, shaping_rate(r->sh, pair));
}

static void on_shape_state(void *arg, const struct shape_store_out *out)
{
	struct shape_call *c = arg;
	struct run *r = c->r;
	r->shape_out--;
	if (out != NULL && r->sh != NULL) {
		shaping_sync_apply(r->sh, c->pair, out->rate, out->conn, out->until, out->rule);
		shape_gauge(r, c->pair);
	}
}

/* Every [shaping] sync: each pair's news (cuts, suspensions, good replies)
 * to Redis, and the state every process made of it back (one script call
 * per pair, pipelined; a tick is skipped while the last one's replies are
 * still out, so a slow Redis never piles calls up). */
static void on_shape_sync(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, shape_t);
	loop_timer_arm(r->l, t, r->cfg.shape_sync_ms);
	if (r->q == NULL || r->shape_out > 0)
		return;
	uint64_t now = wall_ms();
	for (int p = 0; p < shaping_npairs(r->sh); p++) {
		struct shape_report rep;
		shaping_sync_take(r->sh, p, now, &rep);
		struct shape_store_in in = {
			.now = now, .ok = rep.ok, .cut_rate = rep.cut_rate, .cut_conn = rep.cut_conn,
			.step = rep.step, .cut_rule = rep.cut_rule, .susp_until = rep.susp_until,
			.susp_rule = rep.susp_rule, .max_rate = rep.max_rate, .max_conn = rep.max_conn,
			.cstep = rep.cstep,
		};
		if (shape_store_sync(r->q, r->shape_calls[p].key, &in, on_shape_state,
				     &r->shape_calls[p]) == 0)
			r->shape_out++;
		struct shape_call *c = &r->shape_calls[p];
		if (!shaping_warm_sync_take(r->sh, p, &c->wdelta))
			continue;
		if (shape_store_warm(r->q, c->wkey, now / 86400000u, shaping_pair_provider(r->sh, p),
				     c->wdelta, on_warm_state, c) == 0)
			r->shape_out++;
		else
			shaping_warm_apply(r->sh, p, false, 0, 0, c->wdelta);
	}
}

static int shape_open(struct run *r, char *err, size_t errlen)
{
	r->sh = shaping_new(&r->cfg, &r->sh_peers, err, errlen);
	if (r->sh == NULL)
		return -1;
	int n = shaping_npairs(r->sh);
	r->shape_calls = xcalloc((size_t)(n > 0 ? n : 1), sizeof(*r->shape_calls));
	for (int p = 0; p < n; p++) {
		struct shape_call *c = &r->shape_calls[p];
		c->r = r;
		c->pair = p;
		if (shape_store_key(c->key, sizeof(c->key), r->cfg.jobs, shaping_pair_source(r->sh, p),
				    shaping_pair_provider(r->sh, p)) != 0 ||
		    shape_store_warm_key(c->wkey, sizeof(c->wkey), r->cfg.jobs,
					 shaping_pair_source(r->sh, p)) != 0) {
			snprintf(err, errlen, "shaping key too long for [redis] jobs %s", r->cfg.jobs);
			return -1;
		}
	}
	loop_timer_init(&r->shape_t, on_shape_sync);
	if (r->m != NULL && r->cfg.n_providers > 0) { /* the metrics' label sets (config names) */
		static const char *const act[] = {
			[SHAPE_ACT_NONE] = "none", [SHAPE_ACT_THROTTLE] = "throttle",
			[SHAPE_ACT_SUSPEND] = "suspend", [SHAPE_ACT_TEMP] = "reclassify-temporary",
			[SHAPE_ACT_PERM] = "reclassify-permanent",
		};
		const char **pn = xcalloc((size_t)r->cfg.n_providers, sizeof(char *));
		const char **sn = xcalloc((size_t)r->cfg.n_sources + 1, sizeof(char *));
		struct metrics_rule *mr = xcalloc((size_t)r->cfg.n_responses + 1, sizeof(*mr));
		for (int p = 0; p < r->cfg.n_providers; p++)
			pn[p] = r->cfg.providers[p].name;
		for (int k = 0; k < r->cfg.n_sources; k++)
			sn[k] = r->cfg.sources[k].name;
		for (int k = 0; k < r->cfg.n_responses; k++) {
			const struct shape_response *sr = &r->cfg.responses[k];
			mr[k].name = sr->name;
			mr[k].action = act[sr->action];
			mr[k].provider = sr->provider ? config_provider_find(&r->cfg, sr->provider) : -1;
		}
		metrics_set_shaping(r->m, pn, r->cfg.n_providers, mr, r->cfg.n_responses, sn,
				    r->cfg.n_sources);
		free(pn);
		free(sn);
		free(mr);
	}
	return 0;
}

static void on_tls(void *arg, const struct tls_event *e)
{
	struct run *r = arg;
	if (r->q == NULL)
		return;
	int rc = tlsrpt_queue_event(r->q, e, r->cfg.tlsrpt_prefix);
	if (rc != 0)
		log_debug("evt=tlsrpt_not_counted domain=%s err=%s", e->policy_domain, strerror(-rc));
}

/* MTA-STS policies survive restarts and are shared by every process
 * (queue/sts_store.h). */
static void on_sts_store(void *arg, const char *domain, const char *encoded)
{
	struct run *r = arg;
	if (r->q != NULL && sts_store_save(r->q, r->cfg.redis_prefix, domain, encoded, (int64_t)(wall_ms() / 1000)) != 0)
		log_info("evt=sts_not_persisted domain=%s", domain);
}

static void sts_loaded(void *arg, const char *domain, const char *encoded)
{
	struct run *r = arg;
	workers_sts_load(r->w, domain, encoded);
}

/* Start-up, before the loop runs: load persisted policies into the workers. */
static void sts_load_all(struct run *r, const struct queue_config *qc)
{
	char err[256], qerr[512];
	struct queue_sync *s = queue_sync_open(qc, err, sizeof(err));
	if (s == NULL) {
		log_warn("evt=sts_load_skipped err=\"%s\"", log_q(qerr, sizeof(qerr), err));
		return;
	}
	int n = sts_store_load(s, r->cfg.redis_prefix, sts_loaded, r, err, sizeof(err));
	if (n < 0)
		log_warn("evt=sts_load_failed err=\"%s\"", log_q(qerr, sizeof(qerr), err));
	else
		log_info("evt=sts_loaded policies=%d", n);
	queue_sync_close(s);
}

static void shape_loaded(void *arg, const char *key, int n, const char *const *kv)
{
	struct run *r = arg;
	struct shape_store_out st;
	shape_store_fields(n, kv, &st);
	for (int p = 0; p < shaping_npairs(r->sh); p++)
		if (strcmp(r->shape_calls[p].key, key) == 0) {
			shaping_sync_apply(r->sh, p, st.rate, st.conn, st.until, st.rule);
			shape_gauge(r, p);
		}
}

/* Start-up, before the first claim: the shaping state the processes left in
 * Redis (a suspension or a cut rate holds across a restart; the periodic
 * sync only starts with the loop). */
static void shape_load_all(struct run *r, const struct queue_config *qc)
{
	char err[256], qerr[512];
	struct queue_sync *s = queue_sync_open(qc, err, sizeof(err));
	int n = s ? shape_store_list(s, r->cfg.jobs, shape_loaded, r, err, sizeof(err)) : -1;
	if (n < 0)
		log_warn("evt=shaping_load_failed err=\"%s\"", log_q(qerr, sizeof(qerr), err));
	else
		log_info("evt=shaping_loaded pairs=%d", n);
	queue_sync_close(s);
}

/* Start-up: the at-least-once guarantee needs a Redis that never evicts keys
 * (README "Redis persistence"): a queued job, a retry or a held job evicted
 * under memory pressure is lost without a result. Said once, never fatal: a
 * managed Redis or an ACL user may refuse CONFIG, and then we say we could not
 * tell. */
static void redis_evict_check(const struct queue_config *qc)
{
	char policy[64], err[256], qb[600];
	struct queue_sync *s = queue_sync_open(qc, err, sizeof(err));
	int rc = s == NULL ? -1 : queue_sync_config_get(s, "maxmemory-policy", policy, sizeof(policy), err,
							 sizeof(err));
	queue_sync_close(s);
	if (rc != 0)
		log_warn("evt=redis_evict_unchecked err=\"%s\" (could not read maxmemory-policy: "
			 "make sure it is noeviction, README \"Redis persistence\")",
			 log_q(qb, sizeof(qb), err));
	else if (strcmp(policy, "noeviction") != 0)
		log_warn("evt=redis_evicts policy=\"%s\" (under memory pressure Redis deletes keys: queued, "
			 "retried and held jobs can be lost without a result; set maxmemory-policy noeviction)",
			 log_q(qb, sizeof(qb), policy));
	else
		log_info("evt=redis_noeviction");
}

/* The feeder's share of the metrics (metrics.h): queue-side outcomes
 * (expired, rejected: no attempt, so no latency) and the gauges (queue and
 * retry depths, in flight, processes sharing the queue). Delivery
 * outcomes are the workers' to report. */
static void metrics_update(struct run *r, const struct queue_stats *st)
{
	if (r->ms == NULL)
		return;
	for (; r->m_expired < st->results[JOB_EXPIRED]; r->m_expired++)
		metrics_delivery(r->ms, METRICS_EXPIRED, -1);
	for (; r->m_rejected < st->results[JOB_REJECTED]; r->m_rejected++)
		metrics_delivery(r->ms, METRICS_REJECTED, -1);
	for (; r->m_suppressed < st->results[JOB_SUPPRESSED]; r->m_suppressed++)
		metrics_delivery(r->ms, METRICS_SUPPRESSED, -1);
	metrics_set_inflight(r->ms, st->inflight);
	metrics_set_inflight_bytes(r->ms, (int64_t)st->inflight_bytes);
	if (st->depth >= 0)
		metrics_set_queue_depth(r->ms, st->depth);
	if (st->retry >= 0)
		metrics_set_retry_depth(r->ms, st->retry);
	if (st->peers > 0) /* 0: no J:procs heartbeat answered yet */
		metrics_set_processes(r->ms, st->peers);
}

/* At exit: what the run cost, from the process's own accounting (all threads),
 * for operators sizing a machine and for bench/ (scenario q). */
static void run_accounting(struct run *r)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru); /* for the peak RSS */
	struct timespec thread_cpu = { 0 }; /* this thread: Redis, jobs, results */
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &thread_cpu);
	double user, sys, cpu = cpu_s(&user, &sys);
	uint64_t done = r->n_delivered + r->n_bounced + r->n_deferred + r->n_held;
	struct deliver_stats ds = { 0 };
	if (r->w != NULL)
		workers_get_stats(r->w, &ds);
	fprintf(stderr,
		"mxsend run: elapsed_s=%.3f cpu_s=%.3f user_s=%.3f sys_s=%.3f outcomes=%llu "
		"delivered=%llu cpu_us_per_msg=%.1f maxrss_kb=%ld connections=%lu reused=%lu "
		"slot_waits=%lu chains_verified=%lu chains_cached=%lu ctx_switches=%ld "
		"queue_thread_cpu_s=%.3f\n",
		(double)(loop_now(r->l) - r->started) / 1000.0, cpu, user, sys,
		(unsigned long long)done, (unsigned long long)r->n_delivered,
		done ? cpu * 1e6 / (double)done : 0.0, ru.ru_maxrss, ds.opened, ds.reused,
		ds.slot_waits, ds.chains_verified, ds.chains_cached, ru.ru_nvcsw + ru.ru_nivcsw,
		(double)thread_cpu.tv_sec + (double)thread_cpu.tv_nsec / 1e9);
}

static void status_line(struct run *r, bool final)
{
	struct queue_stats st;
	queue_get_stats(r->q, &st);
	uint64_t now = loop_now(r->l);
	uint64_t dt = now - r->last_status;
	double rate = dt ? (double)(r->n_delivered - r->last_delivered) * 1000.0 / (double)dt : 0;
	r->last_status = now;
	r->last_delivered = r->n_delivered;
	double tls = r->n_delivered ? 100.0 * (double)r->n_tls / (double)r->n_delivered : 0;
	char depth[24], retry[24], held[24];
	snprintf(depth, sizeof(depth), st.depth < 0 ? "?" : "%lld", st.depth);
	snprintf(retry, sizeof(retry), st.retry < 0 ? "?" : "%lld", st.retry);
	snprintf(held, sizeof(held), st.held < 0 ? "?" : "%lld", st.held);
	char line[512];
	if (r->tty) {
		snprintf(line, sizeof(line),
			 "%6.0f delivered/s | in flight %u | queue %s | retries %s | held %s | "
			 "TLS %.1f%% | delivered %llu bounced %llu deferred %llu%s",
			 rate, st.inflight, depth, retry, held, tls,
			 (unsigned long long)r->n_delivered, (unsigned long long)r->n_bounced,
			 (unsigned long long)r->n_deferred, st.connected ? "" : " | REDIS DOWN");
		fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
		fflush(stderr);
	} else {
		snprintf(line, sizeof(line),
			 "delivered=%llu rate=%.0f/s inflight=%u queue=%s retries=%s held=%s "
			 "bounced=%llu deferred=%llu tls=%.1f%% redis=%s",
			 (unsigned long long)r->n_delivered, rate, st.inflight, depth, retry, held,
			 (unsigned long long)r->n_bounced, (unsigned long long)r->n_deferred, tls,
			 st.connected ? "up" : "down");
		/* Always shown: the point of the status is to be seen in a log. */
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02dZ status %s%s\n", tm.tm_year + 1900,
			tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, line,
			final ? " final=yes" : "");
	}
	if (final)
		run_accounting(r);
}

static void begin_stop(struct run *r, const char *why)
{
	if (r->stopping)
		return;
	r->stopping = true;
	log_info("evt=stopping why=%s", why);
	queue_stop(r->q);
	loop_timer_arm(r->l, &r->drain, RUN_DRAIN_MS);
	maybe_exit(r);
}

static void maybe_exit(struct run *r)
{
	/* After queue_release the deliveries still out no longer matter. */
	bool busy = r->reqs != NULL || (r->signers != NULL && sign_pool_busy(r->signers) > 0);
	if (r->stopping && (!busy || r->released) && queue_idle(r->q))
		loop_stop(r->l);
}

static void on_status(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, status);
	uint64_t now = loop_now(r->l);
	if (now - r->last_status >= r->status_ms)
		status_line(r, false);
	struct queue_stats st;
	queue_get_stats(r->q, &st);
	if (r->ms != NULL)
		metrics_update(r, &st);
	if (r->until_empty && !r->stopping) {
		bool empty = st.connected && st.depth == 0 && st.retry == 0 && st.inflight == 0 &&
			     r->reqs == NULL && (r->signers == NULL || sign_pool_busy(r->signers) == 0);
		r->empty_ticks = empty ? r->empty_ticks + 1 : 0;
		if (r->empty_ticks >= 3) /* three 500 ms looks, past a stats refresh */
			begin_stop(r, "queue_empty");
	}
	maybe_exit(r);
	loop_timer_arm(r->l, &r->status, r->stopping ? 100 : 500);
}

static void on_final(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, final);
	log_warn("evt=shutdown_timeout what=commits");
	loop_stop(r->l);
}

static void release_now(struct run *r)
{
	if (r->released)
		return;
	r->released = true;
	unsigned n = 0;
	for (struct run_req *rq = r->reqs; rq != NULL; rq = rq->next)
		n++;
	log_info("evt=releasing requests=%u", n);
	queue_release(r->q);
	loop_timer_arm(r->l, &r->final, RUN_FINAL_MS);
	/* the jobs still out are done as far as we are concerned */
	maybe_exit(r);
}

static void on_drain(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, drain);
	log_warn("evt=shutdown_timeout what=deliveries");
	release_now(r);
}

static void on_signal(struct loop_op *op, int res, unsigned flags)
{
	struct run *r = container_of(op, struct run, sig_op);
	(void)flags;
	if (r->exiting)
		return; /* cancelled at exit */
	if (res == (int)sizeof(r->si)) {
		uint64_t now = loop_now(r->l);
		if (!r->stopping) {
			r->signal_at = now;
			begin_stop(r, r->si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
		} else if (now - r->signal_at > 1000) {
			/* A second signal (not the process-group copy of the first, as
			 * timeout(1) sends): do not wait for deliveries. */
			release_now(r);
		}
	} else if (res < 0 && res != -EAGAIN && res != -EINTR) {
		log_error("evt=signalfd_failed err=%s", strerror(-res));
		return;
	}
	loop_read(r->l, &r->sig_op, r->sigfd, &r->si, sizeof(r->si));
}

/* At exit: let the ring finish what is still in flight (the signalfd read we
 * cancel, poll removals of freed watchers) so that nothing is abandoned. */
static void on_settle(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, status);
	if (loop_inflight(r->l) == 0 || ++r->settle_ticks >= 3)
		loop_stop(r->l);
	else
		loop_timer_arm(r->l, &r->status, 20);
}

/* ---- the command ---- */

static int run_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_run_opts *o = opts;
	(void)arg;
	(void)why;
	if (ch != 'e')
		return -1;
	o->until_empty = true;
	return 0;
}

int cmd_run_parse(int argc, char **argv, struct cmd_run_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_DNS, CMD_OPT_CA, CMD_OPT_PORT, CMD_OPT_HELP,
		{ "until-empty", no_argument, NULL, 'e' }, CMD_OPT_END,
	};
	memset(o, 0, sizeof(*o));
	int first, rc = cmd_parse(argc, argv, "c:h", longs, &o->c, run_flag, o, &first);
	if (rc == 0 && first != argc) {
		o->c.why = "no operands";
		rc = EX_USAGE;
	}
	return rc;
}

/* The loop, the signalfd (SIGTERM, SIGINT blocked first, so that the worker
 * threads inherit the mask; the old mask in *old), the exemption key and the
 * worker pool. 0 or an exit status (said on stderr). */
static int run_open_engine(struct run *r, const struct cmd_run_opts *o, sigset_t *old)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, old);
	r->sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
	int err = 0;
	char ebuf[512];
	r->l = loop_new(4096, &err);
	if (r->l == NULL || r->sigfd == -1) {
		fprintf(stderr, "mxsend: cannot start the loop: %s\n", strerror(r->l ? errno : -err));
		return EX_OSERR;
	}
	struct deliver_opts dopts = { .port = o->c.port, .tls_level = -1 };
	if (r->cfg.tlsrpt) {
		dopts.on_tls = on_tls;
		dopts.on_tls_arg = r;
	}
	if (r->cfg.dkim_key != NULL && r->cfg.dkim_key[0] != '\0') {
		/* A key that does not load costs the report jobs their exemption,
		 * not the run: they are then delivered under the normal policy. */
		if (exempt_key_load(r->cfg.dkim_key, r->exempt_key, ebuf, sizeof(ebuf)) == 0)
			r->have_exempt_key = true;
		else
			log_warn("evt=exempt_key_failed err=\"[tlsrpt] dkim_key %s\"", ebuf);
	}
	if (r->cfg.mta_sts) {
		dopts.on_sts_store = on_sts_store;
		dopts.on_sts_store_arg = r;
	}
	/* Shard 0 is ours (deliveries, queue gauges); worker i writes 1 + i
	 * (connections, TLS sessions). Served once the queue is up. */
	if (r->cfg.metrics != NULL) {
		r->m = metrics_new(1 + workers_resolve(r->cfg.workers));
		r->ms = metrics_shard(r->m, 0);
		dopts.metrics = r->m;
		if (r->cfg.n_sources > 0) {
			const char **names = xcalloc((size_t)r->cfg.n_sources, sizeof(char *));
			for (int k = 0; k < r->cfg.n_sources; k++)
				names[k] = r->cfg.sources[k].name;
			metrics_set_sources(r->m, names, r->cfg.n_sources);
			free(names);
		}
	}
	if (shape_open(r, ebuf, sizeof(ebuf)) != 0) {
		fprintf(stderr, "mxsend: %s\n", ebuf);
		return EX_CONFIG;
	}
	dopts.shaping = r->sh;
	r->w = workers_new(r->l, r->cfg.workers, &r->cfg, &dopts, ebuf, sizeof(ebuf));
	if (r->w == NULL) {
		fprintf(stderr, "mxsend: %s\n", ebuf);
		return EX_CONFIG;
	}
	/* As many signing threads as workers: signing then scales with the
	 * cores the operator gave mxsend, and no more threads than that wait. */
	if (r->cfg.n_dkims > 0) {
		r->signers = sign_pool_new(r->l, workers_count(r->w), on_signed, r, ebuf, sizeof(ebuf));
		if (r->signers == NULL) {
			fprintf(stderr, "mxsend: %s\n", ebuf);
			return EX_OSERR;
		}
	}
	return 0;
}

/* The queue (consumer HOST:PID), the persisted MTA-STS policies, the metrics
 * endpoint. 0 or an exit status (said on stderr). */
static int run_open_queue(struct run *r)
{
	char host[256], ebuf[512];
	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(r->consumer, sizeof(r->consumer), "%s:%d", host, (int)getpid());
	struct queue_config qc;
	cmd_queue_config(&r->cfg, &qc);
	qc.consumer = r->consumer;
	qc.visibility_ms = r->cfg.visibility_timeout_ms;
	qc.batch = r->cfg.batch;
	qc.results_maxlen = r->cfg.results_maxlen;
	qc.max_inflight = r->cfg.max_inflight;
	qc.max_inflight_bytes = r->cfg.max_inflight_bytes;
	qc.limits = (struct job_limits){ .max_size = r->cfg.max_message_size,
					 .max_id = (size_t)r->cfg.max_id_len,
					 .max_meta = (size_t)r->cfg.max_meta_len,
					 .addr_ok = msg_addr_norm, .split = msg_split_list };
	r->pool_names = xcalloc((size_t)r->cfg.n_pools + 1, sizeof(char *));
	for (int i = 0; i < r->cfg.n_pools; i++)
		r->pool_names[i] = r->cfg.pools[i].name;
	qc.limits.pools = r->pool_names;
	qc.limits.npools = r->cfg.n_pools;
	qc.schedule_ms = r->cfg.schedule_ms;
	qc.n_schedule = r->cfg.n_schedule;
	qc.lifetime_ms = r->cfg.lifetime_ms;
	qc.jitter = r->cfg.jitter;
	/* A cap split between processes: take no job before the others know us. */
	qc.peers_settle = config_rules_set(&r->cfg, RULE_MAX_CONN_TOTAL);
	qc.suppress = r->cfg.suppress_check;
	for (int k = 1; k < BCLASS_N; k++)
		if (r->cfg.suppress_auto & (1u << k))
			r->supp_auto[qc.n_supp_auto++] = bclass_name((enum bclass)k);
	qc.supp_auto = r->supp_auto;
	qc.supp_auto_ttl_ms = r->cfg.suppress_auto_ttl_ms;
	r->qh = (struct queue_host){
		.ctx = r, .attach = q_attach, .connect_tls = q_connect_tls, .timer_new = qt_new, .timer_arm = qt_arm,
		.timer_free = qt_free, .mono_ms = q_now, .job = on_job, .peers = on_peers,
		.log = q_log,
	};
	/* Wrong credentials (or database) are a configuration error, named at
	 * start-up; Redis down is not: the queue keeps reconnecting. */
	int qchk = queue_sync_check(&qc, ebuf, sizeof(ebuf));
	if (qchk == -2) {
		fprintf(stderr, "mxsend: %s\n", ebuf);
		return EX_CONFIG;
	}
	if (qchk < 0) {
		char qb[600];
		log_warn("evt=redis_unreachable err=\"%s\"", log_q(qb, sizeof(qb), ebuf));
	}
	if (strncmp(r->cfg.redis_url, "rediss://", 9) == 0 &&
	    (r->rtls = redis_tls_new(&qc.tls, ebuf, sizeof(ebuf))) == NULL) {
		fprintf(stderr, "mxsend: [redis] %s\n", ebuf);
		return EX_CONFIG;
	}
	r->q = queue_new(&qc, &r->qh, ebuf, sizeof(ebuf)); /* copies qc */
	if (r->q == NULL) {
		fprintf(stderr, "mxsend: %s\n", ebuf);
		return EX_CONFIG;
	}
	if (qchk == 0)
		redis_evict_check(&qc);
	if (r->cfg.mta_sts && qchk == 0)
		sts_load_all(r, &qc);
	if (shaping_npairs(r->sh) > 0 && qchk == 0)
		shape_load_all(r, &qc);
	if (r->m != NULL && metrics_serve(r->m, r->l, r->cfg.metrics, ebuf, sizeof(ebuf)) != 0) {
		fprintf(stderr, "mxsend: %s\n", ebuf);
		return EX_CONFIG;
	}
	return 0;
}

/* Arm the timers and the signal read, start the queue, run until stopped. */
static int run_loop(struct run *r)
{
	r->tty = isatty(STDERR_FILENO) == 1;
	r->status_ms = r->tty ? RUN_TTY_MS : RUN_LOG_MS;
	r->started = r->last_status = loop_now(r->l);
	loop_timer_init(&r->status, on_status);
	loop_timer_init(&r->drain, on_drain);
	loop_timer_init(&r->final, on_final);
	loop_timer_arm(r->l, &r->status, 500);
	if (shaping_npairs(r->sh) > 0)
		loop_timer_arm(r->l, &r->shape_t, r->cfg.shape_sync_ms);
	r->sig_op.fn = on_signal;
	loop_read(r->l, &r->sig_op, r->sigfd, &r->si, sizeof(r->si));
	char shown[512];
	log_info("evt=run_start consumer=%s redis=%s%s%s%s%s jobs=%s max_inflight=%d workers=%d",
		 r->consumer, queue_url_redact(r->cfg.redis_url, shown, sizeof(shown)),
		 r->cfg.redis_sentinels ? " sentinels=" : "", r->cfg.redis_sentinels ? r->cfg.redis_sentinels : "",
		 r->cfg.redis_sentinels ? " master_name=" : "",
		 r->cfg.redis_master_name ? r->cfg.redis_master_name : "", r->cfg.jobs, r->cfg.max_inflight,
		 workers_count(r->w));
	queue_start(r->q);
	int rc = EX_OK, lr = loop_run(r->l);
	if (lr < 0) {
		log_error("evt=loop_failed err=%s", strerror(-lr));
		rc = EX_SOFTWARE;
	}
	status_line(r, true);
	return rc;
}

/* Workers first (joins the threads, abandons what is still running), then our
 * requests, then the queue (jobs not committed stay pending), then let the
 * ring settle and free it. */
static void run_close(struct run *r)
{
	if (r->w != NULL)
		workers_free(r->w, 1000);
	if (r->signers != NULL && sign_pool_busy(r->signers) > 0) /* released: committed as they stood */
		log_info("evt=signing_abandoned jobs=%u", sign_pool_busy(r->signers));
	sign_pool_stop(r->signers); /* hands back (on_signed) what it still holds */
	while (r->reqs != NULL) {
		struct run_req *rq = r->reqs;
		req_unlink(r, rq);
		if (--rq->rj->left == 0) { /* its last request */
			signed_msg_free(&rq->rj->sm);
			free(rq->rj);
		}
		free(rq);
	}
	if (r->l != NULL && r->sh != NULL)
		loop_timer_stop(r->l, &r->shape_t);
	queue_free(r->q); /* shaping replies still out run now, with none */
	r->q = NULL;
	redis_tls_free(r->rtls); /* relays still closing keep their sessions */
	r->rtls = NULL;
	if (r->l != NULL && r->sigfd != -1) {
		r->exiting = true;
		loop_cancel(r->l, &r->sig_op);
		loop_timer_stop(r->l, &r->drain);
		loop_timer_stop(r->l, &r->final);
		loop_timer_stop(r->l, &r->status); /* before re-initializing it */
		loop_timer_init(&r->status, on_settle);
		loop_timer_arm(r->l, &r->status, 0);
		loop_run(r->l);
	}
	metrics_free(r->m); /* after the loop's last run */
	sign_pool_free(r->signers); /* its read completed in that run */
	shaping_free(r->sh);
	free(r->shape_calls);
	if (r->l != NULL) {
		loop_timer_stop(r->l, &r->status);
		loop_timer_stop(r->l, &r->drain);
		loop_timer_stop(r->l, &r->final);
		loop_free(r->l);
	}
	if (r->sigfd != -1)
		close(r->sigfd);
}

int cmd_run_run(const struct cmd_run_opts *o)
{
	struct run rr0 = { .sigfd = -1, .until_empty = o->until_empty }, *r = &rr0;
	int rc = cmd_setup(&r->cfg, &o->c);
	if (rc != 0)
		return rc;
	sigset_t old;
	rc = run_open_engine(r, o, &old);
	if (rc == 0)
		rc = run_open_queue(r);
	if (rc == 0)
		rc = run_loop(r);
	run_close(r);
	sigprocmask(SIG_SETMASK, &old, NULL);
	explicit_bzero(r->exempt_key, sizeof(r->exempt_key));
	free(r->pool_names);
	config_fini(&r->cfg);
	return rc;
}

static int cmd_run(int argc, char **argv)
{
	struct cmd_run_opts o;
	int rc = cmd_run_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_run_def, rc, o.c.why) : cmd_run_run(&o);
}

const struct cmd_def cmd_run_def = {
	"run", cmd_run, "run [-c FILE] [--dns A[:P]] [--ca FILE] [--port N] [--until-empty]",
};
