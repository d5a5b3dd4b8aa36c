/* test_bclass.c: bounce classes (sender/bclass.c): the shipped rule file
 * against real replies of the large providers, mxsend's own failures, user
 * rules first, and rule-file errors naming FILE:LINE. Run from the source
 * tree's root (tests/run.sh does). */
#include "sender/bclass.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/t.h"

#define SHIPPED "sender/classes.conf"

static struct bclass_rules *shipped(void)
{
	const char *p[] = { SHIPPED };
	char err[400] = "";
	struct bclass_rules *r = bclass_load(p, 1, err, sizeof(err));
	if (r == NULL)
		fprintf(stderr, "  %s\n", err);
	CHECK(r != NULL);
	return r;
}

struct cls_case {
	int code;
	const char *dsn, *text, *want;
};

static void check_all(const struct bclass_rules *r, const struct cls_case *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *got = bclass_name(bclass_classify(r, c[i].code, c[i].dsn, c[i].text, BCLASS_O_REPLY));
		if (strcmp(got, c[i].want) != 0) {
			fprintf(stderr, "  %d %s \"%s\": got %s, want %s\n", c[i].code, c[i].dsn, c[i].text,
				got, c[i].want);
			t_failed = 1;
		}
	}
}

static void t_codes(void)
{
	struct bclass_rules *r = shipped();
	static const struct cls_case c[] = {
		{ 550, "5.1.1", "<x@example.com>: Recipient address rejected: User unknown", "invalid-recipient" },
		{ 450, "4.1.1", "Recipient address rejected: unverified address", "invalid-recipient" },
		{ 556, "5.1.10", "null MX", "invalid-recipient" },
		{ 552, "5.2.2", "Mailbox full", "mailbox-full" },
		{ 452, "4.2.2", "The email account that you tried to reach is over quota.", "mailbox-full" },
		{ 552, "5.3.4", "Message size exceeds fixed limit", "content" },
		{ 550, "5.7.26", "Unauthenticated email is not accepted", "authentication" },
		{ 550, "5.7.25", "The IP address sending this message does not have a PTR record", "authentication" },
		{ 451, "4.4.3", "routing server failure", "dns" },
		{ 451, "4.4.2", "bad connection", "connection" },
		{ 452, "4.5.3", "Too many recipients", "rate-limited" },
		{ 554, "5.6.0", "Message body malformed", "content" },
		{ 530, "5.7.10", "Must issue a STARTTLS command first", "tls" },
		{ 550, "5.7.1", "Delivery not authorized", "policy" },
		{ 451, "4.7.1", "Please try again later", "rate-limited" },
		{ 451, "4.7.1", "Service unavailable", "policy" },
		{ 451, "4.3.0", "Temporary System Problem", "other" },
		{ 554, "", "Transaction failed", "policy" },
		{ 500, "", "weird", "other" },
		{ 550, "5.0.0", "no idea", "other" },
	};
	check_all(r, c, sizeof(c) / sizeof(c[0]));
	bclass_free(r);
}

static void t_providers(void)
{
	struct bclass_rules *r = shipped();
	static const struct cls_case c[] = {
		/* Gmail */
		{ 421, "4.7.28", "[203.0.113.42] Our system has detected an unusual rate of unsolicited mail "
				 "originating from your IP address. To protect our users from spam, mail sent "
				 "from your IP address has been temporarily rate limited. - gsmtp",
		  "rate-limited" },
		{ 421, "4.7.0", "Our system has detected an unusual rate of unsolicited mail originating from "
				"your IP address.", "rate-limited" },
		{ 421, "4.7.0", "TLS required for RCPT domain, closing connection.", "tls" },
		{ 450, "4.2.1", "The user you are trying to contact is receiving mail too quickly.", "rate-limited" },
		{ 550, "5.1.1", "The email account that you tried to reach does not exist. Please try "
				"double-checking the recipient's email address for typos - gsmtp",
		  "invalid-recipient" },
		{ 550, "5.2.1", "The email account that you tried to reach is disabled. - gsmtp", "invalid-recipient" },
		{ 550, "5.7.26", "This mail has been blocked because the sender is unauthenticated. Gmail "
				 "requires all senders to authenticate with either SPF or DKIM.",
		  "authentication" },
		{ 550, "5.7.1", "Our system has detected that this message is likely unsolicited mail. To reduce "
				"the amount of spam sent to Gmail, this message has been blocked.",
		  "content" },
		{ 550, "5.7.1", "Our system has detected that this message is likely suspicious due to the very "
				"low reputation of the sending IP address.",
		  "reputation" },
		/* Microsoft */
		{ 550, "5.7.1", "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
				"Internet service provider since part of their network is on our block list "
				"(S3150). You can also refer your provider to http://mail.live.com/mail/"
				"troubleshooting.aspx#errors.",
		  "reputation" },
		{ 451, "4.7.650", "The mail server [192.0.2.1] has been temporarily rate limited due to IP "
				  "reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)",
		  "rate-limited" },
		{ 451, "4.7.651", "The mail server [192.0.2.1] has been temporarily rate limited due to IP "
				  "reputation. (S3114)", "rate-limited" },
		{ 550, "5.7.708", "Service unavailable. Access denied, traffic not accepted from this IP.",
		  "reputation" },
		{ 550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)", "invalid-recipient" },
		{ 550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017)", "invalid-recipient" },
		{ 550, "5.7.509", "Access denied, sending domain example.com does not pass DMARC verification",
		  "authentication" },
		/* Yahoo, AOL */
		{ 421, "4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
				"or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
		  "rate-limited" },
		{ 421, "4.7.0", "[TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints - "
				"4.16.55.1", "rate-limited" },
		{ 421, "4.7.0", "[TS02] Messages from 192.0.2.1 temporarily deferred due to user complaints",
		  "rate-limited" },
		{ 553, "5.7.2", "[TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will "
				"NOT succeed.", "reputation" },
		{ 421, "4.7.0", "[TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will "
				"NOT succeed.", "reputation" },
		{ 554, "", "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
		  "invalid-recipient" },
		{ 550, "5.7.9", "This mail has been blocked because the sender is unauthenticated. Yahoo requires "
				"all senders to authenticate with either SPF or DKIM.",
		  "authentication" },
		{ 554, "5.7.9", "Message not accepted for policy reasons.", "policy" },
		/* generic */
		{ 450, "4.2.0", "<x@example.org>: Recipient address rejected: Greylisted, see "
				"http://postgrey.schweikert.ch/help/example.org.html", "greylisted" },
		{ 550, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
		  "reputation" },
		{ 550, "", "No such user here", "invalid-recipient" },
		{ 552, "", "Requested mail action aborted: exceeded storage allocation", "mailbox-full" },
		{ 554, "5.7.1", "Relay access denied", "policy" },
	};
	check_all(r, c, sizeof(c) / sizeof(c[0]));
	bclass_free(r);
}

