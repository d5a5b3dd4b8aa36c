/* workers.c: delivery threads and the queues between them and the feeder.
 *
 * Queues are Vyukov intrusive MPSC lists: any thread pushes with one atomic
 * exchange, one thread pops. Producers then ask for a wake-up of the consumer's
 * loop. The feeder's asks (new work) are coalesced into one eventfd write per
 * feeder-loop iteration (a deferred task). A worker's (results) may wait: a
 * worker finishing a transaction or two per iteration would otherwise wake the
 * feeder that often, each wake-up a syscall and a context switch on both
 * sides. But a result held back is a request the feeder cannot replace yet:
 * it shrinks the window of work in flight. So results wait until 1/64 of the
 * requests the worker holds have gathered (then they go at the end of that
 * iteration: the window shrinks by under 2%) or RESULT_WAKE_MS (a timer),
 * whichever comes first. With mxsend run's large windows that is a batch of
 * dozens (bench q1: a third fewer context switches, a fifth less CPU in the
 * feeder); with mxload's 200 it is every iteration, as before (a fixed batch
 * of 16 cost bench a2 a sixth of its throughput).
 * A pop can briefly see an unfinished push (producer between exchange and
 * link); it stops there, and the producer's own wake-up brings it back.
 *
 * Messages: feeder -> worker: REQ (a deliver_req to run), STS_LOAD (a persisted
 *           MTA-STS policy for the worker owning the domain), STOP.
 *           worker -> feeder: RCPT (one recipient's result), DONE, TLS (a TLSRPT
 *           event), STS_STORE (a fetched policy to persist).
 * The worker runs each REQ through a proxy request whose callbacks turn
 * results into messages; the original request is only read by the worker. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "sender/workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/metrics.h"
#include "sender/limits.h"
#include "sender/util.h"
#include "tlscache/tls_event.h"

#define RESULT_WAKE_MS 2     /* results wait at most this long (plus timer slack) for the feeder */
#define RESULT_WAKE_SHARE 64 /* or until 1/this of the requests held are waiting */

enum msg_kind { M_REQ, M_STOP, M_RCPT, M_DONE, M_TLS, M_STS_STORE, M_STS_LOAD };

struct msg {
	_Atomic(struct msg *) next;
	struct mpsc *home;       /* the sender's spares: where it goes when consumed */
	enum msg_kind kind;
	struct deliver_req *req; /* the feeder's request */
	int idx;
	union {
		struct job_outcome res;        /* M_RCPT: the one copy of an outcome (queue/outcome.h) */
		struct tls_event tls;          /* M_TLS */
		struct {                       /* M_STS_STORE, M_STS_LOAD */
			char domain[256];
			char *encoded; /* heap */
		} sts;
	} u;
};

struct mpsc {
	_Atomic(struct msg *) head;
	struct msg *tail;
	struct msg stub;
};

struct worker;

/* A wake-up of `target`, coalesced per iteration of the producer's loop. */
struct waker {
	struct loop_task task;
	struct loop *target;
};

struct worker {
	struct workers *pool;
	int i;
	pthread_t thr;
	bool started;
	struct loop *l;
	struct deliver *d;
	struct deliver_opts o;    /* hooks point at relays to the feeder */
	struct mpsc inbox;
	struct mpsc spare;        /* consumed messages of ours, back from the feeder */
	struct loop_timer wake_feeder; /* on this worker's loop: results are waiting */
	struct waker wake_feeder_now;  /* the same, at the end of this iteration */
	unsigned unwoken;              /* results posted since the feeder was last woken */
	unsigned holding;              /* requests taken and not yet done */
	struct proxy *proxies;         /* ... each one's proxy */
	struct waker wake_me;     /* runs on the feeder's loop */
	bool stopping;
};

struct workers {
	struct loop *feeder;
	struct deliver_opts o;    /* the caller's options (hooks run on the feeder) */
	int n;
	struct worker *w;
	struct mpsc outbox;
	struct mpsc spare;        /* consumed feeder messages, back from the workers */
	unsigned active;
	struct limits_shared *conns; /* connections per MX host, all workers together */
	struct limits_peers peers;   /* processes sharing the queue (workers_set_peers) */
};

struct proxy {
	struct deliver_req req;
	struct deliver_req *orig;
	struct worker *w;
	struct proxy *prev, *next; /* w->proxies: freed at exit if still running */
};

static void mpsc_init(struct mpsc *q)
{
	atomic_store(&q->stub.next, NULL);
	atomic_store(&q->head, &q->stub);
	q->tail = &q->stub;
}

