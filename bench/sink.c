/*
 * bench/sink.c: mxsink, the scriptable TLS SMTP sink that mxsend's tests and benchmarks deliver
 * to, and a tool users aim at any sender to measure it.  usage() below is the command line.
 *
 * Threads: N workers, each with its own epoll instance, its own SO_REUSEPORT listening socket on
 * every --listen address and its own connections.  Shared between them: the configuration
 * (immutable once they run), the SSL_CTX (thread-safe in OpenSSL 3) and atomic counters.  The
 * main thread waits for signals, prints the stats line and trims the heap after handshake storms.
 *
 * I/O: edge-triggered epoll, EPOLLIN|EPOLLOUT registered once per connection, so every event
 * simply re-runs conn_run(): flush pending replies, perform the action that waited for them
 * (close, start TLS, stall), then read and process input until the socket or SSL says "again".
 * Input is read into one per-worker scratch buffer.  Between reads a connection keeps only a
 * partial command line (<= 2 KiB), its reply buffer only while replies are unsent, and message
 * bytes only with --maildir, so an idle session costs its struct and its SSL object.
 * Backpressure: input is read only while no reply is pending; a client that does not read its
 * replies stalls itself, never the worker.  A worker reads at most RUN_BUDGET chunks for one
 * connection before serving the others (the pending list).
 *
 * Lifetimes: conn_close() releases fd, SSL and buffers at once, but the struct is freed only at
 * the end of the loop iteration, because later events of the same epoll batch may still point
 * at it (they see c->dead and are skipped).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sender/util.h"

#define CMD_LINE_MAX 2048             /* command line without CRLF (Postfix line_limit) */
#define HARD_MSG_MAX (64ull << 20)    /* message cap when --size is not given */
#define MAX_RCPT 1000                 /* accepted recipients per transaction */
#define SCRATCH_PREFIX 4096           /* room before the scratch data for a saved partial line */
#define SCRATCH_SIZE (256u << 10)     /* per-worker read buffer */
#define RUN_BUDGET 16                 /* reads for one connection before serving others */
#define MAX_EVENTS 512
#define MAX_LISTEN 16384              /* listening sockets per worker */
#define LISTEN_BACKLOG 65535          /* the kernel caps it at somaxconn */

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

enum { IO_OK, IO_AGAIN, IO_EOF, IO_ERR };

/* --tls-fail[=KIND]: what answers the ClientHello */
enum { TLS_FAIL_NONE, TLS_FAIL_GARBAGE, TLS_FAIL_ALERT, TLS_FAIL_CUT };

enum stall {
	STALL_NONE, STALL_BANNER, STALL_EHLO, STALL_STARTTLS, STALL_TLS, STALL_MAIL,
	STALL_RCPT, STALL_DATA, STALL_DOT, STALL_RSET, STALL_QUIT, STALL_N
};

static const char *const stall_names[STALL_N] = {
	"none", "banner", "ehlo", "starttls", "tls", "mail", "rcpt", "data", "dot", "rset", "quit",
};

/* A scripted reply.  code 0: not given, use the default.  wire: the whole reply with CRLF,
 * multi-line when the text held the two characters "\n". */
struct reply {
	int code;
	char *wire;
};

struct rcpt_rule {
	char *pat;
	size_t plen;
	bool prefix;
	struct reply r;
};

union saddr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct laddr {
	union saddr a;
	socklen_t len;
};

struct counters {
	_Atomic uint64_t connections, handshakes, resumed, messages, recipients, bytes, active,
		peak, rejected, authfail, quits, quits_pipelined, seq, auths, mails, limited;
};

/* --limit R[:BURST]: a token bucket per client address (R per second, BURST
 * tokens, default R), shared by the threads under one mutex; a MAIL that
 * finds it empty is answered 421 4.7.28 and the connection closed, as Gmail
 * does. LIM_MAX addresses at most (more share the last slots' hash). */
#define LIM_MAX 256
struct limiter {
	pthread_mutex_t mu;
	double rate, burst;
	struct { bool used; union saddr a; double tokens; uint64_t at_us; } b[LIM_MAX];
};

struct sink {
	/* configuration: set by main() before the workers start, read-only afterwards */
	struct laddr *listen, *stats;
	size_t nlisten, nstats;
	const char *cert, *key, *hostname, *maildir, *pidfile;
	char *auth_user, *auth_pass;   /* --auth USER:PASS; NULL: AUTH not offered */
	size_t auth_ulen, auth_plen;
	unsigned threads, delay_ms;
	int tls_max;
	int no_starttls, no_tickets, drop_in_data, no_pipelining, no_8bitmime,
		no_smtputf8, no_ehlo, chunking, tls_on_connect, bdat_refuse;   /* int: getopt_long sets them */
	int tls_fail;             /* TLS_FAIL_*: how the handshake fails (0: it does not) */
	unsigned extra_ms;        /* --extra-reply MS */
	bool extra_on;            /* --extra-reply given (MS 0: in the same write) */
	uint64_t dot_after;       /* --dot-after N: --dot applies from message N+1 of a connection */
	int verbosity;            /* 0 --quiet, 1 errors, 2 -v: one line per session */
	struct reply greeting, mail, dot;
	struct rcpt_rule *rules;
	size_t nrules;
	enum stall stall;
	int64_t after421;         /* -1: off */
	uint64_t msg_max;         /* --size, or HARD_MSG_MAX */
	bool starttls;            /* STARTTLS is offered before TLS */
	struct limiter lim;       /* --limit (rate 0: off) */
	SSL_CTX *ssl_ctx;
	char *banner, *ehlo[2];   /* ehlo[0] before TLS, ehlo[1] inside TLS */
	struct counters k;
};

struct link {
	struct link *prev, *next;
};

/* What an epoll event's data.ptr points at. */
struct item {
	enum { IT_LISTEN, IT_STATS, IT_CONN } kind;
	int fd;
};

struct worker {
	struct sink *sk;
	int epfd;
	int reserve_fd;           /* spare fd, given up to shed a connection on EMFILE */
	char *scratch;            /* SCRATCH_PREFIX + SCRATCH_SIZE bytes */
	struct item *listeners;   /* one per --listen address, then the stats listener */
	struct link pending;      /* connections that used up their read budget */
	struct link timers;       /* --delay-ms; the delay is constant, so FIFO = deadline order */
	struct link dead;         /* closed connections, freed at the end of the iteration */
	char err[256];            /* text of the last I/O error, for conn_close() */
};

enum cstate { C_CMD, C_BODY, C_BDAT, C_TLS_HS, C_STALL, C_TLSFAIL, C_DRAIN };
enum after { A_NONE, A_CLOSE, A_TLS, A_STALL, A_TLSFAIL };
enum astep { AS_NONE, AS_PLAIN, AS_LOGIN_USER, AS_LOGIN_PASS };   /* a 334 is outstanding */
enum bstate { B_BOL, B_MID, B_DOT, B_DOTCR };
/* --extra-reply MS, after a final reply to the end of data: owed (input after it is kept,
 * unread); MS later the extra reply goes out; if input was kept, it is read MS after that,
 * so the extra reply reaches the client on its own, before the answers to what it sent. */
enum { EX_NONE, EX_DUE, EX_REPLY, EX_HOLD_DUE, EX_HOLD };

#define CL_ERROR (1u << 0)    /* conn_close(): log it as an error */
#define CL_CLEAN (1u << 1)    /* send TLS close_notify */
#define CL_ABRUPT (1u << 2)   /* RST instead of FIN */

struct conn {
	struct item it;           /* first: epoll data.ptr points here */
	struct worker *w;
	SSL *ssl;
	struct link plink;        /* worker pending list, then dead list */
	struct link tlink;        /* worker timer list */
	uint64_t deadline, t0;
	char *in;                 /* partial command line kept between reads */
	size_t inlen;
	char *out;                /* unsent replies */
	size_t olen, ooff, ocap;
	const char *why;          /* why A_CLOSE closes */
	uint8_t state, after, bstate, helo, auth_step;
	bool dead, delay_done, skip_line, no_service, in_mail, bdat_mode, bdat_last, too_big;
	bool authed, auth_user_ok;   /* AUTH succeeded; AUTH LOGIN: the user name matched */
	uint8_t extra;            /* --extra-reply: EX_* */
	uint64_t nfinal;          /* final replies to DATA/BDAT LAST on this connection */
	int bdat_err;             /* swallow this BDAT chunk, then answer with this error */
	uint32_t ncmds, nrcpt_ok, nmsgs, rcap;
	uint64_t msize, bdat_left, bdat_size;
	char *msg;                /* message bytes, only with --maildir */
	size_t mlen, mcap;
	char *mail_from, *helo_name, **rcpts;   /* only with --maildir */
	union saddr peer;
};

