/* test_tlsrpt.c: TLSRPT (RFC 8460) counters -> Redis commands, reading a
 * day's hash back (aggregation), the JSON report, gzip, base64, the mailto:
 * report message, the file name, rua URIs and days. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zlib.h>

#include "tlscache/tlsrpt.h"
#include "tests/t.h"
#include "tlscache/sts.h"

#define DAY0 1717200000LL /* 2024-06-01T00:00:00Z */
#define NOON 1717243200000ULL /* 2024-06-01T12:00:00Z, ms */

/* ---- a fake Redis: commands recorded, HINCRBY/HSET applied to one hash ---- */

#define MAXF 64
struct fake {
	char cmds[16][1400]; /* argv joined with ' ' */
	int ncmd;
	char *f[MAXF], *v[MAXF]; /* the hash (any key) */
	int nf;
	int stop_at; /* emit returns -5 at this command (1-based), 0 = never */
};

static void fake_set(struct fake *fk, const char *field, const char *val, bool incr)
{
	for (int i = 0; i < fk->nf; i++) {
		if (strcmp(fk->f[i], field) != 0)
			continue;
		if (incr) {
			char buf[32];
			snprintf(buf, sizeof(buf), "%lld", atoll(fk->v[i]) + atoll(val));
			free(fk->v[i]);
			fk->v[i] = strdup(buf);
		} else {
			free(fk->v[i]);
			fk->v[i] = strdup(val);
		}
		return;
	}
	if (fk->nf < MAXF) {
		fk->f[fk->nf] = strdup(field);
		fk->v[fk->nf++] = strdup(val);
	}
}

static int fake_emit(void *arg, int argc, const char **argv, const size_t *len)
{
	struct fake *fk = arg;
	if (fk->stop_at && fk->ncmd + 1 == fk->stop_at)
		return -5;
	char *c = fk->cmds[fk->ncmd % 16];
	size_t o = 0;
	c[0] = '\0';
	for (int i = 0; i < argc; i++) {
		CHECK(strlen(argv[i]) == len[i]);
		o += (size_t)snprintf(c + o, 1400 - o, "%s%s", i ? " " : "", argv[i]);
	}
	fk->ncmd++;
	if (strcmp(argv[0], "HINCRBY") == 0)
		fake_set(fk, argv[2], argv[3], true);
	else if (strcmp(argv[0], "HSET") == 0)
		for (int i = 2; i + 1 < argc; i += 2)
			fake_set(fk, argv[i], argv[i + 1], false);
	return 0;
}

static void fake_free(struct fake *fk)
{
	for (int i = 0; i < fk->nf; i++) {
		free(fk->f[i]);
		free(fk->v[i]);
	}
	fk->nf = 0;
}

static const char *fake_get(const struct fake *fk, const char *field)
{
	for (int i = 0; i < fk->nf; i++)
		if (strcmp(fk->f[i], field) == 0)
			return fk->v[i];
	return NULL;
}

/* Fill a string field of struct tls_event (NULL: "") */
#define SET(f, v) snprintf((f), sizeof(f), "%s", (v) ? (const char *)(v) : "")

static struct tls_event sts_ok(void)
{
	return (struct tls_event){ .policy_domain = "example.com", .policy_type = "sts",
				      .policy_id = "20240601T00", .policy_mode = "enforce",
				      .policy_mx = "mx1.example.com,*.backup.example.com",
				      .max_age = 86400, .mx = "mx1.example.com", .ip = "192.0.2.1",
				      .when_ms = NOON };
}

/* ---- event -> commands ---- */

static void t_cmds_success(void)
{
	struct fake fk = { 0 };
	struct tls_event ev = sts_ok();
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), 5);
	CHECK_INT(fk.ncmd, 5);
	CHECK_STR(fk.cmds[0], "HINCRBY mxsend:tlsrpt:2024-06-01:example.com ok:sts:20240601T00 1");
	CHECK_STR(fk.cmds[1], "HSET mxsend:tlsrpt:2024-06-01:example.com "
			      "policy:sts:20240601T00 version: STSv1\nmode: enforce\nmx: mx1.example.com\n"
			      "mx: *.backup.example.com\nmax_age: 86400 "
			      "mx:sts:20240601T00 mx1.example.com,*.backup.example.com");
	CHECK_STR(fk.cmds[2], "EXPIRE mxsend:tlsrpt:2024-06-01:example.com 691200");
	CHECK_STR(fk.cmds[3], "SADD mxsend:tlsrpt:days:2024-06-01 example.com");
	CHECK_STR(fk.cmds[4], "EXPIRE mxsend:tlsrpt:days:2024-06-01 691200");
	fake_free(&fk);
}

