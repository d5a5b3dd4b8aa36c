/* config.h: the INI configuration (inih), defaults, and rule lookup.
 *
 * Sections: [mxsend] [redis] [retry] [tls] [timeouts] [pool] (connection
 * reuse), egress [source NAME] and [pool NAME] (struct source, egress_pool), and rule sections
 * [domain NAME] (NAME exact, ".parent" for every subdomain of parent, "*"
 * default) and [mx PATTERN] (exact host or ".suffix"). Unknown sections/keys and
 * bad values are errors naming file:line. Durations accept "500ms", "30s",
 * "5m", "2h", "2d" or a plain number of seconds (decimals allowed). */
#ifndef SENDER_CONFIG_H
#define SENDER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "queue/lane.h"

/* TLS_LEVEL_DANE_ONLY: deliver only to MX hosts whose TLSA records (RFC 7672)
 * authenticate them; never reaches an SMTP session (a DANE host gets verify). */
enum tls_level { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT, TLS_LEVEL_VERIFY, TLS_LEVEL_DANE_ONLY };
enum tls_fail_action {
	TLS_FAIL_NEXT_MX,
	TLS_FAIL_DEFER,
	TLS_FAIL_HOLD,
	TLS_FAIL_BOUNCE,
	TLS_FAIL_PLAINTEXT
};
const char *tls_level_name(enum tls_level l);              /* "none".."dane-only" */
int tls_level_parse(const char *s);                         /* -1 if bad */
const char *tls_fail_action_name(enum tls_fail_action a);  /* "next-mx".. */
int tls_fail_action_parse(const char *s);                   /* -1 if bad */

/* Which keys a rule section set (a rule only overrides what it sets). */
#define RULE_TLS (1u << 0)
#define RULE_ON_TLS_FAILURE (1u << 1)
#define RULE_MIN_TLS (1u << 2)
#define RULE_PORT (1u << 3)
#define RULE_RELAY (1u << 4)
#define RULE_MAX_CONN (1u << 5)
#define RULE_MAX_RATE (1u << 6)
#define RULE_MAX_RCPT (1u << 7)
#define RULE_AUTH (1u << 8)
#define RULE_MAX_CONN_TOTAL (1u << 9)
#define RULE_AUTH_INSECURE (1u << 10)
#define RULE_POOL (1u << 11)

struct rule {
	char *pattern;          /* section name as written: "example.com", ".example.com", "*" */
	unsigned set;           /* RULE_* bits */
	enum tls_level tls;     /* key tls */
	enum tls_fail_action on_tls_failure; /* key on_tls_failure */
	int min_tls;            /* key min_tls: 12 or 13 */
	int port;               /* key port */
	char *relay_host;       /* key relay = host:port (NULL: deliver to MX) */
	int relay_port;
	char *auth_user;        /* key auth_user */
	char *auth_password;    /* key auth_password (never logged) */
	bool auth_insecure;     /* key auth_insecure = yes: AUTH also over TLS whose
	                         * certificate did not verify (never over plaintext);
	                         * without it credentials need tls = verify */
	int auth_line;          /* line of auth_user (0: not set in this section) */
	int max_connections;    /* key max_connections: per process, per MX host */
	int max_connections_total; /* key max_connections_total: all processes
	                         * sharing the Redis together (0 = no such cap) */
	double max_rate;        /* key max_rate: messages per second, 0 = unlimited */
	int max_rcpt;           /* key max_rcpt: recipients per transaction */
	char *pool;             /* key pool: the egress pool of its jobs (a [pool NAME]) */
	int line;               /* line of the section header */
};

