/* config.c: the INI configuration file, its defaults, and rule lookup.
 *
 * inih tokenises. Debian's libinih (r55) is built without INI_HANDLER_LINENO
 * and does not report sections that have no keys, so we drive it with
 * ini_parse_stream() and our own reader, which: counts physical lines (inih
 * counts one per reader call, so both agree); sees every section header; strips
 * leading whitespace, which disables inih's multi-line continuation (otherwise
 * an indented "key = value" after a key is appended to that key's value); and
 * stops the parse at the first error by returning EOF. inih's runtime options
 * (process globals) keep their defaults: ';' or '#' starts a comment line,
 * " ;" an inline comment, and a line holds at most 197 characters.
 *
 * Ownership: every string in struct config and its rules is owned by the config
 * and freed by config_fini(). c->domains[0] is always "[domain *]" (built in,
 * overlaid by a "[domain *]" section); the other rules follow in file order. A
 * rule's fields mean something only where its `set` bits say so. No globals. */
#include "sender/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "queue/cluster.h"
#include "queue/queue.h"
#include "sender/bclass.h"
#include "sender/config_int.h"
#include "sender/dns.h"
#include "sender/log.h"
#include "sender/signer.h"
#include "sender/util.h"

#define MS_S 1000ull
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)
#define SCHEDULE_MAX ((int)ARRAY_LEN(((struct config *)0)->schedule_ms))

/* NULL-terminated so they double as V_CHOICE lists. */
static const char *const level_names[] = { "none", "may", "encrypt", "verify", "dane-only", NULL };
static const char *const dane_names[] = { "no", "auto", "yes", NULL }; /* enum dns_dnssec */
static const char *const fail_names[] = { "next-mx", "defer", "hold", "bounce", "plaintext", NULL };
static const char *const log_names[] = { "trace", "debug", "info", "warn", "error", NULL };
static const char *const tlsver_names[] = { "1.2", "1.3", NULL };

