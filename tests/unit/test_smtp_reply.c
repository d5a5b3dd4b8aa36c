/* test_smtp_reply.c: unit tests for sender/smtp_reply.c (reply framing,
 * limits, enhanced status codes, EHLO capabilities). */
#include "sender/smtp_reply.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tests/t.h"

static struct smtp_reply rep; /* 8 KiB: keep it off the stack */

static enum smtp_parse_rc parse(const char *s, size_t *used, const char **err)
{
	return smtp_reply_parse(s, strlen(s), &rep, used, err);
}

/* Parse s, expect one complete reply covering all of it. */
static void expect_ok(const char *s, int code, const char *esc, const char *text, int nlines)
{
	size_t used = 99;
	const char *err = NULL;
	enum smtp_parse_rc rc = parse(s, &used, &err);
	CHECK_INT(rc, SMTP_PARSE_OK);
	if (rc != SMTP_PARSE_OK) {
		fprintf(stderr, "  input \"%s\": %s\n", s, err ? err : "?");
		return;
	}
	CHECK_INT(used, strlen(s));
	CHECK_INT(rep.code, code);
	CHECK_STR(rep.esc, esc);
	CHECK_STR(rep.text, text);
	CHECK_INT(rep.text_len, strlen(text));
	CHECK_INT(rep.nlines, nlines);
}

static void expect_err_n(const char *s, size_t n, const char *reason)
{
	size_t used = 99;
	const char *err = NULL;
	CHECK_INT(smtp_reply_parse(s, n, &rep, &used, &err), SMTP_PARSE_ERR);
	CHECK_INT(used, 0);
	CHECK_STR(err, reason);
}

static void expect_err(const char *s, const char *reason)
{
	expect_err_n(s, strlen(s), reason);
}

static void expect_again_n(const char *s, size_t n)
{
	size_t used = 99;
	CHECK_INT(smtp_reply_parse(s, n, &rep, &used, NULL), SMTP_PARSE_AGAIN);
	CHECK_INT(used, 0);
}

/* ---- basic shapes ---- */

static void t_single_line(void)
{
	expect_ok("250 ok\r\n", 250, "", "ok", 1);
	expect_ok("220 mx.example.test ESMTP ready\r\n", 220, "", "mx.example.test ESMTP ready", 1);
}

static void t_multi_line(void)
{
	expect_ok("250-a\r\n250 b\r\n", 250, "", "a\nb", 2);
	expect_ok("250-a\r\n250-b b\r\n250 c\r\n", 250, "", "a\nb b\nc", 3);
}

static void t_code_only(void)
{
	/* RFC 5321 §4.2: the last line's text is optional. */
	expect_ok("250\r\n", 250, "", "", 1);
	expect_ok("250\n", 250, "", "", 1);
	expect_ok("250-first\r\n250\r\n", 250, "", "first\n", 2);
}

static void t_empty_text(void)
{
	expect_ok("250 \r\n", 250, "", "", 1);
	expect_ok("250-\r\n250 x\r\n", 250, "", "\nx", 2);
}

static void t_bare_lf(void)
{
	expect_ok("250 ok\n", 250, "", "ok", 1);
	expect_ok("250-a\n250 b\r\n", 250, "", "a\nb", 2);
	expect_ok("250-a\r\n250 b\n", 250, "", "a\nb", 2);
}

static void t_all_classes(void)
{
	expect_ok("200 x\r\n", 200, "", "x", 1);
	expect_ok("354 go ahead\r\n", 354, "", "go ahead", 1);
	expect_ok("421 bye\r\n", 421, "", "bye", 1);
	expect_ok("599 x\r\n", 599, "", "x", 1);
}

static void t_text_kept_verbatim(void)
{
	/* Tabs, 8-bit bytes and extra spaces are the peer's business. */
	expect_ok("250  two\tspaces \xc3\xa9 \r\n", 250, "", " two\tspaces \xc3\xa9 ", 1);
}

/* ---- pipelining (RFC 2920): replies back to back in one buffer ---- */

