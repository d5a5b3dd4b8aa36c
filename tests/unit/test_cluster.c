/* test_cluster.c: the pure parts of queue/cluster.c: a key's hash slot, the
 * MOVED/ASK parser and the CLUSTER SLOTS parser (replies built by hiredis's
 * own reader from RESP bytes, as they arrive from a hostile server). */
#include "queue/cluster.h"

#include <string.h>

#include <hiredis/hiredis.h>

#include "tests/t.h"

static unsigned slot(const char *k)
{
	return queue_key_slot(k, strlen(k));
}

static void t_slot(void)
{
	/* CLUSTER KEYSLOT of a Redis 7 node (t_cluster.sh checks more live) */
	CHECK_INT(slot("foo"), 12182);
	CHECK_INT(slot("bar"), 5061);
	CHECK_INT(slot("hello"), 866);
	CHECK_INT(slot("123456789"), 0x31C3 & 16383);
	/* hash tags: the first {...} that is not empty */
	CHECK_INT(slot("{mxsend}:jobs"), slot("mxsend"));
	CHECK_INT(slot("{mxsend}:jobs:retry:1-1:u"), slot("{mxsend}:results"));
	CHECK_INT(slot("{mxsend}:sts:example.com"), slot("{mxsend}:tlsrpt:days:2026-01-01"));
	CHECK_INT(slot("foo{bar}{zap}"), slot("bar"));
	CHECK_INT(slot("foo{{bar}}zap"), slot("{bar"));
	CHECK(slot("foo{}{bar}") != slot("bar")); /* "{}": the whole key (8363 live) */
	CHECK_INT(slot("foo{}{bar}"), 8363);
	CHECK(slot("mxsend:jobs") < 16384 && slot("") < 16384);
	CHECK_INT(queue_key_slot("{x}\0y", 5), slot("x"));
}

static int redir(const char *e, unsigned *s, struct queue_node *n)
{
	return queue_cluster_redirect(e, strlen(e), s, n);
}

static void t_redirect(void)
{
	unsigned s = 0;
	struct queue_node n;
	CHECK_INT(redir("MOVED 3999 127.0.0.1:6381", &s, &n), 1);
	CHECK_INT(s, 3999);
	CHECK_STR(n.host, "127.0.0.1");
	CHECK_INT(n.port, 6381);
	CHECK_INT(redir("ASK 16383 ::1:7000", &s, &n), 2);
	CHECK_STR(n.host, "::1");
	CHECK_INT(n.port, 7000);
	CHECK_INT(redir("MOVED 12 :6379", &s, &n), 1); /* the node does not know its address */
	CHECK_STR(n.host, "");
	CHECK_INT(redir("ERR unknown command", &s, &n), 0);
	CHECK_INT(redir("CLUSTERDOWN The cluster is down", &s, &n), 0);
	CHECK_INT(redir("MOVED", &s, &n), 0);
	const char *bad[] = { "MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h", "MOVED 1 h:",
			      "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:99999999999999",
			      "MOVED 1 a b:1", "MOVED 1  h:1", "ASK 1 h:1x", "MOVED 1234567 h:1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = 77;
		CHECK_INT(redir(bad[i], &s, &n), -1);
		CHECK_INT(s, 77);
	}
	char longhost[400] = "MOVED 1 ";
	memset(longhost + 8, 'h', 300);
	strcpy(longhost + 308, ":1");
	CHECK_INT(redir(longhost, &s, &n), -1);
}

static void t_nodes(void)
{
	struct queue_node n[4];
	char err[256];
	CHECK_INT(queue_cluster_nodes("10.0.0.1:7000", n, 4, err, sizeof(err)), 1);
	CHECK_STR(n[0].host, "10.0.0.1");
	CHECK_INT(n[0].port, 7000);
	CHECK_INT(queue_cluster_nodes(" a.example:1 ,[::1]:65535,b:2", n, 4, err, sizeof(err)), 3);
	CHECK_STR(n[0].host, "a.example");
	CHECK_STR(n[1].host, "::1");
	CHECK_INT(n[1].port, 65535);
	CHECK_STR(n[2].host, "b");
	const char *bad[] = { "", "h", "h:", ":1", "h:0", "h:65536", "h:1x", "h:1,", "a b:1", "[::1]",
			      "[::1]7000", "h:1,,h:2", "h:99999999999999999999", "a:1,b:2,c:3,d:4,e:5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_INT(queue_cluster_nodes(bad[i], n, 4, err, sizeof(err)), -1);
		CHECK(err[0] != '\0');
	}
}

/* A reply from RESP bytes (NULL if they do not parse). */
static redisReply *resp(const char *bytes)
{
	redisReader *r = redisReaderCreate();
	void *out = NULL;
	redisReaderFeed(r, bytes, strlen(bytes));
	if (redisReaderGetReply(r, &out) != REDIS_OK)
		out = NULL;
	redisReaderFree(r);
	return out;
}

