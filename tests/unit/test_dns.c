/* test_dns.c: MX ordering (pure), then dns.c end to end against a real
 * unbound (Debian) on 127.0.2.53 and a private port, serving a test zone from
 * local-data.  unbound also gives us the faults we need:
 *   SERVFAIL: a stub-zone whose server is unbound itself, queried from an
 *             outgoing-interface that access-control refuses (answers in ~1 ms);
 *   REFUSED:  local-zone type refuse;   dropped queries: local-zone type deny.
 * Everything is bounded in time; unbound dies with us (PR_SET_PDEATHSIG). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "sender/dns.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"
#include "tests/t.h"

/* Line-buffered stdout, so "ok" lines survive a sanitizer exit; TEST_DNS_DEBUG=1
 * turns on the dns debug log. */
__attribute__((constructor)) static void setup(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (getenv("TEST_DNS_DEBUG"))
		log_set_level(LOG_DEBUG);
}

/* ---- pure: dns_sort_hosts ---- */

static uint32_t xs_state = 2463534242u;
static uint32_t fake_rnd(void)
{
	xs_state ^= xs_state << 13;
	xs_state ^= xs_state >> 17;
	xs_state ^= xs_state << 5;
	return xs_state;
}

static void set_host(struct dns_host *h, const char *name, int pref)
{
	memset(h, 0, sizeof(*h));
	strlcpy_x(h->name, name, sizeof(h->name));
	h->pref = pref;
}

static void test_sort_by_pref(void)
{
	struct dns_host h[5];
	set_host(&h[0], "c", 30);
	set_host(&h[1], "a", 10);
	set_host(&h[2], "d", 40);
	set_host(&h[3], "b", 20);
	set_host(&h[4], "e", 50);
	dns_sort_hosts(h, 5, fake_rnd);
	CHECK_STR(h[0].name, "a");
	CHECK_STR(h[1].name, "b");
	CHECK_STR(h[2].name, "c");
	CHECK_STR(h[3].name, "d");
	CHECK_STR(h[4].name, "e");
	dns_sort_hosts(h, 0, fake_rnd); /* no-op */
	dns_sort_hosts(h, 1, fake_rnd);
	CHECK_STR(h[0].name, "a");
}

/* Three hosts at pref 10 between one at 5 and one at 20: the ends never move,
 * and over many runs all 6 orders of the middle appear, roughly uniformly. */
static void test_sort_shuffle_equal(void)
{
	int seen[6] = { 0 };
	const int runs = 6000;
	for (int r = 0; r < runs; r++) {
		struct dns_host h[5];
		set_host(&h[0], "z20", 20);
		set_host(&h[1], "x", 10);
		set_host(&h[2], "first", 5);
		set_host(&h[3], "y", 10);
		set_host(&h[4], "w", 10);
		dns_sort_hosts(h, 5, fake_rnd);
		CHECK_STR(h[0].name, "first");
		CHECK_STR(h[4].name, "z20");
		CHECK(h[1].pref == 10 && h[2].pref == 10 && h[3].pref == 10);
		char o[4] = { h[1].name[0], h[2].name[0], h[3].name[0], 0 };
		static const char *const perms[6] = { "wxy", "wyx", "xwy", "xyw", "ywx", "yxw" };
		int k = -1;
		for (int i = 0; i < 6; i++)
			if (strcmp(o, perms[i]) == 0)
				k = i;
		CHECK(k >= 0);
		if (k >= 0)
			seen[k]++;
	}
	for (int i = 0; i < 6; i++) {
		/* expected 1000 each; 800..1200 is > 6 sigma */
		CHECK(seen[i] > 800 && seen[i] < 1200);
	}
}

/* rand_u32, the generator dns.c uses, shuffles too. */
static void test_sort_real_rng(void)
{
	int first_a = 0;
	for (int r = 0; r < 400; r++) {
		struct dns_host h[2];
		set_host(&h[0], "a", 10);
		set_host(&h[1], "b", 10);
		dns_sort_hosts(h, 2, rand_u32);
		first_a += h[0].name[0] == 'a';
	}
	CHECK(first_a > 100 && first_a < 300);
}

/* ---- unbound fixture ---- */

static struct {
	char dir[64];
	int port;
	pid_t pid;
	bool up;
	struct loop *loop;
} fx;

