/* queue_commit.c: what happens to a job once the host is done with it.
 *
 * Decisions, per recipient (one place, like Postfix's smtp_trouble.c):
 *   delivered, bounced      -> a final result;
 *   deferred                -> `expired` if the job's lifetime is over (since +
 *                              expires or [retry] lifetime), else a `deferred`
 *                              result and a park in J:retry, due after the
 *                              schedule step for this attempt (+- jitter, never
 *                              after the lifetime ends, so the last try happens
 *                              at the deadline);
 *   deferred by shaping     -> (outcome not_before_ms: a suspension, or a rate
 *                              wait past max_wait; no attempt was made) a
 *                              `deferred` result and a park in J:retry due at
 *                              not_before, attempt not counted, never `expired`:
 *                              `since` moves on by the wait, so the time it
 *                              spent held back is not taken from its lifetime;
 *   held                    -> a `held` result and a park in J:held, one per
 *                              domain, with the reason;
 *   no outcome (shutdown)   -> no result; parked in J:retry, due now, attempt
 *                              not counted;
 *   rejected job            -> one `rejected` result per recipient (or one
 *                              with rcpt "") naming the problem.
 *
 * All of it, plus XACK and XDEL, is one call of the commit script (below),
 * which first checks that the entry is still pending: a commit is idempotent,
 * so one whose reply was lost is simply sent again after reconnecting.
 * Up to 64 jobs of one lane share one call (its stream, retry and held keys
 * are the script's); up to 16 calls are on the wire (pipelined). Each lane
 * has its commit FIFO; the first lane's jobs are committed first, so a
 * transactional job's result does not wait behind a backlog of bulk ones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"
#include "queue/suppress.h"

/* ---- the scripts ---- */

/* KEYS: jobs, results, retry, held, suppress, suppress:exp, then the hash of
 * each park in the order of the parks below (retry:MEMBER or held:MEMBER:
 * every key the script touches is declared, for Redis Cluster). ARGV: group,
 * njobs, maxlen (results stream trim, 0 = none), then per job:
 * entry, nres, nres*JOB_RESULT_NFIELDS result values (as many as names), npark, then per park:
 * kind (r|h), member, score, nkv, nkv field/value pairs; then nsupp, then per
 * automatic suppression entry (queue/suppress.h): field, value, expires (0: none).
 * Returns one integer per job: 1 written, 0 skipped (not pending any more). */
const char qscript_commit[] =
	"local names = {'id','job','rcpt','status','code','dsn','reply','mx','ip','port',"
	"'tls','cipher','verified','policy','resumed','reused','attempt','elapsed_ms','meta',"
	"'source','dkim','class','shaped'}\n"
	"local nf = #names\n"
	"local group = ARGV[1]\n"
	"local maxlen = tonumber(ARGV[3])\n"
	"local i = 4\n"
	"local hk = 6\n"
	"local out = {}\n"
	"for j = 1, tonumber(ARGV[2]) do\n"
	"  local eid = ARGV[i]\n"
	"  local nres = tonumber(ARGV[i + 1])\n"
	"  i = i + 2\n"
	"  local live = #redis.call('XPENDING', KEYS[1], group, eid, eid, 1) > 0\n"
	"  if live then\n"
	"    for r = 1, nres do\n"
	"      local a = {}\n"
	"      for k = 1, nf do a[2 * k - 1] = names[k]; a[2 * k] = ARGV[i + k - 1] end\n"
	"      if maxlen > 0 then\n"
	"        redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', unpack(a))\n"
	"      else\n"
	"        redis.call('XADD', KEYS[2], '*', unpack(a))\n"
	"      end\n"
	"      i = i + nf\n"
	"    end\n"
	"  else\n"
	"    i = i + nf * nres\n"
	"  end\n"
	"  local npark = tonumber(ARGV[i])\n"
	"  i = i + 1\n"
	"  for p = 1, npark do\n"
	"    local z = KEYS[3]\n"
	"    if ARGV[i] == 'h' then z = KEYS[4] end\n"
	"    local member, score, nkv = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])\n"
	"    i = i + 4\n"
	"    hk = hk + 1\n"
	"    if live then\n"
	"      local h = KEYS[hk]\n"
	"      redis.call('DEL', h)\n"
	"      redis.call('HSET', h, unpack(ARGV, i, i + 2 * nkv - 1))\n"
	"      redis.call('ZADD', z, score, member)\n"
	"    end\n"
	"    i = i + 2 * nkv\n"
	"  end\n"
	"  local nsupp = tonumber(ARGV[i])\n"
	"  i = i + 1\n"
	"  for s = 1, nsupp do\n"
	"    if live then\n"
	"      redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])\n"
	"      if ARGV[i + 2] ~= '0' then redis.call('ZADD', KEYS[6], ARGV[i + 2], ARGV[i])\n"
	"      else redis.call('ZREM', KEYS[6], ARGV[i]) end\n"
	"    end\n"
	"    i = i + 3\n"
	"  end\n"
	"  if live then\n"
	"    redis.call('XACK', KEYS[1], group, eid)\n"
	"    redis.call('XDEL', KEYS[1], eid)\n"
	"    out[j] = 1\n"
	"  else\n"
	"    out[j] = 0\n"
	"  end\n"
	"end\n"
	"return out\n";

