/* workers.h: the delivery worker pool. N threads, each with its own loop (ring),
 * c-ares channel, TLS session cache and connection pool (a deliver engine).
 * A request goes to the worker that owns its recipient domain (hash of the
 * domain), so a domain's limits and connections live in one thread.
 *
 * The caller (the feeder) lives on its own loop. workers_submit() is called on
 * the feeder's thread; the request's rcpt_done/done callbacks also run on the
 * feeder's thread, from its loop, exactly as deliver_submit() promises. The
 * request and what it points to are borrowed until done, and are only read by
 * the worker. Hand-off uses lock-free queues (no locks on the delivery path)
 * with one eventfd wake-up per loop iteration in each direction. */
#ifndef SENDER_WORKERS_H
#define SENDER_WORKERS_H

#include <stddef.h>

#include "sender/deliver.h"

struct loop;
struct workers;

/* n <= 0: one per CPU. Takes over the feeder loop's wake hook. NULL + err on
 * failure. c is borrowed for the pool's life. */
struct workers *workers_new(struct loop *feeder, int n, const struct config *c,
			    const struct deliver_opts *o, char *err, size_t errlen);
/* The number of workers workers_new makes for n (n <= 0: one per CPU). With
 * o->metrics set, worker i writes shard 1 + i: make 1 + this many shards. */
int workers_resolve(int n);
/* n processes share the queue, this one has rank (max_connections_total). */
void workers_set_peers(struct workers *ws, int n, int rank);
int workers_count(const struct workers *w);
/* Queue a request for its domain's worker. 0 or -EINVAL. */
int workers_submit(struct workers *w, struct deliver_req *req);
/* Hand a persisted MTA-STS policy (sts_policy_encode form) to the worker that
 * owns domain. deliver_opts hooks (on_tls, on_sts_store) given to workers_new
 * run on the feeder's thread. */
void workers_sts_load(struct workers *w, const char *domain, const char *encoded);
/* Requests submitted and not yet done. */
unsigned workers_active(const struct workers *w);
/* Sum of the workers' connection counters (approximate while running). */
void workers_get_stats(const struct workers *w, struct deliver_stats *st);
/* Finish: every worker QUITs its idle connections and waits up to grace_ms for
 * sessions to close, then the threads are joined and everything is freed.
 * Call when workers_active() == 0 (requests still running are abandoned). */
void workers_free(struct workers *w, unsigned grace_ms);

#endif
