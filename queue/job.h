/* job.h: one delivery job, decoded from a Redis stream entry, and the
 * encoding of its results (pure: no I/O, no Redis, no loop).
 *
 * A job entry is a list of field/value pairs (DESIGN.md "Job"):
 *   from (required, "" = null sender), to (required, comma-separated),
 *   data (required), id, meta, tls (encrypt|verify), expires (seconds), dkim.
 * Fields the queue adds when it puts a job back (retry, release):
 *   job (the original stream entry id), attempt (attempts already made),
 *   since (wall-clock ms when the job was first queued). Unknown fields are
 *   ignored; a field given twice is an error.
 *
 * job_decode() copies everything it keeps: the caller's buffers (hiredis
 * replies) may go away as soon as it returns. A job that cannot be parsed gets
 * a reason ("missing field: from", "bad address \"x\": missing @", ...) and, if
 * its `to` field could be split, one recipient per item so that each gets a
 * `rejected` result. Recipients are deduplicated and grouped by domain, so a
 * domain's recipients are contiguous (one SMTP transaction per domain).
 *
 * Limits: `id` and `meta` are capped (job_limits); a larger one rejects the job
 * ("id exceeds 1024 bytes") and is cut to the cap in its rejected results, so
 * an oversized job cannot grow the results stream. `data` may hold no NUL byte
 * and no line over 998 octets (job_data_check). A recipient that is an address
 * literal ("u@[192.0.2.1]") is refused: mxsend delivers by MX only.
 *
 * Results (DESIGN.md "Result") are encoded into the JOB_RESULT_NFIELDS values of one stream
 * entry by job_result_values(); names in job_result_names. What a result
 * echoes: `id` and `meta` byte for byte (the application's own data, within
 * the caps; a control byte in either rejects the job, whose result then
 * carries it escaped); `rcpt` as written when the address is valid (it then holds no
 * control byte), escaped (job_escape) in a rejected result; the outcome's
 * text fields (reply, dsn, mx, ...) escaped, since a remote server wrote
 * them. */
#ifndef QUEUE_JOB_H
#define QUEUE_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/outcome.h"

/* Per-job TLS level (the job's `tls` field). */
enum job_tls { JOB_TLS_DEFAULT, JOB_TLS_ENCRYPT, JOB_TLS_VERIFY };
const char *job_tls_name(enum job_tls t); /* "", "encrypt", "verify" */


#define JOB_MAX_RCPT 10000     /* recipients per job; more is rejected */
#define JOB_ADDR_MAX 512       /* normalized address, with NUL */
#define JOB_REASON_MAX 256
#define JOB_MAX_EXPIRES 315360000u /* 10 years, seconds */
#define JOB_LINE_MAX 998           /* octets per line, CRLF excluded (RFC 5322 2.1.1) */
#define JOB_ID_MAX_DEFAULT 1024    /* `id` bytes (job_limits.max_id 0) */
#define JOB_META_MAX_DEFAULT 4096  /* `meta` bytes (job_limits.max_meta 0) */

/* Address validator supplied by the caller (queue/ may not include sender/).
 * addr: one trimmed recipient or sender, NUL-terminated. On success returns 0
 * and writes the normalized "local@domain" (domain lowercased, no <>) into norm;
 * on failure returns -1 and points *err at a static reason ("missing @"). */
typedef int job_addr_fn(const char *addr, char *norm, size_t normlen, const char **err);

/* List splitter supplied by the caller (same contract as msg_split_list):
 * calls fn for each trimmed non-empty item of the comma-separated list;
 * returns the number of items, or -1 if fn returned non-zero. */
typedef int job_split_fn(const char *list, int (*fn)(void *arg, const char *item, size_t len),
			 void *arg);

struct job_limits {
	uint64_t max_size;    /* max data bytes; 0 = unlimited */
	job_addr_fn *addr_ok; /* required */
	job_split_fn *split;  /* required */
	size_t max_id;        /* max `id` bytes; 0 = JOB_ID_MAX_DEFAULT */
	size_t max_meta;      /* max `meta` bytes; 0 = JOB_META_MAX_DEFAULT */
	/* the configured egress pools: a job's `pool` field must name one of
	 * them, else the job is rejected ("unknown pool \"x\"") */
	const char *const *pools;
	int npools;
};

