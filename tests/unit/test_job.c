/* test_job.c: job decoding/validation and result encoding (queue/job.c),
 * with the real address parser and list splitter from sender/msg.c, plus the
 * Redis URL parser of queue/queue.c (pure). */
#include "queue/job.h"

#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "sender/msg.h"
#include "tests/t.h"

static const struct job_limits lim = { .max_size = 1000, .addr_ok = msg_addr_norm, .split = msg_split_list };

/* Decode from a NULL-terminated list of C strings (field, value, ...). */
static int decode(struct job *j, const char *const *kv)
{
	size_t n = 0, len[64];
	while (kv[n] != NULL) {
		len[n] = strlen(kv[n]);
		n++;
	}
	return job_decode(j, "1700000000123-7", n, kv, len, &lim);
}

static void t_valid(void)
{
	struct job j;
	const char *kv[] = { "from", "Sender@Example.ORG", "to",
			     " b@Two.test, a@one.test,c@two.test ,<a@one.test>",
			     "data", "Subject: x\n\nbody\n", "meta", "camp-1", "x-unknown", "ignored",
			     NULL };
	CHECK_INT(decode(&j, kv), 0);
	CHECK_STR(j.reason, "");
	CHECK_STR(j.entry, "1700000000123-7");
	CHECK_STR(j.job_id, "1700000000123-7");
	CHECK_STR(j.id, "1700000000123-7"); /* default id: the entry id */
	CHECK_STR(j.meta, "camp-1");
	CHECK_STR(j.from, "Sender@example.org");
	CHECK_INT(j.len, strlen("Subject: x\n\nbody\n"));
	CHECK_INT(j.tls, JOB_TLS_DEFAULT);
	CHECK(!j.has_expires);
	CHECK_INT(j.attempt, 0);
	CHECK_INT(j.since_ms, 1700000000123ULL);
	/* a@one.test twice (plain and <>) is one recipient */
	CHECK_INT(j.nrcpt, 3);
	CHECK_INT(j.ndomain, 2);
	CHECK_STR(j.domains[0].name, "one.test");
	CHECK_INT(j.domains[0].n, 1);
	CHECK_STR(j.domains[0].addrs[0], "a@one.test");
	CHECK_STR(j.domains[1].name, "two.test");
	CHECK_INT(j.domains[1].first, 1);
	CHECK_INT(j.domains[1].n, 2);
	CHECK_STR(j.domains[1].addrs[0], "b@two.test");
	CHECK_STR(j.domains[1].addrs[1], "c@two.test");
	CHECK_STR(j.rcpts[1].addr, "b@Two.test"); /* results echo what was written */
	CHECK_INT(j.rcpts[2].dom, 1);
	CHECK(!job_complete(&j));
	job_fini(&j);
}

static void t_fields(void)
{
	struct job j;
	const char *kv[] = { "from", "", "to", "x@y.test", "data", "d", "id", "app-42",
			     "tls", "verify", "expires", "3600", "job", "1600000000000-1",
			     "attempt", "3", "since", "1600000000500", NULL };
	CHECK_INT(decode(&j, kv), 0);
	CHECK_STR(j.from, ""); /* null reverse-path */
	CHECK_STR(j.id, "app-42");
	CHECK_STR(j.job_id, "1600000000000-1");
	CHECK_INT(j.tls, JOB_TLS_VERIFY);
	CHECK(j.has_expires);
	CHECK_INT(j.expires_s, 3600);
	CHECK_INT(j.attempt, 3);
	CHECK_INT(j.since_ms, 1600000000500ULL);
	job_fini(&j);

	const char *kv2[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "tls", "encrypt", NULL };
	CHECK_INT(decode(&j, kv2), 0);
	CHECK_INT(j.tls, JOB_TLS_ENCRYPT);
	job_fini(&j);
}

/* Expect a rejection with this reason and this many per-recipient items. */
static void expect_reject(const char *const *kv, const char *reason, int nrcpt)
{
	struct job j;
	CHECK_INT(decode(&j, kv), -1);
	CHECK_STR(j.reason, reason);
	CHECK_INT(j.nrcpt, nrcpt);
	for (int i = 0; i < j.nrcpt; i++)
		CHECK_INT(j.rcpts[i].status, JOB_REJECTED);
	job_fini(&j);
}

static void t_missing(void)
{
	const char *a[] = { "to", "x@y.test, z@y.test", "data", "d", NULL };
	expect_reject(a, "missing field: from", 2);
	const char *b[] = { "from", "a@b.test", "data", "d", NULL };
	expect_reject(b, "missing field: to", 0);
	const char *c[] = { "from", "a@b.test", "to", "x@y.test", NULL };
	expect_reject(c, "missing field: data", 1);
	const char *d[] = { NULL };
	expect_reject(d, "missing field: from", 0);
	const char *e[] = { "from", "a@b.test", "to", " , ", "data", "d", NULL };
	expect_reject(e, "no recipients", 0);
}

static void t_bad_address(void)
{
	const char *a[] = { "from", "a@b.test", "to", "ok@y.test, x", "data", "d", NULL };
	expect_reject(a, "bad address \"x\": missing @", 2);
	const char *b[] = { "from", "nobody", "to", "ok@y.test", "data", "d", NULL };
	expect_reject(b, "bad address \"nobody\": missing @", 1);
	const char *c[] = { "from", "a@b.test", "to", "@y.test", "data", "d", NULL };
	struct job j;
	size_t len[6];
	for (int i = 0; i < 6; i++)
		len[i] = strlen(c[i]);
	CHECK_INT(job_decode(&j, "1-1", 6, c, len, &lim), -1);
	CHECK(strncmp(j.reason, "bad address \"@y.test\": ", 23) == 0);
	job_fini(&j);
	/* control bytes are not copied into the reason */
	const char *d[] = { "from", "a@b.test", "to", "bad\001addr", "data", "d", NULL };
	expect_reject(d, "bad address \"bad?addr\": control character in address", 1);
}