/* ---------- small helpers ---------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mxsink: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* One line to stderr; stdio's lock keeps lines of different threads apart. */
static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	flockfile(stderr);
	fputs("mxsink: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

static void link_init(struct link *l) { l->prev = l->next = l; }
static bool link_on(const struct link *l) { return l->next != l; }

static void link_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static void link_add_tail(struct link *head, struct link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static void fmt_addr(const union saddr *a, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	bool v6 = a->sa.sa_family == AF_INET6;
	inet_ntop(a->sa.sa_family, v6 ? (const void *)&a->in6.sin6_addr : (const void *)&a->in4.sin_addr,
		ip, sizeof ip);
	snprintf(buf, n, v6 ? "[%s]:%u" : "%s:%u", ip, ntohs(v6 ? a->in6.sin6_port : a->in4.sin_port));
}

static void count(_Atomic uint64_t *ctr, uint64_t n)
{
	atomic_fetch_add_explicit(ctr, n, memory_order_relaxed);
}

static int stats_format(struct counters *k, char *buf, size_t n)
{
	return snprintf(buf, n,
		"connections=%" PRIu64 " handshakes=%" PRIu64 " resumed=%" PRIu64
		" messages=%" PRIu64 " recipients=%" PRIu64 " bytes=%" PRIu64
		" active=%" PRIu64 " peak=%" PRIu64 " rejected=%" PRIu64 " authfail=%" PRIu64
		" quits=%" PRIu64 " quits_pipelined=%" PRIu64 " auths=%" PRIu64 " mails=%" PRIu64
		" limited=%" PRIu64 "\n",
		atomic_load(&k->connections), atomic_load(&k->handshakes), atomic_load(&k->resumed),
		atomic_load(&k->messages), atomic_load(&k->recipients), atomic_load(&k->bytes),
		atomic_load(&k->active), atomic_load(&k->peak), atomic_load(&k->rejected),
		atomic_load(&k->authfail),
		atomic_load(&k->quits), atomic_load(&k->quits_pipelined), atomic_load(&k->auths),
		atomic_load(&k->mails), atomic_load(&k->limited));
}

/* The client's address (port ignored) takes a token of --limit: false when
 * its bucket is empty. */
static bool lim_take(struct limiter *l, const union saddr *peer)
{
	union saddr a;
	memset(&a, 0, sizeof a);
	size_t alen;
	const unsigned char *p;
	if (peer->sa.sa_family == AF_INET6) {
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_addr = peer->in6.sin6_addr;
		p = (const unsigned char *)&a.in6.sin6_addr;
		alen = 16;
	} else {
		a.in4.sin_family = AF_INET;
		a.in4.sin_addr = peer->in4.sin_addr;
		p = (const unsigned char *)&a.in4.sin_addr;
		alen = 4;
	}
	unsigned h = 2166136261u;
	for (size_t i = 0; i < alen; i++)
		h = (h ^ p[i]) * 16777619u;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	bool ok;
	pthread_mutex_lock(&l->mu);
	size_t i = h % LIM_MAX;
	for (size_t k = 0; k < LIM_MAX && l->b[i].used && memcmp(&l->b[i].a, &a, sizeof a) != 0; k++)
		i = (i + 1) % LIM_MAX;
	if (!l->b[i].used) {
		l->b[i].used = true;
		l->b[i].a = a;
		l->b[i].tokens = l->burst;
		l->b[i].at_us = now;
	}
	double t = l->b[i].tokens + (double)(now - l->b[i].at_us) * l->rate / 1e6;
	if (t > l->burst)
		t = l->burst;
	l->b[i].at_us = now;
	ok = t >= 1.0;
	l->b[i].tokens = ok ? t - 1.0 : t;
	pthread_mutex_unlock(&l->mu);
	return ok;
}

/* ---------- replies ---------- */

static void out_append(struct conn *c, const char *p, size_t n)
{
	if (c->ocap - c->olen < n) {
		size_t cap = c->ocap ? c->ocap : 1024;
		while (cap - c->olen < n)
			cap *= 2;
		c->out = xrealloc(c->out, cap);
		c->ocap = cap;
	}
	memcpy(c->out + c->olen, p, n);
	c->olen += n;
}

/* s is a complete reply, CRLF included. */
static void reply(struct conn *c, const char *s) { out_append(c, s, strlen(s)); }

/* For short formatted replies (every format here stays far below 512 bytes). */
static void replyf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(struct conn *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		out_append(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ---------- connection lifetime ---------- */

static void txn_reset(struct conn *c)
{
	c->in_mail = c->bdat_mode = c->too_big = false;
	c->msize = c->mlen = c->mcap = 0;
	free(c->msg);
	free(c->mail_from);
	c->msg = c->mail_from = NULL;
	for (uint32_t i = 0; c->rcpts && i < c->nrcpt_ok; i++)
		free(c->rcpts[i]);
	free(c->rcpts);
	c->rcpts = NULL;
	c->rcap = c->nrcpt_ok = 0;
}

/* What RFC 3207 §4.2 says to forget after STARTTLS; also used at close. */
static void session_reset(struct conn *c)
{
	txn_reset(c);
	c->helo = 0;
	c->auth_step = AS_NONE;
	c->authed = c->auth_user_ok = false;
	free(c->helo_name);
	free(c->in);
	c->helo_name = c->in = NULL;
	c->inlen = 0;
	c->skip_line = false;
}

static void conn_close(struct conn *c, const char *why, unsigned how)
{
	struct sink *sk = c->w->sk;
	if (c->dead)
		return;
	if (sk->verbosity >= 2 || (sk->verbosity >= 1 && (how & CL_ERROR))) {
		char peer[64], local[64] = "?";
		union saddr la;
		socklen_t ll = sizeof la;
		fmt_addr(&c->peer, peer, sizeof peer);
		if (getsockname(c->it.fd, &la.sa, &ll) == 0)
			fmt_addr(&la, local, sizeof local);
		log_line("evt=%s peer=%s local=%s tls=%s resumed=%s cmds=%u msgs=%u ms=%" PRIu64
			" why=\"%s\"", how & CL_ERROR ? "error" : "session", peer, local,
			c->ssl ? SSL_get_version(c->ssl) : "none",
			c->ssl && SSL_session_reused(c->ssl) ? "yes" : "no", c->ncmds, c->nmsgs,
			mono_ms() - c->t0, why);
	}
	link_del(&c->plink);
	link_del(&c->tlink);
	if (c->ssl) {
		if (how & CL_CLEAN)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	if (how & CL_ABRUPT)
		setsockopt(c->it.fd, SOL_SOCKET, SO_LINGER, &(struct linger){ 1, 0 }, sizeof(struct linger));
	close(c->it.fd);
	session_reset(c);
	free(c->out);
	c->dead = true;
	link_add_tail(&c->w->dead, &c->plink);
	atomic_fetch_sub_explicit(&sk->k.active, 1, memory_order_relaxed);
}

static void close_after_reply(struct conn *c, const char *why)
{
	c->after = A_CLOSE;
	c->why = why;
}

/* The 220 banner (or the scripted greeting): at accept, or after the handshake with
 * --tls-on-connect. */
static void greet(struct conn *c)
{
	struct sink *sk = c->w->sk;
	if (sk->stall == STALL_BANNER) {
		c->state = C_STALL;
	} else if (sk->greeting.code) {
		reply(c, sk->greeting.wire);
		if (sk->greeting.code / 100 == 4)
			close_after_reply(c, "--greeting 4xx");
		c->no_service = sk->greeting.code / 100 == 5;
	} else {
		reply(c, sk->banner);
	}
}

/* ---------- TLS ---------- */

/* The one place SSL_get_error is translated.  ret is what the SSL call returned; errno must
 * have been cleared before that call.  Error text goes to c->w->err. */
static int tls_status(struct conn *c, int ret, const char *op)
{
	int saved = errno, e = SSL_get_error(c->ssl, ret), io = IO_ERR;
	const char *why = "protocol error";
	unsigned long code;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return IO_AGAIN;
	if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !ERR_peek_error() && !saved)) {
		why = "connection closed by peer";
		io = IO_EOF;
	} else if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		why = strerror(saved);
	} else if ((code = ERR_get_error()) && ERR_reason_error_string(code)) {
		why = ERR_reason_error_string(code);
	}
	snprintf(c->w->err, sizeof c->w->err, "tls %s: %s", op, why);
	ERR_clear_error();
	return io;
}

static void tls_start(struct conn *c)
{
	c->ssl = SSL_new(c->w->sk->ssl_ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->it.fd) != 1) {
		ERR_clear_error();
		conn_close(c, "SSL_new failed", CL_ERROR);
		return;
	}
	SSL_set_accept_state(c->ssl);
	c->state = C_TLS_HS;
}

static int tls_handshake(struct conn *c)
{
	struct sink *sk = c->w->sk;
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		count(&sk->k.handshakes, 1);
		if (SSL_session_reused(c->ssl))
			count(&sk->k.resumed, 1);
		c->state = C_CMD;
		if (sk->tls_on_connect)   /* implicit TLS: the banner is the first thing in it */
			greet(c);
		return IO_OK;
	}
	if (tls_status(c, r, "handshake") == IO_AGAIN)
		return IO_AGAIN;
	conn_close(c, c->w->err, CL_ERROR);
	return IO_ERR;
}

/* ---------- maildir ---------- */

/* Writes DIR/<seq>.<ext> through a temporary name, so a reader never sees half a file. */
static bool write_file(const struct sink *sk, uint64_t seq, const char *ext, const char *p, size_t n)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s/.%" PRIu64 ".%s.tmp", sk->maildir, seq, ext);
	snprintf(path, sizeof path, "%s/%" PRIu64 ".%s", sk->maildir, seq, ext);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd == -1)
		return false;
	bool ok = true;
	while (ok && n) {
		ssize_t r = write(fd, p, n);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
		} else if (r == 0 || errno != EINTR) {
			ok = false;
		}
	}
	if (close(fd) == -1 || !ok || rename(tmp, path) == -1) {
		unlink(tmp);
		return false;
	}
	return true;
}

/* DIR/<seq>.eml, then DIR/<seq>.env: tests wait for the .env. */
static bool maildir_store(struct conn *c, uint64_t seq)
{
	struct sink *sk = c->w->sk;
	char *env = NULL, local[64] = "?";
	size_t envlen = 0;
	union saddr la;
	socklen_t ll = sizeof la;
	FILE *f = NULL;

	if (!write_file(sk, seq, "eml", c->msg ? c->msg : "", c->mlen) ||
	    !(f = open_memstream(&env, &envlen)))
		goto fail;
	char peer[64];
	if (getsockname(c->it.fd, &la.sa, &ll) == 0)
		fmt_addr(&la, local, sizeof local);
	fmt_addr(&c->peer, peer, sizeof peer); /* the client's address:port (one per connection) */
	fprintf(f, "mail=%s\n", c->mail_from ? c->mail_from : "");
	for (uint32_t i = 0; i < c->nrcpt_ok; i++)
		fprintf(f, "rcpt=%s\n", c->rcpts[i]);
	const char *sni = c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
	fprintf(f, "peer=%s\n", peer);
	fprintf(f, "tls=%s\ncipher=%s\nsni=%s\nresumed=%s\nlocal=%s\nhelo=%s\nauth=%s\n",
		c->ssl ? SSL_get_version(c->ssl) : "none", c->ssl ? SSL_get_cipher_name(c->ssl) : "none",
		sni ? sni : "", c->ssl && SSL_session_reused(c->ssl) ? "yes" : "no", local,
		c->helo_name ? c->helo_name : "", c->authed ? sk->auth_user : "-");
	if (fclose(f) != 0 || !write_file(sk, seq, "env", env, envlen))
		goto fail;
	free(env);
	return true;
fail:
	log_line("evt=error maildir %s: %s", sk->maildir, strerror(errno));
	free(env);
	return false;
}

