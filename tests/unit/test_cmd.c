/* test_cmd.c: the commands' argument parsers (sender/cmd/): what each accepts,
 * and each usage error (exit 64) with the reason it gives. Parsing touches
 * nothing else: no config is read, no network. */
#include "sender/cmd/cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "sender/cmd/check.h"
#include "sender/cmd/queue.h"
#include "sender/cmd/run.h"
#include "sender/cmd/send.h"
#include "sender/cmd/tlsrpt.h"
#include "sender/config.h"
#include "sender/log.h"
#include "sender/util.h"
#include "tests/t.h"

#define ARGV(...) ((char *[]){ __VA_ARGS__, NULL })

/* fn(argc, argv, o) over the given words (argv valid for the statement only). */
#define PARSE(fn, o, ...)                                                  \
	({                                                                 \
		char *v_[] = { __VA_ARGS__, NULL };                        \
		fn((int)ARRAY_LEN(v_) - 1, v_, o);                         \
	})

static int argc_of(char **v)
{
	int n = 0;
	while (v[n] != NULL)
		n++;
	return n;
}

static struct cmd_send_opts so; /* large: CMD_SEND_MAX_RCPTS pointers */

static int send_p(char **v)
{
	return cmd_send_parse(argc_of(v), v, &so);
}

/* why contains what (the reason names the flag). */
static int why_has(const char *why, const char *what)
{
	return why != NULL && strstr(why, what) != NULL;
}

static void t_send_ok(void)
{
	CHECK_INT(send_p(ARGV("send", "-c", "x.conf", "--from", "a@b.test", "--to", "c@d.test", "--to",
			      "e@f.test", "--dns", "127.0.0.1:5353", "--ca", "ca.pem", "--tls", "verify",
			      "--port", "2525", "--helo", "me.test", "--log", "debug", "--dkim", "no",
			      "--pool", "news", "msg.eml")),
		  0);
	CHECK_STR(so.dkim, "no");
	CHECK_STR(so.pool, "news");
	CHECK_STR(so.c.config, "x.conf");
	CHECK_STR(so.from, "a@b.test");
	CHECK_INT(so.nrcpt, 2);
	CHECK_STR(so.rcpts[1], "e@f.test");
	CHECK_STR(so.c.dns, "127.0.0.1:5353");
	CHECK_STR(so.c.ca, "ca.pem");
	CHECK_INT(so.c.tls_level, TLS_LEVEL_VERIFY);
	CHECK_INT(so.c.port, 2525);
	CHECK_STR(so.c.helo, "me.test");
	CHECK_INT(so.c.log_level, LOG_DEBUG);
	CHECK_STR(so.msg, "msg.eml");
	/* defaults; operands may come first (GNU permutation); "-" is stdin; -v */
	CHECK_INT(send_p(ARGV("send", "-", "--from", "", "--to", "x@y.test", "-v")), 0);
	CHECK_STR(so.msg, "-");
	CHECK_STR(so.from, "");
	CHECK(so.c.config == NULL && so.c.dns == NULL && so.c.helo == NULL);
	CHECK_INT(so.c.port, 0);
	CHECK_INT(so.c.tls_level, -1);
	CHECK_INT(so.c.log_level, LOG_INFO);
	CHECK(so.c.why == NULL && so.dkim == NULL && so.pool == NULL);
}

