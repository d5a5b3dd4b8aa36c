/* cluster.h: Redis Cluster support of the queue. The pure parts (a key's
 * hash slot, a MOVED/ASK error, a CLUSTER SLOTS reply) are public for the
 * config check and the tests; the routing of the queue's connections lives
 * in cluster.c behind queue_int.h.
 *
 * How mxsend uses a cluster ([redis] cluster = yes; README "Redis Cluster"):
 * every key of a queue carries one hash tag, so all of them sit in one slot
 * ("the queue's slot", that of [redis] jobs). Each connection asks the node
 * it reaches for CLUSTER SLOTS and moves to the master that owns the queue's
 * slot; a MOVED for that slot moves it too; a lost or refused connection
 * moves it to the next node it knows (the URL's, then every node the last
 * CLUSTER SLOTS named), which points it to the new master after a failover. */
#ifndef QUEUE_CLUSTER_H
#define QUEUE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#define QUEUE_CLUSTER_SLOTS 16384
#define QUEUE_CLUSTER_NODES 32 /* nodes remembered per queue */

struct redisReply;

/* The hash slot of key (len bytes): CRC16 (XMODEM) of the key, or of the part
 * between the first '{' and the next '}' when that part is not empty, mod
 * 16384 (the Redis Cluster specification). Pure. */
unsigned queue_key_slot(const char *key, size_t len);

struct queue_node {
	char host[256];
	int port;
};

/* Parse "HOST:PORT[,HOST:PORT...]" ([redis] cluster_nodes; an IPv6 HOST in
 * brackets, "[::1]:7000") into out[0..max). Returns how many, or -1 with a
 * message in err (a bad entry, more than max). Pure. */
int queue_cluster_nodes(const char *list, struct queue_node *out, int max, char *err,
			size_t errlen);

/* Parse a redirection error "MOVED SLOT HOST:PORT" or "ASK SLOT HOST:PORT"
 * (len bytes, not necessarily terminated). An empty HOST (the node does not
 * know its address) is left "" for the caller to fill. Returns 1 for MOVED,
 * 2 for ASK, 0 for another error, -1 for a MOVED/ASK that does not parse. Pure. */
int queue_cluster_redirect(const char *err, size_t len, unsigned *slot, struct queue_node *to);

/* From a CLUSTER SLOTS reply: the master serving slot into *owner, and every
 * node named (masters and replicas) added to known[0..*nknown) when not there
 * yet, up to max. A node named by "" (or "?") takes self_host. Hostile
 * replies (wrong types, slots out of range, ports out of 1..65535, hosts too
 * long or with blanks) are refused whole. Returns 0 (owner set), 1 (the reply
 * is valid but no node serves the slot: cluster down), or -1 (malformed;
 * known untouched). Pure. */
int queue_cluster_owner(const struct redisReply *r, unsigned slot, const char *self_host,
			struct queue_node *owner, struct queue_node *known, int *nknown, int max);

#endif