/* KEYS: retry, jobs, then retry:MEMBER for each member. ARGV: now (epoch
 * ms), then the members (read by ZRANGEBYSCORE just before: the script takes
 * no key name from Redis, so Redis Cluster sees every key it touches). Moves
 * each member still parked and due back into the jobs stream (atomically: a
 * retry is never lost nor queued twice, ZSCORE tells a member another
 * process moved meanwhile) so it is claimed like a new job. Returns how many
 * moved. */
const char qscript_move[] =
	"local n = 0\n"
	"for k = 2, #ARGV do\n"
	"  local m = ARGV[k]\n"
	"  local s = redis.call('ZSCORE', KEYS[1], m)\n"
	"  if s and tonumber(s) <= tonumber(ARGV[1]) then\n"
	"    local h = KEYS[k + 1]\n"
	"    local f = redis.call('HGETALL', h)\n"
	"    if #f > 0 then redis.call('XADD', KEYS[2], '*', unpack(f)) end\n"
	"    redis.call('DEL', h)\n"
	"    redis.call('ZREM', KEYS[1], m)\n"
	"    n = n + 1\n"
	"  end\n"
	"end\n"
	"return n\n";

/* KEYS: jobs. ARGV: group, own consumer, idle ms. Deletes other consumers
 * that hold nothing and have been idle that long (dead processes). */
const char qscript_gc[] =
	"local n = 0\n"
	"for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do\n"
	"  local name, pending, idle\n"
	"  for k = 1, #c, 2 do\n"
	"    if c[k] == 'name' then name = c[k + 1]\n"
	"    elseif c[k] == 'pending' then pending = c[k + 1]\n"
	"    elseif c[k] == 'idle' then idle = c[k + 1] end\n"
	"  end\n"
	"  if name ~= ARGV[2] and pending == 0 and idle ~= nil and idle > tonumber(ARGV[3]) then\n"
	"    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)\n"
	"    n = n + 1\n"
	"  end\n"
	"end\n"
	"return n\n";

/* KEYS: procs (hash: consumer -> last heartbeat, Redis's clock in ms). ARGV:
 * own consumer, ms after which a silent process counts as gone. Records our
 * heartbeat, forgets the gone, returns {live processes, our rank by name}. */
