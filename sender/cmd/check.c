/* sender/cmd/check.c: `mxsend check DOMAIN`: a domain's TLS posture, for operators.
 *
 *   mxsend check [-c FILE] [--dns A[:P]] [--ca FILE] [--port N] [--https-port N]
 *                [--timeout S] [--json] DOMAIN
 *
 * cmd_check_parse (check.h) reads the flags; cmd_check_run opens, looks and
 * reports. The policy fetch is stspol_fetch, the one `mxsend run` makes.
 *
 * In parallel: the MX hosts and their addresses; the _mta-sts TXT record and,
 * when it is valid, the policy over HTTPS (https.h: WebPKI, no redirects,
 * text/plain, 64 KiB); the _smtp._tls TXT record (TLSRPT rua). For each MX
 * host, an SMTP probe of its first address at TLS level `may` (smtp.h):
 * greeting, EHLO, STARTTLS if offered, TLS version, cipher, certificate
 * verdict against the CA file and the MX name, expiry; then QUIT. Nothing is
 * sent beyond EHLO/STARTTLS/QUIT. Output: key=value lines, or one JSON object
 * with --json. Every wait is bounded by --timeout (default 30 s).
 *
 * Exit status: 0 when at least one MX host offers TLS with a verified
 * certificate (and, under an MTA-STS enforce policy, matches the policy);
 * 75 (EX_TEMPFAIL) when that could not be shown for a temporary reason (DNS
 * temporary failure, an MX host unreachable or timing out); 69
 * (EX_UNAVAILABLE) when it is known not to hold (no MX / null MX / NXDOMAIN,
 * or every MX host answered without verified TLS); 64 usage; 78 config. */
#include "sender/cmd/check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <jansson.h>

#include "sender/config.h"
#include "sender/dns.h"
#include "sender/policy/https.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/smtp.h"
#include "sender/smtp_reply.h"
#include "sender/policy/dane.h"
#include "sender/policy/stspol.h"
#include "sender/util.h"
#include "tlscache/sts.h"
#include "tlscache/tlscache.h"

struct check;

struct probe {
	struct check *ck;
	struct smtp_session *s;
	char host[256];
	int pref;
	char addr[64];
	int port;
	bool started, done, ready;
	struct smtp_status st; /* READY, or FAIL */
	bool sts_allowed;
	/* DANE (dns.h DNSSEC on): the host's answers secure, its TLSA records
	 * (looked up before the probe, which then verifies the chain by them) */
	bool dnssec, secure, dane_done;
	struct dns_host h;          /* copied from the MX answer */
	struct dane_host dane;
	struct dane_lookup lk;
};

struct check {
	struct loop *l;
	struct dns *dns;
	struct tlscache *tc;
	const struct config *cfg;
	char domain[256];
	int port, https_port;
	uint32_t fetch_timeout_ms; /* inside the overall deadline, so the fetch reports its own timeout */
	int pending;
	bool finishing; /* results are printed: late DNS answers are dropped */
	unsigned live;  /* SMTP sessions alive */
	struct loop_timer deadline;
	bool timed_out;
	/* MX */
	bool mx_done;
	enum dns_status mx_status;
	bool mx_implicit;
	bool mx_secure;
	char mx_why[128];
	struct probe probes[DNS_MAX_MX];
	int nprobes;
	/* MTA-STS */
	bool sts_txt_done;
	enum dns_status sts_dns;
	enum sts_txt_rc sts_rc;
	char sts_id[STS_ID_MAX + 1];
	char sts_record[256];
	char sts_err[160];
	struct https_req *hr;
	bool fetch_started, fetch_done;
	enum https_fail fetch_fail;
	int fetch_status;
	size_t fetch_len;
	char fetch_why[320], fetch_type[128];
	bool have_policy;
	struct sts_policy pol;
	char pol_err[96];
	/* TLSRPT */
	bool rpt_done;
	enum dns_status rpt_dns;
	enum sts_txt_rc rpt_rc;
	struct sts_tlsrpt rpt;
	char rpt_err[96];
};

static void one_done(struct check *ck)
{
	if (--ck->pending == 0)
		loop_stop(ck->l);
}

/* ---- SMTP probes ---- */

