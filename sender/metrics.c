/* metrics.c: per-thread counter shards, their sum in Prometheus text format
 * 0.0.4, and a minimal HTTP/1.1 endpoint on the loop.
 *
 * Shards: one writer thread each, so an update is a relaxed load and a relaxed
 * store of the writer's own value (no lock, no locked instruction); a reader
 * gets whole 64-bit values through atomic loads. Each shard starts on its own
 * cache line so two workers never write the same line. A scrape first copies
 * the sums into a snapshot, then formats it; the histogram's +Inf bucket and
 * _count are both derived from the same bucket reads, so they always agree.
 *
 * Endpoint: a fixed table of METRICS_MAX_CONNS slots allocated once at serve
 * time. One accept is armed only while a slot is free (more clients wait in
 * the kernel backlog). A slot has at most one ring op in flight (recv or
 * send); its deadline timer cancels that op and the completion then closes
 * the slot, so a slot is reused only after the kernel has let go of its op.
 * After the response we shut the write side and drain the peer until EOF (or
 * the deadline) before closing: closing with unread request bytes (an
 * oversize request) would send an RST that can destroy the response in the
 * client's receive queue (nginx "lingering close"). */
#include "sender/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sender/bclass.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"

/* Upper bounds in ms; labels as Prometheus prints them (le is inclusive). */
static const uint32_t bucket_ms[METRICS_BUCKETS] = { 5,    10,   25,   50,    100,   250,  500,
						     1000, 2500, 5000, 10000, 30000, 60000 };
static const char *const bucket_le[METRICS_BUCKETS] = { "0.005", "0.01", "0.025", "0.05", "0.1",
							"0.25",  "0.5",  "1",     "2.5",  "5",
							"10",    "30",   "60" };
static const char *const status_names[METRICS_STATUS_N] = { "delivered", "bounced",  "deferred",
							    "expired",   "rejected", "held",
							    "suppressed" };
static const char *const tls_names[METRICS_TLS_N] = { "none", "TLSv1.2", "TLSv1.3" };
static const char *const dns_names[METRICS_DNS_N] = { "ok", "temp", "nxdomain" };
static const char *const defer_names[METRICS_DEFER_N] = { "rate", "suspend", "warmup" };

#define CACHELINE 64

struct metrics_shard {
	_Alignas(CACHELINE) _Atomic uint64_t deliveries[METRICS_STATUS_N];
	_Atomic uint64_t tls_sessions[METRICS_TLS_N][2]; /* [version][verified] */
	_Atomic uint64_t tls_handshakes, tls_resumed;
	_Atomic uint64_t conn_opened, conn_reused, slot_waits, source_down;
	_Atomic uint64_t chains[2]; /* [0] verified, [1] cached: the writer's tlscache totals */
	_Atomic uint64_t hist[METRICS_BUCKETS + 1]; /* per bucket, not cumulative; last: > 60 s */
	_Atomic uint64_t hist_sum_ms;
	_Atomic uint64_t sts[2]; /* [ok] */
	_Atomic uint64_t dns[METRICS_DNS_N];
	_Atomic int64_t conn_open, inflight, inflight_bytes, queue_depth, retry_depth, processes;
	/* per egress source (metrics_set_sources), by status; [METRICS_SOURCES_MAX]: the rest */
	_Atomic uint64_t src_deliveries[METRICS_SOURCES_MAX + 1][METRICS_STATUS_N];
	_Atomic uint64_t bclass[2][BCLASS_N]; /* [bounced][class] */
	/* metrics_set_shaping: rule matches [nrules][nprov + 1], then deferrals
	 * [nprov][METRICS_DEFER_N], then each pair's rate x 1000 [npairs]; on
	 * cache lines of this shard's own (NULL: not set) */
	_Atomic uint64_t *shape;
	int sh_nprov, sh_nrules, sh_npairs; /* its dimensions (copies of the registry's) */
};

/* ---- the HTTP endpoint's connection slots ---- */

#define HDR_MAX 256        /* response head; formatted right before the body */
#define LINGER_MS 1000     /* at most this long draining the peer after the response */
#define ACCEPT_RETRY_MS 100 /* after EMFILE and the like, so accept errors cannot spin */

enum scrape_state { SC_FREE, SC_READ, SC_WRITE, SC_LINGER };

struct scrape {
	struct metrics *m;
	enum scrape_state st;
	int fd;
	bool busy;    /* op in flight */
	bool expired; /* deadline passed: close at the op's completion */
	uint64_t deadline;
	struct loop_op op;
	struct loop_timer timer;
	size_t reqlen;
	size_t out_pos, out_end;
	char req[METRICS_REQ_MAX];
	char *out; /* HDR_MAX + metrics_render_max() */
};

struct metrics {
	int nshards;
	struct metrics_shard *shards;
	void *shards_mem; /* unaligned allocation behind shards */
	/* endpoint: loop thread only */
	struct loop *l;
	int lfd;
	int port;
	bool accepting; /* accept_op in flight */
	struct loop_op accept_op;
	struct loop_timer accept_retry;
	struct scrape *conns; /* METRICS_MAX_CONNS slots */
	unsigned nconns;
	char **src_names; /* metrics_set_sources: the label values, nsrc of them */
	int nsrc;
	/* metrics_set_shaping: its names (copies), the counts, and the room
	 * their series take in the exposition */
	char **prov_names, **pair_src;
	struct metrics_rule *rules; /* name and action are copies */
	int nprov, nrules, npair_src, npairs;
	int nprov_all; /* the providers numbering the pairs (nprov: those counted) */
	size_t shape_cells, render_extra;
};

