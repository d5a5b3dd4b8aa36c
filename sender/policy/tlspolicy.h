/* tlspolicy.h: the TLS one delivery requires, decided in one place.
 *
 * Inputs, each stronger than the one before:
 *  - the recipient domain's rule ([domain] tls, on_tls_failure: config.h),
 *  - the job's own minimum (deliver_req.tls_min_level: a stricter level only),
 *  - the command line's override (send --tls: replaces the two above),
 *  - the domain's MTA-STS policy (RFC 8461: stspol.h), which only ever makes
 *    delivery stricter: even tls = none or --tls none never sends plaintext to
 *    an enforce domain. With enforce: verified TLS, and a TLS failure is
 *    temporary (RFC 8461 5.1): never plaintext, never a bounce. Which MX
 *    hosts it allows is sts_policy_allows (tlscache/sts.h).
 * DANE (RFC 7672) is decided per MX host, not per domain: tlspolicy_host
 * takes the domain's decision and the host's DANE outcome (policy/dane.h) and
 * gives what a session to that host requires; DANE overrides everything above,
 * MTA-STS included (RFC 8461 2).
 *
 * Pure: no I/O, no allocation; call it again as inputs arrive (the delivery
 * engine calls it at submit with the local inputs, then once the MX and the
 * MTA-STS answers are in). */
#ifndef SENDER_POLICY_TLSPOLICY_H
#define SENDER_POLICY_TLSPOLICY_H

#include "sender/config.h"

struct sts_policy;

struct tlspolicy {
	enum tls_level level;            /* what every session must reach */
	enum tls_fail_action on_failure; /* what a TLS failure does to the delivery */
	char name[16];                   /* job_outcome.policy: "none", "may",
					  * "encrypt", "verify", "dane-only", "sts-enforce",
					  * "sts-testing"; per host: "dane", "dane-unusable",
					  * "dane-fail" */
	bool usable;                     /* tlspolicy_host: the host may be used */
};

/* Decide into *tp from rule (borrowed for the call), job_min (enum tls_level,
 * -1 none), override (enum tls_level, -1 none) and sts (the MTA-STS policy in
 * force, NULL for none; "mode: testing" and "mode: none" change nothing but
 * the name of a testing one). Never fails. */
void tlspolicy_decide(struct tlspolicy *tp, const struct rule *rule, int job_min, int override,
		      const struct sts_policy *sts);

/* What a session to one MX host requires, into *out, from the domain's tp
 * and the host's DANE outcome dane (enum dane_mode, policy/dane.h):
 *  - usable TLSA records (DANE_AUTH): TLS authenticated by them (level verify,
 *    the session given the records), whatever tp says; a TLS failure is
 *    temporary and goes to the next MX host (never plaintext, never a bounce);
 *  - only unusable records (DANE_UNUSABLE): at least encrypt, the same
 *    failure handling (RFC 7672 3.1.3);
 *  - a failed TLSA lookup (DANE_FAIL), or no DANE under tls = dane-only: the
 *    host is not used (usable = false);
 *  - no DANE: tp as it is. Pure. */
void tlspolicy_host(struct tlspolicy *out, const struct tlspolicy *tp, int dane);

#endif