static int choice(const char *const *names, const char *s)
{
	for (int i = 0; names[i]; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

const char *tls_level_name(enum tls_level l)
{
	return (unsigned)l <= TLS_LEVEL_DANE_ONLY ? level_names[l] : "?";
}

int tls_level_parse(const char *s)
{
	return choice(level_names, s);
}

const char *tls_fail_action_name(enum tls_fail_action a)
{
	return (unsigned)a <= TLS_FAIL_PLAINTEXT ? fail_names[a] : "?";
}

int tls_fail_action_parse(const char *s)
{
	return choice(fail_names, s);
}

/* ---- value parsers (pure) ---- */

static int is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static int is_space(char ch)
{
	return isspace((unsigned char)ch);
}

/* A number as [0-9]*.?[0-9]* followed by text at *end; strtod()'s sign, "inf",
 * hex and leading blanks are refused (mxsend never calls setlocale(), so the
 * decimal point is "."). */
static int number(const char *s, double *v, const char **end)
{
	size_t n = strspn(s, "0123456789.");
	char *e;
	if (n == 0 || !(is_digit(s[0]) || is_digit(s[1])))
		return -1;
	*v = strtod(s, &e);
	*end = e;
	return e == s + n ? 0 : -1; /* "1.2.3" stops early */
}

int config_parse_duration(const char *s, uint64_t *ms)
{
	static const struct { const char *unit; double ms; } units[] = {
		{ "", MS_S }, { "ms", 1 }, { "s", MS_S }, { "m", MS_M }, { "h", MS_H }, { "d", MS_D },
	};
	const char *u;
	double v;
	if (number(s, &v, &u) < 0)
		return -1;
	for (unsigned i = 0; i < ARRAY_LEN(units); i++)
		if (strcmp(u, units[i].unit) == 0 && (v *= units[i].ms) < 1e15) { /* 31000 years */
			*ms = (uint64_t)(v + 0.5); /* "1.001s" is 1000.9999... ms before rounding */
			return 0;
		}
	return -1;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
	static const char units[] = "kmgt";
	const char *u;
	char *end;
	int shift = 0;
	if (!is_digit(*s))
		return -1;
	errno = 0;
	*bytes = strtoull(s, &end, 10);
	if (*end != '\0') {
		if (end[1] != '\0' || (u = strchr(units, *end | 0x20)) == NULL)
			return -1;
		shift = 10 * (int)(1 + (u - units));
	}
	if (errno != 0 || *bytes > UINT64_MAX >> shift)
		return -1;
	*bytes <<= shift;
	return 0;
}

static int parse_long(const char *s, long long *out)
{
	char *end;
	if (!is_digit(s[*s == '-']))
		return -1;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

static int parse_double(const char *s, double *out)
{
	const char *end;
	return number(s, out, &end) < 0 || *end ? -1 : 0;
}

static int host_char(char ch)
{
	return is_digit(ch) || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || ch == '-' || ch == '.' ||
	       ch == '_';
}

/* "host", "host:port", "[v6addr]" or "[v6addr]:port" in s[0..len). Gives the
 * host without brackets in a new string if host_out is not NULL, and *port (0 if
 * absent). An unbracketed IPv6 address is refused: its last group reads as a port. */
static int parse_hostport(const char *s, size_t len, char **host_out, int *port)
{
	const char *h = s, *rest, *end = s + len;
	size_t hlen;
	if (len > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		char a[INET6_ADDRSTRLEN + 1];
		struct in6_addr in6;
		if (close == NULL || (hlen = (size_t)(close - ++h)) >= sizeof(a))
			return -1;
		memcpy(a, h, hlen);
		a[hlen] = '\0';
		if (inet_pton(AF_INET6, a, &in6) != 1)
			return -1;
		rest = close + 1;
	} else {
		for (rest = s; rest < end && *rest != ':'; rest++)
			if (!host_char(*rest))
				return -1;
		hlen = (size_t)(rest - s);
	}
	*port = 0;
	if (hlen == 0)
		return -1;
	if (rest < end) {
		if (*rest++ != ':' || rest == end)
			return -1;
		for (; rest < end; rest++)
			if (!is_digit(*rest) || (*port = *port * 10 + (*rest - '0')) > 65535)
				return -1;
		if (*port == 0)
			return -1;
	}
	if (host_out)
		*host_out = xstrndup(h, hlen);
	return 0;
}

int config_check_word(const char *s)
{
	if (*s == '\0')
		return -1;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return -1;
	return 0;
}

int config_check_dns(const char *v)
{
	int port;
	for (const char *s = v;; s++) {
		size_t len = strcspn(s, ",");
		if (parse_hostport(s, len, NULL, &port) < 0)
			return -1;
		if (*(s += len) == '\0')
			return 0;
	}
}

/* A [domain]/[mx] pattern: "*" (domain only), ".suffix" or an exact name.
 * Returns NULL if good, else why not. */
static const char *check_pattern(const char *s, int is_mx)
{
	if (strcmp(s, "*") == 0)
		return is_mx ? "[mx *] is not a rule; use [domain *] for defaults" : NULL;
	if (s[0] == '*')
		return "write \".example.com\" for every subdomain of example.com";
	const char *p = s + (s[0] == '.'), *label = p;
	if (strlen(p) > 253)
		return "name longer than 253 characters";
	for (;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t n = (size_t)(p - label);
			if (n == 0)
				return *p ? "empty label" : "empty label (write names without a trailing dot)";
			if (n > 63)
				return "label longer than 63 characters";
			if (label[0] == '-' || p[-1] == '-')
				return "label starts or ends with \"-\"";
			if (*p == '\0')
				return NULL;
			label = p + 1;
		} else if ((unsigned char)*p >= 0x80) {
			return "non-ASCII name; write the A-label (xn--...)";
		} else if (!host_char(*p)) {
			return "bad character in name";
		}
	}
}

/* ---- the key tables ---- */

enum vtype { V_INT, V_DOUBLE, V_DUR, V_DUR32, V_SIZE, V_BOOL, V_CHOICE, V_SCHEDULE,
	     V_STR, V_WORD, V_DNS, V_HOSTPORT, V_URL, V_RELAY, V_SENTINELS };

struct key {
	const char *name;
	size_t off;               /* into struct config, or struct rule for rule keys */
	enum vtype type;
	double min, max;          /* numbers, ms, bytes; V_CHOICE stores min + index */
	const char *hint;         /* what a good value looks like, for messages */
	const char *const *names; /* V_CHOICE */
	unsigned bit;             /* RULE_* for rule keys */
};

#define G(f) offsetof(struct config, f)
#define R(f) offsetof(struct rule, f)
#define INT(f, lo, hi) f, V_INT, lo, hi, "integer " #lo ".." #hi, NULL
#define DUR(t, f, lo, hi, r) f, t, (double)(lo), (double)(hi), "duration like 500ms, 30s, 5m, 2h, 2d; " r, NULL
#define TO(f) { #f, DUR(V_DUR32, G(timeouts.f), 1, MS_D, "1ms..1d"), 0 }
#define STR(f, t, hint) f, t, 0, 0, hint, NULL
#define CH(f, names, base, hint) f, V_CHOICE, base, 0, hint, names
#define BOOL(f) f, V_BOOL, 0, 0, "yes|no", NULL
#define WORD "a single word"
static const struct key k_mxsend[] = {
	{ "workers", INT(G(workers), 0, 1024), 0 },
	{ "helo", STR(G(helo), V_WORD, WORD), 0 },
	{ "dns", STR(G(dns), V_DNS, "comma-separated addr, addr:port or [ipv6]:port"), 0 },
	{ "ca_file", STR(G(ca_file), V_STR, ""), 0 },
	{ "max_inflight", INT(G(max_inflight), 1, 10000000), 0 },
	{ "max_inflight_bytes", G(max_inflight_bytes), V_SIZE, 1048576, 1099511627776.0,
	  "size like 64M, 1G; 1M..1T", NULL, 0 },
	{ "metrics", STR(G(metrics), V_HOSTPORT, "host:port or [ipv6]:port"), 0 },
	{ "max_message_size", G(max_message_size), V_SIZE, 1024, 4294967296.0,
	  "size like 1000, 64k, 50M, 1G; 1k..4G", NULL, 0 },
	{ "log", CH(G(log_level), log_names, LOG_TRACE, "trace|debug|info|warn|error"), 0 },
	{ "dkim_require", BOOL(G(dkim_require)), 0 },
	{ "dkim_extra", STR(G(dkim_extra), V_WORD, "the domain of a [dkim DOMAIN] section"), 0 },
};
static const struct key k_redis[] = {
	{ "url", STR(G(redis_url), V_URL, "redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:/PATH"), 0 },
	{ "username", STR(G(redis_username), V_WORD, "an ACL user name"), 0 },
	{ "password", STR(G(redis_password), V_STR, ""), 0 },
	{ "prefix", STR(G(redis_prefix), V_WORD, WORD), 0 },
	{ "cluster", BOOL(G(redis_cluster)), 0 },
	{ "cluster_nodes", STR(G(redis_cluster_nodes), V_STR, "HOST:PORT,HOST:PORT,..."), 0 },
	{ "sentinels", STR(G(redis_sentinels), V_SENTINELS, "HOST:PORT,HOST:PORT... ([IPV6]:PORT)"), 0 },
	{ "master_name", STR(G(redis_master_name), V_WORD, "the master's name at the sentinels"), 0 },
	{ "sentinel_password", STR(G(redis_sentinel_password), V_STR, ""), 0 },
	{ "wait_replicas", INT(G(redis_wait_replicas), 0, 100), 0 },
	{ "wait_timeout", DUR(V_DUR, G(redis_wait_timeout_ms), 1, 10 * MS_S, "1ms..10s"), 0 },
	{ "jobs", STR(G(jobs), V_WORD, WORD), 0 },
	{ "results", STR(G(results), V_WORD, WORD), 0 },
	{ "group", STR(G(group), V_WORD, WORD), 0 },
	{ "visibility_timeout", DUR(V_DUR, G(visibility_timeout_ms), MS_S, MS_D, "1s..1d"), 0 },
	{ "tls_ca", STR(G(redis_tls_ca), V_STR, ""), 0 },
	{ "tls_cert", STR(G(redis_tls_cert), V_STR, ""), 0 },
	{ "tls_key", STR(G(redis_tls_key), V_STR, ""), 0 },
	{ "tls_name", STR(G(redis_tls_name), V_WORD, "a host name or IP address"), 0 },
	{ "batch", INT(G(batch), 1, 10000), 0 },
	{ "results_maxlen", INT(G(results_maxlen), 0, 2000000000), 0 },
	{ "max_id_len", G(max_id_len), V_SIZE, 16, 1048576, "size like 256, 1k; 16..1M", NULL, 0 },
	{ "max_meta_len", G(max_meta_len), V_SIZE, 16, 16777216, "size like 512, 4k; 16..16M", NULL, 0 },
	{ "lanes", STR(G(lanes_s), V_STR, "lane names with weights, as in transactional:8 bulk:1"), 0 },
};
static const struct key k_retry[] = {
	{ "schedule", G(schedule_ms), V_SCHEDULE, (double)MS_S, 30.0 * MS_D,
	  "up to 32 durations like 1m 5m 1h; each 1s..30d", NULL, 0 },
	{ "lifetime", DUR(V_DUR, G(lifetime_ms), MS_M, 365 * MS_D, "1m..365d"), 0 },
	{ "jitter", G(jitter), V_DOUBLE, 0, 1, "number 0..1", NULL, 0 },
};
static const struct key k_tls[] = {
	{ "min_version", CH(G(min_version), tlsver_names, 12, "1.2|1.3"), 0 },
	{ "mta_sts", BOOL(G(mta_sts)), 0 },
	{ "tlsrpt", BOOL(G(tlsrpt)), 0 },
	{ "broken_tls_ttl", DUR(V_DUR, G(broken_tls_ttl_ms), 0, 30 * MS_D, "0..30d"), 0 },
	{ "sts_https_port", INT(G(sts_https_port), 1, 65535), 0 },
	{ "max_handshakes", INT(G(max_handshakes), 0, 100000), 0 },
};
static const struct key k_dns[] = {
	{ "dane", CH(G(dane), dane_names, 0, "no|auto|yes"), 0 },
	{ "dnssec_trusted", STR(G(dnssec_trusted), V_STR, "resolver addresses, space-separated"), 0 },
};
static const struct key k_tlsrpt[] = {
	{ "from", STR(G(rpt_from), V_WORD, "an address like tlsrpt-noreply@example.net"), 0 },
	{ "submitter", STR(G(rpt_submitter), V_WORD, "a host name"), 0 },
	{ "org", STR(G(rpt_org), V_STR, ""), 0 },
	{ "contact", STR(G(rpt_contact), V_STR, ""), 0 },
	{ "dkim_key", STR(G(dkim_key), V_STR, ""), 0 },
	{ "dkim_selector", STR(G(dkim_selector), V_WORD, WORD), 0 },
	{ "dkim_domain", STR(G(dkim_domain), V_WORD, "a domain name"), 0 },
};
static const struct key k_classes[] = {
	{ "rules", STR(G(class_rules), V_STR, "a rule file (the form of classes.conf)"), 0 },
	{ "default_rules", STR(G(class_default_rules), V_STR, "the shipped classes.conf"), 0 },
};
static const struct key k_suppress[] = {
	{ "check", BOOL(G(suppress_check)), 0 },
	{ "auto", STR(G(suppress_auto_s), V_STR, "bounce classes separated by blanks, or none"), 0 },
	{ "auto_expires", DUR(V_DUR, G(suppress_auto_ttl_ms), 0, 3650 * MS_D, "0 (never)..3650d"), 0 },
};
static const struct key k_timeouts[] = {
	TO(connect), TO(banner), TO(helo), TO(starttls), TO(mail), TO(rcpt),
	TO(data), TO(block), TO(dot), TO(rset), TO(quit),
};
static const struct key k_shaping[] = {
	{ "providers", STR(G(providers_file), V_STR, "a file of [provider]/[response] sections, or none"), 0 },
	{ "decrease", G(shape_decrease), V_DOUBLE, 0.1, 0.95, "number 0.1..0.95", NULL, 0 },
	{ "increase", G(shape_increase), V_DOUBLE, 0.0001, 1, "number 0.0001..1", NULL, 0 },
	{ "hold", DUR(V_DUR, G(shape_hold_ms), 100, MS_M, "100ms..1m"), 0 },
	{ "max_wait", DUR(V_DUR, G(shape_max_wait_ms), MS_S, MS_H, "1s..1h"), 0 },
	{ "sync", DUR(V_DUR, G(shape_sync_ms), 100, 10 * MS_S, "100ms..10s"), 0 },
};
static const struct key k_pool[] = {
	{ "reuse_time", DUR(V_DUR, G(reuse_time_ms), 0, MS_D, "0..1d"), 0 },
	{ "reuse_max", INT(G(reuse_max), 0, 1000000), 0 },
	{ "idle_timeout", DUR(V_DUR, G(idle_timeout_ms), 0, MS_D, "0..1d"), 0 },
};
/* Order matters: on_key() knows tls is [0] and on_tls_failure [1]. */
static const struct key k_rule[] = {
	{ "tls", CH(R(tls), level_names, 0, "none|may|encrypt|verify|dane-only"), RULE_TLS },
	{ "on_tls_failure", CH(R(on_tls_failure), fail_names, 0, "next-mx|defer|hold|bounce|plaintext"),
	  RULE_ON_TLS_FAILURE },
	{ "min_tls", CH(R(min_tls), tlsver_names, 12, "1.2|1.3"), RULE_MIN_TLS },
	{ "port", INT(R(port), 1, 65535), RULE_PORT },
	{ "relay", STR(R(relay_host), V_RELAY, "host, host:port or [ipv6]:port"), RULE_RELAY },
	{ "max_connections", INT(R(max_connections), 1, 100000), RULE_MAX_CONN },
	{ "max_connections_total", INT(R(max_connections_total), 1, 1000000), RULE_MAX_CONN_TOTAL },
	{ "max_rate", R(max_rate), V_DOUBLE, 0, 1e6, "number 0..1000000", NULL, RULE_MAX_RATE },
	{ "max_rcpt", INT(R(max_rcpt), 1, 100000), RULE_MAX_RCPT },
	{ "auth_user", STR(R(auth_user), V_STR, ""), RULE_AUTH },
	{ "auth_password", STR(R(auth_password), V_STR, ""), RULE_AUTH },
	{ "auth_insecure", BOOL(R(auth_insecure)), RULE_AUTH_INSECURE },
	{ "pool", STR(R(pool), V_WORD, "the name of a [pool NAME] section"), RULE_POOL },
};
#define D(f) offsetof(struct dkim_conf, f)
static const char *const canon_names[] = { "relaxed", "simple", "relaxed/relaxed", "simple/simple", NULL };
/* Order matters: end_dkim() knows key is [0]. */
static const struct key k_dkim[] = {
	{ "key", STR(D(key_file), V_STR, "a PEM private key file"), 0 },
	{ "selector", STR(D(selector), V_WORD, WORD), 0 },
	{ "headers", STR(D(headers_s), V_STR, "header names separated by ':'"), 0 },
	{ "oversign", STR(D(oversign_s), V_STR, "header names separated by ':', or no"), 0 },
	{ "canon", CH(D(canon), canon_names, 0, "relaxed|simple"), 0 },
	{ "subdomains", BOOL(D(subdomains)), 0 },
};
#undef D
#undef INT
#undef DUR
#undef TO
#undef STR
#undef CH
#undef BOOL
#undef WORD

static const struct section {
	const char *name;
	const struct key *keys;
	size_t n;
} sections[] = {
	{ "mxsend", k_mxsend, ARRAY_LEN(k_mxsend) }, { "redis", k_redis, ARRAY_LEN(k_redis) },
	{ "retry", k_retry, ARRAY_LEN(k_retry) },    { "tls", k_tls, ARRAY_LEN(k_tls) },
	{ "timeouts", k_timeouts, ARRAY_LEN(k_timeouts) }, { "pool", k_pool, ARRAY_LEN(k_pool) },
	{ "tlsrpt", k_tlsrpt, ARRAY_LEN(k_tlsrpt) }, { "shaping", k_shaping, ARRAY_LEN(k_shaping) },
	{ "dns", k_dns, ARRAY_LEN(k_dns) },
	{ "classes", k_classes, ARRAY_LEN(k_classes) }, { "suppress", k_suppress, ARRAY_LEN(k_suppress) },
};
#define MAX_KEYS 32 /* >= the longest table above */

static const struct rule default_star = {
	.pattern = "*",
	.set = RULE_TLS | RULE_ON_TLS_FAILURE | RULE_MIN_TLS | RULE_PORT | RULE_MAX_CONN |
	       RULE_MAX_RATE | RULE_MAX_RCPT,
	.tls = TLS_LEVEL_MAY,
	.on_tls_failure = TLS_FAIL_PLAINTEXT,
	.min_tls = 12,
	.port = 25,
	.max_connections = 20,
	.max_rcpt = 100,
};

/* ---- defaults and teardown ---- */

void config_defaults(struct config *c)
{
	static const uint64_t schedule[] = { 1 * MS_M, 5 * MS_M, 15 * MS_M, 30 * MS_M, 1 * MS_H, 2 * MS_H };
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) == -1 || host[0] == '\0')
		strlcpy_x(host, "localhost", sizeof(host));
	*c = (struct config){
		.max_inflight = 20000, .max_inflight_bytes = 1ull << 30, .max_message_size = 50ull << 20, .log_level = LOG_WARN,
		.visibility_timeout_ms = 5 * MS_M, .batch = 256, .max_id_len = 1024, .max_meta_len = 4096,
		.n_schedule = (int)ARRAY_LEN(schedule), .lifetime_ms = 2 * MS_D, .jitter = 0.1,
		.min_version = 12, .mta_sts = true, .tlsrpt = true, .broken_tls_ttl_ms = 1 * MS_H, .sts_https_port = 443,
		.max_handshakes = 128, .dane = DNS_DNSSEC_AUTO,
		.suppress_check = true, .suppress_auto = 1u << BCLASS_INVALID_RECIPIENT,
		.timeouts = { .connect = 10 * MS_S, .banner = 5 * MS_M, .helo = 5 * MS_M,
			      .starttls = 2 * MS_M, .mail = 5 * MS_M, .rcpt = 5 * MS_M,
			      .data = 2 * MS_M, .block = 3 * MS_M, .dot = 10 * MS_M,
			      .rset = 2 * MS_M, .quit = 1 * MS_M },
		.reuse_time_ms = 5 * MS_M, .reuse_max = 0, .idle_timeout_ms = 30 * MS_S,
		.shape_decrease = 0.8, .shape_increase = 0.01, .shape_hold_ms = 2 * MS_S,
		.shape_max_wait_ms = 30 * MS_S, .shape_sync_ms = 1 * MS_S,
		.redis_wait_timeout_ms = 1 * MS_S,
	};
	memcpy(c->schedule_ms, schedule, sizeof(schedule));
	c->helo = xstrdup(host);
	c->ca_file = xstrdup(""); /* the system store (tlscache: its hashed directory) */
	c->redis_url = xstrdup("redis://127.0.0.1:6379/0");
	c->redis_prefix = xstrdup("mxsend");
	c->jobs = xstrdup("mxsend:jobs");
	c->results = xstrdup("mxsend:results");
	c->tlsrpt_prefix = xstrdup("mxsend:tlsrpt");
	c->group = xstrdup("mxsend");
	c->domains = xcalloc(1, sizeof(struct rule));
	c->domains[0] = default_star;
	c->domains[0].pattern = xstrdup("*");
	c->n_domains = 1;
}

