/* metrics.h: Prometheus metrics: per-thread counter shards, a registry that
 * sums them, and a small HTTP endpoint served through the loop.
 *
 * Model. The registry (struct metrics) holds nshards shards. Each shard has
 * exactly ONE writer thread: a worker updates its own shard on its delivery
 * path without locks or read-modify-write instructions (relaxed atomic load +
 * store of a value only it writes). Give the feeder (queue side) a shard of
 * its own too: it reports `expired` and `rejected` outcomes and the queue and
 * retry depths. A scrape (metrics_render) sums the shards with atomic loads,
 * from any thread, at any time: every counter it prints is monotonic from one
 * scrape to the next, and within one scrape the histogram's +Inf bucket equals
 * its _count. Gauges are per-shard too: the printed value is the sum of each
 * writer's share (a worker sets its own in-flight count; the feeder sets the
 * queue depth and the process count; others leave theirs at 0). A counter
 * whose source is a running total kept elsewhere on the writer's thread (the
 * worker's tlscache chain counts) is copied in with a set, not an add: still
 * one writer, still monotonic, because the source never goes back.
 *
 * Threads, in one table:
 *   metrics_new / metrics_free       one thread, before the writers start /
 *                                    after they stopped and the loop ended
 *   metrics_shard                    any thread, any time (no side effects)
 *   metrics_delivery ... _set_*      only the thread that owns that shard
 *   metrics_render                   any thread, any time
 *   metrics_serve / metrics_port     the thread of the loop passed to serve
 *                                    (or before that loop runs)
 * Every shard function accepts a NULL shard and then does nothing, so code
 * that runs without metrics (mxsend send) needs no checks.
 *
 * Exposition: text format 0.0.4 (Content-Type: text/plain; version=0.0.4).
 * Every series of a metric is printed even when zero (known label sets), so
 * rate() works from the first sample. */
#ifndef SENDER_METRICS_H
#define SENDER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct metrics;
struct metrics_shard;

/* Outcome of one recipient (the `status` of a result entry). */
enum metrics_status {
	METRICS_DELIVERED,
	METRICS_BOUNCED,
	METRICS_DEFERRED,
	METRICS_EXPIRED,
	METRICS_REJECTED,
	METRICS_HELD,
	METRICS_SUPPRESSED,
	METRICS_STATUS_N
};
/* "delivered", "bounced", "deferred", "expired", "rejected", "held", "suppressed"; "?" if
 * out of range. */
const char *metrics_status_name(enum metrics_status s);
/* The reverse; -1 if name is not one of those. */
int metrics_status_parse(const char *name);

enum metrics_tls_version { METRICS_TLS_NONE, METRICS_TLS_12, METRICS_TLS_13, METRICS_TLS_N };
/* "none", "TLSv1.2", "TLSv1.3". */
const char *metrics_tls_version_name(enum metrics_tls_version v);
/* From a tls_verdict/job_outcome version string: "TLSv1.2" and "TLSv1.3" map
 * to themselves, anything else (NULL, "", "none") to METRICS_TLS_NONE. */
enum metrics_tls_version metrics_tls_version_parse(const char *name);

enum metrics_conn_event { METRICS_CONN_OPENED, METRICS_CONN_REUSED, METRICS_CONN_CLOSED };

/* DNS lookup classes. Map dns.h: DNS_OK, DNS_NULLMX, DNS_NODATA -> OK (the
 * server answered); DNS_TEMP -> TEMP; DNS_NXDOMAIN -> NXDOMAIN. */
enum metrics_dns_result { METRICS_DNS_OK, METRICS_DNS_TEMP, METRICS_DNS_NXDOMAIN, METRICS_DNS_N };

/* Histogram upper bounds of mxsend_delivery_duration_seconds, in ms:
 * 5ms 10 25 50 100 250 500 1s 2.5 5 10 30 60s, then +Inf. */
#define METRICS_BUCKETS 13

