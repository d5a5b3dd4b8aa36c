/* fuzz_sts_policy.c: libFuzzer target for the MTA-STS policy of
 * tlscache/sts.c: sts_policy_parse (the body a policy host serves, RFC 8461
 * 3.2), the Redis form (sts_policy_encode / sts_policy_decode), MX matching
 * (sts_mx_match, sts_policy_allows), sts_policy_copy and sts_policy_fini. Not
 * built by default: `make fuzz` builds and runs it (build/fuzz/fuzz_sts_policy,
 * corpus build/fuzz/corpus/sts_policy seeded from tests/fuzz/seeds/sts_policy/);
 * `make test` replays the seeds (replay.c).
 *
 * The input is read twice: as a policy body (binary, not NUL-terminated), and
 * as a stored Redis value (up to its first NUL). A policy that parses must
 * survive encode -> decode -> encode unchanged, match the hosts its own
 * patterns name and no others of a few near misses, and copy and free cleanly.
 * Besides the sanitizers, the target checks these promises and aborts if one
 * is broken. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tlscache/sts.h"

static void check_pattern(const char *pat)
{
	size_t l = strlen(pat);
	FUZZ_NEED(l >= 1 && l <= 253 && pat[l - 1] != '.');
	const char *name = pat;
	if (pat[0] == '*') {
		FUZZ_NEED(l > 2 && pat[1] == '.');
		name = pat + 2;
	}
	for (const char *c = name; *c; c++)
		FUZZ_NEED((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.' ||
			  *c == '-' || *c == '_');
}

/* The hosts a pattern names, and near misses (sts.h "Matching"). */
static void check_match(const struct sts_policy *p, const char *pat)
{
	char h[600];
	size_t l = strlen(pat);
	if (pat[0] == '*') {
		snprintf(h, sizeof(h), "mx%s", pat + 1); /* one more label */
		FUZZ_NEED(sts_mx_match(pat, h));
		FUZZ_NEED(sts_policy_allows(p, h));
		snprintf(h, sizeof(h), "MX%s.", pat + 1);
		FUZZ_NEED(sts_mx_match(pat, h));
		FUZZ_NEED(!sts_mx_match(pat, pat + 2)); /* not the parent */
		snprintf(h, sizeof(h), "a.b%s", pat + 1); /* not two labels */
		FUZZ_NEED(!sts_mx_match(pat, h));
		FUZZ_NEED(!sts_mx_match(pat, pat + 1)); /* ".suffix": an empty label */
	} else {
		FUZZ_NEED(sts_mx_match(pat, pat));
		FUZZ_NEED(sts_policy_allows(p, pat));
		snprintf(h, sizeof(h), "%s.", pat);
		for (size_t i = 0; i < l; i++)
			if (h[i] >= 'a' && h[i] <= 'z')
				h[i] = (char)(h[i] - 'a' + 'A');
		FUZZ_NEED(sts_mx_match(pat, h));
		snprintf(h, sizeof(h), "x.%s", pat);
		FUZZ_NEED(!sts_mx_match(pat, h));
		FUZZ_NEED(l < 2 || !sts_mx_match(pat, pat + 1));
	}
}

static void check_policy(const struct sts_policy *p)
{
	FUZZ_NEED(p->mode == STS_MODE_NONE || p->mode == STS_MODE_TESTING ||
		  p->mode == STS_MODE_ENFORCE);
	FUZZ_NEED(p->max_age <= STS_MAX_AGE_MAX);
	FUZZ_NEED(p->n_mx >= 0 && p->n_bad_mx >= 0);
	FUZZ_NEED(p->n_mx > 0 || p->mode == STS_MODE_NONE);
	FUZZ_NEED(p->n_mx == 0 || p->mx != NULL);
	FUZZ_NEED(strnlen(p->id, sizeof(p->id)) < sizeof(p->id));
	for (int i = 0; i < p->n_mx; i++) {
		check_pattern(p->mx[i]);
		check_match(p, p->mx[i]);
	}
	bool any = false;
	for (int i = 0; i < p->n_mx; i++)
		any |= sts_mx_match(p->mx[i], "mail.example.net");
	FUZZ_NEED(sts_policy_allows(p, "mail.example.net") == any);
	FUZZ_NEED(!sts_policy_allows(p, "") && !sts_policy_allows(p, "."));
}

