/* fuzz_tlsrpt_counts.c: libFuzzer target for the TLSRPT counters of
 * tlscache/tlsrpt.c: tlsrpt_event_cmds (an event whose MX host, addresses and
 * failure reason come from a remote peer's session), tlsrpt_counts_add /
 * _finish / _fini (a day's Redis hash, which every mxsend process sharing the
 * Redis writes into) and tlsrpt_json (the RFC 8460 4.4 report built from it).
 * Not built by default: `make fuzz` builds and runs it
 * (build/fuzz/fuzz_tlsrpt_counts, corpus build/fuzz/corpus/tlsrpt_counts seeded
 * from tests/fuzz/seeds/tlsrpt_counts/); `make test` replays the seeds
 * (replay.c).
 *
 * The input, cut at LF, is read twice: the first ten lines as an event
 * (policy domain, type, id, mode, mx; MX host, its address, our address,
 * result type, reason), counted into an in-memory hash as Redis would and
 * read back; and all lines as field, value, field, value... of a hash as
 * HGETALL returns it. Besides the sanitizers, the target checks tlsrpt.h's
 * promises and aborts if one is broken: a counted event reads back as one
 * session of its policy, finished counts are sorted and non-empty, and the
 * report is always produced and is valid JSON. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "tlscache/tlsrpt.h"
#include "tests/fuzz/fuzz.h"

#define MAX_LINES 64
#define MAX_FIELDS 8

/* A Redis hash, as far as one event's commands go. */
struct hash {
	int n, ncmd;
	char *f[MAX_FIELDS], *v[MAX_FIELDS];
	size_t flen[MAX_FIELDS], vlen[MAX_FIELDS];
	char key[600];
};

