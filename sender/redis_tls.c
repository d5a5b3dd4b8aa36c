/* redis_tls.c: rediss:// relays for hiredis (see redis_tls.h).
 *
 * Ring relay (struct relay): hiredis's end is a unix socket (local_pair);
 * ours is read with loop_recv into rbuf and each read goes to conn_write (TLS
 * records on the conn); what the conn decrypts is queued in pend and sent to
 * hiredis from fly (pend and fly swap, as in conn.c). Nothing is read from
 * hiredis before the handshake is over: its AUTH waits in the socket. Reads
 * pause while more than RELAY_OUT_HIGH bytes wait for the server (on_drain
 * resumes them); replies are queued without a cap, as Redis queues them for a
 * client (hiredis reads all the time). Lifetime as in conn.c: relay_close
 * closes the conn, cancels our ops, and the memory goes once nothing is in
 * flight. Either side closing closes the other (hiredis then reconnects).
 *
 * Blocking relay (struct srelay, a detached thread): both sockets
 * non-blocking after the handshake, one poll() for both; at most RELAY_BUF of
 * hiredis's requests at a time, replies queued without a cap (a pipelined
 * enqueue reads its replies only after writing every command). */
#define _GNU_SOURCE /* accept4 */
#include "sender/redis_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "queue/queue.h"
#include "sender/conn.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/tls.h"
#include "sender/util.h"

#define IO_TIMEOUT_S 5
#define RELAY_BUF 16384
#define RELAY_OUT_HIGH (1u << 20) /* TLS output waiting: stop reading hiredis's requests */
#define RELAY_KEEP (64u << 10)    /* reply buffers kept while idle */

/* ---- the TLS context (built at each connect: files replaced are picked up) ---- */

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
	e = first;
	const char *why = e ? ERR_reason_error_string(e) : NULL;
	if (sys != 0)
		snprintf(buf, n, "%s", strerror(ERR_GET_REASON(sys)));
	else if (e == 0)
		snprintf(buf, n, "unknown error");
	else if (why != NULL)
		snprintf(buf, n, "%s", why);
	else
		ERR_error_string_n(e, buf, n);
	ERR_clear_error();
	return buf;
}

static const char *ca_name(const struct queue_tls *t)
{
	return t->ca_file && t->ca_file[0] ? t->ca_file : "(the system store)";
}

static const char *name_of(const struct queue_tls *t, const char *host)
{
	return t->name && t->name[0] ? t->name : host;
}

