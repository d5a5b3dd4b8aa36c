/* test_config.c: unit tests for sender/config.c (INI loading through inih,
 * defaults, errors with file:line, durations and sizes, rule lookup).
 * Each case writes its config into a fresh mkdtemp() directory and removes it. */
#include "sender/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <unistd.h>

#include "queue/queue.h"
#include "sender/bclass.h"
#include "sender/dns.h"
#include "sender/log.h"
#include "tests/t.h"

/* Path of the last file load() wrote (removed again, but errors name it). */
static char last_path[128];

/* Write text to DIR/mxsend.conf, config_load() it, remove the file. */
static int load_raw(struct config *c, const char *text, size_t len, char *err, size_t errlen)
{
	char dir[] = "/tmp/test_config.XXXXXX";
	int rc = -99;
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		t_failed = 1;
		config_defaults(c);
		return rc;
	}
	snprintf(last_path, sizeof(last_path), "%s/mxsend.conf", dir);
	FILE *f = fopen(last_path, "w");
	if (f == NULL || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
		perror("write config");
		t_failed = 1;
		config_defaults(c);
	} else {
		rc = config_load(c, last_path, err, errlen);
	}
	unlink(last_path);
	rmdir(dir);
	return rc;
}

static int load(struct config *c, const char *text, char *err, size_t errlen)
{
	return load_raw(c, text, strlen(text), err, errlen);
}

/* Load text, which must load cleanly; the caller config_fini()s. */
static void load_ok(struct config *c, const char *text)
{
	char err[512] = "";
	int rc = load(c, text, err, sizeof(err));
	CHECK_INT(rc, 0);
	if (rc != 0)
		fprintf(stderr, "  unexpected error: %s\n", err);
}

/* Load text, which must fail with exactly "PATH:" + want (want = "LINE: msg"). */
static void load_err(const char *text, const char *want)
{
	struct config c;
	char err[512] = "", full[768];
	CHECK_INT(load(&c, text, err, sizeof(err)), -1);
	snprintf(full, sizeof(full), "%s:%s", last_path, want);
	CHECK_STR(err, full);
	config_fini(&c);
}

/* The effective rule for (domain, mx). */
static struct rule rule_for(const struct config *c, const char *domain, const char *mx)
{
	struct rule r;
	memset(&r, 0xA5, sizeof(r));
	config_rule_for(c, domain, mx, &r);
	return r;
}

/* ---- defaults ---- */

static void t_defaults(void)
{
	struct config c;
	config_defaults(&c);
	CHECK(c.path == NULL);
	CHECK_INT(c.workers, 0);
	CHECK_STR(c.ca_file, ""); /* the system store */
	CHECK(c.dns == NULL);
	CHECK(c.metrics == NULL);
	CHECK_INT(c.max_inflight, 20000);
	CHECK_INT(c.max_message_size, 50ull << 20);
	CHECK_INT(c.log_level, LOG_WARN);
	CHECK_STR(c.redis_url, "redis://127.0.0.1:6379/0");
	CHECK(c.redis_password == NULL);
	CHECK(c.redis_username == NULL);
	CHECK_STR(c.jobs, "mxsend:jobs");
	CHECK_STR(c.results, "mxsend:results");
	CHECK_STR(c.group, "mxsend");
	CHECK_INT(c.visibility_timeout_ms, 300000);
	CHECK_INT(c.batch, 256);
	CHECK_INT(c.n_schedule, 6);
	CHECK_INT(c.schedule_ms[0], 60000);
	CHECK_INT(c.schedule_ms[5], 7200000);
	CHECK_INT(c.lifetime_ms, 2 * 86400000ull);
	CHECK(c.jitter > 0.099 && c.jitter < 0.101);
	CHECK_INT(c.min_version, 12);
	CHECK(c.mta_sts);
	CHECK(c.tlsrpt);
	CHECK_INT(c.broken_tls_ttl_ms, 3600000);
	CHECK_INT(c.timeouts.connect, 10000);
	CHECK_INT(c.timeouts.banner, 300000);
	CHECK_INT(c.timeouts.helo, 300000);
	CHECK_INT(c.timeouts.starttls, 120000);
	CHECK_INT(c.timeouts.mail, 300000);
	CHECK_INT(c.timeouts.rcpt, 300000);
	CHECK_INT(c.timeouts.data, 120000);
	CHECK_INT(c.timeouts.block, 180000);
	CHECK_INT(c.timeouts.dot, 600000);
	CHECK_INT(c.timeouts.rset, 120000);
	CHECK_INT(c.timeouts.quit, 60000);
	CHECK_INT(c.reuse_time_ms, 300000);
	CHECK_INT(c.reuse_max, 0);
	CHECK_INT(c.idle_timeout_ms, 30000);
	CHECK_INT(c.n_mxs, 0);
	CHECK_INT(c.n_domains, 1);
	CHECK_STR(c.domains[0].pattern, "*");
	CHECK_INT(c.domains[0].tls, TLS_LEVEL_MAY);
	CHECK_INT(c.domains[0].on_tls_failure, TLS_FAIL_PLAINTEXT);
	CHECK_INT(c.domains[0].min_tls, 12);
	CHECK_INT(c.domains[0].port, 25);
	CHECK_INT(c.domains[0].max_connections, 20);
	CHECK_INT(c.domains[0].max_rcpt, 100);
	CHECK(c.domains[0].max_rate == 0);
	CHECK(c.domains[0].relay_host == NULL);
	struct rule r = rule_for(&c, "example.org", "mx.example.org");
	CHECK_STR(r.pattern, "*");
	CHECK_INT(r.tls, TLS_LEVEL_MAY);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_PLAINTEXT);
	CHECK_INT(r.port, 25);
	CHECK(r.auth_user == NULL && r.relay_host == NULL);
	config_fini(&c);
}

static void t_default_helo_is_hostname(void)
{
	struct config c;
	char host[256] = "";
	config_defaults(&c);
	CHECK(gethostname(host, sizeof(host) - 1) == 0);
	CHECK_STR(c.helo, host[0] ? host : "localhost");
	config_fini(&c);
}

static void t_fini_is_safe(void)
{
	struct config c;
	config_defaults(&c);
	config_fini(&c);
	config_fini(&c); /* zeroed by the first call */
	CHECK(c.domains == NULL && c.helo == NULL);
	/* and after a failed load that had already built rules and strings */
	load_err("[mxsend]\nhelo = a.example\n[domain a.com]\nrelay = r.example:25\n"
		 "auth_user = u\nauth_password = p\n[domain b.com]\ntls = bogus\n",
		 "8: bad value \"bogus\" for tls (none|may|encrypt|verify|dane-only)");
}

static void t_missing_file(void)
{
	struct config c;
	char err[256];
	CHECK_INT(config_load(&c, "/nonexistent/mxsend.conf", err, sizeof(err)), -1);
	CHECK_STR(err, "/nonexistent/mxsend.conf: No such file or directory");
	config_fini(&c);
}

static void t_empty_file(void)
{
	struct config c;
	load_ok(&c, "");
	CHECK_INT(c.n_domains, 1);
	CHECK_INT(c.max_inflight, 20000);
	CHECK(c.path != NULL && strcmp(c.path, last_path) == 0);
	config_fini(&c);
}

/* ---- DESIGN.md's example ---- */

static const char design_example[] =
	"[mxsend]\n"
	"workers = 2                      ; 0 = one per CPU\n"
	"helo = bulk.example.net\n"
	"dns = 127.0.0.1:5353             ; resolvers, comma-separated; default /etc/resolv.conf\n"
	"ca_file = /etc/ssl/certs/ca-certificates.crt\n"
	"max_inflight = 20000\n"
	"metrics = 127.0.0.1:9465\n"
	"\n"
	"[redis]\n"
	"url = redis://127.0.0.1:6379/0   ; or unix:/run/redis/redis.sock\n"
	"jobs = mxsend:jobs\n"
	"results = mxsend:results\n"
	"group = mxsend\n"
	"\n"
	"[retry]\n"
	"schedule = 1m 5m 15m 30m 1h 2h   ; the last step repeats\n"
	"lifetime = 2d\n"
	"\n"
	"[tls]\n"
	"min_version = 1.2\n"
	"mta_sts = yes\n"
	"tlsrpt = yes\n"
	"\n"
	"[domain *]\n"
	"tls = may\n"
	"on_tls_failure = plaintext\n"
	"port = 25\n"
	"max_connections = 20\n"
	"\n"
	"[domain example.com]\n"
	"tls = verify\n"
	"on_tls_failure = hold\n"
	"\n"
	"[mx .google.com]\n"
	"max_connections = 50\n"
	"max_connections_total = 200\n";

