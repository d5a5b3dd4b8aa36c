/* dkim.c: DKIM signing (RFC 6376; Ed25519: RFC 8463) for the messages mxsend writes
 * itself (dkim.h). relaxed/relaxed, SHA-256, no l= (RFC 8460 3 forbids it). */
#define _GNU_SOURCE /* memrchr */
#include "sender/dkim.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "sender/util.h"

/* Instances of one header name signed, the bottom-most (a hostile message with
 * thousands of To: fields must not make an h= of thousands of names). */
#define DKIM_MAX_INSTANCES 50


struct dkim_key {
	EVP_PKEY *pkey;
	bool ed25519;
	char domain[254];
	char selector[64];
};

static char lc(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* A domain or selector: letters, digits, '-', '_', '.' (not at either end). */
static bool good_name(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n >= max || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

struct dkim_key *dkim_key_load(const char *path, const char *domain, const char *selector,
			       char *err, size_t errlen)
{
	if (domain == NULL || !good_name(domain, sizeof(((struct dkim_key *)NULL)->domain))) {
		snprintf(err, errlen, "DKIM: bad signing domain \"%s\"", domain ? domain : "");
		return NULL;
	}
	if (selector == NULL || !good_name(selector, sizeof(((struct dkim_key *)NULL)->selector))) {
		snprintf(err, errlen, "DKIM: bad or missing selector \"%s\"", selector ? selector : "");
		return NULL;
	}
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "DKIM key %s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (pkey == NULL) {
		snprintf(err, errlen, "DKIM key %s: not a PEM private key", path);
		return NULL;
	}
	int id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pkey) < 1024) {
		snprintf(err, errlen, "DKIM key %s: RSA key of %d bits (1024 at least, RFC 8301)", path,
			 EVP_PKEY_get_bits(pkey));
		EVP_PKEY_free(pkey);
		return NULL;
	}
	if (id != EVP_PKEY_RSA && id != EVP_PKEY_ED25519) {
		snprintf(err, errlen, "DKIM key %s: not an RSA or Ed25519 key", path);
		EVP_PKEY_free(pkey);
		return NULL;
	}
	struct dkim_key *k = xcalloc(1, sizeof(*k));
	k->pkey = pkey;
	k->ed25519 = id == EVP_PKEY_ED25519;
	for (size_t i = 0; domain[i]; i++)
		k->domain[i] = lc(domain[i]);
	strlcpy_x(k->selector, selector, sizeof(k->selector));
	return k;
}

void dkim_key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

/* malloc'd base64 (one line) of n bytes */
static char *b64(const void *in, size_t n)
{
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *out = xmalloc(cap);
	util_base64(in, n, out, cap);
	return out;
}

char *dkim_dns_record(const struct dkim_key *k, const char *service, char *name, size_t namelen)
{
	unsigned char raw[64], *der = NULL;
	size_t n = sizeof(raw);
	char *p;
	snprintf(name, namelen, "%s._domainkey.%s", k->selector, k->domain);
	if (k->ed25519) { /* RFC 8463 4.2: the bare 32-byte public key */
		if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &n) != 1)
			return NULL;
		p = b64(raw, n);
	} else { /* RFC 6376 3.6.1: SubjectPublicKeyInfo, DER */
		int dn = i2d_PUBKEY(k->pkey, &der);
		if (dn <= 0)
			return NULL;
		p = b64(der, (size_t)dn);
		OPENSSL_free(der);
	}
	size_t cap = strlen(p) + 64;
	char *rec = xmalloc(cap);
	snprintf(rec, cap, "v=DKIM1; k=%s;%s%s%s p=%s", k->ed25519 ? "ed25519" : "rsa",
		 service ? " s=" : "", service ? service : "", service ? ";" : "", p);
	free(p);
	return rec;
}

static bool wsp(char c)
{
	return c == ' ' || c == '\t';
}

