/* test_loop.c: the io_uring loop: timers in order, deferred tasks, recv/send over
 * a socketpair, cancel, readiness watchers (arm, change, free while armed). */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sender/loop.h"
#include "sender/util.h"
#include "tests/t.h"

static struct loop *mk(void)
{
	int err = 0;
	struct loop *l = loop_new(64, &err);
	CHECK(l != NULL);
	if (l == NULL)
		exit(1);
	return l;
}

struct tctx {
	struct loop_timer t;
	struct loop *l;
	int *order;
	int *n;
	int id;
};

static void timer_fn(struct loop_timer *t)
{
	struct tctx *c = container_of(t, struct tctx, t);
	c->order[(*c->n)++] = c->id;
	if (*c->n == 4)
		loop_stop(c->l);
}

static void t_timers(void)
{
	struct loop *l = mk();
	int order[8], n = 0;
	struct tctx c[5];
	unsigned delays[5] = { 30, 10, 20, 5, 15 };
	for (int i = 0; i < 5; i++) {
		c[i] = (struct tctx){ .l = l, .order = order, .n = &n, .id = i };
		loop_timer_init(&c[i].t, timer_fn);
		loop_timer_arm(l, &c[i].t, delays[i]);
	}
	loop_timer_stop(l, &c[2].t); /* 20 ms one never fires */
	CHECK(!loop_timer_armed(&c[2].t));
	loop_run(l);
	CHECK_INT(n, 4);
	CHECK_INT(order[0], 3);
	CHECK_INT(order[1], 1);
	CHECK_INT(order[2], 4);
	CHECK_INT(order[3], 0);
	loop_free(l);
}

struct io {
	struct loop_op op;
	struct loop *l;
	int res;
	int count;
};

static void io_done(struct loop_op *op, int res, unsigned flags)
{
	struct io *io = container_of(op, struct io, op);
	(void)flags;
	io->res = res;
	io->count++;
	loop_stop(io->l);
}

