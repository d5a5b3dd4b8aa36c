/* fuzz_suppress.c: libFuzzer target for queue/suppress.c: entry values (in
 * Redis, where applications write them too) and fields made from addresses
 * and domains (from `mxsend suppress` operands and stdin). `make fuzz` runs
 * it; `make test` replays tests/fuzz/seeds/suppress/.
 * Promises: parsing never reads past the value and its parts lie inside it;
 * a field made is lowercase, NUL-terminated, of the length returned, with no
 * byte <= ' '; supp_format writes a value that parses back. */
#include <string.h>

#include "queue/suppress.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *v = (const char *)data;
	struct supp_entry e;
	supp_parse(v, size, &e);
	FUZZ_NEED(e.reason >= v && e.reason + e.reason_len <= v + size);
	FUZZ_NEED(e.code_len == 0 || (e.code >= v && e.code + e.code_len <= v + size));
	int code;
	char dsn[16];
	supp_code(&e, &code, dsn, sizeof(dsn));
	FUZZ_NEED(code == 0 || (code >= 200 && code <= 599));
	FUZZ_NEED(strlen(dsn) < sizeof(dsn));

	char out[SUPP_KEY_MAX];
	const char *why = NULL;
	for (int k = 0; k < 2; k++) {
		int n = supp_key(k ? 'd' : 'a', v, size, out, sizeof(out), &why);
		FUZZ_NEED(n < 0 ? why != NULL : (size_t)n == strlen(out) && (size_t)n < sizeof(out));
		for (int i = 0; i < n; i++)
			FUZZ_NEED((unsigned char)out[i] > ' ' && !(out[i] >= 'A' && out[i] <= 'Z'));
	}

	char text[300], val[SUPP_VALUE_MAX];
	size_t t = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
	memcpy(text, v, t);
	text[t] = '\0';
	size_t vl = supp_format(val, sizeof(val), 123, 45, text, text);
	FUZZ_NEED(vl == strlen(val) && vl < sizeof(val));
	supp_parse(val, vl, &e);
	FUZZ_NEED(e.expires == 123 && e.added == 45);
	return 0;
}
