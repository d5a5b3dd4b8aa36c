/* tls_event.h: the one record of a TLS session attempt, as the delivery
 * engine sees it and TLSRPT counts it (RFC 8460 4.3): which policy applied to
 * the recipient domain, which MX host and address, and how the session went.
 * Produced by sender/deliver.c, relayed between threads by value
 * (sender/workers.c), counted by tlscache/tlsrpt.h's tlsrpt_event_cmds
 * (queue/tlsrpt_store.h sends the commands). Plain data: no pointers, so a
 * copy is a memcpy.
 *
 * The sizes are the limits: a longer value is cut by whoever fills the field.
 * A domain, type, id, mode or result that does not fit the counters' key
 * scheme makes tlsrpt_event_cmds refuse the event (-EINVAL).
 * A DANE host (RFC 7672, RFC 8460 4.2 "tlsa"): policy_type "tlsa", policy_id a
 * hash of its records (hex), its records ("3 1 1 ab..", comma-separated) in
 * policy_mx. */
#ifndef TLSCACHE_TLS_EVENT_H
#define TLSCACHE_TLS_EVENT_H

#include <stdint.h>

struct tls_event {
	char policy_domain[256]; /* the recipient domain (required) */
	char policy_type[25];    /* "sts", "tlsa" or "no-policy-found" ("" = no-policy-found) */
	char policy_id[41];      /* MTA-STS policy id, "" without one */
	char policy_mode[17];    /* "enforce", "testing", "none", "" */
	char policy_mx[512];     /* the policy's mx patterns, comma-joined ("" without) */
	uint32_t max_age;        /* policy max_age (policy-string) */
	char mx[256];            /* receiving MX host ("" for a policy failure) */
	char ip[64];             /* its address */
	char sending_ip[64];     /* our address ("" unknown) */
	char result[49];         /* "" on success, else an RFC 8460 4.3 result type:
				  * starttls-not-supported, certificate-host-mismatch,
				  * certificate-expired, certificate-not-trusted,
				  * validation-failure, sts-policy-fetch-error,
				  * sts-policy-invalid, sts-webpki-invalid,
				  * tlsa-invalid, dnssec-invalid, dane-required */
	char detail[200];        /* failure reason text */
	uint64_t when_ms;        /* wall clock: picks the UTC day (0 = now) */
};

#endif