static void t_design_example(void)
{
	struct config c;
	load_ok(&c, design_example);
	CHECK_INT(c.workers, 2);
	CHECK_STR(c.helo, "bulk.example.net");
	CHECK_STR(c.dns, "127.0.0.1:5353");
	CHECK_STR(c.metrics, "127.0.0.1:9465");
	CHECK_STR(c.redis_url, "redis://127.0.0.1:6379/0");
	CHECK_INT(c.n_schedule, 6);
	CHECK_INT(c.schedule_ms[2], 15 * 60000);
	CHECK_INT(c.schedule_ms[4], 3600000);
	CHECK_INT(c.lifetime_ms, 172800000);
	CHECK(c.mta_sts && c.tlsrpt);
	CHECK_INT(c.n_domains, 2);
	CHECK_INT(c.domains[0].line, 24);
	CHECK_STR(c.domains[1].pattern, "example.com");
	CHECK_INT(c.domains[1].line, 30);
	CHECK_INT(c.domains[1].set, RULE_TLS | RULE_ON_TLS_FAILURE);
	CHECK_INT(c.n_mxs, 1);
	CHECK_STR(c.mxs[0].pattern, ".google.com");

	struct rule r = rule_for(&c, "example.com", "mx1.example.com");
	CHECK_STR(r.pattern, "example.com");
	CHECK_INT(r.line, 30);
	CHECK_INT(r.tls, TLS_LEVEL_VERIFY);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_HOLD);
	CHECK_INT(r.port, 25);
	CHECK_INT(r.max_connections, 20);
	r = rule_for(&c, "gmail.com", "alt1.gmail-smtp-in.l.google.com");
	CHECK_STR(r.pattern, "*");
	CHECK_INT(r.tls, TLS_LEVEL_MAY);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_PLAINTEXT);
	CHECK_INT(r.max_connections, 50);
	CHECK_INT(r.max_connections_total, 200);
	r = rule_for(&c, "gmail.com", NULL); /* before MX resolution */
	CHECK_INT(r.max_connections, 20);
	CHECK_INT(r.max_connections_total, 0); /* no cap across processes */
	config_fini(&c);
}

/* ---- errors, each with its line ---- */

static void t_err_unknown_key(void)
{
	load_err("[mxsend]\nworkers = 1\n\n; comment\n\n\n\n\n\n[domain example.com]\ntls = may\n"
		 "tsl = verify\n",
		 "12: unknown key \"tsl\" in [domain example.com]");
	load_err("[redis]\nurl = redis://x/0\nworkers = 2\n", "3: unknown key \"workers\" in [redis]");
}

static void t_err_bad_tls(void)
{
	load_err("[domain *]\n\ntls = maybe\n", "3: bad value \"maybe\" for tls (none|may|encrypt|verify|dane-only)");
	load_err("[mx mx.example.com]\non_tls_failure = retry\n",
		 "2: bad value \"retry\" for on_tls_failure (next-mx|defer|hold|bounce|plaintext)");
	load_err("[tls]\nmin_version = 1.1\n", "2: bad value \"1.1\" for min_version (1.2|1.3)");
	load_err("[domain a.com]\nmin_tls = TLSv1.3\n", "2: bad value \"TLSv1.3\" for min_tls (1.2|1.3)");
}

static void t_err_unknown_section(void)
{
	load_err("[mxsend]\n[bogus]\n", "2: unknown section [bogus]");
	load_err("[smtp]\nfoo = 1\n", "1: unknown section [smtp]"); /* reported even before keys */
	load_err("[Domain example.com]\n", "1: unknown section [Domain example.com]");
}

static void t_err_duplicate_sections(void)
{
	load_err("[domain example.com]\ntls = may\n[domain EXAMPLE.com]\n",
		 "3: duplicate section [domain EXAMPLE.com] (first at line 1)");
	load_err("[mx .google.com]\n\n[mx .Google.COM]\n",
		 "3: duplicate section [mx .Google.COM] (first at line 1)");
	load_err("[domain *]\n[domain *]\n", "2: duplicate section [domain *] (first at line 1)");
	load_err("[mxsend]\nworkers = 1\n[redis]\n[mxsend]\n",
		 "4: duplicate section [mxsend] (first at line 1)");
	/* the same name as domain and as mx is fine */
	struct config c;
	load_ok(&c, "[domain mail.example.com]\n[mx mail.example.com]\n");
	CHECK_INT(c.n_domains, 2);
	CHECK_INT(c.n_mxs, 1);
	config_fini(&c);
}

static void t_err_duplicate_key(void)
{
	load_err("[domain a.com]\ntls = may\nport = 25\ntls = verify\n",
		 "4: duplicate key \"tls\" in [domain a.com] (first at line 2)");
	load_err("[mxsend]\nworkers = 1\nworkers = 2\n",
		 "3: duplicate key \"workers\" in [mxsend] (first at line 2)");
}

static void t_err_syntax(void)
{
	load_err("workers = 2\n", "1: key \"workers\" outside any section");
	load_err("[mxsend]\nworkers 2\n", "2: expected \"key = value\" or \"[section]\"");
	load_err("[mxsend]\n= 2\n", "2: missing key name before \"=\"");
	load_err("[mxsend\nworkers = 2\n", "1: missing \"]\" in section header");
	load_err("\n[mxsend] workers = 2\n", "2: unexpected text after section header");
	load_err("[mxsend]\nworkers =\n", "2: missing value for workers");
	load_err("[]\n", "1: empty section header");
	/* the first error is the one reported */
	load_err("[mxsend]\nworkers = x\nbatch = y\n",
		 "2: bad value \"x\" for workers (integer 0..1024)");
}

static void t_err_plaintext_with_encrypt(void)
{
	load_err("[domain example.com]\ntls = verify\non_tls_failure = plaintext\n",
		 "3: on_tls_failure = plaintext is not allowed with tls = verify in [domain example.com] "
		 "(plaintext needs tls = none or may)");
	load_err("[mx .example.net]\non_tls_failure = plaintext\nport = 25\ntls = encrypt\n",
		 "4: on_tls_failure = plaintext is not allowed with tls = encrypt in [mx .example.net] "
		 "(plaintext needs tls = none or may)");
	load_err("[domain *]\non_tls_failure = plaintext\ntls = verify\n",
		 "3: on_tls_failure = plaintext is not allowed with tls = verify in [domain *] "
		 "(plaintext needs tls = none or may)");
	struct config c;
	load_ok(&c, "[domain a.com]\ntls = may\non_tls_failure = plaintext\n"
		    "[domain b.com]\ntls = none\non_tls_failure = plaintext\n"
		    "[domain c.com]\ntls = verify\non_tls_failure = next-mx\n");
	CHECK_INT(c.n_domains, 4);
	config_fini(&c);
}

static void t_err_ranges(void)
{
	load_err("[domain a.com]\nport = 0\n", "2: bad value \"0\" for port (integer 1..65535)");
	load_err("[domain a.com]\nport = 65536\n", "2: bad value \"65536\" for port (integer 1..65535)");
	load_err("[domain a.com]\nport = 25x\n", "2: bad value \"25x\" for port (integer 1..65535)");
	load_err("[domain a.com]\nport = +25\n", "2: bad value \"+25\" for port (integer 1..65535)");
	load_err("[mxsend]\nworkers = -1\n", "2: bad value \"-1\" for workers (integer 0..1024)");
	load_err("[mxsend]\nmax_inflight = 99999999999999999999\n",
		 "2: bad value \"99999999999999999999\" for max_inflight (integer 1..10000000)");
	load_err("[retry]\njitter = 1.5\n", "2: bad value \"1.5\" for jitter (number 0..1)");
	load_err("[domain a.com]\nmax_rate = -1\n",
		 "2: bad value \"-1\" for max_rate (number 0..1000000)");
	load_err("[mxsend]\nmax_message_size = 50X\n",
		 "2: bad value \"50X\" for max_message_size (size like 1000, 64k, 50M, 1G; 1k..4G)");
	load_err("[mxsend]\nmax_message_size = 5G\n",
		 "2: bad value \"5G\" for max_message_size (size like 1000, 64k, 50M, 1G; 1k..4G)");
	load_err("[retry]\nlifetime = 5x\n",
		 "2: bad value \"5x\" for lifetime (duration like 500ms, 30s, 5m, 2h, 2d; 1m..365d)");
	load_err("[timeouts]\nconnect = 0\n",
		 "2: bad value \"0\" for connect (duration like 500ms, 30s, 5m, 2h, 2d; 1ms..1d)");
	load_err("[mxsend]\nlog = verbose\n",
		 "2: bad value \"verbose\" for log (trace|debug|info|warn|error)");
	load_err("[tls]\nmta_sts = maybe\n", "2: bad value \"maybe\" for mta_sts (yes|no)");
	load_err("[mxsend]\nhelo = two words\n", "2: bad value \"two words\" for helo (a single word)");
	load_err("[redis]\nurl = http://x\n",
		 "2: bad value \"http://x\" for url (redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:/PATH)");
	load_err("[mxsend]\nmetrics = 127.0.0.1\n",
		 "2: bad value \"127.0.0.1\" for metrics (host:port or [ipv6]:port)");
	load_err("[mxsend]\ndns = 127.0.0.1:53,,::1\n",
		 "2: bad value \"127.0.0.1:53,,::1\" for dns (comma-separated addr, addr:port or [ipv6]:port)");
}