static void free_secret(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

static void rules_free(struct rule *r, int n)
{
	for (int i = 0; i < n; i++) {
		free(r[i].pattern);
		free(r[i].relay_host);
		free(r[i].auth_user);
		free_secret(r[i].auth_password);
		free(r[i].pool);
	}
	free(r);
}

void config_fini(struct config *c)
{
	free(c->path);
	free(c->helo);
	free(c->dns);
	free(c->dnssec_trusted);
	free(c->ca_file);
	free(c->metrics);
	free(c->redis_url);
	free(c->redis_username);
	free_secret(c->redis_password);
	free(c->redis_prefix);
	free(c->redis_cluster_nodes);
	free(c->tlsrpt_prefix);
	free(c->redis_sentinels);
	free(c->redis_master_name);
	free_secret(c->redis_sentinel_password);
	free(c->jobs);
	free(c->results);
	free(c->group);
	free(c->redis_tls_ca);
	free(c->redis_tls_cert);
	free(c->redis_tls_key);
	free(c->redis_tls_name);
	free(c->rpt_from);
	free(c->rpt_submitter);
	free(c->rpt_org);
	free(c->rpt_contact);
	free(c->dkim_key);
	free(c->dkim_selector);
	free(c->dkim_domain);
	rules_free(c->domains, c->n_domains);
	rules_free(c->mxs, c->n_mxs);
	free(c->dkim_extra);
	for (int i = 0; i < c->n_dkims; i++)
		signer_conf_fini(&c->dkims[i]);
	free(c->dkims);
	for (int i = 0; i < c->n_sources; i++) {
		free(c->sources[i].name);
		free(c->sources[i].address);
		free(c->sources[i].ehlo);
	}
	free(c->sources);
	for (int i = 0; i < c->n_pools; i++) {
		free(c->pools[i].name);
		free(c->pools[i].spec);
		free(c->pools[i].src);
		free(c->pools[i].weight);
	}
	free(c->pools);
	free(c->class_rules);
	free(c->class_default_rules);
	bclass_free(c->classes);
	free(c->suppress_auto_s);
	free(c->lanes_s);
	config_shape_fini(c);
	memset(c, 0, sizeof(*c));
}

/* ---- the parser ---- */

enum sec_kind { SEC_NONE, SEC_GLOBAL, SEC_DOMAIN, SEC_MX, SEC_DKIM, SEC_SOURCE, SEC_EPOOL, SEC_SHAPE };

struct parse {
	struct config *c;
	FILE *f;
	char *err;
	size_t errlen;
	int line;                  /* physical line last handed to inih */
	int failed;
	enum sec_kind kind;
	const struct section *sec; /* SEC_GLOBAL */
	int rule;                  /* SEC_DOMAIN, SEC_MX: index into domains or mxs */
	int sec_line;
	char sec_name[560];        /* "[domain example.com]", for messages */
	int seen[MAX_KEYS];        /* line where each key of this section was set */
	int global_line[ARRAY_LEN(sections)];
	int star_line;
	const char *file;          /* the file being read (messages): c->path or c->providers_path */
	bool in_providers;         /* the providers file: [provider]/[response] sections only */
	bool shape_provider;       /* SEC_SHAPE: [provider] (else [response]) */
	bool shape_skip;           /* SEC_SHAPE: overridden by the main file, keys ignored */
	int shape_idx;
};
/* seen[] holds a line per key of the longest global section */
_Static_assert(ARRAY_LEN(k_redis) <= MAX_KEYS, "MAX_KEYS is shorter than [redis]'s keys");
_Static_assert(ARRAY_LEN(k_mxsend) <= MAX_KEYS, "MAX_KEYS is shorter than [mxsend]'s keys");

static void vfail_at(struct parse *p, int line, const char *fmt, va_list ap)
{
	if (p->failed++ || p->err == NULL || p->errlen == 0)
		return; /* keep the first error only */
	int n = snprintf(p->err, p->errlen, "%s:%d: ", p->file ? p->file : p->c->path, line);
	if (n >= 0 && (size_t)n < p->errlen)
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
}

__attribute__((format(printf, 3, 4))) static void fail_at(struct parse *p, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail_at(p, line, fmt, ap);
	va_end(ap);
}

/* An error on the current line. */
__attribute__((format(printf, 2, 3))) static void fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail_at(p, p->line, fmt, ap);
	va_end(ap);
}

