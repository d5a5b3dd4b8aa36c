/* fuzz_config.c: libFuzzer target for sender/config.c: config_load (the INI
 * file: our line reader, inih, the value parsers), config_rule_for on the
 * rules it built, and config_fini. Not built by default: `make fuzz` builds
 * and runs it (build/fuzz/fuzz_config, corpus build/fuzz/corpus/config seeded
 * from tests/fuzz/seeds/config/); `make test` replays the seeds (replay.c).
 *
 * The input is the file (written to a memfd, read through /proc/self/fd as
 * the program reads its -c file); its first line also goes to
 * config_parse_duration and config_parse_size. Besides the sanitizers, the
 * target checks config.h's promises and aborts if one is broken: an error
 * names the file, a loaded config has its "[domain *]" rule first, and every
 * effective rule has valid levels and never allows plaintext fallback above
 * tls = may. */
#define _GNU_SOURCE /* memfd_create */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sender/config.h"
#include "tests/fuzz/fuzz.h"

static const char *const domains[] = { "example.com", "Sub.Example.COM.", "x", "*", "." };
static const char *const mxs[] = { "mx.example.com", "MX1.EXAMPLE.NET.", "" };

static void check_rule(const struct rule *r)
{
	FUZZ_NEED(r->pattern != NULL);
	FUZZ_NEED(r->tls >= TLS_LEVEL_NONE && r->tls <= TLS_LEVEL_VERIFY);
	FUZZ_NEED(r->on_tls_failure >= TLS_FAIL_NEXT_MX && r->on_tls_failure <= TLS_FAIL_PLAINTEXT);
	FUZZ_NEED(!(r->tls >= TLS_LEVEL_ENCRYPT && r->on_tls_failure == TLS_FAIL_PLAINTEXT));
	FUZZ_NEED(r->relay_host == NULL || r->relay_host[0] != '\0');
}

static void check_values(const char *line)
{
	uint64_t v = 0, w = 0;
	if (config_parse_duration(line, &v) == 0) {
		FUZZ_NEED(v <= 1000000000000000ull);
		FUZZ_NEED(config_parse_duration(line, &w) == 0 && w == v);
	}
	if (config_parse_size(line, &v) == 0)
		FUZZ_NEED(config_parse_size(line, &w) == 0 && w == v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("mxsend.conf", 0);
	FUZZ_NEED(fd >= 0);
	FUZZ_NEED(size == 0 || write(fd, data, size) == (ssize_t)size);
	char path[64], err[512];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	struct config c;
	int rc = config_load(&c, path, err, sizeof(err));
	FUZZ_NEED(rc == 0 || rc == -1);
	if (rc != 0) {
		FUZZ_NEED(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
	} else {
		FUZZ_NEED(c.n_domains >= 1 && strcmp(c.domains[0].pattern, "*") == 0);
		for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
			for (size_t k = 0; k < sizeof(mxs) / sizeof(mxs[0]); k++) {
				struct rule r;
				config_rule_for(&c, domains[i], mxs[k][0] ? mxs[k] : NULL, &r);
				check_rule(&r);
			}
		}
	}
	config_fini(&c);
	close(fd);

	char *s = fuzz_cstr(data, size);
	s[strcspn(s, "\n")] = '\0';
	check_values(s);
	free(s);
	return 0;
}
