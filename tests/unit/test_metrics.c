/* test_metrics.c: the metrics registry and its HTTP endpoint: exposition format
 * (HELP/TYPE, labels, cumulative histogram, +Inf = _count), sums across shards
 * (counters added, counters and gauges set from running totals), two writer
 * threads against a concurrent reader, and real scrapes over
 * loopback (200, HEAD, 404, 405, 400, oversize 431, split request, the 16
 * connection cap and the 5 s deadline) against metrics_serve on a loop thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sender/loop.h"
#include "sender/metrics.h"
#include "sender/util.h"
#include "tests/t.h"

#define BIG 65536

/* Value of the series line that starts with `series ` ("name{labels}"), or -1. */
static long long value_of(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
	}
	return -1;
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static void t_names(void)
{
	CHECK_STR(metrics_status_name(METRICS_EXPIRED), "expired");
	CHECK_STR(metrics_status_name(METRICS_STATUS_N), "?");
	CHECK_INT(metrics_status_parse("held"), METRICS_HELD);
	CHECK_INT(metrics_status_parse("rejected"), METRICS_REJECTED);
	CHECK_INT(metrics_status_parse("suppressed"), METRICS_SUPPRESSED);
	CHECK_INT(metrics_status_parse("sent"), -1);
	CHECK_INT(metrics_status_parse(NULL), -1);
	CHECK_INT(metrics_tls_version_parse("TLSv1.3"), METRICS_TLS_13);
	CHECK_INT(metrics_tls_version_parse("TLSv1.2"), METRICS_TLS_12);
	CHECK_INT(metrics_tls_version_parse("none"), METRICS_TLS_NONE);
	CHECK_INT(metrics_tls_version_parse(NULL), METRICS_TLS_NONE);
	CHECK_STR(metrics_tls_version_name(METRICS_TLS_12), "TLSv1.2");
}

/* Every line is a comment (# HELP/# TYPE) or "name[{labels}] value"; every
 * metric has HELP then TYPE before its first sample. */
static void check_format(const char *text)
{
	static const char *const metrics[][2] = {
		{ "mxsend_deliveries_total", "counter" },
		{ "mxsend_tls_sessions_total", "counter" },
		{ "mxsend_tls_resumed_total", "counter" },
		{ "mxsend_tls_handshakes_total", "counter" },
		{ "mxsend_connections_reused_total", "counter" },
		{ "mxsend_connections_opened_total", "counter" },
		{ "mxsend_connection_slot_waits_total", "counter" },
		{ "mxsend_tls_chains_total", "counter" },
		{ "mxsend_connections_open", "gauge" },
		{ "mxsend_inflight", "gauge" },
		{ "mxsend_queue_depth", "gauge" },
		{ "mxsend_retry_depth", "gauge" },
		{ "mxsend_processes", "gauge" },
		{ "mxsend_delivery_duration_seconds", "histogram" },
		{ "mxsend_sts_policy_fetches_total", "counter" },
		{ "mxsend_dns_queries_total", "counter" },
		{ "mxsend_bounce_class_total", "counter" },
	};
	for (size_t i = 0; i < ARRAY_LEN(metrics); i++) {
		char help[128], type[128];
		snprintf(help, sizeof(help), "# HELP %s ", metrics[i][0]);
		snprintf(type, sizeof(type), "# TYPE %s %s\n", metrics[i][0], metrics[i][1]);
		const char *h = strstr(text, help);
		const char *t = strstr(text, type);
		CHECK(h != NULL && t != NULL && h < t);
		if (h == NULL || t == NULL)
			fprintf(stderr, "  missing HELP/TYPE for %s\n", metrics[i][0]);
	}
	size_t len = strlen(text);
	CHECK(len > 0 && text[len - 1] == '\n');
	int lines = 0;
	for (const char *p = text; *p; lines++) {
		const char *e = strchr(p, '\n');
		CHECK(e != NULL);
		if (e == NULL)
			break;
		if (*p != '#') {
			CHECK(strncmp(p, "mxsend_", 7) == 0);
			const char *sp = memchr(p, ' ', (size_t)(e - p));
			CHECK(sp != NULL && sp + 1 < e);
			const char *lb = memchr(p, '{', (size_t)(e - p));
			if (lb != NULL)
				CHECK(sp != NULL && sp[-1] == '}');
			for (const char *v = sp ? sp + 1 : e; v < e; v++)
				CHECK((*v >= '0' && *v <= '9') || *v == '.' || *v == '-');
		}
		p = e + 1;
	}
	CHECK(lines > 60);
}

