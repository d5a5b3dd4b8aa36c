/* queue_int.h: shared by queue.c (connections, claims, periodic work),
 * queue_reclaim.c (crash recovery), queue_commit.c (results, retries, held
 * jobs) and queue_admin.c (URL, synchronous administration). Never included
 * outside queue/. */
#ifndef QUEUE_QUEUE_INT_H
#define QUEUE_QUEUE_INT_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "queue/cluster.h"
#include "queue/queue.h"

#define Q_BLOCK_MS 1000          /* XREADGROUP BLOCK: also bounds how long a stop waits */
#define Q_RESERVE_BLOCK_MS 50    /* ... of the first lane alone, the others held back
                                  * by its reserve (queue_lanes.c) */
#define Q_TICK_MS 250            /* periodic work and watchdog */
#define Q_REPLY_TIMEOUT_MS 15000 /* no reply for this long: drop the connection */
#define Q_CONNECT_TIMEOUT_MS 5000
#define Q_BACKOFF_MIN_MS 100
#define Q_BACKOFF_MAX_MS 5000
#define Q_CLUSTER_BACKOFF_MAX_MS 1000 /* cluster: the next node is tried after at most this */
#define Q_COMMIT_MAX_JOBS 64          /* jobs per commit script call */
#define Q_COMMIT_MAX_BYTES (4u << 20) /* bytes of arguments per call (at least one job) */
#define Q_COMMITS_OUT 16              /* commit calls on the wire */
#define Q_MOVE_LIMIT 500              /* due retries moved per call */
#define Q_HEARTBEAT_IDS 500           /* ids per XCLAIM JUSTID */
#define Q_STATS_MS 1000
#define Q_MOVE_MS 1000
#define Q_GC_MS 60000
#define Q_PEERS_MS 2000       /* process heartbeat (J:procs) */
#define Q_PEERS_GONE_MS 10000 /* silent this long: the process is gone */
#define Q_PEERS_SETTLE_MS (Q_PEERS_MS + 500) /* cfg.peers_settle: first claim after */
#define Q_DEAD_MS Q_PEERS_MS  /* look for dead processes' consumers this often */
#define Q_DEAD_MIN_IDLE_MS (Q_PEERS_GONE_MS / 2) /* their entries untouched this long */

enum qconn_state { QC_DOWN, QC_INIT, QC_READY };

/* One Redis connection: "cmd" (commits, reclaims, periodic work) or "claim"
 * (blocking XREADGROUP only). */
struct qconn {
	struct queue *q;
	const char *name;
	bool claim;
	redisAsyncContext *ac; /* NULL when down */
	enum qconn_state state;
	unsigned pending;  /* commands of this ac awaiting their reply */
	uint64_t progress; /* mono ms: last reply, or when pending became non-zero */
	uint64_t started;  /* mono ms: connect started */
	uint64_t ready_at;
	uint64_t backoff;
	bool failing; /* connects fail since the last READY (log at info after the first) */
	bool redirect; /* cluster: dropped to follow a route (cluster.c), not lost */
	unsigned hops; /* cluster: routes followed since the last READY */
	bool want_addr; /* waits for the sentinels' answer (queue/sentinel.c) */
	struct queue_timer *reconnect;
};

struct qjob {
	struct job job;
	struct qjob *prev, *next; /* q->jobs: every job not yet freed */
	struct qjob *cnext;       /* commit FIFO */
	uint64_t ms, seq;         /* parsed entry id (hash key) */
	bool rejected;  /* failed to decode: commit `rejected` results */
	bool with_host; /* the host holds it (until queue_job_done) */
	bool released;  /* commit as it stands (shutdown), host may still hold it */
	bool queued;    /* in the commit FIFO or in a commit on the wire */
	bool done;      /* committed: no longer counted in flight */
	uint64_t bytes; /* the entry's field bytes, in q->bytes_active until freed */
	uint32_t nres[JOB_NSTATUS]; /* results of the last commit built, by status */
};

/* One lane (queue.h "lanes"): its keys, and what the claims know of it. */
struct qlane {
	const char *name;
	int weight;
	char *stream, *retry, *held; /* J (or J:lane:NAME), ...:retry, ...:held */
	bool dry;          /* its last read found fewer jobs than it asked for */
	long deficit;      /* deficit round-robin (qlanes_split) */
	unsigned active;   /* its jobs claimed and not committed */
	uint64_t dead_left; /* entries still pending at dead consumers (last qscript_dead) */
	long long stat[3]; /* XLEN, ZCARD retry, ZCARD held being gathered (-1 unknown) */
	struct qjob *cq_head, *cq_tail; /* its jobs waiting to be committed (FIFO) */
};