static void t_err_patterns(void)
{
	load_err("[domain *.example.com]\n",
		 "1: bad pattern in [domain *.example.com]: write \".example.com\" for every subdomain of example.com");
	load_err("[mx *]\n", "1: bad pattern in [mx *]: [mx *] is not a rule; use [domain *] for defaults");
	load_err("[domain example.com.]\n",
		 "1: bad pattern in [domain example.com.]: empty label (write names without a trailing dot)");
	load_err("[domain a..b]\n", "1: bad pattern in [domain a..b]: empty label");
	load_err("[domain -a.com]\n", "1: bad pattern in [domain -a.com]: label starts or ends with \"-\"");
	load_err("[domain a/b.com]\n", "1: bad pattern in [domain a/b.com]: bad character in name");
	load_err("[domain b\xc3\xbc" "cher.de]\n",
		 "1: bad pattern in [domain b\xc3\xbc" "cher.de]: non-ASCII name; write the A-label (xn--...)");
	load_err("[domain]\n", "1: section [domain] needs one name, as in [domain example.com]");
	load_err("[domain a.com b.com]\n", "1: section [domain] needs one name, as in [domain example.com]");
	load_err("[redis main]\n", "1: section [redis] takes no name");
	/* Sentinel: both keys or neither; a good list; TCP only */
	load_err("[redis]\nsentinels = 127.0.0.1:26379\n",
		 "1: [redis] sentinels without master_name: Sentinel needs both");
	load_err("[redis]\nmaster_name = m\n", "1: [redis] master_name without sentinels: Sentinel needs both");
	load_err("[redis]\nsentinels = 127.0.0.1:0\n",
		 "2: bad sentinel \"127.0.0.1:0\": expected HOST:PORT or [IPV6]:PORT in sentinels");
	load_err("[redis]\nurl = unix:/tmp/r.sock\nsentinels = s1\nmaster_name = m\n",
		 "1: [redis] sentinels with a unix: url: the sentinels name a TCP address (the url "
		 "gives only the database, user and password)");
	load_err("[redis]\nwait_replicas = 101\n", "2: bad value \"101\" for wait_replicas (integer 0..100)");
	load_err("[redis]\nwait_timeout = 11s\n",
		 "2: bad value \"11s\" for wait_timeout (duration like 500ms, 30s, 5m, 2h, 2d; 1ms..10s)");
	struct config c;
	load_ok(&c, "[redis]\nsentinels = 10.0.0.1:26379,s2\nmaster_name = mx\nsentinel_password = p\n"
		    "wait_replicas = 1\nwait_timeout = 250ms\n");
	CHECK_STR(c.redis_sentinels, "10.0.0.1:26379,s2");
	CHECK_STR(c.redis_master_name, "mx");
	CHECK_STR(c.redis_sentinel_password, "p");
	CHECK_INT(c.redis_wait_replicas, 1);
	CHECK_INT(c.redis_wait_timeout_ms, 250);
	config_fini(&c);
}

/* Credentials only to a relay whose certificate verifies (issue 17, 4). */
static void t_credentials_need_verify(void)
{
	struct config c;
	const char *cred = "auth_user = bob\nauth_password = pw\n";
	char text[512];
	/* tls below verify: named at the auth_user line */
	snprintf(text, sizeof(text), "[domain a.com]\nrelay = r.example:587\n%s", cred);
	load_err(text, "3: auth_user in [domain a.com] with tls = may: credentials go only to a relay "
		       "whose certificate verifies (set tls = verify, or auth_insecure = yes to accept any "
		       "certificate)");
	snprintf(text, sizeof(text), "[domain a.com]\nrelay = r.example:587\ntls = encrypt\n%s", cred);
	load_err(text, "4: auth_user in [domain a.com] with tls = encrypt: credentials go only to a "
		       "relay whose certificate verifies (set tls = verify, or auth_insecure = yes to "
		       "accept any certificate)");
	/* without a relay */
	snprintf(text, sizeof(text), "[mxsend]\n[domain a.com]\ntls = verify\n%s", cred);
	load_err(text, "4: auth_user in [domain a.com] without relay: credentials are only for a relay "
		       "(set relay = host:port)");
	/* inherited from [domain *]: a rule lowering tls is named at its header */
	snprintf(text, sizeof(text), "[domain *]\nrelay = r.example\ntls = verify\n%s[domain b.com]\ntls = may\n",
		 cred);
	load_err(text, "6: auth_user in [domain b.com] with tls = may: credentials go only to a relay "
		       "whose certificate verifies (set tls = verify, or auth_insecure = yes to accept any "
		       "certificate)");
	/* tls = none never carries credentials, auth_insecure or not */
	snprintf(text, sizeof(text), "[domain a.com]\nrelay = r.example\ntls = none\nauth_insecure = yes\n%s", cred);
	load_err(text, "5: auth_user in [domain a.com] with tls = none: credentials go only to a relay "
		       "whose certificate verifies (set tls = verify)");
	/* fine: verify; or an explicit auth_insecure = yes */
	snprintf(text, sizeof(text), "[domain *]\nrelay = r.example\ntls = verify\n%s[domain b.com]\nport = 26\n", cred);
	load_ok(&c, text);
	config_fini(&c);
	snprintf(text, sizeof(text), "[domain a.com]\nrelay = r.example\nauth_insecure = yes\n%s", cred);
	load_ok(&c, text);
	struct rule r = rule_for(&c, "a.com", NULL);
	CHECK(r.auth_insecure);
	CHECK_INT(r.tls, TLS_LEVEL_MAY);
	r = rule_for(&c, "b.com", NULL);
	CHECK(!r.auth_insecure && r.auth_user == NULL);
	config_fini(&c);
}

/* A password in the Redis URL is never shown (issue 17, 4). */
static void t_redis_url_redacted(void)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0" },
		{ "redis://user:s3cret@h:1/2", "redis://user:***@h:1/2" },
		{ "redis://s3cret@h", "redis://***@h" },
		{ "redis://:pa/ss@w@rd@h/3", "redis://:***@h/3" },
		{ "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0" },
		{ "unix:/run/redis.sock?db=2", "unix:/run/redis.sock?db=2" },
		{ "rediss://:s3cret@h", "rediss://:***@h" },
		{ "redis:/:s3cret@h", "redis:***@h" },
		{ "", "" },
	};
	char buf[128];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_STR(queue_url_redact(cases[i].in, buf, sizeof(buf)), cases[i].out);
	CHECK_STR(queue_url_redact(NULL, buf, sizeof(buf)), "(default)");
	CHECK_STR(queue_url_redact("redis://:s3cret@host", buf, 12), "redis://:**");
	/* a bad URL in the config is named without its password */
	load_err("[redis]\nurl = redis:/:s3cret@h\n",
		 "2: bad value \"redis:***@h\" for url (redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:/PATH)");
	char err[256];
	struct queue_addr a;
	CHECK_INT(queue_url_parse("redis://:s3cret@h:99999", &a, err, sizeof(err)), -1);
	CHECK(strstr(err, "s3cret") == NULL);
	CHECK(strstr(err, "redis://:***@h:99999") != NULL);
}

/* rediss:// (issue 22, 1): tls_* keys need it; tls_key needs tls_cert. */
static void t_redis_tls_keys(void)
{
	struct config c;
	load_ok(&c, "[redis]\nurl = rediss://:pw@r.example:6380/1\ntls_ca = /ca.pem\n"
		    "tls_cert = /c.pem\ntls_key = /c.key\ntls_name = redis.example\n");
	CHECK_STR(c.redis_tls_ca, "/ca.pem");
	CHECK_STR(c.redis_tls_cert, "/c.pem");
	CHECK_STR(c.redis_tls_key, "/c.key");
	CHECK_STR(c.redis_tls_name, "redis.example");
	config_fini(&c);
	load_err("[redis]\nurl = redis://h/0\ntls_ca = /ca.pem\n",
		 "1: [redis] tls_ca is for TLS: the url must be rediss://");
	load_err("[redis]\ntls_name = h\n", "1: [redis] tls_name is for TLS: the url must be rediss://");
	load_err("[redis]\nurl = rediss://h\ntls_key = /k.pem\n",
		 "1: [redis] tls_key without tls_cert (the client certificate)");
	load_err("[redis]\nurl = rediss://\n",
		 "2: bad value \"rediss://\" for url (redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:/PATH)");
}

static void t_err_auth_pairs(void)
{
	load_err("[mxsend]\n[domain a.com]\nauth_user = bob\n[domain b.com]\n",
		 "2: [domain a.com] sets auth_user without auth_password");
	load_err("[domain a.com]\nauth_password = secret\n", /* checked at EOF too */
		 "1: [domain a.com] sets auth_password without auth_user");
}

static void t_err_long_line(void)
{
	char text[600];
	snprintf(text, sizeof(text), "[mxsend]\nhelo = %0300d\n", 0);
	load_err(text, "2: line too long (at most 197 characters)");
	/* exactly 197 is fine, even after indentation */
	struct config c;
	snprintf(text, sizeof(text), "[mxsend]\n    helo = %0190d\n", 7);
	load_ok(&c, text);
	CHECK_INT(strlen(c.helo), 190);
	config_fini(&c);
}

/* ---- values ---- */

