/* cmd_send.c: `mxsend send`: deliver one message directly (no Redis) and print
 * one line per recipient. A diagnostic tool for operators and the harness of
 * the delivery tests.
 *
 *   RCPT STATUS CODE DSN mx=HOST[IP]:PORT tls=VERSION cipher=NAME verified=yes|no policy=P reply="..."
 *
 * Exit status (sysexits): 0 all delivered, 75 some deferred and none bounced,
 * 69 some bounced, 64 usage, 65 bad message or address, 66 unreadable message,
 * 78 bad config.
 *
 * TLSRPT (DESIGN "Command line"): when the config names Redis ([redis] url)
 * and [tls] tlsrpt is on, the TLS session attempts are kept in memory and,
 * once the deliveries are done (the ring is idle), added to the counters in
 * Redis with synchronous hiredis, as `mxsend run` adds its own. Redis
 * unreachable: a warning; the exit status stays the deliveries'. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "queue/tlsrpt.h"
#include "sender/cmds.h"
#include "sender/config.h"
#include "sender/deliver.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/msg.h"
#include "sender/util.h"
#include "queue/job.h"

#define MAX_RCPTS 1000
#define MAX_TLS_EVENTS 4096 /* TLS session attempts kept for TLSRPT; more are not counted */

struct send_ctx {
	struct loop *l;
	int pending;
	struct job_outcome *res; /* per recipient, in command-line order */
	bool *have;
	struct deliver_tls_event *ev; /* TLS session attempts, for the TLSRPT counters */
	int nev, cap_ev, lost_ev;
};

struct domain_req {
	struct deliver_req req;
	struct send_ctx *ctx;
	const char **rcpts;
	int *idx; /* index in the command line order */
	char domain[256];
};

static void rcpt_done(void *arg, int i, const struct job_outcome *r)
{
	struct domain_req *dr = arg;
	dr->ctx->res[dr->idx[i]] = *r;
	dr->ctx->have[dr->idx[i]] = true;
}

static void req_done(void *arg)
{
	struct domain_req *dr = arg;
	if (--dr->ctx->pending == 0)
		loop_stop(dr->ctx->l);
}

static void tls_event(void *arg, const struct deliver_tls_event *e)
{
	struct send_ctx *ctx = arg;
	if (ctx->nev == MAX_TLS_EVENTS) {
		ctx->lost_ev++;
		return;
	}
	if (ctx->nev == ctx->cap_ev) {
		ctx->cap_ev = ctx->cap_ev ? ctx->cap_ev * 2 : 8;
		ctx->ev = xrealloc(ctx->ev, (size_t)ctx->cap_ev * sizeof(*ctx->ev));
	}
	ctx->ev[ctx->nev++] = *e;
}

/* Add the kept TLS session attempts to the TLSRPT counters in Redis. A
 * failure is a warning: the mail went (or not) whatever Redis says. */
static void tlsrpt_flush(const struct config *cfg, struct send_ctx *ctx)
{
	char err[512];
	if (ctx->lost_ev > 0)
		fprintf(stderr, "mxsend send: warning: %d TLS session attempts not counted (more than %d)\n",
			ctx->lost_ev, MAX_TLS_EVENTS);
	if (ctx->nev == 0)
		return;
	struct tlsrpt_store *st = tlsrpt_store_open(cfg->redis_url, cfg->redis_password, NULL, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "mxsend send: warning: TLSRPT counters not written: %s\n", err);
		return;
	}
	for (int i = 0; i < ctx->nev; i++) {
		const struct deliver_tls_event *e = &ctx->ev[i];
		struct tlsrpt_event te = {
			.policy_domain = e->policy_domain, .policy_type = e->policy_type,
			.policy_id = e->policy_id, .policy_mode = e->policy_mode, .policy_mx = e->policy_mx,
			.max_age = e->max_age, .mx = e->mx, .ip = e->ip, .sending_ip = "",
			.result = e->result, .detail = e->detail, .when_ms = e->when_ms,
		};
		if (tlsrpt_store_record(st, &te, err, sizeof(err)) != 0) {
			fprintf(stderr, "mxsend send: warning: TLSRPT counters not written: %s\n", err);
			break;
		}
	}
	tlsrpt_store_close(st);
}

