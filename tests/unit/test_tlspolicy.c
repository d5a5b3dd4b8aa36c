/* test_tlspolicy.c: sender/policy/tlspolicy.c, the TLS one delivery requires
 * (rule, job minimum, --tls override, MTA-STS). */
#include <string.h>

#include "sender/config.h"
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

static const struct t_case cases[] = {
	{ "local: rule, job minimum raises, override replaces", t_local },
	{ "mta-sts: enforce verifies, never plaintext nor bounce; testing named; none ignored", t_sts },
};

T_MAIN(cases)
