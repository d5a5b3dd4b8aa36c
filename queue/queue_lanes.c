/* queue_lanes.c: priority lanes (queue.h "lanes"): their names and keys, and
 * the claim that shares the claimed jobs between them.
 *
 * A claim for n entries, on the claim connection:
 *   - every lane dry (its last read found fewer jobs than asked: nothing is
 *     known to wait anywhere): one XREADGROUP ... BLOCK over every lane's
 *     stream, COUNT n / lanes each (so the reply holds at most n), which
 *     returns as soon as any lane has a job;
 *   - else one XREADGROUP per lane, without BLOCK, pipelined, each with the
 *     lane's share (qlanes_split: deficit round-robin by weight over the lanes
 *     that have jobs; a dry lane is asked for one, so a job added to it is
 *     claimed by the very next claim, whatever waits in the others).
 * A lane that returns fewer than it was asked for is dry until a read finds
 * it full again; its share goes to the others from the next claim on. With
 * one lane this is the old single blocking read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"

static const char DEFAULT_LANE[] = "default";

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

int queue_lanes_parse(const char *spec, struct queue_lane *out, int max, char *err, size_t errlen)
{
	int n = 0;
	const char *s = spec;
	for (s += strspn(s, " \t,"); *s != '\0'; s += strspn(s, " \t,")) {
		size_t len = strcspn(s, " \t,"), nl = 0;
		while (nl < len && s[nl] != ':')
			nl++;
		if (n == max) {
			snprintf(err, errlen, "too many lanes (at most %d)", max);
			return -1;
		}
		if (nl == 0 || nl > QUEUE_LANE_NAME_MAX) {
			snprintf(err, errlen, "lane \"%.*s\": a name of 1..%d characters is needed",
				 (int)(len > 64 ? 64 : len), s, QUEUE_LANE_NAME_MAX);
			return -1;
		}
		for (size_t i = 0; i < nl; i++)
			if (!name_char(s[i])) {
				snprintf(err, errlen, "lane \"%.*s\": names hold A-Z a-z 0-9 _ - only",
					 (int)nl, s);
				return -1;
			}
		struct queue_lane *l = &out[n];
		memcpy(l->name, s, nl);
		l->name[nl] = '\0';
		l->weight = 1;
		if (nl < len) { /* ":WEIGHT" */
			long w = 0;
			size_t i = nl + 1;
			if (i == len)
				w = -1;
			for (; i < len && w >= 0; i++)
				w = s[i] >= '0' && s[i] <= '9' && w <= QUEUE_LANE_WEIGHT_MAX
					    ? w * 10 + (s[i] - '0')
					    : -1;
			if (w < 1 || w > QUEUE_LANE_WEIGHT_MAX) {
				snprintf(err, errlen, "lane \"%s\": bad weight \"%.*s\" (1..%d)", l->name,
					 (int)(len - nl - 1), s + nl + 1, QUEUE_LANE_WEIGHT_MAX);
				return -1;
			}
			l->weight = (int)w;
		}
		for (int k = 0; k < n; k++)
			if (strcmp(out[k].name, l->name) == 0) {
				snprintf(err, errlen, "lane \"%s\" named twice", l->name);
				return -1;
			}
		n++;
		s += len;
	}
	if (n == 0) {
		snprintf(err, errlen, "no lane named (NAME[:WEIGHT] ...)");
		return -1;
	}
	return n;
}

char *queue_lane_key(const char *jobs, const char *name)
{
	if (strcmp(name, DEFAULT_LANE) == 0)
		return qstrcat(jobs, "");
	char *mid = qstrcat(jobs, ":lane:"), *k = qstrcat(mid, name);
	free(mid);
	return k;
}