static void t_data(void)
{
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "", NULL };
	expect_reject(a, "empty data", 1);
	char big[1200];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	const char *b[] = { "from", "a@b.test", "to", "x@y.test", "data", big, NULL };
	expect_reject(b, "data exceeds max_message_size (1000)", 1);
	/* a NUL byte is refused, naming its line */
	struct job j;
	const char *kv[] = { "from", "", "to", "x@y.test", "data", "a\nb\r\nc\0d" };
	size_t len[] = { 4, 0, 2, 8, 4, 9 };
	CHECK_INT(job_decode(&j, "5-0", 6, kv, len, &lim), -1);
	CHECK_STR(j.reason, "data: NUL byte at line 3");
	CHECK_INT(j.nrcpt, 1);
	job_fini(&j);
}

static void t_data_check(void)
{
	char why[64];
	static char buf[8192];
	CHECK_INT(job_data_check("", 0, why, sizeof(why)), 0);
	CHECK_INT(job_data_check("a\nb", 3, why, sizeof(why)), 0);
	CHECK_INT(job_data_check("\0", 1, why, sizeof(why)), -1);
	CHECK_STR(why, "NUL byte at line 1");
	CHECK_INT(job_data_check("a\n\n\nx\0", 6, why, sizeof(why)), -1);
	CHECK_STR(why, "NUL byte at line 4");
	/* 998 octets + CRLF or LF is the limit (RFC 5322 2.1.1), CRLF excluded */
	memset(buf, 'x', sizeof(buf));
	memcpy(buf + 998, "\r\n", 2);
	CHECK_INT(job_data_check(buf, 1000, why, sizeof(why)), 0);
	buf[998] = '\n';
	CHECK_INT(job_data_check(buf, 999, why, sizeof(why)), 0);
	CHECK_INT(job_data_check(buf, 998, why, sizeof(why)), 0); /* last line, no LF */
	CHECK_INT(job_data_check(buf, 999 - 1 + 1, why, sizeof(why)), 0);
	memset(buf, 'x', sizeof(buf));
	CHECK_INT(job_data_check(buf, 999, why, sizeof(why)), -1);
	CHECK_STR(why, "line 1 exceeds 998 octets");
	/* line 7 of 8 is 999 octets */
	memset(buf, 'y', sizeof(buf));
	size_t o = 0;
	for (int i = 1; i <= 8; i++) {
		size_t n = i == 7 ? 999 : 10;
		o += n;
		memcpy(buf + o, "\r\n", 2);
		o += 2;
	}
	CHECK_INT(job_data_check(buf, o, why, sizeof(why)), -1);
	CHECK_STR(why, "line 7 exceeds 998 octets");
	/* the earlier problem wins: NUL on line 2, long line 7 */
	buf[13] = '\0';
	CHECK_INT(job_data_check(buf, o, why, sizeof(why)), -1);
	CHECK_STR(why, "NUL byte at line 2");
	/* a lone CR ends a line on the wire: 2 x 600 octets is fine, and a
	 * trailing lone CR is a line end too */
	memset(buf, 'z', sizeof(buf));
	buf[600] = '\r';
	CHECK_INT(job_data_check(buf, 1201, why, sizeof(why)), 0);
	buf[1200] = '\r';
	CHECK_INT(job_data_check(buf, 1201, why, sizeof(why)), 0);
	buf[600] = 'z';
	CHECK_INT(job_data_check(buf, 1201, why, sizeof(why)), -1);
	CHECK_STR(why, "line 1 exceeds 998 octets");
	/* the same through a job: a 1 MB message of 998-octet lines passes */
	size_t big = 1000 * 1000;
	char *m = malloc(big);
	for (size_t i = 0; i < big; i += 1000) {
		memset(m + i, 'q', 998);
		memcpy(m + i + 998, "\r\n", 2);
	}
	CHECK_INT(job_data_check(m, big, why, sizeof(why)), 0);
	m[500 * 1000 + 998] = 'q'; /* line 501 runs into 502 */
	CHECK_INT(job_data_check(m, big, why, sizeof(why)), -1);
	CHECK_STR(why, "line 501 exceeds 998 octets");
	free(m);
	struct job j;
	memset(buf, 'w', 1000);
	buf[1000] = '\0';
	const char *kv[] = { "from", "a@b.test", "to", "x@y.test", "data", buf, NULL };
	static const struct job_limits big_lim = { .max_size = 100000, .addr_ok = msg_addr_norm,
						   .split = msg_split_list };
	size_t len[6];
	for (int i = 0; i < 6; i++)
		len[i] = strlen(kv[i]);
	CHECK_INT(job_decode(&j, "1-1", 6, kv, len, &big_lim), -1);
	CHECK_STR(j.reason, "data: line 1 exceeds 998 octets");
	job_fini(&j);
}

/* id and meta reach every result, logs and terminals: a control byte there
 * rejects the job, and the rejected result carries the value escaped;
 * printable and 8-bit bytes stay as they are (issue 17.7). */
static void t_id_meta_controls(void)
{
	struct job j;
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "id", "c8\x1b]0;x\a",
			    NULL };
	CHECK_INT(decode(&j, a), -1);
	CHECK_STR(j.reason, "id holds a control byte (0x1b) at offset 2");
	CHECK_STR(j.id, "c8\\x1b]0;x\\x07");
	job_fini(&j);
	const char *b[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "meta", "{\"t\":\"a\tb\"}",
			    NULL };
	CHECK_INT(decode(&j, b), -1);
	CHECK_STR(j.reason, "meta holds a control byte (0x09) at offset 7");
	job_fini(&j);
	const char *c[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "meta", "x\x7f", NULL };
	CHECK_INT(decode(&j, c), -1);
	CHECK_STR(j.reason, "meta holds a control byte (0x7f) at offset 1");
	job_fini(&j);
	/* printable, 8-bit (UTF-8), quotes and backslashes: byte for byte */
	const char *d[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "id", "caf\xc3\xa9 \"q\" \\b",
			    "meta", "{\"tenant\": 7}", NULL };
	CHECK_INT(decode(&j, d), 0);
	CHECK_STR(j.id, "caf\xc3\xa9 \"q\" \\b");
	CHECK_STR(j.meta, "{\"tenant\": 7}");
	job_fini(&j);
}

