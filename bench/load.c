/* load.c: mxload, the delivery load driver. It feeds the worker pool directly
 * (no Redis) with N messages of S bytes to D domains, keeps C requests in
 * flight, and prints one key=value summary line: throughput, mxsend CPU per
 * message (getrusage of this process: all workers included), RSS, latency
 * percentiles, TLS resumption and connection reuse. bench/run.sh drives it.
 *
 *   mxload --dns 127.0.2.53:PORT --ca ca.pem --port 2525 --domains 100 \
 *          --messages 20000 --size 4096 --concurrency 200 --workers 1 \
 *          [--rcpts R] [--tls LEVEL] [--no-reuse] [--no-resume] [--no-verify-cache]
 *          [--domain-fmt d%u.bench.test] [--config FILE]
 *
 * DKIM (issue 19): a --config with a [dkim mxload.test] section signs every
 * message as `mxsend send` does (signer_sign, once per message, in this
 * thread: the feeder's; `mxsend run` signs on threads: bench qk1), whatever
 * --rcpts says; the line then also says
 * dkim=d=.. s=.. and sign_us (OpenSSL's own cost of signing one message of
 * that size with that key: SHA-256 over the message's bytes, which any DKIM
 * signer pays for bh=, and one signature, EVP_DigestSign of a SHA-256 hash;
 * median of 5 runs of 50: the yardstick of issue 19's target, measured in the
 * same run).
 */
#include <getopt.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/config.h"
#include "sender/deliver.h"
#include "sender/loop.h"
#include "sender/signer.h"
#include "sender/util.h"
#include "sender/workers.h"

struct load;

struct slot {
	struct deliver_req req;
	struct load *ld;
	char domain[128];
	char *rcpt_buf;
	const char **rcpts;
	uint64_t t0;
	struct signed_msg sm; /* DKIM: this request's signatures (signer.h) */
};

struct load {
	struct loop *l;
	struct workers *ws;
	unsigned long total, submitted, done, ndomains, nrcpt;
	const char *fmt;
	const struct config *cfg;
	bool sign;
	char dkim[SIGNER_RESULT_MAX];
	char *msg;
	size_t msglen;
	unsigned long delivered, deferred, bounced, tls13, tls12, resumed, reused, verified;
	uint32_t *lat; /* per message, ms */
	unsigned long nlat;
	unsigned long inflight, peak;
	char last_fail[640];
};

static void submit(struct load *ld, struct slot *s);

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* OpenSSL's own CPU cost of one DKIM signature with the key in path: RSA
 * PKCS#1 v1.5 over SHA-256, or Ed25519 over a SHA-256 hash (RFC 8463), of a
 * 32-byte input; the median of 5 runs of 50. -1 if the key cannot be used. */
static double sign_cost_us(const char *path, size_t msglen)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (pk == NULL)
		return -1;
	bool ed = EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519;
	unsigned char in[32] = { 1 }, sig[1024], bh[SHA256_DIGEST_LENGTH];
	unsigned char *msg = xcalloc(msglen + 1, 1); /* the body hash's input */
	double runs[5];
	for (int r = 0; r < 5; r++) {
		double t0 = now_us();
		for (int i = 0; i < 50; i++) {
			EVP_MD_CTX *md = EVP_MD_CTX_new();
			size_t sl = sizeof(sig);
			unsigned char h[SHA256_DIGEST_LENGTH];
			SHA256(msg, msglen, bh);
			in[0] = bh[0]; /* (used: not optimised away) */
			SHA256(in, sizeof(in), h);
			if (md == NULL || EVP_DigestSignInit(md, NULL, ed ? NULL : EVP_sha256(), NULL, pk) != 1 ||
			    EVP_DigestSign(md, sig, &sl, ed ? h : in, 32) != 1) {
				EVP_MD_CTX_free(md);
				EVP_PKEY_free(pk);
				free(msg);
				return -1;
			}
			EVP_MD_CTX_free(md);
		}
		runs[r] = (now_us() - t0) / 50;
	}
	EVP_PKEY_free(pk);
	free(msg);
	qsort(runs, 5, sizeof(runs[0]), cmp_d);
	return runs[2];
}

static void rcpt_done(void *arg, int idx, const struct job_outcome *r)
{
	struct slot *s = arg;
	struct load *ld = s->ld;
	(void)idx;
	if (r->status == JOB_DELIVERED)
		ld->delivered++;
	else if (r->status == JOB_BOUNCED)
		ld->bounced++;
	else
		ld->deferred++;
	if (r->status != JOB_DELIVERED)
		snprintf(ld->last_fail, sizeof(ld->last_fail), "%d %s %s", r->code, r->dsn, r->reply);
	if (strcmp(r->tls, "TLSv1.3") == 0)
		ld->tls13++;
	else if (strcmp(r->tls, "TLSv1.2") == 0)
		ld->tls12++;
	ld->resumed += r->resumed && !r->reused;
	ld->reused += r->reused;
	ld->verified += r->verified;
}