struct job_rcpt {
	const char *addr;   /* as written in `to` (trimmed): echoed in results */
	const char *domain; /* lowercase domain (points into the normalized form) */
	int dom;            /* index in job.domains */
	/* outcome (outcome.h), kept by job_set_outcome */
	enum job_status status;
	int code, port;
	uint32_t elapsed_ms;
	bool verified, resumed, reused;
	uint64_t not_before_ms; /* outcome.not_before_ms: a shaping deferral */
	char *text; /* heap: dsn\0reply\0mx\0ip\0tls\0cipher\0policy\0source\0shaped\0, or NULL */
};

struct job_domain {
	const char *name;         /* lowercase */
	int first, n;             /* rcpts[first .. first+n) */
	const char *const *addrs; /* n normalized addresses (for RCPT TO), borrowed from the job */
};

struct job {
	char entry[48];      /* this claim's stream entry id */
	const char *job_id;  /* original entry id: field `job`, else entry */
	const char *id;      /* application id: field `id`, else job_id */
	const char *from;    /* "" = null sender (normalized if not empty) */
	const char *meta;    /* "" if absent */
	const char *data;    /* message bytes (may hold NULs), len bytes */
	size_t len;
	enum job_tls tls;
	bool exempt_tlsrpt;  /* field exempt=tlsrpt: ASKS for no MTA-STS; honoured only
	                      * when exempt_mac verifies (sender/exempt.h) */
	char exempt_mac[65]; /* field exempt_mac: lowercase hex, "" if absent or malformed */
	const char *dkim;    /* field dkim: a signing domain or "no"; NULL if absent */
	char dkim_result[600]; /* result field dkim: "d=... s=...[; ...]", "" = "none"
	                      * (set by the sender when it signs, sender/signer.h) */
	const char *pool;    /* field `pool`: the egress pool that sends it, "" if absent */
	bool has_expires;
	uint32_t expires_s;  /* field `expires` when has_expires */
	int attempt;         /* attempts already made (field `attempt`, else 0) */
	uint64_t since_ms;   /* wall ms first queued (field `since`, else the entry id's time) */
	int lane;            /* the lane it was claimed from (queue.h "lanes"; 0 =
	                      * highest priority); set by the queue, not decoded */
	int nrcpt;
	struct job_rcpt *rcpts;  /* grouped by domain (valid jobs) */
	const char **norm;       /* nrcpt normalized addresses, parallel to rcpts */
	int ndomain;
	struct job_domain *domains;
	char reason[JOB_REASON_MAX]; /* why the job is rejected, "" if valid */
	/* private: the arena holding the strings above, and data when adopted */
	void *arena;
	char *data_owned;
};

/* Decode a stream entry. kv holds nkv strings (field, value, field, value...),
 * kvlen their lengths (binary safe). Returns 0 for a valid job, -1 for a
 * rejected one (j->reason says why; j->nrcpt items, possibly 0, name the
 * recipients for the rejected results). Either way j must be job_fini'd.
 * Never calls back except lim->addr_ok. */
int job_decode(struct job *j, const char *entry_id, size_t nkv, const char *const *kv,
	       const size_t *kvlen, const struct job_limits *lim);
/* job_decode, adopting the message bytes instead of copying them: adopt holds
 * nkv pointers, each NULL or kv[i] itself as a malloc'd buffer with a NUL at
 * kvlen[i] (a hiredis reply string). When the data value is one of them, the
 * job takes it (freed by job_fini) and sets that slot to NULL. */
int job_decode_adopt(struct job *j, const char *entry_id, size_t nkv, const char *const *kv,
		     const size_t *kvlen, char **adopt, const struct job_limits *lim);
/* Is data[0..len) content SMTP can carry as given? Refuses a NUL byte and a
 * line over JOB_LINE_MAX octets (RFC 5322 2.1.1, 2.3; RFC 5321 4.5.3.1.6),
 * whichever comes first. Lines are counted as msg_wire_prepare makes them (a
 * line ends at CRLF, LF or a lone CR); the line number given is 1-based and
 * counts LF-terminated lines, as an editor shows them. Returns 0, or -1 with
 * "NUL byte at line 3" / "line 7 exceeds 998 octets" in why (size whylen).
 * One memchr() pass for LF plus one for NUL; pure, no allocation. */
int job_data_check(const char *data, size_t len, char *why, size_t whylen);

