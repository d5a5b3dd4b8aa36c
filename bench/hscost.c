/* hscost.c: mxhscost, what OpenSSL itself costs on this machine for the TLS work mxsend does per
 * SMTP session, measured in one thread with no sockets: the yardstick bench/run.sh divides
 * mxsend's CPU per message by (scenario b: "mxsend CPU / OpenSSL full handshake").
 *
 *   mxhscost --ca ca.pem --cert server.pem --key server.key [--name mx1.test] [-n 2000]
 *   mxhscost --certs DIR [...]            (DIR from bench/mkcerts.sh: ca.pem server.pem server.key)
 *
 * Client SSL_CTX as in tlscache/tlscache.c: TLS 1.2 minimum, 1.3 maximum, the CA file loaded,
 * SSL_VERIFY_PEER, SNI + SSL_set1_host on the MX name, RELEASE_BUFFERS, client session cache
 * with a new-session callback (no internal store). Server SSL_CTX as in bench/sink.c: the ECDSA
 * P-256 leaf, tickets on (OpenSSL's default: 2 per full handshake, 1 per resumption).
 * Client and server are joined by two pairs of memory BIOs, the way conn.c drives tls.c: what
 * one side writes is copied into the other side's read BIO.
 *
 * Per handshake the client is charged SSL_new .. SSL_do_handshake .. reading the
 * NewSessionTicket(s) .. SSL_shutdown (close_notify) .. SSL_free, timed with
 * CLOCK_THREAD_CPUTIME_ID around each client call (the timer's own cost is measured and
 * subtracted, from "total" too). "total" is the thread CPU of the whole
 * exchange (client + server + copying). Resumed handshakes offer the ticket the previous
 * handshake stored (psk_dhe_ke, so they still do one X25519 exchange).
 * Record cost: SSL_write of 4096 bytes by the client plus draining the ciphertext (write4k),
 * and SSL_read of it on the server (read4k), over an established TLS 1.3 session.
 * Memory: K (<= 1000) established sessions are kept open; idle_client_kb is the heap in use
 * (util_heap_allocated) per client SSL with its two memory BIOs, after the tickets and one reply were
 * read and the server side freed: OpenSSL's own share of what one open TLS session costs.
 * idle_client_freebuf_kb: the same after SSL_free_buffers() (SSL_MODE_RELEASE_BUFFERS does not
 * give the ~16 KB record read buffer back in this flow on OpenSSL 3.0).
 * Output: one key=value line; exit 0, or 1 when a handshake fails or does not resume. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sender/util.h"

#define XFER_MAX (64 * 1024) /* one copy between the BIOs; a handshake flight is ~1-2 KB */
#define WARMUP 20

static SSL_SESSION *g_sess; /* the last session the client received */

static void die_ssl(const char *what)
{
	fprintf(stderr, "mxhscost: %s failed\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* As tlscache.c's new_session_cb: keep the resumable session (return 1 = we own the ref). */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	if (!SSL_SESSION_is_resumable(sess))
		return 0;
	SSL_SESSION_free(g_sess);
	g_sess = sess;
	return 1;
}

static SSL_CTX *client_ctx(const char *ca)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		die_ssl("SSL_CTX_new(client)");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		die_ssl("loading the CA file");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	return ctx;
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		die_ssl("SSL_CTX_new(server)");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		die_ssl("loading the server certificate/key");
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"mxsink", 6);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	return ctx;
}

/* One side of the exchange: the SSL and the read BIO we feed (the write BIO is read back). */
struct side {
	SSL *ssl;
	BIO *in, *out;
};

static void side_bios(struct side *s)
{
	s->in = BIO_new(BIO_s_mem());
	s->out = BIO_new(BIO_s_mem());
	if (s->in == NULL || s->out == NULL)
		die_ssl("BIO_new");
	BIO_set_mem_eof_return(s->in, -1);
	SSL_set_bio(s->ssl, s->in, s->out);
}

/* Move what `from` wrote into `to`'s input; returns the byte count. Copies like conn.c does
 * (BIO_read into a buffer, BIO_write into the peer), so the client's share is realistic. */
