/* queue_suppress.c: the suppression list (queue/suppress.h has the layout)
 * where the queue meets it.
 *
 * Claim time: the valid jobs of one claim reply are held back until one HMGET
 * of J:suppress, for every recipient's address and every job's @domain, has
 * answered (one round trip per claimed batch, nothing per recipient; on the
 * claim connection between two claims, else on the cmd connection). Then each recipient on the list gets a `suppressed` outcome
 * (the entry's code, "suppressed (address|domain): REASON") and leaves the
 * delivery (job_prune_decided); the rest goes to the host as before. A job
 * with nobody left is committed without the host. When the check cannot be
 * made (no connection, an error reply) the jobs go back to the queue at once,
 * no attempt counted: mail is never sent unchecked.
 *
 * Commit time (queue_commit.c): a 5xx bounce whose class is configured
 * (qsupp_auto) adds the address in the same script that writes its result.
 *
 * Every Q_GC_MS: entries whose expiry passed are deleted (qsupp_prune). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"
#include "queue/suppress.h"

#define SUPP_PRUNE_LIMIT 1000 /* expired entries deleted per prune call */
#define SUPP_CHUNK 1000       /* fields per command of the synchronous tools */

struct supp_check {
	int n;
	struct qjob *jobs[];
};

/* The job's fields in HMGET order: each recipient's address, then "@" and each
 * domain. Appended to args (pointers into pool); returns how many. */
static size_t job_fields(const struct job *j, const char **av, size_t *al, char **pool)
{
	size_t n = 0;
	const char *why;
	for (int i = 0; i < j->nrcpt; i++) {
		size_t l = strlen(j->norm[i]);
		int k = supp_key('a', j->norm[i], l, *pool, l + 1, &why);
		av[n] = *pool;
		al[n] = k < 0 ? 0 : (size_t)k; /* "" never matches a field mxsend writes */
		*pool += l + 1;
		n++;
	}
	for (int d = 0; d < j->ndomain; d++) {
		size_t l = strlen(j->domains[d].name);
		int k = supp_key('d', j->domains[d].name, l, *pool, l + 2, &why);
		av[n] = *pool;
		al[n] = k < 0 ? 0 : (size_t)k;
		*pool += l + 2;
		n++;
	}
	return n;
}

/* Recipient i is on the list: its outcome. */
static void suppressed(struct job *j, int i, const redisReply *v, const char *what)
{
	struct supp_entry e;
	supp_parse(v->str, v->len, &e);
	struct job_outcome o;
	memset(&o, 0, sizeof(o));
	o.status = JOB_SUPPRESSED;
	supp_code(&e, &o.code, o.dsn, sizeof(o.dsn));
	size_t rl = e.reason_len < SUPP_REASON_MAX ? e.reason_len : SUPP_REASON_MAX;
	snprintf(o.reply, sizeof(o.reply), "suppressed (%s)%s%.*s", what, rl ? ": " : "", (int)rl,
		 e.reason);
	snprintf(o.tls, sizeof(o.tls), "none");
	job_set_outcome(j, i, &o); /* escapes what an application wrote */
}

static bool active(const redisReply *v, uint64_t now)
{
	if (v == NULL || v->type != REDIS_REPLY_STRING)
		return false;
	struct supp_entry e;
	supp_parse(v->str, v->len, &e);
	return supp_active(&e, now);
}

/* The check could not be made: back to the queue, attempt not counted. */
static void put_back(struct queue *q, struct supp_check *c, const char *why)
{
	qlog(q, QUEUE_LOG_ERROR, "evt=suppress_check_failed jobs=%d err=\"%s\" (jobs put back)", c->n,
	     why);
	for (int k = 0; k < c->n; k++) {
		c->jobs[k]->released = true;
		qcommit_enqueue(q, c->jobs[k]);
	}
}