static void t_origins(void)
{
	/* mxsend's own failures: no rules needed (NULL), the text plays no part */
	CHECK_INT(bclass_classify(NULL, 550, "5.1.2", "domain does not exist", BCLASS_O_DNS), BCLASS_DNS);
	CHECK_INT(bclass_classify(NULL, 451, "4.4.3", "SERVFAIL", BCLASS_O_DNS), BCLASS_DNS);
	CHECK_INT(bclass_classify(NULL, 556, "5.1.10", "null MX", BCLASS_O_DNS), BCLASS_INVALID_RECIPIENT);
	CHECK_INT(bclass_classify(NULL, 451, "4.7.5", "user unknown", BCLASS_O_TLS), BCLASS_TLS);
	CHECK_INT(bclass_classify(NULL, 451, "4.4.1", "connect failed: Connection refused", BCLASS_O_CONNECT),
		  BCLASS_CONNECTION);
	CHECK_INT(bclass_classify(NULL, 451, "4.4.2", "timeout waiting for the greeting", BCLASS_O_TIMEOUT),
		  BCLASS_TIMEOUT);
	CHECK_INT(bclass_classify(NULL, 451, "4.3.0", "internal", BCLASS_O_INTERNAL), BCLASS_OTHER);
	/* a reply without rules, and hostile dsn/text */
	CHECK_INT(bclass_classify(NULL, 550, "5.1.1", "x", BCLASS_O_REPLY), BCLASS_OTHER);
	struct bclass_rules *r = shipped();
	CHECK_INT(bclass_classify(r, 550, NULL, NULL, BCLASS_O_REPLY), BCLASS_OTHER);
	CHECK_INT(bclass_classify(r, 550, "5.1.1.1", "", BCLASS_O_REPLY), BCLASS_OTHER);
	CHECK_INT(bclass_classify(r, 550, "9.1.1", "", BCLASS_O_REPLY), BCLASS_OTHER);
	CHECK_INT(bclass_classify(r, -5, "x", "\xff\xfe user unknown", BCLASS_O_REPLY), BCLASS_OTHER);
	CHECK_INT(bclass_classify(r, 550, "5.1.1000", "user unknown", BCLASS_O_REPLY), BCLASS_INVALID_RECIPIENT);
	bclass_free(r);
}

static void t_names(void)
{
	for (int i = 1; i < BCLASS_N; i++)
		CHECK_INT(bclass_parse(bclass_name((enum bclass)i)), i);
	CHECK_STR(bclass_name(BCLASS_NONE), "");
	CHECK_STR(bclass_name((enum bclass)99), "");
	CHECK_INT(bclass_parse(""), -1);
	CHECK_INT(bclass_parse("none"), -1);
	CHECK_INT(bclass_parse("Invalid-Recipient"), -1);
}

/* Rules from a string; NULL and the error when they do not load. */
static struct bclass_rules *mem(const char *s, char *err, size_t errlen)
{
	err[0] = '\0';
	return bclass_load_mem(s, strlen(s), "t.conf", err, errlen);
}

