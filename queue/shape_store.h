/* shape_store.h: the shaping state of one (source, provider) pair in Redis
 * (sender/shaping.h says what it means), shared by every mxsend process.
 *
 * Key: J:shape:SOURCE:PROVIDER (J = [redis] jobs, so it shares the queue's
 * hash tag; SOURCE "-" without egress sources), a hash:
 *   rate   messages/s for all processes together (0: the provider's max_rate)
 *   conn   connection budget for all processes (0: the provider's)
 *   step, cstep  added back per second of good replies (AIMD)
 *   t      wall ms of the last change of rate or budget
 *   until  suspended until (wall ms);      rule  the rule that set it
 *   cuts   throttles so far;               at    wall ms of the last change
 * It is deleted once rate and budget are back at the provider's limits and
 * no suspension is left; it expires a day after its last change.
 * One script call per pair and sync (shape_store_sync) applies what this
 * process did (the rate and budget it cut to, a suspension) and saw (good
 * replies) and returns the state. The processes cut (sender/shaping.c);
 * Redis keeps the lowest cut and adds back. */
#ifndef QUEUE_SHAPE_STORE_H
#define QUEUE_SHAPE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct queue;
struct queue_sync;

struct shape_store_in {
	uint64_t now;            /* wall ms */
	uint32_t ok;             /* good replies since the last sync */
	double cut_rate;         /* this process cut the rate to this (all processes; 0 none) */
	double cut_conn;         /* ... and the budget to this (0 none) */
	double step;             /* messages/s added back per second after that cut */
	const char *cut_rule;    /* the throttle rule ("" none) */
	uint64_t susp_until;     /* a suspension asked for (wall ms, 0 none) */
	const char *susp_rule;
	double max_rate;         /* the provider's (0 none) */
	int max_conn;            /* the provider's (0 none) */
	double cstep;            /* connections added back per second after that cut */
};

struct shape_store_out {
	double rate, conn;       /* <= 0: the provider's */
	uint64_t until;          /* wall ms, 0 none */
	char rule[64];
	uint64_t cuts;
};

/* J:shape:SOURCE:PROVIDER into buf. -1 if it does not fit. */
int shape_store_key(char *buf, size_t len, const char *jobs, const char *source,
		    const char *provider);
/* Send one pair's report on the queue's command connection; fn(arg, out)
 * runs once from the queue's loop with the state, or with out NULL (no
 * reply: connection lost, or an error reply, which is logged). Returns 0, or
 * -ENOTCONN (Redis not connected: fn never runs). */
typedef void shape_store_fn(void *arg, const struct shape_store_out *out);
int shape_store_sync(struct queue *q, const char *key, const struct shape_store_in *in,
		     shape_store_fn *fn, void *arg);

/* Warm-up ([source] warmup): key J:warmup:SOURCE, a hash: `first` (the UTC
 * day number of the source's first use, set when it first sends) and
 * `PROVIDER:DAY` (messages sent that day; the day before yesterday's is
 * dropped). shape_store_warm adds delta to today's count (today: UTC days
 * since 1970) and returns the day since first use (-1: not used yet) and
 * today's count; fn(arg, NULL) on no reply. -ENOTCONN: not sent. */
struct shape_warm_out {
	int day;
	uint64_t count;
};
typedef void shape_warm_fn(void *arg, const struct shape_warm_out *out);
int shape_store_warm_key(char *buf, size_t len, const char *jobs, const char *source);
int shape_store_warm(struct queue *q, const char *key, uint64_t today, const char *provider,
		     uint32_t delta, shape_warm_fn *fn, void *arg);

/* Every pair's state (mxsend shaping; blocks: SCAN + HGETALL): fn(key, fields)
 * per key, fields as "name value" pairs, borrowed. Returns the count or -1. */
typedef void shape_store_each_fn(void *arg, const char *key, int n, const char *const *kv);
/* Such fields (n strings, name value ...) as the state shape_store_sync
 * returns. Pure. */
void shape_store_fields(int n, const char *const *kv, struct shape_store_out *out);
int shape_store_list(struct queue_sync *s, const char *jobs, shape_store_each_fn *fn, void *arg,
		     char *err, size_t errlen);

#endif
