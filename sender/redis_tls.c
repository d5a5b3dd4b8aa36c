/* redis_tls.c: rediss:// relays for hiredis (see redis_tls.h). TLS itself is
 * tls.c's engine over memory BIOs on both paths: no OpenSSL call here.
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
 * Blocking relay (struct srelay, a detached thread): the handshake and the
 * check run in the caller on the blocking socket (5 s timeouts); then both
 * sockets are non-blocking and one poll() serves both: hiredis's requests
 * are read while less than RELAY_OUT_HIGH waits for the server, replies are
 * queued without a cap (a pipelined enqueue reads its replies only after
 * writing every command). */
#define _GNU_SOURCE /* accept4 */
#include "sender/redis_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
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
#define PROBE_READS 64            /* reads for the handshake, and for the check's reply, at most */
#define RESET_GRACE_MS 200        /* a reset's reason (the server's alert) awaited this long */

/* The TLS context (the blocking path builds one per connection, run one at
 * start: redis_tls_new): the chain must verify against tls_ca, TLS 1.2 at
 * least. */
static struct ssl_ctx_st *ctx_new(const struct queue_tls *t, char *err, size_t n)
{
	char why[400];
	struct ssl_ctx_st *ctx = tls_ctx_new_client(t->ca_file, t->cert_file, t->key_file, why, sizeof(why));
	if (ctx == NULL)
		snprintf(err, n, "TLS: %s", why);
	return ctx;
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

int redis_tls_check(const struct queue_tls *t, char *err, size_t errlen)
{
	struct ssl_ctx_st *ctx = ctx_new(t, err, errlen);
	tls_ctx_free(ctx);
	return ctx ? 0 : -1;
}

/* ---- blocking: the short-lived commands ---- */

struct sbuf {
	char *p;
	size_t len, off, cap;
};

static void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static size_t sbuf_left(const struct sbuf *b)
{
	return b->len - b->off;
}

/* The engine's ciphertext, for the server (tls_set_output). */
static void to_net(void *arg, const void *buf, size_t n)
{
	sbuf_add(arg, buf, n);
}

struct srelay {
	struct tls *t;
	int net;          /* the TCP socket to the server */
	int loc;          /* our end of hiredis's socketpair */
	struct sbuf out;  /* ciphertext for the server */
	struct sbuf down; /* plaintext for hiredis */
};

/* Send out to the blocking socket, all of it: 0 or -errno. */
static int flush_all(int fd, struct sbuf *b)
{
	while (sbuf_left(b) > 0) {
		ssize_t k = send(fd, b->p + b->off, sbuf_left(b), MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
		b->off += (size_t)k;
	}
	b->len = b->off = 0;
	return 0;
}

/* One read from the blocking socket into the engine: 0 or -errno
 * (-ETIMEDOUT after 5 s, -ECONNRESET when the server closed). */
static int feed(int fd, struct tls *t)
{
	char buf[RELAY_BUF];
	ssize_t k;
	do
		k = recv(fd, buf, sizeof(buf), 0);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
	if (k == 0)
		return -ECONNRESET;
	tls_net_in(t, buf, (size_t)k);
	return 0;
}

/* Why the session failed, for "redis: connect to URL: ...": the engine's
 * text (a failed verification with the CA it was checked against), else the
 * socket's (e: -errno). */
static void sfail(struct tls *t, int e, const char *what, const struct queue_tls *qt, const char *name,
		  char *err, size_t n)
{
	if (tls_error(t)[0] != '\0')
		snprintf(err, n, "TLS with \"%s\": %s%s%s%s", name, tls_error(t),
			 tls_failed_verify(t) ? " (tls_ca " : "", tls_failed_verify(t) ? ca_name(qt) : "",
			 tls_failed_verify(t) ? ")" : "");
	else if (e == -ETIMEDOUT)
		snprintf(err, n, "TLS %s with \"%s\": timed out (%d s)", what, name, IO_TIMEOUT_S);
	else
		snprintf(err, n, "TLS %s with \"%s\": %s", what, name,
			 e == -ECONNRESET ? "the server closed the connection" : strerror(-e));
}

/* The handshake, then one exchange before hiredis has the session: a server
 * that refuses our certificate after a TLS 1.3 handshake (its alert comes
 * with its first reply) is named here, not as a lost connection later. The
 * question is a bare AUTH: every server answers it (an arity error), and
 * unlike PING it runs no command an ACL would log as denied. 0, or -1 with
 * err set. */
static int open_session(struct srelay *r, const struct queue_tls *qt, const char *name, char *err,
			size_t n)
{
	int e = 0;
	uint64_t until = mono_ms() + 2000u * IO_TIMEOUT_S; /* the whole: however slowly bytes come */
	for (int i = 0;; i++) {
		enum tls_rc rc = tls_handshake(r->t);
		int fe = flush_all(r->net, &r->out); /* a flight, or the alert of a failure */
		if (rc == TLS_OK)
			break;
		if (rc != TLS_AGAIN)
			e = -EPROTO;
		else if (fe != 0)
			e = fe;
		else if (i >= PROBE_READS || mono_ms() > until)
			e = -ETIMEDOUT;
		else
			e = feed(r->net, r->t);
		if (e != 0) {
			sfail(r->t, e, "handshake", qt, name, err, n);
			return -1;
		}
	}
	size_t done = 0;
	if (tls_write(r->t, "AUTH\r\n", 6, &done) != TLS_OK) {
		sfail(r->t, -EPROTO, "write", qt, name, err, n);
		return -1;
	}
	int we = flush_all(r->net, &r->out);
	if (we != 0) /* a refusal may have reset the connection: its alert is still to read */
		r->out.len = r->out.off = 0;
	char b[256];
	size_t got = 0;
	for (int i = 0; i < PROBE_READS && got < sizeof(b) && memchr(b, '\n', got) == NULL; i++) {
		size_t k = 0;
		enum tls_rc rc = tls_read(r->t, b + got, sizeof(b) - got, &k);
		if (rc == TLS_OK) {
			got += k;
			continue;
		}
		e = rc != TLS_AGAIN ? -EPROTO : mono_ms() > until ? -ETIMEDOUT : feed(r->net, r->t);
		if (e == 0 && we == 0)
			e = flush_all(r->net, &r->out); /* key updates */
		if (e != 0) {
			sfail(r->t, we != 0 && e != -EPROTO ? we : e, "read", qt, name, err, n);
			return -1;
		}
	}
	if (memchr(b, '\n', got) != NULL && (b[0] == '+' || b[0] == '-'))
		return 0;
	snprintf(err, n, "TLS: \"%s\" answered with no Redis reply", name);
	return -1;
}

/* Relay threads still running. At exit we wait for them (at most
 * EXIT_WAIT_S; each ends as soon as its hiredis context is freed) so that
 * none is cut off inside OpenSSL, and its per-thread state is freed
 * (tls_thread_end). Process-wide by nature: threads are. */
#define EXIT_WAIT_S 1
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cv = PTHREAD_COND_INITIALIZER;
static int live_threads;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static void wait_relays(void)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += EXIT_WAIT_S;
	pthread_mutex_lock(&live_mu);
	while (live_threads > 0 && pthread_cond_timedwait(&live_cv, &live_mu, &until) == 0)
		;
	pthread_mutex_unlock(&live_mu);
}

static void live_init(void)
{
	atexit(wait_relays);
}

static void live_add(int d)
{
	pthread_mutex_lock(&live_mu);
	live_threads += d;
	pthread_cond_broadcast(&live_cv);
	pthread_mutex_unlock(&live_mu);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl != -1)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void srelay_free(struct srelay *r)
{
	tls_free(r->t);
	if (r->net != -1)
		close(r->net);
	if (r->loc != -1)
		close(r->loc);
	free(r->out.p);
	free(r->down.p);
	free(r);
}

/* The server's bytes: decrypted into down. false when the session ended. */
static bool net_in(struct srelay *r)
{
	char buf[RELAY_BUF];
	ssize_t k = read(r->net, buf, sizeof(buf));
	if (k < 0)
		return errno == EAGAIN || errno == EINTR;
	if (k == 0)
		return false;
	tls_net_in(r->t, buf, (size_t)k);
	for (;;) {
		size_t got = 0;
		enum tls_rc rc = tls_read(r->t, buf, sizeof(buf), &got);
		if (rc == TLS_AGAIN)
			return true;
		if (rc != TLS_OK)
			return false; /* closed or broken: deliver what came, then close */
		sbuf_add(&r->down, buf, got);
	}
}

/* Write what b holds to fd without blocking: false on a hard error. */
static bool drain(int fd, struct sbuf *b)
{
	while (sbuf_left(b) > 0) {
		ssize_t k = send(fd, b->p + b->off, sbuf_left(b), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (k <= 0)
			return false;
		b->off += (size_t)k;
	}
	if (b->cap > RELAY_KEEP) {
		free(b->p);
		*b = (struct sbuf){ 0 };
	}
	b->len = b->off = 0;
	return true;
}

static void *srelay_main(void *arg)
{
	struct srelay *r = arg;
	char buf[RELAY_BUF];
	bool net_done = false;
	set_nonblock(r->net);
	set_nonblock(r->loc);
	for (;;) {
		bool take = !net_done && sbuf_left(&r->out) < RELAY_OUT_HIGH;
		struct pollfd p[2] = {
			{ r->loc, (short)((take ? POLLIN : 0) | (sbuf_left(&r->down) ? POLLOUT : 0)), 0 },
			{ net_done ? -1 : r->net, (short)(POLLIN | (sbuf_left(&r->out) ? POLLOUT : 0)), 0 },
		};
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (take && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) { /* hiredis's requests */
			ssize_t k = read(r->loc, buf, sizeof(buf));
			if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
				break; /* hiredis closed (redisFree) */
			size_t done = 0;
			if (k > 0 && tls_write(r->t, buf, (size_t)k, &done) != TLS_OK)
				net_done = true;
		}
		if (!net_done && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			net_done = !net_in(r);
		if (!net_done && !drain(r->net, &r->out))
			net_done = true;
		if (!drain(r->loc, &r->down))
			break; /* hiredis is gone */
		if (net_done && sbuf_left(&r->down) == 0)
			break;
	}
	srelay_free(r);
	tls_thread_end();
	live_add(-1);
	return NULL;
}

struct redisContext *redis_tls_connect(const struct queue_tls *t, const char *host, int port,
				       char *err, size_t errlen)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	const char *name = name_of(t, host);
	struct ssl_ctx_st *ctx = ctx_new(t, err, errlen);
	if (ctx == NULL)
		return NULL;
	/* hiredis resolves and connects (its timeout); we take the socket */
	redisContext *tcp = redisConnectWithTimeout(host, port, tv);
	if (tcp == NULL || tcp->err) {
		snprintf(err, errlen, "%s", tcp ? tcp->errstr : "out of memory");
		redisFree(tcp);
		tls_ctx_free(ctx);
		return NULL;
	}
	struct srelay *r = xcalloc(1, sizeof(*r));
	r->net = fcntl(tcp->fd, F_DUPFD_CLOEXEC, 0);
	r->loc = -1;
	redisFree(tcp);
	r->t = tls_new_ctx(ctx, is_ip(name) ? NULL : name, name);
	tls_ctx_free(ctx); /* the session holds its own reference */
	tls_set_output(r->t, to_net, &r->out);
	if (r->net == -1) {
		snprintf(err, errlen, "TLS: %s", strerror(errno));
		goto fail;
	}
	setsockopt(r->net, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(r->net, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (open_session(r, t, name, err, errlen) != 0)
		goto fail;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(err, errlen, "TLS relay: socketpair: %s", strerror(errno));
		goto fail;
	}
	r->loc = sv[1];
	pthread_t th;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_once(&live_once, live_init);
	live_add(1);
	int pe = pthread_create(&th, &at, srelay_main, r);
	pthread_attr_destroy(&at);
	if (pe != 0) {
		live_add(-1);
		snprintf(err, errlen, "TLS relay: thread: %s", strerror(pe));
		close(sv[0]);
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
	srelay_free(r);
	return NULL;
}

/* ---- on the ring: `mxsend run` ---- */

struct relay {
	struct loop *l;
	struct conn *c;  /* the TLS side; NULL once closed */
	struct tls *t;   /* the session, until the conn takes it (on_connect) */
	int fd;          /* our end of hiredis's socket */
	struct loop_op recv_op, send_op, close_op;
	struct loop_task free_task;
	unsigned inflight;
	bool recv_armed, sending, paused, up, net_done, closing; /* up: handshake over */
	int reset;               /* -errno of a connection error, its reason awaited (grace) */
	struct loop_timer grace;
	struct sbuf pend, fly; /* the server's bytes, for hiredis (fly: on the wire, from off) */
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
	loop_timer_stop(r->l, &r->grace);
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
	tls_free(r->t);
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
	if (r->recv_armed || r->closing || r->net_done || r->reset != 0)
		return; /* (after a reset, nothing more is sent: see on_error) */
	r->recv_armed = true;
	r->inflight++;
	loop_recv(r->l, &r->recv_op, r->fd, r->rbuf, sizeof(r->rbuf));
}

static void start_send(struct relay *r)
{
	if (r->sending || r->closing)
		return;
	if (sbuf_left(&r->fly) == 0) {
		if (r->pend.len == 0) {
			if (r->net_done)
				relay_close(r); /* the server's last bytes are with hiredis */
			return;
		}
		struct sbuf t = r->fly;
		r->fly = r->pend;
		r->pend = t;
		r->pend.len = r->pend.off = 0;
	}
	r->sending = true;
	r->inflight++;
	loop_send(r->l, &r->send_op, r->fd, r->fly.p + r->fly.off, sbuf_left(&r->fly));
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
	if (r->reset != 0)
		return; /* failing: its reason is awaited (on_error) */
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
	r->fly.off += (size_t)res;
	if (sbuf_left(&r->fly) == 0) {
		r->fly.len = r->fly.off = 0;
		if (r->pend.len == 0 && r->fly.cap + r->pend.cap > RELAY_KEEP) {
			/* idle: a claim's megabyte reply is not held until the next */
			free(r->fly.p);
			free(r->pend.p);
			r->fly = r->pend = (struct sbuf){ 0 };
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
	struct tls *t = r->t;
	r->t = NULL;
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
	sbuf_add(&r->pend, data, n);
	start_send(r);
}

static void grace_fn(struct loop_timer *t)
{
	struct relay *r = container_of(t, struct relay, grace);
	relay_fail(r, strerror(-r->reset));
}

static void on_error(void *arg, int err)
{
	struct relay *r = arg;
	if (err == -EPROTO) {
		struct tls *t = conn_tls(r->c);
		relay_fail(r, t && tls_error(t)[0] ? tls_error(t) : "TLS error");
		return;
	}
	if (err < 0 && r->reset == 0) {
		/* A server that refuses our certificate after a TLS 1.3 handshake
		 * sends its alert and closes: our next send may meet the reset
		 * before our receive has read the alert, which says more. The
		 * receive side gets RESET_GRACE_MS to tell. */
		r->reset = err;
		loop_timer_arm(r->l, &r->grace, RESET_GRACE_MS);
		return;
	}
	if (err < 0 || r->reset != 0 || !r->up) {
		relay_fail(r, r->reset != 0 ? strerror(-r->reset)
			      : err < 0    ? strerror(-err)
					   : "the server closed the connection during the TLS handshake");
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

struct redis_tls {
	struct ssl_ctx_st *ctx;
	struct queue_tls t; /* its strings borrowed */
};

struct redis_tls *redis_tls_new(const struct queue_tls *t, char *err, size_t errlen)
{
	struct ssl_ctx_st *ctx = ctx_new(t, err, errlen);
	if (ctx == NULL)
		return NULL;
	struct redis_tls *rt = xcalloc(1, sizeof(*rt));
	rt->ctx = ctx;
	rt->t = *t;
	return rt;
}

void redis_tls_free(struct redis_tls *rt)
{
	if (rt == NULL)
		return;
	tls_ctx_free(rt->ctx); /* sessions still open hold their own reference */
	free(rt);
}

struct redisAsyncContext *redis_tls_connect_async(struct loop *l, struct redis_tls *rt, const char *host,
						  int port, char *why, size_t n)
{
	/* blocking for a host name, as hiredis's own redisAsyncConnect */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	int ge = getaddrinfo(host, ps, &hints, &ai);
	if (ge != 0 || ai == NULL) {
		snprintf(why, n, "cannot resolve %s: %s", host, ge ? gai_strerror(ge) : "no address");
		return NULL;
	}
	int fd;
	redisAsyncContext *ac = local_pair(&fd, why, n);
	if (ac == NULL) {
		freeaddrinfo(ai);
		return NULL;
	}
	struct relay *r = xcalloc(1, sizeof(*r));
	r->l = l;
	r->fd = fd;
	r->recv_op.fn = recv_cqe;
	r->send_op.fn = send_cqe;
	r->close_op.fn = close_cqe;
	loop_task_init(&r->free_task, relay_free_fn);
	loop_timer_init(&r->grace, grace_fn);
	snprintf(r->server, sizeof(r->server), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	strlcpy_x(r->name, name_of(&rt->t, host), sizeof(r->name));
	r->t = tls_new_ctx(rt->ctx, is_ip(r->name) ? NULL : r->name, r->name);
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
