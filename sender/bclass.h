/* bclass.h: bounce classes. Every bounced, deferred and expired result says
 * why in one word (README "Bounce classes"): the class of the reply that
 * decided it, from a rule file, or of mxsend's own failure (DNS, TLS,
 * connect, timeout), which needs no rule.
 *
 * Rule file (sender/classes.conf is the shipped one; [classes] in the config
 * names it and the user's own, whose rules come first). One rule per line,
 * '#' starts a comment line, blank lines are skipped:
 *   CLASS  CODE  DSN  [REGEX]
 * CLASS one of the names below; CODE the basic reply code: "*", "5xx", "55x",
 * "550"; DSN the enhanced status code (RFC 3463): "*", "5.1.1", "*.2.2",
 * "4.7.*" (the reply's own, or "N.0.0" made from the code when it gave none);
 * REGEX, the rest of the line, a POSIX extended regular expression matched
 * case-insensitively anywhere in the reply text. The first rule that matches
 * gives the class; none: "other". Rules are compiled once, at start-up; a bad
 * rule is an error naming FILE:LINE.
 *
 * Cost: only failed results are classified; code and DSN are compared before
 * any regular expression runs. Classifying is read-only on the rules, so the
 * workers' threads share one set (glibc's regexec is thread-safe). */
#ifndef SENDER_BCLASS_H
#define SENDER_BCLASS_H

#include <stddef.h>

enum bclass {
	BCLASS_NONE,              /* not classified: delivered, held, rejected, suppressed */
	BCLASS_INVALID_RECIPIENT, /* the address does not exist (or is disabled) */
	BCLASS_MAILBOX_FULL,      /* over quota */
	BCLASS_REPUTATION,        /* the sending IP or domain is blocked/listed */
	BCLASS_RATE_LIMITED,      /* slow down: too fast, too many, throttled */
	BCLASS_POLICY,            /* refused by the receiver's local policy */
	BCLASS_CONTENT,           /* the message itself: spam, virus, size, format */
	BCLASS_AUTHENTICATION,    /* SPF, DKIM, DMARC, reverse DNS of the sender */
	BCLASS_GREYLISTED,        /* greylisting: a first-contact deferral */
	BCLASS_DNS,               /* the recipient domain could not be resolved */
	BCLASS_TLS,               /* the TLS the policy requires could not be had */
	BCLASS_CONNECTION,        /* could not connect, or the connection broke */
	BCLASS_TIMEOUT,           /* the server did not answer in time */
	BCLASS_OTHER,             /* none of the above */
	BCLASS_N
};

/* "invalid-recipient", ...; "" for BCLASS_NONE (and out of range). */
const char *bclass_name(enum bclass c);
/* The class named s (not "none"), or -1. */
int bclass_parse(const char *s);

/* Where a failure came from: the server's reply (classified by the rules), or
 * mxsend's own failure, mapped without any rule. */
enum bclass_origin {
	BCLASS_O_REPLY,    /* an SMTP reply: the rules decide */
	BCLASS_O_DNS,      /* MX/address resolution (NXDOMAIN, SERVFAIL, null MX) */
	BCLASS_O_TLS,      /* TLS policy: STARTTLS missing, handshake or verification failed */
	BCLASS_O_CONNECT,  /* connect refused/unreachable, connection lost, no source address */
	BCLASS_O_TIMEOUT,  /* a connect or reply deadline passed */
	BCLASS_O_INTERNAL, /* mxsend's own trouble */
};

struct bclass_rules;

/* Compile the rule files paths[0..n) (earlier files first; NULL entries are
 * skipped). Returns the rules, or NULL with "FILE:LINE: message" (or "FILE:
 * strerror") in err. Reads with stdio: start-up only. */
struct bclass_rules *bclass_load(const char *const *paths, int n, char *err, size_t errlen);
/* Compile rules from a string (tests, fuzzing); name stands for the file in
 * errors. Same result as bclass_load. */
struct bclass_rules *bclass_load_mem(const char *text, size_t len, const char *name, char *err,
				     size_t errlen);
void bclass_free(struct bclass_rules *r);
/* Rules loaded (0 for NULL). */
int bclass_count(const struct bclass_rules *r);

/* The class of a failure. origin other than BCLASS_O_REPLY maps directly (a
 * DNS failure with DSN x.1.10, a null MX, is invalid-recipient); a reply goes
 * through the rules (r may be NULL: then "other"). dsn and reply may be NULL
 * or "". Pure, no allocation, thread-safe. Never BCLASS_NONE. */
enum bclass bclass_classify(const struct bclass_rules *r, int code, const char *dsn,
			    const char *reply, enum bclass_origin origin);

/* The rule file found for the config file cfg_path (may be NULL): the first
 * that exists of DIR(cfg_path)/classes.conf, BINDIR/../share/mxsend/
 * classes.conf, BINDIR/../sender/classes.conf (the source tree: build/mxsend),
 * /usr/share/mxsend/classes.conf. Writes it into out and returns 0, or -1 when
 * none exists. */
int bclass_default_path(const char *cfg_path, char *out, size_t outlen);

#endif