/* A [dkim DOMAIN] section: the key that signs as d=DOMAIN (sender/signer.h). */
struct dkim_key;
struct bclass_rules;
struct dkim_conf {
	char *domain;           /* the section's name, lowercase */
	char *key_file;         /* key key: PEM, RSA >= 1024 bits or Ed25519 */
	char *selector;         /* key selector */
	char *headers_s;        /* key headers (as written; NULL: the default list) */
	char *oversign_s;       /* key oversign (as written; NULL: the default list; "no") */
	int canon;              /* key canon: 0 relaxed/relaxed, 1 simple/simple */
	bool subdomains;        /* key subdomains = yes: also signs mail From: a subdomain */
	char **headers;         /* NULL-terminated, lowercase (parsed) */
	char **oversign;        /* NULL-terminated, lowercase (parsed) */
	struct dkim_key *key;   /* loaded at start-up (config_load); never logged */
	int line;               /* line of the section header */
};

/* [source NAME]: an egress source, a local address with its own EHLO name
 * (keys address, ehlo; ehlo defaults to [mxsend] helo). config_load binds a
 * test socket to the address (port 0): an address the host does not have is
 * an error at the section's line. */
struct source {
	char *name;
	char *address;                 /* as written (IPv4 or IPv6, no brackets) */
	char *ehlo;
	struct sockaddr_storage sa;    /* the address, port 0 */
	socklen_t salen;
	char label[96];                /* "name[address]": results, logs */
	int line;
	/* key warmup = "200 500 1000": messages per day per provider on day
	 * 0, 1, 2... since the source's first use (sender/shaping.h); past the
	 * last day no limit. n_warmup 0: none. */
	uint32_t warmup[32];
	int n_warmup;
};

/* [pool NAME] (named): an egress pool, a weighted set of sources (key
 * sources = "ip1:2 ip2:1"; weight 1..1000, default 1). The unnamed [pool]
 * section is connection reuse (reuse_time, ...), not an egress pool. */
struct egress_pool {
	char *name;
	char *spec;      /* sources as written */
	int n;
	int *src;        /* indexes into config.sources */
	int *weight;
	int line;
};

/* Shaping (sender/shaping.h). [provider NAME]: MX host name suffixes
 * (key mx = ".google.com .googlemail.com"; an exact name without the dot)
 * and limits per (source, provider) over all its MX hosts: max_connections,
 * max_rate (messages/s, 0 = none), max_messages (per connection, 0 = the
 * [pool] reuse_max). [response NAME]: match (POSIX extended regex over
 * "CODE ENHANCED TEXT", case-insensitive), action (throttle | suspend DURATION
 * | reclassify temporary | reclassify permanent | none), optional provider
 * (the rule applies only there) and class (a bounce class, carried as a
 * preset in the outcome). Sections come from the main file and from the
 * providers file ([shaping] providers; a section of the same kind and name in
 * the main file replaces the shipped one). */
enum shape_action {
	SHAPE_ACT_NONE,     /* only class= */
	SHAPE_ACT_THROTTLE, /* AIMD cut on (source, provider) */
	SHAPE_ACT_SUSPEND,  /* no mail to (source, provider) for duration_ms */
	SHAPE_ACT_TEMP,     /* reclassify temporary */
	SHAPE_ACT_PERM      /* reclassify permanent */
};
struct shape_provider {
	char *name;
	char **mx;           /* lowercase suffixes (".google.com") or exact names */
	int n_mx;
	int max_connections; /* 0: the [domain]/[mx] rule's */
	double max_rate;     /* 0: no rate limit until a throttle sets one */
	int max_messages;    /* 0: [pool] reuse_max */
	const char *file;    /* where it was defined (borrowed: config path or providers_path) */
	int line;
};
struct shape_response {
	char *name;
	char *match;
	char *provider;      /* NULL: every provider */
	enum shape_action action;
	uint64_t duration_ms; /* suspend */
	char *class_name;    /* NULL: none */
	const char *file;
	int line;
};

