/* sender/cmd/send.c: `mxsend send`: deliver one message directly (no Redis) and print
 * one line per recipient. A diagnostic tool for operators and the harness of
 * the delivery tests.
 *
 *   RCPT STATUS CODE DSN mx=HOST[IP]:PORT tls=VERSION cipher=NAME verified=yes|no policy=P reply="..." dkim=D source=S
 *
 * D: "d=DOMAIN s=SELECTOR[; d=... s=...]" per DKIM signature, or "none" (signer.h;
 * --dkim DOMAIN|no as a job's `dkim` field). S: NAME[ADDRESS] of the egress
 * source, or "-" (--pool NAME as a job's `pool` field; an unknown pool is 64).
 *
 * Exit status (sysexits): 0 all delivered, 75 some deferred and none bounced,
 * 69 some bounced, 64 usage, 65 bad message or address, 66 unreadable message,
 * 78 bad config.
 *
 * cmd_send_parse (send.h) reads the flags; cmd_send_run checks the envelope
 * and the message, then deliver_all delivers on a loop of its own.
 *
 * TLSRPT (DESIGN "Command line"): when the config names Redis ([redis] url)
 * and [tls] tlsrpt is on, the TLS session attempts are kept in memory and,
 * once the deliveries are done (the ring is idle), added to the counters in
 * Redis with synchronous hiredis, as `mxsend run` adds its own. Redis
 * unreachable: a warning; the exit status stays the deliveries'. */
#include "sender/shaping.h"
#include "sender/cmd/send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "queue/queue.h"
#include "queue/tlsrpt_store.h"
#include "sender/config.h"
#include "sender/deliver.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/msg.h"
#include "sender/signer.h"
#include "sender/util.h"
#include "queue/job.h"

#define MAX_TLS_EVENTS 4096 /* TLS session attempts kept for TLSRPT; more are not counted */

struct send_ctx {
	struct loop *l;
	int pending;
	struct job_outcome *res; /* per recipient, in command-line order */
	bool *have;
	struct tls_event *ev; /* TLS session attempts, for the TLSRPT counters */
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

static void tls_event(void *arg, const struct tls_event *e)
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
	struct queue_config qc;
	cmd_queue_config(cfg, &qc);
	struct tlsrpt_store *st = tlsrpt_store_open(&qc, cfg->tlsrpt_prefix, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "mxsend send: warning: TLSRPT counters not written: %s\n", err);
		return;
	}
	for (int i = 0; i < ctx->nev; i++) {
		if (tlsrpt_store_record(st, &ctx->ev[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "mxsend send: warning: TLSRPT counters not written: %s\n", err);
			break;
		}
	}
	tlsrpt_store_close(st);
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

static void print_result(const char *rcpt, const struct job_outcome *r, const char *dkim)
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
	printf(" dkim=%s", dkim);
	printf(" source=%s", r->source[0] ? r->source : "-");
	if (r->cls[0] != '\0') /* failed lines: the bounce class (README "Bounce classes") */
		printf(" class=%s", r->cls);
	putchar('\n');
}

static void stopped(void *arg)
{
	loop_stop(arg);
}

static int send_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_send_opts *o = opts;
	switch (ch) {
	case 'f':
		o->from = arg;
		return 0;
	case 'k':
		o->dkim = arg;
		return 0;
	case 'p':
		o->pool = arg;
		return 0;
	case 'r':
		if (o->nrcpt == CMD_SEND_MAX_RCPTS) {
			*why = "too many recipients";
			return -1;
		}
		o->rcpts[o->nrcpt++] = arg;
		return 0;
	default:
		return -1;
	}
}

int cmd_send_parse(int argc, char **argv, struct cmd_send_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_DNS, CMD_OPT_CA, CMD_OPT_TLS, CMD_OPT_PORT, CMD_OPT_HELO,
		CMD_OPT_LOG, CMD_OPT_HELP,
		{ "from", required_argument, NULL, 'f' }, { "to", required_argument, NULL, 'r' },
		{ "dkim", required_argument, NULL, 'k' }, { "pool", required_argument, NULL, 'p' },
		CMD_OPT_END,
	};
	memset(o, 0, sizeof(*o));
	int first, rc = cmd_parse(argc, argv, "c:hv", longs, &o->c, send_flag, o, &first);
	if (rc != 0)
		return rc;
	o->c.why = o->from == NULL ? "--from is required"
		   : o->nrcpt == 0 ? "--to is required"
		   : first != argc - 1 ? "one message file (or -) is required"
				       : NULL;
	if (o->c.why != NULL)
		return EX_USAGE;
	o->msg = argv[first];
	return 0;
}

/* The message and its envelope, checked before touching the network. */
struct envelope {
	char from[600];     /* formatted (msg_addr_format); "" the null sender */
	struct msg_addr *ra; /* per recipient, in command-line order */
	char (*rx)[600];     /* ... formatted */
	char *data;
	size_t len;
	struct signed_msg sm;         /* the signatures sent before data, signer.h */
	char dkim[SIGNER_RESULT_MAX]; /* signer.h: "d=... s=...", or "none" */
};

