/* test_shaping.c: unit tests for sender/shaping.c and the [provider],
 * [response], [shaping] sections (sender/config_shape.c): parsing, the
 * providers file (beside the config, overridden by the main file), errors
 * with file:line, provider matching by MX suffix, rule matching, the GCRA
 * pacing, throttle cuts, suspensions and the sync exchange. */
#include "sender/shaping.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/config.h"
#include "sender/limits.h"
#include "sender/util.h"
#include "tests/t.h"

static char dir[64];

static void put(const char *name, const char *text)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Load DIR/mxsend.conf with text (and DIR/providers.conf with prov, when
 * not NULL). Returns config_load's result; err gets the message. */
static int load(struct config *c, const char *text, const char *prov, char *err, size_t len)
{
	snprintf(dir, sizeof(dir), "/tmp/test_shaping.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		t_failed = 1;
		config_defaults(c);
		return -99;
	}
	put("mxsend.conf", text);
	if (prov)
		put("providers.conf", prov);
	char p[160];
	snprintf(p, sizeof(p), "%s/mxsend.conf", dir);
	int rc = config_load(c, p, err, len);
	unlink(p);
	snprintf(p, sizeof(p), "%s/providers.conf", dir);
	unlink(p);
	rmdir(dir);
	return rc;
}

static const char base[] = "[shaping]\nhold = 1s\nmax_wait = 10s\ndecrease = 0.5\n"
			   "[provider lab]\nmx = .lab.test exact.test\nmax_rate = 10\n"
			   "max_connections = 4\nmax_messages = 50\n"
			   "[provider sub]\nmx = .x.lab.test\n"
			   "[response lab-rate]\nprovider = lab\nmatch = ^421 4\\.7\\.28\naction = throttle\n"
			   "class = rate-limited\n"
			   "[response block]\nmatch = \\[TSS09\\]\naction = suspend 1h\n"
			   "[response perm]\nmatch = ^550 5\\.1\\.1 \naction = reclassify temporary\n";

static void t_parse(void)
{
	struct config c;
	char err[512] = "";
	CHECK_INT(load(&c, base, NULL, err, sizeof(err)), 0);
	CHECK_INT(c.n_providers, 2);
	CHECK_INT(c.n_responses, 3);
	CHECK_STR(c.providers[0].name, "lab");
	CHECK_INT(c.providers[0].n_mx, 2);
	CHECK_STR(c.providers[0].mx[1], "exact.test");
	CHECK_INT(c.providers[0].max_connections, 4);
	CHECK_INT(c.providers[0].max_messages, 50);
	CHECK(c.providers[0].max_rate == 10);
	CHECK_INT(c.responses[1].action, SHAPE_ACT_SUSPEND);
	CHECK_INT((long long)c.responses[1].duration_ms, 3600000);
	CHECK_INT(c.responses[2].action, SHAPE_ACT_TEMP);
	CHECK_STR(c.responses[0].class_name, "rate-limited");
	CHECK_INT((long long)c.shape_hold_ms, 1000);
	CHECK(c.shape_decrease == 0.5);
	CHECK(c.providers_path == NULL); /* none beside it */
	config_fini(&c);
}