static void t_caps(void)
{
	static char id[3000], meta[6000];
	memset(id, 'i', sizeof(id) - 1);
	memset(meta, 'm', sizeof(meta) - 1);
	struct job j;
	const char *v[JOB_RESULT_NFIELDS];
	size_t l[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	/* at the default caps: fine */
	id[1024] = '\0';
	meta[4096] = '\0';
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "id", id, "meta", meta, NULL };
	CHECK_INT(decode(&j, a), 0);
	CHECK_INT(strlen(j.id), 1024);
	job_fini(&j);
	/* one byte over: rejected naming the field, echoed cut to the cap */
	id[1024] = 'i';
	CHECK_INT(decode(&j, a), -1);
	CHECK_STR(j.reason, "id exceeds 1024 bytes");
	CHECK_INT(j.nrcpt, 1);
	job_result_values(&j, 0, JOB_REJECTED, 1, v, l, scratch);
	CHECK_INT(l[0], 1024);
	CHECK_INT(l[18], 4096);
	job_fini(&j);
	id[1024] = '\0';
	meta[4096] = 'm';
	CHECK_INT(decode(&j, a), -1);
	CHECK_STR(j.reason, "meta exceeds 4096 bytes");
	job_result_values(&j, -1, JOB_REJECTED, 1, v, l, scratch);
	CHECK_INT(l[18], 4096);
	job_fini(&j);
	/* configured caps */
	static const struct job_limits small = { .max_size = 1000, .max_id = 8, .max_meta = 4,
						 .addr_ok = msg_addr_norm, .split = msg_split_list };
	const char *b[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "id", "123456789", "meta", "abcd", NULL };
	size_t len[10];
	for (int i = 0; i < 10; i++)
		len[i] = strlen(b[i]);
	CHECK_INT(job_decode(&j, "1-1", 10, b, len, &small), -1);
	CHECK_STR(j.reason, "id exceeds 8 bytes");
	CHECK_STR(j.id, "12345678");
	CHECK_STR(j.meta, "abcd");
	job_fini(&j);
	/* an oversized, hostile `to` item is echoed escaped and cut */
	static char to[3000];
	memset(to, 'r', sizeof(to) - 1);
	to[0] = '\x1b';
	const char *c[] = { "from", "a@b.test", "to", to, "data", "d", NULL };
	CHECK_INT(decode(&j, c), -1);
	CHECK_INT(j.nrcpt, 1);
	CHECK(strlen(j.rcpts[0].addr) < JOB_ADDR_MAX);
	CHECK(strncmp(j.rcpts[0].addr, "\\x1brrr", 7) == 0);
	job_fini(&j);
	const char *d[] = { "from", "a@b.test", "to", "ok@x.test, \"a\r\n\"@x.test", "data", "d", NULL };
	CHECK_INT(decode(&j, d), -1);
	CHECK_INT(j.nrcpt, 2);
	CHECK_STR(j.rcpts[0].addr, "ok@x.test");
	CHECK_STR(j.rcpts[1].addr, "\"a\\r\\n\"@x.test");
	job_fini(&j);
}

static void t_literal_rcpt(void)
{
	const char *a[] = { "from", "a@b.test", "to", "u@[192.0.2.1]", "data", "d", NULL };
	expect_reject(a, "bad address \"u@[192.0.2.1]\": address literals are not supported", 1);
	const char *b[] = { "from", "a@b.test", "to", "ok@x.test,u@[IPv6:::1]", "data", "d", NULL };
	expect_reject(b, "bad address \"u@[IPv6:::1]\": address literals are not supported", 2);
	/* a literal sender is fine (it is not where we deliver) */
	const char *c[] = { "from", "a@[192.0.2.1]", "to", "ok@x.test", "data", "d", NULL };
	struct job j;
	CHECK_INT(decode(&j, c), 0);
	job_fini(&j);
}

