/* sender/cmd/queue.c: the queue's short-lived commands: `mxsend enqueue` (push a job,
 * for scripts, tests and benchmarks), `mxsend held` (list held jobs) and
 * `mxsend release` (put held jobs back in the queue). They talk to Redis
 * synchronously through queue/ (no loop here, nothing else to block). */
#include "sender/cmd/cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "queue/queue.h"
#include "sender/config.h"
#include "sender/util.h"

static void queue_cfg(const struct config *c, struct queue_config *qc)
{
	memset(qc, 0, sizeof(*qc));
	qc->url = c->redis_url;
	qc->password = c->redis_password;
	qc->jobs = c->jobs;
	qc->results = c->results;
	qc->group = c->group;
}

/* Read a whole file (or stdin for "-"). NULL with errno-style message. */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 65536, n = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	bool bad = ferror(f) != 0;
	if (f != stdin)
		fclose(f);
	if (bad) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

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

static int enqueue_usage(void)
{
	fprintf(stderr, "usage: mxsend enqueue [-c FILE] --from A --to B [--to C ...] [--id X] "
			"[--meta M] [--tls encrypt|verify] [--expires SECS] [--count N] MSG|-\n");
	return EX_USAGE;
}

int cmd_enqueue(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "from", required_argument, NULL, 'f' },
		{ "to", required_argument, NULL, 't' },     { "id", required_argument, NULL, 'i' },
		{ "meta", required_argument, NULL, 'm' },   { "tls", required_argument, NULL, 'T' },
		{ "expires", required_argument, NULL, 'e' }, { "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	const char *cfile = NULL, *from = NULL, *id = NULL, *meta = NULL, *tls = NULL,
		   *expires = NULL;
	char *to = NULL;
	long count = 1;
	bool counted = false;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cfile = optarg;
			break;
		case 'f':
			from = optarg;
			break;
		case 't': {
			size_t a = to ? strlen(to) : 0, b = strlen(optarg);
			to = xrealloc(to, a + b + 2);
			if (a > 0)
				to[a++] = ',';
			memcpy(to + a, optarg, b + 1);
			break;
		}
		case 'i':
			id = optarg;
			break;
		case 'm':
			meta = optarg;
			break;
		case 'T':
			tls = optarg; /* passed as given: the worker validates (and may reject) */
			break;
		case 'e':
			expires = optarg;
			break;
		case 'n': {
			char *end;
			count = strtol(optarg, &end, 10);
			if (*end != '\0' || count < 1 || count > 100000000) {
				free(to);
				return enqueue_usage();
			}
			counted = true;
			break;
		}
		default:
			free(to);
			return enqueue_usage();
		}
	}
	if (from == NULL || to == NULL || optind != argc - 1) {
		free(to);
		return enqueue_usage();
	}
	struct config cfg;
	if ((rc = cmd_load_config(&cfg, cfile)) != 0) {
		free(to);
		return rc;
	}
	size_t len = 0;
	char *data = read_all(argv[optind], &len);
	if (data == NULL) {
		fprintf(stderr, "mxsend: %s: %s\n", argv[optind], strerror(errno));
		free(to);
		config_fini(&cfg);
		return EX_NOINPUT;
	}

	char why[64];
	if (job_data_check(data, len, why, sizeof(why)) != 0) {
		fprintf(stderr, "mxsend enqueue: message %s: %s\n", argv[optind], why);
		free(data);
		free(to);
		config_fini(&cfg);
		return EX_DATAERR;
	}
	const char *name[8], *value[8];
	size_t vlen[8];
	int n = 0;
	add_field(name, value, vlen, &n, "from", from, strlen(from));
	add_field(name, value, vlen, &n, "to", to, strlen(to));
	add_field(name, value, vlen, &n, "data", data, len);
	if (id != NULL)
		add_field(name, value, vlen, &n, "id", id, strlen(id));
	if (meta != NULL)
		add_field(name, value, vlen, &n, "meta", meta, strlen(meta));
	if (tls != NULL)
		add_field(name, value, vlen, &n, "tls", tls, strlen(tls));
	if (expires != NULL)
		add_field(name, value, vlen, &n, "expires", expires, strlen(expires));
	struct queue_fields f = { .name = name, .value = value, .vlen = vlen, .n = n };

	struct queue_config qc;
	char err[512];
	queue_cfg(&cfg, &qc);
	struct queue_sync *s = queue_sync_open(&qc, err, sizeof(err));
	if (s == NULL) {
		fprintf(stderr, "mxsend: %s\n", err);
		rc = EX_TEMPFAIL;
	} else {
		int added = queue_sync_enqueue(s, &f, count, counted ? NULL : print_id, NULL, err,
					       sizeof(err));
		if (added < 0) {
			fprintf(stderr, "mxsend: %s\n", err);
			rc = EX_TEMPFAIL;
		} else {
			if (counted)
				printf("%d\n", added);
			rc = EX_OK;
		}
		queue_sync_close(s);
	}
	free(data);
	free(to);
	config_fini(&cfg);
	return rc;
}

