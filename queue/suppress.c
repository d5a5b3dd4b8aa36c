/* suppress.c: suppression list entries (suppress.h): fields and values.
 * Values come from Redis, where applications write them too: parsing never
 * fails and never reads past len. */
#define _GNU_SOURCE /* memrchr */
#include "queue/suppress.h"

#include <stdio.h>
#include <string.h>

int supp_key(char kind, const char *s, size_t len, char *out, size_t outlen, const char **why)
{
	size_t o = 0;
	if (kind == 'd') {
		if (len > 0 && s[0] == '@')
			s++, len--;
		if (len > 0 && s[len - 1] == '.')
			len--;
		if (len == 0) {
			*why = "empty domain";
			return -1;
		}
		if (memchr(s, '@', len) != NULL) {
			*why = "a domain has no '@'";
			return -1;
		}
		if (len + 2 > outlen) {
			*why = "too long";
			return -1;
		}
		out[o++] = '@';
	} else {
		const char *at = len > 0 ? memrchr(s, '@', len) : NULL;
		if (len == 0) {
			*why = "empty address";
			return -1;
		}
		if (at == NULL || at == s || at == s + len - 1) {
			*why = "not an address (local@domain)";
			return -1;
		}
		if (len + 1 > outlen) {
			*why = "too long";
			return -1;
		}
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f) {
			*why = c == ' ' ? "a blank in it" : "a control byte in it";
			return -1;
		}
		out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
	out[o] = '\0';
	return (int)o;
}

/* Decimal digits s[0..n) -> *v (at most 19 digits); false if not. */
static bool num(const char *s, size_t n, uint64_t *v)
{
	if (n == 0 || n > 19)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return true;
}

void supp_parse(const char *v, size_t len, struct supp_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->code = "";
	e->reason = v;
	e->reason_len = len;
	const char *p1 = memchr(v, '|', len);
	if (p1 == NULL)
		return;
	const char *p2 = memchr(p1 + 1, '|', len - (size_t)(p1 + 1 - v));
	if (p2 == NULL)
		return;
	const char *p3 = memchr(p2 + 1, '|', len - (size_t)(p2 + 1 - v));
	uint64_t ex, ad;
	if (p3 == NULL || !num(v, (size_t)(p1 - v), &ex) || !num(p1 + 1, (size_t)(p2 - p1 - 1), &ad))
		return; /* not the form: all reason */
	e->expires = ex;
	e->added = ad;
	e->code = p2 + 1;
	e->code_len = (size_t)(p3 - p2 - 1);
	e->reason = p3 + 1;
	e->reason_len = len - (size_t)(p3 + 1 - v);
}

/* Copy s into out at o (cap: stop before end), control bytes (and '|' when
 * bar) as ' '. Returns the new o. */
static size_t put(char *out, size_t o, size_t end, const char *s, bool bar)
{
	for (; s && *s && o < end; s++) {
		unsigned char c = (unsigned char)*s;
		out[o++] = (char)(c < ' ' || c == 0x7f || (bar && c == '|') ? ' ' : c);
	}
	return o;
}

size_t supp_format(char *out, size_t outlen, uint64_t expires, uint64_t added, const char *code,
		   const char *reason)
{
	if (outlen == 0)
		return 0;
	int n = snprintf(out, outlen, "%llu|%llu|", (unsigned long long)expires,
			 (unsigned long long)added);
	size_t o = n < 0 ? 0 : (size_t)n >= outlen ? outlen - 1 : (size_t)n;
	o = put(out, o, outlen > 64 ? outlen - 64 : outlen - 1, code, true); /* room for a reason */
	if (o < outlen - 1)
		out[o++] = '|';
	o = put(out, o, outlen - 1, reason, false);
	out[o] = '\0';
	return o;
}

void supp_code(const struct supp_entry *e, int *code, char *dsn, size_t dsnlen)
{
	*code = 0;
	if (dsnlen > 0)
		dsn[0] = '\0';
	const char *s = e->code, *end = e->code + e->code_len;
	if (end - s >= 3 && s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
	    s[2] <= '9' && (end - s == 3 || s[3] == ' '))
		*code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	else
		return;
	s += 3;
	while (s < end && *s == ' ')
		s++;
	size_t n = 0;
	while (s + n < end && ((s[n] >= '0' && s[n] <= '9') || s[n] == '.'))
		n++;
	/* "5.1.1": digit '.' ... with two dots */
	size_t dots = 0;
	for (size_t i = 0; i < n; i++)
		dots += s[i] == '.';
	if (n >= 5 && dots == 2 && n < dsnlen && (s[0] == '4' || s[0] == '5' || s[0] == '2') && s[1] == '.') {
		memcpy(dsn, s, n);
		dsn[n] = '\0';
	}
}
