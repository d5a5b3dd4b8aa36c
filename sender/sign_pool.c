/* sign_pool.c: the signing threads and their two hand-offs (sign_pool.h).
 *
 * Counts: todo_fd (EFD_SEMAPHORE) holds one token per job pushed onto todo
 * and not yet taken, written after the pushes are complete, so a signer that
 * took a token finds a job (mpmc.h's half-done push cannot be one of those).
 * busy and the backlog are the feeder's alone. A job is in exactly one place:
 * the backlog, todo, a signer's hands, or done.
 *
 * Wake-ups of the feeder are batched, as workers.c batches results: one per
 * signed job cost four context switches per job (the feeder woken for one
 * job, then a worker for its one request, then the feeder for its results):
 * +65 us of CPU per RSA job in bench qk1. A signer that has signed a job wakes
 * the feeder when no job is waiting for a signer (nothing more is coming
 * soon), or SIGN_WAKE_BATCH jobs wait for it, or the first of them has waited
 * SIGN_WAKE_MS; otherwise the next signer to finish a job decides again (one
 * is working: a job was waiting). So a signed job waits for the feeder at
 * most SIGN_WAKE_MS plus one signature. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "sender/sign_pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

#define SIGN_QUEUE_CAP 1024 /* jobs handed to the signers at once; the rest wait on the feeder */
#define SIGN_WAKE_MS 2       /* a signed job waits for the feeder's wake-up at most this (+ one signature) */
#define SIGN_WAKE_BATCH 64   /* or until this many are waiting */

struct sign_pool {
	struct loop *l;
	sign_done_fn *done;
	void *arg;
	int n;
	pthread_t *thr;
	int started;
	struct mpmc todo;
	int todo_fd;             /* semaphore: jobs in todo */
	struct lstack donestk;   /* signed, for the feeder */
	int done_fd;             /* the feeder's wake-up */
	_Atomic bool stopping;
	_Atomic unsigned pending;  /* tokens posted and not yet taken */
	_Atomic unsigned unwoken;  /* signed since the feeder was last woken */
	_Atomic uint64_t since_ms; /* when the first of those was */
	/* the feeder's */
	struct loop_op rd;
	uint64_t rd_buf;
	bool reading, stopped;
	struct loop_task post; /* write the tokens of this iteration's pushes */
	uint64_t unposted;
	struct lstack_node *backlog, *backlog_tail;
	unsigned busy;
};

static struct sign_job *job_of(struct lstack_node *n)
{
	return container_of(n, struct sign_job, node);
}

/* ---- signer threads ---- */

static uint64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* After a push onto donestk: wake the feeder now, or leave it to the next
 * signer to finish (see the top). */
static void maybe_wake(struct sign_pool *p)
{
	unsigned n = atomic_fetch_add_explicit(&p->unwoken, 1, memory_order_acq_rel) + 1;
	uint64_t now = coarse_ms();
	if (n == 1)
		atomic_store_explicit(&p->since_ms, now, memory_order_relaxed);
	if (n < SIGN_WAKE_BATCH && atomic_load_explicit(&p->pending, memory_order_acquire) > 0 &&
	    now - atomic_load_explicit(&p->since_ms, memory_order_relaxed) < SIGN_WAKE_MS)
		return;
	if (atomic_exchange_explicit(&p->unwoken, 0, memory_order_acq_rel) == 0)
		return; /* another signer just did */
	uint64_t one = 1;
	ssize_t w = write(p->done_fd, &one, sizeof(one));
	(void)w; /* cannot fail short of a saturated counter: a wake-up is pending then */
}

static void *signer_main(void *arg)
{
	struct sign_pool *p = arg;
	for (;;) {
		uint64_t tok;
		ssize_t r = read(p->todo_fd, &tok, sizeof(tok)); /* blocks: this is no ring */
		if (r != (ssize_t)sizeof(tok)) {
			if (r == -1 && errno == EINTR)
				continue;
			log_panic("evt=signer_read_failed err=%s", r == -1 ? strerror(errno) : "short read");
		}
		atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
		if (atomic_load_explicit(&p->stopping, memory_order_acquire))
			break;
		struct sign_job *sj;
		while ((sj = mpmc_pop(&p->todo)) == NULL)
			sched_yield(); /* a token means a published job: another pop is mid-way */
		sj->rc = signer_apply(&sj->plan, sj->raw, sj->len, sj->t, &sj->out, sj->result, sj->err,
				      sizeof(sj->err));
		lstack_push(&p->donestk, &sj->node);
		maybe_wake(p);
	}
	return NULL;
}

/* ---- the feeder ---- */

static void post_fn(struct loop_task *t)
{
	struct sign_pool *p = container_of(t, struct sign_pool, post);
	if (p->unposted == 0)
		return;
	/* before the tokens: a signer that takes one finds pending > 0 first */
	atomic_fetch_add_explicit(&p->pending, (unsigned)p->unposted, memory_order_acq_rel);
	ssize_t w = write(p->todo_fd, &p->unposted, sizeof(p->unposted));
	if (w != (ssize_t)sizeof(p->unposted))
		log_panic("evt=signer_post_failed err=%s", w == -1 ? strerror(errno) : "short write");
	p->unposted = 0;
}

