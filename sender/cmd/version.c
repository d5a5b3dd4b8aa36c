/* sender/cmd/version.c: `mxsend --version`. One line for mxsend, then one per
 * library: the version compiled against and, where the library can say, the
 * one loaded now (a Debian upgrade of a shared library shows here before a
 * rebuild). liburing and hiredis have no run-time version call in the
 * versions we build against (2.3, 0.14): for them the file the dynamic
 * loader mapped is named instead (liburing.so.2.3). liburing's compile-time
 * version comes from pkg-config (the Makefile; 2.3 has no macro), mxsend's
 * from the Makefile's VERSION. */
#define _GNU_SOURCE
#include "sender/cmd/version.h"

#include <ares.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <link.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <zlib.h>

#ifndef MXSEND_VERSION
#define MXSEND_VERSION "unknown"
#endif
#ifndef MXSEND_URING_VERSION
#define MXSEND_URING_VERSION "unknown"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

struct loaded {
	const char *stem; /* "liburing.so" */
	char name[256];   /* the mapped file's real name, "" if not found */
};

static int find_loaded(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct loaded *l = arg;
	const char *base = strrchr(info->dlpi_name, '/');
	if (base == NULL || strncmp(base + 1, l->stem, strlen(l->stem)) != 0)
		return 0;
	char *real = realpath(info->dlpi_name, NULL); /* the soname is a link to the file */
	const char *r = real != NULL ? strrchr(real, '/') + 1 : base + 1;
	snprintf(l->name, sizeof(l->name), "%s", r);
	free(real);
	return 1;
}

/* The file name of the loaded library whose name starts with stem, or
 * "statically linked" when none is mapped. */
static const char *loaded(struct loaded *l)
{
	l->name[0] = '\0';
	dl_iterate_phdr(find_loaded, l);
	return l->name[0] ? l->name : "not loaded (static)";
}

int cmd_version(void)
{
	struct utsname u;
	struct loaded uring = { .stem = "liburing.so" }, hiredis = { .stem = "libhiredis.so" };
	printf("mxsend %s\n", MXSEND_VERSION);
	printf("liburing %s (run-time: %s; kernel %s)\n", MXSEND_URING_VERSION, loaded(&uring),
	       uname(&u) == 0 ? u.release : "?");
	printf("OpenSSL %s (run-time: %s)\n", OPENSSL_FULL_VERSION_STR, OpenSSL_version(OPENSSL_FULL_VERSION_STRING));
	printf("c-ares %s (run-time: %s)\n", ARES_VERSION_STR, ares_version(NULL));
	printf("hiredis %s.%s.%s (run-time: %s)\n", STR(HIREDIS_MAJOR), STR(HIREDIS_MINOR), STR(HIREDIS_PATCH),
	       loaded(&hiredis));
	printf("jansson %s (run-time: %s)\n", JANSSON_VERSION, jansson_version_str());
	printf("zlib %s (run-time: %s)\n", ZLIB_VERSION, zlibVersion());
	return 0;
}
