/* sender/cmd/suppress.h: `mxsend suppress add|del|list|check` (suppress.c):
 * the suppression list in Redis (queue/suppress.h has the layout). */
#ifndef SENDER_CMD_SUPPRESS_H
#define SENDER_CMD_SUPPRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "sender/cmd/cmd.h"

#define SUPP_CLI_MAX 1000000 /* entries per command (operands or lines of "-") */

struct cmd_suppress_opts {
	struct cmd_common c;    /* -c */
	char action;            /* 'a' add, 'd' del, 'l' list, 'c' check */
	bool domain;            /* --domain: the operands are domains */
	const char *reason;     /* --reason R (add; default "manual") */
	const char *code;       /* --code "550 5.1.1" (add), checked */
	uint64_t expires_ms;    /* --expires DUR (add), 0: never */
	const char *const *items; /* operands (borrowed from argv); "-" alone: stdin */
	int nitems;
};
/* argv (argv[0] "suppress", argv[1] the action) into *o. 0, CMD_HELP or
 * EX_USAGE (o->c.why): unknown action or flag, a flag the action does not
 * take, bad --code/--expires, a --reason over 256 bytes, no operands for
 * add/del/check, operands for list. */
int cmd_suppress_parse(int argc, char **argv, struct cmd_suppress_opts *o);
/* Run it: add/del print how many, list one line per entry, check one line
 * per operand (exit 0 when every one is suppressed, 1 when one is not). A
 * malformed entry (a control byte, a blank, no '@', too long) is exit 65
 * naming it (operand or line number), before anything is written. */
int cmd_suppress_run(const struct cmd_suppress_opts *o);

extern const struct cmd_def cmd_suppress_def;

#endif
