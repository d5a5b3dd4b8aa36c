/* tls.c: OpenSSL client over memory BIOs.
 *
 * All SSL_get_error mapping happens in map_rc(); the error queue is cleared
 * before each SSL call and its text kept for the log (Redis tls.c, nginx
 * ngx_ssl_clear_error). Verification policy: the SSL_CTX from tlscache decides
 * whether a bad chain aborts the handshake; the verdict (chain + host name via
 * SSL_set1_host) is computed either way so `may` deliveries can report it. */
#include "sender/tls.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/dns.h"
#include "sender/util.h"
#include "tlscache/tlscache.h"

struct tls {
	SSL *ssl;
	BIO *rbio; /* ciphertext in: we write, SSL reads */
	BIO *wbio; /* ciphertext out: the sink BIO, to out(out_arg, ...) (tls_set_output) */
	tls_out_fn *out;
	void *out_arg;
	bool verify_failed;
	bool fatal;      /* a TLS error ended the session: never resume it */
	bool dane;       /* made by tls_new_dane */
	int dane_usable; /* records OpenSSL took (SSL_dane_tlsa_add > 0) */
	char err[256];
};

/* OpenSSL allocation failure: like xmalloc, not recoverable. */
static void __attribute__((noreturn)) oom(const char *where)
{
	fprintf(stderr, "mxsend: out of memory in %s\n", where);
	abort();
}

/* ---- the output sink: a BIO whose writes go straight to the owner's buffer ---- */

static BIO_METHOD *sink_method;
static pthread_once_t sink_once = PTHREAD_ONCE_INIT;

static int sink_write(BIO *b, const char *p, int n)
{
	struct tls *t = BIO_get_data(b);
	if (t->out == NULL)
		return -1; /* no owner yet: tls_set_output comes before the handshake */
	if (n > 0)
		t->out(t->out_arg, p, (size_t)n);
	return n;
}

static long sink_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* nothing is ever pending here */
}

static int sink_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void sink_init(void)
{
	sink_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mxsend output");
	if (sink_method == NULL || BIO_meth_set_write(sink_method, sink_write) != 1 ||
	    BIO_meth_set_ctrl(sink_method, sink_ctrl) != 1 ||
	    BIO_meth_set_create(sink_method, sink_create) != 1)
		oom("tls sink BIO");
}

void tls_set_output(struct tls *t, tls_out_fn *fn, void *arg)
{
	t->out = fn;
	t->out_arg = arg;
}

/* A client SSL on ctx over the memory BIO pair. */
static struct tls *tls_alloc(SSL_CTX *ctx)
{
	struct tls *t = xcalloc(1, sizeof(*t));
	t->ssl = SSL_new(ctx);
	pthread_once(&sink_once, sink_init);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(sink_method);
	if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL)
		oom("tls_new");
	BIO_set_data(t->wbio, t);
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_connect_state(t->ssl);
	return t;
}

struct tls *tls_new(struct tlscache *tc, const char *sni, const char *verify_host,
		    bool require_verify, const char *cache_key)
{
	struct tls *t = tls_new_ctx(tlscache_ctx(tc, require_verify), sni, verify_host);
	if (cache_key)
		tlscache_attach(tc, t->ssl, cache_key);
	return t;
}

struct tls *tls_new_ctx(struct ssl_ctx_st *ctx, const char *sni, const char *verify_host)
{
	struct tls *t = tls_alloc(ctx);
	if (sni && *sni && SSL_set_tlsext_host_name(t->ssl, sni) != 1)
		oom("tls_new");
	if (verify_host && *verify_host) {
		SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(t->ssl, verify_host) != 1)
			oom("tls_new");
	}
	return t;
}

/* RFC 7672 3: DANE-EE(3) authenticates the key alone, no name checks
 * (DANE_FLAG_NO_DANE_EE_NAMECHECKS: SMTP is what OpenSSL's manual names for
 * it); DANE-TA(2) needs the TLSA base domain or the MX host name in the
 * certificate (3.2.2, 3.2.3), no partial wildcards. Verification fails the
 * handshake (SSL_VERIFY_PEER) unless no record is usable, in which case TLS
 * is still mandatory but unauthenticated (3.1.3). */
