/* pool.h: the SMTP connections of one delivery engine (one thread, one loop):
 * which connection a delivery gets, the slots they hold, the idle ones kept
 * for reuse, and what the engine remembers about hosts.
 *
 * THE INVARIANT: a connection holds one slot (its MX host's count in
 * limits.h) from take to close. pool_get takes the slot with the connection
 * (or hands over a parked connection with the slot it already holds); the
 * slot is released only when that connection is closed: QUIT answered and
 * the socket gone (pool_done, an idle timeout, a sweep that hands the slot
 * to another worker, an eviction for a connection of another kind, pool_flush),
 * the server gone while parked, or the session failed (pool_drop). Nothing
 * else releases a slot (pool_abandon, at exit, drops the counts whole), so
 * max_connections counts connections, never jobs.
 *
 * Who owns what:
 * - The pool owns the idle sessions (keyed by MX host, IP, port, egress
 *   source, TLS level, minimum TLS version and AUTH user: a connection serves
 *   only that key; slots are per (MX host, source) when sources are set),
 *   their timers, the limits (slots, rates, address back-off) and the memory
 *   of broken hosts: an opportunistic TLS handshake that failed ([tls]
 *   broken_tls_ttl: `may` goes plaintext there) and a refused BDAT (DATA
 *   there for an hour).
 * - A delivery (deliver.c) owns the session it got from pool_get until it
 *   gives it back with pool_done or pool_drop; its struct pool_conn says
 *   which key and slot that session has, and is the waiter while it waits.
 * - The reuse rules (reuse_time, reuse_max, idle_timeout, the process's share
 *   of max_connections and max_connections_total) are decided here only.
 * Callbacks (a slot's waiter) run from deferred tasks, never inside pool_*. */
#ifndef SENDER_POOL_H
#define SENDER_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/config.h"
#include "sender/limits.h"
#include "sender/smtp.h"

struct loop;
struct pool;

/* One delivery's hold on the pool. */
struct pool_conn {
	const char *domain;          /* recipient domain: its rule sets the limits */
	char key[352];               /* what the current session serves */
	char slot[256];              /* the slot it holds (MX host), "" none */
	struct limits_waiter waiter; /* while waiting for a slot (pool_get POOL_WAIT) */
	limits_wake_fn *wake;        /* ... what it runs then */
	int prio;                    /* its place among the waiters: 0 first (lanes) */
	/* shaping (shaping.h), set by the delivery before pool_get: the slot
	 * of the MX host's (source, provider) pair and this process's share of
	 * its budget, which replace the MX host's slot and max_connections
	 * (shape_max 0: none); messages per connection (0: reuse_max only) */
	char shape_slot[160];
	int shape_max;
	int max_msgs;
};

/* shared / peers: the process-wide connection counts and the processes
 * sharing the queue (NULL: this engine alone). cfg is borrowed. */
struct pool *pool_new(struct loop *l, const struct config *cfg, struct limits_shared *shared,
		      const struct limits_peers *peers);
/* At exit: idle sessions closed at once (no QUIT), waiters forgotten, the
 * limits freed. Sessions still closing may report later (harmless). */
void pool_abandon(struct pool *p);
/* After pool_abandon, once no session is left. NULL is ignored. */
void pool_free(struct pool *p);
/* At exit: close session s at once (no QUIT); it reports nothing more. */
void pool_discard(struct smtp_session *s);

/* Set c up for a delivery to domain; fn runs when a slot it waits for may
 * be free. prio: its lane's priority, 0 highest (a slot waiter goes ahead of
 * the waiters of a larger prio). */
void pool_conn_init(struct pool_conn *c, const char *domain, int prio, limits_wake_fn *fn);

enum pool_got {
	POOL_REUSED,  /* *reused: a parked session for the same key, with its slot */
	POOL_OPEN,    /* a slot is taken: open a new session with *sp */
	POOL_WAIT,    /* no slot free: c->waiter's fn runs when one may be */
	POOL_DOWN,    /* the address is backed off after repeated failures */
	POOL_NO_SHARE /* other mxsend processes hold all of max_connections_total */
};
/* Which connection a delivery to sp->mx_host at ip:port gets. sp is filled
 * but for the level, which the pool lowers from `may` to `none` for a host
 * known to break TLS; *no_bdat is set for a host known to refuse BDAT. On
 * POOL_DOWN and POOL_NO_SHARE, why says so. */
enum pool_got pool_get(struct pool *p, struct pool_conn *c, const char *ip, int port,
		       struct smtp_params *sp, bool *no_bdat, struct smtp_session **reused,
		       char *why, size_t whylen);
/* May session s serve another message once it has done `txns`
 * transactions? Once false it stays false. */
bool pool_reusable(const struct pool *p, struct smtp_session *s, unsigned txns);
/* After a transaction on c's session s: park it for the next message, or QUIT
 * (last: the transaction ended with QUIT already). */
void pool_done(struct pool *p, struct pool_conn *c, struct smtp_session *s, bool last);
/* c's session failed: free s (NULL: already gone) and the slot it held. */
void pool_drop(struct pool *p, struct pool_conn *c, struct smtp_session *s);
/* QUIT every idle connection. */
void pool_flush(struct pool *p);

/* What a connection to ip:port showed: it connected (ok), or it could not. */
void pool_addr_result(struct pool *p, const char *ip, int port, bool ok);
/* An opportunistic TLS handshake failed at host|ip|port from egress source
 * `source` (a name, NULL: none): plaintext there. */
void pool_tls_broken(struct pool *p, const char *host, const char *ip, int port,
		     const char *source);
/* host|ip|port offered CHUNKING and refused BDAT: DATA there. */
void pool_bdat_broken(struct pool *p, const char *host, const char *ip, int port);
/* [domain] max_rate: 0 to send now (a token taken), else ms until one is due. */
uint64_t pool_rate_delay(struct pool *p, const char *domain, double per_sec);

#endif