static void t_send_usage(void)
{
	CHECK_INT(send_p(ARGV("send", "--help")), CMD_HELP);
	CHECK_INT(send_p(ARGV("send", "--bogus", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK(so.c.why == NULL); /* getopt said it */
	CHECK_INT(send_p(ARGV("send", "-x", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK_INT(send_p(ARGV("send", "--to", "c@d", "m")), EX_USAGE);
	CHECK_STR(so.c.why, "--from is required");
	CHECK_INT(send_p(ARGV("send", "--from", "a@b", "m")), EX_USAGE);
	CHECK_STR(so.c.why, "--to is required");
	CHECK_INT(send_p(ARGV("send", "--from", "a@b", "--to", "c@d")), EX_USAGE);
	CHECK(why_has(so.c.why, "message file"));
	CHECK_INT(send_p(ARGV("send", "--from", "a@b", "--to", "c@d", "m1", "m2")), EX_USAGE);
	CHECK(why_has(so.c.why, "message file"));
	CHECK_INT(send_p(ARGV("send", "--from")), EX_USAGE); /* missing value */
}

static void t_send_bad_values(void)
{
	static const char *const ports[] = { "0", "65536", "-1", "abc", "80x", "", "99999999999999999999" };
	for (size_t i = 0; i < ARRAY_LEN(ports); i++) {
		CHECK_INT(send_p(ARGV("send", "--port", (char *)ports[i], "--from", "a@b", "--to", "c@d", "m")),
			  EX_USAGE);
		CHECK(why_has(so.c.why, "bad --port"));
	}
	CHECK_INT(send_p(ARGV("send", "--port", "65535", "--from", "a@b", "--to", "c@d", "m")), 0);
	CHECK_INT(send_p(ARGV("send", "--dns", "127.0.0.1:70000", "--from", "a@b", "--to", "c@d", "m")),
		  EX_USAGE);
	CHECK(why_has(so.c.why, "bad --dns"));
	CHECK_INT(send_p(ARGV("send", "--dns", "127.0.0.1:0", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK_INT(send_p(ARGV("send", "--dns", "[::1]:53,127.0.0.1", "--from", "a@b", "--to", "c@d", "m")), 0);
	CHECK_INT(send_p(ARGV("send", "--helo", "a\r\nMAIL FROM:<x>", "--from", "a@b", "--to", "c@d", "m")),
		  EX_USAGE);
	CHECK(why_has(so.c.why, "bad --helo"));
	CHECK_INT(send_p(ARGV("send", "--helo", "two words", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK_INT(send_p(ARGV("send", "--helo", "", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	{ /* over 255 bytes: refused, not cut to 255 on the wire */
		char h[257];
		memset(h, 'a', 256);
		h[256] = '\0';
		CHECK_INT(send_p(ARGV("send", "--helo", h, "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
		CHECK(why_has(so.c.why, "bad --helo"));
		h[255] = '\0';
		CHECK_INT(send_p(ARGV("send", "--helo", h, "--from", "a@b", "--to", "c@d", "m")), 0);
	}
	CHECK_INT(send_p(ARGV("send", "--tls", "maybe", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK(why_has(so.c.why, "bad --tls"));
	CHECK_INT(send_p(ARGV("send", "--log", "loud", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK(why_has(so.c.why, "bad --log"));
}

static void t_send_too_many_rcpts(void)
{
	int n = 3 + 2 * (CMD_SEND_MAX_RCPTS + 1) + 1;
	char **v = calloc((size_t)n + 1, sizeof(*v));
	int k = 0;
	v[k++] = "send";
	v[k++] = "--from";
	v[k++] = "a@b";
	for (int i = 0; i <= CMD_SEND_MAX_RCPTS; i++) {
		v[k++] = "--to";
		v[k++] = "c@d";
	}
	v[k++] = "m";
	CHECK_INT(cmd_send_parse(k, v, &so), EX_USAGE);
	CHECK_STR(so.c.why, "too many recipients");
	/* exactly the maximum is fine */
	v[k - 3] = "m";
	v[k - 2] = NULL;
	CHECK_INT(cmd_send_parse(k - 2, v, &so), 0);
	CHECK_INT(so.nrcpt, CMD_SEND_MAX_RCPTS);
	free(v);
}

/* A parse after one that stopped in the middle of a cluster of short flags
 * starts afresh (getopt's state is reset). */
static void t_parse_again(void)
{
	CHECK_INT(send_p(ARGV("send", "-vx", "--from", "a@b", "--to", "c@d", "m")), EX_USAGE);
	CHECK_INT(send_p(ARGV("send", "--from", "a@b", "--to", "c@d", "m")), 0);
	CHECK_STR(so.msg, "m");
	CHECK_INT(so.c.log_level, -1);
}

static void t_run(void)
{
	struct cmd_run_opts o;
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "--until-empty"), 0);
	CHECK(o.until_empty);
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "-c", "f", "--port", "25"), 0);
	CHECK(!o.until_empty);
	CHECK_INT(o.c.port, 25);
	CHECK_STR(o.c.config, "f");
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "extra"), EX_USAGE);
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "--port", "0"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --port"));
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "--dns", "1.2.3.4:65536"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --dns"));
	/* flags of other commands are not run's */
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "--helo", "x"), EX_USAGE);
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "--tls", "may"), EX_USAGE);
	CHECK_INT(PARSE(cmd_run_parse, &o, "run", "-h"), CMD_HELP);
}

static void t_check(void)
{
	struct cmd_check_opts o;
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "Example.COM."), 0);
	CHECK_STR(o.domain, "example.com");
	CHECK_INT(o.timeout_s, 30);
	CHECK_INT(o.https_port, 0);
	CHECK(!o.json);
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--json", "--timeout", "5", "--https-port", "8443",
					  "--helo", "me.test", "a.test"),
		  0);
	CHECK(o.json);
	CHECK_INT(o.timeout_s, 5);
	CHECK_INT(o.https_port, 8443);
	CHECK_STR(o.c.helo, "me.test");
	CHECK_INT(PARSE(cmd_check_parse, &o, "check"), EX_USAGE);
	CHECK(why_has(o.c.why, "DOMAIN"));
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "a.test", "b.test"), EX_USAGE);
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "."), EX_USAGE);
	CHECK_STR(o.c.why, "bad DOMAIN");
	char longd[300];
	memset(longd, 'a', sizeof(longd) - 1);
	longd[sizeof(longd) - 1] = '\0';
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", longd), EX_USAGE);
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--timeout", "0", "a.test"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --timeout"));
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--timeout", "3601", "a.test"), EX_USAGE);
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--https-port", "70000", "a.test"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --https-port"));
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--helo", "a\nb", "a.test"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --helo"));
	CHECK_INT(PARSE(cmd_check_parse, &o, "check", "--tls", "may", "a.test"), EX_USAGE);
}

