/* main.c: mxsend's entry point: picks the subcommand (sender/cmd/); no logic
 * of its own. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "sender/cmd/check.h"
#include "sender/cmd/cmd.h"
#include "sender/cmd/queue.h"
#include "sender/cmd/run.h"
#include "sender/cmd/send.h"
#include "sender/cmd/shaping.h"
#include "sender/cmd/suppress.h"
#include "sender/cmd/tlsrpt.h"
#include "sender/cmd/version.h"
#include "sender/util.h"

static const struct cmd_def *const cmds[] = {
	&cmd_send_def, &cmd_run_def, &cmd_enqueue_def, &cmd_check_def,
	&cmd_tlsrpt_def, &cmd_held_def, &cmd_release_def, &cmd_suppress_def, &cmd_shaping_def,
};

static int usage(void)
{
	fprintf(stderr, "usage:\n");
	for (size_t i = 0; i < ARRAY_LEN(cmds); i++)
		cmd_print_usage("  mxsend ", cmds[i]);
	fprintf(stderr, "  mxsend --version\n");
	return EX_USAGE;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	util_tune_malloc();
	if (argc < 2)
		return usage();
	for (size_t i = 0; i < ARRAY_LEN(cmds); i++)
		if (strcmp(argv[1], cmds[i]->name) == 0)
			return cmds[i]->main(argc - 1, argv + 1);
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version();
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage();
		return 0;
	}
	fprintf(stderr, "mxsend: unknown command \"%s\"\n", argv[1]);
	return usage();
}
