/* tlscache.h: what mxsend remembers about TLS peers.
 *
 * - Client SSL_CTXs built once at start-up: one that requires a verified chain
 *   (TLS_LEVEL verify) and one that only records the verdict (may/encrypt).
 * - A bounded LRU cache of client sessions (TLS 1.3 tickets and TLS 1.2
 *   sessions) keyed by (MX host, port, SNI, verification context): a session
 *   made under the non-verifying context is never offered to a verifying
 *   connection because the context is part of the key. Entries expire with the
 *   session's own lifetime.
 * - A verified-chain cache: a full handshake that presents exactly the chain
 *   verified for the same name before skips X509_verify_cert (tlscache.c).
 * Not thread-safe: one tlscache per worker thread (SSL_CTXs may be shared
 * read-only). Knows nothing of sockets or the loop. */
#ifndef TLSCACHE_TLSCACHE_H
#define TLSCACHE_TLSCACHE_H

#include <stdbool.h>
#include <stddef.h>

struct ssl_ctx_st;
struct ssl_st;
struct ssl_session_st;
struct tlscache;

struct tlscache_opts {
	const char *ca_file;   /* PEM bundle; NULL or "" = the system store */
	int min_version;       /* 12 or 13 */
	unsigned max_sessions; /* LRU bound; 0 disables the session cache */
	unsigned verify_cache; /* verified-chain cache slots (rounded up to a power of
				* two); 0 verifies every chain from scratch */
};

struct tlscache_stats {
	unsigned long hits, misses, stores, evictions, entries;
	/* Certificate chains taken from the verified-chain cache / verified by
	 * X509_verify_cert (every chain when the cache is off). */
	unsigned long verify_hits, verify_misses;
};

/* NULL with a message in err on failure (unreadable CA file, ...). */
struct tlscache *tlscache_new(const struct tlscache_opts *o, char *err, size_t errlen);
void tlscache_free(struct tlscache *tc);

/* The client context for a verification requirement. Borrowed from tc. */
struct ssl_ctx_st *tlscache_ctx(struct tlscache *tc, bool verify);

/* The client context for DANE (RFC 7672): SSL_CTX_dane_enable'd, OpenSSL's
 * own X509_verify_cert (no verified-chain cache: its key has no TLSA records
 * in it), verification mode set per SSL. Borrowed from tc. */
struct ssl_ctx_st *tlscache_dane_ctx(struct tlscache *tc);

/* Prepare a new client SSL for key (copied): on a cache hit the cached session
 * is set for resumption; new sessions/tickets the server sends are stored under
 * key automatically. Call once per SSL, before the handshake. */
void tlscache_attach(struct tlscache *tc, struct ssl_st *ssl, const char *key);
/* Drop the cached session for key (a resumption that failed verification, ...). */
void tlscache_forget(struct tlscache *tc, const char *key);
void tlscache_get_stats(const struct tlscache *tc, struct tlscache_stats *st);

#endif
