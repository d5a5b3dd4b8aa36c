/* test_msg.c: unit tests for sender/msg.c (wire form and dot-stuffing,
 * mailbox syntax, recipient list splitting). */
#include "sender/msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/t.h"

/* ---- wire form ---- */

/* Prepare n bytes of in; expect exactly want (wn bytes). */
static void wire_n(const char *in, size_t n, bool dot, const char *want, size_t wn)
{
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare(in, n, dot, &w), 0);
	CHECK_INT(w.len, wn);
	CHECK(w.data != NULL);
	if (w.data != NULL && w.len == wn && memcmp(w.data, want, wn) != 0) {
		fprintf(stderr, "  wire mismatch for input of %zu bytes\n", n);
		t_failed = 1;
	}
	msg_wire_fini(&w);
}

static void wire(const char *in, bool dot, const char *want)
{
	wire_n(in, strlen(in), dot, want, strlen(want));
}

static void t_wire_lf_to_crlf(void)
{
	wire("a\nb\n", true, "a\r\nb\r\n");
	wire("\n", true, "\r\n");
	wire("\n\n\n", true, "\r\n\r\n\r\n");
}

static void t_wire_crlf_unchanged(void)
{
	wire("a\r\nb\r\n", true, "a\r\nb\r\n");
	wire("\r\n", true, "\r\n");
	wire("a\r\nb\nc\r\n\n", true, "a\r\nb\r\nc\r\n\r\n");
}

static void t_wire_lone_cr(void)
{
	/* A CR not followed by LF ends a line and becomes CRLF, as a bare LF
	 * does: no CR or LF outside a CRLF pair reaches the wire. */
	wire("a\rb\n", true, "a\r\nb\r\n");
	wire("a\rb\n", false, "a\r\nb\r\n");
	wire("a\r", true, "a\r\n");
	wire("\r", true, "\r\n");
	wire("\r", false, "\r\n");
	wire("a\r\r", false, "a\r\n\r\n");
	/* CR CR LF: a bare CR, then CRLF. */
	wire("\r\r\n", true, "\r\n\r\n");
	wire("a\r\r\nb", false, "a\r\n\r\nb\r\n");
	/* LF CR: a bare LF, then a bare CR. */
	wire("a\n\rb", true, "a\r\n\r\nb\r\n");
	/* A lone CR starts a line: the dot after it is stuffed for DATA. */
	wire("a\r.b\n", true, "a\r\n..b\r\n");
	wire("a\r.b\n", false, "a\r\n.b\r\n");
}

/* SMTP smuggling (CVE-2023-51766 and kin): "\r.\r\n", "\n.\r\n", "\r\n.\r"
 * and "\n.\n" must never leave a "." line on the wire for DATA, and never a
 * bare CR or LF on either path. */
static void t_wire_smuggling(void)
{
	const char *in = "Subject: x\r\n\r\nhi\r.\rMAIL FROM:<x@y>\r\nRCPT TO:<v@z>\r\nDATA\r\nevil\r\n";
	wire(in, true, "Subject: x\r\n\r\nhi\r\n..\r\nMAIL FROM:<x@y>\r\nRCPT TO:<v@z>\r\nDATA\r\nevil\r\n");
	wire(in, false, "Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<v@z>\r\nDATA\r\nevil\r\n");
	wire("a\r.\r\nb", true, "a\r\n..\r\nb\r\n");
	wire("a\n.\r\nb", true, "a\r\n..\r\nb\r\n");
	wire("a\r\n.\rb", true, "a\r\n..\r\nb\r\n");
	wire("a\n.\nb", true, "a\r\n..\r\nb\r\n");
	wire("a\r.\r", true, "a\r\n..\r\n");
	wire("a\r.\r\n", false, "a\r\n.\r\n");
	/* Already-wire-form input is borrowed, but never with a bare CR. */
	struct msg_wire w;
	const char *crlf = "a\r\nb\r\n", *cr = "a\r\nb\rc\r\n";
	CHECK_INT(msg_wire_prepare(crlf, strlen(crlf), false, &w), 0);
	CHECK(w.borrowed && w.data == crlf);
	msg_wire_fini(&w);
	for (int dot = 0; dot < 2; dot++) {
		CHECK_INT(msg_wire_prepare(cr, strlen(cr), dot, &w), 0);
		CHECK(!w.borrowed);
		CHECK_INT(w.len, strlen(cr) + 1);
		CHECK(memcmp(w.data, "a\r\nb\r\nc\r\n", w.len) == 0);
		msg_wire_fini(&w);
	}
	CHECK_INT(msg_wire_prepare("a\r\n\r", 4, false, &w), 0);
	CHECK(!w.borrowed);
	msg_wire_fini(&w);
}

