/* queue.c: the Redis job queue: connections, claims, reclaims, periodic work.
 *
 * Two hiredis async connections, attached to the host's loop by the host's
 * attach function: "claim" runs only XREADGROUP ... BLOCK (so a blocked read
 * never delays an acknowledgement), "cmd" runs everything else: commits
 * (queue_commit.c), reclaims (queue_reclaim.c), heartbeats, the retry mover
 * and statistics.
 * Each connection goes DOWN -> INIT (AUTH, SELECT, SCRIPT LOAD, XGROUP CREATE,
 * CLIENT SETNAME, pipelined) -> READY, and back to DOWN on any loss, with a
 * reconnect after an exponential back-off (100 ms .. 5 s, jittered), so a dead
 * Redis costs a few connects per second at most.
 *
 * Jobs: a claimed entry becomes a struct qjob (decoded, copied), linked in
 * q->jobs and hashed by entry id, so an entry we already hold (claimed twice
 * after a lost reply, or reclaimed from ourselves) is not delivered twice by
 * this process. Admission control: a claim asks for at most max_inflight
 * minus (jobs held + entries asked for by claims on the wire).
 *
 * Lifetimes (STYLE 5): hiredis owns replies (borrowed in callbacks); every
 * command callback runs exactly once, with NULL when the connection dies, and
 * those callbacks may run inside redisAsyncFree. A callback compares its ac
 * with the connection's current one before touching connection state. The
 * queue never calls hiredis from inside the host's job callback path back
 * into itself: commits are flushed from a zero-delay timer. */
#include "queue/queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue_int.h"

/* ---- small helpers ---- */

void *qalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (p == NULL) {
		fprintf(stderr, "mxsend: out of memory allocating %zu bytes\n", n);
		abort();
	}
	return p;
}

char *qstrcat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = qalloc(la + lb + 1);
	memcpy(s, a, la);
	memcpy(s + la, b, lb + 1);
	return s;
}