static void t_cmds_failure(void)
{
	struct fake fk = { 0 };
	struct tls_event ev = { .policy_domain = "Example.NET", .mx = "mx|2.example.net",
				   .ip = "2001:db8::25", .sending_ip = "198.51.100.7",
				   .result = "starttls-not-supported", .detail = "STARTTLS not offered",
				   .when_ms = NOON + 12 * 3600 * 1000ULL - 1 }; /* 23:59:59.999 */
	CHECK_INT(tlsrpt_event_cmds(&ev, "p", fake_emit, &fk), 5);
	const char *f = "fail:no-policy-found|starttls-not-supported|mx_2.example.net|2001:db8::25|198.51.100.7";
	char want[600];
	snprintf(want, sizeof(want), "HINCRBY p:2024-06-01:example.net %s 1", f);
	CHECK_STR(fk.cmds[0], want);
	snprintf(want, sizeof(want), "HSET p:2024-06-01:example.net why:%s STARTTLS not offered", f + 5);
	CHECK_STR(fk.cmds[1], want);
	CHECK_STR(fk.cmds[3], "SADD p:days:2024-06-01 example.net");
	/* the next millisecond is the next day */
	fk.ncmd = 0;
	ev.when_ms++;
	SET(ev.detail, NULL); /* no reason: no HSET */
	CHECK_INT(tlsrpt_event_cmds(&ev, "p", fake_emit, &fk), 4);
	CHECK(strncmp(fk.cmds[0], "HINCRBY p:2024-06-02:example.net fail:", 38) == 0);
	CHECK_STR(fk.cmds[2], "SADD p:days:2024-06-02 example.net");
	fake_free(&fk);
}

static void t_cmds_invalid(void)
{
	struct fake fk = { 0 };
	struct tls_event ev = sts_ok();
	SET(ev.policy_domain, "");
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), -22);
	SET(ev.policy_domain, "a b.com");
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), -22);
	SET(ev.policy_domain, "x.com");
	SET(ev.result, "bad|type");
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), -22);
	SET(ev.result, NULL);
	SET(ev.policy_id, "id with space");
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), -22);
	CHECK_INT(fk.ncmd, 0); /* nothing emitted for a bad event */
	SET(ev.policy_id, "x");
	fk.stop_at = 2; /* emit refuses the second command: its code comes back */
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), -5);
	CHECK_INT(fk.ncmd, 1);
	fake_free(&fk);
}

/* ---- aggregation ---- */

static void load_fake(const struct fake *fk, struct tlsrpt_counts *c, bool reverse)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->domain, "example.com");
	for (int k = 0; k < fk->nf; k++) {
		int i = reverse ? fk->nf - 1 - k : k; /* HGETALL has no order */
		tlsrpt_counts_add(c, fk->f[i], strlen(fk->f[i]), fk->v[i], strlen(fk->v[i]));
	}
	tlsrpt_counts_finish(c);
}

/* Many processes' events, in one hash: 5 successes and 4 failures of 3
 * kinds under policy A, 2 successes under a newer policy B the same day. */
static void fill(struct fake *fk)
{
	struct tls_event ev = sts_ok();
	for (int i = 0; i < 5; i++)
		tlsrpt_event_cmds(&ev, NULL, fake_emit, fk);
	SET(ev.result, "certificate-expired");
	SET(ev.detail, "certificate has expired");
	tlsrpt_event_cmds(&ev, NULL, fake_emit, fk);
	SET(ev.detail, "certificate has expired (2)"); /* the last reason wins */
	tlsrpt_event_cmds(&ev, NULL, fake_emit, fk);
	SET(ev.mx, "mx2.example.com");
	SET(ev.ip, "192.0.2.2");
	SET(ev.result, "starttls-not-supported");
	SET(ev.detail, "STARTTLS not offered");
	tlsrpt_event_cmds(&ev, NULL, fake_emit, fk);
	SET(ev.mx, NULL); /* a policy failure: no MX involved */
	SET(ev.ip, NULL);
	SET(ev.result, "sts-policy-fetch-error");
	SET(ev.detail, "HTTP 404");
	tlsrpt_event_cmds(&ev, NULL, fake_emit, fk);
	struct tls_event b = sts_ok();
	SET(b.policy_id, "20240601T12");
	SET(b.policy_mode, "testing");
	SET(b.policy_mx, "mx9.example.com");
	b.max_age = 600;
	tlsrpt_event_cmds(&b, NULL, fake_emit, fk);
	tlsrpt_event_cmds(&b, NULL, fake_emit, fk);
}