static void t_wire_final_crlf(void)
{
	wire("abc", true, "abc\r\n");
	wire("a\nb", true, "a\r\nb\r\n");
	wire("a\r\nb", false, "a\r\nb\r\n");
}

static void t_wire_empty(void)
{
	/* Empty in, empty out: no line to terminate (see msg.c header). */
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare("", 0, true, &w), 0);
	CHECK_INT(w.len, 0);
	CHECK(w.data != NULL);
	CHECK(!w.has_8bit && !w.hdr_utf8);
	CHECK_INT(w.longest_line, 0);
	msg_wire_fini(&w);
	CHECK_INT(msg_wire_prepare(NULL, 0, false, &w), 0);
	CHECK_INT(w.len, 0);
	msg_wire_fini(&w);
}

static void t_wire_fini_twice(void)
{
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare("x\n", 2, true, &w), 0);
	msg_wire_fini(&w);
	CHECK(w.data == NULL);
	msg_wire_fini(&w);
	msg_wire_fini(NULL);
}

static void t_dot_at_start(void)
{
	wire(".\n", true, "..\r\n");
	wire("..\n", true, "...\r\n");
	wire(".x\n", true, "..x\r\n");
	wire(".", true, "..\r\n");
	wire("..", true, "...\r\n");
	wire(".x", true, "..x\r\n");
}

static void t_dot_in_middle(void)
{
	wire("a\n.\nb\n", true, "a\r\n..\r\nb\r\n");
	wire("a\n..\nb\n", true, "a\r\n...\r\nb\r\n");
	wire("a\n.x\nb\n", true, "a\r\n..x\r\nb\r\n");
	wire("a\r\n.\r\nb\r\n", true, "a\r\n..\r\nb\r\n");
	/* A lone "." line would otherwise end DATA early (RFC 5321 §4.1.1.4). */
	wire("Subject: x\n\nbody\n.\nmore\n", true, "Subject: x\r\n\r\nbody\r\n..\r\nmore\r\n");
}

static void t_dot_at_end_no_newline(void)
{
	wire("a\n.", true, "a\r\n..\r\n");
	wire("a\n..", true, "a\r\n...\r\n");
	wire("a\n.x", true, "a\r\n..x\r\n");
	wire("a\r\n.", true, "a\r\n..\r\n");
}

static void t_dot_not_at_start(void)
{
	wire("a.b\n", true, "a.b\r\n");
	wire("a.\n", true, "a.\r\n");
	wire(" .\n", true, " .\r\n");
}

static void t_dot_stuff_off(void)
{
	/* BDAT (RFC 3030) carries bytes as they are: no stuffing. */
	wire(".\n..\n.x", false, ".\r\n..\r\n.x\r\n");
	wire("a\n.\n", false, "a\r\n.\r\n");
}

static void t_dot_mixed_line_ends(void)
{
	wire(".a\r\n.b\n.c\r\n.d", true, "..a\r\n..b\r\n..c\r\n..d\r\n");
	wire("\n.\r\n\r\n.", true, "\r\n..\r\n\r\n..\r\n");
}

static struct msg_wire prep(const char *in, bool dot)
{
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare(in, strlen(in), dot, &w), 0);
	return w;
}

static void t_longest_line(void)
{
	struct msg_wire w = prep("ab\r\nabcd\nabc", true);
	CHECK_INT(w.longest_line, 4);
	msg_wire_fini(&w);
	/* The stuffed dot and the CRLF are not counted (RFC 5321 §4.5.3.1.6). */
	w = prep("...\r\n", true);
	CHECK_INT(w.longest_line, 3);
	msg_wire_fini(&w);
	/* A lone CR ends a line. */
	w = prep("abc\r\rb\n", true);
	CHECK_INT(w.longest_line, 3);
	msg_wire_fini(&w);
	w = prep("abcdef", true);
	CHECK_INT(w.longest_line, 6);
	msg_wire_fini(&w);
}