static bool is_ip(const char *s)
{
	unsigned char b[16];
	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

static SSL_CTX *ctx_new(const struct queue_tls *t, char *err, size_t n)
{
	char e[200];
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		snprintf(err, n, "TLS: %s", ossl_err(e, sizeof(e)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	bool ca = t->ca_file && t->ca_file[0];
	if (ca ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
	       : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, n, "TLS: tls_ca %s: cannot load: %s", ca_name(t), ossl_err(e, sizeof(e)));
		goto fail;
	}
	if (t->cert_file && t->cert_file[0]) {
		const char *key = t->key_file && t->key_file[0] ? t->key_file : t->cert_file;
		if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
			snprintf(err, n, "TLS: tls_cert %s: cannot load: %s", t->cert_file,
				 ossl_err(e, sizeof(e)));
			goto fail;
		}
		int ok = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
		unsigned long ke = ok == 1 ? 0 : ERR_peek_error();
		/* loaded, but not the certificate's key: said below */
		bool other = ke != 0 && ERR_GET_LIB(ke) == ERR_LIB_X509 &&
			     ERR_GET_REASON(ke) == X509_R_KEY_VALUES_MISMATCH;
		if (ok != 1 && !other) {
			snprintf(err, n, "TLS: tls_key %s: cannot load (an unencrypted PEM key is needed): %s",
				 key, ossl_err(e, sizeof(e)));
			goto fail;
		}
		if (other || SSL_CTX_check_private_key(ctx) != 1) {
			ERR_clear_error();
			snprintf(err, n, "TLS: tls_key %s is not the key of tls_cert %s", key, t->cert_file);
			goto fail;
		}
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int redis_tls_check(const struct queue_tls *t, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new(t, err, errlen);
	SSL_CTX_free(ctx);
	return ctx ? 0 : -1;
}

/* ---- blocking: the short-lived commands ---- */

struct srelay {
	SSL *ssl;
	int net; /* the TLS socket */
	int loc; /* our end of hiredis's socketpair */
};

/* Why a TLS call on ssl failed (r its return), for "redis: connect to URL: ...". */
static void ssl_fail(SSL *ssl, int r, const char *what, const struct queue_tls *t, const char *name,
		     char *err, size_t n)
{
	int en = errno, se = SSL_get_error(ssl, r);
	unsigned long e = ERR_peek_last_error();
	long vr = SSL_get_verify_result(ssl);
	char buf[200];
	if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED || (e == 0 && vr != X509_V_OK)) {
		ERR_clear_error();
		snprintf(err, n, "TLS: certificate verify failed for \"%s\": %s (tls_ca %s)", name,
			 X509_verify_cert_error_string(vr), ca_name(t));
	} else if (se == SSL_ERROR_SSL) {
		snprintf(err, n, "TLS %s with \"%s\": %s", what, name, ossl_err(buf, sizeof(buf)));
	} else if (se == SSL_ERROR_SYSCALL && (en == EAGAIN || en == EWOULDBLOCK)) {
		snprintf(err, n, "TLS %s with \"%s\": timed out (%d s)", what, name, IO_TIMEOUT_S);
	} else {
		ERR_clear_error();
		snprintf(err, n, "TLS %s with \"%s\": %s", what, name,
			 se == SSL_ERROR_ZERO_RETURN || (se == SSL_ERROR_SYSCALL && en == 0)
				 ? "the server closed the connection"
				 : strerror(en));
	}
}

/* One exchange over the new session, before hiredis has it: a server that
 * refuses our certificate after a TLS 1.3 handshake (its alert comes with
 * its first reply) is named here, not as a lost connection later. The
 * question is a bare AUTH: every server answers it (an arity error), and
 * unlike PING it runs no command an ACL would log as denied. 0, or -1 with
 * err set. */
static int probe(SSL *ssl, const struct queue_tls *t, const char *name, char *err, size_t n)
{
	static const char ask[] = "AUTH\r\n";
	ERR_clear_error();
	int r = SSL_write(ssl, ask, (int)strlen(ask));
	if (r <= 0) {
		ssl_fail(ssl, r, "write", t, name, err, n);
		/* a server that refused us may have reset the connection before
		 * our write, its alert already with us: that says more */
		char b[64];
		ERR_clear_error();
		r = SSL_read(ssl, b, sizeof(b));
		if (r <= 0 && SSL_get_error(ssl, r) == SSL_ERROR_SSL)
			ssl_fail(ssl, r, "read", t, name, err, n);
		ERR_clear_error();
		return -1;
	}
	char b[256];
	size_t got = 0;
	while (got < sizeof(b)) {
		ERR_clear_error();
		r = SSL_read(ssl, b + got, (int)(sizeof(b) - got));
		if (r <= 0) {
			ssl_fail(ssl, r, "read", t, name, err, n);
			return -1;
		}
		got += (size_t)r;
		if (memchr(b, '\n', got) != NULL)
			break;
	}
	if (memchr(b, '\n', got) != NULL && (b[0] == '+' || b[0] == '-'))
		return 0;
	snprintf(err, n, "TLS: \"%s\" answered with no Redis reply", name);
	return -1;
}

/* Relay threads still running. At exit we wait for them (at most
 * EXIT_WAIT_MS; each ends as soon as its hiredis context is freed) so that
 * none is cut off inside OpenSSL, and OpenSSL's per-thread state is freed
 * (OPENSSL_thread_stop). Process-wide by nature: threads are. */
#define EXIT_WAIT_MS 1000
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cv = PTHREAD_COND_INITIALIZER;
static int live_threads;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static void wait_relays(void)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += EXIT_WAIT_MS / 1000;
	pthread_mutex_lock(&live_mu);
	while (live_threads > 0 && pthread_cond_timedwait(&live_cv, &live_mu, &until) == 0)
		;
	pthread_mutex_unlock(&live_mu);
}

static void live_init(void)
{
	atexit(wait_relays);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl != -1)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void *srelay_main(void *arg)
{
	struct srelay *r = arg;
	char up[RELAY_BUF], b[RELAY_BUF];
	size_t up_len = 0, up_off = 0, down_len = 0, down_off = 0, down_cap = 0;
	char *down = NULL;
	bool net_done = false;
	set_nonblock(r->net);
	set_nonblock(r->loc);
	for (;;) {
		struct pollfd p[2] = {
			{ r->loc, (short)((!net_done && up_off >= up_len ? POLLIN : 0) |
					  (down_off < down_len ? POLLOUT : 0)), 0 },
			{ net_done ? -1 : r->net, (short)(POLLIN | (up_off < up_len ? POLLOUT : 0)), 0 },
		};
		if (SSL_pending(r->ssl) == 0 && poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (!net_done && up_off >= up_len) { /* hiredis's requests */
			ssize_t k = read(r->loc, up, sizeof(up));
			if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
				break; /* hiredis closed (redisFree) */
			if (k > 0) {
				up_len = (size_t)k;
				up_off = 0;
			}
		}
		while (!net_done && up_off < up_len) {
			ERR_clear_error();
			int w = SSL_write(r->ssl, up + up_off, (int)(up_len - up_off));
			if (w > 0) {
				up_off += (size_t)w;
				continue;
			}
			int e = SSL_get_error(r->ssl, w);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				net_done = true;
			break;
		}
		while (!net_done) { /* the server's replies */
			ERR_clear_error();
			int k = SSL_read(r->ssl, b, sizeof(b));
			if (k > 0) {
				if (down_len + (size_t)k > down_cap) {
					down_cap = (down_len + (size_t)k) * 2;
					down = xrealloc(down, down_cap);
				}
				memcpy(down + down_len, b, (size_t)k);
				down_len += (size_t)k;
				continue;
			}
			int e = SSL_get_error(r->ssl, k);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				net_done = true; /* closed or broken: deliver what came, then close */
			break;
		}
		while (down_off < down_len) {
			ssize_t k = write(r->loc, down + down_off, down_len - down_off);
			if (k > 0) {
				down_off += (size_t)k;
				continue;
			}
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			goto out; /* hiredis is gone */
		}
		if (down_off == down_len)
			down_off = down_len = 0;
		if (net_done && down_len == 0)
			break;
	}
out:
	ERR_clear_error();
	free(down);
	SSL_free(r->ssl);
	close(r->net);
	close(r->loc);
	free(r);
	OPENSSL_thread_stop();
	pthread_mutex_lock(&live_mu);
	live_threads--;
	pthread_cond_broadcast(&live_cv);
	pthread_mutex_unlock(&live_mu);
	return NULL;
}

struct redisContext *redis_tls_connect(const struct queue_tls *t, const char *host, int port,
				       char *err, size_t errlen)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	const char *name = name_of(t, host);
	SSL_CTX *ctx = ctx_new(t, err, errlen);
	if (ctx == NULL)
		return NULL;
	/* hiredis resolves and connects (its timeout); we take the socket */
	redisContext *tcp = redisConnectWithTimeout(host, port, tv);
	if (tcp == NULL || tcp->err) {
		snprintf(err, errlen, "%s", tcp ? tcp->errstr : "out of memory");
		redisFree(tcp);
		SSL_CTX_free(ctx);
		return NULL;
	}
	int net = fcntl(tcp->fd, F_DUPFD_CLOEXEC, 0);
	redisFree(tcp);
	SSL *ssl = net == -1 ? NULL : SSL_new(ctx);
	SSL_CTX_free(ctx); /* ssl holds its own reference */
	if (ssl == NULL) {
		snprintf(err, errlen, "TLS: %s", net == -1 ? strerror(errno) : "out of memory");
		if (net != -1)
			close(net);
		return NULL;
	}
	setsockopt(net, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(net, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if ((!is_ip(name) && SSL_set_tlsext_host_name(ssl, name) != 1) || SSL_set1_host(ssl, name) != 1 ||
	    SSL_set_fd(ssl, net) != 1) {
		snprintf(err, errlen, "TLS: bad name \"%s\"", name);
		goto fail;
	}
	ERR_clear_error();
	int r = SSL_connect(ssl);
	if (r != 1) {
		ssl_fail(ssl, r, "handshake", t, name, err, errlen);
		goto fail;
	}
	if (probe(ssl, t, name, err, errlen) != 0)
		goto fail;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(err, errlen, "TLS relay: socketpair: %s", strerror(errno));
		goto fail;
	}
	struct srelay *sr = xcalloc(1, sizeof(*sr));
	*sr = (struct srelay){ .ssl = ssl, .net = net, .loc = sv[1] };
	pthread_t th;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_once(&live_once, live_init);
	pthread_mutex_lock(&live_mu);
	live_threads++;
	pthread_mutex_unlock(&live_mu);
	int pe = pthread_create(&th, &at, srelay_main, sr);
	pthread_attr_destroy(&at);
	if (pe != 0) {
		pthread_mutex_lock(&live_mu);
		live_threads--;
		pthread_mutex_unlock(&live_mu);
		snprintf(err, errlen, "TLS relay: thread: %s", strerror(pe));
		free(sr);
		close(sv[0]);
		close(sv[1]);
		goto fail;
	}
	redisContext *c = redisConnectFd(sv[0]); /* owns sv[0]; the thread ends when it closes */
	if (c == NULL || c->err) {
		snprintf(err, errlen, "TLS relay: %s", c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
fail:
	SSL_free(ssl);
	close(net);
	return NULL;
}

/* ---- on the ring: `mxsend run` ---- */

struct rbuf {
	char *p;
	size_t len, cap;
};

struct relay {
	struct loop *l;
	struct conn *c;  /* the TLS side; NULL once closed */
	SSL_CTX *ctx;    /* until the handshake starts */
	int fd;          /* our end of hiredis's socket */
	struct loop_op recv_op, send_op, close_op;
	struct loop_task free_task;
	unsigned inflight;
	bool recv_armed, sending, paused, up, net_done, closing; /* up: handshake over */
	struct rbuf pend, fly; /* the server's bytes, for hiredis */
	size_t fly_off;
	char rbuf[RELAY_BUF];
	char server[300]; /* HOST:PORT, for logs */
	char name[256];   /* verified name */
};

static void relay_maybe_free(struct relay *r)
{
	if (r->inflight > 0)
		return;
	if (r->fd != -1) {
		int fd = r->fd;
		r->fd = -1;
		r->inflight++;
		loop_close(r->l, &r->close_op, fd);
		return;
	}
	loop_defer(r->l, &r->free_task);
}

static void relay_close(struct relay *r)
{
	if (r->closing)
		return;
	r->closing = true;
	conn_close(r->c);
	r->c = NULL;
	if (r->recv_armed)
		loop_cancel(r->l, &r->recv_op);
	if (r->sending)
		loop_cancel(r->l, &r->send_op);
	relay_maybe_free(r);
}

static void relay_free_fn(struct loop_task *t)
{
	struct relay *r = container_of(t, struct relay, free_task);
	if (r->inflight > 0)
		return;
	SSL_CTX_free(r->ctx);
	free(r->pend.p);
	free(r->fly.p);
	free(r);
}

static void relay_fail(struct relay *r, const char *what)
{
	char q[400];
	log_warn("evt=redis_tls_failed server=%s name=%s err=\"%s\"", r->server, r->name,
		 log_q(q, sizeof(q), what));
	relay_close(r);
}

static void close_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct relay *r = container_of(op, struct relay, close_op);
	(void)res;
	(void)flags;
	r->inflight--;
	relay_maybe_free(r);
}

static void arm_recv(struct relay *r)
{
	if (r->recv_armed || r->closing || r->net_done)
		return;
	r->recv_armed = true;
	r->inflight++;
	loop_recv(r->l, &r->recv_op, r->fd, r->rbuf, sizeof(r->rbuf));
}

static void start_send(struct relay *r)
{
	if (r->sending || r->closing)
		return;
	if (r->fly_off >= r->fly.len) {
		if (r->pend.len == 0) {
			if (r->net_done)
				relay_close(r); /* the server's last bytes are with hiredis */
			return;
		}
		struct rbuf t = r->fly;
		r->fly = r->pend;
		r->pend = t;
		r->pend.len = 0;
		r->fly_off = 0;
	}
	r->sending = true;
	r->inflight++;
	loop_send(r->l, &r->send_op, r->fd, r->fly.p + r->fly_off, r->fly.len - r->fly_off);
}

/* hiredis's requests, to the server */
static void recv_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct relay *r = container_of(op, struct relay, recv_op);
	(void)flags;
	r->inflight--;
	r->recv_armed = false;
	if (r->closing) {
		relay_maybe_free(r);
		return;
	}
	if (res <= 0 || r->c == NULL) {
		relay_close(r); /* hiredis closed its end */
		return;
	}
	conn_write(r->c, r->rbuf, (size_t)res);
	if (conn_out_pending(r->c) > RELAY_OUT_HIGH)
		r->paused = true;
	else
		arm_recv(r);
}

/* the server's bytes, to hiredis */
static void send_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct relay *r = container_of(op, struct relay, send_op);
	(void)flags;
	r->inflight--;
	r->sending = false;
	if (r->closing) {
		relay_maybe_free(r);
		return;
	}
	if (res < 0) {
		relay_close(r);
		return;
	}
	r->fly_off += (size_t)res;
	if (r->fly_off >= r->fly.len) {
		r->fly.len = r->fly_off = 0;
		if (r->pend.len == 0 && r->fly.cap + r->pend.cap > RELAY_KEEP) {
			/* idle: a claim's megabyte reply is not held until the next */
			free(r->fly.p);
			free(r->pend.p);
			r->fly = r->pend = (struct rbuf){ 0 };
		}
	}
	start_send(r);
}

static void on_connect(void *arg, int err)
{
	struct relay *r = arg;
	if (err != 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect: %s", strerror(-err));
		relay_fail(r, why);
		return;
	}
	struct tls *t = tls_new_ctx(r->ctx, is_ip(r->name) ? NULL : r->name, r->name);
	SSL_CTX_free(r->ctx);
	r->ctx = NULL;
	conn_starttls(r->c, t);
}

static void on_tls(void *arg, int err)
{
	struct relay *r = arg;
	if (err != 0) {
		relay_fail(r, tls_error(conn_tls(r->c)));
		return;
	}
	r->up = true;
	arm_recv(r); /* hiredis's AUTH waited in the socket until now */
}

static void on_read(void *arg, const char *data, size_t n)
{
	struct relay *r = arg;
	if (r->pend.len + n > r->pend.cap) {
		r->pend.cap = (r->pend.len + n) * 2;
		r->pend.p = xrealloc(r->pend.p, r->pend.cap);
	}
	memcpy(r->pend.p + r->pend.len, data, n);
	r->pend.len += n;
	start_send(r);
}

static void on_error(void *arg, int err)
{
	struct relay *r = arg;
	if (err == -EPROTO) {
		struct tls *t = conn_tls(r->c);
		relay_fail(r, t && tls_error(t)[0] ? tls_error(t) : "TLS error");
		return;
	}
	if (err < 0 || !r->up) {
		relay_fail(r, err < 0 ? strerror(-err) : "the server closed the connection during the TLS handshake");
		return;
	}
	/* the server closed: hand hiredis what came first, then close */
	r->net_done = true;
	conn_close(r->c);
	r->c = NULL;
	start_send(r);
}

static void on_drain(void *arg)
{
	struct relay *r = arg;
	if (r->paused) {
		r->paused = false;
		arm_recv(r);
	}
}

static const struct conn_cb relay_cb = {
	.on_connect = on_connect, .on_read = on_read, .on_tls = on_tls,
	.on_error = on_error, .on_drain = on_drain,
};

/* hiredis's end: a unix socket it connects to (a connect that completes at
 * once), accepted here; the directory (0700, TMPDIR or /tmp) is gone before
 * we return. */
static redisAsyncContext *local_pair(int *fd, char *why, size_t n)
{
	const char *tmp = getenv("TMPDIR");
	char dir[96];
	if (tmp == NULL || tmp[0] != '/' || strlen(tmp) > 64)
		tmp = "/tmp";
	snprintf(dir, sizeof(dir), "%s/mxsend-redis.XXXXXX", tmp);
	*fd = -1;
	if (mkdtemp(dir) == NULL) {
		snprintf(why, n, "TLS relay: mkdtemp %s: %s", dir, strerror(errno));
		return NULL;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
	redisAsyncContext *ac = NULL;
	int e = 0, ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (ls != -1 && bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 1) == 0) {
		ac = redisAsyncConnectUnix(sa.sun_path);
		if (ac != NULL && ac->err == 0)
			*fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	}
	e = errno;
	if (ls != -1)
		close(ls);
	unlink(sa.sun_path);
	rmdir(dir);
	if (*fd == -1) {
		snprintf(why, n, "TLS relay: local socket: %s",
			 ac != NULL && ac->err ? ac->errstr : strerror(e));
		if (ac != NULL)
			redisAsyncFree(ac);
		return NULL;
	}
	return ac;
}

struct redisAsyncContext *redis_tls_connect_async(struct loop *l, const struct queue_tls *t,
						  const char *host, int port, char *why, size_t n)
{
	SSL_CTX *ctx = ctx_new(t, why, n);
	if (ctx == NULL)
		return NULL;
	/* blocking for a host name, as hiredis's own redisAsyncConnect */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	int ge = getaddrinfo(host, ps, &hints, &ai);
	if (ge != 0 || ai == NULL) {
		snprintf(why, n, "cannot resolve %s: %s", host, ge ? gai_strerror(ge) : "no address");
		SSL_CTX_free(ctx);
		return NULL;
	}
	int fd;
	redisAsyncContext *ac = local_pair(&fd, why, n);
	if (ac == NULL) {
		freeaddrinfo(ai);
		SSL_CTX_free(ctx);
		return NULL;
	}
	struct relay *r = xcalloc(1, sizeof(*r));
	r->l = l;
	r->ctx = ctx;
	r->fd = fd;
	r->recv_op.fn = recv_cqe;
	r->send_op.fn = send_cqe;
	r->close_op.fn = close_cqe;
	loop_task_init(&r->free_task, relay_free_fn);
	snprintf(r->server, sizeof(r->server), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	strlcpy_x(r->name, name_of(t, host), sizeof(r->name));
	r->c = conn_new(l, &relay_cb, r);
	int ce = conn_connect(r->c, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (ce != 0) {
		snprintf(why, n, "connect to %s: %s", r->server, strerror(-ce));
		relay_close(r);
		redisAsyncFree(ac);
		return NULL;
	}
	return ac;
}