static void t_escape(void)
{
	char out[64];
	CHECK_INT(job_escape(out, sizeof(out), "plain text", 10, 0), 10);
	CHECK_STR(out, "plain text");
	CHECK(!job_escape_needed("plain text", 10, 0));
	CHECK_INT(job_escape(out, sizeof(out), "a\r\nb\x1b[31m\a\b\x7f\t", 13, 0), 28);
	CHECK_STR(out, "a\\r\\nb\\x1b[31m\\x07\\x08\\x7f\\t");
	CHECK(job_escape_needed("a\rb", 3, 0));
	/* backslash always, quote only when quoted */
	job_escape(out, sizeof(out), "\\\"", 2, 0);
	CHECK_STR(out, "\\\\\"");
	job_escape(out, sizeof(out), "\\\"", 2, JOB_ESC_QUOTED);
	CHECK_STR(out, "\\\\\\\"");
	CHECK(job_escape_needed("\"", 1, JOB_ESC_QUOTED));
	CHECK(!job_escape_needed("\"", 1, 0));
	job_escape(out, sizeof(out), "\\n", 2, JOB_ESC_KEEP_BACKSLASH);
	CHECK_STR(out, "\\n");
	/* UTF-8 stays; invalid bytes and C1 controls (U+009B, CSI) do not */
	job_escape(out, sizeof(out), "h\xc3\xa9 \xff \xc2\x9b", 8, 0);
	CHECK_STR(out, "h\xc3\xa9 \\xff \\xc2\\x9b");
	CHECK(!job_escape_needed("h\xc3\xa9", 3, 0));
	CHECK(job_escape_needed("\xc3", 1, 0));
	/* NUL inside the given length */
	CHECK_INT(job_escape(out, sizeof(out), "a\0b", 3, 0), 6);
	CHECK_STR(out, "a\\x00b");
	/* truncation: never half an escape, length still the full one */
	CHECK_INT(job_escape(out, 4, "ab\x1b", 3, 0), 6);
	CHECK_STR(out, "ab");
	CHECK_INT(job_escape(NULL, 0, "\n\n", 2, 0), 4);
	/* results: reply text escaped, id/meta byte for byte (they hold no
	 * control byte: t_id_meta_controls) */
	struct job j;
	const char *kv[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "id", "i\xc3\xa9" "d", "meta", "m x", NULL };
	CHECK_INT(decode(&j, kv), 0);
	struct job_outcome o = { .status = JOB_BOUNCED, .code = 550, .dsn = "5.0.0",
				 .reply = "no\x1b]0;pwned\x07 \\ x\r\nRCPT", .mx = "m", .ip = "1", .port = 25 };
	job_set_outcome(&j, 0, &o);
	const char *v[JOB_RESULT_NFIELDS];
	size_t l[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	job_result_values(&j, 0, JOB_BOUNCED, 1, v, l, scratch);
	CHECK_STR(v[6], "no\\x1b]0;pwned\\x07 \\\\ x\\r\\nRCPT");
	CHECK_INT(l[6], strlen(v[6]));
	CHECK_STR(v[0], "i\xc3\xa9" "d");
	CHECK_STR(v[18], "m x");
	job_fini(&j);
}

/* job_escape copies runs of printable ASCII at once: against the same escape
 * made one byte at a time (each ASCII byte is one item), on random ASCII with
 * every kind of byte, every flag and every output size (truncation: never
 * half an escape, the full length returned). */
static void t_escape_runs(void)
{
	static const char alpha[] = { 'a', 'Z', ' ', '~', '\\', '"', '\r', '\n', '\t', 0x1b, 0x7f, 0 };
	char in[64], got[160], want[160], one[8];
	uint32_t x = 777;
	for (int iter = 0; iter < 20000 && !t_failed; iter++) {
		size_t n = (size_t)(iter % 40), outlen = (size_t)((iter / 40) % 90);
		unsigned flags = (unsigned)(iter % 4) == 1 ? JOB_ESC_QUOTED :
				 (unsigned)(iter % 4) == 2 ? JOB_ESC_KEEP_BACKSLASH : 0;
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			unsigned r = (x >> 8) % 24;
			in[i] = r < sizeof(alpha) ? alpha[r] : (char)('b' + r);
		}
		size_t o = 0, total = 0;
		bool full = outlen == 0;
		for (size_t i = 0; i < n; i++) {
			size_t k = job_escape(one, sizeof(one), in + i, 1, flags);
			if (!full && o + k < outlen) {
				memcpy(want + o, one, k);
				o += k;
			} else {
				full = true;
			}
			total += k;
		}
		if (outlen > 0)
			want[o] = '\0';
		memset(got, 'X', sizeof(got));
		CHECK_INT(job_escape(outlen > 0 ? got : NULL, outlen, in, n, flags), total);
		CHECK_INT(job_escape(NULL, 0, in, n, flags), total);
		if (outlen > 0)
			CHECK_STR(got, want);
		CHECK_INT(job_escape_needed(in, n, flags), total != n);
		if (t_failed)
			fprintf(stderr, "  iteration %d: %zu bytes, outlen %zu, flags %u\n", iter, n, outlen, flags);
	}
}

/* job_decode_adopt: the data value is taken, not copied; other strings and a
 * data value not offered stay the caller's. ASan checks the frees. */
static void t_adopt(void)
{
	char *from = strdup("a@b.test"), *to = strdup("x@y.test"), *data = malloc(5);
	memcpy(data, "a\nbc", 5); /* NUL at len, as hiredis's */
	const char *kv[] = { "from", from, "to", to, "data", data };
	size_t len[] = { 4, 8, 2, 8, 4, 4 };
	char *adopt[] = { NULL, from, NULL, to, NULL, data };
	struct job j;
	CHECK_INT(job_decode_adopt(&j, "5-0", 6, kv, len, adopt, &lim), 0);
	CHECK(j.data == data);
	CHECK_INT(j.len, 4);
	CHECK(memcmp(j.data, "a\nbc", 4) == 0);
	CHECK(adopt[5] == NULL);
	CHECK(adopt[1] == from && adopt[3] == to);
	CHECK_STR(j.from, "a@b.test");
	CHECK(j.from != from);
	job_fini(&j); /* frees data */
	free(from);
	free(to);
	/* not offered: copied */
	char *d2 = strdup("body");
	const char *kv2[] = { "from", "", "to", "x@y.test", "data", d2 };
	size_t len2[] = { 4, 0, 2, 8, 4, 4 };
	char *adopt2[] = { NULL, NULL, NULL, NULL, NULL, NULL };
	CHECK_INT(job_decode_adopt(&j, "5-1", 6, kv2, len2, adopt2, &lim), 0);
	CHECK(j.data != d2);
	CHECK_STR(j.data, "body");
	job_fini(&j);
	free(d2);
	/* a rejected job still frees what it took */
	char *d3 = strdup("x");
	const char *kv3[] = { "from", "", "to", "not an address", "data", d3 };
	size_t len3[] = { 4, 0, 2, 14, 4, 1 };
	char *adopt3[] = { NULL, NULL, NULL, NULL, NULL, d3 };
	CHECK_INT(job_decode_adopt(&j, "5-2", 6, kv3, len3, adopt3, &lim), -1);
	CHECK(adopt3[5] == NULL);
	job_fini(&j);
}

