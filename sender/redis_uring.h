/* redis_uring.h: run a hiredis async context on our loop (the shape of
 * hiredis's adapters/poll.h, over loop.h readiness watchers).
 *
 * hiredis 0.14 tells an adapter when it wants to read or write (addRead,
 * delRead, addWrite, delWrite) and when the context goes away (cleanup). We keep
 * { ac, loop, fd, reading, writing, in_dispatch, deleted } and a watcher:
 * - reads: on read readiness we read up to 64 KiB straight into hiredis's
 *   reader buffer, then redisAsyncHandleRead parses and dispatches (hiredis
 *   alone reads 16 KiB per call, through a stack buffer it copies from); up
 *   to 1 MiB per dispatch, then we continue in a deferred task (fairness);
 * - writes: a command only appends to hiredis's buffer, so addWrite queues a
 *   deferred flush (all commands of one loop iteration leave in one write);
 *   only when the socket is full, or still connecting, do we wait for write
 *   readiness;
 * - cleanup frees at once, or marks `deleted` inside a dispatch, and the
 *   dispatcher (or the pending task) frees afterwards (STYLE 5.1).
 * hiredis 0.14 has no timer hook: command and connect timeouts are the queue's.
 * Attaching twice is refused. */
#ifndef SENDER_REDIS_URING_H
#define SENDER_REDIS_URING_H

struct loop;
struct redisAsyncContext;

/* Attach ac (not yet attached, no error) to loop l. 0, or -EEXIST if ac already
 * has an adapter. Afterwards hiredis owns the adapter state (freed by its
 * cleanup hook when the context is freed). Never calls back before returning. */
int redis_uring_attach(struct loop *l, struct redisAsyncContext *ac);

#endif
