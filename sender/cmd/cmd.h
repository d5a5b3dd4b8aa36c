/* sender/cmd/cmd.h: the subcommands of the mxsend program. Each parses its own argv
 * (argv[0] is the subcommand name) and returns the process exit status
 * (sysexits: 0 ok, 64 usage, 65 bad message, 69 bounced, 75 deferred,
 * 78 bad config). */
#ifndef SENDER_CMD_CMD_H
#define SENDER_CMD_CMD_H

struct config;

int cmd_send(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_enqueue(int argc, char **argv);
int cmd_held(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_tlsrpt(int argc, char **argv);

/* Shared by commands: load config from path (NULL = defaults only). On error
 * prints "mxsend: FILE:LINE: ..." to stderr and returns 78; else 0. */
int cmd_load_config(struct config *c, const char *path);

/* Exit codes come from <sysexits.h> (EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE,
 * EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG). */

#endif
