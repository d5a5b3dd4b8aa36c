/* sender/cmd/shaping.h: `mxsend shaping`, the live shaping state of every
 * (source, provider) pair, as kept in Redis (queue/shape_store.h). */
#ifndef SENDER_CMD_SHAPING_H
#define SENDER_CMD_SHAPING_H

#include "sender/cmd/cmd.h"

/* -c only. 0, CMD_HELP or EX_USAGE. */
int cmd_shaping_parse(int argc, char **argv, struct cmd_common *o);
/* One line per pair with state; exit status (EX_TEMPFAIL: Redis). */
int cmd_shaping_run(const struct cmd_common *o);

extern const struct cmd_def cmd_shaping_def;

#endif