static const char *zone_lines =
	"  local-zone: \"test.\" static\n"
	"  local-data: \"test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 60\"\n"
	"  local-data: \"a.test. 300 IN MX 10 mx1.a.test.\"\n"
	"  local-data: \"a.test. 300 IN MX 20 mx2.a.test.\"\n"
	"  local-data: \"a.test. 300 IN MX 10 MX3.A.TEST.\"\n"
	"  local-data: \"mx1.a.test. 300 IN A 127.0.0.10\"\n"
	"  local-data: \"mx1.a.test. 300 IN AAAA ::1\"\n"
	"  local-data: \"mx2.a.test. 300 IN A 127.0.0.11\"\n"
	"  local-data: \"mx3.a.test. 300 IN A 127.0.0.12\"\n"
	"  local-data: \"mx3.a.test. 300 IN A 127.0.0.13\"\n"
	"  local-data: \"implicit.test. 300 IN A 127.0.0.20\"\n"
	"  local-data: \"null.test. 300 IN MX 0 .\"\n"
	"  local-data: \"nohost.test. 300 IN MX 10 missing.nohost.test.\"\n"
	"  local-data: \"partial.test. 300 IN MX 10 gone.partial.test.\"\n"
	"  local-data: \"partial.test. 300 IN MX 20 mx2.a.test.\"\n"
	"  local-data: 'txt.test. 300 IN TXT \"v=STSv1; id=20240101\"'\n"
	"  local-data: 'txt.test. 300 IN TXT \"part1\" \"part2\"'\n"
	"  local-zone: \"servfail.test.\" transparent\n"
	"  local-zone: \"refused.test.\" refuse\n"
	"  local-zone: \"drop.test.\" deny\n";

/* Send one raw MX query for a.test and wait up to ms for any answer. */
static bool unbound_answers(int port, int ms)
{
	static const unsigned char q[] = { 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
					   1, 'a', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1 };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd == -1)
		return false;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.2.53", &sin.sin_addr);
	bool ok = false;
	if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin)) == (ssize_t)sizeof(q)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		unsigned char buf[512];
		ok = poll(&p, 1, ms) == 1 && recv(fd, buf, sizeof(buf), 0) > 0;
	}
	close(fd);
	return ok;
}

static bool unbound_try(int port)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/unbound.conf", fx.dir);
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return false;
	fprintf(f,
		"server:\n"
		"  interface: 127.0.2.53@%d\n  port: %d\n"
		"  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n"
		"  directory: \"%s\"\n  pidfile: \"%s/unbound.pid\"\n"
		"  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n"
		"  do-ip6: no\n  num-threads: 1\n"
		"  so-reuseport: no\n" /* a taken port must fail to bind, not be shared */
		"  access-control: 127.0.0.0/8 allow\n"
		"  access-control: 127.0.2.55/32 refuse\n"
		"  outgoing-interface: 127.0.2.55\n"
		"  do-not-query-localhost: no\n"
		"  module-config: \"iterator\"\n%s",
		port, port, fx.dir, fx.dir, zone_lines);
	/* > 512 bytes: truncated over UDP, so c-ares retries over TCP */
	fprintf(f, "  local-data: 'big.test. 300 IN TXT");
	for (int i = 0; i < 3; i++)
		fprintf(f, " \"%c%0249d\"", 'a' + i, i);
	fprintf(f, "'\nstub-zone:\n  name: \"servfail.test.\"\n  stub-addr: 127.0.2.53@%d\n", port);
	fclose(f);
	pid_t pid = fork();
	if (pid == -1)
		return false;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char logp[128];
		snprintf(logp, sizeof(logp), "%s/unbound.log", fx.dir);
		int lfd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (lfd != -1) {
			dup2(lfd, 1);
			dup2(lfd, 2);
		}
		execlp("unbound", "unbound", "-d", "-c", path, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) { /* up to ~5 s */
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid)
			return false; /* exited: bind failure or bad config */
		if (unbound_answers(port, 50)) {
			fx.pid = pid;
			fx.port = port;
			return true;
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return false;
}