const char qscript_peers[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"redis.call('HSET', KEYS[1], ARGV[1], now)\n"
	"local all = redis.call('HGETALL', KEYS[1])\n"
	"local n, rank = 0, 0\n"
	"for i = 1, #all, 2 do\n"
	"  if now - tonumber(all[i + 1]) > tonumber(ARGV[2]) then\n"
	"    redis.call('HDEL', KEYS[1], all[i])\n"
	"  else\n"
	"    n = n + 1\n"
	"    if all[i] < ARGV[1] then rank = rank + 1 end\n"
	"  end\n"
	"end\n"
	"return {n, rank}\n";

/* KEYS: jobs, procs. ARGV: group, own consumer, gone ms, count, min idle ms.
 * Crash recovery: a consumer other than ours is dead when its process's
 * heartbeat in procs is older than `gone` or absent (died before its first
 * one, or already forgotten) and the consumer itself has been idle that long
 * (no read, no claim: so a process that just started, and has not yet
 * written its heartbeat, is not taken for dead). Up to `count` of the dead
 * consumers' pending entries idle at least `min idle` are claimed for us
 * (XPENDING by consumer + XCLAIM, one script: of processes racing, one gets
 * each entry); a dead consumer left with nothing pending is deleted (only
 * then: XGROUP DELCONSUMER drops a consumer's pending entries) and its
 * heartbeat forgotten. Returns {entries claimed (XCLAIM's form), entries
 * still pending at dead consumers, consumers deleted}. */
const char qscript_dead[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local group, me, gone = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
	"local want = tonumber(ARGV[4])\n"
	"local out, left, removed = {}, 0, 0\n"
	"for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do\n"
	"  local name, idle\n"
	"  for k = 1, #c, 2 do\n"
	"    if c[k] == 'name' then name = c[k + 1]\n"
	"    elseif c[k] == 'idle' then idle = c[k + 1] end\n"
	"  end\n"
	"  local hb = name and redis.call('HGET', KEYS[2], name)\n"
	"  if name and name ~= me and idle and idle > gone and\n"
	"     (not hb or now - tonumber(hb) > gone) then\n"
	"    if want > 0 then\n"
	"      local p = redis.call('XPENDING', KEYS[1], group, 'IDLE', ARGV[5], '-', '+', want, name)\n"
	"      for i = 1, #p, 500 do\n"
	"        local ids = {}\n"
	"        for j = i, math.min(i + 499, #p) do ids[#ids + 1] = p[j][1] end\n"
	"        for _, e in ipairs(redis.call('XCLAIM', KEYS[1], group, me, ARGV[5], unpack(ids))) do\n"
	"          out[#out + 1] = e\n"
	"        end\n"
	"      end\n"
	"      want = want - #p\n"
	"    end\n"
	"    local rest = redis.call('XPENDING', KEYS[1], group, '-', '+', 1, name)\n"
	"    if #rest == 0 then\n"
	"      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, name)\n"
	"      redis.call('HDEL', KEYS[2], name)\n"
	"      removed = removed + 1\n"
	"    else\n"
	"      local sum = redis.call('XPENDING', KEYS[1], group)\n"
	"      for _, cc in ipairs(sum[4] or {}) do\n"
	"        if cc[1] == name then left = left + tonumber(cc[2]) end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return {out, left, removed}\n";

/* KEYS: held, jobs, then held:MEMBER for each member. ARGV: the members
 * (chosen by queue_sync_release, which reads them first: the script takes no
 * key name from Redis, for Redis Cluster). Moves each member still held back
 * into the jobs stream without its held-only fields and without `since` (the
 * lifetime starts again). Returns the members released. */
const char qscript_release[] =
	"local moved = {}\n"
	"local skip = {domain = true, reason = true, held_at = true, since = true}\n"
	"for k = 1, #ARGV do\n"
	"  local m, h = ARGV[k], KEYS[k + 2]\n"
	"  if redis.call('ZSCORE', KEYS[1], m) then\n"
	"    local f = redis.call('HGETALL', h)\n"
	"    redis.call('ZREM', KEYS[1], m)\n"
	"    if #f > 0 then\n"
	"      local a = {}\n"
	"      for i = 1, #f, 2 do\n"
	"        if not skip[f[i]] then a[#a + 1] = f[i]; a[#a + 1] = f[i + 1] end\n"
	"      end\n"
	"      redis.call('XADD', KEYS[2], '*', unpack(a))\n"
	"      redis.call('DEL', h)\n"
	"      moved[#moved + 1] = m\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return moved\n";

/* ---- argument vectors with a string pool ---- */

struct pchunk {
	struct pchunk *next;
	size_t used, cap;
	char data[];
};

struct args {
	const char **v;
	size_t *l;
	int n, cap;
	size_t bytes;
	struct pchunk *pool;
	/* the commit script's park hashes (KEYS after the six fixed ones), in
	 * the pool; retry_key/held_key: the sorted sets they belong to */
	const char **hk;
	size_t *hl;
	int nh, hcap;
	const char *retry_key, *held_key;
};

static void args_fini(struct args *a)
{
	free(a->v);
	free(a->l);
	free(a->hk);
	free(a->hl);
	while (a->pool) {
		struct pchunk *next = a->pool->next;
		free(a->pool);
		a->pool = next;
	}
}

/* Room for one more in the pair of arrays *v, *l holding n of *cap. */
static void grow(const char ***v, size_t **l, int n, int *cap, int first)
{
	if (n < *cap)
		return;
	int c = *cap ? *cap * 2 : first;
	const char **nv = qalloc((size_t)c * sizeof(*nv));
	size_t *nl = qalloc((size_t)c * sizeof(*nl));
	if (n) {
		memcpy(nv, *v, (size_t)n * sizeof(*nv));
		memcpy(nl, *l, (size_t)n * sizeof(*nl));
	}
	free(*v);
	free(*l);
	*v = nv;
	*l = nl;
	*cap = c;
}

static int arg(struct args *a, const char *s, size_t n)
{
	grow(&a->v, &a->l, a->n, &a->cap, 256);
	a->v[a->n] = s;
	a->l[a->n] = n;
	a->bytes += n + 16;
	return a->n++;
}

static char *pool_alloc(struct args *a, size_t n)
{
	struct pchunk *c = a->pool;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > 8000 ? n : 8000;
		c = qalloc(sizeof(*c) + cap);
		c->cap = cap;
		c->next = a->pool;
		a->pool = c;
	}
	char *p = c->data + c->used;
	c->used += n;
	return p;
}

static int arg_copy(struct args *a, const char *s, size_t n)
{
	char *p = pool_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return arg(a, p, n);
}

static int arg_str(struct args *a, const char *s)
{
	return arg(a, s, strlen(s));
}

static int arg_u64(struct args *a, uint64_t v)
{
	char buf[24];
	return arg_copy(a, buf, u64_dec(buf, v));
}

static void arg_set_u64(struct args *a, int slot, uint64_t v)
{
	char *p = pool_alloc(a, 24);
	a->v[slot] = p;
	a->l[slot] = u64_dec(p, v);
}

/* ---- building one job's part ---- */

static void add_result(struct args *a, struct qjob *qj, int idx, enum job_status st, int attempt)
{
	const char *v[JOB_RESULT_NFIELDS];
	size_t l[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	job_result_values(&qj->job, idx, st, attempt, v, l, scratch);
	for (int k = 0; k < JOB_RESULT_NFIELDS; k++) {
		if (v[k] >= scratch && v[k] < scratch + sizeof(scratch))
			arg_copy(a, v[k], l[k]);
		else
			arg(a, v[k], l[k]);
	}
	qj->nres[st]++;
}

/* The hash of a park, SET:MEMBER, as the script's next key. */
static void park_key(struct args *a, const char *set, const char *member)
{
	size_t sl = strlen(set), ml = strlen(member);
	char *p = pool_alloc(a, sl + 1 + ml + 1);
	memcpy(p, set, sl);
	p[sl] = ':';
	memcpy(p + sl + 1, member, ml + 1);
	grow(&a->hk, &a->hl, a->nh, &a->hcap, 64);
	a->hk[a->nh] = p;
	a->hl[a->nh++] = sl + 1 + ml;
	a->bytes += sl + ml + 17;
}

/* One park (kind 'r' retry or 'h' held) of recipients idx[0..n). */
static void add_park(struct args *a, const struct job *j, char kind, const char *member,
		     uint64_t score, const int *idx, int n, int attempt, const char *domain,
		     const char *reason)
{
	park_key(a, kind == 'h' ? a->held_key : a->retry_key, member);
	arg_str(a, kind == 'h' ? "h" : "r");
	arg_copy(a, member, strlen(member));
	arg_u64(a, score);
	int nkv_slot = arg(a, "", 0);
	int start = a->n;
	char *to = job_join_rcpts(j, idx, n);
	if (to == NULL) {
		fprintf(stderr, "mxsend: out of memory (recipient list)\n");
		abort();
	}
	arg_str(a, "from");
	arg_str(a, j->from);
	arg_str(a, "to");
	arg_copy(a, to, strlen(to));
	free(to);
	arg_str(a, "data");
	arg(a, j->data, j->len);
	arg_str(a, "id");
	arg_str(a, j->id);
	arg_str(a, "job");
	arg_str(a, j->job_id);
	if (j->meta[0] != '\0') {
		arg_str(a, "meta");
		arg_str(a, j->meta);
	}
	if (j->tls != JOB_TLS_DEFAULT) {
		arg_str(a, "tls");
		arg_str(a, job_tls_name(j->tls));
	}
	if (j->pool && j->pool[0] != '\0') {
		arg_str(a, "pool");
		arg_str(a, j->pool);
	}
	if (j->exempt_tlsrpt) { /* the claim and its proof, as given: checked again next time */
		arg_str(a, "exempt");
		arg_str(a, "tlsrpt");
		if (j->exempt_mac[0] != '\0') {
			arg_str(a, "exempt_mac");
			arg_str(a, j->exempt_mac);
		}
	}
	if (j->dkim != NULL) {
		arg_str(a, "dkim");
		arg_str(a, j->dkim);
	}
	if (j->has_expires) {
		arg_str(a, "expires");
		arg_u64(a, (uint64_t)j->expires_s);
	}
	arg_str(a, "attempt");
	arg_u64(a, (uint64_t)attempt);
	arg_str(a, "since");
	arg_u64(a, j->since_ms);
	if (kind == 'h') {
		arg_str(a, "domain");
		arg_str(a, domain);
		arg_str(a, "reason");
		arg_copy(a, reason, strlen(reason));
		arg_str(a, "held_at");
		arg_u64(a, score);
	}
	arg_set_u64(a, nkv_slot, (uint64_t)((a->n - start) / 2));
}

static uint64_t retry_delay(struct queue *q, int attempt)
{
	uint64_t base = 60000;
	if (q->cfg.n_schedule > 0) {
		int k = attempt - 1 < q->cfg.n_schedule ? attempt - 1 : q->cfg.n_schedule - 1;
		base = q->cfg.schedule_ms[k < 0 ? 0 : k];
	}
	double j = q->cfg.jitter;
	if (j > 0) {
		double r = (double)qrand(q) / 4294967296.0; /* [0, 1) */
		double d = (double)base * (1.0 + j * (2.0 * r - 1.0));
		return d < 0 ? 0 : (uint64_t)d;
	}
	return base;
}

static void build_job(struct queue *q, struct args *a, struct qjob *qj, uint64_t now)
{
	struct job *j = &qj->job;
	int attempt = j->attempt + 1;
	memset(qj->nres, 0, sizeof(qj->nres));
	arg_str(a, j->entry);
	int nres_slot = arg(a, "", 0);
	int first = a->n;

	if (qj->rejected) {
		if (j->nrcpt == 0)
			add_result(a, qj, -1, JOB_REJECTED, attempt);
		for (int i = 0; i < j->nrcpt; i++)
			add_result(a, qj, i, JOB_REJECTED, attempt);
		arg_set_u64(a, nres_slot, (uint64_t)((a->n - first) / JOB_RESULT_NFIELDS));
		arg_str(a, "0"); /* parks */
		arg_str(a, "0"); /* suppression entries */
		return;
	}

	uint64_t life = j->has_expires ? (uint64_t)j->expires_s * 1000u : q->cfg.lifetime_ms;
	uint64_t deadline = j->since_ms + life;
	int *deferred = qalloc((size_t)j->nrcpt * sizeof(int));
	int *unfinished = qalloc((size_t)j->nrcpt * sizeof(int));
	int *shaped = qalloc((size_t)j->nrcpt * sizeof(int));
	int ndef = 0, nunf = 0, nshaped = 0;
	uint64_t shaped_due = 0;
	bool any_held = false;
	for (int i = 0; i < j->nrcpt; i++) {
		enum job_status st = j->rcpts[i].status;
		switch (st) {
		case JOB_PENDING:
			if (!qj->released) {
				char qr[JOB_ADDR_MAX * 2];
				job_escape(qr, sizeof(qr), j->rcpts[i].addr, strlen(j->rcpts[i].addr),
					   JOB_ESC_QUOTED);
				qlog(q, QUEUE_LOG_ERROR, "evt=rcpt_without_outcome entry=%s rcpt=\"%s\"",
				     j->entry, qr);
			}
			unfinished[nunf++] = i;
			break;
		case JOB_DEFERRED:
			if (j->rcpts[i].not_before_ms > 0) {
				add_result(a, qj, i, JOB_DEFERRED, attempt);
				shaped[nshaped++] = i;
				if (j->rcpts[i].not_before_ms > shaped_due)
					shaped_due = j->rcpts[i].not_before_ms;
			} else if (now >= deadline) {
				add_result(a, qj, i, JOB_EXPIRED, attempt);
			} else {
				add_result(a, qj, i, JOB_DEFERRED, attempt);
				deferred[ndef++] = i;
			}
			break;
		case JOB_HELD:
			add_result(a, qj, i, JOB_HELD, attempt);
			any_held = true;
			break;
		default: /* delivered, bounced (expired/rejected are never set by hosts) */
			add_result(a, qj, i, st, attempt);
			break;
		}
	}
	arg_set_u64(a, nres_slot, (uint64_t)((a->n - first) / JOB_RESULT_NFIELDS));

	int npark_slot = arg(a, "", 0), npark = 0;
	char member[400];
	if (ndef > 0) {
		uint64_t due = now + retry_delay(q, attempt);
		if (due > deadline)
			due = deadline;
		add_park(a, j, 'r', j->entry, due, deferred, ndef, attempt, NULL, NULL);
		npark++;
	}
	if (nshaped > 0) {
		uint64_t wall = qwall(), since = j->since_ms;
		if (shaped_due < wall)
			shaped_due = wall;
		j->since_ms += shaped_due - wall; /* the wait is not taken from the lifetime */
		snprintf(member, sizeof(member), "%s:s", j->entry);
		add_park(a, j, 'r', member, shaped_due, shaped, nshaped, j->attempt, NULL, NULL);
		j->since_ms = since;
		npark++;
	}
	if (nunf > 0) {
		snprintf(member, sizeof(member), "%s:u", j->entry);
		add_park(a, j, 'r', member, now, unfinished, nunf, j->attempt, NULL, NULL);
		npark++;
	}
	if (any_held) {
		/* one park per domain, with the first recipient's reply as the reason */
		for (int d = 0; d < j->ndomain; d++) {
			int n = 0, first_held = -1;
			for (int i = j->domains[d].first; i < j->domains[d].first + j->domains[d].n; i++) {
				if (j->rcpts[i].status == JOB_HELD) {
					if (first_held < 0)
						first_held = i;
					deferred[n++] = i; /* reuse as scratch */
				}
			}
			if (n == 0)
				continue;
			const char *v[JOB_RESULT_NFIELDS];
			size_t l[JOB_RESULT_NFIELDS];
			char scratch[JOB_RESULT_SCRATCH];
			job_result_values(j, first_held, JOB_HELD, attempt, v, l, scratch);
			snprintf(member, sizeof(member), "%s/%s", j->entry, j->domains[d].name);
			add_park(a, j, 'h', member, qwall(), deferred, n, attempt, j->domains[d].name,
				 v[6][0] ? v[6] : "held by policy");
			npark++;
		}
	}
	arg_set_u64(a, npark_slot, (uint64_t)npark);
	/* automatic suppression entries: 5xx bounces of the configured classes */
	int nsupp_slot = arg(a, "", 0), nsupp = 0;
	for (int i = 0; i < j->nrcpt && q->cfg.n_supp_auto > 0; i++) {
		char field[SUPP_KEY_MAX], value[SUPP_VALUE_MAX];
		uint64_t expires;
		if (!qsupp_auto(q, j, i, field, sizeof(field), value, sizeof(value), &expires))
			continue;
		arg_copy(a, field, strlen(field));
		arg_copy(a, value, strlen(value));
		arg_u64(a, expires);
		nsupp++;
	}
	arg_set_u64(a, nsupp_slot, (uint64_t)nsupp);
	free(deferred);
	free(unfinished);
	free(shaped);
}

/* ---- sending ---- */

struct batch {
	int n;
	bool wait;     /* a WAIT follows the commit: on_wait finishes (and frees) it */
	bool requeued; /* the commit failed: its jobs are back in the FIFO */
	struct qjob *jobs[Q_COMMIT_MAX_JOBS];
	bool live[Q_COMMIT_MAX_JOBS]; /* the commit's answer, kept for on_wait */
};

/* A batch's jobs (all of one lane) back at the front of their lane's FIFO. */
static void requeue_front(struct queue *q, struct batch *b)
{
	for (int i = b->n - 1; i >= 0; i--) {
		struct qjob *qj = b->jobs[i];
		struct qlane *l = &q->lanes[qj->job.lane];
		qj->cnext = l->cq_head;
		l->cq_head = qj;
		if (l->cq_tail == NULL)
			l->cq_tail = qj;
		q->cq_n++;
	}
}

static void on_commit(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	struct batch *b = priv;
	redisReply *reply = r;
	if (!b->wait)
		q->commits_out--;
	if (q->freeing) {
		if (!b->wait)
			free(b);
		return;
	}
	b->requeued = reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
		      reply->elements != (size_t)b->n;
	if (reply == NULL) {
		requeue_front(q, b); /* effect unknown: sent again after reconnecting */
	} else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)b->n) {
		const char *e = reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply";
		q->commit_backoff = q->commit_backoff ? q->commit_backoff * 2 : Q_BACKOFF_MIN_MS;
		if (q->commit_backoff > Q_BACKOFF_MAX_MS)
			q->commit_backoff = Q_BACKOFF_MAX_MS;
		if (q->cfg.cluster && q->commit_backoff > Q_CLUSTER_BACKOFF_MAX_MS)
			q->commit_backoff = Q_CLUSTER_BACKOFF_MAX_MS; /* ASK, TRYAGAIN: a slot moving */
		q->commit_hold_until = qnow(q) + q->commit_backoff;
		qlog(q, QUEUE_LOG_ERROR, "evt=commit_failed jobs=%d err=\"%s\" retry_ms=%llu", b->n, e,
		     (unsigned long long)q->commit_backoff);
		requeue_front(q, b);
		if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0)
			qconn_drop(c);
	} else {
		q->commit_backoff = 0;
		for (int i = 0; i < b->n; i++) {
			const redisReply *e = reply->element[i];
			b->live[i] = e->type == REDIS_REPLY_INTEGER && e->integer == 1;
			if (!b->wait)
				qjob_committed(q, b->jobs[i], b->live[i]);
		}
		if (!b->wait)
			qkick_claim(q);
	}
	if (!b->wait)
		free(b);
	if (q->cq_n > 0)
		q->h.timer_arm(q->flush, 0);
}