#define NODE(h, p) "*3\r\n$1\r\n" #h "\r\n:" #p "\r\n$2\r\nid\r\n" /* host of one byte */
/* slots 0-5460 at .1:7001 (replica .1:7004), 5461-10922 at .2:7002, 10923-16383 at :7003 */
static const char three[] = "*3\r\n"
			    "*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
			    "*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n"
			    "*3\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.2\r\n:7002\r\n$2\r\nid\r\n"
			    "*3\r\n:10923\r\n:16383\r\n*3\r\n$0\r\n\r\n:7003\r\n$2\r\nid\r\n";

static void t_slots(void)
{
	redisReply *r = resp(three);
	CHECK(r != NULL);
	struct queue_node known[8], owner;
	int nk = 0;
	CHECK_INT(queue_cluster_owner(r, 0, "10.0.0.9", &owner, known, &nk, 8), 0);
	CHECK_STR(owner.host, "127.0.0.1");
	CHECK_INT(owner.port, 7001);
	CHECK_INT(nk, 4);
	CHECK_INT(known[1].port, 7004);
	CHECK_INT(queue_cluster_owner(r, 5461, "10.0.0.9", &owner, known, &nk, 8), 0);
	CHECK_STR(owner.host, "127.0.0.2");
	CHECK_INT(nk, 4); /* no duplicates */
	CHECK_INT(queue_cluster_owner(r, 16383, "10.0.0.9", &owner, known, &nk, 8), 0);
	CHECK_STR(owner.host, "10.0.0.9"); /* "": the node asked */
	CHECK_INT(owner.port, 7003);
	int small = 0;
	CHECK_INT(queue_cluster_owner(r, 1, "x", &owner, known, &small, 2), 0);
	CHECK_INT(small, 2); /* bounded */
	freeReplyObject(r);

	/* a slot nobody serves (cluster down or being set up) */
	r = resp("*1\r\n*3\r\n:0\r\n:10\r\n" NODE(1, 1));
	CHECK(r != NULL);
	nk = 0;
	CHECK_INT(queue_cluster_owner(r, 11, "x", &owner, known, &nk, 8), 1);
	freeReplyObject(r);
	r = resp("*0\r\n");
	CHECK_INT(queue_cluster_owner(r, 0, "x", &owner, known, &nk, 8), 1);
	freeReplyObject(r);

	/* hostile replies: refused whole, nothing learnt */
	const char *bad[] = {
		"-ERR This instance has cluster support disabled\r\n",
		":1\r\n",
		"*1\r\n:1\r\n",
		"*1\r\n*2\r\n:0\r\n:1\r\n",                                  /* no node */
		"*1\r\n*3\r\n:5\r\n:1\r\n" NODE(h, 1),                       /* start > end */
		"*1\r\n*3\r\n:-1\r\n:1\r\n" NODE(h, 1),
		"*1\r\n*3\r\n:0\r\n:16384\r\n" NODE(h, 1),
		"*1\r\n*3\r\n$1\r\n0\r\n:1\r\n" NODE(h, 1),                  /* a string slot */
		"*1\r\n*3\r\n:0\r\n:1\r\n" NODE(h, 0),                       /* port 0 */
		"*1\r\n*3\r\n:0\r\n:1\r\n" NODE(h, 65536),
		"*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",                 /* no port */
		"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",                /* integer host */
		"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na b\r\n:1\r\n",         /* blank in host */
		"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na/b\r\n:1\r\n",
		"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n$1\r\n1\r\n",      /* string port */
		"*1\r\n*4\r\n:0\r\n:1\r\n" NODE(h, 1) ":3\r\n",              /* replica not a node */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = resp(bad[i]);
		CHECK(r != NULL);
		nk = 0;
		owner.port = 42;
		CHECK_INT(queue_cluster_owner(r, 0, "x", &owner, known, &nk, 8), -1);
		CHECK_INT(nk, 0);
		CHECK_INT(owner.port, 42);
		freeReplyObject(r);
	}
	CHECK_INT(queue_cluster_owner(NULL, 0, "x", &owner, known, &nk, 8), -1);
	/* a host too long for struct queue_node */
	char big[1200];
	int n = snprintf(big, sizeof(big), "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$300\r\n");
	memset(big + n, 'h', 300);
	strcpy(big + n + 300, "\r\n:1\r\n");
	r = resp(big);
	CHECK(r != NULL);
	CHECK_INT(queue_cluster_owner(r, 0, "x", &owner, known, &nk, 8), -1);
	freeReplyObject(r);
}

static const struct t_case cases[] = {
	{ "key slot: CRC16 mod 16384, hash tags", t_slot },
	{ "MOVED/ASK: parsed, bad ones refused", t_redirect },
	{ "cluster_nodes: HOST:PORT lists", t_nodes },
	{ "CLUSTER SLOTS: owner, known nodes, hostile replies refused whole", t_slots },
};

T_MAIN(cases)
