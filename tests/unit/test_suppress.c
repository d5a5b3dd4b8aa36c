/* test_suppress.c: suppression list entries (queue/suppress.c): fields from
 * addresses and domains, values as mxsend and applications write them, and
 * job_prune_decided (queue/job.c), which takes suppressed recipients out of
 * the delivery while keeping their results; cmd_suppress_parse. */
#include "queue/suppress.h"

#include <string.h>
#include <sysexits.h>

#include "queue/job.h"
#include "sender/cmd/suppress.h"
#include "sender/msg.h"
#include "tests/t.h"

static void t_key(void)
{
	char out[SUPP_KEY_MAX];
	const char *why = NULL;
	CHECK_INT(supp_key('a', "User@Example.COM", 16, out, sizeof(out), &why), 16);
	CHECK_STR(out, "user@example.com");
	CHECK_INT(supp_key('a', "a@b@c.test", 10, out, sizeof(out), &why), 10); /* last '@' splits */
	CHECK_INT(supp_key('d', "@Example.com.", 13, out, sizeof(out), &why), 12);
	CHECK_STR(out, "@example.com");
	CHECK_INT(supp_key('d', "x.test", 6, out, sizeof(out), &why), 7);
	CHECK_STR(out, "@x.test");
	static const struct {
		char kind;
		const char *s, *why;
	} bad[] = {
		{ 'a', "", "empty address" },
		{ 'a', "nodomain", "not an address (local@domain)" },
		{ 'a', "@x.test", "not an address (local@domain)" },
		{ 'a', "x@", "not an address (local@domain)" },
		{ 'a', "a b@x.test", "a blank in it" },
		{ 'a', "a\x01@x.test", "a control byte in it" },
		{ 'a', "a@x.test\x7f", "a control byte in it" },
		{ 'd', "", "empty domain" },
		{ 'd', "@", "empty domain" },
		{ 'd', "a@b.test", "a domain has no '@'" },
		{ 'd', "x\r\n.test", "a control byte in it" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		CHECK_INT(supp_key(bad[i].kind, bad[i].s, strlen(bad[i].s), out, sizeof(out), &why), -1);
		CHECK_STR(why, bad[i].why);
	}
	/* a NUL inside the length is a control byte, not an end */
	CHECK_INT(supp_key('a', "a\0b@x.test", 10, out, sizeof(out), &why), -1);
	/* too long for out */
	char big[600];
	memset(big, 'a', sizeof(big));
	big[300] = '@';
	CHECK_INT(supp_key('a', big, sizeof(big), out, sizeof(out), &why), -1);
	CHECK_STR(why, "too long");
	CHECK_INT(supp_key('a', "ab@c.d", 6, out, 6, &why), -1);
	CHECK_INT(supp_key('a', "ab@c.d", 6, out, 7, &why), 6);
}

static void t_value(void)
{
	struct supp_entry e;
	const char *v = "1765090000|1765000000|550 5.1.1|invalid-recipient (auto): a|b";
	supp_parse(v, strlen(v), &e);
	CHECK_INT(e.expires, 1765090000);
	CHECK_INT(e.added, 1765000000);
	CHECK_INT(e.code_len, 9);
	CHECK(strncmp(e.code, "550 5.1.1", 9) == 0);
	CHECK_STR(e.reason, "invalid-recipient (auto): a|b");
	CHECK(supp_active(&e, 1765089999));
	CHECK(!supp_active(&e, 1765090000));
	int code;
	char dsn[16];
	supp_code(&e, &code, dsn, sizeof(dsn));
	CHECK_INT(code, 550);
	CHECK_STR(dsn, "5.1.1");
	/* an application's bare reason: all reason, never expires */
	supp_parse("unsubscribed", 12, &e);
	CHECK_INT(e.expires, 0);
	CHECK_INT(e.code_len, 0);
	CHECK_INT(e.reason_len, 12);
	CHECK(supp_active(&e, 99999999999ull));
	supp_code(&e, &code, dsn, sizeof(dsn));
	CHECK_INT(code, 0);
	CHECK_STR(dsn, "");
	/* not the form: all reason */
	const char *odd[] = { "x|1|c|r", "1|y|c|r", "1|2|c", "|||", "12345678901234567890|1|c|r" };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		supp_parse(odd[i], strlen(odd[i]), &e);
		CHECK_INT(e.expires, 0);
		CHECK_INT(e.reason_len, strlen(odd[i]));
	}
	/* codes */
	static const struct {
		const char *code, *dsn;
		int n;
	} codes[] = { { "550", "", 550 }, { "452 4.2.2", "4.2.2", 452 }, { "5501", "", 0 },
		      { "550 x", "", 550 }, { "650 5.1.1", "", 0 }, { "550 5.1.1000000000000", "", 550 } };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		e.code = codes[i].code;
		e.code_len = strlen(codes[i].code);
		supp_code(&e, &code, dsn, sizeof(dsn));
		CHECK_INT(code, codes[i].n);
		CHECK_STR(dsn, codes[i].dsn);
	}
	/* format: control bytes and '|' in the code go, the reason keeps '|' */
	char out[SUPP_VALUE_MAX];
	size_t n = supp_format(out, sizeof(out), 0, 7, "550|5.1.1", "a\r\nb|c");
	CHECK_STR(out, "0|7|550 5.1.1|a  b|c");
	CHECK_INT(n, strlen(out));
	supp_parse(out, n, &e);
	CHECK_STR(e.reason, "a  b|c");
	char small[24];
	n = supp_format(small, sizeof(small), 1, 2, "550 5.1.1", "a long reason here");
	CHECK_INT(n, strlen(small));
	CHECK(n < sizeof(small));
}

