/* dns_raw.c: the parts of a DNS answer c-ares 1.18 does not parse for us,
 * walked from the raw message (part of the dns module, see dns.h; pure: no
 * c-ares, no loop, fuzzed by tests/fuzz/fuzz_tlsa.c).
 *
 * - TLSA records (RFC 6698 2.1: usage, selector, matching type, data), taken
 *   from the answer section at the end of the CNAME chain that starts at the
 *   name asked (RFC 7672 2.2.3: TLSA owner names may be aliases too);
 * - the end of that chain for an address query (the MX host's CNAME
 *   expansion, which becomes the TLSA base domain when it is secure).
 * Every read is bounds-checked against the message; compression pointers must
 * point backwards (no loops); names longer than 255 octets are refused.  The
 * answer comes from the network: bad input is an error, never a crash. */
#include "sender/dns.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sender/util.h"

enum { T_CNAME = 5, T_TLSA = 52 };

/* The name at off in msg into out (lowercase, dotted, no trailing dot, "" for
 * the root); *next is the offset after it in place. -1 on a bad name. */
static int read_name(const unsigned char *msg, size_t len, size_t off, char out[256], size_t *next)
{
	size_t o = 0, pos = off, lim = off; /* pointers must go below lim */
	bool jumped = false;
	for (int hops = 0; hops < 128; hops++) {
		if (pos >= len)
			return -1;
		unsigned c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 1 >= len)
				return -1;
			size_t to = (size_t)(c & 0x3f) << 8 | msg[pos + 1];
			if (!jumped)
				*next = pos + 2;
			if (to >= lim)
				return -1;
			jumped = true;
			lim = to;
			pos = to;
			continue;
		}
		if (c & 0xc0)
			return -1; /* 0x40/0x80: extended label types, unused */
		if (c == 0) {
			if (!jumped)
				*next = pos + 1;
			out[o] = '\0';
			return 0;
		}
		if (pos + 1 + c > len || o + c + 1 >= 256)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (unsigned i = 0; i < c; i++) {
			unsigned char ch = msg[pos + 1 + i];
			/* a dot or a NUL inside a label would make another name */
			if (ch == '.' || ch == '\0')
				return -1;
			out[o++] = (char)tolower(ch);
		}
		pos += 1 + c;
	}
	return -1;
}

static unsigned be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* Lowercase qname without a trailing dot into out; false if too long. */
static bool norm(const char *q, char out[256])
{
	size_t n = strlen(q);
	if (n > 0 && q[n - 1] == '.')
		n--;
	if (n >= 256)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)q[i]);
	out[n] = '\0';
	return true;
}

/* Walk the answer section: follow CNAMEs from qname (in order; at most 16)
 * and call rr(arg, type, rdata, rdlen) for each record owned by the current
 * end of the chain. The final name goes to end (when not NULL). */
static int walk(const unsigned char *msg, size_t len, const char *qname, char end[256],
		void (*rr)(void *arg, unsigned type, const unsigned char *rd, size_t rdlen), void *arg)
{
	char cur[256], owner[256], tmp[256];
	if (msg == NULL || len < 12 || !norm(qname, cur))
		return -1;
	unsigned qd = be16(msg + 4), an = be16(msg + 6);
	size_t p = 12;
	for (unsigned i = 0; i < qd; i++) {
		if (read_name(msg, len, p, tmp, &p) < 0 || len - p < 4)
			return -1;
		p += 4;
	}
	int cnames = 0;
	for (unsigned i = 0; i < an; i++) {
		if (read_name(msg, len, p, owner, &p) < 0 || len - p < 10)
			return -1;
		unsigned type = be16(msg + p), cls = be16(msg + p + 2);
		size_t rdlen = be16(msg + p + 8);
		p += 10;
		if (len - p < rdlen)
			return -1;
		if (cls == 1 && strcmp(owner, cur) == 0) {
			if (type == T_CNAME) {
				size_t after;
				if (++cnames > 16 || read_name(msg, p + rdlen, p, tmp, &after) < 0 ||
				    after != p + rdlen)
					return -1;
				memcpy(cur, tmp, sizeof(cur));
			} else if (rr != NULL) {
				rr(arg, type, msg + p, rdlen);
			}
		}
		p += rdlen;
	}
	if (end != NULL)
		memcpy(end, cur, 256);
	return 0;
}

struct tlsa_acc {
	struct dns_tlsa_rr *rr;
	int max, n;
	bool bad;
};

static void tlsa_rr(void *arg, unsigned type, const unsigned char *rd, size_t rdlen)
{
	struct tlsa_acc *a = arg;
	if (type != T_TLSA)
		return;
	if (rdlen < 3) { /* RFC 6698 2.1: three octets, then the data */
		a->bad = true;
		return;
	}
	if (a->n >= a->max || rdlen - 3 > DNS_TLSA_DATA_MAX)
		return; /* kept out: too many, or too large to be useful */
	struct dns_tlsa_rr *r = &a->rr[a->n++];
	r->usage = rd[0];
	r->selector = rd[1];
	r->mtype = rd[2];
	r->len = rdlen - 3;
	r->data = xmalloc(r->len ? r->len : 1);
	memcpy(r->data, rd + 3, r->len);
}

int dns_raw_tlsa(const unsigned char *msg, size_t len, const char *qname, struct dns_tlsa_rr *rr,
		 int max)
{
	struct tlsa_acc a = { .rr = rr, .max = max };
	if (walk(msg, len, qname, NULL, tlsa_rr, &a) < 0 || a.bad) {
		dns_tlsa_rrs_free(rr, a.n);
		return -1;
	}
	return a.n;
}

int dns_raw_target(const unsigned char *msg, size_t len, const char *qname, char out[256])
{
	return walk(msg, len, qname, out, NULL, NULL);
}

void dns_tlsa_rrs_free(struct dns_tlsa_rr *rr, int n)
{
	for (int i = 0; i < n; i++) {
		free(rr[i].data);
		rr[i].data = NULL;
	}
}
