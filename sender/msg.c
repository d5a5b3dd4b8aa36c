/* msg.c: a message's wire form, and mailbox syntax.
 *
 * msg_wire_prepare() makes the bytes that go after DATA (or in BDAT chunks)
 * once per message, since one message goes out on many connections. Two
 * passes over the input, both driven by memchr() (for CR and for LF): the
 * first counts the output size and gathers the flags, the second copies whole
 * line spans with memcpy.
 * So there is exactly one allocation of the exact size (a 50 MB message does
 * not cost a 100 MB worst-case buffer) and no per-byte branching in the copy.
 *
 * Line rules (RFC 5321 §2.3.8, §4.5.2): a line ends at CRLF, at a bare LF or at
 * a bare CR; CRLF stays, a bare LF and a bare CR each become CRLF, so the
 * output never holds a CR or LF outside a CRLF pair (no SMTP smuggling: a
 * receiver cannot see a line end, or a "." line, that we did not). A last
 * line without a line end gets CRLF. With dot_stuff a line that starts with
 * "." gets one more. An empty input gives an empty output (len 0): there is no line to
 * terminate, and DATA then sends just ".\r\n" (RFC 5321 §4.1.1.4), BDAT sends
 * "BDAT 0 LAST" (RFC 3030 §2). Whether an empty message is acceptable at all
 * is the job layer's decision, not this one's.
 *
 * msg_addr_parse() checks RFC 5321 §4.1.2 Mailbox syntax with RFC 6531 UTF-8,
 * and copies parts out; it keeps no pointer to its input. */
#include "sender/msg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "queue/job.h"
#include "sender/util.h"

/* ---- wire form ---- */

/* Line scanner shared by both passes. A line ends at CRLF, at a bare LF or at
 * a bare CR (RFC 5321 §2.3.8: CR and LF appear only together as a line end;
 * a receiver that took a lone CR or LF for a line end while we did not is how
 * SMTP smuggling works, so every lone one ends a line here and becomes CRLF).
 * One pass per line finds the first CR or LF, 16 bytes at a time, and with
 * hi != NULL tells whether the text before it has a byte >= 0x80 (pass 1's
 * 8-bit check in the same loads): one look at each byte, where a memchr()
 * for CR and another for LF looked at each twice (7,700 instructions
 * per 4 KB message of 78-byte lines before bare CRs were handled, 12,600 with
 * the two memchr()s; callgrind). */
#if defined(__SSE2__)
#include <emmintrin.h>
#else
#define EOL_ONES 0x0101010101010101ull
#define EOL_HIGH 0x8080808080808080ull

/* The high bit of each byte of x that equals c's byte (exact for the lowest
 * one, which is all eol_find uses: a borrow only runs upwards). */
static inline uint64_t eol_eq(uint64_t x, uint64_t c)
{
	uint64_t v = x ^ c;
	return (v - EOL_ONES) & ~v & EOL_HIGH;
}
#endif

/* The first CR or LF in [p, end), or end; *hi |= any byte >= 0x80 before it.
 * SSE2 (every x86-64) looks at 16 bytes per step, about as memchr() does;
 * elsewhere 8 at a time. */
static const char *eol_find(const char *p, const char *end, bool *hi)
{
#if defined(__SSE2__)
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	unsigned high = 0;
	for (; end - p >= 16; p += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
		unsigned m = (unsigned)_mm_movemask_epi8(
			_mm_or_si128(_mm_cmpeq_epi8(x, cr), _mm_cmpeq_epi8(x, lf)));
		unsigned h = (unsigned)_mm_movemask_epi8(x); /* bytes >= 0x80 */
		if (m != 0) {
			unsigned k = (unsigned)__builtin_ctz(m); /* bytes before it */
			high |= h & ((1u << k) - 1);
			if (hi != NULL && high != 0)
				*hi = true;
			return p + k;
		}
		high |= h;
	}
	if (hi != NULL && high != 0)
		*hi = true;
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t acc = 0;
	for (; end - p >= 8; p += 8) {
		uint64_t x, m;
		memcpy(&x, p, 8);
		m = eol_eq(x, EOL_ONES * '\r') | eol_eq(x, EOL_ONES * '\n');
		if (m != 0) {
			unsigned k = (unsigned)__builtin_ctzll(m) / 8; /* bytes before it */
			if (k > 0)
				acc |= x & (~0ull >> (64 - 8 * k));
			if (hi != NULL && (acc & EOL_HIGH))
				*hi = true;
			return p + k;
		}
		acc |= x;
	}
	if (hi != NULL && (acc & EOL_HIGH))
		*hi = true;
#endif
	for (; p < end && *p != '\r' && *p != '\n'; p++)
		if (hi != NULL && (unsigned char)*p >= 0x80)
			*hi = true;
	return p;
}

