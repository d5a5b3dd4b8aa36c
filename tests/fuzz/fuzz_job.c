/* fuzz_job.c: libFuzzer target for queue/job.c: job_decode and job_fini (a
 * job stream entry, which any application that can XADD writes), the results
 * built from a decoded job, and job_entry_id_parse. Addresses go through
 * sender/msg.c's parser and list splitter, as in `mxsend run`. Not built by
 * default: `make fuzz` builds and runs it (build/fuzz/fuzz_job, corpus
 * build/fuzz/corpus/job seeded from tests/fuzz/seeds/job/); `make test`
 * replays the seeds (replay.c).
 *
 * Input: the first byte is the separator; the rest, cut at it, is the stream
 * entry id followed by field, value, field, value... (binary safe: values may
 * hold NULs when the separator is not NUL). Besides the sanitizers, the
 * target checks job.h's promises and aborts if one is broken: the reason, the
 * grouping of recipients by domain, the results, and that a job put back in
 * the queue with job_join_rcpts's `to` decodes to the same recipients. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "queue/job.h"
#include "sender/msg.h"
#include "tests/fuzz/fuzz.h"

#define MAX_PIECES 41 /* the id and 20 fields */
#define MAX_SIZE 4096 /* max_message_size, small enough to be reached */

/* What `mxsend run` gives job_decode (msg_addr_norm), checking on the way the
 * promises job.c builds on: a reason for every refusal, and "local@domain"
 * with the domain lowercase. */
static int addr_ok(const char *addr, char *norm, size_t normlen, const char **err)
{
	struct msg_addr a;
	*err = NULL;
	int k = msg_addr_norm(addr, norm, normlen, err);
	FUZZ_NEED(k == 0 || (*err != NULL && (*err)[0] != '\0'));
	FUZZ_NEED(k != 0 || (msg_addr_parse(addr, &a, err) == 0 &&
			     strcmp(strrchr(norm, '@') + 1, a.domain) == 0));
	return k;
}

static const char *const pools[] = { "news", "tx" };
static const struct job_limits lim = { .max_size = MAX_SIZE, .addr_ok = addr_ok,
				       .split = msg_split_list, .pools = pools, .npools = 2 };

/* A decimal part of an entry id, without leading zeros, as %llu prints it. */
static bool same_number(const char *digits, size_t n, uint64_t v)
{
	char want[24];
	while (n > 1 && *digits == '0') {
		digits++;
		n--;
	}
	int k = snprintf(want, sizeof(want), "%" PRIu64, v);
	return (size_t)k == n && memcmp(want, digits, n) == 0;
}

static void check_entry_id(const char *s)
{
	uint64_t ms = 1, seq = 1;
	if (job_entry_id_parse(s, &ms, &seq) != 0)
		return;
	const char *dash = strchr(s, '-');
	FUZZ_NEED(dash != NULL && dash > s && dash[1] != '\0');
	FUZZ_NEED(strspn(s, "0123456789") == (size_t)(dash - s));
	FUZZ_NEED(strspn(dash + 1, "0123456789") == strlen(dash + 1));
	FUZZ_NEED(same_number(s, (size_t)(dash - s), ms));
	FUZZ_NEED(same_number(dash + 1, strlen(dash + 1), seq));
}

