/* fuzz_tlsrpt_uri.c: libFuzzer target for the small parsers of
 * tlscache/tlsrpt.c: tlsrpt_mailto and tlsrpt_https (a rua URI a domain
 * publishes in its _smtp._tls TXT record, RFC 8460 3) and tlsrpt_day_parse
 * (the --day of `mxsend tlsrpt`), with tlsrpt_day_format beside it. Not built
 * by default: `make fuzz` builds and runs it (build/fuzz/fuzz_tlsrpt_uri,
 * corpus build/fuzz/corpus/tlsrpt_uri seeded from tests/fuzz/seeds/tlsrpt_uri/);
 * `make test` replays the seeds (replay.c).
 *
 * The input, up to its first NUL, goes to all three. Output buffers are heap
 * blocks of exactly the size passed (sender/cmd/tlsrpt.c's, and small ones), so a
 * write past one is an ASan report. Besides the sanitizers, the target checks
 * tlsrpt.h's promises (and what https_request will accept) and aborts if one
 * is broken. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "tlscache/tlsrpt.h"
#include "tests/fuzz/fuzz.h"

static const size_t sizes[] = { 256, 1, 2, 7, 16, 64 };

static void check_mailto(const char *uri)
{
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		char *a = malloc(sizes[k]);
		FUZZ_NEED(a != NULL);
		if (tlsrpt_mailto(uri, a, sizes[k]) == 0) {
			size_t l = strnlen(a, sizes[k]);
			FUZZ_NEED(l < sizes[k]);
			FUZZ_NEED(strncasecmp(uri, "mailto:", 7) == 0);
			const char *at = strchr(a, '@');
			FUZZ_NEED(at != NULL && at > a && at[1] != '\0' && strchr(at + 1, '@') == NULL);
			for (size_t i = 0; i < l; i++) /* one plain address: nothing to quote */
				FUZZ_NEED((unsigned char)a[i] > 0x20 && (unsigned char)a[i] < 0x7f &&
					  strchr("<>()[],;:\\\"", a[i]) == NULL);
		}
		free(a);
	}
}

static void check_https(const char *uri)
{
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t hl = sizes[k], pl = sizes[(k + 1) % (sizeof(sizes) / sizeof(sizes[0]))];
		char *host = malloc(hl), *path = malloc(pl);
		int port = -1;
		FUZZ_NEED(host != NULL && path != NULL);
		if (tlsrpt_https(uri, host, hl, &port, path, pl) == 0) {
			FUZZ_NEED(strncasecmp(uri, "https://", 8) == 0);
			FUZZ_NEED(strnlen(host, hl) < hl && strnlen(path, pl) < pl);
			FUZZ_NEED(host[0] != '\0' && strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-") ==
							      strlen(host));
			FUZZ_NEED(port == 0 || (port >= 1 && port <= 65535));
			/* what https_request puts on the request line without refusing it */
			FUZZ_NEED(path[0] == '/' && strpbrk(path, " \r\n") == NULL && strchr(path, '#') == NULL);
		}
		free(host);
		free(path);
	}
}

static void check_day(const char *s)
{
	int64_t start = -1;
	if (tlsrpt_day_parse(s, &start) == 0) {
		char back[11];
		FUZZ_NEED(start >= 0 && start % 86400 == 0);
		tlsrpt_day_format(start, back);
		FUZZ_NEED(strcmp(back, s) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	check_mailto(s);
	check_https(s);
	check_day(s);
	/* any instant of years 1970-9999 formats as its day, which parses back */
	if (size >= 8) {
		int64_t t;
		memcpy(&t, data, sizeof(t));
		t = (int64_t)((uint64_t)t % 253402300800ull); /* 10000-01-01T00:00:00Z */
		char day[11];
		int64_t start = -1;
		tlsrpt_day_format(t, day);
		FUZZ_NEED(strlen(day) == 10 && tlsrpt_day_parse(day, &start) == 0);
		FUZZ_NEED(start <= t && t - start < 86400);
	}
	free(s);
	return 0;
}