/* A lane and a count in a callback's priv (n < 2^24, lane < QUEUE_LANES_MAX). */
#define QPRIV(lane, n) ((void *)(((uintptr_t)(lane) << 24) | (uintptr_t)(n)))
#define QPRIV_LANE(p) ((int)((uintptr_t)(p) >> 24))
#define QPRIV_N(p) ((unsigned)((uintptr_t)(p) & 0xffffffu))

struct queue {
	struct queue_config cfg;
	struct queue_host h;
	struct queue_addr addr;
	const char *username, *password;
	struct qlane lanes[QUEUE_LANES_MAX];
	int nlanes;
	unsigned claim_wait; /* replies still to come of the claim on the wire */
	unsigned claim_req0; /* of claim_req, asked of the first lane (its reserve) */
	unsigned reserve;    /* claims only the first lane may use (lanes > 1) */
	int own_lane, reclaim_lane; /* the lane qclaim_own / qreclaim are at */
	char *procs_key, *supp_key, *supp_exp_key;
	char sha_commit[41], sha_move[41], sha_gc[41], sha_peers[41], sha_dead[41];
	struct qconn cmd, clm;
	struct qsent *sent; /* NULL: no Sentinel (queue/sentinel.c) */
	struct queue_timer *tick, *flush;
	bool started, stopping, freeing, need_group;

	struct qjob *jobs;  /* all jobs (doubly linked) */
	unsigned nactive;   /* claimed, not committed */
	uint64_t bytes_active, bytes_avg; /* their bytes (until freed); recent average per job */
	uint64_t bytes_n;                 /* jobs in bytes_avg, up to 8 */
	unsigned claim_req; /* entries asked for by claims on the wire */
	bool claim_out, reclaim_out, peers_out, prune_out;
	unsigned move_out, stats_out, gc_out, dead_out; /* calls on the wire (one per lane) */
	/* suppression checks out (queue_suppress.c): no claim until they are
	 * answered and their jobs handed over, so the next claim's count sees
	 * what the host made of them (a DKIM signed copy: queue_job_bytes) */
	int supp_out;
	unsigned heartbeat_out;
	struct qjob **tab; /* open addressing by entry id, active jobs */
	size_t tabcap;

	unsigned cq_n; /* jobs in the lanes' commit FIFOs (qlane.cq_head) */
	unsigned commits_out;
	uint64_t commit_hold_until, commit_backoff;
	bool wait_short; /* the last WAIT saw fewer replicas than wait_replicas */

	uint64_t next_move, next_reclaim, next_heartbeat, next_stats, next_gc, next_peers, next_dead;
	uint64_t reclaim_ms, heartbeat_ms;
	uint64_t peers_since; /* mono ms of the first J:procs reply (0: none yet) */
	uint64_t dead_left;   /* entries still pending at dead consumers (the lanes' sum) */
	bool own_done;        /* our consumer's pending entries read back once (on_own) */
	char own_cursor[48];
	char reclaim_cursor[48];
	uint32_t rng;
	struct queue_stats st;
	/* Redis Cluster (cfg.cluster, cluster.c): addr is the node both
	 * connections go to; nodes the ones known (the URL's first) */
	unsigned slot; /* the queue's hash slot (its jobs key's) */
	struct queue_node nodes[QUEUE_CLUSTER_NODES];
	int nnodes;
};