static void t_line_998(void)
{
	/* 998 octets + CRLF = 1000, the RFC 5321 §4.5.3.1.6 maximum. */
	char *in = malloc(998 + 2 + 998 + 1);
	memset(in, 'x', 998);
	in[998] = '\n';
	in[999] = '.';
	memset(in + 1000, 'y', 997);
	in[1997] = '\0';
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare(in, 1997, true, &w), 0);
	CHECK_INT(w.longest_line, 998); /* ".yyy" is 998 too, before stuffing */
	CHECK_INT(w.len, 998 + 2 + 1 + 998 + 2);
	CHECK(memcmp(w.data + 998, "\r\n..y", 5) == 0);
	CHECK(memcmp(w.data + w.len - 2, "\r\n", 2) == 0);
	msg_wire_fini(&w);
	CHECK_INT(msg_wire_prepare(in, 999, true, &w), 0);
	CHECK_INT(w.longest_line, 998);
	CHECK_INT(w.len, 1000);
	msg_wire_fini(&w);
	free(in);
}

/* A second reference, line by line (ref_wire below goes byte by byte over
 * short, dense inputs): msg.c finds line ends 16 bytes at a time, so compare
 * on inputs up to 300 bytes with CR, LF, '.' and 8-bit bytes sparse, at every
 * offset of a 16-byte step (8-bit bytes before and after a line end in one). */
static size_t ref_wire_lines(const unsigned char *in, size_t n, bool dot, char *out, bool *b8,
			     bool *h8, size_t *longest)
{
	size_t o = 0, i = 0;
	bool in_hdr = true;
	*b8 = *h8 = false;
	*longest = 0;
	while (i < n) {
		size_t s = i;
		while (i < n && in[i] != '\r' && in[i] != '\n')
			i++;
		size_t text = i - s;
		if (i < n)
			i += (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') ? 2 : 1;
		if (text > *longest)
			*longest = text;
		if (in_hdr && text == 0)
			in_hdr = false;
		for (size_t k = s; k < s + text; k++)
			if (in[k] >= 0x80) {
				*b8 = true;
				if (in_hdr)
					*h8 = true;
			}
		if (dot && text > 0 && in[s] == '.')
			out[o++] = '.';
		memcpy(out + o, in + s, text);
		o += text;
		out[o++] = '\r';
		out[o++] = '\n';
	}
	return o;
}

static void t_wire_random_vs_reference(void)
{
	static const unsigned char alpha[] = { '\r', '\n', '.', 'a', 'b', 0x80, 0xc3, 0xff, 0x7f, 0 };
	unsigned char in[300];
	char ref[700];
	uint32_t x = 12345;
	for (int iter = 0; iter < 20000 && !t_failed; iter++) {
		size_t n = (size_t)(iter % 97);
		if (iter % 5 == 4)
			n = 100 + (size_t)(iter % 200);
		unsigned rare = 2 + (unsigned)(iter % 40); /* 1 in rare bytes is special */
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			unsigned r = (x >> 8) % (rare * (unsigned)sizeof(alpha));
			in[i] = r < sizeof(alpha) ? alpha[r] : (unsigned char)('c' + r % 20);
		}
		bool dot = iter & 1, b8, h8;
		size_t longest, rn = ref_wire_lines(in, n, dot, ref, &b8, &h8, &longest);
		struct msg_wire w;
		CHECK_INT(msg_wire_prepare((const char *)in, n, dot, &w), 0);
		CHECK_INT(w.len, rn);
		CHECK(w.len != rn || rn == 0 || memcmp(w.data, ref, rn) == 0);
		CHECK_INT(w.has_8bit, b8);
		CHECK_INT(w.hdr_utf8, h8);
		CHECK_INT(w.longest_line, longest);
		CHECK_INT(w.borrowed, n > 0 && rn == n && memcmp(in, ref, n) == 0);
		if (t_failed)
			fprintf(stderr, "  reference mismatch: iteration %d, %zu bytes\n", iter, n);
		msg_wire_fini(&w);
	}
}

static void t_8bit_body(void)
{
	struct msg_wire w = prep("Subject: hi\r\n\r\nh\xc3\xa9llo\r\n", true);
	CHECK(w.has_8bit);
	CHECK(!w.hdr_utf8);
	msg_wire_fini(&w);
	w = prep("Subject: hi\n\nbody\n", true);
	CHECK(!w.has_8bit);
	CHECK(!w.hdr_utf8);
	msg_wire_fini(&w);
}

