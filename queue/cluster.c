/* cluster.c: Redis Cluster routing of the queue (see cluster.h): the key
 * slot, the parsers of MOVED/ASK errors and of CLUSTER SLOTS replies (hostile
 * input: validated whole), the node the async connections go to, and the
 * synchronous connection's route. */
#include "queue/cluster.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"

/* ---- key slot (CRC16-CCITT/XMODEM, as the Redis Cluster spec) ---- */

static uint16_t crc16(const char *buf, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)((unsigned char)buf[i] << 8);
		for (int k = 0; k < 8; k++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

unsigned queue_key_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);
	if (open != NULL) {
		size_t from = (size_t)(open - key) + 1;
		const char *close = memchr(key + from, '}', len - from);
		if (close != NULL && close > key + from) /* "{}" is no tag: the whole key */
			return crc16(key + from, (size_t)(close - (key + from))) & (QUEUE_CLUSTER_SLOTS - 1);
	}
	return crc16(key, len) & (QUEUE_CLUSTER_SLOTS - 1);
}

/* ---- replies ---- */

static bool host_ok(const char *s, size_t n)
{
	if (n >= sizeof(((struct queue_node *)0)->host))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f || s[i] == '/' || s[i] == '@')
			return false;
	return true;
}

int queue_cluster_redirect(const char *err, size_t len, unsigned *slot, struct queue_node *to)
{
	int kind;
	size_t i;
	if (len >= 6 && memcmp(err, "MOVED ", 6) == 0)
		kind = 1, i = 6;
	else if (len >= 4 && memcmp(err, "ASK ", 4) == 0)
		kind = 2, i = 4;
	else
		return 0;
	unsigned s = 0;
	size_t d = 0;
	for (; i < len && err[i] >= '0' && err[i] <= '9' && d < 6; i++, d++)
		s = s * 10 + (unsigned)(err[i] - '0');
	if (d == 0 || s >= QUEUE_CLUSTER_SLOTS || i >= len || err[i] != ' ')
		return -1;
	i++;
	/* HOST:PORT, the port after the last ':' (an IPv6 host has colons) */
	size_t end = len, colon = len;
	for (size_t k = i; k < len; k++)
		if (err[k] == ':')
			colon = k;
	if (colon == len || !host_ok(err + i, colon - i) || colon + 1 >= end)
		return -1;
	long port = 0;
	for (size_t k = colon + 1; k < end; k++) {
		if (err[k] < '0' || err[k] > '9' || port > 65535)
			return -1;
		port = port * 10 + (err[k] - '0');
	}
	if (port < 1 || port > 65535)
		return -1;
	*slot = s;
	memcpy(to->host, err + i, colon - i);
	to->host[colon - i] = '\0';
	to->port = (int)port;
	return kind;
}

int queue_cluster_nodes(const char *list, struct queue_node *out, int max, char *err,
			size_t errlen)
{
	int n = 0;
	const char *p = list;
	for (;;) { /* every entry, an empty one too ("a:1,", "") */
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		const char *h = p, *colon = NULL;
		size_t hl;
		if (len > 0 && *p == '[') { /* [v6]:port */
			const char *rb = memchr(p, ']', len);
			if (rb != NULL && rb + 1 < p + len && rb[1] == ':')
				colon = rb + 1;
			h = p + 1;
			hl = rb ? (size_t)(rb - h) : 0;
		} else {
			for (size_t i = 0; i < len; i++)
				if (p[i] == ':')
					colon = p + i;
			hl = colon ? (size_t)(colon - p) : 0;
		}
		long port = 0;
		const char *q = colon ? colon + 1 : p + len;
		for (; colon != NULL && q < p + len && *q >= '0' && *q <= '9' && port <= 65535; q++)
			port = port * 10 + (*q - '0');
		if (colon == NULL || hl == 0 || !host_ok(h, hl) || q != p + len || port < 1 ||
		    port > 65535) {
			snprintf(err, errlen, "bad node \"%.*s\": expected HOST:PORT", (int)(len > 200 ? 200 : len), p);
			return -1;
		}
		if (n == max) {
			snprintf(err, errlen, "more than %d nodes", max);
			return -1;
		}
		memcpy(out[n].host, h, hl);
		out[n].host[hl] = '\0';
		out[n++].port = (int)port;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return n;
}

/* One node entry of CLUSTER SLOTS: [host, port, id, ...]. */
static bool node_of(const redisReply *e, const char *self_host, struct queue_node *n)
{
	if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 2)
		return false;
	const redisReply *h = e->element[0], *p = e->element[1];
	if (h == NULL || p == NULL || h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_INTEGER ||
	    p->integer < 1 || p->integer > 65535 || !host_ok(h->str, h->len))
		return false;
	if (h->len == 0 || (h->len == 1 && h->str[0] == '?'))
		snprintf(n->host, sizeof(n->host), "%s", self_host);
	else {
		memcpy(n->host, h->str, h->len);
		n->host[h->len] = '\0';
	}
	n->port = (int)p->integer;
	return n->host[0] != '\0';
}