static void t_tlsrpt(void)
{
	struct cmd_tlsrpt_opts o;
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt"), 0);
	CHECK_STR(o.only, "");
	CHECK(!o.dry_run);
	CHECK_INT(o.https_port, 443);
	CHECK_INT(o.timeout_s, 60);
	CHECK_INT(o.day_start % 86400, 0);
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "-n", "--day", "2024-06-01", "--delay", "60", "--from",
					   "r@x.test", "Rpt.Test."),
		  0);
	CHECK(o.dry_run);
	CHECK_INT(o.day_start, 1717200000);
	CHECK_INT(o.delay_s, 60);
	CHECK_STR(o.from, "r@x.test");
	CHECK_STR(o.only, "rpt.test");
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--day", "2024-13-01"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --day"));
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--delay", "86401"), EX_USAGE);
	CHECK(why_has(o.c.why, "bad --delay"));
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--timeout", "0"), EX_USAGE);
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--https-port", "0"), EX_USAGE);
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "a.test", "b.test"), EX_USAGE);
	CHECK_STR(o.c.why, "at most one DOMAIN");
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", ""), EX_USAGE);
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--dns", "x:99999"), EX_USAGE);
	CHECK_INT(PARSE(cmd_tlsrpt_parse, &o, "tlsrpt", "--bogus"), EX_USAGE);
}

