/* queue_reclaim.c: crash recovery, the ways a job claimed by a process that
 * is gone (or stuck) comes back:
 *   - dead consumers (qscript_dead, queue_commit.c): every 2 s, the pending
 *     entries of consumers whose process's heartbeat in J:procs stopped 10 s
 *     ago (or never was) are XCLAIMed; the consumer is then deleted;
 *   - our own consumer's pending entries, read back once at start (a restart
 *     under the same host:pid);
 *   - XAUTOCLAIM after [redis] visibility_timeout, for a live process that is
 *     stuck (its heartbeat goes on, its jobs do not).
 * Every claim here counts in q->claim_req while on the wire, like XREADGROUP's.
 * Each works lane by lane (queue.h "lanes"): the lane's stream is the key. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "queue/queue_int.h"

/* Our consumer's own pending entries, read back once at start: a process
 * restarted under the same name (same host and pid: pid 1 in a container)
 * finds its previous life's jobs there, which neither XREADGROUP > nor the
 * dead-consumer look-up would give it before the visibility timeout. */
static void on_own(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	q->claim_out = false;
	q->claim_req -= (unsigned)(uintptr_t)priv;
	if (reply == NULL || q->freeing)
		return;
	size_t got = 0;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
	    reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2) {
		const redisReply *list = reply->element[0]->element[1];
		if (list->type == REDIS_REPLY_ARRAY && list->elements > 0) {
			got = list->elements;
			const redisReply *last = list->element[got - 1];
			if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
			    last->element[0]->type == REDIS_REPLY_STRING)
				snprintf(q->own_cursor, sizeof(q->own_cursor), "%s", last->element[0]->str);
			else
				got = 0;
		}
		if (got > 0)
			qlog(q, QUEUE_LOG_WARN, "evt=own_pending_reclaimed n=%zu lane=%s", got,
			     q->lanes[q->own_lane].name);
		qtake_entries(q, list, q->own_lane, true);
	}
	if (got == 0) { /* error, none, or none left: the next lane, then new entries */
		strcpy(q->own_cursor, "0-0");
		if (++q->own_lane >= q->nlanes)
			q->own_done = true;
	}
	qkick_claim(q);
}

/* Read back up to n of our consumer's pending entries (on the claim
 * connection; on_own goes on until none is left). */
void qclaim_own(struct queue *q, unsigned n)
{
	char count[16];
	snprintf(count, sizeof(count), "%u", n);
	const char *a[] = { "XREADGROUP", "GROUP",   q->cfg.group,		     q->cfg.consumer,
			    "COUNT",	  count,     "STREAMS", q->lanes[q->own_lane].stream,
			    q->own_cursor };
	if (qconn_sendv(&q->clm, on_own, (void *)(uintptr_t)n, 9, a) == 0) {
		q->claim_out = true;
		q->claim_req += n;
	}
}

static void on_reclaim(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	q->reclaim_out = false;
	q->claim_req -= (unsigned)(uintptr_t)priv;
	if (reply == NULL || q->freeing)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		qlog(q, QUEUE_LOG_ERROR, "evt=reclaim_failed err=\"%s\"", reply->str);
		if (strncmp(reply->str, "NOGROUP", 7) == 0)
			q->need_group = true;
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	snprintf(q->reclaim_cursor, sizeof(q->reclaim_cursor), "%s", reply->element[0]->str);
	size_t got = reply->element[1]->type == REDIS_REPLY_ARRAY ? reply->element[1]->elements : 0;
	qtake_entries(q, reply->element[1], q->reclaim_lane, true);
	/* More to scan: go on at the next tick rather than waiting a full period;
	 * this lane scanned through: the next lane at the next tick, and after
	 * the last one, the next period. */
	if (got > 0 && strcmp(q->reclaim_cursor, "0-0") != 0)
		q->next_reclaim = qnow(q);
	else if (strcmp(q->reclaim_cursor, "0-0") == 0 && ++q->reclaim_lane < q->nlanes)
		q->next_reclaim = qnow(q);
	if (q->reclaim_lane >= q->nlanes)
		q->reclaim_lane = 0;
}