/* cfg's lanes with `default` appended when not among them: name, weight. */
static int lane_list(const struct queue_config *cfg, const char **name, int *weight)
{
	int n = 0;
	bool dflt = false;
	for (int i = 0; i < cfg->n_lanes && i < QUEUE_LANES_MAX; i++) {
		name[n] = cfg->lanes[i].name;
		weight[n++] = cfg->lanes[i].weight > 0 ? cfg->lanes[i].weight : 1;
		dflt |= strcmp(cfg->lanes[i].name, DEFAULT_LANE) == 0;
	}
	if (!dflt) {
		if (n == QUEUE_LANES_MAX)
			n--; /* the config refuses this many; keep `default` anyway */
		name[n] = DEFAULT_LANE;
		weight[n++] = 1;
	}
	return n;
}

int queue_lane_find(const struct queue_config *cfg, const char *name)
{
	const char *names[QUEUE_LANES_MAX];
	int weights[QUEUE_LANES_MAX], n = lane_list(cfg, names, weights);
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

int qlanes_init(const struct queue_config *cfg, struct qlane *lanes)
{
	const char *names[QUEUE_LANES_MAX];
	int weights[QUEUE_LANES_MAX], n = lane_list(cfg, names, weights);
	for (int i = 0; i < n; i++) {
		struct qlane *l = &lanes[i];
		memset(l, 0, sizeof(*l));
		l->name = names[i];
		l->weight = weights[i];
		l->stream = queue_lane_key(cfg->jobs, names[i]);
		l->retry = qstrcat(l->stream, ":retry");
		l->held = qstrcat(l->stream, ":held");
		l->dry = true; /* nothing known yet: the first claim blocks on all */
	}
	return n;
}

void qlanes_fini(struct qlane *lanes, int n)
{
	for (int i = 0; i < n; i++) {
		free(lanes[i].stream);
		free(lanes[i].retry);
		free(lanes[i].held);
		lanes[i].stream = lanes[i].retry = lanes[i].held = NULL;
	}
}

void qlanes_split(unsigned n, int nl, const int *weight, const bool *dry, long *deficit,
		  unsigned *ask)
{
	long wsum = 0;
	for (int i = 0; i < nl; i++) {
		ask[i] = 0;
		if (dry[i]) {
			deficit[i] = 0; /* DRR: a queue found empty keeps no credit */
			if (n > 0) {
				ask[i] = 1;
				n--;
			}
		} else {
			wsum += weight[i] > 0 ? weight[i] : 1;
		}
	}
	if (wsum == 0 || n == 0)
		return;
	/* Credit in units of 1/wsum claim: each lane with jobs earns n * weight
	 * and is asked for the whole claims its credit holds; what the rounding
	 * leaves goes one each to the lanes with the most credit left. What a
	 * lane earned and was not asked for stays for the next call. */
	unsigned given = 0;
	for (int i = 0; i < nl; i++) {
		if (dry[i])
			continue;
		deficit[i] += (long)n * (weight[i] > 0 ? weight[i] : 1);
		long whole = deficit[i] > 0 ? deficit[i] / wsum : 0;
		ask[i] += (unsigned)whole;
		deficit[i] -= whole * wsum;
		given += (unsigned)whole;
	}
	while (given < n) { /* fewer rounds than lanes */
		int best = -1;
		for (int i = 0; i < nl; i++)
			if (!dry[i] && (best < 0 || deficit[i] > deficit[best]))
				best = i;
		ask[best]++;
		deficit[best] -= wsum;
		given++;
	}
}

/* ---- statistics ---- */

/* priv: QPRIV(lane, k), k 0 XLEN, 1 ZCARD retry, 2 ZCARD held. The sums
 * over the lanes are published when the last reply is in, each only when
 * every lane answered it. */
static void on_stat(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	unsigned k = QPRIV_N(priv);
	q->lanes[QPRIV_LANE(priv)].stat[k] =
		reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
	if (--q->stats_out > 0)
		return;
	long long *dst[3] = { &q->st.depth, &q->st.retry, &q->st.held };
	for (unsigned s = 0; s < 3; s++) {
		long long sum = 0;
		for (int i = 0; i < q->nlanes && sum >= 0; i++)
			sum = q->lanes[i].stat[s] < 0 ? -1 : sum + q->lanes[i].stat[s];
		if (sum >= 0)
			*dst[s] = sum;
	}
}

void qlanes_stats(struct queue *q)
{
	for (int i = 0; i < q->nlanes; i++) {
		const char *a[3][2] = { { "XLEN", q->lanes[i].stream },
					{ "ZCARD", q->lanes[i].retry },
					{ "ZCARD", q->lanes[i].held } };
		for (unsigned k = 0; k < 3; k++) {
			q->lanes[i].stat[k] = -1;
			if (qconn_sendv(&q->cmd, on_stat, QPRIV(i, k), 2, a[k]) == 0)
				q->stats_out++;
		}
	}
}

/* ---- the claim ---- */

/* Entries of one stream of an XREADGROUP reply: [[stream, [entries]], ...]. */
static const redisReply *stream_entries(const redisReply *reply, const char *stream)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i < reply->elements; i++) {
		const redisReply *s = reply->element[i];
		if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
		    s->element[0]->type == REDIS_REPLY_STRING && strcmp(s->element[0]->str, stream) == 0)
			return s->element[1];
	}
	return NULL;
}

