/* fuzz_msg_addr.c: libFuzzer target for the address side of sender/msg.c:
 * msg_split_list (a job's `to` field, as the application wrote it),
 * msg_addr_parse (each item, and the sender) and msg_addr_format. Not built by
 * default: `make fuzz` builds and runs it (build/fuzz/fuzz_msg_addr, corpus
 * build/fuzz/corpus/msg_addr seeded from tests/fuzz/seeds/msg_addr/); `make
 * test` replays the seeds (replay.c).
 *
 * The input, up to its first NUL, is a recipient list; every item is parsed,
 * and so is the whole input as one address. An address that parses must
 * format and parse back to the same parts, within RFC 5321's limits (msg.h).
 * Besides the sanitizers, the target checks these promises and aborts if one
 * is broken. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sender/msg.h"
#include "tests/fuzz/fuzz.h"

static void check_addr(const char *s)
{
	struct msg_addr a, b;
	const char *err = NULL;
	if (msg_addr_parse(s, &a, &err) != 0) {
		FUZZ_NEED(err != NULL && err[0] != '\0');
		FUZZ_NEED(a.local[0] == '\0' && a.domain[0] == '\0');
		return;
	}
	size_t ll = strlen(a.local), dl = strlen(a.domain);
	FUZZ_NEED(ll >= 1 && ll <= 64 && dl >= 1 && dl <= 255 && ll + 1 + dl <= 254);
	for (size_t i = 0; i < dl; i++)
		FUZZ_NEED(!(a.domain[i] >= 'A' && a.domain[i] <= 'Z') || strncmp(a.domain, "[IPv6:", 6) == 0);
	FUZZ_NEED(a.domain[dl - 1] != '.');
	size_t need = ll + 1 + dl + 1;
	char *buf = malloc(need); /* exactly: a write past it is an ASan report */
	FUZZ_NEED(buf != NULL);
	FUZZ_NEED(msg_addr_format(&a, buf, need - 1) == -1);
	FUZZ_NEED(msg_addr_format(&a, buf, need) == (int)(need - 1) && strlen(buf) == need - 1);
	FUZZ_NEED(msg_addr_parse(buf, &b, &err) == 0);
	FUZZ_NEED(strcmp(a.local, b.local) == 0 && strcmp(a.domain, b.domain) == 0 && a.utf8 == b.utf8);
	free(buf);
}

struct items {
	const char *list;
	size_t list_len;
	int n, stop_at;
};

static int on_item(void *arg, const char *item, size_t len)
{
	struct items *it = arg;
	FUZZ_NEED(item >= it->list && item + len <= it->list + it->list_len && len > 0);
	FUZZ_NEED(strchr(" \t\r\n", item[0]) == NULL && strchr(" \t\r\n", item[len - 1]) == NULL);
	char *one = malloc(len + 1);
	FUZZ_NEED(one != NULL);
	memcpy(one, item, len);
	one[len] = '\0';
	check_addr(one);
	free(one);
	return ++it->n == it->stop_at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	struct items it = { .list = s, .list_len = strlen(s), .stop_at = -1 };
	int n = msg_split_list(s, on_item, &it);
	FUZZ_NEED(n == it.n);
	if (n > 1) { /* a callback's non-zero return stops the walk */
		struct items stop = { .list = s, .list_len = strlen(s), .stop_at = 1 };
		FUZZ_NEED(msg_split_list(s, on_item, &stop) == -1 && stop.n == 1);
	}
	check_addr(s);
	free(s);
	return 0;
}