/* ---- names ---- */

const char *metrics_status_name(enum metrics_status s)
{
	return (unsigned)s < METRICS_STATUS_N ? status_names[s] : "?";
}

int metrics_status_parse(const char *name)
{
	for (int i = 0; name != NULL && i < METRICS_STATUS_N; i++)
		if (strcmp(name, status_names[i]) == 0)
			return i;
	return -1;
}

const char *metrics_tls_version_name(enum metrics_tls_version v)
{
	return (unsigned)v < METRICS_TLS_N ? tls_names[v] : "?";
}

enum metrics_tls_version metrics_tls_version_parse(const char *name)
{
	if (name != NULL && strcmp(name, "TLSv1.3") == 0)
		return METRICS_TLS_13;
	if (name != NULL && strcmp(name, "TLSv1.2") == 0)
		return METRICS_TLS_12;
	return METRICS_TLS_NONE;
}

/* ---- registry ---- */

struct metrics *metrics_new(int nshards)
{
	if (nshards < 1)
		log_panic("evt=metrics_new_bad_shards n=%d", nshards);
	struct metrics *m = xcalloc(1, sizeof(*m));
	m->nshards = nshards;
	m->shards_mem = xcalloc(1, (size_t)nshards * sizeof(struct metrics_shard) + CACHELINE);
	uintptr_t p = ((uintptr_t)m->shards_mem + CACHELINE - 1) & ~(uintptr_t)(CACHELINE - 1);
	m->shards = (struct metrics_shard *)p;
	m->lfd = -1;
	return m;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->conns != NULL) {
		for (unsigned i = 0; i < METRICS_MAX_CONNS; i++) {
			if (m->conns[i].st != SC_FREE)
				close(m->conns[i].fd);
			free(m->conns[i].out);
		}
		free(m->conns);
	}
	if (m->lfd != -1)
		close(m->lfd);
	for (int i = 0; i < m->nshards; i++)
		free(m->shards[i].shape);
	free(m->shards_mem);
	for (int i = 0; i < m->nsrc; i++)
		free(m->src_names[i]);
	free(m->src_names);
	for (int i = 0; i < m->nprov; i++)
		free(m->prov_names[i]);
	free(m->prov_names);
	for (int i = 0; i < m->npair_src; i++)
		free(m->pair_src[i]);
	free(m->pair_src);
	for (int i = 0; i < m->nrules; i++) {
		free((char *)m->rules[i].name);
		free((char *)m->rules[i].action);
	}
	free(m->rules);
	free(m);
}

struct metrics_shard *metrics_shard(struct metrics *m, int i)
{
	if (i < 0 || i >= m->nshards)
		log_panic("evt=metrics_bad_shard i=%d n=%d", i, m->nshards);
	return &m->shards[i];
}

/* ---- updates (single writer per shard) ---- */

