/* sender/cmd/tlsrpt.h: `mxsend tlsrpt`: build and send the day's TLS reports
 * (tlsrpt.c says how, what it prints and its exit codes). */
#ifndef SENDER_CMD_TLSRPT_H
#define SENDER_CMD_TLSRPT_H

#include <stdint.h>

#include "sender/cmd/cmd.h"

struct cmd_tlsrpt_opts {
	struct cmd_common c;  /* -c --dns --ca */
	bool dry_run;         /* -n/--dry-run: print, send nothing */
	int64_t day_start;    /* --day YYYY-MM-DD (UTC midnight); default yesterday */
	long delay_s;         /* --delay MAX_S (0..86400): a random wait up to it */
	long timeout_s;       /* --timeout S (1..3600), default 60 */
	int https_port;       /* --https-port N, default 443 (for https: URIs without one) */
	/* --org --contact --from --submitter --dkim-key --dkim-selector
	 * --dkim-domain (NULL: [tlsrpt] in the config, then the defaults) */
	const char *org, *contact, *from, *submitter;
	const char *dkim_file, *dkim_selector, *dkim_domain;
	char only[256];       /* DOMAIN, lower-cased, no trailing dot; "": every domain */
};

/* argv (argv[0] "tlsrpt") into *o. 0, CMD_HELP or EX_USAGE (o->c.why): an
 * unknown or bad flag, a bad --day, more than one DOMAIN or a bad one. */
int cmd_tlsrpt_parse(int argc, char **argv, struct cmd_tlsrpt_opts *o);
/* Load the config, build and send the reports. Exit status. */
int cmd_tlsrpt_run(const struct cmd_tlsrpt_opts *o);

extern const struct cmd_def cmd_tlsrpt_def;

#endif