/* The line at p (p < end): its text is p[0 .. *text), the terminator (CRLF, CR,
 * LF or the end of input) follows; returns where the next line starts. With
 * hi != NULL, *hi |= the text has a byte >= 0x80. */
static const char *scan_line(const char *p, const char *end, size_t *text, bool *hi)
{
	const char *e = eol_find(p, end, hi);

	*text = (size_t)(e - p);
	if (e == end)
		return e;
	if (*e == '\r' && e + 1 < end && e[1] == '\n')
		return e + 2; /* CRLF */
	return e + 1;
}

int msg_wire_prepare(const char *raw, size_t len, bool dot_stuff, struct msg_wire *w)
{
	const char *p = raw, *end = raw + len;
	size_t out = 0, text;
	bool in_hdr = true, same = true;

	memset(w, 0, sizeof(*w));
	if (raw == NULL && len > 0)
		return -EINVAL;

	/* Pass 1: output size, flags, longest line. */
	while (p < end) {
		bool hi8 = false;
		const char *next = scan_line(p, end, &text, &hi8);

		/* Octets of the line, excluding CRLF and any stuffed dot:
		 * RFC 5321 §4.5.3.1.6 counts neither. */
		if (text > w->longest_line)
			w->longest_line = text;
		/* The header section ends at the first empty line
		 * (RFC 5322 §2.1); with none, the whole message is header. */
		if (in_hdr && text == 0) /* p < end: the line has its end */
			in_hdr = false;
		if (hi8) {
			w->has_8bit = true;
			if (in_hdr)
				w->hdr_utf8 = true;
		}
		out += text + 2; /* the line, CRLF */
		/* Anything but a CRLF terminator, or a stuffed dot, changes the
		 * bytes. */
		if ((size_t)(next - p) != text + 2)
			same = false;
		if (dot_stuff && text > 0 && p[0] == '.') {
			out++;
			same = false;
		}
		p = next;
	}
	if (out < len) /* only on size_t wrap-around */
		return -EOVERFLOW;
	if (same && len > 0) {
		/* Already wire form (every line ends in CRLF, no lone CR or
		 * LF, nothing to stuff): borrow the caller's bytes instead of
		 * copying the message. */
		w->data = (char *)raw;
		w->len = len;
		w->borrowed = true;
		return 0;
	}

	/* Pass 2: copy. */
	char *d = xmalloc(out + 1);
	w->data = d;
	p = raw;
	while (p < end) {
		const char *next = scan_line(p, end, &text, NULL);
		/* RFC 5321 §4.5.2: "Before sending a line of mail text, the SMTP
		 * client checks the first character of the line. If it is a
		 * period, one additional period is inserted". */
		if (dot_stuff && text > 0 && p[0] == '.')
			*d++ = '.';
		memcpy(d, p, text);
		d += text;
		*d++ = '\r';
		*d++ = '\n';
		p = next;
	}
	*d = '\0'; /* not part of len; keeps the buffer printable in a debugger */
	w->len = (size_t)(d - w->data);
	if (w->len != out)
		abort(); /* the two passes disagree: our bug, never the input's */
	return 0;
}