static inline void add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void gauge_add(_Atomic int64_t *g, int64_t n)
{
	atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static inline int64_t gauge_get(const _Atomic int64_t *g)
{
	return atomic_load_explicit(g, memory_order_relaxed);
}

void metrics_delivery(struct metrics_shard *s, enum metrics_status st, int64_t elapsed_ms)
{
	if (s == NULL || (unsigned)st >= METRICS_STATUS_N)
		return;
	add(&s->deliveries[st], 1);
	if (elapsed_ms < 0 || st == METRICS_REJECTED)
		return;
	unsigned b = 0;
	while (b < METRICS_BUCKETS && (uint64_t)elapsed_ms > bucket_ms[b])
		b++;
	add(&s->hist[b], 1);
	add(&s->hist_sum_ms, (uint64_t)elapsed_ms);
}

void metrics_tls(struct metrics_shard *s, enum metrics_tls_version v, bool verified, bool resumed)
{
	if (s == NULL || (unsigned)v >= METRICS_TLS_N)
		return;
	if (v == METRICS_TLS_NONE) {
		add(&s->tls_sessions[v][0], 1);
		return;
	}
	add(&s->tls_sessions[v][verified ? 1 : 0], 1);
	add(&s->tls_handshakes, 1);
	if (resumed)
		add(&s->tls_resumed, 1);
}

void metrics_conn(struct metrics_shard *s, enum metrics_conn_event ev)
{
	if (s == NULL)
		return;
	switch (ev) {
	case METRICS_CONN_OPENED:
		add(&s->conn_opened, 1);
		gauge_add(&s->conn_open, 1);
		break;
	case METRICS_CONN_REUSED:
		add(&s->conn_reused, 1);
		break;
	case METRICS_CONN_CLOSED:
		gauge_add(&s->conn_open, -1);
		break;
	}
}

void metrics_sts_fetch(struct metrics_shard *s, bool ok)
{
	if (s != NULL)
		add(&s->sts[ok ? 1 : 0], 1);
}

void metrics_dns(struct metrics_shard *s, enum metrics_dns_result r)
{
	if (s != NULL && (unsigned)r < METRICS_DNS_N)
		add(&s->dns[r], 1);
}

void metrics_slot_wait(struct metrics_shard *s)
{
	if (s != NULL)
		add(&s->slot_waits, 1);
}

void metrics_set_sources(struct metrics *m, const char *const *names, int n)
{
	if (n > METRICS_SOURCES_MAX)
		n = METRICS_SOURCES_MAX;
	m->src_names = xcalloc((size_t)n + 1, sizeof(char *));
	for (int i = 0; i < n; i++)
		m->src_names[i] = xstrdup(names[i]);
	m->nsrc = n;
}

void metrics_source_delivery(struct metrics_shard *s, int src, enum metrics_status st)
{
	if (s == NULL || src < 0 || (unsigned)st >= METRICS_STATUS_N)
		return;
	add(&s->src_deliveries[src < METRICS_SOURCES_MAX ? src : METRICS_SOURCES_MAX][st], 1);
}

/* Room for one series line: its fixed text (name, label names, value)
 * and the label values. */
#define LINE_FIXED 96

void metrics_set_shaping(struct metrics *m, const char *const *providers, int nprov,
			 const struct metrics_rule *rules, int nrules, const char *const *sources,
			 int nsrc)
{
	if (m->prov_names != NULL || nprov <= 0)
		return;
	m->nprov_all = nprov; /* pairs are numbered over all of them (shaping.h) */
	if (nprov > METRICS_PROVIDERS_MAX)
		nprov = METRICS_PROVIDERS_MAX;
	if (nrules > METRICS_RULES_MAX)
		nrules = METRICS_RULES_MAX;
	if (nrules < 0)
		nrules = 0;
	if (nsrc < 0)
		nsrc = 0;
	size_t extra = 1024; /* HELP and TYPE lines */
	m->nprov = nprov;
	m->prov_names = xcalloc((size_t)nprov, sizeof(char *));
	for (int p = 0; p < nprov; p++) {
		m->prov_names[p] = xstrdup(providers[p]);
		extra += METRICS_DEFER_N * (LINE_FIXED + strlen(providers[p]));
	}
	m->nrules = nrules;
	m->rules = xcalloc((size_t)(nrules > 0 ? nrules : 1), sizeof(*m->rules));
	for (int r = 0; r < nrules; r++) {
		struct metrics_rule *mr = &m->rules[r];
		mr->name = xstrdup(rules[r].name);
		mr->action = xstrdup(rules[r].action);
		/* -2: a provider past the cap, not counted */
		mr->provider = rules[r].provider < 0 ? -1 : rules[r].provider < nprov ? rules[r].provider : -2;
		size_t line = LINE_FIXED + strlen(mr->name) + strlen(mr->action);
		if (mr->provider >= 0)
			extra += line + strlen(providers[mr->provider]);
		else if (mr->provider == -1)
			for (int p = 0; p <= nprov; p++)
				extra += line + (p < nprov ? strlen(providers[p]) : 1);
	}
	m->npair_src = nsrc + 1;
	m->pair_src = xcalloc((size_t)m->npair_src, sizeof(char *));
	for (int k = 0; k < m->npair_src; k++)
		m->pair_src[k] = xstrdup(k < nsrc ? sources[k] : "-");
	m->npairs = m->npair_src * m->nprov_all;
	for (int k = 0; k < m->npair_src; k++)
		for (int p = 0; p < nprov; p++)
			extra += LINE_FIXED + strlen(m->pair_src[k]) + strlen(providers[p]);
	m->render_extra = extra;
	m->shape_cells = (size_t)nrules * (size_t)(nprov + 1) + (size_t)nprov * METRICS_DEFER_N +
			 (size_t)m->npairs;
	size_t bytes = (m->shape_cells * sizeof(uint64_t) + CACHELINE - 1) & ~(size_t)(CACHELINE - 1);
	for (int i = 0; i < m->nshards; i++) {
		m->shards[i].shape = aligned_alloc(CACHELINE, bytes);
		if (m->shards[i].shape == NULL)
			log_panic("evt=metrics_oom bytes=%zu", bytes);
		memset(m->shards[i].shape, 0, bytes);
		m->shards[i].sh_nprov = nprov;
		m->shards[i].sh_nrules = nrules;
		m->shards[i].sh_npairs = m->npairs;
	}
}

/* Where a shard's deferral and rate cells start (after the matches). */
static size_t cell_defer(const struct metrics_shard *s)
{
	return (size_t)s->sh_nrules * (size_t)(s->sh_nprov + 1);
}

static size_t cell_rate(const struct metrics_shard *s)
{
	return cell_defer(s) + (size_t)s->sh_nprov * METRICS_DEFER_N;
}

void metrics_shape_match(struct metrics_shard *s, int rule, int prov, unsigned n)
{
	if (s == NULL || s->shape == NULL || rule < 0 || rule >= s->sh_nrules || prov >= s->sh_nprov)
		return;
	add(&s->shape[(size_t)rule * (size_t)(s->sh_nprov + 1) + (size_t)(prov < 0 ? s->sh_nprov : prov)],
	    n);
}

void metrics_shape_defer(struct metrics_shard *s, int prov, enum metrics_shape_defer why,
			 unsigned n)
{
	if (s == NULL || s->shape == NULL || prov < 0 || prov >= s->sh_nprov ||
	    (unsigned)why >= METRICS_DEFER_N)
		return;
	add(&s->shape[cell_defer(s) + (size_t)prov * METRICS_DEFER_N + why], n);
}

void metrics_set_shape_rate(struct metrics_shard *s, int pair, double rate)
{
	if (s == NULL || s->shape == NULL || pair < 0 || pair >= s->sh_npairs)
		return;
	uint64_t v = rate > 0 && rate < 1e12 ? (uint64_t)(rate * 1000.0 + 0.5) : 0;
	atomic_store_explicit(&s->shape[cell_rate(s) + (size_t)pair], v, memory_order_relaxed);
}

void metrics_bclass(struct metrics_shard *s, bool bounced, int cls)
{
	if (s != NULL && cls > BCLASS_NONE && cls < BCLASS_N)
		add(&s->bclass[bounced ? 1 : 0][cls], 1);
}

size_t metrics_render_max(const struct metrics *m)
{
	return METRICS_RENDER_MAX + m->render_extra;
}

void metrics_source_down(struct metrics_shard *s)
{
	if (s != NULL)
		add(&s->source_down, 1);
}

void metrics_set_tls_chains(struct metrics_shard *s, uint64_t verified, uint64_t cached)
{
	if (s == NULL)
		return;
	atomic_store_explicit(&s->chains[0], verified, memory_order_relaxed);
	atomic_store_explicit(&s->chains[1], cached, memory_order_relaxed);
}

void metrics_set_inflight(struct metrics_shard *s, int64_t n)
{
	if (s != NULL)
		atomic_store_explicit(&s->inflight, n, memory_order_relaxed);
}

void metrics_set_inflight_bytes(struct metrics_shard *s, int64_t n)
{
	if (s != NULL)
		atomic_store_explicit(&s->inflight_bytes, n, memory_order_relaxed);
}

void metrics_set_queue_depth(struct metrics_shard *s, int64_t n)
{
	if (s != NULL)
		atomic_store_explicit(&s->queue_depth, n, memory_order_relaxed);
}

void metrics_set_retry_depth(struct metrics_shard *s, int64_t n)
{
	if (s != NULL)
		atomic_store_explicit(&s->retry_depth, n, memory_order_relaxed);
}

void metrics_set_processes(struct metrics_shard *s, int64_t n)
{
	if (s != NULL)
		atomic_store_explicit(&s->processes, n, memory_order_relaxed);
}

/* ---- exposition ---- */

struct snap {
	uint64_t deliveries[METRICS_STATUS_N];
	uint64_t tls_sessions[METRICS_TLS_N][2];
	uint64_t tls_handshakes, tls_resumed, conn_opened, conn_reused, slot_waits, source_down, chains[2];
	uint64_t hist[METRICS_BUCKETS + 1], hist_sum_ms;
	uint64_t sts[2], dns[METRICS_DNS_N];
	int64_t conn_open, inflight, inflight_bytes, queue_depth, retry_depth, processes;
};

static void snapshot(const struct metrics *m, struct snap *n)
{
	memset(n, 0, sizeof(*n));
	for (int i = 0; i < m->nshards; i++) {
		const struct metrics_shard *s = &m->shards[i];
		for (int k = 0; k < METRICS_STATUS_N; k++)
			n->deliveries[k] += get(&s->deliveries[k]);
		for (int v = 0; v < METRICS_TLS_N; v++)
			for (int y = 0; y < 2; y++)
				n->tls_sessions[v][y] += get(&s->tls_sessions[v][y]);
		n->tls_handshakes += get(&s->tls_handshakes);
		n->tls_resumed += get(&s->tls_resumed);
		n->conn_opened += get(&s->conn_opened);
		n->conn_reused += get(&s->conn_reused);
		n->slot_waits += get(&s->slot_waits);
		n->source_down += get(&s->source_down);
		n->chains[0] += get(&s->chains[0]);
		n->chains[1] += get(&s->chains[1]);
		for (int b = 0; b <= METRICS_BUCKETS; b++)
			n->hist[b] += get(&s->hist[b]);
		n->hist_sum_ms += get(&s->hist_sum_ms);
		for (int k = 0; k < 2; k++)
			n->sts[k] += get(&s->sts[k]);
		for (int k = 0; k < METRICS_DNS_N; k++)
			n->dns[k] += get(&s->dns[k]);
		n->conn_open += gauge_get(&s->conn_open);
		n->inflight += gauge_get(&s->inflight);
		n->inflight_bytes += gauge_get(&s->inflight_bytes);
		n->queue_depth += gauge_get(&s->queue_depth);
		n->retry_depth += gauge_get(&s->retry_depth);
		n->processes += gauge_get(&s->processes);
	}
}

/* snprintf-style appender: counts what would have been written past cap. */
struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *dst = o->len < o->cap ? o->buf + o->len : NULL;
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	int n = vsnprintf(dst, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t cell_sum(const struct metrics *m, size_t k)
{
	uint64_t v = 0;
	for (int sh = 0; sh < m->nshards; sh++)
		v += get(&m->shards[sh].shape[k]);
	return v;
}

/* The series of metrics_set_shaping, if it was called. */
static void render_shaping(const struct metrics *m, struct out *o)
{
	if (m->prov_names == NULL)
		return;
	const struct metrics_shard *s0 = &m->shards[0];
	head(o, "mxsend_shaping_matches_total", "counter",
	     "Recipient outcomes whose reply a [response] rule matched, by provider, rule and action.");
	for (int r = 0; r < m->nrules; r++) {
		const struct metrics_rule *mr = &m->rules[r];
		for (int p = 0; p <= m->nprov && mr->provider != -2; p++) {
			if (mr->provider >= 0 && p != mr->provider)
				continue;
			uint64_t v = cell_sum(m, (size_t)r * (size_t)(m->nprov + 1) + (size_t)p);
			put(o, "mxsend_shaping_matches_total{provider=\"%s\",rule=\"%s\",action=\"%s\"} %llu\n",
			    p < m->nprov ? m->prov_names[p] : "-", mr->name, mr->action,
			    (unsigned long long)v);
		}
	}
	head(o, "mxsend_shaping_deferred_total", "counter",
	     "Recipients shaping deferred without an attempt, by provider and reason.");
	for (int p = 0; p < m->nprov; p++)
		for (int k = 0; k < METRICS_DEFER_N; k++)
			put(o, "mxsend_shaping_deferred_total{provider=\"%s\",reason=\"%s\"} %llu\n",
			    m->prov_names[p], defer_names[k],
			    (unsigned long long)cell_sum(m, cell_defer(s0) + (size_t)p * METRICS_DEFER_N +
							       (size_t)k));
	head(o, "mxsend_shaping_rate", "gauge",
	     "Messages per second this process may send from the source to the provider now; "
	     "no series: no rate in force.");
	for (int pr = 0; pr < m->npairs; pr++) {
		uint64_t v = cell_sum(m, cell_rate(s0) + (size_t)pr);
		if (v == 0 || pr % m->nprov_all >= m->nprov)
			continue;
		put(o, "mxsend_shaping_rate{source=\"%s\",provider=\"%s\"} %llu.%03llu\n",
		    m->pair_src[pr / m->nprov_all], m->prov_names[pr % m->nprov_all],
		    (unsigned long long)(v / 1000), (unsigned long long)(v % 1000));
	}
}

size_t metrics_render(const struct metrics *m, char *buf, size_t cap)
{
	struct snap n;
	snapshot(m, &n);
	struct out o = { buf, cap, 0 };
	if (cap > 0)
		buf[0] = '\0';

	head(&o, "mxsend_deliveries_total", "counter", "Recipient outcomes by status.");
	for (int k = 0; k < METRICS_STATUS_N; k++)
		put(&o, "mxsend_deliveries_total{status=\"%s\"} %llu\n", status_names[k],
		    (unsigned long long)n.deliveries[k]);

	head(&o, "mxsend_tls_sessions_total", "counter",
	     "New SMTP connections by TLS version and certificate verification.");
	for (int v = 0; v < METRICS_TLS_N; v++)
		for (int y = 1; y >= 0; y--) {
			if (v == METRICS_TLS_NONE && y == 1)
				continue;
			put(&o, "mxsend_tls_sessions_total{version=\"%s\",verified=\"%s\"} %llu\n",
			    tls_names[v], y ? "yes" : "no", (unsigned long long)n.tls_sessions[v][y]);
		}

	head(&o, "mxsend_tls_handshakes_total", "counter", "TLS handshakes, full and resumed.");
	put(&o, "mxsend_tls_handshakes_total %llu\n", (unsigned long long)n.tls_handshakes);
	head(&o, "mxsend_tls_resumed_total", "counter", "TLS handshakes that resumed a session.");
	put(&o, "mxsend_tls_resumed_total %llu\n", (unsigned long long)n.tls_resumed);
	head(&o, "mxsend_tls_chains_total", "counter",
	     "Server certificate chains verified with X509_verify_cert or taken from the "
	     "verified-chain cache.");
	put(&o, "mxsend_tls_chains_total{source=\"verified\"} %llu\n",
	    (unsigned long long)n.chains[0]);
	put(&o, "mxsend_tls_chains_total{source=\"cached\"} %llu\n",
	    (unsigned long long)n.chains[1]);
	head(&o, "mxsend_connections_opened_total", "counter", "SMTP connections opened.");
	put(&o, "mxsend_connections_opened_total %llu\n", (unsigned long long)n.conn_opened);
	head(&o, "mxsend_connections_reused_total", "counter",
	     "Transactions sent on a pooled SMTP connection.");
	put(&o, "mxsend_connections_reused_total %llu\n", (unsigned long long)n.conn_reused);
	head(&o, "mxsend_connection_slot_waits_total", "counter",
	     "Jobs that waited for a connection slot (max_connections).");
	put(&o, "mxsend_connection_slot_waits_total %llu\n", (unsigned long long)n.slot_waits);
	head(&o, "mxsend_source_down_total", "counter",
	     "Egress sources taken out of their pools (the address could not be bound).");
	put(&o, "mxsend_source_down_total %llu\n", (unsigned long long)n.source_down);
	if (m->nsrc > 0) {
		head(&o, "mxsend_source_deliveries_total", "counter",
		     "Recipient outcomes by egress source and status.");
		for (int i = 0; i <= m->nsrc; i++)
			for (int k = 0; k < METRICS_STATUS_N; k++) {
				if (k == METRICS_EXPIRED || k == METRICS_REJECTED || k == METRICS_SUPPRESSED)
					continue; /* decided by the queue, never by a source */
				uint64_t v = 0;
				int row = i < m->nsrc ? i : METRICS_SOURCES_MAX;
				for (int sh = 0; sh < m->nshards; sh++)
					v += get(&m->shards[sh].src_deliveries[row][k]);
				if (i == m->nsrc && v == 0)
					continue; /* "other": only past METRICS_SOURCES_MAX sources */
				put(&o, "mxsend_source_deliveries_total{source=\"%s\",status=\"%s\"} %llu\n",
				    i < m->nsrc ? m->src_names[i] : "other", status_names[k],
				    (unsigned long long)v);
			}
	}

	head(&o, "mxsend_connections_open", "gauge", "SMTP connections open now.");
	put(&o, "mxsend_connections_open %lld\n", (long long)n.conn_open);
	head(&o, "mxsend_inflight", "gauge", "Deliveries in progress.");
	put(&o, "mxsend_inflight %lld\n", (long long)n.inflight);
	head(&o, "mxsend_inflight_bytes", "gauge",
	     "Bytes the jobs in progress hold (max_inflight_bytes): messages and signed copies.");
	put(&o, "mxsend_inflight_bytes %lld\n", (long long)n.inflight_bytes);
	head(&o, "mxsend_queue_depth", "gauge", "Jobs waiting in the queue.");
	put(&o, "mxsend_queue_depth %lld\n", (long long)n.queue_depth);
	head(&o, "mxsend_retry_depth", "gauge", "Jobs waiting in the retry set.");
	put(&o, "mxsend_retry_depth %lld\n", (long long)n.retry_depth);
	head(&o, "mxsend_processes", "gauge",
	     "mxsend run processes sharing the Redis queue, this one included.");
	put(&o, "mxsend_processes %lld\n", (long long)n.processes);

	head(&o, "mxsend_delivery_duration_seconds", "histogram",
	     "Duration of delivery attempts, per recipient outcome.");
	uint64_t cum = 0;
	for (int b = 0; b < METRICS_BUCKETS; b++) {
		cum += n.hist[b];
		put(&o, "mxsend_delivery_duration_seconds_bucket{le=\"%s\"} %llu\n", bucket_le[b],
		    (unsigned long long)cum);
	}
	cum += n.hist[METRICS_BUCKETS];
	put(&o, "mxsend_delivery_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
	    (unsigned long long)cum);
	put(&o, "mxsend_delivery_duration_seconds_sum %llu.%03llu\n",
	    (unsigned long long)(n.hist_sum_ms / 1000), (unsigned long long)(n.hist_sum_ms % 1000));
	put(&o, "mxsend_delivery_duration_seconds_count %llu\n", (unsigned long long)cum);

	head(&o, "mxsend_sts_policy_fetches_total", "counter", "MTA-STS policy fetches by result.");
	put(&o, "mxsend_sts_policy_fetches_total{result=\"ok\"} %llu\n", (unsigned long long)n.sts[1]);
	put(&o, "mxsend_sts_policy_fetches_total{result=\"error\"} %llu\n",
	    (unsigned long long)n.sts[0]);

	head(&o, "mxsend_dns_queries_total", "counter", "DNS queries by result.");
	for (int k = 0; k < METRICS_DNS_N; k++)
		put(&o, "mxsend_dns_queries_total{result=\"%s\"} %llu\n", dns_names[k],
		    (unsigned long long)n.dns[k]);

	head(&o, "mxsend_bounce_class_total", "counter",
	     "Bounced and deferred recipient outcomes by bounce class.");
	for (int b = 1; b >= 0; b--)
		for (int k = BCLASS_NONE + 1; k < BCLASS_N; k++) {
			uint64_t v = 0;
			for (int sh = 0; sh < m->nshards; sh++)
				v += get(&m->shards[sh].bclass[b][k]);
			put(&o, "mxsend_bounce_class_total{status=\"%s\",class=\"%s\"} %llu\n",
			    b ? "bounced" : "deferred", bclass_name((enum bclass)k), (unsigned long long)v);
		}
	render_shaping(m, &o);
	return o.len;
}

/* ---- HTTP endpoint ---- */

static void accept_more(struct metrics *m);

static const char *reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	default: return "Internal Server Error";
	}
}