/* ---- held / release ---- */

static void fmt_time(char *buf, size_t n, uint64_t ms)
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

static void print_held(void *arg, const struct queue_held *h)
{
	char held[32], since[32];
	(void)arg;
	fmt_time(held, sizeof(held), h->held_at_ms);
	fmt_time(since, sizeof(since), h->since_ms);
	printf("%s domain=%s since=%s held_at=%s id=\"%s\" job=%s to=\"%s\" reason=\"%s\"\n",
	       h->member, h->domain, since, held, h->id, h->job, h->to, h->reason);
}

/* Parse -c FILE; leaves optind at the first other argument. */
static int admin_open(int argc, char **argv, const struct option *opts, struct config *cfg,
		      const char **domain, struct queue_sync **s, struct queue_config *qc)
{
	const char *cfile = NULL;
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cfile = optarg;
			break;
		case 'd':
			*domain = optarg;
			break;
		default:
			return EX_USAGE;
		}
	}
	if ((rc = cmd_load_config(cfg, cfile)) != 0)
		return rc;
	char err[512];
	queue_cfg(cfg, qc);
	*s = queue_sync_open(qc, err, sizeof(err));
	if (*s == NULL) {
		fprintf(stderr, "mxsend: %s\n", err);
		config_fini(cfg);
		return EX_TEMPFAIL;
	}
	return 0;
}

int cmd_held(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct config cfg;
	struct queue_config qc;
	struct queue_sync *s = NULL;
	const char *domain = NULL;
	int rc = admin_open(argc, argv, opts, &cfg, &domain, &s, &qc);
	if (rc == EX_USAGE || (rc == 0 && optind != argc)) {
		if (rc == 0) {
			queue_sync_close(s);
			config_fini(&cfg);
		}
		fprintf(stderr, "usage: mxsend held [-c FILE]\n");
		return EX_USAGE;
	}
	if (rc != 0)
		return rc;
	char err[512];
	int n = queue_sync_held(s, print_held, NULL, err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "mxsend: %s\n", err);
		rc = EX_TEMPFAIL;
	}
	queue_sync_close(s);
	config_fini(&cfg);
	return rc;
}

int cmd_release(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "domain", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct config cfg;
	struct queue_config qc;
	struct queue_sync *s = NULL;
	const char *domain = NULL;
	int rc = admin_open(argc, argv, opts, &cfg, &domain, &s, &qc);
	bool bad = rc == EX_USAGE ||
		   (rc == 0 && ((domain != NULL) == (optind != argc) || (domain && !domain[0])));
	if (bad) {
		if (rc == 0) {
			queue_sync_close(s);
			config_fini(&cfg);
		}
		fprintf(stderr, "usage: mxsend release [-c FILE] [--domain D | ID...]\n");
		return EX_USAGE;
	}
	if (rc != 0)
		return rc;
	char err[512];
	int n = queue_sync_release(s, domain, (const char *const *)argv + optind, argc - optind,
				   err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "mxsend: %s\n", err);
		rc = EX_TEMPFAIL;
	} else {
		printf("released %d\n", n);
	}
	queue_sync_close(s);
	config_fini(&cfg);
	return rc;
}
