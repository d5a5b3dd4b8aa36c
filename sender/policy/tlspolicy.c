/* tlspolicy.c: the TLS one delivery requires (see tlspolicy.h). */
#include "sender/policy/tlspolicy.h"

#include <stdio.h>

#include "sender/policy/dane.h"
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
	tp->usable = true;
}

void tlspolicy_host(struct tlspolicy *out, const struct tlspolicy *tp, int dane)
{
	*out = *tp;
	out->usable = true;
	switch ((enum dane_mode)dane) {
	case DANE_AUTH:
	case DANE_UNUSABLE:
		/* RFC 7672 2.2 / 3.1.3; RFC 8461 2: before MTA-STS */
		out->level = dane == DANE_AUTH ? TLS_LEVEL_VERIFY
			     : tp->level < TLS_LEVEL_ENCRYPT ? TLS_LEVEL_ENCRYPT
			     : tp->level == TLS_LEVEL_DANE_ONLY ? TLS_LEVEL_ENCRYPT : tp->level;
		out->on_failure = TLS_FAIL_NEXT_MX;
		snprintf(out->name, sizeof(out->name), "%s", dane_mode_name((enum dane_mode)dane));
		/* dane-only: records that authenticate, nothing less */
		out->usable = dane == DANE_AUTH || tp->level != TLS_LEVEL_DANE_ONLY;
		return;
	case DANE_FAIL:
		out->usable = false;
		snprintf(out->name, sizeof(out->name), "%s", dane_mode_name(DANE_FAIL));
		return;
	case DANE_NONE:
		out->usable = tp->level != TLS_LEVEL_DANE_ONLY;
		return;
	}
}
