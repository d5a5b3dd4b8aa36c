/* sender/cmd/cmd.h: what the mxsend subcommands share.
 *
 * Each command (sender/cmd/X.c, X.h) is split in two: cmd_X_parse fills a
 * struct cmd_X_opts from argv and touches nothing else (no config, no
 * network: tests/unit/test_cmd.c drives it), cmd_X_run loads the config and
 * runs. cmd_X is the pair, as main.c calls it. The common flags (-c/--config,
 * --dns, --ca, --port, --helo, --log, --tls, -v, -h/--help) are parsed here
 * once, into struct cmd_common; cmd_setup loads the config, lays the flags
 * over it and sets the log level.
 *
 * Exit codes come from <sysexits.h> (0 ok, 64 usage, 65 bad message, 66
 * unreadable message, 69 bounced/unavailable, 70 software, 71 OS, 75
 * deferred/temporary, 78 bad config). */
#ifndef SENDER_CMD_CMD_H
#define SENDER_CMD_CMD_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

struct config;
struct queue_config;

/* One command, as main.c lists it. */
struct cmd_def {
	const char *name;              /* "send" */
	int (*main)(int argc, char **argv); /* argv[0] is the name; returns the exit status */
	const char *usage;             /* "send [-c FILE] ... MSG|-" (after "mxsend "; a
	                                * '\n' continues under the first flag) */
};

/* The common flags as given (strings borrowed from argv). */
struct cmd_common {
	const char *config; /* -c/--config FILE; NULL: the built-in defaults */
	const char *dns;    /* --dns servers, checked (config_check_dns); NULL: the config's */
	const char *ca;     /* --ca FILE; NULL: the config's */
	int port;           /* --port N (1..65535); 0: not given */
	const char *helo;   /* --helo NAME, checked (config_check_word); NULL: the config's */
	int log_level;      /* --log LEVEL, or -v (info); -1: the config's */
	int tls_level;      /* --tls LEVEL (enum tls_level); -1: not given */
	const char *why;    /* after a usage error: what was wrong (NULL: say only the usage) */
};

/* getopt_long codes of the common flags; a command's own long options use
 * other codes (its letters). */
enum {
	CMD_O_CONFIG = 'c',
	CMD_O_HELP = 'h',
	CMD_O_VERBOSE = 'v',
	CMD_O_DNS = 0x100,
	CMD_O_CA,
	CMD_O_PORT,
	CMD_O_HELO,
	CMD_O_LOG,
	CMD_O_TLS,
};
/* Entries for a command's struct option table: list the flags that apply. */
#define CMD_OPT_CONFIG { "config", required_argument, NULL, CMD_O_CONFIG }
#define CMD_OPT_HELP { "help", no_argument, NULL, CMD_O_HELP }
#define CMD_OPT_DNS { "dns", required_argument, NULL, CMD_O_DNS }
#define CMD_OPT_CA { "ca", required_argument, NULL, CMD_O_CA }
#define CMD_OPT_PORT { "port", required_argument, NULL, CMD_O_PORT }
#define CMD_OPT_HELO { "helo", required_argument, NULL, CMD_O_HELO }
#define CMD_OPT_LOG { "log", required_argument, NULL, CMD_O_LOG }
#define CMD_OPT_TLS { "tls", required_argument, NULL, CMD_O_TLS }
#define CMD_OPT_END { NULL, 0, NULL, 0 }

/* What a parse returns besides 0 (run): --help (print the usage, exit 0). A
 * usage error is EX_USAGE, with common->why saying what was wrong. */
#define CMD_HELP 1

/* A command's own flag: ch is its getopt_long code, arg its value (NULL for
 * flags without one). Returns 0, or -1 with *why set (a static string naming
 * the flag, or NULL). */
typedef int cmd_flag_fn(void *opts, int ch, const char *arg, const char **why);

/* Parse argv (argv[0] the command's name) with getopt_long: shorts is the
 * short-option string ("c:hv"...), longs the table (CMD_OPT_* entries and
 * the command's own). Common flags go into *c (set to "not given" first),
 * the others to own(opts, ...). Returns 0 with *first the index of the first
 * operand, CMD_HELP, or EX_USAGE with c->why set. Resets getopt's state, so
 * it may be called again (tests). GNU getopt permutes argv (operands last). */
int cmd_parse(int argc, char **argv, const char *shorts, const struct option *longs,
	      struct cmd_common *c, cmd_flag_fn *own, void *opts, int *first);

/* Print lead (e.g. "usage: mxsend "), then d's usage, to stderr. */
void cmd_print_usage(const char *lead, const struct cmd_def *d);
/* The end of a parse that did not return 0: for CMD_HELP, the usage on
 * stderr and 0; for a usage error, "mxsend NAME: WHY" (when why) and the
 * usage on stderr, and EX_USAGE. */
int cmd_usage(const struct cmd_def *d, int rc, const char *why);

/* n in [lo, hi] from the whole of s (decimal)? Then *out = n. */
bool cmd_parse_long(const char *s, long lo, long hi, long *out);

/* A DOMAIN operand: lower-cased, one trailing dot dropped, into out (size
 * outlen). 0, or -1 when empty or not shorter than outlen. */
int cmd_domain_arg(const char *arg, char *out, size_t outlen);

/* Load the config (c->config, or the built-in defaults when NULL), lay the
 * flags over it (--dns, --ca, --helo replace the config's values) and set the
 * log level (--log, else the config's). Returns 0 (config_fini later), or
 * EX_CONFIG after printing "mxsend: FILE:LINE: ..." to stderr (*cfg then
 * needs nothing more). */
int cmd_setup(struct config *cfg, const struct cmd_common *c);

/* The Redis connection and key names of cfg, for the synchronous queue
 * (queue_sync_open); the rest of *qc zeroed. Strings borrowed from cfg. */
void cmd_queue_config(const struct config *cfg, struct queue_config *qc);

/* Read a whole file, or stdin for "-". 0 with *out (free it) and *len, or
 * -errno. */
int cmd_read_file(const char *path, char **out, size_t *len);

#endif
