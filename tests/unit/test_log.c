/* test_log.c: sender/log.c: a log line never carries a raw control byte (the
 * last-resort pass), and log_q() escapes a quoted value. stderr is pointed at
 * a temporary file while a line is written, then read back. */
#include "sender/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/t.h"

/* Write one line through log_msg(LOG_ERROR, "%s", text...) with stderr
 * redirected; returns the line (after the timestamp and level), static. */
static const char *logged(const char *fmt, const char *arg)
{
	static char buf[8192];
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	if (f == NULL || saved == -1)
		return "";
	fflush(stderr);
	dup2(fileno(f), STDERR_FILENO);
	log_msg(LOG_ERROR, fmt, arg);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	char *p = strstr(buf, " error ");
	return p != NULL ? p + 7 : buf;
}

static void t_no_raw_controls(void)
{
	const char *l = logged("evt=x text=\"%s\"", "a\r\nb\x1b[2Jc\a\bd\x7f");
	CHECK_STR(l, "evt=x text=\"a\\r\\nb\\x1b[2Jc\\x07\\x08d\\x7f\"\n");
	/* the pass keeps what callers escaped as it is */
	l = logged("evt=x v=%s", "a\\\"b");
	CHECK_STR(l, "evt=x v=a\\\"b\n");
	/* a long value: the line is cut, still one line */
	char big[6000];
	memset(big, '\n', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	l = logged("%s", big);
	CHECK(strchr(l, '\n') == l + strlen(l) - 1);
	CHECK(strlen(l) < 4096);
}

static void t_log_q(void)
{
	char b[32];
	CHECK_STR(log_q(b, sizeof(b), "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
	CHECK_STR(log_q(b, 8, "abcdef\x1b"), "abcdef");
	CHECK_STR(log_q(b, sizeof(b), NULL), "");
	const char *l = logged("id=\"%s\"", log_q(b, sizeof(b), "x\"\r\n"));
	CHECK_STR(l, "id=\"x\\\"\\r\\n\"\n");
}

static const struct t_case cases[] = {
	{ "no raw control byte in a log line", t_no_raw_controls },
	{ "log_q escapes a quoted value", t_log_q },
};

T_MAIN(cases)