static bool fixture(void)
{
	if (fx.up)
		return true;
	strlcpy_x(fx.dir, "/tmp/test_dns.XXXXXX", sizeof(fx.dir));
	if (mkdtemp(fx.dir) == NULL) {
		fprintf(stderr, "  mkdtemp: %s\n", strerror(errno));
		return false;
	}
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (int i = 0; i < 5 && !fx.up; i++)
		fx.up = unbound_try(20000 + rand() % 20000);
	if (!fx.up) {
		fprintf(stderr, "  could not start unbound (see %s/unbound.log)\n", fx.dir);
		return false;
	}
	int err = 0;
	fx.loop = loop_new(256, &err);
	if (fx.loop == NULL) {
		fprintf(stderr, "  loop_new: %s\n", strerror(-err));
		return false;
	}
	return true;
}

static void test_unbound_stop(void)
{
	if (fx.pid > 0) {
		int st = 0;
		if (waitpid(fx.pid, &st, WNOHANG) == fx.pid) {
			fprintf(stderr, "  unbound died during the tests (status 0x%x)\n", st);
			CHECK(0);
			fx.pid = 0;
		}
	}
	if (fx.pid > 0) {
		kill(fx.pid, SIGTERM);
		int st = 0;
		for (int i = 0; i < 50 && waitpid(fx.pid, &st, WNOHANG) == 0; i++)
			usleep(20000);
		kill(fx.pid, SIGKILL);
		waitpid(fx.pid, NULL, WNOHANG);
	}
	static const char *const files[] = { "unbound.conf", "unbound.log", "unbound.pid" };
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		char p[128];
		snprintf(p, sizeof(p), "%s/%s", fx.dir, files[i]);
		unlink(p);
	}
	if (fx.dir[0])
		rmdir(fx.dir);
	loop_free(fx.loop);
	fx.loop = NULL;
	CHECK(fx.up);
}

static struct dns *mkdns(unsigned timeout_ms, unsigned tries, unsigned max_inflight)
{
	char servers[64], err[256] = "";
	snprintf(servers, sizeof(servers), "127.0.2.53:%d", fx.port);
	struct dns_opts o = { .servers = servers, .timeout_ms = timeout_ms, .tries = tries,
			      .cache_max = 100, .max_inflight = max_inflight };
	struct dns *d = dns_new(fx.loop, &o, err, sizeof(err));
	if (d == NULL)
		fprintf(stderr, "  dns_new: %s\n", err);
	return d;
}

/* ---- running the loop until callbacks arrive ---- */

struct guard {
	struct loop_timer t;
	bool fired;
};

static void guard_fire(struct loop_timer *t)
{
	struct guard *g = container_of(t, struct guard, t);
	g->fired = true;
	loop_stop(fx.loop);
}

static int pending; /* callbacks still expected */

/* Run until `pending` drops to 0 or ms pass; false on timeout. */
static bool run_for(unsigned ms)
{
	struct guard g = { .fired = false };
	loop_timer_init(&g.t, guard_fire);
	loop_timer_arm(fx.loop, &g.t, ms);
	while (pending > 0 && !g.fired)
		loop_run(fx.loop);
	loop_timer_stop(fx.loop, &g.t);
	return !g.fired;
}

/* Let the loop finish what dns_free left to it (poll removals, orphaned task). */
static void drain(unsigned ms)
{
	pending = 1;
	run_for(ms);
	pending = 0;
}

struct mx_res {
	bool done;
	struct dns_mx mx;
};

static void got_mx(void *arg, const struct dns_mx *mx)
{
	struct mx_res *r = arg;
	CHECK(!r->done);
	r->done = true;
	memcpy(&r->mx, mx, DNS_MX_SIZE(mx->nhosts));
	if (--pending == 0)
		loop_stop(fx.loop);
}

struct txt_res {
	bool done;
	enum dns_status status;
	int n;
	size_t len; /* of rr[0] */
	char rr[4][800];
};

static void got_txt(void *arg, const struct dns_txt *t)
{
	struct txt_res *r = arg;
	r->done = true;
	r->status = t->status;
	r->n = t->n;
	r->len = t->n > 0 ? strlen(t->rr[0]) : 0;
	for (int i = 0; i < t->n && i < 4; i++)
		strlcpy_x(r->rr[i], t->rr[i], sizeof(r->rr[i]));
	if (--pending == 0)
		loop_stop(fx.loop);
}