static void probe_event(void *arg, struct smtp_session *s, enum smtp_event ev,
			const struct smtp_status *st)
{
	struct probe *p = arg;
	if (p->done)
		return;
	p->done = true;
	p->st = *st;
	p->s = NULL;
	if (ev == SMTP_EV_READY) {
		p->ready = true;
		smtp_session_quit(s);
	} else {
		smtp_session_free(s);
	}
	one_done(p->ck);
}

static void start_probe(struct check *ck, struct probe *p, const struct dns_host *h)
{
	struct rule rule;
	config_rule_for(ck->cfg, ck->domain, h->name, &rule);
	p->port = ck->port > 0 ? ck->port : rule.port > 0 ? rule.port : 25;
	struct smtp_params sp = {
		.helo = ck->cfg->helo ? ck->cfg->helo : "localhost",
		.mx_host = h->name,
		/* DANE: the chain is checked against the records (a mismatch
		 * fails the probe, with its reason) */
		.level = p->dane.mode == DANE_AUTH ? TLS_LEVEL_VERIFY : TLS_LEVEL_MAY,
		.dane = p->dane.mode == DANE_AUTH ? &p->dane.tls : NULL,
		.tc = ck->tc,
		.to = &ck->cfg->timeouts,
		.id = (uint64_t)(p - ck->probes) + 1,
		.live = &ck->live,
	};
	memcpy(&sp.addr, &h->addrs[0], sizeof(sp.addr));
	if (sp.addr.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sp.addr;
		s6->sin6_port = htons((uint16_t)p->port);
		sp.addrlen = sizeof(*s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, p->addr, sizeof(p->addr));
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&sp.addr;
		s4->sin_port = htons((uint16_t)p->port);
		sp.addrlen = sizeof(*s4);
		inet_ntop(AF_INET, &s4->sin_addr, p->addr, sizeof(p->addr));
	}
	p->s = smtp_session_new(ck->l, &sp, probe_event, p);
	int e = smtp_session_start(p->s);
	if (e < 0) {
		smtp_session_free(p->s);
		p->s = NULL;
		p->done = true;
		p->st.fail = SMTP_FAIL_CONNECT;
		snprintf(p->st.why.text, sizeof(p->st.why.text), "socket: %s", strerror(-e));
		return;
	}
	p->started = true;
	ck->pending++;
}

static void on_dane(void *arg, struct dane_host *h)
{
	struct probe *p = arg;
	(void)h;
	p->dane_done = true;
	if (!p->ck->finishing)
		start_probe(p->ck, p, &p->h);
	one_done(p->ck);
}

static void on_mx(void *arg, const struct dns_mx *mx)
{
	struct check *ck = arg;
	if (ck->finishing)
		return;
	ck->mx_done = true;
	ck->mx_status = mx->status;
	ck->mx_implicit = mx->implicit != 0;
	ck->mx_secure = mx->secure;
	strlcpy_x(ck->mx_why, mx->why, sizeof(ck->mx_why));
	if (mx->status == DNS_OK) {
		for (int i = 0; i < mx->nhosts && ck->nprobes < DNS_MAX_MX; i++) {
			if (mx->hosts[i].naddrs == 0)
				continue;
			struct probe *p = &ck->probes[ck->nprobes++];
			p->ck = ck;
			strlcpy_x(p->host, mx->hosts[i].name, sizeof(p->host));
			p->pref = mx->hosts[i].pref;
			p->h = mx->hosts[i];
			dane_host_none(&p->dane, p->host);
			p->dnssec = dns_dnssec_on(ck->dns);
			p->secure = mx->secure && mx->hosts[i].secure;
			if (p->dnssec && p->secure) { /* RFC 7672 2.2: TLSA first */
				int port = ck->port > 0 ? ck->port : 25;
				struct rule rule;
				config_rule_for(ck->cfg, ck->domain, p->host, &rule);
				if (ck->port <= 0 && rule.port > 0)
					port = rule.port;
				ck->pending++;
				dane_lookup_start(&p->lk, ck->dns, p->host, p->h.cname, port, &p->dane,
						  on_dane, p);
				continue;
			}
			start_probe(ck, p, &mx->hosts[i]);
		}
	}
	one_done(ck);
}

/* ---- MTA-STS ---- */

