/* sts.h: MTA-STS (RFC 8461) and TLSRPT (RFC 8460) building blocks. Pure: no
 * I/O, no loop, no clock (callers pass `now`, wall-clock seconds).
 *
 * - sts_txt_parse: the TXT set of _mta-sts.DOMAIN -> policy id, or none.
 * - sts_policy_parse: the body of https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
 * - sts_mx_match: does an MX host match a policy "mx" pattern.
 * - struct sts_cache: policies by domain, in memory, bounded (LRU), with the
 *   decision a sender makes before delivering (sts_cache_decide), and a compact
 *   text form and key for keeping policies in Redis across restarts
 *   (mxsend:sts:DOMAIN; the I/O is queue/sts_store.h's).
 * - sts_tlsrpt_parse: the TXT set of _smtp._tls.DOMAIN -> report URIs.
 *
 * Decisions where RFC 8461 leaves room (each has a unit test):
 * - TXT: a record is an STS record when it starts with "v=STSv1" followed by
 *   ';', whitespace or its end; other records are ignored. Zero STS records =
 *   no policy; two or more = invalid (no policy). The record must carry exactly
 *   one id (1-32 ASCII letters/digits); extensions are checked for syntax and
 *   ignored; whitespace is allowed around ';' (RFC 8461 3.1 grammar) and at the
 *   end; an empty field (";;") is a syntax error.
 * - Policy: keys and the values "STSv1", "enforce", "testing", "none" are case-
 *   sensitive (RFC 7405 %s). Lines end in LF or CRLF; whitespace after ':' and at
 *   the end of a line is allowed, and so are blank lines; a non-blank line
 *   without "key:" makes the policy invalid. version, mode and max_age are
 *   required; when repeated, the first instance counts. mx is required at least
 *   once unless mode is none. An mx value that is not a host name pattern (an IP
 *   literal, "a.*.b", "*", a label that starts or ends with '-', bad
 *   characters) is skipped and counted in n_bad_mx;
 *   if no mx is left the policy is invalid (unless mode none). max_age is 1-10
 *   digits (ABNF); values above 31557600 are clamped to 31557600 (a policy
 *   never outlives a year; see RFC 8461 3.2 "maximum value of 31557600").
 *   Unknown keys are ignored. NUL bytes make the policy invalid.
 * - Matching: case-insensitive, trailing dots ignored; "*.example.com" matches
 *   exactly one extra label (mx1.example.com), never example.com nor
 *   a.b.example.com. */
#ifndef TLSCACHE_STS_H
#define TLSCACHE_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STS_ID_MAX 32             /* RFC 8461 3.1: 1*32(ALPHA / DIGIT) */
#define STS_MAX_AGE_MAX 31557600  /* RFC 8461 3.2 */
#define STS_POLICY_MAX (64 * 1024) /* RFC 8461 3.3: body cap senders enforce */
#define STS_FETCH_RETRY_S 300     /* failed fetches wait this long per policy id */
#define STS_REFRESH_MAX_S 86400   /* refresh a cached policy at least daily */
#define STS_WHY_LEN 160           /* sts_cache_decide's explanation buffer */

enum sts_mode { STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE };
const char *sts_mode_name(enum sts_mode m); /* "none", "testing", "enforce" */

/* ---- TXT record (RFC 8461 3.1) ---- */

enum sts_txt_rc {
	STS_TXT_OK,      /* exactly one valid STSv1 record: id filled */
	STS_TXT_NONE,    /* no STSv1 record among the TXT records */
	STS_TXT_INVALID, /* several STSv1 records, or the one found is malformed */
};
const char *sts_txt_rc_name(enum sts_txt_rc rc); /* "ok", "none", "invalid" */

/* Parse the TXT records of _mta-sts.DOMAIN (each record's strings already
 * concatenated, NUL-terminated; rr borrowed). On STS_TXT_OK, id (size
 * STS_ID_MAX + 1) gets the policy id. On STS_TXT_INVALID, *err (if err) gets a
 * static reason. Never allocates. */
