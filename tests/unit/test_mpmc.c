/* test_mpmc.c: the bounded MPMC queue (FIFO, full, empty, wrap-around, every
 * item once under 1 producer x 4 consumers and 4 x 3) and the take-all stack
 * (oldest first, the empty -> non-empty signal, pushes from 4 threads).
 * Sizes are small and loops bounded: the threaded cases end in well under a
 * second. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "sender/mpmc.h"
#include "tests/t.h"

static void t_fifo(void)
{
	struct mpmc q;
	mpmc_init(&q, 3); /* rounded up to 4 */
	CHECK_INT(mpmc_cap(&q), 4);
	CHECK(mpmc_pop(&q) == NULL);
	uintptr_t next_in = 1, next_out = 1;
	for (int lap = 0; lap < 10; lap++) { /* positions wrap the cells many times */
		int k = lap % 4 + 1;
		for (int i = 0; i < k; i++)
			CHECK(mpmc_push(&q, (void *)next_in++));
		if (k == 4)
			CHECK(!mpmc_push(&q, (void *)999)); /* full */
		for (int i = 0; i < k; i++)
			CHECK(mpmc_pop(&q) == (void *)next_out++);
		CHECK(mpmc_pop(&q) == NULL);
	}
	/* full, one out, one in: still FIFO */
	for (uintptr_t i = 100; i < 104; i++)
		CHECK(mpmc_push(&q, (void *)i));
	CHECK(mpmc_pop(&q) == (void *)100);
	CHECK(mpmc_push(&q, (void *)104));
	for (uintptr_t i = 101; i <= 104; i++)
		CHECK(mpmc_pop(&q) == (void *)i);
	mpmc_fini(&q);
}

#define N_ITEMS 200000

struct mt {
	struct mpmc q;
	_Atomic unsigned seen[N_ITEMS + 1];
	unsigned producers;
	_Atomic unsigned long got;
	_Atomic bool order_bad;
};

struct prod {
	struct mt *m;
	uintptr_t from, to; /* items [from, to) */
};

static void *producer(void *arg)
{
	struct prod *p = arg;
	for (uintptr_t i = p->from; i < p->to; i++)
		while (!mpmc_push(&p->m->q, (void *)i))
			sched_yield();
	return NULL;
}

static void *consumer(void *arg)
{
	struct mt *m = arg;
	uintptr_t last[8] = { 0 }; /* per producer, items arrive in its order */
	unsigned idle = 0; /* bounded: a lost item ends the wait (and fails the counts) */
	for (;;) {
		void *it = mpmc_pop(&m->q);
		if (it == NULL) {
			if (atomic_load(&m->got) >= N_ITEMS || ++idle > 2000000)
				return NULL;
			sched_yield();
			continue;
		}
		idle = 0;
		uintptr_t v = (uintptr_t)it;
		if (v == 0 || v > N_ITEMS)
			continue;
		atomic_fetch_add(&m->seen[v], 1);
		atomic_fetch_add(&m->got, 1);
		unsigned who = (unsigned)((v - 1) / (N_ITEMS / m->producers));
		if (who < 8) {
			if (v <= last[who])
				atomic_store(&m->order_bad, true);
			last[who] = v;
		}
	}
}

static void run_mt(unsigned np, unsigned nc)
{
	struct mt *m = calloc(1, sizeof(*m));
	mpmc_init(&m->q, 64);
	m->producers = np;
	pthread_t pt[8], ct[8];
	struct prod pp[8];
	for (unsigned i = 0; i < nc; i++)
		pthread_create(&ct[i], NULL, consumer, m);
	uintptr_t per = N_ITEMS / np;
	for (unsigned i = 0; i < np; i++) {
		pp[i] = (struct prod){ .m = m, .from = 1 + i * per, .to = 1 + (i + 1) * per };
		pthread_create(&pt[i], NULL, producer, &pp[i]);
	}
	for (unsigned i = 0; i < np; i++)
		pthread_join(pt[i], NULL);
	for (unsigned i = 0; i < nc; i++)
		pthread_join(ct[i], NULL);
	unsigned once = 0;
	for (unsigned long v = 1; v <= N_ITEMS; v++)
		once += atomic_load(&m->seen[v]) == 1;
	CHECK_INT(once, N_ITEMS);
	CHECK_INT(atomic_load(&m->got), N_ITEMS);
	CHECK(!atomic_load(&m->order_bad)); /* a consumer sees one producer's items in order */
	CHECK(mpmc_pop(&m->q) == NULL);
	mpmc_fini(&m->q);
	free(m);
}