void msg_wire_fini(struct msg_wire *w)
{
	if (w == NULL)
		return;
	if (!w->borrowed)
		free(w->data);
	memset(w, 0, sizeof(*w));
}

/* ---- addresses (RFC 5321 §4.1.2, RFC 6531 §3.3) ---- */

#define LOCAL_MAX 64   /* RFC 5321 §4.5.3.1.1 */
#define DOMAIN_MAX 255 /* RFC 5321 §4.5.3.1.2 */
#define LABEL_MAX 63   /* RFC 1035 §2.3.4 */
#define MAILBOX_MAX 254 /* RFC 5321 §4.5.3.1.3: path 256 including "<" ">" */

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5321 §4.1.2 atext (from RFC 5322 §3.2.3), ASCII part. */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 6531 §3.3 extends atext, qtextSMTP and sub-domain with UTF8-non-ascii
 * (RFC 6532): a well-formed UTF-8 sequence, job_utf8_seq (queue/job.h; RFC
 * 3629 §4: no overlongs, no surrogates, nothing above U+10FFFF). */

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 §4.1.2).
 * p[0] is the opening quote. Returns the length through the closing quote, or
 * 0 with *err set. */
static size_t quoted_len(const unsigned char *p, size_t n, const char **err)
{
	size_t i = 1;

	while (i < n) {
		unsigned char c = p[i];
		if (c == '"')
			return i + 1;
		if (c == '\\') {
			/* quoted-pairSMTP = %d92 %d32-126 */
			if (i + 1 >= n || p[i + 1] < 32 || p[i + 1] > 126) {
				*err = "bad quoted local part";
				return 0;
			}
			i += 2;
		} else if (c >= 0x80) {
			size_t k = job_utf8_seq(p + i, n - i);
			if (k == 0) {
				*err = "invalid UTF-8";
				return 0;
			}
			i += k;
		} else {
			/* qtextSMTP = %d32-33 / %d35-91 / %d93-126; controls
			 * were refused before we get here. */
			i++;
		}
	}
	*err = "unterminated quoted string";
	return 0;
}

/* Dot-string = Atom *("." Atom) up to the first "@" (RFC 5321 §4.1.2).
 * Returns its length (0 when empty), or (size_t)-1 with *err set. */
static size_t dot_string_len(const unsigned char *p, size_t n, const char **err)
{
	size_t i = 0;
	bool atom_start = true;

	while (i < n && p[i] != '@') {
		unsigned char c = p[i];
		if (c == '.') {
			if (atom_start) {
				*err = "bad local part"; /* leading dot or ".." */
				return (size_t)-1;
			}
			atom_start = true;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t k = job_utf8_seq(p + i, n - i);
			if (k == 0) {
				*err = "invalid UTF-8";
				return (size_t)-1;
			}
			i += k;
		} else if (is_atext(c)) {
			i++;
		} else {
			*err = c == ' ' || c == '\t' ? "blank outside quotes" : "bad local part";
			return (size_t)-1;
		}
		atom_start = false;
	}
	if (i > 0 && atom_start) {
		*err = "bad local part"; /* trailing dot */
		return (size_t)-1;
	}
	return i;
}

/* IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT 0..255. Written
 * here rather than with inet_pton, which refuses leading zeros that RFC 5321
 * §4.1.3 allows. */
static bool ipv4_literal(const unsigned char *p, size_t n)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0, d = 0;
		while (i < n && is_digit(p[i]) && d < 4) {
			v = v * 10 + (unsigned)(p[i] - '0');
			i++;
			d++;
		}
		if (d == 0 || d > 3 || v > 255)
			return false;
		if (part < 3) {
			if (i >= n || p[i] != '.')
				return false;
			i++;
		}
	}
	return i == n;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]" (RFC 5321 §4.1.3). General literals name no
 * registered tag we could connect to, so they are refused. p includes the
 * brackets. */