void qlog(struct queue *q, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	if (q->h.log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	q->h.log(q->h.ctx, level, line);
}

uint64_t qnow(const struct queue *q)
{
	return q->h.mono_ms(q->h.ctx);
}

uint64_t qwall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t qrand(struct queue *q)
{
	q->rng ^= q->rng << 13;
	q->rng ^= q->rng >> 17;
	q->rng ^= q->rng << 5;
	return q->rng;
}

static const char *errstr(const redisAsyncContext *ac)
{
	return (ac != NULL && ac->errstr != NULL && ac->errstr[0] != '\0') ? ac->errstr : "closed";
}

/* ---- the in-flight table: open addressing on (ms, seq), backward-shift delete ---- */

static size_t tslot(const struct queue *q, uint64_t ms, uint64_t seq)
{
	uint64_t h = ms * 0x9E3779B97F4A7C15ull ^ (seq + 0x632BE59BD9B4E019ull) * 0xff51afd7ed558ccdull;
	h ^= h >> 29;
	return (size_t)h & (q->tabcap - 1);
}

static struct qjob *tfind(const struct queue *q, uint64_t ms, uint64_t seq)
{
	for (size_t i = tslot(q, ms, seq);; i = (i + 1) & (q->tabcap - 1)) {
		struct qjob *j = q->tab[i];
		if (j == NULL)
			return NULL;
		if (j->ms == ms && j->seq == seq)
			return j;
	}
}

static void tinsert(struct queue *q, struct qjob *qj)
{
	size_t i = tslot(q, qj->ms, qj->seq);
	while (q->tab[i] != NULL)
		i = (i + 1) & (q->tabcap - 1);
	q->tab[i] = qj;
}

static void tdelete(struct queue *q, struct qjob *qj)
{
	size_t mask = q->tabcap - 1, i = tslot(q, qj->ms, qj->seq);
	while (q->tab[i] != qj) {
		if (q->tab[i] == NULL)
			return;
		i = (i + 1) & mask;
	}
	q->tab[i] = NULL;
	for (size_t j = (i + 1) & mask; q->tab[j] != NULL; j = (j + 1) & mask) {
		size_t k = tslot(q, q->tab[j]->ms, q->tab[j]->seq);
		/* move tab[j] into the hole unless its home slot k lies in (i, j] */
		bool stay = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
		if (!stay) {
			q->tab[i] = q->tab[j];
			q->tab[j] = NULL;
			i = j;
		}
	}
}

/* ---- jobs ---- */

static void job_unlink_free(struct queue *q, struct qjob *qj)
{
	if (qj->prev)
		qj->prev->next = qj->next;
	else
		q->jobs = qj->next;
	if (qj->next)
		qj->next->prev = qj->prev;
	q->bytes_active -= qj->bytes;
	job_fini(&qj->job);
	free(qj);
}

void qjob_committed(struct queue *q, struct qjob *qj, bool live)
{
	qj->queued = false;
	qj->done = true;
	tdelete(q, qj);
	q->nactive--;
	q->lanes[qj->job.lane].active--;
	q->st.committed++;
	if (live) {
		for (int s = 0; s < JOB_NSTATUS; s++)
			q->st.results[s] += qj->nres[s];
	} else {
		q->st.duplicates++;
		qlog(q, QUEUE_LOG_INFO, "evt=commit_skipped entry=%s reason=already_finished",
		     qj->job.entry);
	}
	if (!qj->with_host)
		job_unlink_free(q, qj);
}

void queue_job_done(struct queue *q, struct job *j)
{
	struct qjob *qj = (struct qjob *)(void *)((char *)j - offsetof(struct qjob, job));
	qj->with_host = false;
	if (qj->done) {
		job_unlink_free(q, qj); /* released and already committed */
		return;
	}
	if (!qj->queued)
		qcommit_enqueue(q, qj);
}

void queue_job_bytes(struct queue *q, struct job *j, int64_t n)
{
	struct qjob *qj = (struct qjob *)(void *)((char *)j - offsetof(struct qjob, job));
	if (n < 0 && (uint64_t)-n > qj->bytes)
		n = -(int64_t)qj->bytes; /* a host bug; keep the sums whole */
	qj->bytes += (uint64_t)n;
	q->bytes_active += (uint64_t)n;
	if (n > 0) /* as if the job had been that much larger when claimed */
		q->bytes_avg += (uint64_t)n / (q->bytes_n == 0 ? 1 : q->bytes_n < 8 ? q->bytes_n : 8);
}

void qhand(struct queue *q, struct qjob *qj)
{
	if (q->stopping) {
		qj->released = true; /* arrived after stop: straight back to the queue */
		qcommit_enqueue(q, qj);
	} else {
		qj->with_host = true;
		q->h.job(q->h.ctx, &qj->job);
	}
}

/* A claimed entry: decode it, commit its rejection, or return the valid job
 * (for qsupp_check, then the host). */
static struct qjob *take_entry(struct queue *q, const redisReply *e, int lane, bool reclaimed)
{
	const redisReply *id, *fields;
	uint64_t ms, seq;

	if (e->type != REDIS_REPLY_ARRAY || e->elements < 2)
		return NULL;
	id = e->element[0];
	fields = e->element[1];
	if (id->type != REDIS_REPLY_STRING || job_entry_id_parse(id->str, &ms, &seq) != 0)
		return NULL;
	if (tfind(q, ms, seq) != NULL)
		return NULL; /* already ours and in progress */
	if (fields->type != REDIS_REPLY_ARRAY)
		return NULL; /* deleted entry (Redis 7 drops it from the PEL itself) */

	/* The job adopts the message bytes from the reply (no copy of them): a
	 * string it takes leaves the reply, which is freed after this. */
	size_t n = fields->elements;
	/* kv, adopt and len in one allocation (per job: this is the claim path) */
	char **block = qalloc(n * (2 * sizeof(char *) + sizeof(size_t)) + 1);
	const char **kv = (const char **)block;
	char **adopt = block + n;
	size_t *len = (size_t *)(void *)(block + 2 * n);
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const redisReply *f = fields->element[i];
		bool s = f->type == REDIS_REPLY_STRING || f->type == REDIS_REPLY_STATUS;
		kv[i] = s ? f->str : "";
		len[i] = s ? f->len : 0;
		adopt[i] = s ? f->str : NULL;
		bytes += len[i];
	}
	struct qjob *qj = qalloc(sizeof(*qj));
	qj->bytes = bytes;
	q->bytes_active += bytes;
	/* the mean of the first 8 jobs, then a moving average (1/8 each) */
	if (q->bytes_n < 8)
		q->bytes_n++;
	q->bytes_avg = (q->bytes_avg * (q->bytes_n - 1) + bytes) / q->bytes_n;
	int rc = job_decode_adopt(&qj->job, id->str, n, kv, len, adopt, &q->cfg.limits);
	for (size_t i = 0; i < n; i++) {
		redisReply *f = fields->element[i];
		if ((f->type == REDIS_REPLY_STRING || f->type == REDIS_REPLY_STATUS) && adopt[i] == NULL)
			f->str = NULL; /* the job's now (freeReplyObject frees NULL) */
	}
	free(block);
	qj->job.lane = lane;
	qj->ms = ms;
	qj->seq = seq;
	qj->next = q->jobs;
	if (q->jobs)
		q->jobs->prev = qj;
	q->jobs = qj;
	tinsert(q, qj);
	q->nactive++;
	q->lanes[lane].active++;
	q->st.claimed++;
	if (reclaimed) {
		q->st.reclaimed++;
		qlog(q, QUEUE_LOG_INFO, "evt=job_reclaimed entry=%s", qj->job.entry);
	}
	if (rc != 0) {
		qj->rejected = true;
		/* id and reason quoted: escaped (job_escape), the id cut */
		char qid[256], qwhy[2 * JOB_REASON_MAX];
		job_escape(qid, sizeof(qid), qj->job.id, strlen(qj->job.id), JOB_ESC_QUOTED);
		job_escape(qwhy, sizeof(qwhy), qj->job.reason, strlen(qj->job.reason), JOB_ESC_QUOTED);
		qlog(q, QUEUE_LOG_WARN, "evt=job_rejected entry=%s id=\"%s\" reason=\"%s\"",
		     qj->job.entry, qid, qwhy);
		qcommit_enqueue(q, qj);
		return NULL;
	}
	return qj;
}

void qtake_entries(struct queue *q, const redisReply *list, int lane, bool reclaimed)
{
	if (list == NULL || list->type != REDIS_REPLY_ARRAY || list->elements == 0)
		return;
	struct qjob *one, **valid = list->elements == 1 ? &one : qalloc(list->elements * sizeof(*valid));
	int n = 0;
	for (size_t i = 0; i < list->elements; i++)
		if ((valid[n] = take_entry(q, list->element[i], lane, reclaimed)) != NULL)
			n++;
	qsupp_check(q, valid, n);
	if (valid != &one)
		free(valid);
}

/* ---- connections ---- */

static void conn_connect(struct qconn *c);

/* Arm the reconnect timer with the back-off: reset when the connection had
 * been working for a while, doubled (up to 5 s) when it keeps failing. */
