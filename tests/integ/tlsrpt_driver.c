/* tests/integ/tlsrpt_driver.c: the TLSRPT test driver of tests/integ/t_tlsrpt.sh,
 * built by the Makefile (make test, or make build/asan/tlsrpt_driver) with the
 * project's warnings and the unit tests' sanitizers, against build/asan/libmxsend.a.
 *
 * drv record URL < TSV: each line "domain type id mode mx max_age mxhost ip
 * src result detail count when_s" ("-" = empty) is counted `count` times with
 * tlsrpt_store_record (synchronous). drv qrecord URL < TSV: the same through
 * tlsrpt_queue_event on a running struct queue (the async path `mxsend run`
 * uses; its own jobs key, so it claims nothing). drv xdump HOST PORT STREAM
 * DIR: every entry's fields into DIR/N/FIELD (binary-safe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>
#include "queue/queue.h"
#include "queue/tlsrpt_store.h"
#include "sender/loop.h"
#include "sender/redis_uring.h"

#define MAXEV 64
static struct tls_event evs[MAXEV];
static int nev, counts[MAXEV];
static char lines[MAXEV][2048];

static const char *col(char **save);
/* The event columns of a TSV line (d: the first) into ev, up to detail. */
static void read_event(struct tls_event *ev, const char *d, char **save)
{
	memset(ev, 0, sizeof(*ev));
	snprintf(ev->policy_domain, sizeof(ev->policy_domain), "%s", d);
	snprintf(ev->policy_type, sizeof(ev->policy_type), "%s", col(save));
	snprintf(ev->policy_id, sizeof(ev->policy_id), "%s", col(save));
	snprintf(ev->policy_mode, sizeof(ev->policy_mode), "%s", col(save));
	snprintf(ev->policy_mx, sizeof(ev->policy_mx), "%s", col(save));
	ev->max_age = (uint32_t)atol(col(save));
	snprintf(ev->mx, sizeof(ev->mx), "%s", col(save));
	snprintf(ev->ip, sizeof(ev->ip), "%s", col(save));
	snprintf(ev->sending_ip, sizeof(ev->sending_ip), "%s", col(save));
	snprintf(ev->result, sizeof(ev->result), "%s", col(save));
	snprintf(ev->detail, sizeof(ev->detail), "%s", col(save));
}
static void read_events(void)
{
	while (nev < MAXEV && fgets(lines[nev], sizeof(lines[0]), stdin)) {
		char *save = NULL, *d = strtok_r(lines[nev], "\t\n", &save);
		if (d == NULL || d[0] == '#')
			continue;
		struct tls_event *ev = &evs[nev];
		read_event(ev, d, &save);
		counts[nev] = atoi(col(&save));
		ev->when_ms = (uint64_t)atoll(col(&save)) * 1000;
		nev++;
	}
}

/* the queue's host services, as sender/cmd/run.c provides them */
struct queue_timer {
	struct loop_timer t; /* first: the loop hands back &t */
	struct loop *l;
	queue_timer_fn *fn;
	void *arg;
};
static void qt_fire(struct loop_timer *t)
{
	struct queue_timer *qt = (void *)t;
	qt->fn(qt->arg);
}
static struct queue_timer *qt_new(void *ctx, queue_timer_fn *fn, void *arg)
{
	struct queue_timer *qt = calloc(1, sizeof(*qt));
	loop_timer_init(&qt->t, qt_fire);
	qt->l = ctx;
	qt->fn = fn;
	qt->arg = arg;
	return qt;
}
static void qt_arm(struct queue_timer *qt, uint64_t ms) { loop_timer_arm(qt->l, &qt->t, ms); }
static void qt_free(struct queue_timer *qt)
{
	if (qt) {
		loop_timer_stop(qt->l, &qt->t);
		free(qt);
	}
}
static uint64_t q_now(void *ctx) { return loop_now(ctx); }
static int q_attach(void *ctx, struct redisAsyncContext *ac) { return redis_uring_attach(ctx, ac); }
static void q_job(void *ctx, struct job *j) { (void)ctx; (void)j; }
static void q_log(void *ctx, int level, const char *line)
{
	(void)ctx;
	(void)level;
	fprintf(stderr, "%s\n", line);
}
static int addr_ok(const char *a, char *n, size_t nl, const char **e)
{
	(void)e;
	snprintf(n, nl, "%s", a);
	return 0;
}
static int split(const char *l, int (*fn)(void *, const char *, size_t), void *arg)
{
	return fn(arg, l, strlen(l)) ? -1 : 1;
}