/* ---------- message body ---------- */

static void body_emit(struct conn *c, const char *p, size_t n)
{
	struct sink *sk = c->w->sk;
	c->msize += n;
	if (c->too_big || !sk->maildir)
		return;
	if (c->msize > sk->msg_max) {   /* keep counting, stop storing; 552 at the end */
		free(c->msg);
		c->msg = NULL;
		c->mlen = c->mcap = 0;
		c->too_big = true;
		return;
	}
	if (c->mcap - c->mlen < n) {
		size_t cap = c->mcap ? c->mcap : 8192;
		while (cap - c->mlen < n)
			cap *= 2;
		c->msg = xrealloc(c->msg, cap);
		c->mcap = cap;
	}
	memcpy(c->msg + c->mlen, p, n);
	c->mlen += n;
}

/* The end of a DATA body or of BDAT LAST: the final reply. */
static void message_done(struct conn *c)
{
	struct sink *sk = c->w->sk;
	c->state = C_CMD;
	count(&sk->k.bytes, c->msize);
	if (sk->stall == STALL_DOT) {
		c->after = A_STALL;
	} else if (c->too_big || c->msize > sk->msg_max) {
		reply(c, "552 5.3.4 message size exceeds fixed limit\r\n");
		count(&sk->k.rejected, 1);
	} else if (sk->dot.code && sk->dot.code / 100 != 2 && c->nfinal >= sk->dot_after) {
		reply(c, sk->dot.wire);
		count(&sk->k.rejected, 1);
	} else {
		uint64_t seq = atomic_fetch_add(&sk->k.seq, 1) + 1;
		if (sk->maildir && !maildir_store(c, seq)) {
			reply(c, "451 4.3.0 cannot store message\r\n");
		} else {
			count(&sk->k.messages, 1);
			count(&sk->k.recipients, c->nrcpt_ok);
			c->nmsgs++;
			if (sk->dot.code && c->nfinal >= sk->dot_after)
				reply(c, sk->dot.wire);
			else
				replyf(c, "250 2.0.0 ok queued as %" PRIu64 "\r\n", seq);
		}
	}
	if (sk->stall != STALL_DOT) {
		c->nfinal++;
		if (sk->extra_on && sk->extra_ms == 0)
			reply(c, "250 2.0.0 extra reply\r\n");
		else
			c->extra = sk->extra_on ? EX_DUE : EX_NONE;
	}
	txn_reset(c);
}

/* DATA body: undo dot-stuffing (RFC 5321 §4.5.2) and find CRLF.CRLF.  A line starts after any
 * LF.  The state survives between reads, so a terminator split anywhere is still found.
 * Returns how many bytes of p it used. */
static size_t feed_body(struct conn *c, const char *p, size_t n)
{
	size_t i = 0;
	if (c->w->sk->drop_in_data) {
		conn_close(c, "dropped in DATA (--drop-in-data)", CL_ABRUPT);
		return n;
	}
	while (i < n) {
		switch (c->bstate) {
		case B_BOL:
			if (p[i] == '.') {
				c->bstate = B_DOT;   /* drop the dot; ".\r\n" ends the message */
				i++;
				break;
			}
			c->bstate = B_MID;
			__attribute__((fallthrough));
		case B_MID: {
			const char *q = memchr(p + i, '\n', n - i);
			size_t k = q ? (size_t)(q - (p + i)) + 1 : n - i;
			body_emit(c, p + i, k);
			i += k;
			if (q)
				c->bstate = B_BOL;
			break;
		}
		case B_DOT:
			c->bstate = p[i] == '\r' ? B_DOTCR : B_MID;
			i += p[i] == '\r';
			break;
		case B_DOTCR:
			if (p[i] == '\n') {
				message_done(c);
				return i + 1;
			}
			body_emit(c, "\r", 1);
			c->bstate = B_MID;
			break;
		}
	}
	return n;
}

static void bdat_done(struct conn *c)
{
	c->state = C_CMD;
	if (c->bdat_err == 503) {
		reply(c, "503 5.5.1 need MAIL and RCPT first\r\n");
	} else if (c->bdat_err) {
		reply(c, "554 5.5.1 no valid recipients\r\n");
		if (c->bdat_last)
			txn_reset(c);
	} else if (!c->bdat_last) {
		replyf(c, "250 2.0.0 %" PRIu64 " octets received\r\n", c->bdat_size);
	} else {
		message_done(c);
	}
}

static size_t feed_bdat(struct conn *c, const char *p, size_t n)
{
	if (c->w->sk->drop_in_data) {
		conn_close(c, "dropped in BDAT (--drop-in-data)", CL_ABRUPT);
		return n;
	}
	size_t k = n < c->bdat_left ? n : (size_t)c->bdat_left;
	if (!c->bdat_err)
		body_emit(c, p, k);
	c->bdat_left -= k;
	if (c->bdat_left == 0)
		bdat_done(c);
	return k;
}

/* ---------- SMTP commands ---------- */

/* Parses "<addr> params" (brackets optional).  Sets addr, alen and rest (the parameters). */
static bool parse_path(char *s, char **addr, size_t *alen, char **rest)
{
	s += strspn(s, " ");
	if (*s == '<') {
		char *e = strchr(s + 1, '>');
		if (!e)
			return false;
		*addr = s + 1;
		*alen = (size_t)(e - s - 1);
		*rest = e + 1;
	} else {
		*addr = s;
		*alen = strcspn(s, " ");
		*rest = s + *alen;
		if (*alen == 0)
			return false;
	}
	return **rest == '\0' || **rest == ' ';
}

/* Command handlers return the reply to send, or NULL when they queued it themselves or, under
 * --stall, decided that none will ever be sent (c->after = A_STALL). */
static bool stalled(struct conn *c, enum stall st)
{
	if (c->w->sk->stall != st)
		return false;
	c->after = A_STALL;
	return true;
}

static const char *cmd_hello(struct conn *c, char *arg, bool ehlo)
{
	struct sink *sk = c->w->sk;
	if (stalled(c, STALL_EHLO))
		return NULL;
	if (ehlo && sk->no_ehlo)
		return "502 5.5.1 EHLO not supported\r\n";
	if (!*arg)
		return "501 5.5.4 syntax: EHLO/HELO hostname\r\n";
	txn_reset(c);
	c->helo = ehlo ? 'E' : 'H';
	free(c->helo_name);
	c->helo_name = sk->maildir ? xstrndup(arg, strcspn(arg, " ")) : NULL;
	if (ehlo)
		reply(c, sk->ehlo[c->ssl != NULL]);
	else
		replyf(c, "250 %s\r\n", sk->hostname);
	return NULL;
}

static const char *cmd_ehlo(struct conn *c, char *arg) { return cmd_hello(c, arg, true); }
static const char *cmd_helo(struct conn *c, char *arg) { return cmd_hello(c, arg, false); }