static void remember(struct queue_node *known, int *nknown, int max, const struct queue_node *n)
{
	for (int i = 0; i < *nknown; i++)
		if (known[i].port == n->port && strcmp(known[i].host, n->host) == 0)
			return;
	if (*nknown < max)
		known[(*nknown)++] = *n;
}

int queue_cluster_owner(const redisReply *r, unsigned slot, const char *self_host,
			struct queue_node *owner, struct queue_node *known, int *nknown, int max)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return -1;
	/* validate everything first: a hostile reply changes nothing */
	struct queue_node n;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || e->element[0]->integer < 0 ||
		    e->element[1]->integer >= QUEUE_CLUSTER_SLOTS ||
		    e->element[0]->integer > e->element[1]->integer)
			return -1;
		for (size_t k = 2; k < e->elements; k++)
			if (!node_of(e->element[k], self_host, &n))
				return -1;
	}
	int found = 1;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		for (size_t k = 2; k < e->elements; k++) {
			node_of(e->element[k], self_host, &n);
			remember(known, nknown, max, &n);
			if (k == 2 && found != 0 && (long long)slot >= e->element[0]->integer &&
			    (long long)slot <= e->element[1]->integer) {
				*owner = n;
				found = 0;
			}
		}
	}
	return found;
}

/* ---- the async queue's node ---- */

int qcluster_init(struct queue *q, char *err, size_t errlen)
{
	q->slot = queue_key_slot(q->cfg.jobs, strlen(q->cfg.jobs));
	snprintf(q->nodes[0].host, sizeof(q->nodes[0].host), "%s", q->addr.host);
	q->nodes[0].port = q->addr.port;
	q->nnodes = 1;
	const char *list = q->cfg.cluster_nodes;
	if (list == NULL || list[0] == '\0')
		return 0;
	struct queue_node more[QUEUE_CLUSTER_NODES / 2];
	char why[300];
	int n = queue_cluster_nodes(list, more, QUEUE_CLUSTER_NODES / 2, why, sizeof(why));
	if (n < 0) {
		snprintf(err, errlen, "queue: cluster_nodes: %s", why);
		return -1;
	}
	for (int i = 0; i < n; i++)
		remember(q->nodes, &q->nnodes, QUEUE_CLUSTER_NODES, &more[i]);
	return 0;
}

static bool at_node(const struct queue *q, const struct queue_node *n)
{
	return q->addr.port == n->port && strcmp(q->addr.host, n->host) == 0;
}

static void go_to(struct queue *q, const struct queue_node *n, const char *why)
{
	qlog(q, QUEUE_LOG_INFO, "evt=redis_cluster_route slot=%u from=%s:%d to=%s:%d why=%s", q->slot,
	     q->addr.host, q->addr.port, n->host, n->port, why);
	snprintf(q->addr.host, sizeof(q->addr.host), "%s", n->host);
	q->addr.port = n->port;
	/* another node: our pending entries there are read back once more (a
	 * claim whose reply the old master did not send is not left to the
	 * visibility timeout; the jobs we hold are skipped), as after a
	 * Sentinel failover */
	q->own_done = false;
	q->own_lane = 0;
	strcpy(q->own_cursor, "0-0");
}

void qcluster_lost(struct queue *q, struct qconn *c)
{
	if (c->redirect) { /* dropped to follow a route: go there, no rotation */
		c->redirect = false;
		return;
	}
	/* the node did not answer: ask the next one we know */
	int i = 0;
	while (i < q->nnodes && !at_node(q, &q->nodes[i]))
		i++;
	const struct queue_node *next = &q->nodes[i < q->nnodes ? (i + 1) % q->nnodes : 0];
	if (!at_node(q, next))
		go_to(q, next, "node_lost");
}