size_t dkim_canon_header(const char *field, size_t n, char *out)
{
	size_t o = 0, i = 0;
	while (i < n && field[i] != ':') /* the name, lower case, without blanks before ':' */
		i++;
	size_t nend = i;
	while (nend > 0 && wsp(field[nend - 1]))
		nend--;
	for (size_t j = 0; j < nend; j++)
		out[o++] = lc(field[j]);
	out[o++] = ':';
	bool blank = false, any = false;
	for (i++; i < n; i++) { /* unfold, one SP per run of blanks, none at either end */
		char c = field[i];
		if (c == '\r' || c == '\n')
			continue;
		if (wsp(c)) {
			blank = true;
			continue;
		}
		if (blank && any)
			out[o++] = ' ';
		blank = false;
		any = true;
		out[o++] = c;
	}
	out[o++] = '\r';
	out[o++] = '\n';
	return o;
}

/* One body line [p, p + n) (without its LF), relaxed: no CR before the LF, no
 * blanks at its end, one SP per run of blanks inside; then CRLF. */
static size_t canon_line(const char *p, size_t n, char *out)
{
	size_t o = 0;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	while (n > 0 && wsp(p[n - 1]))
		n--;
	bool blank = false;
	for (size_t j = 0; j < n; j++) {
		if (wsp(p[j])) {
			blank = true;
			continue;
		}
		if (blank)
			out[o++] = ' ';
		blank = false;
		out[o++] = p[j];
	}
	out[o++] = '\r';
	out[o++] = '\n';
	return o;
}

/* May relaxed canonicalisation change byte k of b? A TAB, a SP before a blank
 * or a line end, an LF without its CR (conservative: a SP before a bare CR). */
static bool body_changes(const char *b, size_t n, size_t k)
{
	switch (b[k]) {
	case '\t':
		return true;
	case ' ':
		return k + 1 == n || b[k + 1] == ' ' || b[k + 1] == '\r' || b[k + 1] == '\n';
	case '\n':
		return k == 0 || b[k - 1] != '\r';
	default:
		return false;
	}
}

/* The first byte at or after i that canonicalisation may change, or n. Most
 * lines of most messages are already canonical: 16 bytes a step (SSE2). */
static size_t body_next_change(const char *b, size_t n, size_t i)
{
	if (i == 0 && n > 0) {
		if (body_changes(b, n, 0))
			return 0;
		i = 1;
	}
#if defined(__SSE2__)
	const __m128i sp = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t'), cr = _mm_set1_epi8('\r'),
		      lf = _mm_set1_epi8('\n');
	for (; i + 17 <= n; i += 16) { /* b[i - 1 .. i + 16] readable */
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
		__m128i nx = _mm_loadu_si128((const __m128i *)(const void *)(b + i + 1));
		__m128i pv = _mm_loadu_si128((const __m128i *)(const void *)(b + i - 1));
		__m128i end = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(nx, sp), _mm_cmpeq_epi8(nx, cr)),
					   _mm_cmpeq_epi8(nx, lf));
		__m128i bad = _mm_or_si128(_mm_cmpeq_epi8(v, tab), _mm_and_si128(_mm_cmpeq_epi8(v, sp), end));
		bad = _mm_or_si128(bad, _mm_andnot_si128(_mm_cmpeq_epi8(pv, cr), _mm_cmpeq_epi8(v, lf)));
		unsigned m = (unsigned)_mm_movemask_epi8(bad);
		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
	}
#endif
	for (; i < n; i++)
		if (body_changes(b, n, i))
			return i;
	return n;
}

/* Where the canonical body goes, a piece at a time: a buffer or a hash. Empty
 * lines wait in `empty` until a line with text follows (none at the end). */
struct body_sink {
	char *out; /* a buffer large enough (dkim_canon_body), or NULL: */
	size_t o;
	EVP_MD_CTX *md; /* ... fed to this digest */
	size_t empty;
};

static void sink_put(struct body_sink *k, const char *p, size_t n)
{
	if (k->out != NULL) {
		memcpy(k->out + k->o, p, n);
		k->o += n;
	} else {
		EVP_DigestUpdate(k->md, p, n);
	}
}

