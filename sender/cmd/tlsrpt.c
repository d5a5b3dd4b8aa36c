/* sender/cmd/tlsrpt.c: `mxsend tlsrpt`: build and send the day's TLS reports
 * (RFC 8460) from the counters `mxsend run` keeps in Redis (queue/tlsrpt_store.h).
 *
 *   mxsend tlsrpt [-c FILE] [--dry-run] [--day YYYY-MM-DD] [--delay MAX_S]
 *                 [--dns A[:P]] [--ca FILE] [--https-port N] [--timeout S]
 *                 [--org NAME] [--contact ADDR] [--from ADDR] [--submitter HOST]
 *                 [--dkim-key PEM] [--dkim-selector S] [--dkim-domain D] [DOMAIN]
 *
 * cmd_tlsrpt_parse (tlsrpt.h) reads the flags; cmd_tlsrpt_run settles the
 * settings (flags over [tlsrpt]), loads the keys, then reports (rpt_report).
 *
 * For each policy domain with counters on the day (default: yesterday, UTC),
 * or only DOMAIN: look up _smtp._tls.DOMAIN (sts_tlsrpt_parse), build the
 * JSON report, gzip it and send it to every rua: mailto: as a multipart/report
 * message, DKIM-signed (RFC 8460 3: receivers MUST ignore unsigned reports, so
 * without a key a mailto: rua fails with that reason and nothing is queued),
 * ENQUEUED as an ordinary job (field exempt=tlsrpt: RFC 8460 3, the
 * report must not be held back by the policy it reports on; with exempt_mac,
 * the proof that it is ours, keyed from [tlsrpt] dkim_key, else --dkim-key:
 * sender/exempt.h; `mxsend run` honours the exemption only when the proof
 * verifies under its own config's key), https: as a POST
 * of application/tlsrpt+gzip (any 2xx is success). Each (day, domain, rua) is
 * claimed in Redis before sending and marked sent afterwards, so running the
 * command again (cron retries, several hosts) sends nothing twice; a failed
 * send drops its claim and the next run tries again. --dry-run prints each
 * report (pretty JSON) and its rua targets and sends nothing, and with a DKIM key
 * the TXT record that publishes it (s=tlsrpt). --delay waits a
 * random 0..MAX_S seconds before sending (RFC 8460 4.1 asks for randomised
 * submission times: run it from cron shortly after midnight UTC with e.g.
 * --delay 3600).
 *
 * Redis is used synchronously (like cmd/queue.c) and never while the loop
 * runs; DNS and HTTPS run on a loop, every wait bounded by --timeout.
 * Output: one key=value line per rua. Exit: 0 all sent (or nothing to do),
 * 75 something failed temporarily (retry later), 64 usage, 78 config (also: a
 * mailto: rua and no DKIM key). Settings: [tlsrpt] in the config, flags override. */
#include "sender/cmd/tlsrpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue.h"
#include "queue/tlsrpt_store.h"
#include "sender/config.h"
#include "sender/dkim.h"
#include "sender/exempt.h"
#include "sender/msg.h"
#include "sender/dns.h"
#include "sender/policy/https.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/util.h"
#include "tlscache/sts.h"
#include "tlscache/tlscache.h"


#define RPT_TIMEOUT_S 60 /* default --timeout: DNS, then the POSTs */

struct rpt;
struct rpt_dom;

enum rua_state { RUA_TODO, RUA_SKIPPED, RUA_POSTING, RUA_SENT, RUA_FAILED };

struct rpt_rua {
	struct rpt_dom *d;
	char uri[256];
	enum rua_state st;
	bool claimed;
	struct https_req *hr;
	int status;
	char why[400];
	char job[48]; /* the stream entry id of an enqueued message */
};

struct rpt_dom {
	struct rpt *r;
	char domain[256];
	struct tlsrpt_counts counts;
	bool looked_up;
	char lookup_err[200]; /* no usable record: why */
	bool lookup_temp;     /* ... and it may be temporary */
	int nrua;
	struct rpt_rua rua[STS_TLSRPT_MAX_RUA];
	char uniq[24], report_id[320];
	char *json;
	unsigned char *gz;
	size_t gzlen;
};