static void check_results(const struct job *j)
{
	const char *val[JOB_RESULT_NFIELDS];
	size_t len[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	int n = j->nrcpt < 50 ? j->nrcpt : 50;
	for (int i = -1; i < n; i++) {
		enum job_status st = i < 0 || j->reason[0] ? JOB_REJECTED : JOB_DELIVERED;
		job_result_values(j, i, st, 1000000, val, len, scratch);
		for (int k = 0; k < JOB_RESULT_NFIELDS; k++)
			FUZZ_NEED(val[k] != NULL && strlen(val[k]) == len[k]);
		FUZZ_NEED(strcmp(val[2], i < 0 ? "" : j->rcpts[i].addr) == 0);
		FUZZ_NEED(strcmp(val[0], j->id) == 0 && strcmp(val[1], j->job_id) == 0);
		/* bounded echoes, even for a rejected job (job.h caps) */
		FUZZ_NEED(len[0] <= JOB_ID_MAX_DEFAULT || j->id == j->job_id);
		FUZZ_NEED(len[18] <= JOB_META_MAX_DEFAULT && len[2] < JOB_ADDR_MAX);
		for (size_t k = 0; k < len[2]; k++) /* valid or escaped: no controls */
			FUZZ_NEED((unsigned char)val[2][k] >= 0x20 && val[2][k] != 0x7f);
	}
}

static void check_rejected(const struct job *j)
{
	FUZZ_NEED(j->reason[0] != '\0' && strnlen(j->reason, JOB_REASON_MAX) < JOB_REASON_MAX);
	FUZZ_NEED(j->nrcpt >= 0 && j->nrcpt <= JOB_MAX_RCPT && j->ndomain == 0);
	for (int i = 0; i < j->nrcpt; i++) {
		FUZZ_NEED(j->rcpts[i].status == JOB_REJECTED && j->rcpts[i].dom == -1);
		FUZZ_NEED(j->rcpts[i].addr != NULL && j->rcpts[i].addr[0] != '\0');
	}
	FUZZ_NEED(job_complete(j));
}

static void check_valid(const struct job *j, const char *data, size_t dlen)
{
	FUZZ_NEED(j->reason[0] == '\0');
	FUZZ_NEED(j->nrcpt >= 1 && j->nrcpt <= JOB_MAX_RCPT);
	FUZZ_NEED(j->ndomain >= 1 && j->ndomain <= j->nrcpt);
	FUZZ_NEED(j->len == dlen && j->len >= 1 && j->len <= MAX_SIZE);
	FUZZ_NEED(memcmp(j->data, data, dlen) == 0);
	char why[64];
	FUZZ_NEED(job_data_check(j->data, j->len, why, sizeof(why)) == 0);
	FUZZ_NEED(j->from[0] == '\0' || strchr(j->from, '@') != NULL);
	FUZZ_NEED(j->tls == JOB_TLS_DEFAULT || j->tls == JOB_TLS_ENCRYPT || j->tls == JOB_TLS_VERIFY);
	FUZZ_NEED(!j->has_expires || j->expires_s <= JOB_MAX_EXPIRES);
	int total = 0;
	for (int d = 0; d < j->ndomain; d++) {
		const struct job_domain *dom = &j->domains[d];
		FUZZ_NEED(dom->n >= 1 && dom->first == total);
		FUZZ_NEED(d == 0 || strcmp(j->domains[d - 1].name, dom->name) < 0); /* each once */
		/* lowercase, but for the tag of "[IPv6:...]" (msg.h) */
		const char *lc = strncmp(dom->name, "[IPv6:", 6) == 0 ? dom->name + 6 : dom->name;
		for (const char *c = lc; *c; c++)
			FUZZ_NEED(!(*c >= 'A' && *c <= 'Z'));
		for (int k = 0; k < dom->n; k++) {
			int i = dom->first + k;
			const struct job_rcpt *r = &j->rcpts[i];
			FUZZ_NEED(r->dom == d && r->status == JOB_PENDING && r->text == NULL);
			FUZZ_NEED(strcmp(r->domain, dom->name) == 0);
			FUZZ_NEED(dom->addrs[k] == j->norm[i]);
			const char *at = strrchr(j->norm[i], '@');
			FUZZ_NEED(at != NULL && strcmp(at + 1, dom->name) == 0);
			FUZZ_NEED(k == 0 || strcmp(j->norm[i - 1], j->norm[i]) < 0); /* no duplicates */
		}
		total += dom->n;
	}
	FUZZ_NEED(total == j->nrcpt);
	FUZZ_NEED(!job_complete(j));
}

/* Outcomes for every recipient: then the job is complete, and results carry them. */
static void check_outcomes(struct job *j)
{
	struct job_outcome o = { .status = JOB_DELIVERED, .code = 250, .dsn = "2.0.0",
				 .reply = "ok", .mx = "mx.example.com", .ip = "192.0.2.1",
				 .port = 25, .tls = "TLSv1.3", .policy = "sts" };
	for (int i = 0; i < j->nrcpt; i++) {
		job_set_outcome(j, i, &o);
		job_set_outcome(j, i, &o); /* a second call replaces the first */
	}
	FUZZ_NEED(job_complete(j));
	check_results(j);
}

/* The job put back in the queue (retry): `to` = the recipients joined. */
static void check_requeue(const struct job *j, const struct fuzz_pieces *pc)
{
	int *idx = malloc((size_t)j->nrcpt * sizeof(*idx));
	FUZZ_NEED(idx != NULL);
	for (int i = 0; i < j->nrcpt; i++)
		idx[i] = i;
	char *to = job_join_rcpts(j, idx, j->nrcpt);
	FUZZ_NEED(to != NULL);
	const char *kv[MAX_PIECES];
	size_t kvlen[MAX_PIECES];
	size_t nkv = (size_t)pc->n - 1;
	for (size_t i = 0; i < nkv; i++) {
		kv[i] = pc->s[i + 1];
		kvlen[i] = pc->len[i + 1];
		if (i % 2 == 1 && kvlen[i - 1] == 2 && memcmp(kv[i - 1], "to", 2) == 0) {
			kv[i] = to;
			kvlen[i] = strlen(to);
		}
	}
	struct job j2;
	FUZZ_NEED(job_decode(&j2, j->entry, nkv, kv, kvlen, &lim) == 0);
	FUZZ_NEED(j2.nrcpt == j->nrcpt && j2.ndomain == j->ndomain);
	for (int i = 0; i < j->nrcpt; i++)
		FUZZ_NEED(strcmp(j2.norm[i], j->norm[i]) == 0);
	job_fini(&j2);
	free(to);
	free(idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	struct fuzz_pieces pc;
	fuzz_split(&pc, data + 1, size - 1, data[0], MAX_PIECES);
	const char *entry = pc.s[0];
	check_entry_id(entry);
	const char *kv[MAX_PIECES];
	size_t kvlen[MAX_PIECES];
	size_t nkv = (size_t)pc.n - 1;
	const char *dv = NULL;
	size_t dl = 0;
	for (size_t i = 0; i < nkv; i++) {
		kv[i] = pc.s[i + 1];
		kvlen[i] = pc.len[i + 1];
		if (i % 2 == 1 && dv == NULL && kvlen[i - 1] == 4 && memcmp(kv[i - 1], "data", 4) == 0) {
			dv = kv[i];
			dl = kvlen[i];
		}
	}
	struct job j;
	int rc = job_decode(&j, entry, nkv, kv, kvlen, &lim);
	FUZZ_NEED(rc == 0 || rc == -1);
	FUZZ_NEED(strnlen(j.entry, sizeof(j.entry)) < sizeof(j.entry));
	FUZZ_NEED(j.id != NULL && j.job_id != NULL && j.from != NULL && j.meta != NULL);
	if (rc == 0) {
		check_valid(&j, dv, dl);
		check_results(&j);
		check_requeue(&j, &pc);
		check_outcomes(&j);
	} else {
		check_rejected(&j);
		check_results(&j);
	}
	job_fini(&j);
	job_fini(&j); /* safe twice */
	fuzz_pieces_free(&pc);
	return 0;
}
