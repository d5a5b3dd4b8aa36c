/* loop.c: the io_uring event loop (liburing 2.3).
 *
 * One ring per thread. Every SQE's user_data is the address of a struct loop_op
 * embedded in its owner; a CQE dispatches to op->fn. user_data 0 marks requests
 * whose completion we ignore (cancel and poll-remove requests, fire-and-forget
 * closes). Each iteration: run deferred tasks, submit and wait (bounded by the
 * earliest timer), drain every ready CQE, advance the CQ once per batch, fire
 * due timers.
 *
 * Watchers use multishot poll. Changing a watcher's mask removes the armed poll
 * and re-arms it when the removal's completion arrives (the old poll's final
 * CQE); a watcher is freed only once no poll of its own is armed, so a late CQE
 * never touches freed memory. */
#include "sender/loop.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sender/log.h"
#include "sender/util.h"

#define BUF_GROUP 1
#define BUF_COUNT 128 /* power of two; small so the ring of buffers stays cache-warm */
#define BUF_SIZE (16 * 1024)

struct loop {
	struct io_uring ring;
	/* provided receive buffers (one group) */
	struct io_uring_buf_ring *br;
	char *bufs;
	void *spare[64]; /* loop_block_get/put */
	unsigned nspare;
	bool stop;
	bool disabled; /* made IORING_SETUP_R_DISABLED: enabled by the first loop_run */
	uint64_t now;
	unsigned inflight;
	/* timer min-heap, 1-based */
	struct loop_timer **heap;
	unsigned nheap, capheap;
	uint64_t timer_seq;
	/* deferred tasks, FIFO */
	struct loop_task *task_head, *task_tail;
	unsigned ntasks;
	/* cross-thread wake-up */
	int wake_fd;
	atomic_bool wake_pending; /* an eventfd write is on its way: later wakes need none */
	uint64_t wake_buf;
	struct loop_op wake_op;
	loop_wake_fn *wake_fn; /* NULL after loop_wake_fini */
	void *wake_arg;
	struct loop_watch *watches; /* every watcher not yet freed (loop_free frees the dead) */
	uint64_t drain_until;       /* loop_drain's deadline (0: not draining) */
};

struct loop_watch {
	struct loop_op op;
	struct loop_op rm_op; /* completion of our poll-remove requests */
	struct loop *l;
	int fd;
	unsigned want;    /* LOOP_READ|LOOP_WRITE wanted by the owner */
	unsigned armed;   /* mask of the armed poll, 0 if none */
	bool removing;    /* poll-remove in flight (rm_op) */
	bool dead;        /* owner freed it */
	bool in_cb;       /* inside fn: never free here (STYLE 5.1) */
	loop_watch_fn *fn;
	void *arg;
	struct loop_watch *prev, *next; /* l->watches */
};

static void watch_destroy(struct loop_watch *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		w->l->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	free(w);
}

static uint64_t now_ms(void)
{
	return mono_ms();
}

static struct io_uring_sqe *loop_sqe(struct loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (sqe == NULL) {
		/* SQ full: flush it to the kernel and retry (liburing proxy example). */
		int r = io_uring_submit(&l->ring);
		if (r < 0 && r != -EAGAIN && r != -EINTR && r != -EBUSY)
			log_panic("evt=loop_submit_failed err=%s", strerror(-r));
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

static void queue_op(struct loop *l, struct io_uring_sqe *sqe, struct loop_op *op)
{
	io_uring_sqe_set_data(sqe, op);
	if (op != NULL)
		l->inflight++;
}

/* Register the shared receive-buffer ring. Memory is reserved, not touched:
 * pages become resident only as data lands in them. Failure is not fatal:
 * connections then use private buffers. */
static void bufs_init(struct loop *l)
{
	size_t rsz = BUF_COUNT * sizeof(struct io_uring_buf);
	if (getenv("MXSEND_NO_PBUF") != NULL) /* A/B benchmarking only */
		return;
	void *ring = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	void *mem = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE,
			 MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
	if (ring == MAP_FAILED || mem == MAP_FAILED)
		goto fail;
	struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)ring,
					.ring_entries = BUF_COUNT,
					.bgid = BUF_GROUP };
	if (io_uring_register_buf_ring(&l->ring, &reg, 0) < 0)
		goto fail;
	l->br = ring;
	l->bufs = mem;
	io_uring_buf_ring_init(l->br);
	for (unsigned i = 0; i < BUF_COUNT; i++)
		io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(l->br, BUF_COUNT);
	return;
fail:
	if (ring != MAP_FAILED)
		munmap(ring, rsz);
	if (mem != MAP_FAILED)
		munmap(mem, (size_t)BUF_COUNT * BUF_SIZE);
	log_info("evt=loop_no_provided_buffers");
}

