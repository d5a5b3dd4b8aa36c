/* test_tlspolicy.c: sender/policy/tlspolicy.c, the TLS one delivery requires
 * (rule, job minimum, --tls override, MTA-STS, DANE per MX host), and
 * sender/policy/dane.c's pure decisions (usable records, the outcome of a
 * TLSA answer, policy strings, the verification context). */
#include <string.h>

#include "sender/config.h"
#include "sender/policy/dane.h"
#include "sender/policy/tlspolicy.h"
#include "tests/t.h"
#include "tlscache/sts.h"

static struct rule mkrule(enum tls_level tls, enum tls_fail_action act)
{
	struct rule r;
	memset(&r, 0, sizeof(r));
	r.tls = tls;
	r.on_tls_failure = act;
	return r;
}

static void t_local(void)
{
	struct tlspolicy tp;
	struct rule r = mkrule(TLS_LEVEL_MAY, TLS_FAIL_PLAINTEXT);
	tlspolicy_decide(&tp, &r, -1, -1, NULL);
	CHECK_INT(tp.level, TLS_LEVEL_MAY);
	CHECK_INT(tp.on_failure, TLS_FAIL_PLAINTEXT);
	CHECK_STR(tp.name, "may");
	/* the job's minimum only raises */
	tlspolicy_decide(&tp, &r, TLS_LEVEL_VERIFY, -1, NULL);
	CHECK_INT(tp.level, TLS_LEVEL_VERIFY);
	CHECK_STR(tp.name, "verify");
	r.tls = TLS_LEVEL_ENCRYPT;
	tlspolicy_decide(&tp, &r, TLS_LEVEL_MAY, -1, NULL);
	CHECK_INT(tp.level, TLS_LEVEL_ENCRYPT);
	/* the override replaces both, downwards too */
	tlspolicy_decide(&tp, &r, TLS_LEVEL_VERIFY, TLS_LEVEL_NONE, NULL);
	CHECK_INT(tp.level, TLS_LEVEL_NONE);
	CHECK_STR(tp.name, "none");
}

static struct sts_policy mkpol(const char *mode)
{
	struct sts_policy p;
	memset(&p, 0, sizeof(p));
	p.mode = strcmp(mode, "enforce") == 0	? STS_MODE_ENFORCE
		 : strcmp(mode, "testing") == 0 ? STS_MODE_TESTING
						 : STS_MODE_NONE;
	p.max_age = 86400;
	return p;
}

static void t_sts(void)
{
	struct tlspolicy tp;
	struct sts_policy enforce = mkpol("enforce"), testing = mkpol("testing"), none = mkpol("none");
	/* enforce beats even an override to none; plaintext and bounce are off */
	struct rule r = mkrule(TLS_LEVEL_MAY, TLS_FAIL_PLAINTEXT);
	tlspolicy_decide(&tp, &r, -1, TLS_LEVEL_NONE, &enforce);
	CHECK_INT(tp.level, TLS_LEVEL_VERIFY);
	CHECK_INT(tp.on_failure, TLS_FAIL_NEXT_MX);
	CHECK_STR(tp.name, "sts-enforce");
	r = mkrule(TLS_LEVEL_VERIFY, TLS_FAIL_BOUNCE);
	tlspolicy_decide(&tp, &r, -1, -1, &enforce);
	CHECK_INT(tp.on_failure, TLS_FAIL_DEFER);
	r = mkrule(TLS_LEVEL_ENCRYPT, TLS_FAIL_HOLD);
	tlspolicy_decide(&tp, &r, -1, -1, &enforce);
	CHECK_INT(tp.level, TLS_LEVEL_VERIFY);
	CHECK_INT(tp.on_failure, TLS_FAIL_HOLD);
	/* testing: named, nothing stricter */
	r = mkrule(TLS_LEVEL_MAY, TLS_FAIL_BOUNCE);
	tlspolicy_decide(&tp, &r, -1, -1, &testing);
	CHECK_INT(tp.level, TLS_LEVEL_MAY);
	CHECK_INT(tp.on_failure, TLS_FAIL_BOUNCE);
	CHECK_STR(tp.name, "sts-testing");
	/* mode none: as without a policy */
	tlspolicy_decide(&tp, &r, -1, -1, &none);
	CHECK_INT(tp.level, TLS_LEVEL_MAY);
	CHECK_STR(tp.name, "may");
}


/* DANE per MX host: over any local level and MTA-STS; failures to the next MX */
static void t_host(void)
{
	struct tlspolicy tp, hp;
	struct rule r = mkrule(TLS_LEVEL_NONE, TLS_FAIL_PLAINTEXT);
	tlspolicy_decide(&tp, &r, -1, -1, NULL);
	tlspolicy_host(&hp, &tp, DANE_AUTH);
	CHECK(hp.usable);
	CHECK_INT(hp.level, TLS_LEVEL_VERIFY);
	CHECK_INT(hp.on_failure, TLS_FAIL_NEXT_MX);
	CHECK_STR(hp.name, "dane");
	tlspolicy_host(&hp, &tp, DANE_UNUSABLE);
	CHECK_INT(hp.level, TLS_LEVEL_ENCRYPT);
	CHECK_INT(hp.on_failure, TLS_FAIL_NEXT_MX);
	CHECK_STR(hp.name, "dane-unusable");
	tlspolicy_host(&hp, &tp, DANE_FAIL);
	CHECK(!hp.usable);
	tlspolicy_host(&hp, &tp, DANE_NONE);
	CHECK(hp.usable);
	CHECK_INT(hp.level, TLS_LEVEL_NONE);
	CHECK_INT(hp.on_failure, TLS_FAIL_PLAINTEXT);
	CHECK_STR(hp.name, "none");
	/* over MTA-STS enforce and a bounce rule too */
	struct sts_policy pol = mkpol("enforce");
	r = mkrule(TLS_LEVEL_MAY, TLS_FAIL_BOUNCE);
	tlspolicy_decide(&tp, &r, -1, -1, &pol);
	tlspolicy_host(&hp, &tp, DANE_AUTH);
	CHECK_STR(hp.name, "dane");
	CHECK_INT(hp.on_failure, TLS_FAIL_NEXT_MX);
	sts_policy_fini(&pol);
	/* dane-only: only hosts the records authenticate */
	r = mkrule(TLS_LEVEL_DANE_ONLY, TLS_FAIL_DEFER);
	tlspolicy_decide(&tp, &r, -1, -1, NULL);
	CHECK_STR(tp.name, "dane-only");
	tlspolicy_host(&hp, &tp, DANE_NONE);
	CHECK(!hp.usable);
	tlspolicy_host(&hp, &tp, DANE_UNUSABLE);
	CHECK(!hp.usable);
	tlspolicy_host(&hp, &tp, DANE_AUTH);
	CHECK(hp.usable);
	CHECK_INT(hp.level, TLS_LEVEL_VERIFY);
	CHECK_INT(tls_level_parse("dane-only"), TLS_LEVEL_DANE_ONLY);
}