struct rpt {
	struct config cfg;
	struct loop *l;
	struct dns *dns;
	struct tlscache *tc;
	struct loop_timer timer, deadline;
	int pending;
	bool timed_out, finishing;
	bool lookups_over; /* late TXT answers are dropped */
	struct rpt_dom *doms;
	int ndoms;
	char day[11];
	int64_t day_start;
	bool dry_run;
	uint32_t delay_ms, timeout_ms;
	int https_port;
	const char *org, *contact, *from, *submitter;
	const char *dkim_file, *dkim_selector, *dkim_domain;
	struct dkim_key *dkim; /* NULL: mailto: reports cannot be sent */
	bool have_exempt_key;  /* report jobs carry exempt_mac (sender/exempt.h) */
	unsigned char exempt_key[EXEMPT_KEY_LEN];
	bool unsigned_fail;    /* a mailto: rua failed for want of a key */
	char host[256], from_dflt[300], contact_dflt[300]; /* the defaults' storage */
	struct queue_config qc; /* borrowed by the queue_sync */
};

/* The header fields a report's signature covers (RFC 8460 5.3 names the report ones). */
static const char *const dkim_fields[] = {
	"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
	"tls-report-domain", "tls-report-submitter", NULL,
};

/* ---- loop side: TXT lookups and POSTs ---- */

static void one_done(struct rpt *r)
{
	if (--r->pending == 0)
		loop_stop(r->l);
}

static void on_txt(void *arg, const struct dns_txt *txt)
{
	struct rpt_dom *d = arg;
	struct sts_tlsrpt t;
	const char *err = NULL;
	if (d->r->finishing || d->r->lookups_over)
		return;
	d->looked_up = true;
	if (txt->status != DNS_OK) {
		d->lookup_temp = txt->status == DNS_TEMP;
		snprintf(d->lookup_err, sizeof(d->lookup_err), "%s",
			 txt->status == DNS_TEMP ? txt->why : "no TLSRPT record");
	} else if (sts_tlsrpt_parse((const char *const *)txt->rr, txt->n, &t, &err) != STS_TXT_OK) {
		snprintf(d->lookup_err, sizeof(d->lookup_err), "%s%s",
			 err && *err ? "invalid TLSRPT record: " : "no TLSRPT record", err ? err : "");
	} else {
		for (int i = 0; i < t.n_rua; i++)
			strlcpy_x(d->rua[d->nrua++].uri, t.rua[i], sizeof(d->rua[0].uri));
	}
	one_done(d->r);
}

static void on_post(void *arg, const struct https_result *res)
{
	struct rpt_rua *u = arg;
	u->hr = NULL; /* finished: https.c frees it */
	u->status = res->status;
	if (res->fail == HTTPS_OK) {
		u->st = RUA_SENT;
	} else {
		u->st = RUA_FAILED;
		snprintf(u->why, sizeof(u->why), "%s: %s", https_fail_name(res->fail), res->why);
	}
	one_done(u->d->r);
}

static void on_delay(struct loop_timer *t)
{
	struct rpt *r = container_of(t, struct rpt, timer);
	char name[300];
	loop_timer_arm(r->l, &r->deadline, r->timeout_ms);
	r->pending = r->ndoms + 1;
	for (int i = 0; i < r->ndoms; i++) {
		snprintf(name, sizeof(name), "_smtp._tls.%s", r->doms[i].domain);
		dns_resolve_txt(r->dns, name, on_txt, &r->doms[i]);
	}
	one_done(r);
}

static void on_deadline(struct loop_timer *t)
{
	struct rpt *r = container_of(t, struct rpt, deadline);
	r->timed_out = true;
	loop_stop(r->l);
}

/* Cancel what is still running, then free the resolver and let the ring
 * finish (bounded: 2 s), as cmd/check.c does. */