static void t_aggregate(void)
{
	struct fake fk = { 0 };
	fill(&fk);
	CHECK_STR(fake_get(&fk, "ok:sts:20240601T00"), "5");
	for (int rev = 0; rev < 2; rev++) {
		struct tlsrpt_counts c;
		load_fake(&fk, &c, rev);
		CHECK_INT(c.npol, 2);
		if (c.npol != 2)
			return;
		const struct tlsrpt_policy *a = &c.pol[0], *b = &c.pol[1];
		CHECK_STR(a->key, "sts:20240601T00");
		CHECK_STR(a->type, "sts");
		CHECK_INT(a->ok, 5);
		CHECK_INT(a->failed, 4);
		CHECK_INT(a->nfail, 3);
		CHECK_STR(a->fail[0].result, "certificate-expired");
		CHECK_INT(a->fail[0].count, 2);
		CHECK_STR(a->fail[0].mx, "mx1.example.com");
		CHECK_STR(a->fail[0].ip, "192.0.2.1");
		CHECK_STR(a->fail[0].sending_ip, "");
		CHECK_STR(a->fail[0].detail, "certificate has expired (2)");
		CHECK_STR(a->fail[1].result, "starttls-not-supported");
		CHECK_STR(a->fail[2].result, "sts-policy-fetch-error");
		CHECK_STR(a->fail[2].mx, "");
		CHECK_STR(b->key, "sts:20240601T12");
		CHECK_INT(b->ok, 2);
		CHECK_INT(b->failed, 0);
		CHECK_STR(b->strings, "version: STSv1\nmode: testing\nmx: mx9.example.com\nmax_age: 600");
		tlsrpt_counts_fini(&c);
	}
	/* a reason without a count, a policy without sessions, junk: all dropped */
	struct tlsrpt_counts c = { .domain = "x" };
	CHECK_INT(tlsrpt_counts_add(&c, "why:sts:a|r|m|i|s", 17, "t", 1), 0);
	CHECK_INT(tlsrpt_counts_add(&c, "policy:sts:b", 12, "version: STSv1", 14), 0);
	CHECK_INT(tlsrpt_counts_add(&c, "fail:sts:a|r|m", 14, "3", 1), -1);
	CHECK_INT(tlsrpt_counts_add(&c, "other", 5, "3", 1), -1);
	tlsrpt_counts_finish(&c);
	CHECK_INT(c.npol, 0);
	tlsrpt_counts_fini(&c);
	fake_free(&fk);
}

/* ---- JSON ---- */

