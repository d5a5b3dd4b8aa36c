/* sender/cmd/run.h: `mxsend run`: drain the Redis queue until stopped (run.c). */
#ifndef SENDER_CMD_RUN_H
#define SENDER_CMD_RUN_H

#include "sender/cmd/cmd.h"

struct cmd_run_opts {
	struct cmd_common c; /* -c --dns --ca --port */
	bool until_empty;    /* --until-empty: stop once the queue is empty */
};

/* argv (argv[0] "run") into *o. 0, CMD_HELP or EX_USAGE (o->c.why): an
 * unknown or bad flag, an operand. */
int cmd_run_parse(int argc, char **argv, struct cmd_run_opts *o);
/* Load the config and run until SIGTERM/SIGINT (or empty). Exit status. */
int cmd_run_run(const struct cmd_run_opts *o);

extern const struct cmd_def cmd_run_def;

#endif
