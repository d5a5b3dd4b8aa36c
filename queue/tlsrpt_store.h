/* tlsrpt_store.h: the Redis side of SMTP TLS Reporting (RFC 8460): counting
 * TLS session attempts and reading a day's counters back, and the claims
 * that keep a report from being sent twice. The keys, fields and commands
 * are tlscache/tlsrpt.h's (its key scheme); this module only carries them.
 *
 * Two entry points: tlsrpt_queue_event (the async queue's command
 * connection, `mxsend run`) and struct tlsrpt_store (synchronous hiredis,
 * short-lived commands only: blocks, 5 s timeouts, never on a loop). */
#ifndef QUEUE_TLSRPT_STORE_H
#define QUEUE_TLSRPT_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "tlscache/tlsrpt.h"

struct queue;
struct queue_config;

/* Count ev through the queue's command connection (async, fire-and-forget,
 * wrapped in MULTI/EXEC so an event counts whole or not at all). For the
 * feeder thread of `mxsend run` (the queue's loop thread). Never calls back
 * into the host. prefix NULL = TLSRPT_PREFIX. Returns 0; -EINVAL (an event
 * tlsrpt_event_cmds refuses); -ENOTCONN when Redis is not connected (the
 * event is not counted). A reply error is logged. */
int tlsrpt_queue_event(struct queue *q, const struct tls_event *ev, const char *prefix);

struct tlsrpt_store;
/* Connect to qc's Redis as queue_sync_open does (url or sentinels, AUTH,
 * SELECT; only those fields of qc are used, borrowed for the call); on a
 * cluster (qc->cluster), to the master of the prefix's hash slot (every key
 * of the scheme shares it when prefix carries a hash tag). prefix NULL =
 * TLSRPT_PREFIX (copied). NULL with a message in err. */
struct tlsrpt_store *tlsrpt_store_open(const struct queue_config *qc, const char *prefix, char *err,
				       size_t errlen);
void tlsrpt_store_close(struct tlsrpt_store *s);
/* Count one event now (pipelined, waits for the replies). 0 or -1. */
int tlsrpt_store_record(struct tlsrpt_store *s, const struct tls_event *ev, char *err,
			size_t errlen);
/* The domains with counters on day: *out is a malloc'd array of malloc'd
 * strings, sorted (free with tlsrpt_strv_free). Returns the count, or -1. */
int tlsrpt_store_domains(struct tlsrpt_store *s, const char *day, char ***out, char *err,
			 size_t errlen);
void tlsrpt_strv_free(char **v, int n);
/* Load (and finish) a day's counters for domain into c (tlsrpt_counts_fini
 * it afterwards). 0 (c->npol may be 0), or -1. */
int tlsrpt_store_load(struct tlsrpt_store *s, const char *day, const char *domain,
		      struct tlsrpt_counts *c, char *err, size_t errlen);
/* Claim rua for sending the report of (day, domain), atomically. Returns 1
 * (claimed: send, then tlsrpt_store_finish), 0 (already sent, or being sent
 * by another run; its state "sent ID TIME" is copied into state), or -1. */
int tlsrpt_store_claim(struct tlsrpt_store *s, const char *day, const char *domain,
		       const char *rua, const char *report_id, char *state, size_t statelen,
		       char *err, size_t errlen);
/* After a claim: sent -> mark rua sent; !sent -> drop the claim (a later run
 * tries again). 0 or -1. */
int tlsrpt_store_finish(struct tlsrpt_store *s, const char *day, const char *domain,
			const char *rua, const char *report_id, bool sent, char *err,
			size_t errlen);

#endif