static void t_8bit_header(void)
{
	struct msg_wire w = prep("Subject: h\xc3\xa9\r\n\r\nbody\r\n", true);
	CHECK(w.has_8bit);
	CHECK(w.hdr_utf8);
	msg_wire_fini(&w);
	/* No empty line: everything is header. */
	w = prep("Subject: x\nX: \xff", true);
	CHECK(w.has_8bit && w.hdr_utf8);
	msg_wire_fini(&w);
	/* A line of blanks is not the empty line. */
	w = prep("A: b\n \nC: \x80\n\nbody\n", true);
	CHECK(w.hdr_utf8);
	msg_wire_fini(&w);
	/* An empty first line: the header section is empty. */
	w = prep("\n\x80", true);
	CHECK(w.has_8bit && !w.hdr_utf8);
	msg_wire_fini(&w);
	/* 8-bit bytes pass through unchanged. */
	w = prep("\x80\xff\n", true);
	CHECK_INT(w.len, 4);
	CHECK(memcmp(w.data, "\x80\xff\r\n", 4) == 0);
	msg_wire_fini(&w);
}

static void t_8bit_every_offset(void)
{
	/* The scan reads 8 and 32 bytes at a time: put the one high byte at
	 * each offset of a long line, with unaligned starts. */
	char buf[80];
	for (size_t start = 0; start < 8; start++) {
		for (size_t pos = start; pos < 79; pos++) {
			memset(buf, 'a', sizeof(buf));
			buf[pos] = (char)0x80;
			struct msg_wire w;
			CHECK_INT(msg_wire_prepare(buf + start, 79 - start, true, &w), 0);
			CHECK(w.has_8bit);
			msg_wire_fini(&w);
		}
		memset(buf, 0x7f, sizeof(buf));
		struct msg_wire w;
		CHECK_INT(msg_wire_prepare(buf + start, 79 - start, true, &w), 0);
		CHECK(!w.has_8bit);
		msg_wire_fini(&w);
	}
}

/* The obvious byte-at-a-time definition, to compare against: a line ends at
 * CRLF, a lone CR or a lone LF; each becomes CRLF. */
static size_t ref_wire(const char *in, size_t n, bool dot, char *out, size_t *longest,
		       bool *has8, bool *hdr8)
{
	size_t o = 0, cur = 0;
	bool hdr = true, bol = true;
	*longest = 0;
	*has8 = *hdr8 = false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '\r' || c == '\n') {
			if (c == '\r' && i + 1 < n && in[i + 1] == '\n')
				i++;
			if (cur > *longest)
				*longest = cur;
			if (cur == 0)
				hdr = false;
			out[o++] = '\r';
			out[o++] = '\n';
			cur = 0;
			bol = true;
			continue;
		}
		if (bol && dot && c == '.')
			out[o++] = '.';
		bol = false;
		if (c >= 0x80) {
			*has8 = true;
			if (hdr)
				*hdr8 = true;
		}
		cur++;
		out[o++] = (char)c;
	}
	if (n > 0 && in[n - 1] != '\n' && in[n - 1] != '\r') {
		if (cur > *longest)
			*longest = cur;
		out[o++] = '\r';
		out[o++] = '\n';
	}
	return o;
}

static void t_wire_matches_reference(void)
{
	/* Random short inputs over the bytes that matter. */
	static const char alpha[] = { 'a', '.', '\r', '\n', (char)0x80, ' ' };
	char in[48], want[2 * 48 + 2];
	uint32_t seed = 12345;
	for (int iter = 0; iter < 20000; iter++) {
		seed = seed * 1103515245u + 12345u;
		size_t n = (seed >> 16) % sizeof(in);
		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alpha[(seed >> 16) % sizeof(alpha)];
		}
		bool dot = iter & 1;
		size_t longest;
		bool has8, hdr8;
		size_t wn = ref_wire(in, n, dot, want, &longest, &has8, &hdr8);
		struct msg_wire w;
		CHECK_INT(msg_wire_prepare(in, n, dot, &w), 0);
		bool same = w.len == wn && memcmp(w.data, want, wn) == 0 &&
			    w.longest_line == longest && w.has_8bit == has8 && w.hdr_utf8 == hdr8;
		msg_wire_fini(&w);
		if (!same) {
			fprintf(stderr, "  iteration %d (n=%zu) differs from reference\n", iter, n);
			t_failed = 1;
			return;
		}
	}
}

