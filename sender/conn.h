/* conn.h: one outgoing TCP connection driven by the loop, with optional TLS.
 *
 * The owner gives callbacks at creation. They run only from loop completions
 * (never from inside a conn_* call), and never after conn_close(). Inside a
 * callback the owner may call any conn_* function, including conn_close().
 * Output is buffered without a hard cap; the owner keeps it bounded by checking
 * conn_out_pending() and waiting for on_drain (the SMTP body is streamed so).
 * A connection is single-use: connect once, close once. */
#ifndef SENDER_CONN_H
#define SENDER_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct loop;
struct conn;
struct tls;

struct conn_cb {
	void (*on_connect)(void *arg, int err);               /* 0 or -errno */
	void (*on_read)(void *arg, const char *data, size_t n); /* plaintext bytes */
	void (*on_tls)(void *arg, int err);                   /* handshake done: 0 or -EPROTO */
	void (*on_error)(void *arg, int err);                 /* 0: peer closed; -errno; -EPROTO (TLS) */
	void (*on_drain)(void *arg);                          /* output fell below the low mark */
};

#define CONN_OUT_LOW (32 * 1024)

struct conn *conn_new(struct loop *l, const struct conn_cb *cb, void *arg);
/* Start connecting (sa copied). Returns 0 or -errno (socket creation failed:
 * no callback follows then). */
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t salen);
/* conn_connect from local address src (an egress source, port 0): the new
 * socket is bound to it first (bind on a fresh socket does not block; the
 * port is chosen at connect, IP_BIND_ADDRESS_NO_PORT). src NULL: as
 * conn_connect. A bind that fails is -errno (-EADDRNOTAVAIL: the address is
 * gone from the host), with no callback. */
int conn_connect_from(struct conn *c, const struct sockaddr *sa, socklen_t salen,
		      const struct sockaddr *src, socklen_t srclen);
/* Queue bytes (copied); encrypted when TLS is on. */
void conn_write(struct conn *c, const void *buf, size_t n);
/* Bytes queued and not yet acknowledged by the kernel. */
size_t conn_out_pending(const struct conn *c);
/* Switch to TLS (takes ownership of t) and start the handshake; on_tls follows.
 * Plaintext already delivered to on_read is the owner's to discard (RFC 3207). */
void conn_starttls(struct conn *c, struct tls *t);
/* The TLS session, or NULL (borrowed). */
struct tls *conn_tls(struct conn *c);
/* ACK what has arrived now, not after the delayed-ACK timer (TCP_QUICKACK):
 * a server that sends its replies in two writes (Postfix: MAIL/RCPT replies,
 * then the BDAT reply) holds the second behind Nagle until our ACK. */
void conn_quickack(struct conn *c);
/* Close: cancels I/O, frees once the kernel is done with it. NULL is a no-op. */
void conn_close(struct conn *c);
/* Local/peer text "IP:PORT" of the connected socket for logs (borrowed). */
const char *conn_peer(const struct conn *c);

#endif
