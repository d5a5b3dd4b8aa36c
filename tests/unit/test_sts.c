/* test_sts.c: MTA-STS TXT/policy parsing, MX matching, the policy cache and
 * its decisions, the Redis form, and the TLSRPT record parser. */
#include <stdlib.h>
#include <string.h>

#include "tests/t.h"
#include "tlscache/sts.h"

/* ---- TXT ---- */

static enum sts_txt_rc txt1(const char *rec, char *id)
{
	const char *rr[1] = { rec };
	return sts_txt_parse(rr, 1, id, NULL);
}

static void t_txt_basic(void)
{
	char id[STS_ID_MAX + 1];
	CHECK_INT(txt1("v=STSv1; id=20160831085700Z;", id), STS_TXT_OK);
	CHECK_STR(id, "20160831085700Z");
	CHECK_INT(txt1("v=STSv1; id=abc", id), STS_TXT_OK); /* no final ';' */
	CHECK_STR(id, "abc");
	CHECK_INT(txt1("v=STSv1;id=abc;", id), STS_TXT_OK); /* no spaces */
	CHECK_INT(txt1("v=STSv1 ;\tid=x1 ; ", id), STS_TXT_OK); /* WSP around ';', at end */
	CHECK_STR(id, "x1");
}

static void t_txt_none_and_ignored(void)
{
	char id[STS_ID_MAX + 1];
	const char *rr[3] = { "v=spf1 -all", "google-site-verification=xyz", "v=STSv1; id=good" };
	CHECK_INT(sts_txt_parse(rr, 3, id, NULL), STS_TXT_OK); /* others ignored */
	CHECK_STR(id, "good");
	CHECK_INT(sts_txt_parse(rr, 2, id, NULL), STS_TXT_NONE);
	CHECK_INT(sts_txt_parse(rr, 0, id, NULL), STS_TXT_NONE);
	/* "v=STSv10" and a lowercase tag are not STSv1 records */
	CHECK_INT(txt1("v=STSv10; id=a", id), STS_TXT_NONE);
	CHECK_INT(txt1("v=stsv1; id=a", id), STS_TXT_NONE);
	CHECK_INT(txt1(" v=STSv1; id=a", id), STS_TXT_NONE);
}

static void t_txt_two_records(void)
{
	char id[STS_ID_MAX + 1];
	const char *err = NULL;
	const char *rr[2] = { "v=STSv1; id=one", "v=STSv1; id=two" };
	CHECK_INT(sts_txt_parse(rr, 2, id, &err), STS_TXT_INVALID);
	CHECK(err != NULL && strstr(err, "more than one") != NULL);
	CHECK_STR(id, "");
	/* even when the second one is broken */
	const char *rr2[2] = { "v=STSv1; id=one", "v=STSv1" };
	CHECK_INT(sts_txt_parse(rr2, 2, id, NULL), STS_TXT_INVALID);
}

static void t_txt_id_rules(void)
{
	char id[STS_ID_MAX + 1];
	CHECK_INT(txt1("v=STSv1; id=12345678901234567890123456789012", id), STS_TXT_OK); /* 32 */
	CHECK_INT(strlen(id), 32);
	CHECK_INT(txt1("v=STSv1; id=123456789012345678901234567890123", id), STS_TXT_INVALID); /* 33 */
	CHECK_INT(txt1("v=STSv1; id=ab-cd", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1; id=", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1;", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1; id=a; id=b", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1; ID=abc", id), STS_TXT_INVALID); /* %s"id=" */
}

