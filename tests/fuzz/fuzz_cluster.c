/* fuzz_cluster.c: libFuzzer target for queue/cluster.c's parsers of what a
 * Redis Cluster node sends: the input is read as RESP (hiredis's reader, as
 * the queue gets it) and handed to queue_cluster_owner for a few slots, and
 * taken whole as a MOVED/ASK error text and as a [redis] cluster_nodes list. `make fuzz` runs it; `make test`
 * replays tests/fuzz/seeds/cluster/.
 * Promises: an owner found is a node of 1..65535 with a non-empty,
 * NUL-terminated host; known never grows past its bound, and only on
 * success; a redirect parsed has a slot < 16384 and a port in 1..65535; a
 * node list parsed gives 1..max nodes, each with a host and such a port. */
#include <stdlib.h>
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

	char *list = malloc(size + 1), err[128];
	if (list == NULL)
		abort();
	memcpy(list, data, size);
	list[size] = '\0';
	int nn = queue_cluster_nodes(list, known, 4, err, sizeof(err));
	FUZZ_NEED(nn == -1 || (nn >= 1 && nn <= 4));
	for (int i = 0; i < nn; i++)
		FUZZ_NEED(known[i].host[0] != '\0' && strlen(known[i].host) < sizeof(known[i].host) &&
			  known[i].port >= 1 && known[i].port <= 65535);
	if (nn < 0)
		FUZZ_NEED(strlen(err) < sizeof(err) && err[0] != '\0');
	free(list);

	/* hiredis 0.14's reader allocates an array's elements as soon as it reads
	 * its count ("*370010923"): no cap there (newer hiredis has maxelements).
	 * That is the reader's, before any of our code; keep the counts small. */
	for (size_t i = 0; i + 1 < size; i++) {
		if (data[i] != '*')
			continue;
		unsigned long v = 0;
		for (size_t d = i + 1; d < size && data[d] >= '0' && data[d] <= '9' && v <= 4096; d++)
			v = v * 10 + (data[d] - '0');
		if (v > 4096)
			return 0;
	}
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