static void schedule_reconnect(struct qconn *c, bool was_ready, const char *why)
{
	struct queue *q = c->q;
	uint64_t now = qnow(q);
	if (was_ready && now - c->ready_at > 2000)
		c->backoff = Q_BACKOFF_MIN_MS;
	else if (c->backoff == 0)
		c->backoff = Q_BACKOFF_MIN_MS;
	else
		c->backoff = c->backoff * 2 > Q_BACKOFF_MAX_MS ? Q_BACKOFF_MAX_MS : c->backoff * 2;
	if (q->cfg.cluster && c->backoff > Q_CLUSTER_BACKOFF_MAX_MS) /* another node may answer */
		c->backoff = Q_CLUSTER_BACKOFF_MAX_MS;
	uint64_t delay = c->backoff / 2 + qrand(q) % (c->backoff / 2 + 1);
	/* warn when it stops working, and when it starts failing; then info */
	bool first = was_ready || !c->failing;
	c->failing = true;
	if (q->sent != NULL) /* the master failed us: ask the sentinels again */
		qsent_stale(q->sent, !was_ready);
	qlog(q, first ? QUEUE_LOG_WARN : QUEUE_LOG_INFO,
	     "evt=redis_down conn=%s err=\"%s\" retry_ms=%llu", c->name, why,
	     (unsigned long long)delay);
	q->h.timer_arm(c->reconnect, delay);
}

void qconn_retry(struct qconn *c, bool was_ready, const char *why)
{
	schedule_reconnect(c, was_ready, why);
}

static void conn_lost(struct qconn *c, const redisAsyncContext *ac)
{
	if (c->ac != ac || ac == NULL)
		return;
	bool was_ready = c->state == QC_READY;
	c->ac = NULL;
	c->state = QC_DOWN;
	c->pending = 0;
	if (c->q->freeing)
		return;
	if (c->q->cfg.cluster) {
		bool routed = c->redirect;
		qcluster_lost(c->q, c);
		if (routed && ++c->hops <= 3) { /* to the slot's node now; back-off if it bounces */
			c->q->h.timer_arm(c->reconnect, 0);
			return;
		}
	}
	schedule_reconnect(c, was_ready, errstr(ac));
}

void qconn_drop(struct qconn *c)
{
	redisAsyncContext *ac = c->ac;
	if (ac == NULL)
		return;
	conn_lost(c, ac);
	redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
}

struct qconn *qconn_reply(redisAsyncContext *ac, const void *reply)
{
	struct qconn *c = ac->data;
	if (c->ac == ac) {
		if (c->pending > 0)
			c->pending--;
		c->progress = qnow(c->q);
		if (reply == NULL) {
			conn_lost(c, ac);
		} else if (((const redisReply *)reply)->type == REDIS_REPLY_ERROR &&
			   (strncmp(((const redisReply *)reply)->str, "READONLY", 8) == 0 ||
			    strncmp(((const redisReply *)reply)->str, "UNBLOCKED", 9) == 0)) {
			/* a replica now (failover): reconnect, to the new master */
			qlog(c->q, QUEUE_LOG_WARN, "evt=redis_readonly conn=%s", c->name);
			qconn_drop(c);
		} else if (c->q->cfg.cluster && ((const redisReply *)reply)->type == REDIS_REPLY_ERROR) {
			qcluster_error(c, reply); /* MOVED: to the slot's new node */
		}
	}
	return c;
}

static char *put_len(char *p, char tag, size_t n)
{
	*p++ = tag;
	p += u64_dec(p, n);
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

/* redisAsyncCommandArgv, formatted here: hiredis formats each argument with
 * its printf-like sdscatfmt, which was a tenth of the queue thread's time in
 * commits of a hundred jobs (bench q1). len NULL: the arguments are C strings.
 * REDIS_OK or REDIS_ERR, as hiredis's. */
static int command_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *priv, int argc,
			const char **argv, const size_t *len)
{
	char small[4096];
	size_t total = 24;
	for (int i = 0; i < argc; i++)
		total += (len ? len[i] : strlen(argv[i])) + 26;
	char *buf = total <= sizeof(small) ? small : malloc(total);
	if (buf == NULL)
		return REDIS_ERR;
	char *p = put_len(buf, '*', (size_t)argc);
	for (int i = 0; i < argc; i++) {
		size_t n = len ? len[i] : strlen(argv[i]);
		p = put_len(p, '$', n);
		memcpy(p, argv[i], n);
		p += n;
		*p++ = '\r';
		*p++ = '\n';
	}
	int rc = redisAsyncFormattedCommand(ac, fn, priv, buf, (size_t)(p - buf));
	if (buf != small)
		free(buf);
	return rc;
}

static int send_raw(struct qconn *c, redisCallbackFn *fn, void *priv, int argc,
		    const char **argv, const size_t *len)
{
	if (c->ac == NULL)
		return -1;
	if (command_argv(c->ac, fn, priv, argc, argv, len) != REDIS_OK)
		return -1;
	if (c->pending++ == 0)
		c->progress = qnow(c->q);
	return 0;
}

int qconn_send(struct qconn *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
	       const size_t *len)
{
	if (c->state != QC_READY)
		return -1;
	return send_raw(c, fn, priv, argc, argv, len);
}

static int sendv(struct qconn *c, redisCallbackFn *fn, void *priv, int argc, const char **argv)
{
	return qconn_send(c, fn, priv, argc, argv, NULL);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct qconn *c = ac->data;
	if (status != REDIS_OK)
		conn_lost(c, ac);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	conn_lost(ac->data, ac);
}

