/* smtp_reply.c: pure SMTP reply framing and EHLO capability parsing.
 *
 * smtp_reply_parse() turns the front of a receive buffer into one complete
 * reply (RFC 5321 §4.2) or says "need more" / "protocol error". It never
 * allocates and never keeps a pointer into the buffer: everything the caller
 * needs is copied into struct smtp_reply, so the caller may drop *used bytes
 * and parse the next pipelined reply (RFC 2920) from the same buffer.
 *
 * Invariants: a line is at most SMTP_LINE_MAX bytes including its CRLF (or
 * bare LF), a reply at most SMTP_REPLY_MAX; the joined text therefore always
 * fits r->text with its NUL (each line loses at least 4 bytes: code,
 * separator and LF, and gains at most one "\n"). Bytes beyond a limit are an
 * error as soon as they are seen, even before the reply is complete, so a
 * peer cannot make us buffer without bound by never sending the last line.
 *
 * On SMTP_PARSE_AGAIN or SMTP_PARSE_ERR the contents of *r are unspecified.
 * smtp_ehlo_parse() reads only r->text and r->text_len. */
#include "sender/smtp_reply.h"

#include <stdbool.h>
#include <string.h>

/* Error reasons (the strings the header promises). */
static const char ERR_LINE_LONG[] = "reply line too long";
static const char ERR_MALFORMED[] = "malformed reply line";
static const char ERR_REPLY_LONG[] = "reply too long";
static const char ERR_CODES[] = "inconsistent reply codes";

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Check whatever is present of a line's head "CODE" + separator (n bytes,
 * possibly an incomplete line). Returns false if those bytes can already never
 * form a valid reply line. RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39.
 * Only the first digit is held to the grammar: it alone gives the reply's
 * class (§4.2.1), and refusing an odd second digit would turn a classifiable
 * reply into a session failure. */
static bool head_ok(const char *p, size_t n)
{
	if (n > 0 && (p[0] < '2' || p[0] > '5'))
		return false;
	for (size_t i = 1; i < 3 && i < n; i++)
		if (!is_digit(p[i]))
			return false;
	/* "CODE" SP text (last line), "CODE" "-" text (continuation), or just
	 * "CODE" CRLF: a last line without text, which RFC 5321 §4.2 allows
	 * ("Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code
	 * [ SP textstring ] CRLF"). n excludes a line's CRLF, so a CR here is a
	 * lone CR. */
	if (n > 3 && p[3] != ' ' && p[3] != '-')
		return false;
	return true;
}

/* Parse an RFC 3463 §2 enhanced status code at the start of t[0..n):
 * class "." subject "." detail, class 2/4/5, subject and detail 1-3 digits,
 * followed by SP or the end of the text. Returns its length, or 0. */
static size_t esc_len(const char *t, size_t n)
{
	size_t i = 0;

	if (n < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && d < 4 && is_digit(t[i])) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= n || t[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && t[i] != ' ')
		return 0;
	return i;
}

/* Append one line's text to r->text, taking the enhanced status code off.
 * RFC 2034 §4 puts the esc at the start of the text of every line of a
 * reply; the first line decides it, and later lines lose it only when they
 * carry the same one (a different one is text, not a second status). An esc
 * whose class disagrees with the reply code (250 with 5.1.1) is not trusted
 * and stays in the text: RFC 3463 §2 gives the class the meaning of the reply
 * code's first digit, and the policy function must not see a "permanent" esc
 * on a success reply. */
static void add_text(struct smtp_reply *r, const char *t, size_t n)
{
	if (r->nlines == 0) {
		size_t e = esc_len(t, n);
		if (e > 0 && t[0] == '0' + r->code / 100) {
			memcpy(r->esc, t, e);
			r->esc[e] = '\0';
		}
	} else {
		r->text[r->text_len++] = '\n';
	}
	size_t elen = strlen(r->esc);
	if (elen > 0 && n >= elen && memcmp(t, r->esc, elen) == 0 &&
	    (n == elen || t[elen] == ' ')) {
		t += elen;
		n -= elen;
		if (n > 0) { /* the single SP after the esc */
			t++;
			n--;
		}
	}
	memcpy(r->text + r->text_len, t, n);
	r->text_len += n;
	r->nlines++;
}

/* RFC 5321 §2.3.8: CR and LF appear only together as CRLF, and textstring
 * (§4.2) has no NUL. A NUL would also cut r->text short for C callers. */
static bool text_ok(const char *t, size_t n)
{
	return memchr(t, '\r', n) == NULL && memchr(t, '\0', n) == NULL;
}