static void t_txt_extensions(void)
{
	char id[STS_ID_MAX + 1];
	CHECK_INT(txt1("v=STSv1; ext_1=val!; id=abc; x.y-z=1", id), STS_TXT_OK);
	CHECK_STR(id, "abc");
	CHECK_INT(txt1("v=STSv1; id=abc;; ", id), STS_TXT_INVALID);  /* empty field */
	CHECK_INT(txt1("v=STSv1; id=abc; =x", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1; id=abc; ext=", id), STS_TXT_INVALID);
	CHECK_INT(txt1("v=STSv1; id=abc def", id), STS_TXT_INVALID);  /* space inside */
	CHECK_INT(txt1("v=STSv1 id=abc", id), STS_TXT_INVALID);       /* no ';' */
}

/* ---- policy ---- */

static int pol(const char *s, struct sts_policy *p, const char **err)
{
	return sts_policy_parse(s, strlen(s), p, err);
}

static void t_policy_basic_crlf_lf(void)
{
	struct sts_policy p;
	const char *err = NULL;
	CHECK_INT(pol("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
		      "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n", &p, &err), 0);
	CHECK_INT(p.mode, STS_MODE_ENFORCE);
	CHECK_INT(p.max_age, 604800);
	CHECK_INT(p.n_mx, 3);
	if (p.n_mx == 3) {
		CHECK_STR(p.mx[0], "mail.example.com");
		CHECK_STR(p.mx[1], "*.example.net");
		CHECK_STR(p.mx[2], "backupmx.example.com");
	}
	CHECK_STR(p.id, "");
	sts_policy_fini(&p);
	/* LF only, no final line end, mixed CRLF/LF */
	CHECK_INT(pol("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400", &p, NULL), 0);
	CHECK_INT(p.mode, STS_MODE_TESTING);
	CHECK_INT(p.n_mx, 1);
	sts_policy_fini(&p);
	CHECK_INT(pol("version: STSv1\r\nmode: enforce\nmx: a.example\r\nmax_age: 1\n", &p, NULL), 0);
	CHECK_INT(p.max_age, 1);
	sts_policy_fini(&p);
}

static void t_policy_whitespace(void)
{
	struct sts_policy p;
	/* no space after ':', tabs, trailing spaces, blank lines */
	CHECK_INT(pol("version:STSv1\nmode:\tenforce  \n\nmx:   mx.example.com\t\nmax_age:86400 \n\n", &p, NULL), 0);
	CHECK_INT(p.mode, STS_MODE_ENFORCE);
	CHECK_INT(p.n_mx, 1);
	if (p.n_mx == 1)
		CHECK_STR(p.mx[0], "mx.example.com");
	sts_policy_fini(&p);
	/* a line that is not key: value */
	const char *err = NULL;
	CHECK_INT(pol("version: STSv1\nmode enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK(err && strstr(err, "key") != NULL);
	CHECK_INT(p.n_mx, 0);
	CHECK(p.mx == NULL);
	/* an HTML page served as the policy */
	CHECK_INT(pol("<html><body>hello</body></html>\n", &p, NULL), -1);
}

static void t_policy_required_fields(void)
{
	struct sts_policy p;
	const char *err = NULL;
	CHECK_INT(pol("mode: enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK_STR(err, "missing version");
	CHECK_INT(pol("version: STSv1\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK_STR(err, "missing mode");
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmx: a.example\n", &p, &err), -1);
	CHECK_STR(err, "missing max_age");
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmax_age: 5\n", &p, &err), -1);
	CHECK_STR(err, "missing mx");
	CHECK_INT(pol("version: STSv1\nmode: testing\nmax_age: 5\n", &p, &err), -1);
	CHECK_STR(err, "missing mx");
	/* mode none needs no mx */
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 5\n", &p, &err), 0);
	CHECK_INT(p.mode, STS_MODE_NONE);
	CHECK_INT(p.n_mx, 0);
	sts_policy_fini(&p);
	/* order does not matter: version last */
	CHECK_INT(pol("mode: enforce\nmx: a.example\nmax_age: 5\nversion: STSv1\n", &p, &err), 0);
	sts_policy_fini(&p);
}

static void t_policy_values_case_sensitive(void)
{
	struct sts_policy p;
	const char *err;
	CHECK_INT(pol("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK_INT(pol("version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK_INT(pol("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	/* "Mode:" is an unknown key, so mode is missing */
	CHECK_INT(pol("version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 5\n", &p, &err), -1);
	CHECK_STR(err, "missing mode");
	/* mx patterns are lowercased */
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmx: MX1.Example.COM.\nmax_age: 5\n", &p, &err), 0);
	if (p.n_mx == 1)
		CHECK_STR(p.mx[0], "mx1.example.com");
	sts_policy_fini(&p);
}

static void t_policy_max_age_bounds(void)
{
	struct sts_policy p;
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 0\n", &p, NULL), 0);
	CHECK_INT(p.max_age, 0);
	sts_policy_fini(&p);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 31557600\n", &p, NULL), 0);
	CHECK_INT(p.max_age, 31557600);
	sts_policy_fini(&p);
	/* above the maximum: clamped */
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 31557601\n", &p, NULL), 0);
	CHECK_INT(p.max_age, STS_MAX_AGE_MAX);
	sts_policy_fini(&p);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 9999999999\n", &p, NULL), 0); /* 10 digits */
	CHECK_INT(p.max_age, STS_MAX_AGE_MAX);
	sts_policy_fini(&p);
	/* 11 digits, signs, garbage, empty: invalid */
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 10000000000\n", &p, NULL), -1);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: -1\n", &p, NULL), -1);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: +5\n", &p, NULL), -1);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 5d\n", &p, NULL), -1);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age:\n", &p, NULL), -1);
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 1 2\n", &p, NULL), -1);
}

static void t_policy_unknown_and_repeated(void)
{
	struct sts_policy p;
	CHECK_INT(pol("version: STSv1\nfoo: bar: baz\nmode: enforce\nx_ext-1.2: anything goes =;\n"
		      "mx: a.example\nmax_age: 60\n", &p, NULL), 0);
	CHECK_INT(p.n_mx, 1);
	sts_policy_fini(&p);
	/* repeated non-mx keys: the first counts */
	CHECK_INT(pol("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 60\n"
		      "max_age: 999\nversion: junk\n", &p, NULL), 0);
	CHECK_INT(p.mode, STS_MODE_TESTING);
	CHECK_INT(p.max_age, 60);
	sts_policy_fini(&p);
}

static void t_policy_mx_patterns(void)
{
	struct sts_policy p;
	const char *err = NULL;
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmax_age: 60\n"
		      "mx: 192.0.2.1\nmx: [192.0.2.1]\nmx: a.*.example\nmx: *\nmx: **.example\n"
		      "mx: *example.com\nmx: bad host\nmx: ok.example\nmx: *.good.example\nmx: a..b\n"
		      "mx: ::1\nmx: .lead.example\n", &p, &err), 0);
	CHECK_INT(p.n_mx, 2);
	CHECK_INT(p.n_bad_mx, 10);
	if (p.n_mx == 2) {
		CHECK_STR(p.mx[0], "ok.example");
		CHECK_STR(p.mx[1], "*.good.example");
	}
	sts_policy_fini(&p);
	/* enforce with only bad patterns is invalid */
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmax_age: 60\nmx: 10.0.0.1\n", &p, &err), -1);
	CHECK_STR(err, "no valid mx pattern");
	/* a label of 64 characters */
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmax_age: 60\n"
		      "mx: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\n", &p, &err), -1);
}

static void t_policy_nul_and_many(void)
{
	struct sts_policy p;
	const char body[] = "version: STSv1\nmode: none\0\nmax_age: 5\n";
	CHECK_INT(sts_policy_parse(body, sizeof(body) - 1, &p, NULL), -1);
	/* length-bounded: not NUL-terminated input */
	const char *full = "version: STSv1\nmode: none\nmax_age: 5\nGARBAGE";
	CHECK_INT(sts_policy_parse(full, strlen(full) - strlen("GARBAGE"), &p, NULL), 0);
	sts_policy_fini(&p);
	/* many mx lines */
	char *big = malloc(64 * 1024);
	size_t n = (size_t)sprintf(big, "version: STSv1\nmode: enforce\nmax_age: 60\n");
	for (int i = 0; i < 1000; i++)
		n += (size_t)sprintf(big + n, "mx: mx%d.example.com\n", i);
	CHECK_INT(sts_policy_parse(big, n, &p, NULL), 0);
	CHECK_INT(p.n_mx, 1000);
	CHECK(sts_policy_allows(&p, "mx999.example.com"));
	struct sts_policy q;
	sts_policy_copy(&q, &p);
	CHECK_INT(q.n_mx, 1000);
	sts_policy_fini(&p);
	CHECK(sts_policy_allows(&q, "MX0.example.com."));
	sts_policy_fini(&q);
	free(big);
}

/* ---- matching ---- */

static void t_mx_match(void)
{
	CHECK(sts_mx_match("mx1.example.com", "mx1.example.com"));
	CHECK(sts_mx_match("mx1.example.com", "MX1.EXAMPLE.COM"));
	CHECK(sts_mx_match("mx1.example.com.", "mx1.example.com"));
	CHECK(sts_mx_match("mx1.example.com", "mx1.example.com."));
	CHECK(!sts_mx_match("mx1.example.com", "mx2.example.com"));
	CHECK(!sts_mx_match("mx1.example.com", "a.mx1.example.com"));
	CHECK(!sts_mx_match("example.com", "xexample.com"));
	/* wildcard: exactly one label */
	CHECK(sts_mx_match("*.example.com", "mx1.example.com"));
	CHECK(sts_mx_match("*.example.com", "MX1.Example.Com."));
	CHECK(sts_mx_match("*.Example.com.", "mx1.example.com"));
	CHECK(!sts_mx_match("*.example.com", "a.b.example.com"));
	CHECK(!sts_mx_match("*.example.com", "example.com"));
	CHECK(!sts_mx_match("*.example.com", ".example.com"));
	CHECK(!sts_mx_match("*.example.com", "mx1.xexample.com"));
	CHECK(!sts_mx_match("*.example.com", "mx1.example.co"));
	CHECK(!sts_mx_match("*.example.com", "mx1example.com"));
	CHECK(!sts_mx_match("", "example.com"));
	CHECK(!sts_mx_match("example.com", ""));
}

/* ---- Redis form ---- */

static void t_encode_decode(void)
{
	struct sts_policy p, q;
	CHECK_INT(pol("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n",
		      &p, NULL), 0);
	strcpy(p.id, "abc123");
	char buf[512];
	size_t n = sts_policy_encode(&p, 1717000000, buf, sizeof(buf));
	CHECK_INT(n, strlen(buf));
	CHECK_STR(buf, "1 1717000000 enforce 86400 abc123 mx1.example.com,*.example.net");
	int64_t at = 0;
	CHECK_INT(sts_policy_decode(buf, &q, &at, NULL), 0);
	CHECK_INT(at, 1717000000);
	CHECK_INT(q.mode, STS_MODE_ENFORCE);
	CHECK_INT(q.max_age, 86400);
	CHECK_STR(q.id, "abc123");
	CHECK_INT(q.n_mx, 2);
	if (q.n_mx == 2)
		CHECK_STR(q.mx[1], "*.example.net");
	sts_policy_fini(&q);
	/* truncation is reported by the length */
	char small[20];
	CHECK(sts_policy_encode(&p, 1717000000, small, sizeof(small)) >= sizeof(small));
	sts_policy_fini(&p);
	/* mode none, no mx, no id */
	CHECK_INT(pol("version: STSv1\nmode: none\nmax_age: 300\n", &p, NULL), 0);
	sts_policy_encode(&p, 5, buf, sizeof(buf));
	CHECK_STR(buf, "1 5 none 300 - -");
	CHECK_INT(sts_policy_decode(buf, &q, &at, NULL), 0);
	CHECK_INT(q.mode, STS_MODE_NONE);
	CHECK_STR(q.id, "");
	sts_policy_fini(&q);
	sts_policy_fini(&p);
	/* garbage */
	const char *err;
	CHECK_INT(sts_policy_decode("2 5 none 300 - -", &q, &at, &err), -1);
	CHECK_INT(sts_policy_decode("10 5 none 300 - -", &q, &at, &err), -1);
	CHECK_INT(sts_policy_decode("1 5 bogus 300 - -", &q, &at, &err), -1);
	CHECK_INT(sts_policy_decode("1 5 enforce 300 id -", &q, &at, &err), -1); /* no mx */
	CHECK_INT(sts_policy_decode("1 5 enforce 99999999 id a.example", &q, &at, &err), -1);
	CHECK_INT(sts_policy_decode("1 5 enforce 300 id a.example,10.0.0.1", &q, &at, &err), -1);
	CHECK_INT(q.n_mx, 0);
	CHECK_INT(sts_policy_decode("", &q, &at, &err), -1);
}

/* The Redis TTL of a persisted policy (mxsend run): from the encoding's own
 * fields, through the one decoder. */
static void t_policy_ttl(void)
{
	CHECK_INT(sts_policy_ttl("1 1717000000 enforce 86400 abc1 mx.a.com,*.b.com", 1717000000), 86400);
	CHECK_INT(sts_policy_ttl("1 1717000000 enforce 86400 abc1 mx.a.com", 1717000000 + 86000), 400);
	CHECK(sts_policy_ttl("1 1717000000 enforce 86400 abc1 mx.a.com", 1717000000 + 86400) <= 0);
	CHECK_INT(sts_policy_ttl("1 5 none 300 - -", 5), 300);
	/* not an encoded policy: nothing to keep */
	CHECK_INT(sts_policy_ttl("", 0), 0);
	CHECK_INT(sts_policy_ttl("2 5 none 300 - -", 0), 0);
	CHECK_INT(sts_policy_ttl("1 5 bogus 300 - -", 0), 0);
	CHECK_INT(sts_policy_ttl("1 -5 none 300 - -", 0), 0);
	CHECK_INT(sts_policy_ttl("1 9223372036854775807 none 300 - -", 0), 0); /* no overflow */
}

/* ---- cache decisions ---- */

static struct sts_policy mkpol(enum sts_mode mode, uint32_t max_age)
{
	struct sts_policy p;
	char body[200];
	snprintf(body, sizeof(body), "version: STSv1\nmode: %s\nmx: mx.example.com\nmax_age: %u\n",
		 sts_mode_name(mode), max_age);
	if (sts_policy_parse(body, strlen(body), &p, NULL) != 0)
		abort();
	return p;
}

static void t_cache_first_fetch(void)
{
	struct sts_cache *c = sts_cache_new(0);
	const struct sts_policy *pp = (void *)1;
	char fid[STS_ID_MAX + 1], why[STS_WHY_LEN];
	/* no TXT, nothing cached */
	CHECK_INT(sts_cache_decide(c, "example.com", NULL, 1000, &pp, fid, why), STS_D_NONE);
	CHECK(pp == NULL);
	/* TXT, nothing cached: fetch, no fallback */
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 1000, &pp, fid, why), STS_D_FETCH);
	CHECK(pp == NULL);
	CHECK_STR(fid, "id1");
	struct sts_policy p = mkpol(STS_MODE_ENFORCE, 86400);
	sts_cache_store(c, "Example.COM.", "id1", &p, 1000);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 1001, &pp, fid, why), STS_D_USE);
	CHECK(pp != NULL && pp->mode == STS_MODE_ENFORCE);
	CHECK_STR(pp ? pp->id : NULL, "id1");
	CHECK_STR(fid, "");
	/* the TXT record disappears: the cached policy stays in force */
	CHECK_INT(sts_cache_decide(c, "example.com", NULL, 2000, &pp, fid, why), STS_D_USE);
	CHECK_INT(sts_cache_count(c), 1);
	sts_cache_free(c);
}

