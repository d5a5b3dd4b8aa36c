/* util.h: allocation that aborts on OOM, small string helpers, container_of.
 * Used by sender/ only (queue/ and tlscache/ keep their own checks). */
#ifndef SENDER_UTIL_H
#define SENDER_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Abort with a message on OOM; never return NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Copy src into dst (size dstlen), always NUL-terminated; returns strlen(src). */
size_t strlcpy_x(char *dst, const char *src, size_t dstlen);

/* The allocator. The programs link jemalloc (Makefile MALLOC_LIBS); the ASan unit tests run
 * on glibc's malloc (ASan's). util_tune_malloc: under glibc, no trimming below 64 MiB: OpenSSL
 * (SSL_MODE_RELEASE_BUFFERS) frees and reallocates ~17 KiB per record and glibc's default
 * trimming turned that into page faults (~25% of the CPU per message in bench/); jemalloc needs
 * nothing. Call once at start-up. util_heap_allocated: bytes the program has allocated and not
 * freed (jemalloc's stats.allocated, glibc's mallinfo2), for measurements. util_heap_release:
 * give free pages back to the kernel (after a burst of connections). */
void util_tune_malloc(void);
size_t util_heap_allocated(void);
void util_heap_release(void);

/* Raise the soft limit on open files to the hard one, as servers do (nginx
 * worker_rlimit_nofile, Redis): every connection, DNS socket and ring is a file,
 * and systemd's default soft limit (1024) is a few hundred sessions. Returns the
 * soft limit now in force (0 if it cannot be read). Call once at start-up. */
unsigned long util_raise_nofile(void);

/* Base64 (RFC 4648), one line, no wrapping, NUL-terminated into out (size
 * at least 4*ceil(n/3)+1). Returns the length, or -1 if out is too small. */
int util_base64(const void *in, size_t n, char *out, size_t outlen);

/* Monotonic and wall clocks, milliseconds. */
uint64_t mono_ms(void);
uint64_t wall_ms(void);
/* Wall-clock ms as "2026-12-07T08:00:00Z" (UTC) into buf (at least 21 bytes). */
void util_utc_time(char *buf, size_t len, uint64_t ms);
/* CPU seconds this process used (all threads, getrusage); user and system
 * parts through the pointers when not NULL. */
double cpu_s(double *user, double *sys);

/* Cheap per-thread PRNG (xorshift), seeded from getrandom on first use. */
uint32_t rand_u32(void);

#endif
