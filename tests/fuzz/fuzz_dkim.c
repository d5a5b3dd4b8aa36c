/* fuzz_dkim.c: libFuzzer target for sender/dkim.c: the relaxed
 * canonicalisations (dkim_canon_header, dkim_canon_body, RFC 6376 3.4.2 and
 * 3.4.4) and dkim_sign's split of a message into header fields and body. Not
 * built by default: `make fuzz` builds and runs it (build/fuzz/fuzz_dkim,
 * corpus build/fuzz/corpus/dkim seeded from tests/fuzz/seeds/dkim/); `make
 * test` replays the seeds (replay.c).
 *
 * The input is a message (header fields, an empty line, the body); its first
 * line is also a header field on its own. Signing uses an Ed25519 key made
 * once per process (deterministic signatures: signing twice must give the same
 * field). Output buffers are exactly as large as dkim.h asks, so a write past
 * one is an ASan report. Besides the sanitizers, the target checks that the
 * canonical forms are canonical (idempotent, CRLF lines, one SP per run of
 * blanks, no blanks at line ends, no empty lines at the end of the body) and
 * aborts if not, and that the body's agrees with a byte-at-a-time oracle. The signer (sender/signer.h) gets the same input as a job's
 * message, with a [dkim] key for the From: domain found in it (relaxed and
 * simple in turn, every instance signed, oversigned): its output must be the
 * wire form (no bare CR or LF) starting with the DKIM-Signature field. */
#define _GNU_SOURCE /* memfd_create */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sender/config.h"
#include "sender/msg.h"
#include "sender/dkim.h"
#include "sender/signer.h"
#include "tests/fuzz/fuzz.h"

static const char *const hdrs[] = { "From", "To", "Subject", "Date", "Message-ID", "from", NULL };

/* Loaded once: an Ed25519 key written as PEM to a memfd, read back by
 * dkim_key_load as the program reads its key file. */
