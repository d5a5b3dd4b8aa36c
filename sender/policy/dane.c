/* dane.c: the TLSA records of one MX host and what they demand (see dane.h;
 * RFC 7672 2.2 and 3.1). Decisions are pure; the lookups go through dns.h,
 * whose callbacks never run inside the call that starts them. */
#include "sender/policy/dane.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sender/log.h"
#include "sender/util.h"

static const char *const mode_names[] = {
	[DANE_NONE] = "none",
	[DANE_AUTH] = "dane",
	[DANE_UNUSABLE] = "dane-unusable",
	[DANE_FAIL] = "dane-fail",
};

const char *dane_mode_name(enum dane_mode m)
{
	return (unsigned)m < ARRAY_LEN(mode_names) ? mode_names[m] : "?";
}

bool dane_rr_usable(const struct dns_tlsa_rr *r)
{
	if (r->usage != 2 && r->usage != 3) /* PKIX-TA(0)/PKIX-EE(1): RFC 7672 3.1.3 */
		return false;
	if (r->selector > 1)
		return false;
	switch (r->mtype) {
	case 0: return r->len > 0;
	case 1: return r->len == 32;
	case 2: return r->len == 64;
	default: return false;
	}
}

void dane_host_none(struct dane_host *h, const char *mx)
{
	memset(h, 0, sizeof(*h));
	h->mode = DANE_NONE;
	strlcpy_x(h->mx, mx, sizeof(h->mx));
}

void dane_host_fini(struct dane_host *h)
{
	dns_tlsa_fini(&h->tlsa);
}

/* The verification context: sessions and connections are shared only
 * between deliveries that would verify the same way (FNV-1a 64). */
static void make_tag(struct dane_host *h)
{
	uint64_t x = 14695981039346656037ull;
#define MIX(p, n)                                                    \
	for (size_t k_ = 0; k_ < (n); k_++)                          \
		x = (x ^ ((const unsigned char *)(p))[k_]) * 1099511628211ull;
	MIX(h->base, strlen(h->base) + 1);
	MIX(h->mx, strlen(h->mx) + 1);
	for (int i = 0; i < h->tls.n; i++) {
		const struct dns_tlsa_rr *r = &h->usable[i];
		unsigned char f[3] = { r->usage, r->selector, r->mtype };
		MIX(f, 3);
		MIX(&r->len, sizeof(r->len));
		MIX(r->data, r->len);
	}
#undef MIX
	snprintf(h->tls.tag, sizeof(h->tls.tag), "dane-%016llx", (unsigned long long)x);
}

void dane_host_decide(struct dane_host *h, const char *mx, const char *base,
		      const struct dns_tlsa *t)
{
	dane_host_none(h, mx);
	if (t->status == DNS_TEMP) {
		/* RFC 7672 2.2: a failed TLSA lookup in a signed zone (bogus
		 * answers reach us as SERVFAIL): never without what the zone
		 * may demand */
		h->mode = DANE_FAIL;
		snprintf(h->why, sizeof(h->why), "TLSA lookup for %s failed (%s): DNSSEC "
			 "bogus or unreachable", base, t->why[0] ? t->why : "temporary failure");
		return;
	}
	if (t->status != DNS_OK || !t->secure) {
		snprintf(h->why, sizeof(h->why), "%s", t->status != DNS_OK ? "no TLSA records"
							   : "TLSA records not DNSSEC-secure");
		return;
	}
	dns_tlsa_copy(&h->tlsa, t);
	strlcpy_x(h->base, base, sizeof(h->base));
	for (int i = 0; i < h->tlsa.n; i++)
		if (dane_rr_usable(&h->tlsa.rr[i]))
			h->usable[h->tls.n++] = h->tlsa.rr[i];
	h->tls.base = h->base;
	h->tls.mx_host = h->mx;
	h->tls.rr = h->usable;
	h->mode = h->tls.n > 0 ? DANE_AUTH : DANE_UNUSABLE;
	make_tag(h);
	snprintf(h->why, sizeof(h->why), "%d TLSA records for %s, %d usable", h->tlsa.n, base,
		 h->tls.n);
}

void dane_policy_strings(const struct dane_host *h, const char *sep, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (outlen == 0)
		return;
	out[0] = '\0';
	for (int i = 0; i < h->tlsa.n; i++) {
		const struct dns_tlsa_rr *r = &h->tlsa.rr[i];
		char head[32];
		int k = snprintf(head, sizeof(head), "%s%u %u %u ", i ? sep : "", r->usage, r->selector,
				 r->mtype);
		if (k < 0 || o + (size_t)k + 2 * r->len + 1 > outlen)
			break; /* a record is whole or absent */
		memcpy(out + o, head, (size_t)k);
		o += (size_t)k;
		for (size_t b = 0; b < r->len; b++) {
			out[o++] = hex[r->data[b] >> 4];
			out[o++] = hex[r->data[b] & 15];
		}
		out[o] = '\0';
	}
}

/* ---- lookups ---- */

static void ask(struct dane_lookup *l, const char *host);

static void on_tlsa(void *arg, const struct dns_tlsa *t)
{
	struct dane_lookup *l = arg;
	const char *at = l->step == 0 ? l->cname : l->mx;
	log_debug("evt=dane_tlsa mx=%s name=_%d._tcp.%s status=%s secure=%s n=%d", l->mx, l->port, at,
		  dns_status_name(t->status), t->secure ? "yes" : "no", t->n);
	/* RFC 7672 2.2.3: at the expansion first; nothing secure there (no
	 * records, or insecure ones): the MX name itself */
	if (l->step == 0 && t->status != DNS_TEMP && !(t->status == DNS_OK && t->secure)) {
		l->step = 1;
		ask(l, l->mx);
		return;
	}
	dane_host_decide(l->h, l->mx, at, t);
	l->done(l->arg, l->h);
}

static void ask(struct dane_lookup *l, const char *host)
{
	char name[300];
	snprintf(name, sizeof(name), "_%d._tcp.%s", l->port, host);
	dns_resolve_tlsa(l->dns, name, on_tlsa, l);
}

void dane_lookup_start(struct dane_lookup *l, struct dns *dns, const char *mx, const char *cname,
		       int port, struct dane_host *h, dane_done_fn *done, void *arg)
{
	memset(l, 0, sizeof(*l));
	l->dns = dns;
	l->h = h;
	l->port = port;
	l->done = done;
	l->arg = arg;
	strlcpy_x(l->mx, mx, sizeof(l->mx));
	strlcpy_x(l->cname, cname ? cname : "", sizeof(l->cname));
	l->step = l->cname[0] ? 0 : 1;
	ask(l, l->step == 0 ? l->cname : l->mx);
}