enum init_step {
	I_AUTH, I_SELECT, I_SCRIPT_COMMIT, I_SCRIPT_MOVE, I_SCRIPT_GC, I_SCRIPT_PEERS, I_GROUP, I_NAME,
	I_SCRIPT_DEAD, I_ROLE, I_SLOTS /* last: the numbers above appear in logs (step=) */
};

static void conn_ready(struct qconn *c)
{
	struct queue *q = c->q;
	c->state = QC_READY;
	c->hops = 0;
	c->ready_at = qnow(q);
	c->failing = false;
	qlog(q, QUEUE_LOG_INFO, "evt=redis_ready conn=%s", c->name);
	if (c->claim)
		qkick_claim(q);
	else
		qcommit_flush(q);
}

static void on_init(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	enum init_step step = (enum init_step)(intptr_t)priv;
	if (reply == NULL || c->ac != ac || q->freeing)
		return;
	if (step == I_ROLE) { /* Sentinel: is it still the master? */
		if (!qsent_role_ok(q, c, reply))
			qconn_drop(c);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		if (step == I_GROUP && strncmp(reply->str, "BUSYGROUP", 9) == 0)
			return; /* the group exists: fine */
		if (step == I_GROUP && strncmp(reply->str, "NOREPLICAS", 10) == 0) {
			q->need_group = true; /* min-replicas-to-write: the tick tries again */
			return;
		}
		qlog(q, QUEUE_LOG_ERROR, "evt=redis_init_failed conn=%s step=%d err=\"%s\"", c->name,
		     (int)step, reply->str);
		qconn_drop(c);
		return;
	}
	if (step == I_SLOTS && !qcluster_slots(c, reply))
		return; /* on its way to the slot's node */
	char *sha = step == I_SCRIPT_COMMIT ? q->sha_commit
		    : step == I_SCRIPT_MOVE ? q->sha_move
		    : step == I_SCRIPT_GC   ? q->sha_gc
		    : step == I_SCRIPT_PEERS ? q->sha_peers
		    : step == I_SCRIPT_DEAD ? q->sha_dead
					    : NULL;
	if (sha != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40)
		memcpy(sha, reply->str, 41);
	if (step == I_NAME)
		conn_ready(c);
}

static void init_cmd(struct qconn *c, enum init_step step, int argc, const char **argv)
{
	send_raw(c, on_init, (void *)(intptr_t)step, argc, argv, NULL);
}

redisAsyncContext *qconn_dial(struct queue *q, const char *host, int port, char *why, size_t n)
{
	if (q->addr.tls)
		return q->h.connect_tls(q->h.ctx, &q->cfg.tls, host, port, why, n); /* queue_new checked */
	redisAsyncContext *ac = redisAsyncConnect(host, port);
	if (ac == NULL)
		snprintf(why, n, "out of memory");
	return ac;
}