static void t_enqueue(void)
{
	struct cmd_enqueue_opts o;
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--from", "a@b", "--to", "c@d", "--to", "e@f", "m"), 0);
	CHECK_STR(o.to, "c@d,e@f");
	CHECK_INT(o.count, 1);
	CHECK(!o.counted);
	cmd_enqueue_opts_fini(&o);
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--from", "a@b", "--to", "c@d", "--count", "5", "-"), 0);
	CHECK(o.counted);
	CHECK_INT(o.count, 5);
	CHECK_STR(o.msg, "-");
	cmd_enqueue_opts_fini(&o);
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--from", "a@b", "--to", "c@d", "--count", "0", "m"),
		  EX_USAGE);
	CHECK(why_has(o.c.why, "bad --count"));
	cmd_enqueue_opts_fini(&o);
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--to", "c@d", "m"), EX_USAGE);
	CHECK_STR(o.c.why, "--from is required");
	cmd_enqueue_opts_fini(&o);
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--from", "a@b", "--to", "c@d"), EX_USAGE);
	cmd_enqueue_opts_fini(&o);
	/* send's flags are not enqueue's */
	CHECK_INT(PARSE(cmd_enqueue_parse, &o, "enqueue", "--port", "25", "--from", "a@b", "--to", "c@d", "m"),
		  EX_USAGE);
	cmd_enqueue_opts_fini(&o);
}

static void t_held_release(void)
{
	struct cmd_common h;
	struct cmd_release_opts r;
	CHECK_INT(PARSE(cmd_held_parse, &h, "held", "-c", "f"), 0);
	CHECK_STR(h.config, "f");
	CHECK_INT(PARSE(cmd_held_parse, &h, "held", "x"), EX_USAGE);
	CHECK_INT(PARSE(cmd_release_parse, &r, "release", "--domain", "a.test"), 0);
	CHECK_STR(r.domain, "a.test");
	CHECK_INT(r.nids, 0);
	char *ids[] = { "release", "id1", "id2", NULL };
	CHECK_INT(cmd_release_parse(3, ids, &r), 0);
	CHECK_INT(r.nids, 2);
	CHECK_STR(r.ids[1], "id2");
	CHECK_INT(PARSE(cmd_release_parse, &r, "release"), EX_USAGE);
	CHECK_INT(PARSE(cmd_release_parse, &r, "release", "--domain", "a.test", "id1"), EX_USAGE);
	CHECK_INT(PARSE(cmd_release_parse, &r, "release", "--domain", ""), EX_USAGE);
}

static void t_helpers(void)
{
	char d[8];
	CHECK_INT(cmd_domain_arg("AbC.", d, sizeof(d)), 0);
	CHECK_STR(d, "abc");
	CHECK_INT(cmd_domain_arg("abcdefg", d, sizeof(d)), 0);
	CHECK_INT(cmd_domain_arg("abcdefgh", d, sizeof(d)), -1);
	CHECK_INT(cmd_domain_arg("", d, sizeof(d)), -1);
	long v = 7;
	CHECK(cmd_parse_long("10", 1, 10, &v) && v == 10);
	CHECK(!cmd_parse_long("11", 1, 10, &v));
	CHECK(!cmd_parse_long(" 5", 1, 10, &v) || v == 5); /* strtol skips blanks: still in range */
	CHECK(!cmd_parse_long("5 ", 1, 10, &v));
	CHECK(!cmd_parse_long("", 1, 10, &v));
	CHECK(!cmd_parse_long("99999999999999999999", 0, 100, &v));
}

static const struct t_case cases[] = {
	{ "send: every flag parsed; defaults; operands anywhere", t_send_ok },
	{ "send: --help; unknown flag, no --from/--to/MSG, two MSGs: usage", t_send_usage },
	{ "send: bad --port/--dns/--helo (CR LF)/--tls/--log: usage naming the flag", t_send_bad_values },
	{ "send: more than 1000 --to: usage", t_send_too_many_rcpts },
	{ "parse: getopt state reset between parses", t_parse_again },
	{ "run: --until-empty, no operands, only its flags", t_run },
	{ "check: DOMAIN lower-cased, bounds of --timeout/--https-port", t_check },
	{ "tlsrpt: --day/--delay/--timeout bounds, one DOMAIN", t_tlsrpt },
	{ "enqueue: --to joined, --count, required flags", t_enqueue },
	{ "held/release: operands", t_held_release },
	{ "helpers: cmd_domain_arg, cmd_parse_long", t_helpers },
};
T_MAIN(cases)
