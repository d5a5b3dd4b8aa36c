/* queue.h: the Redis job queue (hiredis 0.14 async API; knows nothing of the
 * event loop, which the host supplies through struct queue_host).
 *
 * Redis keys (J = config `jobs`, default mxsend:jobs):
 *   J               stream of jobs of the lane `default` (lane.h: lane NAME
 *                   has the stream J:lane:NAME, J:lane:NAME:retry and
 *                   J:lane:NAME:held, like J's below); consumer group `group`, created at id 0
 *                   (MKSTREAM) so jobs added before the first start are seen;
 *                   one consumer per process (host:pid). Committed entries
 *                   are acknowledged AND deleted, so XLEN J is the queue depth.
 *   results         stream of results, one entry per recipient and outcome.
 *   J:retry         sorted set of parked retries, score = due time (epoch ms);
 *   J:retry:MEMBER  hash with the job's fields (to = the deferred recipients,
 *                   attempt, since, job = original entry id).
 *   J:held          sorted set of held jobs, score = time held (epoch ms);
 *   J:held:MEMBER   hash with the job's fields + domain, reason, held_at.
 *                   MEMBER = ENTRY/DOMAIN; `mxsend release` moves it back to J.
 *   J:suppress      hash: the suppression list (queue/suppress.h), read with
 *                   one HMGET per claimed batch; J:suppress:exp its expiries.
 *   J:procs         hash: consumer -> last heartbeat (Redis's clock, ms), every
 *                   2 s; a process silent for 10 s is forgotten. Gives each
 *                   process the live count and its rank (queue_stats.peers).
 *
 * Guarantees (DESIGN.md "Delivery guarantee"):
 * - A job's results, its move to J:retry / J:held, its XACK and its XDEL are
 *   one Lua script call (atomic like MULTI/EXEC). The script first checks that
 *   the entry is still pending in the group; if it is not (another process or
 *   an earlier attempt of ours already finished it) it writes nothing, so a
 *   recipient never gets two final results, even when a commit whose reply was
 *   lost is sent again after a reconnect.
 * - Claims are bounded: at most max_inflight jobs are held in memory, counting
 *   claims still on the wire (admission control at the claim step), and about
 *   max_inflight_bytes of message data (the claim's COUNT is what fits at the
 *   recent average job size; a job larger than the cap goes alone).
 * - Each hiredis callback fires exactly once; a NULL reply means the connection
 *   was lost and the command's effect is unknown. For a claim that means the
 *   jobs may sit in our pending list: they are reclaimed (XAUTOCLAIM) by a live
 *   process after visibility_timeout, or at once by the others when this
 *   process's heartbeat stops (qscript_dead). For a commit it means "send it again"
 *   (safe: see above). Replies are borrowed for the callback only.
 * - Jobs being delivered are kept claimed by re-claiming them (XCLAIM JUSTID)
 *   every visibility_timeout/3, so live processes do not steal each other's work.
 * - Connection loss: reconnect with exponential back-off, 100 ms .. 5 s, with
 *   jitter; commands time out (the connection is dropped) after 15 s without
 *   a reply. Blocking reads (XREADGROUP BLOCK) use their own connection. A
 *   READONLY (or UNBLOCKED) reply drops the connection too: a demoted master.
 *   With sentinels (queue/sentinel.c) each connect after a failure asks them
 *   where the master is, and +switch-master reconnects at once.
 *
 * Threading: everything runs on the host's loop thread. No function here calls
 * back into the host before returning, except where stated. */
#ifndef QUEUE_QUEUE_H
#define QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/job.h"
#include "queue/lane.h"

struct redisAsyncContext;
struct queue;

/* ---- Redis address ---- */

struct queue_addr {
	char host[256]; /* "" for a unix socket */
	int port;
	char path[256]; /* unix socket path, "" for TCP */
	int db;
	char username[256]; /* from the URL ("USER:PASSWORD@"), "" if none */
	char password[256]; /* from the URL, "" if none */
	bool tls;           /* rediss://: TLS to HOST:PORT (struct queue_tls) */
};
/* Parse "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]" or "unix:/PATH[?db=N]".
 * Userinfo without a ':' ("redis://PASSWORD@HOST") is a password alone.
 * rediss:// is the same with TLS (a->tls; default port 6379 either way).
 * Returns 0, or -1 with a message in err. Pure. */