struct loop *loop_new(unsigned entries, int *err)
{
	struct loop *l = xcalloc(1, sizeof(*l));
	struct io_uring_params p;
	/* Completions as task work deferred to our own io_uring_enter (6.1+):
	 * no interrupt of the running thread per completed recv or send; they
	 * are posted in a batch when the loop waits. That needs one issuing
	 * thread, and workers' rings are made by the main thread: the ring
	 * starts disabled and loop_run enables it in the thread that runs it. */
	int r = -EINVAL;
	if (getenv("MXSEND_RING_PLAIN") == NULL) { /* A/B benchmarking only */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CLAMP | IORING_SETUP_SINGLE_ISSUER |
			  IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
		r = io_uring_queue_init_params(entries, &l->ring, &p);
		l->disabled = r == 0;
	}
	if (r == -EINVAL) { /* older kernel */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CLAMP;
		r = io_uring_queue_init_params(entries, &l->ring, &p);
	}
	if (r < 0) {
		*err = r;
		free(l);
		return NULL;
	}
	if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
		*err = -ENOTSUP;
		io_uring_queue_exit(&l->ring);
		free(l);
		return NULL;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
	static const int ops[] = { IORING_OP_CONNECT, IORING_OP_SEND, IORING_OP_RECV,
				   IORING_OP_CLOSE, IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE,
				   IORING_OP_ASYNC_CANCEL, IORING_OP_READ, IORING_OP_ACCEPT };
	bool ok = probe != NULL;
	for (unsigned i = 0; ok && i < ARRAY_LEN(ops); i++)
		ok = io_uring_opcode_supported(probe, ops[i]);
	if (probe)
		io_uring_free_probe(probe);
	if (!ok) {
		*err = -ENOTSUP;
		io_uring_queue_exit(&l->ring);
		free(l);
		return NULL;
	}
	l->wake_fd = -1;
	l->now = now_ms();
	bufs_init(l);
	return l;
}

void loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	if (l->wake_fd != -1)
		close(l->wake_fd);
	io_uring_queue_exit(&l->ring);
	/* Watchers freed by their owners whose poll (or poll-remove) never
	 * completed: the kernel has let go of them with the ring. A live one
	 * stays its owner's. */
	for (struct loop_watch *w = l->watches, *next; w != NULL; w = next) {
		next = w->next;
		if (w->dead)
			watch_destroy(w);
	}
	if (l->br) {
		munmap(l->br, BUF_COUNT * sizeof(struct io_uring_buf));
		munmap(l->bufs, (size_t)BUF_COUNT * BUF_SIZE);
	}
	while (l->nspare > 0)
		free(l->spare[--l->nspare]);
	free(l->heap);
	free(l);
}