static void drain(struct rpt *r)
{
	r->finishing = true;
	for (int i = 0; i < r->ndoms; i++)
		for (int k = 0; k < r->doms[i].nrua; k++)
			if (r->doms[i].rua[k].hr) {
				https_cancel(r->doms[i].rua[k].hr);
				r->doms[i].rua[k].hr = NULL;
			}
	loop_timer_stop(r->l, &r->timer);
	loop_timer_stop(r->l, &r->deadline);
	dns_free(r->dns);
	r->dns = NULL;
	uint64_t until = loop_now(r->l) + 2000;
	for (int runs = 0; runs < 2 || (loop_inflight(r->l) > 0 && loop_now(r->l) < until); runs++) {
		loop_timer_arm(r->l, &r->timer, 10);
		loop_run(r->l);
	}
	loop_timer_stop(r->l, &r->timer);
}

static void stop_timer(struct loop_timer *t)
{
	struct rpt *r = container_of(t, struct rpt, timer);
	loop_stop(r->l);
}

/* ---- building and sending ---- */

static void print_rua(const struct rpt *r, const struct rpt_dom *d, const struct rpt_rua *u,
		      const char *result)
{
	printf("tlsrpt day=%s domain=%s rua=%s result=%s", r->day, d->domain, u ? u->uri : "none",
	       result);
	if (u && u->job[0])
		printf(" job=%s", u->job);
	if (u && u->status)
		printf(" status=%d", u->status);
	if (u && (u->st == RUA_SENT || u->st == RUA_POSTING))
		printf(" report_id=%s", d->report_id);
	if (u && u->why[0])
		printf(" why=\"%s\"", u->why);
	else if (!u && d->lookup_err[0])
		printf(" why=\"%s\"", d->lookup_err);
	printf("\n");
}

static int build(struct rpt *r, struct rpt_dom *d)
{
	char compact[9];
	snprintf(d->uniq, sizeof(d->uniq), "%08x%08x", rand_u32(), rand_u32());
	memcpy(compact, r->day, 4);
	memcpy(compact + 4, r->day + 5, 2);
	memcpy(compact + 6, r->day + 8, 3);
	snprintf(d->report_id, sizeof(d->report_id), "%s.%s@%s", compact, d->uniq, r->submitter);
	struct tlsrpt_meta m = { .org = r->org, .contact = r->contact, .report_id = d->report_id,
				 .day_start = r->day_start };
	d->json = tlsrpt_json(&d->counts, &m, r->dry_run);
	if (d->json == NULL || (!r->dry_run && tlsrpt_gzip(d->json, strlen(d->json), &d->gz,
							    &d->gzlen) != 0)) {
		fprintf(stderr, "mxsend tlsrpt: %s: cannot build the report (out of memory)\n",
			d->domain);
		return -1;
	}
	return 0;
}

static void got_id(void *arg, const char *id)
{
	strlcpy_x(arg, id, sizeof(((struct rpt_rua *)NULL)->job));
}

