/* test_tlscache.c: the verified-chain cache in tlscache/, through real TLS 1.3
 * handshakes between a client SSL from tlscache's contexts and a server SSL,
 * joined by an in-memory BIO pair. Certificates: bench/mkcerts.sh into a
 * temporary directory (server.pem: mx1.a.test and localhost; wrong.pem: wrong.invalid;
 * selfsigned.pem: the same names, not under the CA).
 *
 * What must hold: the same chain for the same name is verified once; a chain
 * verified for one name is never accepted for another; a different chain for
 * the same name is verified afresh; failures are never remembered; size 0 turns
 * the cache off. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/t.h"
#include "tlscache/tlscache.h"

static char dir[] = "/tmp/mxsend-tlscache-XXXXXX";
static char path[256];

static const char *file(const char *name)
{
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static SSL_CTX *server_ctx(const char *stem)
{
	char cert[64], key[64];
	snprintf(cert, sizeof(cert), "%s.pem", stem);
	snprintf(key, sizeof(key), "%s.key", stem);
	SSL_CTX *s = SSL_CTX_new(TLS_server_method());
	if (s == NULL || SSL_CTX_use_certificate_chain_file(s, file(cert)) != 1 ||
	    SSL_CTX_use_PrivateKey_file(s, file(key), SSL_FILETYPE_PEM) != 1) {
		ERR_print_errors_fp(stderr);
		abort();
	}
	return s;
}

struct hs {
	bool done;    /* the handshake completed */
	long verify;  /* SSL_get_verify_result on the client */
};

/* One handshake of a client from tc (verify: the context that requires a
 * verified chain) checking `name`, against a server with certificate `stem`. */