/* Free what job_decode allocated (outcomes included). j itself is the caller's. */
void job_fini(struct job *j);

/* Record recipient idx's outcome (packed and escaped into rcpts[idx]; a
 * second call replaces the first). */
void job_set_outcome(struct job *j, int idx, const struct job_outcome *o);
/* Recipient idx's outcome texts as kept (escaped): "" when none. Borrowed
 * until the next job_set_outcome of idx. */
void job_rcpt_texts(const struct job *j, int idx, const char **dsn, const char **reply,
		    const char **cls);
/* True when every recipient has an outcome. */
bool job_complete(const struct job *j);
/* Take the recipients that already have an outcome (suppressed at claim
 * time) out of the delivery domains: within each domain the undecided ones
 * move to the front (rcpts and norm together, so domains[d].addrs still lists
 * exactly the domain's n undecided addresses), and a domain left with none is
 * dropped from j->domains. Results keep every recipient. Returns the
 * undecided count. Pure. */
int job_prune_decided(struct job *j);

/* v in decimal, NUL-terminated, into out (at least 21 bytes); returns the
 * length. snprintf's "%llu" costs ~10x as much, felt where every result
 * written to Redis carries several numbers. */
size_t u64_dec(char *out, uint64_t v);

/* Length of the well-formed UTF-8 sequence of 2-4 bytes at p (n bytes
 * readable; RFC 3629 4: no overlongs, no surrogates, nothing above U+10FFFF),
 * or 0. Pure; also sender/msg.c's, for RFC 6531 addresses. */
size_t job_utf8_seq(const unsigned char *p, size_t n);

/* Escape s[0..len) for a log line, a terminal or a result field: bytes
 * 0x00-0x1f and 0x7f become \r \n \t or \xNN, a backslash becomes \\, bytes
 * that are not well-formed UTF-8 and the C1 controls U+0080..U+009F become
 * \xNN per byte; with JOB_ESC_QUOTED a double quote becomes \"; with
 * JOB_ESC_KEEP_BACKSLASH a backslash stays as it is (for text that may already
 * hold escapes: the log's last-resort pass). Writes at most outlen-1 bytes and a
 * NUL (never half an escape or half a UTF-8 sequence) when out is not NULL;
 * returns the full escaped length (without the NUL), so out == NULL sizes it. */
#define JOB_ESC_QUOTED (1u << 0)
#define JOB_ESC_KEEP_BACKSLASH (1u << 1)
size_t job_escape(char *out, size_t outlen, const char *s, size_t len, unsigned flags);
/* True when job_escape would change s[0..len). */
bool job_escape_needed(const char *s, size_t len, unsigned flags);

/* Parse a stream entry id "MS-SEQ". 0 or -1. */
int job_entry_id_parse(const char *s, uint64_t *ms, uint64_t *seq);

/* ---- results ---- */

#define JOB_RESULT_NFIELDS 23
/* "id","job","rcpt","status","code","dsn","reply","mx","ip","port","tls",
 * "cipher","verified","policy","resumed","reused","attempt","elapsed_ms","meta",
 * "source" (egress source "name[address]", "-" without one), "dkim" ("d=... s=...[; ...]"
 * per signature, "none"), "class" (bounce class of a bounced, deferred or
 * expired result, sender/bclass.h; "" for the other statuses), "shaped" (the
 * shaping rule and state that delayed or deferred it, "-" none: always the
 * last field) */
extern const char *const job_result_names[JOB_RESULT_NFIELDS];
#define JOB_RESULT_SCRATCH 96

/* The values of one result entry for recipient idx (-1: the job-wide rejected
 * result, rcpt ""), with status st and attempt number `attempt` (1 = first).
 * For JOB_REJECTED the reply is j->reason. The recipient's outcome supplies
 * code, dsn, reply, mx, ...; without one those are 0/"". Pointers borrow from j
 * and from scratch (numbers), valid while both are. */
void job_result_values(const struct job *j, int idx, enum job_status st, int attempt,
		       const char *val[JOB_RESULT_NFIELDS], size_t len[JOB_RESULT_NFIELDS],
		       char scratch[JOB_RESULT_SCRATCH]);

/* The raw addresses of recipients idx[0..n) joined with ","; malloc'd (NULL
 * on OOM). Used for the `to` field of a job put back in the queue. */
char *job_join_rcpts(const struct job *j, const int *idx, int n);

#endif