static const char *cmd_mail(struct conn *c, char *arg)
{
	struct sink *sk = c->w->sk;
	char *addr, *rest, *tok, *save;
	size_t alen;
	uint64_t v;
	if (stalled(c, STALL_MAIL))
		return NULL;
	count(&sk->k.mails, 1);
	if (!c->helo)
		return "503 5.5.1 send HELO/EHLO first\r\n";
	if (sk->auth_user && !c->authed) {
		count(&sk->k.rejected, 1);
		return "530 5.7.0 Authentication required\r\n";
	}
	if (c->in_mail)
		return "503 5.5.1 nested MAIL command\r\n";
	if (sk->lim.rate > 0 && !lim_take(&sk->lim, &c->peer)) {
		count(&sk->k.limited, 1);
		close_after_reply(c, "--limit");
		return "421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
		       "originating from your IP address. To protect our users from spam, mail sent "
		       "from your IP address has been temporarily rate limited. (mxsink --limit)\r\n";
	}
	if (strncasecmp(arg, "FROM:", 5) || !parse_path(arg + 5, &addr, &alen, &rest))
		return "501 5.5.4 syntax: MAIL FROM:<address>\r\n";
	/* RFC 1870 SIZE, RFC 6152 BODY=8BITMIME, RFC 6531 SMTPUTF8: only after EHLO and only
	 * when advertised.  A sender using what was not offered gets 555 (RFC 5321 §4.1.1.11). */
	for (tok = strtok_r(rest, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (c->helo != 'E')
			return "555 5.5.4 parameters need EHLO\r\n";
		if (!strncasecmp(tok, "SIZE=", 5)) {
			if (!parse_u64(tok + 5, UINT64_MAX, &v))
				return "501 5.5.4 bad SIZE value\r\n";
			if (v > sk->msg_max) {
				count(&sk->k.rejected, 1);
				return "552 5.3.4 message size exceeds fixed limit\r\n";
			}
		} else if (strcasecmp(tok, "BODY=7BIT") &&
			   (strcasecmp(tok, "BODY=8BITMIME") || sk->no_8bitmime) &&
			   (strcasecmp(tok, "SMTPUTF8") || sk->no_smtputf8)) {
			replyf(c, "555 5.5.4 unsupported parameter %.64s\r\n", tok);
			return NULL;
		}
	}
	if (sk->mail.code && sk->mail.code / 100 != 2) {
		count(&sk->k.rejected, 1);
		return sk->mail.wire;
	}
	c->in_mail = true;
	if (sk->maildir)
		c->mail_from = xstrndup(addr, alen);
	return sk->mail.code ? sk->mail.wire : "250 2.1.0 ok\r\n";
}

/* The scripted reply for this recipient: the first --rcpt rule whose pattern matches the
 * local part (exact, or prefix when it ended in '*'; case-insensitive), else NULL. */
static const struct reply *rcpt_script(const struct sink *sk, const char *addr, size_t alen)
{
	const char *at = memrchr(addr, '@', alen);
	size_t llen = at ? (size_t)(at - addr) : alen;
	for (size_t i = 0; i < sk->nrules; i++) {
		const struct rcpt_rule *r = &sk->rules[i];
		if ((r->prefix ? llen >= r->plen : llen == r->plen) && !strncasecmp(addr, r->pat, r->plen))
			return &r->r;
	}
	return NULL;
}

static const char *cmd_rcpt(struct conn *c, char *arg)
{
	struct sink *sk = c->w->sk;
	char *addr, *rest;
	size_t alen;
	if (stalled(c, STALL_RCPT))
		return NULL;
	if (!c->in_mail)
		return "503 5.5.1 need MAIL command\r\n";
	if (strncasecmp(arg, "TO:", 3) || !parse_path(arg + 3, &addr, &alen, &rest))
		return "501 5.5.4 syntax: RCPT TO:<address>\r\n";
	if (alen == 0)
		return "501 5.1.3 bad recipient address syntax\r\n";
	rest += strspn(rest, " ");
	if (*rest) {
		replyf(c, "555 5.5.4 unsupported parameter %.64s\r\n", rest);
		return NULL;
	}
	if (c->nrcpt_ok >= MAX_RCPT)
		return "452 4.5.3 too many recipients\r\n";
	const struct reply *r = rcpt_script(sk, addr, alen);
	if (r && r->code / 100 != 2) {
		count(&sk->k.rejected, 1);
		return r->wire;
	}
	if (sk->maildir) {
		if (c->nrcpt_ok == c->rcap) {
			c->rcap = c->rcap ? c->rcap * 2 : 4;
			c->rcpts = xrealloc(c->rcpts, c->rcap * sizeof *c->rcpts);
		}
		c->rcpts[c->nrcpt_ok] = xstrndup(addr, alen);
	}
	c->nrcpt_ok++;
	return r ? r->wire : "250 2.1.5 ok\r\n";
}

static const char *cmd_data(struct conn *c, char *arg)
{
	(void)arg;
	if (stalled(c, STALL_DATA))
		return NULL;
	if (!c->in_mail)
		return "503 5.5.1 need MAIL command\r\n";
	if (c->bdat_mode)
		return "503 5.5.1 DATA after BDAT\r\n";
	if (!c->nrcpt_ok)
		return "554 5.5.1 no valid recipients\r\n";
	c->state = C_BODY;
	c->bstate = B_BOL;
	c->msize = 0;
	c->too_big = false;
	return "354 End data with <CR><LF>.<CR><LF>\r\n";
}

/* RFC 3030: BDAT size [LAST].  The chunk follows the command without waiting for a reply, so
 * it is always read, even when the answer is an error. */
static const char *cmd_bdat(struct conn *c, char *arg)
{
	uint64_t n;
	char *sp = strchr(arg, ' ');
	if (!c->w->sk->chunking)
		return "502 5.5.1 BDAT not supported\r\n";
	if (c->w->sk->bdat_refuse)   /* the chunk that follows is read as command lines */
		return "502 5.5.2 command not implemented\r\n";
	if (sp)
		*sp++ = '\0';
	if (!parse_u64(arg, UINT64_MAX / 2, &n) || (sp && strcasecmp(sp, "LAST")))
		return "501 5.5.4 syntax: BDAT size [LAST]\r\n";
	if (stalled(c, STALL_DATA))
		return NULL;
	c->bdat_err = !c->in_mail ? 503 : !c->nrcpt_ok ? 554 : 0;
	if (!c->bdat_err && !c->bdat_mode) {
		c->bdat_mode = true;
		c->msize = 0;
		c->too_big = false;
	}
	c->bdat_last = sp != NULL;
	c->bdat_size = c->bdat_left = n;
	c->state = C_BDAT;
	if (n == 0)
		bdat_done(c);
	return NULL;
}

static const char *cmd_rset(struct conn *c, char *arg)
{
	(void)arg;
	if (stalled(c, STALL_RSET))
		return NULL;
	txn_reset(c);
	return "250 2.0.0 ok\r\n";
}

static const char *cmd_quit(struct conn *c, char *arg)
{
	(void)arg;
	if (stalled(c, STALL_QUIT))
		return NULL;
	count(&c->w->sk->k.quits, 1);
	if (c->ooff < c->olen) /* came with the previous command, its reply not yet sent */
		count(&c->w->sk->k.quits_pipelined, 1);
	close_after_reply(c, "quit");
	return "221 2.0.0 bye\r\n";
}

static const char *cmd_starttls(struct conn *c, char *arg)
{
	struct sink *sk = c->w->sk;
	if (stalled(c, STALL_STARTTLS))
		return NULL;
	if (c->ssl)
		return "503 5.5.1 TLS already active\r\n";
	if (!sk->starttls)
		return "502 5.5.1 STARTTLS not available\r\n";
	if (*arg)
		return "501 5.5.4 syntax: STARTTLS\r\n";
	if (!c->helo)
		return "503 5.5.1 send EHLO first\r\n";
	/* RFC 3207 §4.2: forget everything.  Input already read behind the command is plaintext
	 * injected before the handshake: process_input() stops at c->after and drops it. */
	session_reset(c);
	c->after = sk->tls_fail ? A_TLSFAIL : sk->stall == STALL_TLS ? A_STALL : A_TLS;
	return "220 2.0.0 ready\r\n";
}

/* ---------- AUTH (RFC 4954; RFC 4616 PLAIN; the LOGIN draft) ---------- */

/* Strict RFC 4648 base64: padding required, nothing else allowed.  out holds >= n*3/4 bytes.
 * Returns the decoded length, or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *out)
{
	size_t o = 0;
	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		uint32_t v = 0;
		int pad = 0;
		for (size_t j = 0; j < 4; j++) {
			char ch = s[i + j];
			uint32_t d;
			if (ch >= 'A' && ch <= 'Z')
				d = (uint32_t)(ch - 'A');
			else if (ch >= 'a' && ch <= 'z')
				d = (uint32_t)(ch - 'a') + 26;
			else if (ch >= '0' && ch <= '9')
				d = (uint32_t)(ch - '0') + 52;
			else if (ch == '+' || ch == '/')
				d = ch == '+' ? 62 : 63;
			else if (ch == '=' && j >= 2 && i + 4 == n)
				d = 0, pad++;
			else
				return -1;
			if (pad && ch != '=')   /* data after padding */
				return -1;
			v = v << 6 | d;
		}
		out[o++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)v;
	}
	return (long)o;
}

static bool auth_is(const char *want, size_t wlen, const unsigned char *p, size_t n)
{
	return n == wlen && CRYPTO_memcmp(want, p, n) == 0;
}

/* Every AUTH that does not end in 235 goes through here: it ends the exchange and counts. */
static const char *auth_fail(struct conn *c, const char *r)
{
	c->auth_step = AS_NONE;
	c->auth_user_ok = false;
	count(&c->w->sk->k.authfail, 1);
	return r;
}

static const char *auth_result(struct conn *c, bool ok)
{
	if (!ok)
		return auth_fail(c, "535 5.7.8 Authentication credentials invalid\r\n");
	c->auth_step = AS_NONE;
	c->auth_user_ok = false;
	c->authed = true;
	return "235 2.7.0 Authentication successful\r\n";
}

/* One base64 response: the initial response of the AUTH command or a line after a 334.
 * "=" is an empty initial response, "*" cancels (RFC 4954 §4). */
static const char *auth_response(struct conn *c, const char *b64, size_t n, bool initial)
{
	struct sink *sk = c->w->sk;
	unsigned char buf[CMD_LINE_MAX];   /* n <= CMD_LINE_MAX: decodes to 3/4 of that */
	long k = 0;
	if (n == 1 && b64[0] == '*')
		return auth_fail(c, "501 5.7.0 Authentication cancelled\r\n");
	bool empty = initial && n == 1 && b64[0] == '=';
	if (!empty && (n > CMD_LINE_MAX || (k = b64_decode(b64, n, buf)) < 0))
		return auth_fail(c, "501 5.5.2 Cannot decode response\r\n");
	size_t len = (size_t)k;
	switch (c->auth_step) {
	case AS_PLAIN: {   /* [authzid] NUL authcid NUL passwd; authzid empty or = authcid */
		unsigned char *n1 = memchr(buf, '\0', len), *n2 = NULL;
		if (n1)
			n2 = memchr(n1 + 1, '\0', len - (size_t)(n1 + 1 - buf));
		if (!n2)
			return auth_fail(c, "501 5.5.2 malformed PLAIN response\r\n");
		size_t zlen = (size_t)(n1 - buf), ulen = (size_t)(n2 - n1 - 1);
		bool ok = auth_is(sk->auth_user, sk->auth_ulen, n1 + 1, ulen) &&
			(zlen == 0 || auth_is(sk->auth_user, sk->auth_ulen, buf, zlen)) &&
			auth_is(sk->auth_pass, sk->auth_plen, n2 + 1, len - (size_t)(n2 + 1 - buf));
		return auth_result(c, ok);
	}
	case AS_LOGIN_USER:
		c->auth_user_ok = auth_is(sk->auth_user, sk->auth_ulen, buf, len);
		c->auth_step = AS_LOGIN_PASS;
		return "334 UGFzc3dvcmQ6\r\n";   /* "Password:" */
	case AS_LOGIN_PASS:
		return auth_result(c, c->auth_user_ok &&
			auth_is(sk->auth_pass, sk->auth_plen, buf, len));
	default:
		return auth_fail(c, "503 5.5.1 no AUTH in progress\r\n");
	}
}

