/* shaping.h: providers, response rules and closed-loop back-off (DESIGN.md
 * "Sender identity and shaping"; config.h [provider]/[response]/[shaping]).
 *
 * One struct shaping per process, shared by every worker thread and the
 * feeder. It holds one state per (source, provider) pair: the current rate
 * and connection budget (AIMD: cut by [shaping] decrease on a throttle rule's
 * match, at most once per hold; raised by `increase` x the rate at the cut per
 * second while replies are good), a suspension (until, wall-clock ms), and the
 * rule that set them. Redis holds the authoritative state (queue/shape_store.h):
 * the feeder exchanges it every [shaping] sync (shaping_sync_take /
 * shaping_sync_apply), so every process follows the others within about one
 * sync interval; a worker that sees a throttle reply cuts the local state at
 * once, without waiting for the next sync.
 *
 * Sharing the budget between workers: a provider spans many domains, so
 * several workers send to it. Splitting the budget per worker would waste it
 * (one busy domain, gmail.com, lives on one worker) and starve a worker whose
 * domains are busy while others idle. Instead the rate is ONE token schedule
 * per pair (GCRA: the theoretical arrival time in one 64-bit atomic, advanced
 * by compare-and-swap: every worker books the next free send time of the
 * pair's whole budget, no lock, no per-worker share), and the connection
 * budget is counted by limits.c's process-wide CAS table under the slot key
 * "provider@source" (shaping_slot). Between processes sharing the Redis, both
 * are split evenly by the live process count (limits_peers), as
 * max_connections_total is.
 *
 * Threads: everything here may be called from any thread (atomics only);
 * shaping_new/free at start and exit. Regular expressions are compiled once;
 * glibc's regexec serialises callers of one pattern with a lock, and only
 * failure replies (4xx/5xx) are matched, so no lock is taken per delivery. */
#ifndef SENDER_SHAPING_H
#define SENDER_SHAPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/config.h"

struct shaping;
struct limits_peers;

/* The providers and rules of c (borrowed for the object's life); peers (may
 * be NULL: alone) splits the budgets between processes. NULL with err filled
 * when a rule's regex does not compile (config_load checked them already). */
struct shaping *shaping_new(const struct config *c, const struct limits_peers *peers, char *err,
			    size_t errlen);
void shaping_free(struct shaping *sh);

/* The provider whose mx suffix matches MX host name host (exact name or
 * longest ".suffix"), or -1. Pure. */
int shaping_provider(const struct shaping *sh, const char *host);
const char *shaping_provider_name(const struct shaping *sh, int prov);
int shaping_providers(const struct shaping *sh);
/* Pairs: src is a config sources index, or -1 (no egress source). */
int shaping_pair(const struct shaping *sh, int src, int prov);
int shaping_npairs(const struct shaping *sh);

/* The connection slot of pair (limits.c key "provider@source") into buf, and
 * this process's share of its current budget (0: the provider sets none). */
int shaping_slot(struct shaping *sh, int pair, char *buf, size_t len);
/* Messages per connection for pair's provider (0: no provider limit). */
int shaping_max_messages(const struct shaping *sh, int pair);

enum shape_admit {
	SHAPE_GO,    /* send now */
	SHAPE_WAIT,  /* *wait_ms: booked for then (send then), or try again then */
	SHAPE_DEFER, /* back to the queue until *until_wall (ms): the messages
	              * already waiting for the pair fill more than [shaping]
	              * max_wait at its rate */
	SHAPE_SUSPENDED /* back to the queue until *until_wall (ms): suspended */
};
/* May a message for pair go now? booked: set when *wait_ms is a booked send
 * time (go then without asking again); unset: ask again after *wait_ms.
 * *waiting is the message's own flag (false at first): while it waits
 * unbooked it is counted among the pair's waiters (which size the expected
 * wait of the next one); shaping_admit clears it when the message leaves
 * the wait, shaping_unwait when it is dropped meanwhile. why (whylen >= 160)
 * explains a WAIT or DEFER for the result's `shaped`. */
enum shape_admit shaping_admit(struct shaping *sh, int pair, bool *waiting, uint64_t *wait_ms,
			       bool *booked, uint64_t *until_wall, char *why, size_t whylen);
void shaping_unwait(struct shaping *sh, int pair, bool *waiting);