/* Canonical CRLF lines [p, p + n) (n > 0): the empty ones at its end wait. */
static void sink_lines(struct body_sink *k, const char *p, size_t n)
{
	static const char crlfs[] = "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";
	size_t t = n, tail = 0;
	while (t >= 2 && p[t - 2] == '\r' && p[t - 1] == '\n' && (t == 2 || p[t - 3] == '\n')) {
		t -= 2;
		tail++;
	}
	if (t > 0) {
		for (; k->empty > 0; k->empty -= k->empty < 8 ? k->empty : 8)
			sink_put(k, crlfs, 2 * (k->empty < 8 ? k->empty : 8));
		sink_put(k, p, t);
	}
	k->empty += tail;
}

/* The relaxed body (RFC 6376 3.4.4) of [body, body + n) into k. */
static void canon_body_to(const char *body, size_t n, struct body_sink *k)
{
	char small[1024];
	size_t i = 0;
	while (i < n) {
		/* whole lines before the next change are canonical already */
		size_t c = body_next_change(body, n, i);
		const char *nl = c > i ? memrchr(body + i, '\n', c - i) : NULL;
		if (nl != NULL) {
			size_t ls = (size_t)(nl - body) + 1;
			sink_lines(k, body + i, ls - i);
			i = ls;
		}
		if (i >= n)
			break;
		/* the line holding the change (or the last, without LF) */
		const char *e = memchr(body + i, '\n', n - i);
		size_t end = e ? (size_t)(e - body) : n;
		char *line = end - i + 2 <= sizeof(small) ? small : xmalloc(end - i + 2);
		sink_lines(k, line, canon_line(body + i, end - i, line));
		if (line != small)
			free(line);
		i = e ? end + 1 : n;
	}
}

char *dkim_canon_body(const char *body, size_t n, size_t *outlen)
{
	/* A line grows by at most one byte (a bare LF becomes CRLF), the last one
	 * by two (a CRLF where it had none): n + LFs + 2 bytes, and the NUL. */
	size_t lfs = 0;
	for (const char *q = body; n > 0 && (q = memchr(q, '\n', n - (size_t)(q - body))) != NULL; q++)
		lfs++;
	struct body_sink k = { .out = xmalloc(n + lfs + 3) };
	canon_body_to(body, n, &k);
	k.out[k.o] = '\0';
	*outlen = k.o;
	return k.out;
}

/* bh= of the relaxed body, hashed as it is canonicalised (no copy of it). */
static int canon_body_hash(const char *body, size_t n, unsigned char bh[SHA256_DIGEST_LENGTH])
{
	struct body_sink k = { .md = EVP_MD_CTX_new() };
	unsigned len = 0;
	int ok = k.md != NULL && EVP_DigestInit_ex(k.md, EVP_sha256(), NULL) == 1;
	if (ok) {
		canon_body_to(body, n, &k);
		ok = EVP_DigestFinal_ex(k.md, bh, &len) == 1 && len == SHA256_DIGEST_LENGTH;
	}
	EVP_MD_CTX_free(k.md);
	return ok ? 0 : -1;
}

struct field {
	const char *p;
	size_t n;    /* with its CRLF */
	size_t nlen; /* name length */
	bool used;
};

/* Split the header block [h, h + n) into fields (a field's continuation lines
 * start with a blank). Returns how many, at most max. */
static int split_fields(const char *h, size_t n, struct field *f, int max)
{
	int nf = 0;
	size_t i = 0;
	while (i < n && nf < max) {
		size_t s = i;
		do { /* to the end of this line, then on while the next one continues it */
			while (i < n && h[i] != '\n')
				i++;
			if (i < n)
				i++;
		} while (i < n && wsp(h[i]));
		size_t nl = 0;
		while (s + nl < i && h[s + nl] != ':')
			nl++;
		if (s + nl < i) /* a line without a colon is not a field */
			f[nf++] = (struct field){ .p = h + s, .n = i - s, .nlen = nl };
	}
	return nf;
}

/* The last unused field named name above f[*at] (RFC 6376 5.4.2: instances are
 * signed bottom-up); *at becomes its index, so the next call goes on upwards
 * (one pass over the fields per name, however many instances). */
