/* sender/cmd/queue.c: the queue's short-lived commands: `mxsend enqueue` (push a job,
 * for scripts, tests and benchmarks), `mxsend held` (list held jobs) and
 * `mxsend release` (put held jobs back in the queue). They talk to Redis
 * synchronously through queue/ (no loop here, nothing else to block). Each
 * has its cmd_X_parse (queue.h) apart from its cmd_X_run. */
#include "sender/cmd/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "queue/job.h"
#include "queue/queue.h"
#include "sender/config.h"
#include "sender/util.h"

/* ---- enqueue ---- */

static void add_field(const char **name, const char **value, size_t *vlen, int *n, const char *k,
		      const char *v, size_t l)
{
	name[*n] = k;
	value[*n] = v;
	vlen[*n] = l;
	(*n)++;
}

static void print_id(void *arg, const char *id)
{
	(void)arg;
	printf("%s\n", id);
}

static int enqueue_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_enqueue_opts *o = opts;
	switch (ch) {
	case 'f': o->from = arg; return 0;
	case 'i': o->id = arg; return 0;
	case 'm': o->meta = arg; return 0;
	case 'T': o->tls = arg; return 0; /* passed as given: the worker validates (and may reject) */
	case 'e': o->expires = arg; return 0;
	case 'l': o->lane = arg; return 0;
	case 't': {
		size_t a = o->to ? strlen(o->to) : 0, b = strlen(arg);
		o->to = xrealloc(o->to, a + b + 2);
		if (a > 0)
			o->to[a++] = ',';
		memcpy(o->to + a, arg, b + 1);
		return 0;
	}
	case 'n':
		if (!cmd_parse_long(arg, 1, 100000000, &o->count)) {
			*why = "bad --count (1-100000000)";
			return -1;
		}
		o->counted = true;
		return 0;
	default:
		return -1;
	}
}

int cmd_enqueue_parse(int argc, char **argv, struct cmd_enqueue_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_HELP,
		{ "from", required_argument, NULL, 'f' }, { "to", required_argument, NULL, 't' },
		{ "id", required_argument, NULL, 'i' },   { "meta", required_argument, NULL, 'm' },
		{ "tls", required_argument, NULL, 'T' },  { "expires", required_argument, NULL, 'e' },
		{ "count", required_argument, NULL, 'n' }, { "lane", required_argument, NULL, 'l' },
		CMD_OPT_END,
	};
	*o = (struct cmd_enqueue_opts){ .count = 1 };
	int first, rc = cmd_parse(argc, argv, "c:h", longs, &o->c, enqueue_flag, o, &first);
	if (rc != 0)
		return rc;
	o->c.why = o->from == NULL ? "--from is required"
		   : o->to == NULL ? "--to is required"
		   : first != argc - 1 ? "one message file (or -) is required"
				       : NULL;
	if (o->c.why != NULL)
		return EX_USAGE;
	o->msg = argv[first];
	return 0;
}

void cmd_enqueue_opts_fini(struct cmd_enqueue_opts *o)
{
	free(o->to);
	o->to = NULL;
}

/* Open the short-lived Redis connection: 0, EX_CONFIG for a URL that cannot
 * be parsed (a configuration error, as `run` says), EX_TEMPFAIL when Redis
 * cannot be reached; the reason on stderr, the password never shown. */
static int sync_open(const struct queue_config *qc, struct queue_sync **s)
{
	char err[512];
	struct queue_addr a;
	if (queue_url_parse(qc->url, &a, err, sizeof(err)) != 0) {
		char shown[300];
		fprintf(stderr, "mxsend: bad redis url \"%s\": %s\n",
			queue_url_redact(qc->url, shown, sizeof(shown)), err);
		return EX_CONFIG;
	}
	*s = queue_sync_open(qc, err, sizeof(err));
	if (*s == NULL) {
		fprintf(stderr, "mxsend: %s\n", err);
		return EX_TEMPFAIL;
	}
	return 0;
}