static void conn_connect(struct qconn *c)
{
	struct queue *q = c->q;
	redisAsyncContext *ac;
	if (q->freeing || c->ac != NULL)
		return;
	char why[256] = "out of memory";
	if (q->sent != NULL && !qsent_addr(q->sent, c))
		return; /* asking the sentinels: connected when they answer */
	if (q->addr.path[0] != '\0')
		ac = redisAsyncConnectUnix(q->addr.path);
	else
		ac = qconn_dial(q, q->addr.host, q->addr.port, why, sizeof(why));
	c->started = qnow(q);
	if (ac == NULL || ac->err) {
		/* A synchronous failure (refused at once): same as a loss. */
		if (ac != NULL) {
			snprintf(why, sizeof(why), "%s", errstr(ac));
			redisAsyncFree(ac);
		}
		if (q->cfg.cluster)
			qcluster_lost(q, c);
		schedule_reconnect(c, false, why);
		return;
	}
	ac->data = c;
	int rc = q->h.attach(q->h.ctx, ac);
	if (rc != 0) {
		qlog(q, QUEUE_LOG_ERROR, "evt=redis_attach_failed conn=%s err=%d", c->name, rc);
		redisAsyncFree(ac);
		q->h.timer_arm(c->reconnect, Q_BACKOFF_MAX_MS);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	c->ac = ac;
	c->state = QC_INIT;
	c->pending = 0;

	/* Pipelined initialization; CLIENT SETNAME comes last and marks READY. */
	char db[16], name[300];
	if (q->username[0] != '\0') { /* an ACL user (Redis 6) */
		const char *a[] = { "AUTH", q->username, q->password };
		init_cmd(c, I_AUTH, 3, a);
	} else if (q->password[0] != '\0') {
		const char *a[] = { "AUTH", q->password };
		init_cmd(c, I_AUTH, 2, a);
	}
	if (q->cfg.cluster) { /* first: are we at the queue's slot's master? */
		const char *a[] = { "CLUSTER", "SLOTS" };
		init_cmd(c, I_SLOTS, 2, a);
	}
	if (q->addr.db != 0) {
		snprintf(db, sizeof(db), "%d", q->addr.db);
		const char *a[] = { "SELECT", db };
		init_cmd(c, I_SELECT, 2, a);
	}
	if (q->sent != NULL) {
		const char *a[] = { "ROLE" };
		init_cmd(c, I_ROLE, 1, a);
	}
	if (!c->claim) {
		const char *a1[] = { "SCRIPT", "LOAD", qscript_commit };
		init_cmd(c, I_SCRIPT_COMMIT, 3, a1);
		const char *a2[] = { "SCRIPT", "LOAD", qscript_move };
		init_cmd(c, I_SCRIPT_MOVE, 3, a2);
		const char *a3[] = { "SCRIPT", "LOAD", qscript_gc };
		init_cmd(c, I_SCRIPT_GC, 3, a3);
		const char *a6[] = { "SCRIPT", "LOAD", qscript_peers };
		init_cmd(c, I_SCRIPT_PEERS, 3, a6);
		const char *a7[] = { "SCRIPT", "LOAD", qscript_dead };
		init_cmd(c, I_SCRIPT_DEAD, 3, a7);
		for (int i = 0; i < q->nlanes; i++) {
			const char *a4[] = { "XGROUP", "CREATE", q->lanes[i].stream, q->cfg.group, "0",
					     "MKSTREAM" };
			init_cmd(c, I_GROUP, 6, a4);
		}
		q->need_group = false;
	}
	/* Client names may not contain spaces. */
	snprintf(name, sizeof(name), "mxsend:%s:%s", c->name, q->cfg.consumer);
	for (char *p = name; *p; p++)
		if (*p == ' ')
			*p = '_';
	const char *a5[] = { "CLIENT", "SETNAME", name };
	init_cmd(c, I_NAME, 3, a5);
}

void qconn_connect(struct qconn *c)
{
	conn_connect(c);
}

static void on_reconnect(void *arg)
{
	conn_connect(arg);
}

/* Drop a connection that stopped answering (SIGSTOPped or wedged Redis, lost
 * network): its callbacks all get NULL and we reconnect. */
static void watchdog(struct qconn *c, uint64_t now)
{
	if (c->ac == NULL)
		return;
	uint64_t limit = Q_REPLY_TIMEOUT_MS + (c->claim ? Q_BLOCK_MS : 0);
	if (c->state == QC_INIT && now - c->started > Q_CONNECT_TIMEOUT_MS) {
		qlog(c->q, QUEUE_LOG_WARN, "evt=redis_timeout conn=%s what=connect", c->name);
		qconn_drop(c);
	} else if (c->pending > 0 && now - c->progress > limit) {
		qlog(c->q, QUEUE_LOG_WARN, "evt=redis_timeout conn=%s what=reply pending=%u", c->name,
		     c->pending);
		qconn_drop(c);
	}
}

/* ---- claiming ---- */

unsigned qroom(const struct queue *q)
{
	unsigned cap = (unsigned)q->cfg.max_inflight, used = q->nactive + q->claim_req;
	return used >= cap ? 0 : cap - used;
}

/* May we take jobs yet? With cfg.peers_settle, not before the other processes
 * have had a heartbeat period to see this one in J:procs (so none of them
 * still counts itself alone when we start using our share). */
static bool settled(const struct queue *q)
{
	return !q->cfg.peers_settle ||
	       (q->peers_since != 0 && qnow(q) >= q->peers_since + Q_PEERS_SETTLE_MS);
}

/* Claims wait for room for a quarter of what the caps hold (or a full batch):
 * a claim for every few jobs finished would cost a round trip, a reply and a
 * wake-up of the workers each. */
unsigned qclaim_count(unsigned room, unsigned batch, unsigned max_inflight, uint64_t cap_bytes,
		      uint64_t active_bytes, uint64_t avg_bytes, uint64_t max_size, bool idle)
{
	uint64_t n = room < batch ? room : batch;
	uint64_t low = max_inflight / 4 < batch ? max_inflight / 4 : batch;
	if (cap_bytes > 0) {
		uint64_t avg = avg_bytes ? avg_bytes : max_size ? max_size : 1;
		uint64_t fit = active_bytes < cap_bytes ? (cap_bytes - active_bytes) / avg : 0;
		if (fit < n)
			n = fit;
		if (cap_bytes / avg / 4 < low)
			low = cap_bytes / avg / 4;
	}
	if (idle) /* nothing in flight: no reason to wait, and a job larger than
		   * the byte cap still goes, alone */
		return n > 0 ? (unsigned)n : room > 0;
	return n == 0 || n < low ? 0 : (unsigned)n;
}

void qkick_claim(struct queue *q)
{
	if (q->stopping || q->freeing || q->claim_out || q->supp_out > 0 || q->clm.state != QC_READY ||
	    q->cmd.state != QC_READY || !settled(q))
		return;
	unsigned n = qclaim_count(qroom(q), (unsigned)q->cfg.batch, (unsigned)q->cfg.max_inflight,
				  q->cfg.max_inflight_bytes, q->bytes_active, q->bytes_avg,
				  q->cfg.limits.max_size, q->nactive == 0 && q->claim_req == 0);
	if (n == 0)
		return;
	if (q->dead_left > 0) { /* a dead process's jobs first: they are the older */
		if (!q->dead_out)
			qdead_reclaim(q, n);
		return;
	}
	if (!q->own_done) {
		qclaim_own(q, n);
		return;
	}
	qlanes_claim(q, n); /* queue_lanes.c */
}

/* ---- periodic work on the cmd connection ---- */

static void on_simple(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	const char *what = priv;
	if (strcmp(what, "heartbeat") == 0)
		q->heartbeat_out--;
	else if (strcmp(what, "gc") == 0)
		q->gc_out--;
	else if (strcmp(what, "peers") == 0) {
		q->peers_out = false;
		if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
		    reply->element[0]->type == REDIS_REPLY_INTEGER &&
		    reply->element[1]->type == REDIS_REPLY_INTEGER) {
			int n = (int)reply->element[0]->integer, rank = (int)reply->element[1]->integer;
			if (q->peers_since == 0)
				q->peers_since = qnow(q);
			if ((n != q->st.peers || rank != q->st.peer_rank) && q->h.peers)
				q->h.peers(q->h.ctx, n, rank);
			q->st.peers = n;
			q->st.peer_rank = rank;
		}
	}
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !q->freeing) {
		qlog(q, QUEUE_LOG_WARN, "evt=redis_error what=%s err=\"%s\"", what, reply->str);
		if (strncmp(reply->str, "NOSCRIPT", 8) == 0)
			qconn_drop(c); /* reconnecting loads the scripts again */
	} else if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && strcmp(what, "gc") == 0 &&
		   reply->integer > 0) {
		qlog(q, QUEUE_LOG_INFO, "evt=consumers_removed n=%lld", reply->integer);
	}
}