static void t_json(void)
{
	struct fake fk = { 0 };
	fill(&fk);
	struct tlsrpt_counts c;
	load_fake(&fk, &c, false);
	struct tlsrpt_meta m = { .org = "Sender Org", .contact = "postmaster@sender.test",
				 .report_id = "20240601.abc@sender.test", .day_start = DAY0 };
	char *s = tlsrpt_json(&c, &m, false);
	CHECK(s != NULL && strchr(s, '\n') == NULL); /* compact */
	json_error_t e;
	json_t *j = json_loads(s ? s : "", 0, &e);
	CHECK(j != NULL);
	if (j == NULL)
		return;
	CHECK_STR(json_string_value(json_object_get(j, "organization-name")), "Sender Org");
	json_t *dr = json_object_get(j, "date-range");
	CHECK_STR(json_string_value(json_object_get(dr, "start-datetime")), "2024-06-01T00:00:00Z");
	CHECK_STR(json_string_value(json_object_get(dr, "end-datetime")), "2024-06-01T23:59:59Z");
	CHECK_STR(json_string_value(json_object_get(j, "contact-info")), "postmaster@sender.test");
	CHECK_STR(json_string_value(json_object_get(j, "report-id")), "20240601.abc@sender.test");
	json_t *pols = json_object_get(j, "policies");
	CHECK_INT(json_array_size(pols), 2);
	json_t *p0 = json_array_get(pols, 0), *pol = json_object_get(p0, "policy");
	CHECK_STR(json_string_value(json_object_get(pol, "policy-type")), "sts");
	CHECK_STR(json_string_value(json_object_get(pol, "policy-domain")), "example.com");
	json_t *ps = json_object_get(pol, "policy-string");
	CHECK_INT(json_array_size(ps), 5);
	CHECK_STR(json_string_value(json_array_get(ps, 0)), "version: STSv1");
	CHECK_STR(json_string_value(json_array_get(ps, 1)), "mode: enforce");
	CHECK_STR(json_string_value(json_array_get(ps, 2)), "mx: mx1.example.com");
	CHECK_STR(json_string_value(json_array_get(ps, 3)), "mx: *.backup.example.com");
	CHECK_STR(json_string_value(json_array_get(ps, 4)), "max_age: 86400");
	json_t *mx = json_object_get(pol, "mx-host");
	CHECK_INT(json_array_size(mx), 2);
	CHECK_STR(json_string_value(json_array_get(mx, 1)), "*.backup.example.com");
	json_t *sum = json_object_get(p0, "summary");
	CHECK_INT(json_integer_value(json_object_get(sum, "total-successful-session-count")), 5);
	CHECK_INT(json_integer_value(json_object_get(sum, "total-failure-session-count")), 4);
	json_t *fd = json_object_get(p0, "failure-details");
	CHECK_INT(json_array_size(fd), 3);
	json_t *f0 = json_array_get(fd, 0), *f2 = json_array_get(fd, 2);
	CHECK_STR(json_string_value(json_object_get(f0, "result-type")), "certificate-expired");
	CHECK_STR(json_string_value(json_object_get(f0, "receiving-mx-hostname")), "mx1.example.com");
	CHECK_STR(json_string_value(json_object_get(f0, "receiving-ip")), "192.0.2.1");
	CHECK_INT(json_integer_value(json_object_get(f0, "failed-session-count")), 2);
	CHECK_STR(json_string_value(json_object_get(f0, "failure-reason-code")), "certificate has expired (2)");
	CHECK(json_object_get(f0, "sending-mta-ip") == NULL); /* unknown: left out */
	CHECK(json_object_get(f2, "receiving-mx-hostname") == NULL);
	json_t *p1 = json_array_get(pols, 1);
	CHECK(json_object_get(p1, "failure-details") == NULL); /* none: no empty array */
	CHECK_INT(json_integer_value(json_object_get(json_object_get(p1, "summary"),
						     "total-failure-session-count")), 0);
	json_decref(j);
	free(s);
	/* pretty, and no-policy-found has neither policy-string nor mx-host */
	fake_free(&fk);
	struct fake fk2 = { 0 };
	struct tls_event ev = { .policy_domain = "example.com", .mx = "mx", .ip = "1.2.3.4",
				   .result = "certificate-not-trusted", .detail = "bad \xff byte",
				   .when_ms = NOON };
	tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk2);
	tlsrpt_counts_fini(&c);
	load_fake(&fk2, &c, false);
	s = tlsrpt_json(&c, &m, true);
	CHECK(s != NULL && strstr(s, "\n  \"date-range\": {") != NULL);
	j = json_loads(s ? s : "", 0, &e);
	pol = json_object_get(json_array_get(json_object_get(j, "policies"), 0), "policy");
	CHECK_STR(json_string_value(json_object_get(pol, "policy-type")), "no-policy-found");
	CHECK(json_object_get(pol, "policy-string") == NULL);
	CHECK(json_object_get(pol, "mx-host") == NULL);
	CHECK(s != NULL && strstr(s, "bad ? byte") != NULL); /* not UTF-8: replaced, kept */
	json_decref(j);
	free(s);
	tlsrpt_counts_fini(&c);
	fake_free(&fk2);
}

/* ---- gzip, base64 ---- */

static unsigned char *gunzip(const unsigned char *in, size_t n, size_t *outlen)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		return NULL;
	size_t cap = 1 << 20;
	unsigned char *out = malloc(cap);
	zs.next_in = (unsigned char *)in;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	int rc = inflate(&zs, Z_FINISH);
	*outlen = cap - zs.avail_out;
	inflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		free(out);
		return NULL;
	}
	return out;
}

