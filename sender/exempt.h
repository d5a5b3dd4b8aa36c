/* exempt.h: proof that a job was queued by `mxsend tlsrpt` itself, so that
 * `mxsend run` may deliver it exempt from MTA-STS (RFC 8460 3: a report must
 * not be held back by the policy it reports on) and no application job can
 * lower the policy for itself by writing `exempt tlsrpt`.
 *
 * The secret is the one the two commands already share through the config
 * file: the TLSRPT DKIM private key ([tlsrpt] dkim_key). The MAC key is
 * SHA-256 over a label and the key's DER, so the DKIM key itself is never used
 * for anything but DKIM. The job field `exempt_mac` holds the lowercase hex
 * HMAC-SHA256, under that key, of the exemption kind, the normalized sender,
 * the normalized recipients (sorted: the order of `to` does not matter),
 * `expires` and the message bytes, each length-delimited. A retry writes the
 * same fields back, so the proof survives retries; a recipient subset (a
 * partly delivered multi-recipient job) no longer verifies and goes under the
 * normal policy. An application without the key file cannot make one.
 * Pure apart from exempt_key_load reading its file (start-up only). */
#ifndef SENDER_EXEMPT_H
#define SENDER_EXEMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXEMPT_KEY_LEN 32
#define EXEMPT_MAC_HEX 64 /* characters, without the NUL */

/* What the MAC covers. Strings borrowed. */
struct exempt_msg {
	const char *kind;          /* "tlsrpt" */
	const char *from;          /* normalized sender, "" for <> */
	const char *const *rcpts;  /* normalized recipients, any order */
	int nrcpt;
	const char *data;          /* message bytes */
	size_t len;
	bool has_expires;
	uint32_t expires_s;
};

/* Derive the MAC key from the PEM private key in path (RSA or Ed25519, as
 * dkim_key_load takes). 0, or -1 with a message in err. */
int exempt_key_load(const char *path, unsigned char key[EXEMPT_KEY_LEN], char *err, size_t errlen);
/* The MAC of m, as EXEMPT_MAC_HEX lowercase hex characters and a NUL. */
void exempt_mac(const unsigned char key[EXEMPT_KEY_LEN], const struct exempt_msg *m,
		char hex[EXEMPT_MAC_HEX + 1]);
/* Does hex (NULL: no) prove m under key? Constant time in the MAC's bytes. */
bool exempt_mac_ok(const unsigned char key[EXEMPT_KEY_LEN], const struct exempt_msg *m,
		   const char *hex);

#endif
