/* tlscache.c: client SSL_CTXs and a bounded LRU TLS session cache.
 *
 * Sessions arrive through the SSL_CTX new-session callback (for TLS 1.3 that is
 * after the handshake, when the NewSessionTicket is read), so each SSL carries
 * its cache key and owning cache in ex_data. The cache holds one reference per
 * entry; lookups hand OpenSSL the session with SSL_set_session (which takes its
 * own reference). Expired or non-resumable sessions are dropped on lookup.
 * Eviction: least recently used, once max_sessions is reached. */
#include "tlscache/tlscache.h"

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
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

struct tlscache {
	SSL_CTX *ctx[2]; /* [0] records the verdict, [1] requires verification */
	/* Its own OpenSSL library context: each worker thread has one cache,
	 * so handshakes in different threads never share OpenSSL's algorithm
	 * and provider stores (their locks cost ~5% of a handshake under load). */
	OSSL_LIB_CTX *libctx;
	unsigned max;
	unsigned n;
	unsigned nbuckets;
	struct entry **buckets;
	struct entry *head, *tail;
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

/* An SSL_CTX for verify (1) or not (0). The trust store is loaded once per
 * cache: `store` NULL loads it, else the context shares it (same thread). */
static SSL_CTX *make_ctx(OSSL_LIB_CTX *libctx, const struct tlscache_opts *o, bool verify,
			 X509_STORE *store, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
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
	for (int v = 1; v >= 0; v--) {
		tc->ctx[v] = make_ctx(tc->libctx, o, v == 1, v == 1 ? NULL : SSL_CTX_get_cert_store(tc->ctx[1]),
				      err, errlen);
		if (tc->ctx[v] == NULL)
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
	SSL_CTX_free(tc->ctx[0]);
	SSL_CTX_free(tc->ctx[1]);
	OSSL_LIB_CTX_free(tc->libctx); /* after everything made under it */
	free(tc);
}

struct ssl_ctx_st *tlscache_ctx(struct tlscache *tc, bool verify)
{
	return tc->ctx[verify ? 1 : 0];
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