static void on_policy(void *arg, const struct https_result *r)
{
	struct check *ck = arg;
	ck->hr = NULL;
	ck->fetch_done = true;
	ck->fetch_fail = r->fail;
	ck->fetch_status = r->status;
	ck->fetch_len = r->len;
	strlcpy_x(ck->fetch_why, r->why, sizeof(ck->fetch_why));
	strlcpy_x(ck->fetch_type, r->content_type, sizeof(ck->fetch_type));
	if (r->fail == HTTPS_OK) {
		const char *err = NULL;
		if (sts_policy_parse(r->body, r->len, &ck->pol, &err) == 0) {
			ck->have_policy = true;
			strlcpy_x(ck->pol.id, ck->sts_id, sizeof(ck->pol.id));
		} else {
			strlcpy_x(ck->pol_err, err, sizeof(ck->pol_err));
		}
	}
	one_done(ck);
}

static void on_sts_txt(void *arg, const struct dns_txt *txt)
{
	struct check *ck = arg;
	if (ck->finishing)
		return;
	ck->sts_txt_done = true;
	ck->sts_dns = txt->status;
	if (txt->status == DNS_OK) {
		const char *err = NULL;
		ck->sts_rc = sts_txt_parse((const char *const *)txt->rr, txt->n, ck->sts_id, &err);
		if (err)
			strlcpy_x(ck->sts_err, err, sizeof(ck->sts_err));
		for (int i = 0; i < txt->n; i++)
			if (strncmp(txt->rr[i], "v=STSv1", 7) == 0 && !ck->sts_record[0])
				strlcpy_x(ck->sts_record, txt->rr[i], sizeof(ck->sts_record));
	} else {
		ck->sts_rc = txt->status == DNS_TEMP ? STS_TXT_INVALID : STS_TXT_NONE;
		strlcpy_x(ck->sts_err, txt->why, sizeof(ck->sts_err));
	}
	if (ck->sts_rc == STS_TXT_OK) {
		ck->fetch_started = true;
		ck->hr = stspol_fetch(ck->l, ck->dns, ck->tc, ck->domain, ck->https_port,
				      ck->fetch_timeout_ms, on_policy, ck);
		ck->pending++;
	}
	one_done(ck);
}

static void on_rpt_txt(void *arg, const struct dns_txt *txt)
{
	struct check *ck = arg;
	if (ck->finishing)
		return;
	ck->rpt_done = true;
	ck->rpt_dns = txt->status;
	const char *err = NULL;
	if (txt->status == DNS_OK)
		ck->rpt_rc = sts_tlsrpt_parse((const char *const *)txt->rr, txt->n, &ck->rpt, &err);
	else {
		ck->rpt_rc = STS_TXT_NONE;
		err = txt->status == DNS_TEMP ? txt->why : NULL;
	}
	if (err)
		strlcpy_x(ck->rpt_err, err, sizeof(ck->rpt_err));
	one_done(ck);
}

static void on_deadline(struct loop_timer *t)
{
	struct check *ck = container_of(t, struct check, deadline);
	ck->timed_out = true;
	loop_stop(ck->l);
}

/* ---- verdict ---- */

static bool policy_enforced(const struct check *ck)
{
	return ck->have_policy && ck->pol.mode == STS_MODE_ENFORCE;
}

static bool probe_verified(const struct check *ck, const struct probe *p)
{
	if (!p->ready || !p->st.tls || !p->st.verdict.verified)
		return false;
	/* RFC 8461 2: a DANE-authenticated host needs no MTA-STS listing */
	return !policy_enforced(ck) || p->sts_allowed || p->dane.mode == DANE_AUTH;
}

static int verdict(const struct check *ck, const char **summary)
{
	for (int i = 0; i < ck->nprobes; i++) {
		if (probe_verified(ck, &ck->probes[i])) {
			*summary = "receives mail over verified TLS";
			return EX_OK;
		}
	}
	if (!ck->mx_done || ck->mx_status == DNS_TEMP) {
		*summary = "MX lookup did not complete";
		return EX_TEMPFAIL;
	}
	if (ck->mx_status != DNS_OK) {
		*summary = ck->mx_status == DNS_NULLMX ? "the domain accepts no mail (null MX)"
							: "no MX host with an address";
		return EX_UNAVAILABLE;
	}
	for (int i = 0; i < ck->nprobes; i++) {
		const struct probe *p = &ck->probes[i];
		bool answered = p->ready || p->st.fail == SMTP_FAIL_TLS_MAY ||
				(p->st.fail == SMTP_FAIL_GREETING && p->st.why.cls == SMTP_PERM);
		if (!p->done || !answered) {
			*summary = "no verified TLS shown; some MX hosts did not answer";
			return EX_TEMPFAIL;
		}
	}
	*summary = policy_enforced(ck) ? "no MX host allowed by the MTA-STS policy offers verified TLS"
				       : "no MX host offers TLS with a verified certificate";
	return EX_UNAVAILABLE;
}