static void envelope_fini(struct envelope *e)
{
	free(e->ra);
	free(e->rx);
	free(e->data);
	signed_msg_free(&e->sm);
}

/* Check the addresses. 0, or EX_DATAERR after saying which is bad. */
static int envelope_addrs(const struct cmd_send_opts *o, struct envelope *e)
{
	struct msg_addr fa;
	const char *err = NULL, *bad = NULL, *flag = "from";
	if (o->from[0] != '\0' && strcmp(o->from, "<>") != 0) {
		if (msg_addr_parse(o->from, &fa, &err) != 0)
			bad = o->from;
		else
			msg_addr_format(&fa, e->from, sizeof(e->from));
	}
	e->ra = xcalloc((size_t)o->nrcpt, sizeof(*e->ra));
	e->rx = xcalloc((size_t)o->nrcpt, sizeof(*e->rx));
	for (int i = 0; bad == NULL && i < o->nrcpt; i++) {
		if (msg_rcpt_parse(o->rcpts[i], &e->ra[i], &err) != 0) {
			bad = o->rcpts[i];
			flag = "to";
		} else {
			msg_addr_format(&e->ra[i], e->rx[i], sizeof(e->rx[i]));
		}
	}
	if (bad == NULL)
		return 0;
	char q[256];
	fprintf(stderr, "mxsend send: bad --%s address \"%s\": %s\n", flag, log_q(q, sizeof(q), bad), err);
	return EX_DATAERR;
}

/* Read and check the message. 0, EX_NOINPUT or EX_DATAERR (said on stderr). */
static int envelope_data(const struct cmd_send_opts *o, const struct config *cfg, struct envelope *e)
{
	int r = cmd_read_file(o->msg, &e->data, &e->len);
	if (r < 0) {
		fprintf(stderr, "mxsend send: cannot read message %s: %s\n", o->msg, strerror(-r));
		return EX_NOINPUT;
	}
	if (e->len == 0 || e->len > cfg->max_message_size) {
		fprintf(stderr, "mxsend send: message is %s (%zu bytes, limit %llu)\n",
			e->len == 0 ? "empty" : "too large", e->len, (unsigned long long)cfg->max_message_size);
		return EX_DATAERR;
	}
	char why[64];
	if (job_data_check(e->data, e->len, why, sizeof(why)) != 0) {
		fprintf(stderr, "mxsend send: message %s: %s\n", o->msg, why);
		return EX_DATAERR;
	}
	/* DKIM (signer.h), as `run` signs a job: once, in the wire form */
	char serr[300];
	if (signer_sign(cfg, e->data, e->len, o->dkim, (int64_t)time(NULL), &e->sm, e->dkim, serr,
			sizeof(serr)) != 0) {
		fprintf(stderr, "mxsend send: message %s: %s\n", o->msg, serr);
		return EX_DATAERR;
	}
	return 0;
}

/* One request per recipient domain, recipients kept in command-line order.
 * Returns the requests (*ndr of them; free with free_requests). */
static struct domain_req *submit_all(struct deliver *d, struct send_ctx *ctx,
				     const struct envelope *e, const char *pool, int nrcpt, int *ndr)
{
	struct domain_req *drs = xcalloc((size_t)nrcpt, sizeof(*drs));
	int n = 0;
	for (int i = 0; i < nrcpt; i++) {
		struct domain_req *dr = NULL;
		for (int k = 0; k < n; k++)
			if (strcmp(drs[k].domain, e->ra[i].domain) == 0)
				dr = &drs[k];
		if (dr == NULL) {
			dr = &drs[n++];
			strlcpy_x(dr->domain, e->ra[i].domain, sizeof(dr->domain));
			dr->rcpts = xcalloc((size_t)nrcpt, sizeof(*dr->rcpts));
			dr->idx = xcalloc((size_t)nrcpt, sizeof(*dr->idx));
			dr->ctx = ctx;
		}
		dr->rcpts[dr->req.nrcpt] = e->rx[i];
		dr->idx[dr->req.nrcpt] = i;
		dr->req.nrcpt++;
	}
	for (int k = 0; k < n; k++) {
		struct deliver_req *q = &drs[k].req;
		q->from = e->from;
		q->domain = drs[k].domain;
		q->rcpts = drs[k].rcpts;
		q->data = e->data;
		q->len = e->len;
		q->wire = e->sm.pre ? &e->sm.wire : NULL;
		q->tls_min_level = -1;
		q->pool = pool;
		q->rcpt_done = rcpt_done;
		q->done = req_done;
		q->arg = &drs[k];
		if (deliver_submit(d, q) == 0)
			ctx->pending++;
	}
	*ndr = n;
	return drs;
}

static void free_requests(struct domain_req *drs, int ndr)
{
	for (int k = 0; k < ndr; k++) {
		free(drs[k].rcpts);
		free(drs[k].idx);
	}
	free(drs);
}