static bool resolve_mx(struct dns *d, const char *name, struct mx_res *r, unsigned ms)
{
	memset(r, 0, sizeof(*r));
	pending++;
	dns_resolve_mx(d, name, got_mx, r);
	CHECK(!r->done); /* never before dns_resolve_mx returns */
	bool ok = run_for(ms);
	CHECK(ok && r->done);
	return ok && r->done;
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		CHECK(s->sin_port == 0);
		inet_ntop(AF_INET, &s->sin_addr, buf, (socklen_t)len);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)ss;
		CHECK(s->sin6_port == 0);
		inet_ntop(AF_INET6, &s->sin6_addr, buf, (socklen_t)len);
	} else {
		snprintf(buf, len, "family%d", ss->ss_family);
	}
	return buf;
}

/* ---- end-to-end cases ---- */

static void test_mx_sorted(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(1000, 2, 0);
	CHECK(d != NULL);
	if (d == NULL)
		return;
	struct mx_res r;
	bool saw_mx1_first = false, saw_mx3_first = false;
	char b[64];
	for (int i = 0; i < 40; i++) { /* first from the wire, then from the cache */
		if (!resolve_mx(d, i % 2 ? "a.test" : "A.Test.", &r, 3000))
			break;
		CHECK_INT(r.mx.status, DNS_OK);
		CHECK_INT(r.mx.implicit, 0);
		CHECK_INT(r.mx.nhosts, 3);
		if (r.mx.nhosts != 3)
			break;
		CHECK_INT(r.mx.hosts[0].pref, 10);
		CHECK_INT(r.mx.hosts[1].pref, 10);
		CHECK_INT(r.mx.hosts[2].pref, 20);
		CHECK_STR(r.mx.hosts[2].name, "mx2.a.test");
		CHECK_INT(r.mx.hosts[2].naddrs, 1);
		CHECK_STR(addr_str(&r.mx.hosts[2].addrs[0], b, sizeof(b)), "127.0.0.11");
		for (int k = 0; k < 2; k++) {
			const struct dns_host *h = &r.mx.hosts[k];
			CHECK_INT(h->status, DNS_OK);
			if (strcmp(h->name, "mx1.a.test") == 0) {
				saw_mx1_first |= k == 0;
				CHECK_INT(h->naddrs, 2); /* IPv4 first, then IPv6 */
				CHECK_STR(addr_str(&h->addrs[0], b, sizeof(b)), "127.0.0.10");
				CHECK_STR(addr_str(&h->addrs[1], b, sizeof(b)), "::1");
			} else {
				CHECK_STR(h->name, "mx3.a.test"); /* lowercased */
				saw_mx3_first |= k == 0;
				CHECK_INT(h->naddrs, 2);
			}
		}
	}
	CHECK(saw_mx1_first && saw_mx3_first); /* equal prefs are shuffled */
	struct dns_stats st;
	dns_get_stats(d, &st);
	CHECK_INT(st.queries, 7); /* MX + 3 x (A, AAAA), once */
	CHECK(st.cache_hits >= 39 * 7);
	CHECK_INT(st.inflight, 0);
	CHECK_INT(st.pending, 0);
	dns_free(d);
	drain(50);
}