/* ---- output ---- */

static void fmt_time(time_t t, char *buf, size_t len)
{
	struct tm tm;
	if (t == 0 || gmtime_r(&t, &tm) == NULL)
		strlcpy_x(buf, "-", len);
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static long days_left(time_t not_after)
{
	time_t now = time(NULL);
	return not_after ? (long)((not_after - now) / 86400) : 0;
}

static const char *fail_name(enum smtp_fail f)
{
	static const char *const n[] = { "connect", "greeting", "tls", "tls-handshake", "lost" };
	return (unsigned)f < ARRAY_LEN(n) ? n[f] : "?";
}

static const char *probe_state(const struct probe *p)
{
	if (!p->started)
		return "error";
	if (!p->done)
		return "timeout";
	return p->ready ? "ok" : fail_name(p->st.fail);
}

/* Print s quoted for key="value" output (" and \ escaped, controls dropped). */
static void put_q(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		if ((unsigned char)*s >= 0x20)
			putchar(*s);
	}
	putchar('"');
}

/* The "mx" lines: the lookup, then one per host probed. */
static void text_mx(const struct check *ck)
{
	char tb[40];
	printf("mx status=%s hosts=%d implicit=%s", ck->mx_done ? dns_status_name(ck->mx_status) : "timeout",
	       ck->nprobes, ck->mx_implicit ? "yes" : "no");
	if (dns_dnssec_on(ck->dns))
		printf(" dnssec=%s", ck->mx_secure ? "secure" : "insecure");
	if (ck->mx_why[0]) {
		printf(" why=");
		put_q(ck->mx_why);
	}
	putchar('\n');
	for (int i = 0; i < ck->nprobes; i++) {
		const struct probe *p = &ck->probes[i];
		const struct tls_verdict *v = &p->st.verdict;
		printf("mx host=%s pref=%d addr=%s port=%d probe=%s", p->host, p->pref, p->addr, p->port,
		       probe_state(p));
		if (p->ready) {
			bool offered = p->st.tls || (p->st.ext & SMTP_EXT_STARTTLS);
			printf(" starttls=%s", offered ? "yes" : "no");
		} else if (p->done && p->st.fail == SMTP_FAIL_TLS_MAY) {
			printf(" starttls=yes");
		}
		if (p->st.tls) {
			fmt_time(v->not_after, tb, sizeof(tb));
			printf(" tls=%s cipher=%s verified=%s verify=", v->version, v->cipher,
			       v->verified ? "yes" : "no");
			put_q(v->verify_text);
			printf(" cn=");
			put_q(v->subject_cn);
			printf(" expires=%s days=%ld", tb, days_left(v->not_after));
		} else if (p->ready) {
			printf(" tls=none");
		}
		if (ck->have_policy && ck->pol.mode != STS_MODE_NONE)
			printf(" sts=%s", p->sts_allowed ? "allowed" : "not-allowed");
		if (p->dnssec) {
			char rr[1024];
			dane_policy_strings(&p->dane, ";", rr, sizeof(rr));
			printf(" dnssec=%s dane=%s", p->secure ? "secure" : "insecure",
			       dane_mode_name(p->dane.mode));
			if (p->dane.mode != DANE_NONE) {
				printf(" tlsa=");
				put_q(p->dane.mode == DANE_FAIL ? p->dane.why : rr);
			}
			if (p->dane.mode == DANE_AUTH && p->done)
				printf(" tlsa_match=%s", p->ready && v->verified ? "yes" : "no");
			if (p->dane.mode == DANE_AUTH && v->dane_match[0])
				printf(" tlsa_matched=\"%s\" depth=%d", v->dane_match, v->dane_depth);
		}
		if (p->done && !p->ready) {
			printf(" error=");
			put_q(p->st.why.text);
		}
		putchar('\n');
	}
}