static struct dkim_key *key(void)
{
	static struct dkim_key *k;
	if (k != NULL)
		return k;
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	int fd = memfd_create("dkim-key", 0);
	FUZZ_NEED(pk != NULL && fd >= 0);
	FILE *f = fdopen(dup(fd), "w");
	FUZZ_NEED(f != NULL && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(f);
	EVP_PKEY_free(pk);
	char path[64], err[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	k = dkim_key_load(path, "example.com", "fuzz", err, sizeof(err));
	close(fd);
	FUZZ_NEED(k != NULL);
	return k;
}

static bool wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Lines end in CRLF; blanks come one SP at a time, never before a CRLF. */
static void canonical_lines(const char *s, size_t n)
{
	FUZZ_NEED(n == 0 || (n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n'));
	for (size_t i = 0; i < n; i++) {
		FUZZ_NEED(s[i] != '\t');
		if (s[i] == '\n')
			FUZZ_NEED(i > 0 && s[i - 1] == '\r');
		if (s[i] == ' ') /* (a CR before the CRLF is data, not a blank) */
			FUZZ_NEED(i + 2 < n && s[i + 1] != ' ' && memcmp(s + i + 1, "\r\n", 2) != 0);
	}
}

/* RFC 6376 3.4.4 word for word, a line at a time and a byte at a time: the
 * oracle dkim_canon_body (which copies canonical lines whole) must agree with. */
static char *canon_body_ref(const char *b, size_t n, size_t *outlen)
{
	char *out = malloc(2 * n + 3);
	FUZZ_NEED(out != NULL);
	size_t o = 0, empty = 0, i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && b[e] != '\n')
			e++;
		size_t le = e;
		if (le > i && b[le - 1] == '\r')
			le--;
		while (le > i && wsp(b[le - 1]))
			le--;
		if (le == i) {
			empty++;
		} else {
			for (; empty > 0; empty--) {
				out[o++] = '\r';
				out[o++] = '\n';
			}
			bool blank = false;
			for (size_t j = i; j < le; j++) {
				if (wsp(b[j])) {
					blank = true;
					continue;
				}
				if (blank)
					out[o++] = ' ';
				blank = false;
				out[o++] = b[j];
			}
			out[o++] = '\r';
			out[o++] = '\n';
		}
		i = e < n ? e + 1 : n;
	}
	*outlen = o;
	return out;
}

static void check_body(const char *b, size_t n)
{
	size_t cl, cl2, rl;
	char *c = dkim_canon_body(b, n, &cl);
	FUZZ_NEED(c != NULL && c[cl] == '\0');
	char *ref = canon_body_ref(b, n, &rl);
	FUZZ_NEED(rl == cl && memcmp(ref, c, cl) == 0);
	free(ref);
	canonical_lines(c, cl);
	FUZZ_NEED(cl < 4 || memcmp(c + cl - 4, "\r\n\r\n", 4) != 0); /* no empty last line */
	FUZZ_NEED(cl != 2 || c[0] != '\r'); /* an empty line alone is no body */
	char *again = dkim_canon_body(c, cl, &cl2);
	FUZZ_NEED(cl2 == cl && memcmp(again, c, cl) == 0);
	free(again);
	free(c);
}

static void check_header(const char *f, size_t n)
{
	char *out = malloc(n + 3), *again = malloc(n + 3);
	FUZZ_NEED(out != NULL && again != NULL);
	size_t o = dkim_canon_header(f, n, out);
	FUZZ_NEED(o >= 3 && o <= n + 3 && out[o - 2] == '\r' && out[o - 1] == '\n');
	const char *colon = memchr(out, ':', o);
	FUZZ_NEED(colon != NULL);
	size_t nl = (size_t)(colon - out);
	for (size_t i = 0; i < nl; i++)
		FUZZ_NEED(!(out[i] >= 'A' && out[i] <= 'Z'));
	FUZZ_NEED(nl == 0 || !wsp(out[nl - 1]));
	const char *v = colon + 1, *ve = out + o - 2;
	FUZZ_NEED(v == ve || (!wsp(v[0]) && !wsp(ve[-1])));
	for (const char *p = v; p < ve; p++)
		FUZZ_NEED(*p != '\r' && *p != '\n' && *p != '\t' && (*p != ' ' || p[1] != ' '));
	size_t o2 = dkim_canon_header(out, o - 2, again); /* without its CRLF */
	FUZZ_NEED(o2 == o && memcmp(again, out, o) == 0);
	free(again);
	free(out);
}

static void check_sign(const char *m, size_t n)
{
	char err[256] = "", err2[256] = "";
	char *s1 = dkim_sign(key(), m, n, hdrs, 1700000000, err, sizeof(err));
	char *s2 = dkim_sign(key(), m, n, hdrs, 1700000000, err2, sizeof(err2));
	FUZZ_NEED((s1 == NULL) == (s2 == NULL));
	if (s1 == NULL) {
		FUZZ_NEED(err[0] != '\0' && strcmp(err, err2) == 0);
		return;
	}
	size_t l = strlen(s1);
	FUZZ_NEED(strcmp(s1, s2) == 0);
	const char *head = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;";
	FUZZ_NEED(strncmp(s1, head, strlen(head)) == 0);
	FUZZ_NEED(l > 2 && s1[l - 2] == '\r' && s1[l - 1] == '\n');
	FUZZ_NEED(strstr(s1, "from") != NULL && strstr(s1, "bh=") != NULL);
	free(s1);
	free(s2);
}

/* signer_sign as `run` calls it, the key configured for the From: domain. */
static void check_signer(const char *m, size_t n, bool simple)
{
	char dom[256], res[SIGNER_RESULT_MAX], err[300];
	if (signer_from_domain(m, n, dom, sizeof(dom)) != 0)
		return;
	FUZZ_NEED(dom[0] != '\0' && strlen(dom) < sizeof(dom));
	char *hdr[] = { "from", "to", "subject", "date", NULL }, *over[] = { "from", "subject", NULL };
	struct dkim_conf dc = { .domain = dom, .canon = simple, .headers = hdr, .oversign = over, .key = key() };
	struct config c = { .dkims = &dc, .n_dkims = 1 };
	struct signed_msg sm;
	int rc = signer_sign(&c, m, n, NULL, 1700000000, &sm, res, err, sizeof(err));
	if (rc != 0) {
		FUZZ_NEED(sm.pre == NULL && sm.wire.data == NULL && err[0] != '\0' && strcmp(res, "none") == 0);
		return;
	}
	if (sm.pre == NULL) { /* the domain is not one dkim_key_load takes: no key, unsigned */
		FUZZ_NEED(sm.wire.data == NULL && strcmp(res, "none") == 0);
		return;
	}
	/* what goes on the wire: the signatures, then the message as
	 * msg_wire_prepare makes it (m itself when it already was the wire form) */
	struct msg_wire w;
	msg_wire_prepare(m, n, false, &w);
	const struct msg_wire *sw = &sm.wire;
	FUZZ_NEED(sw->pre == sm.pre && sw->borrowed == w.borrowed && sw->len == w.len &&
		  memcmp(sw->data, w.data, w.len) == 0 && (!w.borrowed || sw->data == m));
	FUZZ_NEED(sw->has_8bit == w.has_8bit && sw->hdr_utf8 == w.hdr_utf8 &&
		  sw->longest_line >= w.longest_line);
	msg_wire_fini(&w);
	size_t ol = msg_wire_len(sw);
	char *out = malloc(ol + 1);
	FUZZ_NEED(out != NULL);
	memcpy(out, sw->pre, sw->pre_len);
	memcpy(out + sw->pre_len, sw->data, sw->len);
	FUZZ_NEED(strncmp(out, "DKIM-Signature: v=1; a=ed25519-sha256; c=", 41) == 0);
	FUZZ_NEED(sw->pre_len >= 2 && memcmp(sw->pre + sw->pre_len - 2, "\r\n", 2) == 0);
	FUZZ_NEED(strncmp(res, "d=", 2) == 0 && ol >= 2 && memcmp(out + ol - 2, "\r\n", 2) == 0);
	for (size_t i = 0; i < ol; i++)
		FUZZ_NEED((out[i] != '\n' || (i > 0 && out[i - 1] == '\r')) &&
			  (out[i] != '\r' || (i + 1 < ol && out[i + 1] == '\n')));
	free(out);
	signed_msg_free(&sm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* exact copies (no NUL after them): a read past the end is an ASan report */
	char *m = malloc(size ? size : 1);
	FUZZ_NEED(m != NULL);
	if (size > 0)
		memcpy(m, data, size);
	check_body(m, size);
	const char *lf = size > 0 ? memchr(m, '\n', size) : NULL;
	check_header(m, lf ? (size_t)(lf - m) + 1 : size);
	check_sign(m, size);
	check_signer(m, size, false);
	check_signer(m, size, true);
	free(m);
	return 0;
}