static void t_render_empty(void)
{
	struct metrics *m = metrics_new(3);
	char *buf = xmalloc(BIG);
	size_t n = metrics_render(m, buf, BIG);
	CHECK(n > 0 && n < METRICS_RENDER_MAX);
	CHECK_INT(strlen(buf), n);
	check_format(buf);
	/* every known series is present at zero */
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"delivered\"} 0"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"held\"} 0"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"none\",verified=\"no\"} 0"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"TLSv1.3\",verified=\"yes\"} 0"));
	CHECK(value_of(buf, "mxsend_tls_sessions_total{version=\"none\",verified=\"yes\"}") == -1);
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_bucket{le=\"0.005\"} 0"));
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_bucket{le=\"60\"} 0"));
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_bucket{le=\"+Inf\"} 0"));
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_sum 0.000"));
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_count 0"));
	CHECK(has_line(buf, "mxsend_sts_policy_fetches_total{result=\"error\"} 0"));
	CHECK(has_line(buf, "mxsend_dns_queries_total{result=\"nxdomain\"} 0"));
	CHECK(has_line(buf, "mxsend_connections_open 0"));
	CHECK(has_line(buf, "mxsend_connection_slot_waits_total 0"));
	CHECK(has_line(buf, "mxsend_tls_chains_total{source=\"verified\"} 0"));
	CHECK(has_line(buf, "mxsend_tls_chains_total{source=\"cached\"} 0"));
	CHECK(has_line(buf, "mxsend_processes 0"));
	free(buf);
	metrics_free(m);
	metrics_free(NULL);
}

static void t_render_values(void)
{
	struct metrics *m = metrics_new(2);
	struct metrics_shard *a = metrics_shard(m, 0), *b = metrics_shard(m, 1);
	metrics_delivery(a, METRICS_DELIVERED, 3);     /* le 0.005 */
	metrics_delivery(b, METRICS_DELIVERED, 5);     /* le 0.005 (inclusive) */
	metrics_delivery(a, METRICS_BOUNCED, 6);       /* le 0.01 */
	metrics_delivery(b, METRICS_DEFERRED, 1000);   /* le 1 */
	metrics_delivery(a, METRICS_HELD, 60000);      /* le 60 */
	metrics_delivery(b, METRICS_EXPIRED, 60001);   /* +Inf only */
	metrics_delivery(a, METRICS_EXPIRED, -1);      /* counted, not observed */
	metrics_delivery(b, METRICS_REJECTED, 7);      /* counted, never observed */
	metrics_delivery(NULL, METRICS_DELIVERED, 1);  /* no-op */
	metrics_tls(a, METRICS_TLS_13, true, true);
	metrics_tls(b, METRICS_TLS_13, true, false);
	metrics_tls(a, METRICS_TLS_12, false, false);
	metrics_tls(b, METRICS_TLS_NONE, true, true); /* verified/resumed ignored for none */
	metrics_conn(a, METRICS_CONN_OPENED);
	metrics_conn(a, METRICS_CONN_OPENED);
	metrics_conn(b, METRICS_CONN_OPENED);
	metrics_conn(a, METRICS_CONN_CLOSED);
	metrics_conn(b, METRICS_CONN_REUSED);
	metrics_conn(b, METRICS_CONN_REUSED);
	metrics_sts_fetch(a, true);
	metrics_sts_fetch(b, false);
	metrics_sts_fetch(b, true);
	metrics_dns(a, METRICS_DNS_OK);
	metrics_dns(b, METRICS_DNS_OK);
	metrics_dns(b, METRICS_DNS_TEMP);
	metrics_dns(a, METRICS_DNS_NXDOMAIN);
	metrics_set_inflight(a, 7);
	metrics_set_inflight(b, 5);
	metrics_set_inflight(a, 4); /* set, not add */
	metrics_set_queue_depth(b, 1234);
	metrics_set_retry_depth(b, 56);
	metrics_slot_wait(a);
	metrics_slot_wait(b);
	metrics_slot_wait(b);
	metrics_slot_wait(NULL); /* no-op */
	metrics_set_tls_chains(a, 3, 1);
	metrics_set_tls_chains(a, 5, 8); /* running totals: replaced, not added */
	metrics_set_tls_chains(b, 10, 20);
	metrics_set_tls_chains(NULL, 99, 99); /* no-op */
	metrics_set_processes(a, 2);
	metrics_set_processes(a, 3); /* set, not add */
	metrics_set_processes(NULL, 7);

	char *buf = xmalloc(BIG);
	size_t n = metrics_render(m, buf, BIG);
	CHECK_INT(strlen(buf), n);
	check_format(buf);
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"delivered\"} 2"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"bounced\"} 1"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"deferred\"} 1"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"expired\"} 2"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"rejected\"} 1"));
	CHECK(has_line(buf, "mxsend_deliveries_total{status=\"held\"} 1"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"TLSv1.3\",verified=\"yes\"} 2"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"TLSv1.3\",verified=\"no\"} 0"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"TLSv1.2\",verified=\"no\"} 1"));
	CHECK(has_line(buf, "mxsend_tls_sessions_total{version=\"none\",verified=\"no\"} 1"));
	CHECK(has_line(buf, "mxsend_tls_handshakes_total 3"));
	CHECK(has_line(buf, "mxsend_tls_resumed_total 1"));
	CHECK(has_line(buf, "mxsend_connections_opened_total 3"));
	CHECK(has_line(buf, "mxsend_connections_reused_total 2"));
	CHECK(has_line(buf, "mxsend_connections_open 2"));
	CHECK(has_line(buf, "mxsend_inflight 9"));
	CHECK(has_line(buf, "mxsend_queue_depth 1234"));
	CHECK(has_line(buf, "mxsend_retry_depth 56"));
	CHECK(has_line(buf, "mxsend_connection_slot_waits_total 3"));
	CHECK(has_line(buf, "mxsend_tls_chains_total{source=\"verified\"} 15"));
	CHECK(has_line(buf, "mxsend_tls_chains_total{source=\"cached\"} 28"));
	CHECK(has_line(buf, "mxsend_processes 3"));
	/* each new metric: HELP, TYPE, then its series, in that order */
	const char *ch = strstr(buf, "# HELP mxsend_tls_chains_total ");
	const char *ct = strstr(buf, "# TYPE mxsend_tls_chains_total counter\n");
	const char *cv = strstr(buf, "\nmxsend_tls_chains_total{source=\"verified\"} ");
	const char *cc = strstr(buf, "\nmxsend_tls_chains_total{source=\"cached\"} ");
	CHECK(ch && ct && cv && cc && ch < ct && ct < cv && cv < cc);
	const char *pt = strstr(buf, "# TYPE mxsend_processes gauge\n");
	CHECK(pt != NULL && strstr(buf, "\nmxsend_processes ") > pt);
	const char *st = strstr(buf, "# TYPE mxsend_connection_slot_waits_total counter\n");
	CHECK(st != NULL && strstr(buf, "\nmxsend_connection_slot_waits_total ") > st);
	CHECK(has_line(buf, "mxsend_sts_policy_fetches_total{result=\"ok\"} 2"));
	CHECK(has_line(buf, "mxsend_sts_policy_fetches_total{result=\"error\"} 1"));
	CHECK(has_line(buf, "mxsend_dns_queries_total{result=\"ok\"} 2"));
	CHECK(has_line(buf, "mxsend_dns_queries_total{result=\"temp\"} 1"));
	CHECK(has_line(buf, "mxsend_dns_queries_total{result=\"nxdomain\"} 1"));
	/* cumulative buckets */
	static const struct {
		const char *le;
		int v;
	} want[] = { { "0.005", 2 }, { "0.01", 3 }, { "0.025", 3 }, { "0.5", 3 }, { "1", 4 },
		     { "2.5", 4 },   { "30", 4 },   { "60", 5 },    { "+Inf", 6 } };
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		char s[96];
		snprintf(s, sizeof(s), "mxsend_delivery_duration_seconds_bucket{le=\"%s\"}", want[i].le);
		CHECK_INT(value_of(buf, s), want[i].v);
	}
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_count 6"));
	/* 3 + 5 + 6 + 1000 + 60000 + 60001 ms */
	CHECK(has_line(buf, "mxsend_delivery_duration_seconds_sum 121.015"));
	/* bucket lines are in increasing le order, +Inf last, then _sum, _count */
	const char *p5 = strstr(buf, "le=\"0.005\""), *p60 = strstr(buf, "le=\"60\"");
	const char *pinf = strstr(buf, "le=\"+Inf\""), *psum = strstr(buf, "seconds_sum");
	CHECK(p5 && p60 && pinf && psum && p5 < p60 && p60 < pinf && pinf < psum);

	/* truncation: snprintf semantics, never past cap, always terminated */
	char small[100];
	memset(small, 'x', sizeof(small));
	size_t n2 = metrics_render(m, small, 64);
	CHECK_INT(n2, n);
	CHECK_INT(strlen(small), 63);
	CHECK(small[64] == 'x');
	CHECK(strncmp(small, buf, 63) == 0);
	CHECK_INT(metrics_render(m, NULL, 0), n);
	free(buf);
	metrics_free(m);
}