static int enqueue_push(const struct cmd_enqueue_opts *o, const struct config *cfg,
			const char *data, size_t len)
{
	const char *name[8], *value[8];
	size_t vlen[8];
	int n = 0;
	add_field(name, value, vlen, &n, "from", o->from, strlen(o->from));
	add_field(name, value, vlen, &n, "to", o->to, strlen(o->to));
	add_field(name, value, vlen, &n, "data", data, len);
	if (o->id != NULL)
		add_field(name, value, vlen, &n, "id", o->id, strlen(o->id));
	if (o->meta != NULL)
		add_field(name, value, vlen, &n, "meta", o->meta, strlen(o->meta));
	if (o->tls != NULL)
		add_field(name, value, vlen, &n, "tls", o->tls, strlen(o->tls));
	if (o->expires != NULL)
		add_field(name, value, vlen, &n, "expires", o->expires, strlen(o->expires));
	struct queue_fields f = { .name = name, .value = value, .vlen = vlen, .n = n, .lane = o->lane };

	struct queue_config qc;
	char err[512];
	cmd_queue_config(cfg, &qc);
	if (o->lane != NULL && queue_lane_find(&qc, o->lane) < 0) {
		char *shown = cmd_esc_dup(o->lane);
		fprintf(stderr, "mxsend enqueue: unknown lane \"%s\" (not in [redis] lanes)\n", shown);
		free(shown);
		return EX_USAGE;
	}
	struct queue_sync *s = NULL;
	int orc = sync_open(&qc, &s);
	if (orc != 0)
		return orc;
	int rc = EX_OK;
	int added = queue_sync_enqueue(s, &f, o->count, o->counted ? NULL : print_id, NULL, err,
				       sizeof(err));
	if (added < 0) {
		fprintf(stderr, "mxsend: %s\n", err);
		rc = EX_TEMPFAIL;
	} else if (o->counted) {
		printf("%d\n", added);
	}
	queue_sync_close(s);
	return rc;
}

int cmd_enqueue_run(const struct cmd_enqueue_opts *o)
{
	struct config cfg;
	int rc = cmd_setup(&cfg, &o->c);
	if (rc != 0)
		return rc;
	size_t len = 0;
	char *data = NULL, why[64];
	int r = cmd_read_file(o->msg, &data, &len);
	if (r < 0) {
		fprintf(stderr, "mxsend: %s: %s\n", o->msg, strerror(-r));
		rc = EX_NOINPUT;
	} else if (job_data_check(data, len, why, sizeof(why)) != 0) {
		fprintf(stderr, "mxsend enqueue: message %s: %s\n", o->msg, why);
		rc = EX_DATAERR;
	} else {
		rc = enqueue_push(o, &cfg, data, len);
	}
	free(data);
	config_fini(&cfg);
	return rc;
}

static int cmd_enqueue(int argc, char **argv)
{
	struct cmd_enqueue_opts o;
	int rc = cmd_enqueue_parse(argc, argv, &o);
	rc = rc != 0 ? cmd_usage(&cmd_enqueue_def, rc, o.c.why) : cmd_enqueue_run(&o);
	cmd_enqueue_opts_fini(&o);
	return rc;
}

const struct cmd_def cmd_enqueue_def = {
	"enqueue", cmd_enqueue,
	"enqueue [-c FILE] --from A --to B [--to C ...] [--id X] [--meta M] [--tls encrypt|verify]\n"
	"[--expires SECS] [--count N] [--lane NAME] MSG|-",
};

/* ---- held / release ---- */