static char *copy(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	FUZZ_NEED(d != NULL);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static void hash_set(struct hash *h, const char *f, size_t fl, const char *v, size_t vl, bool incr)
{
	int i = 0;
	while (i < h->n && !(h->flen[i] == fl && memcmp(h->f[i], f, fl) == 0))
		i++;
	FUZZ_NEED(i < MAX_FIELDS);
	if (i == h->n) {
		h->f[h->n] = copy(f, fl);
		h->flen[h->n] = fl;
		h->v[h->n] = copy("0", 1);
		h->vlen[h->n++] = 1;
	}
	if (incr) /* one event adds 1 at most */
		FUZZ_NEED(vl == 1 && v[0] == '1' && strcmp(h->v[i], "0") == 0);
	free(h->v[i]);
	h->v[i] = copy(v, vl);
	h->vlen[i] = vl;
}

static int emit(void *arg, int argc, const char **argv, const size_t *len)
{
	struct hash *h = arg;
	FUZZ_NEED(argc >= 3 && argc <= 8);
	for (int i = 0; i < argc; i++)
		FUZZ_NEED(argv[i] != NULL && strlen(argv[i]) == len[i]);
	h->ncmd++;
	if (strcmp(argv[0], "HINCRBY") == 0 || strcmp(argv[0], "HSET") == 0) {
		/* both write the day's hash of the domain */
		FUZZ_NEED(h->key[0] == '\0' || strcmp(h->key, argv[1]) == 0);
		snprintf(h->key, sizeof(h->key), "%s", argv[1]);
		FUZZ_NEED(argc % 2 == 0);
		for (int i = 2; i + 1 < argc; i += 2)
			hash_set(h, argv[i], len[i], argv[i + 1], len[i + 1], argv[0][1] == 'I');
	}
	return 0;
}

static void hash_free(struct hash *h)
{
	for (int i = 0; i < h->n; i++) {
		free(h->f[i]);
		free(h->v[i]);
	}
}

/* Finished counts: sorted, no empty policy, failures add up; and a report. */
static void check_counts(const struct tlsrpt_counts *c)
{
	for (int i = 0; i < c->npol; i++) {
		const struct tlsrpt_policy *p = &c->pol[i];
		FUZZ_NEED(i == 0 || strcmp(c->pol[i - 1].key, p->key) <= 0);
		FUZZ_NEED(p->ok + p->failed > 0);
		uint64_t sum = 0;
		for (int k = 0; k < p->nfail; k++) {
			FUZZ_NEED(p->fail[k].count > 0);
			sum += p->fail[k].count;
		}
		FUZZ_NEED(sum == p->failed);
	}
	const struct tlsrpt_meta m = { .org = "Example", .contact = "mailto:tls@example.com",
				       .report_id = "r1", .day_start = 1717200000 };
	for (int pretty = 0; pretty < 2; pretty++) {
		char *js = tlsrpt_json(c, &m, pretty);
		FUZZ_NEED(js != NULL);
		json_error_t e;
		json_t *root = json_loads(js, 0, &e);
		FUZZ_NEED(root != NULL);
		json_t *pols = json_object_get(root, "policies");
		FUZZ_NEED(json_is_array(pols) && json_array_size(pols) == (size_t)c->npol);
		for (size_t i = 0; i < json_array_size(pols); i++) {
			json_t *pol = json_object_get(json_array_get(pols, i), "policy");
			json_t *sum = json_object_get(json_array_get(pols, i), "summary");
			/* every string the report must carry made it in, mangled or not */
			FUZZ_NEED(json_is_string(json_object_get(pol, "policy-type")));
			FUZZ_NEED(json_is_string(json_object_get(pol, "policy-domain")));
			FUZZ_NEED(json_is_integer(json_object_get(sum, "total-failure-session-count")));
		}
		json_decref(root);
		free(js);
	}
}

static void check_event(char *const *l, uint64_t when)
{
	/* the event as the engine hands it over: fixed-size fields, each line cut
	 * to its field (tlscache/tls_event.h) */
	struct tls_event ev = { .max_age = 86400, .when_ms = when };
	char *const f[] = { ev.policy_domain, ev.policy_type, ev.policy_id, ev.policy_mode,
			    ev.policy_mx, ev.mx, ev.ip, ev.sending_ip, ev.result, ev.detail };
	const size_t fl[] = { sizeof(ev.policy_domain), sizeof(ev.policy_type), sizeof(ev.policy_id),
			      sizeof(ev.policy_mode), sizeof(ev.policy_mx), sizeof(ev.mx), sizeof(ev.ip),
			      sizeof(ev.sending_ip), sizeof(ev.result), sizeof(ev.detail) };
	for (int i = 0; i < 10; i++)
		snprintf(f[i], fl[i], "%s", l[i]);
	struct hash h = { 0 };
	int n = tlsrpt_event_cmds(&ev, NULL, emit, &h);
	FUZZ_NEED(n == -EINVAL || n == 4 || n == 5);
	FUZZ_NEED(n < 0 ? h.ncmd == 0 : n == h.ncmd); /* nothing emitted for a bad event */
	if (n > 0) {
		struct tlsrpt_counts c;
		memset(&c, 0, sizeof(c));
		snprintf(c.domain, sizeof(c.domain), "%s", ev.policy_domain);
		for (int i = 0; i < h.n; i++)
			FUZZ_NEED(tlsrpt_counts_add(&c, h.f[i], h.flen[i], h.v[i], h.vlen[i]) == 0);
		tlsrpt_counts_finish(&c);
		FUZZ_NEED(c.npol == 1 && c.pol[0].ok + c.pol[0].failed == 1);
		const struct tlsrpt_policy *p = &c.pol[0];
		FUZZ_NEED((p->failed == 1) == (ev.result[0] != '\0'));
		if (p->failed == 1) {
			FUZZ_NEED(p->nfail == 1 && strcasecmp(p->fail[0].result, ev.result) == 0);
			FUZZ_NEED(strcmp(p->fail[0].detail, ev.detail) == 0);
		}
		check_counts(&c);
		tlsrpt_counts_fini(&c);
	}
	hash_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_pieces pc;
	fuzz_split(&pc, data, size, '\n', MAX_LINES);
	static char empty[1];
	char *l[10];
	for (int i = 0; i < 10; i++)
		l[i] = i < pc.n ? pc.s[i] : empty;
	check_event(l, fuzz_hash(data, size) % 253402300799000ull);

	struct tlsrpt_counts c;
	memset(&c, 0, sizeof(c));
	snprintf(c.domain, sizeof(c.domain), "%s", pc.s[0]);
	for (int i = 0; i + 1 < pc.n; i += 2)
		tlsrpt_counts_add(&c, pc.s[i], pc.len[i], pc.s[i + 1], pc.len[i + 1]);
	tlsrpt_counts_finish(&c);
	check_counts(&c);
	tlsrpt_counts_fini(&c);
	fuzz_pieces_free(&pc);
	return 0;
}
