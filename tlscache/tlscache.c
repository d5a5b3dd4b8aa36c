/* tlscache.c: client SSL_CTXs and a bounded LRU TLS session cache.
 *
 * Sessions arrive through the SSL_CTX new-session callback (for TLS 1.3 that is
 * after the handshake, when the NewSessionTicket is read), so each SSL carries
 * its cache key and owning cache in ex_data. The cache holds one reference per
 * entry; lookups hand OpenSSL the session with SSL_set_session (which takes its
 * own reference). Expired or non-resumable sessions are dropped on lookup.
 * Eviction: least recently used, once max_sessions is reached.
 *
 * Verified-chain cache: a full handshake spends ~20% of the client's CPU in
 * X509_verify_cert (path building and the CA's ECDSA signature over the leaf),
 * and with many domains behind few MX hosts the same chain comes back again and
 * again. The certificate verification callback keys each success on SHA-256 of
 * (the name checked, the host flags, every certificate the server sent, DER) and
 * answers a repeat of exactly those bytes from the table until the earliest
 * notAfter in the verified chain or VC_TTL, whichever comes first. The store and
 * the other verification parameters are fixed per cache, so the same input gives
 * the same verdict; failures are never cached (they are verified each time, with
 * OpenSSL's error codes). The handshake's own proof of the key (CertificateVerify)
 * is untouched: a server without the private key still fails. */
#include "tlscache/tlscache.h"

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct entry {
	struct entry *prev, *next; /* LRU list, most recent at head */
	struct entry *hnext;       /* hash chain */
	unsigned hash;
	SSL_SESSION *sess;
	char key[];
};

#define VC_TTL 3600 /* seconds a verified chain is trusted without re-verifying */

struct vc_entry {
	unsigned char key[32];
	time_t until; /* 0: empty */
};

struct tlscache {
	SSL_CTX *ctx[2]; /* [0] records the verdict, [1] requires verification */
	SSL_CTX *dane;   /* DANE (tlscache_dane_ctx) */
	/* Its own OpenSSL library context: each worker thread has one cache,
	 * so handshakes in different threads never share OpenSSL's algorithm
	 * and provider stores (their locks cost ~5% of a handshake under load). */
	OSSL_LIB_CTX *libctx;
	unsigned max;
	unsigned n;
	unsigned nbuckets;
	struct entry **buckets;
	struct entry *head, *tail;
	struct vc_entry *vc; /* direct-mapped, vc_n slots (a power of two); NULL: off */
	unsigned vc_n;
	EVP_MD *sha256;
	EVP_MD_CTX *md;      /* for the chain keys, reused */
	struct tlscache_stats st;
};

static int ex_key = -1, ex_cache = -1;

static void *must(void *p)
{
	if (p == NULL) {
		fprintf(stderr, "mxsend: out of memory in tlscache\n");
		abort();
	}
	return p;
}

static unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void lru_unlink(struct tlscache *tc, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		tc->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		tc->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct tlscache *tc, struct entry *e)
{
	e->prev = NULL;
	e->next = tc->head;
	if (tc->head)
		tc->head->prev = e;
	tc->head = e;
	if (tc->tail == NULL)
		tc->tail = e;
}

static struct entry **find_slot(struct tlscache *tc, const char *key, unsigned h)
{
	struct entry **pp = &tc->buckets[h % tc->nbuckets];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
		pp = &(*pp)->hnext;
	return pp;
}

static void drop(struct tlscache *tc, struct entry **slot)
{
	struct entry *e = *slot;
	*slot = e->hnext;
	lru_unlink(tc, e);
	SSL_SESSION_free(e->sess);
	free(e);
	tc->n--;
}

static void store(struct tlscache *tc, const char *key, SSL_SESSION *sess)
{
	unsigned h = hash_str(key);
	struct entry **slot = find_slot(tc, key, h);
	if (*slot) {
		SSL_SESSION_free((*slot)->sess);
		(*slot)->sess = sess;
		lru_unlink(tc, *slot);
		lru_push(tc, *slot);
		tc->st.stores++;
		return;
	}
	if (tc->n >= tc->max && tc->tail) {
		struct entry *old = tc->tail;
		drop(tc, find_slot(tc, old->key, old->hash));
		tc->st.evictions++;
		slot = find_slot(tc, key, h);
	}
	size_t kl = strlen(key) + 1;
	struct entry *e = must(calloc(1, sizeof(*e) + kl));
	memcpy(e->key, key, kl);
	e->hash = h;
	e->sess = sess;
	*slot = e;
	lru_push(tc, e);
	tc->n++;
	tc->st.stores++;
}

/* OpenSSL new-session callback: return 1 to keep the reference we were given. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct tlscache *tc = SSL_get_ex_data(ssl, ex_cache);
	const char *key = SSL_get_ex_data(ssl, ex_key);
	if (tc == NULL || key == NULL || tc->max == 0 || !SSL_SESSION_is_resumable(sess))
		return 0;
	store(tc, key, sess);
	return 1;
}

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* Does DIR hold OpenSSL hash links ("5ad8a5d6.0", made by c_rehash, openssl
 * rehash or Debian's update-ca-certificates)? */