void cmd_fmt_time(char *buf, size_t n, uint64_t ms)
{
	if (ms == 0) {
		snprintf(buf, n, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *cmd_esc_dup(const char *s)
{
	size_t n = job_escape(NULL, 0, s, strlen(s), JOB_ESC_QUOTED);
	char *o = xmalloc(n + 1);
	job_escape(o, n + 1, s, strlen(s), JOB_ESC_QUOTED);
	return o;
}

/* Every value came from Redis, and id and reason from a job or a server:
 * escaped, so no control byte reaches the terminal. */
static void print_held(void *arg, const struct queue_held *h)
{
	char held[32], since[32];
	(void)arg;
	cmd_fmt_time(held, sizeof(held), h->held_at_ms);
	cmd_fmt_time(since, sizeof(since), h->since_ms);
	char *v[6] = { cmd_esc_dup(h->member), cmd_esc_dup(h->domain), cmd_esc_dup(h->id),
		       cmd_esc_dup(h->job),    cmd_esc_dup(h->to),     cmd_esc_dup(h->reason) };
	printf("%s domain=%s since=%s held_at=%s id=\"%s\" job=%s to=\"%s\" reason=\"%s\"", v[0],
	       v[1], since, held, v[2], v[3], v[4], v[5]);
	if (h->lane != NULL && strcmp(h->lane, "default") != 0)
		printf(" lane=%s", h->lane); /* a configured name: a plain word */
	printf("\n");
	for (int i = 0; i < 6; i++)
		free(v[i]);
}

int cmd_admin_open(const struct cmd_common *c, struct config *cfg, struct queue_config *qc,
		      struct queue_sync **s)
{
	int rc = cmd_setup(cfg, c);
	if (rc != 0)
		return rc;
	cmd_queue_config(cfg, qc);
	rc = sync_open(qc, s);
	if (rc != 0)
		config_fini(cfg);
	return rc;
}

int cmd_admin_close(int n, const char *err, struct queue_sync *s, struct config *cfg)
{
	if (n < 0)
		fprintf(stderr, "mxsend: %s\n", err);
	queue_sync_close(s);
	config_fini(cfg);
	return n < 0 ? EX_TEMPFAIL : EX_OK;
}

int cmd_held_parse(int argc, char **argv, struct cmd_common *o)
{
	static const struct option longs[] = { CMD_OPT_CONFIG, CMD_OPT_HELP, CMD_OPT_END };
	int first, rc = cmd_parse(argc, argv, "c:h", longs, o, NULL, NULL, &first);
	if (rc == 0 && first != argc) {
		o->why = "no operands";
		rc = EX_USAGE;
	}
	return rc;
}

int cmd_held_run(const struct cmd_common *o)
{
	struct config cfg;
	struct queue_config qc;
	struct queue_sync *s;
	int rc = cmd_admin_open(o, &cfg, &qc, &s);
	if (rc != 0)
		return rc;
	char err[512];
	int n = queue_sync_held(s, print_held, NULL, err, sizeof(err));
	return cmd_admin_close(n, err, s, &cfg);
}

static int cmd_held(int argc, char **argv)
{
	struct cmd_common o;
	int rc = cmd_held_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_held_def, rc, o.why) : cmd_held_run(&o);
}

const struct cmd_def cmd_held_def = { "held", cmd_held, "held [-c FILE]" };

static int release_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_release_opts *o = opts;
	(void)why;
	if (ch != 'd')
		return -1;
	o->domain = arg;
	return 0;
}

int cmd_release_parse(int argc, char **argv, struct cmd_release_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_HELP, { "domain", required_argument, NULL, 'd' }, CMD_OPT_END,
	};
	memset(o, 0, sizeof(*o));
	int first, rc = cmd_parse(argc, argv, "c:h", longs, &o->c, release_flag, o, &first);
	if (rc != 0)
		return rc;
	o->ids = (const char *const *)argv + first;
	o->nids = argc - first;
	if ((o->domain != NULL) == (o->nids > 0) || (o->domain != NULL && o->domain[0] == '\0')) {
		o->c.why = "one of a non-empty --domain or IDs";
		return EX_USAGE;
	}
	return 0;
}

int cmd_release_run(const struct cmd_release_opts *o)
{
	struct config cfg;
	struct queue_config qc;
	struct queue_sync *s;
	int rc = cmd_admin_open(&o->c, &cfg, &qc, &s);
	if (rc != 0)
		return rc;
	char err[512];
	int n = queue_sync_release(s, o->domain, o->ids, o->nids, err, sizeof(err));
	if (n >= 0)
		printf("released %d\n", n);
	return cmd_admin_close(n, err, s, &cfg);
}

static int cmd_release(int argc, char **argv)
{
	struct cmd_release_opts o;
	int rc = cmd_release_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_release_def, rc, o.c.why) : cmd_release_run(&o);
}

const struct cmd_def cmd_release_def = { "release", cmd_release,
					 "release [-c FILE] [--domain D | ID...]" };