/* mailto: the report message, enqueued through mxsend's own queue. */
static void send_mail(struct rpt *r, struct rpt_dom *d, struct rpt_rua *u, struct queue_sync *qs)
{
	char to[256], fname[700], err[512];
	if (tlsrpt_mailto(u->uri, to, sizeof(to)) != 0) {
		u->st = RUA_FAILED;
		snprintf(u->why, sizeof(u->why), "not a usable mailto: address");
		return;
	}
	tlsrpt_filename(fname, sizeof(fname), r->submitter, d->domain, r->day_start,
			r->day_start + 86399, d->uniq);
	struct tlsrpt_mail m = { .from = r->from, .to = to, .domain = d->domain,
				 .submitter = r->submitter, .report_id = d->report_id,
				 .filename = fname, .day = r->day, .gz = d->gz, .gzlen = d->gzlen,
				 .date = (int64_t)time(NULL) };
	size_t len;
	char *msg = tlsrpt_mail_build(&m, &len);
	if (msg == NULL) {
		u->st = RUA_FAILED;
		snprintf(u->why, sizeof(u->why), "cannot build the message (bad header value)");
		return;
	}
	char *sig = dkim_sign(r->dkim, msg, len, dkim_fields, m.date, err, sizeof(err));
	if (sig == NULL) {
		u->st = RUA_FAILED;
		strlcpy_x(u->why, err, sizeof(u->why));
		free(msg);
		return;
	}
	size_t slen = strlen(sig);
	sig = xrealloc(sig, slen + len + 1);
	memcpy(sig + slen, msg, len + 1);
	free(msg);
	msg = sig;
	len += slen;
	/* No `tls` field: the level comes from the rules; exempt=tlsrpt tells
	 * the sender not to apply MTA-STS to it (RFC 8460 3). Retried on the
	 * queue's growing schedule for 24 hours, then expired (RFC 8460 5.3:
	 * redelivery for up to 24 hours, with exponential backoff). */
	char mac[EXEMPT_MAC_HEX + 1] = "", nfrom[600], nto[600];
	const char *nerr = NULL, *nrcpt[1] = { nto };
	if (r->have_exempt_key && msg_addr_norm(r->from, nfrom, sizeof(nfrom), &nerr) == 0 &&
	    msg_addr_norm(to, nto, sizeof(nto), &nerr) == 0) {
		struct exempt_msg em = { .kind = "tlsrpt", .from = nfrom, .rcpts = nrcpt, .nrcpt = 1,
					 .data = msg, .len = len, .has_expires = true, .expires_s = 86400 };
		exempt_mac(r->exempt_key, &em, mac);
	}
	const char *name[] = { "from", "to", "data", "id", "meta", "exempt", "expires", "exempt_mac" };
	const char *value[] = { r->from, to, msg, d->report_id, "tlsrpt", "tlsrpt", "86400", mac };
	size_t vlen[ARRAY_LEN(value)];
	for (size_t i = 0; i < ARRAY_LEN(value); i++)
		vlen[i] = value[i] == msg ? len : strlen(value[i]);
	struct queue_fields f = { .name = name, .value = value, .vlen = vlen,
				  .n = (int)ARRAY_LEN(value) - (mac[0] == '\0') };
	if (queue_sync_enqueue(qs, &f, 1, got_id, u->job, err, sizeof(err)) == 1) {
		u->st = RUA_SENT;
	} else {
		u->st = RUA_FAILED;
		strlcpy_x(u->why, err, sizeof(u->why));
	}
	free(msg);
}

static void start_post(struct rpt *r, struct rpt_dom *d, struct rpt_rua *u)
{
	char host[256], path[256];
	int port;
	if (tlsrpt_https(u->uri, host, sizeof(host), &port, path, sizeof(path)) != 0) {
		u->st = RUA_FAILED;
		snprintf(u->why, sizeof(u->why), "not a usable https: URI");
		return;
	}
	struct https_params hp = {
		.method = "POST", .host = host, .port = port ? port : r->https_port, .path = path,
		.content_type = TLSRPT_MEDIA_TYPE, .body = d->gz, .len = d->gzlen,
		.timeout_ms = r->timeout_ms, .any_2xx = true,
	};
	u->st = RUA_POSTING;
	r->pending++;
	u->hr = https_request(r->l, r->dns, r->tc, &hp, on_post, u);
}

static int open_stores(struct rpt *r, struct tlsrpt_store **st, struct queue_sync **qs)
{
	char err[512];
	cmd_queue_config(&r->cfg, &r->qc);
	*st = tlsrpt_store_open(&r->qc, r->cfg.tlsrpt_prefix, err, sizeof(err));
	if (*st == NULL) {
		fprintf(stderr, "mxsend tlsrpt: %s\n", err);
		return -1;
	}
	if (qs != NULL && (*qs = queue_sync_open(&r->qc, err, sizeof(err))) == NULL) {
		fprintf(stderr, "mxsend tlsrpt: %s\n", err);
		return -1;
	}
	return 0;
}

/* Load the counters of the domains to report on. -1 on a Redis error. */
static int load(struct rpt *r, struct tlsrpt_store *st, const char *only)
{
	char err[512], **names = NULL;
	int n;
	if (only != NULL) {
		names = xcalloc(1, sizeof(*names));
		names[0] = xstrdup(only);
		n = 1;
	} else if ((n = tlsrpt_store_domains(st, r->day, &names, err, sizeof(err))) < 0) {
		fprintf(stderr, "mxsend tlsrpt: %s\n", err);
		return -1;
	}
	r->doms = xcalloc((size_t)n + 1, sizeof(*r->doms));
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		struct rpt_dom *d = &r->doms[r->ndoms];
		if (tlsrpt_store_load(st, r->day, names[i], &d->counts, err, sizeof(err)) != 0) {
			fprintf(stderr, "mxsend tlsrpt: %s\n", err);
			rc = -1;
		} else if (d->counts.npol == 0) {
			tlsrpt_counts_fini(&d->counts);
		} else {
			d->r = r;
			strlcpy_x(d->domain, names[i], sizeof(d->domain));
			for (int k = 0; k < STS_TLSRPT_MAX_RUA; k++)
				d->rua[k].d = d;
			r->ndoms++;
		}
	}
	tlsrpt_strv_free(names, n);
	return rc;
}