int loop_drain(struct loop *l, unsigned limit_ms)
{
	if (l->task_head == NULL && l->inflight <= (l->wake_fd != -1 ? 1u : 0u))
		return 0; /* nothing to settle (and a loop never run stays unclaimed) */
	l->drain_until = now_ms() + (limit_ms ? limit_ms : 1);
	int r = loop_run(l);
	l->drain_until = 0;
	if (r == 0 && (l->task_head != NULL || l->inflight > (l->wake_fd != -1 ? 1u : 0u)))
		r = -ETIMEDOUT;
	return r;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

uint64_t loop_now(const struct loop *l)
{
	return l->now;
}

unsigned loop_inflight(const struct loop *l)
{
	return l->inflight;
}

/* ---- I/O ---- */

void loop_connect(struct loop *l, struct loop_op *op, int fd, const struct sockaddr *sa,
		  socklen_t salen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_connect(sqe, fd, sa, salen);
	queue_op(l, sqe, op);
}

void loop_send(struct loop *l, struct loop_op *op, int fd, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	queue_op(l, sqe, op);
}

void loop_recv(struct loop *l, struct loop_op *op, int fd, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_recv(sqe, fd, buf, len, 0);
	queue_op(l, sqe, op);
}

bool loop_recv_pooled(struct loop *l, struct loop_op *op, int fd)
{
	if (l->br == NULL)
		return false;
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_recv(sqe, fd, NULL, BUF_SIZE, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUF_GROUP;
	queue_op(l, sqe, op);
	return true;
}

bool loop_recv_has_buf(unsigned cqe_flags)
{
	return (cqe_flags & IORING_CQE_F_BUFFER) != 0;
}

const char *loop_recv_buf(struct loop *l, unsigned cqe_flags)
{
	if (!(cqe_flags & IORING_CQE_F_BUFFER))
		log_panic("evt=loop_recv_without_buffer flags=%u", cqe_flags);
	return l->bufs + (size_t)(cqe_flags >> IORING_CQE_BUFFER_SHIFT) * BUF_SIZE;
}

void loop_buf_put(struct loop *l, unsigned cqe_flags)
{
	unsigned bid = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
	io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(BUF_COUNT), 0);
	io_uring_buf_ring_advance(l->br, 1);
}

void *loop_block_get(struct loop *l)
{
	return l->nspare > 0 ? l->spare[--l->nspare] : xmalloc(LOOP_BLOCK);
}

void loop_block_put(struct loop *l, void *p)
{
	if (l->nspare < ARRAY_LEN(l->spare))
		l->spare[l->nspare++] = p;
	else
		free(p);
}

void loop_accept(struct loop *l, struct loop_op *op, int fd)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	queue_op(l, sqe, op);
}

void loop_read(struct loop *l, struct loop_op *op, int fd, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, (uint64_t)-1);
	queue_op(l, sqe, op);
}

void loop_close(struct loop *l, struct loop_op *op, int fd)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_close(sqe, fd);
	queue_op(l, sqe, op);
}

void loop_cancel(struct loop *l, struct loop_op *target)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_cancel(sqe, target, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

/* ---- timers: binary min-heap on `when` ---- */

void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn)
{
	t->when = 0;
	t->heap_idx = 0;
	t->fn = fn;
}

static void heap_set(struct loop *l, unsigned i, struct loop_timer *t)
{
	l->heap[i] = t;
	t->heap_idx = i;
}