/* The "mta-sts" lines: the TXT record, then the fetch and the policy. */
static void text_sts(const struct check *ck)
{
	printf("mta-sts txt=%s", !ck->sts_txt_done ? "timeout"
				  : ck->sts_dns == DNS_TEMP ? "temp"
							    : sts_txt_rc_name(ck->sts_rc));
	if (ck->sts_rc == STS_TXT_OK && ck->sts_txt_done)
		printf(" id=%s", ck->sts_id);
	if (ck->sts_record[0]) {
		printf(" record=");
		put_q(ck->sts_record);
	}
	if (ck->sts_err[0] && ck->sts_rc != STS_TXT_OK) {
		printf(" why=");
		put_q(ck->sts_err);
	}
	putchar('\n');
	if (ck->fetch_started) {
		if (ck->https_port && ck->https_port != 443)
			printf("mta-sts url=https://mta-sts.%s:%d/.well-known/mta-sts.txt", ck->domain,
			       ck->https_port);
		else
			printf("mta-sts url=https://mta-sts.%s/.well-known/mta-sts.txt", ck->domain);
		if (!ck->fetch_done) {
			printf(" fetch=timeout tlsrpt=sts-policy-fetch-error\n");
		} else if (ck->fetch_fail != HTTPS_OK) {
			printf(" fetch=%s status=%d tlsrpt=%s why=", https_fail_name(ck->fetch_fail),
			       ck->fetch_status, https_fail_tlsrpt(ck->fetch_fail));
			put_q(ck->fetch_why);
			putchar('\n');
		} else if (!ck->have_policy) {
			printf(" fetch=ok status=%d bytes=%zu policy=invalid tlsrpt=sts-policy-invalid why=",
			       ck->fetch_status, ck->fetch_len);
			put_q(ck->pol_err);
			putchar('\n');
		} else {
			printf(" fetch=ok status=%d bytes=%zu policy=ok mode=%s max_age=%u mx=",
			       ck->fetch_status, ck->fetch_len, sts_mode_name(ck->pol.mode), ck->pol.max_age);
			for (int i = 0; i < ck->pol.n_mx; i++)
				printf("%s%s", i ? "," : "", ck->pol.mx[i]);
			if (ck->pol.n_mx == 0)
				printf("-");
			if (ck->pol.n_bad_mx)
				printf(" bad_mx=%d", ck->pol.n_bad_mx);
			putchar('\n');
		}
	}
}

static void print_text(const struct check *ck, int rc, const char *summary)
{
	printf("domain %s\n", ck->domain);
	text_mx(ck);
	text_sts(ck);
	printf("tlsrpt txt=%s", !ck->rpt_done ? "timeout"
				: ck->rpt_dns == DNS_TEMP ? "temp"
							  : sts_txt_rc_name(ck->rpt_rc));
	if (ck->rpt_rc == STS_TXT_OK) {
		printf(" rua=");
		for (int i = 0; i < ck->rpt.n_rua; i++)
			printf("%s%s", i ? "," : "", ck->rpt.rua[i]);
	} else if (ck->rpt_err[0]) {
		printf(" why=");
		put_q(ck->rpt_err);
	}
	putchar('\n');
	printf("result exit=%d summary=", rc);
	put_q(summary);
	putchar('\n');
}

static void jset_str(json_t *o, const char *k, const char *v)
{
	json_object_set_new(o, k, v ? json_string(v) : json_null());
}

