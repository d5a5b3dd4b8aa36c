/* sender/cmd/shaping.c: `mxsend shaping` (shaping.h). Prints, per
 * (source, provider) pair with state in Redis:
 *   SOURCE PROVIDER rate=R/s|max conns=N|max until=TIME|- rule=NAME cuts=N changed=TIME
 * rate and conns are for all processes together; "max" means the provider's
 * own limits apply (max_rate/max_connections of its [provider] section).
 * Everything printed came from Redis: escaped, no control byte reaches the
 * terminal. */
#include "sender/cmd/shaping.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "queue/job.h"
#include "queue/queue.h"
#include "queue/shape_store.h"
#include "sender/cmd/queue.h"
#include "sender/config.h"
#include "sender/util.h"

int cmd_shaping_parse(int argc, char **argv, struct cmd_common *o)
{
	return cmd_held_parse(argc, argv, o); /* the same: -c, no operands */
}

static const char *field(int n, const char *const *kv, const char *name)
{
	for (int i = 0; i + 1 < n; i += 2)
		if (strcmp(kv[i], name) == 0)
			return kv[i + 1];
	return NULL;
}

static void fmt_ms(char *buf, size_t len, const char *v)
{
	double ms = v ? strtod(v, NULL) : 0;
	if (ms <= 0)
		snprintf(buf, len, "-");
	else
		util_utc_time(buf, len, (uint64_t)ms);
}

struct list {
	size_t prefix; /* strlen("J:shape:") */
	int n;
};

static void print_pair(void *arg, const char *key, int n, const char *const *kv)
{
	struct list *l = arg;
	char name[600], rule[200], rb[32], cb[32], until[32], at[32];
	const char *pair = strlen(key) > l->prefix ? key + l->prefix : key;
	job_escape(name, sizeof(name), pair, strlen(pair), JOB_ESC_QUOTED);
	char *colon = strrchr(name, ':'); /* SOURCE:PROVIDER (names hold no ':') */
	if (colon)
		*colon = ' ';
	const char *r = field(n, kv, "rule");
	job_escape(rule, sizeof(rule), r ? r : "", r ? strlen(r) : 0, JOB_ESC_QUOTED);
	double rate = strtod(field(n, kv, "rate") ? field(n, kv, "rate") : "0", NULL);
	double conn = strtod(field(n, kv, "conn") ? field(n, kv, "conn") : "0", NULL);
	if (rate > 0)
		snprintf(rb, sizeof(rb), "%.2f/s", rate);
	else
		snprintf(rb, sizeof(rb), "max");
	if (conn > 0)
		snprintf(cb, sizeof(cb), "%d", conn < 1 ? 1 : (int)conn);
	else
		snprintf(cb, sizeof(cb), "max");
	const char *u = field(n, kv, "until");
	fmt_ms(until, sizeof(until), u && strtod(u, NULL) > (double)time(NULL) * 1000 ? u : NULL);
	fmt_ms(at, sizeof(at), field(n, kv, "at"));
	const char *cuts = field(n, kv, "cuts");
	printf("%s rate=%s conns=%s until=%s rule=%s cuts=%ld changed=%s\n", name, rb, cb, until,
	       rule[0] ? rule : "-", cuts ? strtol(cuts, NULL, 10) : 0L, at);
	l->n++;
}

int cmd_shaping_run(const struct cmd_common *o)
{
	struct config cfg;
	int rc = cmd_setup(&cfg, o);
	if (rc != 0)
		return rc;
	struct queue_config qc;
	cmd_queue_config(&cfg, &qc);
	char err[512];
	struct queue_sync *s = queue_sync_open(&qc, err, sizeof(err));
	if (s == NULL) {
		fprintf(stderr, "mxsend: %s\n", err);
		config_fini(&cfg);
		return EX_TEMPFAIL;
	}
	struct list l = { strlen(cfg.jobs) + strlen(":shape:"), 0 };
	int n = shape_store_list(s, cfg.jobs, print_pair, &l, err, sizeof(err));
	if (n == 0)
		printf("no shaping state: every (source, provider) pair is at its provider's limits\n");
	if (n < 0)
		fprintf(stderr, "mxsend: %s\n", err);
	queue_sync_close(s);
	config_fini(&cfg);
	return n < 0 ? EX_TEMPFAIL : EX_OK;
}

static int cmd_shaping(int argc, char **argv)
{
	struct cmd_common o;
	int rc = cmd_shaping_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_shaping_def, rc, o.why) : cmd_shaping_run(&o);
}

const struct cmd_def cmd_shaping_def = { "shaping", cmd_shaping, "shaping [-c FILE]" };