enum sts_txt_rc sts_txt_parse(const char *const *rr, int n, char *id, const char **err);

/* ---- policy (RFC 8461 3.2) ---- */

struct sts_policy {
	enum sts_mode mode;
	uint32_t max_age;       /* seconds, already clamped to STS_MAX_AGE_MAX */
	int n_mx;
	char **mx;              /* n_mx patterns, lowercase, no trailing dot (owned) */
	int n_bad_mx;           /* mx values skipped as invalid patterns */
	char id[STS_ID_MAX + 1]; /* the TXT id it was fetched under ("" if unknown) */
};

/* Parse a policy body of len bytes (need not be NUL-terminated; borrowed). On
 * success returns 0 and fills *p (call sts_policy_fini later; p->id is left
 * ""). On failure returns -1, *p is empty (fini is still safe) and *err gets a
 * static reason ("missing max_age", "bad mode", ...). Aborts on OOM. */
int sts_policy_parse(const char *body, size_t len, struct sts_policy *p, const char **err);
void sts_policy_fini(struct sts_policy *p);
/* Deep copy (dst is overwritten, not finalised first). */
void sts_policy_copy(struct sts_policy *dst, const struct sts_policy *src);

/* Does host (an MX host name, any case, optional trailing dot) match pattern
 * ("mx.example.com" or "*.example.com")? */
bool sts_mx_match(const char *pattern, const char *host);
/* Does host match any mx pattern of p? (mode is not looked at.) */
bool sts_policy_allows(const struct sts_policy *p, const char *host);

/* Compact text form for Redis (one line, no spaces in fixed fields):
 *   "1 FETCHED_AT MODE MAX_AGE ID MX[,MX...]"   e.g. "1 1717000000 enforce 86400 abc1 mx.a.com,*.b.com"
 * (ID "-" when empty, MX "-" when none). Writes at most buflen bytes including
 * the NUL; returns the length it needed (>= buflen: truncated, nothing
 * usable). fetched_at: wall-clock seconds. */
size_t sts_policy_encode(const struct sts_policy *p, int64_t fetched_at, char *buf, size_t buflen);
/* Parse the form above. 0 and *p filled (fini later), or -1 with *err set and
 * *p empty. Patterns are re-validated; an unknown format version is an error. */
int sts_policy_decode(const char *s, struct sts_policy *p, int64_t *fetched_at, const char **err);
/* The seconds an encoded policy (the form above) has left at now (wall-clock
 * seconds): FETCHED_AT + MAX_AGE - now, for a key that expires with its
 * policy (Redis EX). <= 0: expired, or s is not an encoded policy. */
int64_t sts_policy_ttl(const char *s, int64_t now);

/* Where a policy is kept in Redis (queue/sts_store.h does the I/O): the key
 * PREFIX:sts:DOMAIN (PREFIX = [redis] prefix, NULL = STS_REDIS_DEFAULT) holds
 * the form above and expires with the policy (sts_policy_ttl). Every process
 * sharing the Redis reads them at start. */
#define STS_REDIS_DEFAULT "mxsend"
/* The key of domain's policy into buf (size n). Returns the length, or -1 if
 * it does not fit. */
int sts_redis_key(char *buf, size_t n, const char *prefix, const char *domain);
/* The SCAN pattern of every such key into buf (glob characters of prefix
 * escaped). Returns the length, or -1 if it does not fit. */
int sts_redis_match(char *buf, size_t n, const char *prefix);
/* The domain a key names (borrowed from key), or NULL for another key. */
const char *sts_redis_domain(const char *key, const char *prefix);

/* ---- the policy cache (RFC 8461 3.3, 5.1) ---- */

struct sts_cache;

/* A cache of at most max_entries domains (0: 10000). Aborts on OOM. */
struct sts_cache *sts_cache_new(unsigned max_entries);
void sts_cache_free(struct sts_cache *c);