/* ---- the command ---- */

static int tlsrpt_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_tlsrpt_opts *o = opts;
	long v;
	switch (ch) {
	case 'n': o->dry_run = true; return 0;
	case 'D':
		*why = "bad --day (YYYY-MM-DD)";
		return tlsrpt_day_parse(arg, &o->day_start) == 0 ? 0 : -1;
	case 'o': o->org = arg; return 0;
	case 'C': o->contact = arg; return 0;
	case 'f': o->from = arg; return 0;
	case 's': o->submitter = arg; return 0;
	case 'K': o->dkim_file = arg; return 0;
	case 'S': o->dkim_selector = arg; return 0;
	case 'M': o->dkim_domain = arg; return 0;
	case 'W':
		*why = "bad --delay (seconds, 0-86400)";
		return cmd_parse_long(arg, 0, 86400, &o->delay_s) ? 0 : -1;
	case 'T':
		*why = "bad --timeout (seconds, 1-3600)";
		return cmd_parse_long(arg, 1, 3600, &o->timeout_s) ? 0 : -1;
	case 'P':
		*why = "bad --https-port";
		if (!cmd_parse_long(arg, 1, 65535, &v))
			return -1;
		o->https_port = (int)v;
		return 0;
	default:
		return -1;
	}
}

int cmd_tlsrpt_parse(int argc, char **argv, struct cmd_tlsrpt_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_DNS, CMD_OPT_CA, CMD_OPT_HELP,
		{ "dry-run", no_argument, NULL, 'n' },          { "day", required_argument, NULL, 'D' },
		{ "delay", required_argument, NULL, 'W' },      { "https-port", required_argument, NULL, 'P' },
		{ "timeout", required_argument, NULL, 'T' },    { "org", required_argument, NULL, 'o' },
		{ "contact", required_argument, NULL, 'C' },    { "from", required_argument, NULL, 'f' },
		{ "submitter", required_argument, NULL, 's' },  { "dkim-key", required_argument, NULL, 'K' },
		{ "dkim-selector", required_argument, NULL, 'S' },
		{ "dkim-domain", required_argument, NULL, 'M' }, CMD_OPT_END,
	};
	*o = (struct cmd_tlsrpt_opts){ .day_start = ((int64_t)time(NULL) / 86400 - 1) * 86400, /* yesterday, UTC */
				       .timeout_s = RPT_TIMEOUT_S, .https_port = 443 };
	int first, rc = cmd_parse(argc, argv, "c:hn", longs, &o->c, tlsrpt_flag, o, &first);
	if (rc != 0)
		return rc;
	if (argc - first > 1)
		o->c.why = "at most one DOMAIN";
	else if (first < argc && cmd_domain_arg(argv[first], o->only, sizeof(o->only)) != 0)
		o->c.why = "bad DOMAIN";
	return o->c.why != NULL ? EX_USAGE : 0;
}

/* The settings: the flags over [tlsrpt], then the defaults (submitter: the
 * helo name, else the host name). 0, or -1 when --submitter or --from is bad. */