/* Read a whole file (or stdin for "-"). Returns 0 or -errno. */
static int slurp(const char *path, char **out, size_t *len)
{
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	size_t cap = 65536, n = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (n == cap)
			buf = xrealloc(buf, cap *= 2);
		ssize_t r = read(fd, buf + n, cap - n);
		if (r == 0)
			break;
		if (r == -1) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			free(buf);
			if (fd != STDIN_FILENO)
				close(fd);
			return e;
		}
		n += (size_t)r;
	}
	if (fd != STDIN_FILENO)
		close(fd);
	*out = buf;
	*len = n;
	return 0;
}

/* Print a server's (or DNS's) text: escaped (job_escape), so no control byte
 * reaches the terminal; quoted, a quote and a backslash escaped too. */
static void print_text(const char *s, bool quoted)
{
	size_t n = strlen(s), e = job_escape(NULL, 0, s, n, quoted ? JOB_ESC_QUOTED : 0);
	char *buf = xmalloc(e + 1);
	job_escape(buf, e + 1, s, n, quoted ? JOB_ESC_QUOTED : 0);
	if (quoted)
		putchar('"');
	fputs(buf, stdout);
	if (quoted)
		putchar('"');
	free(buf);
}

static void print_result(const char *rcpt, const struct job_outcome *r)
{
	printf("%s %s %d ", rcpt, job_status_name(r->status), r->code);
	print_text(r->dsn, false);
	if (r->mx[0]) {
		fputs(" mx=", stdout);
		print_text(r->mx, false);
		printf("[%s]:%d ", r->ip, r->port);
	} else {
		printf(" mx=- ");
	}
	printf("tls=%s cipher=%s verified=%s policy=%s reply=", r->tls[0] ? r->tls : "none",
	       r->cipher[0] ? r->cipher : "-", r->verified ? "yes" : "no", r->policy);
	print_text(r->reply, true);
	putchar('\n');
}

static void stopped(void *arg)
{
	loop_stop(arg);
}

static int send_usage(const char *why)
{
	if (why)
		fprintf(stderr, "mxsend send: %s\n", why);
	fprintf(stderr, "usage: mxsend send [-c FILE] [--dns A[:P]] [--ca FILE] [--tls none|may|encrypt|verify]\n"
			"                   [--port N] [--helo NAME] [--log LEVEL] --from A --to B [--to C ...] MSG|-\n");
	return EX_USAGE;
}

