/* tlsrpt.h: SMTP TLS Reporting (RFC 8460), pure: the one record of a TLS
 * session attempt, the Redis key scheme of its counters (the commands that
 * count one; the hash fields read back), the JSON report, its gzip form, the
 * mailto: report message, and the report URIs. No I/O: queue/tlsrpt_store.h
 * sends the commands and reads the hashes; it never builds a key itself.
 *
 * Redis keys (P = prefix, TLSRPT_PREFIX by default; DAY = YYYY-MM-DD, UTC;
 * DOMAIN = the policy domain, lowercase):
 *   P:DAY:DOMAIN        hash, the day's counters for DOMAIN. PK below is the
 *                       policy key: "sts:ID" for an MTA-STS policy (ID = its
 *                       id), else the policy type ("no-policy-found"). Fields:
 *     ok:PK                    successful sessions (HINCRBY)
 *     fail:PK|RESULT|MX|IP|SRC failed sessions of one RFC 8460 result type,
 *                              receiving MX host, receiving IP and sending IP
 *                              (any of the last three may be "")
 *     why:PK|RESULT|MX|IP|SRC  the last failure reason text for that tuple
 *     policy:PK                the policy-string lines joined with LF
 *                              ("version: STSv1","mode: ...","mx: ...","max_age: N")
 *     mx:PK                    the policy's mx patterns joined with ','
 *   P:days:DAY          set of the domains with counters on DAY
 *   P:sent:DAY:DOMAIN   hash, rua URI -> "sent ID UNIXTIME" | "sending ID UNIXTIME"
 *                       (a run claims a rua before sending; a "sending" claim
 *                       older than TLSRPT_STALE_S may be taken over)
 *   All three expire TLSRPT_TTL_S after their last write.
 * Several processes add into the same keys: counters only ever HINCRBY. */
#ifndef TLSCACHE_TLSRPT_H
#define TLSCACHE_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tlscache/tls_event.h"

#define TLSRPT_PREFIX "mxsend:tlsrpt"
#define TLSRPT_TTL_S 691200 /* 8 days: a day's counters outlive the next day's run */
#define TLSRPT_STALE_S 3600 /* a "sending" claim this old was a crashed run */
#define TLSRPT_MEDIA_TYPE "application/tlsrpt+gzip" /* RFC 8460 6.4 */


/* ---- the event's policy ---- */

struct sts_policy;
/* Fill the policy part of ev (policy_domain, type, id, mode, mx, max_age)
 * for domain: from pol, the MTA-STS policy that applied ("sts"), or
 * "no-policy-found" when pol is NULL. Fields too long are cut. The other
 * fields are left as they are. A DANE host's sessions are "tlsa" instead
 * (sender/deliver.c fills it: id, the records comma-separated in policy_mx). */
void tlsrpt_event_policy(struct tls_event *ev, const char *domain, const struct sts_policy *pol);

/* ---- counters ---- */

/* Receives one Redis command. argv/len are valid during the call only (copy
 * them: hiredis's *CommandArgv do). Return 0, or non-zero to stop. */
typedef int tlsrpt_cmd_fn(void *arg, int argc, const char **argv, const size_t *len);

/* Turn one event into the Redis commands that count it (HINCRBY, HSET of the
 * policy and reason, SADD to the day's set, EXPIREs), in order, through emit.
 * prefix NULL = TLSRPT_PREFIX. Pure apart from emit, which it calls 4 or 5
 * times before returning. Returns the number of commands emitted, -EINVAL for
 * an event that cannot be counted (no domain, a domain or result with bytes
 * outside [a-z0-9._-]), or emit's non-zero return (stopped part-way). */
int tlsrpt_event_cmds(const struct tls_event *ev, const char *prefix, tlsrpt_cmd_fn *emit,
		      void *arg);

enum tlsrpt_key_kind {
	TLSRPT_KEY_COUNTS, /* P:DAY:DOMAIN */
	TLSRPT_KEY_DAYS,   /* P:days:DAY (domain unused) */
	TLSRPT_KEY_SENT,   /* P:sent:DAY:DOMAIN */
};
/* One key of the scheme above into buf (size n). prefix NULL = TLSRPT_PREFIX.
 * Returns the length, or -1 if it does not fit. */
int tlsrpt_key(char *buf, size_t n, const char *prefix, enum tlsrpt_key_kind kind,
	       const char *day, const char *domain);

/* ---- a day's counters, read back ---- */

struct tlsrpt_fail {
	char *result, *mx, *ip, *sending_ip, *detail; /* "" when absent */
	uint64_t count;
};