static void t_parse_duration(void)
{
	static const struct { const char *s; int ok; uint64_t ms; } cases[] = {
		{ "500ms", 1, 500 }, { "30s", 1, 30000 }, { "5m", 1, 300000 }, { "2h", 1, 7200000 },
		{ "2d", 1, 172800000 }, { "1.5", 1, 1500 }, { "90", 1, 90000 }, { "0", 1, 0 },
		{ "0.25s", 1, 250 }, { ".5m", 1, 30000 }, { "1.001s", 1, 1001 }, { "1.5h", 1, 5400000 },
		{ "", 0, 0 }, { "s", 0, 0 }, { "-1s", 0, 0 }, { " 1s", 0, 0 }, { "1s ", 0, 0 },
		{ "1 s", 0, 0 }, { "1x", 0, 0 }, { "1.2.3", 0, 0 }, { "inf", 0, 0 }, { "1e3", 0, 0 },
		{ "0x10", 0, 0 }, { ".", 0, 0 }, { "1S", 0, 0 }, { "99999999999999999999d", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 12345;
		int rc = config_parse_duration(cases[i].s, &ms);
		if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && ms != cases[i].ms)) {
			fprintf(stderr, "  duration \"%s\": rc %d ms %llu\n", cases[i].s, rc,
				(unsigned long long)ms);
			t_failed = 1;
		}
	}
}

static void t_parse_size(void)
{
	static const struct { const char *s; int ok; uint64_t b; } cases[] = {
		{ "1000", 1, 1000 }, { "64k", 1, 65536 }, { "64K", 1, 65536 }, { "50M", 1, 52428800 },
		{ "50m", 1, 52428800 }, { "1G", 1, 1073741824 }, { "2T", 1, 2ull << 40 }, { "0", 1, 0 },
		{ "", 0, 0 }, { "k", 0, 0 }, { "1.5M", 0, 0 }, { "-1", 0, 0 }, { "1KB", 0, 0 },
		{ "1 k", 0, 0 }, { "16777216T", 0, 0 }, { "99999999999999999999", 0, 0 }, { "1x", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t b = 12345;
		int rc = config_parse_size(cases[i].s, &b);
		if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && b != cases[i].b)) {
			fprintf(stderr, "  size \"%s\": rc %d bytes %llu\n", cases[i].s, rc, (unsigned long long)b);
			t_failed = 1;
		}
	}
}

static void t_booleans(void)
{
	static const char *const yes[] = { "yes", "true", "1", "on", "YES", "On" };
	static const char *const no[] = { "no", "false", "0", "off", "NO", "False" };
	char text[128];
	struct config c;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		snprintf(text, sizeof(text), "[tls]\nmta_sts = %s\ntlsrpt = %s\n", no[i], yes[i]);
		load_ok(&c, text);
		CHECK(!c.mta_sts);
		CHECK(c.tlsrpt);
		config_fini(&c);
	}
}

static void t_global_values(void)
{
	struct config c;
	load_ok(&c, "[mxsend]\nlog = debug\nmax_message_size = 64k\ndns = 127.0.0.1:5353,[::1]:53,10.0.0.1\n"
		    "metrics = [::1]:9465\nhelo = bulk.example.net\n"
		    "[redis]\nurl = unix:/run/redis/redis.sock\npassword = s3cr;t\nbatch = 10\n"
		    "visibility_timeout = 90s\n"
		    "[retry]\nlifetime = 36h\njitter = 0.25\n"
		    "[tls]\nmin_version = 1.3\nbroken_tls_ttl = 0\n"
		    "[timeouts]\nconnect = 2.5s\nbanner = 1m\nhelo = 1m\nstarttls = 30s\nmail = 1m\n"
		    "rcpt = 1m\ndata = 1m\nblock = 1m\ndot = 5m\nrset = 1m\nquit = 500ms\n"
		    "[pool]\nreuse_time = 1m\nreuse_max = 50\nidle_timeout = 10s\n");
	CHECK_INT(c.log_level, LOG_DEBUG);
	CHECK_INT(c.max_message_size, 65536);
	CHECK_STR(c.dns, "127.0.0.1:5353,[::1]:53,10.0.0.1");
	CHECK_STR(c.metrics, "[::1]:9465");
	CHECK_STR(c.redis_url, "unix:/run/redis/redis.sock");
	CHECK_STR(c.redis_password, "s3cr;t"); /* ';' without a blank before it is data */
	CHECK_INT(c.batch, 10);
	CHECK_INT(c.visibility_timeout_ms, 90000);
	CHECK_INT(c.lifetime_ms, 36 * 3600000ull);
	CHECK(c.jitter == 0.25);
	CHECK_INT(c.min_version, 13);
	CHECK_INT(c.broken_tls_ttl_ms, 0);
	CHECK_INT(c.timeouts.connect, 2500);
	CHECK_INT(c.timeouts.starttls, 30000);
	CHECK_INT(c.timeouts.dot, 300000);
	CHECK_INT(c.timeouts.quit, 500);
	CHECK_INT(c.reuse_time_ms, 60000);
	CHECK_INT(c.reuse_max, 50);
	CHECK_INT(c.idle_timeout_ms, 10000);
	config_fini(&c);
}

static void t_schedule(void)
{
	struct config c;
	char text[512], *p;
	load_ok(&c, "[retry]\nschedule = 30s, 2m,10m   1.5h ; comment\n");
	CHECK_INT(c.n_schedule, 4);
	CHECK_INT(c.schedule_ms[0], 30000);
	CHECK_INT(c.schedule_ms[1], 120000);
	CHECK_INT(c.schedule_ms[2], 600000);
	CHECK_INT(c.schedule_ms[3], 5400000);
	config_fini(&c);
	/* 32 steps load; 33 do not */
	p = text + sprintf(text, "[retry]\nschedule =");
	for (int i = 0; i < 32; i++)
		p += sprintf(p, " %dm", i + 1);
	strcpy(p, "\n");
	load_ok(&c, text);
	CHECK_INT(c.n_schedule, 32);
	CHECK_INT(c.schedule_ms[31], 32 * 60000);
	config_fini(&c);
	strcpy(p, " 33m\n");
	load_err(text, "2: too many steps in schedule (at most 32)");
	load_err("[retry]\nschedule = 1m 5q\n",
		 "2: bad value \"1m 5q\" for schedule (up to 32 durations like 1m 5m 1h; each 1s..30d)");
	load_err("[retry]\nschedule = , ,\n",
		 "2: bad value \", ,\" for schedule (up to 32 durations like 1m 5m 1h; each 1s..30d)");
	load_err("[retry]\nschedule = 1m 0s\n",
		 "2: bad value \"1m 0s\" for schedule (up to 32 durations like 1m 5m 1h; each 1s..30d)");
}

static void t_relay(void)
{
	struct config c;
	load_ok(&c, "[domain a.com]\nrelay = smtp.relay.example:587\nauth_user = bob\nauth_password = pw\n"
		    "tls = verify\n"
		    "[domain b.com]\nrelay = [2001:db8::1]:2525\n"
		    "[domain c.com]\nrelay = relay.example\n"
		    "[domain d.com]\nrelay = 192.0.2.7:26\n"
		    "[domain e.com]\nrelay = [::1]\n");
	CHECK_STR(c.domains[1].relay_host, "smtp.relay.example");
	CHECK_INT(c.domains[1].relay_port, 587);
	CHECK_INT(c.domains[1].set, RULE_RELAY | RULE_AUTH | RULE_TLS);
	CHECK_STR(c.domains[2].relay_host, "2001:db8::1");
	CHECK_INT(c.domains[2].relay_port, 2525);
	CHECK_STR(c.domains[3].relay_host, "relay.example");
	CHECK_INT(c.domains[3].relay_port, 25);
	CHECK_STR(c.domains[4].relay_host, "192.0.2.7");
	CHECK_INT(c.domains[4].relay_port, 26);
	CHECK_STR(c.domains[5].relay_host, "::1");
	CHECK_INT(c.domains[5].relay_port, 25);
	struct rule r = rule_for(&c, "a.com", NULL);
	CHECK_STR(r.relay_host, "smtp.relay.example");
	CHECK_INT(r.relay_port, 587);
	CHECK_STR(r.auth_user, "bob");
	CHECK_STR(r.auth_password, "pw");
	r = rule_for(&c, "z.com", NULL);
	CHECK(r.relay_host == NULL && r.auth_user == NULL);
	config_fini(&c);
	static const char *const bad[] = {
		"::1:25", "[::1", "[::1]25", "[nothost]:25", "host:", "host:0", "host:65536",
		"host:2x", ":25", "[]:25", "a b:25", "host:25:26",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128], want[192];
		snprintf(text, sizeof(text), "[domain a.com]\nrelay = %s\n", bad[i]);
		snprintf(want, sizeof(want), "2: bad value \"%s\" for relay (host, host:port or [ipv6]:port)",
			 bad[i]);
		load_err(text, want);
	}
}