int cmd_send(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "dns", required_argument, NULL, 'd' },
		{ "ca", required_argument, NULL, 'a' },     { "tls", required_argument, NULL, 't' },
		{ "port", required_argument, NULL, 'p' },   { "from", required_argument, NULL, 'f' },
		{ "to", required_argument, NULL, 'r' },     { "helo", required_argument, NULL, 'H' },
		{ "log", required_argument, NULL, 'L' },    { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cfile = NULL, *from = NULL, *helo = NULL;
	const char *rcpts[MAX_RCPTS];
	int nrcpt = 0;
	struct deliver_opts dopt = { .tls_level = -1 };
	int loglvl = -1;
	optind = 1;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': cfile = optarg; break;
		case 'd':
			if (config_check_dns(optarg) < 0)
				return send_usage("bad --dns (comma-separated addr, addr:port or [ipv6]:port; port 1..65535)");
			dopt.dns = optarg;
			break;
		case 'a': dopt.ca_file = optarg; break;
		case 't':
			dopt.tls_level = tls_level_parse(optarg);
			if (dopt.tls_level < 0)
				return send_usage("bad --tls value (none|may|encrypt|verify)");
			break;
		case 'p': {
			char *end;
			long p = strtol(optarg, &end, 10);
			if (*end || p <= 0 || p > 65535)
				return send_usage("bad --port");
			dopt.port = (int)p;
			break;
		}
		case 'f': from = optarg; break;
		case 'r':
			if (nrcpt == MAX_RCPTS)
				return send_usage("too many recipients");
			rcpts[nrcpt++] = optarg;
			break;
		case 'H':
			if (config_check_word(optarg) < 0)
				return send_usage("bad --helo (a single word: no blanks or control characters)");
			helo = optarg;
			break;
		case 'L':
			loglvl = log_level_parse(optarg);
			if (loglvl < 0)
				return send_usage("bad --log level");
			break;
		case 'v': loglvl = LOG_INFO; break;
		case 'h': send_usage(NULL); return 0;
		default: return send_usage(NULL);
		}
	}
	if (from == NULL || nrcpt == 0 || optind != argc - 1)
		return send_usage(from == NULL ? "--from is required" : nrcpt == 0 ? "--to is required" : "one message file (or -) is required");

	struct config cfg;
	int rc = cmd_load_config(&cfg, cfile);
	if (rc != 0) {
		config_fini(&cfg);
		return rc;
	}
	log_set_level(loglvl >= 0 ? (enum log_level)loglvl : (enum log_level)cfg.log_level);
	if (helo) {
		free(cfg.helo);
		cfg.helo = xstrdup(helo);
	}

	/* Envelope: validate every address before touching the network. */
	struct msg_addr fa;
	const char *err = NULL;
	char fromx[600] = "";
	if (from[0] != '\0' && strcmp(from, "<>") != 0) {
		if (msg_addr_parse(from, &fa, &err) != 0) {
			char q[256];
			fprintf(stderr, "mxsend send: bad --from address \"%s\": %s\n",
				log_q(q, sizeof(q), from), err);
			config_fini(&cfg);
			return EX_DATAERR;
		}
		msg_addr_format(&fa, fromx, sizeof(fromx));
	}
	struct msg_addr *ra = xcalloc((size_t)nrcpt, sizeof(*ra));
	char (*rx)[600] = xcalloc((size_t)nrcpt, sizeof(*rx));
	for (int i = 0; i < nrcpt; i++) {
		if (msg_rcpt_parse(rcpts[i], &ra[i], &err) != 0) {
			char q[256];
			fprintf(stderr, "mxsend send: bad --to address \"%s\": %s\n",
				log_q(q, sizeof(q), rcpts[i]), err);
			free(ra);
			free(rx);
			config_fini(&cfg);
			return EX_DATAERR;
		}
		msg_addr_format(&ra[i], rx[i], sizeof(rx[i]));
	}
	char *data = NULL;
	size_t len = 0;
	int r = slurp(argv[optind], &data, &len);
	if (r < 0) {
		fprintf(stderr, "mxsend send: cannot read message %s: %s\n", argv[optind], strerror(-r));
		free(ra);
		free(rx);
		config_fini(&cfg);
		return EX_NOINPUT;
	}
	if (len == 0 || len > cfg.max_message_size) {
		fprintf(stderr, "mxsend send: message is %s (%zu bytes, limit %llu)\n",
			len == 0 ? "empty" : "too large", len, (unsigned long long)cfg.max_message_size);
		free(data);
		free(ra);
		free(rx);
		config_fini(&cfg);
		return EX_DATAERR;
	}

	char why[64];
	if (job_data_check(data, len, why, sizeof(why)) != 0) {
		fprintf(stderr, "mxsend send: message %s: %s\n", argv[optind], why);
		free(data);
		free(ra);
		free(rx);
		config_fini(&cfg);
		return EX_DATAERR;
	}

	int lerr = 0;
	struct loop *l = loop_new(4096, &lerr);
	if (l == NULL) {
		fprintf(stderr, "mxsend send: io_uring unavailable: %s\n", strerror(-lerr));
		return EX_OSERR;
	}
	char e2[512];
	struct send_ctx ctx = { .l = l };
	if (cfg.redis_named && cfg.tlsrpt) {
		dopt.on_tls = tls_event;
		dopt.on_tls_arg = &ctx;
	}
	struct deliver *d = deliver_new(l, &cfg, &dopt, e2, sizeof(e2));
	if (d == NULL) {
		fprintf(stderr, "mxsend send: %s\n", e2);
		loop_free(l);
		return EX_CONFIG;
	}

	/* One request per recipient domain, recipients kept in command-line order. */
	ctx.res = xcalloc((size_t)nrcpt, sizeof(*ctx.res));
	ctx.have = xcalloc((size_t)nrcpt, sizeof(*ctx.have));
	struct domain_req *drs = xcalloc((size_t)nrcpt, sizeof(*drs));
	int ndr = 0;
	for (int i = 0; i < nrcpt; i++) {
		struct domain_req *dr = NULL;
		for (int k = 0; k < ndr; k++)
			if (strcmp(drs[k].domain, ra[i].domain) == 0)
				dr = &drs[k];
		if (dr == NULL) {
			dr = &drs[ndr++];
			strlcpy_x(dr->domain, ra[i].domain, sizeof(dr->domain));
			dr->rcpts = xcalloc((size_t)nrcpt, sizeof(*dr->rcpts));
			dr->idx = xcalloc((size_t)nrcpt, sizeof(*dr->idx));
			dr->ctx = &ctx;
		}
		dr->rcpts[dr->req.nrcpt] = rx[i];
		dr->idx[dr->req.nrcpt] = i;
		dr->req.nrcpt++;
	}
	for (int k = 0; k < ndr; k++) {
		struct deliver_req *q = &drs[k].req;
		q->from = fromx;
		q->domain = drs[k].domain;
		q->rcpts = drs[k].rcpts;
		q->data = data;
		q->len = len;
		q->tls_min_level = -1;
		q->rcpt_done = rcpt_done;
		q->done = req_done;
		q->arg = &drs[k];
		if (deliver_submit(d, q) == 0)
			ctx.pending++;
	}
	if (ctx.pending > 0)
		loop_run(l);

	int bounced = 0, deferred = 0;
	for (int i = 0; i < nrcpt; i++) {
		if (!ctx.have[i]) {
			memset(&ctx.res[i], 0, sizeof(ctx.res[i]));
			ctx.res[i].status = JOB_DEFERRED;
			ctx.res[i].code = 451;
			strlcpy_x(ctx.res[i].dsn, "4.3.0", sizeof(ctx.res[i].dsn));
			strlcpy_x(ctx.res[i].reply, "not attempted", sizeof(ctx.res[i].reply));
		}
		print_result(rx[i], &ctx.res[i]);
		bounced += ctx.res[i].status == JOB_BOUNCED;
		deferred += ctx.res[i].status == JOB_DEFERRED || ctx.res[i].status == JOB_HELD;
	}
	fflush(stdout);
	/* Sessions said QUIT after their last transaction; give them up to the
	 * QUIT timeout (at most 2 s) to hear 221 so servers see a clean close. */
	deliver_quiesce(d, cfg.timeouts.quit < 2000 ? cfg.timeouts.quit : 2000, stopped, l);
	loop_run(l);
	tlsrpt_flush(&cfg, &ctx);
	deliver_free(d);
	loop_drain(l, 1000); /* connections and watchers let go of, then freed */
	loop_free(l);
	for (int k = 0; k < ndr; k++) {
		free(drs[k].rcpts);
		free(drs[k].idx);
	}
	free(drs);
	free(ctx.res);
	free(ctx.have);
	free(ctx.ev);
	free(ra);
	free(rx);
	free(data);
	config_fini(&cfg);
	return bounced ? EX_UNAVAILABLE : deferred ? EX_TEMPFAIL : EX_OK;
}
