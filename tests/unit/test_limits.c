/* test_limits.c: connection slots (limit, FIFO wake-up, kick), the
 * process-wide count shared by workers' limits (two limits on one loop stand
 * for two workers), token-bucket rate, and the address circuit breaker, on a
 * real loop. */
#include <stdlib.h>

#include "sender/loop.h"
#include "sender/limits.h"
#include "sender/util.h"
#include "tests/t.h"

struct w {
	struct limits_waiter rw;
	int woken;
	int order;
};

static int seq;

static void wake(struct limits_waiter *rw)
{
	struct w *w = container_of(rw, struct w, rw);
	w->woken++;
	w->order = ++seq;
}

struct stopper {
	struct loop_timer t;
	struct loop *l;
};

static void stop_fn(struct loop_timer *t)
{
	struct stopper *s = container_of(t, struct stopper, t);
	loop_stop(s->l);
}

/* Run the loop for about ms milliseconds. */
static void spin(struct loop *l, unsigned ms)
{
	struct stopper s = { .l = l };
	loop_timer_init(&s.t, stop_fn);
	loop_timer_arm(l, &s.t, ms);
	loop_run(l);
}

static struct loop *mk(void)
{
	int err;
	struct loop *l = loop_new(64, &err);
	if (l == NULL)
		exit(1);
	return l;
}

static void t_slots(void)
{
	struct loop *l = mk();
	struct limits *r = limits_new(l, NULL);
	CHECK(limits_slot_take(r, "mx1", 2));
	CHECK(limits_slot_take(r, "mx1", 2));
	CHECK(!limits_slot_take(r, "mx1", 2));
	CHECK(limits_slot_take(r, "mx2", 2)); /* keys are independent */
	CHECK(limits_slot_take(r, "mx1", 0)); /* 0: unlimited */
	CHECK_INT(limits_slots_used(r, "mx1"), 3);
	struct w a = { 0 }, b = { 0 };
	seq = 0;
	limits_slot_wait(r, "mx1", &a.rw, wake);
	limits_slot_wait(r, "mx1", &b.rw, wake);
	spin(l, 5);
	CHECK_INT(a.woken + b.woken, 0); /* nothing released yet */
	limits_slot_release(r, "mx1");
	CHECK_INT(a.woken, 0); /* never from inside limits_* */
	spin(l, 5);
	CHECK_INT(a.woken, 1);
	CHECK_INT(b.woken, 0); /* FIFO: one release, one waiter */
	CHECK(limits_slot_kick(r, "mx1")); /* an idle connection was parked */
	spin(l, 5);
	CHECK_INT(b.woken, 1);
	CHECK(a.order < b.order);
	CHECK(!limits_slot_kick(r, "mx1")); /* nobody waits now */
	limits_free(r);
	loop_free(l);
}

/* Waiters of a higher priority (a smaller prio: a transactional lane) are
 * woken before those already waiting with a lower one; FIFO within one. */
static void t_slot_priority(void)
{
	struct loop *l = mk();
	struct limits *r = limits_new(l, NULL);
	CHECK(limits_slot_take(r, "mx", 1));
	struct w bulk1 = { 0 }, bulk2 = { 0 }, tx1 = { 0 }, tx2 = { 0 }, mid = { 0 };
	bulk1.rw.prio = bulk2.rw.prio = 2;
	tx1.rw.prio = tx2.rw.prio = 0;
	mid.rw.prio = 1;
	seq = 0;
	limits_slot_wait(r, "mx", &bulk1.rw, wake);
	limits_slot_wait(r, "mx", &bulk2.rw, wake);
	limits_slot_wait(r, "mx", &mid.rw, wake);
	limits_slot_wait(r, "mx", &tx1.rw, wake);
	limits_slot_wait(r, "mx", &tx2.rw, wake);
	for (int i = 0; i < 5; i++) { /* one release, one waiter woken */
		limits_slot_release(r, "mx");
		spin(l, 5);
		CHECK(limits_slot_take(r, "mx", 1));
	}
	CHECK_INT(tx1.order, 1);
	CHECK_INT(tx2.order, 2);
	CHECK_INT(mid.order, 3);
	CHECK_INT(bulk1.order, 4);
	CHECK_INT(bulk2.order, 5);
	limits_slot_release(r, "mx");
	limits_free(r);
	loop_free(l);
}

static void t_wait_with_nothing_in_use(void)
{
	struct loop *l = mk();
	struct limits *r = limits_new(l, NULL);
	struct w a = { 0 };
	limits_slot_wait(r, "idle", &a.rw, wake); /* no slot in use: woken at once */
	spin(l, 5);
	CHECK_INT(a.woken, 1);
	limits_free(r);
	loop_free(l);
}