bool qcluster_slots(struct qconn *c, const redisReply *r)
{
	struct queue *q = c->q;
	struct queue_node owner;
	int rc = queue_cluster_owner(r, q->slot, q->addr.host, &owner, q->nodes, &q->nnodes,
				     QUEUE_CLUSTER_NODES);
	if (rc != 0) {
		qlog(q, QUEUE_LOG_WARN, "evt=redis_cluster_slots conn=%s node=%s:%d slot=%u err=\"%s\"",
		     c->name, q->addr.host, q->addr.port, q->slot,
		     rc < 0 ? "malformed CLUSTER SLOTS reply" : "no node serves the slot");
		qconn_drop(c); /* next node */
		return false;
	}
	if (at_node(q, &owner))
		return true;
	go_to(q, &owner, "cluster_slots");
	c->redirect = true;
	qconn_drop(c);
	return false;
}

void qcluster_error(struct qconn *c, const redisReply *r)
{
	struct queue *q = c->q;
	struct queue_node to;
	unsigned slot;
	int kind = queue_cluster_redirect(r->str, r->len, &slot, &to);
	if (kind <= 0 || slot != q->slot) {
		if (kind != 0)
			qlog(q, QUEUE_LOG_WARN, "evt=redis_cluster_redirect conn=%s slot=%u err=\"%s\"%s",
			     c->name, q->slot, r->str,
			     kind > 0 ? " note=\"a key outside the queue's slot: see [redis] prefix\"" : "");
		return;
	}
	if (kind == 2) { /* ASK: the slot is migrating; the command fails and is tried again */
		qlog(q, QUEUE_LOG_INFO, "evt=redis_cluster_ask conn=%s slot=%u", c->name, slot);
		return;
	}
	if (to.host[0] == '\0')
		snprintf(to.host, sizeof(to.host), "%s", q->addr.host);
	if (!at_node(q, &to))
		go_to(q, &to, "moved");
	c->redirect = true;
	qconn_drop(c);
}

/* ---- synchronous route ---- */

redisContext *qcluster_sync_open(const struct queue_config *qc, const char *key, char *err,
				 size_t errlen)
{
	struct queue_addr a;
	struct queue_node at;
	if (queue_url_parse(qc->url, &a, err, errlen) != 0)
		return NULL;
	snprintf(at.host, sizeof(at.host), "%s", a.host);
	at.port = a.port;
	explicit_bzero(a.password, sizeof(a.password));
	redisContext *c = qsync_connect(qc, err, errlen);
	const char *nodes = qc->cluster_nodes;
	if (c == NULL && nodes != NULL && nodes[0] != '\0') { /* the URL's node is down: the others */
		struct queue_node more[QUEUE_CLUSTER_NODES / 2];
		char why[300];
		int n = queue_cluster_nodes(nodes, more, QUEUE_CLUSTER_NODES / 2, why, sizeof(why));
		for (int i = 0; i < n && c == NULL; i++)
			if ((c = qsync_connect_at(qc, &more[i], err, errlen)) != NULL)
				at = more[i];
		if (n < 0)
			snprintf(err, errlen, "redis: cluster_nodes: %s", why);
	}
	if (c == NULL)
		return NULL;
	return qcluster_sync_route(c, &at, key, qc, err, errlen);
}

redisContext *qcluster_sync_route(redisContext *c, const struct queue_node *at, const char *key,
				  const struct queue_config *qc, char *err, size_t errlen)
{
	unsigned slot = queue_key_slot(key, strlen(key));
	struct queue_node known[QUEUE_CLUSTER_NODES], owner = *at;
	int nknown = 0;
	/* at most a few hops: the node reached (at), the owner it names, and the
	 * owner that one names while a failover settles */
	bool failed = false;
	for (int hop = 0; hop < 3 && !failed; hop++) {
		const char *av[] = { "CLUSTER", "SLOTS" };
		redisReply *r = redisCommandArgv(c, 2, av, NULL);
		if (qsync_reply_err(c, r, "CLUSTER SLOTS", err, errlen) != 0) {
			failed = true;
			break;
		}
		struct queue_node here = owner;
		int rc = queue_cluster_owner(r, slot, here.host, &owner, known, &nknown,
					     QUEUE_CLUSTER_NODES);
		freeReplyObject(r);
		if (rc != 0) {
			snprintf(err, errlen, "redis: CLUSTER SLOTS from %s:%d: %s", here.host, here.port,
				 rc < 0 ? "malformed reply" : "no node serves the queue's slot");
			failed = true;
			break;
		}
		if (owner.port == here.port && strcmp(owner.host, here.host) == 0)
			return c;
		redisFree(c);
		c = qsync_connect_at(qc, &owner, err, errlen);
		if (c == NULL)
			return NULL;
	}
	if (!failed)
		snprintf(err, errlen, "redis: the cluster keeps moving slot %u", slot);
	redisFree(c);
	return NULL;
}
