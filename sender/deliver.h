/* deliver.h: the delivery engine. Given one message for recipients of ONE
 * domain, it resolves the MX hosts, applies the domain's TLS policy, walks the MX
 * hosts/addresses in order, runs SMTP sessions, and reports one outcome per
 * recipient. Everything runs on one loop; nothing blocks.
 *
 * Ownership: deliver_submit() borrows req and everything it points to (strings,
 * message bytes) until req->done has been called. Callbacks never run before
 * deliver_submit() returns. For each recipient req->rcpt_done runs exactly once,
 * then req->done runs once; after done the engine no longer touches req. */
#ifndef SENDER_DELIVER_H
#define SENDER_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/outcome.h"
#include "sender/config.h"

struct loop;
struct deliver;
struct limits_shared;
struct limits_peers;

/* One recipient's outcome: struct job_outcome (queue/outcome.h says why one
 * shape serves from here to the results stream), status DELIVERED, BOUNCED,
 * DEFERRED or HELD. */
typedef void deliver_rcpt_fn(void *arg, int idx, const struct job_outcome *r);
typedef void deliver_done_fn(void *arg);

struct deliver_req {
	const char *from;       /* envelope sender, "" for <> */
	const char *domain;     /* recipient domain (lowercase) */
	const char *const *rcpts; /* nrcpt full addresses, all @domain */
	int nrcpt;
	const char *data;       /* raw message bytes (LF or CRLF) */
	size_t len;
	const struct msg_wire *wire; /* the message already prepared (msg.h; signer.h's
	                         * signed message, its signatures in wire->pre), borrowed
	                         * until done: data and len are then not read; NULL:
	                         * deliver prepares data */
	int tls_min_level;      /* a stricter TLS level for this message (enum tls_level), -1 = none */
	bool sts_exempt;        /* no MTA-STS (TLSRPT reports, RFC 8460 3) */
	const char *pool;       /* the job's egress pool (a [pool NAME]), NULL: the
	                         * domain rule's pool, else every source */
	const char *log_tag;    /* fields for the evt=delivery line (the queue's job,
	                         * id, attempt), NULL: none */
	deliver_rcpt_fn *rcpt_done;
	deliver_done_fn *done;
	void *arg;
};

/* One TLS session attempt, for TLSRPT (RFC 8460 4.3; tlscache/tls_event.h):
 * emitted for every SMTP connection attempt that reached the TLS decision
 * (STARTTLS offered or not), success or failure, and for a failed policy
 * discovery; never for reused connections. ev is borrowed for the call. */
struct tls_event;
typedef void deliver_tls_fn(void *arg, const struct tls_event *ev);

struct metrics;
struct metrics_shard;

struct deliver_opts {
	const char *ca_file;    /* overrides config ca_file when not NULL */
	const char *dns;        /* overrides config dns when not NULL */
	int port;               /* > 0: overrides every rule's port */
	int tls_level;          /* >= 0: overrides the effective tls level (send --tls) */
	bool no_resumption;     /* benchmarks: never resume TLS sessions */
	bool no_verify_cache;   /* benchmarks: verify every certificate chain afresh */
	/* Connections per MX host counted for the whole process (every worker's
	 * engine shares it: workers_new sets it). NULL: this engine alone. */
	struct limits_shared *limits_shared;
	/* The processes sharing the queue (max_connections_total is split
	 * between them: workers_new sets it). NULL: this process alone. */
	const struct limits_peers *peers;
	/* TLS session attempts (TLSRPT). Runs on the engine's loop thread; with
	 * workers_new it is relayed to the feeder's thread. NULL: not reported. */
	deliver_tls_fn *on_tls;
	void *on_tls_arg;
	/* MTA-STS policies fetched (sts_policy_encode form) for persistence. */
	void (*on_sts_store)(void *arg, const char *domain, const char *encoded);
	void *on_sts_store_arg;
	int sts_https_port;     /* 0 = 443 (tests) */
	/* Metrics (NULL: none): this engine's shard (connections opened, open
	 * and reused, TLS sessions), written only from its loop thread. For
	 * workers_new, the registry instead: worker i gets shard 1 + i. */
	struct metrics_shard *metrics_shard;
	struct metrics *metrics;
	/* Shaping (sender/shaping.h): per (source, provider) rate, connection
	 * budget, response rules. Shared by every engine (any thread). NULL:
	 * none. */
	struct shaping *shaping;
};

struct deliver_stats {
	unsigned long opened;  /* new SMTP connections */
	unsigned long reused;  /* transactions on a pooled connection */
	unsigned long slot_waits;      /* jobs that waited for a connection slot (max_connections) */
	unsigned long chains_verified; /* certificate chains verified (X509_verify_cert) */
	unsigned long chains_cached;   /* ... taken from the verified-chain cache instead */
};

/* Create an engine on loop with config c (borrowed for the engine's life).
 * NULL with err filled on failure (bad CA file, bad DNS servers). */
struct deliver *deliver_new(struct loop *l, const struct config *c, const struct deliver_opts *o,
			    char *err, size_t errlen);
/* At exit, on the loop's thread: requests still running are dropped without
 * callbacks, every session is closed at once (no QUIT), and the loop runs
 * (loop_drain, at most 2 s) until they are gone. Nothing works afterwards but
 * deliver_free. Idempotent. */
void deliver_abandon(struct deliver *d);
/* Free the engine: deliver_abandon first (so, with requests or sessions left,
 * on the loop's thread), then the rest, which any thread may free (TLS
 * contexts: free them where they were made, OpenSSL 3.0's thread-stop
 * handlers outlive an OSSL_LIB_CTX freed on another thread). */
void deliver_free(struct deliver *d);
/* Start delivering. Returns 0, or -EINVAL if req is malformed (no callbacks then). */
int deliver_submit(struct deliver *d, struct deliver_req *req);
/* Requests submitted and not yet done. */
unsigned deliver_active(const struct deliver *d);
/* SMTP sessions still alive (including ones finishing QUIT after their request). */
unsigned deliver_sessions(const struct deliver *d);
/* QUIT every idle pooled connection (shutdown; `send` before exit). */
void deliver_flush_pool(struct deliver *d);
/* Wind down: flush the pool, then call done(arg) once, from the loop, when no
 * SMTP session is left (QUITs answered) or after grace_ms. */
void deliver_quiesce(struct deliver *d, uint32_t grace_ms, deliver_done_fn *done, void *arg);
void deliver_get_stats(const struct deliver *d, struct deliver_stats *st);
/* Seed the MTA-STS cache with a policy persisted earlier. */
void deliver_sts_load(struct deliver *d, const char *domain, const char *encoded);

#endif