/* Two workers share max = 2 for one MX host: the second waits until the
 * first gives a connection back, and is woken by its own poll of the count. */
static void t_shared_cap(void)
{
	struct loop *l = mk();
	struct limits_shared *g = limits_shared_new();
	struct limits *r1 = limits_new(l, g), *r2 = limits_new(l, g);
	CHECK(limits_slot_take(r1, "mx", 2));
	CHECK(limits_slot_take(r1, "mx", 2));
	CHECK(!limits_slot_take(r2, "mx", 2)); /* the process has 2 already */
	CHECK(limits_slot_take(r2, "other", 2)); /* keys are independent */
	CHECK_INT(limits_shared_wanting(g), 0);
	struct w a = { 0 };
	limits_slot_wait(r2, "mx", &a.rw, wake); /* not at once: r1 holds them */
	CHECK_INT(limits_shared_wanting(g), 1);
	spin(l, 60);
	CHECK_INT(a.woken, 0);
	/* r1 would keep an idle connection; r2 waits: hand it over */
	CHECK(limits_slot_yield(r1, "mx"));
	CHECK(!limits_slot_yield(r2, "other")); /* nobody waits for that one */
	limits_slot_release(r1, "mx");
	spin(l, 60); /* r2's poll (20 ms) sees the room */
	CHECK_INT(a.woken, 1);
	CHECK(limits_slot_take(r2, "mx", 2));
	CHECK_INT(limits_shared_wanting(g), 0);
	CHECK(!limits_slot_yield(r1, "mx")); /* nobody waits now */
	CHECK(!limits_slot_take(r1, "mx", 2));
	/* A limits that goes away gives its connections back to the count. */
	limits_free(r2);
	CHECK(limits_slot_take(r1, "mx", 2));
	CHECK(!limits_slot_take(r1, "mx", 2));
	limits_free(r1);
	limits_shared_free(g);
	loop_free(l);
}

/* A job waiting for a connection, as pool_get's: woken, it tries again. */
struct job_w {
	struct limits_waiter rw;
	struct limits *r;
	int max; /* 0: 4 */
	int got;
};

static void retry(struct limits_waiter *rw)
{
	struct job_w *j = container_of(rw, struct job_w, rw);
	if (limits_slot_take(j->r, "mx", j->max ? j->max : 4))
		j->got++;
	else
		limits_slot_wait(j->r, "mx", &j->rw, retry);
}

/* max = 4 over two workers: one holding all 4 yields while the other waits,
 * even with a job of its own waiting, and takes no more above its share (2)
 * while the other still waits. */
static void t_shared_fair(void)
{
	struct loop *l = mk();
	struct limits_shared *g = limits_shared_new();
	struct limits *r1 = limits_new(l, g), *r2 = limits_new(l, g);
	for (int i = 0; i < 4; i++)
		CHECK(limits_slot_take(r1, "mx", 4));
	struct job_w own = { .r = r1 }, other = { .r = r2 };
	retry(&own.rw);
	retry(&other.rw);
	CHECK_INT(own.got + other.got, 0);
	CHECK(limits_slot_yield(r1, "mx")); /* 4 > its share of 2 */
	limits_slot_release(r1, "mx");
	spin(l, 60);
	CHECK_INT(own.got, 0); /* woken first, but above its share */
	CHECK_INT(other.got, 1);
	CHECK(!limits_slot_yield(r1, "mx")); /* nobody else waits now */
	limits_slot_release(r1, "mx");
	spin(l, 10);
	CHECK_INT(own.got, 1);
	CHECK_INT(limits_slots_used(r1, "mx"), 3);
	CHECK_INT(limits_slots_used(r2, "mx"), 1);
	CHECK_INT(limits_slots_process(r2, "mx"), 4); /* the process's */
	CHECK_INT(limits_shared_wanting(g), 0);
	limits_free(r1);
	limits_free(r2);
	limits_shared_free(g);
	loop_free(l);
}

/* max = 1 over two workers, both with steady work: they take turns
 * (TURN_MS, 1 s), neither keeps the other out for good. */