int queue_url_parse(const char *url, struct queue_addr *a, char *err, size_t errlen);
/* url as it may be shown: a password in it replaced by "***"
 * ("redis://:***@host", "redis://user:***@host"), whatever else the URL
 * holds (also when it does not parse). Writes into out (n bytes, truncated)
 * and returns out; url NULL gives "(default)". Pure. */
const char *queue_url_redact(const char *url, char *out, size_t n);

/* ---- Redis Sentinel (queue/sentinel.c) ---- */

#define QUEUE_SENTINELS_MAX 16
#define QUEUE_SENTINEL_PORT 26379
struct queue_hostport {
	char host[256];
	int port;
};
/* Parse "HOST[:PORT],..." (IPv6 as [ADDR]:PORT; PORT default 26379) into
 * out[0..max). HOST is an IP address or a host name (queue_host_ok). Returns
 * the count (>= 1), or -1 with a message in err. Pure. */
int queue_sentinels_parse(const char *s, struct queue_hostport *out, int max, char *err,
			  size_t errlen);
/* True when host[0..n) is an IPv4 or IPv6 address or a host name (labels of
 * letters, digits, '-' and '_', 1..63 bytes, 253 in all). Pure. */
bool queue_host_ok(const char *host, size_t n);
/* A sentinel's answer to SENTINEL get-master-addr-by-name (hostile input):
 * host and port (decimal 1..65535) checked and copied into out. 0, or -1.
 * Pure. */
int queue_master_addr_check(const char *host, size_t hlen, const char *port, size_t plen,
			    struct queue_hostport *out);

/* ---- configuration and host services ---- */

struct redisContext;
/* TLS to a rediss:// server. The queue knows no TLS: hiredis 0.14 has none,
 * so the host carries hiredis's bytes over its own TLS engine (sender/
 * redis_tls.c). The server's chain must verify against ca_file and its
 * certificate name `name` (default: the host connected to); never a
 * plaintext fallback. */
struct queue_tls {
	const char *ca_file;   /* NULL or "": the system store */
	const char *cert_file; /* client certificate chain (PEM), NULL: none */
	const char *key_file;  /* its private key (PEM, unencrypted) */
	const char *name;      /* NULL or "": the host name (or IP) connected to */
	/* Blocking connect to host:port over TLS (5 s timeouts; the handshake
	 * and the first exchange are over when it returns): a hiredis context,
	 * or NULL with the reason in err (never a secret). NULL: rediss:// is
	 * refused. */
	struct redisContext *(*connect)(const struct queue_tls *t, const char *host, int port,
					char *err, size_t errlen);
};