static void t_cache_expiry_and_refresh(void)
{
	struct sts_cache *c = sts_cache_new(0);
	const struct sts_policy *pp;
	char fid[STS_ID_MAX + 1], why[STS_WHY_LEN];
	struct sts_policy p = mkpol(STS_MODE_ENFORCE, 1000);
	sts_cache_store(c, "example.com", "id1", &p, 10000);
	sts_policy_fini(&p);
	/* refresh is due at half of max_age */
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 10499, &pp, fid, why), STS_D_USE);
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 10500, &pp, fid, why), STS_D_USE_REFRESH);
	CHECK_STR(fid, "id1");
	CHECK(pp != NULL);
	/* without a TXT record too, under the cached id */
	CHECK_INT(sts_cache_decide(c, "example.com", NULL, 10600, &pp, fid, why), STS_D_USE_REFRESH);
	CHECK_STR(fid, "id1");
	/* the refresh failed: keep using the policy, no new fetch for 5 minutes */
	sts_cache_fetch_failed(c, "example.com", "id1", 10600);
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 10899, &pp, fid, why), STS_D_USE);
	CHECK_STR(fid, "");
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 10900, &pp, fid, why), STS_D_USE_REFRESH);
	/* expired: gone; with a TXT record, fetch without fallback */
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 11000, &pp, fid, why), STS_D_FETCH);
	CHECK(pp == NULL);
	CHECK(sts_cache_peek(c, "example.com", NULL) == NULL);
	CHECK_INT(sts_cache_decide(c, "example.com", NULL, 11000, &pp, fid, why), STS_D_NONE);
	CHECK_INT(sts_cache_count(c), 0);
	/* refresh at most daily for long max_age */
	p = mkpol(STS_MODE_ENFORCE, STS_MAX_AGE_MAX);
	sts_cache_store(c, "long.example", "L", &p, 0);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "long.example", "L", 86399, &pp, fid, why), STS_D_USE);
	CHECK_INT(sts_cache_decide(c, "long.example", "L", 86400, &pp, fid, why), STS_D_USE_REFRESH);
	sts_cache_free(c);
}

