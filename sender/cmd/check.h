/* sender/cmd/check.h: `mxsend check DOMAIN`: a domain's TLS posture, for
 * operators (check.c says what it prints and its exit codes). */
#ifndef SENDER_CMD_CHECK_H
#define SENDER_CMD_CHECK_H

#include "sender/cmd/cmd.h"

struct cmd_check_opts {
	struct cmd_common c; /* -c --dns --ca --port --helo --log */
	int https_port;      /* --https-port N; 0: 443 */
	long timeout_s;      /* --timeout S (1..3600), default 30: every wait */
	bool json;           /* --json: one JSON object, not key=value lines */
	char domain[236];    /* DOMAIN, lower-cased, without a trailing dot */
};

/* argv (argv[0] "check") into *o. 0, CMD_HELP or EX_USAGE (o->c.why): an
 * unknown or bad flag, not one DOMAIN, a DOMAIN empty or too long. */
int cmd_check_parse(int argc, char **argv, struct cmd_check_opts *o);
/* Load the config, look, print. Exit status. */
int cmd_check_run(const struct cmd_check_opts *o);

extern const struct cmd_def cmd_check_def;

#endif