struct tls *tls_new_dane(struct tlscache *tc, const struct tls_dane *dn, const char *cache_key)
{
	struct tls *t = tls_alloc(tlscache_dane_ctx(tc));
	t->dane = true;
	if (SSL_set_tlsext_host_name(t->ssl, dn->base) != 1 || SSL_dane_enable(t->ssl, dn->base) <= 0)
		oom("tls_new_dane");
	SSL_dane_set_flags(t->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (dn->mx_host && *dn->mx_host && strcmp(dn->mx_host, dn->base) != 0 &&
	    SSL_add1_host(t->ssl, dn->mx_host) != 1)
		oom("tls_new_dane");
	for (int i = 0; i < dn->n; i++) {
		const struct dns_tlsa_rr *r = &dn->rr[i];
		int rc = SSL_dane_tlsa_add(t->ssl, r->usage, r->selector, r->mtype, r->data, r->len);
		if (rc < 0)
			oom("tls_new_dane");
		t->dane_usable += rc > 0;
	}
	ERR_clear_error(); /* records refused (0) leave their reason behind */
	SSL_set_verify(t->ssl, t->dane_usable > 0 ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (cache_key)
		tlscache_attach(tc, t->ssl, cache_key);
	return t;
}

int tls_dane_usable(const struct tls *t)
{
	return t->dane ? t->dane_usable : 0;
}

void tls_free(struct tls *t)
{
	if (t == NULL)
		return;
	/* SMTP ends with QUIT, not close_notify. Without this mark SSL_free
	 * treats the session as broken and makes it non-resumable: the cached
	 * ticket would be dropped (bench/ saw 14% resumption, 97% with it). */
	if (!t->fatal && SSL_is_init_finished(t->ssl))
		SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(t->ssl); /* frees both BIOs */
	free(t);
}

static void keep_error(struct tls *t, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	long vr = SSL_get_verify_result(t->ssl);
	char buf[160] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED || (vr != X509_V_OK && e == 0)) {
		t->verify_failed = true;
		snprintf(t->err, sizeof(t->err), "%s: certificate verify failed: %s", what,
			 X509_verify_cert_error_string(vr));
	} else {
		snprintf(t->err, sizeof(t->err), "%s: %s", what, e ? buf : "protocol error");
	}
	ERR_clear_error();
}

/* SSL_get_error needs an empty error queue before each call; clearing an
 * empty one still walks its 16 slots (and frees nothing 16 times), so look
 * first: this runs several times per message. */
static void err_reset(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

static enum tls_rc map_rc(struct tls *t, int r, const char *what)
{
	if (r > 0)
		return TLS_OK;
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(t->err, sizeof(t->err), "%s: peer closed TLS", what);
		return TLS_CLOSED;
	default:
		keep_error(t, what);
		t->fatal = true;
		return TLS_ERR;
	}
}

enum tls_rc tls_handshake(struct tls *t)
{
	err_reset();
	return map_rc(t, SSL_do_handshake(t->ssl), "TLS handshake");
}

enum tls_rc tls_read(struct tls *t, void *buf, size_t n, size_t *got)
{
	err_reset();
	*got = 0;
	int r = SSL_read_ex(t->ssl, buf, n, got);
	return map_rc(t, r, "TLS read");
}

enum tls_rc tls_write(struct tls *t, const void *buf, size_t n, size_t *done)
{
	err_reset();
	*done = 0;
	if (n == 0)
		return TLS_OK;
	int r = SSL_write_ex(t->ssl, buf, n, done);
	return map_rc(t, r, "TLS write");
}

/* A drained memory BIO still holds the capacity of its largest burst (the
 * server's certificate chain, a long reply): an empty one costs nothing until
 * used. (Output needs no such care: it goes to the owner, tls_set_output.) */
static BIO *fresh_if_drained(BIO *b)
{
	BUF_MEM *m = NULL;
	/* even a reply leaves ~1 KiB: at 10,000 open sessions that is 10 MB,
	 * against ~0.3 us for the new BIO */
	if (BIO_ctrl_pending(b) != 0 || BIO_get_mem_ptr(b, &m) != 1 || m == NULL || m->max == 0)
		return NULL;
	BIO *nb = BIO_new(BIO_s_mem());
	if (nb == NULL)
		oom("tls_release_buffers");
	return nb;
}

void tls_release_buffers(struct tls *t)
{
	SSL_free_buffers(t->ssl); /* refuses (harmlessly) while data is pending */
	BIO *nb;
	if ((nb = fresh_if_drained(t->rbio)) != NULL) {
		BIO_set_mem_eof_return(nb, -1);
		SSL_set0_rbio(t->ssl, nb); /* frees the old one */
		t->rbio = nb;
	}
}

void tls_net_in(struct tls *t, const void *buf, size_t n)
{
	if (n > 0 && BIO_write(t->rbio, buf, (int)n) != (int)n)
		oom("tls_net_in");
}

void tls_get_verdict(struct tls *t, struct tls_verdict *v)
{
	memset(v, 0, sizeof(*v));
	strlcpy_x(v->version, SSL_get_version(t->ssl), sizeof(v->version));
	const char *c = SSL_get_cipher_name(t->ssl);
	strlcpy_x(v->cipher, c ? c : "", sizeof(v->cipher));
	v->resumed = SSL_session_reused(t->ssl) == 1;
	X509 *peer = SSL_get0_peer_certificate(t->ssl);
	long vr = SSL_get_verify_result(t->ssl);
	if (peer == NULL) {
		/* Under SSL_VERIFY_PEER (level verify) a chain that fails
		 * verification aborts the handshake before OpenSSL records the peer
		 * certificate; the leaf is still first in the chain received. */
		STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
		if (chain != NULL && sk_X509_num(chain) > 0)
			peer = sk_X509_value(chain, 0);
	}
	v->verify_err = (int)vr;
	v->have_cert = peer != NULL;
	v->verified = peer != NULL && vr == X509_V_OK;
	v->dane = t->dane;
	v->dane_depth = -1;
	if (t->dane && t->dane_usable == 0)
		v->verified = false; /* no usable record: encrypted, not authenticated */
	uint8_t du, ds, dm;
	if (t->dane && t->dane_usable > 0 &&
	    (v->dane_depth = SSL_get0_dane_tlsa(t->ssl, &du, &ds, &dm, NULL, NULL)) >= 0)
		snprintf(v->dane_match, sizeof(v->dane_match), "%u %u %u", du, ds, dm);
	strlcpy_x(v->verify_text, peer == NULL ? "no peer certificate" : X509_verify_cert_error_string(vr),
		  sizeof(v->verify_text));
	if (peer) {
		struct tm tm;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1)
			v->not_after = timegm(&tm);
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, v->subject_cn,
					  sizeof(v->subject_cn));
		GENERAL_NAMES *gens = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
		size_t o = 0;
		for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
			if (g->type != GEN_DNS)
				continue;
			const char *n = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
			int len = ASN1_STRING_length(g->d.dNSName);
			if (o + (size_t)len + 2 >= sizeof(v->san))
				break;
			if (o)
				v->san[o++] = ',';
			memcpy(v->san + o, n, (size_t)len);
			o += (size_t)len;
			v->san[o] = '\0';
		}
		GENERAL_NAMES_free(gens);
	}
}