static void on_check(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *conn = qconn_reply(ac, r);
	struct queue *q = conn->q;
	struct supp_check *c = priv;
	redisReply *reply = r;
	q->supp_out--;
	if (q->freeing) { /* the jobs are queue_free's */
		free(c);
		return;
	}
	size_t want = 0;
	for (int k = 0; k < c->n; k++)
		want += (size_t)c->jobs[k]->job.nrcpt + (size_t)c->jobs[k]->job.ndomain;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != want) {
		put_back(q, c, reply == NULL                        ? "connection lost"
			       : reply->type == REDIS_REPLY_ERROR ? reply->str
								  : "unexpected reply");
		free(c);
		qkick_claim(q);
		return;
	}
	uint64_t now = qwall() / 1000;
	size_t pos = 0;
	for (int k = 0; k < c->n; k++) {
		struct qjob *qj = c->jobs[k];
		struct job *j = &qj->job;
		const redisReply *const *addr = (const redisReply *const *)reply->element + pos;
		const redisReply *const *dom = addr + j->nrcpt;
		pos += (size_t)j->nrcpt + (size_t)j->ndomain;
		int nsupp = 0;
		for (int i = 0; i < j->nrcpt; i++) {
			const redisReply *a = addr[i], *d = dom[j->rcpts[i].dom];
			if (active(a, now))
				suppressed(j, i, a, "address");
			else if (active(d, now))
				suppressed(j, i, d, "domain");
			else
				continue;
			nsupp++;
		}
		if (nsupp == 0) {
			qhand(q, qj);
			continue;
		}
		qlog(q, QUEUE_LOG_INFO, "evt=job_suppressed entry=%s suppressed=%d rcpts=%d", j->entry, nsupp,
		     j->nrcpt);
		if (job_prune_decided(j) == 0)
			qcommit_enqueue(q, qj); /* nothing to deliver */
		else
			qhand(q, qj);
	}
	free(c);
	qkick_claim(q); /* the claims held while this was out */
}

void qsupp_check(struct queue *q, struct qjob **jobs, int n)
{
	if (n == 0)
		return;
	if (!q->cfg.suppress) {
		for (int k = 0; k < n; k++)
			qhand(q, jobs[k]);
		return;
	}
	struct supp_check *c = qalloc(sizeof(*c) + (size_t)n * sizeof(c->jobs[0]));
	c->n = n;
	memcpy(c->jobs, jobs, (size_t)n * sizeof(jobs[0]));
	size_t nf = 0, bytes = 0;
	for (int k = 0; k < n; k++) {
		const struct job *j = &jobs[k]->job;
		nf += (size_t)j->nrcpt + (size_t)j->ndomain;
		for (int i = 0; i < j->nrcpt; i++)
			bytes += strlen(j->norm[i]) + 1;
		for (int d = 0; d < j->ndomain; d++)
			bytes += strlen(j->domains[d].name) + 2;
	}
	/* argv, lengths and the lowercased fields in one block */
	char *block = qalloc((nf + 2) * (sizeof(char *) + sizeof(size_t)) + bytes);
	const char **av = (const char **)(void *)block;
	size_t *al = (size_t *)(void *)(block + (nf + 2) * sizeof(char *));
	char *pool = block + (nf + 2) * (sizeof(char *) + sizeof(size_t));
	av[0] = "HMGET";
	al[0] = 5;
	av[1] = q->supp_key;
	al[1] = strlen(q->supp_key);
	size_t at = 2;
	for (int k = 0; k < n; k++)
		at += job_fields(&jobs[k]->job, av + at, al + at, &pool);
	/* The claim connection when no blocking read is out on it (right after a
	 * claim's reply: the next XREADGROUP goes after this), so the lookup does
	 * not wait behind the commits on the cmd connection; else cmd. */
	struct qconn *conn = !q->claim_out && q->clm.state == QC_READY ? &q->clm : &q->cmd;
	int rc = qconn_send(conn, on_check, c, (int)at, av, al);
	free(block);
	if (rc == 0)
		q->supp_out++;
	if (rc != 0) {
		put_back(q, c, "no Redis connection");
		free(c);
	}
}

static void on_prune(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	(void)priv;
	c->q->prune_out = false;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !c->q->freeing)
		qlog(c->q, QUEUE_LOG_WARN, "evt=suppress_prune_failed err=\"%s\"", reply->str);
	else if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
		qlog(c->q, QUEUE_LOG_INFO, "evt=suppress_pruned entries=%lld", reply->integer);
}

/* KEYS: suppress, suppress:exp. ARGV: now (epoch s), limit. Deletes up to
 * limit entries due in exp whose value still says they expired (an entry
 * written again since, without expiry, stays). Returns how many. */
