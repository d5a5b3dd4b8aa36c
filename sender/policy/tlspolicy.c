/* tlspolicy.c: the TLS one delivery requires (see tlspolicy.h). */
#include "sender/policy/tlspolicy.h"

#include <stdio.h>

#include "tlscache/sts.h"

void tlspolicy_decide(struct tlspolicy *tp, const struct rule *rule, int job_min, int override,
		      const struct sts_policy *sts)
{
	int lvl = rule->tls;
	if (job_min > lvl)
		lvl = job_min;
	if (override >= 0)
		lvl = override;
	tp->level = (enum tls_level)lvl;
	tp->on_failure = rule->on_tls_failure;
	snprintf(tp->name, sizeof(tp->name), "%s", tls_level_name(tp->level));
	if (sts != NULL && sts->mode == STS_MODE_ENFORCE) {
		/* RFC 8461 4.1/5.1: verified TLS; a failure is temporary */
		snprintf(tp->name, sizeof(tp->name), "sts-enforce");
		if (tp->level < TLS_LEVEL_VERIFY)
			tp->level = TLS_LEVEL_VERIFY;
		if (tp->on_failure == TLS_FAIL_PLAINTEXT)
			tp->on_failure = TLS_FAIL_NEXT_MX;
		else if (tp->on_failure == TLS_FAIL_BOUNCE)
			tp->on_failure = TLS_FAIL_DEFER;
	} else if (sts != NULL && sts->mode == STS_MODE_TESTING) {
		snprintf(tp->name, sizeof(tp->name), "sts-testing");
	}
	/* XXX(DANE): usable TLSA records for the MX host will decide here and
	 * take precedence over MTA-STS (RFC 8461 2). */
}