static void t_providers_file(void)
{
	struct config c;
	char err[512] = "";
	const char *prov = "[provider google]\nmx = .google.com\nmax_rate = 50\n"
			   "[provider other]\nmx = .other.test\n"
			   "[response gmail]\nprovider = google\nmatch = ^421\naction = throttle\n";
	/* beside the config: loaded; the main file's [provider google] wins */
	CHECK_INT(load(&c, "[provider google]\nmx = .google.test\nmax_rate = 1\n", prov, err,
		       sizeof(err)), 0);
	CHECK(c.providers_path != NULL);
	CHECK_INT(c.n_providers, 2);
	CHECK_INT(config_provider_find(&c, "google"), 0);
	CHECK_STR(c.providers[0].mx[0], ".google.test");
	CHECK(c.providers[0].max_rate == 1);
	CHECK_INT(c.n_responses, 1); /* the shipped rule names the overridden provider */
	config_fini(&c);
	/* providers = none: not read */
	CHECK_INT(load(&c, "[shaping]\nproviders = none\n", prov, err, sizeof(err)), 0);
	CHECK_INT(c.n_providers, 0);
	config_fini(&c);
	/* a duplicate inside the providers file is an error there */
	CHECK_INT(load(&c, "", "[provider a]\nmx = .a.test\n[provider a]\nmx = .b.test\n", err,
		       sizeof(err)), -1);
	CHECK(strstr(err, "providers.conf:3: duplicate section [provider a]") != NULL);
	config_fini(&c);
	/* only shaping sections there */
	CHECK_INT(load(&c, "", "[domain x.test]\nport = 26\n", err, sizeof(err)), -1);
	CHECK(strstr(err, "providers.conf:1: the providers file holds") != NULL);
	config_fini(&c);
	/* a device never ends: refused, not read */
	CHECK_INT(load(&c, "[shaping]\nproviders = /dev/zero\n", NULL, err, sizeof(err)), -1);
	CHECK(strstr(err, "/dev/zero: not a regular file") != NULL);
	config_fini(&c);
	/* a named file that is not there */
	CHECK_INT(load(&c, "[shaping]\nproviders = nope.conf\n", NULL, err, sizeof(err)), -1);
	CHECK(strstr(err, "nope.conf: No such file") != NULL);
	config_fini(&c);
}

/* The file the project ships parses, and its providers match real MX names. */
static void t_shipped(void)
{
	char p[600], cwd[400], err[512] = "";
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		t_failed = 1;
		return;
	}
	snprintf(dir, sizeof(dir), "/tmp/test_shaping.XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	char text[700];
	snprintf(text, sizeof(text), "[shaping]\nproviders = %s/sender/providers.conf\n", cwd);
	put("mxsend.conf", text);
	snprintf(p, sizeof(p), "%s/mxsend.conf", dir);
	struct config c;
	int rc = config_load(&c, p, err, sizeof(err));
	unlink(p);
	rmdir(dir);
	CHECK_INT(rc, 0);
	if (rc != 0) {
		fprintf(stderr, "  %s\n", err);
		config_fini(&c);
		return;
	}
	CHECK(c.n_providers >= 9);
	struct shaping *sh = shaping_new(&c, NULL, err, sizeof(err));
	CHECK(sh != NULL);
	const char *mx[][2] = { { "gmail-smtp-in.l.google.com", "google" },
				{ "alt1.aspmx.l.google.com.", "google" },
				{ "example-com.mail.protection.outlook.com", "microsoft" },
				{ "mta5.am0.yahoodns.net", "yahoo" },
				{ "mx01.mail.icloud.com", "apple" },
				{ "mx00.gmx.net", "gmx" },
				{ "mx-ha02.web.de", "gmx" },
				{ "smtp-in.orange.fr", "orange" },
				{ "mxs.mail.ru", "mailru" },
				{ "mx.yandex.ru", "yandex" },
				{ "mx1a1.comcast.net", "comcast" } };
	for (size_t i = 0; sh && i < sizeof(mx) / sizeof(mx[0]); i++)
		CHECK_STR(shaping_provider_name(sh, shaping_provider(sh, mx[i][0])), mx[i][1]);
	struct shape_match m;
	int g = sh ? shaping_pair(sh, -1, shaping_provider(sh, "x.google.com")) : -1;
	CHECK(sh && shaping_match(sh, g, 421, "4.7.28", "[1.2.3.4] Our system has detected an unusual rate", &m));
	CHECK(m.action == SHAPE_ACT_THROTTLE);
	int ms = sh ? shaping_pair(sh, -1, shaping_provider(sh, "a.protection.outlook.com")) : -1;
	CHECK(sh && shaping_match(sh, ms, 550, "5.7.1", "Unfortunately, messages from [1.2.3.4] weren't sent. (S3150)", &m));
	CHECK(m.action == SHAPE_ACT_SUSPEND);
	CHECK(sh && shaping_match(sh, ms, 451, "4.7.650", "The mail server [1.2.3.4] has been temporarily rate limited", &m));
	CHECK(m.action == SHAPE_ACT_THROTTLE);
	int y = sh ? shaping_pair(sh, -1, shaping_provider(sh, "mta6.am0.yahoodns.net")) : -1;
	CHECK(sh && shaping_match(sh, y, 421, "4.7.0", "[TSS04] Messages from 1.2.3.4 temporarily deferred", &m));
	CHECK_STR(m.name, "yahoo-tss04");
	shaping_free(sh);
	config_fini(&c);
}