/* queue.c */
void qlog(struct queue *q, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t qnow(const struct queue *q);
uint64_t qwall(void);
uint32_t qrand(struct queue *q);
/* Send a command; 0, or -1 when the connection is not ready or refuses it (the
 * callback will then never run). */
int qconn_send(struct qconn *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
	       const size_t *len);
/* First thing in every reply callback: bookkeeping; NULL reply = connection lost. */
struct qconn *qconn_reply(redisAsyncContext *ac, const void *reply);
/* A new async context to host:port (rediss://: TLS through the host's
 * connect_tls), not attached yet; NULL (or one with err set) on failure, the
 * reason in why. */
redisAsyncContext *qconn_dial(struct queue *q, const char *host, int port, char *why, size_t n);
/* Drop the connection (reconnects after back-off). */
void qconn_drop(struct qconn *c);
/* Connect now (nothing when connected or connecting). */
void qconn_connect(struct qconn *c);
/* The connection failed for why: reconnect after the back-off. */
void qconn_retry(struct qconn *c, bool was_ready, const char *why);
/* A commit came back: live = 1 written, 0 skipped (already finished). */
void qjob_committed(struct queue *q, struct qjob *qj, bool live);
void qkick_claim(struct queue *q);
void *qalloc(size_t n);
/* a + b, malloc'd: how key names are made from the jobs key (J:retry, ...). */
char *qstrcat(const char *a, const char *b);

/* Blocking Redis connection for the command-line tools (queue_admin.c): URL
 * (rediss://: over cfg->tls; or the master the sentinels name), username and
 * password (or the URL's: AUTH USER PASSWORD with a user, else AUTH
 * PASSWORD), database, 5 s timeouts. NULL with err set. */
struct redisContext;
struct redisReply;
struct redisContext *qsync_connect(const struct queue_config *cfg, char *err, size_t errlen);
/* Connect to host:port (TLS through tls->connect when use_tls), 5 s
 * timeouts; NULL with the reason in why. The one place a blocking command
 * reaches a server: AUTH and SELECT are the caller's. */
struct redisContext *qsync_dial(const struct queue_tls *tls, bool use_tls, const char *host, int port,
				char *why, size_t n);
/* 0 for a reply; -1 with err set for no reply or an error reply (freed). */
int qsync_reply_err(struct redisContext *c, struct redisReply *r, const char *what, char *err,
		    size_t errlen);

/* A synchronous connection (queue_sync_open). */
struct queue_sync {
	redisContext *c;
	const struct queue_config *cfg;
	struct qlane lanes[QUEUE_LANES_MAX]; /* keys only */
	int nlanes;
};

/* SCAN keys matching pattern and send cmd (GET, HGETALL...) for each: fn
 * gets every key whose reply is a string or a non-empty array (borrowed for
 * the call). Returns how many, or -1 with err. Synchronous (queue_admin.c). */
int qsync_scan_keys(struct queue_sync *s, const char *pattern, const char *cmd,
		    void (*fn)(void *arg, const char *key, const struct redisReply *value),
		    void *arg, char *err, size_t errlen);
unsigned qroom(const struct queue *q); /* claims that fit under max_inflight now */
/* Hand the entries of an XREADGROUP/XCLAIM reply list of lane `lane` to the
 * host (or commit their rejection); reclaimed: counted and logged as such. */
void qtake_entries(struct queue *q, const struct redisReply *list, int lane, bool reclaimed);
static inline int qconn_sendv(struct qconn *c, redisCallbackFn *fn, void *priv, int argc,
			      const char **argv)
{
	return qconn_send(c, fn, priv, argc, argv, NULL);
}

/* queue_lanes.c */
/* The lanes of cfg, in priority order, `default` included (last when cfg
 * does not name it): names, weights and keys (malloc'd; qlanes_fini frees
 * them). Returns how many. */
int qlanes_init(const struct queue_config *cfg, struct qlane *lanes);
void qlanes_fini(struct qlane *lanes, int n);
/* Send the claim for n entries (XREADGROUP on the claim connection): one
 * read blocking on every lane when all are dry, else one read per lane with
 * its share (qlanes_split). Sets claim_out and counts claim_req. */
void qlanes_claim(struct queue *q, unsigned n);
/* Ask for XLEN and the retry and held set sizes of every lane (cmd
 * connection); their sums go to q->st when the last reply is in. */
void qlanes_stats(struct queue *q);

/* queue_reclaim.c: crash recovery. Each sends one command (nothing when the
 * connection is not ready) and counts its n in q->claim_req. */
void qreclaim(struct queue *q);                      /* XAUTOCLAIM after visibility_timeout */
void qdead_reclaim(struct queue *q, unsigned n);     /* qscript_dead: up to n entries */
void qclaim_own(struct queue *q, unsigned n);        /* our own pending entries (at start) */

/* Hand a claimed, valid job to the host (or straight back to the queue when
 * stopping). queue.c. */
void qhand(struct queue *q, struct qjob *qj);

/* queue_suppress.c: the suppression list at claim time. The valid jobs of one
 * claim reply, jobs[0..n): handed to the host (qhand) after one HMGET of
 * J:suppress for all their recipients; recipients on the list get a
 * `suppressed` outcome and leave the delivery; a job left with none is
 * committed without the host. Suppression off: handed at once. Takes
 * nothing from jobs (the array is the caller's). */
void qsupp_check(struct queue *q, struct qjob **jobs, int n);
/* Delete expired entries (every Q_GC_MS, on the cmd connection). */
void qsupp_prune(struct queue *q);
/* Automatic entries: the commit's arguments for recipient idx of j, bounced
 * with a class in cfg.supp_auto (5xx only). Fills field/value; returns false
 * when it adds none. */
bool qsupp_auto(const struct queue *q, const struct job *j, int idx, char *field, size_t fieldlen,
		char *value, size_t valuelen, uint64_t *expires);

/* cluster.c (cfg.cluster only). init: the slot and the first node (at
 * queue_new). lost: a connection was lost or refused (not redirected):
 * addr moves to the next node known. slots: the CLUSTER SLOTS reply of an
 * initialising connection; true when this node owns the slot, else the
 * connection is dropped towards the owner (or the next node). error: an
 * error reply; a MOVED of the queue's slot drops the connection towards
 * its node. */
int qcluster_init(struct queue *q, char *err, size_t errlen); /* 0, or -1 (bad cluster_nodes) */
void qcluster_lost(struct queue *q, struct qconn *c);
bool qcluster_slots(struct qconn *c, const struct redisReply *r);
void qcluster_error(struct qconn *c, const struct redisReply *r);
/* Synchronous: move c (connected to node at) to the master of key's slot;
 * c or its replacement, or NULL with err (c freed). */
struct redisContext *qcluster_sync_route(struct redisContext *c, const struct queue_node *at,
					 const char *key, const struct queue_config *qc, char *err,
					 size_t errlen);
/* Synchronous, cluster: connect to qc's URL node (else to the first of
 * qc->cluster_nodes that answers), then qcluster_sync_route for key. */
struct redisContext *qcluster_sync_open(const struct queue_config *qc, const char *key, char *err,
					size_t errlen);
/* qsync_connect to node at (NULL: the URL's host and port). */
struct redisContext *qsync_connect_at(const struct queue_config *qc, const struct queue_node *at,
				      char *err, size_t errlen);
/* queue/sentinel.c: where the master is, when sentinels say (README
 * "Sentinel"). The ask runs on the host's loop (hiredis async, one sentinel
 * after the other, each within QS_ASK_MS); a SUBSCRIBE +switch-master
 * connection to one sentinel (from the first answer on) says at once when
 * they fail over. */
struct qsent;
/* NULL with err set on a bad sentinel list or master name. */
struct qsent *qsent_new(struct queue *q, char *err, size_t errlen);
void qsent_free(struct qsent *s);  /* any callback it causes does nothing */
/* Before c connects: true with q->addr's host and port set to the master the
 * sentinels named; false when they must be asked (c->want_addr set: c is
 * connected, or its retry armed, when the ask ends). */
bool qsent_addr(struct qsent *s, struct qconn *c);
/* The master failed us (connection lost, READONLY, ROLE not master): the
 * next connect asks the sentinels again; another one first with `rotate` (the
 * address the last one gave never became a working connection). */
void qsent_stale(struct qsent *s, bool rotate);
/* The ROLE reply of a new connection: true when it is the master (or ROLE is
 * refused to our user: READONLY still tells). Logs why not. */
bool qsent_role_ok(struct queue *q, const struct qconn *c, const redisReply *r);
/* Synchronous ask (short-lived commands, start-up): the first valid answer of
 * the sentinels from index `from` on: the master's address into a->host,
 * a->port; returns the index of the sentinel that gave it. -1 when none did
 * (err says why; from past the last: err untouched). Blocks up to 1 s per
 * sentinel. */
int qsent_ask_sync(const struct queue_config *cfg, int from, struct queue_addr *a, char *err,
		   size_t errlen);

/* queue_commit.c */
void qcommit_enqueue(struct queue *q, struct qjob *qj);
void qcommit_flush(struct queue *q);
extern const char qscript_commit[], qscript_move[], qscript_gc[], qscript_peers[],
	qscript_release[], qscript_dead[];

#endif