/* ---- two writers, one reader ---- */

#define ITERS 200000

struct writer {
	struct metrics_shard *s;
	atomic_int *done;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < ITERS; i++) {
		metrics_delivery(w->s, (enum metrics_status)(i % 2 ? METRICS_DELIVERED : METRICS_DEFERRED),
				 i % 70000);
		metrics_conn(w->s, METRICS_CONN_OPENED);
		metrics_tls(w->s, METRICS_TLS_13, true, i % 4 == 0);
		metrics_conn(w->s, METRICS_CONN_CLOSED);
		metrics_set_inflight(w->s, i % 100);
		if (i % 3 == 0)
			metrics_slot_wait(w->s);
		/* running totals copied in, as a worker copies its tlscache's */
		metrics_set_tls_chains(w->s, (uint64_t)i + 1, (uint64_t)(i + 1) / 2);
	}
	metrics_set_inflight(w->s, 0);
	atomic_fetch_add(w->done, 1);
	return NULL;
}

static void t_concurrent(void)
{
	struct metrics *m = metrics_new(2);
	atomic_int done = 0;
	struct writer w[2] = { { metrics_shard(m, 0), &done }, { metrics_shard(m, 1), &done } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&th[i], NULL, writer_main, &w[i]) == 0);
	char *buf = xmalloc(BIG);
	long long last_deliv = 0, last_count = 0, last_hs = 0, last_waits = 0, last_ver = 0,
		  last_cached = 0;
	int renders = 0, bad = 0;
	do {
		metrics_render(m, buf, BIG);
		renders++;
		long long deliv = value_of(buf, "mxsend_deliveries_total{status=\"delivered\"}");
		long long inf = value_of(buf, "mxsend_delivery_duration_seconds_bucket{le=\"+Inf\"}");
		long long count = value_of(buf, "mxsend_delivery_duration_seconds_count");
		long long hs = value_of(buf, "mxsend_tls_handshakes_total");
		long long open = value_of(buf, "mxsend_connections_open");
		long long inflight = value_of(buf, "mxsend_inflight");
		long long waits = value_of(buf, "mxsend_connection_slot_waits_total");
		long long ver = value_of(buf, "mxsend_tls_chains_total{source=\"verified\"}");
		long long cached = value_of(buf, "mxsend_tls_chains_total{source=\"cached\"}");
		/* within one scrape: +Inf == _count; the gauges stay in range */
		if (inf != count || open < 0 || open > 2 || inflight < 0 || inflight > 198)
			bad++;
		/* across scrapes: counters never go back */
		if (deliv < last_deliv || count < last_count || hs < last_hs ||
		    waits < last_waits || ver < last_ver || cached < last_cached)
			bad++;
		last_waits = waits;
		last_ver = ver;
		last_cached = cached;
		last_deliv = deliv;
		last_count = count;
		last_hs = hs;
	} while (atomic_load(&done) < 2);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK_INT(bad, 0);
	CHECK(renders > 1);
	metrics_render(m, buf, BIG);
	CHECK_INT(value_of(buf, "mxsend_deliveries_total{status=\"delivered\"}"), ITERS);
	CHECK_INT(value_of(buf, "mxsend_deliveries_total{status=\"deferred\"}"), ITERS);
	CHECK_INT(value_of(buf, "mxsend_delivery_duration_seconds_count"), 2 * ITERS);
	CHECK_INT(value_of(buf, "mxsend_delivery_duration_seconds_bucket{le=\"+Inf\"}"), 2 * ITERS);
	CHECK_INT(value_of(buf, "mxsend_connections_opened_total"), 2 * ITERS);
	CHECK_INT(value_of(buf, "mxsend_connections_open"), 0);
	CHECK_INT(value_of(buf, "mxsend_tls_handshakes_total"), 2 * ITERS);
	CHECK_INT(value_of(buf, "mxsend_tls_resumed_total"), 2 * (ITERS / 4));
	CHECK_INT(value_of(buf, "mxsend_inflight"), 0);
	CHECK_INT(value_of(buf, "mxsend_connection_slot_waits_total"), 2 * ((ITERS + 2) / 3));
	CHECK_INT(value_of(buf, "mxsend_tls_chains_total{source=\"verified\"}"), 2 * ITERS);
	CHECK_INT(value_of(buf, "mxsend_tls_chains_total{source=\"cached\"}"), 2 * (ITERS / 2));
	/* sum of i % 70000 over 0..ITERS-1, twice, in ms */
	unsigned long long sum = 0;
	for (int i = 0; i < ITERS; i++)
		sum += (unsigned long long)(i % 70000);
	sum *= 2;
	char want[96];
	snprintf(want, sizeof(want), "mxsend_delivery_duration_seconds_sum %llu.%03llu", sum / 1000,
		 sum % 1000);
	CHECK(has_line(buf, want));
	free(buf);
	metrics_free(m);
}