static struct rule *cur_rule(struct parse *p)
{
	if (p->kind == SEC_DOMAIN)
		return &p->c->domains[p->rule];
	return p->kind == SEC_MX ? &p->c->mxs[p->rule] : NULL;
}

static int bad_value(struct parse *p, const struct key *k, const char *v)
{
	char url[512];
	if (k->type == V_URL) /* a password in the URL is never shown */
		v = queue_url_redact(v, url, sizeof(url));
	fail(p, "bad value \"%s\" for %s (%s)", v, k->name, k->hint);
	return -1;
}

static int get_ms(const struct key *k, const char *s, uint64_t *ms)
{
	return config_parse_duration(s, ms) == 0 && *ms >= k->min && *ms <= k->max ? 0 : -1;
}

static int set_schedule(struct parse *p, const struct key *k, const char *v)
{
	uint64_t steps[SCHEDULE_MAX];
	char tok[64];
	int n = 0;
	for (const char *s = v + strspn(v, " \t,"); *s; s += strspn(s, " \t,")) {
		size_t len = strcspn(s, " \t,");
		if (n == SCHEDULE_MAX) {
			fail(p, "too many steps in schedule (at most %d)", SCHEDULE_MAX);
			return -1;
		}
		if (len >= sizeof(tok))
			return bad_value(p, k, v);
		memcpy(tok, s, len);
		tok[len] = '\0';
		if (get_ms(k, tok, &steps[n++]) < 0)
			return bad_value(p, k, v);
		s += len;
	}
	if (n == 0)
		return bad_value(p, k, v);
	memcpy(p->c->schedule_ms, steps, (size_t)n * sizeof(steps[0]));
	p->c->n_schedule = n;
	return 0;
}

/* Store value v of key k into base (struct config or struct rule). */
static int set_value(struct parse *p, const struct key *k, char *base, const char *v)
{
	void *dst = base + k->off;
	long long i;
	double d;
	uint64_t u;
	int x;
	switch (k->type) {
	case V_INT:
		if (parse_long(v, &i) < 0 || i < k->min || i > k->max)
			return bad_value(p, k, v);
		*(int *)dst = (int)i;
		return 0;
	case V_DOUBLE:
		if (parse_double(v, &d) < 0 || d < k->min || d > k->max)
			return bad_value(p, k, v);
		*(double *)dst = d;
		return 0;
	case V_DUR:
	case V_DUR32:
		if (get_ms(k, v, &u) < 0)
			return bad_value(p, k, v);
		if (k->type == V_DUR)
			*(uint64_t *)dst = u;
		else
			*(uint32_t *)dst = (uint32_t)u; /* at most 1d */
		return 0;
	case V_SIZE:
		if (config_parse_size(v, &u) < 0 || u < k->min || u > k->max)
			return bad_value(p, k, v);
		*(uint64_t *)dst = u;
		return 0;
	case V_BOOL:
		if ((x = choice((const char *const[]){ "no", "yes", "false", "true", "0", "1", "off", "on", NULL }, v)) < 0)
			return bad_value(p, k, v);
		*(bool *)dst = x & 1;
		return 0;
	case V_CHOICE: /* int and our enums (int-sized, non-negative) alike */
		if ((x = choice(k->names, v)) < 0)
			return bad_value(p, k, v);
		*(int *)dst = (int)k->min + x;
		return 0;
	case V_SCHEDULE:
		return set_schedule(p, k, v);
	case V_RELAY: {
		struct rule *r = (struct rule *)(void *)base;
		char *host;
		if (parse_hostport(v, strlen(v), &host, &x) < 0)
			return bad_value(p, k, v);
		free(r->relay_host);
		r->relay_host = host;
		r->relay_port = x ? x : 25;
		return 0;
	}
	case V_HOSTPORT:
		if (parse_hostport(v, strlen(v), NULL, &x) < 0 || x == 0)
			return bad_value(p, k, v);
		break;
	case V_DNS:
		if (config_check_dns(v) < 0)
			return bad_value(p, k, v);
		break;
	case V_URL:
		if (!((strncmp(v, "redis://", 8) == 0 && v[8]) || (strncmp(v, "rediss://", 9) == 0 && v[9]) ||
		      (strncmp(v, "unix:", 5) == 0 && v[5])))
			return bad_value(p, k, v);
		break;
	case V_WORD:
		if (config_check_word(v) < 0)
			return bad_value(p, k, v);
		break;
	case V_SENTINELS: {
		struct queue_hostport hp[QUEUE_SENTINELS_MAX];
		char why[300];
		if (queue_sentinels_parse(v, hp, QUEUE_SENTINELS_MAX, why, sizeof(why)) < 0) {
			fail(p, "%s in %s", why, k->name);
			return -1;
		}
		break;
	}
	case V_STR:
		break;
	}
	free(*(char **)dst);
	*(char **)dst = xstrdup(v);
	return 0;
}

/* Checks on a whole rule section: run when the next section starts, or at EOF. */
/* A [dkim DOMAIN] section is complete: its lists and its key (signer.h); an
 * error at the key line when the key file is at fault, else at the header. */
static void end_dkim(struct parse *p)
{
	char e[400];
	bool key_err = false;
	if (signer_conf_finish(&p->c->dkims[p->rule], &key_err, e, sizeof(e)) != 0)
		fail_at(p, key_err && p->seen[0] ? p->seen[0] : p->sec_line, "%s in %s", e, p->sec_name);
}

static void end_section(struct parse *p)
{
	if (p->kind == SEC_SHAPE) {
		char why[400];
		if (!p->failed && !p->shape_skip &&
		    config_shape_end(p->c, p->shape_provider, p->shape_idx, why, sizeof(why)) != 0)
			fail_at(p, p->sec_line, "%s", why);
		return;
	}
	if (p->kind == SEC_DKIM) {
		if (!p->failed)
			end_dkim(p);
		return;
	}
	struct rule *r = cur_rule(p);
	if (r == NULL)
		return;
	if ((r->auth_user == NULL) != (r->auth_password == NULL))
		fail_at(p, p->sec_line, "%s sets %s without %s", p->sec_name,
			r->auth_user ? "auth_user" : "auth_password",
			r->auth_user ? "auth_password" : "auth_user");
	/* "[domain *] tls = verify" keeps the built-in on_tls_failure = plaintext,
	 * which that level forbids: make it defer, as config_rule_for() would. */
	if (r->tls >= TLS_LEVEL_ENCRYPT && r->on_tls_failure == TLS_FAIL_PLAINTEXT)
		r->on_tls_failure = TLS_FAIL_DEFER;
}

