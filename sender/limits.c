/* limits.c: connection slots with FIFO waiters, token buckets, and a circuit
 * breaker, in small hash tables keyed by strings. Entries are dropped when
 * they carry no state (no slot in use, nobody waiting, breaker clear), so the
 * tables stay as large as the set of destinations in use.
 *
 * The process-wide connection count per MX host (struct limits_shared) is one
 * 64-bit word per bucket of a direct-mapped table: a 40-bit tag of the host
 * name and a 24-bit count, changed by compare-and-swap only (no locks). A word
 * whose count falls to 0 is empty again, so the table holds only the hosts with
 * connections open now. A host whose bucket holds another host's tag is counted
 * by each worker alone (as without the table) until the bucket frees up. A
 * worker whose jobs wait for the shared count polls it (POLL_MS) while they
 * wait and says so in the bucket's `wanted`; the others then hand over: an
 * idle connection to that host is closed rather than kept (limits_slot_yield),
 * and a worker at or above its fair share (max / workers) takes no more.
 * Where the shares do not divide evenly (max 1 over two workers, 3 over two),
 * the workers take turns: one holding more than max / workers (rounded down)
 * while another waits and the host is full gives a connection up after
 * TURN_MS and takes none for TURN_MS while the other still waits, so a worker
 * with steady work cannot keep the others out for good. */
#include "sender/limits.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sender/util.h"

#define NB 1024
#define GBITS 16 /* shared table: 65,536 buckets, 1.25 MB */
#define GN (1u << GBITS)
#define COUNT_MASK ((UINT64_C(1) << 24) - 1)
#define POLL_MS 20
#define TURN_MS 1000
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
	int gused;        /* of used: counted in the shared table too */
	int gmax;         /* the max of the last take */
	bool gfull;       /* that refusal: waiters poll the shared count */
	bool wanting;     /* counted in the shared `wanted` of its bucket */
	uint64_t gturn;   /* ms: this worker's turn began (first shared count) */
	uint64_t gpause;  /* ms: takes none before, while others wait (turn over) */
	uint64_t gh;      /* hash of the key (shared table) */
	struct limits_waiter *head, *tail;
};