static const char *cmd_auth(struct conn *c, char *arg)
{
	struct sink *sk = c->w->sk;
	size_t mlen = strcspn(arg, " ");
	char *ir = arg + mlen + strspn(arg + mlen, " ");
	count(&sk->k.auths, 1);
	if (!sk->auth_user)
		return auth_fail(c, "502 5.5.1 AUTH not available\r\n");
	if (c->helo != 'E')
		return auth_fail(c, "503 5.5.1 send EHLO first\r\n");
	if (sk->ssl_ctx && !c->ssl)   /* offered only inside TLS, like smtpd_tls_auth_only */
		return auth_fail(c,
			"538 5.7.11 Encryption required for requested authentication mechanism\r\n");
	if (c->authed)
		return auth_fail(c, "503 5.5.1 already authenticated\r\n");
	if (c->in_mail)
		return auth_fail(c, "503 5.5.1 MAIL transaction in progress\r\n");
	if (mlen == 5 && !strncasecmp(arg, "PLAIN", 5))
		c->auth_step = AS_PLAIN;
	else if (mlen == 5 && !strncasecmp(arg, "LOGIN", 5))
		c->auth_step = AS_LOGIN_USER;
	else if (mlen == 0)
		return auth_fail(c, "501 5.5.4 syntax: AUTH mechanism [initial-response]\r\n");
	else
		return auth_fail(c, "504 5.5.4 unrecognized authentication type\r\n");
	if (strchr(ir, ' '))
		return auth_fail(c, "501 5.5.4 syntax: AUTH mechanism [initial-response]\r\n");
	if (*ir)
		return auth_response(c, ir, strlen(ir), true);
	return c->auth_step == AS_PLAIN ? "334 \r\n" : "334 VXNlcm5hbWU6\r\n";   /* "Username:" */
}

static const struct cmd {
	const char *name;
	const char *(*fn)(struct conn *c, char *arg);
	const char *fixed;   /* the reply of a command without a handler */
} cmds[] = {
	{ "RCPT", cmd_rcpt, NULL }, { "MAIL", cmd_mail, NULL }, { "DATA", cmd_data, NULL },
	{ "BDAT", cmd_bdat, NULL }, { "RSET", cmd_rset, NULL }, { "EHLO", cmd_ehlo, NULL },
	{ "HELO", cmd_helo, NULL }, { "QUIT", cmd_quit, NULL }, { "STARTTLS", cmd_starttls, NULL },
	{ "AUTH", cmd_auth, NULL },
	{ "NOOP", NULL, "250 2.0.0 ok\r\n" }, { "VRFY", NULL, "252 2.0.0 cannot VRFY user\r\n" },
	{ "HELP", NULL, "214 2.0.0 mxsink: see RFC 5321\r\n" },
};

static void handle_line(struct conn *c, char *line, size_t len)
{
	struct sink *sk = c->w->sk;
	const char *r = "500 5.5.2 command not recognized\r\n";
	size_t vlen = strcspn(line, " ");
	char *arg = line + vlen + strspn(line + vlen, " ");

	if (c->auth_step != AS_NONE) {   /* the answer to our 334, not a command */
		reply(c, len > CMD_LINE_MAX ? auth_fail(c, "500 5.5.2 line too long\r\n")
					    : auth_response(c, line, len, false));
		return;
	}
	c->ncmds++;
	if (sk->after421 >= 0 && c->ncmds > (uint64_t)sk->after421) {
		r = "421 4.4.2 closing connection\r\n";
		close_after_reply(c, "--421-after");
	} else if (len > CMD_LINE_MAX) {
		r = "500 5.5.2 line too long\r\n";
	} else if (c->no_service) {   /* after a 5xx --greeting */
		r = "503 5.5.1 no service\r\n";
		if (vlen == 4 && !strncasecmp(line, "QUIT", 4))
			r = cmd_quit(c, arg);
	} else {
		for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
			if (strlen(cmds[i].name) == vlen && !strncasecmp(line, cmds[i].name, vlen)) {
				r = cmds[i].fn ? cmds[i].fn(c, arg) : cmds[i].fixed;
				break;
			}
		}
	}
	if (r)
		reply(c, r);
}

/* Command lines end in CRLF or a bare LF.  A partial line is kept in c->in until the rest
 * arrives; an over-long one is skipped up to its LF and answered with 500. */
static size_t feed_cmd(struct conn *c, char *p, size_t n)
{
	size_t win = n < CMD_LINE_MAX + 2 ? n : CMD_LINE_MAX + 2;
	char *q = memchr(p, '\n', c->skip_line ? n : win);
	if (!q) {
		if (c->skip_line || n >= CMD_LINE_MAX + 2) {
			size_t used = c->skip_line ? n : win;
			c->skip_line = true;
			return used;
		}
		c->in = xstrndup(p, n);
		c->inlen = n;
		return n;
	}
	size_t len = (size_t)(q - p);
	if (len && p[len - 1] == '\r')
		len--;
	p[len] = '\0';
	handle_line(c, p, c->skip_line ? CMD_LINE_MAX + 1 : len);
	c->skip_line = false;
	return (size_t)(q - p) + 1;
}

/* Interprets n bytes of input in order.  Stops at the first command whose reply must reach
 * the client before anything else happens (c->after); what follows it is dropped. */
static void process_input(struct conn *c, char *p, size_t n)
{
	while (n > 0 && !c->dead && c->after == A_NONE) {
		if (c->extra == EX_DUE) {
			/* --extra-reply owes a reply first: keep the rest (it is what the client
			 * pipelined behind the message) for after it; a test fault, so at most
			 * SCRATCH_PREFIX bytes are kept */
			size_t k = n < SCRATCH_PREFIX ? n : SCRATCH_PREFIX;
			free(c->in);
			c->in = xmalloc(k);
			memcpy(c->in, p, k);
			c->inlen = k;
			return;
		}
		size_t used;
		switch (c->state) {
		case C_CMD: used = feed_cmd(c, p, n); break;
		case C_BODY: used = feed_body(c, p, n); break;
		case C_BDAT: used = feed_bdat(c, p, n); break;
		default: return;
		}
		p += used;
		n -= used;
	}
}

/* ---------- connection I/O ---------- */