static void t_comments_and_layout(void)
{
	struct config c;
	load_ok(&c, "; leading comment\n"
		    "# hash comment\n"
		    "\n"
		    "[mxsend]   ; trailing comment on a header\n"
		    "  workers = 3   ; indented, inline comment\n"
		    "\thelo = a.example\n"
		    "    max_inflight = 7\n" /* indented keys are keys, not continuation lines */
		    "[domain a.com]\n"
		    "   tls = verify\n"
		    "   on_tls_failure = hold ; comment\n"
		    "[domain b.com]\n"
		    "relay = r.example\n"
		    "tls = verify\n"
		    "auth_user = u\n"
		    "auth_password = p;w#x\n");
	CHECK_INT(c.workers, 3);
	CHECK_STR(c.helo, "a.example");
	CHECK_INT(c.max_inflight, 7);
	CHECK_INT(c.domains[1].tls, TLS_LEVEL_VERIFY);
	CHECK_INT(c.domains[1].on_tls_failure, TLS_FAIL_HOLD);
	CHECK_STR(c.domains[2].auth_password, "p;w#x");
	config_fini(&c);
	/* an indented line with no "=" is not silently joined to the previous value */
	load_err("[retry]\nschedule = 1m 5m\n   15m 30m\n", "3: expected \"key = value\" or \"[section]\"");
}

static void t_crlf_and_bom(void)
{
	static const char text[] = "\xEF\xBB\xBF[mxsend]\r\nworkers = 4\r\n\r\n[domain a.com]\r\ntls = encrypt\r\n"
				   "bogus = 1\r\n";
	struct config c;
	char err[256];
	CHECK_INT(load_raw(&c, text, sizeof(text) - 1 - 11, err, sizeof(err)), 0);
	CHECK_INT(c.workers, 4);
	CHECK_INT(c.domains[1].tls, TLS_LEVEL_ENCRYPT);
	config_fini(&c);
	load_err(text, "6: unknown key \"bogus\" in [domain a.com]");
	/* no newline at the end of the last line */
	load_ok(&c, "[mxsend]\nworkers = 5");
	CHECK_INT(c.workers, 5);
	config_fini(&c);
}

static void t_empty_rule_section(void)
{
	struct config c;
	load_ok(&c, "[domain quiet.example]\n[mx mx.quiet.example]\n");
	CHECK_INT(c.n_domains, 2);
	CHECK_INT(c.domains[1].set, 0);
	CHECK_INT(c.domains[1].line, 1);
	CHECK_INT(c.mxs[0].line, 2);
	struct rule r = rule_for(&c, "quiet.example", "mx.quiet.example");
	CHECK_STR(r.pattern, "quiet.example");
	CHECK_INT(r.tls, TLS_LEVEL_MAY);
	config_fini(&c);
}

static void t_tls_names(void)
{
	for (int i = TLS_LEVEL_NONE; i <= TLS_LEVEL_VERIFY; i++)
		CHECK_INT(tls_level_parse(tls_level_name((enum tls_level)i)), i);
	for (int i = TLS_FAIL_NEXT_MX; i <= TLS_FAIL_PLAINTEXT; i++)
		CHECK_INT(tls_fail_action_parse(tls_fail_action_name((enum tls_fail_action)i)), i);
	CHECK_STR(tls_level_name(TLS_LEVEL_ENCRYPT), "encrypt");
	CHECK_STR(tls_fail_action_name(TLS_FAIL_NEXT_MX), "next-mx");
	CHECK_STR(tls_level_name((enum tls_level)9), "?");
	CHECK_INT(tls_level_parse("Verify"), TLS_LEVEL_VERIFY);
	CHECK_INT(tls_level_parse("strict"), -1);
	CHECK_INT(tls_fail_action_parse("next_mx"), -1);
}

/* ---- rule lookup ---- */

static const char rules[] =
	"[domain *]\n"                       /* 1 */
	"max_connections = 10\n"
	"[domain example.com]\n"             /* 3 */
	"port = 2525\n"
	"[domain .example.com]\n"            /* 5 */
	"port = 2526\n"
	"max_rcpt = 50\n"
	"[domain .deep.example.com]\n"       /* 8 */
	"port = 2527\n"
	"[domain exact.deep.example.com]\n"  /* 10 */
	"max_rcpt = 7\n"
	"[mx .google.com]\n"                 /* 12 */
	"max_connections = 50\n"
	"[mx aspmx.l.google.com]\n"          /* 14 */
	"max_connections = 60\n"
	"[mx .l.google.com]\n"               /* 16 */
	"max_connections = 55\n";

static void t_rule_exact_parent_star(void)
{
	struct config c;
	load_ok(&c, rules);
	struct rule r = rule_for(&c, "example.com", NULL);
	CHECK_STR(r.pattern, "example.com");
	CHECK_INT(r.line, 3);
	CHECK_INT(r.port, 2525);
	CHECK_INT(r.max_rcpt, 100);        /* from [domain *] (built-in) */
	CHECK_INT(r.max_connections, 10);  /* from the file's [domain *] */
	r = rule_for(&c, "a.example.com", NULL);
	CHECK_STR(r.pattern, ".example.com");
	CHECK_INT(r.port, 2526);
	CHECK_INT(r.max_rcpt, 50);
	r = rule_for(&c, "other.org", NULL);
	CHECK_STR(r.pattern, "*");
	CHECK_INT(r.line, 1);
	CHECK_INT(r.port, 25);
	r = rule_for(&c, "notexample.com", NULL); /* suffix match is on a label boundary */
	CHECK_STR(r.pattern, "*");
	config_fini(&c);
}

static void t_rule_longest_parent(void)
{
	struct config c;
	load_ok(&c, rules);
	struct rule r = rule_for(&c, "x.deep.example.com", NULL);
	CHECK_STR(r.pattern, ".deep.example.com");
	CHECK_INT(r.port, 2527);
	CHECK_INT(r.max_rcpt, 100); /* one domain rule only: .example.com is not layered in */
	r = rule_for(&c, "exact.deep.example.com", NULL);
	CHECK_STR(r.pattern, "exact.deep.example.com");
	CHECK_INT(r.port, 25);
	CHECK_INT(r.max_rcpt, 7);
	r = rule_for(&c, "a.b.c.deep.example.com", NULL);
	CHECK_STR(r.pattern, ".deep.example.com");
	config_fini(&c);
	/* longest wins whatever the file order */
	load_ok(&c, "[mx .l.google.com]\nport = 1\n[mx .google.com]\nport = 2\n"
		    "[domain .b.example]\nport = 3\n[domain .example]\nport = 4\n");
	CHECK_INT(rule_for(&c, "a.b.example", "x.l.google.com").port, 1);
	CHECK_INT(rule_for(&c, "a.b.example", NULL).port, 3);
	CHECK_INT(rule_for(&c, "b.example", NULL).port, 4);
	config_fini(&c);
}

static void t_rule_parent_not_itself(void)
{
	struct config c;
	load_ok(&c, "[domain .example.net]\nport = 26\n");
	struct rule r = rule_for(&c, "example.net", NULL);
	CHECK_STR(r.pattern, "*");
	CHECK_INT(r.port, 25);
	r = rule_for(&c, "deep.example.net", NULL);
	CHECK_STR(r.pattern, ".example.net");
	CHECK_INT(r.port, 26);
	config_fini(&c);
}

static void t_rule_mx(void)
{
	struct config c;
	load_ok(&c, rules);
	struct rule r = rule_for(&c, "gmail.com", "aspmx.l.google.com");
	CHECK_INT(r.max_connections, 60); /* exact */
	r = rule_for(&c, "gmail.com", "alt1.aspmx.l.google.com");
	CHECK_INT(r.max_connections, 55); /* longest suffix */
	r = rule_for(&c, "gmail.com", "smtp.google.com");
	CHECK_INT(r.max_connections, 50);
	r = rule_for(&c, "gmail.com", "google.com"); /* .google.com is not google.com */
	CHECK_INT(r.max_connections, 10);
	r = rule_for(&c, "gmail.com", "ASPMX.L.Google.COM."); /* case, trailing dot */
	CHECK_INT(r.max_connections, 60);
	r = rule_for(&c, "a.example.com", "mx.google.com"); /* domain then mx layer */
	CHECK_STR(r.pattern, ".example.com");
	CHECK_INT(r.port, 2526);
	CHECK_INT(r.max_connections, 50);
	config_fini(&c);
}

static void t_rule_case_and_dot(void)
{
	struct config c;
	load_ok(&c, "[domain Example.COM]\nport = 2525\n[domain .Sub.Example.org]\nport = 2600\n");
	CHECK_STR(c.domains[1].pattern, "Example.COM"); /* as written */
	CHECK_INT(rule_for(&c, "example.com", NULL).port, 2525);
	CHECK_INT(rule_for(&c, "EXAMPLE.com.", NULL).port, 2525);
	CHECK_INT(rule_for(&c, "x.sub.example.ORG", NULL).port, 2600);
	CHECK_INT(rule_for(&c, "*", NULL).port, 25);
	CHECK_INT(rule_for(&c, "", NULL).port, 25);
	CHECK_INT(rule_for(&c, NULL, NULL).port, 25);
	config_fini(&c);
}