static void mpsc_push(struct mpsc *q, struct msg *m)
{
	atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
	struct msg *prev = atomic_exchange_explicit(&q->head, m, memory_order_acq_rel);
	atomic_store_explicit(&prev->next, m, memory_order_release);
}

static struct msg *mpsc_pop(struct mpsc *q)
{
	struct msg *tail = q->tail;
	struct msg *next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (tail == &q->stub) {
		if (next == NULL)
			return NULL;
		q->tail = next;
		tail = next;
		next = atomic_load_explicit(&next->next, memory_order_acquire);
	}
	if (next != NULL) {
		q->tail = next;
		return tail;
	}
	if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
		return NULL; /* a push is half done; its wake-up will bring us back */
	mpsc_push(q, &q->stub);
	next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (next != NULL) {
		q->tail = next;
		return tail;
	}
	return NULL;
}

/* Messages are recycled, never freed across threads: the consumer pushes a
 * message back to its sender's spares, the sender pops one before it would
 * allocate. (A free of another thread's chunk takes that arena's lock; on
 * the queue path that was the feeder's largest cost.) Fields are set by
 * each sender: spares are not cleared. */
static struct msg *msg_get(struct mpsc *spare)
{
	struct msg *m = mpsc_pop(spare);
	if (m == NULL || m == &spare->stub)
		m = xmalloc(sizeof(*m));
	m->home = spare;
	return m;
}

static void msg_put(struct msg *m)
{
	mpsc_push(m->home, m);
}

/* At teardown: free every message left in q (threads are joined); those
 * not yet consumed still own their strings. */
static void msg_free_all(struct mpsc *q, bool consumed)
{
	struct msg *m;
	while ((m = mpsc_pop(q)) != NULL) {
		if (m == &q->stub)
			continue;
		if (!consumed && (m->kind == M_STS_LOAD || m->kind == M_STS_STORE))
			free(m->u.sts.encoded);
		free(m);
	}
}

static void waker_fn(struct loop_task *t)
{
	struct waker *k = container_of(t, struct waker, task);
	loop_wake(k->target);
}

/* ---- worker side ---- */

static void wake_feeder_fn(struct loop_timer *t)
{
	struct worker *w = container_of(t, struct worker, wake_feeder);
	w->unwoken = 0;
	loop_wake(w->pool->feeder);
}

static void post(struct worker *w, struct msg *m)
{
	mpsc_push(&w->pool->outbox, m);
	if (++w->unwoken >= w->holding / RESULT_WAKE_SHARE) {
		w->unwoken = 0;
		loop_timer_stop(w->l, &w->wake_feeder);
		loop_defer(w->l, &w->wake_feeder_now.task);
	} else if (!loop_timer_armed(&w->wake_feeder)) {
		loop_timer_arm(w->l, &w->wake_feeder, RESULT_WAKE_MS);
	}
}

static void proxy_rcpt(void *arg, int idx, const struct job_outcome *r)
{
	struct proxy *p = arg;
	struct msg *m = msg_get(&p->w->spare);
	m->kind = M_RCPT;
	m->req = p->orig;
	m->idx = idx;
	m->u.res = *r;
	post(p->w, m);
}

static void proxy_unlink(struct proxy *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		p->w->proxies = p->next;
	if (p->next)
		p->next->prev = p->prev;
}

static void proxy_done(void *arg)
{
	struct proxy *p = arg;
	p->w->holding--;
	proxy_unlink(p);
	struct msg *m = msg_get(&p->w->spare);
	m->kind = M_DONE;
	m->req = p->orig;
	post(p->w, m);
	free(p);
}

static void relay_tls(void *arg, const struct tls_event *ev)
{
	struct worker *w = arg;
	struct msg *m = msg_get(&w->spare);
	m->kind = M_TLS;
	m->req = NULL;
	m->u.tls = *ev;
	post(w, m);
}

static void relay_sts(void *arg, const char *domain, const char *encoded)
{
	struct worker *w = arg;
	struct msg *m = msg_get(&w->spare);
	m->kind = M_STS_STORE;
	strlcpy_x(m->u.sts.domain, domain, sizeof(m->u.sts.domain));
	m->u.sts.encoded = xstrdup(encoded);
	post(w, m);
}

static void stopped(void *arg)
{
	struct worker *w = arg;
	/* the last results, held back or not: now (the loop ends with this
	 * iteration, the timer and a deferred wake-up with it) */
	loop_timer_stop(w->l, &w->wake_feeder);
	loop_wake(w->pool->feeder);
	loop_stop(w->l);
}