static int read_input(struct conn *c, char *buf, size_t cap, size_t *got)
{
	*got = 0;
	while (c->ssl) {   /* fill the buffer: one SSL_read returns one record */
		ERR_clear_error();
		errno = 0;
		int r = SSL_read(c->ssl, buf + *got, (int)(cap - *got));
		if (r <= 0) {
			int s = tls_status(c, r, "read");
			return *got ? IO_OK : s;   /* an EOF or error comes back on the next call */
		}
		*got += (size_t)r;
		if (cap - *got < 16384)
			return IO_OK;
	}
	for (;;) {
		ssize_t r = read(c->it.fd, buf, cap);
		if (r >= 0) {
			*got = (size_t)r;
			return r ? IO_OK : IO_EOF;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return IO_AGAIN;
		if (errno != EINTR) {
			snprintf(c->w->err, sizeof c->w->err, "read: %s", strerror(errno));
			return IO_ERR;
		}
	}
}

static int conn_flush(struct conn *c)
{
	while (c->ooff < c->olen) {
		size_t n = c->olen - c->ooff;
		ssize_t r;
		if (c->ssl) {
			ERR_clear_error();
			errno = 0;
			r = SSL_write(c->ssl, c->out + c->ooff, n > INT_MAX ? INT_MAX : (int)n);
			if (r <= 0)
				return tls_status(c, (int)r, "write") == IO_AGAIN ? IO_AGAIN : IO_ERR;
		} else if ((r = send(c->it.fd, c->out + c->ooff, n, MSG_NOSIGNAL)) == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return IO_AGAIN;
			if (errno == EINTR)
				continue;
			snprintf(c->w->err, sizeof c->w->err, "write: %s", strerror(errno));
			return IO_ERR;
		}
		c->ooff += (size_t)r;
	}
	free(c->out);   /* idle sessions hold no reply buffer */
	c->out = NULL;
	c->olen = c->ooff = c->ocap = 0;
	return IO_OK;
}

/* One read (or handshake) step.  IO_OK: progress, call again; otherwise stop (IO_AGAIN: wait
 * for the next event; IO_ERR: the connection is closed). */
static int conn_step(struct conn *c)
{
	char *buf = c->w->scratch + SCRATCH_PREFIX, *p = buf;
	size_t got;

	if (c->state == C_TLS_HS)
		return tls_handshake(c);
	int r = read_input(c, buf, SCRATCH_SIZE, &got);
	if (r == IO_AGAIN)
		return IO_AGAIN;
	if (r == IO_EOF) {
		bool mid = c->state == C_BODY || c->state == C_BDAT;
		conn_close(c, mid ? "client closed during DATA" : "client closed", mid ? CL_ERROR : 0);
		return IO_ERR;
	}
	if (r == IO_ERR) {   /* a reset is how stalled and failed-TLS sessions usually end */
		conn_close(c, c->w->err, c->state >= C_STALL ? 0 : CL_ERROR);
		return IO_ERR;
	}
	switch (c->state) {
	case C_CMD:
	case C_BODY:
	case C_BDAT:
		if (c->inlen) {   /* put the saved partial line back in front */
			p -= c->inlen;
			memcpy(p, c->in, c->inlen);
			got += c->inlen;
			free(c->in);
			c->in = NULL;
			c->inlen = 0;
		}
		process_input(c, p, got);
		break;
	case C_TLSFAIL:
		/* The ClientHello arrived: cut the connection, or answer it with a fatal
		 * handshake_failure alert or with garbage, then wait for the client to go. */
		if (c->w->sk->tls_fail == TLS_FAIL_CUT) {
			conn_close(c, "tls-fail=cut", CL_ABRUPT);
			return IO_ERR;
		}
		if (c->w->sk->tls_fail == TLS_FAIL_ALERT
			    ? send(c->it.fd, "\x15\x03\x03\x00\x02\x02\x28", 7, MSG_NOSIGNAL) == -1
			    : send(c->it.fd, "this is not TLS\r\n", 17, MSG_NOSIGNAL) == -1) {
			conn_close(c, "tls-fail: write failed", 0);
			return IO_ERR;
		}
		shutdown(c->it.fd, SHUT_WR);
		c->state = C_DRAIN;
		break;
	default:   /* C_STALL, C_DRAIN: swallow input until the client closes */
		break;
	}
	return IO_OK;
}

static void conn_run(struct conn *c)
{
	struct sink *sk = c->w->sk;
	unsigned budget = RUN_BUDGET;
	while (!c->dead) {
		if (link_on(&c->tlink))
			return;   /* replies held back by --delay-ms or --extra-reply */
		if (c->extra == EX_REPLY) {   /* the timer ran: the reply nobody asked for */
			c->delay_done = false;
			reply(c, "250 2.0.0 extra reply\r\n");
			c->extra = c->inlen ? EX_HOLD_DUE : EX_NONE;
		} else if (c->extra == EX_HOLD) {
			c->delay_done = false;
			c->extra = EX_NONE;
			if (c->inlen) {   /* then the input kept behind the message */
				char *buf = c->w->scratch + SCRATCH_PREFIX, *kept = c->in;
				size_t n = c->inlen;
				memcpy(buf, kept, n);
				c->in = NULL;
				c->inlen = 0;
				free(kept);
				process_input(c, buf, n);
			}
		}
		if (c->ooff < c->olen) {
			if (sk->delay_ms && !c->delay_done) {
				c->deadline = mono_ms() + sk->delay_ms;
				link_add_tail(&c->w->timers, &c->tlink);
				return;
			}
			int r = conn_flush(c);
			if (r == IO_AGAIN)
				return;
			if (r != IO_OK) {
				conn_close(c, c->w->err, c->after == A_CLOSE ? 0 : CL_ERROR);
				return;
			}
			c->delay_done = false;
		}
		if ((c->extra == EX_DUE || c->extra == EX_HOLD_DUE) && c->after == A_NONE) {
			/* --extra-reply: a second reply to the end of data, MS later; until then
			 * the session reads nothing, so it lands before the answers to whatever
			 * the client pipelined behind the message */
			c->extra = c->extra == EX_DUE ? EX_REPLY : EX_HOLD;
			c->deadline = mono_ms() + sk->extra_ms;
			link_add_tail(&c->w->timers, &c->tlink);
			return;
		}
		enum after a = c->after;   /* the replies are out: do what waited for them */
		c->after = A_NONE;
		if (a == A_CLOSE)
			conn_close(c, c->why, CL_CLEAN);
		else if (a == A_TLS)
			tls_start(c);
		else if (a == A_STALL || a == A_TLSFAIL)
			c->state = a == A_STALL ? C_STALL : C_TLSFAIL;
		if (a != A_NONE)
			continue;
		if (budget-- == 0) {
			if (!link_on(&c->plink))
				link_add_tail(&c->w->pending, &c->plink);
			return;
		}
		if (conn_step(c) != IO_OK)
			return;
	}
}

static void conn_new(struct worker *w, int fd, const union saddr *peer)
{
	struct sink *sk = w->sk;
	struct conn *c = calloc(1, sizeof *c);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
	if (!c || epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		log_line("evt=error new connection: %s", strerror(c ? errno : ENOMEM));
		close(fd);
		free(c);
		return;
	}
	c->it = (struct item){ IT_CONN, fd };
	c->w = w;
	link_init(&c->plink);
	link_init(&c->tlink);
	c->peer = *peer;
	c->t0 = mono_ms();
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	count(&sk->k.connections, 1);
	uint64_t now = atomic_fetch_add_explicit(&sk->k.active, 1, memory_order_relaxed) + 1;
	uint64_t pk = atomic_load_explicit(&sk->k.peak, memory_order_relaxed);
	while (pk < now && !atomic_compare_exchange_weak(&sk->k.peak, &pk, now))
		;
	if (!sk->tls_on_connect)
		greet(c);
	else if (sk->stall == STALL_TLS)   /* RFC 8314 implicit TLS: handshake first */
		c->state = C_STALL;
	else if (sk->tls_fail)
		c->state = C_TLSFAIL;
	else
		tls_start(c);
	conn_run(c);
}

static void on_accept(struct worker *w, struct item *l)
{
	for (;;) {
		union saddr peer;
		socklen_t len = sizeof peer;
		int fd = accept4(l->fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd != -1) {
			conn_new(w, fd, &peer);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		log_line("evt=error accept: %s", strerror(errno));
		if (errno != EMFILE || w->reserve_fd == -1)
			return;
		/* Out of fds: shed this connection rather than leave it pending forever. */
		close(w->reserve_fd);
		fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd == -1)
			return;
		close(fd);
	}
}

static void on_stats(struct worker *w, struct item *l)
{
	char line[512];
	int fd;
	while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1 ||
	       errno == EINTR || errno == ECONNABORTED) {
		if (fd == -1)
			continue;
		int n = stats_format(&w->sk->k, line, sizeof line);
		if (send(fd, line, (size_t)n, MSG_NOSIGNAL) == -1)
			log_line("evt=error stats: %s", strerror(errno));
		shutdown(fd, SHUT_WR);
		while (recv(fd, line, sizeof line, MSG_DONTWAIT) > 0)
			;   /* unread input would turn our FIN into a RST */
		close(fd);
	}
}

/* ---------- workers ---------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		int timeout = -1;
		uint64_t now = mono_ms();
		if (link_on(&w->pending)) {
			timeout = 0;
		} else if (link_on(&w->timers)) {
			struct conn *c = container_of(w->timers.next, struct conn, tlink);
			timeout = c->deadline > now ? (int)(c->deadline - now) : 0;
		}
		int n = epoll_wait(w->epfd, evs, MAX_EVENTS, timeout);
		if (n == -1 && errno != EINTR) {
			log_line("evt=fatal epoll_wait: %s", strerror(errno));
			abort();
		}
		for (int i = 0; i < n; i++) {
			struct item *it = evs[i].data.ptr;
			if (it->kind == IT_CONN && !((struct conn *)it)->dead)
				conn_run((struct conn *)it);
			else if (it->kind == IT_LISTEN)
				on_accept(w, it);
			else if (it->kind == IT_STATS)
				on_stats(w, it);
		}
		now = mono_ms();
		while (link_on(&w->timers)) {
			struct conn *c = container_of(w->timers.next, struct conn, tlink);
			if (c->deadline > now)
				break;
			link_del(&c->tlink);
			c->delay_done = true;
			conn_run(c);
		}
		/* Serve the connections that ran out of budget; those that run out again go on
		 * the (now empty) worker list for the next round. */
		struct link local;
		link_init(&local);
		if (link_on(&w->pending)) {
			local = w->pending;
			local.next->prev = local.prev->next = &local;
			link_init(&w->pending);
		}
		while (link_on(&local)) {
			struct conn *c = container_of(local.next, struct conn, plink);
			link_del(&c->plink);
			conn_run(c);
		}
		while (link_on(&w->dead)) {
			struct conn *c = container_of(w->dead.next, struct conn, plink);
			link_del(&c->plink);
			free(c);
		}
	}
	return NULL;
}

/* Returns the fd or -errno. */
static int listen_socket(const struct laddr *la, bool reuseport, bool do_listen)
{
	int one = 1, fd = socket(la->a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (la->a.sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, &la->a.sa, la->len) == -1 || (do_listen && listen(fd, LISTEN_BACKLOG) == -1)) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

static void worker_init(struct sink *sk, struct worker *w, bool first)
{
	size_t n = sk->nlisten + (first ? sk->nstats : 0);
	char name[64];
	w->sk = sk;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd == -1)
		die("epoll_create1: %s", strerror(errno));
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->scratch = xrealloc(NULL, SCRATCH_PREFIX + SCRATCH_SIZE);
	link_init(&w->pending);
	link_init(&w->timers);
	link_init(&w->dead);
	w->listeners = xrealloc(NULL, n * sizeof *w->listeners);
	for (size_t i = 0; i < n; i++) {
		bool stats = i >= sk->nlisten;   /* the stats port: worker 0 only, no REUSEPORT */
		const struct laddr *la = stats ? sk->stats : &sk->listen[i];
		int fd = listen_socket(la, !stats, true);
		if (fd < 0) {
			fmt_addr(&la->a, name, sizeof name);
			die("listen %s: %s", name, strerror(-fd));
		}
		w->listeners[i] = (struct item){ stats ? IT_STATS : IT_LISTEN, fd };
		struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = &w->listeners[i] };
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
			die("epoll_ctl: %s", strerror(errno));
	}
}

/* ---------- configuration ---------- */

/* "CODE TEXT" -> reply; the two characters "\n" in TEXT split it into a multi-line reply. */
static bool parse_reply(const char *spec, struct reply *r)
{
	const char *text = spec[0] && spec[1] && spec[2] && spec[3] ? spec + 4 : "";
	size_t cap = strlen(spec) * 2 + 16, len = 0;
	if (strspn(spec, "0123456789") != 3 || spec[0] < '2' || spec[0] > '5' ||
	    (spec[3] && spec[3] != ' ') || strpbrk(spec, "\r\n"))
		return false;
	r->wire = xrealloc(NULL, cap);
	for (;;) {
		const char *nl = strstr(text, "\\n");
		int k = nl ? (int)(nl - text) : (int)strlen(text);
		len += (size_t)snprintf(r->wire + len, cap - len, "%.3s%c%.*s\r\n", spec, nl ? '-' : ' ',
			k, text);
		if (!nl)
			break;
		text = nl + 2;
	}
	r->code = atoi(spec);
	return true;
}