static int rpt_settings(struct rpt *r, const struct cmd_tlsrpt_opts *o)
{
	const struct config *cf = &r->cfg;
	r->dry_run = o->dry_run;
	r->day_start = o->day_start;
	tlsrpt_day_format(r->day_start, r->day);
	r->timeout_ms = (uint32_t)o->timeout_s * 1000;
	r->delay_ms = o->delay_s > 0 ? rand_u32() % ((uint32_t)o->delay_s * 1000 + 1) : 0;
	r->https_port = o->https_port;
	r->submitter = o->submitter ? o->submitter : cf->rpt_submitter;
	r->from = o->from ? o->from : cf->rpt_from;
	r->org = o->org ? o->org : cf->rpt_org;
	r->contact = o->contact ? o->contact : cf->rpt_contact;
	r->dkim_file = o->dkim_file ? o->dkim_file : cf->dkim_key;
	r->dkim_selector = o->dkim_selector ? o->dkim_selector : cf->dkim_selector;
	r->dkim_domain = o->dkim_domain ? o->dkim_domain : cf->dkim_domain;
	if (r->submitter == NULL) {
		if (cf->helo && cf->helo[0])
			strlcpy_x(r->host, cf->helo, sizeof(r->host));
		else if (gethostname(r->host, sizeof(r->host)) != 0)
			strcpy(r->host, "localhost");
		r->host[sizeof(r->host) - 1] = '\0';
		r->submitter = r->host;
	}
	snprintf(r->from_dflt, sizeof(r->from_dflt), "tlsrpt-noreply@%s", r->submitter);
	snprintf(r->contact_dflt, sizeof(r->contact_dflt), "postmaster@%s", r->submitter);
	if (r->from == NULL)
		r->from = r->from_dflt;
	if (r->contact == NULL)
		r->contact = r->contact_dflt;
	if (r->org == NULL)
		r->org = r->submitter;
	if (strpbrk(r->submitter, " \t\r\n!\"") || strpbrk(r->from, " \t\r\n<>\"") ||
	    strchr(r->from, '@') == NULL)
		return -1;
	return 0;
}

/* The DKIM key (when one is named) and the exemption key; with --dry-run,
 * the TXT record to publish. 0, or EX_CONFIG (said). */
static int rpt_keys(struct rpt *r)
{
	if (r->dkim_file != NULL && r->dkim_file[0] != '\0') {
		char kerr[512];
		r->dkim = dkim_key_load(r->dkim_file, r->dkim_domain ? r->dkim_domain : strchr(r->from, '@') + 1,
					r->dkim_selector, kerr, sizeof(kerr));
		if (r->dkim == NULL) {
			fprintf(stderr, "mxsend tlsrpt: %s\n", kerr);
			return EX_CONFIG;
		}
		/* The exemption proof is keyed from the config's key, which `mxsend
		 * run` reads too; --dkim-key alone only helps a run given the same
		 * file in its config. */
		const char *cfk = r->cfg.dkim_key;
		const char *mac_file = cfk && cfk[0] ? cfk : r->dkim_file;
		if (exempt_key_load(mac_file, r->exempt_key, kerr, sizeof(kerr)) == 0)
			r->have_exempt_key = true;
		else
			fprintf(stderr, "mxsend tlsrpt: warning: %s: report jobs will not be exempt from MTA-STS\n",
				kerr);
	}
	if (r->dkim != NULL && r->dry_run) { /* the record to publish, counters or not */
		char name[400];
		char *rec = dkim_dns_record(r->dkim, "tlsrpt", name, sizeof(name));
		printf("tlsrpt dkim=%s txt=\"%s\"\n", name, rec ? rec : "?");
		free(rec);
	}
	return 0;
}

/* The loop, the resolver and the TLS contexts. 0 or an exit status (said). */
static int rpt_open_loop(struct rpt *r)
{
	int lerr = 0;
	char err[512];
	r->l = loop_new(256, &lerr);
	if (r->l == NULL) {
		fprintf(stderr, "mxsend tlsrpt: io_uring unavailable: %s\n", strerror(-lerr));
		return EX_OSERR;
	}
	struct dns_opts dopt = { .servers = r->cfg.dns, .timeout_ms = 2000, .tries = 2 };
	struct tlscache_opts topt = { .ca_file = r->cfg.ca_file, .min_version = r->cfg.min_version };
	r->dns = dns_new(r->l, &dopt, err, sizeof(err));
	r->tc = r->dns ? tlscache_new(&topt, err, sizeof(err)) : NULL;
	if (r->dns == NULL || r->tc == NULL) {
		fprintf(stderr, "mxsend tlsrpt: %s\n", err);
		return EX_CONFIG;
	}
	loop_timer_init(&r->timer, on_delay);
	loop_timer_init(&r->deadline, on_deadline);
	return 0;
}