static void begin_rule(struct parse *p, int is_mx, const char *pat)
{
	struct config *c = p->c;
	struct rule **arr = is_mx ? &c->mxs : &c->domains;
	int *n = is_mx ? &c->n_mxs : &c->n_domains, first = 0;
	const char *why = check_pattern(pat, is_mx);
	if (why) {
		fail(p, "bad pattern in %s: %s", p->sec_name, why);
		return;
	}
	if (!is_mx && strcmp(pat, "*") == 0) {
		first = p->star_line;
		p->star_line = p->line;
		p->rule = 0; /* overlay the built-in rule */
	} else {
		for (int i = 0; i < *n && !first; i++)
			if (strcasecmp((*arr)[i].pattern, pat) == 0)
				first = (*arr)[i].line;
		if (!first) {
			*arr = xrealloc(*arr, (size_t)(*n + 1) * sizeof(struct rule));
			memset(&(*arr)[*n], 0, sizeof(struct rule));
			(*arr)[*n].pattern = xstrdup(pat);
			p->rule = (*n)++;
		}
	}
	if (first)
		fail(p, "duplicate section %s (first at line %d)", p->sec_name, first);
	else
		(*arr)[p->rule].line = p->line;
}

/* ---- egress sources and pools ---- */

/* A source or pool name: letters, digits, "-", "_", "." (no ":" nor blank). */
static bool egress_name_ok(const char *s)
{
	if (*s == '\0' || strlen(s) > 63)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
			return false;
	return true;
}

static void begin_egress(struct parse *p, bool is_source, const char *name)
{
	struct config *c = p->c;
	if (!egress_name_ok(name)) {
		fail(p, "bad name in %s (letters, digits, \"-\", \"_\", \".\"; at most 63)", p->sec_name);
		return;
	}
	int n = is_source ? c->n_sources : c->n_pools;
	for (int i = 0; i < n; i++) {
		const char *nm = is_source ? c->sources[i].name : c->pools[i].name;
		if (strcmp(nm, name) == 0) {
			fail(p, "duplicate section %s (first at line %d)", p->sec_name,
			     is_source ? c->sources[i].line : c->pools[i].line);
			return;
		}
	}
	if (is_source) {
		c->sources = xrealloc(c->sources, (size_t)(n + 1) * sizeof(*c->sources));
		memset(&c->sources[n], 0, sizeof(c->sources[n]));
		c->sources[n].name = xstrdup(name);
		c->sources[n].line = p->line;
		c->n_sources++;
		p->kind = SEC_SOURCE;
	} else {
		c->pools = xrealloc(c->pools, (size_t)(n + 1) * sizeof(*c->pools));
		memset(&c->pools[n], 0, sizeof(c->pools[n]));
		c->pools[n].name = xstrdup(name);
		c->pools[n].line = p->line;
		c->n_pools++;
		p->kind = SEC_EPOOL;
	}
}

/* A key of [source NAME] (address, ehlo) or [pool NAME] (sources). */
static void egress_key(struct parse *p, const char *name, const char *v)
{
	struct config *c = p->c;
	int k = -1;
	if (p->kind == SEC_SOURCE) {
		struct source *s = &c->sources[c->n_sources - 1];
		if (strcmp(name, "address") == 0) {
			k = 0;
			struct sockaddr_in *s4 = (void *)&s->sa;
			struct sockaddr_in6 *s6 = (void *)&s->sa;
			memset(&s->sa, 0, sizeof(s->sa));
			if (inet_pton(AF_INET, v, &s4->sin_addr) == 1) {
				s4->sin_family = AF_INET;
				s->salen = sizeof(*s4);
			} else if (inet_pton(AF_INET6, v, &s6->sin6_addr) == 1) {
				s6->sin6_family = AF_INET6;
				s->salen = sizeof(*s6);
			} else {
				fail(p, "bad value \"%s\" for address (an IPv4 or IPv6 address)", v);
				return;
			}
			if (p->seen[0] == 0) {
				s->address = xstrdup(v);
				snprintf(s->label, sizeof(s->label), "%s[%s]", s->name, v);
			}
		} else if (strcmp(name, "ehlo") == 0) {
			k = 1;
			if (config_check_word(v) < 0) {
				fail(p, "bad value \"%s\" for ehlo (a single word)", v);
				return;
			}
			if (p->seen[1] == 0)
				s->ehlo = xstrdup(v);
		} else if (strcmp(name, "warmup") == 0) {
			k = 2;
			if (config_shape_warmup(v, s->warmup, &s->n_warmup) != 0) {
				fail(p, "bad value \"%s\" for warmup (messages per day per provider, by day "
					"since first use: up to 32 integers 1..100000000, as in 200 500 1000)", v);
				return;
			}
		}
	} else if (strcmp(name, "sources") == 0) {
		k = 0;
		if (p->seen[0] == 0)
			c->pools[c->n_pools - 1].spec = xstrdup(v);
	}
	if (k < 0)
		fail(p, "unknown key \"%s\" in %s", name, p->sec_name);
	else if (p->seen[k])
		fail(p, "duplicate key \"%s\" in %s (first at line %d)", name, p->sec_name, p->seen[k]);
	else
		p->seen[k] = p->line;
}

