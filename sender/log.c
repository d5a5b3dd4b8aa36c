/* log.c: formatted one-line logs to stderr with a single write(2) per line so
 * lines from several threads never interleave. The threshold is set once at
 * start-up. */
#include "sender/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/job.h"

static enum log_level threshold = LOG_WARN;
static const char *const names[] = { "trace", "debug", "info", "warn", "error" };

void log_set_level(enum log_level lvl)
{
	threshold = lvl;
}

int log_enabled(enum log_level lvl)
{
	return lvl >= threshold;
}

int log_level_parse(const char *s)
{
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

static void vlog(const char *lvl, const char *fmt, va_list ap)
{
	char line[4096];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, lvl);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	char safe[sizeof(line)];
	char *out = line;
	if (job_escape_needed(line + n, len - (size_t)n, JOB_ESC_KEEP_BACKSLASH)) {
		/* a raw control byte from an unescaped value: never write it */
		memcpy(safe, line, (size_t)n);
		job_escape(safe + n, sizeof(safe) - (size_t)n - 1, line + n, len - (size_t)n,
			   JOB_ESC_KEEP_BACKSLASH);
		len = strlen(safe);
		out = safe;
	}
	out[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, out, len);
	(void)w;
}

const char *log_q(char *buf, size_t n, const char *s)
{
	job_escape(buf, n, s ? s : "", s ? strlen(s) : 0, JOB_ESC_QUOTED);
	return buf;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if (lvl < threshold)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(names[lvl], fmt, ap);
	va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("fatal", fmt, ap);
	va_end(ap);
	exit(1);
}

void log_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("panic", fmt, ap);
	va_end(ap);
	abort();
}