struct queue_config {
	const char *url;      /* see queue_url_parse */
	const char *username; /* NULL or "": the URL's user, if any (ACL: AUTH USER PASSWORD) */
	const char *password; /* NULL or "": the URL's password, if any */
	struct queue_tls tls; /* for rediss:// URLs */
	const char *jobs, *results, *group;
	bool cluster;         /* url names a node of a Redis Cluster (queue/cluster.h):
	                       * jobs and results must share one hash slot */
	const char *cluster_nodes; /* NULL, or more nodes to start from: "HOST:PORT,..." */
	const char *consumer; /* this process's consumer name, e.g. "host:pid" */
	uint64_t visibility_ms; /* reclaim entries idle longer than this */
	int batch;              /* max entries per claim */
	int results_maxlen;     /* > 0: results stream trimmed to about this many
	                         * entries (XADD MAXLEN ~), oldest first */
	int max_inflight;       /* max jobs claimed and not yet committed */
	uint64_t max_inflight_bytes; /* and their message bytes (0: no cap); a claim
	                         * asks for as many as fit at the recent average
	                         * size; with nothing in flight, at least one */
	struct job_limits limits;
	const uint64_t *schedule_ms; /* retry delays; the last one repeats */
	int n_schedule;
	uint64_t lifetime_ms;   /* default job lifetime (field `expires` overrides) */
	double jitter;          /* retry delay jitter, fraction 0..1 */
	/* Suppression list (queue/suppress.h, README "Suppression"): check
	 * claimed recipients against J:suppress; add the addresses of 5xx
	 * bounces whose class is one of supp_auto (bclass names), expiring after
	 * supp_auto_ttl_ms (0: never). */
	bool suppress;
	const char *const *supp_auto;
	int n_supp_auto;
	uint64_t supp_auto_ttl_ms;
	/* Lanes in priority order (see lane.h); n_lanes 0: the lane `default`
	 * alone. When `default` is not among them it comes last, weight 1. */
	const struct queue_lane *lanes;
	int n_lanes;
	bool peers_settle;      /* limits are split between the processes
	                         * (max_connections_total): take no job until the
	                         * others have seen this process in J:procs */
	/* Redis Sentinel (queue/sentinel.c, README "Sentinel"): sentinels NULL
	 * or "": none, the URL's host:port is the master. Else
	 * "HOST:PORT,HOST:PORT..." (queue_sentinels_parse): the master named
	 * master_name is asked of them (the URL then gives only the database,
	 * user and password), and asked again after a failover. */
	const char *sentinels;
	const char *master_name;
	const char *sentinel_password; /* NULL or "": the sentinels need none */
	int wait_replicas;      /* > 0: WAIT for this many replicas after each
	                         * commit before the job counts as done */
	uint64_t wait_timeout_ms; /* WAIT's timeout (0: 1 s) */
};

struct queue_timer; /* the host's */
typedef void queue_timer_fn(void *arg);

struct queue_host {
	void *ctx;
	/* Attach ac to the host's event loop (sender/redis_uring.c). 0 or -errno. */
	int (*attach)(void *ctx, struct redisAsyncContext *ac);
	/* rediss://: a new context (not attached yet) whose bytes the host
	 * carries over TLS (cfg.tls) to host:port on its loop; a TLS failure
	 * reaches hiredis as a lost connection (the host logs why). NULL with
	 * the reason in why. NULL hook: rediss:// is refused. */
	struct redisAsyncContext *(*connect_tls)(void *ctx, const struct queue_tls *t,
						 const char *host, int port, char *why, size_t n);
	/* One-shot timers: fn(arg) runs once per arm, from the loop, never from
	 * inside timer_arm. Re-arming an armed timer moves it. */
	struct queue_timer *(*timer_new)(void *ctx, queue_timer_fn *fn, void *arg);
	void (*timer_arm)(struct queue_timer *t, uint64_t after_ms);
	void (*timer_free)(struct queue_timer *t);
	uint64_t (*mono_ms)(void *ctx); /* monotonic clock */
	/* A claimed, valid job to deliver. The job stays valid (and owned by the
	 * queue) until the host calls queue_job_done(q, j); the host records each
	 * recipient's outcome with job_set_outcome() before that. Called from
	 * inside a Redis reply callback: it must not free the queue. */
	void (*job)(void *ctx, struct job *j);
	/* The processes sharing the queue changed: n alive, this one ranked rank
	 * (0..n-1) by consumer name. Optional (NULL). */
	void (*peers)(void *ctx, int n, int rank);
	/* One log line (key=value text, no newline), level QUEUE_LOG_*. */
	void (*log)(void *ctx, int level, const char *line);
};
#define QUEUE_LOG_DEBUG 0
#define QUEUE_LOG_INFO 1
#define QUEUE_LOG_WARN 2
#define QUEUE_LOG_ERROR 3

/* Create the queue (no I/O yet). NULL with a message in err on a bad config.
 * Borrows cfg's strings and h for the queue's life. */
struct queue *queue_new(const struct queue_config *cfg, const struct queue_host *h, char *err,
			size_t errlen);
/* Connect (in the background) and start claiming. */
void queue_start(struct queue *q);
/* The host is done with j (every recipient has an outcome, or the host gave up
 * on it after queue_release). The queue commits it (results, retry, held, ack)
 * in the background and frees it afterwards. Recipients without an outcome are
 * put back in the queue (due at once, attempt not counted), without a result. */