static void t_cache_id_change(void)
{
	struct sts_cache *c = sts_cache_new(0);
	const struct sts_policy *pp;
	char fid[STS_ID_MAX + 1], why[STS_WHY_LEN];
	struct sts_policy p = mkpol(STS_MODE_ENFORCE, 86400);
	sts_cache_store(c, "example.com", "old", &p, 0);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "example.com", "new", 100, &pp, fid, why), STS_D_FETCH);
	CHECK_STR(fid, "new");
	CHECK(pp != NULL && strcmp(pp->id, "old") == 0); /* fallback on failure */
	/* the fetch fails: the cached policy keeps applying; retry after 5 minutes */
	sts_cache_fetch_failed(c, "example.com", "new", 100);
	CHECK_INT(sts_cache_decide(c, "example.com", "new", 101, &pp, fid, why), STS_D_USE);
	CHECK(pp != NULL && strcmp(pp->id, "old") == 0);
	CHECK_INT(sts_cache_decide(c, "example.com", "new", 399, &pp, fid, why), STS_D_USE);
	/* the back-off is per id: yet another id is fetched at once */
	CHECK_INT(sts_cache_decide(c, "example.com", "newer", 200, &pp, fid, why), STS_D_FETCH);
	CHECK_STR(fid, "newer");
	CHECK_INT(sts_cache_decide(c, "example.com", "new", 400, &pp, fid, why), STS_D_FETCH);
	/* success replaces the policy */
	p = mkpol(STS_MODE_TESTING, 86400);
	sts_cache_store(c, "example.com", "new", &p, 400);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "example.com", "new", 401, &pp, fid, why), STS_D_USE);
	CHECK(pp != NULL && pp->mode == STS_MODE_TESTING && strcmp(pp->id, "new") == 0);
	sts_cache_free(c);
}