static void t_tls_expires(void)
{
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "tls", "may", NULL };
	expect_reject(a, "bad tls value \"may\"", 1);
	const char *b[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "tls", "", NULL };
	expect_reject(b, "bad tls value \"\"", 1);
	const char *c[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "tls", "VERIFY", NULL };
	expect_reject(c, "bad tls value \"VERIFY\"", 1);
	const char *d[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "expires", "1h", NULL };
	expect_reject(d, "bad expires value \"1h\"", 1);
	const char *e[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "expires", "-5", NULL };
	expect_reject(e, "bad expires value \"-5\"", 1);
	const char *f[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "attempt", "x", NULL };
	expect_reject(f, "bad attempt value \"x\"", 1);
	/* dkim: a signing domain or no (which domains have keys: the sender's to say) */
	const char *g[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "dkim", "a b.test", NULL };
	expect_reject(g, "bad dkim value \"a b.test\" (a signing domain, or no)", 1);
	const char *h[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "dkim", "", NULL };
	expect_reject(h, "bad dkim value \"\" (a signing domain, or no)", 1);
	const char *h2[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "dkim", ".x.test", NULL };
	expect_reject(h2, "bad dkim value \".x.test\" (a signing domain, or no)", 1);
	const char *ok1[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "dkim", "Mail.Example.net", NULL };
	struct job j;
	CHECK_INT(decode(&j, ok1), 0);
	CHECK_STR(j.dkim, "Mail.Example.net");
	job_fini(&j);
	const char *ok2[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "dkim", "no", NULL };
	CHECK_INT(decode(&j, ok2), 0);
	CHECK_STR(j.dkim, "no");
	job_fini(&j);
	const char *ok3[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", NULL };
	CHECK_INT(decode(&j, ok3), 0);
	CHECK(j.dkim == NULL);
	job_fini(&j);
}

static void t_duplicate_and_order(void)
{
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "to", "z@y.test", NULL };
	expect_reject(a, "duplicate field: to", 1);
	/* several problems: the first in the fixed order wins */
	const char *b[] = { "from", "bad", "to", "x@y.test", "data", "", "tls", "no", NULL };
	expect_reject(b, "bad address \"bad\": missing @", 1);
	const char *c[] = { "to", "x@y.test", "tls", "no", NULL };
	expect_reject(c, "missing field: from", 1);
}

static void t_too_many(void)
{
	size_t n = (JOB_MAX_RCPT + 1) * 9;
	char *to = malloc(n + 1), *p = to;
	for (int i = 0; i <= JOB_MAX_RCPT; i++)
		p += sprintf(p, "%s%c@y.test", i ? "," : "", 'a' + i % 26);
	const char *a[] = { "from", "a@b.test", "to", to, "data", "d", NULL };
	expect_reject(a, "too many recipients (more than 10000)", 0);
	free(to);
}

