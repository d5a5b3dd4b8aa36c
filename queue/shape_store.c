/* shape_store.c: the shaping state per (source, provider) in Redis
 * (shape_store.h). One script call per pair and sync; the key is given as
 * KEYS[1], never built inside Lua. */
#include "queue/shape_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"

/* KEYS[1]: the pair's hash. ARGV: now, cut_rate, cut_rule, susp_until,
 * susp_rule, ok, max_rate, max_conn, cut_conn, step, cstep.
 * A process that cut (cut_rate > 0: the rate it cut to, from the state it
 * had) lowers the state to it; two processes cutting on the same replies cut
 * from the same state to the same value, so the lower one wins and the cut
 * counts once. step and cstep (the process's: increase x the rate and the
 * budget before its cut) are added per second while good replies
 * come (at most 5 s at once), back to the provider's limits (then the
 * fields say 0 and the key goes). Returns {rate, conn, until, rule, cuts}. */
static const char script[] =
	"local k = KEYS[1]\n"
	"local now = tonumber(ARGV[1])\n"
	"local crate, crule = tonumber(ARGV[2]), ARGV[3]\n"
	"local suntil, srule = tonumber(ARGV[4]), ARGV[5]\n"
	"local ok = tonumber(ARGV[6])\n"
	"local maxr, maxc, cconn = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])\n"
	"local stepin, cstepin = tonumber(ARGV[10]), tonumber(ARGV[11])\n"
	"local s = redis.call('HMGET', k, 'rate', 'conn', 'step', 'cstep', 't', 'until', 'rule', "
	"'cuts')\n"
	"local rate, conn = tonumber(s[1]) or 0, tonumber(s[2]) or 0\n"
	"local step, cstep = tonumber(s[3]) or 0, tonumber(s[4]) or 0\n"
	"local t, untl = tonumber(s[5]) or now, tonumber(s[6]) or 0\n"
	"local rule, n = s[7] or '', tonumber(s[8]) or 0\n"
	"local dirty = false\n"
	"if crate > 0 and (rate <= 0 or crate < rate) then\n"
	"  rate = crate; step = stepin; t = now; rule = crule; n = n + 1; dirty = true\n"
	"  if cconn > 0 and (conn <= 0 or cconn < conn) then conn = cconn; cstep = cstepin end\n"
	"elseif ok > 0 and (rate > 0 or conn > 0) then\n"
	"  local dt = math.min((now - t) / 1000, 5)\n"
	"  if dt > 0 then\n"
	"    if rate > 0 then rate = rate + step * dt end\n"
	"    if conn > 0 then conn = conn + cstep * dt end\n"
	"    if maxr > 0 and rate >= maxr then rate = 0 end\n"
	"    if maxc <= 0 or conn >= maxc then conn = 0 end\n"
	"    t = now; dirty = true\n"
	"  end\n"
	"end\n"
	"if suntil > untl then untl = suntil; rule = srule; dirty = true end\n"
	"if dirty then\n"
	"  if rate <= 0 and conn <= 0 and untl <= now then\n"
	"    redis.call('DEL', k)\n"
	"  else\n"
	"    redis.call('HSET', k, 'rate', rate, 'conn', conn, 'step', step, 'cstep', cstep, "
	"'t', t, 'until', untl, 'rule', rule, 'cuts', n, 'at', now)\n"
	"    redis.call('PEXPIRE', k, 86400000)\n"
	"  end\n"
	"end\n"
	"return {tostring(rate), tostring(conn), tostring(untl), rule, tostring(n)}\n";

int shape_store_key(char *buf, size_t len, const char *jobs, const char *source,
		    const char *provider)
{
	int n = snprintf(buf, len, "%s:shape:%s:%s", jobs, source, provider);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

struct call {
	shape_store_fn *fn;
	void *arg;
};

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	struct call *call = priv;
	struct shape_store_out out;
	memset(&out, 0, sizeof(out));
	bool good = reply != NULL && !c->q->freeing && reply->type == REDIS_REPLY_ARRAY &&
		    reply->elements == 5;
	for (size_t i = 0; good && i < 5; i++)
		good = reply->element[i]->type == REDIS_REPLY_STRING;
	if (good) {
		out.rate = strtod(reply->element[0]->str, NULL);
		out.conn = strtod(reply->element[1]->str, NULL);
		out.until = (uint64_t)strtod(reply->element[2]->str, NULL);
		snprintf(out.rule, sizeof(out.rule), "%s", reply->element[3]->str);
		out.cuts = (uint64_t)strtod(reply->element[4]->str, NULL);
	} else if (reply != NULL && !c->q->freeing && reply->type == REDIS_REPLY_ERROR) {
		qlog(c->q, QUEUE_LOG_WARN, "evt=shaping_sync_failed err=\"%s\"", reply->str);
	}
	call->fn(call->arg, good ? &out : NULL);
	free(call);
}