static const char qscript_prune[] =
	"local now = tonumber(ARGV[1])\n"
	"local n = 0\n"
	"for _, f in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do\n"
	"  redis.call('ZREM', KEYS[2], f)\n"
	"  local v = redis.call('HGET', KEYS[1], f)\n"
	"  local e = v and tonumber(string.match(v, '^(%d+)|'))\n"
	"  if e and e > 0 and e <= now then redis.call('HDEL', KEYS[1], f); n = n + 1 end\n"
	"end\n"
	"return n\n";

void qsupp_prune(struct queue *q)
{
	char now[24], limit[24];
	snprintf(now, sizeof(now), "%llu", (unsigned long long)(qwall() / 1000));
	snprintf(limit, sizeof(limit), "%d", SUPP_PRUNE_LIMIT);
	const char *a[] = { "EVAL", qscript_prune, "2", q->supp_key, q->supp_exp_key, now, limit };
	if (qconn_sendv(&q->cmd, on_prune, NULL, 7, a) == 0)
		q->prune_out = true;
}

bool qsupp_auto(const struct queue *q, const struct job *j, int idx, char *field, size_t fieldlen,
		char *value, size_t valuelen, uint64_t *expires)
{
	const struct job_rcpt *r = &j->rcpts[idx];
	if (q->cfg.n_supp_auto == 0 || r->status != JOB_BOUNCED || r->code < 500 || r->code > 599)
		return false;
	const char *dsn, *reply, *cls;
	job_rcpt_texts(j, idx, &dsn, &reply, &cls);
	int k = 0;
	while (k < q->cfg.n_supp_auto && strcmp(q->cfg.supp_auto[k], cls) != 0)
		k++;
	if (k == q->cfg.n_supp_auto)
		return false;
	const char *why;
	if (supp_key('a', j->norm[idx], strlen(j->norm[idx]), field, fieldlen, &why) < 0)
		return false;
	uint64_t ms = qwall(), now = ms / 1000;
	*expires = q->cfg.supp_auto_ttl_ms ? (ms + q->cfg.supp_auto_ttl_ms + 999) / 1000 : 0;
	char code[32], reason[SUPP_REASON_MAX];
	snprintf(code, sizeof(code), "%d%s%s", r->code, dsn[0] ? " " : "", dsn);
	snprintf(reason, sizeof(reason), "%s (auto): %s", cls, reply);
	supp_format(value, valuelen, *expires, now, code, reason);
	return true;
}

/* ---- synchronous (mxsend suppress) ---- */

static char *skey(const struct queue_sync *s, const char *tail)
{
	size_t a = strlen(s->cfg->jobs), b = strlen(tail);
	char *k = qalloc(a + b + 1);
	memcpy(k, s->cfg->jobs, a);
	memcpy(k + a, tail, b + 1);
	return k;
}

/* Send cmd[0..argc) (pipelined: the reply is read by get_reply). */
static int append(struct queue_sync *s, int argc, const char **av, const size_t *al, char *err,
		  size_t errlen)
{
	if (redisAppendCommandArgv(s->c, argc, av, al) != REDIS_OK) {
		snprintf(err, errlen, "redis: %s", s->c->errstr[0] ? s->c->errstr : "out of memory");
		return -1;
	}
	return 0;
}

static redisReply *get_reply(struct queue_sync *s, const char *what, char *err, size_t errlen)
{
	redisReply *r = NULL;
	if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
		r = NULL;
	if (qsync_reply_err(s->c, r, what, err, errlen) != 0)
		return NULL;
	return r;
}

int queue_sync_suppress_add(struct queue_sync *s, const char *const *fields, int n,
			    const char *value, uint64_t expires, char *err, size_t errlen)
{
	char *h = skey(s, ":suppress"), *z = skey(s, ":suppress:exp"), score[24];
	snprintf(score, sizeof(score), "%llu", (unsigned long long)expires);
	int rc = 0, sent = 0;
	/* per field: HSET h f v; ZADD z score f | ZREM z f. Pipelined, SUPP_CHUNK at a time. */
	for (int base = 0; base < n && rc == 0; base += SUPP_CHUNK) {
		int m = n - base < SUPP_CHUNK ? n - base : SUPP_CHUNK;
		for (int i = 0; i < m && rc == 0; i++) {
			const char *f = fields[base + i];
			const char *hs[] = { "HSET", h, f, value };
			rc = append(s, 4, hs, NULL, err, errlen);
			if (rc == 0 && expires != 0) {
				const char *za[] = { "ZADD", z, score, f };
				rc = append(s, 4, za, NULL, err, errlen);
			} else if (rc == 0) {
				const char *zr[] = { "ZREM", z, f };
				rc = append(s, 3, zr, NULL, err, errlen);
			}
		}
		for (int i = 0; i < 2 * m; i++) {
			redisReply *r = get_reply(s, "HSET", err, errlen);
			if (r == NULL) {
				rc = -1;
				break;
			}
			freeReplyObject(r);
		}
		sent += m;
	}
	free(h);
	free(z);
	return rc == 0 ? sent : -1;
}