/* Per-stage SMTP client timeouts in ms (RFC 5321 4.5.3.2 defaults). */
struct smtp_timeouts {
	uint32_t connect;  /* 10s */
	uint32_t banner;   /* 5m */
	uint32_t helo;     /* 5m: EHLO/HELO reply */
	uint32_t starttls; /* 2m: STARTTLS reply and TLS handshake */
	uint32_t mail;     /* 5m */
	uint32_t rcpt;     /* 5m */
	uint32_t data;     /* 2m: DATA -> 354 */
	uint32_t block;    /* 3m: each body write */
	uint32_t dot;      /* 10m: final reply after the dot */
	uint32_t rset;     /* 2m */
	uint32_t quit;     /* 1m */
};

struct config {
	char *path; /* file loaded, or NULL */
	/* [mxsend] */
	int workers;        /* 0 = one per CPU */
	char *helo;         /* default: gethostname() */
	char *dns;          /* "127.0.0.1:5353,..." or NULL = /etc/resolv.conf */
	char *ca_file;      /* default /etc/ssl/certs/ca-certificates.crt */
	int max_inflight;   /* default 20000 */
	uint64_t max_inflight_bytes; /* message bytes claimed and not yet finished; default 1 GiB */
	char *metrics;      /* "127.0.0.1:9465" or NULL */
	uint64_t max_message_size; /* bytes, default 50 MiB; key max_message_size (accepts k/M suffix) */
	int log_level;      /* key log = trace|debug|info|warn|error, default warn */
	bool dkim_require;  /* key dkim_require: a message no key signs is rejected */
	char *dkim_extra;   /* key dkim_extra: a [dkim] domain that signs every message too */
	/* [redis] */
	char *redis_url;    /* default redis://127.0.0.1:6379/0 */
	char *redis_username;  /* an ACL user (AUTH USER PASSWORD); NULL: the URL's, if any */
	char *redis_password;  /* never logged (nor the URL's: see queue_url_redact) */
	bool redis_named;      /* the file sets [redis] url or sentinels: `send` adds to the TLSRPT counters */
	char *redis_sentinels; /* key sentinels: "host:port,..." (queue_sentinels_parse); NULL none */
	char *redis_master_name; /* key master_name: the master the sentinels watch */
	char *redis_sentinel_password; /* key sentinel_password; never logged */
	int redis_wait_replicas;       /* key wait_replicas: WAIT after each commit; 0 none */
	uint64_t redis_wait_timeout_ms; /* key wait_timeout, default 1s */
	char *redis_prefix;    /* key prefix: PREFIX:jobs, PREFIX:results (unless named), PREFIX:sts:,
	                        * PREFIX:tlsrpt; default mxsend; "{mxsend}" for a cluster */
	char *tlsrpt_prefix;   /* PREFIX:tlsrpt (config_load) */
	bool redis_cluster;    /* key cluster: url is a node of a Redis Cluster */
	char *redis_cluster_nodes; /* key cluster_nodes: more nodes to start from, "HOST:PORT,..." */
	bool jobs_named, results_named; /* the file sets them (else from prefix) */
	char *jobs, *results, *group; /* mxsend:jobs, mxsend:results, mxsend */
	uint64_t visibility_timeout_ms; /* key visibility_timeout, default 5m */
	/* rediss:// (queue.h struct queue_tls): keys tls_ca (NULL: the system
	 * store), tls_cert + tls_key (a client certificate), tls_name (the name
	 * the server's certificate must hold; NULL: the URL's host) */
	char *redis_tls_ca, *redis_tls_cert, *redis_tls_key, *redis_tls_name;
	int batch;          /* key batch: XREADGROUP COUNT, default 256 */
	int results_maxlen; /* key results_maxlen: trim the results stream to about
	                     * this many entries (XADD MAXLEN ~); 0 = never (default) */
	uint64_t max_id_len;   /* key max_id_len: a job's `id` bytes, default 1024 */
	uint64_t max_meta_len; /* key max_meta_len: a job's `meta` bytes, default 4096 */
	char *lanes_s;         /* key lanes: "NAME[:WEIGHT] ..." in priority order (queue.h
	                        * "lanes"), NULL: the lane `default` alone */
	struct queue_lane lanes[QUEUE_LANES_MAX]; /* lanes_s parsed */
	int n_lanes;
	/* [retry] */
	uint64_t schedule_ms[32]; /* key schedule = "1m 5m 15m 30m 1h 2h" */
	int n_schedule;
	uint64_t lifetime_ms;     /* key lifetime, default 2d */
	double jitter;            /* key jitter, fraction 0..1, default 0.1 */
	/* [dns] */
	int dane;                 /* key dane = no|auto|yes (enum dns_dnssec), default auto:
	                           * DANE (RFC 7672) with the AD bit of a trusted resolver */
	char *dnssec_trusted;     /* key dnssec_trusted: resolvers trusted to validate
	                           * besides loopback ones (addresses, space-separated) */
	/* [tls] */
	int min_version;          /* key min_version 1.2|1.3 -> 12|13 */
	bool mta_sts, tlsrpt;      /* keys mta_sts, tlsrpt: yes|no, both default yes */
	uint64_t broken_tls_ttl_ms; /* key broken_tls_ttl, default 1h */
	int sts_https_port;       /* key sts_https_port: MTA-STS policy fetches (443; labs/tests) */
	int max_handshakes;       /* key max_handshakes: TLS handshakes at once per worker (128; 0 no cap) */
	/* [tlsrpt] what `mxsend tlsrpt` puts in its reports (flags override): keys from,
	 * submitter, org, contact (defaults from helo), dkim_key (PEM private key, RSA or
	 * Ed25519: report mails are signed, RFC 8460 3), dkim_selector, dkim_domain (default:
	 * the domain of from) */
	char *rpt_from, *rpt_submitter, *rpt_org, *rpt_contact;
	char *dkim_key, *dkim_selector, *dkim_domain;
	/* [timeouts] keys connect banner helo starttls mail rcpt data block dot rset quit */
	struct smtp_timeouts timeouts;
	/* [pool] */
	uint64_t reuse_time_ms;   /* key reuse_time, default 5m */
	int reuse_max;            /* key reuse_max, messages per connection, 0 = unlimited (default 100) */
	uint64_t idle_timeout_ms; /* key idle_timeout, default 30s */
	/* rule sections, in file order */
	/* domains[0] is always "[domain *]" (built in; a "[domain *]" section
	 * overlays it). A rule's fields mean something only where `set` says so. */
	struct rule *domains;
	int n_domains;
	struct rule *mxs;
	int n_mxs;
	/* [dkim DOMAIN] sections, in file order */
	struct dkim_conf *dkims;
	int n_dkims;
	/* [source NAME] and [pool NAME] sections, in file order (none: mxsend
	 * lets the kernel choose the address and says EHLO with helo) */
	struct source *sources;
	int n_sources;
	struct egress_pool *pools;
	int n_pools;
	/* [classes] bounce classes (sender/bclass.h): key rules, the user's rule
	 * file (read first; NULL: none); key default_rules, the shipped one (NULL:
	 * found by bclass_default_path; none found: mxsend's own failures are
	 * still classed, replies are "other"). Compiled by config_load. */
	char *class_rules, *class_default_rules;
	struct bclass_rules *classes;
	/* [suppress] the suppression list (README "Suppression") */
	bool suppress_check;        /* key check: look every claimed recipient up (default yes) */
	char *suppress_auto_s;      /* key auto: classes whose 5xx bounces add the address
	                             * ("none": no automatic entries), as written */
	uint32_t suppress_auto;     /* ... as bits (1u << enum bclass); default invalid-recipient */
	uint64_t suppress_auto_ttl_ms; /* key auto_expires: lifetime of those entries, 0 = forever */
	/* [shaping] (sender/shaping.h) */
	char *providers_file;    /* key providers: the shipped definitions; NULL = providers.conf
	                          * beside the config file when it exists; "none" = no file */
	char *providers_path;    /* the file actually read, NULL: none */
	double shape_decrease;   /* key decrease: rate and budget factor on a throttle (0.8) */
	double shape_increase;   /* key increase: per second of good replies, this fraction of the
	                          * rate at the last cut is added back (0.01) */
	uint64_t shape_hold_ms;  /* key hold: one cut per (source, provider) per hold (2s) */
	uint64_t shape_max_wait_ms; /* key max_wait: a message that would wait longer for its
	                          * (source, provider) rate, behind the messages already waiting,
	                          * goes back to the queue until about then (30s) */
	uint64_t shape_sync_ms;  /* key sync: state exchanged with Redis this often (1s) */
	struct shape_provider *providers;
	int n_providers;
	struct shape_response *responses;
	int n_responses;
};

