/* route.c: connection slots with FIFO waiters, token buckets, and a circuit
 * breaker, in small hash tables keyed by strings. Entries are dropped when
 * they carry no state (no slot in use, nobody waiting, breaker clear), so the
 * tables stay as large as the set of destinations in use. */
#include "sender/route.h"

#include <stdlib.h>
#include <string.h>

#include "sender/util.h"

#define NB 1024
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS (5 * 60 * 1000)

/* Every table entry starts with a node, so one lookup serves all tables. */
struct node {
	struct node *next;
	char key[256];
};

struct slot {
	struct node n;
	int used;
	struct route_waiter *head, *tail;
};

struct bucket {
	struct node n;
	double tokens;
	uint64_t at;
};

struct brk {
	struct node n;
	unsigned fails;
	uint64_t until;
};

struct route {
	struct loop *l;
	struct node *slots[NB];
	struct node *buckets[NB];
	struct node *brks[NB];
	struct loop_task task;
	struct route_waiter *ready_head, *ready_tail; /* woken, to run from task */
};

static unsigned h(const char *k)
{
	unsigned x = 2166136261u;
	for (; *k; k++)
		x = (x ^ (unsigned char)*k) * 16777619u;
	return x % NB;
}

/* The link that points at key's entry (or at the NULL that ends its chain). */
static struct node **find(struct node **tab, const char *key)
{
	struct node **pp = &tab[h(key)];
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->next;
	return pp;
}

static struct node *add(struct node **at, const char *key, size_t size)
{
	struct node *n = xcalloc(1, size);
	strlcpy_x(n->key, key, sizeof(n->key));
	*at = n;
	return n;
}

static void drop(struct node **at)
{
	struct node *n = *at;
	*at = n->next;
	free(n);
}
static void run_ready(struct loop_task *t)
{
	struct route *r = container_of(t, struct route, task);
	while (r->ready_head) {
		struct route_waiter *w = r->ready_head;
		r->ready_head = w->next;
		if (r->ready_head == NULL)
			r->ready_tail = NULL;
		w->next = NULL;
		w->queued = false;
		w->fn(w);
	}
}

struct route *route_new(struct loop *l)
{
	struct route *r = xcalloc(1, sizeof(*r));
	r->l = l;
	loop_task_init(&r->task, run_ready);
	return r;
}

void route_free(struct route *r)
{
	if (r == NULL)
		return;
	loop_task_cancel(r->l, &r->task);
	for (unsigned i = 0; i < NB; i++) {
		while (r->slots[i])
			drop(&r->slots[i]);
		while (r->buckets[i])
			drop(&r->buckets[i]);
		while (r->brks[i])
			drop(&r->brks[i]);
	}
	free(r);
}

static struct slot *slot_get(struct route *r, const char *key, bool create)
{
	struct node **pp = find(r->slots, key);
	if (*pp == NULL && create)
		add(pp, key, sizeof(struct slot));
	return (struct slot *)*pp;
}

static void slot_gc(struct route *r, const char *key)
{
	struct node **pp = find(r->slots, key);
	struct slot *s = (struct slot *)*pp;
	if (s && s->used <= 0 && s->head == NULL)
		drop(pp);
}

bool route_slot_take(struct route *r, const char *key, int max)
{
	struct slot *s = slot_get(r, key, true);
	if (max > 0 && s->used >= max) {
		slot_gc(r, key);
		return false;
	}
	s->used++;
	return true;
}

int route_slots_used(struct route *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	return s ? s->used : 0;
}

static void wake_first(struct route *r, struct slot *s)
{
	struct route_waiter *w = s->head;
	if (w) {
		s->head = w->next;
		if (s->head == NULL)
			s->tail = NULL;
		w->next = NULL;
		if (r->ready_tail)
			r->ready_tail->next = w;
		else
			r->ready_head = w;
		r->ready_tail = w;
		loop_defer(r->l, &r->task);
	}
}

void route_slot_release(struct route *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	if (s == NULL)
		return;
	s->used--;
	wake_first(r, s);
	slot_gc(r, key);
}

bool route_slot_kick(struct route *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	if (s == NULL || s->head == NULL)
		return false;
	wake_first(r, s);
	return true;
}

void route_slot_wait(struct route *r, const char *key, struct route_waiter *w, route_wake_fn *fn)
{
	struct slot *s = slot_get(r, key, true);
	w->fn = fn;
	w->next = NULL;
	w->queued = true;
	strlcpy_x(w->key, key, sizeof(w->key));
	if (s->used <= 0) {
		/* nothing in use will ever release a slot: wake at once */
		if (r->ready_tail)
			r->ready_tail->next = w;
		else
			r->ready_head = w;
		r->ready_tail = w;
		loop_defer(r->l, &r->task);
		return;
	}
	if (s->tail)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
}

uint64_t route_rate_delay(struct route *r, const char *key, double per_sec)
{
	if (per_sec <= 0)
		return 0;
	struct node **pp = find(r->buckets, key);
	uint64_t now = loop_now(r->l);
	if (*pp == NULL) {
		struct bucket *nb = (struct bucket *)add(pp, key, sizeof(struct bucket));
		nb->tokens = per_sec < 1 ? 1 : per_sec;
		nb->at = now;
	}
	struct bucket *b = (struct bucket *)*pp;
	double burst = per_sec < 1 ? 1 : per_sec;
	b->tokens += (double)(now - b->at) * per_sec / 1000.0;
	if (b->tokens > burst)
		b->tokens = burst;
	b->at = now;
	if (b->tokens >= 1) {
		b->tokens -= 1;
		return 0;
	}
	uint64_t wait = (uint64_t)((1 - b->tokens) * 1000.0 / per_sec) + 1;
	return wait;
}

bool route_addr_down(struct route *r, const char *addr)
{
	struct brk *b = (struct brk *)*find(r->brks, addr);
	return b && b->until > loop_now(r->l);
}

void route_addr_result(struct route *r, const char *addr, bool ok)
{
	struct node **pp = find(r->brks, addr);
	if (ok) {
		if (*pp)
			drop(pp);
		return;
	}
	if (*pp == NULL)
		add(pp, addr, sizeof(struct brk));
	struct brk *b = (struct brk *)*pp;
	uint64_t d = BACKOFF_MIN_MS;
	for (unsigned i = 0; i < b->fails && d < BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	b->fails++;
	b->until = loop_now(r->l) + d;
}