void queue_job_done(struct queue *q, struct job *j);
/* The host holds n more (n < 0: fewer) bytes for j than its message, e.g. a
 * DKIM-signed copy: they count in max_inflight_bytes until given back (the
 * host gives them all back before queue_job_done; what it does not is given
 * back when the job is freed). Growth also moves the recent average size the
 * claims are sized by. */
void queue_job_bytes(struct queue *q, struct job *j, int64_t n);
/* Stop claiming (SIGTERM). Jobs in flight carry on; jobs that arrive from a
 * claim already on the wire are put back at once. */
void queue_stop(struct queue *q);
/* Shutdown deadline: commit every job the host still holds as it stands
 * (finished recipients get their results, the others go back to the queue).
 * The host must still call queue_job_done for each (or queue_free them). */
void queue_release(struct queue *q);
/* True when nothing is left to commit or claim (after queue_stop: safe to exit). */
bool queue_idle(const struct queue *q);
/* Disconnect and free everything, jobs the host still holds included (call at
 * exit, after the host has dropped its references). Uncommitted jobs stay
 * pending in Redis: the other processes claim them once this one's heartbeat
 * in J:procs is 10 s old (or after the visibility timeout). */
void queue_free(struct queue *q);

struct queue_stats {
	uint64_t claimed;    /* entries claimed (XREADGROUP, XAUTOCLAIM, XCLAIM) */
	uint64_t reclaimed;  /* of which by XAUTOCLAIM or from dead processes */
	uint64_t committed;  /* jobs committed */
	uint64_t duplicates; /* commits skipped: the entry was already finished */
	uint64_t results[JOB_NSTATUS]; /* results written, by status */
	unsigned inflight;   /* jobs claimed and not committed */
	uint64_t inflight_bytes; /* their bytes, as max_inflight_bytes counts them */
	long long depth;     /* XLEN jobs (-1 unknown), refreshed every second */
	long long retry;     /* ZCARD J:retry (-1 unknown) */
	long long held;      /* ZCARD J:held (-1 unknown); all three summed over the lanes */
	bool connected;      /* both connections ready */
	int peers;           /* processes sharing the queue, this one included (0 unknown) */
	int peer_rank;       /* this one's rank among them by consumer name, 0.. */
};
void queue_get_stats(const struct queue *q, struct queue_stats *st);

/* ---- synchronous administration (enqueue, held, release) ----
 * For short-lived commands only: these block. Never call them on a loop. */

struct queue_sync;
/* Connect (timeout 5 s), AUTH, SELECT. NULL with a message in err. */
struct queue_sync *queue_sync_open(const struct queue_config *cfg, char *err, size_t errlen);
/* Connect, AUTH and SELECT as the queue will, then disconnect (start-up check
 * of `mxsend run`; blocks up to 5 s). 0; -1 Redis not reachable (a passing
 * fault: the queue keeps retrying); -2 Redis refused the credentials or the
 * database (configuration). err never holds the password. */
int queue_sync_check(const struct queue_config *cfg, char *err, size_t errlen);
/* CONFIG GET name: its value into value (n bytes, cut to fit). 0, or -1 with
 * err set: CONFIG refused (an ACL user without it, a managed Redis that
 * renames or disables it), an unknown parameter, no reply. Start-up only. */
int queue_sync_config_get(struct queue_sync *s, const char *name, char *value, size_t n, char *err,
			  size_t errlen);
/* SCAN keys matching pattern and GET each (string values): fn(key, value) per
 * key. Returns how many, or -1 with err. Synchronous: start-up only. */
int queue_sync_scan(struct queue_sync *s, const char *pattern,
		    void (*fn)(void *arg, const char *key, const char *value), void *arg,
		    char *err, size_t errlen);
/* Fire-and-forget command on the running queue's command connection (errors
 * are logged). 0, or -ENOTCONN when Redis is not connected right now. */
int queue_command(struct queue *q, int argc, const char **argv);
void queue_sync_close(struct queue_sync *s);

