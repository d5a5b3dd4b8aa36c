/* redis_uring.c: the hiredis <-> loop adapter (see redis_uring.h).
 *
 * Invariants:
 * - the watcher mask is (reading ? READ : 0) | (write_wait ? WRITE : 0), where
 *   write_wait means "hiredis has output it could not send, or the connect is
 *   in progress": only then is write readiness worth a poll. Every other write
 *   happens from the deferred task, after the current batch of completions,
 *   so commands issued by callbacks are sent together (pipelining for free).
 * - hiredis may call cleanup from inside redisAsyncHandleRead/Write (connection
 *   lost, redisAsyncFree in a callback): then we only set `deleted`, and the
 *   dispatcher frees after the call returns. The watcher itself is released
 *   (loop_watch_free) at cleanup time, before hiredis closes the fd.
 * - reads: hiredis reads at most 16 KiB per redisAsyncHandleRead; a large
 *   reply (a claim of 256 jobs) would cost one poll round trip per 16 KiB, so
 *   we read again while FIONREAD says bytes are waiting (bounded per dispatch). */
#include "sender/redis_uring.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "sender/loop.h"
#include "sender/util.h"

#define READ_BUDGET 64 /* redisAsyncHandleRead calls (16 KiB each) per dispatch */

struct redis_uring {
	redisAsyncContext *ac;
	struct loop *loop;
	struct loop_watch *w;
	int fd;
	bool reading, writing, write_wait;
	bool in_dispatch, deleted;
	bool want_flush, want_read; /* what the queued task should do */
	unsigned mask;              /* last mask given to the watcher */
	struct loop_task task;
};

static bool connected(const struct redis_uring *e)
{
	return (e->ac->c.flags & REDIS_CONNECTED) != 0;
}

static void update_mask(struct redis_uring *e)
{
	if (e->deleted)
		return;
	unsigned m = (e->reading ? LOOP_READ : 0u) | (e->write_wait ? LOOP_WRITE : 0u);
	if (m != e->mask) {
		e->mask = m;
		loop_watch_set(e->w, m);
	}
}

static bool bytes_buffered(const struct redis_uring *e)
{
	int n = 0;
	return ioctl(e->fd, FIONREAD, &n) == 0 && n > 0;
}

/* Read until the socket is drained or the budget is spent. */
static void do_read(struct redis_uring *e)
{
	for (int i = 0; i < READ_BUDGET; i++) {
		redisAsyncHandleRead(e->ac);
		if (e->deleted || !e->reading || !bytes_buffered(e))
			return;
	}
	e->want_read = true; /* more buffered: continue next iteration */
	loop_defer(e->loop, &e->task);
}

/* Send what hiredis has buffered; if the socket could not take it all (or we
 * are still connecting), wait for write readiness. */
static void do_write(struct redis_uring *e)
{
	if (!connected(e)) {
		e->write_wait = true; /* the connect completes with write readiness */
		return;
	}
	redisAsyncHandleWrite(e->ac);
	if (!e->deleted)
		e->write_wait = e->writing; /* still writing = partial write */
}

static void maybe_free(struct redis_uring *e)
{
	if (e->deleted && !e->in_dispatch) {
		loop_task_cancel(e->loop, &e->task);
		free(e);
	}
}

static void on_task(struct loop_task *t)
{
	struct redis_uring *e = container_of(t, struct redis_uring, task);
	bool rd = e->want_read, fl = e->want_flush;
	e->want_read = e->want_flush = false;
	if (!e->deleted) {
		e->in_dispatch = true;
		if (rd && e->reading)
			do_read(e);
		/* Also what reply callbacks queued during that read (add_write is
		 * silent inside a dispatch): a claim answered by a reply too large
		 * for one budget queues the next claim here. */
		if (!e->deleted && (fl || rd) && e->writing && !e->write_wait)
			do_write(e);
		e->in_dispatch = false;
		update_mask(e);
	}
	maybe_free(e);
}

static void on_ready(void *arg, int fd, unsigned revents)
{
	struct redis_uring *e = arg;
	(void)fd;
	if (e->deleted)
		return;
	e->in_dispatch = true;
	if ((revents & LOOP_READ) && e->reading)
		do_read(e);
	if (!e->deleted && (revents & LOOP_WRITE) && e->writing && e->write_wait) {
		/* Also the first write readiness after connect(): hiredis then
		 * checks SO_ERROR and runs the connect callback before sending. */
		redisAsyncHandleWrite(e->ac);
		if (!e->deleted)
			e->write_wait = e->writing; /* still writing = partial write */
	}
	/* Commands queued by reply callbacks: flush them with the task. */
	if (!e->deleted && e->writing && !e->write_wait) {
		e->want_flush = true;
		loop_defer(e->loop, &e->task);
	}
	e->in_dispatch = false;
	update_mask(e);
	maybe_free(e);
}

/* ---- hiredis hooks (idempotent; never call back into hiredis) ---- */

static void add_read(void *p)
{
	struct redis_uring *e = p;
	e->reading = true;
	if (!e->in_dispatch)
		update_mask(e);
}

static void del_read(void *p)
{
	struct redis_uring *e = p;
	e->reading = false;
	if (!e->in_dispatch)
		update_mask(e);
}

static void add_write(void *p)
{
	struct redis_uring *e = p;
	e->writing = true;
	if (e->in_dispatch || e->write_wait)
		return; /* the dispatcher decides, or readiness will come */
	if (connected(e)) {
		e->want_flush = true;
		loop_defer(e->loop, &e->task);
	} else {
		e->write_wait = true;
		update_mask(e);
	}
}

static void del_write(void *p)
{
	struct redis_uring *e = p;
	e->writing = false;
	e->write_wait = false;
	if (!e->in_dispatch)
		update_mask(e);
}

static void cleanup(void *p)
{
	struct redis_uring *e = p;
	e->ac->ev.data = NULL;
	e->deleted = true;
	e->reading = e->writing = e->write_wait = false;
	loop_watch_free(e->w); /* before hiredis closes the fd */
	e->w = NULL;
	maybe_free(e);
}

int redis_uring_attach(struct loop *l, redisAsyncContext *ac)
{
	if (ac->ev.data != NULL)
		return -EEXIST;
	struct redis_uring *e = xcalloc(1, sizeof(*e));
	e->ac = ac;
	e->loop = l;
	e->fd = ac->c.fd;
	loop_task_init(&e->task, on_task);
	e->w = loop_watch_new(l, e->fd, on_ready, e);
	ac->ev.addRead = add_read;
	ac->ev.delRead = del_read;
	ac->ev.addWrite = add_write;
	ac->ev.delWrite = del_write;
	ac->ev.cleanup = cleanup;
	ac->ev.data = e;
	/* Watch for the connect to complete (hiredis 0.14 only notices it on the
	 * first read or write event). */
	e->writing = true;
	e->write_wait = true;
	update_mask(e);
	return 0;
}
