/* tlsrpt_store.c: TLSRPT counters in Redis, through the async queue's
 * command connection (tlsrpt_queue_event) or a synchronous hiredis context
 * (struct tlsrpt_store, for `mxsend tlsrpt` and other short-lived commands).
 * Keys, fields and the counting commands come from tlscache/tlsrpt.c. */
#include "queue/tlsrpt_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue/queue_int.h"

static char *dupn(const char *s, size_t n)
{
	char *d = qalloc(n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static void on_event_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	(void)priv;
	if (reply == NULL || c->q->freeing)
		return;
	if (reply->type == REDIS_REPLY_ERROR)
		qlog(c->q, QUEUE_LOG_WARN, "evt=tlsrpt_count_failed err=\"%s\"", reply->str);
	else if (reply->type == REDIS_REPLY_ARRAY) /* EXEC */
		for (size_t i = 0; i < reply->elements; i++)
			if (reply->element[i]->type == REDIS_REPLY_ERROR)
				qlog(c->q, QUEUE_LOG_WARN, "evt=tlsrpt_count_failed err=\"%s\"",
				     reply->element[i]->str);
}

static int q_emit(void *arg, int argc, const char **argv, const size_t *len)
{
	struct qconn *c = arg;
	return qconn_send(c, on_event_reply, NULL, argc, argv, len) == 0 ? 0 : -ENOTCONN;
}

static int q_null(void *arg, int argc, const char **argv, const size_t *len)
{
	(void)arg;
	(void)argc;
	(void)argv;
	(void)len;
	return 0;
}

int tlsrpt_queue_event(struct queue *q, const struct tls_event *ev, const char *prefix)
{
	struct qconn *c = &q->cmd;
	if (tlsrpt_event_cmds(ev, prefix, q_null, NULL) < 0)
		return -EINVAL; /* checked first: never leave a MULTI open for a bad event */
	if (c->state != QC_READY)
		return -ENOTCONN;
	const char *multi[] = { "MULTI" }, *exec[] = { "EXEC" }, *discard[] = { "DISCARD" };
	if (qconn_send(c, on_event_reply, NULL, 1, multi, NULL) != 0)
		return -ENOTCONN;
	if (tlsrpt_event_cmds(ev, prefix, q_emit, c) < 0) {
		if (qconn_send(c, on_event_reply, NULL, 1, discard, NULL) != 0)
			qconn_drop(c);
		return -ENOTCONN;
	}
	if (qconn_send(c, on_event_reply, NULL, 1, exec, NULL) != 0) {
		qconn_drop(c); /* a MULTI left open would swallow the next commands */
		return -ENOTCONN;
	}
	return 0;
}

/* ---- synchronous store ---- */

struct tlsrpt_store {
	redisContext *c;
	char *prefix;
};

struct tlsrpt_store *tlsrpt_store_open(const struct queue_config *qc, const char *prefix, char *err,
				       size_t errlen)
{
	char key[300];
	redisContext *c;
	if (qc->cluster && tlsrpt_key(key, sizeof(key), prefix, TLSRPT_KEY_DAYS, "x", NULL) > 0)
		c = qcluster_sync_open(qc, key, err, errlen); /* the prefix's slot */
	else
		c = qsync_connect(qc, err, errlen);
	if (c == NULL)
		return NULL;
	struct tlsrpt_store *s = qalloc(sizeof(*s));
	s->c = c;
	s->prefix = strdup(prefix ? prefix : TLSRPT_PREFIX);
	if (s->prefix == NULL)
		abort();
	return s;
}

void tlsrpt_store_close(struct tlsrpt_store *s)
{
	if (s == NULL)
		return;
	redisFree(s->c);
	free(s->prefix);
	free(s);
}

static int sync_emit(void *arg, int argc, const char **argv, const size_t *len)
{
	struct tlsrpt_store *s = arg;
	return redisAppendCommandArgv(s->c, argc, argv, len) == REDIS_OK ? 0 : -EIO;
}

int tlsrpt_store_record(struct tlsrpt_store *s, const struct tls_event *ev, char *err,
			size_t errlen)
{
	if (tlsrpt_event_cmds(ev, s->prefix, q_null, NULL) < 0) {
		snprintf(err, errlen, "tlsrpt: event for \"%s\" cannot be counted", ev->policy_domain);
		return -1;
	}
	const char *multi[] = { "MULTI" }, *exec[] = { "EXEC" };
	int n = -1;
	if (redisAppendCommandArgv(s->c, 1, multi, NULL) != REDIS_OK ||
	    (n = tlsrpt_event_cmds(ev, s->prefix, sync_emit, s)) < 0 ||
	    redisAppendCommandArgv(s->c, 1, exec, NULL) != REDIS_OK) {
		snprintf(err, errlen, "redis: tlsrpt count: %s", s->c->errstr[0] ? s->c->errstr : "out of memory");
		return -1; /* the connection is in an unknown state: the caller closes it */
	}
	for (int i = 0; i < n + 2; i++) {
		redisReply *r = NULL;
		if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
			r = NULL;
		if (qsync_reply_err(s->c, r, "tlsrpt count", err, errlen) != 0)
			return -1;
		freeReplyObject(r);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int tlsrpt_store_domains(struct tlsrpt_store *s, const char *day, char ***out, char *err,
			 size_t errlen)
{
	char key[512];
	if (tlsrpt_key(key, sizeof(key), s->prefix, TLSRPT_KEY_DAYS, day, NULL) < 0) {
		snprintf(err, errlen, "tlsrpt: key too long");
		return -1;
	}
	const char *av[] = { "SMEMBERS", key };
	redisReply *r = redisCommandArgv(s->c, 2, av, NULL);
	if (qsync_reply_err(s->c, r, "SMEMBERS", err, errlen) != 0)
		return -1;
	int n = 0;
	char **v = qalloc((r->type == REDIS_REPLY_ARRAY ? r->elements : 0) * sizeof(*v) + 1);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_STRING)
			v[n++] = dupn(r->element[i]->str, r->element[i]->len);
	freeReplyObject(r);
	if (n > 1)
		qsort(v, (size_t)n, sizeof(*v), cmp_str);
	*out = v;
	return n;
}

void tlsrpt_strv_free(char **v, int n)
{
	for (int i = 0; v != NULL && i < n; i++)
		free(v[i]);
	free(v);
}

int tlsrpt_store_load(struct tlsrpt_store *s, const char *day, const char *domain,
		      struct tlsrpt_counts *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->domain, sizeof(c->domain), "%s", domain);
	char key[768];
	if (tlsrpt_key(key, sizeof(key), s->prefix, TLSRPT_KEY_COUNTS, day, domain) < 0) {
		snprintf(err, errlen, "tlsrpt: key too long");
		return -1;
	}
	const char *av[] = { "HGETALL", key };
	redisReply *r = redisCommandArgv(s->c, 2, av, NULL);
	if (qsync_reply_err(s->c, r, "HGETALL", err, errlen) != 0)
		return -1;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		const redisReply *f = r->element[i], *v = r->element[i + 1];
		if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
			tlsrpt_counts_add(c, f->str, f->len, v->str, v->len);
	}
	freeReplyObject(r);
	tlsrpt_counts_finish(c);
	return 0;
}