/* ADDR[-LAST]:PORT (LAST: a last octet or a full IPv4 address) or [V6]:PORT, appended to v. */
static bool parse_listen(const char *arg, struct laddr **v, size_t *n)
{
	const char *colon = strrchr(arg, ':');
	char host[128], *dash;
	uint64_t port, o;
	union saddr a = { 0 };
	struct in_addr lo4, hi4;
	if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof host ||
	    !parse_u64(colon + 1, 65535, &port) || port == 0)
		return false;
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	size_t hlen = strlen(host);
	if (host[0] == '[') {
		if (hlen < 3 || host[hlen - 1] != ']')
			return false;
		host[hlen - 1] = '\0';
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a.in6.sin6_addr) != 1)
			return false;
		*v = xrealloc(*v, (*n + 1) * sizeof **v);
		(*v)[(*n)++] = (struct laddr){ a, sizeof a.in6 };
		return true;
	}
	if ((dash = strchr(host, '-')))
		*dash++ = '\0';
	if (inet_pton(AF_INET, host, &lo4) != 1)
		return false;
	uint32_t lo = ntohl(lo4.s_addr), hi = lo;
	if (dash && strchr(dash, '.')) {
		if (inet_pton(AF_INET, dash, &hi4) != 1)
			return false;
		hi = ntohl(hi4.s_addr);
	} else if (dash) {
		if (!parse_u64(dash, 255, &o))
			return false;
		hi = (lo & ~0xffu) | (uint32_t)o;
	}
	if (hi < lo || hi - lo >= MAX_LISTEN || *n + (hi - lo) >= MAX_LISTEN)
		return false;
	a.in4.sin_family = AF_INET;
	a.in4.sin_port = htons((uint16_t)port);
	*v = xrealloc(*v, (*n + hi - lo + 1) * sizeof **v);
	for (uint64_t x = lo; x <= hi; x++) {
		a.in4.sin_addr.s_addr = htonl((uint32_t)x);
		(*v)[(*n)++] = (struct laddr){ a, sizeof a.in4 };
	}
	return true;
}

static SSL_CTX *tls_ctx_new(const struct sink *sk)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	/* --tls-max 1.0/1.1: an old server. OpenSSL 3 refuses those versions at the default
	 * security level (their handshake signs with SHA-1), so this mode drops to level 0. */
	if (ctx && sk->tls_max < TLS1_2_VERSION)
		SSL_CTX_set_security_level(ctx, 0);
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, sk->tls_max < TLS1_2_VERSION ? sk->tls_max : TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, sk->tls_max) ||
	    SSL_CTX_use_certificate_chain_file(ctx, sk->cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, sk->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		fprintf(stderr, "mxsink: TLS setup failed (cert %s, key %s):\n", sk->cert, sk->key);
		ERR_print_errors_fp(stderr);
		exit(1);
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
		SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"mxsink", 6);
	if (sk->no_tickets) {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	} else {   /* tickets (the default) plus a cache, for TLS 1.2 resumption by session id */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	}
	return ctx;
}

static void build_replies(struct sink *sk)
{
	char buf[1024], size[40];
	snprintf(buf, sizeof buf, "220 %s ESMTP mxsink\r\n", sk->hostname);
	sk->banner = xstrndup(buf, strlen(buf));
	snprintf(size, sizeof size, "SIZE %" PRIu64, sk->msg_max);
	for (int t = 0; t < 2; t++) {
		const char *ext[] = {
			sk->no_pipelining ? NULL : "PIPELINING", size, sk->no_8bitmime ? NULL : "8BITMIME",
			sk->no_smtputf8 ? NULL : "SMTPUTF8", "ENHANCEDSTATUSCODES",
			sk->auth_user && t == (sk->ssl_ctx != NULL) ? "AUTH PLAIN LOGIN" : NULL,
			sk->starttls && t == 0 ? "STARTTLS" : NULL, sk->chunking ? "CHUNKING" : NULL,
		};
		size_t len = (size_t)snprintf(buf, sizeof buf, "250-%s\r\n", sk->hostname), last = 0;
		for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
			last = ext[i] ? i : last;
		for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
			if (ext[i])
				len += (size_t)snprintf(buf + len, sizeof buf - len, "250%c%s\r\n",
					i == last ? ' ' : '-', ext[i]);
		sk->ehlo[t] = xstrndup(buf, len);
	}
}

static void usage(FILE *f)
{
	fputs("usage: mxsink --listen ADDR[-LAST]:PORT [--listen ...] [options]\n"
	      "  --listen A:P           IPv4 (ranges: 127.0.3.1-200:2525, 127.0.3.1-127.0.4.9:2525) or [V6]:P\n"
	      "  --cert F --key F       PEM chain and key; without them STARTTLS is not offered\n"
	      "  --threads N            worker threads (default 1)\n"
	      "  --hostname NAME        greeting/EHLO name (default mxsink.test)\n"
	      "  --no-starttls | --tls-max 1.0|1.1|1.2|1.3 | --no-tickets\n"
	      "  --tls-fail[=garbage|alert|cut]  offer STARTTLS, then answer the ClientHello with\n"
	      "                         garbage (default), a fatal handshake_failure alert, or a reset\n"
	      "  --greeting 'CODE TEXT' --mail 'CODE TEXT' --dot 'CODE TEXT'\n"
	      "  --rcpt 'PATTERN=CODE TEXT'  (repeatable; PATTERN exact or prefix*, case-insensitive)\n"
	      "                         TEXT may contain \\n for a multi-line reply\n"
	      "  --stall banner|ehlo|starttls|tls|mail|rcpt|data|dot|rset|quit\n"
	      "  --421-after N | --drop-in-data | --delay-ms N | --size N | --chunking\n"
	      "  --dot-after N          --dot applies only after a connection's first N messages\n"
	      "  --limit R[:BURST]      R MAILs per second per client address (token bucket of\n"
	      "                         BURST, default R); above it: 421 4.7.28 and close\n"
	      "  --extra-reply MS       fault: a second '250' MS ms after each final reply to DATA or\n"
	      "                         BDAT LAST, before reading anything else (not with --delay-ms);\n"
	      "                         MS 0: in the same write as the final reply\n"
	      "  --bdat-refuse          fault (with --chunking): offer CHUNKING, answer BDAT 502 and\n"
	      "                         read its chunk as command lines\n"
	      "  --no-pipelining --no-8bitmime --no-smtputf8 --no-ehlo\n"
	      "  --auth USER:PASS       offer AUTH PLAIN LOGIN (inside TLS when there is a cert) and\n"
	      "                         require it for MAIL (530); 235 or 535; .env gets auth=USER|-\n"
	      "  --tls-on-connect       implicit TLS (RFC 8314, port 465): handshake first, then the\n"
	      "                         banner; STARTTLS is not offered (needs --cert or --tls-fail)\n"
	      "  --maildir DIR          DIR/<n>.eml (un-stuffed message) then DIR/<n>.env\n"
	      "                         (.env: mail, rcpt, peer (client IP:port), tls, helo, ...)\n"
	      "  --stats A:P            plaintext: one stats line per connection\n"
	      "  --pidfile F | --quiet | -v\n"
	      "stats line: connections handshakes resumed messages recipients bytes active (open now)\n"
	      "  peak (most open at once) rejected authfail (AUTH commands not answered 235)\n"
	      "  quits (QUIT received) auths (AUTH commands received) mails (MAIL commands received)\n"
	      "  quits_pipelined (QUIT read with the command before it, whose reply was not yet sent)\n"
	      "  limited (MAILs answered 421 4.7.28 by --limit)\n"
	      "signals: SIGUSR1 prints the stats line; SIGTERM/SIGINT print it and exit 0\n",
	      f);
}

enum {
	O_LISTEN = 256, O_CERT, O_KEY, O_THREADS, O_HOSTNAME, O_TLS_MAX, O_GREETING, O_RCPT,
	O_MAIL, O_DOT, O_STALL, O_421, O_SIZE, O_DELAY, O_MAILDIR, O_STATS, O_PIDFILE, O_HELP,
	O_AUTH, O_TLS_FAIL, O_EXTRA, O_DOT_AFTER, O_LIMIT,
};