static void t_wire_large(void)
{
	/* 50 MB of 76-octet LF lines, every 10th starting with a dot. */
	const size_t lines = 50u * 1024 * 1024 / 77;
	size_t n = lines * 77;
	char *in = malloc(n);
	for (size_t i = 0; i < lines; i++) {
		memset(in + i * 77, 'm', 76);
		if (i % 10 == 0)
			in[i * 77] = '.';
		in[i * 77 + 76] = '\n';
	}
	struct msg_wire w;
	CHECK_INT(msg_wire_prepare(in, n, true, &w), 0);
	CHECK_INT(w.len, n + lines + (lines + 9) / 10);
	CHECK_INT(w.longest_line, 76);
	CHECK(!w.has_8bit);
	CHECK(memcmp(w.data, "..mm", 4) == 0);
	CHECK(memcmp(w.data + w.len - 3, "m\r\n", 3) == 0);
	msg_wire_fini(&w);
	free(in);
}

/* ---- addresses ---- */

static void addr_ok(const char *s, const char *local, const char *domain, bool utf8)
{
	struct msg_addr a;
	const char *err = NULL;
	int rc = msg_addr_parse(s, &a, &err);
	CHECK_INT(rc, 0);
	if (rc != 0) {
		fprintf(stderr, "  \"%s\": %s\n", s, err ? err : "?");
		return;
	}
	CHECK_STR(a.local, local);
	CHECK_STR(a.domain, domain);
	CHECK_INT(a.utf8, utf8);
}

static void addr_bad(const char *s, const char *reason)
{
	struct msg_addr a;
	const char *err = NULL;
	CHECK_INT(msg_addr_parse(s, &a, &err), -1);
	if (reason != NULL)
		CHECK_STR(err, reason);
	else
		CHECK(err != NULL);
}

static void t_addr_simple(void)
{
	addr_ok("user@example.com", "user", "example.com", false);
	addr_ok("First.Last+tag@Example.COM", "First.Last+tag", "example.com", false);
	addr_ok("!#$%&'*+-/=?^_`{|}~@x.test", "!#$%&'*+-/=?^_`{|}~", "x.test", false);
	addr_ok("a@localhost", "a", "localhost", false);
	addr_ok("a@1-2.x-y.test", "a", "1-2.x-y.test", false);
}

static void t_addr_angle_blanks(void)
{
	addr_ok("<user@Example.com>", "user", "example.com", false);
	addr_ok("  \t<user@x.test> \t", "user", "x.test", false);
	addr_ok("  user@x.test  ", "user", "x.test", false);
	addr_bad("<user@x.test", "unbalanced angle brackets");
	addr_bad("user@x.test>", "unbalanced angle brackets");
	addr_bad("< user@x.test>", "blank outside quotes");
	addr_bad("<@a.test:user@x.test>", "empty local part"); /* source routes */
}

static void t_addr_quoted(void)
{
	addr_ok("\"a b\"@x.test", "\"a b\"", "x.test", false);
	addr_ok("\"a,b\"@x.test", "\"a,b\"", "x.test", false);
	addr_ok("\"a@b\"@x.test", "\"a@b\"", "x.test", false);
	addr_ok("\"a\\\"b\"@x.test", "\"a\\\"b\"", "x.test", false);
	addr_ok("\"a\\\\\"@x.test", "\"a\\\\\"", "x.test", false);
	addr_ok("\"..\"@x.test", "\"..\"", "x.test", false);
	addr_ok("\"\"@x.test", "\"\"", "x.test", false); /* RFC 5321: *QcontentSMTP */
	addr_ok("\"\xc3\xa9\"@x.test", "\"\xc3\xa9\"", "x.test", true);
	addr_bad("\"abc@x.test", "unterminated quoted string");
	addr_bad("\"a\"b@x.test", "bad local part");
	addr_bad("\"a\"", "missing @");
	addr_bad("\"a\\\xc3\xa9\"@x.test", "bad quoted local part");
}

