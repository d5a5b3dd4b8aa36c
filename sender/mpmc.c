/* mpmc.c: the bounded MPMC queue and the take-all stack (mpmc.h).
 *
 * Queue: cell i's seq says whose turn it is. seq == pos: free for the push
 * of position pos; seq == pos + 1: holds the item for the pop of pos; the pop
 * sets it to pos + cap (free for the push one lap later). A producer claims
 * pos by CAS on head, a consumer by CAS on tail; the release store of seq
 * publishes the item to the thread that acquires it. */
#include "sender/mpmc.h"

#include <stdint.h>
#include <stdlib.h>

#include "sender/util.h"

void mpmc_init(struct mpmc *q, size_t cap)
{
	size_t n = 2;
	while (n < cap)
		n <<= 1;
	q->cells = xcalloc(n, sizeof(*q->cells));
	q->mask = n - 1;
	for (size_t i = 0; i < n; i++)
		atomic_store_explicit(&q->cells[i].seq, i, memory_order_relaxed);
	atomic_store(&q->head, 0);
	atomic_store(&q->tail, 0);
}

void mpmc_fini(struct mpmc *q)
{
	free(q->cells);
	q->cells = NULL;
}

size_t mpmc_cap(const struct mpmc *q)
{
	return q->mask + 1;
}

bool mpmc_push(struct mpmc *q, void *item)
{
	size_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
	for (;;) {
		struct mpmc_cell *c = &q->cells[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				c->item = item;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return true;
			}
			/* pos reloaded by the failed CAS */
		} else if (dif < 0) {
			return false; /* the cell still holds the item of a lap ago: full */
		} else {
			pos = atomic_load_explicit(&q->head, memory_order_relaxed);
		}
	}
}

void *mpmc_pop(struct mpmc *q)
{
	size_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	for (;;) {
		struct mpmc_cell *c = &q->cells[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				void *item = c->item;
				atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
				return item;
			}
		} else if (dif < 0) {
			return NULL; /* empty, or its push not published yet */
		} else {
			pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
		}
	}
}

bool lstack_push(struct lstack *s, struct lstack_node *n)
{
	struct lstack_node *top = atomic_load_explicit(&s->top, memory_order_relaxed);
	do
		n->next = top;
	while (!atomic_compare_exchange_weak_explicit(&s->top, &top, n, memory_order_release,
						      memory_order_relaxed));
	return top == NULL;
}

struct lstack_node *lstack_take(struct lstack *s)
{
	/* No ABA: nodes leave only all at once, by this exchange. */
	struct lstack_node *n = atomic_exchange_explicit(&s->top, NULL, memory_order_acquire);
	struct lstack_node *rev = NULL;
	while (n != NULL) { /* newest first -> oldest first */
		struct lstack_node *next = n->next;
		n->next = rev;
		rev = n;
		n = next;
	}
	return rev;
}
