/* sender/cmd/queue.h: the queue's short-lived commands (queue.c): `mxsend
 * enqueue`, `mxsend held`, `mxsend release`. */
#ifndef SENDER_CMD_QUEUE_H
#define SENDER_CMD_QUEUE_H

#include <stdint.h>

#include "sender/cmd/cmd.h"

struct cmd_enqueue_opts {
	struct cmd_common c; /* -c */
	const char *from;    /* --from A */
	char *to;            /* every --to, joined with ',' (owned: cmd_enqueue_opts_fini) */
	const char *id, *meta, *tls, *expires; /* --id --meta --tls --expires, as given (NULL: none) */
	const char *lane;    /* --lane NAME (NULL: default); not a configured lane: EX_USAGE */
	long count;          /* --count N (1..100000000), default 1 */
	bool counted;        /* --count given: print the number added, not the ids */
	const char *msg;     /* MSG: a file, or "-" for stdin */
};
/* argv (argv[0] "enqueue") into *o (cmd_enqueue_opts_fini it whatever the
 * result). 0, CMD_HELP or EX_USAGE (o->c.why): unknown flag, bad --count, no
 * --from or --to, not one MSG. The fields are the worker's to validate. */
int cmd_enqueue_parse(int argc, char **argv, struct cmd_enqueue_opts *o);
void cmd_enqueue_opts_fini(struct cmd_enqueue_opts *o);
/* Push the job (count times); prints its id (or the count). Exit status. */
int cmd_enqueue_run(const struct cmd_enqueue_opts *o);

struct cmd_release_opts {
	struct cmd_common c;     /* -c */
	const char *domain;      /* --domain D, or NULL */
	const char *const *ids;  /* the ID operands (borrowed from argv) */
	int nids;
};
/* held takes -c only: its opts are a struct cmd_common. 0, CMD_HELP or EX_USAGE. */
int cmd_held_parse(int argc, char **argv, struct cmd_common *o);
int cmd_held_run(const struct cmd_common *o);
/* 0, CMD_HELP or EX_USAGE: exactly one of a non-empty --domain or IDs. */
int cmd_release_parse(int argc, char **argv, struct cmd_release_opts *o);
int cmd_release_run(const struct cmd_release_opts *o);

/* Shared with the other Redis administration commands (suppress.c). */
struct config;
struct queue_config;
struct queue_sync;
/* Load the config (cmd_setup) and open a synchronous queue (which borrows
 * *qc). 0, or the exit status (said on stderr). */
int cmd_admin_open(const struct cmd_common *c, struct config *cfg, struct queue_config *qc,
		   struct queue_sync **s);
/* n < 0 from a queue_sync call: say err, EX_TEMPFAIL; else 0. Closes s and cfg. */
int cmd_admin_close(int n, const char *err, struct queue_sync *s, struct config *cfg);
/* s escaped for a terminal (job_escape, quotes too); the caller frees it. */
char *cmd_esc_dup(const char *s);
/* Epoch ms as "2026-12-07T06:40:00Z" ("-" for 0). */
void cmd_fmt_time(char *buf, size_t n, uint64_t ms);

extern const struct cmd_def cmd_enqueue_def, cmd_held_def, cmd_release_def;

#endif
