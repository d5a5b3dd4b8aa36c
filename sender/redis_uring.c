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
 * - reads: hiredis reads at most 16 KiB per redisAsyncHandleRead, through a
 *   stack buffer it then copies into its reader. A claim of 256 jobs of 4 KiB
 *   is a 1 MiB reply: 64 read and FIONREAD calls and a copy of every byte. So
 *   we read ourselves, up to READ_CHUNK at a time, straight into the reader's
 *   buffer (redisReader and its sds are hiredis's public API), then call
 *   redisAsyncHandleRead: its own read finds the socket drained (or takes a
 *   little more), and it parses and dispatches as usual; end of file and
 *   errors reach hiredis's disconnect path the same way. (One difference: when
 *   the server's last bytes and its close arrive together, hiredis meets the
 *   close before parsing them, and those replies are lost with the connection.
 *   The queue already treats a lost connection's replies as unknown: commits
 *   are sent again, and are idempotent; claimed entries are reclaimed.)
 *   The reader's maxbuf is 0 (hiredis would otherwise free the grown buffer
 *   whenever it empties); we release it ourselves when empty and over
 *   READ_KEEP. Why 64 KiB and not more: after each reply, once 1 KiB is
 *   consumed, hiredis moves what is left to the buffer's start, so many small
 *   replies in one large read cost (read size / 2) bytes moved per KiB parsed;
 *   256 KiB reads were no cheaper for bench q1, and bound that less. */
#include "sender/redis_uring.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "sender/loop.h"
#include "sender/util.h"

#define READ_CHUNK (64u << 10)  /* bytes asked of one read() (see "reads" above) */
#define READ_KEEP (1u << 20)    /* an empty reader buffer larger than this is released */
#define READ_BUDGET 16          /* read() calls per dispatch: a claim of 256 x 4 KiB */

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

/* One read() into hiredis's reader buffer, then redisAsyncHandleRead parses
 * and runs the callbacks (its own read finds the socket drained, or takes a
 * little more). Returns true when our read filled what it asked for: more may
 * be waiting. */
static bool read_some(struct redis_uring *e)
{
	redisReader *r = e->ac->c.reader;
	if (!connected(e) || r->err) {
		redisAsyncHandleRead(e->ac);
		return false;
	}
	if (r->pos == r->len && sdsalloc(r->buf) > READ_KEEP) {
		sds empty = sdsempty();
		if (empty != NULL) {
			sdsfree(r->buf);
			r->buf = empty;
			r->pos = r->len = 0;
		}
	}
	sds b = sdsMakeRoomFor(r->buf, READ_CHUNK);
	ssize_t n = -1;
	size_t room = 0;
	if (b != NULL) {
		r->buf = b;
		room = sdsavail(b);
		n = read(e->fd, b + sdslen(b), room);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return false;
		if (n > 0) {
			sdsIncrLen(b, (int)n);
			r->len = sdslen(b);
		}
	}
	/* n <= 0 (end of file, an error, no memory): hiredis meets it too and
	 * disconnects */
	redisAsyncHandleRead(e->ac);
	return n > 0 && (size_t)n == room;
}

/* Read until the socket is drained or the budget is spent. */
static void do_read(struct redis_uring *e)
{
	for (int i = 0; i < READ_BUDGET; i++) {
		if (!read_some(e) || e->deleted || !e->reading)
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
	ac->c.reader->maxbuf = 0; /* see "reads" above */
	/* Watch for the connect to complete (hiredis 0.14 only notices it on the
	 * first read or write event). */
	e->writing = true;
	e->write_wait = true;
	update_mask(e);
	return 0;
}