static void t_rule_tls_layers(void)
{
	struct config c;
	load_ok(&c, "[domain *]\ntls = encrypt\non_tls_failure = defer\nmin_tls = 1.3\n"
		    "[domain legacy.example]\ntls = none\nmin_tls = 1.2\n"
		    "[domain strict.example]\ntls = verify\n"
		    "[mx .may.example]\ntls = may\n"
		    "[mx .verify.example]\ntls = verify\n");
	struct rule r = rule_for(&c, "legacy.example", NULL);
	CHECK_INT(r.tls, TLS_LEVEL_NONE); /* a domain rule replaces [domain *] */
	CHECK_INT(r.min_tls, 12);
	r = rule_for(&c, "legacy.example", "mx.verify.example");
	CHECK_INT(r.tls, TLS_LEVEL_VERIFY); /* an [mx] rule can only raise it */
	r = rule_for(&c, "strict.example", "mx.may.example");
	CHECK_INT(r.tls, TLS_LEVEL_VERIFY);
	r = rule_for(&c, "other.example", "mx.verify.example");
	CHECK_INT(r.tls, TLS_LEVEL_VERIFY);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_DEFER);
	config_fini(&c);
	/* [tls] min_version is a floor under every rule */
	load_ok(&c, "[tls]\nmin_version = 1.3\n[domain a.com]\nmin_tls = 1.2\n");
	CHECK_INT(rule_for(&c, "a.com", NULL).min_tls, 13);
	CHECK_INT(rule_for(&c, "b.com", NULL).min_tls, 13);
	config_fini(&c);
	load_ok(&c, "[domain a.com]\nmin_tls = 1.3\n");
	CHECK_INT(rule_for(&c, "a.com", NULL).min_tls, 13);
	CHECK_INT(rule_for(&c, "b.com", NULL).min_tls, 12);
	config_fini(&c);
}

static void t_rule_plaintext_across_layers(void)
{
	struct config c;
	/* plaintext from [domain *], verify from the domain: defer */
	load_ok(&c, "[domain secure.example]\ntls = verify\n"
		    "[domain fallback.example]\ntls = encrypt\non_tls_failure = bounce\n"
		    "[mx .plain.example]\non_tls_failure = plaintext\n");
	struct rule r = rule_for(&c, "secure.example", NULL);
	CHECK_INT(r.tls, TLS_LEVEL_VERIFY);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_DEFER);
	r = rule_for(&c, "fallback.example", NULL);
	CHECK_INT(r.on_tls_failure, TLS_FAIL_BOUNCE);
	r = rule_for(&c, "fallback.example", "mx.plain.example"); /* mx says plaintext */
	CHECK_INT(r.on_tls_failure, TLS_FAIL_DEFER);
	r = rule_for(&c, "other.example", "mx.plain.example"); /* may: plaintext stays */
	CHECK_INT(r.on_tls_failure, TLS_FAIL_PLAINTEXT);
	config_fini(&c);
	/* [domain *] tls = verify alone: the built-in plaintext becomes defer */
	load_ok(&c, "[domain *]\ntls = verify\n");
	CHECK_INT(c.domains[0].on_tls_failure, TLS_FAIL_DEFER);
	CHECK_INT(rule_for(&c, "x.example", NULL).on_tls_failure, TLS_FAIL_DEFER);
	config_fini(&c);
}

static void t_rule_without_star(void)
{
	/* a config built by hand, with no rules at all, still has the built-in [domain *] */
	struct config c;
	memset(&c, 0, sizeof(c));
	c.min_version = 12;
	struct rule r = rule_for(&c, "example.com", "mx.example.com");
	CHECK_STR(r.pattern, "*");
	CHECK_INT(r.tls, TLS_LEVEL_MAY);
	CHECK_INT(r.port, 25);
	CHECK_INT(r.max_connections, 20);
	CHECK_INT(r.max_rcpt, 100);
}

static void t_reload_replaces_strings(void)
{
	/* keys replace defaults without leaking (ASan's leak check covers this) */
	struct config c;
	load_ok(&c, "[mxsend]\nhelo = one.example\nca_file = /x\n[redis]\njobs = j\nresults = r\ngroup = g\n"
		    "url = redis://h:1/2\npassword = p\nusername = mxq\n");
	CHECK_STR(c.helo, "one.example");
	CHECK_STR(c.ca_file, "/x");
	CHECK_STR(c.jobs, "j");
	CHECK_STR(c.results, "r");
	CHECK_STR(c.group, "g");
	CHECK_STR(c.redis_url, "redis://h:1/2");
	CHECK_STR(c.redis_password, "p");
	CHECK_STR(c.redis_username, "mxq"); /* an ACL user: AUTH mxq p */
	config_fini(&c);
	load_err("[redis]\nusername = a b\n", "2: bad value \"a b\" for username (an ACL user name)");
}

static void t_many_rules(void)
{
	size_t cap = 200 * 64, n = 0;
	char *text = malloc(cap);
	struct config c;
	CHECK(text != NULL);
	if (text == NULL)
		return;
	for (int i = 0; i < 200; i++)
		n += (size_t)snprintf(text + n, cap - n, "[domain d%d.example]\nport = %d\n", i, 1000 + i);
	load_ok(&c, text);
	CHECK_INT(c.n_domains, 201);
	CHECK_INT(rule_for(&c, "d137.example", NULL).port, 1137);
	CHECK_INT(rule_for(&c, "d137.example", NULL).line, 137 * 2 + 1);
	config_fini(&c);
	free(text);
}

/* sender/mxsend.conf.example sets every key to its default: keep the two in step.
 * tests/run.sh runs us from the repository root. */
static void t_example_file_is_defaults(void)
{
	struct config c, d;
	char err[512] = "";
	int rc = config_load(&c, "sender/mxsend.conf.example", err, sizeof(err));
	CHECK_INT(rc, 0);
	if (rc != 0) {
		fprintf(stderr, "  %s\n", err);
		config_fini(&c);
		return;
	}
	config_defaults(&d);
	CHECK_INT(c.workers, d.workers);
	CHECK_STR(c.helo, d.helo);
	CHECK(c.dns == NULL && c.metrics == NULL && c.redis_password == NULL);
	CHECK_STR(c.ca_file, d.ca_file);
	CHECK_INT(c.max_inflight, d.max_inflight);
	CHECK_INT(c.max_message_size, d.max_message_size);
	CHECK_INT(c.log_level, d.log_level);
	CHECK_STR(c.redis_url, d.redis_url);
	CHECK_STR(c.jobs, d.jobs);
	CHECK_STR(c.results, d.results);
	CHECK_STR(c.group, d.group);
	CHECK_INT(c.visibility_timeout_ms, d.visibility_timeout_ms);
	CHECK_INT(c.batch, d.batch);
	CHECK_INT(c.max_id_len, d.max_id_len);
	CHECK_INT(c.max_meta_len, d.max_meta_len);
	CHECK_INT(c.n_schedule, d.n_schedule);
	CHECK(memcmp(c.schedule_ms, d.schedule_ms, sizeof(c.schedule_ms)) == 0);
	CHECK_INT(c.lifetime_ms, d.lifetime_ms);
	CHECK(c.jitter == d.jitter);
	CHECK(c.shape_decrease == d.shape_decrease && c.shape_increase == d.shape_increase);
	CHECK_INT(c.shape_hold_ms, d.shape_hold_ms);
	CHECK_INT(c.shape_max_wait_ms, d.shape_max_wait_ms);
	CHECK_INT(c.shape_sync_ms, d.shape_sync_ms);
	CHECK(c.providers_path != NULL); /* sender/providers.conf, beside it */
	CHECK(c.n_providers >= 9 && c.n_responses >= 9);
	CHECK_INT(c.min_version, d.min_version);
	CHECK(c.mta_sts == d.mta_sts && c.tlsrpt == d.tlsrpt);
	CHECK_INT(c.broken_tls_ttl_ms, d.broken_tls_ttl_ms);
	CHECK(memcmp(&c.timeouts, &d.timeouts, sizeof(c.timeouts)) == 0);
	CHECK(c.suppress_check == d.suppress_check);
	CHECK_INT(c.suppress_auto, d.suppress_auto);
	CHECK_INT(c.suppress_auto_ttl_ms, d.suppress_auto_ttl_ms);
	CHECK(c.classes != NULL && bclass_count(c.classes) > 50); /* classes.conf beside it */
	CHECK_INT(c.reuse_time_ms, d.reuse_time_ms);
	CHECK_INT(c.max_handshakes, d.max_handshakes);
	CHECK_INT(c.reuse_max, d.reuse_max);
	CHECK_INT(c.idle_timeout_ms, d.idle_timeout_ms);
	CHECK_INT(c.dane, d.dane);
	CHECK(c.dnssec_trusted == NULL);
	CHECK_INT(c.n_domains, 1);
	CHECK_INT(c.n_mxs, 0);
	struct rule *a = &c.domains[0], *b = &d.domains[0];
	CHECK_STR(a->pattern, "*");
	CHECK_INT(a->set, b->set);
	CHECK_INT(a->tls, b->tls);
	CHECK_INT(a->on_tls_failure, b->on_tls_failure);
	CHECK_INT(a->min_tls, b->min_tls);
	CHECK_INT(a->port, b->port);
	CHECK_INT(a->max_connections, b->max_connections);
	CHECK(a->max_rate == b->max_rate);
	CHECK_INT(a->max_rcpt, b->max_rcpt);
	config_fini(&c);
	config_fini(&d);
}

