/* redis_tls.h: rediss:// for hiredis 0.14, which has no TLS of its own.
 *
 * hiredis talks plaintext to one end of a local socket; a relay carries the
 * bytes over TLS to the server (queue.h, struct queue_tls):
 * - on a loop (`mxsend run`): the relay lives on the ring, the TLS side is a
 *   conn.c connection running tls.c's engine over memory BIOs; hiredis's end
 *   is a unix socket it connects to (hiredis 0.14's async API cannot take a
 *   ready fd), made in a private 0700 directory and unlinked at once;
 * - blocking (the short-lived commands): the handshake and one exchange run
 *   in the caller, so a refused certificate is a clear error at once; then a
 *   relay thread shuttles bytes between a socketpair and the TLS socket.
 * The server's chain must verify (tls_ca, else the system store) and its
 * certificate must name tls_name (default: the host connected to); TLS 1.2
 * at least; an optional client certificate. Never a plaintext fallback.
 * Errors name files and hosts, never a password or key material. */
#ifndef SENDER_REDIS_TLS_H
#define SENDER_REDIS_TLS_H

#include <stddef.h>

struct loop;
struct queue_tls;
struct redisContext;
struct redisAsyncContext;

/* queue_tls.connect: blocking, 5 s timeouts. */
struct redisContext *redis_tls_connect(const struct queue_tls *t, const char *host, int port,
				       char *err, size_t errlen);
/* The TLS settings of `mxsend run`, loaded once (its files are not read
 * again on the loop thread at each reconnect). t's strings are borrowed for
 * its life. NULL with err set. */
struct redis_tls;
struct redis_tls *redis_tls_new(const struct queue_tls *t, char *err, size_t errlen);
void redis_tls_free(struct redis_tls *rt); /* NULL: no-op; open relays are unaffected */
/* queue_host.connect_tls on loop l: an async context not yet attached, whose
 * relay connects, handshakes and then carries its bytes; a failure of the
 * relay (connect, handshake, verification, the server's alert) is logged
 * (evt=redis_tls_failed) and closes hiredis's end: the queue sees a lost
 * connection and reconnects with back-off. NULL with why set when the host
 * does not resolve or the local pair cannot be made. A host name is resolved
 * with a blocking lookup, as hiredis's redisAsyncConnect does. */
struct redisAsyncContext *redis_tls_connect_async(struct loop *l, struct redis_tls *rt, const char *host,
						  int port, char *why, size_t n);
/* Load the CA file, the client certificate and key once (start-up check:
 * config errors). 0, or -1 with err set. */
int redis_tls_check(const struct queue_tls *t, char *err, size_t errlen);

#endif