static struct field *pick_at(struct field *f, int *at, const char *name)
{
	size_t len = strlen(name);
	for (int i = *at - 1; i >= 0; i--) {
		size_t nl = f[i].nlen;
		while (nl > 0 && wsp(f[i].p[nl - 1]))
			nl--;
		if (!f[i].used && nl == len && strncasecmp(f[i].p, name, len) == 0) {
			*at = i;
			return &f[i];
		}
	}
	*at = 0;
	return NULL;
}

static bool sign_bytes(const struct dkim_key *k, const unsigned char *data, size_t n,
		       unsigned char *sig, size_t *siglen)
{
	unsigned char hash[SHA256_DIGEST_LENGTH];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md != NULL;
	if (ok && k->ed25519) { /* RFC 8463 3: PureEdDSA over the SHA-256 hash */
		SHA256(data, n, hash);
		ok = EVP_DigestSignInit(md, NULL, NULL, NULL, k->pkey) == 1 &&
		     EVP_DigestSign(md, sig, siglen, hash, sizeof(hash)) == 1;
	} else if (ok) { /* RSASSA-PKCS1-v1_5 with SHA-256 */
		ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
		     EVP_DigestSign(md, sig, siglen, data, n) == 1;
	}
	EVP_MD_CTX_free(md);
	return ok;
}

/* simple body (RFC 6376 3.4.3): the CRLF lines as they are, empty lines at the
 * end removed, "\r\n" for an empty body. body is in wire form (CRLF lines). */
static char *canon_body_simple(const char *body, size_t n, size_t *outlen)
{
	while (n >= 4 && memcmp(body + n - 4, "\r\n\r\n", 4) == 0)
		n -= 2;
	if (n == 2 && memcmp(body, "\r\n", 2) == 0)
		n = 0;
	bool crlf = n >= 2 && body[n - 2] == '\r' && body[n - 1] == '\n';
	char *out = xmalloc(n + 3);
	memcpy(out, body, n);
	if (!crlf) {
		out[n++] = '\r';
		out[n++] = '\n';
	}
	out[n] = '\0';
	*outlen = n;
	return out;
}

char *dkim_sign(const struct dkim_key *k, const char *msg, size_t len, const char *const *headers,
		int64_t t, char *err, size_t errlen)
{
	struct dkim_sign_opts o = { .headers = headers, .once = true };
	return dkim_sign_opts(k, msg, len, &o, t, err, errlen);
}

static bool listed(const char *const *names, const char *name)
{
	for (int i = 0; names != NULL && names[i] != NULL; i++)
		if (strcasecmp(names[i], name) == 0)
			return true;
	return false;
}

/* h= gets name, ":"-separated, folded before it would pass ~72 columns. */
static void h_add(char **h, size_t *hl, size_t *cap, size_t *col, const char *name)
{
	size_t n = strlen(name);
	if (*hl + n + 8 > *cap) {
		*cap = (*cap + n + 8) * 2;
		*h = xrealloc(*h, *cap);
	}
	if (*hl > 0) {
		(*h)[(*hl)++] = ':';
		(*col)++;
		if (*col + n > 72) {
			memcpy(*h + *hl, "\r\n\t", 3);
			*hl += 3;
			*col = 1;
		}
	}
	for (size_t i = 0; i < n; i++)
		(*h)[(*hl)++] = lc(name[i]);
	*col += n;
	(*h)[*hl] = '\0';
}