int config_pool_find(const struct config *c, const char *name)
{
	for (int i = 0; i < c->n_pools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return i;
	return -1;
}

/* After the file: every source has an address the host can bind (a test
 * socket, port 0) and an EHLO name; every pool names known sources with
 * weights 1..1000; every rule's pool exists. */
static void check_egress(struct parse *p)
{
	struct config *c = p->c;
	for (int i = 0; i < c->n_sources && !p->failed; i++) {
		struct source *s = &c->sources[i];
		if (s->address == NULL) {
			fail_at(p, s->line, "[source %s] needs address = IP", s->name);
			return;
		}
		if (s->ehlo == NULL)
			s->ehlo = xstrdup(c->helo ? c->helo : "localhost");
		int fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int e = fd < 0 ? errno : 0;
		if (fd >= 0 && bind(fd, (struct sockaddr *)&s->sa, s->salen) != 0)
			e = errno;
		if (fd >= 0)
			close(fd);
		if (e != 0)
			fail_at(p, s->line, "[source %s]: cannot bind address %s: %s (is it configured "
				"on this host?)", s->name, s->address, strerror(e));
	}
	for (int i = 0; i < c->n_pools && !p->failed; i++) {
		struct egress_pool *ep = &c->pools[i];
		if (ep->spec == NULL) {
			fail_at(p, ep->line, "[pool %s] needs sources = NAME[:WEIGHT] ...", ep->name);
			return;
		}
		for (const char *q = ep->spec + strspn(ep->spec, " \t,"); *q && !p->failed;
		     q += strspn(q, " \t,")) {
			size_t len = strcspn(q, " \t,");
			char tok[96], *colon;
			long w = 1;
			snprintf(tok, sizeof(tok), "%.*s", (int)(len < 95 ? len : 95), q);
			q += len;
			if ((colon = strchr(tok, ':')) != NULL) {
				char *end;
				*colon = '\0';
				w = strtol(colon + 1, &end, 10);
				if (*end != '\0' || end == colon + 1 || w < 1 || w > 1000) {
					fail_at(p, ep->line, "[pool %s]: bad weight for %s (1..1000)", ep->name, tok);
					return;
				}
			}
			int si = -1;
			for (int k = 0; k < c->n_sources; k++)
				if (strcmp(c->sources[k].name, tok) == 0)
					si = k;
			if (si < 0) {
				fail_at(p, ep->line, "[pool %s]: unknown source \"%s\" (no [source %s])", ep->name,
					tok, tok);
				return;
			}
			for (int k = 0; k < ep->n; k++)
				if (ep->src[k] == si) {
					fail_at(p, ep->line, "[pool %s]: source %s listed twice", ep->name, tok);
					return;
				}
			ep->src = xrealloc(ep->src, (size_t)(ep->n + 1) * sizeof(int));
			ep->weight = xrealloc(ep->weight, (size_t)(ep->n + 1) * sizeof(int));
			ep->src[ep->n] = si;
			ep->weight[ep->n++] = (int)w;
		}
		if (!p->failed && ep->n == 0)
			fail_at(p, ep->line, "[pool %s] needs sources = NAME[:WEIGHT] ...", ep->name);
	}
	for (int k = 0; k < c->n_domains + c->n_mxs && !p->failed; k++) {
		const struct rule *r = k < c->n_domains ? &c->domains[k] : &c->mxs[k - c->n_domains];
		if ((r->set & RULE_POOL) && config_pool_find(c, r->pool) < 0)
			fail_at(p, r->line, "unknown pool \"%s\" (no [pool %s] section)", r->pool, r->pool);
	}
}

/* "[kind]" or "[kind name]": inner is what stands between the brackets. */
static void begin_section(struct parse *p, const char *inner, size_t len)
{
	char buf[272], kind[272], arg[272], extra[2];
	int n;
	end_section(p);
	p->kind = SEC_NONE;
	p->sec_line = p->line;
	memset(p->seen, 0, sizeof(p->seen));
	if (p->failed)
		return;
	if (len >= sizeof(buf)) {
		fail(p, "section header too long");
		return;
	}
	memcpy(buf, inner, len);
	buf[len] = '\0';
	if ((n = sscanf(buf, "%271s %271s %1s", kind, arg, extra)) < 1) {
		fail(p, "empty section header");
		return;
	}
	snprintf(p->sec_name, sizeof(p->sec_name), n > 1 ? "[%s %s]" : "[%s]", kind, n > 1 ? arg : "");
	if (strcmp(kind, "provider") == 0 || strcmp(kind, "response") == 0) {
		char why[400];
		p->shape_provider = kind[0] == 'p';
		p->shape_idx = n > 2 ? -1
				     : config_shape_begin(p->c, kind, n == 2 ? arg : NULL, p->file, p->line,
							  p->in_providers, &p->shape_skip, why, sizeof(why));
		if (n > 2)
			fail(p, "section [%s] takes one name", kind);
		else if (p->shape_idx < 0)
			fail(p, "%s", why);
		else
			p->kind = SEC_SHAPE;
		return;
	}
	if (p->in_providers) {
		fail(p, "the providers file holds [provider NAME] and [response NAME] sections only, "
			"not %s", p->sec_name);
		return;
	}
	if (strcmp(kind, "dkim") == 0) {
		const char *why = n == 2 ? check_pattern(arg, 1) : "one domain name";
		if (why == NULL && arg[0] == '.')
			why = "a domain name (subdomains = yes covers subdomains)";
		if (why) {
			fail(p, "bad section %s: %s, as in [dkim example.com]", p->sec_name, why);
			return;
		}
		for (int i = 0; i < p->c->n_dkims; i++)
			if (strcasecmp(p->c->dkims[i].domain, arg) == 0) {
				fail(p, "duplicate section %s (first at line %d)", p->sec_name, p->c->dkims[i].line);
				return;
			}
		p->c->dkims = xrealloc(p->c->dkims, (size_t)(p->c->n_dkims + 1) * sizeof(struct dkim_conf));
		struct dkim_conf *d = &p->c->dkims[p->c->n_dkims];
		memset(d, 0, sizeof(*d));
		d->domain = xstrdup(arg);
		for (char *q = d->domain; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		d->line = p->line;
		p->rule = p->c->n_dkims++;
		p->kind = SEC_DKIM;
		return;
	}
	if (strcmp(kind, "domain") == 0 || strcmp(kind, "mx") == 0) {
		if (n != 2) {
			fail(p, "section [%s] needs one name, as in [%s example.com]", kind, kind);
			return;
		}
		p->kind = kind[0] == 'd' ? SEC_DOMAIN : SEC_MX;
		begin_rule(p, p->kind == SEC_MX, arg);
		if (p->failed)
			p->kind = SEC_NONE;
		return;
	}
	if (n == 2 && (strcmp(kind, "source") == 0 || strcmp(kind, "pool") == 0)) {
		begin_egress(p, kind[0] == 's', arg);
		return;
	}
	if (n == 1 && strcmp(kind, "source") == 0) {
		fail(p, "section [source] needs one name, as in [source ip1]");
		return;
	}
	for (unsigned i = 0; i < ARRAY_LEN(sections); i++) {
		if (strcmp(kind, sections[i].name) != 0)
			continue;
		if (n > 1)
			fail(p, "section [%s] takes no name", kind);
		else if (p->global_line[i])
			fail(p, "duplicate section %s (first at line %d)", p->sec_name, p->global_line[i]);
		else {
			p->global_line[i] = p->line;
			p->kind = SEC_GLOBAL;
			p->sec = &sections[i];
		}
		return;
	}
	fail(p, "unknown section %s", p->sec_name);
}

/* inih's find_chars_or_comment(): the first char of set in [s, e), or NULL if an
 * inline comment (";" after whitespace) or the end comes first. */
static const char *find_sep(const char *s, const char *e, const char *set)
{
	for (int was_space = 0; s < e; was_space = is_space(*s++)) {
		if (strchr(set, *s))
			return s;
		if (was_space && *s == ';')
			return NULL;
	}
	return NULL;
}

/* Classify a line as inih will (comment, "[section]", "name = value"), so we see
 * every section header and can name syntax errors. */
static void scan_line(struct parse *p, const char *s)
{
	const char *e = s + strlen(s), *sep, *after;
	if (p->line == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3; /* UTF-8 BOM, which inih skips too */
	while (e > s && is_space(e[-1]))
		e--;
	if (s == e || *s == ';' || *s == '#')
		return;
	if (*s == '[') {
		if ((sep = find_sep(s + 1, e, "]")) == NULL) {
			fail(p, "missing \"]\" in section header");
			return;
		}
		for (after = sep + 1; after < e && is_space(*after); after++)
			;
		if (after < e && *after != ';')
			fail(p, "unexpected text after section header");
		else
			begin_section(p, s + 1, (size_t)(sep - s - 1));
	} else if ((sep = find_sep(s, e, "=:")) == NULL)
		fail(p, "expected \"key = value\" or \"[section]\"");
	else if (sep == s)
		fail(p, "missing key name before \"%c\"", *sep);
}

/* The ini_reader: one physical line per call, leading blanks removed. */
static char *read_line(char *buf, int size, void *arg)
{
	struct parse *p = arg;
	size_t n = 0, cap = size > 3 ? (size_t)size - 3 : 0; /* as inih: '\r', '\n', NUL */
	int ch, any = 0, lead = 1, too_long = 0;
	if (p->failed)
		return NULL; /* stop at the first error */
	while ((ch = getc(p->f)) != EOF) {
		any = 1;
		if (ch == '\n')
			break;
		if (lead && (ch == ' ' || ch == '\t'))
			continue;
		lead = 0;
		if (n < cap)
			buf[n++] = (char)ch;
		else
			too_long = 1;
	}
	if (!any)
		return NULL;
	p->line++;
	buf[n++] = '\n';
	buf[n] = '\0';
	if (too_long)
		fail(p, "line too long (at most %zu characters)", cap);
	else
		scan_line(p, buf);
	return p->failed ? NULL : buf;
}

static void parse_auto(struct parse *p);
static void parse_lanes(struct parse *p);

static int on_key(void *arg, const char *section, const char *name, const char *value)
{
	struct parse *p = arg;
	struct rule *r = cur_rule(p);
	const struct key *keys = k_rule;
	size_t n = ARRAY_LEN(k_rule), i;
	(void)section; /* ours, from read_line(), is complete and never truncated */
	if (p->kind == SEC_NONE) {
		fail(p, "key \"%s\" outside any section", name);
		return 0;
	}
	if (p->kind == SEC_SHAPE) {
		char why[400];
		if (*value == '\0')
			fail(p, "missing value for %s", name);
		else if (!p->shape_skip &&
			 config_shape_key(p->c, p->shape_provider, p->shape_idx, name, value, why,
					  sizeof(why)) != 0)
			fail(p, "%s", why);
		return !p->failed;
	}
	if (p->kind == SEC_SOURCE || p->kind == SEC_EPOOL) {
		if (*value == '\0')
			fail(p, "missing value for %s", name);
		else
			egress_key(p, name, value);
		return !p->failed;
	}
	char *base = r ? (char *)r : (char *)p->c;
	if (p->kind == SEC_GLOBAL) {
		keys = p->sec->keys;
		n = p->sec->n;
	} else if (p->kind == SEC_DKIM) {
		keys = k_dkim;
		n = ARRAY_LEN(k_dkim);
		base = (char *)&p->c->dkims[p->rule];
	}
	for (i = 0; i < n && strcmp(keys[i].name, name) != 0; i++)
		;
	if (i == n)
		fail(p, "unknown key \"%s\" in %s", name, p->sec_name);
	else if (p->seen[i])
		fail(p, "duplicate key \"%s\" in %s (first at line %d)", name, p->sec_name, p->seen[i]);
	else if (*value == '\0')
		fail(p, "missing value for %s", name);
	else if (set_value(p, &keys[i], base, value) == 0) {
		p->seen[i] = p->line;
		if (r)
			r->set |= keys[i].bit;
		if (r && keys[i].off == offsetof(struct rule, auth_user))
			r->auth_line = p->line;
		if (p->kind == SEC_GLOBAL && (keys[i].off == offsetof(struct config, redis_url) ||
					      keys[i].off == offsetof(struct config, redis_sentinels)))
			p->c->redis_named = true;
		if (p->kind == SEC_GLOBAL && keys[i].off == offsetof(struct config, jobs))
			p->c->jobs_named = true;
		if (p->kind == SEC_GLOBAL && keys[i].off == offsetof(struct config, results))
			p->c->results_named = true;
		if (p->kind == SEC_GLOBAL && keys[i].off == offsetof(struct config, suppress_auto_s))
			parse_auto(p);
		if (p->kind == SEC_GLOBAL && keys[i].off == offsetof(struct config, lanes_s))
			parse_lanes(p);
	}
	/* DESIGN "TLS policy": plaintext fallback only below encrypt. Judged on
	 * what this section says; differing layers are settled in config_rule_for(). */
	if (r && !p->failed && p->seen[0] && p->seen[1] && r->tls >= TLS_LEVEL_ENCRYPT &&
	    r->on_tls_failure == TLS_FAIL_PLAINTEXT)
		fail(p, "on_tls_failure = plaintext is not allowed with tls = %s in %s "
			"(plaintext needs tls = none or may)", tls_level_name(r->tls), p->sec_name);
	return !p->failed;
}

static void overlay(struct rule *o, const struct rule *r, bool stricter);

/* [redis] lanes: "NAME[:WEIGHT] ..." (queue_lanes_parse). */
static void parse_lanes(struct parse *p)
{
	char why[200];
	int n = queue_lanes_parse(p->c->lanes_s, p->c->lanes, QUEUE_LANES_MAX, why, sizeof(why));
	if (n < 0) {
		fail(p, "lanes: %s", why);
		return;
	}
	bool dflt = false;
	for (int i = 0; i < n; i++)
		dflt |= strcmp(p->c->lanes[i].name, "default") == 0;
	if (!dflt && n == QUEUE_LANES_MAX) /* `default` is added after them */
		fail(p, "lanes: too many lanes (at most %d with default)", QUEUE_LANES_MAX);
	p->c->n_lanes = n;
}

/* [suppress] auto: "none", or class names (bclass.h) separated by blanks. */
static void parse_auto(struct parse *p)
{
	struct config *c = p->c;
	c->suppress_auto = 0;
	if (strcmp(c->suppress_auto_s, "none") == 0)
		return;
	for (const char *s = c->suppress_auto_s; *s;) {
		size_t n = strcspn(s, " \t");
		char name[32];
		if (n > 0) {
			snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : sizeof(name) - 1), s);
			int k = n < sizeof(name) ? bclass_parse(name) : -1;
			if (k < 0) {
				fail(p, "auto: unknown bounce class \"%s\" (see README \"Bounce classes\", or none)",
				     name);
				return;
			}
			c->suppress_auto |= 1u << k;
		}
		s += n;
		s += strspn(s, " \t");
	}
}

int config_load_classes(struct config *c, char *err, size_t errlen)
{
	char found[4096];
	const char *paths[2] = { c->class_rules, c->class_default_rules };
	if (paths[1] == NULL && bclass_default_path(c->path, found, sizeof(found)) == 0)
		paths[1] = found;
	else if (paths[1] == NULL)
		log_warn("evt=no_class_rules (no classes.conf beside the config, in BINDIR/../share/mxsend "
			 "or /usr/share/mxsend: SMTP replies get bounce class \"other\"; set [classes] "
			 "default_rules)");
	bclass_free(c->classes);
	c->classes = bclass_load(paths, 2, err, errlen);
	return c->classes ? 0 : -1;
}

/* DESIGN "TLS policy": never send AUTH credentials to a peer whose
 * certificate did not verify. For every rule as it applies ([domain *] under
 * it): credentials need a relay (they are for a smarthost, never for a
 * recipient's MX) and tls = verify, unless the operator said auth_insecure =
 * yes (TLS still required: smtp.c never sends AUTH in plaintext). smtp.c checks
 * the verdict again right before AUTH. Named at the line that sets auth_user,
 * else at the section that inherits it. */
static void check_credentials(struct parse *p)
{
	const struct config *c = p->c;
	for (int k = 0; k < c->n_domains + c->n_mxs && !p->failed; k++) {
		bool is_mx = k >= c->n_domains;
		const struct rule *r = is_mx ? &c->mxs[k - c->n_domains] : &c->domains[k];
		struct rule o = c->domains[0];
		if (k > 0)
			overlay(&o, r, is_mx);
		if (o.auth_user == NULL)
			continue;
		int line = r->auth_line ? r->auth_line : r->line;
		const char *kind = is_mx ? "mx" : "domain";
		if (o.relay_host == NULL)
			fail_at(p, line, "auth_user in [%s %s] without relay: credentials are only for a relay "
				"(set relay = host:port)", kind, r->pattern);
		else if (o.tls == TLS_LEVEL_NONE || (o.tls < TLS_LEVEL_VERIFY && !o.auth_insecure))
			fail_at(p, line, "auth_user in [%s %s] with tls = %s: credentials go only to a relay "
				"whose certificate verifies (set tls = verify%s)", kind, r->pattern,
				tls_level_name(o.tls),
				o.tls == TLS_LEVEL_NONE ? "" : ", or auth_insecure = yes to accept any certificate");
	}
}

/* [redis] tls_* keys go with a rediss:// URL (never a silent plaintext
 * connection configured for TLS); a key needs its certificate. */
static void check_redis_tls(struct parse *p)
{
	const struct config *c = p->c;
	bool tls = strncmp(c->redis_url, "rediss://", 9) == 0;
	const char *set = c->redis_tls_ca ? "tls_ca" : c->redis_tls_cert ? "tls_cert"
			: c->redis_tls_key ? "tls_key" : c->redis_tls_name ? "tls_name" : NULL;
	if (!tls && set != NULL)
		fail_at(p, p->global_line[1], "[redis] %s is for TLS: the url must be rediss://", set);
	else if (c->redis_tls_key != NULL && c->redis_tls_cert == NULL)
		fail_at(p, p->global_line[1], "[redis] tls_key without tls_cert (the client certificate)");
}

/* Read one file into p->c (p->file names it). -1: it cannot be opened (err
 * says so); else 0, with p->failed set on a bad line. */
static int parse_file(struct parse *p)
{
	struct stat st;
	if ((p->f = fopen(p->file, "re")) == NULL ||
	    (p->in_providers && (fstat(fileno(p->f), &st) != 0 || !S_ISREG(st.st_mode)))) {
		/* a providers file that is a device or a FIFO might never end */
		if (p->err && p->errlen)
			snprintf(p->err, p->errlen, "%s: %s", p->file,
				 p->f ? "not a regular file" : strerror(errno));
		if (p->f)
			fclose(p->f);
		p->failed++;
		return -1;
	}
	p->line = 0;
	p->kind = SEC_NONE;
	int rc = ini_parse_stream(read_line, p, on_key, p);
	if (ferror(p->f))
		fail(p, "read error");
	fclose(p->f);
	if (rc != 0) /* our reader catches inih's syntax errors first; this is a backstop */
		fail_at(p, rc > 0 ? rc : p->line, "syntax error");
	end_section(p);
	p->kind = SEC_NONE;
	return 0;
}

/* The providers file ([shaping] providers): named, "none", or providers.conf
 * beside the config file when it is there. Then: every response's provider
 * names a provider. */
static void load_providers(struct parse *p)
{
	struct config *c = p->c;
	const char *f = c->providers_file;
	if (f != NULL && strcmp(f, "none") == 0)
		f = NULL;
	else if (f != NULL && f[0] != '/' && strchr(c->path, '/') != NULL) {
		char buf[4096]; /* relative to the config file's directory */
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)(strrchr(c->path, '/') - c->path), c->path, f);
		c->providers_path = xstrdup(buf);
	} else if (f != NULL) {
		c->providers_path = xstrdup(f);
	} else if (c->providers_file == NULL) {
		char buf[4096];
		const char *sl = strrchr(c->path, '/');
		snprintf(buf, sizeof(buf), "%.*s%sproviders.conf", sl ? (int)(sl - c->path) : 0, c->path,
			 sl ? "/" : "");
		if (access(buf, R_OK) == 0)
			c->providers_path = xstrdup(buf);
	}
	if (c->providers_path != NULL) {
		p->file = c->providers_path;
		p->in_providers = true;
		parse_file(p);
		p->file = c->path;
		p->in_providers = false;
	}
	for (int i = 0; i < c->n_responses && !p->failed; i++) {
		const struct shape_response *r = &c->responses[i];
		if (r->provider && config_provider_find(c, r->provider) < 0) {
			p->file = r->file;
			fail_at(p, r->line, "[response %s]: provider = %s names no [provider %s] section",
				r->name, r->provider, r->provider);
			p->file = c->path;
		}
	}
}