static bool addr_literal(const unsigned char *p, size_t n)
{
	if (n < 3 || p[n - 1] != ']')
		return false;
	p++;
	n -= 2;
	if (n > 5 && strncasecmp((const char *)p, "IPv6:", 5) == 0) {
		char buf[64];
		struct in6_addr a6;
		if (n - 5 >= sizeof(buf))
			return false;
		memcpy(buf, p + 5, n - 5);
		buf[n - 5] = '\0';
		/* inet_pton's grammar matches IPv6-full/comp/v4-full/v4-comp. */
		return inet_pton(AF_INET6, buf, &a6) == 1;
	}
	return ipv4_literal(p, n);
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 §4.1.2), or a U-label (RFC 6531 §3.3). No trailing dot: the
 * grammar has none, and "a@x.test." would then differ from "a@x.test" in
 * every per-domain table. */
static bool domain_name(const unsigned char *p, size_t n, bool *utf8, const char **err)
{
	size_t i = 0;

	while (i <= n) {
		size_t s = i;
		bool ascii = true;
		while (i < n && p[i] != '.') {
			unsigned char c = p[i];
			if (c >= 0x80) {
				size_t k = job_utf8_seq(p + i, n - i);
				if (k == 0) {
					*err = "invalid UTF-8";
					return false;
				}
				ascii = false;
				*utf8 = true;
				i += k;
			} else if (is_alpha(c) || is_digit(c) || c == '-') {
				i++;
			} else {
				*err = "bad domain";
				return false;
			}
		}
		size_t ln = i - s;
		if (ln == 0 && s == n && n > 0) {
			*err = "trailing dot in domain";
			return false;
		}
		/* The 63-octet label limit (RFC 1035 §2.3.4) applies to the
		 * A-label; a U-label's ACE length is unknown without IDNA, so
		 * only ASCII labels are checked here. */
		if (ln == 0 || (ascii && ln > LABEL_MAX) || p[s] == '-' || p[i - 1] == '-') {
			*err = "bad domain";
			return false;
		}
		if (i == n)
			return true;
		i++; /* the dot; a dot at the end leaves an empty label */
	}
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

int msg_addr_parse(const char *s, struct msg_addr *a, const char **err)
{
	const char *why = NULL;
	size_t n;
	const unsigned char *p;

	memset(a, 0, sizeof(*a));
	if (s == NULL) {
		why = "empty address";
		goto fail;
	}
	while (is_blank(*s))
		s++;
	n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		n--;
	/* Path = "<" Mailbox ">" (RFC 5321 §4.1.2); no source route. */
	if (n > 0 && s[0] == '<') {
		if (n < 2 || s[n - 1] != '>') {
			why = "unbalanced angle brackets";
			goto fail;
		}
		s++;
		n -= 2;
	} else if (n > 0 && s[n - 1] == '>') {
		why = "unbalanced angle brackets";
		goto fail;
	}
	if (n == 0) {
		why = "empty address";
		goto fail;
	}
	p = (const unsigned char *)s;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f) {
			why = "control character in address";
			goto fail;
		}
		if (p[i] >= 0x80)
			a->utf8 = true;
	}

	/* Local part. */
	size_t ll;
	if (p[0] == '"') {
		ll = quoted_len(p, n, &why);
		if (ll == 0)
			goto fail;
		if (ll == n) {
			why = "missing @";
			goto fail;
		}
		if (p[ll] != '@') {
			why = "bad local part";
			goto fail;
		}
	} else {
		ll = dot_string_len(p, n, &why);
		if (ll == (size_t)-1)
			goto fail;
		if (ll == n) {
			why = "missing @";
			goto fail;
		}
		if (ll == 0) {
			why = "empty local part";
			goto fail;
		}
	}
	if (ll > LOCAL_MAX) {
		why = "local part too long";
		goto fail;
	}

	/* Domain. */
	const unsigned char *dom = p + ll + 1;
	size_t dl = n - ll - 1;
	if (dl == 0) {
		why = "empty domain";
		goto fail;
	}
	if (memchr(dom, '@', dl) != NULL) {
		why = "more than one @";
		goto fail;
	}
	if (dl > DOMAIN_MAX) {
		why = "domain too long";
		goto fail;
	}
	if (n > MAILBOX_MAX) {
		why = "address too long";
		goto fail;
	}
	if (dom[0] == '[') {
		if (!addr_literal(dom, dl)) {
			why = "bad address literal";
			goto fail;
		}
	} else {
		bool u = false;
		if (!domain_name(dom, dl, &u, &why))
			goto fail;
	}

	memcpy(a->local, p, ll);
	a->local[ll] = '\0';
	/* Lowercase ASCII only: UTF-8 bytes are >= 0x80 and pass unchanged,
	 * and "IPv6:" is case-insensitive (RFC 5234 §2.3), so lowering it is
	 * harmless; keep the conventional spelling anyway. */
	for (size_t i = 0; i < dl; i++) {
		unsigned char c = dom[i];
		a->domain[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	a->domain[dl] = '\0';
	if (dl > 6 && strncmp(a->domain, "[ipv6:", 6) == 0)
		memcpy(a->domain + 1, "IPv6", 4);
	return 0;

fail:
	memset(a, 0, sizeof(*a));
	if (err != NULL)
		*err = why;
	return -1;
}

int msg_rcpt_parse(const char *s, struct msg_addr *a, const char **err)
{
	if (msg_addr_parse(s, a, err) != 0)
		return -1;
	if (a->domain[0] == '[') {
		memset(a, 0, sizeof(*a));
		if (err != NULL)
			*err = "address literals are not supported";
		return -1;
	}
	return 0;
}

int msg_addr_format(const struct msg_addr *a, char *buf, size_t n)
{
	size_t ll = strlen(a->local), dl = strlen(a->domain);

	if (ll + 1 + dl + 1 > n || ll + 1 + dl > INT_MAX)
		return -1;
	memcpy(buf, a->local, ll);
	buf[ll] = '@';
	memcpy(buf + ll + 1, a->domain, dl);
	buf[ll + 1 + dl] = '\0';
	return (int)(ll + 1 + dl);
}

int msg_addr_norm(const char *addr, char *norm, size_t n, const char **err)
{
	struct msg_addr a;
	if (msg_addr_parse(addr, &a, err) != 0)
		return -1;
	if (msg_addr_format(&a, norm, n) < 0) {
		*err = "address too long";
		return -1;
	}
	return 0;
}

/* ---- recipient lists ---- */

static bool is_trim(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int emit(const char *s, size_t n, int (*fn)(void *, const char *, size_t), void *arg,
		int *count)
{
	while (n > 0 && is_trim(*s)) {
		s++;
		n--;
	}
	while (n > 0 && is_trim(s[n - 1]))
		n--;
	if (n == 0)
		return 0;
	(*count)++;
	return fn(arg, s, n);
}

/* A comma inside a quoted local part ("a,b"@x) or inside angle brackets is
 * data, not a separator. A backslash inside quotes escapes the next byte
 * (quoted-pairSMTP), so "a\"," does not end the quote. An unbalanced quote
 * runs to the end of the list and makes one bad item, which the address
 * parser then rejects with a reason. */
int msg_split_list(const char *list, int (*fn)(void *arg, const char *item, size_t len),
		   void *arg)
{
	int count = 0, angle = 0;
	bool quoted = false;
	const char *start = list;

	if (list == NULL)
		return 0;
	for (const char *p = list;; p++) {
		char c = *p;
		if (c == '\0' || (c == ',' && !quoted && angle == 0)) {
			if (emit(start, (size_t)(p - start), fn, arg, &count) != 0)
				return -1;
			if (c == '\0')
				break;
			start = p + 1;
		} else if (quoted) {
			if (c == '\\' && p[1] != '\0')
				p++;
			else if (c == '"')
				quoted = false;
		} else if (c == '"') {
			quoted = true;
		} else if (c == '<') {
			angle++;
		} else if (c == '>' && angle > 0) {
			angle--;
		}
	}
	return count;
}
