/* dane.h: DANE for SMTP (RFC 7672) on one MX host: which TLSA records apply,
 * what they demand, and the lookups that find them.
 *
 * An MX host is a DANE candidate when the MX answer (or, for an implicit MX,
 * the denial of one) and its address answers were secure: the AD bit from a
 * resolver trusted to validate (dns.h, [dns] dane). Its TLSA records are then
 * looked up at _PORT._tcp.HOST, first at the host's CNAME expansion when it
 * has one, then at the name in the MX record (RFC 7672 2.2.3); the name where
 * secure records were found is the TLSA base domain (SNI, DANE-TA names).
 * The outcome, per host (struct dane_host):
 *   DANE_NONE      no DANE: not a candidate, no TLSA, or an insecure answer;
 *   DANE_AUTH      usable secure records: TLS authenticated by them, required;
 *   DANE_UNUSABLE  secure records, none usable (PKIX-TA/EE, unknown
 *                  parameters): TLS required, not authenticated (3.1.3);
 *   DANE_FAIL      the TLSA lookup failed (SERVFAIL, bogus, timeout) where
 *                  the zone is signed: the host is not used (2.2).
 * What that means for a delivery is tlspolicy.h's and deliver.c's. */
#ifndef SENDER_POLICY_DANE_H
#define SENDER_POLICY_DANE_H

#include <stdbool.h>
#include <stddef.h>

#include "sender/dns.h"
#include "sender/tls.h"

enum dane_mode { DANE_NONE, DANE_AUTH, DANE_UNUSABLE, DANE_FAIL };
const char *dane_mode_name(enum dane_mode m); /* "none","dane","dane-unusable","dane-fail" */

struct dane_host {
	enum dane_mode mode;
	char base[256];             /* TLSA base domain (AUTH, UNUSABLE) */
	char mx[256];               /* the MX host name */
	struct dns_tlsa tlsa;       /* every record found (owned), for reports */
	struct dns_tlsa_rr usable[DNS_MAX_TLSA]; /* the usable ones (borrowing tlsa's data) */
	struct tls_dane tls;        /* the session's DANE context (AUTH), pointing in here */
	char why[200];              /* DANE_FAIL: the lookup that failed; else what applied */
};

/* RFC 7672 3.1: DANE-TA(2) or DANE-EE(3), selector Cert(0) or SPKI(1),
 * matching type Full(0) (some data), SHA2-256(1) (32 octets) or SHA2-512(2)
 * (64 octets). Pure. */
bool dane_rr_usable(const struct dns_tlsa_rr *r);

/* Decide h for MX host mx from the TLSA answer t found at base ("_25._tcp."
 * not included). Copies t. Pure. */
void dane_host_decide(struct dane_host *h, const char *mx, const char *base,
		      const struct dns_tlsa *t);
void dane_host_none(struct dane_host *h, const char *mx);
void dane_host_fini(struct dane_host *h);

/* The records as RFC 8460 4.2 policy strings, "3 1 1 ab12...", joined by sep
 * into out (cut at outlen). */
void dane_policy_strings(const struct dane_host *h, const char *sep, char *out, size_t outlen);

/* ---- the lookups (on the loop, through dns.h) ---- */

typedef void dane_done_fn(void *arg, struct dane_host *h);

/* Embedded by its owner (no allocation: an owner freed after dns_free, whose
 * callbacks are then never called, leaks nothing). */
struct dane_lookup {
	struct dns *dns;
	struct dane_host *h;        /* filled, owned by the caller */
	char mx[256], cname[256];
	int port;
	int step;                   /* 0: at the CNAME expansion, 1: at the MX name */
	dane_done_fn *done;
	void *arg;
};

/* Look up the TLSA records of MX host mx (its CNAME expansion cname, "" if
 * none) for port, into *h; done(arg, h) runs once, later, from the loop
 * (never inside this call). l must stay in place until then. */
void dane_lookup_start(struct dane_lookup *l, struct dns *dns, const char *mx, const char *cname,
		       int port, struct dane_host *h, dane_done_fn *done, void *arg);

#endif