static char *key_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = xcalloc(1, la + 1 + lb + 1);
	memcpy(s, a, la);
	s[la] = ':';
	memcpy(s + la + 1, b, lb);
	return s;
}

/* [redis] prefix names the keys not named by jobs/results (README "Redis
 * keys"); in a cluster every key must fall in the queue's slot. */
static void redis_keys(struct parse *p)
{
	struct config *c = p->c;
	if (!c->jobs_named) {
		free(c->jobs);
		c->jobs = key_join(c->redis_prefix, "jobs");
	}
	if (!c->results_named) {
		free(c->results);
		c->results = key_join(c->redis_prefix, "results");
	}
	free(c->tlsrpt_prefix);
	c->tlsrpt_prefix = key_join(c->redis_prefix, "tlsrpt");
	if (!c->redis_cluster) {
		if (c->redis_cluster_nodes != NULL)
			fail_at(p, p->global_line[1], "cluster_nodes needs cluster = yes");
		return;
	}
	char sts[300];
	snprintf(sts, sizeof(sts), "%s:sts:example.com", c->redis_prefix);
	unsigned slot = queue_key_slot(c->jobs, strlen(c->jobs));
	const char *keys[] = { c->results, c->tlsrpt_prefix, sts }, *what[] = { "results", "prefix", "prefix" };
	for (size_t i = 0; i < ARRAY_LEN(keys); i++)
		if (queue_key_slot(keys[i], strlen(keys[i])) != slot) {
			fail_at(p, p->global_line[1],
				"cluster = yes: [redis] %s must share the hash tag of jobs (%s), e.g. "
				"prefix = {mxsend} and no jobs/results keys, so every key of the queue "
				"lives in one slot",
				what[i], c->jobs);
			return;
		}
	if (strncmp(c->redis_url, "unix:", 5) == 0) /* database 0: queue_new checks */
		fail_at(p, p->global_line[1], "cluster = yes needs a redis:// or rediss:// HOST:PORT url");
	struct queue_node nodes[QUEUE_CLUSTER_NODES / 2];
	char why[300];
	if (!p->failed && c->redis_cluster_nodes != NULL &&
	    queue_cluster_nodes(c->redis_cluster_nodes, nodes, QUEUE_CLUSTER_NODES / 2, why, sizeof(why)) < 0)
		fail_at(p, p->global_line[1], "cluster_nodes: %s", why);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct parse p = { .c = c, .err = err, .errlen = errlen };
	config_defaults(c);
	c->path = xstrdup(path);
	p.file = c->path;
	if (err && errlen)
		err[0] = '\0';
	if (parse_file(&p) < 0)
		return -1;
	if (!p.failed)
		load_providers(&p);
	if (!p.failed)
		check_credentials(&p);
	if (!p.failed)
		check_redis_tls(&p);
	if (!p.failed && c->dkim_extra != NULL) {
		int k = 0;
		while (k < c->n_dkims && strcasecmp(c->dkims[k].domain, c->dkim_extra) != 0)
			k++;
		if (k == c->n_dkims)
			fail_at(&p, p.global_line[0], "dkim_extra = %s names no [dkim %s] section",
				c->dkim_extra, c->dkim_extra);
	}
	if (!p.failed)
		check_egress(&p);
	if (!p.failed && (c->redis_sentinels == NULL) != (c->redis_master_name == NULL))
		fail_at(&p, p.global_line[1], "[redis] %s without %s: Sentinel needs both",
			c->redis_sentinels ? "sentinels" : "master_name",
			c->redis_sentinels ? "master_name" : "sentinels");
	if (!p.failed && c->redis_sentinels != NULL && strncmp(c->redis_url, "unix:", 5) == 0)
		fail_at(&p, p.global_line[1], "[redis] sentinels with a unix: url: the sentinels name "
			"a TCP address (the url gives only the database, user and password)");
	if (!p.failed && c->redis_cluster && c->redis_sentinels != NULL)
		fail_at(&p, p.global_line[1], "[redis] cluster and sentinels: one or the other");
	if (!p.failed)
		redis_keys(&p);
	if (!p.failed && config_load_classes(c, err, errlen) != 0)
		return -1;
	return p.failed ? -1 : 0;
}