char *dkim_sign_opts(const struct dkim_key *k, const char *msg, size_t len, const struct dkim_sign_opts *o,
		     int64_t t, char *err, size_t errlen)
{
	const char *const *headers = o->headers;
	/* header block (with its last CRLF) and body */
	size_t hlen = len, boff = len;
	for (size_t i = 0; i + 3 < len; i++)
		if (msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' && msg[i + 3] == '\n') {
			hlen = i + 2;
			boff = i + 4;
			break;
		}
	int maxf = 1;
	for (size_t i = 0; i < hlen; i++)
		maxf += msg[i] == '\n';
	struct field *f = xcalloc((size_t)maxf, sizeof(*f));
	int nf = split_fields(msg, hlen, f, maxf);

	/* bh= */
	unsigned char bh[SHA256_DIGEST_LENGTH];
	if (o->simple) {
		size_t cblen;
		char *cb = canon_body_simple(msg + boff, len - boff, &cblen);
		SHA256((const unsigned char *)cb, cblen, bh);
		free(cb);
	} else if (canon_body_hash(msg + boff, len - boff, bh) != 0) {
		snprintf(err, errlen, "DKIM: SHA-256 failed");
		free(f);
		return NULL;
	}
	char *bh64 = b64(bh, sizeof(bh));

	/* the signed fields, canonical, and h= (every instance, bottom-up, unless
	 * o->once; an oversigned name once more: a field added later breaks it) */
	char *data = xmalloc(hlen + 3 * (size_t)maxf + 16), *hlist = xmalloc(256);
	size_t dn = 0, hl = 0, hcap = 256, col = 4;
	hlist[0] = '\0';
	bool from = false;
	for (int i = 0; headers[i] != NULL; i++) {
		struct field *x;
		bool any = false;
		int at = nf, count = 0;
		while (count++ < DKIM_MAX_INSTANCES && (x = pick_at(f, &at, headers[i])) != NULL) {
			x->used = true;
			any = true;
			if (o->simple) {
				memcpy(data + dn, x->p, x->n);
				dn += x->n;
			} else {
				dn += dkim_canon_header(x->p, x->n, data + dn);
			}
			h_add(&hlist, &hl, &hcap, &col, headers[i]);
			from |= strcasecmp(headers[i], "from") == 0;
			if (o->once)
				break;
		}
		/* oversigned: once more, unless instances above the cap remain (a
		 * verifier would take the next one: the signature would break) */
		int at2 = at;
		bool more = count > DKIM_MAX_INSTANCES && pick_at(f, &at2, headers[i]) != NULL;
		if ((any || !o->once) && !more && listed(o->oversign, headers[i]))
			h_add(&hlist, &hl, &hcap, &col, headers[i]);
	}
	free(f);
	if (!from) {
		snprintf(err, errlen, "DKIM: the message has no From field to sign");
		free(bh64);
		free(data);
		free(hlist);
		return NULL;
	}

	/* the DKIM-Signature field with an empty b=, hashed last without its CRLF */
	size_t cap = hl + strlen(bh64) + 1024;
	char *sig = xmalloc(cap);
	int sl = snprintf(sig, cap,
			  "DKIM-Signature: v=1; a=%s; c=%s; d=%s; s=%s;\r\n"
			  "\tt=%lld; h=%s;\r\n\tbh=%s;\r\n\tb=",
			  k->ed25519 ? "ed25519-sha256" : "rsa-sha256",
			  o->simple ? "simple/simple" : "relaxed/relaxed", k->domain, k->selector,
			  (long long)t, hlist, bh64);
	free(bh64);
	free(hlist);
	data = xrealloc(data, dn + (size_t)sl + 4);
	if (o->simple) { /* as it is, without the CRLF it does not have yet */
		memcpy(data + dn, sig, (size_t)sl);
		dn += (size_t)sl;
	} else {
		dn += dkim_canon_header(sig, (size_t)sl, data + dn) - 2;
	}

	unsigned char s[1024];
	size_t slen = (size_t)EVP_PKEY_get_size(k->pkey);
	if (slen > sizeof(s) || !sign_bytes(k, (const unsigned char *)data, dn, s, &slen)) {
		snprintf(err, errlen, "DKIM: signing failed");
		free(data);
		free(sig);
		return NULL;
	}
	free(data);
	char *b = b64(s, slen);
	size_t blen = strlen(b), w = (size_t)sl;
	sig = xrealloc(sig, w + blen + blen / 72 * 3 + 8);
	for (size_t i = 0; i < blen; i += 72) { /* folded; blanks in b= are ignored (3.5) */
		size_t c = blen - i < 72 ? blen - i : 72;
		if (i > 0) {
			memcpy(sig + w, "\r\n\t", 3);
			w += 3;
		}
		memcpy(sig + w, b + i, c);
		w += c;
	}
	memcpy(sig + w, "\r\n", 3);
	free(b);
	return sig;
}

const char *dkim_key_domain(const struct dkim_key *k)
{
	return k->domain;
}

const char *dkim_key_selector(const struct dkim_key *k)
{
	return k->selector;
}
