/* t.h: a tiny unit-test harness. Each test program defines a table of cases:
 *
 *   static const struct t_case cases[] = { { "name", fn }, ... };
 *   T_MAIN(cases)
 *
 * CHECK(cond) records a failure and continues; the program prints one line per
 * case, "ok - NAME" or "not ok - NAME", and exits 1 if any failed. tests/run.sh
 * counts those lines. */
#ifndef TESTS_T_H
#define TESTS_T_H

#include <stdio.h>
#include <string.h>

struct t_case {
	const char *name;
	void (*fn)(void);
};

static int t_failed;

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
				#cond);                                                \
			t_failed = 1;                                                  \
		}                                                                      \
	} while (0)
#define CHECK_STR(a, b)                                                                \
	do {                                                                           \
		const char *t_a_ = (a), *t_b_ = (b);                                   \
		if (t_a_ == NULL || t_b_ == NULL || strcmp(t_a_, t_b_) != 0) {         \
			fprintf(stderr, "  %s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, \
				t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");       \
			t_failed = 1;                                                  \
		}                                                                      \
	} while (0)
#define CHECK_INT(a, b)                                                                \
	do {                                                                           \
		long long t_a_ = (long long)(a), t_b_ = (long long)(b);                \
		if (t_a_ != t_b_) {                                                    \
			fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__, \
				__LINE__, #a, t_a_, t_b_);                             \
			t_failed = 1;                                                  \
		}                                                                      \
	} while (0)

#define T_MAIN(cases)                                                                  \
	int main(void)                                                                 \
	{                                                                              \
		int bad = 0;                                                           \
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {        \
			t_failed = 0;                                                  \
			cases[i].fn();                                                 \
			printf("%s - %s\n", t_failed ? "not ok" : "ok", cases[i].name); \
			bad |= t_failed;                                               \
		}                                                                      \
		return bad;                                                            \
	}

#endif
