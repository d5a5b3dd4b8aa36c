/* conn.c: a TCP connection on the ring, plaintext or TLS over memory BIOs.
 *
 * Ops in flight: at most one connect, one recv and one send. Output uses two
 * buffers: `pend` collects new bytes while `fly` is being sent, so a buffer in
 * flight is never reallocated; when `fly` completes the two swap. With TLS,
 * plaintext is encrypted at conn_write time and the ciphertext joins `pend`.
 * Lifetime (STYLE 5): conn_close marks the connection closing and cancels its
 * ops; every completion decrements `inflight`, and the memory is freed from a
 * deferred task once nothing is in flight. Callbacks are never made after
 * conn_close. */
#include "sender/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/tls.h"
#include "sender/util.h"

#define RBUF_SIZE (16 * 1024)

struct buf {
	char *p;
	size_t len, cap;
};

struct conn {
	struct loop *l;
	const struct conn_cb *cb;
	void *arg;
	int fd;
	struct loop_op connect_op, recv_op, send_op, close_op;
	struct loop_task free_task, hs_task, flush_task;
	struct loop_timer retry; /* re-arm a receive after -ENOBUFS */
	struct loop_timer quiet; /* no input for CONN_QUIET_MS: give TLS buffers back */
	unsigned inflight;
	bool closing, connected, recv_armed, sending;
	struct tls *tls;
	bool handshaking;
	struct sockaddr_storage sa;
	socklen_t salen;
	struct buf plain; /* corked plaintext, encrypted once per iteration (TLS) */
	struct buf pend, fly;
	size_t fly_off;
	char *rbuf;
	char peer[64];
};

/* Output buffers live only while there is output: an empty one goes back to
 * the loop's spare blocks (loop_block_get), so a busy connection does not
 * malloc and free ~16 KB per message and an idle one holds nothing. */
static void buf_reserve(struct loop *l, struct buf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	if (b->cap == 0 && n <= LOOP_BLOCK) {
		b->p = loop_block_get(l);
		b->cap = LOOP_BLOCK;
		return;
	}
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

static void buf_release(struct loop *l, struct buf *b)
{
	if (b->cap == LOOP_BLOCK)
		loop_block_put(l, b->p);
	else
		free(b->p);
	*b = (struct buf){ 0 };
}

static void buf_append(struct loop *l, struct buf *b, const void *p, size_t n)
{
	buf_reserve(l, b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void free_task_fn(struct loop_task *t)
{
	struct conn *c = container_of(t, struct conn, free_task);
	if (c->inflight > 0) /* a close op is still out: its completion reschedules */
		return;
	loop_timer_stop(c->l, &c->retry);
	loop_timer_stop(c->l, &c->quiet);
	tls_free(c->tls);
	buf_release(c->l, &c->plain);
	buf_release(c->l, &c->pend);
	buf_release(c->l, &c->fly);
	free(c->rbuf);
	free(c);
}

/* Called after every completion while closing. */
static void maybe_free(struct conn *c)
{
	if (c->inflight > 0)
		return;
	if (c->fd != -1) {
		int fd = c->fd;
		c->fd = -1;
		c->inflight++;
		loop_close(c->l, &c->close_op, fd);
		return;
	}
	loop_defer(c->l, &c->free_task);
}

static void close_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, close_op);
	(void)res;
	(void)flags;
	c->inflight--;
	maybe_free(c);
}

static void fail(struct conn *c, int err)
{
	if (!c->closing)
		c->cb->on_error(c->arg, err);
}

static void start_send(struct conn *c)
{
	if (c->sending || c->closing || !c->connected)
		return;
	if (c->fly_off >= c->fly.len) {
		if (c->pend.len == 0)
			return;
		struct buf t = c->fly;
		c->fly = c->pend;
		c->pend = t;
		c->pend.len = 0;
		c->fly_off = 0;
	}
	c->sending = true;
	c->inflight++;
	loop_send(c->l, &c->send_op, c->fd, c->fly.p + c->fly_off, c->fly.len - c->fly_off);
}

/* Writes are corked: everything written during one loop iteration goes out as
 * one TLS write (fewer records, fewer encrypt calls) and one send. */
static void flush_task_fn(struct loop_task *t)
{
	struct conn *c = container_of(t, struct conn, flush_task);
	if (c->closing)
		return;
	if (c->tls == NULL || c->plain.len == 0) {
		start_send(c);
		return;
	}
	size_t off = 0;
	while (off < c->plain.len) {
		size_t done = 0, n = c->plain.len - off;
		/* one record at a time; the ciphertext lands in pend (tls_out) */
		if (n > 16384)
			n = 16384;
		enum tls_rc rc = tls_write(c->tls, c->plain.p + off, n, &done);
		if (rc != TLS_OK) {
			/* Memory BIOs never block writes; this is a real TLS failure. */
			log_debug("evt=tls_write_failed peer=%s err=\"%s\"", c->peer, tls_error(c->tls));
			c->plain.len = 0;
			fail(c, -EPROTO);
			return;
		}
		off += done;
	}
	buf_release(c->l, &c->plain);
	start_send(c);
}

static void send_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, send_op);
	(void)flags;
	c->inflight--;
	c->sending = false;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		fail(c, res);
		return;
	}
	c->fly_off += (size_t)res;
	if (c->fly_off >= c->fly.len) {
		c->fly.len = 0;
		c->fly_off = 0;
		if (c->pend.len == 0) {
			/* Idle: hold no output memory (thousands of sessions wait
			 * on replies at once). */
			buf_release(c->l, &c->fly);
			buf_release(c->l, &c->pend);
		}
	}
	start_send(c);
	if (!c->closing && conn_out_pending(c) < CONN_OUT_LOW)
		c->cb->on_drain(c->arg);
}