static void t_errors(void)
{
	struct config c;
	char err[512];
	struct {
		const char *text, *want;
	} bad[] = {
		{ "[provider]\nmx = .a\n", "mxsend.conf:1: section [provider] needs one name" },
		{ "[provider a]\nmax_rate = 1\n", "mxsend.conf:1: [provider a] needs mx =" },
		{ "[provider a]\nmx = .a..b\n", "mxsend.conf:2: bad value \".a..b\" for mx" },
		{ "[provider a]\nmx = .a\nfoo = 1\n", "mxsend.conf:3: unknown key \"foo\" in [provider a]" },
		{ "[response r]\nmatch = ^4\naction = throttle now\n", "mxsend.conf:3: bad value \"throttle now\" for action" },
		{ "[response r]\nmatch = ^4\naction = suspend 0s\n", "mxsend.conf:3: bad value \"suspend 0s\" for action" },
		{ "[response r]\nmatch = ^4 (\naction = throttle\n", "mxsend.conf:1: bad match in [response r]" },
		{ "[response r]\naction = throttle\n", "mxsend.conf:1: [response r] needs match =" },
		{ "[response r]\nmatch = x\nprovider = nope\n", "mxsend.conf:1: [response r]: provider = nope names no [provider nope] section" },
		{ "[response r]\nmatch = x\n[response r]\nmatch = y\n", "mxsend.conf:3: duplicate section [response r] (first at line 1)" },
		{ "[shaping]\ndecrease = 1\n", "mxsend.conf:2: bad value \"1\" for decrease" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		int rc = load(&c, bad[i].text, NULL, err, sizeof(err));
		CHECK_INT(rc, -1);
		if (strstr(err, bad[i].want) == NULL) {
			fprintf(stderr, "  case %zu: got \"%s\", want \"%s\"\n", i, err, bad[i].want);
			t_failed = 1;
		}
		config_fini(&c);
	}
}

static struct shaping *make(struct config *c)
{
	char err[512] = "";
	if (load(c, base, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "  %s\n", err);
		t_failed = 1;
		return NULL;
	}
	return shaping_new(c, NULL, err, sizeof(err));
}

static void t_provider_match(void)
{
	struct config c;
	struct shaping *sh = make(&c);
	CHECK(sh != NULL);
	if (sh == NULL)
		return;
	CHECK_INT(shaping_provider(sh, "mx1.lab.test"), 0);
	CHECK_INT(shaping_provider(sh, "MX1.LAB.TEST."), 0);
	CHECK_INT(shaping_provider(sh, "exact.test"), 0);
	CHECK_INT(shaping_provider(sh, "a.exact.test"), -1); /* exact only */
	CHECK_INT(shaping_provider(sh, "lab.test"), -1);     /* a suffix needs a label before it */
	CHECK_INT(shaping_provider(sh, "a.x.lab.test"), 1);  /* the longest suffix */
	CHECK_INT(shaping_provider(sh, "mx.other.test"), -1);
	CHECK_INT(shaping_pair(sh, -1, -1), -1);
	CHECK_INT(shaping_npairs(sh), 2); /* no sources: one "source" x 2 providers */
	char slot[160];
	int p = shaping_pair(sh, -1, 0);
	CHECK_INT(shaping_slot(sh, p, slot, sizeof(slot)), 4);
	CHECK_STR(slot, "provider:lab@-");
	CHECK_INT(shaping_max_messages(sh, p), 50);
	CHECK_INT(shaping_slot(sh, shaping_pair(sh, -1, 1), slot, sizeof(slot)), 0); /* no budget */
	/* two processes: the budget is split */
	struct limits_peers peers = { 0 };
	limits_peers_set(&peers, 2, 1);
	struct shaping *sh2 = shaping_new(&c, &peers, slot, sizeof(slot));
	CHECK_INT(shaping_slot(sh2, p, slot, sizeof(slot)), 2);
	shaping_free(sh2);
	shaping_free(sh);
	config_fini(&c);
}

static void t_rule_match(void)
{
	struct config c;
	struct shaping *sh = make(&c);
	if (sh == NULL)
		return;
	struct shape_match m;
	int lab = shaping_pair(sh, -1, 0), sub = shaping_pair(sh, -1, 1);
	CHECK(shaping_match(sh, lab, 421, "4.7.28", "unusual rate", &m));
	CHECK_STR(m.name, "lab-rate");
	CHECK_STR(m.class_name, "rate-limited");
	CHECK(!shaping_match(sh, sub, 421, "4.7.28", "unusual rate", &m)); /* provider = lab only */
	CHECK(!shaping_match(sh, -1, 421, "4.7.28", "x", &m));
	CHECK(shaping_match(sh, -1, 421, "4.7.0", "[tss09] deferred", &m)); /* any provider, no case */
	CHECK_INT(m.action, SHAPE_ACT_SUSPEND);
	CHECK(shaping_match(sh, sub, 550, "5.1.1", "no such user", &m));
	CHECK_INT(m.action, SHAPE_ACT_TEMP);
	CHECK(!shaping_match(sh, lab, 250, "2.0.0", "[TSS09]", &m)); /* never a good reply */
	CHECK(shaping_match(sh, lab, 421, "", "4.7.28 x", &m)); /* no esc: "CODE TEXT" */
	CHECK(!shaping_match(sh, lab, 451, "4.7.28", "x", &m));
	CHECK_INT(m.rule, -1);
	shaping_free(sh);
	config_fini(&c);
}

static void t_pacing(void)
{
	struct config c;
	struct shaping *sh = make(&c);
	if (sh == NULL)
		return;
	int p = shaping_pair(sh, -1, 0);
	uint64_t wait, until;
	bool booked, waiting = false;
	char why[160];
	/* 10/s: the first goes, the next ones are booked 100 ms apart */
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_GO);
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_WAIT);
	CHECK(booked && wait >= 90 && wait <= 101);
	CHECK_STR(why, "lab:rate rate=10.00/s conns=4");
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_WAIT);
	CHECK(booked && wait >= 190 && wait <= 201);
	for (int i = 0; i < 3; i++) /* up to the 500 ms horizon */
		shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why));
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_WAIT);
	CHECK(!booked && waiting); /* asks again later, counted among the waiters */
	/* 10 s max_wait at 10/s: a hundred waiting make the next one go back to
	 * the queue, due about when they are gone */
	bool w[120] = { false };
	int deferred = 0;
	for (int i = 0; i < 120; i++)
		if (shaping_admit(sh, p, &w[i], &wait, &booked, &until, why, sizeof(why)) == SHAPE_DEFER)
			deferred++;
	CHECK(deferred >= 19 && deferred <= 21);
	CHECK(until >= wall_ms() + 9000 && until <= wall_ms() + 11000);
	CHECK(strstr(why, " queued=") != NULL);
	for (int i = 0; i < 120; i++)
		shaping_unwait(sh, p, &w[i]);
	shaping_unwait(sh, p, &waiting);
	CHECK(!waiting);
	/* no provider: always go */
	CHECK_INT(shaping_admit(sh, -1, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_GO);
	shaping_free(sh);
	config_fini(&c);
}

