/* fuzz_cluster.c: libFuzzer target for queue/cluster.c's parsers of what a
 * Redis Cluster node sends: the input is read as RESP (hiredis's reader, as
 * the queue gets it) and handed to queue_cluster_owner for a few slots, and
 * taken whole as a MOVED/ASK error text. `make fuzz` runs it; `make test`
 * replays tests/fuzz/seeds/cluster/.
 * Promises: an owner found is a node of 1..65535 with a non-empty,
 * NUL-terminated host; known never grows past its bound, and only on
 * success; a redirect parsed has a slot < 16384 and a port in 1..65535. */
#include <string.h>

#include <hiredis/hiredis.h>

#include "queue/cluster.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned slot = 99999;
	struct queue_node n, known[4];
	int k = queue_cluster_redirect((const char *)data, size, &slot, &n);
	FUZZ_NEED(k >= -1 && k <= 2);
	if (k > 0)
		FUZZ_NEED(slot < QUEUE_CLUSTER_SLOTS && n.port >= 1 && n.port <= 65535 &&
			  strlen(n.host) < sizeof(n.host));
	FUZZ_NEED(queue_key_slot((const char *)data, size) < QUEUE_CLUSTER_SLOTS);

	redisReader *rd = redisReaderCreate();
	void *out = NULL;
	if (rd == NULL)
		return 0;
	redisReaderFeed(rd, (const char *)data, size);
	if (redisReaderGetReply(rd, &out) == REDIS_OK && out != NULL) {
		const unsigned slots[] = { 0, 1, 5460, 16383 };
		int nk = 0;
		for (size_t i = 0; i < 4; i++) {
			int before = nk;
			n.port = -7;
			int rc = queue_cluster_owner(out, slots[i], "self", &n, known, &nk, 4);
			FUZZ_NEED(rc >= -1 && rc <= 1 && nk <= 4);
			if (rc < 0)
				FUZZ_NEED(nk == before && n.port == -7);
			if (rc == 0)
				FUZZ_NEED(n.port >= 1 && n.port <= 65535 && n.host[0] != '\0' &&
					  strlen(n.host) < sizeof(n.host));
		}
		freeReplyObject(out);
	}
	redisReaderFree(rd);
	return 0;
}
