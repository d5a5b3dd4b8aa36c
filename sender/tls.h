/* tls.h: one client TLS session over memory BIOs (no sockets here).
 *
 * io_uring hands us bytes, not readiness, so OpenSSL runs over a pair of memory
 * BIOs: conn.c feeds received ciphertext with tls_net_in(); what OpenSSL
 * writes goes straight to conn.c's output buffer (tls_set_output). tls_handshake/read/write return TLS_OK, TLS_AGAIN (feed
 * more input / flush output, then call again) or TLS_ERR (tls_error() says why);
 * TLS_CLOSED when the peer sent close_notify. */
#ifndef SENDER_TLS_H
#define SENDER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tls;
struct tlscache;
struct dns_tlsa_rr;

enum tls_rc { TLS_OK, TLS_AGAIN, TLS_ERR, TLS_CLOSED };

/* What we learned about the peer, for logs, results and policy. */
struct tls_verdict {
	char version[16];   /* "TLSv1.3" */
	char cipher[64];
	bool verified;      /* chain valid and name matches verify_host */
	int verify_err;     /* X509_V_* code, 0 if ok */
	char verify_text[96]; /* "certificate has expired", "Hostname mismatch", ... */
	bool resumed;
	bool have_cert;
	time_t not_after;   /* peer certificate expiry, 0 if unknown */
	char subject_cn[128];
	char san[256];      /* DNS subjectAltNames, comma-joined (truncated) */
	bool dane;          /* the session was made under DANE (tls_new_dane) */
	int dane_depth;     /* -1: no TLSA record matched; 0: the leaf (DANE-EE);
	                     * n: the chain certificate at depth n (DANE-TA) */
	char dane_match[16]; /* the matching record's "usage selector mtype" */
};

/* DANE (RFC 7672): the verification context of a session to one MX host. */
struct tls_dane {
	const char *base;     /* TLSA base domain: SNI and the DANE-TA reference name */
	const char *mx_host;  /* the MX host as the MX record names it: the other DANE-TA name */
	const struct dns_tlsa_rr *rr; /* usable records (DANE-TA/DANE-EE), n of them */
	int n;
	char tag[24];         /* "dane-" + a hash of base and records: sessions and pooled
	                       * connections are shared only within one tag */
};

/* New client session. sni and verify_host are copied (usually both the MX host
 * name). require_verify: abort the handshake unless the chain and name verify.
 * cache_key: where sessions are looked up/stored in tc (NULL: no resumption). */
struct tls *tls_new(struct tlscache *tc, const char *sni, const char *verify_host,
		    bool require_verify, const char *cache_key);
/* The same on a context of the caller's (tls_ctx_new_client; no session
 * cache): sender/redis_tls.c. ctx is referenced, not borrowed. */
struct ssl_ctx_st;
struct tls *tls_new_ctx(struct ssl_ctx_st *ctx, const char *sni, const char *verify_host);
/* A client context of the caller's, not tlscache's: the peer's chain must
 * verify (the handshake fails otherwise) against ca_file (NULL or "": the
 * system store), TLS 1.2 at least; with cert_file, a client certificate
 * (chain, PEM) and its key (key_file; NULL or "": in cert_file; PEM,
 * unencrypted: never a passphrase prompt). NULL with err set (names the
 * file; never key material). Free with tls_ctx_free (NULL: no-op). */
struct ssl_ctx_st *tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
				      char *err, size_t errlen);
void tls_ctx_free(struct ssl_ctx_st *ctx);
/* A thread that ran TLS sessions is about to end: OpenSSL's per-thread state
 * goes now (else a leak report at exit). */
void tls_thread_end(void);
/* A client session authenticated by DANE: the chain must match one of dn's
 * records (OpenSSL's DANE verification: DANE-EE without name checks, DANE-TA
 * with the names dn->base and dn->mx_host), SNI is dn->base. dn is borrowed
 * for the call. When OpenSSL finds none of the records usable the session is
 * encrypted but unauthenticated: tls_dane_usable says so. */
struct tls *tls_new_dane(struct tlscache *tc, const struct tls_dane *dn, const char *cache_key);
/* Records OpenSSL accepted for this session (0: none, or not a DANE session). */
int tls_dane_usable(const struct tls *t);
void tls_free(struct tls *t);

enum tls_rc tls_handshake(struct tls *t);
/* Read decrypted bytes: *got > 0 with TLS_OK. */
enum tls_rc tls_read(struct tls *t, void *buf, size_t n, size_t *got);
/* Encrypt up to n bytes; *done bytes consumed (TLS_OK). */
enum tls_rc tls_write(struct tls *t, const void *buf, size_t n, size_t *done);

/* Give OpenSSL's record buffers back while the session waits (conn.c: after
 * 50 ms without input; idle sessions then hold ~21 KiB instead of ~38 KiB);
 * no-op if data is pending. */
void tls_release_buffers(struct tls *t);
/* Send ciphertext to fn(arg, bytes, n) as OpenSSL produces it (no copy, no
 * buffer of its own). Required before the handshake; conn_starttls does it. */
typedef void tls_out_fn(void *arg, const void *buf, size_t n);
void tls_set_output(struct tls *t, tls_out_fn *fn, void *arg);
/* Ciphertext from the network (all of it is taken). */
void tls_net_in(struct tls *t, const void *buf, size_t n);

void tls_get_verdict(struct tls *t, struct tls_verdict *v);
/* The RFC 8460 4.3 result type for a certificate that did not verify:
 * certificate-host-mismatch, certificate-expired, certificate-not-trusted or
 * validation-failure (also for "no certificate"). */
const char *tls_tlsrpt_result(const struct tls_verdict *v);
/* Last error text (OpenSSL error queue / verify result), "" if none. */
const char *tls_error(const struct tls *t);
/* True when the last failure was certificate verification. */
bool tls_failed_verify(const struct tls *t);

#endif