static bool has_hash_links(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return false;
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		size_t i = 0;
		while (i < 8 && ((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
			i++;
		found = i == 8 && n[8] == '.' && n[9] >= '0' && n[9] <= '9';
	}
	closedir(d);
	return found;
}

/* The system trust store. Its hashed directory is read lazily, only the roots
 * a handshake asks for; the bundle file behind SSL_CTX_set_default_verify_paths
 * is parsed whole (~140 roots, ~23 ms on Debian 12) at every start, which was
 * most of the wall time of a one-message `mxsend send`. SSL_CERT_FILE set, or no
 * hashed directory: the file, as OpenSSL's defaults. SSL_CERT_DIR is honoured. */
static int load_default_store(SSL_CTX *ctx)
{
	if (getenv(X509_get_default_cert_file_env()) == NULL) {
		const char *dir = getenv(X509_get_default_cert_dir_env());
		if (dir != NULL || has_hash_links(X509_get_default_cert_dir()))
			return SSL_CTX_set_default_verify_dir(ctx);
	}
	return SSL_CTX_set_default_verify_paths(ctx);
}

/* The verified-chain cache key of the handshake in xs: false when it cannot be
 * made (no name to check, more than one name, a digest failed): verify as usual. */
static bool chain_key(struct tlscache *tc, X509_STORE_CTX *xs, unsigned char key[32])
{
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(xs);
	const char *host = X509_VERIFY_PARAM_get0_host(vp, 0);
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	if (host == NULL || X509_VERIFY_PARAM_get0_host(vp, 1) != NULL || leaf == NULL)
		return false;
	STACK_OF(X509) *rest = X509_STORE_CTX_get0_untrusted(xs);
	int n = rest ? sk_X509_num(rest) : 0;
	EVP_MD_CTX *md = tc->md;
	unsigned flags = X509_VERIFY_PARAM_get_hostflags(vp);
	bool ok = EVP_DigestInit_ex(md, tc->sha256, NULL) == 1 &&
		  EVP_DigestUpdate(md, host, strlen(host) + 1) == 1 &&
		  EVP_DigestUpdate(md, &flags, sizeof(flags)) == 1;
	/* The leaf, then what the server sent with it (OpenSSL's untrusted
	 * stack is the whole chain as received, leaf included). */
	for (int i = -1; ok && i < n; i++) {
		X509 *x = i < 0 ? leaf : sk_X509_value(rest, i);
		if (i >= 0 && x == leaf)
			continue;
		unsigned char d[EVP_MAX_MD_SIZE];
		unsigned dl = 0;
		ok = X509_digest(x, tc->sha256, d, &dl) == 1 && EVP_DigestUpdate(md, d, dl) == 1;
	}
	unsigned kl = 0;
	return ok && EVP_DigestFinal_ex(md, key, &kl) == 1 && kl == 32;
}

/* When a chain verified now stops being trustworthy from the cache: the
 * earliest notAfter in it, at most VC_TTL from now. */
static time_t chain_until(X509_STORE_CTX *xs, time_t now)
{
	time_t until = now + VC_TTL;
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xs);
	for (int i = 0; chain && i < sk_X509_num(chain); i++) {
		int days = 0, secs = 0;
		if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(sk_X509_value(chain, i))) != 1)
			return 0;
		time_t t = now + (time_t)days * 86400 + secs;
		if (t < until)
			until = t;
	}
	return until;
}

/* SSL_CTX_set_cert_verify_callback: X509_verify_cert, unless this exact chain
 * was verified for this name before (see the top of the file). */
static int verify_cb(X509_STORE_CTX *xs, void *arg)
{
	struct tlscache *tc = arg;
	unsigned char key[32];
	if (tc->vc == NULL || !chain_key(tc, xs, key)) {
		tc->st.verify_misses++;
		return X509_verify_cert(xs);
	}
	time_t now = time(NULL);
	unsigned h;
	memcpy(&h, key, sizeof(h));
	struct vc_entry *e = &tc->vc[h & (tc->vc_n - 1)];
	if (e->until > now && memcmp(e->key, key, sizeof(e->key)) == 0) {
		tc->st.verify_hits++;
		return 1; /* the store context's error stays X509_V_OK */
	}
	tc->st.verify_misses++;
	int ok = X509_verify_cert(xs);
	if (ok == 1 && X509_STORE_CTX_get_error(xs) == X509_V_OK) {
		time_t until = chain_until(xs, now);
		if (until > now) {
			memcpy(e->key, key, sizeof(e->key));
			e->until = until;
		}
	}
	return ok;
}

/* An SSL_CTX for verify (1) or not (0). The trust store is loaded once per
 * cache: `store` NULL loads it, else the context shares it (same thread). */