/* Order by deadline, then by arming order. */
static bool before(const struct loop_timer *a, const struct loop_timer *b)
{
	return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_up(struct loop *l, unsigned i)
{
	struct loop_timer *t = l->heap[i];
	while (i > 1 && before(t, l->heap[i / 2])) {
		heap_set(l, i, l->heap[i / 2]);
		i /= 2;
	}
	heap_set(l, i, t);
}

static void heap_down(struct loop *l, unsigned i)
{
	struct loop_timer *t = l->heap[i];
	for (;;) {
		unsigned c = 2 * i;
		if (c > l->nheap)
			break;
		if (c + 1 <= l->nheap && before(l->heap[c + 1], l->heap[c]))
			c++;
		if (!before(l->heap[c], t))
			break;
		heap_set(l, i, l->heap[c]);
		i = c;
	}
	heap_set(l, i, t);
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
	unsigned i = t->heap_idx;
	if (i == 0)
		return;
	struct loop_timer *last = l->heap[l->nheap--];
	t->heap_idx = 0;
	if (last == t)
		return;
	heap_set(l, i, last);
	heap_up(l, i);
	heap_down(l, last->heap_idx);
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t after_ms)
{
	loop_timer_stop(l, t);
	t->when = l->now + after_ms;
	t->seq = ++l->timer_seq;
	if (l->nheap + 1 >= l->capheap) {
		l->capheap = l->capheap ? l->capheap * 2 : 64;
		l->heap = xrealloc(l->heap, l->capheap * sizeof(*l->heap));
	}
	l->heap[++l->nheap] = t;
	t->heap_idx = l->nheap;
	heap_up(l, l->nheap);
}

static void run_timers(struct loop *l)
{
	/* Only timers armed before this pass run now: one re-armed by its own
	 * callback for 0 ms runs in the next iteration, never spins here. */
	uint64_t now = l->now, seq = l->timer_seq;
	while (l->nheap > 0 && l->heap[1]->when <= now && l->heap[1]->seq <= seq) {
		struct loop_timer *t = l->heap[1];
		loop_timer_stop(l, t);
		t->fn(t);
	}
}

/* ---- deferred tasks ---- */

void loop_task_init(struct loop_task *t, loop_task_fn *fn)
{
	t->next = NULL;
	t->fn = fn;
	t->queued = false;
}

void loop_defer(struct loop *l, struct loop_task *t)
{
	if (t->queued)
		return;
	t->queued = true;
	t->next = NULL;
	l->ntasks++;
	if (l->task_tail)
		l->task_tail->next = t;
	else
		l->task_head = t;
	l->task_tail = t;
}

void loop_task_cancel(struct loop *l, struct loop_task *t)
{
	if (!t->queued)
		return;
	struct loop_task *prev = NULL;
	for (struct loop_task *p = l->task_head; p; prev = p, p = p->next) {
		if (p != t)
			continue;
		if (prev)
			prev->next = p->next;
		else
			l->task_head = p->next;
		if (l->task_tail == p)
			l->task_tail = prev;
		l->ntasks--;
		break;
	}
	t->queued = false;
	t->next = NULL;
}

static void run_tasks(struct loop *l)
{
	/* Pop from the live list (so loop_task_cancel works on tasks of this
	 * batch too), at most as many as were queued: tasks queued by these
	 * tasks mostly run next time, and nothing can spin here. */
	unsigned budget = l->ntasks;
	while (budget-- > 0 && l->task_head != NULL) {
		struct loop_task *t = l->task_head;
		l->task_head = t->next;
		if (l->task_head == NULL)
			l->task_tail = NULL;
		l->ntasks--;
		t->queued = false;
		t->next = NULL;
		t->fn(t);
	}
}

/* ---- watchers ---- */

static unsigned to_poll(unsigned ev)
{
	return (ev & LOOP_READ ? POLLIN : 0) | (ev & LOOP_WRITE ? POLLOUT : 0);
}

static void watch_arm(struct loop_watch *w)
{
	struct io_uring_sqe *sqe = loop_sqe(w->l);
	/* One-shot: each poll checks readiness when armed, so data left unread
	 * by the previous callback is reported again (level-triggered, which is
	 * what c-ares and hiredis expect). Multishot would only report new data. */
	io_uring_prep_poll_add(sqe, w->fd, to_poll(w->want));
	queue_op(w->l, sqe, &w->op);
	w->armed = w->want;
}

static void watch_remove(struct loop_watch *w)
{
	if (w->removing)
		return;
	struct io_uring_sqe *sqe = loop_sqe(w->l);
	io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)&w->op);
	queue_op(w->l, sqe, &w->rm_op);
	w->removing = true;
}

/* After any watcher CQE: free a dead watcher once the kernel holds nothing of
 * it, or bring the armed poll in line with the wanted mask. */
static void watch_settle(struct loop_watch *w)
{
	if (w->removing)
		return;
	if (w->armed != 0) {
		if (w->armed != w->want)
			watch_remove(w);
		return;
	}
	if (w->dead) {
		if (!w->in_cb)
			watch_destroy(w);
	} else if (w->want != 0)
		watch_arm(w);
}

static void watch_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct loop_watch *w = container_of(op, struct loop_watch, op);
	if (!(flags & IORING_CQE_F_MORE)) {
		/* This poll is finished (removed, cancelled, error or one-shot end). */
		w->l->inflight--;
		w->armed = 0;
	}
	if (res > 0 && !w->dead && w->want != 0) {
		unsigned ev = 0;
		if (res & (POLLIN | POLLERR | POLLHUP))
			ev |= LOOP_READ;
		if (res & (POLLOUT | POLLERR | POLLHUP))
			ev |= LOOP_WRITE;
		ev &= w->want | ((res & (POLLERR | POLLHUP)) ? (LOOP_READ | LOOP_WRITE) : 0);
		if (ev) {
			w->in_cb = true;
			w->fn(w->arg, w->fd, ev);
			w->in_cb = false;
		}
	}
	watch_settle(w);
}

/* A poll-remove may miss a poll submitted in the same batch (-ENOENT while
 * the poll is still armed): watch_settle then sends another one. */
static void watch_rm_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct loop_watch *w = container_of(op, struct loop_watch, rm_op);
	(void)res;
	(void)flags;
	w->removing = false;
	watch_settle(w);
}