static void t_pipelined_three(void)
{
	const char *buf = "250 2.1.0 Sender ok\r\n"
			  "250-2.1.5 Recipient\r\n250 2.1.5 ok\n"
			  "354 End data with <CR><LF>.<CR><LF>\r\n";
	size_t len = strlen(buf), off = 0, used = 0;

	CHECK_INT(smtp_reply_parse(buf + off, len - off, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, strlen("250 2.1.0 Sender ok\r\n"));
	CHECK_STR(rep.esc, "2.1.0");
	CHECK_STR(rep.text, "Sender ok");
	off += used;

	CHECK_INT(smtp_reply_parse(buf + off, len - off, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, strlen("250-2.1.5 Recipient\r\n250 2.1.5 ok\n"));
	CHECK_INT(rep.nlines, 2);
	CHECK_STR(rep.text, "Recipient\nok");
	off += used;

	CHECK_INT(smtp_reply_parse(buf + off, len - off, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(rep.code, 354);
	CHECK_STR(rep.esc, "");
	off += used;
	CHECK_INT(off, len);

	CHECK_INT(smtp_reply_parse(buf + off, len - off, &rep, &used, NULL), SMTP_PARSE_AGAIN);
	CHECK_INT(used, 0);
}

static void t_pipelined_partial_tail(void)
{
	/* One complete reply followed by half of the next. */
	const char *buf = "250 ok\r\n550-5.1.1 no\r\n550 5.1";
	size_t used = 0;
	CHECK_INT(smtp_reply_parse(buf, strlen(buf), &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, 8);
	expect_again_n(buf + used, strlen(buf) - used);
}

/* ---- incomplete input ---- */

static void t_again_every_prefix(void)
{
	const char *s = "250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		expect_again_n(s, i);
	size_t used = 0;
	CHECK_INT(smtp_reply_parse(s, n, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, n);
}

static void t_again_cr_pending(void)
{
	/* A CR at the end may be the first half of CRLF. */
	expect_again_n("250 ok\r", 7);
	expect_again_n("250\r", 4);
	expect_again_n("", 0);
}

/* ---- malformed lines ---- */

static void t_reject_non_digit(void)
{
	expect_err("25x ok\r\n", "malformed reply line");
	expect_err("abc\r\n", "malformed reply line");
	expect_err("2 50 ok\r\n", "malformed reply line");
	expect_err("+OK pop3\r\n", "malformed reply line");
	/* Detected before the line is complete: no need to wait for LF. */
	expect_err_n("2x", 2, "malformed reply line");
	expect_err_n("HTTP/1.1 400", 12, "malformed reply line");
}

static void t_reject_code_range(void)
{
	expect_err("199 x\r\n", "malformed reply line");
	expect_err("099 x\r\n", "malformed reply line");
	expect_err("600 x\r\n", "malformed reply line");
	expect_err("999 x\r\n", "malformed reply line");
	expect_err_n("1", 1, "malformed reply line");
	expect_err_n("6", 1, "malformed reply line");
}

static void t_reject_fourth_char(void)
{
	expect_err("250x\r\n", "malformed reply line");
	expect_err("250\tok\r\n", "malformed reply line");
	expect_err("2500 ok\r\n", "malformed reply line");
	expect_err("250_ok\r\n", "malformed reply line");
	expect_err_n("250=", 4, "malformed reply line");
}

static void t_reject_short(void)
{
	expect_err("25\r\n", "malformed reply line");
	expect_err("\r\n", "malformed reply line");
	expect_err("\n", "malformed reply line");
	expect_err("250-a\r\n\r\n", "malformed reply line");
}

static void t_reject_lone_cr_nul(void)
{
	/* RFC 5321 §2.3.8: CR only as part of CRLF. */
	expect_err("250 a\rb\r\n", "malformed reply line");
	expect_err("250 ok\r\r\n", "malformed reply line");
	expect_err("250\r\r\n", "malformed reply line");
	expect_err_n("250 a\rb", 7, "malformed reply line");
	expect_err_n("250 a\0b\r\n", 9, "malformed reply line");
}

static void t_reject_code_change(void)
{
	expect_err("250-a\r\n251 b\r\n", "inconsistent reply codes");
	expect_err("250-a\r\n550 b\r\n", "inconsistent reply codes");
	/* Seen as soon as the new code is there. */
	expect_err_n("250-a\r\n251", 10, "inconsistent reply codes");
	expect_err_n("250-a\r\n450-", 11, "inconsistent reply codes");
	/* A bad continuation line is malformed rather than inconsistent. */
	expect_err("250-a\r\nxyz b\r\n", "malformed reply line");
}

static void t_err_may_be_null(void)
{
	size_t used = 1;
	CHECK_INT(smtp_reply_parse("xyz\r\n", 5, &rep, &used, NULL), SMTP_PARSE_ERR);
	CHECK_INT(used, 0);
}

/* ---- limits (SMTP_LINE_MAX per line including CRLF, SMTP_REPLY_MAX per reply) ---- */

/* "250 " + fill + end, total bytes exactly `total`. */
static char *make_line(size_t total, const char *code_sep, const char *end)
{
	char *s = malloc(total + 1);
	size_t h = strlen(code_sep), e = strlen(end);
	memcpy(s, code_sep, h);
	memset(s + h, 'x', total - h - e);
	memcpy(s + total - e, end, e);
	s[total] = '\0';
	return s;
}

static void t_line_at_limit(void)
{
	char *s = make_line(SMTP_LINE_MAX, "250 ", "\r\n");
	size_t used = 0;
	CHECK_INT(smtp_reply_parse(s, SMTP_LINE_MAX, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, SMTP_LINE_MAX);
	CHECK_INT(rep.text_len, SMTP_LINE_MAX - 6);
	free(s);
	/* Bare LF: the whole 2048 bytes may be line content plus LF. */
	s = make_line(SMTP_LINE_MAX, "250 ", "\n");
	CHECK_INT(smtp_reply_parse(s, SMTP_LINE_MAX, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(rep.text_len, SMTP_LINE_MAX - 5);
	free(s);
}

static void t_line_over_limit(void)
{
	char *s = make_line(SMTP_LINE_MAX + 1, "250 ", "\r\n");
	expect_err(s, "reply line too long");
	free(s);
	s = make_line(SMTP_LINE_MAX + 1, "250 ", "\n");
	expect_err(s, "reply line too long");
	free(s);
	/* Second line of a reply over the limit. */
	char *l2 = make_line(SMTP_LINE_MAX + 1, "250 ", "\r\n");
	char *buf = malloc(strlen(l2) + 8);
	strcpy(buf, "250-a\r\n");
	strcat(buf, l2);
	expect_err(buf, "reply line too long");
	free(buf);
	free(l2);
}

static void t_line_limit_partial(void)
{
	/* 2047 bytes without LF: an LF may still make a 2048-byte line. */
	char *s = make_line(SMTP_LINE_MAX - 1, "250 ", "");
	expect_again_n(s, SMTP_LINE_MAX - 1);
	free(s);
	s = make_line(SMTP_LINE_MAX - 1, "250 ", "\r");
	expect_again_n(s, SMTP_LINE_MAX - 1);
	free(s);
	/* 2048 bytes and no LF: the line can only end past the limit. */
	s = make_line(SMTP_LINE_MAX, "250 ", "");
	expect_err_n(s, SMTP_LINE_MAX, "reply line too long");
	free(s);
	s = make_line(SMTP_LINE_MAX, "250 ", "\r");
	expect_err_n(s, SMTP_LINE_MAX, "reply line too long");
	free(s);
}

/* A reply of exactly `total` bytes: "250-xxx\r\n" lines of 1000 bytes then a
 * last line "250 xxx\r\n" taking the rest (total - k*1000 >= 6). If `complete`
 * is false the last line's CRLF is left off. */
static char *make_reply(size_t total, bool complete)
{
	char *s = malloc(total + 1);
	size_t off = 0;
	while (total - off > 1000 + 6) {
		memcpy(s + off, "250-", 4);
		memset(s + off + 4, 'y', 1000 - 6);
		memcpy(s + off + 1000 - 2, "\r\n", 2);
		off += 1000;
	}
	memcpy(s + off, "250 ", 4);
	memset(s + off + 4, 'z', total - off - 4);
	if (complete)
		memcpy(s + total - 2, "\r\n", 2);
	s[total] = '\0';
	return s;
}

static void t_reply_at_limit(void)
{
	char *s = make_reply(SMTP_REPLY_MAX, true);
	size_t used = 0;
	const char *err = NULL;
	CHECK_INT(smtp_reply_parse(s, SMTP_REPLY_MAX, &rep, &used, &err), SMTP_PARSE_OK);
	CHECK_INT(used, SMTP_REPLY_MAX);
	CHECK_INT(rep.nlines, 9);
	CHECK(rep.text_len < sizeof(rep.text));
	CHECK_INT(strlen(rep.text), rep.text_len);
	free(s);
}

static void t_reply_over_limit(void)
{
	char *s = make_reply(SMTP_REPLY_MAX + 1, true);
	expect_err(s, "reply too long");
	free(s);
}

static void t_reply_limit_partial(void)
{
	/* 8191 bytes, last line incomplete: could still end at 8192. */
	char *s = make_reply(SMTP_REPLY_MAX + 1, false);
	expect_again_n(s, SMTP_REPLY_MAX - 1);
	/* 8192 bytes and not finished: it can only end past the limit. */
	expect_err_n(s, SMTP_REPLY_MAX, "reply too long");
	expect_err_n(s, SMTP_REPLY_MAX + 1, "reply too long");
	free(s);
}

static void t_reply_limit_with_pipelined_tail(void)
{
	/* A reply within the limit, followed by more data than the limit:
	 * the extra bytes belong to the next reply and are not counted. */
	char *s = make_reply(SMTP_REPLY_MAX, true);
	size_t n = SMTP_REPLY_MAX + 16;
	char *buf = malloc(n + 1);
	memcpy(buf, s, SMTP_REPLY_MAX);
	memcpy(buf + SMTP_REPLY_MAX, "250 next\r\n250 a", 16);
	size_t used = 0;
	CHECK_INT(smtp_reply_parse(buf, n, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, SMTP_REPLY_MAX);
	CHECK_INT(smtp_reply_parse(buf + used, n - used, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_STR(rep.text, "next");
	free(buf);
	free(s);
}

static void t_many_short_lines(void)
{
	/* 1637 lines of "250-\n" then "250\n": the most lines, and so the most
	 * "\n" separators, a reply can hold; the text must still fit. */
	char buf[SMTP_REPLY_MAX + 1];
	size_t off = 0;
	while (off + 5 + 4 <= SMTP_REPLY_MAX) {
		memcpy(buf + off, "250-\n", 5);
		off += 5;
	}
	memcpy(buf + off, "250\n", 4);
	off += 4;
	size_t used = 0;
	CHECK_INT(smtp_reply_parse(buf, off, &rep, &used, NULL), SMTP_PARSE_OK);
	CHECK_INT(used, off);
	CHECK_INT(rep.text_len, (size_t)rep.nlines - 1);
	CHECK_INT(strlen(rep.text), rep.text_len);
}

/* ---- enhanced status codes (RFC 3463, RFC 2034) ---- */

static void t_esc_single(void)
{
	expect_ok("550 5.1.1 No such user\r\n", 550, "5.1.1", "No such user", 1);
	expect_ok("250 2.0.0 Ok: queued as 4Xyz\r\n", 250, "2.0.0", "Ok: queued as 4Xyz", 1);
	expect_ok("451 4.7.1 Try again later\r\n", 451, "4.7.1", "Try again later", 1);
	expect_ok("250 2.0.0\r\n", 250, "2.0.0", "", 1);
}

static void t_esc_three_digits(void)
{
	expect_ok("550 5.123.456 x\r\n", 550, "5.123.456", "x", 1);
	expect_ok("550 5.7.26 Unauthenticated\r\n", 550, "5.7.26", "Unauthenticated", 1);
	/* Four digits is not an esc: the text stays whole. */
	expect_ok("550 5.1234.1 x\r\n", 550, "", "5.1234.1 x", 1);
	expect_ok("550 5.1.1234 x\r\n", 550, "", "5.1.1234 x", 1);
}

static void t_esc_multi_line_strip(void)
{
	expect_ok("550-5.7.1 Blocked\r\n550-5.7.1 see https://x.test\r\n550 5.7.1 bye\r\n", 550,
		  "5.7.1", "Blocked\nsee https://x.test\nbye", 3);
	/* A line without the esc, or with a different one, keeps its text. */
	expect_ok("550-5.7.1 a\r\n550-b\r\n550 5.7.2 c\r\n", 550, "5.7.1", "a\nb\n5.7.2 c", 3);
	expect_ok("250-2.0.0 a\r\n250 2.0.0\r\n", 250, "2.0.0", "a\n", 2);
}

static void t_esc_not_an_esc(void)
{
	expect_ok("550 5.1 x\r\n", 550, "", "5.1 x", 1);
	expect_ok("550 5.1.1x y\r\n", 550, "", "5.1.1x y", 1);
	expect_ok("550 5..1 x\r\n", 550, "", "5..1 x", 1);
	expect_ok("354 3.0.0 go\r\n", 354, "", "3.0.0 go", 1); /* no class 3 */
	expect_ok("550 1.1.1 x\r\n", 550, "", "1.1.1 x", 1);
	expect_ok("550  5.1.1 x\r\n", 550, "", " 5.1.1 x", 1);
	/* Only the first line can introduce an esc. */
	expect_ok("550-hello\r\n550 5.1.1 x\r\n", 550, "", "hello\n5.1.1 x", 2);
}

static void t_esc_class_mismatch(void)
{
	/* RFC 3463 §3.1: the class must agree with the reply code's class. */
	expect_ok("250 5.1.1 odd\r\n", 250, "", "5.1.1 odd", 1);
	expect_ok("450 5.1.1 odd\r\n", 450, "", "5.1.1 odd", 1);
	expect_ok("550 2.0.0 odd\r\n", 550, "", "2.0.0 odd", 1);
}

/* ---- EHLO ---- */

static void ehlo_of(const char *wire, struct smtp_ehlo *e)
{
	size_t used = 0;
	const char *err = NULL;
	enum smtp_parse_rc rc = smtp_reply_parse(wire, strlen(wire), &rep, &used, &err);
	CHECK_INT(rc, SMTP_PARSE_OK);
	memset(e, 0xa5, sizeof(*e)); /* prove smtp_ehlo_parse clears it */
	smtp_ehlo_parse(&rep, e);
}

static void t_ehlo_full(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx.example.test Hello client.test [192.0.2.1]\r\n"
		"250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
		"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n"
		"250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n250-AUTH PLAIN LOGIN\r\n"
		"250 ETRN\r\n",
		&e);
	CHECK_INT(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
				 SMTP_EXT_SMTPUTF8 | SMTP_EXT_ENHANCEDSTATUSCODES |
				 SMTP_EXT_STARTTLS | SMTP_EXT_CHUNKING | SMTP_EXT_BINARYMIME |
				 SMTP_EXT_DSN | SMTP_EXT_AUTH);
	CHECK_INT(e.size_max, 35882577);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
}

static void t_ehlo_case_insensitive(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx\r\n250-pipelining\r\n250-StartTls\r\n250-size 1000\r\n"
		"250 auth login\r\n",
		&e);
	CHECK_INT(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_STARTTLS | SMTP_EXT_SIZE | SMTP_EXT_AUTH);
	CHECK_INT(e.size_max, 1000);
	CHECK_INT(e.auth, SMTP_AUTH_LOGIN);
}

static void t_ehlo_size_forms(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx\r\n250 SIZE\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_SIZE);
	CHECK_INT(e.size_max, 0); /* SIZE alone: no limit announced */
	ehlo_of("250-mx\r\n250 SIZE 0\r\n", &e);
	CHECK_INT(e.size_max, 0); /* RFC 1870: 0 = no fixed maximum */
	ehlo_of("250-mx\r\n250 SIZE abc\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_SIZE);
	CHECK_INT(e.size_max, 0);
	ehlo_of("250-mx\r\n250 SIZE 12x\r\n", &e);
	CHECK_INT(e.size_max, 0);
	ehlo_of("250-mx\r\n250 SIZE 18446744073709551615\r\n", &e);
	CHECK(e.size_max == UINT64_MAX);
	ehlo_of("250-mx\r\n250 SIZE 99999999999999999999999\r\n", &e);
	CHECK(e.size_max == UINT64_MAX); /* saturates */
	ehlo_of("250-mx\r\n250 SIZE   52428800  \r\n", &e);
	CHECK_INT(e.size_max, 52428800);
}

static void t_ehlo_auth_forms(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx\r\n250 AUTH=LOGIN PLAIN\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_AUTH);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
	/* Both forms, as Postfix's broken_sasl_auth_clients sends them. */
	ehlo_of("250-mx\r\n250-AUTH PLAIN\r\n250 AUTH=LOGIN\r\n", &e);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
	ehlo_of("250-mx\r\n250 AUTH CRAM-MD5 XOAUTH2 plain\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_AUTH);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN);
	ehlo_of("250-mx\r\n250 AUTH\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_AUTH);
	CHECK_INT(e.auth, 0);
	ehlo_of("250-mx\r\n250 AUTH PLAINX LOGINS\r\n", &e);
	CHECK_INT(e.auth, 0);
}

static void t_ehlo_unknown_and_prefixes(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx\r\n250-XCLIENT NAME\r\n250-SIZEX 5\r\n250-8BITMIMEX\r\n"
		"250-DSNX\r\n250-PIPELININ\r\n250 X-EXPS GSSAPI\r\n",
		&e);
	CHECK_INT(e.ext, 0);
	CHECK_INT(e.size_max, 0);
	CHECK_INT(e.auth, 0);
}

static void t_ehlo_greeting_only(void)
{
	struct smtp_ehlo e;
	/* The first line is the server's name, even if it looks like a keyword. */
	ehlo_of("250 PIPELINING\r\n", &e);
	CHECK_INT(e.ext, 0);
	ehlo_of("250\r\n", &e);
	CHECK_INT(e.ext, 0);
	ehlo_of("250-mx\r\n250\r\n", &e); /* an empty last line */
	CHECK_INT(e.ext, 0);
}

static void t_ehlo_blanks(void)
{
	struct smtp_ehlo e;
	ehlo_of("250-mx\r\n250- STARTTLS \r\n250 DSN\t\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_STARTTLS | SMTP_EXT_DSN);
}

static void t_ehlo_with_esc(void)
{
	/* Some servers prefix every EHLO line with an esc; the parser strips
	 * it, so the keywords still come out. */
	struct smtp_ehlo e;
	ehlo_of("250-2.0.0 mx\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 10\r\n", &e);
	CHECK_INT(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE);
	CHECK_INT(e.size_max, 10);
}

static const struct t_case cases[] = {
	{ "single line", t_single_line },
	{ "multi line", t_multi_line },
	{ "code only line", t_code_only },
	{ "empty text", t_empty_text },
	{ "bare LF line end", t_bare_lf },
	{ "codes of all classes", t_all_classes },
	{ "text kept verbatim", t_text_kept_verbatim },
	{ "three pipelined replies", t_pipelined_three },
	{ "pipelined with partial tail", t_pipelined_partial_tail },
	{ "AGAIN for every prefix", t_again_every_prefix },
	{ "AGAIN with CR pending", t_again_cr_pending },
	{ "reject non-digit code", t_reject_non_digit },
	{ "reject code outside 200-599", t_reject_code_range },
	{ "reject bad 4th char", t_reject_fourth_char },
	{ "reject short line", t_reject_short },
	{ "reject lone CR and NUL", t_reject_lone_cr_nul },
	{ "reject code change", t_reject_code_change },
	{ "err may be NULL", t_err_may_be_null },
	{ "line exactly at limit", t_line_at_limit },
	{ "line one over limit", t_line_over_limit },
	{ "line limit on partial input", t_line_limit_partial },
	{ "reply exactly at limit", t_reply_at_limit },
	{ "reply one over limit", t_reply_over_limit },
	{ "reply limit on partial input", t_reply_limit_partial },
	{ "reply limit ignores pipelined tail", t_reply_limit_with_pipelined_tail },
	{ "many short lines fit text", t_many_short_lines },
	{ "esc single line", t_esc_single },
	{ "esc three-digit parts", t_esc_three_digits },
	{ "esc stripped per line", t_esc_multi_line_strip },
	{ "not an esc", t_esc_not_an_esc },
	{ "esc class mismatch", t_esc_class_mismatch },
	{ "ehlo all keywords", t_ehlo_full },
	{ "ehlo case-insensitive", t_ehlo_case_insensitive },
	{ "ehlo SIZE forms", t_ehlo_size_forms },
	{ "ehlo AUTH forms", t_ehlo_auth_forms },
	{ "ehlo unknown and prefix keywords", t_ehlo_unknown_and_prefixes },
	{ "ehlo greeting only", t_ehlo_greeting_only },
	{ "ehlo blanks", t_ehlo_blanks },
	{ "ehlo lines with esc", t_ehlo_with_esc },
};

T_MAIN(cases)