struct limits_shared {
	_Atomic uint64_t word[GN]; /* tag << 24 | count; 0 = empty */
	_Atomic int wanted[GN];    /* workers with jobs waiting for this bucket */
	_Atomic int routes;        /* workers attached */
	_Atomic int wanting;       /* sum of wanted: 0 lets a sweep skip its walk */
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

struct limits {
	struct loop *l;
	struct limits_shared *g; /* NULL: connections counted in this thread only */
	struct loop_timer poll; /* while jobs wait for the shared count */
	struct node *slots[NB];
	struct node *buckets[NB];
	struct node *brks[NB];
	struct loop_task task;
	struct limits_waiter *ready_head, *ready_tail; /* woken, to run from task */
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
	struct limits *r = container_of(t, struct limits, task);
	while (r->ready_head) {
		struct limits_waiter *w = r->ready_head;
		r->ready_head = w->next;
		if (r->ready_head == NULL)
			r->ready_tail = NULL;
		w->next = NULL;
		w->queued = false;
		w->fn(w);
	}
}

static uint64_t hash64(const char *k)
{
	uint64_t x = UINT64_C(14695981039346656037); /* FNV-1a, then a murmur3 finaliser */
	for (; *k; k++)
		x = (x ^ (unsigned char)*k) * UINT64_C(1099511628211);
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	return x;
}

static uint64_t gtag(uint64_t h)
{
	return (h >> 24) | 1; /* 40 bits, never 0 */
}

static unsigned gb(uint64_t h) /* the bucket */
{
	return (unsigned)(h & (GN - 1));
}

struct limits_shared *limits_shared_new(void)
{
	return xcalloc(1, sizeof(struct limits_shared));
}

void limits_shared_free(struct limits_shared *g)
{
	free(g);
}

int limits_shared_wanting(const struct limits_shared *g)
{
	return g ? atomic_load_explicit(&g->wanting, memory_order_relaxed) : 0;
}

/* Count one more connection for the host hashed h, if fewer than max are
 * counted: 1 counted, 0 the bucket holds another host (not counted here),
 * -1 refused (max reached). */
static int gtake(struct limits_shared *g, uint64_t h, int max)
{
	_Atomic uint64_t *w = &g->word[gb(h)];
	uint64_t tag = gtag(h), v = atomic_load(w);
	for (;;) {
		uint64_t nv;
		if (v == 0)
			nv = tag << 24 | 1;
		else if (v >> 24 != tag || (v & COUNT_MASK) == COUNT_MASK)
			return 0;
		else if ((int)(v & COUNT_MASK) >= max)
			return -1;
		else
			nv = v + 1;
		if (atomic_compare_exchange_weak(w, &v, nv))
			return 1;
	}
}

static void grelease(struct limits_shared *g, uint64_t h)
{
	_Atomic uint64_t *w = &g->word[gb(h)];
	uint64_t v = atomic_load(w);
	for (;;) {
		if (v >> 24 != gtag(h) || (v & COUNT_MASK) == 0)
			return; /* not ours: cannot happen while we hold a count */
		uint64_t nv = (v & COUNT_MASK) == 1 ? 0 : v - 1;
		if (atomic_compare_exchange_weak(w, &v, nv))
			return;
	}
}

/* How many connections the shared table counts for s's host (0 when its
 * bucket holds another host). */
static int gcount(const struct limits *r, const struct slot *s)
{
	uint64_t v = atomic_load(&r->g->word[gb(s->gh)]);
	return v >> 24 == gtag(s->gh) ? (int)(v & COUNT_MASK) : 0;
}

/* Do workers other than this one wait for s's host? */
static bool others_want(const struct limits *r, const struct slot *s)
{
	int n = atomic_load_explicit(&r->g->wanted[gb(s->gh)], memory_order_relaxed);
	return n - (s->wanting ? 1 : 0) > 0;
}

/* Keep s's share of the bucket's `wanted` in step with its waiters. */
static void want_sync(struct limits *r, struct slot *s)
{
	bool want = r->g && s->gfull && s->head != NULL;
	if (want == s->wanting)
		return;
	s->wanting = want;
	atomic_fetch_add(&r->g->wanted[gb(s->gh)], want ? 1 : -1);
	atomic_fetch_add(&r->g->wanting, want ? 1 : -1);
	if (want && !loop_timer_armed(&r->poll))
		loop_timer_arm(r->l, &r->poll, POLL_MS);
}

static void wake_first(struct limits *r, struct slot *s);

static int workers(const struct limits *r)
{
	int n = atomic_load_explicit(&r->g->routes, memory_order_relaxed);
	return n > 1 ? n : 1;
}

/* A worker's share of max when other workers want connections too. */
static int fair_share(const struct limits *r, int max)
{
	return (max + workers(r) - 1) / workers(r);
}

/* Jobs wait for the shared count: wake as many as it has room for now. */
static void poll_fn(struct loop_timer *t)
{
	struct limits *r = container_of(t, struct limits, poll);
	bool again = false;
	for (unsigned i = 0; i < NB; i++)
		for (struct node *n = r->slots[i]; n; n = n->next) {
			struct slot *s = (struct slot *)n;
			if (!s->wanting)
				continue;
			if (s->head == NULL) { /* woken a tick ago and gone elsewhere */
				want_sync(r, s);
				continue;
			}
			again = true;
			int room = s->gmax - gcount(r, s);
			for (; room > 0 && s->head; room--)
				wake_first(r, s); /* still wanting until they take (or a tick) */
		}
	if (again)
		loop_timer_arm(r->l, &r->poll, POLL_MS);
}

void limits_peers_set(struct limits_peers *p, int n, int rank)
{
	bool ok = n > 0 && n < 0x10000 && rank >= 0 && rank < n;
	atomic_store_explicit(&p->word, ok ? (uint32_t)n << 16 | (uint32_t)rank : 0,
			      memory_order_relaxed);
}

int limits_peers_share(const struct limits_peers *p, int total)
{
	uint32_t v = p ? atomic_load_explicit(&p->word, memory_order_relaxed) : 0;
	int n = (int)(v >> 16), rank = (int)(v & 0xffff);
	if (n <= 1)
		return total;
	return total / n + (rank < total % n ? 1 : 0);
}

struct limits *limits_new(struct loop *l, struct limits_shared *g)
{
	struct limits *r = xcalloc(1, sizeof(*r));
	r->l = l;
	r->g = g;
	if (g)
		atomic_fetch_add(&g->routes, 1);
	loop_task_init(&r->task, run_ready);
	loop_timer_init(&r->poll, poll_fn);
	return r;
}

void limits_free(struct limits *r)
{
	if (r == NULL)
		return;
	loop_task_cancel(r->l, &r->task);
	loop_timer_stop(r->l, &r->poll);
	for (unsigned i = 0; i < NB; i++) {
		while (r->slots[i]) {
			struct slot *s = (struct slot *)r->slots[i];
			s->head = NULL;
			want_sync(r, s);
			for (; s->gused > 0; s->gused--)
				grelease(r->g, s->gh);
			drop(&r->slots[i]);
		}
		while (r->buckets[i])
			drop(&r->buckets[i]);
		while (r->brks[i])
			drop(&r->brks[i]);
	}
	if (r->g)
		atomic_fetch_sub(&r->g->routes, 1);
	free(r);
}

static struct slot *slot_get(struct limits *r, const char *key, bool create)
{
	struct node **pp = find(r->slots, key);
	if (*pp == NULL && create) {
		struct slot *s = (struct slot *)add(pp, key, sizeof(struct slot));
		s->gh = hash64(key);
	}
	return (struct slot *)*pp;
}

static void slot_gc(struct limits *r, const char *key)
{
	struct node **pp = find(r->slots, key);
	struct slot *s = (struct slot *)*pp;
	if (s && s->used <= 0 && s->head == NULL && loop_now(r->l) >= s->gpause) {
		want_sync(r, s);
		drop(pp);
	}
}

bool limits_slot_take(struct limits *r, const char *key, int max)
{
	struct slot *s = slot_get(r, key, true);
	s->gfull = false;
	s->gmax = max;
	if (max > 0 && s->used >= max) {
		want_sync(r, s);
		slot_gc(r, key);
		return false;
	}
	if (r->g && max > 0) {
		bool yield = s->gused >= fair_share(r, max) || loop_now(r->l) < s->gpause;
		int t = yield && others_want(r, s) ? -1 : gtake(r->g, s->gh, max);
		if (t < 0) { /* kept (even unused) for limits_slot_wait to see gfull */
			s->gfull = true;
			want_sync(r, s);
			return false;
		}
		if (t > 0 && s->gused == 0)
			s->gturn = loop_now(r->l);
		s->gused += t;
	}
	want_sync(r, s);
	s->used++;
	return true;
}

bool limits_slot_yield(struct limits *r, const char *key)
{
	struct slot *s = r->g ? slot_get(r, key, false) : NULL;
	if (s == NULL || s->gused == 0 || !others_want(r, s))
		return false;
	if (s->head == NULL)
		return true; /* no job here wants it */
	if (s->gused > fair_share(r, s->gmax))
		return true;
	uint64_t now = loop_now(r->l);
	if (s->gused > s->gmax / workers(r) && gcount(r, s) >= s->gmax &&
	    now - s->gturn >= TURN_MS) { /* turn over: the others' now */
		s->gturn = now;
		s->gpause = now + TURN_MS;
		return true;
	}
	return false;
}

int limits_slots_used(struct limits *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	return s ? s->used : 0;
}

int limits_slots_process(struct limits *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	if (s == NULL)
		return 0;
	return s->gused > 0 ? gcount(r, s) : s->used; /* gused > 0: the bucket is ours */
}

static void wake_first(struct limits *r, struct slot *s)
{
	struct limits_waiter *w = s->head;
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

void limits_slot_release(struct limits *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	if (s == NULL)
		return;
	s->used--;
	if (s->gused > 0 && s->gused > s->used) {
		s->gused--;
		grelease(r->g, s->gh);
	}
	wake_first(r, s);
	want_sync(r, s);
	slot_gc(r, key);
}

bool limits_slot_kick(struct limits *r, const char *key)
{
	struct slot *s = slot_get(r, key, false);
	if (s == NULL || s->head == NULL)
		return false;
	wake_first(r, s);
	return true;
}

void limits_slot_wait(struct limits *r, const char *key, struct limits_waiter *w, limits_wake_fn *fn)
{
	struct slot *s = slot_get(r, key, true);
	w->fn = fn;
	w->next = NULL;
	w->queued = true;
	strlcpy_x(w->key, key, sizeof(w->key));
	if (s->used <= 0 && !s->gfull) {
		/* nothing in use will ever release a slot: wake at once */
		if (r->ready_tail)
			r->ready_tail->next = w;
		else
			r->ready_head = w;
		r->ready_tail = w;
		loop_defer(r->l, &r->task);
		return;
	}
	if (s->tail == NULL || s->tail->prio <= w->prio) { /* FIFO within a priority */
		if (s->tail)
			s->tail->next = w;
		else
			s->head = w;
		s->tail = w;
	} else { /* ahead of the first waiter of a lower priority (a larger prio) */
		struct limits_waiter **pp = &s->head;
		while ((*pp)->prio <= w->prio)
			pp = &(*pp)->next;
		w->next = *pp;
		*pp = w;
	}
	want_sync(r, s); /* refused by the shared count: poll it */
}

uint64_t limits_rate_delay(struct limits *r, const char *key, double per_sec)
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

bool limits_addr_down(struct limits *r, const char *addr)
{
	struct brk *b = (struct brk *)*find(r->brks, addr);
	return b && b->until > loop_now(r->l);
}

void limits_addr_result(struct limits *r, const char *addr, bool ok)
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