struct loop_watch *loop_watch_new(struct loop *l, int fd, loop_watch_fn *fn, void *arg)
{
	struct loop_watch *w = xcalloc(1, sizeof(*w));
	w->op.fn = watch_cqe;
	w->rm_op.fn = watch_rm_cqe;
	w->l = l;
	w->fd = fd;
	w->fn = fn;
	w->arg = arg;
	w->next = l->watches;
	if (l->watches)
		l->watches->prev = w;
	l->watches = w;
	return w;
}

void loop_watch_set(struct loop_watch *w, unsigned events)
{
	w->want = events;
	watch_settle(w);
}

void loop_watch_free(struct loop_watch *w)
{
	if (w == NULL)
		return;
	w->dead = true;
	w->want = 0;
	watch_settle(w);
}

/* ---- cross-thread wake-up ---- */

static void wake_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct loop *l = container_of(op, struct loop, wake_op);
	(void)flags;
	l->inflight--;
	if (res < 0 && res != -EINTR && res != -EAGAIN)
		log_error("evt=loop_wake_read_failed err=%s", strerror(-res));
	/* Cleared before the callback drains its queues: a push it misses
	 * was made after this, and that push's wake writes again. */
	atomic_store(&l->wake_pending, false);
	loop_read(l, &l->wake_op, l->wake_fd, &l->wake_buf, sizeof(l->wake_buf));
	if (l->wake_fn != NULL)
		l->wake_fn(l->wake_arg);
}

void loop_wake_fini(struct loop *l)
{
	l->wake_fn = NULL;
	l->wake_arg = NULL;
}

int loop_wake_init(struct loop *l, loop_wake_fn *fn, void *arg)
{
	if (l->wake_fd != -1)
		return -EALREADY;
	l->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (l->wake_fd == -1)
		return -errno;
	l->wake_fn = fn;
	l->wake_arg = arg;
	l->wake_op.fn = wake_cqe;
	loop_read(l, &l->wake_op, l->wake_fd, &l->wake_buf, sizeof(l->wake_buf));
	return 0;
}

void loop_wake(struct loop *l)
{
	if (atomic_exchange(&l->wake_pending, true))
		return; /* the loop has not yet taken the last one: it will see ours too */
	uint64_t one = 1;
	ssize_t r = write(l->wake_fd, &one, sizeof(one));
	(void)r; /* EAGAIN means the counter is saturated: a wake is pending anyway */
}

/* ---- the loop ---- */

int loop_run(struct loop *l)
{
	if (l->disabled) {
		/* this thread becomes the issuer (liburing 2.3 declares
		 * io_uring_enable_rings but its library lacks it) */
		if (syscall(__NR_io_uring_register, l->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
			    NULL, 0) < 0)
			return -errno;
		l->disabled = false;
	}
	l->stop = false;
	while (!l->stop) {
		l->now = now_ms();
		run_tasks(l);
		if (l->stop)
			break;
		/* loop_drain: done when only the wake-up read is left, or at the deadline */
		if (l->drain_until != 0 &&
		    ((l->task_head == NULL && l->inflight <= (l->wake_fd != -1 ? 1u : 0u)) ||
		     l->now >= l->drain_until))
			break;
		struct __kernel_timespec ts, *tsp = NULL;
		if (l->task_head != NULL) {
			ts.tv_sec = 0;
			ts.tv_nsec = 0;
			tsp = &ts;
		} else if (l->nheap > 0 || l->drain_until != 0) {
			uint64_t when = l->nheap > 0 ? l->heap[1]->when : l->drain_until;
			if (l->drain_until != 0 && l->drain_until < when)
				when = l->drain_until;
			uint64_t d = when > l->now ? when - l->now : 0;
			ts.tv_sec = (long long)(d / 1000);
			ts.tv_nsec = (long long)(d % 1000) * 1000000;
			tsp = &ts;
		}
		struct io_uring_cqe *cqe;
		int r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, tsp, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			return r;
		l->now = now_ms();
		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe)
		{
			struct loop_op *op = io_uring_cqe_get_data(cqe);
			n++;
			if (op == NULL)
				continue;
			/* Ops are single-shot except multishot polls, which count
			 * themselves down (watch_cqe) when their last CQE arrives. */
			if (op->fn != watch_cqe && op->fn != wake_cqe)
				l->inflight--;
			op->fn(op, cqe->res, cqe->flags);
		}
		io_uring_cq_advance(&l->ring, n);
		run_timers(l);
	}
	return 0;
}