/* ---- HTTP over loopback ---- */

struct server {
	struct loop *l;
	struct metrics *m;
	pthread_t th;
	int port;
};

static void stop_loop(void *arg)
{
	loop_stop(arg);
}

static void *loop_main(void *arg)
{
	struct server *s = arg;
	loop_run(s->l);
	return NULL;
}

static bool server_start(struct server *s, struct metrics *m)
{
	int err = 0;
	char e[256];
	s->m = m;
	s->l = loop_new(64, &err);
	CHECK(s->l != NULL);
	if (s->l == NULL)
		return false;
	CHECK(loop_wake_init(s->l, stop_loop, s->l) == 0);
	int r = metrics_serve(m, s->l, "127.0.0.1:0", e, sizeof(e));
	CHECK_INT(r, 0);
	if (r != 0) {
		fprintf(stderr, "  %s\n", e);
		loop_free(s->l);
		return false;
	}
	s->port = metrics_port(m);
	CHECK(s->port > 0);
	CHECK(pthread_create(&s->th, NULL, loop_main, s) == 0);
	return true;
}

static void server_stop(struct server *s)
{
	loop_wake(s->l);
	pthread_join(s->th, NULL);
	metrics_free(s->m);
	loop_free(s->l);
}

static int dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd != -1);
	struct timeval tv = { .tv_sec = 15 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		CHECK(w > 0);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Read until EOF (the server closes). Returns bytes read; -1 on error. */
static long read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r == 0)
			break;
		if (r < 0) {
			fprintf(stderr, "  recv: %s\n", strerror(errno));
			return -1;
		}
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	buf[n] = '\0';
	return (long)n;
}

/* One request on a fresh connection; the whole response in buf. */
static long exchange(int port, const char *req, size_t len, char *buf, size_t cap)
{
	int fd = dial(port);
	send_all(fd, req, len);
	long n = read_all(fd, buf, cap);
	close(fd);
	return n;
}

