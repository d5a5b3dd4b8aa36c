/* sign_pool.h: DKIM signing on threads of its own, for `mxsend run` (issue 19).
 *
 * An RSA-2048 signature costs ~0.26 ms of CPU: on the feeder thread that capped
 * a process near 4,000 signed jobs/s while the workers idled, and on a worker's
 * ring it would stall every connection of that worker for as long. So the
 * feeder plans (signer_plan: which keys, cheap) and hands the job here; one of
 * `threads` plain threads (no ring: they may block) signs it (signer_apply)
 * and hands it back to the feeder's loop, whose callback then submits the
 * job's domains as before. A job is signed once, whatever its domains.
 *
 * Hand-off: feeder -> signers through a bounded lock-free queue (mpmc.h) and
 * an eventfd counting semaphore the idle signers block on (one write per
 * feeder-loop iteration); jobs beyond the queue's capacity wait, in order, on
 * the feeder. Signers -> feeder through a take-all stack (mpmc.h) and an
 * eventfd read on the feeder's ring (one write per empty -> non-empty change).
 * Nothing here blocks the feeder's loop.
 *
 * Ownership: a struct sign_job is the caller's (embed it); it is borrowed from
 * sign_pool_submit until done is called for it, and the message it points to
 * must stay valid as long. done runs on the feeder's thread, from its loop;
 * out (signed_msg_free) is then the caller's. */
#ifndef SENDER_SIGN_POOL_H
#define SENDER_SIGN_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/mpmc.h"
#include "sender/signer.h"

struct loop;
struct sign_pool;

struct sign_job {
	struct lstack_node node; /* the pool's */
	/* in */
	struct signer_plan plan;
	const char *raw;
	size_t len;
	int64_t t; /* signing time, epoch s */
	/* out, when done runs (signer_apply's) */
	int rc;
	struct signed_msg out;
	char result[SIGNER_RESULT_MAX];
	char err[256];
};

/* abandoned: sign_pool_stop hands back a job it did not finish handing back
 * (signed or not: signed_msg_free(&out)). */
typedef void sign_done_fn(void *arg, struct sign_job *sj, bool abandoned);

/* threads >= 1. NULL with err on failure. The threads inherit the caller's
 * signal mask. */
struct sign_pool *sign_pool_new(struct loop *feeder, int threads, sign_done_fn *done, void *arg,
				char *err, size_t errlen);
/* On the feeder's thread; never blocks. */
void sign_pool_submit(struct sign_pool *p, struct sign_job *sj);
/* Jobs submitted and not yet handed back. */
unsigned sign_pool_busy(const struct sign_pool *p);
/* At exit: the threads finish the signature they are making and end; every
 * job not handed back is, now, abandoned. done is not called again. Then run
 * the feeder's loop once more (its read completes, cancelled) before
 * sign_pool_free. */
void sign_pool_stop(struct sign_pool *p);
void sign_pool_free(struct sign_pool *p);

#endif