static void test_mx_kinds(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(1000, 2, 0);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct mx_res r;
	char b[64];
	if (resolve_mx(d, "implicit.test", &r, 3000)) {
		CHECK_INT(r.mx.status, DNS_OK);
		CHECK_INT(r.mx.implicit, 1);
		CHECK_INT(r.mx.nhosts, 1);
		CHECK_STR(r.mx.hosts[0].name, "implicit.test");
		CHECK_INT(r.mx.hosts[0].naddrs, 1);
		CHECK_STR(addr_str(&r.mx.hosts[0].addrs[0], b, sizeof(b)), "127.0.0.20");
	}
	if (resolve_mx(d, "null.test", &r, 3000)) {
		CHECK_INT(r.mx.status, DNS_NULLMX);
		CHECK_INT(r.mx.nhosts, 0);
		CHECK(strstr(r.mx.why, "null MX") != NULL);
	}
	if (resolve_mx(d, "nx.test", &r, 3000)) {
		CHECK_INT(r.mx.status, DNS_NXDOMAIN);
		CHECK_STR(r.mx.why, "NXDOMAIN for nx.test MX");
	}
	if (resolve_mx(d, "nohost.test", &r, 3000)) {
		CHECK_INT(r.mx.status, DNS_NODATA);
		CHECK_INT(r.mx.nhosts, 0);
		CHECK(strstr(r.mx.why, "missing.nohost.test") != NULL);
	}
	if (resolve_mx(d, "partial.test", &r, 3000)) {
		CHECK_INT(r.mx.status, DNS_OK);
		CHECK_INT(r.mx.nhosts, 1);
		CHECK_STR(r.mx.hosts[0].name, "mx2.a.test");
		CHECK(strstr(r.mx.why, "gone.partial.test") != NULL);
	}
	/* negative answers are cached for min(SOA TTL, SOA MINIMUM) (RFC 2308) */
	struct dns_stats s0, s1;
	dns_get_stats(d, &s0);
	if (resolve_mx(d, "nx.test", &r, 3000))
		CHECK_INT(r.mx.status, DNS_NXDOMAIN);
	dns_get_stats(d, &s1);
	CHECK_INT(s1.queries, s0.queries);
	CHECK_INT(s1.cache_hits, s0.cache_hits + 1);
	if (resolve_mx(d, "bad name.test", &r, 3000))
		CHECK_INT(r.mx.status, DNS_NXDOMAIN);
	if (resolve_mx(d, "", &r, 3000))
		CHECK_INT(r.mx.status, DNS_NXDOMAIN);
	dns_free(d);
	drain(50);
}

static void test_txt(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(1000, 2, 0);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct txt_res t[4];
	memset(t, 0, sizeof(t));
	pending = 4;
	dns_resolve_txt(d, "txt.test", got_txt, &t[0]);
	dns_resolve_txt(d, "a.test", got_txt, &t[1]);
	dns_resolve_txt(d, "nx.test", got_txt, &t[2]);
	dns_resolve_txt(d, "big.test", got_txt, &t[3]);
	CHECK(run_for(3000));
	CHECK_INT(t[0].status, DNS_OK);
	CHECK_INT(t[0].n, 2);
	bool sts = false, parts = false;
	for (int i = 0; i < t[0].n && i < 2; i++) {
		sts |= strcmp(t[0].rr[i], "v=STSv1; id=20240101") == 0;
		parts |= strcmp(t[0].rr[i], "part1part2") == 0;
	}
	CHECK(sts && parts);
	CHECK_INT(t[1].status, DNS_NODATA);
	CHECK_INT(t[2].status, DNS_NXDOMAIN);
	CHECK_INT(t[3].status, DNS_OK); /* over TCP */
	CHECK_INT(t[3].n, 1);
	CHECK_INT(t[3].len, 750);
	CHECK(t[3].rr[0][0] == 'a' && t[3].rr[0][250] == 'b' && t[3].rr[0][500] == 'c');
	dns_free(d);
	drain(50);
}

static uint64_t elapsed_ms(uint64_t t0)
{
	return mono_ms() - t0;
}

/* SERVFAIL and REFUSED are temporary and come back fast (no timeouts). */
static void test_temp_fast(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(2000, 3, 0);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct mx_res r;
	uint64_t t0 = mono_ms();
	if (resolve_mx(d, "x.servfail.test", &r, 5000)) {
		CHECK_INT(r.mx.status, DNS_TEMP);
		CHECK(strstr(r.mx.why, "SERVFAIL") != NULL);
	}
	CHECK(elapsed_ms(t0) < 1500);
	t0 = mono_ms();
	if (resolve_mx(d, "x.refused.test", &r, 5000)) {
		CHECK_INT(r.mx.status, DNS_TEMP);
		CHECK(strstr(r.mx.why, "REFUSED") != NULL);
	}
	CHECK(elapsed_ms(t0) < 1500);
	/* temporary answers are not cached: asked again */
	struct dns_stats s0, s1;
	dns_get_stats(d, &s0);
	if (resolve_mx(d, "x.servfail.test", &r, 5000))
		CHECK_INT(r.mx.status, DNS_TEMP);
	dns_get_stats(d, &s1);
	CHECK_INT(s1.queries, s0.queries + 1);
	dns_free(d);
	drain(50);
}

