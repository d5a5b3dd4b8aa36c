/* sender/cmd/send.h: `mxsend send`: deliver one message directly, no Redis
 * (send.c says what it prints and its exit codes). */
#ifndef SENDER_CMD_SEND_H
#define SENDER_CMD_SEND_H

#include "sender/cmd/cmd.h"

#define CMD_SEND_MAX_RCPTS 1000

struct cmd_send_opts {
	struct cmd_common c; /* -c --dns --ca --tls --port --helo --log -v */
	const char *from;    /* --from A ("" or "<>": the null sender) */
	const char *rcpts[CMD_SEND_MAX_RCPTS]; /* --to B ..., in command-line order */
	int nrcpt;
	const char *msg;     /* MSG: a file, or "-" for stdin */
	const char *dkim;    /* --dkim DOMAIN|no: as a job's `dkim` field (signer.h) */
	const char *pool;    /* --pool NAME: as a job's `pool` field (a [pool NAME] of the config) */
};

/* argv (argv[0] "send") into *o, strings borrowed from argv; nothing else is
 * touched. 0, CMD_HELP or EX_USAGE (o->c.why says why): an unknown or bad
 * flag, no --from, no --to, more than CMD_SEND_MAX_RCPTS, not one MSG. The
 * addresses themselves are checked by cmd_send_run (exit 65). */
int cmd_send_parse(int argc, char **argv, struct cmd_send_opts *o);
/* Load the config, deliver, print one line per recipient. Returns the exit status. */
int cmd_send_run(const struct cmd_send_opts *o);

extern const struct cmd_def cmd_send_def;

#endif