void qreclaim(struct queue *q)
{
	unsigned n = qroom(q);
	if (n > (unsigned)q->cfg.batch)
		n = (unsigned)q->cfg.batch;
	if (n == 0)
		return;
	char idle[24], count[16];
	snprintf(idle, sizeof(idle), "%llu", (unsigned long long)q->cfg.visibility_ms);
	snprintf(count, sizeof(count), "%u", n);
	const char *a[] = { "XAUTOCLAIM", q->lanes[q->reclaim_lane].stream, q->cfg.group,
			    q->cfg.consumer, idle, q->reclaim_cursor, "COUNT", count };
	if (qconn_sendv(&q->cmd, on_reclaim, (void *)(uintptr_t)n, 8, a) == 0) {
		q->reclaim_out = true;
		q->claim_req += n;
	}
}

/* Crash recovery in seconds: the pending entries of consumers whose process
 * stopped its heartbeat (qscript_dead) are claimed at once, not after the
 * visibility timeout (which stays, for a live process that is stuck). */
static void on_dead(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	int lane = QPRIV_LANE(priv);
	unsigned asked = QPRIV_N(priv);
	q->dead_out--;
	q->claim_req -= asked;
	/* unknown until this reply says: claims are not held back */
	q->dead_left -= q->lanes[lane].dead_left;
	q->lanes[lane].dead_left = 0;
	if (reply == NULL || q->freeing)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		qlog(q, QUEUE_LOG_WARN, "evt=redis_error what=dead err=\"%s\"", reply->str);
		if (strncmp(reply->str, "NOSCRIPT", 8) == 0)
			qconn_drop(c);
		else if (strstr(reply->str, "NOGROUP") != NULL)
			q->need_group = true;
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_INTEGER)
		return;
	const redisReply *got = reply->element[0];
	size_t n = got->type == REDIS_REPLY_ARRAY ? got->elements : 0;
	long long left = reply->element[1]->integer, removed = reply->element[2]->integer;
	if (n > 0 || removed > 0)
		qlog(q, QUEUE_LOG_WARN, "evt=dead_consumers claimed=%zu left=%lld removed=%lld lane=%s",
		     n, left, removed, q->lanes[lane].name);
	/* More to take: the next claims go on with it (qkick_claim), as room
	 * allows; unless this one asked and got nothing (entries touched less
	 * than Q_DEAD_MIN_IDLE_MS ago): then the next period. */
	q->lanes[lane].dead_left = left > 0 && !(n == 0 && asked > 0) ? (uint64_t)left : 0;
	q->dead_left += q->lanes[lane].dead_left;
	qtake_entries(q, got, lane, true);
	if (q->dead_out == 0)
		qkick_claim(q);
}

/* Ask for up to n entries of dead consumers (n = 0: only look for them and
 * delete those left with nothing), one call per lane: n is shared between
 * the lanes known to hold such entries (all of them when none is known). */
void qdead_reclaim(struct queue *q, unsigned n)
{
	char gone[24], count[16], idle[24];
	int k = 0;
	for (int i = 0; i < q->nlanes; i++)
		k += q->lanes[i].dead_left > 0;
	snprintf(gone, sizeof(gone), "%d", Q_PEERS_GONE_MS);
	snprintf(idle, sizeof(idle), "%d", Q_DEAD_MIN_IDLE_MS);
	for (int i = 0, j = 0; i < q->nlanes; i++) {
		unsigned share = 0;
		if (k == 0 || q->lanes[i].dead_left > 0) {
			int m = k ? k : q->nlanes;
			share = n / (unsigned)m + ((unsigned)j < n % (unsigned)m);
			j++;
		}
		snprintf(count, sizeof(count), "%u", share);
		const char *a[] = { "EVALSHA",	 q->sha_dead,	  "2",	q->lanes[i].stream, q->procs_key,
				    q->cfg.group, q->cfg.consumer, gone, count,		   idle };
		if (qconn_sendv(&q->cmd, on_dead, QPRIV(i, share), 10, a) == 0) {
			q->dead_out++;
			q->claim_req += share;
		}
	}
}