static void t_cache_failed_first_fetch(void)
{
	struct sts_cache *c = sts_cache_new(0);
	const struct sts_policy *pp;
	char fid[STS_ID_MAX + 1], why[STS_WHY_LEN];
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 0, &pp, fid, why), STS_D_FETCH);
	sts_cache_fetch_failed(c, "example.com", "id1", 0);
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 299, &pp, fid, why), STS_D_NONE);
	CHECK(pp == NULL);
	CHECK(strstr(why, "failed") != NULL);
	CHECK_INT(sts_cache_count(c), 1);
	CHECK_INT(sts_cache_decide(c, "example.com", "id1", 300, &pp, fid, why), STS_D_FETCH);
	CHECK_INT(sts_cache_count(c), 0); /* the stale failure record is gone */
	sts_cache_free(c);
}

static void t_cache_mode_none(void)
{
	struct sts_cache *c = sts_cache_new(0);
	const struct sts_policy *pp;
	char fid[STS_ID_MAX + 1], why[STS_WHY_LEN];
	struct sts_policy p = mkpol(STS_MODE_ENFORCE, STS_MAX_AGE_MAX);
	sts_cache_store(c, "example.com", "a", &p, 0);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "example.com", "b", 10, &pp, fid, why), STS_D_FETCH);
	/* the new policy says none: it replaces the enforce policy at once,
	 * although that one had most of a year left */
	p = mkpol(STS_MODE_NONE, 3600);
	sts_cache_store(c, "example.com", "b", &p, 10);
	sts_policy_fini(&p);
	CHECK_INT(sts_cache_decide(c, "example.com", "b", 11, &pp, fid, why), STS_D_NONE);
	CHECK(pp != NULL && pp->mode == STS_MODE_NONE);
	/* and when the none policy expires, nothing is left */
	CHECK_INT(sts_cache_decide(c, "example.com", NULL, 3610, &pp, fid, why), STS_D_NONE);
	CHECK(pp == NULL);
	sts_cache_free(c);
}