static void t_mt_1x4(void)
{
	run_mt(1, 4);
}

static void t_mt_4x3(void)
{
	run_mt(4, 3);
}

struct node {
	struct lstack_node n;
	int v;
};

static void t_stack(void)
{
	struct lstack s;
	lstack_init(&s);
	CHECK(lstack_take(&s) == NULL);
	struct node a[5];
	for (int i = 0; i < 5; i++) {
		a[i].v = i;
		CHECK(lstack_push(&s, &a[i].n) == (i == 0)); /* only the first finds it empty */
	}
	int i = 0;
	for (struct lstack_node *n = lstack_take(&s); n != NULL; n = n->next, i++)
		CHECK_INT(((struct node *)(void *)n)->v, i); /* oldest first */
	CHECK_INT(i, 5);
	CHECK(lstack_take(&s) == NULL);
	CHECK(lstack_push(&s, &a[0].n)); /* empty again */
	CHECK(lstack_take(&s) == &a[0].n);
}

#define ST_PER 50000
struct st {
	struct lstack s;
	struct node *nodes;
	_Atomic unsigned wakes;
};

struct st_arg {
	struct st *st;
	int from;
};

static void *st_pusher(void *arg)
{
	struct st_arg *a = arg;
	for (int i = a->from; i < a->from + ST_PER; i++)
		if (lstack_push(&a->st->s, &a->st->nodes[i].n))
			atomic_fetch_add(&a->st->wakes, 1);
	return NULL;
}

static void t_stack_mt(void)
{
	struct st st;
	lstack_init(&st.s);
	atomic_store(&st.wakes, 0);
	st.nodes = calloc(4 * ST_PER, sizeof(*st.nodes));
	unsigned char *seen = calloc(4 * ST_PER, 1);
	pthread_t t[4];
	struct st_arg a[4];
	for (int i = 0; i < 4; i++) {
		a[i] = (struct st_arg){ &st, i * ST_PER };
		for (int k = 0; k < ST_PER; k++)
			st.nodes[i * ST_PER + k].v = i * ST_PER + k;
		pthread_create(&t[i], NULL, st_pusher, &a[i]);
	}
	/* the consumer takes while they push; a take that finds nodes must have
	 * been preceded by a wake (an empty -> non-empty push) */
	unsigned long got = 0, takes = 0;
	int last[4] = { -1, -1, -1, -1 };
	bool order_ok = true;
	for (int spins = 0; got < 4ul * ST_PER && spins < 100000000; spins++) {
		struct lstack_node *n = lstack_take(&st.s);
		if (n != NULL)
			takes++;
		for (; n != NULL; n = n->next) {
			int v = ((struct node *)(void *)n)->v;
			seen[v]++;
			got++;
			if (v <= last[v / ST_PER])
				order_ok = false;
			last[v / ST_PER] = v;
		}
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (struct lstack_node *n = lstack_take(&st.s); n != NULL; n = n->next)
		seen[((struct node *)(void *)n)->v]++, got++;
	unsigned once = 0;
	for (int v = 0; v < 4 * ST_PER; v++)
		once += seen[v] == 1;
	CHECK_INT(once, 4 * ST_PER);
	CHECK_INT(got, 4 * ST_PER);
	CHECK(order_ok); /* one pusher's nodes come oldest first */
	CHECK(atomic_load(&st.wakes) >= takes); /* every non-empty take had its wake */
	free(seen);
	free(st.nodes);
}

static const struct t_case cases[] = {
	{ "mpmc: FIFO, capacity rounded to a power of two, full and empty, wrap-around", t_fifo },
	{ "mpmc: 1 producer x 4 consumers, 200,000 items: each popped once, in order per consumer", t_mt_1x4 },
	{ "mpmc: 4 producers x 3 consumers: each item once, each producer's in order", t_mt_4x3 },
	{ "lstack: take-all oldest first; push says when the stack was empty", t_stack },
	{ "lstack: 4 threads push 200,000 nodes while one takes: each once, in order per pusher, a wake per take", t_stack_mt },
};
T_MAIN(cases)