/* priv: QPRIV(lane, asked) for one lane's read; QPRIV(QUEUE_LANES_MAX + k,
 * asked) for the blocking read over lanes 0..k-1 (asked: per lane). */
static void on_claim(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	struct queue *q = c->q;
	redisReply *reply = r;
	int lane = QPRIV_LANE(priv), first = lane, end = lane + 1;
	unsigned asked = QPRIV_N(priv);
	if (lane >= QUEUE_LANES_MAX) { /* the blocking read */
		first = 0;
		end = lane - QUEUE_LANES_MAX;
	}
	q->claim_req -= asked * (unsigned)(end - first);
	if (first == 0)
		q->claim_req0 -= asked;
	if (q->claim_wait > 0)
		q->claim_wait--;
	if (q->claim_wait == 0)
		q->claim_out = false;
	if (reply == NULL || q->freeing)
		return; /* lost: any entries it got stay pending, reclaimed later */
	if (reply->type == REDIS_REPLY_ERROR) {
		qlog(q, QUEUE_LOG_ERROR, "evt=claim_failed err=\"%s\"", reply->str);
		if (strncmp(reply->str, "NOGROUP", 7) == 0)
			q->need_group = true;
		return; /* the next tick tries again: no busy loop on errors */
	}
	/* a nil reply is a BLOCK timeout (every lane read still dry) */
	for (int i = first; i < end; i++) {
		const redisReply *list = stream_entries(reply, q->lanes[i].stream);
		size_t got = list != NULL && list->type == REDIS_REPLY_ARRAY ? list->elements : 0;
		q->lanes[i].dry = got < asked;
		if (q->lanes[i].dry)
			q->lanes[i].deficit = 0;
		if (got > 0)
			qtake_entries(q, list, i, false);
	}
	if (q->claim_wait == 0)
		qkick_claim(q);
}

/* XREADGROUP ... BLOCK over lanes 0..k-1, `each` from each. */
static void claim_blocking(struct queue *q, int k, unsigned each, int block_ms)
{
	char count[16], block[16];
	const char *a[9 + 2 * QUEUE_LANES_MAX];
	int m = 0;
	snprintf(count, sizeof(count), "%u", each);
	snprintf(block, sizeof(block), "%d", block_ms);
	a[m++] = "XREADGROUP";
	a[m++] = "GROUP";
	a[m++] = q->cfg.group;
	a[m++] = q->cfg.consumer;
	a[m++] = "COUNT";
	a[m++] = count;
	a[m++] = "BLOCK";
	a[m++] = block;
	a[m++] = "STREAMS";
	for (int i = 0; i < k; i++)
		a[m++] = q->lanes[i].stream;
	for (int i = 0; i < k; i++)
		a[m++] = ">";
	if (qconn_sendv(&q->clm, on_claim, QPRIV(QUEUE_LANES_MAX + k, each), m, a) == 0) {
		q->claim_out = true;
		q->claim_wait = 1;
		q->claim_req += each * (unsigned)k;
		q->claim_req0 += each;
	}
}