static void scrape_finish(struct scrape *c)
{
	struct metrics *m = c->m;
	loop_timer_stop(m->l, &c->timer);
	loop_close(m->l, NULL, c->fd);
	c->fd = -1;
	c->st = SC_FREE;
	m->nconns--;
	accept_more(m);
}

static void scrape_recv(struct scrape *c, char *buf, size_t len)
{
	c->busy = true;
	loop_recv(c->m->l, &c->op, c->fd, buf, len);
}

static void scrape_send(struct scrape *c)
{
	c->busy = true;
	loop_send(c->m->l, &c->op, c->fd, c->out + c->out_pos, c->out_end - c->out_pos);
}

/* Format the response into c->out (head right before the body) and send it. */
static void respond(struct scrape *c, int code, bool head_only)
{
	char *body = c->out + HDR_MAX;
	size_t blen;
	const char *ctype = "text/plain; version=0.0.4";
	if (code == 200) {
		size_t cap = metrics_render_max(c->m);
		blen = metrics_render(c->m, body, cap);
		if (blen >= cap) {
			/* The series set is fixed, so this is our bug: raise the cap. */
			log_error("evt=metrics_render_too_big len=%zu cap=%zu", blen, cap);
			code = 500;
		}
	}
	if (code != 200) {
		ctype = "text/plain; charset=utf-8";
		int r = snprintf(body, 64, "%d %s\n", code, reason(code));
		blen = r > 0 ? (size_t)r : 0;
	}
	char hdr[HDR_MAX];
	int h = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n%s\r\n",
			 code, reason(code), ctype, blen, code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (h <= 0 || (size_t)h >= sizeof(hdr))
		log_panic("evt=metrics_header_overflow len=%d", h);
	memcpy(body - h, hdr, (size_t)h);
	c->out_pos = HDR_MAX - (size_t)h;
	c->out_end = HDR_MAX + (head_only ? 0 : blen);
	c->st = SC_WRITE;
	log_debug("evt=metrics_request status=%d", code);
	scrape_send(c);
}