/* Keep the jobs we are delivering claimed: XCLAIM ... 0 ids JUSTID resets their
 * idle time, so other processes' XAUTOCLAIM leaves them alone. */
static void heartbeat_lane(struct queue *q, int lane)
{
	const char *a[6 + Q_HEARTBEAT_IDS + 1];
	int n = 0;
	a[0] = "XCLAIM";
	a[1] = q->lanes[lane].stream;
	a[2] = q->cfg.group;
	a[3] = q->cfg.consumer;
	a[4] = "0";
	for (struct qjob *qj = q->jobs; qj != NULL; qj = qj->next) {
		if (qj->done || qj->job.lane != lane)
			continue;
		a[5 + n++] = qj->job.entry;
		if (n == Q_HEARTBEAT_IDS) {
			a[5 + n] = "JUSTID";
			if (sendv(&q->cmd, on_simple, "heartbeat", 6 + n, a) == 0)
				q->heartbeat_out++;
			n = 0;
		}
	}
	if (n > 0) {
		a[5 + n] = "JUSTID";
		if (sendv(&q->cmd, on_simple, "heartbeat", 6 + n, a) == 0)
			q->heartbeat_out++;
	}
}

static void heartbeat(struct queue *q)
{
	for (int i = 0; i < q->nlanes; i++)
		heartbeat_lane(q, i);
}

static void on_move(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	q->move_out--;
	if (reply == NULL || q->freeing)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		qlog(q, QUEUE_LOG_WARN, "evt=retry_move_failed err=\"%s\"", reply->str);
		if (strncmp(reply->str, "NOSCRIPT", 8) == 0)
			qconn_drop(c);
	} else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
		qlog(q, QUEUE_LOG_DEBUG, "evt=retries_due n=%lld", reply->integer);
		if (priv != NULL) /* a full batch: more may be due, again at the next tick */
			q->next_move = qnow(q);
	}
}

/* A lane's due retries being moved: the lane, and the time they were due by. */
struct due {
	int lane;
	char now[24];
};

/* The due members of a lane (ZRANGEBYSCORE) came back: move them, naming each
 * one's hash among the script's keys. */
static void on_due(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	struct due *d = priv;
	q->move_out--;
	if (reply == NULL || q->freeing || reply->type != REDIS_REPLY_ARRAY) {
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !q->freeing)
			qlog(q, QUEUE_LOG_WARN, "evt=retry_move_failed err=\"%s\"", reply->str);
		free(d);
		return;
	}
	const struct qlane *lane = &q->lanes[d->lane];
	size_t n = 0, kl = strlen(lane->retry);
	for (size_t i = 0; i < reply->elements; i++)
		n += reply->element[i]->type == REDIS_REPLY_STRING;
	if (n == 0 || c->state != QC_READY) {
		free(d);
		return;
	}
	const char **a = qalloc((6 + 2 * n) * sizeof(*a));
	size_t *l = qalloc((6 + 2 * n) * sizeof(*l));
	char **keys = qalloc(n * sizeof(*keys)), nk[24];
	snprintf(nk, sizeof(nk), "%zu", n + 2);
	a[0] = "EVALSHA", a[1] = q->sha_move, a[2] = nk, a[3] = lane->retry, a[4] = lane->stream;
	size_t k = 0;
	for (size_t i = 0; i < reply->elements; i++) {
		const redisReply *m = reply->element[i];
		if (m->type != REDIS_REPLY_STRING)
			continue;
		keys[k] = qalloc(kl + 1 + m->len + 1);
		memcpy(keys[k], lane->retry, kl);
		keys[k][kl] = ':';
		memcpy(keys[k] + kl + 1, m->str, m->len);
		a[5 + k] = keys[k], l[5 + k] = kl + 1 + m->len;
		a[5 + n + 1 + k] = m->str, l[5 + n + 1 + k] = m->len;
		k++;
	}
	a[5 + n] = d->now, l[5 + n] = strlen(d->now);
	for (int i = 0; i < 5; i++)
		l[i] = strlen(a[i]);
	bool full = reply->elements >= Q_MOVE_LIMIT;
	if (qconn_send(c, on_move, full ? q : NULL, (int)(6 + 2 * n), a, l) == 0)
		q->move_out++;
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	free(a);
	free(l);
	free(d);
}

static void move_due(struct queue *q)
{
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", Q_MOVE_LIMIT);
	for (int i = 0; i < q->nlanes; i++) { /* each lane's retries back to its stream */
		struct due *d = qalloc(sizeof(*d));
		d->lane = i;
		snprintf(d->now, sizeof(d->now), "%llu", (unsigned long long)qwall());
		const char *a[] = { "ZRANGEBYSCORE", q->lanes[i].retry, "-inf", d->now, "LIMIT", "0",
				    limit };
		if (sendv(&q->cmd, on_due, d, 7, a) == 0)
			q->move_out++;
		else
			free(d);
	}
}

