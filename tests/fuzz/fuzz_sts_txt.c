/* fuzz_sts_txt.c: libFuzzer target for the TXT record parsers of
 * tlscache/sts.c: sts_txt_parse (_mta-sts.DOMAIN, RFC 8461 3.1) and
 * sts_tlsrpt_parse (_smtp._tls.DOMAIN, RFC 8460 3), whose input is whatever a
 * domain's DNS publishes. Not built by default: `make fuzz` builds and runs it
 * (build/fuzz/fuzz_sts_txt, corpus build/fuzz/corpus/sts_txt seeded from
 * tests/fuzz/seeds/sts_txt/); `make test` replays the seeds (replay.c).
 *
 * The input is a TXT set: one record per line (LF), each record being the
 * concatenation of its strings, as dns.c hands them over. Both parsers read
 * the same set, and each rua a TLSRPT record yields goes on to the URI
 * parsers of tlscache/tlsrpt.c with sender/cmd/tlsrpt.c's buffer sizes. Besides the
 * sanitizers, the target checks the parsers' promises and aborts if one is
 * broken. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "tlscache/tlsrpt.h"
#include "tests/fuzz/fuzz.h"
#include "tlscache/sts.h"

#define MAX_RR 32

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* How many records start with tag v (then ';', a blank or the end); *rec is
 * the last of them. Written from sts.h, not from the parser. */
static int tagged(char *const *rr, int n, const char *v, const char **rec)
{
	size_t l = strlen(v);
	int k = 0;
	for (int i = 0; i < n; i++) {
		const char *r = rr[i];
		if (strncmp(r, v, l) == 0 && (r[l] == ';' || r[l] == '\0' || r[l] == ' ' || r[l] == '\t')) {
			*rec = r;
			k++;
		}
	}
	return k;
}

static void rc_promises(enum sts_txt_rc rc, int ntagged, const char *err)
{
	FUZZ_NEED(rc == STS_TXT_OK || rc == STS_TXT_NONE || rc == STS_TXT_INVALID);
	FUZZ_NEED((ntagged == 0) == (rc == STS_TXT_NONE));
	FUZZ_NEED(ntagged <= 1 || rc == STS_TXT_INVALID);
	FUZZ_NEED(rc != STS_TXT_INVALID || (err != NULL && err[0] != '\0'));
}

static void check_sts(char *const *rr, int n)
{
	const char *rec = NULL, *err = NULL;
	char id[STS_ID_MAX + 1], id2[STS_ID_MAX + 1];
	int nt = tagged(rr, n, "v=STSv1", &rec);
	enum sts_txt_rc rc = sts_txt_parse((const char *const *)rr, n, id, &err);
	rc_promises(rc, nt, err);
	if (rc == STS_TXT_OK) {
		size_t l = strlen(id);
		FUZZ_NEED(l >= 1 && l <= STS_ID_MAX);
		for (size_t i = 0; i < l; i++)
			FUZZ_NEED(is_alnum(id[i]));
		FUZZ_NEED(strstr(rec, id) != NULL);
	}
	/* err is optional; the answer does not depend on it */
	FUZZ_NEED(sts_txt_parse((const char *const *)rr, n, id2, NULL) == rc);
	FUZZ_NEED(rc != STS_TXT_OK || strcmp(id, id2) == 0);
}

static void check_rua(const char *u)
{
	char to[256], host[256], path[256];
	int port = -1;
	if (strncasecmp(u, "mailto:", 7) == 0) {
		if (tlsrpt_mailto(u, to, sizeof(to)) == 0)
			FUZZ_NEED(strlen(to) < sizeof(to) && strchr(to, '@') != NULL);
	} else {
		FUZZ_NEED(strncasecmp(u, "https://", 8) == 0);
		if (tlsrpt_https(u, host, sizeof(host), &port, path, sizeof(path)) == 0)
			FUZZ_NEED(host[0] != '\0' && path[0] == '/' && port >= 0 && port <= 65535);
	}
}

static void check_tlsrpt(char *const *rr, int n)
{
	const char *rec = NULL, *err = NULL;
	struct sts_tlsrpt t, t2;
	int nt = tagged(rr, n, "v=TLSRPTv1", &rec);
	enum sts_txt_rc rc = sts_tlsrpt_parse((const char *const *)rr, n, &t, &err);
	rc_promises(rc, nt, err);
	if (rc != STS_TXT_OK) {
		FUZZ_NEED(t.n_rua == 0); /* the parser clears *out unless OK */
	} else {
		FUZZ_NEED(t.n_rua >= 1 && t.n_rua <= STS_TLSRPT_MAX_RUA);
		for (int i = 0; i < t.n_rua; i++) {
			const char *u = t.rua[i];
			size_t l = strnlen(u, sizeof(t.rua[i]));
			FUZZ_NEED(l < sizeof(t.rua[i]));
			FUZZ_NEED((l > 7 && strncasecmp(u, "mailto:", 7) == 0) ||
				  (l > 8 && strncasecmp(u, "https://", 8) == 0));
			FUZZ_NEED(strpbrk(u, " \t,;") == NULL);
			FUZZ_NEED(strstr(rec, u) != NULL);
			check_rua(u);
		}
	}
	FUZZ_NEED(sts_tlsrpt_parse((const char *const *)rr, n, &t2, NULL) == rc);
	FUZZ_NEED(t2.n_rua == t.n_rua);
	for (int i = 0; i < t.n_rua; i++)
		FUZZ_NEED(strcmp(t.rua[i], t2.rua[i]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_pieces pc;
	fuzz_split(&pc, data, size, '\n', MAX_RR);
	check_sts(pc.s, pc.n);
	check_tlsrpt(pc.s, pc.n);
	fuzz_pieces_free(&pc);
	return 0;
}
