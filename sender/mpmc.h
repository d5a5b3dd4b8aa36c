/* mpmc.h: two lock-free hand-off structures between threads (sign_pool.c).
 *
 * struct mpmc: a bounded queue of pointers, any number of producers and
 * consumers (Dmitry Vyukov's bounded MPMC queue: one sequence number per cell,
 * one CAS per push or pop, no locks, no allocation after init). FIFO per
 * producer. Full: push returns false (the caller keeps the item). A pop may
 * briefly miss an item whose push is half done: callers that must not miss
 * one count items separately (sign_pool.c's eventfd semaphore counts only
 * completed pushes).
 *
 * struct lstack: an intrusive list any thread pushes onto (one CAS) and one
 * thread takes whole (one exchange), in push order. Unbounded by itself:
 * bounded by what its users can have outstanding.
 *
 * Pure (C11 atomics); the unit test is tests/unit/test_mpmc.c. */
#ifndef SENDER_MPMC_H
#define SENDER_MPMC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct mpmc_cell {
	_Atomic size_t seq;
	void *item;
};

struct mpmc {
	struct mpmc_cell *cells;
	size_t mask;
	/* apart (padding, not _Alignas: the owner may be malloc'd) so that
	 * producers and consumers do not share a cache line */
	char pad0[64];
	_Atomic size_t head; /* next push */
	char pad1[64];
	_Atomic size_t tail; /* next pop */
	char pad2[64];
};

/* cap: rounded up to a power of two, at least 2. Allocates (aborts on OOM). */
void mpmc_init(struct mpmc *q, size_t cap);
void mpmc_fini(struct mpmc *q);
size_t mpmc_cap(const struct mpmc *q);
/* item != NULL. false: full. */
bool mpmc_push(struct mpmc *q, void *item);
/* NULL: empty (or the next push not finished yet). */
void *mpmc_pop(struct mpmc *q);

struct lstack_node {
	struct lstack_node *next;
};

struct lstack {
	_Atomic(struct lstack_node *) top;
};

static inline void lstack_init(struct lstack *s)
{
	atomic_store(&s->top, NULL);
}
/* Any thread. Returns true when the stack was empty (the consumer may need a
 * wake-up: pushes onto a non-empty stack ride on the first one's). */
bool lstack_push(struct lstack *s, struct lstack_node *n);
/* The consumer: everything pushed so far, oldest first (NULL-terminated). */
struct lstack_node *lstack_take(struct lstack *s);

#endif