/* What a reply matched. */
struct shape_match {
	int rule;                 /* index in config responses, -1 none */
	enum shape_action action;
	const char *name;         /* the rule's name (borrowed from the config) */
	const char *class_name;   /* its class=, NULL none */
};
/* Match reply (code, enhanced code esc, text) from pair's provider (pair -1:
 * no provider: only rules without provider=) against the rules, first match
 * wins. Pure but for regexec. Codes below 400 never match. */
bool shaping_match(const struct shaping *sh, int pair, int code, const char *esc, const char *text,
		   struct shape_match *m);
/* Act on a match (throttle: cut now unless within hold; suspend: until now +
 * duration) and describe the state after it into why ("gmail-rate:throttle
 * rate=3.2/s conns=4"). No-op for other actions and pair -1. */
void shaping_act(struct shaping *sh, int pair, const struct shape_match *m, char *why,
		 size_t whylen);
/* A good reply (a message accepted) on pair. */
void shaping_ok(struct shaping *sh, int pair);

/* ---- warm-up ([source] warmup = N0 N1 ...: messages per day per provider,
 * by day since the source's first use, kept in Redis) ---- */

/* May pair's source send one more message to its provider today (its
 * warm-up budget, this process's share of what is left of it)? Counts it
 * when SHAPE_WARM_OK, which a source without warm-up, past its schedule, or
 * pair -1 always is. SHAPE_WARM_LATER: not now, ask again shortly: today's
 * count has not come from Redis yet (a process just started), or this
 * process took its share of what is left until the next sync. SPENT: none
 * left today. */
enum shape_warm { SHAPE_WARM_OK, SHAPE_WARM_SPENT, SHAPE_WARM_LATER };
enum shape_warm shaping_warm_take(struct shaping *sh, int pair);
/* No Redis (mxsend send): the counts start at 0 on day 0, known. */
void shaping_warm_assume(struct shaping *sh);
/* Does some source have a warm-up schedule? */
bool shaping_warm_any(const struct shaping *sh);
/* "warmup SOURCE/PROVIDER day=D limit=N" for a result's `shaped`. */
void shaping_warm_why(const struct shaping *sh, int pair, char *why, size_t whylen);
/* Feeder: the messages pair sent since the last call (*delta, moved to
 * pending until shaping_warm_apply), false for a pair without warm-up. */
bool shaping_warm_sync_take(struct shaping *sh, int pair, uint32_t *delta);
/* Redis's answer: day since first use (-1: not used yet), today's count
 * (all processes), for delta sent; ok false: no answer (delta counts again). */
void shaping_warm_apply(struct shaping *sh, int pair, bool ok, int day, uint64_t count,
			uint32_t delta);

/* ---- the feeder's exchange with Redis ---- */

/* What pair reported since the last take (counters reset). */
struct shape_report {
	uint32_t ok, sent, cuts;
	double cut_rate, cut_conn; /* cuts > 0: the state this process cut to (all processes) */
	double step, cstep;       /* ... and the rate and budget to add back per second after it */
	char cut_rule[64], susp_rule[64];
	uint64_t susp_until;      /* wall ms, 0 none */
	double max_rate;          /* the provider's, 0 none */
	int max_conn;             /* the provider's, 0 none */
};
void shaping_sync_take(struct shaping *sh, int pair, uint64_t now_wall, struct shape_report *r);
/* The state Redis returned: rate (messages/s for all processes, <= 0: none),
 * conn (budget, <= 0: the provider's), until (wall ms), rule (borrowed). */
void shaping_sync_apply(struct shaping *sh, int pair, double rate, double conn, uint64_t until,
			const char *rule);
/* "google" / source name ("-" without one), for the Redis key. */
const char *shaping_pair_source(const struct shaping *sh, int pair);
const char *shaping_pair_provider(const struct shaping *sh, int pair);
/* pair's provider index (-1 for pair -1) and source index (config sources;
 * -1: none). */
int shaping_pair_prov(const struct shaping *sh, int pair);
int shaping_pair_src(const struct shaping *sh, int pair);
/* Messages per second this process may send on pair now (its share of all
 * processes' rate); 0: no rate in force. For the metrics. */
double shaping_rate(const struct shaping *sh, int pair);

#endif
