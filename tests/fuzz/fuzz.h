/* fuzz.h: what the libFuzzer targets in tests/fuzz/ share (header-only, so
 * each target stays one .c file): the entry point's prototype, a promise
 * check that names what broke before it aborts, a PRNG seeded from the input
 * (to cut it into pieces the same way on every run), and splitting the input
 * into NUL-terminated, binary-safe pieces.
 *
 * A target is built two ways (Makefile): with clang -fsanitize=fuzzer for
 * `make fuzz`, and with gcc under the unit tests' ASan/UBSan flags beside
 * tests/fuzz/replay.c, which feeds it every file of tests/fuzz/seeds/NAME/ in
 * `make test`. So targets keep no state between inputs and leak nothing. */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless ok: the sanitizers' report names the input, this names the
 * promise. */
#define FUZZ_NEED(ok) fuzz_need((ok), #ok, __FILE__, __LINE__)

static inline void fuzz_need(bool ok, const char *what, const char *file, int line)
{
	if (ok)
		return;
	fprintf(stderr, "%s:%d: broken promise: %s\n", file, line, what);
	abort();
}

/* FNV-1a of the input: the PRNG seed, so a replay cuts an input the same way. */
static inline uint64_t fuzz_hash(const uint8_t *data, size_t size)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ull;
	return h;
}

/* xorshift64* */
static inline uint64_t fuzz_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* The input cut at every `sep` byte into at most max pieces (the last one
 * keeps the rest, separators included). Each piece is its own heap copy of
 * exactly len[i] bytes plus a NUL, so reading past it is an ASan report. */
struct fuzz_pieces {
	int n;
	char **s;
	size_t *len;
};

static inline void fuzz_split(struct fuzz_pieces *pc, const uint8_t *data, size_t size, uint8_t sep,
			      int max)
{
	pc->n = 0;
	pc->s = malloc((size_t)max * sizeof(*pc->s));
	pc->len = malloc((size_t)max * sizeof(*pc->len));
	if (pc->s == NULL || pc->len == NULL)
		abort();
	size_t at = 0;
	while (pc->n < max) {
		const uint8_t *e = pc->n + 1 < max && at < size ? memchr(data + at, sep, size - at) : NULL;
		size_t l = e ? (size_t)(e - (data + at)) : size - at;
		char *p = malloc(l + 1);
		if (p == NULL)
			abort();
		if (l > 0)
			memcpy(p, data + at, l);
		p[l] = '\0';
		pc->s[pc->n] = p;
		pc->len[pc->n] = l;
		pc->n++;
		if (e == NULL)
			break;
		at += l + 1;
	}
}

static inline void fuzz_pieces_free(struct fuzz_pieces *pc)
{
	for (int i = 0; i < pc->n; i++)
		free(pc->s[i]);
	free(pc->s);
	free(pc->len);
}

/* A NUL-terminated heap copy of the input (C-string parsers see up to its
 * first NUL, as they would see a string a peer sent). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (s == NULL)
		abort();
	if (size > 0)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
