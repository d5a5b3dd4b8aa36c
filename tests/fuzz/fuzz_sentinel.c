/* fuzz_sentinel.c: libFuzzer target for the parsers of queue/sentinel.c that
 * read hostile input: queue_master_addr_check (a sentinel's answer to
 * SENTINEL get-master-addr-by-name: host and port, binary strings) and
 * queue_sentinels_parse (the [redis] sentinels list). Not built by default:
 * `make fuzz` builds and runs it; `make test` replays tests/fuzz/seeds/sentinel/.
 *
 * The input is cut at its first NUL: before it, the list and the host; after
 * it, the port. Besides the sanitizers, the target checks the promises:
 * whatever is accepted is a host name or IP address without a byte outside
 * [A-Za-z0-9.:_-] and a port 1..65535. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "queue/queue.h"
#include "tests/fuzz/fuzz.h"

static void check_host(const char *h)
{
	size_t n = strlen(h);
	FUZZ_NEED(n > 0 && n < 256);
	for (size_t i = 0; i < n; i++)
		FUZZ_NEED(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:_-",
				 h[i]) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t hl = nul ? (size_t)(nul - data) : size;
	const char *port = nul ? (const char *)nul + 1 : "";
	size_t pl = nul ? size - hl - 1 : 0;
	struct queue_hostport m;
	if (queue_master_addr_check((const char *)data, hl, port, pl, &m) == 0) {
		check_host(m.host);
		FUZZ_NEED(m.port >= 1 && m.port <= 65535);
		FUZZ_NEED(strlen(m.host) == hl);
	}
	char *s = malloc(hl + 1);
	FUZZ_NEED(s != NULL);
	memcpy(s, data, hl);
	s[hl] = '\0';
	struct queue_hostport hp[4];
	char err[64];
	int n = queue_sentinels_parse(s, hp, 4, err, sizeof(err));
	FUZZ_NEED(n == -1 || (n >= 1 && n <= 4));
	for (int i = 0; i < n; i++) {
		check_host(hp[i].host);
		FUZZ_NEED(hp[i].port >= 1 && hp[i].port <= 65535);
	}
	if (n < 0)
		FUZZ_NEED(strlen(err) < sizeof(err) && err[0] != '\0');
	free(s);
	return 0;
}
