/* bench/hotpath.c (build/mxhotpath): the per-message functions that need no
 * network, called N times in a loop, for instruction counts under callgrind
 * (bench/callgrind.sh): valgrind cannot run mxload or mxsend (3.19 holds its
 * lock across a blocking io_uring_enter: the other threads never run), and
 * this machine's perf has no instruction counter.
 *   mxhotpath wire N     msg_wire_prepare + msg_wire_fini on mxload's 4 KB message
 *   mxhotpath outcome N  job_set_outcome of a typical delivered outcome (results text)
 *   mxhotpath decode N   job_decode + job_fini of bench/qload.sh's 4 KB job */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/job.h"
#include "sender/msg.h"

static const struct job_limits lim = { .max_size = 1 << 20, .addr_ok = msg_addr_norm,
				       .split = msg_split_list };

int main(int argc, char **argv)
{
	if (argc != 3 || atol(argv[2]) <= 0) {
		fprintf(stderr, "usage: mxhotpath wire|outcome|decode N\n");
		return 64;
	}
	const char *what = argv[1];
	size_t n = (size_t)atol(argv[2]), size = 4096, sum = 0;
	static char msg[4096 + 256];

	if (strcmp(what, "wire") == 0) { /* as bench/load.c makes it */
		int hl = snprintf(msg, 256, "From: bench@mxload.test\r\nTo: you@bench.test\r\nSubject: mxload\r\n\r\n");
		for (size_t i = (size_t)hl; i < size; i++)
			msg[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' : (char)('a' + i % 26);
		msg[size - 2] = '\r';
		msg[size - 1] = '\n';
		for (size_t k = 0; k < n; k++) {
			struct msg_wire w;
			if (msg_wire_prepare(msg, size, false, &w) != 0)
				return 1;
			sum += w.len;
			msg_wire_fini(&w);
		}
	} else if (strcmp(what, "outcome") == 0 || strcmp(what, "decode") == 0) {
		/* as bench/qload.sh queues it */
		const char *line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
		size_t dl = (size_t)snprintf(msg, sizeof(msg),
					     "From: news@sender.test\r\nTo: user1@d0.bench.test\r\nSubject: bench 1\r\n\r\n");
		while (dl + strlen(line) <= size) {
			memcpy(msg + dl, line, strlen(line));
			dl += strlen(line);
		}
		const char *kv[] = { "from", "news@sender.test", "to", "user1@d0.bench.test", "data", msg };
		size_t len[6];
		for (int i = 0; i < 6; i++)
			len[i] = strlen(kv[i]);
		len[5] = dl;
		struct job j;
		if (what[0] == 'd') {
			for (size_t k = 0; k < n; k++) {
				if (job_decode(&j, "1700000000123-7", 6, kv, len, &lim) != 0)
					return 1;
				sum += j.len;
				job_fini(&j);
			}
		} else {
			if (job_decode(&j, "1700000000123-7", 6, kv, len, &lim) != 0)
				return 1;
			struct job_outcome o = { .status = JOB_DELIVERED, .code = 250, .dsn = "2.0.0",
						 .reply = "2.0.0 Ok: queued as 7F3A21C0E4",
						 .mx = "mx0.bench.test", .ip = "127.0.4.1", .port = 25,
						 .tls = "TLSv1.3", .cipher = "TLS_AES_256_GCM_SHA384",
						 .policy = "may" };
			for (size_t k = 0; k < n; k++)
				job_set_outcome(&j, 0, &o);
			sum += (size_t)j.nrcpt;
			job_fini(&j);
		}
	} else {
		fprintf(stderr, "mxhotpath: unknown %s\n", what);
		return 64;
	}
	printf("%s n=%zu sum=%zu\n", what, n, sum);
	return 0;
}