int shape_store_sync(struct queue *q, const char *key, const struct shape_store_in *in,
		     shape_store_fn *fn, void *arg)
{
	struct qconn *c = &q->cmd;
	if (c->state != QC_READY)
		return -ENOTCONN;
	char v[9][40];
	snprintf(v[0], sizeof(v[0]), "%llu", (unsigned long long)in->now);
	snprintf(v[1], sizeof(v[1]), "%.6g", in->cut_rate);
	snprintf(v[2], sizeof(v[2]), "%llu", (unsigned long long)in->susp_until);
	snprintf(v[3], sizeof(v[3]), "%u", in->ok);
	snprintf(v[4], sizeof(v[4]), "%.6g", in->max_rate);
	snprintf(v[5], sizeof(v[5]), "%d", in->max_conn);
	snprintf(v[6], sizeof(v[6]), "%.6g", in->cut_conn);
	snprintf(v[7], sizeof(v[7]), "%.6g", in->step);
	snprintf(v[8], sizeof(v[8]), "%.6g", in->cstep);
	const char *av[] = { "EVAL", script, "1", key, v[0], v[1], in->cut_rule, v[2],
			     in->susp_rule, v[3], v[4], v[5], v[6], v[7], v[8] };
	struct call *call = qalloc(sizeof(*call));
	call->fn = fn;
	call->arg = arg;
	if (qconn_sendv(c, on_reply, call, (int)(sizeof(av) / sizeof(av[0])), av) != 0) {
		free(call);
		return -ENOTCONN;
	}
	return 0;
}

/* KEYS[1]: J:warmup:SOURCE. ARGV: today, provider, delta. */
static const char warm_script[] =
	"local k, today, f, delta = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])\n"
	"if delta > 0 then redis.call('HSETNX', k, 'first', today) end\n"
	"local first = tonumber(redis.call('HGET', k, 'first'))\n"
	"local n = redis.call('HINCRBY', k, f .. ':' .. today, delta)\n"
	"redis.call('HDEL', k, f .. ':' .. (today - 2))\n"
	"if first == nil then return {-1, n} end\n"
	"return {today - first, n}\n";

int shape_store_warm_key(char *buf, size_t len, const char *jobs, const char *source)
{
	int n = snprintf(buf, len, "%s:warmup:%s", jobs, source);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

struct wcall {
	shape_warm_fn *fn;
	void *arg;
};

static void on_warm_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	struct wcall *call = priv;
	struct shape_warm_out out = { 0, 0 };
	bool good = reply != NULL && !c->q->freeing && reply->type == REDIS_REPLY_ARRAY &&
		    reply->elements == 2 && reply->element[0]->type == REDIS_REPLY_INTEGER &&
		    reply->element[1]->type == REDIS_REPLY_INTEGER;
	if (good) {
		out.day = (int)reply->element[0]->integer;
		out.count = reply->element[1]->integer > 0 ? (uint64_t)reply->element[1]->integer : 0;
	} else if (reply != NULL && !c->q->freeing && reply->type == REDIS_REPLY_ERROR) {
		qlog(c->q, QUEUE_LOG_WARN, "evt=warmup_sync_failed err=\"%s\"", reply->str);
	}
	call->fn(call->arg, good ? &out : NULL);
	free(call);
}

int shape_store_warm(struct queue *q, const char *key, uint64_t today, const char *provider,
		     uint32_t delta, shape_warm_fn *fn, void *arg)
{
	struct qconn *c = &q->cmd;
	if (c->state != QC_READY)
		return -ENOTCONN;
	char t[24], d[16];
	snprintf(t, sizeof(t), "%llu", (unsigned long long)today);
	snprintf(d, sizeof(d), "%u", delta);
	const char *av[] = { "EVAL", warm_script, "1", key, t, provider, d };
	struct wcall *call = qalloc(sizeof(*call));
	call->fn = fn;
	call->arg = arg;
	if (qconn_sendv(c, on_warm_reply, call, 7, av) != 0) {
		free(call);
		return -ENOTCONN;
	}
	return 0;
}

void shape_store_fields(int n, const char *const *kv, struct shape_store_out *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i + 1 < n; i += 2) {
		const char *k = kv[i], *v = kv[i + 1];
		if (strcmp(k, "rate") == 0)
			out->rate = strtod(v, NULL);
		else if (strcmp(k, "conn") == 0)
			out->conn = strtod(v, NULL);
		else if (strcmp(k, "until") == 0)
			out->until = (uint64_t)strtod(v, NULL);
		else if (strcmp(k, "cuts") == 0)
			out->cuts = (uint64_t)strtod(v, NULL);
		else if (strcmp(k, "rule") == 0)
			snprintf(out->rule, sizeof(out->rule), "%s", v);
	}
}

struct list {
	shape_store_each_fn *fn;
	void *arg;
};

static void listed(void *arg, const char *key, const redisReply *g)
{
	struct list *l = arg;
	const char *kv[64];
	int m = 0;
	for (size_t e = 0; g->type == REDIS_REPLY_ARRAY && e < g->elements && m < 64; e++)
		kv[m++] = g->element[e]->type == REDIS_REPLY_STRING ? g->element[e]->str : "";
	l->fn(l->arg, key, m, kv);
}

int shape_store_list(struct queue_sync *s, const char *jobs, shape_store_each_fn *fn, void *arg,
		     char *err, size_t errlen)
{
	char pattern[512];
	snprintf(pattern, sizeof(pattern), "%s:shape:*", jobs);
	struct list l = { fn, arg };
	return qsync_scan_keys(s, pattern, "HGETALL", listed, &l, err, errlen);
}