static void t_gzip(void)
{
	char text[5000];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "{\"policies\": []}\n"[i % 17];
	unsigned char *gz = NULL;
	size_t n = 0, back = 0;
	CHECK_INT(tlsrpt_gzip(text, sizeof(text), &gz, &n), 0);
	CHECK(n > 18 && n < sizeof(text)); /* compressed */
	CHECK(gz[0] == 0x1f && gz[1] == 0x8b && gz[2] == 8); /* RFC 1952 magic, deflate */
	unsigned char *out = gunzip(gz, n, &back);
	CHECK(out != NULL && back == sizeof(text) && memcmp(out, text, back) == 0);
	free(out);
	free(gz);
	CHECK_INT(tlsrpt_gzip("", 0, &gz, &n), 0); /* empty input: a valid empty member */
	out = gunzip(gz, n, &back);
	CHECK(out != NULL && back == 0);
	free(out);
	free(gz);
}

static int b64val(char c)
{
	const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(t, c) : NULL;
	return p ? (int)(p - t) : -1;
}

/* Decode base64 (CRLF lines); every line at most 76 characters. */
static unsigned char *b64dec(const char *s, size_t n, size_t *outlen, int *maxline)
{
	unsigned char *out = malloc(n);
	size_t o = 0, line = 0;
	unsigned acc = 0;
	int bits = 0;
	*maxline = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			if ((int)line > *maxline)
				*maxline = (int)line;
			line = 0;
			continue;
		}
		line++;
		if (s[i] == '=')
			continue;
		acc = (acc << 6) | (unsigned)b64val(s[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*outlen = o;
	return out;
}

static void t_base64(void)
{
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const want[] = { "", "Zg==\r\n", "Zm8=\r\n", "Zm9v\r\n", "Zm9vYg==\r\n",
					    "Zm9vYmE=\r\n", "Zm9vYmFy\r\n" }; /* RFC 4648 10 */
	for (int i = 0; i < 7; i++) {
		char *s = tlsrpt_base64((const unsigned char *)in[i], strlen(in[i]), NULL);
		CHECK_STR(s, want[i]);
		free(s);
	}
	unsigned char bin[1000];
	for (int i = 0; i < 1000; i++)
		bin[i] = (unsigned char)(i * 7 + 3);
	size_t n, back;
	int maxline;
	char *s = tlsrpt_base64(bin, sizeof(bin), &n);
	CHECK(n > 76 && s[76] == '\r' && s[77] == '\n'); /* 57 bytes -> 76 characters per line */
	unsigned char *d = b64dec(s, n, &back, &maxline);
	CHECK_INT(maxline, 76);
	CHECK(back == sizeof(bin) && memcmp(d, bin, back) == 0);
	free(d);
	free(s);
}

/* ---- the report message ---- */

static const char *hdr(const char *msg, const char *name, char *buf, size_t n)
{
	/* unfolded value of the first header NAME */
	size_t nl = strlen(name);
	for (const char *p = msg; p && *p && !(p[0] == '\r' && p[1] == '\n'); p = strstr(p, "\r\n") + 2) {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			size_t o = 0;
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			for (; *v && o + 1 < n; v++) {
				if (v[0] == '\r' && v[1] == '\n' && (v[2] == ' ' || v[2] == '\t')) {
					v += 2; /* fold: CRLF WSP -> WSP */
				} else if (v[0] == '\r') {
					break;
				}
				buf[o++] = *v == '\t' ? ' ' : *v;
			}
			buf[o] = '\0';
			return buf;
		}
	}
	return NULL;
}