static void t_shared_turns(void)
{
	struct loop *l = mk();
	struct limits_shared *g = limits_shared_new();
	struct limits *r1 = limits_new(l, g), *r2 = limits_new(l, g);
	spin(l, 1);
	CHECK(limits_slot_take(r1, "mx", 1));
	struct job_w own = { .r = r1, .max = 1 }, other = { .r = r2, .max = 1 };
	retry(&own.rw);
	retry(&other.rw);
	spin(l, 100);
	CHECK(!limits_slot_yield(r1, "mx")); /* its turn has just begun */
	spin(l, 950);
	CHECK(limits_slot_yield(r1, "mx")); /* a second later: the other's turn */
	limits_slot_release(r1, "mx");
	spin(l, 60);
	CHECK_INT(own.got, 0); /* woken first, but its turn is over */
	CHECK_INT(other.got, 1);
	struct job_w next = { .r = r2, .max = 1 };
	retry(&next.rw); /* r2 has steady work too */
	spin(l, 100);
	CHECK(!limits_slot_yield(r2, "mx"));
	spin(l, 950);
	CHECK(limits_slot_yield(r2, "mx"));
	limits_slot_release(r2, "mx");
	spin(l, 60);
	CHECK_INT(own.got, 1); /* back to r1 */
	CHECK_INT(next.got, 0);
	limits_slot_release(r1, "mx"); /* r1 done: r2's job needs no turn */
	spin(l, 60);
	CHECK_INT(next.got, 1);
	limits_slot_release(r2, "mx");
	CHECK_INT(limits_shared_wanting(g), 0);
	limits_free(r1);
	limits_free(r2);
	limits_shared_free(g);
	loop_free(l);
}

/* max_connections_total split between processes by rank. */
static void t_peers_share(void)
{
	struct limits_peers p = { 0 };
	CHECK_INT(limits_peers_share(NULL, 5), 5); /* mxsend send: alone */
	CHECK_INT(limits_peers_share(&p, 5), 5);   /* not known yet: alone */
	limits_peers_set(&p, 2, 0);
	CHECK_INT(limits_peers_share(&p, 5), 3); /* the remainder to the first */
	limits_peers_set(&p, 2, 1);
	CHECK_INT(limits_peers_share(&p, 5), 2);
	CHECK_INT(limits_peers_share(&p, 1), 0); /* fewer than processes: the first only */
	limits_peers_set(&p, 3, 0);
	CHECK_INT(limits_peers_share(&p, 1), 1);
	CHECK_INT(limits_peers_share(&p, 200), 67);
	limits_peers_set(&p, 2, 2); /* nonsense (rank out of range): alone */
	CHECK_INT(limits_peers_share(&p, 5), 5);
}

static void t_rate(void)
{
	struct loop *l = mk();
	struct limits *r = limits_new(l, NULL);
	spin(l, 1);
	CHECK_INT(limits_rate_delay(r, "d", 0), 0); /* unlimited */
	/* 2/s: a burst of 2, then about 500 ms between messages */
	CHECK_INT(limits_rate_delay(r, "d", 2), 0);
	CHECK_INT(limits_rate_delay(r, "d", 2), 0);
	uint64_t w = limits_rate_delay(r, "d", 2);
	CHECK(w > 400 && w <= 501);
	spin(l, 520);
	CHECK_INT(limits_rate_delay(r, "d", 2), 0);
	limits_free(r);
	loop_free(l);
}

static void t_breaker(void)
{
	struct loop *l = mk();
	struct limits *r = limits_new(l, NULL);
	spin(l, 1);
	CHECK(!limits_addr_down(r, "127.0.0.1:25"));
	limits_addr_result(r, "127.0.0.1:25", false);
	CHECK(limits_addr_down(r, "127.0.0.1:25")); /* backed off 1 s */
	CHECK(!limits_addr_down(r, "127.0.0.2:25"));
	spin(l, 1050);
	CHECK(!limits_addr_down(r, "127.0.0.1:25")); /* 1 s passed */
	limits_addr_result(r, "127.0.0.1:25", false); /* second failure: 2 s */
	spin(l, 1050);
	CHECK(limits_addr_down(r, "127.0.0.1:25"));
	limits_addr_result(r, "127.0.0.1:25", true); /* a success clears it */
	CHECK(!limits_addr_down(r, "127.0.0.1:25"));
	limits_free(r);
	loop_free(l);
}

static const struct t_case cases[] = {
	{ "slots: limit per key, FIFO wake-up on release, kick for a parked connection", t_slots },
	{ "slots: waiters woken by priority (lanes), FIFO within one", t_slot_priority },
	{ "slots: waiting with nothing in use wakes at once", t_wait_with_nothing_in_use },
	{ "slots: a count shared by two workers caps both; the waiter polls, the holder yields", t_shared_cap },
	{ "slots: shared count, a worker above its share (max / workers) yields and takes no more", t_shared_fair },
	{ "slots: shared count, max 1 over two busy workers: they take turns", t_shared_turns },
	{ "peers: max_connections_total split between processes by rank", t_peers_share },
	{ "rate: token bucket burst then spacing", t_rate },
	{ "breaker: growing back-off, cleared by success", t_breaker },
};
T_MAIN(cases)