/* A server that drops queries: 300 ms x 2 tries gives DNS_TEMP in about
 * 0.9 s (c-ares doubles the timeout on the second round). */
static void test_drop_timeout(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(300, 2, 0);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct mx_res r;
	uint64_t t0 = mono_ms();
	if (resolve_mx(d, "x.drop.test", &r, 5000)) {
		CHECK_INT(r.mx.status, DNS_TEMP);
		CHECK_STR(r.mx.why, "timeout for x.drop.test MX");
	}
	uint64_t el = elapsed_ms(t0);
	CHECK(el >= 250 && el < 2000);
	fprintf(stderr, "  # drop: DNS_TEMP after %llu ms\n", (unsigned long long)el);
	/* nobody listening at all: connection refused, also temporary and fast */
	char err[256];
	struct dns_opts o = { .servers = "127.0.2.53:1", .timeout_ms = 300, .tries = 2 };
	struct dns *d2 = dns_new(fx.loop, &o, err, sizeof(err));
	CHECK(d2 != NULL);
	if (d2 != NULL) {
		t0 = mono_ms();
		if (resolve_mx(d2, "a.test", &r, 5000))
			CHECK_INT(r.mx.status, DNS_TEMP);
		CHECK(elapsed_ms(t0) < 2000);
		dns_free(d2);
	}
	dns_free(d);
	drain(50);
}

/* Identical lookups share one query; the in-flight cap queues the rest. */
static void test_coalesce_and_cap(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(1000, 2, 1);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	static const char *const names[] = { "a.test", "A.TEST", "implicit.test", "null.test",
					     "nx.test", "partial.test", "a.test" };
	struct mx_res r[ARRAY_LEN(names)];
	memset(r, 0, sizeof(r));
	pending = (int)ARRAY_LEN(names);
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		dns_resolve_mx(d, names[i], got_mx, &r[i]);
	struct dns_stats st;
	dns_get_stats(d, &st);
	CHECK_INT(st.inflight, 1);
	CHECK(st.queued >= 4);
	CHECK_INT(st.coalesced, 2);
	CHECK(run_for(5000));
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (r[i].mx.why[0])
			fprintf(stderr, "  # %s: %s: %s\n", names[i], dns_status_name(r[i].mx.status),
				r[i].mx.why);
	CHECK_INT(r[0].mx.status, DNS_OK);
	CHECK_INT(r[1].mx.status, DNS_OK);
	CHECK_INT(r[6].mx.nhosts, 3);
	CHECK_INT(r[2].mx.implicit, 1);
	CHECK_INT(r[3].mx.status, DNS_NULLMX);
	CHECK_INT(r[4].mx.status, DNS_NXDOMAIN);
	CHECK_INT(r[5].mx.status, DNS_OK);
	dns_get_stats(d, &st);
	CHECK_INT(st.inflight, 0);
	CHECK_INT(st.queued, 0);
	dns_free(d);
	drain(50);
}

static void must_not_run(void *arg, const struct dns_mx *mx)
{
	(void)mx;
	*(bool *)arg = true;
}

/* dns_free with queries in flight, queued and cached answers pending
 * delivery: no callback runs and nothing leaks (ASan). */
static void test_free_cancels(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(300, 2, 2);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct mx_res r;
	resolve_mx(d, "a.test", &r, 3000); /* fill the cache */
	bool called = false;
	dns_resolve_mx(d, "x.drop.test", must_not_run, &called);
	dns_resolve_mx(d, "y.drop.test", must_not_run, &called);
	dns_resolve_mx(d, "implicit.test", must_not_run, &called); /* queued */
	dns_resolve_mx(d, "a.test", must_not_run, &called);        /* cached, deferred */
	dns_free(d);
	drain(200);
	CHECK(!called);
}

struct free_in_cb {
	struct dns *d;
	int calls;
};

static void free_from_cb(void *arg, const struct dns_mx *mx)
{
	struct free_in_cb *f = arg;
	(void)mx;
	f->calls++;
	dns_free(f->d);
	if (--pending == 0)
		loop_stop(fx.loop);
}