/* The request head is complete in c->req. Only the request line matters
 * (RFC 9112 §3): METHOD SP TARGET SP HTTP/1.x. */
static void handle_request(struct scrape *c)
{
	const char *p = c->req, *end = c->req + c->reqlen;
	const char *eol = memchr(p, '\n', (size_t)(end - p));
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	size_t vlen = sp2 ? (size_t)(eol - sp2 - 1) : 0;
	if (vlen > 0 && sp2[vlen] == '\r')
		vlen--;
	if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1 || vlen != 8 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		respond(c, 400, false);
		return;
	}
	size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - sp1 - 1);
	const char *target = sp1 + 1;
	bool get = mlen == 3 && memcmp(p, "GET", 3) == 0;
	bool head_only = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
	if (!get && !head_only) {
		respond(c, 405, false);
		return;
	}
	bool ours = tlen >= 8 && memcmp(target, "/metrics", 8) == 0 &&
		    (tlen == 8 || target[8] == '?');
	respond(c, ours ? 200 : 404, head_only);
}

/* Does buf[0..len) contain an empty line (CRLF CRLF, or bare LFs)? Scanning
 * starts at `from` (bytes before it were already searched). */
static bool head_complete(const char *buf, size_t len, size_t from)
{
	for (size_t i = from; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return true;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return true;
	}
	return false;
}