/* Forget consumers of dead processes once they hold nothing (host:pid names
 * would otherwise pile up in XINFO CONSUMERS). */
static void gc_consumers(struct queue *q)
{
	char idle[24];
	uint64_t ms = q->cfg.visibility_ms * 10;
	snprintf(idle, sizeof(idle), "%llu", (unsigned long long)(ms < 600000 ? 600000 : ms));
	for (int i = 0; i < q->nlanes; i++) {
		const char *a[] = { "EVALSHA",	  q->sha_gc,	   "1", q->lanes[i].stream,
				    q->cfg.group, q->cfg.consumer, idle };
		if (sendv(&q->cmd, on_simple, "gc", 7, a) == 0)
			q->gc_out++;
	}
}

/* Say we are alive in J:procs and learn how many processes share the queue
 * (max_connections_total is split between them). */
static void peers(struct queue *q)
{
	char gone[24];
	snprintf(gone, sizeof(gone), "%d", Q_PEERS_GONE_MS);
	const char *a[] = { "EVALSHA", q->sha_peers, "1", q->procs_key, q->cfg.consumer, gone };
	if (sendv(&q->cmd, on_simple, "peers", 6, a) == 0)
		q->peers_out = true;
}

static void on_group(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	(void)priv;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0)
		c->q->need_group = true;
}

static void on_tick(void *arg)
{
	struct queue *q = arg;
	uint64_t now = qnow(q);
	watchdog(&q->cmd, now);
	watchdog(&q->clm, now);
	if (q->cmd.state == QC_READY) {
		if (q->need_group) {
			q->need_group = false;
			for (int i = 0; i < q->nlanes; i++) {
				const char *a[] = { "XGROUP", "CREATE", q->lanes[i].stream, q->cfg.group,
						    "0",      "MKSTREAM" };
				if (sendv(&q->cmd, on_group, NULL, 6, a) != 0)
					q->need_group = true;
			}
		}
		if (!q->stopping && !q->move_out && now >= q->next_move) {
			move_due(q);
			q->next_move = now + Q_MOVE_MS;
		}
		if (!q->stopping && !q->reclaim_out && now >= q->next_reclaim && settled(q)) {
			q->next_reclaim = now + q->reclaim_ms;
			qreclaim(q);
		}
		/* Only once connected for a heartbeat expiry: after an outage of
		 * Redis (or of our link to it) the others need that long to say
		 * again that they are alive. */
		if (!q->stopping && !q->dead_out && now >= q->next_dead && settled(q) &&
		    now - q->cmd.ready_at >= Q_PEERS_GONE_MS) {
			q->next_dead = now + Q_DEAD_MS;
			unsigned n = qroom(q);
			qdead_reclaim(q, n < (unsigned)q->cfg.batch ? n : (unsigned)q->cfg.batch);
		}
		if (q->heartbeat_out == 0 && now >= q->next_heartbeat) {
			q->next_heartbeat = now + q->heartbeat_ms;
			heartbeat(q);
		}
		if (!q->stats_out && now >= q->next_stats) {
			q->next_stats = now + Q_STATS_MS;
			qlanes_stats(q);
		}
		if (!q->peers_out && now >= q->next_peers) {
			q->next_peers = now + Q_PEERS_MS;
			peers(q);
		}
		if (!q->stopping && !q->gc_out && now >= q->next_gc) {
			q->next_gc = now + Q_GC_MS;
			gc_consumers(q);
			if (q->cfg.suppress && !q->prune_out)
				qsupp_prune(q);
		}
		qcommit_flush(q);
	}
	qkick_claim(q);
	q->h.timer_arm(q->tick, Q_TICK_MS);
}

static void on_flush(void *arg)
{
	qcommit_flush(arg);
}

/* ---- public ---- */

