/* sender/cmd/version.h: `mxsend --version`: mxsend's version and its
 * libraries', as compiled against and as loaded at run time. */
#ifndef SENDER_CMD_VERSION_H
#define SENDER_CMD_VERSION_H

/* Print the versions to stdout. Returns 0 (the exit status). */
int cmd_version(void);

#endif