static void hand_over(struct sign_pool *p)
{
	bool any = false;
	while (p->backlog != NULL && mpmc_push(&p->todo, job_of(p->backlog))) {
		p->backlog = p->backlog->next;
		p->unposted++;
		any = true;
	}
	if (p->backlog == NULL)
		p->backlog_tail = NULL;
	if (any)
		loop_defer(p->l, &p->post);
}

static void on_done_read(struct loop_op *op, int res, unsigned flags);

static void arm_read(struct sign_pool *p)
{
	p->reading = true;
	loop_read(p->l, &p->rd, p->done_fd, &p->rd_buf, sizeof(p->rd_buf));
}

static void on_done_read(struct loop_op *op, int res, unsigned flags)
{
	struct sign_pool *p = container_of(op, struct sign_pool, rd);
	(void)flags;
	p->reading = false;
	if (p->stopped)
		return;
	if (res < 0 && res != -EAGAIN && res != -EINTR)
		log_panic("evt=signer_wake_failed err=%s", strerror(-res));
	arm_read(p);
	struct lstack_node *n = lstack_take(&p->donestk);
	while (n != NULL) {
		struct lstack_node *next = n->next;
		p->busy--;
		p->done(p->arg, job_of(n), false);
		n = next;
	}
	hand_over(p);
}

void sign_pool_submit(struct sign_pool *p, struct sign_job *sj)
{
	sj->rc = 0;
	memset(&sj->out, 0, sizeof(sj->out));
	sj->node.next = NULL;
	p->busy++;
	if (p->backlog_tail != NULL)
		p->backlog_tail->next = &sj->node;
	else
		p->backlog = &sj->node;
	p->backlog_tail = &sj->node;
	hand_over(p);
}

unsigned sign_pool_busy(const struct sign_pool *p)
{
	return p->busy;
}

struct sign_pool *sign_pool_new(struct loop *feeder, int threads, sign_done_fn *done, void *arg,
				char *err, size_t errlen)
{
	struct sign_pool *p = xcalloc(1, sizeof(*p));
	p->l = feeder;
	p->done = done;
	p->arg = arg;
	p->n = threads < 1 ? 1 : threads;
	p->thr = xcalloc((size_t)p->n, sizeof(*p->thr));
	mpmc_init(&p->todo, SIGN_QUEUE_CAP);
	lstack_init(&p->donestk);
	p->rd.fn = on_done_read;
	loop_task_init(&p->post, post_fn);
	p->todo_fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
	p->done_fd = eventfd(0, EFD_CLOEXEC); /* as loop.c's own wake-up: read through the ring */
	if (p->todo_fd == -1 || p->done_fd == -1) {
		snprintf(err, errlen, "signing threads: eventfd: %s", strerror(errno));
		goto fail;
	}
	for (int i = 0; i < p->n; i++) {
		int r = pthread_create(&p->thr[i], NULL, signer_main, p);
		if (r != 0) {
			snprintf(err, errlen, "signing threads: pthread_create: %s", strerror(r));
			goto fail;
		}
		p->started++;
		char name[16]; /* for top -H */
		snprintf(name, sizeof(name), "mxsend-s%u", (unsigned)i % 1000u);
		pthread_setname_np(p->thr[i], name);
	}
	arm_read(p);
	return p;
fail:
	sign_pool_stop(p);
	sign_pool_free(p);
	return NULL;
}

void sign_pool_stop(struct sign_pool *p)
{
	if (p == NULL || p->stopped)
		return;
	p->stopped = true;
	atomic_store_explicit(&p->stopping, true, memory_order_release);
	if (p->started > 0) {
		uint64_t n = (uint64_t)p->started; /* one token each: they see stopping */
		if (write(p->todo_fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
			log_panic("evt=signer_stop_failed err=%s", strerror(errno));
	}
	for (int i = 0; i < p->started; i++)
		pthread_join(p->thr[i], NULL);
	p->started = 0;
	loop_task_cancel(p->l, &p->post);
	if (p->reading)
		loop_cancel(p->l, &p->rd);
	/* What is left, wherever it is, goes back to the caller. */
	struct lstack_node *n = lstack_take(&p->donestk);
	struct sign_job *sj;
	while (n != NULL) {
		struct lstack_node *next = n->next;
		p->busy--;
		p->done(p->arg, job_of(n), true);
		n = next;
	}
	while ((sj = mpmc_pop(&p->todo)) != NULL) {
		p->busy--;
		p->done(p->arg, sj, true);
	}
	while (p->backlog != NULL) {
		n = p->backlog;
		p->backlog = n->next;
		p->busy--;
		p->done(p->arg, job_of(n), true);
	}
	p->backlog_tail = NULL;
}

void sign_pool_free(struct sign_pool *p)
{
	if (p == NULL)
		return;
	sign_pool_stop(p);
	mpmc_fini(&p->todo);
	if (p->todo_fd != -1)
		close(p->todo_fd);
	if (p->done_fd != -1)
		close(p->done_fd);
	free(p->thr);
	free(p);
}
