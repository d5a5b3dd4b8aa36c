/* msg.h: message and address handling (pure; unit-tested).
 *
 * A message body is prepared once for the wire: a bare LF and a bare CR each
 * become CRLF (so the output never holds a CR or LF outside a CRLF pair: no
 * SMTP smuggling, on the DATA and the BDAT path alike), a final CRLF is added
 * when missing, and (for DATA) a line starting with "." gets one more "."; every
 * other byte is unchanged (RFC 5321 2.3.8, 4.5.2). The same message may be sent
 * on many connections, so the prepared form is kept. NUL bytes and lines over
 * 998 octets are the job layer's to refuse (job_data_check, queue/job.h). */
#ifndef SENDER_MSG_H
#define SENDER_MSG_H

#include <stdbool.h>
#include <stddef.h>

struct msg_wire {
	char *data;        /* CRLF lines, dot-stuffed if asked: owned (heap), or
	                    * the caller's raw bytes when they already were the
	                    * wire form, with no bare CR or LF and nothing to
	                    * stuff (borrowed: raw must outlive w) */
	size_t len;        /* excludes the terminating ".\r\n" (the SMTP client adds it) */
	bool has_8bit;     /* any byte >= 0x80 in the message */
	bool hdr_utf8;     /* any byte >= 0x80 in the header section */
	size_t longest_line; /* longest wire line in octets, excluding CRLF */
	bool borrowed;     /* data points into raw */
	/* Lines sent before data (the DKIM signatures, signer.h): CRLF lines,
	 * none starting with a dot, ASCII; borrowed, never freed here; NULL none.
	 * The message on the wire is pre then data (msg_wire_len). */
	const char *pre;
	size_t pre_len;
};

/* The message's length on the wire (before dot-stuffing): pre and data. */
static inline size_t msg_wire_len(const struct msg_wire *w)
{
	return w->pre_len + w->len;
}

/* Prepare raw bytes for the wire. dot_stuff: true for DATA, false for BDAT.
 * Returns 0 (fills *w; free with msg_wire_fini) */
int msg_wire_prepare(const char *raw, size_t len, bool dot_stuff, struct msg_wire *w);
void msg_wire_fini(struct msg_wire *w);

/* Addresses (RFC 5321 4.1.2 Mailbox, with RFC 6531 UTF-8 allowed). Accepts
 * "local@domain" and "<local@domain>" with surrounding blanks; quoted local parts
 * are accepted; the domain may be a name or an address literal "[1.2.3.4]".
 * Returns 0 and fills the out buffers (local part as given, domain lowercased,
 * ASCII-lowercased only; no IDNA conversion) or -1 with a reason in *err
 * ("missing @", "empty local part", "bad domain", "address too long", ...).
 * Limits: local part 64 octets, domain 255, whole address 254 (RFC 5321 4.5.3.1). */
struct msg_addr {
	char local[65 * 4];   /* room for escaped forms */
	char domain[256];
	bool utf8;            /* non-ASCII anywhere: needs SMTPUTF8 */
};
int msg_addr_parse(const char *s, struct msg_addr *a, const char **err);
/* msg_addr_parse for a recipient: an address literal ("u@[192.0.2.1]") is
 * refused with "address literals are not supported" (mxsend delivers by MX
 * only; a literal would otherwise end as a permanent NXDOMAIN bounce). */
int msg_rcpt_parse(const char *s, struct msg_addr *a, const char **err);
/* Format "local@domain" into buf (size n). Returns length or -1 if it does not fit. */
int msg_addr_format(const struct msg_addr *a, char *buf, size_t n);
/* Parse addr and write its normal form "local@domain" into norm (size n): 0,
 * or -1 with a reason in err. The job_addr_fn of mxsend run (queue/job.h). */
int msg_addr_norm(const char *addr, char *norm, size_t n, const char **err);

/* Split a comma-separated recipient list (the job's `to` field); calls fn for
 * each trimmed, non-empty item. Returns the number of items, or -1 if fn
 * returned non-zero (stopping early). */
int msg_split_list(const char *list, int (*fn)(void *arg, const char *item, size_t len),
		   void *arg);

#endif
