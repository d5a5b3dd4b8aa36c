/* limits.h: limits and shaping for one delivery engine (one thread).
 *
 * - Connection slots: at most `max` connections per key (the MX host name:
 *   connections to one MX host, whichever domain they serve; the limit comes
 *   from the effective [domain]/[mx] rule's max_connections). A job that finds
 *   no free slot waits in order of priority (its lane's: limits_waiter.prio,
 *   0 first), FIFO within one priority; a released slot wakes the first waiter.
 *   With a limits_shared, the count is the whole process's: every worker's
 *   limits count its connections there too (limits.c says how, and how the
 *   workers hand connections over when another one's jobs wait).
 * - Rate: a token bucket per key (the recipient domain) for max_rate messages
 *   per second (burst of one second's worth).
 * - Circuit breaker per address ("ip:port"): consecutive connection failures
 *   back the address off for 1 s, 2 s, 4 s ... up to 5 min; a success clears
 *   it. A backed-off address is skipped, never hammered in a loop.
 * Wake-ups run from a deferred task, never inside limits_* calls. */
#ifndef SENDER_LIMITS_H
#define SENDER_LIMITS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sender/loop.h"

struct limits;

struct limits_waiter;
typedef void limits_wake_fn(struct limits_waiter *w);
struct limits_waiter {
	struct limits_waiter *next;
	limits_wake_fn *fn;
	bool queued;
	int prio;       /* set by the caller before limits_slot_wait: 0 goes first */
	char key[256];
};

/* The process-wide connection counts, shared by the workers' limits (any
 * thread). Free it after every limits attached to it. */
struct limits_shared;
struct limits_shared *limits_shared_new(void);
void limits_shared_free(struct limits_shared *g);
/* Jobs of some worker wait for the shared count now (0: none; g may be NULL). */
int limits_shared_wanting(const struct limits_shared *g);

/* The mxsend processes sharing one Redis (mxsend run): how many are alive and
 * this one's rank among them (by consumer name), kept by the feeder from the
 * queue's heartbeat and read by every worker. Zero-initialised: alone. */
struct limits_peers {
	_Atomic uint32_t word; /* n << 16 | rank; 0 = not known (alone) */
};
void limits_peers_set(struct limits_peers *p, int n, int rank);
/* This process's share of `total` connections spread over the live processes
 * (max_connections_total): total / n, one more for the first total % n by
 * rank. 0: the others hold all of them. p NULL or not known: total. */
int limits_peers_share(const struct limits_peers *p, int total);

/* g: the shared counts, or NULL to count this thread's connections only. */
struct limits *limits_new(struct loop *l, struct limits_shared *g);
void limits_free(struct limits *r);

/* Take a slot for key if fewer than max are in use (max <= 0: unlimited). */
bool limits_slot_take(struct limits *r, const char *key, int max);
/* Give a slot back; the first waiter for key (if any) is woken. */
void limits_slot_release(struct limits *r, const char *key);
/* Wait for a slot for key (w copied key). fn runs later, once; then try
 * limits_slot_take again. */
void limits_slot_wait(struct limits *r, const char *key, struct limits_waiter *w, limits_wake_fn *fn);
/* Wake the first waiter for key without freeing a slot (an idle connection
 * for it was just parked: the waiter can take that). False if none waits. */
bool limits_slot_kick(struct limits *r, const char *key);
/* A connection to key is about to idle: should it close instead, because
 * another worker's jobs wait for the shared count (and none here does, or
 * this worker holds more than its share, max / workers, or its turn is over:
 * limits.c)? */
bool limits_slot_yield(struct limits *r, const char *key);
/* Connections counted for key now (this worker's). */
int limits_slots_used(struct limits *r, const char *key);
/* ... and the whole process's, where the shared count holds them. */
int limits_slots_process(struct limits *r, const char *key);

/* 0: send now (a token was taken); else ms until a token is due. */
uint64_t limits_rate_delay(struct limits *r, const char *key, double per_sec);

/* Is addr backed off right now? */
bool limits_addr_down(struct limits *r, const char *addr);
/* Record a connection outcome for addr. */
void limits_addr_result(struct limits *r, const char *addr, bool ok);

#endif