static void t_results(void)
{
	struct job j;
	const char *kv[] = { "from", "a@b.test", "to", "x@y.test,w@z.test", "data", "d",
			     "id", "app-1", "meta", "m", NULL };
	CHECK_INT(decode(&j, kv), 0);
	CHECK_STR(job_result_names[0], "id");
	CHECK_STR(job_result_names[3], "status");
	CHECK_STR(job_result_names[18], "meta");
	CHECK_STR(job_result_names[19], "source");
	CHECK_STR(job_result_names[20], "dkim");
	CHECK_STR(job_result_names[21], "class");
	CHECK_STR(job_result_names[JOB_RESULT_NFIELDS - 1], "shaped"); /* always the last */
	struct job_outcome o = { .status = JOB_DELIVERED, .code = 250, .dsn = "2.0.0",
				 .reply = "ok queued", .mx = "mx1.y.test", .ip = "127.0.3.1",
				 .port = 25, .tls = "TLSv1.3", .cipher = "TLS_AES_256_GCM_SHA384",
				 .policy = "may", .verified = true, .resumed = false, .reused = true,
				 .elapsed_ms = 42, .cls = "ignored" };
	job_set_outcome(&j, 0, &o);
	CHECK(!job_complete(&j));
	o.status = JOB_DEFERRED;
	o.code = 451;
	snprintf(o.cls, sizeof(o.cls), "rate-limited");
	o.reply[0] = '\0';
	o.tls[0] = '\0';
	job_set_outcome(&j, 1, &o);
	CHECK(job_complete(&j));

	const char *v[JOB_RESULT_NFIELDS];
	size_t l[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	job_result_values(&j, 0, JOB_DELIVERED, 1, v, l, scratch);
	const char *want[] = { "app-1", "1700000000123-7", "x@y.test", "delivered", "250", "2.0.0",
			       "ok queued", "mx1.y.test", "127.0.3.1", "25", "TLSv1.3",
			       "TLS_AES_256_GCM_SHA384", "yes", "may", "no", "yes", "1", "42", "m", "-", "none", "",
			       "-" };
	for (int k = 0; k < JOB_RESULT_NFIELDS; k++) {
		CHECK_STR(v[k], want[k]);
		CHECK_INT(l[k], strlen(want[k]));
	}
	/* a shaping deferral: shaped carried (escaped), not_before kept */
	snprintf(o.shaped, sizeof(o.shaped), "gmail-rate:throttle rate=3.20/s\n");
	o.not_before_ms = 1700000009000ull;
	job_set_outcome(&j, 1, &o);
	CHECK_INT((long long)j.rcpts[1].not_before_ms, 1700000009000ll);
	job_result_values(&j, 1, JOB_DEFERRED, 1, v, l, scratch);
	CHECK_STR(v[JOB_RESULT_NFIELDS - 1], "gmail-rate:throttle rate=3.20/s\\n");
	o.shaped[0] = '\0';
	o.not_before_ms = 0;
	job_set_outcome(&j, 1, &o);
	job_result_values(&j, 1, JOB_EXPIRED, 4, v, l, scratch);
	CHECK_STR(v[2], "w@z.test");
	CHECK_STR(v[3], "expired");
	CHECK_STR(v[4], "451");
	CHECK_STR(v[6], "");
	CHECK_STR(v[10], "none");
	CHECK_STR(v[16], "4");
	CHECK_STR(v[21], "rate-limited"); /* a deferred outcome's class, now expired */
	job_result_values(&j, 1, JOB_DEFERRED, 4, v, l, scratch);
	CHECK_STR(v[21], "rate-limited");
	job_result_values(&j, 1, JOB_HELD, 4, v, l, scratch);
	CHECK_STR(v[21], "");
	snprintf(j.dkim_result, sizeof(j.dkim_result), "d=example.net s=s1"); /* as the sender sets it */
	job_result_values(&j, 1, JOB_DELIVERED, 1, v, l, scratch);
	CHECK_STR(v[20], "d=example.net s=s1");
	CHECK_INT(l[20], 18);

	int idx[] = { 1, 0 };
	char *to = job_join_rcpts(&j, idx, 2);
	CHECK_STR(to, "w@z.test,x@y.test");
	free(to);
	job_fini(&j);

	/* rejected, job-wide (no recipients): rcpt "", reply = reason */
	const char *bad[] = { "from", "a@b.test", "data", "d", "id", "r1", NULL };
	CHECK_INT(decode(&j, bad), -1);
	job_result_values(&j, -1, JOB_REJECTED, 1, v, l, scratch);
	CHECK_STR(v[0], "r1");
	CHECK_STR(v[2], "");
	CHECK_STR(v[3], "rejected");
	CHECK_STR(v[4], "0");
	CHECK_STR(v[6], "missing field: to");
	CHECK_STR(v[12], "no");
	job_fini(&j);
}

static void t_entry_id(void)
{
	uint64_t a, b;
	CHECK_INT(job_entry_id_parse("1700000000000-12", &a, &b), 0);
	CHECK_INT(a, 1700000000000ULL);
	CHECK_INT(b, 12);
	CHECK_INT(job_entry_id_parse("17-", &a, &b), -1);
	CHECK_INT(job_entry_id_parse("x-1", &a, &b), -1);
	CHECK_INT(job_entry_id_parse("1-1x", &a, &b), -1);
	CHECK_INT(job_entry_id_parse("", &a, &b), -1);
	CHECK_STR(job_status_name(JOB_HELD), "held");
	CHECK_STR(job_status_name(JOB_REJECTED), "rejected");
	CHECK_STR(job_tls_name(JOB_TLS_VERIFY), "verify");
}

static void t_redis_url(void)
{
	struct queue_addr a;
	char err[128];
	CHECK_INT(queue_url_parse("redis://127.0.0.1:6380/2", &a, err, sizeof(err)), 0);
	CHECK_STR(a.host, "127.0.0.1");
	CHECK_INT(a.port, 6380);
	CHECK_INT(a.db, 2);
	CHECK_STR(a.password, "");
	CHECK_INT(queue_url_parse("redis://localhost", &a, err, sizeof(err)), 0);
	CHECK_STR(a.host, "localhost");
	CHECK_INT(a.port, 6379);
	CHECK_INT(a.db, 0);
	CHECK_INT(queue_url_parse("redis://:s3cret@10.0.0.1:7000/0", &a, err, sizeof(err)), 0);
	CHECK_STR(a.password, "s3cret");
	CHECK_STR(a.username, "");
	CHECK_STR(a.host, "10.0.0.1");
	/* an ACL user (AUTH USER PASSWORD); a password may hold ':' and '@' */
	CHECK_INT(queue_url_parse("redis://mxq:p:w@d@10.0.0.1:7000/1", &a, err, sizeof(err)), 0);
	CHECK_STR(a.username, "mxq");
	CHECK_STR(a.password, "p:w@d");
	CHECK_STR(a.host, "10.0.0.1");
	CHECK_INT(a.db, 1);
	/* no ':': the password alone (the default user), as before users existed */
	CHECK_INT(queue_url_parse("redis://s3cret@h", &a, err, sizeof(err)), 0);
	CHECK_STR(a.username, "");
	CHECK_STR(a.password, "s3cret");
	CHECK_INT(queue_url_parse("redis://mxq:s3cret@h:0", &a, err, sizeof(err)), -1);
	CHECK_INT(strstr(err, "s3cret") == NULL, 1);
	CHECK_INT(strstr(err, "redis://mxq:***@h:0") != NULL, 1);
	CHECK_INT(queue_url_parse("unix:/run/redis/redis.sock", &a, err, sizeof(err)), 0);
	CHECK_STR(a.path, "/run/redis/redis.sock");
	CHECK_STR(a.host, "");
	CHECK_INT(queue_url_parse("unix:/tmp/r.sock?db=3", &a, err, sizeof(err)), 0);
	CHECK_STR(a.path, "/tmp/r.sock");
	CHECK_INT(a.db, 3);
	/* rediss://: the same, with TLS */
	CHECK_INT(a.tls, 0);
	CHECK_INT(queue_url_parse("rediss://mxq:p:w@d@r.example:6380/4", &a, err, sizeof(err)), 0);
	CHECK_INT(a.tls, 1);
	CHECK_STR(a.username, "mxq");
	CHECK_STR(a.password, "p:w@d");
	CHECK_STR(a.host, "r.example");
	CHECK_INT(a.port, 6380);
	CHECK_INT(a.db, 4);
	CHECK_INT(queue_url_parse("rediss://[::1]", &a, err, sizeof(err)), 0);
	CHECK_INT(a.tls, 1);
	CHECK_STR(a.host, "::1");
	CHECK_INT(a.port, 6379);
	CHECK_INT(queue_url_parse("redis://h", &a, err, sizeof(err)), 0);
	CHECK_INT(a.tls, 0);
	CHECK_INT(queue_url_parse("rediss://:s3cret@h:0", &a, err, sizeof(err)), -1);
	CHECK_INT(strstr(err, "s3cret") == NULL, 1);
	CHECK_INT(strstr(err, "rediss://:***@h:0") != NULL, 1);
	CHECK_INT(queue_url_parse("redisss://h", &a, err, sizeof(err)), -1);
	CHECK_INT(queue_url_parse("http://x", &a, err, sizeof(err)), -1);
	CHECK_INT(queue_url_parse("redis://h:99999", &a, err, sizeof(err)), -1);
	CHECK_INT(queue_url_parse("redis://h:1/x", &a, err, sizeof(err)), -1);
	CHECK_INT(queue_url_parse("unix:", &a, err, sizeof(err)), -1);
}

static void t_dec(void)
{
	char b[24];
	CHECK_INT(u64_dec(b, 0), 1);
	CHECK_STR(b, "0");
	CHECK_INT(u64_dec(b, 450), 3);
	CHECK_STR(b, "450");
	CHECK_INT(u64_dec(b, UINT64_MAX), 20);
	CHECK_STR(b, "18446744073709551615");
}

/* qclaim_count: the claim's COUNT from max_inflight, batch and the byte cap. */
static void t_claim_count(void)
{
	/* count only: up to a batch, once room for a quarter of max_inflight */
	CHECK_INT(qclaim_count(20000, 256, 20000, 0, 0, 0, 0, true), 256);
	CHECK_INT(qclaim_count(255, 256, 20000, 0, 0, 0, 0, false), 0);
	CHECK_INT(qclaim_count(256, 256, 20000, 0, 0, 0, 0, false), 256);
	CHECK_INT(qclaim_count(249, 256, 1000, 0, 0, 0, 0, false), 0);
	CHECK_INT(qclaim_count(250, 256, 1000, 0, 0, 0, 0, false), 250);
	CHECK_INT(qclaim_count(0, 256, 1000, 0, 0, 0, 0, false), 0);
	CHECK_INT(qclaim_count(3, 256, 3, 0, 0, 0, 0, false), 3); /* max_inflight < 4 */
	/* bytes: 1 GiB cap, 4 KB jobs: the count rules */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 8u << 20, 4096, 50u << 20, false), 256);
	/* 1 MiB jobs, 900 MiB in flight: 124 fit, a quarter of the cap is 256: wait */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 900u << 20, 1u << 20, 50u << 20, false), 0);
	/* 700 MiB in flight: 324 fit, so a batch */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 700u << 20, 1u << 20, 50u << 20, false), 256);
	/* 10 MiB jobs: 102 fit in an empty cap, a quarter is 25 */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 0, 10u << 20, 50u << 20, false), 102);
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 800u << 20, 10u << 20, 50u << 20, false), 0);
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 700u << 20, 10u << 20, 50u << 20, false), 32);
	/* before any job: sized at max_message_size (50 MiB): 20 */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 30, 0, 0, 50u << 20, true), 20);
	/* a cap below one job: idle, one at a time; busy, none */
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 20, 0, 4u << 20, 50u << 20, true), 1);
	CHECK_INT(qclaim_count(19999, 256, 20000, 1u << 20, 4u << 20, 4u << 20, 50u << 20, false), 0);
	CHECK_INT(qclaim_count(20000, 256, 20000, 1u << 20, 2u << 20, 4096, 50u << 20, false), 0);
}

