/* log: leveled logging to stderr, one line per call, with a timestamp and the
 * process's role name; control bytes in a message (text quoted from a file
 * or a peer) are written as \n, \r, \t or \xNN, so a call is always one
 * line. Thread-safe (each line is one fprintf). The level comes
 * from log_init or the RLHF_LOG environment variable (error, warn, info,
 * debug). A sink (log_set_sink) may take the lines instead of stderr, for a
 * harness that checks what was logged. */
#ifndef RLHF_LOG_H
#define RLHF_LOG_H

#include <stdbool.h>

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the role shown on each line (copied) and the level; level < 0 reads RLHF_LOG. */
void log_init(const char *role, int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Current level, for callers that want to skip building expensive messages. */
int log_level(void);

/* Receives each line that passes the level (without a newline) instead of
 * stderr; ctx is log_set_sink's. */
typedef void (*LogSink)(void *ctx, int level, const char *line);
/* Sends the lines to sink (NULL: back to stderr). Set it before other
 * threads log: the pointer is not synchronised. */
void log_set_sink(LogSink sink, void *ctx);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