static void t_addr_utf8(void)
{
	/* RFC 6531: UTF-8 in both parts; only ASCII letters are lowercased. */
	addr_ok("\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b\xe8\xaf\x95",
		"\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b\xe8\xaf\x95", true);
	addr_ok("J\xc3\xb6rg@M\xc3\x9cLLER.Test", "J\xc3\xb6rg", "m\xc3\x9cller.test", true);
	addr_ok("a@b\xc3\xbc" "cher.test", "a", "b\xc3\xbc" "cher.test", true);
	addr_bad("\xff@x.test", "invalid UTF-8");
	addr_bad("\xc0\xaf@x.test", "invalid UTF-8");         /* overlong */
	addr_bad("\xed\xa0\x80@x.test", "invalid UTF-8");     /* surrogate */
	addr_bad("a\xc3@x.test", "invalid UTF-8");            /* truncated */
	addr_bad("a@x\xe4\xbe.test", "invalid UTF-8");
}

static void t_addr_literal(void)
{
	addr_ok("a@[192.0.2.1]", "a", "[192.0.2.1]", false);
	addr_ok("a@[010.0.0.001]", "a", "[010.0.0.001]", false);
	addr_ok("a@[IPv6:2001:db8::1]", "a", "[IPv6:2001:db8::1]", false);
	addr_ok("a@[ipv6:2001:DB8::1]", "a", "[IPv6:2001:db8::1]", false);
	addr_ok("a@[IPv6:::ffff:192.0.2.1]", "a", "[IPv6:::ffff:192.0.2.1]", false);
	addr_bad("a@[300.1.1.1]", "bad address literal");
	addr_bad("a@[1.2.3]", "bad address literal");
	addr_bad("a@[1.2.3.4.5]", "bad address literal");
	addr_bad("a@[1.2.3.4", "bad address literal");
	addr_bad("a@[]", "bad address literal");
	addr_bad("a@[IPv6:zz::1]", "bad address literal");
	addr_bad("a@[2001:db8::1]", "bad address literal");
	addr_bad("a@[x-tag:foo]", "bad address literal");
}

static void t_addr_reject_missing(void)
{
	addr_bad("", "empty address");
	addr_bad("   ", "empty address");
	addr_bad("<>", "empty address");
	addr_bad(NULL, "empty address");
	addr_bad("user", "missing @");
	addr_bad("user.x.test", "missing @");
	addr_bad("@x.test", "empty local part");
	addr_bad("user@", "empty domain");
	addr_bad("@", "empty local part");
}

static void t_addr_reject_syntax(void)
{
	addr_bad("a@b@x.test", "more than one @");
	addr_bad("a b@x.test", "blank outside quotes");
	addr_bad("a\tb@x.test", "control character in address");
	addr_bad("a@x .test", "bad domain");
	addr_bad("a\x01@x.test", "control character in address");
	addr_bad("a@x.test\x7f", "control character in address");
	addr_bad("a\r\n@x.test", "control character in address");
	addr_bad("a..b@x.test", "bad local part");
	addr_bad(".a@x.test", "bad local part");
	addr_bad("a.@x.test", "bad local part");
	addr_bad("a(b)@x.test", "bad local part");
	addr_bad("a,b@x.test", "bad local part");
	addr_bad("Name <a@x.test>", "unbalanced angle brackets");
}

static void t_addr_reject_domain(void)
{
	addr_bad("a@-x.test", "bad domain");
	addr_bad("a@x-.test", "bad domain");
	addr_bad("a@x..test", "bad domain");
	addr_bad("a@.x.test", "bad domain");
	addr_bad("a@x_y.test", "bad domain");
	addr_bad("a@x.test.", "trailing dot in domain");
	addr_bad("a@.", "bad domain");
	addr_bad("a@x:25", "bad domain");
}

static void t_addr_limits(void)
{
	char s[600], local[80], label[80];
	/* Local part: 64 ok, 65 too long (RFC 5321 §4.5.3.1.1). */
	memset(local, 'l', 64);
	local[64] = '\0';
	snprintf(s, sizeof(s), "%s@x.test", local);
	addr_ok(s, local, "x.test", false);
	memset(local, 'l', 65);
	local[65] = '\0';
	snprintf(s, sizeof(s), "%s@x.test", local);
	addr_bad(s, "local part too long");
	/* Label: 63 ok, 64 bad. */
	memset(label, 'd', 63);
	label[63] = '\0';
	snprintf(s, sizeof(s), "a@%s.test", label);
	addr_ok(s, "a", s + 2, false);
	memset(label, 'd', 64);
	label[64] = '\0';
	snprintf(s, sizeof(s), "a@%s.test", label);
	addr_bad(s, "bad domain");
	/* Whole address: 254 ok, 255 too long (RFC 5321 §4.5.3.1.3). */
	char dom[300];
	size_t dl = 254 - 2;
	for (size_t i = 0; i < dl; i++)
		dom[i] = (i % 50 == 49) ? '.' : 'd';
	dom[dl] = '\0';
	snprintf(s, sizeof(s), "a@%s", dom);
	CHECK_INT(strlen(s), 254);
	addr_ok(s, "a", dom, false);
	snprintf(s, sizeof(s), "ab@%s", dom);
	addr_bad(s, "address too long");
	/* Domain over 255. */
	for (size_t i = 0; i < 256; i++)
		dom[i] = (i % 50 == 49) ? '.' : 'd';
	dom[256] = '\0';
	snprintf(s, sizeof(s), "a@%s", dom);
	addr_bad(s, "domain too long");
}