/* KEYS[1] = the sent hash; ARGV = rua, report id, now, stale seconds, ttl. */
static const char claim_lua[] =
	"local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
	"if v then\n"
	"  local st, ts = string.match(v, '^(%S+) %S+ (%d+)$')\n"
	"  if not (st == 'sending' and tonumber(ts) + tonumber(ARGV[4]) < tonumber(ARGV[3])) then\n"
	"    return v\n"
	"  end\n"
	"end\n"
	"redis.call('HSET', KEYS[1], ARGV[1], 'sending ' .. ARGV[2] .. ' ' .. ARGV[3])\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[5])\n"
	"return 1\n";

/* KEYS[1] = the sent hash; ARGV = rua, "sending ID " (our claim), new value or "", ttl. */
static const char finish_lua[] =
	"local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
	"if not v or string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return 0 end\n"
	"if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end\n"
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
	"return 1\n";

int tlsrpt_store_claim(struct tlsrpt_store *s, const char *day, const char *domain,
		       const char *rua, const char *report_id, char *state, size_t statelen,
		       char *err, size_t errlen)
{
	char key[768], now[24], stale[24], ttl[24];
	if (tlsrpt_key(key, sizeof(key), s->prefix, TLSRPT_KEY_SENT, day, domain) < 0) {
		snprintf(err, errlen, "tlsrpt: key too long");
		return -1;
	}
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	snprintf(stale, sizeof(stale), "%d", TLSRPT_STALE_S);
	snprintf(ttl, sizeof(ttl), "%d", TLSRPT_TTL_S);
	const char *av[] = { "EVAL", claim_lua, "1", key, rua, report_id, now, stale, ttl };
	redisReply *r = redisCommandArgv(s->c, 9, av, NULL);
	if (qsync_reply_err(s->c, r, "claim", err, errlen) != 0)
		return -1;
	int rc = 1;
	if (r->type == REDIS_REPLY_STRING) {
		snprintf(state, statelen, "%s", r->str);
		rc = 0;
	}
	freeReplyObject(r);
	return rc;
}

int tlsrpt_store_finish(struct tlsrpt_store *s, const char *day, const char *domain,
			const char *rua, const char *report_id, bool sent, char *err,
			size_t errlen)
{
	char key[768], mine[128], val[128], ttl[24];
	if (tlsrpt_key(key, sizeof(key), s->prefix, TLSRPT_KEY_SENT, day, domain) < 0) {
		snprintf(err, errlen, "tlsrpt: key too long");
		return -1;
	}
	snprintf(mine, sizeof(mine), "sending %s ", report_id);
	if (sent)
		snprintf(val, sizeof(val), "sent %s %lld", report_id, (long long)time(NULL));
	else
		val[0] = '\0';
	snprintf(ttl, sizeof(ttl), "%d", TLSRPT_TTL_S);
	const char *av[] = { "EVAL", finish_lua, "1", key, rua, mine, val, ttl };
	redisReply *r = redisCommandArgv(s->c, 8, av, NULL);
	if (qsync_reply_err(s->c, r, "finish", err, errlen) != 0)
		return -1;
	freeReplyObject(r);
	return 0;
}