static void t_mail(void)
{
	const char *json = "{\"organization-name\":\"x\",\"policies\":[]}";
	unsigned char *gz;
	size_t gzlen, len;
	CHECK_INT(tlsrpt_gzip(json, strlen(json), &gz, &gzlen), 0);
	char fname[300];
	CHECK(tlsrpt_filename(fname, sizeof(fname), "mta.sender.test", "example.com", DAY0,
			      DAY0 + 86399, "0a1b2c3d") > 0);
	CHECK_STR(fname, "mta.sender.test!example.com!1717200000!1717286399!0a1b2c3d.json.gz");
	struct tlsrpt_mail m = { .from = "tlsrpt@sender.test", .to = "rua@example.com",
				 .domain = "example.com", .submitter = "mta.sender.test",
				 .report_id = "20240601.0a1b2c3d@mta.sender.test", .filename = fname,
				 .day = "2024-06-01", .gz = gz, .gzlen = gzlen, .date = DAY0 + 86400 + 61 };
	char *msg = tlsrpt_mail_build(&m, &len);
	CHECK(msg != NULL && strlen(msg) == len);
	if (msg == NULL)
		return;
	char v[512];
	CHECK_STR(hdr(msg, "From", v, sizeof(v)), "tlsrpt@sender.test");
	CHECK_STR(hdr(msg, "To", v, sizeof(v)), "rua@example.com");
	CHECK_STR(hdr(msg, "Date", v, sizeof(v)), "Sun, 02 Jun 2024 00:01:01 +0000");
	CHECK_STR(hdr(msg, "Subject", v, sizeof(v)), "Report Domain: example.com Submitter: "
		  "mta.sender.test Report-ID: <20240601.0a1b2c3d@mta.sender.test>");
	CHECK_STR(hdr(msg, "Message-ID", v, sizeof(v)), "<20240601.0a1b2c3d@mta.sender.test>");
	CHECK_STR(hdr(msg, "TLS-Report-Domain", v, sizeof(v)), "example.com");
	CHECK_STR(hdr(msg, "TLS-Report-Submitter", v, sizeof(v)), "mta.sender.test");
	CHECK_STR(hdr(msg, "MIME-Version", v, sizeof(v)), "1.0");
	CHECK_STR(hdr(msg, "Content-Type", v, sizeof(v)),
		  "multipart/report; report-type=\"tlsrpt\"; boundary=\"=_tlsrpt_20240601"
		  "0a1b2c3dmtasendertest\"");
	/* every line ends in CRLF and has at most 78 characters */
	for (const char *p = msg; *p;) {
		const char *e = strstr(p, "\r\n");
		CHECK(e != NULL);
		if (e == NULL)
			break;
		CHECK(e - p <= 78);
		CHECK(memchr(p, '\n', (size_t)(e - p)) == NULL);
		p = e + 2;
	}
	const char *b = "--=_tlsrpt_202406010a1b2c3dmtasendertest";
	const char *p1 = strstr(msg, b), *p2 = p1 ? strstr(p1 + 1, b) : NULL;
	const char *end = p2 ? strstr(p2 + 1, b) : NULL;
	CHECK(p1 && p2 && end);
	if (!(p1 && p2 && end))
		return;
	CHECK(strcmp(end + strlen(b), "--\r\n") == 0); /* the closing delimiter ends it */
	CHECK(strncmp(p1 + strlen(b), "\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n", 48) == 0);
	CHECK(strstr(p1, "This is an aggregate TLS report") != NULL);
	char part[1024];
	CHECK_STR(hdr(p2 + strlen(b) + 2, "Content-Type", part, sizeof(part)), "application/tlsrpt+gzip");
	CHECK_STR(hdr(p2 + strlen(b) + 2, "Content-Transfer-Encoding", part, sizeof(part)), "base64");
	char want[400];
	snprintf(want, sizeof(want), "attachment; filename=\"%s\"", fname);
	CHECK_STR(hdr(p2 + strlen(b) + 2, "Content-Disposition", part, sizeof(part)), want);
	const char *body = strstr(p2, "\r\n\r\n") + 4;
	size_t blen = (size_t)(end - body), back, glen;
	int maxline;
	unsigned char *dec = b64dec(body, blen, &back, &maxline);
	CHECK(maxline <= 76);
	unsigned char *plain = gunzip(dec, back, &glen);
	CHECK(plain != NULL && glen == strlen(json) && memcmp(plain, json, glen) == 0);
	free(plain);
	free(dec);
	free(msg);
	/* header injection is refused */
	m.to = "a@b.test\r\nBcc: x@y.test";
	CHECK(tlsrpt_mail_build(&m, &len) == NULL);
	m.to = "a@b.test";
	m.filename = "a\"b";
	CHECK(tlsrpt_mail_build(&m, &len) == NULL);
	CHECK_INT(tlsrpt_filename(fname, 18, "s", "d", 1, 2, "u"), 17);
	CHECK_STR(fname, "s!d!1!2!u.json.gz");
	CHECK_INT(tlsrpt_filename(fname, 17, "s", "d", 1, 2, "u"), -1);
	CHECK_INT(tlsrpt_filename(fname, 20, "s", "d", 1, 2, ""), 15);
	CHECK_STR(fname, "s!d!1!2.json.gz");
	free(gz);
}

/* ---- URIs and days ---- */