/* "mx": the lookup and the hosts probed. */
static json_t *json_mx(const struct check *ck)
{
	char tb[40];
	json_t *mx = json_object();
	jset_str(mx, "status", ck->mx_done ? dns_status_name(ck->mx_status) : "timeout");
	json_object_set_new(mx, "implicit", json_boolean(ck->mx_implicit));
	jset_str(mx, "why", ck->mx_why[0] ? ck->mx_why : NULL);
	if (dns_dnssec_on(ck->dns))
		json_object_set_new(mx, "dnssec_secure", json_boolean(ck->mx_secure));
	json_t *hosts = json_array();
	for (int i = 0; i < ck->nprobes; i++) {
		const struct probe *p = &ck->probes[i];
		const struct tls_verdict *v = &p->st.verdict;
		json_t *h = json_object();
		jset_str(h, "host", p->host);
		json_object_set_new(h, "pref", json_integer(p->pref));
		jset_str(h, "address", p->addr);
		json_object_set_new(h, "port", json_integer(p->port));
		jset_str(h, "probe", probe_state(p));
		bool offered = p->st.tls || (p->ready && (p->st.ext & SMTP_EXT_STARTTLS)) ||
			       (p->done && p->st.fail == SMTP_FAIL_TLS_MAY);
		json_object_set_new(h, "starttls", p->done ? json_boolean(offered) : json_null());
		if (p->st.tls) {
			json_t *t = json_object();
			jset_str(t, "version", v->version);
			jset_str(t, "cipher", v->cipher);
			json_object_set_new(t, "verified", json_boolean(v->verified));
			jset_str(t, "verify", v->verify_text);
			json_object_set_new(t, "verify_code", json_integer(v->verify_err));
			jset_str(t, "subject_cn", v->subject_cn);
			fmt_time(v->not_after, tb, sizeof(tb));
			jset_str(t, "not_after", v->not_after ? tb : NULL);
			json_object_set_new(t, "days_left", json_integer(days_left(v->not_after)));
			json_object_set_new(h, "tls", t);
		} else {
			json_object_set_new(h, "tls", json_null());
		}
		if (ck->have_policy && ck->pol.mode != STS_MODE_NONE)
			json_object_set_new(h, "sts_allowed", json_boolean(p->sts_allowed));
		else
			json_object_set_new(h, "sts_allowed", json_null());
		if (p->dnssec) {
			char rr[1024];
			dane_policy_strings(&p->dane, "\n", rr, sizeof(rr));
			json_t *dn = json_object();
			json_object_set_new(dn, "secure", json_boolean(p->secure));
			jset_str(dn, "mode", dane_mode_name(p->dane.mode));
			json_t *ra = json_array();
			for (char *q = rr; *q;) {
				size_t l = strcspn(q, "\n");
				json_array_append_new(ra, json_stringn(q, l));
				q += l + (q[l] == '\n');
			}
			json_object_set_new(dn, "tlsa", ra);
			if (p->dane.mode == DANE_AUTH && p->done)
				json_object_set_new(dn, "match", json_boolean(p->ready && v->verified));
			jset_str(dn, "why", p->dane.why[0] ? p->dane.why : NULL);
			json_object_set_new(h, "dane", dn);
		}
		jset_str(h, "error", p->done && !p->ready ? p->st.why.text : NULL);
		json_array_append_new(hosts, h);
	}
	json_object_set_new(mx, "hosts", hosts);
	return mx;
}

/* "mta_sts": the TXT record, the fetch, the policy. */
static json_t *json_sts(const struct check *ck)
{
	json_t *sts = json_object();
	jset_str(sts, "txt", !ck->sts_txt_done ? "timeout"
			     : ck->sts_dns == DNS_TEMP ? "temp"
						       : sts_txt_rc_name(ck->sts_rc));
	jset_str(sts, "id", ck->sts_rc == STS_TXT_OK ? ck->sts_id : NULL);
	jset_str(sts, "record", ck->sts_record[0] ? ck->sts_record : NULL);
	jset_str(sts, "txt_error", ck->sts_err[0] && ck->sts_rc != STS_TXT_OK ? ck->sts_err : NULL);
	if (ck->fetch_started) {
		json_t *f = json_object();
		jset_str(f, "result", !ck->fetch_done ? "timeout" : https_fail_name(ck->fetch_fail));
		json_object_set_new(f, "status", json_integer(ck->fetch_status));
		jset_str(f, "content_type", ck->fetch_type[0] ? ck->fetch_type : NULL);
		json_object_set_new(f, "bytes", json_integer((json_int_t)ck->fetch_len));
		jset_str(f, "error", !ck->fetch_done ? "timeout" : ck->fetch_fail != HTTPS_OK ? ck->fetch_why
									      : NULL);
		const char *rt = !ck->fetch_done			? "sts-policy-fetch-error"
				 : ck->fetch_fail != HTTPS_OK	? https_fail_tlsrpt(ck->fetch_fail)
				 : !ck->have_policy		? "sts-policy-invalid"
								: NULL;
		jset_str(f, "tlsrpt_result", rt);
		json_object_set_new(sts, "fetch", f);
	} else {
		json_object_set_new(sts, "fetch", json_null());
	}
	if (ck->have_policy) {
		json_t *pj = json_object();
		jset_str(pj, "mode", sts_mode_name(ck->pol.mode));
		json_object_set_new(pj, "max_age", json_integer(ck->pol.max_age));
		json_t *a = json_array();
		for (int i = 0; i < ck->pol.n_mx; i++)
			json_array_append_new(a, json_string(ck->pol.mx[i]));
		json_object_set_new(pj, "mx", a);
		json_object_set_new(pj, "bad_mx", json_integer(ck->pol.n_bad_mx));
		json_object_set_new(sts, "policy", pj);
	} else {
		json_object_set_new(sts, "policy", json_null());
	}
	jset_str(sts, "policy_error", ck->pol_err[0] ? ck->pol_err : NULL);
	return sts;
}