enum smtp_parse_rc smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r,
				    size_t *used, const char **err)
{
	size_t pos = 0;
	const char *why = NULL;

	*used = 0;
	r->code = 0;
	r->esc[0] = '\0';
	r->text[0] = '\0';
	r->text_len = 0;
	r->nlines = 0;

	for (;;) {
		const char *line = buf + pos;
		size_t rem = len - pos;
		size_t win = rem < SMTP_LINE_MAX ? rem : SMTP_LINE_MAX;
		const char *lf = memchr(line, '\n', win);

		if (lf == NULL) {
			/* Incomplete line. Fail now if it can never become
			 * valid, so garbage is not buffered up to the limit. */
			if (rem >= SMTP_LINE_MAX) {
				why = ERR_LINE_LONG;
				goto fail;
			}
			size_t n = rem;
			if (n > 0 && line[n - 1] == '\r')
				n--; /* may be the CR of CRLF */
			if (!head_ok(line, n) || (n > 4 && !text_ok(line + 4, n - 4))) {
				why = ERR_MALFORMED;
				goto fail;
			}
			if (r->nlines > 0 && n >= 3 && memcmp(line, buf, 3) != 0) {
				why = ERR_CODES;
				goto fail;
			}
			/* The reply is not complete and already holds len
			 * bytes: it will be longer than len. */
			if (len >= SMTP_REPLY_MAX) {
				why = ERR_REPLY_LONG;
				goto fail;
			}
			return SMTP_PARSE_AGAIN;
		}

		size_t llen = (size_t)(lf - line) + 1; /* with the terminator */
		size_t n = llen - 1;                    /* content only */
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (pos + llen > SMTP_REPLY_MAX) {
			why = ERR_REPLY_LONG;
			goto fail;
		}
		if (n < 3 || !head_ok(line, n) || (n > 4 && !text_ok(line + 4, n - 4))) {
			why = ERR_MALFORMED;
			goto fail;
		}
		int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (r->nlines == 0) {
			r->code = code;
		} else if (code != r->code) {
			why = ERR_CODES;
			goto fail;
		}
		bool last = n == 3 || line[3] == ' ';
		add_text(r, n > 4 ? line + 4 : line + n, n > 4 ? n - 4 : 0);
		pos += llen;
		if (last)
			break;
	}
	r->text[r->text_len] = '\0';
	*used = pos;
	return SMTP_PARSE_OK;

fail:
	if (err != NULL)
		*err = why;
	return SMTP_PARSE_ERR;
}

/* ---- EHLO (RFC 5321 §4.1.1.1; ehlo-line = ehlo-keyword *( SP ehlo-param )) ---- */

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool word_eq(const char *p, size_t n, const char *lit)
{
	size_t i = 0;
	for (; i < n && lit[i] != '\0'; i++)
		if (lower(p[i]) != lower(lit[i]))
			return false;
	return i == n && lit[i] == '\0';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 1870 §4: size-param ::= [1*DIGIT]; absent or 0 means no fixed maximum.
 * A value that does not parse is ignored (no limit known); a value past
 * uint64_t saturates. */
static uint64_t size_param(const char *p, size_t n)
{
	uint64_t v = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return 0;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return UINT64_MAX;
		v = v * 10 + d;
	}
	return v;
}

/* RFC 4954 §3: "AUTH" SP mechanism *(SP mechanism); mechanisms are
 * case-insensitive. */
static unsigned auth_params(const char *p, size_t n)
{
	unsigned m = 0;
	size_t i = 0;

	while (i < n) {
		while (i < n && is_blank(p[i]))
			i++;
		size_t s = i;
		while (i < n && !is_blank(p[i]))
			i++;
		if (word_eq(p + s, i - s, "PLAIN"))
			m |= SMTP_AUTH_PLAIN;
		else if (word_eq(p + s, i - s, "LOGIN"))
			m |= SMTP_AUTH_LOGIN;
	}
	return m;
}

static const struct {
	const char *kw;
	unsigned flag;
} ehlo_kw[] = {
	{ "PIPELINING", SMTP_EXT_PIPELINING },   /* RFC 2920 */
	{ "SIZE", SMTP_EXT_SIZE },               /* RFC 1870 */
	{ "8BITMIME", SMTP_EXT_8BITMIME },       /* RFC 6152 */
	{ "SMTPUTF8", SMTP_EXT_SMTPUTF8 },       /* RFC 6531 */
	{ "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES }, /* RFC 2034 */
	{ "STARTTLS", SMTP_EXT_STARTTLS },       /* RFC 3207 */
	{ "CHUNKING", SMTP_EXT_CHUNKING },       /* RFC 3030 */
	{ "AUTH", SMTP_EXT_AUTH },               /* RFC 4954 */
	{ "BINARYMIME", SMTP_EXT_BINARYMIME },   /* RFC 3030 */
	{ "DSN", SMTP_EXT_DSN },                 /* RFC 3461 */
};

static void ehlo_line(const char *p, size_t n, struct smtp_ehlo *out)
{
	size_t i = 0;

	while (i < n && is_blank(p[i]))
		i++;
	size_t ks = i;
	/* '=' ends the keyword too: pre-RFC 2554 servers send "AUTH=LOGIN PLAIN"
	 * for Outlook clients, often as a second AUTH line. */
	while (i < n && !is_blank(p[i]) && p[i] != '=')
		i++;
	const char *kw = p + ks;
	size_t kn = i - ks;
	if (i < n)
		i++; /* the SP or '=' */
	while (i < n && is_blank(p[i]))
		i++;
	const char *par = p + i;
	size_t pn = n - i;
	while (pn > 0 && is_blank(par[pn - 1]))
		pn--;

	for (size_t k = 0; k < sizeof(ehlo_kw) / sizeof(ehlo_kw[0]); k++) {
		if (!word_eq(kw, kn, ehlo_kw[k].kw))
			continue;
		out->ext |= ehlo_kw[k].flag;
		if (ehlo_kw[k].flag == SMTP_EXT_SIZE)
			out->size_max = size_param(par, pn);
		else if (ehlo_kw[k].flag == SMTP_EXT_AUTH)
			out->auth |= auth_params(par, pn);
		return;
	}
}

void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out)
{
	const char *p = r->text;
	const char *end = r->text + r->text_len;

	out->ext = 0;
	out->size_max = 0;
	out->auth = 0;

	/* The first line is "domain [greeting]" (RFC 5321 §4.1.1.1): skip it. */
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (nl == NULL)
		return;
	p = nl + 1;
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl != NULL ? nl : end;
		ehlo_line(p, (size_t)(le - p), out);
		p = le + 1;
	}
}