static void t_parse(void)
{
	char err[400];
	struct bclass_rules *r = mem("# comment\n\n   \t\ncontent 5xx 5.7.1 spam  \r\nother * *\n", err,
				     sizeof(err));
	CHECK(r != NULL);
	CHECK_INT(bclass_count(r), 2);
	CHECK_INT(bclass_classify(r, 550, "5.7.1", "SPAM detected", BCLASS_O_REPLY), BCLASS_CONTENT);
	CHECK_INT(bclass_classify(r, 550, "5.7.1", "ok", BCLASS_O_REPLY), BCLASS_OTHER);
	bclass_free(r);
	/* code ranges and DSN wildcards */
	r = mem("policy 55x *.7.* \ntimeout 4xx 4.*.7\n", err, sizeof(err));
	CHECK(r != NULL);
	CHECK_INT(bclass_classify(r, 554, "5.7.99", "", BCLASS_O_REPLY), BCLASS_POLICY);
	CHECK_INT(bclass_classify(r, 450, "4.7.1", "", BCLASS_O_REPLY), BCLASS_OTHER);
	CHECK_INT(bclass_classify(r, 451, "4.4.7", "", BCLASS_O_REPLY), BCLASS_TIMEOUT);
	bclass_free(r);

	static const struct {
		const char *text, *err;
	} bad[] = {
		{ "content 5xx 5.7.1 spam\nbogus * *\n", "t.conf:2: unknown class \"bogus\"" },
		{ "\n\ncontent 5xx\n", "t.conf:3: want: CLASS CODE DSN [REGEX]" },
		{ "content 6xx *\n", "t.conf:1: bad code \"6xx\"" },
		{ "content 5x0 *\n", "t.conf:1: bad code \"5x0\"" },
		{ "content 5555 *\n", "t.conf:1: bad code \"5555\"" },
		{ "content * 5.7\n", "t.conf:1: bad enhanced status code \"5.7\"" },
		{ "content * 3.7.1\n", "t.conf:1: bad enhanced status code \"3.7.1\"" },
		{ "content * 5.7.1000\n", "t.conf:1: bad enhanced status code \"5.7.1000\"" },
		{ "content * 5..1\n", "t.conf:1: bad enhanced status code \"5..1\"" },
		{ "content * * (unclosed\n", "t.conf:1: bad regular expression:" },
		{ "content * * a\x01b\n", "t.conf:1: control byte in a rule" },
		{ "none * *\n", "t.conf:1: unknown class \"none\"" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = mem(bad[i].text, err, sizeof(err));
		CHECK(r == NULL);
		if (strncmp(err, bad[i].err, strlen(bad[i].err)) != 0) {
			fprintf(stderr, "  case %zu: \"%s\" does not start with \"%s\"\n", i, err, bad[i].err);
			t_failed = 1;
		}
		bclass_free(r);
	}
	/* a NUL byte, an overlong line */
	r = bclass_load_mem("other * *\0x\n", 12, "t.conf", err, sizeof(err));
	CHECK(r == NULL);
	CHECK(strstr(err, "t.conf:1: NUL byte") != NULL);
	char *big = malloc(6000);
	memset(big, 'a', 5999);
	big[5999] = '\0';
	memcpy(big, "other * * ", 10);
	r = mem(big, err, sizeof(err));
	CHECK(r == NULL);
	CHECK(strstr(err, "t.conf:1: line longer than 4096 bytes") != NULL);
	free(big);
}

static void t_files(void)
{
	char path[] = "/tmp/test_bclass.XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fputs("# the user's: a 5.1.1 from this provider means a full mailbox\n"
	      "mailbox-full 550 5.1.1 acme-mail\n",
	      f);
	fclose(f);
	const char *p[] = { path, NULL, SHIPPED };
	char err[400];
	struct bclass_rules *r = bclass_load(p, 3, err, sizeof(err));
	CHECK(r != NULL);
	CHECK_INT(bclass_classify(r, 550, "5.1.1", "acme-mail: box full", BCLASS_O_REPLY), BCLASS_MAILBOX_FULL);
	CHECK_INT(bclass_classify(r, 550, "5.1.1", "user unknown", BCLASS_O_REPLY),
		  BCLASS_INVALID_RECIPIENT);
	bclass_free(r);
	/* a bad rule in the second file: that file's name and line */
	f = fopen(path, "w");
	fputs("other * *\n\n# x\nslow 4xx *\n", f);
	fclose(f);
	const char *p2[] = { SHIPPED, path };
	r = bclass_load(p2, 2, err, sizeof(err));
	CHECK(r == NULL);
	char want[200];
	snprintf(want, sizeof(want), "%s:4: unknown class \"slow\"", path);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	unlink(path);
	const char *p3[] = { "/nonexistent/classes.conf" };
	r = bclass_load(p3, 1, err, sizeof(err));
	CHECK(r == NULL);
	CHECK_STR(err, "/nonexistent/classes.conf: No such file or directory");
	char out[512];
	CHECK_INT(bclass_default_path("sender/mxsend.conf.example", out, sizeof(out)), 0);
	CHECK_STR(out, "sender/classes.conf");
}

static const struct t_case cases[] = {
	{ "codes", t_codes },	  { "providers", t_providers }, { "origins", t_origins },
	{ "names", t_names },	  { "parse", t_parse },		{ "files", t_files },
};
T_MAIN(cases)