static void t_send_recv(void)
{
	struct loop *l = mk();
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	char buf[16] = { 0 };
	struct io rx = { .op.fn = io_done, .l = l }, tx = { .op.fn = io_done, .l = l };
	loop_recv(l, &rx.op, sv[1], buf, sizeof(buf));
	loop_send(l, &tx.op, sv[0], "hello", 5);
	while (rx.count == 0 || tx.count == 0)
		loop_run(l);
	CHECK_INT(tx.res, 5);
	CHECK_INT(rx.res, 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	CHECK_INT(loop_inflight(l), 0);
	/* cancel a recv that would wait forever */
	rx.count = 0;
	loop_recv(l, &rx.op, sv[1], buf, sizeof(buf));
	loop_cancel(l, &rx.op);
	while (rx.count == 0)
		loop_run(l);
	CHECK_INT(rx.res, -ECANCELED);
	CHECK_INT(loop_inflight(l), 0);
	close(sv[0]);
	close(sv[1]);
	loop_free(l);
}

struct dtask {
	struct loop_task t;
	struct loop *l;
	int runs;
};

static void dtask_fn(struct loop_task *t)
{
	struct dtask *d = container_of(t, struct dtask, t);
	d->runs++;
	loop_stop(d->l);
}

static void t_defer(void)
{
	struct loop *l = mk();
	struct dtask d = { .l = l };
	loop_task_init(&d.t, dtask_fn);
	loop_defer(l, &d.t);
	loop_defer(l, &d.t); /* coalesced */
	loop_run(l);
	CHECK_INT(d.runs, 1);
	loop_free(l);
}

struct wctx {
	struct loop *l;
	unsigned last;
	int calls;
};

static void watch_fn(void *arg, int fd, unsigned ev)
{
	struct wctx *w = arg;
	(void)fd;
	w->last = ev;
	w->calls++;
	loop_stop(w->l);
}

static void stop_timer(struct loop_timer *t)
{
	(void)t;
}

static struct loop *stop_l;
static void stop_timer_l(struct loop_timer *t)
{
	(void)t;
	loop_stop(stop_l);
}

static void t_watch(void)
{
	struct loop *l = mk();
	int p[2];
	CHECK(pipe(p) == 0);
	struct wctx w = { .l = l };
	struct loop_watch *wr = loop_watch_new(l, p[1], watch_fn, &w);
	loop_watch_set(wr, LOOP_WRITE);
	loop_run(l);
	CHECK(w.calls >= 1 && (w.last & LOOP_WRITE));
	loop_watch_free(wr);
	struct loop_watch *rd = loop_watch_new(l, p[0], watch_fn, &w);
	loop_watch_set(rd, LOOP_READ);
	w.calls = 0;
	CHECK(write(p[1], "x", 1) == 1);
	loop_run(l);
	CHECK_INT(w.calls, 1);
	CHECK(w.last & LOOP_READ);
	char c;
	CHECK(read(p[0], &c, 1) == 1);
	/* change mask to 0 then back, then free while armed; drain with a timer */
	loop_watch_set(rd, 0);
	loop_watch_set(rd, LOOP_READ);
	w.calls = 0;
	CHECK(write(p[1], "y", 1) == 1);
	loop_run(l);
	CHECK_INT(w.calls, 1);
	loop_watch_free(rd);
	struct loop_timer t;
	loop_timer_init(&t, stop_timer);
	for (int i = 0; i < 5 && loop_inflight(l) > 0; i++) {
		struct io dummy = { .op.fn = io_done, .l = l };
		loop_timer_arm(l, &t, 10);
		loop_close(l, &dummy.op, -1);
		loop_run(l);
	}
	CHECK_INT(loop_inflight(l), 0);
	close(p[0]);
	close(p[1]);
	loop_free(l);
}

static int wakes;
static void wake_fn(void *arg)
{
	(void)arg;
	wakes++;
}

/* Exit paths: a watcher freed while its poll is armed and the loop never run
 * again is freed by loop_free (LeakSanitizer checks); loop_drain settles
 * what is in flight and gives up at its deadline; after loop_wake_fini a
 * wake-up reaches nothing (its arg may be freed). */
static void t_exit(void)
{
	struct loop *l = mk();
	int p[2];
	CHECK(pipe(p) == 0);
	struct wctx w = { .l = l };
	struct loop_watch *rd = loop_watch_new(l, p[0], watch_fn, &w);
	loop_watch_set(rd, LOOP_READ);
	loop_watch_free(rd); /* the poll was never even submitted */
	loop_free(l);

	l = mk();
	CHECK_INT(loop_drain(l, 100), 0); /* nothing to settle: at once */
	rd = loop_watch_new(l, p[0], watch_fn, &w);
	loop_watch_set(rd, LOOP_READ);
	loop_watch_free(rd);
	CHECK_INT(loop_drain(l, 1000), 0); /* poll + poll-remove completed */
	CHECK_INT(loop_inflight(l), 0);
	CHECK_INT(w.calls, 0);
	/* a read that never completes: drain stops at its deadline */
	char buf[4];
	struct io rx = { .op.fn = io_done, .l = l };
	loop_read(l, &rx.op, p[0], buf, sizeof(buf));
	uint64_t t0 = mono_ms();
	CHECK_INT(loop_drain(l, 100), -ETIMEDOUT);
	uint64_t dt = mono_ms() - t0;
	CHECK(dt >= 90 && dt < 1000);
	CHECK_INT(rx.count, 0);
	CHECK(write(p[1], "z", 1) == 1);
	CHECK_INT(loop_drain(l, 1000), 0);
	CHECK_INT(rx.count, 1);
	CHECK_INT(rx.res, 1);

	/* wake-up: delivered, then nothing after loop_wake_fini */
	CHECK_INT(loop_wake_init(l, wake_fn, NULL), 0);
	struct loop_timer t;
	loop_timer_init(&t, stop_timer_l);
	stop_l = l;
	loop_wake(l);
	for (int i = 0; i < 50 && wakes == 0; i++) {
		loop_timer_arm(l, &t, 20);
		loop_run(l);
	}
	CHECK_INT(wakes, 1);
	loop_wake_fini(l);
	loop_wake(l);
	loop_timer_arm(l, &t, 50);
	loop_run(l);
	CHECK_INT(wakes, 1);
	CHECK_INT(loop_drain(l, 100), 0); /* the wake-up read does not count */
	close(p[0]);
	close(p[1]);
	loop_free(l);
}

static const struct t_case cases[] = {
	{ "timers fire in deadline order; stopped timer never fires", t_timers },
	{ "send/recv over socketpair; cancel gives -ECANCELED", t_send_recv },
	{ "deferred task runs once", t_defer },
	{ "watchers: write/read readiness, mask change, free while armed", t_watch },
	{ "exit: loop_free frees watchers freed while armed, loop_drain, loop_wake_fini", t_exit },
};
T_MAIN(cases)