static void worker_wake(void *arg)
{
	struct worker *w = arg;
	struct msg *m;
	while ((m = mpsc_pop(&w->inbox)) != NULL) {
		if (m->kind == M_STS_LOAD) {
			deliver_sts_load(w->d, m->u.sts.domain, m->u.sts.encoded);
			free(m->u.sts.encoded);
			msg_put(m);
			continue;
		}
		if (m->kind == M_STOP) {
			w->stopping = true;
			deliver_quiesce(w->d, (uint32_t)m->idx, stopped, w);
			msg_put(m);
			continue;
		}
		struct proxy *p = xmalloc(sizeof(*p));
		w->holding++;
		p->req = *m->req;
		p->req.rcpt_done = proxy_rcpt;
		p->req.done = proxy_done;
		p->req.arg = p;
		p->orig = m->req;
		p->w = w;
		p->prev = NULL;
		p->next = w->proxies;
		if (w->proxies)
			w->proxies->prev = p;
		w->proxies = p;
		msg_put(m);
		if (deliver_submit(w->d, &p->req) != 0) {
			log_error("evt=worker_submit_failed worker=%d", w->i);
			proxy_done(p);
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int r = loop_run(w->l);
	if (r < 0)
		log_panic("evt=worker_loop_failed worker=%d err=%s", w->i, strerror(-r));
	/* Stopped: the engine drops what still runs (no callbacks, so no
	 * more results) and settles its connections on this thread, the ring's
	 * only issuer; then the requests' proxies go. The engine itself is
	 * freed by workers_free, on the thread that made its TLS contexts. */
	loop_wake_fini(w->l); /* no request reaches the engine now: the rest of
			       * the inbox is freed by workers_free */
	deliver_abandon(w->d);
	while (w->proxies) {
		struct proxy *p = w->proxies;
		proxy_unlink(p);
		free(p);
	}
	if ((r = loop_drain(w->l, 1000)) < 0)
		log_warn("evt=worker_drain worker=%d err=%s", w->i, strerror(-r));
	return NULL;
}

/* ---- feeder side ---- */

static void feeder_wake(void *arg)
{
	struct workers *ws = arg;
	struct msg *m;
	while ((m = mpsc_pop(&ws->outbox)) != NULL) {
		struct deliver_req *req = m->req;
		if (m->kind == M_TLS) {
			ws->o.on_tls(ws->o.on_tls_arg, &m->u.tls);
		} else if (m->kind == M_STS_STORE) {
			ws->o.on_sts_store(ws->o.on_sts_store_arg, m->u.sts.domain, m->u.sts.encoded);
			free(m->u.sts.encoded);
		} else if (m->kind == M_RCPT) {
			req->rcpt_done(req->arg, m->idx, &m->u.res);
		} else {
			ws->active--;
			req->done(req->arg);
		}
		msg_put(m);
	}
}

static unsigned domain_hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + 32);
		h = (h ^ c) * 16777619u;
	}
	return h;
}

void workers_set_peers(struct workers *ws, int n, int rank)
{
	limits_peers_set(&ws->peers, n, rank);
}

int workers_resolve(int n)
{
	if (n > 0)
		return n;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus > 0 ? (int)cpus : 1;
}