int queue_sync_suppress_del(struct queue_sync *s, const char *const *fields, int n, char *err,
			    size_t errlen)
{
	char *h = skey(s, ":suppress"), *z = skey(s, ":suppress:exp");
	int rc = 0, removed = 0;
	for (int base = 0; base < n && rc == 0; base += SUPP_CHUNK) {
		int m = n - base < SUPP_CHUNK ? n - base : SUPP_CHUNK;
		for (int i = 0; i < m && rc == 0; i++) {
			const char *hd[] = { "HDEL", h, fields[base + i] };
			const char *zr[] = { "ZREM", z, fields[base + i] };
			rc = append(s, 3, hd, NULL, err, errlen);
			if (rc == 0)
				rc = append(s, 3, zr, NULL, err, errlen);
		}
		for (int i = 0; i < 2 * m; i++) {
			redisReply *r = get_reply(s, "HDEL", err, errlen);
			if (r == NULL) {
				rc = -1;
				break;
			}
			if (i % 2 == 0 && r->type == REDIS_REPLY_INTEGER)
				removed += (int)r->integer;
			freeReplyObject(r);
		}
	}
	free(h);
	free(z);
	return rc == 0 ? removed : -1;
}

int queue_sync_suppress_get(struct queue_sync *s, const char *const *fields, int n,
			    void (*fn)(void *arg, int i, const char *value, size_t len), void *arg,
			    char *err, size_t errlen)
{
	char *h = skey(s, ":suppress");
	const char **av = qalloc((SUPP_CHUNK + 2) * sizeof(*av));
	int rc = 0;
	for (int base = 0; base < n && rc == 0; base += SUPP_CHUNK) {
		int m = n - base < SUPP_CHUNK ? n - base : SUPP_CHUNK;
		av[0] = "HMGET";
		av[1] = h;
		for (int i = 0; i < m; i++)
			av[2 + i] = fields[base + i];
		redisReply *r = redisCommandArgv(s->c, m + 2, av, NULL);
		if (qsync_reply_err(s->c, r, "HMGET", err, errlen) != 0) {
			rc = -1;
			break;
		}
		for (int i = 0; i < m; i++) {
			const redisReply *e = r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)m
						      ? r->element[i]
						      : NULL;
			bool str = e != NULL && e->type == REDIS_REPLY_STRING;
			fn(arg, base + i, str ? e->str : NULL, str ? e->len : 0);
		}
		freeReplyObject(r);
	}
	free(av);
	free(h);
	return rc == 0 ? n : -1;
}

int queue_sync_suppress_list(struct queue_sync *s,
			     void (*fn)(void *arg, const char *field, const char *value, size_t len),
			     void *arg, char *err, size_t errlen)
{
	char *h = skey(s, ":suppress"), cursor[32] = "0";
	int count = 0, rc = 0;
	do {
		const char *av[] = { "HSCAN", h, cursor, "COUNT", "1000" };
		redisReply *r = redisCommandArgv(s->c, 5, av, NULL);
		if (qsync_reply_err(s->c, r, "HSCAN", err, errlen) != 0) {
			rc = -1;
			break;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(err, errlen, "redis: HSCAN: unexpected reply");
			freeReplyObject(r);
			rc = -1;
			break;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		const redisReply *kv = r->element[1];
		for (size_t i = 0; i + 1 < kv->elements; i += 2) {
			fn(arg, kv->element[i]->str ? kv->element[i]->str : "",
			   kv->element[i + 1]->str ? kv->element[i + 1]->str : "", kv->element[i + 1]->len);
			count++;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	free(h);
	return rc == 0 ? count : -1;
}
