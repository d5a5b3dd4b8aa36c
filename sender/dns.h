/* dns.h: MX (and A/AAAA, TXT) resolution with c-ares, driven by the loop.
 *
 * dns_resolve_mx(domain) delivers the MX hosts sorted by preference (equal
 * preferences shuffled, RFC 5321 5.1), each with its IPv4/IPv6 addresses. No MX
 * record: the implicit MX is the domain itself (its A/AAAA). A null MX (RFC 7505:
 * a single MX "." ) is DNS_NULLMX. NXDOMAIN is permanent; SERVFAIL, timeouts and
 * refusals are temporary. Answers are cached for their TTL (bounded cache).
 * Callbacks never run before dns_resolve_* returns (cached answers are delivered
 * from a deferred task). The result passed to a callback is borrowed for the
 * duration of the callback.
 *
 * Status mapping: NOERROR with records -> DNS_OK; NXDOMAIN (or a name that is
 * not a valid DNS name) -> DNS_NXDOMAIN; NOERROR without records of the type
 * -> DNS_NODATA (for MX: the implicit MX, see above); SERVFAIL, REFUSED,
 * NOTIMP, FORMERR, timeouts, unreachable servers, bad answers -> DNS_TEMP.
 * For MX, hosts without any address are dropped (named in `why`); no host
 * left -> DNS_TEMP if any host lookup failed temporarily, else DNS_NODATA.
 * Each host lists its IPv4 addresses first, then IPv6 (when both overflow
 * DNS_MAX_ADDRS, half the slots go to IPv6). */
#ifndef SENDER_DNS_H
#define SENDER_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;
struct dns;

enum dns_status { DNS_OK, DNS_TEMP, DNS_NXDOMAIN, DNS_NULLMX, DNS_NODATA };
const char *dns_status_name(enum dns_status s); /* "ok","temp","nxdomain","nullmx","nodata" */

#define DNS_MAX_MX 16
#define DNS_MAX_ADDRS 8 /* per host */

struct dns_host {
	char name[256];     /* MX host name, lowercase, no trailing dot */
	char cname[256];    /* its CNAME expansion (the end of the chain the
	                     * address answer followed), "" when not an alias */
	bool secure;        /* dns_opts.dnssec: every address answer used was
	                     * secure (AD from a trusted resolver) */
	int pref;
	int naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0 */
	enum dns_status status; /* of the address lookup for this host */
};

struct dns_mx {
	enum dns_status status; /* DNS_OK if at least one host has an address */
	int implicit;           /* 1: no MX records, the domain's own A/AAAA */
	bool secure;            /* dns_opts.dnssec: the MX answer (or the denial
	                         * of one, for an implicit MX) was secure */
	int nhosts;
	char why[128];          /* human text for non-OK: "NXDOMAIN for example.com MX" */
	/* last: results are allocated for nhosts only (offsetof(struct dns_mx,
	 * hosts) + nhosts * sizeof(struct dns_host)) */
	struct dns_host hosts[DNS_MAX_MX];
};

struct dns_txt {
	enum dns_status status;
	int n;
	char *rr[16]; /* each TXT record, character-strings concatenated, NUL-terminated */
	char why[128];
};

/* One TLSA record (RFC 6698 2.1). */
#define DNS_MAX_TLSA 16
#define DNS_TLSA_DATA_MAX 2048 /* a full certificate fits; larger ones are ignored */
struct dns_tlsa_rr {
	uint8_t usage, selector, mtype;
	size_t len;
	unsigned char *data; /* len octets, owned by the struct holding it */
};

/* A TLSA answer: DNS_OK with n records, DNS_NODATA/DNS_NXDOMAIN (none), or
 * DNS_TEMP (SERVFAIL, a bogus answer from a validating resolver, timeout). */
struct dns_tlsa {
	enum dns_status status;
	bool secure;  /* AD: the answer (or the denial) was validated */
	int n;
	struct dns_tlsa_rr rr[DNS_MAX_TLSA];
	char why[128];
};

/* DNSSEC (DANE, RFC 7672): the AD bit is asked for (RFC 6840 5.7) and
 * believed only when every server is trusted to validate. */
enum dns_dnssec { DNS_DNSSEC_NO, DNS_DNSSEC_AUTO, DNS_DNSSEC_YES };

