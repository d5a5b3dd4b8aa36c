/* test_dkim.c: unit tests for sender/dkim.c: the relaxed canonical forms against
 * RFC 6376 3.4.6's example, and signatures that OpenSSL verifies (RSA and Ed25519)
 * over the canonical data rebuilt here from the signature's own h= list. An
 * independent verifier (python3-dkim) checks real reports in tests/integ/t_tlsrpt.sh. */
#include "sender/dkim.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "sender/signer.h"
#include "sender/util.h"
#include "tests/t.h"

static void canon_h(const char *in, const char *want)
{
	char out[512];
	size_t n = dkim_canon_header(in, strlen(in), out);
	out[n] = '\0';
	CHECK_STR(out, want);
}

static void canon_b(const char *in, const char *want)
{
	size_t n;
	char *out = dkim_canon_body(in, strlen(in), &n);
	CHECK_INT(n, strlen(want));
	CHECK_STR(out, want);
	free(out);
}

/* RFC 6376 3.4.6 */
static void t_rfc_example(void)
{
	canon_h("A: X\r\n", "a:X\r\n");
	canon_h("B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n");
	canon_b(" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
}

static void t_canon_edges(void)
{
	canon_h("Subject:   a   b  ", "subject:a b\r\n");      /* no CRLF given */
	canon_h("X-Empty:\r\n", "x-empty:\r\n");
	canon_h("To: a@b.test,\r\n c@d.test\r\n", "to:a@b.test, c@d.test\r\n");
	canon_b("", "");                     /* an empty body stays empty (relaxed) */
	canon_b("\r\n\r\n", "");             /* only empty lines: empty */
	canon_b("abc", "abc\r\n");           /* a CRLF is added */
	canon_b("a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"); /* inner empty lines stay */
	canon_b("a \t\r\n", "a\r\n");
}

static const char *msg_text =
	"From: TLS reports <tlsrpt-noreply@sender.test>\r\n"
	"To: rua@example.test\r\n"
	"Subject: Report Domain: example.test\r\n"
	"  Submitter: sender.test Report-ID: <x@sender.test>\r\n"
	"Date: Tue, 24 Nov 2026 00:00:00 +0000\r\n"
	"X-Not-Signed: 1\r\n"
	"\r\n"
	"body  line \r\n"
	"\r\n"
	"\r\n";

static const char *const hdrs[] = { "from", "to", "subject", "date", "message-id", NULL };

/* tag value of `name` in the signature field (malloc'd, blanks removed) */
static char *tag(const char *sig, const char *name)
{
	char pat[16];
	snprintf(pat, sizeof(pat), " %s=", name);
	const char *p = strstr(sig, pat);
	if (p == NULL) {
		snprintf(pat, sizeof(pat), "\t%s=", name);
		p = strstr(sig, pat);
	}
	if (p == NULL)
		return NULL;
	p += strlen(pat);
	char *v = xmalloc(strlen(p) + 1);
	size_t o = 0;
	for (; *p && *p != ';'; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			v[o++] = *p;
	v[o] = '\0';
	return v;
}

static unsigned char *unb64(const char *s, size_t *n)
{
	size_t len = strlen(s);
	unsigned char *out = xmalloc(len + 1);
	int r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
	if (r < 0) {
		free(out);
		return NULL;
	}
	*n = (size_t)r - (len > 0 && s[len - 1] == '=') - (len > 1 && s[len - 2] == '=');
	return out;
}

/* Verify sig over msg_text with OpenSSL: bh=, then b= over the h= fields. */
static void verify(EVP_PKEY *pub, const char *sig, bool ed)
{
	CHECK(strncmp(sig, "DKIM-Signature: v=1; ", 21) == 0);
	CHECK(strstr(sig, ed ? "a=ed25519-sha256;" : "a=rsa-sha256;") != NULL);
	CHECK(strstr(sig, "c=relaxed/relaxed;") != NULL);
	CHECK(strstr(sig, " l=") == NULL && strstr(sig, "\tl=") == NULL); /* RFC 8460 3 */
	char *h = tag(sig, "h"), *bh = tag(sig, "bh"), *b = tag(sig, "b");
	CHECK_STR(h, "from:to:subject:date"); /* message-id absent, X-Not-Signed not asked */
	char *dom = tag(sig, "d");
	CHECK_STR(dom, "sender.test"); /* lower case */
	free(dom);
	/* bh */
	const char *body = strstr(msg_text, "\r\n\r\n") + 4;
	size_t cbn;
	char *cb = dkim_canon_body(body, strlen(body), &cbn);
	CHECK_STR(cb, "body line\r\n");
	unsigned char d[32];
	SHA256((unsigned char *)cb, cbn, d);
	char d64[64];
	util_base64(d, 32, d64, sizeof(d64));
	CHECK_STR(bh, d64);
	free(cb);
	/* the signed data: the fields, then the signature field with b= emptied */
	char data[4096];
	size_t n = 0;
	n += dkim_canon_header("From: TLS reports <tlsrpt-noreply@sender.test>\r\n", 48, data + n);
	n += dkim_canon_header("To: rua@example.test\r\n", 22, data + n);
	const char *subj = "Subject: Report Domain: example.test\r\n"
			   "  Submitter: sender.test Report-ID: <x@sender.test>\r\n";
	n += dkim_canon_header(subj, strlen(subj), data + n);
	n += dkim_canon_header("Date: Tue, 24 Nov 2026 00:00:00 +0000\r\n", 39, data + n);
	const char *bpos = strstr(sig, "b=");
	while (bpos && bpos[-1] != '\t' && bpos[-1] != ' ')
		bpos = strstr(bpos + 1, "b=");
	CHECK(bpos != NULL);
	n += dkim_canon_header(sig, (size_t)(bpos - sig) + 2, data + n) - 2;
	size_t slen;
	unsigned char *s = unb64(b, &slen);
	CHECK(s != NULL);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;
	if (ed) {
		unsigned char hh[32];
		SHA256((unsigned char *)data, n, hh);
		ok = EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub) == 1 &&
		     EVP_DigestVerify(md, s, slen, hh, 32) == 1;
	} else {
		ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
		     EVP_DigestVerify(md, s, slen, (unsigned char *)data, n) == 1;
	}
	CHECK(ok);
	/* a changed signed field no longer verifies */
	data[0] = 'F';
	EVP_MD_CTX_reset(md);
	if (!ed)
		CHECK(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
		      EVP_DigestVerify(md, s, slen, (unsigned char *)data, n) != 1);
	EVP_MD_CTX_free(md);
	free(s);
	free(h);
	free(bh);
	free(b);
}

static void sign_with(EVP_PKEY *pk, bool ed)
{
	char path[] = "/tmp/test_dkim_XXXXXX", err[256] = "", name[300];
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	CHECK(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(f);
	struct dkim_key *k = dkim_key_load(path, "Sender.TEST", "sel-2026", err, sizeof(err));
	unlink(path);
	CHECK(k != NULL);
	if (k == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	char *sig = dkim_sign(k, msg_text, strlen(msg_text), hdrs, 1795996800, err, sizeof(err));
	CHECK(sig != NULL);
	if (sig != NULL)
		verify(pk, sig, ed);
	char *rec = dkim_dns_record(k, "tlsrpt", name, sizeof(name));
	CHECK_STR(name, "sel-2026._domainkey.sender.test");
	const char *want = ed ? "v=DKIM1; k=ed25519; s=tlsrpt; p=" : "v=DKIM1; k=rsa; s=tlsrpt; p=";
	CHECK(rec != NULL && strncmp(rec, want, strlen(want)) == 0);
	free(rec);
	free(sig);
	dkim_key_free(k);
}

static void t_sign_rsa(void)
{
	EVP_PKEY *pk = EVP_RSA_gen(2048);
	CHECK(pk != NULL);
	sign_with(pk, false);
	EVP_PKEY_free(pk);
}

static void t_sign_ed25519(void)
{
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	CHECK(pk != NULL);
	sign_with(pk, true);
	EVP_PKEY_free(pk);
}

static void t_bad_input(void)
{
	char err[256] = "";
	CHECK(dkim_key_load("/nonexistent/key.pem", "a.test", "s", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "No such file") != NULL);
	CHECK(dkim_key_load("/etc/hostname", "a.test", "s", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "not a PEM private key") != NULL);
	CHECK(dkim_key_load("/etc/hostname", "bad domain", "s", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "signing domain") != NULL);
	CHECK(dkim_key_load("/etc/hostname", "a.test", "", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "selector") != NULL);
	/* a message without From cannot be signed */
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	char path[] = "/tmp/test_dkim_XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	struct dkim_key *k = dkim_key_load(path, "a.test", "s", err, sizeof(err));
	unlink(path);
	CHECK(k != NULL);
	const char *m = "To: x@y.test\r\n\r\nhi\r\n";
	CHECK(k && dkim_sign(k, m, strlen(m), hdrs, 0, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no From") != NULL);
	dkim_key_free(k);
	EVP_PKEY_free(pk);
}

static void from_dom(const char *m, int rc, const char *want)
{
	char d[256] = "";
	CHECK_INT(signer_from_domain(m, strlen(m), d, sizeof(d)), rc);
	if (rc == 0)
		CHECK_STR(d, want);
}

static void t_from_domain(void)
{
	from_dom("From: a@Example.NET\r\n\r\nx", 0, "example.net");
	from_dom("Subject: x\nfrom : \"A, B@c\" <a@News.Example.net.>\n\nFrom: z@y", 0, "news.example.net");
	from_dom("To: x@y\nFROM:\r\n Name\r\n <u@folded.test>\r\n", 0, "folded.test");
	from_dom("To: x@y\r\n\r\nFrom: a@body.test\r\n", -1, ""); /* in the body: not a header */
	from_dom("From: nobody\n\n", -1, "");
	from_dom("From: a@\n\n", -1, "");
	from_dom("", -1, "");
	from_dom("Fromx: a@b.test\n", -1, "");
}

static const struct t_case cases[] = {
	{ "signer_from_domain: case, display names, folding, trailing dot; none in the body", t_from_domain },
	{ "canonical forms of RFC 6376 3.4.6's example", t_rfc_example },
	{ "canonical forms: unfolding, blanks, empty and unterminated bodies", t_canon_edges },
	{ "rsa-sha256 signature verifies with OpenSSL; bh; h= of present fields; no l=", t_sign_rsa },
	{ "ed25519-sha256 signature (RFC 8463) verifies with OpenSSL", t_sign_ed25519 },
	{ "missing key file, non-PEM, bad domain or selector, no From: clear errors", t_bad_input },
};
T_MAIN(cases)