static int status_of(const char *resp)
{
	int code = -1;
	if (sscanf(resp, "HTTP/1.1 %d ", &code) != 1)
		return -1;
	return code;
}

static const char *body_of(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : NULL;
}

static long content_length(const char *resp)
{
	const char *h = strstr(resp, "\r\nContent-Length: ");
	return h ? strtol(h + 18, NULL, 10) : -1;
}

static void t_http(void)
{
	struct metrics *m = metrics_new(2);
	struct server s;
	if (!server_start(&s, m))
		return;
	/* this thread is shard 0's only writer */
	metrics_delivery(metrics_shard(m, 0), METRICS_DELIVERED, 42);
	metrics_set_queue_depth(metrics_shard(m, 0), 17);
	metrics_set_processes(metrics_shard(m, 0), 2);
	char *buf = xmalloc(BIG);

	static const char get[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
	long n = exchange(s.port, get, strlen(get), buf, BIG);
	CHECK(n > 0);
	CHECK_INT(status_of(buf), 200);
	CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECK(strstr(buf, "\r\nContent-Type: text/plain; version=0.0.4\r\n") != NULL);
	CHECK(strstr(buf, "\r\nConnection: close\r\n") != NULL);
	const char *body = body_of(buf);
	CHECK(body != NULL);
	if (body != NULL) {
		CHECK_INT(content_length(buf), (long)strlen(body));
		check_format(body);
		CHECK(has_line(body, "mxsend_deliveries_total{status=\"delivered\"} 1"));
		CHECK(has_line(body, "mxsend_queue_depth 17"));
		CHECK(has_line(body, "mxsend_processes 2"));
		CHECK(has_line(body, "mxsend_tls_chains_total{source=\"cached\"} 0"));
		CHECK(has_line(body, "mxsend_delivery_duration_seconds_bucket{le=\"0.05\"} 1"));
	}

	/* a query string is ignored; HTTP/1.0 and bare LF line ends work */
	static const char get10[] = "GET /metrics?x=1 HTTP/1.0\n\n";
	n = exchange(s.port, get10, strlen(get10), buf, BIG);
	CHECK_INT(status_of(buf), 200);

	/* HEAD: same head, no body */
	static const char headreq[] = "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	n = exchange(s.port, headreq, strlen(headreq), buf, BIG);
	CHECK_INT(status_of(buf), 200);
	CHECK(content_length(buf) > 1000);
	body = body_of(buf);
	CHECK(body != NULL && *body == '\0');

	static const char nf[] = "GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
	n = exchange(s.port, nf, strlen(nf), buf, BIG);
	CHECK_INT(status_of(buf), 404);
	CHECK(strstr(buf, "\r\nConnection: close\r\n") != NULL);
	static const char nf2[] = "GET /metricsx HTTP/1.1\r\n\r\n";
	n = exchange(s.port, nf2, strlen(nf2), buf, BIG);
	CHECK_INT(status_of(buf), 404);

	static const char post[] = "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
	n = exchange(s.port, post, strlen(post), buf, BIG);
	CHECK_INT(status_of(buf), 405);
	CHECK(strstr(buf, "\r\nAllow: GET, HEAD\r\n") != NULL);

	static const char junk[] = "hello\r\n\r\n";
	n = exchange(s.port, junk, strlen(junk), buf, BIG);
	CHECK_INT(status_of(buf), 400);

	/* oversize: 20 KB of headers, no end in the first 8 KiB */
	size_t biglen = 20000;
	char *big = xmalloc(biglen);
	memcpy(big, "GET /metrics HTTP/1.1\r\nX-Pad: ", 30);
	memset(big + 30, 'a', biglen - 30 - 4);
	memcpy(big + biglen - 4, "\r\n\r\n", 4);
	n = exchange(s.port, big, biglen, buf, BIG);
	CHECK(n > 0);
	CHECK_INT(status_of(buf), 431);
	/* exactly at the cap with the end inside it: served */
	size_t atcap = METRICS_REQ_MAX;
	memset(big + 30, 'a', atcap - 30 - 4);
	memcpy(big + atcap - 4, "\r\n\r\n", 4);
	n = exchange(s.port, big, atcap, buf, BIG);
	CHECK_INT(status_of(buf), 200);
	free(big);

	/* a request trickling in, split inside the CRLFCRLF */
	int fd = dial(s.port);
	static const char *const parts[] = { "GE", "T /metr", "ics HTTP/1.1\r\nHost: x\r\n\r", "\n" };
	for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
		send_all(fd, parts[i], strlen(parts[i]));
		usleep(20000);
	}
	n = read_all(fd, buf, BIG);
	close(fd);
	CHECK_INT(status_of(buf), 200);

	/* a client that goes away without a request does no harm */
	fd = dial(s.port);
	close(fd);
	n = exchange(s.port, get, strlen(get), buf, BIG);
	CHECK_INT(status_of(buf), 200);

	free(buf);
	server_stop(&s);
}

/* 16 idle clients fill every slot: the 17th waits in the backlog until the
 * idle ones hit the 5 s deadline and are closed, then it is served. */