static const struct job_limits lim = { .max_size = 100000, .addr_ok = msg_addr_norm,
				       .split = msg_split_list };

static void t_prune(void)
{
	struct job j;
	const char *kv[] = { "from", "a@src.test", "to", "a1@one.test,b1@two.test,a2@one.test,b2@two.test,c1@three.test",
			     "data", "d", NULL };
	size_t len[16], n = 0;
	while (kv[n] != NULL) {
		len[n] = strlen(kv[n]);
		n++;
	}
	CHECK_INT(job_decode(&j, "1700000000123-7", n, kv, len, &lim), 0);
	CHECK_INT(j.ndomain, 3);
	/* suppress a1 (one.test keeps a2), both of two.test (dropped) */
	struct job_outcome o = { .status = JOB_SUPPRESSED, .code = 550, .reply = "suppressed" };
	for (int i = 0; i < j.nrcpt; i++)
		if (strcmp(j.rcpts[i].addr, "a1@one.test") == 0 || strcmp(j.rcpts[i].addr, "b1@two.test") == 0 ||
		    strcmp(j.rcpts[i].addr, "b2@two.test") == 0)
			job_set_outcome(&j, i, &o);
	CHECK_INT(job_prune_decided(&j), 2);
	CHECK_INT(j.ndomain, 2);
	CHECK_INT(j.nrcpt, 5);
	for (int d = 0; d < j.ndomain; d++) {
		const struct job_domain *dom = &j.domains[d];
		CHECK_INT(dom->n, 1);
		CHECK(dom->addrs == &j.norm[dom->first]);
		CHECK_INT(j.rcpts[dom->first].status, JOB_PENDING);
		CHECK_INT(j.rcpts[dom->first].dom, d);
		CHECK(strcmp(dom->name, "one.test") == 0 ? strcmp(dom->addrs[0], "a2@one.test") == 0
							 : strcmp(dom->addrs[0], "c1@three.test") == 0);
		/* norm and rcpts moved together */
		CHECK(strcasecmp(j.rcpts[dom->first].addr, j.norm[dom->first]) == 0);
	}
	int supp = 0;
	for (int i = 0; i < j.nrcpt; i++)
		supp += j.rcpts[i].status == JOB_SUPPRESSED;
	CHECK_INT(supp, 3);
	CHECK_STR(job_status_name(JOB_SUPPRESSED), "suppressed");
	/* the rest decided: nothing left */
	o.status = JOB_DELIVERED;
	for (int d = 0; d < j.ndomain; d++)
		job_set_outcome(&j, j.domains[d].first, &o);
	CHECK_INT(job_prune_decided(&j), 0);
	CHECK_INT(j.ndomain, 0);
	CHECK(job_complete(&j));
	job_fini(&j);
}

#define PARSE(o, ...)                                                                              \
	cmd_suppress_parse((int)(sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *)),               \
			   (char *[]){ __VA_ARGS__ }, (o))

static void t_cli(void)
{
	struct cmd_suppress_opts o;
	char *av[] = { "suppress", "add", "-c", "f", "--reason", "r", "--code", "550 5.1.1",
		       "--expires", "30d", "a@b.test", "c@d.test" };
	CHECK_INT(cmd_suppress_parse(12, av, &o), 0); /* o borrows av */
	CHECK_INT(o.action, 'a');
	CHECK_INT(o.nitems, 2);
	CHECK_STR(o.items[1], "c@d.test");
	CHECK_INT(o.expires_ms, 30ull * 86400 * 1000);
	CHECK_STR(o.code, "550 5.1.1");
	CHECK_INT(PARSE(&o, "suppress", "del", "--domain", "x.test"), 0);
	CHECK(o.domain && o.action == 'd');
	CHECK_INT(PARSE(&o, "suppress", "list"), 0);
	CHECK_INT(PARSE(&o, "suppress", "check", "-"), 0);
	CHECK_INT(PARSE(&o, "suppress"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "bogus", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "add"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "list", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "del", "--reason", "r", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "add", "--code", "5xx", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "add", "--code", "550 nope", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "add", "--expires", "0", "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "add", "--expires", "soon", "a@b.test"), EX_USAGE);
	char reason[300];
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	CHECK_INT(PARSE(&o, "suppress", "add", "--reason", reason, "a@b.test"), EX_USAGE);
	CHECK_INT(PARSE(&o, "suppress", "--help"), CMD_HELP);
}

static const struct t_case cases[] = {
	{ "key", t_key }, { "value", t_value }, { "prune", t_prune }, { "cli", t_cli },
};
T_MAIN(cases)
