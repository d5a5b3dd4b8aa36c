/* replay.c: runs one libFuzzer target's kept inputs as a unit test. Linked
 * with one tests/fuzz/fuzz_NAME.c (Makefile: build/fuzz/replay_NAME, gcc with
 * the unit tests' ASan/UBSan flags) and run by tests/run.sh in `make test`:
 *
 *   build/fuzz/replay_NAME tests/fuzz/seeds/NAME
 *
 * Feeds every regular file of the directory (hand-written seeds, and each
 * crasher found by `make fuzz` once its bug is fixed) to
 * LLVMFuzzerTestOneInput, in name order, each from a heap block of exactly its
 * size. The target aborts on a broken promise and the sanitizers on memory or
 * UB errors, so getting to the end is the test: it then prints
 * "ok - fuzz/NAME (N inputs)". An empty directory is a failure, since then
 * nothing was tested. "# FILE" lines name the input that was running if it
 * dies. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

/* The file's bytes in a block of exactly its size (1 for an empty file). */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	if (f == NULL || fstat(fileno(f), &st) == -1) {
		if (f)
			fclose(f);
		return NULL;
	}
	size_t n = (size_t)st.st_size;
	uint8_t *b = malloc(n ? n : 1);
	if (b == NULL || fread(b, 1, n, f) != n) {
		free(b);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = n;
	return b;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SEEDS_DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1], *name = strrchr(dir, '/');
	name = name && name[1] ? name + 1 : dir;
	DIR *d = opendir(dir);
	if (d == NULL) {
		printf("not ok - fuzz/%s: %s: %s\n", name, dir, strerror(errno));
		return 1;
	}
	char **files = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		char **nf = realloc(files, (n + 1) * sizeof(*files));
		if (nf == NULL)
			abort();
		files = nf;
		size_t l = strlen(dir) + strlen(e->d_name) + 2;
		files[n] = malloc(l);
		if (files[n] == NULL)
			abort();
		snprintf(files[n], l, "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(files, n, sizeof(*files), by_name);
	size_t ran = 0;
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(files[i], &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		size_t len = 0;
		uint8_t *b = slurp(files[i], &len);
		if (b == NULL) {
			printf("# %s: cannot read\n", files[i]);
			bad = 1;
			continue;
		}
		printf("# %s\n", files[i]);
		fflush(stdout);
		LLVMFuzzerTestOneInput(b, len);
		free(b);
		ran++;
	}
	for (size_t i = 0; i < n; i++)
		free(files[i]);
	free(files);
	if (ran == 0 || bad) {
		printf("not ok - fuzz/%s (%zu inputs%s)\n", name, ran, bad ? ", some unreadable" : "");
		return 1;
	}
	printf("ok - fuzz/%s (%zu inputs)\n", name, ran);
	return 0;
}