/* A refusal right after the last cut's hold cuts twice as deep only while
 * the rate is far above what the receiver accepted lately. */
static void t_deep_cut(void)
{
	static const char cfg[] = "[shaping]\nhold = 100ms\ndecrease = 0.5\n"
				  "[provider lab]\nmx = .lab.test\nmax_rate = 10\n"
				  "[response lab-rate]\nmatch = ^421 4\\.7\\.28\naction = throttle\n";
	for (int accepted = 0; accepted <= 1; accepted++) {
		struct config c;
		char err[512] = "", why[160];
		CHECK_INT(load(&c, cfg, NULL, err, sizeof(err)), 0);
		struct shaping *sh = shaping_new(&c, NULL, err, sizeof(err));
		CHECK(sh != NULL);
		if (sh == NULL) {
			config_fini(&c);
			return;
		}
		int p = shaping_pair(sh, -1, 0);
		struct shape_report r;
		shaping_sync_take(sh, p, wall_ms(), &r);
		if (accepted) { /* the receiver took 40/s lately: the rate (5/s) is below it */
			for (int i = 0; i < 8; i++)
				shaping_ok(sh, p);
			usleep(100000);
			shaping_sync_take(sh, p, wall_ms(), &r);
		}
		struct shape_match m;
		CHECK(shaping_match(sh, p, 421, "4.7.28", "x", &m));
		shaping_act(sh, p, &m, why, sizeof(why));
		CHECK_STR(why, "lab-rate:throttle rate=5.00/s");
		usleep(150000); /* past the hold, within three */
		shaping_act(sh, p, &m, why, sizeof(why));
		CHECK_STR(why, accepted ? "lab-rate:throttle rate=2.50/s" /* one cut */
					: "lab-rate:throttle rate=1.25/s" /* twice as deep */);
		shaping_free(sh);
		config_fini(&c);
	}
}