static int print_json(const struct check *ck, int rc, const char *summary)
{
	json_t *root = json_object();
	jset_str(root, "domain", ck->domain);
	json_object_set_new(root, "mx", json_mx(ck));
	json_object_set_new(root, "mta_sts", json_sts(ck));
	json_t *rpt = json_object();
	jset_str(rpt, "txt", !ck->rpt_done ? "timeout"
			     : ck->rpt_dns == DNS_TEMP ? "temp"
						       : sts_txt_rc_name(ck->rpt_rc));
	json_t *rua = json_array();
	for (int i = 0; i < ck->rpt.n_rua; i++)
		json_array_append_new(rua, json_string(ck->rpt.rua[i]));
	json_object_set_new(rpt, "rua", rua);
	jset_str(rpt, "error", ck->rpt_err[0] ? ck->rpt_err : NULL);
	json_object_set_new(root, "tlsrpt", rpt);

	json_object_set_new(root, "exit", json_integer(rc));
	jset_str(root, "summary", summary);
	char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (s == NULL)
		return -1;
	puts(s);
	free(s);
	return 0;
}

/* ---- command ---- */

static int check_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_check_opts *o = opts;
	long v;
	switch (ch) {
	case 'P':
		*why = "bad --https-port";
		if (!cmd_parse_long(arg, 1, 65535, &v))
			return -1;
		o->https_port = (int)v;
		return 0;
	case 'T':
		*why = "bad --timeout (seconds, 1-3600)";
		return cmd_parse_long(arg, 1, 3600, &o->timeout_s) ? 0 : -1;
	case 'j':
		o->json = true;
		return 0;
	default:
		return -1;
	}
}

int cmd_check_parse(int argc, char **argv, struct cmd_check_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_DNS, CMD_OPT_CA, CMD_OPT_PORT, CMD_OPT_HELO, CMD_OPT_LOG,
		CMD_OPT_HELP,
		{ "https-port", required_argument, NULL, 'P' }, { "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' }, CMD_OPT_END,
	};
	*o = (struct cmd_check_opts){ .timeout_s = 30 };
	int first, rc = cmd_parse(argc, argv, "c:h", longs, &o->c, check_flag, o, &first);
	if (rc != 0)
		return rc;
	if (first != argc - 1)
		o->c.why = "one DOMAIN is required";
	else if (cmd_domain_arg(argv[first], o->domain, sizeof(o->domain)) != 0)
		o->c.why = "bad DOMAIN";
	return o->c.why != NULL ? EX_USAGE : 0;
}

/* Stop everything, let QUITs finish and the kernel give back every buffer
 * (bounded: 2 s), then free the resolver. */
static void drain(struct check *ck)
{
	ck->finishing = true;
	for (int i = 0; i < ck->nprobes; i++) {
		if (ck->probes[i].s) {
			smtp_session_free(ck->probes[i].s);
			ck->probes[i].s = NULL;
		}
	}
	if (ck->hr) {
		https_cancel(ck->hr);
		ck->hr = NULL;
	}
	uint64_t until = loop_now(ck->l) + 2000;
	bool dns_gone = false, ran_after = false;
	for (;;) {
		if (ck->live == 0 && !dns_gone) {
			dns_free(ck->dns); /* the loop runs at least once more (dns.h) */
			ck->dns = NULL;
			dns_gone = true;
		}
		if ((dns_gone && ran_after && loop_inflight(ck->l) == 0) || loop_now(ck->l) >= until)
			break;
		ran_after = dns_gone;
		loop_timer_arm(ck->l, &ck->deadline, 10);
		loop_run(ck->l);
	}
	loop_timer_stop(ck->l, &ck->deadline);
	dns_free(ck->dns);
	ck->dns = NULL;
}

