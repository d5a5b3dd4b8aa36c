/* route.h: limits and shaping for one delivery engine (one thread).
 *
 * - Connection slots: at most `max` connections per key (the MX host name:
 *   connections to one MX host, whichever domain they serve; the limit comes
 *   from the effective [domain]/[mx] rule's max_connections). A job that finds
 *   no free slot waits in FIFO order; a released slot wakes the first waiter.
 *   With a route_shared, the count is the whole process's: every worker's
 *   route counts its connections there too (route.c says how, and how the
 *   workers hand connections over when another one's jobs wait).
 * - Rate: a token bucket per key (the recipient domain) for max_rate messages
 *   per second (burst of one second's worth).
 * - Circuit breaker per address ("ip:port"): consecutive connection failures
 *   back the address off for 1 s, 2 s, 4 s ... up to 5 min; a success clears
 *   it. A backed-off address is skipped, never hammered in a loop.
 * Wake-ups run from a deferred task, never inside route_* calls. */
#ifndef SENDER_ROUTE_H
#define SENDER_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sender/loop.h"

struct route;

struct route_waiter;
typedef void route_wake_fn(struct route_waiter *w);
struct route_waiter {
	struct route_waiter *next;
	route_wake_fn *fn;
	bool queued;
	char key[256];
};

/* The process-wide connection counts, shared by the workers' routes (any
 * thread). Free it after every route attached to it. */
struct route_shared;
struct route_shared *route_shared_new(void);
void route_shared_free(struct route_shared *g);
/* Jobs of some worker wait for the shared count now (0: none; g may be NULL). */
int route_shared_wanting(const struct route_shared *g);

/* The mxsend processes sharing one Redis (mxsend run): how many are alive and
 * this one's rank among them (by consumer name), kept by the feeder from the
 * queue's heartbeat and read by every worker. Zero-initialised: alone. */
struct route_peers {
	_Atomic uint32_t word; /* n << 16 | rank; 0 = not known (alone) */
};
void route_peers_set(struct route_peers *p, int n, int rank);
/* This process's share of `total` connections spread over the live processes
 * (max_connections_total): total / n, one more for the first total % n by
 * rank. 0: the others hold all of them. p NULL or not known: total. */
int route_peers_share(const struct route_peers *p, int total);

/* g: the shared counts, or NULL to count this thread's connections only. */
struct route *route_new(struct loop *l, struct route_shared *g);
void route_free(struct route *r);

/* Take a slot for key if fewer than max are in use (max <= 0: unlimited). */
bool route_slot_take(struct route *r, const char *key, int max);
/* Give a slot back; the first waiter for key (if any) is woken. */
void route_slot_release(struct route *r, const char *key);
/* Wait for a slot for key (w copied key). fn runs later, once; then try
 * route_slot_take again. */
void route_slot_wait(struct route *r, const char *key, struct route_waiter *w, route_wake_fn *fn);
/* Wake the first waiter for key without freeing a slot (an idle connection
 * for it was just parked: the waiter can take that). False if none waits. */
bool route_slot_kick(struct route *r, const char *key);
/* A connection to key is about to idle: should it close instead, because
 * another worker's jobs wait for the shared count (and none here does, or
 * this worker holds more than its share, max / workers, or its turn is over:
 * route.c)? */
bool route_slot_yield(struct route *r, const char *key);
/* Connections counted for key now (this worker's). */
int route_slots_used(struct route *r, const char *key);
/* ... and the whole process's, where the shared count holds them. */
int route_slots_process(struct route *r, const char *key);

/* 0: send now (a token was taken); else ms until a token is due. */
uint64_t route_rate_delay(struct route *r, const char *key, double per_sec);

/* Is addr backed off right now? */
bool route_addr_down(struct route *r, const char *addr);
/* Record a connection outcome for addr. */
void route_addr_result(struct route *r, const char *addr, bool ok);

#endif
