/* outcome.h: what happened to one recipient, in ONE shape from the delivery
 * engine to the results stream. Here, in queue/, because both ends see it:
 * sender/ may include queue/, queue/ never includes sender/.
 *
 * The road of an outcome (a job followed from Redis to the wire and back):
 *   smtp.c    struct smtp_result: the SMTP session's reply to one recipient in
 *             one attempt (class, code, text, and `final`: whether this attempt
 *             decided it). Not yet an outcome: an attempt that did not decide
 *             is tried on the next address, and a session that failed gives its
 *             reason (smtp_status.why) to every recipient still open.
 *   deliver.c report() makes the job_outcome, once per recipient: the reply
 *             that decided it plus the MX, address, TLS and policy of the
 *             connection, and logs it (evt=delivery, the one line per
 *             recipient). deliver_req.rcpt_done borrows it.
 *   workers.c copies it by value into the message that crosses from the
 *             worker's thread to the feeder's (the one copy: the worker's
 *             outcome is gone when the feeder reads it).
 *   job.c     job_set_outcome keeps it in the job, packed and escaped (the
 *             strings only as long as they are: a 10,000-recipient job would
 *             hold 10 MB of these fixed buffers), for job_result_values to
 *             write as the result entry the commit script adds.
 * job_status_name is defined in job.c. */
#ifndef QUEUE_OUTCOME_H
#define QUEUE_OUTCOME_H

#include <stdbool.h>
#include <stdint.h>

/* Per-recipient status, as written in results ("delivered", ...). */
enum job_status {
	JOB_PENDING, /* no outcome yet */
	JOB_DELIVERED,
	JOB_BOUNCED,
	JOB_DEFERRED,
	JOB_EXPIRED,
	JOB_REJECTED,
	JOB_HELD,
	JOB_SUPPRESSED, /* on the suppression list (queue/suppress.h): nothing sent */
	JOB_NSTATUS
};
/* As written in results: "delivered", "bounced", ... */
const char *job_status_name(enum job_status s);

/* The outcome of one recipient. Strings are NUL-terminated, "" if unknown. */
struct job_outcome {
	enum job_status status; /* the engine reports DELIVERED, BOUNCED, DEFERRED or HELD */
	int code;           /* SMTP reply code, or a synthesized one (DNS: 550/451, TLS: 451...) */
	char dsn[16];       /* "2.0.0", "5.1.10", ... */
	char reply[512];    /* reply text (one line; multi-line replies joined with ' ') */
	char mx[256];       /* MX host last tried, "" if none */
	char ip[64];        /* its address, "" if none */
	int port;
	char tls[16];       /* "none", "TLSv1.2", "TLSv1.3" */
	char cipher[64];    /* "" if none */
	bool verified;
	char policy[16];    /* "none","may","encrypt","verify","dane-only","sts-enforce",
	                     * "sts-testing"; per MX host "dane","dane-unusable","dane-fail" */
	bool resumed;       /* TLS session resumed */
	bool reused;        /* SMTP connection reused from the pool */
	uint32_t elapsed_ms;
	char source[96];    /* egress source "name[address]", "" without sources */
	char cls[24];       /* bounce class of a BOUNCED or DEFERRED outcome
	                     * (sender/bclass.h names), "" otherwise */
	/* Shaping (sender/shaping.h): the rule and state that delayed or deferred
	 * this recipient, "" none (result field `shaped`); for a DEFERRED outcome
	 * that shaping decided without an attempt (a suspension, or a rate wait
	 * past [shaping] max_wait), not_before_ms: the wall-clock ms it may be
	 * tried again; such a deferral uses up no retry and never expires the
	 * job (queue_commit.c). */
	char shaped[160];
	uint64_t not_before_ms;
};

#endif