static size_t xfer(struct side *from, struct side *to, char *buf)
{
	size_t total = 0;
	int n;
	while ((n = BIO_read(from->out, buf, XFER_MAX)) > 0) {
		if (BIO_write(to->in, buf, n) != n)
			die_ssl("BIO_write");
		total += (size_t)n;
	}
	return total;
}

static bool want_io(SSL *ssl, int r)
{
	int e = SSL_get_error(ssl, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

struct cost {
	uint64_t client_ns, total_ns, client_calls;
	unsigned long n, resumed;
	char version[16], cipher[64], group[32];
};

static uint64_t g_timer_ns; /* cost of one cpu_ns() pair, subtracted per timed client call */

/* Charge the client CPU since t0 (a cpu_ns() reading) to c. */
static void charge(struct cost *c, uint64_t t0)
{
	c->client_ns += cpu_ns() - t0;
	c->client_calls++;
}

/* One handshake from SSL_new to SSL_free; resume: offer g_sess. */
static void handshake(SSL_CTX *cctx, SSL_CTX *sctx, const char *name, bool resume, struct cost *c,
		      char *buf, bool keep_open, struct side *cl_out, struct side *sv_out)
{
	uint64_t t_all = cpu_ns();
	struct side cl = { 0 }, sv = { 0 };
	uint64_t t0 = cpu_ns();
	cl.ssl = SSL_new(cctx);
	if (cl.ssl == NULL)
		die_ssl("SSL_new(client)");
	side_bios(&cl);
	SSL_set_connect_state(cl.ssl);
	SSL_set_tlsext_host_name(cl.ssl, name);
	SSL_set_hostflags(cl.ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_set1_host(cl.ssl, name);
	if (resume) {
		if (g_sess == NULL) {
			fprintf(stderr, "mxhscost: no session to resume\n");
			exit(1);
		}
		SSL_set_session(cl.ssl, g_sess);
	}
	charge(c, t0);

	sv.ssl = SSL_new(sctx);
	if (sv.ssl == NULL)
		die_ssl("SSL_new(server)");
	side_bios(&sv);
	SSL_set_accept_state(sv.ssl);

	bool cdone = false, sdone = false;
	for (int round = 0; round < 20 && !(cdone && sdone); round++) {
		if (!cdone) {
			ERR_clear_error();
			uint64_t tc = cpu_ns();
			int r = SSL_do_handshake(cl.ssl);
			charge(c, tc);
			if (r == 1)
				cdone = true;
			else if (!want_io(cl.ssl, r))
				die_ssl("client handshake");
		}
		uint64_t tw = cpu_ns();
		xfer(&cl, &sv, buf); /* the client's BIO_read of what it sends (conn.c tls_flush) */
		charge(c, tw);
		if (!sdone) {
			ERR_clear_error();
			int r = SSL_do_handshake(sv.ssl);
			if (r == 1)
				sdone = true;
			else if (!want_io(sv.ssl, r))
				die_ssl("server handshake");
		}
		/* the client's BIO_write of what it receives is its cost too (conn.c tls_net_in) */
		uint64_t tx = cpu_ns();
		size_t n = xfer(&sv, &cl, buf);
		c->client_ns += (cpu_ns() - tx) / 2; /* BIO_read is the server's half */
		c->client_calls++;
		(void)n;
	}
	if (!cdone || !sdone) {
		fprintf(stderr, "mxhscost: handshake did not finish\n");
		exit(1);
	}
	/* TLS 1.3: the tickets arrive after the client's Finished; mxsend reads them with its
	 * next SSL_read (tls_input). Read until WANT_READ. */
	{
		char tmp[256];
		size_t got = 0;
		ERR_clear_error();
		uint64_t tr = cpu_ns();
		int r = SSL_read_ex(cl.ssl, tmp, sizeof tmp, &got);
		charge(c, tr);
		if (r != 1 && !want_io(cl.ssl, r))
			die_ssl("client reading tickets");
	}
	if (SSL_session_reused(cl.ssl))
		c->resumed++;
	if (SSL_get_verify_result(cl.ssl) != X509_V_OK) {
		fprintf(stderr, "mxhscost: certificate did not verify: %s\n",
			X509_verify_cert_error_string(SSL_get_verify_result(cl.ssl)));
		exit(1);
	}
	if (c->version[0] == 0) {
		snprintf(c->version, sizeof c->version, "%s", SSL_get_version(cl.ssl));
		snprintf(c->cipher, sizeof c->cipher, "%s", SSL_get_cipher_name(cl.ssl));
		EVP_PKEY *pk = NULL; /* the server's key share (SSL_get_negotiated_group is 3.2+) */
		const char *gn = NULL;
		if (SSL_get_peer_tmp_key(cl.ssl, &pk) == 1) {
			gn = OBJ_nid2sn(EVP_PKEY_get_base_id(pk));
			if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC)
				gn = "EC"; /* a NIST curve; the name needs more digging */
		}
		snprintf(c->group, sizeof c->group, "%s", gn ? gn : "?");
		EVP_PKEY_free(pk);
	}
	if (keep_open) {
		*cl_out = cl;
		*sv_out = sv;
	} else {
		/* A clean end: close_notify, as after SMTP QUIT. Without it SSL_free marks the
		 * session not resumable (ssl_clear_bad_session), tickets included. */
		t0 = cpu_ns();
		SSL_shutdown(cl.ssl);
		SSL_free(cl.ssl);
		charge(c, t0);
		SSL_free(sv.ssl);
	}
	c->total_ns += cpu_ns() - t_all;
	c->n++;
}

static double per_us(uint64_t ns, uint64_t calls, unsigned long n)
{
	uint64_t adj = calls * g_timer_ns;
	ns = ns > adj ? ns - adj : 0;
	return n ? (double)ns / 1000.0 / (double)n : 0;
}

static void usage(void)
{
	fputs("usage: mxhscost (--certs DIR | --ca F --cert F --key F) [--name HOST] [-n N]\n", stderr);
	exit(64);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "certs", required_argument, NULL, 'd' }, { "ca", required_argument, NULL, 'a' },
		{ "cert", required_argument, NULL, 'c' },  { "key", required_argument, NULL, 'k' },
		{ "name", required_argument, NULL, 's' },  { "n", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },        { NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *ca = NULL, *cert = NULL, *key = NULL, *name = "mx1.test";
	unsigned long n = 2000;
	int ch;
	while ((ch = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
		switch (ch) {
		case 'd': dir = optarg; break;
		case 'a': ca = optarg; break;
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 's': name = optarg; break;
		case 'n': n = strtoul(optarg, NULL, 10); break;
		default: usage();
		}
	}
	char pca[4096], pcert[4096], pkey[4096];
	if (dir) {
		snprintf(pca, sizeof pca, "%s/ca.pem", dir);
		snprintf(pcert, sizeof pcert, "%s/server.pem", dir);
		snprintf(pkey, sizeof pkey, "%s/server.key", dir);
		ca = ca ? ca : pca;
		cert = cert ? cert : pcert;
		key = key ? key : pkey;
	}
	if (!ca || !cert || !key || n == 0 || optind < argc)
		usage();

	/* the timer itself: a pair of CLOCK_THREAD_CPUTIME_ID reads */
	{
		uint64_t a = cpu_ns(), b = a;
		for (int i = 0; i < 10000; i++)
			b = cpu_ns();
		g_timer_ns = (b - a) / 10000;
	}

	SSL_CTX *cctx = client_ctx(ca), *sctx = server_ctx(cert, key);
	char *buf = xmalloc(XFER_MAX);
	struct cost warm = { 0 }, full = { 0 }, res = { 0 };
	struct side cl, sv;

	for (int i = 0; i < WARMUP; i++) {
		handshake(cctx, sctx, name, false, &warm, buf, false, NULL, NULL);
		handshake(cctx, sctx, name, true, &warm, buf, false, NULL, NULL);
	}
	for (unsigned long i = 0; i < n; i++)
		handshake(cctx, sctx, name, false, &full, buf, false, NULL, NULL);
	/* each resumption starts from a fresh full-handshake ticket, so the chain of tickets
	 * is one resumption deep (a real cache mostly holds those) */
	for (unsigned long i = 0; i < n; i++) {
		struct cost tmp = { 0 };
		handshake(cctx, sctx, name, false, &tmp, buf, false, NULL, NULL);
		handshake(cctx, sctx, name, true, &res, buf, false, NULL, NULL);
	}
	if (full.resumed != 0 || res.resumed != n) {
		fprintf(stderr, "mxhscost: resumption mismatch: full resumed %lu, resumed %lu of %lu\n",
			full.resumed, res.resumed, n);
		return 1;
	}

	/* Record cost on one established session. */
	struct cost wc = { 0 };
	handshake(cctx, sctx, name, false, &wc, buf, true, &cl, &sv);
	char *plain = xmalloc(4096), *rbuf = xmalloc(16384);
	memset(plain, 'a', 4096);
	unsigned long nrec = n * 5;
	uint64_t wns = 0, rns = 0;
	for (unsigned long i = 0; i < nrec + WARMUP; i++) {
		uint64_t t0 = cpu_ns();
		size_t done = 0;
		if (SSL_write_ex(cl.ssl, plain, 4096, &done) != 1 || done != 4096)
			die_ssl("SSL_write");
		size_t moved = xfer(&cl, &sv, buf); /* drain + hand over, as conn.c's tls_flush */
		uint64_t t1 = cpu_ns();
		size_t got = 0, all = 0;
		while (all < 4096 && SSL_read_ex(sv.ssl, rbuf, 16384, &got) == 1)
			all += got;
		uint64_t t2 = cpu_ns();
		if (all != 4096 || moved < 4096)
			die_ssl("record round trip");
		if (i >= WARMUP) {
			wns += t1 - t0;
			rns += t2 - t1;
		}
	}
	SSL_free(cl.ssl);
	SSL_free(sv.ssl);

	/* Heap per idle client session. */
	unsigned long k = n < 1000 ? n : 1000;
	SSL **keep = xcalloc(k, sizeof(*keep));
	struct cost mc = { 0 };
	size_t h0 = util_heap_allocated();
	for (unsigned long i = 0; i < k; i++) {
		handshake(cctx, sctx, name, false, &mc, buf, true, &cl, &sv);
		/* one reply read, as after EHLO: with RELEASE_BUFFERS the client drops its record
		 * read buffer only after reading application data, not after the tickets */
		char reply[64];
		size_t got = 0;
		if (SSL_write_ex(sv.ssl, "250 mxhscost\r\n", 14, &got) != 1)
			die_ssl("server reply");
		xfer(&sv, &cl, buf);
		if (SSL_read_ex(cl.ssl, reply, sizeof reply, &got) != 1 || got != 14)
			die_ssl("client reading the reply");
		SSL_free(sv.ssl);
		keep[i] = cl.ssl;
	}
	size_t h1 = util_heap_allocated();
	for (unsigned long i = 0; i < k; i++)
		SSL_free_buffers(keep[i]); /* what an idle session needs without its record buffer */
	size_t h2 = util_heap_allocated();
	for (unsigned long i = 0; i < k; i++) {
		SSL_shutdown(keep[i]);
		SSL_free(keep[i]);
	}
	free(keep);
	double idle_kb = h1 > h0 ? (double)(h1 - h0) / 1024.0 / (double)k : 0;
	double idle_fb_kb = h2 > h0 ? (double)(h2 - h0) / 1024.0 / (double)k : 0;

	printf("full_client_us=%.1f resumed_client_us=%.1f full_total_us=%.1f resumed_total_us=%.1f "
	       "write4k_client_us=%.2f read4k_server_us=%.2f idle_client_kb=%.1f "
	       "idle_client_freebuf_kb=%.1f n=%lu version=%s cipher=%s group=%s timer_ns=%llu "
	       "openssl=\"%s\"\n",
	       per_us(full.client_ns, full.client_calls, full.n),
	       per_us(res.client_ns, res.client_calls, res.n),
	       per_us(full.total_ns, full.client_calls, full.n),
	       per_us(res.total_ns, res.client_calls, res.n), per_us(wns, nrec, nrec),
	       per_us(rns, nrec, nrec), idle_kb, idle_fb_kb, n, full.version, full.cipher, full.group,
	       (unsigned long long)g_timer_ns, OpenSSL_version(OPENSSL_VERSION));
	SSL_SESSION_free(g_sess);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	free(buf);
	free(plain);
	free(rbuf);
	return 0;
}