static void t_http_cap_and_timeout(void)
{
	struct metrics *m = metrics_new(1);
	struct server s;
	if (!server_start(&s, m))
		return;
	int idle[METRICS_MAX_CONNS];
	for (int i = 0; i < METRICS_MAX_CONNS; i++) {
		idle[i] = dial(s.port);
		send_all(idle[i], "GET /met", 8); /* never completed */
	}
	usleep(200000); /* let the loop accept them all */
	uint64_t t0 = mono_ms();
	int fd = dial(s.port);
	static const char get[] = "GET /metrics HTTP/1.1\r\n\r\n";
	send_all(fd, get, strlen(get));
	char *buf = xmalloc(BIG);
	long n = read_all(fd, buf, BIG);
	uint64_t waited = mono_ms() - t0;
	close(fd);
	CHECK(n > 0);
	CHECK_INT(status_of(buf), 200);
	CHECK(waited >= METRICS_TIMEOUT_MS - 700 && waited < METRICS_TIMEOUT_MS + 3000);
	for (int i = 0; i < METRICS_MAX_CONNS; i++) {
		char c;
		CHECK_INT(recv(idle[i], &c, 1, 0), 0); /* closed by the server, no response */
		close(idle[i]);
	}
	free(buf);
	server_stop(&s);
}

static void t_serve_errors(void)
{
	struct metrics *m = metrics_new(1);
	int err = 0;
	char e[256];
	struct loop *l = loop_new(16, &err);
	CHECK(l != NULL);
	if (l == NULL)
		return;
	static const char *const bad[] = { "127.0.0.1", "127.0.0.1:", ":9465", "127.0.0.1:70000",
					   "::1:9465", "[::1]9465", "example.com:9465",
					   "127.0.0.1:9x" };
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		CHECK_INT(metrics_serve(m, l, bad[i], e, sizeof(e)), -EINVAL);
		CHECK(strstr(e, "bad address") != NULL);
	}
	CHECK_INT(metrics_port(m), 0);
	/* a port already taken */
	int busy = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(busy, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(busy, 1) == 0);
	socklen_t al = sizeof(a);
	getsockname(busy, (struct sockaddr *)&a, &al);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));
	CHECK_INT(metrics_serve(m, l, addr, e, sizeof(e)), -EADDRINUSE);
	CHECK(strstr(e, "bind 127.0.0.1:") != NULL);
	close(busy);
	/* IPv6 loopback, if the host has it; then a second serve is refused */
	int r = metrics_serve(m, l, "[::1]:0", e, sizeof(e));
	if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT)
		r = metrics_serve(m, l, "localhost:0", e, sizeof(e));
	CHECK_INT(r, 0);
	CHECK(metrics_port(m) > 0);
	CHECK_INT(metrics_serve(m, l, "127.0.0.1:0", e, sizeof(e)), -EALREADY);
	metrics_free(m);
	loop_free(l);
}

/* Per egress source: a bounded label set (METRICS_SOURCES_MAX, the rest "other"). */
static void t_sources(void)
{
	struct metrics *m = metrics_new(2);
	char *buf = xmalloc(BIG);
	metrics_render(m, buf, BIG);
	CHECK(strstr(buf, "mxsend_source_deliveries_total") == NULL); /* no sources: no series */
	CHECK(has_line(buf, "mxsend_source_down_total 0"));
	metrics_free(m);
	m = metrics_new(2);
	const char *names[METRICS_SOURCES_MAX + 3];
	char nb[METRICS_SOURCES_MAX + 3][16];
	for (int i = 0; i < METRICS_SOURCES_MAX + 3; i++) {
		snprintf(nb[i], sizeof(nb[i]), "ip%d", i);
		names[i] = nb[i];
	}
	metrics_set_sources(m, names, METRICS_SOURCES_MAX + 3);
	struct metrics_shard *a = metrics_shard(m, 0), *b = metrics_shard(m, 1);
	metrics_source_delivery(a, 0, METRICS_DELIVERED);
	metrics_source_delivery(b, 0, METRICS_DELIVERED);
	metrics_source_delivery(a, 1, METRICS_DEFERRED);
	metrics_source_delivery(a, METRICS_SOURCES_MAX + 2, METRICS_BOUNCED);
	metrics_source_delivery(a, -1, METRICS_BOUNCED); /* none: ignored */
	metrics_source_down(b);
	size_t n = metrics_render(m, buf, BIG);
	CHECK(n < METRICS_RENDER_MAX);
	check_format(buf);
	CHECK(has_line(buf, "mxsend_source_deliveries_total{source=\"ip0\",status=\"delivered\"} 2"));
	CHECK(has_line(buf, "mxsend_source_deliveries_total{source=\"ip1\",status=\"deferred\"} 1"));
	CHECK(has_line(buf, "mxsend_source_deliveries_total{source=\"ip15\",status=\"held\"} 0"));
	CHECK(strstr(buf, "source=\"ip16\"") == NULL);
	CHECK(has_line(buf, "mxsend_source_deliveries_total{source=\"other\",status=\"bounced\"} 1"));
	CHECK(has_line(buf, "mxsend_source_down_total 1"));
	free(buf);
	metrics_free(m);
}

