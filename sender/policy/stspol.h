/* stspol.h: MTA-STS policy discovery for one delivery engine (RFC 8461).
 *
 * stspol_lookup(domain) resolves _mta-sts.DOMAIN TXT, consults the policy
 * cache (tlscache/sts.h), fetches https://mta-sts.DOMAIN/.well-known/mta-sts.txt
 * when needed (one fetch per domain at a time; concurrent lookups wait for
 * it), refreshes due policies in the background, and answers with the policy
 * to apply (or none). A failed fetch keeps a cached policy (and is not retried
 * for that id for 5 minutes); "mode: none" replaces a cached policy at once.
 * Every fetched policy is handed to on_store (for Redis persistence).
 * Callbacks run later on the loop, never inside stspol_lookup. */
#ifndef SENDER_POLICY_STSPOL_H
#define SENDER_POLICY_STSPOL_H

#include <stdint.h>

#include "sender/policy/https.h"

struct loop;
struct dns;
struct tlscache;
struct sts_policy;
struct stspol;

struct stspol_answer {
	const struct sts_policy *pol; /* NULL: no policy applies (borrowed for the callback) */
	const char *fail;      /* RFC 8460 result type of a failed discovery/fetch
	                        * (sts-policy-fetch-error, sts-policy-invalid,
	                        * sts-webpki-invalid), or NULL */
	const char *detail;    /* why, for logs and TLSRPT */
};
typedef void stspol_fn(void *arg, const struct stspol_answer *a);
/* A policy fetched for domain, in sts_policy_encode form (persist it). */
typedef void stspol_store_fn(void *arg, const char *domain, const char *encoded);

struct metrics_shard;

struct stspol_opts {
	int https_port;        /* 0 = 443 (tests use a private port) */
	uint32_t timeout_ms;   /* per fetch, default 20 s */
	unsigned cache_max;
	stspol_store_fn *on_store;
	void *store_arg;
	struct metrics_shard *metrics; /* policy fetches counted here (NULL: not counted) */
};

struct stspol *stspol_new(struct loop *l, struct dns *d, struct tlscache *tc,
			  const struct stspol_opts *o);
/* Abandon pending lookups (no callbacks) and free. */
void stspol_free(struct stspol *sp);
void stspol_lookup(struct stspol *sp, const char *domain, stspol_fn *cb, void *arg);
/* The policy fetch stspol_lookup makes, for callers that want the raw answer
 * (`mxsend check`): GET https://mta-sts.DOMAIN[:https_port]/.well-known/mta-sts.txt,
 * WebPKI-verified, text/plain, at most STS_POLICY_MAX bytes, within
 * timeout_ms (0: https.h's default). https_port 0 = 443. Returns and calls
 * back as https_request does (cb never before this returns). */
struct https_req *stspol_fetch(struct loop *l, struct dns *d, struct tlscache *tc,
			      const char *domain, int https_port, uint32_t timeout_ms,
			      https_done_fn *cb, void *arg);
/* Seed the cache with a policy persisted earlier (sts_policy_encode form). */
void stspol_load(struct stspol *sp, const char *domain, const char *encoded);

#endif