static void t_cache_bound_and_load(void)
{
	struct sts_cache *c = sts_cache_new(3);
	struct sts_policy p = mkpol(STS_MODE_ENFORCE, 1000);
	sts_cache_store(c, "a.example", "1", &p, 0);
	sts_cache_store(c, "b.example", "1", &p, 0);
	sts_cache_store(c, "c.example", "1", &p, 0);
	CHECK(sts_cache_peek(c, "a.example", NULL) != NULL);
	const struct sts_policy *pp;
	char fid[STS_ID_MAX + 1];
	sts_cache_decide(c, "a.example", "1", 1, &pp, fid, NULL); /* a is now most recent */
	sts_cache_store(c, "d.example", "1", &p, 0);                /* evicts b */
	CHECK_INT(sts_cache_count(c), 3);
	CHECK(sts_cache_peek(c, "b.example", NULL) == NULL);
	CHECK(sts_cache_peek(c, "a.example", NULL) != NULL);
	/* load from Redis: expired ignored, older than cached ignored */
	char buf[256];
	strcpy(p.id, "r");
	sts_policy_encode(&p, 500, buf, sizeof(buf));
	struct sts_policy q;
	int64_t at;
	CHECK_INT(sts_policy_decode(buf, &q, &at, NULL), 0);
	sts_cache_load(c, "e.example", &q, at, 2000); /* expired at 1500 */
	CHECK(sts_cache_peek(c, "e.example", NULL) == NULL);
	sts_cache_load(c, "e.example", &q, at, 600);
	int64_t fa = 0;
	pp = sts_cache_peek(c, "E.example.", &fa);
	CHECK(pp != NULL && strcmp(pp->id, "r") == 0);
	CHECK_INT(fa, 500);
	sts_cache_store(c, "f.example", "new", &p, 900);
	sts_cache_load(c, "f.example", &q, at, 600);
	pp = sts_cache_peek(c, "f.example", &fa);
	CHECK(pp != NULL && strcmp(pp->id, "new") == 0);
	sts_policy_fini(&q);
	sts_policy_fini(&p);
	sts_cache_free(c);
}