/* Shaping and bounce classes: label sets from config names only, every
 * counter series present at zero, rules without provider= per provider and
 * "-", the rate gauge only where a rate is in force, sums over shards, a
 * response that fits metrics_render_max, and a real scrape of it. */
static void t_shaping(void)
{
	struct metrics *m = metrics_new(2);
	char *buf = xmalloc(BIG);
	metrics_render(m, buf, BIG);
	CHECK(strstr(buf, "mxsend_shaping_") == NULL); /* not set: no shaping series */
	CHECK(has_line(buf, "mxsend_bounce_class_total{status=\"bounced\",class=\"invalid-recipient\"} 0"));
	metrics_bclass(metrics_shard(m, 0), true, 1);
	metrics_bclass(metrics_shard(m, 1), true, 1);
	metrics_bclass(metrics_shard(m, 1), false, 4); /* rate-limited */
	metrics_bclass(metrics_shard(m, 1), false, 0); /* none: ignored */
	metrics_bclass(metrics_shard(m, 1), false, 99);
	metrics_bclass(NULL, false, 4);
	metrics_shape_match(metrics_shard(m, 0), 0, 0, 1); /* before set_shaping: ignored */
	metrics_render(m, buf, BIG);
	check_format(buf);
	CHECK(has_line(buf, "mxsend_bounce_class_total{status=\"bounced\",class=\"invalid-recipient\"} 2"));
	CHECK(has_line(buf, "mxsend_bounce_class_total{status=\"deferred\",class=\"rate-limited\"} 1"));
	CHECK(has_line(buf, "mxsend_bounce_class_total{status=\"deferred\",class=\"other\"} 0"));
	CHECK(strstr(buf, "class=\"\"") == NULL);

	const char *prov[] = { "google", "lab" };
	const struct metrics_rule rules[] = {
		{ "gmail-rate", "throttle", 0 },
		{ "any-block", "suspend", -1 },
		{ "lab-perm", "reclassify-permanent", 1 },
	};
	const char *src[] = { "ip1", "ip2" };
	metrics_set_shaping(m, prov, 2, rules, 3, src, 2);
	struct metrics_shard *a = metrics_shard(m, 0), *b = metrics_shard(m, 1);
	metrics_shape_match(a, 0, 0, 3);
	metrics_shape_match(b, 0, 0, 2);
	metrics_shape_match(a, 1, 1, 1);
	metrics_shape_match(b, 1, -1, 4); /* no provider: "-" */
	metrics_shape_match(a, 3, 0, 1);  /* out of range: ignored */
	metrics_shape_match(a, 0, 2, 1);
	metrics_shape_defer(a, 0, METRICS_DEFER_RATE, 5);
	metrics_shape_defer(b, 0, METRICS_DEFER_RATE, 1);
	metrics_shape_defer(b, 1, METRICS_DEFER_WARMUP, 2);
	metrics_shape_defer(b, -1, METRICS_DEFER_SUSPEND, 2); /* no provider: ignored */
	metrics_shape_defer(b, 0, METRICS_DEFER_N, 2);
	metrics_set_shape_rate(a, 1, 12.5);  /* ip1 -> lab */
	metrics_set_shape_rate(a, 2, 0.25);  /* ip2 -> google */
	metrics_set_shape_rate(a, 4, 3);     /* "-" -> google */
	metrics_set_shape_rate(a, 6, 3);     /* out of range */
	size_t n = metrics_render(m, buf, BIG);
	CHECK(n < metrics_render_max(m));
	CHECK(metrics_render_max(m) > METRICS_RENDER_MAX);
	check_format(buf);
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"google\",rule=\"gmail-rate\",action=\"throttle\"} 5"));
	CHECK(strstr(buf, "provider=\"lab\",rule=\"gmail-rate\"") == NULL); /* google's rule only */
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"google\",rule=\"any-block\",action=\"suspend\"} 0"));
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"lab\",rule=\"any-block\",action=\"suspend\"} 1"));
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"-\",rule=\"any-block\",action=\"suspend\"} 4"));
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"lab\",rule=\"lab-perm\",action=\"reclassify-permanent\"} 0"));
	CHECK(has_line(buf, "mxsend_shaping_deferred_total{provider=\"google\",reason=\"rate\"} 6"));
	CHECK(has_line(buf, "mxsend_shaping_deferred_total{provider=\"google\",reason=\"suspend\"} 0"));
	CHECK(has_line(buf, "mxsend_shaping_deferred_total{provider=\"lab\",reason=\"warmup\"} 2"));
	CHECK(strstr(buf, "mxsend_shaping_deferred_total{provider=\"-\"") == NULL);
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"ip1\",provider=\"lab\"} 12.500"));
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"ip2\",provider=\"google\"} 0.250"));
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"-\",provider=\"google\"} 3.000"));
	CHECK(value_of(buf, "mxsend_shaping_rate{source=\"ip1\",provider=\"google\"}") == -1);
	/* a gauge goes down again (set, not added); at 0 the series leaves */
	metrics_set_shape_rate(a, 1, 2);
	metrics_set_shape_rate(a, 2, 0);
	metrics_render(m, buf, BIG);
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"ip1\",provider=\"lab\"} 2.000"));
	CHECK(value_of(buf, "mxsend_shaping_rate{source=\"ip2\",provider=\"google\"}") == -1);
	metrics_set_shaping(m, prov, 1, rules, 1, src, 0); /* a second call: ignored */
	metrics_render(m, buf, BIG);
	CHECK(has_line(buf, "mxsend_shaping_deferred_total{provider=\"lab\",reason=\"warmup\"} 2"));
	free(buf);
	metrics_free(m);

	/* more providers than are counted: the pairs keep shaping.h's numbering
	 * (source x all providers + provider), the rest is left out */
	m = metrics_new(1);
	enum { NPX = METRICS_PROVIDERS_MAX + 2 };
	char xn[NPX][16];
	const char *xp[NPX];
	for (int i = 0; i < NPX; i++) {
		snprintf(xn[i], sizeof(xn[i]), "p%d", i);
		xp[i] = xn[i];
	}
	const struct metrics_rule xr[] = { { "r0", "throttle", 0 }, { "r65", "throttle", NPX - 1 } };
	metrics_set_shaping(m, xp, NPX, xr, 2, src, 2);
	metrics_shape_match(metrics_shard(m, 0), 1, NPX - 1, 1);
	metrics_set_shape_rate(metrics_shard(m, 0), 1 * NPX + 3, 7);   /* ip2 -> p3 */
	metrics_set_shape_rate(metrics_shard(m, 0), 2 * NPX + 1, 5);   /* "-" -> p1 */
	metrics_set_shape_rate(metrics_shard(m, 0), NPX - 1, 9);       /* ip1 -> p65: not counted */
	metrics_shape_defer(metrics_shard(m, 0), NPX - 1, METRICS_DEFER_RATE, 1);
	buf = xmalloc(metrics_render_max(m));
	CHECK(metrics_render(m, buf, metrics_render_max(m)) < metrics_render_max(m));
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"ip2\",provider=\"p3\"} 7.000"));
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"-\",provider=\"p1\"} 5.000"));
	CHECK(strstr(buf, "provider=\"p65\"") == NULL);
	CHECK(has_line(buf, "mxsend_shaping_deferred_total{provider=\"p63\",reason=\"rate\"} 0"));
	CHECK(has_line(buf, "mxsend_shaping_matches_total{provider=\"p0\",rule=\"r0\",action=\"throttle\"} 0"));
	CHECK(strstr(buf, "rule=\"r65\"") == NULL); /* its provider is not counted */
	free(buf);
	metrics_free(m);

	/* many long names: the response still fits its cap */
	m = metrics_new(1);
	enum { NP = 40, NR = 100, NS = 16 };
	char pnames[NP][64], rnames[NR][64], snames[NS][64];
	const char *pp[NP], *sp[NS];
	struct metrics_rule rr[NR];
	for (int i = 0; i < NP; i++) {
		snprintf(pnames[i], sizeof(pnames[i]), "provider-%054d", i);
		pp[i] = pnames[i];
	}
	for (int i = 0; i < NS; i++) {
		snprintf(snames[i], sizeof(snames[i]), "source-%056d", i);
		sp[i] = snames[i];
	}
	for (int i = 0; i < NR; i++) {
		snprintf(rnames[i], sizeof(rnames[i]), "rule-%058d", i);
		rr[i] = (struct metrics_rule){ rnames[i], "reclassify-temporary", i % 2 ? -1 : i % NP };
	}
	metrics_set_shaping(m, pp, NP, rr, NR, sp, NS);
	for (int i = 0; i < (NS + 1) * NP; i++)
		metrics_set_shape_rate(metrics_shard(m, 0), i, 1e9 + i);
	size_t cap = metrics_render_max(m);
	buf = xmalloc(cap);
	n = metrics_render(m, buf, cap);
	CHECK(n < cap);
	CHECK(n > METRICS_RENDER_MAX); /* the fixed cap alone would cut it */
	CHECK(has_line(buf, "mxsend_shaping_rate{source=\"-\",provider=\"provider-000000000000000000000000000000000000000000000000000039\"} 1000000679.000"));
	/* ... and the endpoint serves all of it */
	struct server s;
	if (server_start(&s, m)) {
		char *resp = xmalloc(cap + 1024);
		static const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
		CHECK(exchange(s.port, get, strlen(get), resp, cap + 1024) > 0);
		CHECK_INT(status_of(resp), 200);
		const char *body = body_of(resp);
		CHECK(body != NULL && strcmp(body, buf) == 0);
		server_stop(&s); /* frees m */
		free(resp);
	} else {
		metrics_free(m);
	}
	free(buf);
}

static const struct t_case cases[] = {
	{ "shaping and bounce classes: config labels, bounded", t_shaping },
	{ "per-source deliveries: bounded labels", t_sources },
	{ "names", t_names },
	{ "render_empty", t_render_empty },
	{ "render_values", t_render_values },
	{ "concurrent_writers_and_reader", t_concurrent },
	{ "http_scrape", t_http },
	{ "http_cap_and_timeout", t_http_cap_and_timeout },
	{ "serve_errors", t_serve_errors },
};
T_MAIN(cases)