/* [source NAME], named [pool NAME] egress pools (the unnamed [pool] stays the
 * reuse settings), [domain] pool = NAME; errors with file:line. */
static void t_sources_pools(void)
{
	struct config c;
	load_ok(&c, "[mxsend]\nhelo = main.example\n[pool]\nreuse_max = 7\n"
		    "[source ip1]\naddress = 127.0.0.1\nehlo = out1.example\n"
		    "[source ip6]\naddress = ::1\n"
		    "[pool news]\nsources = ip1:3 ip6\n"
		    "[domain a.example]\npool = news\n");
	CHECK_INT(c.reuse_max, 7);
	CHECK_INT(c.n_sources, 2);
	CHECK_STR(c.sources[0].name, "ip1");
	CHECK_STR(c.sources[0].ehlo, "out1.example");
	CHECK_STR(c.sources[0].label, "ip1[127.0.0.1]");
	CHECK_INT(c.sources[0].sa.ss_family, AF_INET);
	CHECK_STR(c.sources[1].ehlo, "main.example"); /* default: [mxsend] helo */
	CHECK_INT(c.sources[1].sa.ss_family, AF_INET6);
	CHECK_INT(c.n_pools, 1);
	CHECK_INT(c.pools[0].n, 2);
	CHECK_INT(c.pools[0].src[0], 0);
	CHECK_INT(c.pools[0].weight[0], 3);
	CHECK_INT(c.pools[0].weight[1], 1);
	CHECK_INT(config_pool_find(&c, "news"), 0);
	CHECK_INT(config_pool_find(&c, "nope"), -1);
	CHECK_STR(rule_for(&c, "a.example", NULL).pool, "news");
	CHECK(rule_for(&c, "b.example", NULL).pool == NULL);
	config_fini(&c);
	load_err("[source s]\nehlo = x\n", "1: [source s] needs address = IP");
	load_err("[source s]\naddress = 127.0.0.300\n",
		 "2: bad value \"127.0.0.300\" for address (an IPv4 or IPv6 address)");
	load_err("[source s]\naddress = 127.0.0.1\nehlo = a b\n", "3: bad value \"a b\" for ehlo (a single word)");
	load_err("[source s]\naddress = 127.0.0.1\nport = 1\n", "3: unknown key \"port\" in [source s]");
	load_err("[source s]\naddress = 127.0.0.1\naddress = 127.0.0.2\n",
		 "3: duplicate key \"address\" in [source s] (first at line 2)");
	load_err("[source s]\naddress = 127.0.0.1\n[source s]\n", "3: duplicate section [source s] (first at line 1)");
	load_err("[source s:1]\n", "1: bad name in [source s:1] (letters, digits, \"-\", \"_\", \".\"; at most 63)");
	load_err("[source]\n", "1: section [source] needs one name, as in [source ip1]");
	load_err("[source s]\naddress = 192.0.2.1\n", "1: [source s]: cannot bind address 192.0.2.1: "
		 "Cannot assign requested address (is it configured on this host?)");
	load_err("[pool p]\n", "1: [pool p] needs sources = NAME[:WEIGHT] ...");
	load_err("[pool p]\nsources = x\n", "1: [pool p]: unknown source \"x\" (no [source x])");
	load_err("[source s]\naddress = 127.0.0.1\n[pool p]\nsources = s:0\n", "3: [pool p]: bad weight for s (1..1000)");
	load_err("[source s]\naddress = 127.0.0.1\n[pool p]\nsources = s s\n", "3: [pool p]: source s listed twice");
	load_err("[domain a.example]\npool = p\n", "1: unknown pool \"p\" (no [pool p] section)");
}

/* [tlsrpt]: what `mxsend tlsrpt` signs and writes; all unset by default */
static void t_tlsrpt_section(void)
{
	struct config c;
	config_defaults(&c);
	CHECK(c.dkim_key == NULL && c.dkim_selector == NULL && c.dkim_domain == NULL);
	CHECK(c.rpt_from == NULL && c.rpt_submitter == NULL && c.rpt_org == NULL);
	config_fini(&c);
	load_ok(&c, "[tlsrpt]\nfrom = rpt@example.net\nsubmitter = mta.example.net\n"
		    "org = Example Inc.\ncontact = postmaster@example.net\n"
		    "dkim_key = /etc/mxsend/tlsrpt.pem\ndkim_selector = rpt2026\ndkim_domain = example.net\n");
	CHECK_STR(c.rpt_from, "rpt@example.net");
	CHECK_STR(c.rpt_submitter, "mta.example.net");
	CHECK_STR(c.rpt_org, "Example Inc.");
	CHECK_STR(c.rpt_contact, "postmaster@example.net");
	CHECK_STR(c.dkim_key, "/etc/mxsend/tlsrpt.pem");
	CHECK_STR(c.dkim_selector, "rpt2026");
	CHECK_STR(c.dkim_domain, "example.net");
	config_fini(&c);
	load_err("[tlsrpt]\n\ndkim_selector = a b\n",
		 "3: bad value \"a b\" for dkim_selector (a single word)");
	load_err("[tlsrpt]\ndkim = x\n", "2: unknown key \"dkim\" in [tlsrpt]");
}

/* The caps on a job's id and meta, and the validators the command-line
 * flags share with the file (--helo, --dns). */
static void t_job_caps_and_shared_checks(void)
{
	struct config c;
	config_defaults(&c);
	CHECK_INT(c.max_id_len, 1024);
	CHECK_INT(c.max_meta_len, 4096);
	config_fini(&c);
	load_ok(&c, "[redis]\nmax_id_len = 256\nmax_meta_len = 64k\n");
	CHECK_INT(c.max_id_len, 256);
	CHECK_INT(c.max_meta_len, 65536);
	config_fini(&c);
	load_err("[redis]\nmax_id_len = 8\n",
		 "2: bad value \"8\" for max_id_len (size like 256, 1k; 16..1M)");
	load_err("[redis]\nmax_meta_len = 1G\n",
		 "2: bad value \"1G\" for max_meta_len (size like 512, 4k; 16..16M)");
	CHECK_INT(config_check_word("mta1.example.net"), 0);
	CHECK_INT(config_check_word("a\r\nb"), -1);
	CHECK_INT(config_check_word("a b"), -1);
	CHECK_INT(config_check_word("a\x7f"), -1);
	CHECK_INT(config_check_word(""), -1);
	CHECK_INT(config_check_dns("127.0.0.1:5353,[::1]:53,10.0.0.1"), 0);
	CHECK_INT(config_check_dns("127.0.0.1:65535"), 0);
	CHECK_INT(config_check_dns("127.0.0.1:70000"), -1);
	CHECK_INT(config_check_dns("127.0.0.1:0"), -1);
	CHECK_INT(config_check_dns("127.0.0.1:"), -1);
	CHECK_INT(config_check_dns(""), -1);
	load_err("[mxsend]\ndns = 127.0.0.1:70000\n",
		 "2: bad value \"127.0.0.1:70000\" for dns (comma-separated addr, addr:port or [ipv6]:port)");
}

/* [redis] lanes (queue/lane.h): parsed in order; a bad list names its line. */
static void t_lanes(void)
{
	struct config c;
	config_defaults(&c);
	CHECK_INT(c.n_lanes, 0);
	config_fini(&c);
	load_ok(&c, "[redis]\nlanes = transactional:8 bulk:1\n");
	CHECK_INT(c.n_lanes, 2);
	CHECK_STR(c.lanes[0].name, "transactional");
	CHECK_INT(c.lanes[0].weight, 8);
	CHECK_STR(c.lanes[1].name, "bulk");
	config_fini(&c);
	load_err("[redis]\n\nlanes = tx:8 bulk:0\n", "3: lanes: lane \"bulk\": bad weight \"0\" (1..1000)");
	load_err("[redis]\nlanes = tx tx\n", "2: lanes: lane \"tx\" named twice");
	load_err("[redis]\nlanes = a/b\n", "2: lanes: lane \"a/b\": names hold A-Z a-z 0-9 _ - only");
	load_err("[redis]\nlanes = a b c d e f g h i j k l m n o p\n",
		 "2: lanes: too many lanes (at most 16 with default)");
}

/* [classes] and [suppress] (sender/bclass.h, README "Bounce classes",
 * "Suppression"): defaults, the class list of auto, rule files at start-up
 * (a bad rule names its file and line). */