static void test_free_in_callback(void)
{
	if (!fixture()) {
		CHECK(0);
		return;
	}
	struct dns *d = mkdns(1000, 2, 0);
	if (d == NULL) {
		CHECK(0);
		return;
	}
	struct mx_res r;
	resolve_mx(d, "a.test", &r, 3000);
	struct free_in_cb f = { .d = d };
	pending = 1;
	dns_resolve_mx(d, "a.test", free_from_cb, &f); /* cache hit, same pump run */
	dns_resolve_mx(d, "a.test", free_from_cb, &f);
	run_for(500);
	CHECK_INT(f.calls, 1);
	drain(100);
}

static void test_bad_servers(void)
{
	int err = 0;
	struct loop *l = loop_new(8, &err);
	CHECK(l != NULL);
	if (l == NULL)
		return;
	char e[256] = "";
	struct dns_opts o = { .servers = "not an address:xx" };
	struct dns *d = dns_new(l, &o, e, sizeof(e));
	CHECK(d == NULL);
	CHECK(strstr(e, "bad dns servers") != NULL);
	dns_free(d);
	/* DANE: the AD bit only from resolvers trusted to validate */
	struct dns_opts y = { .servers = "127.0.0.1:5353,[::1]:53", .dnssec = DNS_DNSSEC_YES };
	d = dns_new(l, &y, e, sizeof(e));
	CHECK(d != NULL && dns_dnssec_on(d));
	dns_free(d);
	y.servers = "127.0.0.1,192.0.2.53";
	e[0] = '\0';
	d = dns_new(l, &y, e, sizeof(e));
	CHECK(d == NULL);
	CHECK(strstr(e, "resolver 192.0.2.53 is not trusted") != NULL);
	dns_free(d);
	y.trusted = "198.51.100.1, 192.0.2.53";
	d = dns_new(l, &y, e, sizeof(e));
	CHECK(d != NULL && dns_dnssec_on(d));
	dns_free(d);
	struct dns_opts a = { .servers = "192.0.2.53", .dnssec = DNS_DNSSEC_AUTO };
	d = dns_new(l, &a, e, sizeof(e));
	CHECK(d != NULL && !dns_dnssec_on(d)); /* auto: off, quietly */
	dns_free(d);
	a.servers = "127.0.0.53";
	d = dns_new(l, &a, e, sizeof(e));
	CHECK(d != NULL && dns_dnssec_on(d));
	dns_free(d);
	a.dnssec = DNS_DNSSEC_NO;
	d = dns_new(l, &a, e, sizeof(e));
	CHECK(d != NULL && !dns_dnssec_on(d));
	dns_free(d);
	loop_free(l);
}


/* ---- dns_raw.c: TLSA answers and CNAME chains from the raw message ---- */

static size_t put_name(unsigned char *p, const char *n)
{
	size_t o = 0;
	while (*n) {
		size_t l = strcspn(n, ".");
		p[o++] = (unsigned char)l;
		memcpy(p + o, n, l);
		o += l;
		n += l + (n[l] == '.');
	}
	p[o++] = 0;
	return o;
}

static size_t put_rr(unsigned char *p, const char *owner, int type, const void *rd, size_t rdlen)
{
	size_t o = owner ? put_name(p, owner) : (p[0] = 0xc0, p[1] = 12, 2);
	unsigned char h[10] = { (unsigned char)(type >> 8), (unsigned char)type, 0, 1, 0, 0, 1, 44,
				(unsigned char)(rdlen >> 8), (unsigned char)rdlen };
	memcpy(p + o, h, 10);
	memcpy(p + o + 10, rd, rdlen);
	return o + 10 + rdlen;
}

static size_t put_head(unsigned char *p, const char *q, int type, int an)
{
	unsigned char h[12] = { 0x12, 0x34, 0x81, 0xa0, 0, 1, 0, (unsigned char)an, 0, 0, 0, 0 };
	memcpy(p, h, 12);
	size_t o = 12 + put_name(p + 12, q);
	p[o++] = 0;
	p[o++] = (unsigned char)type;
	p[o++] = 0;
	p[o++] = 1;
	return o;
}