/* [redis] wait_replicas: the commit counts as done once that many replicas
 * have it. Until then its jobs stay in memory: if the master is lost first,
 * the commit is sent again, to the next master, where the script writes it
 * (not replicated) or skips it (replicated). A commit the replicas did not
 * confirm in time stands on the master (logged): a failover now may lose it,
 * and its jobs are delivered again (README "Sentinel"). */
static void on_wait(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	struct batch *b = priv;
	redisReply *reply = r;
	q->commits_out--;
	if (q->freeing || b->requeued) {
		free(b);
		if (!q->freeing && q->cq_n > 0)
			q->h.timer_arm(q->flush, 0);
		return;
	}
	if (reply == NULL) {
		qlog(q, QUEUE_LOG_INFO, "evt=commit_unconfirmed jobs=%d (lost before the replicas "
		     "confirmed it: sent again)", b->n);
		requeue_front(q, b);
	} else {
		bool shrt = reply->type != REDIS_REPLY_INTEGER || reply->integer < q->cfg.wait_replicas;
		if (shrt || q->wait_short) /* warn when it starts, info while it lasts */
			qlog(q, !shrt ? QUEUE_LOG_INFO : q->wait_short ? QUEUE_LOG_DEBUG : QUEUE_LOG_WARN,
			     "evt=commit_wait%s jobs=%d replicas=%lld want=%d", shrt ? "_short" : "_ok",
			     b->n, reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL,
			     q->cfg.wait_replicas);
		q->wait_short = shrt;
		for (int i = 0; i < b->n; i++)
			qjob_committed(q, b->jobs[i], b->live[i]);
		qkick_claim(q);
	}
	free(b);
	if (q->cq_n > 0)
		q->h.timer_arm(q->flush, 0);
}