/* Lanes: the list parser, key names, the index of a name, and the deficit
 * round-robin that shares a claim between them. */
static void t_lanes(void)
{
	struct queue_lane l[QUEUE_LANES_MAX];
	char err[200];
	CHECK_INT(queue_lanes_parse("transactional:8 bulk:1", l, QUEUE_LANES_MAX, err, sizeof(err)), 2);
	CHECK_STR(l[0].name, "transactional");
	CHECK_INT(l[0].weight, 8);
	CHECK_STR(l[1].name, "bulk");
	CHECK_INT(l[1].weight, 1);
	CHECK_INT(queue_lanes_parse(" a, b:3,default:1000 ", l, QUEUE_LANES_MAX, err, sizeof(err)), 3);
	CHECK_INT(l[0].weight, 1);
	CHECK_INT(l[1].weight, 3);
	CHECK_STR(l[2].name, "default");
	const char *bad[] = { "", " , ", "a:0", "a:1001", "a:", "a:x", "a b a", "a.b", ":3",
			      "this-name-is-longer-than-thirty-two-chars:1", "a:99999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_INT(queue_lanes_parse(bad[i], l, QUEUE_LANES_MAX, err, sizeof(err)), -1);
		CHECK(err[0] != '\0');
	}
	CHECK_INT(queue_lanes_parse("a b c", l, 2, err, sizeof(err)), -1);
	CHECK_STR(err, "too many lanes (at most 2)");
	CHECK_INT(queue_lanes_parse("a a:2", l, 4, err, sizeof(err)), -1);
	CHECK_STR(err, "lane \"a\" named twice");

	char *k = queue_lane_key("mxsend:jobs", "transactional");
	CHECK_STR(k, "mxsend:jobs:lane:transactional");
	free(k);
	k = queue_lane_key("{mx}:jobs", "default"); /* the default lane is J itself */
	CHECK_STR(k, "{mx}:jobs");
	free(k);

	struct queue_config qc = { 0 };
	CHECK_INT(queue_lane_find(&qc, "default"), 0); /* no lanes: default alone */
	CHECK_INT(queue_lane_find(&qc, "bulk"), -1);
	queue_lanes_parse("transactional:8 bulk", l, QUEUE_LANES_MAX, err, sizeof(err));
	qc.lanes = l;
	qc.n_lanes = 2;
	CHECK_INT(queue_lane_find(&qc, "transactional"), 0);
	CHECK_INT(queue_lane_find(&qc, "bulk"), 1);
	CHECK_INT(queue_lane_find(&qc, "default"), 2); /* appended, last */
	CHECK_INT(queue_lane_find(&qc, "Bulk"), -1);

	/* weights 8:1, both with jobs: 8/9 and 1/9 of the claims over time */
	int w[3] = { 8, 1, 1 };
	bool dry[3] = { false, false, true };
	long def[3] = { 0, 0, 5 };
	unsigned ask[3], sum[3] = { 0, 0, 0 };
	for (int round = 0; round < 90; round++) {
		qlanes_split(100, 3, w, dry, def, ask);
		CHECK_INT(ask[0] + ask[1] + ask[2], 100);
		CHECK_INT(ask[2], 1); /* dry: asked for one, every claim */
		for (int i = 0; i < 3; i++)
			sum[i] += ask[i];
	}
	CHECK_INT(def[2], 0); /* dry: no credit kept */
	CHECK(sum[0] >= 7900 && sum[0] <= 7940); /* 99 * 90 * 8 / 9 = 7920 */
	CHECK(sum[1] >= 970 && sum[1] <= 1010);  /* 990 */
	/* a lane with jobs behind one without: the empty one's share goes to it */
	bool dry2[2] = { true, false };
	long def2[2] = { 0, 0 };
	int w2[2] = { 8, 1 };
	qlanes_split(50, 2, w2, dry2, def2, ask);
	CHECK_INT(ask[0], 1);
	CHECK_INT(ask[1], 49);
	/* all dry: round the lanes; fewer claims than lanes */
	bool dry3[3] = { true, true, true };
	long def3[3] = { 0, 0, 0 };
	qlanes_split(2, 3, w, dry3, def3, ask);
	CHECK_INT(ask[0] + ask[1] + ask[2], 2);
	CHECK_INT(ask[0], 1);
	CHECK_INT(ask[1], 1);
	qlanes_split(0, 3, w, dry, def, ask);
	CHECK_INT(ask[0] + ask[1] + ask[2], 0);
}