static void test_raw_tlsa(void)
{
	unsigned char m[1024], rd[40] = { 3, 1, 1 }, cn[64];
	for (int i = 0; i < 32; i++)
		rd[3 + i] = (unsigned char)i;
	struct dns_tlsa_rr rr[4];
	/* one record at the name asked (compressed owner) */
	size_t o = put_head(m, "_25._tcp.mx.test", 52, 1);
	o += put_rr(m + o, NULL, 52, rd, 35);
	memset(rr, 0, sizeof(rr));
	CHECK_INT(dns_raw_tlsa(m, o, "_25._tcp.MX.test.", rr, 4), 1);
	CHECK_INT(rr[0].usage, 3);
	CHECK_INT(rr[0].selector, 1);
	CHECK_INT(rr[0].mtype, 1);
	CHECK_INT((int)rr[0].len, 32);
	CHECK(rr[0].data != NULL && rr[0].data[31] == 31);
	dns_tlsa_rrs_free(rr, 1);
	/* through a CNAME (RFC 7672 2.2.3); a TLSA of another owner is ignored */
	o = put_head(m, "_25._tcp.mx.test", 52, 3);
	o += put_rr(m + o, "_25._tcp.other.test", 52, rd, 35);
	size_t cl = put_name(cn, "_25._tcp.real.test");
	o += put_rr(m + o, NULL, 5, cn, cl);
	rd[0] = 2;
	o += put_rr(m + o, "_25._tcp.real.test", 52, rd, 35);
	memset(rr, 0, sizeof(rr));
	CHECK_INT(dns_raw_tlsa(m, o, "_25._tcp.mx.test", rr, 4), 1);
	CHECK_INT(rr[0].usage, 2);
	dns_tlsa_rrs_free(rr, 1);
	/* the end of the chain for an address answer */
	char out[256];
	CHECK_INT(dns_raw_target(m, o, "_25._tcp.mx.test", out), 0);
	CHECK_STR(out, "_25._tcp.real.test");
	CHECK_INT(dns_raw_target(m, o, "nothing.test", out), 0);
	CHECK_STR(out, "nothing.test");
	/* RDATA shorter than the three fixed octets: the message is bad */
	o = put_head(m, "_25._tcp.mx.test", 52, 1);
	o += put_rr(m + o, NULL, 52, rd, 2);
	memset(rr, 0, sizeof(rr));
	CHECK_INT(dns_raw_tlsa(m, o, "_25._tcp.mx.test", rr, 4), -1);
	/* a compression pointer to itself (a loop), an RDATA past the end */
	o = put_head(m, "_25._tcp.mx.test", 52, 1);
	m[o] = 0xc0;
	m[o + 1] = (unsigned char)o;
	CHECK_INT(dns_raw_tlsa(m, o + 2 + 10, "_25._tcp.mx.test", rr, 4), -1);
	o = put_head(m, "_25._tcp.mx.test", 52, 1);
	o += put_rr(m + o, NULL, 52, rd, 35);
	CHECK_INT(dns_raw_tlsa(m, o - 1, "_25._tcp.mx.test", rr, 4), -1);
	/* more records than room: the first max kept */
	o = put_head(m, "_25._tcp.mx.test", 52, 6);
	for (int i = 0; i < 6; i++)
		o += put_rr(m + o, NULL, 52, rd, 35);
	memset(rr, 0, sizeof(rr));
	CHECK_INT(dns_raw_tlsa(m, o, "_25._tcp.mx.test", rr, 4), 4);
	dns_tlsa_rrs_free(rr, 4);
}

static const struct t_case cases[] = {
	{ "raw_tlsa_cname_bounds", test_raw_tlsa },
	{ "sort_by_pref", test_sort_by_pref },
	{ "sort_shuffle_equal_prefs", test_sort_shuffle_equal },
	{ "sort_real_rng", test_sort_real_rng },
	{ "bad_servers", test_bad_servers },
	{ "mx_two_prefs_sorted_and_cached", test_mx_sorted },
	{ "mx_implicit_null_nx_nodata_partial", test_mx_kinds },
	{ "txt_records_and_tcp_fallback", test_txt },
	{ "servfail_refused_temp_fast", test_temp_fast },
	{ "drop_timeout_temp", test_drop_timeout },
	{ "coalesce_and_inflight_cap", test_coalesce_and_cap },
	{ "free_cancels_everything", test_free_cancels },
	{ "free_inside_callback", test_free_in_callback },
	{ "unbound_stop", test_unbound_stop },
};

T_MAIN(cases)