static struct hs handshake(struct tlscache *tc, bool verify, const char *name, const char *stem)
{
	SSL_CTX *sctx = server_ctx(stem);
	SSL *c = SSL_new(tlscache_ctx(tc, verify)), *s = SSL_new(sctx);
	BIO *cb = NULL, *sb = NULL;
	if (c == NULL || s == NULL || BIO_new_bio_pair(&cb, 0, &sb, 0) != 1)
		abort();
	SSL_set_bio(c, cb, cb);
	SSL_set_bio(s, sb, sb);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	SSL_set_tlsext_host_name(c, name);
	SSL_set_hostflags(c, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_set1_host(c, name);
	struct hs r = { false, -1 };
	int cr = 0, sr = 0;
	for (int i = 0; i < 20 && !(cr == 1 && sr == 1); i++) {
		cr = cr == 1 ? 1 : SSL_do_handshake(c);
		if (cr <= 0 && SSL_get_error(c, cr) != SSL_ERROR_WANT_READ)
			break;
		sr = sr == 1 ? 1 : SSL_do_handshake(s);
		if (sr <= 0 && SSL_get_error(s, sr) != SSL_ERROR_WANT_READ)
			break;
	}
	r.done = cr == 1 && sr == 1;
	r.verify = SSL_get_verify_result(c);
	ERR_clear_error();
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(sctx);
	return r;
}

static struct tlscache *cache(unsigned slots)
{
	struct tlscache_opts o = { .ca_file = file("ca.pem"), .min_version = 12, .max_sessions = 0,
				   .verify_cache = slots };
	char err[256] = "";
	struct tlscache *tc = tlscache_new(&o, err, sizeof(err));
	if (tc == NULL) {
		fprintf(stderr, "tlscache_new: %s\n", err);
		abort();
	}
	return tc;
}

static struct tlscache_stats stats(struct tlscache *tc)
{
	struct tlscache_stats st;
	tlscache_get_stats(tc, &st);
	return st;
}

static void t_same_chain_verified_once(void)
{
	struct tlscache *tc = cache(64);
	for (int i = 0; i < 3; i++) {
		struct hs h = handshake(tc, true, "mx1.a.test", "server");
		CHECK(h.done);
		CHECK_INT(h.verify, X509_V_OK);
	}
	/* The record-only context shares the store and the cache. */
	struct hs h = handshake(tc, false, "mx1.a.test", "server");
	CHECK(h.done);
	CHECK_INT(h.verify, X509_V_OK);
	CHECK_INT(stats(tc).verify_misses, 1);
	CHECK_INT(stats(tc).verify_hits, 3);
	tlscache_free(tc);
}

static void t_other_name_never_hits(void)
{
	struct tlscache *tc = cache(64);
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	/* Same chain, a name it does not cover: verified afresh and refused. */
	struct hs h = handshake(tc, true, "mx.other.example", "server");
	CHECK(!h.done);
	CHECK_INT(h.verify, X509_V_ERR_HOSTNAME_MISMATCH);
	h = handshake(tc, false, "mx.other.example", "server");
	CHECK(h.done); /* may/encrypt: delivered, verdict recorded */
	CHECK_INT(h.verify, X509_V_ERR_HOSTNAME_MISMATCH);
	/* Another name the chain does cover is its own entry, verified once. */
	CHECK(handshake(tc, true, "localhost", "server").done);
	CHECK(handshake(tc, true, "localhost", "server").done);
	CHECK_INT(stats(tc).verify_hits, 1);
	CHECK_INT(stats(tc).verify_misses, 4);
	tlscache_free(tc);
}

static void t_failures_not_remembered(void)
{
	struct tlscache *tc = cache(64);
	for (int i = 0; i < 2; i++) {
		struct hs h = handshake(tc, false, "mx1.a.test", "selfsigned");
		CHECK(h.done);
		CHECK(h.verify != X509_V_OK);
		h = handshake(tc, true, "mx1.a.test", "selfsigned");
		CHECK(!h.done);
	}
	CHECK_INT(stats(tc).verify_hits, 0);
	CHECK_INT(stats(tc).verify_misses, 4);
	/* A good chain for that name afterwards is verified, then remembered;
	 * the bad one stays refused though the name is now in the cache. */
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	CHECK(!handshake(tc, true, "mx1.a.test", "selfsigned").done);
	CHECK(!handshake(tc, true, "mx1.a.test", "wrong").done);
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	CHECK_INT(stats(tc).verify_hits, 1);
	tlscache_free(tc);
}

static void t_size_zero_is_off(void)
{
	struct tlscache *tc = cache(0);
	for (int i = 0; i < 2; i++) {
		struct hs h = handshake(tc, true, "mx1.a.test", "server");
		CHECK(h.done);
		CHECK_INT(h.verify, X509_V_OK);
	}
	CHECK_INT(stats(tc).verify_hits, 0);
	CHECK_INT(stats(tc).verify_misses, 2);
	tlscache_free(tc);
}

/* One slot: entries for two names evict each other, and a hit is still only
 * ever an exact match. */
static void t_collisions_evict(void)
{
	struct tlscache *tc = cache(1);
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	CHECK(handshake(tc, true, "localhost", "server").done);
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	CHECK(!handshake(tc, true, "mx.other.example", "server").done);
	CHECK_INT(stats(tc).verify_hits, 0);
	CHECK(handshake(tc, true, "mx1.a.test", "server").done);
	CHECK_INT(stats(tc).verify_hits, 1);
	tlscache_free(tc);
}

/* The first and last cases: the certificates, made and removed. */
static void t_setup(void)
{
	CHECK(mkdtemp(dir) != NULL);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "sh bench/mkcerts.sh %s mx1.a.test >/dev/null", dir);
	if (system(cmd) != 0 || access(file("server.pem"), R_OK) != 0) {
		fprintf(stderr, "bench/mkcerts.sh failed (run from the top of the tree)\n");
		exit(1);
	}
}

static void t_cleanup(void)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	CHECK(access(dir, F_OK) != 0);
}

static const struct t_case cases[] = {
	{ "tlscache: certificates made (bench/mkcerts.sh)", t_setup },
	{ "tlscache: verified chain: same chain and name verified once", t_same_chain_verified_once },
	{ "tlscache: verified chain: never accepted for another name", t_other_name_never_hits },
	{ "tlscache: verified chain: failures verified every time", t_failures_not_remembered },
	{ "tlscache: verified chain: size 0 verifies every chain", t_size_zero_is_off },
	{ "tlscache: verified chain: one slot, names evict each other", t_collisions_evict },
	{ "tlscache: certificates removed", t_cleanup },
};

T_MAIN(cases)
