/* suppress.h: the suppression list's entries, pure (no Redis, no I/O): how a
 * recipient becomes a field of the list's hash, and what a value says.
 *
 * Redis layout (J = [redis] jobs, default mxsend:jobs; README "Suppression"):
 *   J:suppress      hash. Field: an address, lowercased ("user@example.com"), or
 *                   "@" + a domain for every address of it ("@example.com").
 *                   Value: "EXPIRES|ADDED|CODE|REASON": EXPIRES and ADDED in
 *                   epoch seconds (EXPIRES 0: never), CODE the reply that
 *                   caused it ("550 5.1.1", may be empty), REASON free text
 *                   (the rest, '|' allowed). A value without '|' is all
 *                   reason, never expiring: `HSET J:suppress a@b.example
 *                   complaint` is a valid entry.
 *   J:suppress:exp  sorted set: field -> EXPIRES, for the entries that expire
 *                   (each `mxsend run` deletes those past due once a
 *                   minute; until then the claim check ignores an expired
 *                   value by itself).
 * Checking a claimed batch is one HMGET of J:suppress for all its recipients'
 * fields (address and @domain), whatever the list's size. */
#ifndef QUEUE_SUPPRESS_H
#define QUEUE_SUPPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SUPP_KEY_MAX 512     /* a field, with NUL (JOB_ADDR_MAX) */
#define SUPP_REASON_MAX 256  /* reason bytes kept in a suppressed result */
#define SUPP_VALUE_MAX 1024  /* value bytes written by mxsend */

/* The field for an address (kind 'a': "local@domain", at least one '@' with
 * something on both sides) or a domain (kind 'd': written "@" + domain; a
 * leading '@' and one trailing dot are dropped): ASCII lowercased into out
 * (outlen bytes). Returns the length, or -1 with *why set (static text) for
 * an empty, overlong or malformed one, or one holding a control byte, a blank
 * or DEL. Pure. */
int supp_key(char kind, const char *s, size_t len, char *out, size_t outlen, const char **why);

/* One entry's value, parsed. Pointers borrow from the value. */
struct supp_entry {
	uint64_t expires;  /* epoch s, 0 = never */
	uint64_t added;    /* epoch s, 0 = unknown */
	const char *code;  /* "550 5.1.1", "" */
	size_t code_len;
	const char *reason;
	size_t reason_len;
};
/* Parse v[0..len). Never fails: a value that does not have the form is all
 * reason (never expiring). Pure. */
void supp_parse(const char *v, size_t len, struct supp_entry *e);
/* Is the entry in force at now (epoch s)? */
static inline bool supp_active(const struct supp_entry *e, uint64_t now)
{
	return e->expires == 0 || e->expires > now;
}
/* Write a value ("EXPIRES|ADDED|CODE|REASON", code and reason cut so the whole
 * fits in outlen, '|' in code and control bytes in either replaced by ' ').
 * Returns its length. Pure. */
size_t supp_format(char *out, size_t outlen, uint64_t expires, uint64_t added, const char *code,
		   const char *reason);
/* The code of an entry as a result carries it: the number (550, or 0) and an
 * enhanced code ("5.1.1", or "") from "550 5.1.1 ...". Pure. */
void supp_code(const struct supp_entry *e, int *code, char *dsn, size_t dsnlen);

#endif