/* The loop, the resolver and the TLS contexts. 0 or an exit status (said). */
static int check_open(struct check *ck)
{
	int lerr = 0;
	char err[512];
	ck->l = loop_new(1024, &lerr);
	if (ck->l == NULL) {
		fprintf(stderr, "mxsend check: io_uring unavailable: %s\n", strerror(-lerr));
		return EX_OSERR;
	}
	struct dns_opts dopt = { .servers = ck->cfg->dns, .timeout_ms = 2000, .tries = 2,
				 .dnssec = (enum dns_dnssec)ck->cfg->dane,
				 .trusted = ck->cfg->dnssec_trusted };
	ck->dns = dns_new(ck->l, &dopt, err, sizeof(err));
	struct tlscache_opts topt = { .ca_file = ck->cfg->ca_file, .min_version = ck->cfg->min_version,
				      .max_sessions = 0 };
	ck->tc = ck->dns ? tlscache_new(&topt, err, sizeof(err)) : NULL;
	if (ck->dns == NULL || ck->tc == NULL) {
		fprintf(stderr, "mxsend check: %s\n", err);
		return EX_CONFIG;
	}
	return 0;
}

/* The three lookups at once (MX, _mta-sts, _smtp._tls), and what they start
 * (probes, the policy fetch), until all are done or the deadline. */
static void check_look(struct check *ck, long timeout_s)
{
	char name[300];
	ck->pending = 3;
	dns_resolve_mx(ck->dns, ck->domain, on_mx, ck);
	snprintf(name, sizeof(name), "_mta-sts.%s", ck->domain);
	dns_resolve_txt(ck->dns, name, on_sts_txt, ck);
	snprintf(name, sizeof(name), "_smtp._tls.%s", ck->domain);
	dns_resolve_txt(ck->dns, name, on_rpt_txt, ck);
	loop_timer_init(&ck->deadline, on_deadline);
	loop_timer_arm(ck->l, &ck->deadline, (uint64_t)timeout_s * 1000);
	loop_run(ck->l);
	loop_timer_stop(ck->l, &ck->deadline);
	if (ck->timed_out)
		log_info("evt=check_timeout domain=%s after_s=%ld", ck->domain, timeout_s);
}

/* The verdict, printed; returns the exit status. */
static int check_report(struct check *ck, bool json)
{
	if (ck->have_policy)
		for (int i = 0; i < ck->nprobes; i++)
			ck->probes[i].sts_allowed = sts_policy_allows(&ck->pol, ck->probes[i].host);
	const char *summary = "";
	int rc = verdict(ck, &summary);
	if (json) {
		if (print_json(ck, rc, summary) != 0)
			rc = EX_SOFTWARE;
	} else {
		print_text(ck, rc, summary);
	}
	fflush(stdout);
	return rc;
}

int cmd_check_run(const struct cmd_check_opts *o)
{
	struct config cfg;
	int rc = cmd_setup(&cfg, &o->c);
	if (rc != 0)
		return rc;
	struct check *ck = xcalloc(1, sizeof(*ck));
	strlcpy_x(ck->domain, o->domain, sizeof(ck->domain));
	ck->cfg = &cfg;
	ck->port = o->c.port;
	ck->https_port = o->https_port;
	ck->fetch_timeout_ms = (uint32_t)(o->timeout_s * 1000 * 2 / 3);
	rc = check_open(ck);
	if (rc == 0) {
		check_look(ck, o->timeout_s);
		rc = check_report(ck, o->json);
		drain(ck);
	}
	dns_free(ck->dns);
	for (int i = 0; i < ck->nprobes; i++)
		dane_host_fini(&ck->probes[i].dane);
	tlscache_free(ck->tc);
	loop_free(ck->l);
	sts_policy_fini(&ck->pol);
	free(ck);
	config_fini(&cfg);
	return rc;
}

static int cmd_check(int argc, char **argv)
{
	struct cmd_check_opts o;
	int rc = cmd_check_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_check_def, rc, o.c.why) : cmd_check_run(&o);
}

const struct cmd_def cmd_check_def = {
	"check", cmd_check,
	"check [-c FILE] [--dns A[:P]] [--ca FILE] [--port N] [--https-port N]\n"
	"[--timeout S] [--helo NAME] [--log LEVEL] [--json] DOMAIN",
};