static SSL_CTX *make_ctx(struct tlscache *tc, const struct tlscache_opts *o, bool verify,
			 X509_STORE *store, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new_ex(tc->libctx, NULL, TLS_client_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, o->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	bool file = o->ca_file != NULL && o->ca_file[0] != '\0';
	int ok = store ? (SSL_CTX_set1_cert_store(ctx, store), 1)
		 : file ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
			: load_default_store(ctx);
	if (ok != 1) {
		unsigned long e = ERR_get_error();
		snprintf(err, errlen, "cannot load CA file %s: %s", file ? o->ca_file : "(the system store)",
			 e ? ERR_reason_error_string(e) : "unknown error");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_cert_verify_callback(ctx, verify_cb, tc);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	return ctx;
}

struct tlscache *tlscache_new(const struct tlscache_opts *o, char *err, size_t errlen)
{
	if (ex_key < 0) {
		ex_key = SSL_get_ex_new_index(0, "mxsend key", NULL, NULL, free_key);
		ex_cache = SSL_get_ex_new_index(0, "mxsend cache", NULL, NULL, NULL);
	}
	struct tlscache *tc = must(calloc(1, sizeof(*tc)));
	tc->max = o->max_sessions;
	tc->nbuckets = tc->max > 16 ? tc->max : 16;
	tc->buckets = must(calloc(tc->nbuckets, sizeof(*tc->buckets)));
	tc->libctx = OSSL_LIB_CTX_new();
	if (tc->libctx == NULL) {
		snprintf(err, errlen, "OSSL_LIB_CTX_new failed");
		goto fail;
	}
	if (o->verify_cache > 0) {
		tc->sha256 = EVP_MD_fetch(tc->libctx, "SHA256", NULL);
		tc->md = EVP_MD_CTX_new();
		if (tc->sha256 == NULL || tc->md == NULL) {
			snprintf(err, errlen, "SHA256 not available");
			goto fail;
		}
		for (tc->vc_n = 1; tc->vc_n < o->verify_cache; tc->vc_n <<= 1)
			;
		tc->vc = must(calloc(tc->vc_n, sizeof(*tc->vc)));
	}
	for (int v = 1; v >= 0; v--) {
		tc->ctx[v] = make_ctx(tc, o, v == 1, v == 1 ? NULL : SSL_CTX_get_cert_store(tc->ctx[1]),
				      err, errlen);
		if (tc->ctx[v] == NULL)
			goto fail;
	}
	/* DANE: the same store (unused by DANE-TA/EE, which trust only the
	 * TLSA records), sessions in the same cache under DANE keys */
	tc->dane = make_ctx(tc, o, false, SSL_CTX_get_cert_store(tc->ctx[1]), err, errlen);
	if (tc->dane == NULL)
		goto fail;
	SSL_CTX_set_cert_verify_callback(tc->dane, NULL, NULL);
	if (SSL_CTX_dane_enable(tc->dane) <= 0) {
		snprintf(err, errlen, "SSL_CTX_dane_enable failed");
		goto fail;
	}
	return tc;
fail:
	tlscache_free(tc);
	return NULL;
}

void tlscache_free(struct tlscache *tc)
{
	if (tc == NULL)
		return;
	while (tc->head)
		drop(tc, find_slot(tc, tc->head->key, tc->head->hash));
	free(tc->buckets);
	free(tc->vc);
	EVP_MD_free(tc->sha256);
	EVP_MD_CTX_free(tc->md);
	SSL_CTX_free(tc->ctx[0]);
	SSL_CTX_free(tc->ctx[1]);
	SSL_CTX_free(tc->dane);
	OSSL_LIB_CTX_free(tc->libctx); /* after everything made under it */
	free(tc);
}

struct ssl_ctx_st *tlscache_ctx(struct tlscache *tc, bool verify)
{
	return tc->ctx[verify ? 1 : 0];
}

struct ssl_ctx_st *tlscache_dane_ctx(struct tlscache *tc)
{
	return tc->dane;
}

void tlscache_attach(struct tlscache *tc, struct ssl_st *ssl, const char *key)
{
	char *k = must(strdup(key));
	SSL_set_ex_data(ssl, ex_key, k);
	SSL_set_ex_data(ssl, ex_cache, tc);
	if (tc->max == 0)
		return;
	unsigned h = hash_str(key);
	struct entry **slot = find_slot(tc, key, h);
	if (*slot == NULL) {
		tc->st.misses++;
		return;
	}
	SSL_SESSION *s = (*slot)->sess;
	time_t now = time(NULL);
	if (!SSL_SESSION_is_resumable(s) || SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) <= now) {
		drop(tc, slot);
		tc->st.misses++;
		return;
	}
	lru_unlink(tc, *slot);
	lru_push(tc, *slot);
	SSL_set_session(ssl, s);
	tc->st.hits++;
}

void tlscache_forget(struct tlscache *tc, const char *key)
{
	struct entry **slot = find_slot(tc, key, hash_str(key));
	if (*slot)
		drop(tc, slot);
}

void tlscache_get_stats(const struct tlscache *tc, struct tlscache_stats *st)
{
	*st = tc->st;
	st->entries = tc->n;
}