/* ---- TLSRPT ---- */

static void t_tlsrpt(void)
{
	struct sts_tlsrpt r;
	const char *err = NULL;
	const char *rr[2] = { "v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x?a=b" };
	CHECK_INT(sts_tlsrpt_parse(rr, 2, &r, &err), STS_TXT_OK);
	CHECK_INT(r.n_rua, 2);
	CHECK_STR(r.rua[0], "mailto:tls@example.com");
	CHECK_STR(r.rua[1], "https://r.example/x?a=b");
	const char *sp[1] = { "v=TLSRPTv1;rua=mailto:a@example.com , mailto:b@example.com ; ext=1;" };
	CHECK_INT(sts_tlsrpt_parse(sp, 1, &r, &err), STS_TXT_OK);
	CHECK_INT(r.n_rua, 2);
	CHECK_STR(r.rua[1], "mailto:b@example.com");
	/* unknown schemes skipped; nothing usable = invalid */
	const char *ft[1] = { "v=TLSRPTv1; rua=ftp://x.example/,mailto:c@example.com" };
	CHECK_INT(sts_tlsrpt_parse(ft, 1, &r, &err), STS_TXT_OK);
	CHECK_INT(r.n_rua, 1);
	const char *bad[1] = { "v=TLSRPTv1; rua=http://x.example/" };
	CHECK_INT(sts_tlsrpt_parse(bad, 1, &r, &err), STS_TXT_INVALID);
	const char *norua[1] = { "v=TLSRPTv1; ext=1" };
	CHECK_INT(sts_tlsrpt_parse(norua, 1, &r, &err), STS_TXT_INVALID);
	CHECK_STR(err, "no rua field");
	const char *two[2] = { "v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com" };
	CHECK_INT(sts_tlsrpt_parse(two, 2, &r, &err), STS_TXT_INVALID);
	CHECK_INT(r.n_rua, 0);
	CHECK_INT(sts_tlsrpt_parse(rr, 1, &r, &err), STS_TXT_NONE);
	const char *tworua[1] = { "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com" };
	CHECK_INT(sts_tlsrpt_parse(tworua, 1, &r, &err), STS_TXT_INVALID);
}