static void same_policy(const struct sts_policy *a, const struct sts_policy *b)
{
	FUZZ_NEED(a->mode == b->mode && a->max_age == b->max_age && a->n_mx == b->n_mx);
	FUZZ_NEED(strcmp(a->id, b->id) == 0);
	for (int i = 0; i < a->n_mx; i++)
		FUZZ_NEED(strcmp(a->mx[i], b->mx[i]) == 0);
}

static void check_empty(const struct sts_policy *p, const char *err)
{
	FUZZ_NEED(p->n_mx == 0 && p->mx == NULL && p->id[0] == '\0');
	FUZZ_NEED(err != NULL && err[0] != '\0');
}

/* Encode (exact-size buffers, so a write past the end is an ASan report),
 * decode, re-encode: the same policy and the same text. */
static void round_trip(const struct sts_policy *p, int64_t at, uint64_t *rng)
{
	size_t need = sts_policy_encode(p, at, NULL, 0);
	char *buf = malloc(need + 1);
	FUZZ_NEED(buf != NULL);
	FUZZ_NEED(sts_policy_encode(p, at, buf, need + 1) == need);
	FUZZ_NEED(strlen(buf) == need && strchr(buf, '\n') == NULL);
	for (int k = 0; k < 2; k++) { /* too small: same answer, nothing past buflen */
		size_t small = (size_t)(fuzz_rand(rng) % (need + 1));
		char *t = malloc(small ? small : 1);
		FUZZ_NEED(t != NULL);
		FUZZ_NEED(sts_policy_encode(p, at, small ? t : NULL, small) == need);
		free(t);
	}
	struct sts_policy d;
	int64_t at2 = -1;
	const char *err = NULL;
	FUZZ_NEED(sts_policy_decode(buf, &d, &at2, &err) == 0);
	FUZZ_NEED(at2 == at);
	same_policy(p, &d);
	FUZZ_NEED(d.n_bad_mx == 0);
	char *again = malloc(need + 1);
	FUZZ_NEED(again != NULL);
	FUZZ_NEED(sts_policy_encode(&d, at2, again, need + 1) == need);
	FUZZ_NEED(memcmp(buf, again, need + 1) == 0);
	free(again);
	free(buf);
	sts_policy_fini(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t rng = fuzz_hash(data, size) | 1;
	struct sts_policy p, c;
	const char *err = NULL;

	/* the body a policy host served */
	if (sts_policy_parse((const char *)data, size, &p, &err) == 0) {
		FUZZ_NEED(p.id[0] == '\0');
		check_policy(&p);
		/* the id it is stored under: 1-32 letters and digits, or none */
		int il = (int)(fuzz_rand(&rng) % (STS_ID_MAX + 1));
		for (int i = 0; i < il; i++)
			p.id[i] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[fuzz_rand(&rng) % 62];
		p.id[il] = '\0';
		round_trip(&p, (int64_t)(fuzz_rand(&rng) >> 1), &rng);
		sts_policy_copy(&c, &p);
		same_policy(&p, &c);
		FUZZ_NEED(c.n_bad_mx == p.n_bad_mx);
		sts_policy_fini(&c);
	} else {
		check_empty(&p, err);
	}
	sts_policy_fini(&p);
	sts_policy_fini(&p); /* fini leaves an empty policy: safe twice */

	/* a stored Redis value (mxsend:sts:DOMAIN) */
	char *s = fuzz_cstr(data, size);
	int64_t at = 0;
	err = NULL;
	if (sts_policy_decode(s, &p, &at, &err) == 0) {
		check_policy(&p);
		round_trip(&p, at, &rng);
	} else {
		check_empty(&p, err);
	}
	sts_policy_fini(&p);
	free(s);
	return 0;
}