void qcommit_enqueue(struct queue *q, struct qjob *qj)
{
	struct qlane *l = &q->lanes[qj->job.lane];
	qj->queued = true;
	qj->cnext = NULL;
	if (l->cq_tail)
		l->cq_tail->cnext = qj;
	else
		l->cq_head = qj;
	l->cq_tail = qj;
	q->cq_n++;
	if (!q->freeing)
		q->h.timer_arm(q->flush, 0);
}

/* Send the commit a holds, with its park hashes inserted among the keys
 * before argument at (the first ARGV). 0 or -1, as qconn_send. */
static int send_with_keys(struct queue *q, struct args *a, struct batch *b, int at)
{
	if (a->nh == 0)
		return qconn_send(&q->cmd, on_commit, b, a->n, a->v, a->l);
	int n = a->n + a->nh;
	const char **v = qalloc((size_t)n * sizeof(*v));
	size_t *l = qalloc((size_t)n * sizeof(*l));
	memcpy(v, a->v, (size_t)at * sizeof(*v));
	memcpy(l, a->l, (size_t)at * sizeof(*l));
	memcpy(v + at, a->hk, (size_t)a->nh * sizeof(*v));
	memcpy(l + at, a->hl, (size_t)a->nh * sizeof(*l));
	memcpy(v + at + a->nh, a->v + at, (size_t)(a->n - at) * sizeof(*v));
	memcpy(l + at + a->nh, a->l + at, (size_t)(a->n - at) * sizeof(*l));
	int rc = qconn_send(&q->cmd, on_commit, b, n, v, l);
	free(v);
	free(l);
	return rc;
}