/* The Redis key of a persisted policy, both ways (queue/sts_store.c uses
 * nothing else). */
static void t_redis_key(void)
{
	char key[64];
	CHECK_INT(sts_redis_key(key, sizeof(key), NULL, "example.com"), 22);
	CHECK_STR(key, "mxsend:sts:example.com");
	CHECK_STR(sts_redis_domain(key, NULL), "example.com");
	CHECK(sts_redis_domain("mxsend:sts:", NULL) == NULL);
	CHECK(sts_redis_domain("mxsend:tlsrpt:2024-06-01:example.com", NULL) == NULL);
	char small[12];
	CHECK_INT(sts_redis_key(small, sizeof(small), NULL, "example.com"), -1);
	CHECK_INT(sts_redis_match(key, sizeof(key), NULL), 12);
	CHECK_STR(key, "mxsend:sts:*");
	/* [redis] prefix: a hash tag for Redis Cluster; glob characters escaped */
	CHECK_INT(sts_redis_key(key, sizeof(key), "{mx}", "example.com"), 20);
	CHECK_STR(key, "{mx}:sts:example.com");
	CHECK_STR(sts_redis_domain(key, "{mx}"), "example.com");
	CHECK(sts_redis_domain(key, NULL) == NULL);
	CHECK(sts_redis_domain("{mx}:stsx", "{mx}") == NULL);
	CHECK_INT(sts_redis_match(key, sizeof(key), "{a*[b]}"), 16);
	CHECK_STR(key, "{a\\*\\[b\\]}:sts:*");
	CHECK_INT(sts_redis_match(small, sizeof(small), "mxsend"), -1);
}

static const struct t_case cases[] = {
	{ "policy: ttl of an encoded policy (Redis EX)", t_policy_ttl },
	{ "txt: basic forms", t_txt_basic },
	{ "txt: non-STS records ignored; none", t_txt_none_and_ignored },
	{ "txt: two STSv1 records = invalid", t_txt_two_records },
	{ "txt: id 1-32 alphanumerics, exactly once", t_txt_id_rules },
	{ "txt: extensions ignored, syntax checked", t_txt_extensions },
	{ "policy: CRLF, LF, mixed", t_policy_basic_crlf_lf },
	{ "policy: whitespace and blank lines", t_policy_whitespace },
	{ "policy: required fields; mode none needs no mx", t_policy_required_fields },
	{ "policy: keys and values are case-sensitive", t_policy_values_case_sensitive },
	{ "policy: max_age bounds (clamp above 31557600)", t_policy_max_age_bounds },
	{ "policy: unknown keys ignored, first instance wins", t_policy_unknown_and_repeated },
	{ "policy: mx patterns validated, bad ones skipped", t_policy_mx_patterns },
	{ "policy: NUL, length-bounded, 1000 mx", t_policy_nul_and_many },
	{ "mx match: case, trailing dots, *. is one label", t_mx_match },
	{ "redis form: encode/decode round trip and garbage", t_encode_decode },
	{ "cache: first fetch, TXT removed keeps policy", t_cache_first_fetch },
	{ "cache: refresh at max_age/2, expiry", t_cache_expiry_and_refresh },
	{ "cache: id change fetches; failure keeps cached; 5 min per id", t_cache_id_change },
	{ "cache: failed first fetch backs off 5 minutes", t_cache_failed_first_fetch },
	{ "cache: mode none replaces a cached policy at once", t_cache_mode_none },
	{ "cache: LRU bound, Redis load", t_cache_bound_and_load },
	{ "tlsrpt: rua parsing", t_tlsrpt },
	{ "redis key: mxsend:sts:DOMAIN both ways", t_redis_key },
};

T_MAIN(cases)
