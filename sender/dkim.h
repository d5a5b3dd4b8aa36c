/* dkim.h: DKIM signatures (RFC 6376) on messages mxsend writes itself: the TLSRPT
 * reports, which RFC 8460 3 says MUST carry a valid DKIM signature by the reporting
 * domain (receivers MUST ignore unsigned ones) and MUST NOT use l=.
 *
 * Keys: RSA (a=rsa-sha256, 1024 bits at least; 2048 recommended) or Ed25519
 * (a=ed25519-sha256, RFC 8463), PEM private keys as `openssl genpkey` writes them.
 * Canonicalisation relaxed/relaxed (survives the header refolding and trailing
 * blanks relays add). Pure apart from dkim_key_load reading its file: start-up only. */
#ifndef MXSEND_DKIM_H
#define MXSEND_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dkim_key;

/* Load the private key in PEM file `path` for signing as d=domain, s=selector.
 * NULL with a message in err (file, key type, size, bad domain or selector). */
struct dkim_key *dkim_key_load(const char *path, const char *domain, const char *selector,
			       char *err, size_t errlen);
void dkim_key_free(struct dkim_key *k);

/* The DNS record that publishes k: its name ("SELECTOR._domainkey.DOMAIN") and TXT
 * value ("v=DKIM1; k=rsa|ed25519; s=SERVICE; p=..."); service "tlsrpt" as RFC 8460 3
 * asks, or NULL for none. Returns a malloc'd value, *name filled (size namelen). */
char *dkim_dns_record(const struct dkim_key *k, const char *service, char *name, size_t namelen);

/* Sign the message msg (len bytes, CRLF line ends, header block then an empty line
 * then the body). Signs the header fields named in `headers` (NULL-terminated, any
 * case) that the message has, "from" always. t = signing time (epoch seconds).
 * Returns the malloc'd "DKIM-Signature: ...\r\n" field to put in front of the
 * message, or NULL with a message in err. */
char *dkim_sign(const struct dkim_key *k, const char *msg, size_t len, const char *const *headers,
		int64_t t, char *err, size_t errlen);

/* What dkim_sign_opts signs: the header fields named in headers (NULL-terminated,
 * any case; "from" must be among them), every instance of each (bottom-up, RFC 6376
 * 5.4.2; the last 50 at most), or only the last with once; the names also in oversign (NULL-terminated
 * or NULL) are listed once more in h= so a receiver sees a field added later as a
 * broken signature (RFC 6376 8.15). simple: c=simple/simple, else relaxed/relaxed.
 * msg must be in wire form (CRLF lines) for simple; relaxed accepts bare LFs. */
struct dkim_sign_opts {
	const char *const *headers;
	const char *const *oversign;
	bool simple;
	bool once;
};
char *dkim_sign_opts(const struct dkim_key *k, const char *msg, size_t len, const struct dkim_sign_opts *o,
		     int64_t t, char *err, size_t errlen);
/* The signing domain and selector of k (lowercase domain). */
const char *dkim_key_domain(const struct dkim_key *k);
const char *dkim_key_selector(const struct dkim_key *k);

/* The relaxed canonical forms (RFC 6376 3.4.2, 3.4.4), exposed for the tests.
 * dkim_canon_header: one header field (name, colon, value with its folding, with or
 * without the final CRLF) -> "name:value\r\n" appended to out (at least n + 3 bytes
 * free); returns the bytes written. dkim_canon_body: returns a malloc'd canonical
 * body, *outlen bytes (an empty body stays empty). */
size_t dkim_canon_header(const char *field, size_t n, char *out);
char *dkim_canon_body(const char *body, size_t n, size_t *outlen);

#endif
