/* smtp_reply.h: pure SMTP reply and EHLO parsing (no I/O; unit-tested).
 *
 * Replies (RFC 5321 4.2): one or more lines "CODE-text" ... "CODE text", CRLF
 * terminated (a bare LF is accepted as a line end). Limits: a line is at most
 * SMTP_LINE_MAX bytes including CRLF, a whole reply at most SMTP_REPLY_MAX;
 * exceeding either, a code that changes between lines, or a malformed line is
 * a protocol error. Enhanced status codes (RFC 3463 "x.y.z") at the start of
 * the text are extracted when present. */
#ifndef SENDER_SMTP_REPLY_H
#define SENDER_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 2048
#define SMTP_REPLY_MAX 8192

struct smtp_reply {
	int code;          /* 200..599 */
	char esc[16];      /* "4.2.1" or "" */
	char text[SMTP_REPLY_MAX]; /* lines' text (after "CODE-" / "CODE ", and after the esc
	                    * on each line), joined with "\n"; NUL-terminated */
	size_t text_len;
	int nlines;
};

enum smtp_parse_rc { SMTP_PARSE_OK, SMTP_PARSE_AGAIN, SMTP_PARSE_ERR };

/* Try to parse one complete reply from buf[0..len). On SMTP_PARSE_OK fills *r
 * and sets *used to the bytes consumed (the caller drops them; more replies may
 * follow, e.g. pipelined). SMTP_PARSE_AGAIN: need more bytes (*used = 0); if
 * len already exceeds a limit this returns SMTP_PARSE_ERR instead. On
 * SMTP_PARSE_ERR, err (if not NULL) gets a short reason ("reply line too long",
 * "malformed reply line", "reply too long", "inconsistent reply codes"). */
enum smtp_parse_rc smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r,
				    size_t *used, const char **err);

/* EHLO capabilities (RFC 5321 4.1.1.1; extensions by keyword). */
#define SMTP_EXT_PIPELINING (1u << 0)
#define SMTP_EXT_SIZE (1u << 1)
#define SMTP_EXT_8BITMIME (1u << 2)
#define SMTP_EXT_SMTPUTF8 (1u << 3)
#define SMTP_EXT_ENHANCEDSTATUSCODES (1u << 4)
#define SMTP_EXT_STARTTLS (1u << 5)
#define SMTP_EXT_CHUNKING (1u << 6)
#define SMTP_EXT_AUTH (1u << 7)
#define SMTP_EXT_BINARYMIME (1u << 8)
#define SMTP_EXT_DSN (1u << 9)

struct smtp_ehlo {
	unsigned ext;       /* SMTP_EXT_* */
	uint64_t size_max;  /* SIZE parameter; 0 = no limit given */
	unsigned auth;      /* SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN offered */
};
#define SMTP_AUTH_PLAIN (1u << 0)
#define SMTP_AUTH_LOGIN (1u << 1)

/* Parse the text of a 250 EHLO reply (r->text as filled above: first line is the
 * greeting/domain, each following line one keyword with parameters; keywords are
 * case-insensitive). Unknown keywords are ignored. */
void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out);

/* Reply class helpers. */
static inline int smtp_reply_class(int code)
{
	return code / 100;
}

#endif