static void t_throttle_and_sync(void)
{
	struct config c;
	struct shaping *sh = make(&c);
	if (sh == NULL)
		return;
	int p = shaping_pair(sh, -1, 0);
	struct shape_match m;
	char why[160];
	CHECK(shaping_match(sh, p, 421, "4.7.28", "x", &m));
	shaping_act(sh, p, &m, why, sizeof(why));
	CHECK_STR(why, "lab-rate:throttle rate=5.00/s conns=2"); /* decrease 0.5 */
	shaping_act(sh, p, &m, why, sizeof(why));                 /* within hold: once */
	CHECK_STR(why, "lab-rate:throttle rate=5.00/s conns=2");
	shaping_ok(sh, p);
	struct shape_report r;
	shaping_sync_take(sh, p, wall_ms(), &r);
	CHECK_INT(r.cuts, 2);
	CHECK_INT(r.ok, 1);
	CHECK(r.cut_rate == 5.0 && r.cut_conn == 2.0);
	CHECK(r.step > 0.099 && r.step < 0.101); /* increase 0.01 x the rate before the cut */
	CHECK_STR(r.cut_rule, "lab-rate");
	CHECK(r.max_rate == 10 && r.max_conn == 4);
	shaping_sync_take(sh, p, wall_ms(), &r); /* reset */
	CHECK_INT(r.cuts, 0);
	/* Redis says another process is lower still; then back at the limits */
	shaping_sync_apply(sh, p, 3.0, 1.0, 0, "lab-rate");
	shaping_act(sh, p, &(struct shape_match){ .rule = -1 }, why, sizeof(why)); /* no-op */
	uint64_t wait, until;
	bool booked, waiting = false;
	shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why));
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_WAIT);
	CHECK_STR(why, "lab-rate:throttle rate=3.00/s conns=1");
	shaping_sync_apply(sh, p, 0, 0, 0, "lab-rate");
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_WAIT);
	CHECK_STR(why, "lab:rate rate=10.00/s conns=4");
	/* a suspension: SUSPENDED with its end, and the rule */
	CHECK(shaping_match(sh, p, 421, "4.7.0", "[TSS09]", &m));
	shaping_act(sh, p, &m, why, sizeof(why));
	CHECK(strncmp(why, "block:suspend until=20", 22) == 0);
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)), SHAPE_SUSPENDED);
	CHECK(until > wall_ms() + 3500000);
	CHECK(strncmp(why, "block:suspend until=", 20) == 0);
	shaping_sync_take(sh, p, wall_ms(), &r);
	CHECK(r.susp_until == until);
	CHECK_STR(r.susp_rule, "block");
	/* Redis ends it (another process's view): it ends here too */
	shaping_sync_apply(sh, p, 0, 0, 0, "");
	CHECK_INT(shaping_admit(sh, p, &waiting, &wait, &booked, &until, why, sizeof(why)) == SHAPE_SUSPENDED, 0);
	shaping_free(sh);
	config_fini(&c);
}