/* 1. the random delay (not for a dry run), then every TXT lookup at once */
static void rpt_lookups(struct rpt *r)
{
	if (r->delay_ms > 0 && !r->dry_run)
		log_info("evt=tlsrpt_delay ms=%u", r->delay_ms);
	loop_timer_arm(r->l, &r->timer, r->dry_run ? 0 : r->delay_ms);
	loop_run(r->l);
	loop_timer_stop(r->l, &r->deadline);
	r->lookups_over = true;
}

/* 2b. one rua of a built report: claim it, then send (mailto now, https
 * started on the loop). */
static void rpt_send_rua(struct rpt *r, struct rpt_dom *d, struct rpt_rua *u,
			 struct tlsrpt_store *st, struct queue_sync *qs)
{
	char state[128] = "", err[512];
	if (r->dkim == NULL && strncasecmp(u->uri, "mailto:", 7) == 0) {
		u->st = RUA_FAILED; /* not claimed: a run with a key sends it */
		r->unsigned_fail = true;
		snprintf(u->why, sizeof(u->why),
			 "no DKIM key ([tlsrpt] dkim_key or --dkim-key): RFC 8460 3 has "
			 "receivers ignore unsigned reports");
		return;
	}
	int c = tlsrpt_store_claim(st, r->day, d->domain, u->uri, d->report_id, state, sizeof(state),
				   err, sizeof(err));
	if (c <= 0) {
		u->st = c < 0 ? RUA_FAILED : RUA_SKIPPED;
		strlcpy_x(u->why, c < 0 ? err : state, sizeof(u->why));
		return;
	}
	u->claimed = true;
	if (strncasecmp(u->uri, "mailto:", 7) == 0)
		send_mail(r, d, u, qs);
	else
		start_post(r, d, u);
}

/* 2. build each domain's report, send it to every rua (dry run: print it);
 * wait for the POSTs. Returns EX_OK or EX_TEMPFAIL. */
static int rpt_send_all(struct rpt *r, struct tlsrpt_store *st, struct queue_sync *qs)
{
	int rc = EX_OK;
	r->pending = 1;
	for (int i = 0; i < r->ndoms; i++) {
		struct rpt_dom *d = &r->doms[i];
		if (d->nrua == 0) {
			if (!d->looked_up)
				snprintf(d->lookup_err, sizeof(d->lookup_err), "TXT lookup timed out");
			if (!d->looked_up || d->lookup_temp)
				rc = EX_TEMPFAIL;
			print_rua(r, d, NULL, d->looked_up && !d->lookup_temp ? "none" : "failed");
			continue;
		}
		if (build(r, d) != 0) {
			rc = EX_TEMPFAIL;
			continue;
		}
		if (r->dry_run) {
			for (int k = 0; k < d->nrua; k++)
				print_rua(r, d, &d->rua[k], "dry-run");
			printf("%s\n", d->json);
			continue;
		}
		for (int k = 0; k < d->nrua; k++)
			rpt_send_rua(r, d, &d->rua[k], st, qs);
	}
	if (r->pending > 1) {
		loop_timer_init(&r->timer, stop_timer);
		loop_timer_arm(r->l, &r->deadline, r->timeout_ms + 1000);
		one_done(r);
		loop_run(r->l);
		loop_timer_stop(r->l, &r->deadline);
	}
	loop_timer_init(&r->timer, stop_timer);
	drain(r); /* cancels POSTs still running: they count as failed */
	return rc;
}