struct workers *workers_new(struct loop *feeder, int n, const struct config *c,
			    const struct deliver_opts *o, char *err, size_t errlen)
{
	n = workers_resolve(n);
	struct workers *ws = xcalloc(1, sizeof(*ws));
	ws->feeder = feeder;
	ws->n = n;
	if (o)
		ws->o = *o;
	else
		ws->o.tls_level = -1;
	ws->w = xcalloc((size_t)n, sizeof(*ws->w));
	if (n > 1) /* max_connections caps the process, not each worker */
		ws->o.limits_shared = ws->conns = limits_shared_new();
	ws->o.peers = &ws->peers;
	mpsc_init(&ws->outbox);
	mpsc_init(&ws->spare);
	for (int i = 0; i < n; i++) { /* all of them first: workers_free drains every one */
		mpsc_init(&ws->w[i].inbox);
		mpsc_init(&ws->w[i].spare);
	}
	int r = loop_wake_init(feeder, feeder_wake, ws);
	if (r < 0) {
		snprintf(err, errlen, "feeder wake-up: %s", strerror(-r));
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		struct worker *w = &ws->w[i];
		w->pool = ws;
		w->i = i;
		int e = 0;
		w->l = loop_new(4096, &e);
		if (w->l == NULL) {
			snprintf(err, errlen, "worker %d: io_uring: %s", i, strerror(-e));
			goto fail;
		}
		w->o = ws->o;
		w->o.metrics_shard = ws->o.metrics ? metrics_shard(ws->o.metrics, 1 + i) : NULL;
		if (ws->o.on_tls) {
			w->o.on_tls = relay_tls;
			w->o.on_tls_arg = w;
		}
		if (ws->o.on_sts_store) {
			w->o.on_sts_store = relay_sts;
			w->o.on_sts_store_arg = w;
		}
		w->d = deliver_new(w->l, c, &w->o, err, errlen);
		if (w->d == NULL)
			goto fail;
		if ((e = loop_wake_init(w->l, worker_wake, w)) < 0) {
			snprintf(err, errlen, "worker %d wake-up: %s", i, strerror(-e));
			goto fail;
		}
		loop_timer_init(&w->wake_feeder, wake_feeder_fn);
		loop_task_init(&w->wake_feeder_now.task, waker_fn);
		w->wake_feeder_now.target = feeder;
		loop_task_init(&w->wake_me.task, waker_fn);
		w->wake_me.target = w->l;
	}
	for (int i = 0; i < n; i++) {
		struct worker *w = &ws->w[i];
		if ((r = pthread_create(&w->thr, NULL, worker_main, w)) != 0) {
			snprintf(err, errlen, "worker %d: pthread_create: %s", i, strerror(r));
			goto fail;
		}
		w->started = true;
		char name[16]; /* for top -H, perf --comm */
		snprintf(name, sizeof(name), "mxsend-w%u", (unsigned)i % 1000u);
		pthread_setname_np(w->thr, name);
	}
	return ws;
fail:
	workers_free(ws, 0);
	return NULL;
}

int workers_count(const struct workers *ws)
{
	return ws->n;
}

int workers_submit(struct workers *ws, struct deliver_req *req)
{
	if (req->nrcpt <= 0 || req->domain == NULL || req->rcpt_done == NULL || req->done == NULL)
		return -EINVAL;
	struct worker *w = &ws->w[domain_hash(req->domain) % (unsigned)ws->n];
	struct msg *m = msg_get(&ws->spare);
	m->kind = M_REQ;
	m->req = req;
	ws->active++;
	mpsc_push(&w->inbox, m);
	loop_defer(ws->feeder, &w->wake_me.task);
	return 0;
}

void workers_sts_load(struct workers *ws, const char *domain, const char *encoded)
{
	struct worker *w = &ws->w[domain_hash(domain) % (unsigned)ws->n];
	struct msg *m = msg_get(&ws->spare);
	m->kind = M_STS_LOAD;
	strlcpy_x(m->u.sts.domain, domain, sizeof(m->u.sts.domain));
	m->u.sts.encoded = xstrdup(encoded);
	mpsc_push(&w->inbox, m);
	loop_defer(ws->feeder, &w->wake_me.task);
}

unsigned workers_active(const struct workers *ws)
{
	return ws->active;
}

void workers_get_stats(const struct workers *ws, struct deliver_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (int i = 0; i < ws->n; i++) {
		struct deliver_stats s;
		deliver_get_stats(ws->w[i].d, &s); /* plain reads of counters: approximate */
		st->opened += s.opened;
		st->reused += s.reused;
		st->slot_waits += s.slot_waits;
		st->chains_verified += s.chains_verified;
		st->chains_cached += s.chains_cached;
	}
}

void workers_free(struct workers *ws, unsigned grace_ms)
{
	if (ws == NULL)
		return;
	for (int i = 0; i < ws->n; i++) {
		struct worker *w = &ws->w[i];
		if (!w->started)
			continue;
		struct msg *m = msg_get(&ws->spare);
		m->kind = M_STOP;
		m->idx = (int)grace_ms;
		mpsc_push(&w->inbox, m);
		loop_wake(w->l);
	}
	for (int i = 0; i < ws->n; i++) {
		struct worker *w = &ws->w[i];
		if (w->started)
			pthread_join(w->thr, NULL);
		deliver_free(w->d);
		loop_free(w->l);
		msg_free_all(&w->inbox, false);
	}
	/* The feeder's loop runs again (the final settle pass) after this:
	 * its wake-up must not reach ws. */
	loop_wake_fini(ws->feeder);
	msg_free_all(&ws->outbox, false);
	for (int i = 0; i < ws->n; i++)
		msg_free_all(&ws->w[i].spare, true);
	msg_free_all(&ws->spare, true);
	limits_shared_free(ws->conns); /* after every worker's limits */
	free(ws->w);
	free(ws);
}