static void t_addr_format(void)
{
	struct msg_addr a;
	char buf[32];
	CHECK_INT(msg_addr_parse("<\"x y\"@Ex.Test>", &a, NULL), 0);
	CHECK_INT(msg_addr_format(&a, buf, sizeof(buf)), 13);
	CHECK_STR(buf, "\"x y\"@ex.test");
	CHECK_INT(msg_addr_format(&a, buf, 14), 13); /* exactly fits with NUL */
	CHECK_INT(msg_addr_format(&a, buf, 13), -1);
	CHECK_INT(msg_addr_format(&a, buf, 0), -1);
	/* Formatting and re-parsing gives the same address. */
	struct msg_addr b;
	CHECK_INT(msg_addr_parse(buf, &b, NULL), 0);
	CHECK_STR(b.local, a.local);
	CHECK_STR(b.domain, a.domain);
}

/* ---- recipient lists ---- */

struct items {
	int n;
	char s[8][64];
	int stop_at; /* return non-zero on this item (1-based), 0 = never */
};

static int collect(void *arg, const char *item, size_t len)
{
	struct items *it = arg;
	if (it->n < 8 && len < 64) {
		memcpy(it->s[it->n], item, len);
		it->s[it->n][len] = '\0';
	}
	it->n++;
	return it->stop_at != 0 && it->n == it->stop_at;
}

static void t_split_basic(void)
{
	struct items it = { 0 };
	CHECK_INT(msg_split_list("a@x.test, b@y.test ,,c@z.test", collect, &it), 3);
	CHECK_INT(it.n, 3);
	CHECK_STR(it.s[0], "a@x.test");
	CHECK_STR(it.s[1], "b@y.test");
	CHECK_STR(it.s[2], "c@z.test");
	memset(&it, 0, sizeof(it));
	CHECK_INT(msg_split_list("one@x.test", collect, &it), 1);
	CHECK_STR(it.s[0], "one@x.test");
	memset(&it, 0, sizeof(it));
	CHECK_INT(msg_split_list("\ta@x.test\r\n,\n b@x.test\t", collect, &it), 2);
	CHECK_STR(it.s[0], "a@x.test");
	CHECK_STR(it.s[1], "b@x.test");
}

static void t_split_empty(void)
{
	struct items it = { 0 };
	CHECK_INT(msg_split_list("", collect, &it), 0);
	CHECK_INT(msg_split_list(",, , \t,", collect, &it), 0);
	CHECK_INT(msg_split_list(NULL, collect, &it), 0);
	CHECK_INT(it.n, 0);
}

static void t_split_quotes_angles(void)
{
	struct items it = { 0 };
	CHECK_INT(msg_split_list("\"a,b\"@x.test", collect, &it), 1);
	CHECK_STR(it.s[0], "\"a,b\"@x.test");
	memset(&it, 0, sizeof(it));
	CHECK_INT(msg_split_list("<\"a,b\"@x.test>, <c@y.test>", collect, &it), 2);
	CHECK_STR(it.s[0], "<\"a,b\"@x.test>");
	CHECK_STR(it.s[1], "<c@y.test>");
	memset(&it, 0, sizeof(it));
	/* An escaped quote does not end the quoted string. */
	CHECK_INT(msg_split_list("\"a\\\",b\"@x.test, c@y.test", collect, &it), 2);
	CHECK_STR(it.s[0], "\"a\\\",b\"@x.test");
	memset(&it, 0, sizeof(it));
	CHECK_INT(msg_split_list("<a,b@x.test>,c@y.test", collect, &it), 2);
	CHECK_STR(it.s[0], "<a,b@x.test>");
	memset(&it, 0, sizeof(it));
	/* An unterminated quote swallows the rest: one item, rejected later. */
	CHECK_INT(msg_split_list("\"a, b@x.test, c@y.test", collect, &it), 1);
}