static void on_read(struct scrape *c, int res)
{
	if (res <= 0) {
		if (res < 0)
			log_debug("evt=metrics_recv_failed err=%s", strerror(-res));
		scrape_finish(c);
		return;
	}
	size_t from = c->reqlen >= 2 ? c->reqlen - 2 : 0;
	c->reqlen += (size_t)res;
	if (head_complete(c->req, c->reqlen, from))
		handle_request(c);
	else if (c->reqlen == sizeof(c->req))
		respond(c, 431, false);
	else
		scrape_recv(c, c->req + c->reqlen, sizeof(c->req) - c->reqlen);
}

static void on_write(struct scrape *c, int res)
{
	if (res < 0) {
		log_debug("evt=metrics_send_failed err=%s", strerror(-res));
		scrape_finish(c);
		return;
	}
	c->out_pos += (size_t)res;
	if (c->out_pos < c->out_end) {
		scrape_send(c);
		return;
	}
	/* Response sent: FIN, then drain until the peer closes (see top). */
	if (shutdown(c->fd, SHUT_WR) == -1) {
		scrape_finish(c);
		return;
	}
	c->st = SC_LINGER;
	uint64_t now = loop_now(c->m->l);
	uint64_t left = c->deadline > now ? c->deadline - now : 0;
	loop_timer_arm(c->m->l, &c->timer, left < LINGER_MS ? left : LINGER_MS);
	scrape_recv(c, c->req, sizeof(c->req));
}