static void t_mailto(void)
{
	char a[64];
	CHECK_INT(tlsrpt_mailto("mailto:tlsrpt@example.com", a, sizeof(a)), 0);
	CHECK_STR(a, "tlsrpt@example.com");
	CHECK_INT(tlsrpt_mailto("MAILTO:a%2Bb@Example.com?subject=hi", a, sizeof(a)), 0);
	CHECK_STR(a, "a+b@Example.com");
	static const char *const bad[] = { "mailto:", "mailto:noat", "mailto:a@b@c", "mailto:a b@c",
					   "mailto:@c", "mailto:a@", "mailto:a%0d%0aX@c",
					   "mailto:a%2@c", "https://x/", "mailto:<a@b>",
					   "mailto:a@b,c@d" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(tlsrpt_mailto(bad[i], a, sizeof(a)), -1);
	CHECK_INT(tlsrpt_mailto("mailto:aaaaaaaaaa@b.c", a, 10), -1); /* too long */
}

static void t_https(void)
{
	char h[64], p[64];
	int port;
	CHECK_INT(tlsrpt_https("https://Report.Example.com/v1/tlsrpt", h, sizeof(h), &port, p, sizeof(p)), 0);
	CHECK_STR(h, "report.example.com");
	CHECK_INT(port, 0);
	CHECK_STR(p, "/v1/tlsrpt");
	CHECK_INT(tlsrpt_https("https://r.test:8443", h, sizeof(h), &port, p, sizeof(p)), 0);
	CHECK_INT(port, 8443);
	CHECK_STR(p, "/");
	CHECK_INT(tlsrpt_https("https://r.test?x=1#frag", h, sizeof(h), &port, p, sizeof(p)), 0);
	CHECK_STR(p, "/?x=1");
	static const char *const bad[] = { "https://", "https://u:p@r.test/", "https://[::1]/",
					   "https://r.test:0/", "https://r.test:70000/",
					   "https://r.test:/", "https://r.test/a b", "http://r.test/",
					   "mailto:a@b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(tlsrpt_https(bad[i], h, sizeof(h), &port, p, sizeof(p)), -1);
}

static void t_days(void)
{
	int64_t t;
	char d[11];
	CHECK_INT(tlsrpt_day_parse("2024-06-01", &t), 0);
	CHECK_INT(t, DAY0);
	CHECK_INT(tlsrpt_day_parse("2024-02-29", &t), 0); /* leap day */
	tlsrpt_day_format(t + 86399, d);
	CHECK_STR(d, "2024-02-29");
	tlsrpt_day_format(t + 86400, d);
	CHECK_STR(d, "2024-03-01");
	static const char *const bad[] = { "2023-02-29", "2024-02-30", "2024-6-1", "2024-13-01",
					   "2024-06-01x", "abcd-ef-gh", "", "2024/06/01" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(tlsrpt_day_parse(bad[i], &t), -1);
}

/* An event's policy fields from the MTA-STS policy that applied count as
 * sts_ok's, which spells them out; no policy: no-policy-found, empty fields. */
static void t_event_policy(void)
{
	const char body[] = "version: STSv1\nmode: enforce\nmx: mx1.example.com\n"
			    "mx: *.backup.example.com\nmax_age: 86400\n";
	struct sts_policy pol;
	CHECK_INT(sts_policy_parse(body, strlen(body), &pol, NULL), 0);
	strcpy(pol.id, "20240601T00");
	struct tls_event ev = sts_ok();
	SET(ev.policy_id, "stale");
	tlsrpt_event_policy(&ev, "example.com", &pol);
	struct tls_event want = sts_ok();
	CHECK_STR(ev.policy_domain, want.policy_domain);
	CHECK_STR(ev.policy_type, want.policy_type);
	CHECK_STR(ev.policy_id, want.policy_id);
	CHECK_STR(ev.policy_mode, want.policy_mode);
	CHECK_STR(ev.policy_mx, want.policy_mx);
	CHECK_INT(ev.max_age, want.max_age);
	sts_policy_fini(&pol);
	tlsrpt_event_policy(&ev, "example.net", NULL);
	CHECK_STR(ev.policy_domain, "example.net");
	CHECK_STR(ev.policy_type, "no-policy-found");
	CHECK_STR(ev.policy_id, "");
	CHECK_STR(ev.policy_mode, "");
	CHECK_STR(ev.policy_mx, "");
	CHECK_INT(ev.max_age, 0);
	CHECK_STR(ev.mx, "mx1.example.com"); /* the session's fields are left alone */
}


/* A DANE host's sessions (RFC 8460 4.2 "tlsa"): the records as policy strings,
 * the MX host, tlsa-invalid and dnssec-invalid failures. */
static void t_tlsa(void)
{
	struct fake fk = { 0 };
	struct tls_event ev = { .policy_domain = "example.com", .policy_type = "tlsa",
				.policy_id = "0123456789abcdef",
				.policy_mx = "3 1 1 aabb,2 0 1 ccdd", .mx = "mx1.example.com",
				.ip = "192.0.2.1", .when_ms = NOON };
	CHECK_INT(tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk), 5);
	CHECK_STR(fk.cmds[0], "HINCRBY mxsend:tlsrpt:2024-06-01:example.com ok:tlsa:0123456789abcdef 1");
	CHECK_STR(fk.cmds[1], "HSET mxsend:tlsrpt:2024-06-01:example.com "
			      "policy:tlsa:0123456789abcdef 3 1 1 aabb\n2 0 1 ccdd "
			      "mx:tlsa:0123456789abcdef mx1.example.com");
	SET(ev.result, "tlsa-invalid");
	SET(ev.detail, "DANE: no TLSA record matches");
	tlsrpt_event_cmds(&ev, NULL, fake_emit, &fk);
	struct tls_event bog = ev; /* a bogus TLSA answer: no records, no id */
	SET(bog.policy_id, NULL);
	SET(bog.policy_mx, NULL);
	SET(bog.result, "dnssec-invalid");
	SET(bog.mx, "mx2.example.com");
	SET(bog.ip, NULL);
	tlsrpt_event_cmds(&bog, NULL, fake_emit, &fk);
	struct tlsrpt_counts c;
	load_fake(&fk, &c, true);
	struct tlsrpt_meta m = { .org = "O", .contact = "c@o.test", .report_id = "r@o.test",
				 .day_start = DAY0 };
	char *js = tlsrpt_json(&c, &m, false);
	json_error_t e;
	json_t *j = json_loads(js ? js : "", 0, &e), *pols = json_object_get(j, "policies");
	CHECK_INT(json_array_size(pols), 2);
	int seen = 0;
	for (size_t i = 0; i < json_array_size(pols); i++) {
		json_t *p = json_array_get(pols, i), *pol = json_object_get(p, "policy");
		CHECK_STR(json_string_value(json_object_get(pol, "policy-type")), "tlsa");
		json_t *ps = json_object_get(pol, "policy-string"), *sum = json_object_get(p, "summary");
		json_t *fd = json_array_get(json_object_get(p, "failure-details"), 0);
		if (json_array_size(ps) == 2) {
			seen |= 1;
			CHECK_STR(json_string_value(json_array_get(ps, 0)), "3 1 1 aabb");
			CHECK_STR(json_string_value(json_array_get(ps, 1)), "2 0 1 ccdd");
			CHECK_STR(json_string_value(json_array_get(json_object_get(pol, "mx-host"), 0)),
				  "mx1.example.com");
			CHECK_INT(json_integer_value(json_object_get(sum, "total-successful-session-count")), 1);
			CHECK_STR(json_string_value(json_object_get(fd, "result-type")), "tlsa-invalid");
		} else {
			seen |= 2;
			CHECK_STR(json_string_value(json_object_get(fd, "result-type")), "dnssec-invalid");
			CHECK_STR(json_string_value(json_object_get(fd, "receiving-mx-hostname")),
				  "mx2.example.com");
		}
	}
	CHECK_INT(seen, 3);
	json_decref(j);
	free(js);
	tlsrpt_counts_fini(&c);
	fake_free(&fk);
}

static const struct t_case cases[] = {
	{ "DANE: tlsa policy, records as policy strings, tlsa-invalid and dnssec-invalid", t_tlsa },
	{ "event: policy fields from the MTA-STS policy, or none", t_event_policy },
	{ "event -> commands: success under an MTA-STS policy (keys, policy-string)", t_cmds_success },
	{ "event -> commands: failure (field, reason, no-policy-found, UTC day edge)", t_cmds_failure },
	{ "event -> commands: bad events emit nothing; emit's error comes back", t_cmds_invalid },
	{ "counters read back in any order: aggregation, totals, two policies", t_aggregate },
	{ "JSON report: RFC 8460 4.4 fields and counts", t_json },
	{ "gzip round trip through zlib", t_gzip },
	{ "base64: RFC 4648 vectors, 76-character lines", t_base64 },
	{ "mailto message: headers, boundary, parts, attachment decodes", t_mail },
	{ "mailto: rua URIs", t_mailto },
	{ "https: rua URIs", t_https },
	{ "days: parse and format (UTC)", t_days },
};
T_MAIN(cases)
