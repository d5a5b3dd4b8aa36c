/* loop.h: the event loop. One io_uring ring per thread; the only owner of it.
 *
 * Completion ops: the owner embeds a `struct loop_op` and passes its address to
 * loop_connect/send/recv/close; when the CQE arrives, op->fn(op, res, flags) runs
 * with res = cqe->res (>= 0 or -errno). The op must stay valid until then: an
 * object with ops in flight is not freed (count them; cancel with loop_cancel
 * and wait for the -ECANCELED completions).
 *
 * Timers: a min-heap; the earliest deadline bounds the ring wait.
 * Tasks: loop_defer() runs a function once, after the current batch of
 * completions has been dispatched (deferred frees, async-looking callbacks).
 * Watchers: readiness (poll) for libraries that think in poll terms (c-ares,
 * hiredis), implemented with one-shot polls re-armed after each event
 * (level-triggered).
 *
 * Nothing here calls back into the caller before returning: callbacks run only
 * from loop_run(). Not thread-safe; loop_wake() is the one call other threads
 * may make. */
#ifndef SENDER_LOOP_H
#define SENDER_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;

struct loop_op;
typedef void loop_op_fn(struct loop_op *op, int res, unsigned cqe_flags);
struct loop_op {
	loop_op_fn *fn;
};

struct loop_timer;
typedef void loop_timer_fn(struct loop_timer *t);
struct loop_timer {
	uint64_t when;     /* monotonic ms */
	unsigned heap_idx; /* 0 = not armed; 1-based index in the heap */
	uint64_t seq;      /* arming order, breaks ties */
	loop_timer_fn *fn;
};

struct loop_task;
typedef void loop_task_fn(struct loop_task *t);
struct loop_task {
	struct loop_task *next;
	loop_task_fn *fn;
	bool queued;
};

#define LOOP_READ 1u
#define LOOP_WRITE 2u
struct loop_watch;
/* revents: LOOP_READ/LOOP_WRITE bits that are ready (errors/hangup report both). */
typedef void loop_watch_fn(void *arg, int fd, unsigned revents);

/* Create a loop with a ring of `entries` SQEs. Returns NULL and sets *err
 * (-errno) on failure; checks the kernel supports the ops we use. */
struct loop *loop_new(unsigned entries, int *err);
/* Free the loop. Ops still in flight are abandoned (call at exit only); the
 * watchers their owners freed (loop_watch_free) whose polls were still armed
 * are freed here. */
void loop_free(struct loop *l);
/* Run until loop_stop(). Returns 0, or -errno if the ring itself fails. */
int loop_run(struct loop *l);
/* At exit, before loop_free: run until no task is queued and no op is in
 * flight (the wake-up read aside), e.g. connections closing after their
 * owners were freed, at most limit_ms (also stops at loop_stop). 0, -ETIMEDOUT
 * if something is still in flight then, or -errno. On the loop's own thread. */
int loop_drain(struct loop *l, unsigned limit_ms);
/* Make loop_run() return after the current iteration. Callable from callbacks. */
void loop_stop(struct loop *l);
/* Monotonic milliseconds, refreshed once per iteration (cheap). */
uint64_t loop_now(const struct loop *l);
/* Ops submitted and not yet completed (for tests and shutdown). */
unsigned loop_inflight(const struct loop *l);

/* I/O. The buffers and the sockaddr are borrowed until the completion. */
void loop_connect(struct loop *l, struct loop_op *op, int fd, const struct sockaddr *sa,
		  socklen_t salen);
void loop_send(struct loop *l, struct loop_op *op, int fd, const void *buf, size_t len);
void loop_recv(struct loop *l, struct loop_op *op, int fd, void *buf, size_t len);
/* Receive into a buffer the kernel picks from the loop's shared pool (io_uring
 * provided buffers), so idle connections hold no receive buffer. On res > 0,
 * loop_recv_buf(l, flags) is the data; give it back with loop_buf_put(l, flags)
 * once consumed (before returning to the loop). res == -ENOBUFS: the pool was
 * empty; try again later. Returns false (nothing queued) when the loop has no
 * pool: use loop_recv with a private buffer then. */
bool loop_recv_pooled(struct loop *l, struct loop_op *op, int fd);
bool loop_recv_has_buf(unsigned cqe_flags);
const char *loop_recv_buf(struct loop *l, unsigned cqe_flags);
void loop_buf_put(struct loop *l, unsigned cqe_flags);

/* Spare blocks of LOOP_BLOCK bytes for short-lived output buffers: get one
 * (malloc'd; realloc and free work on it), put it back when empty. The loop
 * keeps a few (the rest are freed) and frees them with itself. */
#define LOOP_BLOCK 16384
void *loop_block_get(struct loop *l);
void loop_block_put(struct loop *l, void *p);
/* Accept one connection on a listening socket: res = new fd (SOCK_CLOEXEC). */
void loop_accept(struct loop *l, struct loop_op *op, int fd);
/* Read from an fd (files, eventfd). */
void loop_read(struct loop *l, struct loop_op *op, int fd, void *buf, size_t len);
/* Close fd through the ring; op may be NULL (completion ignored). */
void loop_close(struct loop *l, struct loop_op *op, int fd);
/* Ask the kernel to cancel the op; it then completes with -ECANCELED (or with its
 * own result if it finished first). The cancel request's own CQE is ignored. */
void loop_cancel(struct loop *l, struct loop_op *target);

/* Timers. Re-arming an armed timer moves it. */
void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn);
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t after_ms);
void loop_timer_stop(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
	return t->heap_idx != 0;
}

/* Deferred tasks: fn runs once after the current batch of completions. Queuing an
 * already queued task is a no-op. */
void loop_task_init(struct loop_task *t, loop_task_fn *fn);
void loop_defer(struct loop *l, struct loop_task *t);
/* Unqueue a task (no-op if not queued). O(queued tasks). */
void loop_task_cancel(struct loop *l, struct loop_task *t);

/* Watchers. loop_watch_new never arms anything; loop_watch_set(w, events)
 * arms/changes/disarms (events == 0). loop_watch_free disarms and frees the
 * watcher once the kernel has let go of it; fn is never called after it.
 * Closing the fd does not stop an armed poll: disarm first. */
struct loop_watch *loop_watch_new(struct loop *l, int fd, loop_watch_fn *fn, void *arg);
void loop_watch_set(struct loop_watch *w, unsigned events);
void loop_watch_free(struct loop_watch *w);

/* Cross-thread wake-up: fn(arg) runs on the loop's thread after loop_wake() is
 * called from any thread (coalesced: one run may serve many wakes). */
typedef void loop_wake_fn(void *arg);
int loop_wake_init(struct loop *l, loop_wake_fn *fn, void *arg);
void loop_wake(struct loop *l);
/* fn is never called again (its arg may be freed); a wake still in flight
 * completes into nothing. The eventfd stays until loop_free. */
void loop_wake_fini(struct loop *l);

#endif
