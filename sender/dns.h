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
	int pref;
	int naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0 */
	enum dns_status status; /* of the address lookup for this host */
};

struct dns_mx {
	enum dns_status status; /* DNS_OK if at least one host has an address */
	int implicit;           /* 1: no MX records, the domain's own A/AAAA */
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

struct dns_opts {
	const char *servers;  /* "127.0.0.1:5353,[::1]:53" or NULL for /etc/resolv.conf */
	unsigned timeout_ms;  /* per try, default 2000 */
	unsigned tries;       /* default 3 */
	unsigned cache_max;   /* entries, default 10000 */
	unsigned max_inflight; /* c-ares queries at once, default 1000; the rest wait in a FIFO */
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

/* Copy the counters into *st. Never calls back. */
void dns_get_stats(const struct dns *d, struct dns_stats *st);

/* Pure helper, exposed for tests: sort hosts by pref, shuffling equal prefs with
 * rnd() (a uniform 32-bit generator). */
void dns_sort_hosts(struct dns_host *h, int n, uint32_t (*rnd)(void));

#endif
