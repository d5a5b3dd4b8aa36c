/* log.h: one line per event, key=value, to stderr.
 * Levels: trace < debug < info < warn < error. log_fatal exits 1 (bad
 * configuration at start-up); log_panic aborts (a broken invariant of ours).
 * Nothing here allocates; lines longer than 4 KiB are truncated.
 *
 * Escaping: a value that comes from outside (a job's id or meta, a recipient, a
 * server's reply) goes through log_q() where the format quotes it
 * (key="%s"): controls, quotes and backslashes come out escaped (job_escape,
 * queue/job.h). As a last resort every line is checked before it is written: a
 * control byte (CR, LF, ESC, BEL, ...) that got into it through an unescaped
 * %s is written as \xNN, so a log line is always one line with no terminal
 * escape in it. */
#ifndef SENDER_LOG_H
#define SENDER_LOG_H

#include <stddef.h>

enum log_level { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the threshold (default LOG_WARN). Not thread-safe: call before threads start. */
void log_set_level(enum log_level lvl);
int log_enabled(enum log_level lvl);
/* Parse "trace|debug|info|warn|error"; -1 if unknown. */
int log_level_parse(const char *s);

/* s escaped for a quoted log value, cut to fit buf (n bytes; never half an
 * escape); returns buf. */
const char *log_q(char *buf, size_t n, const char *s);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define log_trace(...) do { if (log_enabled(LOG_TRACE)) log_msg(LOG_TRACE, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