/* [source] warmup: the day's budget per provider, this process's share of
 * what is left, LATER before the first answer from Redis and while others
 * may still have room, SPENT when none is left; past the schedule: no limit. */
static void t_warmup(void)
{
	struct config c;
	char err[512] = "";
	CHECK_INT(load(&c, "[source s1]\naddress = 127.0.0.1\nwarmup = 3 5\n"
			   "[source s2]\naddress = 127.0.0.1\n"
			   "[provider p]\nmx = .p.test\n", NULL, err, sizeof(err)), 0);
	CHECK_INT(c.sources[0].n_warmup, 2);
	CHECK_INT(c.sources[0].warmup[1], 5);
	struct limits_peers peers = { 0 };
	struct shaping *sh = shaping_new(&c, &peers, err, sizeof(err));
	if (sh == NULL) {
		t_failed = 1;
		config_fini(&c);
		return;
	}
	CHECK(shaping_warm_any(sh));
	int p1 = shaping_pair(sh, 0, 0), p2 = shaping_pair(sh, 1, 0);
	CHECK_INT(shaping_warm_take(sh, p2), SHAPE_WARM_OK); /* no warm-up */
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_LATER); /* not known yet */
	uint32_t delta;
	CHECK(shaping_warm_sync_take(sh, p1, &delta) && delta == 0);
	CHECK(!shaping_warm_sync_take(sh, p2, &delta));
	shaping_warm_apply(sh, p1, true, -1, 0, 0); /* not used yet: day 0 */
	for (int i = 0; i < 3; i++)
		CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_OK);
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_SPENT);
	char why[160];
	shaping_warm_why(sh, p1, why, sizeof(why));
	CHECK_STR(why, "warmup:s1/p day=0 limit=3");
	CHECK(shaping_warm_sync_take(sh, p1, &delta) && delta == 3);
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_SPENT); /* pending counts */
	shaping_warm_apply(sh, p1, false, 0, 0, delta);          /* lost: counts again */
	CHECK(shaping_warm_sync_take(sh, p1, &delta) && delta == 3);
	shaping_warm_apply(sh, p1, true, 1, 3, delta); /* day 1: 5, 3 used (2 processes) */
	limits_peers_set(&peers, 2, 0);
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_OK); /* share: ceil(2 / 2) */
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_LATER); /* the other may have room */
	shaping_warm_apply(sh, p1, true, 2, 0, 0); /* past the schedule */
	CHECK_INT(shaping_warm_take(sh, p1), SHAPE_WARM_OK);
	shaping_free(sh);
	/* bad values */
	const char *bad[] = { "warmup = 0", "warmup = 3 x", "warmup = ", "warmup = 100000001" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[200];
		config_fini(&c);
		snprintf(text, sizeof(text), "[source s1]\naddress = 127.0.0.1\n%s\n", bad[i]);
		CHECK_INT(load(&c, text, NULL, err, sizeof(err)), -1);
	}
	config_fini(&c);
}

static const struct t_case cases[] = {
	{ "parse", t_parse },
	{ "providers_file", t_providers_file },
	{ "shipped_providers", t_shipped },
	{ "errors", t_errors },
	{ "provider_match", t_provider_match },
	{ "rule_match", t_rule_match },
	{ "pacing", t_pacing },
	{ "throttle_and_sync", t_throttle_and_sync },
	{ "a deep cut only far above what the receiver accepted", t_deep_cut },
	{ "warmup", t_warmup },
};
T_MAIN(cases)