/* Caps of the HTTP endpoint. */
#define METRICS_MAX_CONNS 16        /* concurrent scrape connections; more wait in the backlog */
#define METRICS_REQ_MAX 8192        /* request line + headers; more gets 431 */
#define METRICS_TIMEOUT_MS 5000     /* per connection, from accept to close */
#define METRICS_RENDER_MAX 20480    /* the fixed series fit; see metrics_render_max */

/* ---- registry ---- */

/* A registry with nshards (>= 1) zeroed shards. Never NULL (aborts on OOM). */
struct metrics *metrics_new(int nshards);
/* Close the endpoint's sockets and free everything. NULL is a no-op. Call
 * after the serving loop has returned from loop_run for the last time (ring
 * ops still in flight are abandoned, as with loop_free) and after every
 * writer thread has stopped: shard pointers die here. */
void metrics_free(struct metrics *m);
/* Shard i (0 <= i < nshards; anything else panics). Owned by m. */
struct metrics_shard *metrics_shard(struct metrics *m, int i);

/* ---- updates: only the shard's writer thread; never block, never allocate ---- */

/* One recipient outcome. elapsed_ms (the attempt's duration) is observed in the
 * latency histogram unless it is negative (no attempt was made: pass -1 for a
 * rejected job or one that expired before any attempt) or status is REJECTED. */
void metrics_delivery(struct metrics_shard *s, enum metrics_status st, int64_t elapsed_ms);
/* One new SMTP connection's TLS outcome, once it is known (after the STARTTLS
 * handshake, or on deciding to go plaintext: v = NONE). Counts
 * tls_sessions{version,verified}; for TLS also tls_handshakes and, if resumed,
 * tls_resumed. A connection reused from the pool made no new handshake: do not
 * call this again for it. verified is ignored (printed "no") for NONE. */
void metrics_tls(struct metrics_shard *s, enum metrics_tls_version v, bool verified, bool resumed);
/* OPENED: a new connection (+1 open). REUSED: a pooled connection taken for
 * another transaction. CLOSED: a connection counted as OPENED on this same
 * shard has gone (-1 open). */
void metrics_conn(struct metrics_shard *s, enum metrics_conn_event ev);
/* One MTA-STS policy fetch finished (ok: a policy, or mode none, was obtained). */
void metrics_sts_fetch(struct metrics_shard *s, bool ok);
/* One DNS query answered or failed (see the mapping above). */
void metrics_dns(struct metrics_shard *s, enum metrics_dns_result r);
/* One job found every connection slot of its MX host taken (max_connections,
 * or this process's share of max_connections_total) and waits for one. */
void metrics_slot_wait(struct metrics_shard *s);
/* An egress source whose address could not be bound left its pools. */
void metrics_source_down(struct metrics_shard *s);
/* The egress sources' names (label `source` of mxsend_source_deliveries_total),
 * at most METRICS_SOURCES_MAX (later ones count as "other": bounded). Before
 * the writers start. */
#define METRICS_SOURCES_MAX 16 /* the body stays under METRICS_RENDER_MAX */
void metrics_set_sources(struct metrics *m, const char *const *names, int n);
/* One outcome sent from source index src (-1: none; nothing counted). */
void metrics_source_delivery(struct metrics_shard *s, int src, enum metrics_status st);
/* This writer's running totals of certificate chains verified with
 * X509_verify_cert and taken from the verified-chain cache (a copy of its own
 * tlscache's verify_misses and verify_hits). Replaces the previous values, so
 * they must never decrease (the tlscache counters do not). */
void metrics_set_tls_chains(struct metrics_shard *s, uint64_t verified, uint64_t cached);
/* ---- shaping and bounce classes (shaping.h, bclass.h) ----
 * Labels come from the config's names only (providers, [response] rules,
 * sources), never from a reply, so every label set is known at start-up and
 * bounded by the config: rules x providers (a rule with provider= has only
 * that one; one without has every provider and "-", no provider), providers x
 * reasons, sources x providers. */