const char *tls_tlsrpt_result(const struct tls_verdict *v)
{
	if (!v->have_cert)
		return "validation-failure";
	switch (v->verify_err) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return "certificate-host-mismatch";
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate-expired";
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		return "certificate-not-trusted";
	default:
		return "validation-failure";
	}
}

const char *tls_error(const struct tls *t)
{
	return t->err;
}

bool tls_failed_verify(const struct tls *t)
{
	return t->verify_failed;
}

/* ---- client contexts of the caller's (sender/redis_tls.c) ---- */

static int no_passphrase(char *buf, int size, int rw, void *u)
{
	(void)buf;
	(void)size;
	(void)rw;
	(void)u;
	return 0; /* never prompt on a terminal: an encrypted key fails to load */
}

/* OpenSSL's error as text: a system error in the queue (a file that is not
 * there), else the first error's reason; the queue is cleared. */
static const char *ossl_err(char *buf, size_t n)
{
	unsigned long e, first = 0, sys = 0;
	while ((e = ERR_get_error()) != 0) {
		if (first == 0)
			first = e;
		if (sys == 0 && ERR_SYSTEM_ERROR(e))
			sys = e;
	}
	const char *why = first ? ERR_reason_error_string(first) : NULL;
	if (sys != 0)
		snprintf(buf, n, "%s", strerror(ERR_GET_REASON(sys)));
	else if (first == 0)
		snprintf(buf, n, "unknown error");
	else if (why != NULL)
		snprintf(buf, n, "%s", why);
	else
		ERR_error_string_n(first, buf, n);
	return buf;
}

struct ssl_ctx_st *tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
				      char *err, size_t errlen)
{
	char e[200];
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		oom("tls_ctx_new_client");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	bool ca = ca_file && ca_file[0];
	if (ca ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
	       : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errlen, "CA file %s: cannot load: %s", ca ? ca_file : "(the system store)",
			 ossl_err(e, sizeof(e)));
		goto fail;
	}
	if (cert_file && cert_file[0]) {
		const char *key = key_file && key_file[0] ? key_file : cert_file;
		if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
			snprintf(err, errlen, "certificate %s: cannot load: %s", cert_file, ossl_err(e, sizeof(e)));
			goto fail;
		}
		int ok = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
		unsigned long ke = ok == 1 ? 0 : ERR_peek_error();
		/* loaded, but not the certificate's key: said below */
		bool other = ke != 0 && ERR_GET_LIB(ke) == ERR_LIB_X509 &&
			     ERR_GET_REASON(ke) == X509_R_KEY_VALUES_MISMATCH;
		if (ok != 1 && !other) {
			snprintf(err, errlen, "key %s: cannot load (an unencrypted PEM key is needed): %s", key,
				 ossl_err(e, sizeof(e)));
			goto fail;
		}
		if (other || SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(err, errlen, "key %s is not the key of certificate %s", key, cert_file);
			goto fail;
		}
	}
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_ctx_free(struct ssl_ctx_st *ctx)
{
	SSL_CTX_free(ctx);
}

void tls_thread_end(void)
{
	OPENSSL_thread_stop();
}