/* Print one line per recipient (never attempted: deferred) and return the
 * exit status. */
static int report(struct send_ctx *ctx, const struct envelope *e, int nrcpt)
{
	int bounced = 0, deferred = 0;
	for (int i = 0; i < nrcpt; i++) {
		struct job_outcome *r = &ctx->res[i];
		if (!ctx->have[i]) {
			memset(r, 0, sizeof(*r));
			r->status = JOB_DEFERRED;
			r->code = 451;
			strlcpy_x(r->dsn, "4.3.0", sizeof(r->dsn));
			strlcpy_x(r->reply, "not attempted", sizeof(r->reply));
		}
		print_result(e->rx[i], r, e->dkim);
		bounced += r->status == JOB_BOUNCED;
		deferred += r->status == JOB_DEFERRED || r->status == JOB_HELD;
	}
	fflush(stdout);
	return bounced ? EX_UNAVAILABLE : deferred ? EX_TEMPFAIL : EX_OK;
}

/* Deliver e on a loop of our own: the engine, the requests, the results. */
static int deliver_all(const struct cmd_send_opts *o, const struct config *cfg,
		       const struct envelope *e)
{
	int lerr = 0;
	struct loop *l = loop_new(4096, &lerr);
	if (l == NULL) {
		fprintf(stderr, "mxsend send: io_uring unavailable: %s\n", strerror(-lerr));
		return EX_OSERR;
	}
	char err[512];
	struct send_ctx ctx = { .l = l };
	struct deliver_opts dopt = { .port = o->c.port, .tls_level = o->c.tls_level };
	if (cfg->redis_named && cfg->tlsrpt) {
		dopt.on_tls = tls_event;
		dopt.on_tls_arg = &ctx;
	}
	/* providers and rules act within this one run (no Redis state) */
	struct shaping *sh = shaping_new(cfg, NULL, err, sizeof(err));
	dopt.shaping = sh;
	shaping_warm_assume(sh);
	struct deliver *d = sh ? deliver_new(l, cfg, &dopt, err, sizeof(err)) : NULL;
	if (d == NULL) {
		fprintf(stderr, "mxsend send: %s\n", err);
		shaping_free(sh);
		loop_free(l);
		return EX_CONFIG;
	}
	ctx.res = xcalloc((size_t)o->nrcpt, sizeof(*ctx.res));
	ctx.have = xcalloc((size_t)o->nrcpt, sizeof(*ctx.have));
	int ndr;
	struct domain_req *drs = submit_all(d, &ctx, e, o->pool, o->nrcpt, &ndr);
	if (ctx.pending > 0)
		loop_run(l);
	int rc = report(&ctx, e, o->nrcpt);
	/* Sessions said QUIT after their last transaction; give them up to the
	 * QUIT timeout (at most 2 s) to hear 221 so servers see a clean close. */
	deliver_quiesce(d, cfg->timeouts.quit < 2000 ? cfg->timeouts.quit : 2000, stopped, l);
	loop_run(l);
	tlsrpt_flush(cfg, &ctx);
	deliver_free(d);
	shaping_free(sh);
	loop_drain(l, 1000); /* connections and watchers let go of, then freed */
	loop_free(l);
	free_requests(drs, ndr);
	free(ctx.res);
	free(ctx.have);
	free(ctx.ev);
	return rc;
}

int cmd_send_run(const struct cmd_send_opts *o)
{
	struct config cfg;
	int rc = cmd_setup(&cfg, &o->c);
	if (rc != 0)
		return rc;
	if (o->pool != NULL && config_pool_find(&cfg, o->pool) < 0) {
		char q[128];
		fprintf(stderr, "mxsend send: --pool \"%s\": no [pool %s] with sources in the config\n",
			log_q(q, sizeof(q), o->pool), q);
		config_fini(&cfg);
		return EX_USAGE;
	}
	struct envelope e = { .from = "" };
	rc = envelope_addrs(o, &e);
	if (rc == 0)
		rc = envelope_data(o, &cfg, &e);
	if (rc == 0)
		rc = deliver_all(o, &cfg, &e);
	envelope_fini(&e);
	config_fini(&cfg);
	return rc;
}

static int cmd_send(int argc, char **argv)
{
	struct cmd_send_opts *o = xmalloc(sizeof(*o));
	int rc = cmd_send_parse(argc, argv, o);
	rc = rc != 0 ? cmd_usage(&cmd_send_def, rc, o->c.why) : cmd_send_run(o);
	free(o);
	return rc;
}

const struct cmd_def cmd_send_def = {
	"send", cmd_send,
	"send [-c FILE] [--dns A[:P]] [--ca FILE] [--tls none|may|encrypt|verify]\n"
	"[--port N] [--helo NAME] [--log LEVEL] [--dkim DOMAIN|no] [--pool NAME]\n"
	"--from A --to B [--to C ...] MSG|-",
};