static void scrape_io(struct loop_op *op, int res, unsigned flags)
{
	struct scrape *c = container_of(op, struct scrape, op);
	(void)flags;
	c->busy = false;
	if (c->expired) {
		scrape_finish(c);
		return;
	}
	switch (c->st) {
	case SC_READ:
		on_read(c, res);
		break;
	case SC_WRITE:
		on_write(c, res);
		break;
	case SC_LINGER:
		if (res > 0)
			scrape_recv(c, c->req, sizeof(c->req));
		else
			scrape_finish(c);
		break;
	case SC_FREE:
		log_panic("evt=metrics_cqe_on_free_slot res=%d", res);
	}
}

static void scrape_timeout(struct loop_timer *t)
{
	struct scrape *c = container_of(t, struct scrape, timer);
	if (c->st != SC_LINGER)
		log_debug("evt=metrics_timeout state=%s", c->st == SC_READ ? "read" : "write");
	c->expired = true;
	if (c->busy)
		loop_cancel(c->m->l, &c->op); /* its completion finishes the slot */
	else
		scrape_finish(c);
}

static void scrape_start(struct metrics *m, int fd)
{
	struct scrape *c = NULL;
	for (unsigned i = 0; i < METRICS_MAX_CONNS && c == NULL; i++)
		if (m->conns[i].st == SC_FREE)
			c = &m->conns[i];
	if (c == NULL) /* accept is armed only while a slot is free */
		log_panic("evt=metrics_no_free_slot n=%u", m->nconns);
	m->nconns++;
	c->st = SC_READ;
	c->fd = fd;
	c->busy = false;
	c->expired = false;
	c->reqlen = 0;
	c->out_pos = c->out_end = 0;
	c->deadline = loop_now(m->l) + METRICS_TIMEOUT_MS;
	loop_timer_arm(m->l, &c->timer, METRICS_TIMEOUT_MS);
	scrape_recv(c, c->req, sizeof(c->req));
}