enum sts_decision {
	/* No MTA-STS policy applies: deliver by local rules. */
	STS_D_NONE,
	/* Apply *pol (cached, not expired). */
	STS_D_USE,
	/* Apply *pol now, and start a background fetch (sts_cache_store /
	 * sts_cache_fetch_failed with *fetch_id when it ends): the policy is due
	 * for its periodic refresh. */
	STS_D_USE_REFRESH,
	/* Fetch the policy before delivering (no policy cached, or the TXT id
	 * changed). *pol is what to apply if the fetch fails (a cached policy not
	 * yet expired), or NULL: then no policy applies. */
	STS_D_FETCH,
};
const char *sts_decision_name(enum sts_decision d); /* "none","use","use-refresh","fetch" */

/* What to do for domain (any case, trailing dot ignored) at time now.
 * txt_id: the id from a valid _mta-sts TXT record (sts_txt_parse STS_TXT_OK),
 * or NULL when there is none (absent, invalid, or the lookup failed): a cached
 * policy then stays in force until it expires (RFC 8461 5.1; only "mode: none"
 * withdraws a policy early). Rules:
 * - a cached policy whose expiry (fetched_at + max_age) has passed is dropped;
 * - a fetch for the same id (txt_id, or the cached id when txt_id is NULL)
 *   that failed less than STS_FETCH_RETRY_S ago is not retried: use the cached
 *   policy if any, else no policy;
 * - txt_id differs from the cached id: STS_D_FETCH (fallback *pol = cached);
 * - cached and due for refresh (age >= min(max_age / 2, STS_REFRESH_MAX_S)):
 *   STS_D_USE_REFRESH;
 * - a cached "mode: none" policy gives STS_D_NONE (with *pol set) unless a
 *   fetch is due.
 * *pol (borrowed: valid until the next call that changes c) and fetch_id
 * (size STS_ID_MAX + 1: the id to fetch under, "" if unknown) are always set.
 * why (if not NULL, size STS_WHY_LEN) gets a short explanation for logs. */
enum sts_decision sts_cache_decide(struct sts_cache *c, const char *domain, const char *txt_id,
				   int64_t now, const struct sts_policy **pol, char *fetch_id,
				   char *why);

/* A fetch for domain under id succeeded with policy p (copied; p->id is
 * ignored, id is used): it replaces whatever was cached, "mode: none"
 * included, effective at once. fetched_at: when (also the Redis value's). */
void sts_cache_store(struct sts_cache *c, const char *domain, const char *id,
		     const struct sts_policy *p, int64_t fetched_at);
/* A fetch for domain under id failed at now: keep any cached policy; do not
 * fetch again for this id for STS_FETCH_RETRY_S seconds. */
void sts_cache_fetch_failed(struct sts_cache *c, const char *domain, const char *id, int64_t now);
/* Load a policy decoded from Redis (sts_policy_decode; its p->id is the id).
 * Ignored if already expired at now or if a newer policy is cached. */
void sts_cache_load(struct sts_cache *c, const char *domain, const struct sts_policy *p,
		    int64_t fetched_at, int64_t now);
/* The cached policy for domain, or NULL (expired ones too; borrowed). */
const struct sts_policy *sts_cache_peek(const struct sts_cache *c, const char *domain,
				       int64_t *fetched_at);
unsigned sts_cache_count(const struct sts_cache *c);

/* ---- TLSRPT (RFC 8460 3) ---- */

#define STS_TLSRPT_MAX_RUA 8

struct sts_tlsrpt {
	int n_rua;
	char rua[STS_TLSRPT_MAX_RUA][256]; /* "mailto:..." or "https://..." as published */
};

/* Parse the TXT records of _smtp._tls.DOMAIN. Records not starting with
 * "v=TLSRPTv1" are ignored; more than one that does, a malformed record, no
 * rua, or no usable URI (only mailto: and https: are kept; others are
 * skipped) is STS_TXT_INVALID. Returns STS_TXT_OK / NONE / INVALID like
 * sts_txt_parse; *err on INVALID. */
enum sts_txt_rc sts_tlsrpt_parse(const char *const *rr, int n, struct sts_tlsrpt *out,
				 const char **err);

#endif