/* One job to enqueue: fields and values (binary safe), nf pairs. */
struct queue_fields {
	const char *const *name;
	const char *const *value;
	const size_t *vlen;
	int n;
	const char *lane; /* the lane's name (see lane.h), NULL: `default` */
};
/* The index of lane `name` among cfg's lanes (`default` included), or -1
 * when there is no such lane. Pure. */
int queue_lane_find(const struct queue_config *cfg, const char *name);
/* XADD the job `count` times to its lane's stream (an unknown lane: -1
 * with err), pipelined. id_fn (if not NULL) gets each new
 * entry id in order. Returns the number added, or -1 (message in err). */
int queue_sync_enqueue(struct queue_sync *s, const struct queue_fields *f, long count,
		       void (*id_fn)(void *arg, const char *id), void *arg, char *err,
		       size_t errlen);

struct queue_held {
	const char *member; /* the held ID: ENTRY/DOMAIN */
	const char *lane;   /* its lane's name */
	const char *id, *job, *domain, *reason, *to;
	uint64_t held_at_ms;
	uint64_t since_ms;  /* first queued, if known (0 if not) */
};
/* Call fn for each held job, oldest first (lane by lane). Returns the count, or -1. */
int queue_sync_held(struct queue_sync *s, void (*fn)(void *arg, const struct queue_held *h),
		    void *arg, char *err, size_t errlen);
/* The suppression list (queue/suppress.h), fields already made by supp_key.
 * add: HSET each field to value (and ZADD J:suppress:exp when expires, epoch
 * s, is not 0; else ZREM), pipelined; returns how many. del: HDEL (and ZREM);
 * returns how many existed. get: HMGET, fn(arg, i, value or NULL, len) per
 * field in order; returns n. list: HSCAN the whole hash, fn per entry (field,
 * value); returns the count. All -1 with err on a Redis error. */
int queue_sync_suppress_add(struct queue_sync *s, const char *const *fields, int n,
			    const char *value, uint64_t expires, char *err, size_t errlen);
int queue_sync_suppress_del(struct queue_sync *s, const char *const *fields, int n, char *err,
			    size_t errlen);
int queue_sync_suppress_get(struct queue_sync *s, const char *const *fields, int n,
			    void (*fn)(void *arg, int i, const char *value, size_t len), void *arg,
			    char *err, size_t errlen);
int queue_sync_suppress_list(struct queue_sync *s,
			     void (*fn)(void *arg, const char *field, const char *value, size_t len),
			     void *arg, char *err, size_t errlen);

/* Put held jobs back in the queue: those of `domain` (if not NULL), else those
 * named in ids (held IDs or application ids). Their lifetime starts again.
 * Returns how many were released, or -1. */
int queue_sync_release(struct queue_sync *s, const char *domain, const char *const *ids, int nids,
		       char *err, size_t errlen);

/* How many entries to claim now (0: not yet). room: jobs max_inflight still
 * allows (claims on the wire counted); the claim waits for room for
 * min(batch, max_inflight / 4) jobs, and, with cap_bytes > 0, asks only for
 * what fits in cap_bytes - active_bytes at avg_bytes per job (before any job:
 * max_size), waiting for room for a quarter of what the cap holds. idle
 * (nothing claimed or in flight): at least 1, whatever the sizes. Pure. */
unsigned qclaim_count(unsigned room, unsigned batch, unsigned max_inflight, uint64_t cap_bytes,
		      uint64_t active_bytes, uint64_t avg_bytes, uint64_t max_size, bool idle);

/* Deficit round-robin: share n claims between nl lanes. Lanes with dry[i]
 * (their last read found fewer jobs than asked) get 1 each (in order, while
 * n lasts) and their deficit is reset; the rest is shared by the others in
 * proportion to weight[i], deficit[i] carrying what rounding owes each
 * (in units of 1/sum of their weights) from call to call, so over many calls
 * each gets its weight's share exactly. ask[i] gets each lane's count; the
 * asks sum to n (unless every lane is dry: then one each). Pure. */
void qlanes_split(unsigned n, int nl, const int *weight, const bool *dry, long *deficit,
		  unsigned *ask);

#endif