static struct loop *L;
static struct queue *Q;
static struct loop_timer tick;
static int ticks, sent = -1;
static void on_tick(struct loop_timer *t)
{
	struct queue_stats st;
	if (Q == NULL) { /* the queue is gone: the disconnect's grace period is over */
		loop_stop(L);
		return;
	}
	queue_get_stats(Q, &st);
	if (sent < 0 && st.connected) {
		sent = 0;
		for (int i = 0; i < nev; i++)
			for (int k = 0; k < counts[i]; k++)
				if (tlsrpt_queue_event(Q, &evs[i], NULL) == 0)
					sent++;
	}
	ticks++;
	if ((sent >= 0 && ticks >= 15) || ticks > 250) /* ~300 ms for the replies; 5 s at most */
		loop_stop(L);
	else
		loop_timer_arm(L, t, 20);
}

static int qrecord(const char *url)
{
	int err = 0;
	static const uint64_t sched[] = { 1000 };
	L = loop_new(256, &err);
	struct queue_config qc = { .url = url, .jobs = "drv:jobs", .results = "drv:results",
				   .group = "drv", .consumer = "drv", .visibility_ms = 60000,
				   .batch = 1, .max_inflight = 1, .limits = { .max_size = 0, .addr_ok = addr_ok, .split = split },
				   .schedule_ms = sched, .n_schedule = 1, .lifetime_ms = 60000 };
	struct queue_host qh = { .ctx = L, .attach = q_attach, .timer_new = qt_new,
				 .timer_arm = qt_arm, .timer_free = qt_free, .mono_ms = q_now,
				 .job = q_job, .log = q_log };
	char ebuf[256];
	Q = L ? queue_new(&qc, &qh, ebuf, sizeof(ebuf)) : NULL;
	if (Q == NULL) {
		fprintf(stderr, "queue_new failed\n");
		return 1;
	}
	int early = tlsrpt_queue_event(Q, &evs[0], NULL); /* not connected yet */
	queue_start(Q);
	loop_timer_init(&tick, on_tick);
	loop_timer_arm(L, &tick, 20);
	loop_run(L);
	loop_timer_stop(L, &tick);
	printf("early=%d sent=%d\n", early, sent);
	queue_free(Q);
	Q = NULL;
	loop_timer_arm(L, &tick, 50); /* let the ring finish the disconnect */
	loop_run(L);
	loop_timer_stop(L, &tick);
	loop_free(L);
	return sent > 0 ? 0 : 1;
}

static const char *col(char **save)
{
	char *t = strtok_r(NULL, "\t\n", save);
	return (t == NULL || strcmp(t, "-") == 0) ? "" : t;
}

int main(int argc, char **argv)
{
	char err[512], line[2048];
	if (argc == 3 && strcmp(argv[1], "qrecord") == 0) {
		read_events();
		return qrecord(argv[2]);
	}
	if (argc == 3 && strcmp(argv[1], "record") == 0) {
		struct queue_config qc = { .url = argv[2] };
		struct tlsrpt_store *s = tlsrpt_store_open(&qc, NULL, err, sizeof(err));
		if (s == NULL)
			return fprintf(stderr, "%s\n", err), 1;
		while (fgets(line, sizeof(line), stdin)) {
			char *save = NULL, *d = strtok_r(line, "\t\n", &save);
			if (d == NULL || d[0] == '#')
				continue;
			struct tls_event ev;
			read_event(&ev, d, &save);
			int n = atoi(col(&save));
			ev.when_ms = (uint64_t)atoll(col(&save)) * 1000;
			for (int i = 0; i < n; i++)
				if (tlsrpt_store_record(s, &ev, err, sizeof(err)) != 0)
					return fprintf(stderr, "%s\n", err), 1;
		}
		tlsrpt_store_close(s);
		return 0;
	}
	if (argc == 6 && strcmp(argv[1], "xdump") == 0) {
		redisContext *c = redisConnect(argv[2], atoi(argv[3]));
		if (c == NULL || c->err)
			return fprintf(stderr, "connect failed\n"), 1;
		redisReply *r = redisCommand(c, "XRANGE %s - +", argv[4]);
		if (r == NULL || r->type != REDIS_REPLY_ARRAY)
			return fprintf(stderr, "XRANGE failed\n"), 1;
		for (size_t i = 0; i < r->elements; i++) {
			redisReply *e = r->element[i], *kv = e->element[1];
			char dir[1024], path[1400];
			snprintf(dir, sizeof(dir), "%s/%zu", argv[5], i);
			mkdir(dir, 0700);
			for (size_t k = 0; k + 1 < kv->elements; k += 2) {
				snprintf(path, sizeof(path), "%s/%s", dir, kv->element[k]->str);
				FILE *f = fopen(path, "wb");
				if (f == NULL)
					return perror(path), 1;
				fwrite(kv->element[k + 1]->str, 1, kv->element[k + 1]->len, f);
				fclose(f);
			}
		}
		printf("%zu\n", r->elements);
		freeReplyObject(r);
		redisFree(c);
		return 0;
	}
	fprintf(stderr, "usage: drv [q]record URL < TSV | drv xdump HOST PORT STREAM DIR\n");
	return 2;
}