/* The egress pool named name, or -1. */
int config_pool_find(const struct config *c, const char *name);

/* Fill *c with built-in defaults (including one implicit "[domain *]" rule with
 * tls=may, on_tls_failure=plaintext, port=25, max_connections=20, max_rcpt=100). */
void config_defaults(struct config *c);
/* Defaults, then overlay the file. Returns 0, or -1 with "FILE:LINE: message"
 * in err. On error *c is still safe to config_fini. */
/* Credentials (auth_user) need, in every rule as it applies over [domain *], a
 * relay and tls = verify (or auth_insecure = yes with tls may/encrypt): else an
 * error at the auth_user line (or the inheriting section's header). */
/* *c need not be initialised (it is overwritten); err may be NULL if errlen is 0.
 * A file that cannot be opened gives "FILE: strerror" without a line. Stops at
 * the first error. Reads the file with stdio: start-up only, not on a ring. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
void config_fini(struct config *c);
/* Compile the [classes] rule files into c->classes (config_load does it; a
 * caller with config_defaults only calls it itself). 0, or -1 with
 * "FILE:LINE: ..." in err. */
int config_load_classes(struct config *c, char *err, size_t errlen);

/* The effective rule for a recipient domain delivered through MX host mx_host
 * (NULL before MX resolution): start from "[domain *]", overlay the most
 * specific domain rule (exact beats the longest ".parent" match), then the most
 * specific [mx] rule (exact beats longest ".suffix"). A domain rule replaces
 * what [domain *] says (it may lower tls for one domain); an [mx] rule can only
 * make tls and min_tls stricter; other keys are overridden. out->pattern points to the
 * domain rule's pattern (borrowed from c). Pure; no allocation. */