/* Field pool: one of the configured egress pools (job_limits.pools), else
 * the job is rejected naming it; kept for the delivery; result source. */
static void t_pool(void)
{
	static const char *const pools[] = { "news", "tx" };
	static const struct job_limits pl = { .max_size = 1000, .addr_ok = msg_addr_norm,
					      .split = msg_split_list, .pools = pools, .npools = 2 };
	const char *a[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "pool", "tx" };
	size_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = strlen(a[i]);
	struct job j;
	CHECK_INT(job_decode(&j, "1-1", 8, a, len, &pl), 0);
	CHECK_STR(j.pool, "tx");
	/* the result's source: "-" without one, else the outcome's */
	const char *v[JOB_RESULT_NFIELDS];
	size_t l[JOB_RESULT_NFIELDS];
	char scratch[JOB_RESULT_SCRATCH];
	CHECK_STR(job_result_names[19], "source");
	job_result_values(&j, 0, JOB_DEFERRED, 1, v, l, scratch);
	CHECK_STR(v[19], "-");
	struct job_outcome o = { .status = JOB_DELIVERED, .code = 250 };
	strcpy(o.source, "s1[127.0.64.1]");
	job_set_outcome(&j, 0, &o);
	job_result_values(&j, 0, JOB_DELIVERED, 1, v, l, scratch);
	CHECK_STR(v[19], "s1[127.0.64.1]");
	CHECK_STR(v[13], ""); /* policy: unchanged place */
	job_fini(&j);
	a[7] = "nosuch";
	len[7] = 6;
	CHECK_INT(job_decode(&j, "1-1", 8, a, len, &pl), -1);
	CHECK_STR(j.reason, "unknown pool \"nosuch\"");
	job_fini(&j);
	/* no pools configured: any pool field is unknown */
	CHECK_INT(job_decode(&j, "1-1", 8, a, len, &lim), -1);
	CHECK_STR(j.reason, "unknown pool \"nosuch\"");
	job_fini(&j);
	/* absent: "" */
	CHECK_INT(job_decode(&j, "1-1", 6, a, len, &pl), 0);
	CHECK_STR(j.pool, "");
	job_fini(&j);
}

static const struct t_case cases[] = {
	{ "pool field: configured pools only; result source", t_pool },
	{ "valid job: fields, defaults, dedup, grouped by domain", t_valid },
	{ "optional and internal fields", t_fields },
	{ "missing fields", t_missing },
	{ "bad addresses", t_bad_address },
	{ "empty, oversized and NUL-holding data", t_data },
	{ "the data value adopted, not copied", t_adopt },
	{ "data check: NUL byte, lines over 998 octets, line numbers", t_data_check },
	{ "id and meta caps, oversized echoes cut and escaped", t_caps },
	{ "id and meta with control bytes rejected, echoed escaped", t_id_meta_controls },
	{ "address literal recipients refused", t_literal_rcpt },
	{ "escaping: controls, backslash, quotes, UTF-8, results", t_escape },
	{ "escaping: runs of plain bytes against byte by byte, every output size", t_escape_runs },
	{ "bad tls, expires, attempt", t_tls_expires },
	{ "duplicate field, first problem wins", t_duplicate_and_order },
	{ "too many recipients", t_too_many },
	{ "result values and joined recipients", t_results },
	{ "entry ids and names", t_entry_id },
	{ "redis url", t_redis_url },
	{ "decimal numbers", t_dec },
	{ "claim count: max_inflight, batch, max_inflight_bytes", t_claim_count },
	{ "lanes: list, keys, index, deficit round-robin share", t_lanes },
};

T_MAIN(cases)