static void req_done(void *arg)
{
	struct slot *s = arg;
	struct load *ld = s->ld;
	ld->done++;
	ld->inflight--;
	ld->lat[ld->nlat++] = (uint32_t)(loop_now(ld->l) - s->t0);
	if (ld->submitted < ld->total)
		submit(ld, s);
	else if (ld->done == ld->total)
		loop_stop(ld->l);
}

static void submit(struct load *ld, struct slot *s)
{
	unsigned long n = ld->submitted++;
	snprintf(s->domain, sizeof(s->domain), ld->fmt, (unsigned)(n % ld->ndomains));
	for (unsigned long k = 0; k < ld->nrcpt; k++)
		snprintf(s->rcpt_buf + k * 160, 160, "u%lu.%lu@%s", n, k, s->domain);
	s->req.domain = s->domain;
	s->t0 = loop_now(ld->l);
	if (ld->sign) { /* once per message, before the workers */
		char err[300];
		signed_msg_free(&s->sm);
		int rc = signer_sign(ld->cfg, ld->msg, ld->msglen, NULL, (int64_t)time(NULL), &s->sm, ld->dkim,
				     err, sizeof(err));
		if (rc != 0 || s->sm.pre == NULL) {
			fprintf(stderr, "mxload: DKIM: %s\n", rc != 0 ? err : "no [dkim mxload.test] key");
			exit(70);
		}
		s->req.wire = &s->sm.wire;
	}
	ld->inflight++;
	if (ld->inflight > ld->peak)
		ld->peak = ld->inflight;
	workers_submit(ld->ws, &s->req);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static long proc_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long v = -1;
	size_t kl = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0)
			v = strtol(line + kl, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dns", required_argument, NULL, 'd' },      { "ca", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },     { "domains", required_argument, NULL, 'D' },
		{ "messages", required_argument, NULL, 'n' }, { "size", required_argument, NULL, 's' },
		{ "concurrency", required_argument, NULL, 'C' }, { "workers", required_argument, NULL, 'w' },
		{ "rcpts", required_argument, NULL, 'r' },    { "tls", required_argument, NULL, 't' },
		{ "no-reuse", no_argument, NULL, 'R' },       { "no-resume", no_argument, NULL, 'S' },
		{ "domain-fmt", required_argument, NULL, 'f' }, { "config", required_argument, NULL, 'c' },
		{ "no-verify-cache", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	if (getenv("MXLOAD_TRIM") == NULL) /* A/B: default glibc trimming */
		util_tune_malloc();
	util_raise_nofile();
	struct deliver_opts dopt = { .tls_level = -1 };
	unsigned long total = 1000, ndomains = 1, size = 4096, conc = 100, nrcpt = 1;
	int nworkers = 1;
	bool no_reuse = false;
	const char *fmt = "d%u.bench.test", *cfile = NULL;
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'd': dopt.dns = optarg; break;
		case 'a': dopt.ca_file = optarg; break;
		case 'p': dopt.port = atoi(optarg); break;
		case 'D': ndomains = strtoul(optarg, NULL, 10); break;
		case 'n': total = strtoul(optarg, NULL, 10); break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'C': conc = strtoul(optarg, NULL, 10); break;
		case 'w': nworkers = atoi(optarg); break;
		case 'r': nrcpt = strtoul(optarg, NULL, 10); break;
		case 't': dopt.tls_level = tls_level_parse(optarg); break;
		case 'R': no_reuse = true; break;
		case 'S': dopt.no_resumption = true; break;
		case 'V': dopt.no_verify_cache = true; break;
		case 'f': fmt = optarg; break;
		case 'c': cfile = optarg; break;
		default: fprintf(stderr, "mxload: bad option (see the comment at the top of bench/load.c)\n"); return 64;
		}
	}
	if (total == 0 || ndomains == 0 || conc == 0 || nrcpt == 0 || nrcpt > 100) {
		fprintf(stderr, "mxload: bad numbers\n");
		return 64;
	}
	struct config cfg;
	char err[512];
	if (cfile ? config_load(&cfg, cfile, err, sizeof(err)) : (config_defaults(&cfg), 0)) {
		fprintf(stderr, "mxload: %s\n", err);
		return 78;
	}
	double sign_us = 0;
	if (cfg.n_dkims > 0 && (sign_us = sign_cost_us(cfg.dkims[0].key_file, size)) < 0) {
		fprintf(stderr, "mxload: cannot time signatures with %s\n", cfg.dkims[0].key_file);
		return 78;
	}
	if (no_reuse)
		cfg.idle_timeout_ms = 0;
	cfg.reuse_max = 0;
	if (conc > total)
		conc = total;

	struct load ld = { .total = total, .ndomains = ndomains, .nrcpt = nrcpt, .fmt = fmt,
			   .cfg = &cfg, .sign = cfg.n_dkims > 0, .dkim = "none" };
	ld.msg = xmalloc(size + 256);
	int hl = snprintf(ld.msg, 256, "From: bench@mxload.test\r\nTo: you@bench.test\r\nSubject: mxload\r\n\r\n");
	for (size_t i = (size_t)hl; i < size; i++)
		ld.msg[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' : (char)('a' + i % 26);
	ld.msglen = size > (size_t)hl ? size : (size_t)hl;
	if (ld.msglen >= (size_t)hl + 2) { /* CRLF lines throughout, as most applications send */
		ld.msg[ld.msglen - 2] = '\r';
		ld.msg[ld.msglen - 1] = '\n';
	}
	ld.lat = xcalloc(total, sizeof(*ld.lat));
	int e = 0;
	ld.l = loop_new(1024, &e);
	if (ld.l == NULL) {
		fprintf(stderr, "mxload: io_uring unavailable\n");
		return 71;
	}
	ld.ws = workers_new(ld.l, nworkers, &cfg, &dopt, err, sizeof(err));
	if (ld.ws == NULL) {
		fprintf(stderr, "mxload: %s\n", err);
		return 78;
	}
	long rss0 = proc_kb("VmRSS:");
	struct slot *slots = xcalloc(conc, sizeof(*slots));
	double u0, s0, c0 = cpu_s(&u0, &s0);
	uint64_t t0 = mono_ms();
	for (unsigned long i = 0; i < conc; i++) {
		struct slot *s = &slots[i];
		s->ld = &ld;
		s->rcpt_buf = xmalloc(nrcpt * 160);
		s->rcpts = xcalloc(nrcpt, sizeof(*s->rcpts));
		for (unsigned long k = 0; k < nrcpt; k++)
			s->rcpts[k] = s->rcpt_buf + k * 160;
		s->req = (struct deliver_req){ .from = "bench@mxload.test",
					       .rcpts = s->rcpts,
					       .nrcpt = (int)nrcpt,
					       .data = ld.msg,
					       .len = ld.msglen,
					       .tls_min_level = -1,
					       .rcpt_done = rcpt_done,
					       .done = req_done,
					       .arg = s };
		submit(&ld, s);
	}
	loop_run(ld.l);
	uint64_t t1 = mono_ms();
	double u1, s1, c1 = cpu_s(&u1, &s1);
	long hwm = proc_kb("VmHWM:"), rss = proc_kb("VmRSS:");
	struct deliver_stats st;
	workers_get_stats(ld.ws, &st);
	qsort(ld.lat, ld.nlat, sizeof(*ld.lat), cmp_u32);
	double el = (double)(t1 - t0) / 1000.0;
	double msgs = (double)total;
	printf("messages=%lu rcpts=%lu domains=%lu size=%lu concurrency=%lu workers=%d "
	       "elapsed_s=%.3f msgs_per_s=%.0f cpu_s=%.3f cpu_us_per_msg=%.1f user_us_per_msg=%.1f "
	       "sys_us_per_msg=%.1f rss_kb=%ld hwm_kb=%ld "
	       "base_rss_kb=%ld delivered=%lu deferred=%lu bounced=%lu tls13=%lu tls12=%lu verified=%lu "
	       "resumed=%lu reused=%lu opened=%lu slot_waits=%lu chains_verified=%lu chains_cached=%lu "
	       "p50_ms=%u p99_ms=%u peak_inflight=%lu",
	       total, nrcpt, ndomains, size, conc, workers_count(ld.ws), el, msgs / (el > 0 ? el : 1e-9),
	       c1 - c0, (c1 - c0) * 1e6 / msgs, (u1 - u0) * 1e6 / msgs, (s1 - s0) * 1e6 / msgs, rss, hwm, rss0, ld.delivered, ld.deferred, ld.bounced,
	       ld.tls13, ld.tls12, ld.verified, ld.resumed, ld.reused, st.opened, st.slot_waits,
	       st.chains_verified, st.chains_cached,
	       ld.lat[ld.nlat / 2], ld.lat[ld.nlat ? (ld.nlat * 99) / 100 : 0], ld.peak);
	if (ld.sign)
		printf(" sign_us=%.1f", sign_us);
	putchar('\n');
	if (ld.sign)
		printf("dkim=\"%s\"\n", ld.dkim);
	if (ld.last_fail[0])
		printf("last_failure=\"%s\"\n", ld.last_fail);
	fflush(stdout);
	workers_free(ld.ws, 2000);
	for (unsigned long i = 0; i < conc; i++) {
		free(slots[i].rcpt_buf);
		signed_msg_free(&slots[i].sm);
		free(slots[i].rcpts);
	}
	free(slots);
	free(ld.lat);
	free(ld.msg);
	loop_free(ld.l);
	config_fini(&cfg);
	return ld.delivered == total * nrcpt ? 0 : 1;
}
