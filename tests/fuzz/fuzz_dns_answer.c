/* fuzz_dns_answer.c: libFuzzer target for what sender/dns.c makes of a DNS answer
 * (dns_answer_apply): c-ares 1.18's MX/A/AAAA/TXT parsers, our copies of their results into
 * the cache entry, and our own walk of the raw message for TTLs (answer_ttl: names, possibly
 * compressed, then RR headers; the SOA of a negative answer, RFC 2308 5). The answer comes
 * from the network (a resolver, or whoever spoofs one), so nothing in it may crash mxsend.
 *
 * The input is the raw answer. It is applied for each query type with ARES_SUCCESS, and once
 * as NXDOMAIN and once as NODATA (the negative-TTL walk), each time from a heap copy of exactly
 * the input's size, so reading past it is an ASan report. Besides the sanitizers, the target
 * checks what dns_int.h and the cache rely on, and aborts if a promise is broken. */
#include <ares.h>

#include "sender/dns.h"
#include "sender/dns_int.h"
#include "tests/fuzz/fuzz.h"

static void check(int type, int status, const uint8_t *data, size_t size)
{
	unsigned char *abuf = malloc(size ? size : 1);
	struct entry *e = calloc(1, sizeof(*e) + 8);
	FUZZ_NEED(abuf != NULL && e != NULL);
	memcpy(abuf, data, size);
	e->type = type;
	long ttl = dns_answer_apply(e, status, abuf, (int)size);
	FUZZ_NEED(ttl >= 0 && ttl <= 86400);
	if (e->status == DNS_OK) {
		FUZZ_NEED(status == ARES_SUCCESS && e->n > 0 && e->u.mx != NULL);
		for (int i = 0; i < e->n; i++) {
			if (type == QT_MX) {
				const char *h = e->u.mx[i].host;
				FUZZ_NEED(h != NULL);
				size_t l = strlen(h);
				/* c-ares writes a dot inside a label as "\\.", which
				 * resolve() then refuses (any backslash): a name fails,
				 * it never becomes another name */
				FUZZ_NEED(l == 0 || h[l - 1] != '.' || strchr(h, '\\') != NULL);
				for (size_t k = 0; k < l; k++)
					FUZZ_NEED(h[k] < 'A' || h[k] > 'Z');
				FUZZ_NEED(i == 0 || e->u.mx[i - 1].pref <= e->u.mx[i].pref);
			} else if (type == QT_TXT) {
				FUZZ_NEED(e->u.txt[i] != NULL && strlen(e->u.txt[i]) <= 65535);
			} else if (type == QT_TLSA) {
				FUZZ_NEED(e->u.tlsa[i].data != NULL &&
					  e->u.tlsa[i].len <= DNS_TLSA_DATA_MAX);
			}
		}
		if (type == QT_A || type == QT_AAAA)
			FUZZ_NEED(e->n <= DNS_MAX_ADDRS);
	} else {
		FUZZ_NEED(e->n == 0 && e->u.mx == NULL && e->cname == NULL); /* a failed parse leaves no items */
		FUZZ_NEED(e->reason != NULL);
		if (e->status == DNS_NXDOMAIN || e->status == DNS_NODATA)
			FUZZ_NEED(ttl <= 300); /* negative answers: at most 5 minutes */
		else
			FUZZ_NEED(ttl == 0); /* temporary failures are not cached */
	}
	dns_entry_free_items(e);
	free(e);
	free(abuf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65535) /* a DNS message over TCP is at most this long */
		return 0;
	static const int types[] = { QT_MX, QT_A, QT_AAAA, QT_TXT, QT_TLSA };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		check(types[i], ARES_SUCCESS, data, size);
	check(QT_AAAA, ARES_ENOTFOUND, data, size);
	check(QT_MX, ARES_ENODATA, data, size);
	return 0;
}