struct tlsrpt_policy {
	char *key;     /* PK */
	char *type;    /* "sts", "no-policy-found" */
	char *strings; /* policy-string lines joined with LF, NULL if none */
	char *mx;      /* mx patterns joined with ',', NULL if none */
	uint64_t ok, failed;
	int nfail;
	struct tlsrpt_fail *fail;
};

struct tlsrpt_counts {
	char domain[256];
	int npol;
	struct tlsrpt_policy *pol;
};

/* Add one hash field of P:DAY:DOMAIN (binary-safe lengths) into c (zeroed
 * beforehand, with c->domain set). 0, or -1 for a field of unknown form
 * (ignored: keep going). Copies what it keeps. */
int tlsrpt_counts_add(struct tlsrpt_counts *c, const char *field, size_t flen, const char *val,
		      size_t vlen);
/* Sort policies by key and failures by (result, mx, ip, sending ip) and drop
 * policies without sessions; call once after the last tlsrpt_counts_add. */
void tlsrpt_counts_finish(struct tlsrpt_counts *c);
void tlsrpt_counts_fini(struct tlsrpt_counts *c);

/* ---- the report ---- */

struct tlsrpt_meta {
	const char *org;       /* organization-name */
	const char *contact;   /* contact-info */
	const char *report_id; /* report-id */
	int64_t day_start;     /* the UTC day (epoch seconds at 00:00:00Z) */
};

/* The RFC 8460 4.4 JSON report for c (after tlsrpt_counts_finish): date-range
 * 00:00:00Z .. 23:59:59Z of the day. pretty: indented (for people), else
 * compact. Returns a malloc'd NUL-terminated string, or NULL (jansson OOM). */
char *tlsrpt_json(const struct tlsrpt_counts *c, const struct tlsrpt_meta *m, bool pretty);

/* gzip (RFC 1952) of in[0..n). 0 with *out malloc'd, or -ENOMEM. */
int tlsrpt_gzip(const void *in, size_t n, unsigned char **out, size_t *outlen);

/* RFC 8460 5.1 file name: "submitter!domain!begin!end!uniq.json.gz" (begin,
 * end: epoch seconds of the report's first and last second). Returns the
 * length, or -1 if it does not fit. */
int tlsrpt_filename(char *buf, size_t n, const char *submitter, const char *domain,
		    int64_t begin, int64_t end, const char *uniq);

struct tlsrpt_mail {
	const char *from;      /* From: and the message's sender */
	const char *to;        /* the rua address */
	const char *domain;    /* TLS-Report-Domain */
	const char *submitter; /* TLS-Report-Submitter */
	const char *report_id; /* Subject's Report-ID and the Message-ID */
	const char *filename;  /* tlsrpt_filename */
	const char *day;       /* YYYY-MM-DD, for the text part */
	const unsigned char *gz; /* the gzipped report */
	size_t gzlen;
	int64_t date;          /* Date: (epoch seconds) */
};
/* The RFC 8460 5.3 report message: multipart/report; report-type="tlsrpt",
 * a text/plain part and the report as an application/tlsrpt+gzip attachment,
 * base64 in lines of 76; CRLF line ends. Header values must not hold CR/LF
 * (-> NULL). Returns a malloc'd message (*len bytes, NUL-terminated). */
char *tlsrpt_mail_build(const struct tlsrpt_mail *m, size_t *len);

/* Base64 (RFC 2045) of in, CRLF after every 76 characters and at the end.
 * Returns a malloc'd NUL-terminated string. */
char *tlsrpt_base64(const unsigned char *in, size_t n, size_t *outlen);

/* ---- URIs and days ---- */

/* The address of a "mailto:" rua (RFC 6068: percent-decoded, anything from
 * '?' on ignored). 0, or -1 if it is not one plain local@domain address. */
int tlsrpt_mailto(const char *uri, char *addr, size_t n);
/* Split an "https://host[:port][/path]" rua. port 0 when absent; path "/"
 * when absent. 0, or -1 (userinfo, IP literals in brackets, bad bytes). */
int tlsrpt_https(const char *uri, char *host, size_t hostlen, int *port, char *path,
		 size_t pathlen);
/* "YYYY-MM-DD" -> epoch seconds at 00:00:00Z. 0, or -1. */
int tlsrpt_day_parse(const char *s, int64_t *start);
/* Epoch seconds -> its UTC day "YYYY-MM-DD" (11 bytes with the NUL). */
void tlsrpt_day_format(int64_t t, char out[11]);

#endif