static void arm_recv(struct conn *c)
{
	if (c->recv_armed || c->closing)
		return;
	c->recv_armed = true;
	c->inflight++;
	if (c->rbuf == NULL && loop_recv_pooled(c->l, &c->recv_op, c->fd))
		return;
	if (c->rbuf == NULL)
		c->rbuf = xmalloc(RBUF_SIZE);
	loop_recv(c->l, &c->recv_op, c->fd, c->rbuf, RBUF_SIZE);
}

/* A session that has had no input for a while gives OpenSSL's record buffers
 * and its input BIO's capacity back (~17 KB): thousands of sessions waiting
 * on slow servers stay light, and a busy one does not allocate them again
 * for every message. */
#define CONN_QUIET_MS 50
static void quiet_fn(struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, quiet);
	if (c->tls != NULL && !c->handshaking && !c->closing)
		tls_release_buffers(c->tls);
}

static void retry_fn(struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, retry);
	arm_recv(c);
}

static void hs_step(struct conn *c)
{
	enum tls_rc rc = tls_handshake(c->tls);
	if (rc == TLS_OK) {
		/* The client's last flight (Finished) waits for what the owner
		 * writes on success (the EHLO of RFC 3207): both leave in one
		 * send, from the flush task, one packet fewer per session. */
		c->handshaking = false;
		loop_defer(c->l, &c->flush_task);
		c->cb->on_tls(c->arg, 0);
		return;
	}
	start_send(c); /* a flight in progress, or the alert of a failure */
	if (c->closing || rc == TLS_AGAIN)
		return;
	c->handshaking = false;
	c->cb->on_tls(c->arg, -EPROTO);
}

static void hs_task_fn(struct loop_task *t)
{
	struct conn *c = container_of(t, struct conn, hs_task);
	if (!c->closing && c->handshaking)
		hs_step(c);
}

/* Decrypt what arrived and hand plaintext to the owner. */
static void tls_input(struct conn *c, const char *data, size_t n)
{
	tls_net_in(c->tls, data, n);
	if (c->handshaking) {
		hs_step(c);
		if (c->closing || c->handshaking)
			return;
	}
	bool any = false;
	for (;;) {
		char plain[16384];
		size_t got = 0;
		enum tls_rc rc = tls_read(c->tls, plain, sizeof(plain), &got);
		if (c->pend.len > 0) /* key updates, alerts: with what we write next */
			loop_defer(c->l, &c->flush_task);
		if (rc == TLS_OK) {
			any = true;
			c->cb->on_read(c->arg, plain, got);
			if (c->closing || c->tls == NULL)
				return;
			continue;
		}
		if (rc == TLS_AGAIN) {
			/* only tickets/key updates: nothing of ours will carry the ACK
			 * soon, and the server's next reply may wait for it (Nagle) */
			if (!any)
				conn_quickack(c);
			loop_timer_arm(c->l, &c->quiet, CONN_QUIET_MS); /* all input consumed */
			return;
		}
		if (rc == TLS_CLOSED) {
			fail(c, 0);
			return;
		}
		log_debug("evt=tls_error peer=%s err=\"%s\"", c->peer, tls_error(c->tls));
		fail(c, -EPROTO);
		return;
	}
}