/* ---- rule lookup ---- */

/* The rule in r[0..n) for name (len bytes): an exact pattern if any, else the
 * longest ".suffix"; "*" is skipped. */
static const struct rule *best_match(const struct rule *r, int n, const char *name, size_t len)
{
	const struct rule *best = NULL;
	size_t best_len = 0;
	for (int i = 0; i < n; i++) {
		const char *pat = r[i].pattern;
		size_t pl = strlen(pat);
		if (pat[0] == '.') {
			if (len > pl && pl > best_len && strncasecmp(name + len - pl, pat, pl) == 0) {
				best = &r[i];
				best_len = pl;
			}
		} else if (pl == len && strncasecmp(pat, name, len) == 0 && strcmp(pat, "*") != 0) {
			return &r[i];
		}
	}
	return best;
}

/* Lay rule r over o. A domain rule replaces the defaults of [domain *] (so one
 * domain may ask for less TLS than the default, e.g. tls = none for a broken
 * peer); an [mx] rule can only make tls/min_tls stricter (stricter = true). */
static void overlay(struct rule *o, const struct rule *r, bool stricter)
{
	if ((r->set & RULE_TLS) && (!stricter || r->tls > o->tls))
		o->tls = r->tls;
	if (r->set & RULE_ON_TLS_FAILURE)
		o->on_tls_failure = r->on_tls_failure;
	if ((r->set & RULE_MIN_TLS) && (!stricter || r->min_tls > o->min_tls))
		o->min_tls = r->min_tls;
	if (r->set & RULE_PORT)
		o->port = r->port;
	if (r->set & RULE_RELAY) {
		o->relay_host = r->relay_host;
		o->relay_port = r->relay_port;
	}
	if (r->set & RULE_MAX_CONN)
		o->max_connections = r->max_connections;
	if (r->set & RULE_MAX_CONN_TOTAL)
		o->max_connections_total = r->max_connections_total;
	if (r->set & RULE_MAX_RATE)
		o->max_rate = r->max_rate;
	if (r->set & RULE_MAX_RCPT)
		o->max_rcpt = r->max_rcpt;
	if (r->set & RULE_AUTH) {
		o->auth_user = r->auth_user;
		o->auth_password = r->auth_password;
	}
	if (r->set & RULE_AUTH_INSECURE)
		o->auth_insecure = r->auth_insecure;
	if (r->set & RULE_POOL)
		o->pool = r->pool;
	o->set |= r->set;
}

bool config_rules_set(const struct config *c, unsigned bits)
{
	for (int i = 0; i < c->n_domains; i++)
		if (c->domains[i].set & bits)
			return true;
	for (int i = 0; i < c->n_mxs; i++)
		if (c->mxs[i].set & bits)
			return true;
	return false;
}

static size_t name_len(const char *s)
{
	size_t n = strlen(s);
	return n > 1 && s[n - 1] == '.' ? n - 1 : n; /* "example.com." is example.com */
}

void config_rule_for(const struct config *c, const char *domain, const char *mx_host,
		     struct rule *out)
{
	const struct rule *star = &default_star, *d = NULL, *m = NULL;
	if (c->n_domains > 0 && strcmp(c->domains[0].pattern, "*") == 0)
		star = &c->domains[0];
	*out = *star;
	if (domain && (d = best_match(c->domains, c->n_domains, domain, name_len(domain))))
		overlay(out, d, false);
	if (mx_host && (m = best_match(c->mxs, c->n_mxs, mx_host, name_len(mx_host))))
		overlay(out, m, true);
	if (out->min_tls < c->min_version) /* [tls] min_version is a floor under every rule */
		out->min_tls = c->min_version;
	/* A stricter tls from one layer with plaintext from another ([domain *]
	 * on_tls_failure = plaintext, [domain x] tls = verify): plaintext is not
	 * allowed at encrypt and above, so the failure action becomes defer. */
	if (out->tls >= TLS_LEVEL_ENCRYPT && out->on_tls_failure == TLS_FAIL_PLAINTEXT)
		out->on_tls_failure = TLS_FAIL_DEFER;
	out->pattern = d ? d->pattern : star->pattern;
	out->line = d ? d->line : star->line;
}