/* Also: [tls] min_version is a floor under out->min_tls. If the merged rule has
 * tls >= encrypt and on_tls_failure == plaintext (the two came from different
 * layers; one section cannot say both), out->on_tls_failure is defer. String
 * fields of out (relay_host, auth_*) are borrowed from c as well. domain and
 * mx_host compare case-insensitively; a trailing dot is ignored. */
void config_rule_for(const struct config *c, const char *domain, const char *mx_host,
		     struct rule *out);
/* Does any [domain]/[mx] section set one of the RULE_* bits? */
bool config_rules_set(const struct config *c, unsigned bits);

/* The provider or response section named name, or -1. */
int config_provider_find(const struct config *c, const char *name);

/* Parse a duration ("500ms", "30s", "5m", "1h", "2d", "1.5") into ms. 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);
/* Parse a size ("1000", "64k", "50M", "1G") into bytes. 0 or -1. */
int config_parse_size(const char *s, uint64_t *bytes);
/* The checks behind the file's values, shared with the command-line flags that
 * override them: config_check_word is `helo` (one non-empty word: no blank,
 * control byte or DEL, so no CR/LF can reach an SMTP command);
 * config_check_dns is `dns` (comma-separated addr, addr:port or [ipv6]:port,
 * port 1..65535). 0 or -1. */
int config_check_word(const char *s);
int config_check_dns(const char *s);

#endif
