/* fuzz_bclass.c: libFuzzer target for sender/bclass.c. `make fuzz` runs it
 * (corpus seeded from tests/fuzz/seeds/bclass/); `make test` replays the seeds.
 *
 * Byte 0 picks: even, the rest is a reply "CODE DSN TEXT" (what a hostile
 * server controls) classified with the shipped rules (sender/classes.conf,
 * read once; from the source tree's root, as tests/run.sh runs) and with
 * every origin; odd, the rest is a rule file (config: it must load or give
 * "NAME:LINE: ..."). Promises: a class is never NONE and always named; a bad
 * rule file names its line. */
#include <stdlib.h>
#include <string.h>

#include "sender/bclass.h"
#include "tests/fuzz/fuzz.h"

static struct bclass_rules *shipped;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (shipped == NULL) { /* constant after the first input */
		const char *p[] = { "sender/classes.conf" };
		char err[300];
		shipped = bclass_load(p, 1, err, sizeof(err));
		if (shipped == NULL)
			shipped = bclass_load_mem("other * *\n", 10, "builtin", err, sizeof(err));
		FUZZ_NEED(shipped != NULL);
	}
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	if (data[0] % 2 == 1) {
		char err[400] = "";
		struct bclass_rules *r = bclass_load_mem(in, n, "f", err, sizeof(err));
		FUZZ_NEED(r != NULL || strncmp(err, "f:", 2) == 0);
		if (r != NULL) {
			enum bclass c = bclass_classify(r, 550, "5.1.1", "user unknown", BCLASS_O_REPLY);
			FUZZ_NEED(c > BCLASS_NONE && c < BCLASS_N);
		}
		bclass_free(r);
		return 0;
	}
	char *s = malloc(n + 1);
	memcpy(s, in, n);
	s[n] = '\0';
	int code = atoi(s);
	char *dsn = strchr(s, ' '), *text = "";
	if (dsn != NULL) {
		*dsn++ = '\0';
		char *sp = strchr(dsn, ' ');
		if (sp != NULL) {
			*sp = '\0';
			text = sp + 1;
		}
	}
	for (int o = BCLASS_O_REPLY; o <= BCLASS_O_INTERNAL; o++) {
		enum bclass c = bclass_classify(shipped, code, dsn, text, (enum bclass_origin)o);
		FUZZ_NEED(c > BCLASS_NONE && c < BCLASS_N && bclass_name(c)[0] != '\0');
		FUZZ_NEED(bclass_parse(bclass_name(c)) == (int)c);
	}
	free(s);
	return 0;
}
