/* sender/cmd/cmd.c: the part the commands share: the common flags, the
 * config and log set-up, usage, small argument checks (cmd.h). */
#include "sender/cmd/cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "queue/queue.h"
#include "sender/config.h"
#include "sender/log.h"
#include "sender/redis_tls.h"
#include "sender/util.h"

bool cmd_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* One common flag: 1 taken, 0 not a common flag, -1 bad value (c->why set). */
static int common_flag(struct cmd_common *c, int ch, const char *arg)
{
	long v;
	switch (ch) {
	case CMD_O_CONFIG:
		c->config = arg;
		return 1;
	case CMD_O_DNS:
		c->dns = arg;
		c->why = "bad --dns (comma-separated addr, addr:port or [ipv6]:port; port 1..65535)";
		return config_check_dns(arg) < 0 ? -1 : 1;
	case CMD_O_CA:
		c->ca = arg;
		return 1;
	case CMD_O_PORT:
		c->why = "bad --port";
		if (!cmd_parse_long(arg, 1, 65535, &v))
			return -1;
		c->port = (int)v;
		return 1;
	case CMD_O_HELO:
		c->helo = arg;
		/* At most 255 bytes (RFC 5321 4.5.3.1.2): deliver.c keeps the
		 * name in 256 bytes, and a longer one was cut silently. */
		c->why = "bad --helo (a single word of at most 255 bytes: no blanks or control characters)";
		return config_check_word(arg) < 0 || strlen(arg) > 255 ? -1 : 1;
	case CMD_O_LOG:
		c->log_level = log_level_parse(arg);
		c->why = "bad --log level";
		return c->log_level < 0 ? -1 : 1;
	case CMD_O_VERBOSE:
		c->log_level = LOG_INFO;
		return 1;
	case CMD_O_TLS:
		c->tls_level = tls_level_parse(arg);
		c->why = "bad --tls value (none|may|encrypt|verify)";
		return c->tls_level < 0 ? -1 : 1;
	default:
		return 0;
	}
}

int cmd_parse(int argc, char **argv, const char *shorts, const struct option *longs,
	      struct cmd_common *c, cmd_flag_fn *own, void *opts, int *first)
{
	*c = (struct cmd_common){ .port = 0, .log_level = -1, .tls_level = -1 };
	optind = 0; /* glibc: start afresh (a parse may run more than once) */
	int ch;
	while ((ch = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
		if (ch == CMD_O_HELP)
			return CMD_HELP;
		if (ch == '?' || ch == ':') {
			c->why = NULL; /* getopt said what was wrong */
			return EX_USAGE;
		}
		int r = common_flag(c, ch, optarg);
		if (r == 0)
			r = own != NULL && own(opts, ch, optarg, &c->why) == 0 ? 1 : -1;
		if (r < 0)
			return EX_USAGE;
		c->why = NULL;
	}
	*first = optind;
	return 0;
}

void cmd_print_usage(const char *lead, const struct cmd_def *d)
{
	int indent = (int)(strlen(lead) + strlen(d->name) + 1);
	fputs(lead, stderr);
	for (const char *s = d->usage; *s; s++) {
		fputc(*s, stderr);
		if (*s == '\n')
			fprintf(stderr, "%*s", indent, "");
	}
	fputc('\n', stderr);
}

int cmd_usage(const struct cmd_def *d, int rc, const char *why)
{
	if (rc != CMD_HELP && why != NULL)
		fprintf(stderr, "mxsend %s: %s\n", d->name, why);
	cmd_print_usage("usage: mxsend ", d);
	return rc == CMD_HELP ? EX_OK : EX_USAGE;
}

int cmd_domain_arg(const char *arg, char *out, size_t outlen)
{
	size_t n = strlen(arg);
	if (n > 0 && arg[n - 1] == '.')
		n--;
	if (n == 0 || n >= outlen)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(arg[i] >= 'A' && arg[i] <= 'Z' ? arg[i] - 'A' + 'a' : arg[i]);
	out[n] = '\0';
	return 0;
}

/* Replace *field (owned by the config) with a copy of v, when v is given. */
static void override(char **field, const char *v)
{
	if (v == NULL)
		return;
	free(*field);
	*field = xstrdup(v);
}

int cmd_setup(struct config *cfg, const struct cmd_common *c)
{
	char err[512];
	if (c->config == NULL) {
		config_defaults(cfg);
		if (config_load_classes(cfg, err, sizeof(err)) != 0) { /* the shipped file, if found */
			fprintf(stderr, "mxsend: %s\n", err);
			config_fini(cfg);
			return EX_CONFIG;
		}
	} else if (config_load(cfg, c->config, err, sizeof(err)) != 0) {
		fprintf(stderr, "mxsend: %s\n", err);
		config_fini(cfg);
		return EX_CONFIG;
	}
	if (strncmp(cfg->redis_url, "rediss://", 9) == 0) { /* the TLS files load */
		struct queue_config qc;
		cmd_queue_config(cfg, &qc);
		if (redis_tls_check(&qc.tls, err, sizeof(err)) != 0) {
			fprintf(stderr, "mxsend: [redis] %s\n", err);
			config_fini(cfg);
			return EX_CONFIG;
		}
	}
	override(&cfg->dns, c->dns);
	override(&cfg->ca_file, c->ca);
	override(&cfg->helo, c->helo);
	log_set_level(c->log_level >= 0 ? (enum log_level)c->log_level : (enum log_level)cfg->log_level);
	/* Every session is a socket: a soft limit of 1024 (systemd's default)
	 * turned thousands of sessions into "socket: Too many open files"
	 * deferrals. Raised to the hard limit; still low is said once. */
	unsigned long nofile = util_raise_nofile();
	if (nofile != 0 && nofile < 4096)
		log_warn("evt=nofile_low limit=%lu (open files: raise the hard limit, e.g. "
			 "LimitNOFILE= in the systemd unit; each session, DNS socket and ring is one)",
			 nofile);
	return 0;
}

void cmd_queue_config(const struct config *cfg, struct queue_config *qc)
{
	memset(qc, 0, sizeof(*qc));
	qc->url = cfg->redis_url;
	qc->username = cfg->redis_username;
	qc->password = cfg->redis_password;
	qc->tls = (struct queue_tls){ .ca_file = cfg->redis_tls_ca, .cert_file = cfg->redis_tls_cert,
				      .key_file = cfg->redis_tls_key, .name = cfg->redis_tls_name,
				      .connect = redis_tls_connect };
	qc->sentinels = cfg->redis_sentinels;
	qc->master_name = cfg->redis_master_name;
	qc->sentinel_password = cfg->redis_sentinel_password;
	qc->wait_replicas = cfg->redis_wait_replicas;
	qc->wait_timeout_ms = cfg->redis_wait_timeout_ms;
	qc->jobs = cfg->jobs;
	qc->results = cfg->results;
	qc->cluster = cfg->redis_cluster;
	qc->cluster_nodes = cfg->redis_cluster_nodes;
	qc->group = cfg->group;
	qc->lanes = cfg->lanes;
	qc->n_lanes = cfg->n_lanes;
}

int cmd_read_file(const char *path, char **out, size_t *len)
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