static void t_classes_suppress(void)
{
	struct config c;
	config_defaults(&c);
	CHECK(c.suppress_check);
	CHECK_INT(c.suppress_auto, 1u << BCLASS_INVALID_RECIPIENT);
	CHECK_INT(c.suppress_auto_ttl_ms, 0);
	config_fini(&c);
	load_ok(&c, "[suppress]\ncheck = no\nauto = invalid-recipient  mailbox-full\nauto_expires = 30d\n");
	CHECK(!c.suppress_check);
	CHECK_INT(c.suppress_auto, (1u << BCLASS_INVALID_RECIPIENT) | (1u << BCLASS_MAILBOX_FULL));
	CHECK_INT(c.suppress_auto_ttl_ms, 30ull * 86400 * 1000);
	config_fini(&c);
	load_ok(&c, "[suppress]\nauto = none\n");
	CHECK_INT(c.suppress_auto, 0);
	config_fini(&c);
	load_err("[mxsend]\n\n[suppress]\nauto = invalid-recipient bogus\n",
		 "4: auto: unknown bounce class \"bogus\" (see README \"Bounce classes\", or none)");
	/* rule files: the user's first, then the shipped one (named here: the
	 * test binary is not beside the source tree) */
	char rfile[] = "/tmp/test_config_rules.XXXXXX";
	int fd = mkstemp(rfile);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fputs("mailbox-full 550 5.1.1 acme\n", f);
	fclose(f);
	char text[512], err[512] = "";
	snprintf(text, sizeof(text), "[classes]\nrules = %s\ndefault_rules = sender/classes.conf\n", rfile);
	load_ok(&c, text);
	CHECK(bclass_count(c.classes) > 50);
	CHECK_INT(bclass_classify(c.classes, 550, "5.1.1", "acme: full", BCLASS_O_REPLY), BCLASS_MAILBOX_FULL);
	CHECK_INT(bclass_classify(c.classes, 550, "5.1.1", "no such user", BCLASS_O_REPLY),
		  BCLASS_INVALID_RECIPIENT);
	config_fini(&c);
	f = fopen(rfile, "w");
	fputs("# mine\nslow 4xx *\n", f);
	fclose(f);
	CHECK_INT(load(&c, text, err, sizeof(err)), -1);
	char want[200];
	snprintf(want, sizeof(want), "%s:2: unknown class \"slow\"", rfile);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	config_fini(&c);
	unlink(rfile);
	CHECK_INT(load(&c, text, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: No such file or directory", rfile);
	CHECK_STR(err, want);
	config_fini(&c);
}


/* [dns]: DANE's switch and the resolvers trusted to validate */
static void t_dns_section(void)
{
	struct config c;
	config_defaults(&c);
	CHECK_INT(c.dane, DNS_DNSSEC_AUTO); /* auto: on where a trusted resolver validates */
	config_fini(&c);
	load_ok(&c, "[dns]\ndane = no\ndnssec_trusted = 192.0.2.53 2001:db8::53\n"
		    "[domain d.test]\ntls = dane-only\n");
	CHECK_INT(c.dane, DNS_DNSSEC_NO);
	CHECK_STR(c.dnssec_trusted, "192.0.2.53 2001:db8::53");
	CHECK_INT(rule_for(&c, "d.test", NULL).tls, TLS_LEVEL_DANE_ONLY);
	config_fini(&c);
	load_ok(&c, "[dns]\ndane = yes\n");
	CHECK_INT(c.dane, 2);
	config_fini(&c);
	load_err("[dns]\ndane = maybe\n", "2: bad value \"maybe\" for dane (no|auto|yes)");
	load_err("[domain x.test]\ntls = dane-only\non_tls_failure = plaintext\n",
		 "3: on_tls_failure = plaintext is not allowed with tls = dane-only in [domain x.test] "
		 "(plaintext needs tls = none or may)");
}

/* [redis] prefix names the keys; cluster = yes wants them in one slot. */
static void t_redis_prefix_cluster(void)
{
	struct config c;
	load_ok(&c, "[redis]\n");
	CHECK_STR(c.jobs, "mxsend:jobs");
	CHECK_STR(c.results, "mxsend:results");
	CHECK_STR(c.tlsrpt_prefix, "mxsend:tlsrpt");
	CHECK_STR(c.redis_prefix, "mxsend");
	CHECK(!c.redis_cluster);
	config_fini(&c);
	load_ok(&c, "[redis]\nurl = redis://127.0.0.1:7000\ncluster = yes\nprefix = {mx}\n");
	CHECK_STR(c.jobs, "{mx}:jobs");
	CHECK_STR(c.results, "{mx}:results");
	CHECK_STR(c.tlsrpt_prefix, "{mx}:tlsrpt");
	CHECK(c.redis_cluster);
	config_fini(&c);
	/* named keys win over the prefix; a tag of their own is fine */
	load_ok(&c, "[redis]\ncluster = yes\nprefix = {q1}\njobs = {q1}:bulk\nresults = {q1}:out\n");
	CHECK_STR(c.jobs, "{q1}:bulk");
	CHECK_STR(c.results, "{q1}:out");
	config_fini(&c);
	load_ok(&c, "[redis]\nprefix = x\njobs = a\n"); /* no cluster: anything goes */
	CHECK_STR(c.jobs, "a");
	CHECK_STR(c.results, "x:results");
	config_fini(&c);
	load_err("[redis]\ncluster = yes\n",
		 "1: cluster = yes: [redis] results must share the hash tag of jobs (mxsend:jobs), e.g. "
		 "prefix = {mxsend} and no jobs/results keys, so every key of the queue lives in one slot");
	load_err("\n[redis]\ncluster = yes\nprefix = {a}\nresults = {b}:results\n",
		 "2: cluster = yes: [redis] results must share the hash tag of jobs ({a}:jobs), e.g. "
		 "prefix = {mxsend} and no jobs/results keys, so every key of the queue lives in one slot");
	load_err("[redis]\ncluster = yes\nprefix = {a}\njobs = {a}:j\nresults = {a}:r\n"
		 "url = unix:/tmp/r.sock\n",
		 "1: cluster = yes needs a redis:// or rediss:// HOST:PORT url");
	load_ok(&c, "[redis]\ncluster = yes\nprefix = {a}\ncluster_nodes = 10.0.0.2:7000, [::1]:7001\n");
	CHECK_STR(c.redis_cluster_nodes, "10.0.0.2:7000, [::1]:7001");
	config_fini(&c);
	load_err("[redis]\ncluster = yes\nprefix = {a}\ncluster_nodes = 10.0.0.2\n",
		 "1: cluster_nodes: bad node \"10.0.0.2\": expected HOST:PORT");
	load_err("[redis]\ncluster_nodes = 10.0.0.2:7000\n", "1: cluster_nodes needs cluster = yes");
	load_err("[redis]\ncluster = yes\nprefix = {a}\nsentinels = 127.0.0.1:26379\nmaster_name = m\n",
		 "1: [redis] cluster and sentinels: one or the other");
}

static const struct t_case cases[] = {
	{ "[redis] prefix and cluster: key names, one slot", t_redis_prefix_cluster },
	{ "[classes] and [suppress]", t_classes_suppress },
	{ "[redis] lanes: names, weights, errors with their line", t_lanes },
	{ "dns_section_dane", t_dns_section },
	{ "job caps; helo and dns checks shared with the flags", t_job_caps_and_shared_checks },
	{ "[tlsrpt]: report identity and DKIM key settings; bad values name the line", t_tlsrpt_section },
	{ "[source]/[pool NAME]: egress sources and pools, errors at file:line", t_sources_pools },
	{ "defaults", t_defaults },
	{ "default_helo_is_hostname", t_default_helo_is_hostname },
	{ "fini_is_safe", t_fini_is_safe },
	{ "missing_file", t_missing_file },
	{ "empty_file", t_empty_file },
	{ "design_example", t_design_example },
	{ "err_unknown_key", t_err_unknown_key },
	{ "err_bad_tls", t_err_bad_tls },
	{ "err_unknown_section", t_err_unknown_section },
	{ "err_duplicate_sections", t_err_duplicate_sections },
	{ "err_duplicate_key", t_err_duplicate_key },
	{ "err_syntax", t_err_syntax },
	{ "err_plaintext_with_encrypt", t_err_plaintext_with_encrypt },
	{ "err_ranges", t_err_ranges },
	{ "err_patterns", t_err_patterns },
	{ "err_auth_pairs", t_err_auth_pairs },
	{ "credentials_need_verify", t_credentials_need_verify },
	{ "redis_url_redacted", t_redis_url_redacted },
	{ "redis_tls_keys", t_redis_tls_keys },
	{ "err_long_line", t_err_long_line },
	{ "parse_duration", t_parse_duration },
	{ "parse_size", t_parse_size },
	{ "booleans", t_booleans },
	{ "global_values", t_global_values },
	{ "schedule", t_schedule },
	{ "relay", t_relay },
	{ "comments_and_layout", t_comments_and_layout },
	{ "crlf_and_bom", t_crlf_and_bom },
	{ "empty_rule_section", t_empty_rule_section },
	{ "tls_names", t_tls_names },
	{ "rule_exact_parent_star", t_rule_exact_parent_star },
	{ "rule_longest_parent", t_rule_longest_parent },
	{ "rule_parent_not_itself", t_rule_parent_not_itself },
	{ "rule_mx", t_rule_mx },
	{ "rule_case_and_dot", t_rule_case_and_dot },
	{ "rule_tls_layers", t_rule_tls_layers },
	{ "rule_plaintext_across_layers", t_rule_plaintext_across_layers },
	{ "rule_without_star", t_rule_without_star },
	{ "reload_replaces_strings", t_reload_replaces_strings },
	{ "many_rules", t_many_rules },
	{ "example_file_is_defaults", t_example_file_is_defaults },
};

T_MAIN(cases)