static void parse_args(struct sink *sk, int argc, char **argv)
{
	const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN }, { "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY }, { "threads", required_argument, NULL, O_THREADS },
		{ "hostname", required_argument, NULL, O_HOSTNAME },
		{ "tls-max", required_argument, NULL, O_TLS_MAX },
		{ "greeting", required_argument, NULL, O_GREETING },
		{ "rcpt", required_argument, NULL, O_RCPT }, { "mail", required_argument, NULL, O_MAIL },
		{ "dot", required_argument, NULL, O_DOT }, { "stall", required_argument, NULL, O_STALL },
		{ "421-after", required_argument, NULL, O_421 }, { "size", required_argument, NULL, O_SIZE },
		{ "delay-ms", required_argument, NULL, O_DELAY },
		{ "maildir", required_argument, NULL, O_MAILDIR },
		{ "stats", required_argument, NULL, O_STATS },
		{ "pidfile", required_argument, NULL, O_PIDFILE },
		{ "auth", required_argument, NULL, O_AUTH },
		{ "tls-on-connect", no_argument, &sk->tls_on_connect, 1 },
		{ "no-starttls", no_argument, &sk->no_starttls, 1 },
		{ "tls-fail", optional_argument, NULL, O_TLS_FAIL },
		{ "extra-reply", required_argument, NULL, O_EXTRA },
		{ "dot-after", required_argument, NULL, O_DOT_AFTER },
		{ "limit", required_argument, NULL, O_LIMIT },
		{ "bdat-refuse", no_argument, &sk->bdat_refuse, 1 },
		{ "no-tickets", no_argument, &sk->no_tickets, 1 },
		{ "drop-in-data", no_argument, &sk->drop_in_data, 1 },
		{ "no-pipelining", no_argument, &sk->no_pipelining, 1 },
		{ "no-8bitmime", no_argument, &sk->no_8bitmime, 1 },
		{ "no-smtputf8", no_argument, &sk->no_smtputf8, 1 },
		{ "no-ehlo", no_argument, &sk->no_ehlo, 1 },
		{ "chunking", no_argument, &sk->chunking, 1 },
		{ "quiet", no_argument, &sk->verbosity, 0 }, { "verbose", no_argument, &sk->verbosity, 2 },
		{ "help", no_argument, NULL, O_HELP }, { NULL, 0, NULL, 0 },
	};
	const char *eq;
	uint64_t v;
	size_t i;
	int o;
	sk->threads = 1;
	sk->hostname = "mxsink.test";
	sk->tls_max = TLS1_3_VERSION;
	sk->after421 = -1;
	sk->verbosity = 1;
	sk->msg_max = HARD_MSG_MAX;
	while ((o = getopt_long(argc, argv, "vq", opts, NULL)) != -1) {
		switch (o) {
		case 0: break;   /* a flag getopt_long has set */
		case 'v': sk->verbosity = 2; break;
		case 'q': sk->verbosity = 0; break;
		case O_CERT: sk->cert = optarg; break;
		case O_KEY: sk->key = optarg; break;
		case O_MAILDIR: sk->maildir = optarg; break;
		case O_PIDFILE: sk->pidfile = optarg; break;
		case O_LIMIT: {
			char *end;
			sk->lim.rate = strtod(optarg, &end);
			sk->lim.burst = sk->lim.rate < 1 ? 1 : sk->lim.rate;
			if (*end == ':')
				sk->lim.burst = strtod(end + 1, &end);
			if (*end != '\0' || !(sk->lim.rate > 0 && sk->lim.rate <= 1e6) ||
			    !(sk->lim.burst >= 1 && sk->lim.burst <= 1e6))
				die("bad --limit '%s' (R[:BURST], R > 0, BURST >= 1)", optarg);
			pthread_mutex_init(&sk->lim.mu, NULL);
			break;
		}
		case O_HELP: usage(stdout); exit(0);
		case O_AUTH:
			if (!(eq = strchr(optarg, ':')) || eq == optarg || strpbrk(optarg, "\r\n") ||
			    (size_t)(eq - optarg) > 255 || strlen(eq + 1) > 255)
				die("bad --auth (USER:PASS, USER not empty, each at most 255 bytes)");
			free(sk->auth_user);
			free(sk->auth_pass);
			sk->auth_ulen = (size_t)(eq - optarg);
			sk->auth_user = xstrndup(optarg, sk->auth_ulen);
			sk->auth_plen = strlen(eq + 1);
			sk->auth_pass = xstrndup(eq + 1, sk->auth_plen);
			break;
		case O_LISTEN:
			if (!parse_listen(optarg, &sk->listen, &sk->nlisten))
				die("bad --listen '%s' (ADDR[-LAST]:PORT or [V6]:PORT)", optarg);
			break;
		case O_STATS:
			if (sk->nstats || !parse_listen(optarg, &sk->stats, &sk->nstats) || sk->nstats != 1)
				die("bad --stats '%s' (one ADDR:PORT)", optarg);
			break;
		case O_THREADS:
			if (!parse_u64(optarg, 256, &v) || v == 0)
				die("bad --threads '%s' (1..256)", optarg);
			sk->threads = (unsigned)v;
			break;
		case O_HOSTNAME:
			if (!*optarg || strpbrk(optarg, " \r\n") || strlen(optarg) > 255)
				die("bad --hostname '%s'", optarg);
			sk->hostname = optarg;
			break;
		case O_TLS_MAX:
			if (!strcmp(optarg, "1.0"))
				sk->tls_max = TLS1_VERSION;
			else if (!strcmp(optarg, "1.1"))
				sk->tls_max = TLS1_1_VERSION;
			else if (!strcmp(optarg, "1.2"))
				sk->tls_max = TLS1_2_VERSION;
			else if (!strcmp(optarg, "1.3"))
				sk->tls_max = TLS1_3_VERSION;
			else
				die("bad --tls-max '%s' (1.0, 1.1, 1.2 or 1.3)", optarg);
			break;
		case O_TLS_FAIL:
			if (!optarg || !strcmp(optarg, "garbage"))
				sk->tls_fail = TLS_FAIL_GARBAGE;
			else if (!strcmp(optarg, "alert"))
				sk->tls_fail = TLS_FAIL_ALERT;
			else if (!strcmp(optarg, "cut"))
				sk->tls_fail = TLS_FAIL_CUT;
			else
				die("bad --tls-fail '%s' (garbage, alert or cut)", optarg);
			break;
		case O_EXTRA:
			if (!parse_u64(optarg, 60000, &v))
				die("bad --extra-reply '%s' (0..60000 ms)", optarg);
			sk->extra_ms = (unsigned)v;
			sk->extra_on = true;
			break;
		case O_DOT_AFTER:
			if (!parse_u64(optarg, UINT32_MAX, &v))
				die("bad --dot-after '%s'", optarg);
			sk->dot_after = v;
			break;
		case O_GREETING:
		case O_MAIL:
		case O_DOT:
			if (!parse_reply(optarg, o == O_GREETING ? &sk->greeting : o == O_MAIL ? &sk->mail : &sk->dot))
				die("bad reply '%s' (CODE TEXT, CODE 200..599)", optarg);
			break;
		case O_RCPT:
			sk->rules = xrealloc(sk->rules, (sk->nrules + 1) * sizeof *sk->rules);
			struct rcpt_rule *r = &sk->rules[sk->nrules++];
			if (!(eq = strchr(optarg, '=')) || eq == optarg || !parse_reply(eq + 1, &r->r))
				die("bad --rcpt '%s' (PATTERN=CODE TEXT)", optarg);
			r->plen = (size_t)(eq - optarg);
			r->prefix = optarg[r->plen - 1] == '*';
			r->plen -= r->prefix;
			r->pat = xstrndup(optarg, r->plen);
			break;
		case O_STALL:
			for (i = 1; i < STALL_N && strcmp(optarg, stall_names[i]); i++)
				;
			if (i == STALL_N)
				die("bad --stall '%s' (banner|ehlo|starttls|tls|mail|rcpt|data|dot|rset|quit)", optarg);
			sk->stall = (enum stall)i;
			break;
		case O_421:
			if (!parse_u64(optarg, INT32_MAX, &v))
				die("bad --421-after '%s'", optarg);
			sk->after421 = (int64_t)v;
			break;
		case O_SIZE:
			if (!parse_u64(optarg, UINT64_MAX / 2, &v) || v == 0)
				die("bad --size '%s'", optarg);
			sk->msg_max = v;
			break;
		case O_DELAY:
			if (!parse_u64(optarg, 3600000, &v))
				die("bad --delay-ms '%s'", optarg);
			sk->delay_ms = (unsigned)v;
			break;
		default: usage(stderr); exit(1);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s'", argv[optind]);
	if (!sk->nlisten)
		die("no --listen address");
	if (!sk->cert != !sk->key)
		die("--cert and --key go together");
	if (sk->nlisten * sk->threads > MAX_LISTEN)
		die("%zu addresses x %u threads: too many listening sockets", sk->nlisten, sk->threads);
	if (sk->extra_ms && sk->delay_ms)
		die("--extra-reply and --delay-ms do not go together (one timer delay per sink)");
	if (sk->bdat_refuse && !sk->chunking)
		die("--bdat-refuse needs --chunking");
	if (sk->tls_on_connect && !sk->cert && !sk->tls_fail)
		die("--tls-on-connect needs --cert and --key (or --tls-fail)");
	sk->starttls = (sk->cert || sk->tls_fail) && !sk->no_starttls && !sk->tls_on_connect;
}

int main(int argc, char **argv)
{
	static struct sink sink;   /* static: zeroed, and outlives every worker */
	struct sink *sk = &sink;
	struct rlimit rl;
	sigset_t set;
	pthread_t tid;
	char name[64];

	parse_args(sk, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (sk->cert)
		sk->ssl_ctx = tls_ctx_new(sk);
	if (sk->maildir && mkdir(sk->maildir, 0755) == -1 && errno != EEXIST)
		die("--maildir %s: %s", sk->maildir, strerror(errno));
	build_replies(sk);

	/* SO_REUSEPORT would let us silently share a port with another sink of the same user;
	 * a plain bind first turns that into the bind error it should be. */
	for (size_t i = 0; i < sk->nlisten; i++) {
		int fd = listen_socket(&sk->listen[i], false, false);
		if (fd < 0) {
			fmt_addr(&sk->listen[i].a, name, sizeof name);
			die("bind %s: %s", name, strerror(-fd));
		}
		close(fd);
	}
	struct worker *workers = xrealloc(NULL, sk->threads * sizeof *workers);
	memset(workers, 0, sk->threads * sizeof *workers);
	for (unsigned i = 0; i < sk->threads; i++)
		worker_init(sk, &workers[i], i == 0);

	/* The workers inherit this mask: only the main thread takes these signals. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (unsigned i = 0; i < sk->threads; i++) {
		int e = pthread_create(&tid, NULL, worker_main, &workers[i]);
		if (e)
			die("pthread_create: %s", strerror(e));
	}
	if (sk->pidfile) {
		FILE *f = fopen(sk->pidfile, "w");
		if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0)
			die("--pidfile %s: %s", sk->pidfile, strerror(errno));
	}
	if (sk->verbosity >= 2)
		log_line("evt=start addresses=%zu threads=%u tls=%s", sk->nlisten, sk->threads,
			sk->ssl_ctx ? "yes" : "no");

	/* Handshakes hold ~35 KB each for a moment, interleaved with the ~15 KB every session
	 * keeps, so a storm of them leaves the heap full of free holes: once connection churn
	 * stops for a second, give those pages back (util_heap_release: glibc malloc_trim
	 * releases free pages inside the heap too; jemalloc purges its dirty pages).  This halves the RSS of 10,000 idle TLS sessions. */
	uint64_t churn_seen = 0;
	bool dirty = false;
	for (;;) {
		struct timespec tick = { .tv_sec = 1 };
		char line[512];
		int sig = sigtimedwait(&set, NULL, &tick);
		if (sig == -1) {
			uint64_t churn = atomic_load(&sk->k.handshakes) + atomic_load(&sk->k.connections) -
				atomic_load(&sk->k.active);
			if (churn != churn_seen) {
				churn_seen = churn;
				dirty = true;
			} else if (dirty) {
				util_heap_release();
				dirty = false;
			}
			continue;
		}
		stats_format(&sk->k, line, sizeof line);
		fputs(line, stdout);
		fflush(stdout);
		if (sig != SIGUSR1)
			_exit(0);
	}
}