struct queue *queue_new(const struct queue_config *cfg, const struct queue_host *h, char *err,
			size_t errlen)
{
	struct queue *q = qalloc(sizeof(*q));
	q->cfg = *cfg;
	q->h = *h;
	if (queue_url_parse(cfg->url, &q->addr, err, errlen) != 0)
		goto fail;
	if (q->addr.tls && h->connect_tls == NULL) {
		snprintf(err, errlen, "queue: rediss:// (TLS) is not available here");
		goto fail;
	}
	q->password = (cfg->password && cfg->password[0]) ? cfg->password : q->addr.password;
	q->username = (cfg->username && cfg->username[0]) ? cfg->username : q->addr.username;
	if (cfg->max_inflight <= 0 || cfg->batch <= 0 || cfg->limits.addr_ok == NULL ||
	    cfg->limits.split == NULL || cfg->jobs == NULL || cfg->results == NULL ||
	    cfg->group == NULL || cfg->consumer == NULL) {
		snprintf(err, errlen, "queue: incomplete configuration");
		goto fail;
	}
	if (cfg->cluster && (q->addr.path[0] != '\0' || q->addr.db != 0)) {
		snprintf(err, errlen, "queue: a Redis Cluster needs a redis://HOST:PORT url (database 0)");
		goto fail;
	}
	if (cfg->cluster && queue_key_slot(cfg->jobs, strlen(cfg->jobs)) !=
				    queue_key_slot(cfg->results, strlen(cfg->results))) {
		snprintf(err, errlen, "queue: in a Redis Cluster the jobs key \"%s\" and the results "
			 "key \"%s\" must share a hash tag, e.g. {mxsend}:jobs and {mxsend}:results",
			 cfg->jobs, cfg->results);
		goto fail;
	}
	if (cfg->cluster && qcluster_init(q, err, errlen) != 0)
		goto fail;
	if (cfg->n_lanes < 0 || cfg->n_lanes > QUEUE_LANES_MAX ||
	    (cfg->n_lanes > 0 && cfg->lanes == NULL)) {
		snprintf(err, errlen, "queue: bad lanes (at most %d)", QUEUE_LANES_MAX);
		goto fail;
	}
	q->nlanes = qlanes_init(cfg, q->lanes);
	if (q->nlanes > 1) { /* queue_lanes.c: the first lane's reserve */
		int r = cfg->max_inflight / 8 < cfg->batch ? cfg->max_inflight / 8 : cfg->batch;
		q->reserve = r > 0 ? (unsigned)r : 1;
	}
	if (cfg->max_inflight < q->nlanes) {
		snprintf(err, errlen, "max_inflight (%d) is below the number of lanes (%d)",
			 cfg->max_inflight, q->nlanes);
		qlanes_fini(q->lanes, q->nlanes);
		goto fail;
	}
	for (int i = 0; cfg->cluster && i < q->nlanes; i++) /* J:lane:NAME: J's hash tag */
		if (queue_key_slot(q->lanes[i].stream, strlen(q->lanes[i].stream)) != q->slot) {
			snprintf(err, errlen, "queue: lane %s's stream \"%s\" is not in the jobs key's "
				 "hash slot", q->lanes[i].name, q->lanes[i].stream);
			qlanes_fini(q->lanes, q->nlanes);
			goto fail;
		}
	if (cfg->sentinels != NULL && cfg->sentinels[0] != '\0' &&
	    (q->sent = qsent_new(q, err, errlen)) == NULL) {
		qlanes_fini(q->lanes, q->nlanes);
		goto fail;
	}
	q->procs_key = qstrcat(cfg->jobs, ":procs");
	q->supp_key = qstrcat(cfg->jobs, ":suppress");
	q->supp_exp_key = qstrcat(cfg->jobs, ":suppress:exp");
	q->tabcap = 64;
	while (q->tabcap < 2 * (size_t)cfg->max_inflight + 16)
		q->tabcap *= 2;
	q->tab = qalloc(q->tabcap * sizeof(*q->tab));
	q->rng = (uint32_t)qwall() ^ ((uint32_t)getpid() << 16) ^ 0x9e3779b9u;
	if (q->rng == 0)
		q->rng = 1;
	q->cmd = (struct qconn){ .q = q, .name = "cmd" };
	q->clm = (struct qconn){ .q = q, .name = "claim", .claim = true };
	q->cmd.reconnect = h->timer_new(h->ctx, on_reconnect, &q->cmd);
	q->clm.reconnect = h->timer_new(h->ctx, on_reconnect, &q->clm);
	q->tick = h->timer_new(h->ctx, on_tick, q);
	q->flush = h->timer_new(h->ctx, on_flush, q);
	uint64_t v = cfg->visibility_ms ? cfg->visibility_ms : 300000;
	q->cfg.visibility_ms = v;
	q->reclaim_ms = v / 4 < 250 ? 250 : v / 4 > 30000 ? 30000 : v / 4;
	q->heartbeat_ms = v / 3 < 250 ? 250 : v / 3;
	strcpy(q->reclaim_cursor, "0-0");
	strcpy(q->own_cursor, "0-0");
	q->st.depth = q->st.retry = q->st.held = -1;
	return q;
fail:
	free(q);
	return NULL;
}

void queue_start(struct queue *q)
{
	if (q->started)
		return;
	q->started = true;
	conn_connect(&q->cmd);
	conn_connect(&q->clm);
	q->h.timer_arm(q->tick, Q_TICK_MS);
}

void queue_stop(struct queue *q)
{
	q->stopping = true;
}

void queue_release(struct queue *q)
{
	for (struct qjob *qj = q->jobs; qj != NULL; qj = qj->next) {
		if (qj->with_host && !qj->done && !qj->queued) {
			qj->released = true;
			qcommit_enqueue(q, qj);
		}
	}
}

bool queue_idle(const struct queue *q)
{
	return q->nactive == 0 && q->commits_out == 0 && q->cq_n == 0 && !q->claim_out &&
	       !q->reclaim_out && !q->dead_out;
}

void queue_get_stats(const struct queue *q, struct queue_stats *st)
{
	*st = q->st;
	st->inflight = q->nactive;
	st->inflight_bytes = q->bytes_active;
	st->connected = q->cmd.state == QC_READY && q->clm.state == QC_READY;
}

void queue_free(struct queue *q)
{
	if (q == NULL)
		return;
	q->freeing = true;
	/* Callbacks run with NULL replies inside redisAsyncFree; they only do
	 * bookkeeping now that freeing is set. */
	struct qconn *conns[] = { &q->clm, &q->cmd };
	for (int i = 0; i < 2; i++) {
		redisAsyncContext *ac = conns[i]->ac;
		if (ac != NULL) {
			conns[i]->ac = NULL;
			redisAsyncFree(ac);
		}
	}
	qsent_free(q->sent);
	while (q->jobs != NULL)
		job_unlink_free(q, q->jobs);
	q->h.timer_free(q->cmd.reconnect);
	q->h.timer_free(q->clm.reconnect);
	q->h.timer_free(q->tick);
	q->h.timer_free(q->flush);
	free(q->tab);
	qlanes_fini(q->lanes, q->nlanes);
	free(q->procs_key);
	free(q->supp_key);
	free(q->supp_exp_key);
	free(q);
}
