/* sts_store.c: MTA-STS policies in Redis (see sts_store.h). */
#include "queue/sts_store.h"

#include <errno.h>
#include <stdio.h>

#include "queue/queue.h"
#include "tlscache/sts.h"

int sts_store_save(struct queue *q, const char *prefix, const char *domain, const char *encoded,
		   int64_t now)
{
	int64_t ttl = sts_policy_ttl(encoded, now);
	char key[600], ex[24];
	if (ttl <= 0 || sts_redis_key(key, sizeof(key), prefix, domain) < 0)
		return 0;
	snprintf(ex, sizeof(ex), "%lld", (long long)ttl);
	const char *av[] = { "SET", key, encoded, "EX", ex };
	return queue_command(q, 5, av) == 0 ? 0 : -ENOTCONN;
}

struct load {
	sts_store_fn *fn;
	void *arg;
	const char *prefix;
};

static void loaded(void *arg, const char *key, const char *value)
{
	struct load *ld = arg;
	const char *domain = sts_redis_domain(key, ld->prefix);
	if (domain != NULL)
		ld->fn(ld->arg, domain, value);
}

int sts_store_load(struct queue_sync *s, const char *prefix, sts_store_fn *fn, void *arg, char *err,
		   size_t errlen)
{
	struct load ld = { fn, arg, prefix };
	char match[600];
	if (sts_redis_match(match, sizeof(match), prefix) < 0) {
		snprintf(err, errlen, "mta-sts: [redis] prefix too long");
		return -1;
	}
	return queue_sync_scan(s, match, loaded, &ld, err, errlen);
}
