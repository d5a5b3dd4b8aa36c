/* test_sentinel.c: the pure side of queue/sentinel.c: the [redis] sentinels
 * list, host names, and a sentinel's answer (hostile input). */
#include <string.h>

#include "queue/queue.h"
#include "tests/t.h"

static void t_list_ok(void)
{
	struct queue_hostport hp[QUEUE_SENTINELS_MAX];
	char err[256] = "";
	CHECK_INT(queue_sentinels_parse("127.0.0.1:26379, s2.example.net:5000 ,[::1]:7,s4", hp,
					QUEUE_SENTINELS_MAX, err, sizeof(err)), 4);
	CHECK_STR(hp[0].host, "127.0.0.1");
	CHECK_INT(hp[0].port, 26379);
	CHECK_STR(hp[1].host, "s2.example.net");
	CHECK_INT(hp[1].port, 5000);
	CHECK_STR(hp[2].host, "::1");
	CHECK_INT(hp[2].port, 7);
	CHECK_STR(hp[3].host, "s4");
	CHECK_INT(hp[3].port, QUEUE_SENTINEL_PORT);
}

static void t_list_bad(void)
{
	struct queue_hostport hp[3];
	char err[256];
	const char *bad[] = { "", " ", "h:0", "h:65536", "h:12x", "h:", "::1:5", "[::1", "[::1]x",
			      "a,,b", "a,", "bad host:1", "-x.example:1", "x-.example:1", "a..b:1",
			      "h:1:2", "[zz]:1", "\x01:1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		int n = queue_sentinels_parse(bad[i], hp, 3, err, sizeof(err));
		if (n != -1)
			fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
		CHECK_INT(n, -1);
		CHECK(err[0] != '\0');
	}
	CHECK_INT(queue_sentinels_parse("a,b,c,d", hp, 3, err, sizeof(err)), -1);
	CHECK(strstr(err, "more than 3") != NULL);
}

static void t_answer(void)
{
	struct queue_hostport m;
	CHECK_INT(queue_master_addr_check("10.1.2.3", 8, "6380", 4, &m), 0);
	CHECK_STR(m.host, "10.1.2.3");
	CHECK_INT(m.port, 6380);
	CHECK_INT(queue_master_addr_check("fe80::1", 7, "1", 1, &m), 0);
	CHECK_INT(queue_master_addr_check("redis-1.internal", 16, "65535", 5, &m), 0);
	CHECK_STR(m.host, "redis-1.internal");
	/* what a hostile or broken sentinel might say */
	CHECK_INT(queue_master_addr_check("", 0, "6379", 4, &m), -1);
	CHECK_INT(queue_master_addr_check("10.0.0.1", 8, "0", 1, &m), -1);
	CHECK_INT(queue_master_addr_check("10.0.0.1", 8, "65536", 5, &m), -1);
	CHECK_INT(queue_master_addr_check("10.0.0.1", 8, "-1", 2, &m), -1);
	CHECK_INT(queue_master_addr_check("10.0.0.1", 8, "", 0, &m), -1);
	CHECK_INT(queue_master_addr_check("10.0.0.1", 8, "123456", 6, &m), -1);
	CHECK_INT(queue_master_addr_check("a b", 3, "1", 1, &m), -1);
	CHECK_INT(queue_master_addr_check("a\0b", 3, "1", 1, &m), -1);
	CHECK_INT(queue_master_addr_check("h\r\nX", 4, "1", 1, &m), -1);
	CHECK_INT(queue_master_addr_check("/tmp/sock", 9, "1", 1, &m), -1);
	CHECK_INT(queue_master_addr_check(NULL, 0, "1", 1, &m), -1);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	CHECK_INT(queue_master_addr_check(longname, sizeof(longname), "1", 1, &m), -1);
	CHECK_INT(queue_master_addr_check(longname, 64, "1", 1, &m), -1); /* label > 63 */
	CHECK_INT(queue_master_addr_check(longname, 63, "1", 1, &m), 0);
}

static const struct t_case cases[] = {
	{ "sentinels list parsed", t_list_ok },
	{ "bad sentinels lists refused", t_list_bad },
	{ "a sentinel's answer checked", t_answer },
};
T_MAIN(cases)