#define METRICS_PROVIDERS_MAX 64 /* providers past it are not counted */
#define METRICS_RULES_MAX 256    /* [response] rules past it are not counted */
struct metrics_rule {
	const char *name;   /* the [response NAME] */
	const char *action; /* "throttle", "suspend", "temporary", "permanent", "none" */
	int provider;       /* index in providers, -1: every provider (past the cap: not counted) */
};
/* The providers, rules and (source, provider) pairs, numbered as shaping.h
 * does: pair = s x nprov + p, s in [0, nsrc], s == nsrc being "no source"
 * (label "-"). Once, before the writers start and before metrics_serve (it
 * sizes the response). */
void metrics_set_shaping(struct metrics *m, const char *const *providers, int nprov,
			 const struct metrics_rule *rules, int nrules, const char *const *sources,
			 int nsrc);
/* n recipient outcomes whose reply rule matched, from provider prov (-1:
 * none). */
void metrics_shape_match(struct metrics_shard *s, int rule, int prov, unsigned n);
/* Why shaping held recipients back without an attempt (deferred, 451 4.4.5). */
enum metrics_shape_defer {
	METRICS_DEFER_RATE,    /* the provider's rate: the wait passed [shaping] max_wait */
	METRICS_DEFER_SUSPEND, /* a suspend rule's suspension */
	METRICS_DEFER_WARMUP,  /* every source's warm-up budget spent today */
	METRICS_DEFER_N
};
void metrics_shape_defer(struct metrics_shard *s, int prov, enum metrics_shape_defer why,
			 unsigned n);
/* Gauge (the feeder's): messages per second this process may send on pair
 * now (its share of all processes' rate), 0 for none in force. */
void metrics_set_shape_rate(struct metrics_shard *s, int pair, double rate);
/* One bounced (or deferred) outcome of class cls (enum bclass, not NONE). */
void metrics_bclass(struct metrics_shard *s, bool bounced, int cls);

/* Gauges: this writer's share of the total (see the model above). */
void metrics_set_inflight(struct metrics_shard *s, int64_t n);
/* The bytes those jobs hold, as [mxsend] max_inflight_bytes counts them (their
 * messages, and DKIM-signed copies while held). */
void metrics_set_inflight_bytes(struct metrics_shard *s, int64_t n);
void metrics_set_queue_depth(struct metrics_shard *s, int64_t n);
void metrics_set_retry_depth(struct metrics_shard *s, int64_t n);
/* mxsend run processes sharing the Redis queue, this one included (the
 * feeder's queue_stats.peers; only one shard should set it). */
void metrics_set_processes(struct metrics_shard *s, int64_t n);

/* ---- exposition ---- */

/* Write the text exposition of all metrics into buf (cap bytes, NUL-terminated
 * when cap > 0). Returns the full length, as snprintf does: a result >= cap
 * means the output was cut. Reads shards with atomic loads only; any thread. */
size_t metrics_render(const struct metrics *m, char *buf, size_t cap);
/* A cap the exposition always fits in: METRICS_RENDER_MAX, plus the room of
 * the label sets metrics_set_shaping added. */
size_t metrics_render_max(const struct metrics *m);

/* Serve GET /metrics over HTTP/1.1 on addr_port ("127.0.0.1:9465",
 * "[::1]:9465", "localhost:9465"; port 0 picks a free port, see metrics_port).
 * Binds and listens now (blocking, start-up only; a numeric address is
 * required, apart from "localhost"), then serves entirely through loop l: one
 * accept at a time, at most METRICS_MAX_CONNS connections, each closed after
 * its response or METRICS_TIMEOUT_MS. Paths other than /metrics get 404,
 * methods other than GET and HEAD 405, malformed requests 400, requests larger
 * than METRICS_REQ_MAX 431. A non-loopback address works but is logged as a
 * warning (the endpoint has no authentication). l is borrowed for m's life.
 * Returns 0, or -errno with err filled ("metrics: bind 127.0.0.1:9465:
 * Address already in use"); -EALREADY if m already serves. Never calls back
 * before returning. */
int metrics_serve(struct metrics *m, struct loop *l, const char *addr_port, char *err,
		  size_t errlen);
/* The bound TCP port, or 0 if not serving. */
int metrics_port(const struct metrics *m);

#endif