void qcommit_flush(struct queue *q)
{
	if (q->freeing || q->cmd.state != QC_READY)
		return;
	uint64_t mono = qnow(q);
	if (mono < q->commit_hold_until) {
		q->h.timer_arm(q->flush, q->commit_hold_until - mono);
		return;
	}
	/* With WAIT, one commit on the wire: Redis runs them one after the
	 * other anyway (WAIT blocks the connection), and the jobs that finish
	 * meanwhile go together in the next (a replica gone: a batch of up to
	 * Q_COMMIT_MAX_JOBS per wait_timeout, not one job). */
	unsigned most = q->cfg.wait_replicas > 0 ? 1 : Q_COMMITS_OUT;
	while (q->cq_n > 0 && q->commits_out < most) {
		struct qlane *lane = q->lanes;
		while (lane->cq_head == NULL) /* the first lane with jobs to commit */
			lane++;
		struct batch *b = qalloc(sizeof(*b));
		struct args a = { .retry_key = lane->retry, .held_key = lane->held };
		uint64_t now = qwall();
		arg_str(&a, "EVALSHA");
		arg_str(&a, q->sha_commit);
		int nkeys_slot = arg(&a, "", 0);
		arg_str(&a, lane->stream);
		arg_str(&a, q->cfg.results);
		arg_str(&a, lane->retry);
		arg_str(&a, lane->held);
		arg_str(&a, q->supp_key);
		arg_str(&a, q->supp_exp_key);
		arg_str(&a, q->cfg.group);
		int njobs_slot = arg(&a, "", 0);
		arg_u64(&a, (uint64_t)q->cfg.results_maxlen);
		while (lane->cq_head != NULL && b->n < Q_COMMIT_MAX_JOBS &&
		       (b->n == 0 || a.bytes < Q_COMMIT_MAX_BYTES)) {
			struct qjob *qj = lane->cq_head;
			lane->cq_head = qj->cnext;
			if (lane->cq_head == NULL)
				lane->cq_tail = NULL;
			q->cq_n--;
			b->jobs[b->n++] = qj;
			build_job(q, &a, qj, now);
		}
		arg_set_u64(&a, njobs_slot, (uint64_t)b->n);
		arg_set_u64(&a, nkeys_slot, (uint64_t)(6 + a.nh));
		int rc = send_with_keys(q, &a, b, nkeys_slot + 7);
		args_fini(&a);
		if (rc != 0) {
			requeue_front(q, b);
			free(b);
			return;
		}
		q->commits_out++;
		if (q->cfg.wait_replicas > 0) {
			char n[16], ms[24];
			snprintf(n, sizeof(n), "%d", q->cfg.wait_replicas);
			snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(q->cfg.wait_timeout_ms ?
									 q->cfg.wait_timeout_ms : 1000));
			const char *w[] = { "WAIT", n, ms };
			b->wait = qconn_send(&q->cmd, on_wait, b, 3, w, NULL) == 0;
		}
	}
}
