/* main.c: mxsend's entry point: picks the subcommand; no logic of its own. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "sender/cmd/cmd.h"
#include "sender/config.h"
#include "sender/util.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *usage;
} cmds[] = {
	{ "send", cmd_send, "send [-c FILE] [--dns A[:P]] [--ca FILE] [--tls LEVEL] [--port N] --from A --to B [--to C ...] MSG|-" },
	{ "run", cmd_run, "run [-c FILE] [--dns A[:P]] [--ca FILE] [--port N] [--until-empty]" },
	{ "enqueue", cmd_enqueue, "enqueue [-c FILE] --from A --to B [--to C ...] [--id X] [--meta M] [--tls LEVEL] [--expires S] [--count N] MSG|-" },
	{ "check", cmd_check, "check [-c FILE] [--dns A[:P]] [--ca FILE] [--port N] [--https-port N] [--timeout S] [--json] DOMAIN" },
	{ "tlsrpt", cmd_tlsrpt, "tlsrpt [-c FILE] [--dry-run] [--day YYYY-MM-DD] [--delay MAX_S] [DOMAIN]" },
	{ "held", cmd_held, "held [-c FILE]" },
	{ "release", cmd_release, "release [-c FILE] [--domain D | ID...]" },
};

int cmd_load_config(struct config *c, const char *path)
{
	char err[512];
	if (path == NULL) {
		config_defaults(c);
		return 0;
	}
	if (config_load(c, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "mxsend: %s\n", err);
		return EX_CONFIG;
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(stderr, "  mxsend %s\n", cmds[i].usage);
	return EX_USAGE;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	util_tune_malloc();
	if (argc < 2)
		return usage();
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage();
		return 0;
	}
	fprintf(stderr, "mxsend: unknown command \"%s\"\n", argv[1]);
	return usage();
}