struct dns_opts {
	const char *servers;  /* "127.0.0.1:5353,[::1]:53" or NULL for /etc/resolv.conf */
	unsigned timeout_ms;  /* per try, default 2000 */
	unsigned tries;       /* default 3 */
	unsigned cache_max;   /* entries, default 10000 */
	unsigned max_inflight; /* c-ares queries at once, default 1000; the rest wait in a FIFO */
	enum dns_dnssec dnssec; /* NO (default): no AD bit asked, nothing secure;
	                         * AUTO: on when every server is trusted (loopback, or
	                         * listed in trusted); YES: on, dns_new fails when a
	                         * server is not trusted */
	const char *trusted;   /* more trusted resolver addresses, space or comma
	                        * separated (NULL: loopback only) */
};

/* Counters for metrics and tests (dns_get_stats). */
struct dns_stats {
	uint64_t queries;    /* queries handed to c-ares */
	uint64_t cache_hits; /* lookups answered from the cache */
	uint64_t coalesced;  /* lookups that joined an identical queued/in-flight query */
	unsigned inflight, queued, cached; /* now */
	unsigned pending;    /* dns_resolve_* calls whose callback has not run yet */
};

/* mx is valid during the call and holds mx->nhosts hosts only: copy
 * DNS_MX_SIZE(mx->nhosts) bytes, never sizeof(struct dns_mx). */
typedef void dns_mx_fn(void *arg, const struct dns_mx *mx);
#define DNS_MX_SIZE(n) (offsetof(struct dns_mx, hosts) + (size_t)(n) * sizeof(struct dns_host))
typedef void dns_txt_fn(void *arg, const struct dns_txt *txt);
/* tlsa and its records are borrowed for the call: copy what you keep
 * (dns_tlsa_copy). */
typedef void dns_tlsa_fn(void *arg, const struct dns_tlsa *tlsa);

/* Create a resolver on loop. NULL with *err set ("bad dns servers ...") on failure. */
struct dns *dns_new(struct loop *l, const struct dns_opts *o, char *err, size_t errlen);
/* Cancel everything (callbacks are not called) and free. May be called from
 * inside a dns callback (the free then completes when that callback returns).
 * The loop must run once more afterwards (it finishes removing the socket
 * watchers, and a delivery task that was already queued frees itself then). */
void dns_free(struct dns *d);

/* Resolve MX + addresses for domain (ASCII, any case). cb runs exactly once,
 * later, on the loop, unless dns_free is called first. */
void dns_resolve_mx(struct dns *d, const char *domain, dns_mx_fn *cb, void *arg);
/* Resolve the A/AAAA of one host name (no MX lookup): the result is a dns_mx
 * with one host (implicit = 1). Same callback rules as dns_resolve_mx. */
void dns_resolve_addr(struct dns *d, const char *host, dns_mx_fn *cb, void *arg);
/* Resolve the TXT records of name. */
void dns_resolve_txt(struct dns *d, const char *name, dns_txt_fn *cb, void *arg);

/* Resolve the TLSA records of name (e.g. "_25._tcp.mx.example.com"), with
 * the AD bit when DNSSEC is on. Same callback rules as dns_resolve_mx. */
void dns_resolve_tlsa(struct dns *d, const char *name, dns_tlsa_fn *cb, void *arg);
/* Whether the AD bit is asked for and believed (dns_opts.dnssec). */
bool dns_dnssec_on(const struct dns *d);
/* Deep copy of a TLSA answer into *dst (free with dns_tlsa_fini). */
void dns_tlsa_copy(struct dns_tlsa *dst, const struct dns_tlsa *src);
void dns_tlsa_fini(struct dns_tlsa *t);

/* Pure, from the raw answer msg (len octets) to a query for qname (dns_raw.c,
 * fuzzed): the TLSA records at the end of qname's CNAME chain in the answer
 * section, at most max into rr (data allocated: dns_tlsa_rrs_free); returns
 * how many, or -1 for a malformed message (nothing allocated then). */
int dns_raw_tlsa(const unsigned char *msg, size_t len, const char *qname, struct dns_tlsa_rr *rr,
		 int max);
/* The end of qname's CNAME chain in the answer section into out (qname
 * itself, normalised, without CNAMEs); 0, or -1 for a malformed message. */
int dns_raw_target(const unsigned char *msg, size_t len, const char *qname, char out[256]);
void dns_tlsa_rrs_free(struct dns_tlsa_rr *rr, int n);

/* Copy the counters into *st. Never calls back. */
void dns_get_stats(const struct dns *d, struct dns_stats *st);

/* Pure helper, exposed for tests: sort hosts by pref, shuffling equal prefs with
 * rnd() (a uniform 32-bit generator). */
void dns_sort_hosts(struct dns_host *h, int n, uint32_t (*rnd)(void));

#endif