static struct dns_tlsa_rr rr(int u, int s, int m, size_t len, unsigned char *buf)
{
	struct dns_tlsa_rr x = { .usage = (uint8_t)u, .selector = (uint8_t)s, .mtype = (uint8_t)m,
				 .len = len, .data = buf };
	return x;
}

static void t_dane(void)
{
	unsigned char d[64];
	for (int i = 0; i < 64; i++)
		d[i] = (unsigned char)i;
	/* RFC 7672 3.1: DANE-TA/EE, selector 0/1, matching 0/1/2 of the right length */
	struct dns_tlsa_rr r = rr(3, 1, 1, 32, d);
	CHECK(dane_rr_usable(&r));
	r = rr(2, 0, 2, 64, d);
	CHECK(dane_rr_usable(&r));
	r = rr(3, 0, 0, 10, d);
	CHECK(dane_rr_usable(&r));
	r = rr(1, 1, 1, 32, d); /* PKIX-EE */
	CHECK(!dane_rr_usable(&r));
	r = rr(0, 0, 1, 32, d); /* PKIX-TA */
	CHECK(!dane_rr_usable(&r));
	r = rr(3, 2, 1, 32, d); /* selector */
	CHECK(!dane_rr_usable(&r));
	r = rr(3, 1, 3, 32, d); /* matching type */
	CHECK(!dane_rr_usable(&r));
	r = rr(3, 1, 1, 31, d); /* SHA-256 of the wrong length */
	CHECK(!dane_rr_usable(&r));
	r = rr(3, 1, 0, 0, d);
	CHECK(!dane_rr_usable(&r));

	struct dns_tlsa t = { .status = DNS_OK, .secure = true, .n = 2 };
	t.rr[0] = rr(1, 1, 1, 32, d);
	t.rr[1] = rr(3, 1, 1, 32, d);
	struct dane_host h, h2;
	dane_host_decide(&h, "mx.example", "real.example", &t);
	CHECK_INT(h.mode, DANE_AUTH);
	CHECK_INT(h.tls.n, 1);
	CHECK_STR(h.tls.base, "real.example");
	CHECK_STR(h.tls.mx_host, "mx.example");
	CHECK(strncmp(h.tls.tag, "dane-", 5) == 0 && strlen(h.tls.tag) == 21);
	char ps[300];
	dane_policy_strings(&h, ",", ps, sizeof(ps));
	CHECK_STR(ps, "1 1 1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f,"
		      "3 1 1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
	dane_policy_strings(&h, ",", ps, 80); /* a record is whole or absent */
	CHECK_STR(ps, "1 1 1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
	/* another record set: another context */
	d[0] = 0xff;
	dane_host_decide(&h2, "mx.example", "real.example", &t);
	CHECK(strcmp(h.tls.tag, h2.tls.tag) != 0);
	dane_host_fini(&h2);
	/* the copy is h's own: the answer may go */
	CHECK_INT(h.tlsa.rr[1].data[0], 0);
	dane_host_fini(&h);
	t.n = 1; /* PKIX-EE only */
	dane_host_decide(&h, "mx.example", "mx.example", &t);
	CHECK_INT(h.mode, DANE_UNUSABLE);
	dane_host_fini(&h);
	t.secure = false; /* insecure: ignored */
	dane_host_decide(&h, "mx.example", "mx.example", &t);
	CHECK_INT(h.mode, DANE_NONE);
	dane_host_fini(&h);
	t.status = DNS_TEMP; /* SERVFAIL / bogus: the host is not used */
	dane_host_decide(&h, "mx.example", "mx.example", &t);
	CHECK_INT(h.mode, DANE_FAIL);
	CHECK(strstr(h.why, "TLSA lookup for mx.example failed") != NULL);
	dane_host_fini(&h);
	t.status = DNS_NODATA;
	t.secure = true;
	dane_host_decide(&h, "mx.example", "mx.example", &t);
	CHECK_INT(h.mode, DANE_NONE);
	dane_host_fini(&h);
}

static const struct t_case cases[] = {
	{ "local: rule, job minimum raises, override replaces", t_local },
	{ "mta-sts: enforce verifies, never plaintext nor bounce; testing named; none ignored", t_sts },
	{ "dane per MX host: over local level and MTA-STS, next MX on failure, dane-only", t_host },
	{ "dane: usable records, TLSA answer outcomes, policy strings, contexts", t_dane },
};

T_MAIN(cases)