static void recv_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, recv_op);
	c->inflight--;
	c->recv_armed = false;
	bool pooled = loop_recv_has_buf(flags);
	if (c->closing) {
		if (pooled)
			loop_buf_put(c->l, flags);
		maybe_free(c);
		return;
	}
	if (res == -ENOBUFS) {
		/* The shared pool is empty for now: busy peers will return buffers
		 * within a loop iteration or two. */
		loop_timer_arm(c->l, &c->retry, 1);
		return;
	}
	if (res <= 0) {
		if (pooled)
			loop_buf_put(c->l, flags);
		fail(c, res == 0 ? 0 : res);
		return;
	}
	const char *data = pooled ? loop_recv_buf(c->l, flags) : c->rbuf;
	/* Consume the buffer before re-arming the recv that may target it. */
	if (c->tls)
		tls_input(c, data, (size_t)res);
	else
		c->cb->on_read(c->arg, data, (size_t)res);
	if (pooled)
		loop_buf_put(c->l, flags);
	arm_recv(c);
}

static void connect_cqe(struct loop_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, connect_op);
	(void)flags;
	c->inflight--;
	if (c->closing) {
		maybe_free(c);
		return;
	}
	if (res < 0) {
		c->cb->on_connect(c->arg, res);
		return;
	}
	c->connected = true;
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	arm_recv(c);
	start_send(c);
	c->cb->on_connect(c->arg, 0);
}

struct conn *conn_new(struct loop *l, const struct conn_cb *cb, void *arg)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->l = l;
	c->cb = cb;
	c->arg = arg;
	c->fd = -1;
	c->connect_op.fn = connect_cqe;
	c->recv_op.fn = recv_cqe;
	c->send_op.fn = send_cqe;
	c->close_op.fn = close_cqe;
	loop_task_init(&c->free_task, free_task_fn);
	loop_task_init(&c->hs_task, hs_task_fn);
	loop_task_init(&c->flush_task, flush_task_fn);
	loop_timer_init(&c->retry, retry_fn);
	loop_timer_init(&c->quiet, quiet_fn);
	strlcpy_x(c->peer, "-", sizeof(c->peer));
	return c;
}

int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t salen)
{
	return conn_connect_from(c, sa, salen, NULL, 0);
}

int conn_connect_from(struct conn *c, const struct sockaddr *sa, socklen_t salen,
		      const struct sockaddr *src, socklen_t srclen)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (src != NULL) {
		int one = 1, e = 0;
		if (src->sa_family != sa->sa_family)
			e = EAFNOSUPPORT;
		else {
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
			if (bind(fd, src, srclen) != 0)
				e = errno;
		}
		if (e != 0) {
			close(fd);
			return -e;
		}
	}
	c->fd = fd;
	memcpy(&c->sa, sa, salen);
	c->salen = salen;
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		port = ntohs(s4->sin_port);
		snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
	} else {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		port = ntohs(s6->sin6_port);
		snprintf(c->peer, sizeof(c->peer), "[%s]:%d", ip, port);
	}
	c->inflight++;
	loop_connect(c->l, &c->connect_op, fd, (struct sockaddr *)&c->sa, salen);
	return 0;
}

void conn_write(struct conn *c, const void *buf, size_t n)
{
	if (c->closing || n == 0)
		return;
	buf_append(c->l, c->tls ? &c->plain : &c->pend, buf, n);
	loop_defer(c->l, &c->flush_task);
}

size_t conn_out_pending(const struct conn *c)
{
	return c->plain.len + c->pend.len + (c->fly.len - c->fly_off);
}

/* The TLS engine's output, straight into the pending output buffer. */
static void tls_out(void *arg, const void *buf, size_t n)
{
	struct conn *c = arg;
	buf_append(c->l, &c->pend, buf, n);
}

void conn_starttls(struct conn *c, struct tls *t)
{
	tls_free(c->tls);
	c->tls = t;
	tls_set_output(t, tls_out, c);
	c->handshaking = true;
	loop_defer(c->l, &c->hs_task);
}

void conn_quickack(struct conn *c)
{
	int one = 1;
	if (c->fd != -1 && !c->closing)
		setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

struct tls *conn_tls(struct conn *c)
{
	return c->tls;
}

void conn_close(struct conn *c)
{
	if (c == NULL || c->closing)
		return;
	c->closing = true;
	if (c->recv_armed)
		loop_cancel(c->l, &c->recv_op);
	if (c->sending)
		loop_cancel(c->l, &c->send_op);
	if (c->inflight > 0 && !c->connected && c->fd != -1)
		loop_cancel(c->l, &c->connect_op);
	maybe_free(c);
}

const char *conn_peer(const struct conn *c)
{
	return c->peer;
}
