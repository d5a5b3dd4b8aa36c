/* fuzz_https_resp.c: libFuzzer target for the HTTP/1.1 response parser of
 * sender/policy/https.c (struct https_resp), which reads what an MTA-STS policy host
 * (RFC 8461 3.3) or a TLSRPT report endpoint sends back: status line, headers,
 * Content-Type with parameters, Content-Length, chunked coding, bodies
 * delimited by the close, interim 1xx replies, the body cap (64 KiB for
 * policies). Not built by default: `make fuzz` builds and runs it
 * (build/fuzz/fuzz_https_resp, corpus build/fuzz/corpus/https_resp seeded from
 * tests/fuzz/seeds/https_resp/); `make test` replays the seeds (replay.c).
 *
 * Input: one option byte, then the bytes the server sends before closing.
 * Option bits: 0 any Content-Type (else "text/plain", as stspol.c asks),
 * 1 any 2xx (the report POST), 2+3 both set: a HEAD request, 4-5 the body cap
 * (0-1: the default 64 KiB, 2: 16 bytes, 3: 1000 bytes). The response goes to
 * three parsers: in one piece, in pieces of random sizes (seeded from the
 * input), and a byte at a time (short inputs); then each sees the close. The
 * result must not depend on the cuts, and must keep https.h's promises;
 * otherwise the target aborts. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "sender/policy/https.h"
#include "tests/fuzz/fuzz.h"

struct opts {
	const char *want;
	bool any_2xx, head;
	size_t cap; /* 0: the default */
};

struct run {
	struct https_resp *p;
	bool done, eof;
};

static void run_start(struct run *r, const struct opts *o)
{
	r->p = https_resp_new(o->cap, o->want, o->any_2xx, o->head);
	r->done = r->eof = false;
}

static void run_feed(struct run *r, const char *b, size_t n)
{
	bool d = https_resp_input(r->p, b, n);
	FUZZ_NEED(!r->done || d); /* once complete, it stays complete */
	r->done = d;
}

static void run_close(struct run *r)
{
	if (!r->done)
		r->eof = r->done = https_resp_eof(r->p);
	FUZZ_NEED(!https_resp_eof(r->p) || r->eof); /* a second close changes nothing */
}

/* Does Content-Type value v name media type want? (https.h: parameters are
 * allowed; written from the RFC 9110 8.3.1 grammar, not from the parser.) */
static bool type_matches(const char *v, const char *want)
{
	size_t l = strlen(want);
	v += strspn(v, " \t");
	if (strncasecmp(v, want, l) != 0)
		return false;
	v += l;
	v += strspn(v, " \t");
	return *v == '\0' || *v == ';';
}

static void check_result(const struct run *r, const struct opts *o, size_t n)
{
	const struct https_result *res = https_resp_result(r->p);
	size_t cap = o->cap ? o->cap : HTTPS_BODY_MAX_DEFAULT;
	FUZZ_NEED(res->body != NULL && res->len <= cap && res->len <= n);
	FUZZ_NEED(res->body[res->len] == '\0');
	FUZZ_NEED(strnlen(res->content_type, sizeof(res->content_type)) < sizeof(res->content_type));
	FUZZ_NEED(strnlen(res->why, sizeof(res->why)) < sizeof(res->why));
	FUZZ_NEED(res->peer[0] == '\0');
	FUZZ_NEED(res->status == 0 || (res->status >= 100 && res->status <= 599));
	FUZZ_NEED(res->fail >= HTTPS_OK && res->fail <= HTTPS_E_TOO_BIG);
	if (!r->done) { /* truncated: nothing is final yet */
		FUZZ_NEED(res->fail == HTTPS_OK && res->why[0] == '\0');
		return;
	}
	if (res->fail != HTTPS_OK) {
		FUZZ_NEED(res->why[0] != '\0');
		return;
	}
	FUZZ_NEED(https_resp_head_done(r->p));
	FUZZ_NEED(o->any_2xx ? res->status >= 200 && res->status <= 299 : res->status == 200);
	FUZZ_NEED(o->want == NULL || type_matches(res->content_type, o->want));
	FUZZ_NEED(!o->head || res->len == 0);
}

static void same_result(const struct run *a, const struct run *b)
{
	const struct https_result *x = https_resp_result(a->p), *y = https_resp_result(b->p);
	FUZZ_NEED(a->done == b->done && a->eof == b->eof);
	FUZZ_NEED(https_resp_head_done(a->p) == https_resp_head_done(b->p));
	FUZZ_NEED(x->fail == y->fail && x->status == y->status && x->len == y->len);
	FUZZ_NEED(memcmp(x->body, y->body, x->len) == 0);
	FUZZ_NEED(strcmp(x->content_type, y->content_type) == 0);
	FUZZ_NEED(strcmp(x->why, y->why) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	static const size_t caps[] = { 0, 0, 16, 1000 };
	uint8_t opt = data[0];
	struct opts o = {
		.want = (opt & 1) ? NULL : "text/plain",
		.any_2xx = (opt & 2) != 0,
		.head = (opt & 0x0c) == 0x0c,
		.cap = caps[(opt >> 4) & 3],
	};
	/* an exact copy: a read past the response is an ASan report */
	size_t n = size - 1;
	char *resp = fuzz_cstr(data + 1, n);
	uint64_t rng = fuzz_hash(data, size) | 1;
	struct run one, cut, byte;

	run_start(&one, &o);
	run_feed(&one, resp, n);
	run_close(&one);
	check_result(&one, &o, n);

	run_start(&cut, &o);
	for (size_t at = 0; at < n;) {
		uint64_t x = fuzz_rand(&rng);
		size_t k = (x & 7) == 0 ? (size_t)(x >> 3) % (n - at) + 1 : (size_t)(x >> 3) % 17 + 1;
		if (k > n - at)
			k = n - at;
		run_feed(&cut, resp + at, k);
		at += k;
	}
	run_close(&cut);
	same_result(&one, &cut);

	if (n <= 4096) {
		run_start(&byte, &o);
		for (size_t at = 0; at < n; at++)
			run_feed(&byte, resp + at, 1);
		run_close(&byte);
		same_result(&one, &byte);
		https_resp_free(byte.p);
	}
	https_resp_free(one.p);
	https_resp_free(cut.p);
	free(resp);
	return 0;
}