static void t_split_stop(void)
{
	struct items it = { 0 };
	it.stop_at = 2;
	CHECK_INT(msg_split_list("a@x, b@x, c@x", collect, &it), -1);
	CHECK_INT(it.n, 2);
}

static void t_split_then_parse(void)
{
	struct items it = { 0 };
	CHECK_INT(msg_split_list(" <A@X.Test> , \"q,r\"@y.test ", collect, &it), 2);
	struct msg_addr a;
	CHECK_INT(msg_addr_parse(it.s[0], &a, NULL), 0);
	CHECK_STR(a.domain, "x.test");
	CHECK_INT(msg_addr_parse(it.s[1], &a, NULL), 0);
	CHECK_STR(a.local, "\"q,r\"");
}

static void t_rcpt_literal(void)
{
	struct msg_addr a;
	const char *err = NULL;
	CHECK_INT(msg_rcpt_parse("u@[192.0.2.1]", &a, &err), -1);
	CHECK_STR(err, "address literals are not supported");
	CHECK_INT(msg_rcpt_parse("<u@[IPv6:::1]>", &a, &err), -1);
	CHECK_STR(err, "address literals are not supported");
	CHECK_INT(msg_rcpt_parse("u@[127.0.3.1]", &a, &err), -1);
	CHECK_STR(a.domain, "");
	/* other errors are msg_addr_parse's; names are fine */
	CHECK_INT(msg_rcpt_parse("u@[bad", &a, &err), -1);
	CHECK_STR(err, "bad address literal");
	CHECK_INT(msg_rcpt_parse("U@X.Test", &a, &err), 0);
	CHECK_STR(a.domain, "x.test");
	/* a literal is still a valid mailbox (a sender may use one) */
	CHECK_INT(msg_addr_parse("u@[192.0.2.1]", &a, &err), 0);
}

static const struct t_case cases[] = {
	{ "wire LF to CRLF", t_wire_lf_to_crlf },
	{ "wire CRLF unchanged", t_wire_crlf_unchanged },
	{ "wire lone CR becomes CRLF", t_wire_lone_cr },
	{ "wire no smuggling (bare CR, CR CR LF, \\r.\\r\\n)", t_wire_smuggling },
	{ "wire final CRLF added", t_wire_final_crlf },
	{ "wire empty message", t_wire_empty },
	{ "wire fini twice", t_wire_fini_twice },
	{ "dot at start", t_dot_at_start },
	{ "dot in middle", t_dot_in_middle },
	{ "dot at end without newline", t_dot_at_end_no_newline },
	{ "dot not at line start", t_dot_not_at_start },
	{ "dot stuffing off", t_dot_stuff_off },
	{ "dot with mixed line ends", t_dot_mixed_line_ends },
	{ "longest line", t_longest_line },
	{ "wire form: long random inputs against a line-by-line reference", t_wire_random_vs_reference },
	{ "998-octet line", t_line_998 },
	{ "8-bit body only", t_8bit_body },
	{ "8-bit header", t_8bit_header },
	{ "8-bit at every offset", t_8bit_every_offset },
	{ "wire matches reference", t_wire_matches_reference },
	{ "wire 50 MB", t_wire_large },
	{ "addr simple", t_addr_simple },
	{ "addr angle and blanks", t_addr_angle_blanks },
	{ "addr quoted local part", t_addr_quoted },
	{ "addr UTF-8", t_addr_utf8 },
	{ "addr literal", t_addr_literal },
	{ "recipient address literal refused", t_rcpt_literal },
	{ "addr reject missing parts", t_addr_reject_missing },
	{ "addr reject syntax", t_addr_reject_syntax },
	{ "addr reject domain", t_addr_reject_domain },
	{ "addr limits", t_addr_limits },
	{ "addr format", t_addr_format },
	{ "split basic", t_split_basic },
	{ "split empty", t_split_empty },
	{ "split quotes and angles", t_split_quotes_angles },
	{ "split stop early", t_split_stop },
	{ "split then parse", t_split_then_parse },
};

T_MAIN(cases)
