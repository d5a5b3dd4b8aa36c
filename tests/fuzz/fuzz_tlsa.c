/* fuzz_tlsa.c: libFuzzer target for the raw-answer walker of sender/dns_raw.c: TLSA records
 * (RFC 6698 2.1) at the end of a CNAME chain (RFC 7672 2.2.3), and the chain's end for an
 * address answer (the MX host's CNAME expansion, a TLSA base domain). The answer comes from
 * the network: names with compression pointers (which must point backwards), labels, RR
 * headers and RDATA lengths are all hostile. The input is the raw message, read from a heap
 * copy of exactly its size (a read past it is an ASan report), for a few names asked. */
#include <stdlib.h>
#include <string.h>

#include "sender/dns.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "_25._tcp.mx.test", "mx.test.", "MX.Test", "" };
	if (size > 65535)
		return 0;
	unsigned char *msg = malloc(size ? size : 1);
	FUZZ_NEED(msg != NULL);
	memcpy(msg, data, size);
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		struct dns_tlsa_rr rr[4];
		memset(rr, 0, sizeof(rr));
		int n = dns_raw_tlsa(msg, size, names[k], rr, 4);
		FUZZ_NEED(n >= -1 && n <= 4);
		for (int i = 0; i < n; i++)
			FUZZ_NEED(rr[i].data != NULL && rr[i].len <= DNS_TLSA_DATA_MAX);
		for (int i = n < 0 ? 0 : n; i < 4; i++)
			FUZZ_NEED(rr[i].data == NULL); /* nothing allocated past n, nothing on -1 */
		dns_tlsa_rrs_free(rr, n < 0 ? 0 : n);
		char out[256];
		memset(out, 'x', sizeof(out));
		if (dns_raw_target(msg, size, names[k], out) == 0) {
			size_t l = strnlen(out, sizeof(out));
			FUZZ_NEED(l < sizeof(out));
			for (size_t i = 0; i < l; i++)
				FUZZ_NEED(out[i] != '\0' && (out[i] < 'A' || out[i] > 'Z'));
		}
	}
	free(msg);
	return 0;
}