static void on_accept(struct loop_op *op, int res, unsigned flags)
{
	struct metrics *m = container_of(op, struct metrics, accept_op);
	(void)flags;
	m->accepting = false;
	if (res >= 0) {
		scrape_start(m, res);
	} else if (res != -EINTR && res != -EAGAIN && res != -ECONNABORTED) {
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM...: wait a little, do not spin. */
		log_warn("evt=metrics_accept_failed err=%s", strerror(-res));
		loop_timer_arm(m->l, &m->accept_retry, ACCEPT_RETRY_MS);
		return;
	}
	accept_more(m);
}

static void accept_retry(struct loop_timer *t)
{
	accept_more(container_of(t, struct metrics, accept_retry));
}

static void accept_more(struct metrics *m)
{
	if (m->accepting || m->nconns >= METRICS_MAX_CONNS || loop_timer_armed(&m->accept_retry))
		return;
	m->accepting = true;
	loop_accept(m->l, &m->accept_op, m->lfd);
}

/* "127.0.0.1:9465", "[::1]:9465", "localhost:9465" -> sockaddr. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
		      size_t errlen)
{
	char host[64];
	const char *port;
	size_t hlen;
	bool v6 = s[0] == '[';
	if (v6) {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':')
			goto bad;
		hlen = (size_t)(rb - s - 1);
		memcpy(host, s + 1, hlen < sizeof(host) ? hlen : 0);
		port = rb + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
			goto bad;
		hlen = (size_t)(colon - s);
		memcpy(host, s, hlen < sizeof(host) ? hlen : 0);
		port = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		goto bad;
	host[hlen] = '\0';
	char *e;
	errno = 0;
	unsigned long p = strtoul(port, &e, 10);
	if (*port < '0' || *port > '9' || *e != '\0' || errno != 0 || p > 65535)
		goto bad;
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)p);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			goto bad;
		*sslen = sizeof(*a);
		return 0;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)p);
	if (strcmp(host, "localhost") == 0)
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		goto bad;
	*sslen = sizeof(*a);
	return 0;
bad:
	snprintf(err, errlen, "metrics: bad address \"%s\" (numeric host:port or [ipv6]:port)", s);
	return -EINVAL;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

int metrics_serve(struct metrics *m, struct loop *l, const char *addr_port, char *err,
		  size_t errlen)
{
	if (m->lfd != -1) {
		snprintf(err, errlen, "metrics: already serving");
		return -EALREADY;
	}
	struct sockaddr_storage ss;
	socklen_t sslen;
	int r = parse_addr(addr_port, &ss, &sslen, err, errlen);
	if (r < 0)
		return r;
	const char *what = "socket";
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	int one = 1;
	what = "setsockopt";
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
		goto fail;
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto fail;
	what = "bind";
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1)
		goto fail;
	what = "listen";
	if (listen(fd, 64) == -1)
		goto fail;
	what = "getsockname";
	sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == -1)
		goto fail;
	m->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						: ((struct sockaddr_in6 *)&ss)->sin6_port);
	if (!is_loopback(&ss))
		log_warn("evt=metrics_not_loopback addr=%s msg=\"the metrics endpoint has no "
			 "authentication\"",
			 addr_port);
	m->l = l;
	m->lfd = fd;
	m->accept_op.fn = on_accept;
	loop_timer_init(&m->accept_retry, accept_retry);
	m->conns = xcalloc(METRICS_MAX_CONNS, sizeof(*m->conns));
	for (unsigned i = 0; i < METRICS_MAX_CONNS; i++) {
		struct scrape *c = &m->conns[i];
		c->m = m;
		c->st = SC_FREE;
		c->fd = -1;
		c->out = xmalloc(HDR_MAX + metrics_render_max(m));
		c->op.fn = scrape_io;
		loop_timer_init(&c->timer, scrape_timeout);
	}
	log_info("evt=metrics_listen addr=%s port=%d", addr_port, m->port);
	accept_more(m);
	return 0;
fail:
	r = -errno;
	snprintf(err, errlen, "metrics: %s %s: %s", what, addr_port, strerror(-r));
	if (fd != -1)
		close(fd);
	return r;
}

int metrics_port(const struct metrics *m)
{
	return m->lfd != -1 ? m->port : 0;
}