/* 3. record what was sent; release the claims of what was not; print. */
static int rpt_record(struct rpt *r, struct tlsrpt_store *st)
{
	static const char *const res[] = { [RUA_TODO] = "failed", [RUA_SKIPPED] = "skipped",
					   [RUA_POSTING] = "failed", [RUA_SENT] = "sent",
					   [RUA_FAILED] = "failed" };
	char err[512];
	int rc = EX_OK;
	for (int i = 0; i < r->ndoms && !r->dry_run; i++) {
		struct rpt_dom *d = &r->doms[i];
		for (int k = 0; k < d->nrua; k++) {
			struct rpt_rua *u = &d->rua[k];
			if (u->st == RUA_POSTING) {
				u->st = RUA_FAILED;
				snprintf(u->why, sizeof(u->why), "timed out after %u s", r->timeout_ms / 1000);
			}
			if (u->claimed && tlsrpt_store_finish(st, r->day, d->domain, u->uri, d->report_id,
							      u->st == RUA_SENT, err, sizeof(err)) != 0) {
				fprintf(stderr, "mxsend tlsrpt: %s\n", err);
				rc = EX_TEMPFAIL;
			}
			if (u->st == RUA_FAILED)
				rc = EX_TEMPFAIL;
			bool queued = strncasecmp(u->uri, "mailto:", 7) == 0 && u->st == RUA_SENT;
			print_rua(r, d, u, queued ? "queued" : res[u->st]);
		}
	}
	fflush(stdout);
	return rc;
}

/* The counters loaded, the reports built, sent and recorded. Exit status. */
static int rpt_report(struct rpt *r, const char *only)
{
	struct tlsrpt_store *st = NULL;
	struct queue_sync *qs = NULL;
	int rc = EX_OK;
	if (open_stores(r, &st, r->dry_run ? NULL : &qs) != 0 || load(r, st, only[0] ? only : NULL) != 0) {
		rc = EX_TEMPFAIL;
	} else if (r->ndoms == 0) {
		fprintf(stderr, "mxsend tlsrpt: no TLS sessions counted on %s%s%s\n", r->day,
			only[0] ? " for " : "", only);
	} else if ((rc = rpt_open_loop(r)) == 0) {
		rpt_lookups(r);
		rc = rpt_send_all(r, st, qs);
		int rc3 = rpt_record(r, st);
		rc = rc != EX_OK ? rc : rc3;
	}
	queue_sync_close(qs);
	tlsrpt_store_close(st);
	return rc;
}

static void rpt_free(struct rpt *r)
{
	for (int i = 0; i < r->ndoms; i++) {
		tlsrpt_counts_fini(&r->doms[i].counts);
		free(r->doms[i].json);
		free(r->doms[i].gz);
	}
	free(r->doms);
	if (r->l != NULL) {
		if (r->dns != NULL) {
			loop_timer_init(&r->timer, stop_timer);
			drain(r);
		}
		tlscache_free(r->tc);
		loop_free(r->l);
	}
	config_fini(&r->cfg);
	dkim_key_free(r->dkim);
	explicit_bzero(r->exempt_key, sizeof(r->exempt_key));
	free(r);
}

int cmd_tlsrpt_run(const struct cmd_tlsrpt_opts *o)
{
	struct rpt *r = xcalloc(1, sizeof(*r));
	int rc = cmd_setup(&r->cfg, &o->c);
	if (rc != 0) {
		free(r);
		return rc;
	}
	if (!r->cfg.tlsrpt && !o->dry_run) {
		fprintf(stderr, "mxsend tlsrpt: [tls] tlsrpt = no: nothing sent\n");
		rc = EX_OK;
	} else if (rpt_settings(r, o) != 0) {
		rc = cmd_usage(&cmd_tlsrpt_def, EX_USAGE, "bad --submitter or --from");
	} else if ((rc = rpt_keys(r)) == 0) {
		rc = rpt_report(r, o->only);
	}
	bool unsigned_fail = r->unsigned_fail;
	rpt_free(r);
	return unsigned_fail ? EX_CONFIG : rc;
}

static int cmd_tlsrpt(int argc, char **argv)
{
	struct cmd_tlsrpt_opts o;
	int rc = cmd_tlsrpt_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_tlsrpt_def, rc, o.c.why) : cmd_tlsrpt_run(&o);
}

const struct cmd_def cmd_tlsrpt_def = {
	"tlsrpt", cmd_tlsrpt,
	"tlsrpt [-c FILE] [--dry-run] [--day YYYY-MM-DD] [--delay MAX_S]\n"
	"[--dns A[:P]] [--ca FILE] [--https-port N] [--timeout S]\n"
	"[--org NAME] [--contact ADDR] [--from ADDR] [--submitter HOST]\n"
	"[--dkim-key PEM] [--dkim-selector S] [--dkim-domain D] [DOMAIN]",
};