void qlanes_claim(struct queue *q, unsigned n)
{
	int nl = q->nlanes;
	unsigned room = qroom(q), low_room = room;
	/* The first lane's reserve: claims the others may not take, so a job of
	 * the first lane is claimed at once however many of the others wait. */
	if (nl > 1) {
		unsigned used0 = q->lanes[0].active + q->claim_req0;
		unsigned left = q->reserve > used0 ? q->reserve - used0 : 0;
		low_room = room > left ? room - left : 0;
	}
	/* The others are read only with room for a claim worth its round trip
	 * (qclaim_count's: a quarter of max_inflight or a batch), and for one
	 * each at least, so a lane with jobs is never cut to none below. */
	unsigned mark = (unsigned)q->cfg.max_inflight / 4 < (unsigned)q->cfg.batch
				? (unsigned)q->cfg.max_inflight / 4
				: (unsigned)q->cfg.batch;
	if (mark < (unsigned)nl)
		mark = (unsigned)nl;
	int k = nl == 1 || low_room >= mark ? nl : 1; /* the lanes that may be asked: 0..k-1 */
	bool any = false;
	for (int i = 0; i < k; i++)
		any |= !q->lanes[i].dry;
	if (!any) {
		unsigned each = n / (unsigned)k;
		if (k > 1 && each > low_room / (unsigned)(k - 1))
			each = low_room / (unsigned)(k - 1);
		if (each == 0 && room >= (unsigned)k && low_room >= (unsigned)(k - 1))
			each = 1; /* fewer than one per lane: one each, if there is room */
		if (each == 0) { /* the others' room is spent: the first lane alone */
			k = 1;
			each = n;
		}
		/* Only the first lane read, its reserve open: the others wait for
		 * room, so this read may not hold the connection long. */
		claim_blocking(q, k, each, k < nl ? Q_RESERVE_BLOCK_MS : Q_BLOCK_MS);
		return;
	}
	int weight[QUEUE_LANES_MAX];
	bool dry[QUEUE_LANES_MAX];
	long deficit[QUEUE_LANES_MAX];
	unsigned ask[QUEUE_LANES_MAX], low = 0;
	for (int i = 0; i < k; i++) {
		weight[i] = q->lanes[i].weight;
		dry[i] = q->lanes[i].dry;
		deficit[i] = q->lanes[i].deficit;
	}
	qlanes_split(n, k, weight, dry, deficit, ask);
	for (int i = 1; i < k; i++)
		low += ask[i];
	while (low > low_room) { /* past the first lane's reserve: the largest asks shrink */
		int big = 1;
		for (int i = 2; i < k; i++)
			if (ask[i] > ask[big])
				big = i;
		ask[big]--;
		low--;
	}
	char count[16];
	for (int i = 0; i < k; i++) {
		q->lanes[i].deficit = deficit[i];
		if (ask[i] == 0)
			continue;
		snprintf(count, sizeof(count), "%u", ask[i]);
		const char *a[] = { "XREADGROUP", "GROUP", q->cfg.group,	 q->cfg.consumer, "COUNT",
				    count,	  "STREAMS", q->lanes[i].stream, ">" };
		if (qconn_sendv(&q->clm, on_claim, QPRIV(i, ask[i]), 9, a) != 0)
			break; /* the connection is down: the replies of those sent still come */
		q->claim_out = true;
		q->claim_wait++;
		q->claim_req += ask[i];
		if (i == 0)
			q->claim_req0 += ask[i];
	}
}
