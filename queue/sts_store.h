/* sts_store.h: MTA-STS policies kept in Redis across restarts and shared by
 * every process (RFC 8461 5.1: a policy stays in force until it expires, even
 * when its TXT record or its host cannot be reached). The key, the value's
 * form and its lifetime are tlscache/sts.h's (sts_redis_key,
 * sts_policy_encode, sts_policy_ttl); this module only carries them. */
#ifndef QUEUE_STS_STORE_H
#define QUEUE_STS_STORE_H

#include <stddef.h>
#include <stdint.h>

struct queue;
struct queue_sync;

/* Persist a policy fetched for domain, as PREFIX:sts:DOMAIN (prefix: [redis]
 * prefix, NULL = the default, tlscache/sts.h) (encoded: sts_policy_encode form,
 * borrowed for the call) through the queue's command connection (async,
 * fire-and-forget), expiring when the policy does. now: wall-clock seconds.
 * Returns 0 (sent; or nothing to keep: the policy has expired, or encoded is
 * not a policy), or -ENOTCONN (Redis not connected: not persisted). For the
 * queue's loop thread. */
int sts_store_save(struct queue *q, const char *prefix, const char *domain, const char *encoded,
		   int64_t now);

/* Receives one persisted policy: domain and encoded are borrowed for the call. */
typedef void sts_store_fn(void *arg, const char *domain, const char *encoded);
/* Read every persisted policy (start-up; blocks: SCAN + GET on s) and hand
 * each to fn. prefix: as sts_store_save's. Returns how many were read, or -1
 * with a message in err. */
int sts_store_load(struct queue_sync *s, const char *prefix, sts_store_fn *fn, void *arg, char *err,
		   size_t errlen);

#endif
