/* signer.h: DKIM-signing a job's message with the configured keys
 * ([dkim DOMAIN] sections, config.h), once per job, in the wire form.
 *
 * Which keys sign: the job's `dkim` field names one configured domain (else the
 * job is rejected), or "no" (none); without it, the domain of the From: header
 * (exact, then its parents whose section says subdomains = yes). [mxsend]
 * dkim_extra adds its key to every message signed or not by the first (a
 * platform signature), unless dkim = no. No key: sent unsigned, or rejected with
 * [mxsend] dkim_require = yes (which dkim = no does not escape).
 *
 * The message is signed after mxsend's own change to it (msg_wire_prepare's
 * line-ending normalisation, no dot-stuffing) and the signatures go in front
 * (deliver_req.pre), so the bytes signed are the bytes the receiver gets, on
 * DATA and BDAT alike. The message itself is not copied when it already was
 * the wire form (most are): the signatures are sent before the caller's bytes.
 * Pure apart from the keys (loaded by config_load). */
#ifndef SENDER_SIGNER_H
#define SENDER_SIGNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/config.h"
#include "sender/msg.h"

#define SIGNER_RESULT_MAX 600 /* "d=example.net s=s2026; d=platform.example s=p1" */

/* A signed message: wire, the message prepared for the wire as deliver needs
 * it (hand &wire to deliver_req.wire: not prepared again), the DKIM-Signature
 * fields in wire.pre (pre, owned here). wire.data borrows the caller's raw
 * bytes when they already were the wire form (no copy: raw must then outlive
 * the delivery, as a job's data does), else it is the normalised copy (owned).
 * Unsigned: pre NULL, nothing held. */
struct signed_msg {
	char *pre;
	struct msg_wire wire;
};
/* What the signed message adds to the bytes held: pre and any copy. */
size_t signed_msg_bytes(const struct signed_msg *m);
void signed_msg_free(struct signed_msg *m);

/* Sign raw[0..len) as c says. want: the job's `dkim` field, or NULL. t: signing
 * time (epoch s). Returns 0 with *out filled (out->pre NULL: send raw as it
 * is, unsigned), and result filled ("d=.. s=..[; ...]" or "none"); or -1 when
 * the job must be rejected, the reason in err (*out empty). */
int signer_sign(const struct config *c, const char *raw, size_t len, const char *want, int64_t t,
		struct signed_msg *out, char result[SIGNER_RESULT_MAX], char *err, size_t errlen);

/* signer_sign in two steps, for `mxsend run` (sign_pool.h): signer_plan is
 * the cheap part (which keys: the want field, the From: domain, dkim_extra,
 * dkim_require), on the feeder; signer_apply the costly one (the hashes and
 * signatures), on any thread (the keys are only read). signer_plan returns 1
 * with p filled (sign with signer_apply), 0 (unsigned: result "none"), or -1
 * (reject, err). signer_apply returns 0 with *out (signed) and result, or -1
 * with err (the job is rejected). */
struct signer_plan {
	const struct dkim_conf *use[2]; /* the From:/want key (or NULL), the extra one */
};
int signer_plan(const struct config *c, const char *raw, size_t len, const char *want,
		struct signer_plan *p, char result[SIGNER_RESULT_MAX], char *err, size_t errlen);
int signer_apply(const struct signer_plan *p, const char *raw, size_t len, int64_t t,
		 struct signed_msg *out, char result[SIGNER_RESULT_MAX], char *err, size_t errlen);

/* Complete a [dkim DOMAIN] section as config_load parsed it: the header and
 * oversign lists (RFC 6376 5.4.1's defaults when unset; from required), then
 * the key (dkim_key_load: start-up only, reads the file). 0, or -1 with err,
 * *key_err true when the key file is at fault. signer_conf_fini frees what the
 * section holds (its strings, lists and key), not d itself. */
int signer_conf_finish(struct dkim_conf *d, bool *key_err, char *err, size_t errlen);
void signer_conf_fini(struct dkim_conf *d);

/* The domain of the first From: header field's address in raw (lowercase, at
 * most n-1 bytes), or -1 when none is found. Exposed for the tests. */
int signer_from_domain(const char *raw, size_t len, char *dom, size_t n);

#endif
