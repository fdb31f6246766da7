#include "common/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char    g_role[32] = "rlhf";
static int     g_level = -1;
static LogSink g_sink;
static void   *g_sink_ctx;

void log_set_sink(LogSink sink, void *ctx)
{
    g_sink = sink;
    g_sink_ctx = ctx;
}

static int level_from_env(void)
{
    const char *s = getenv("RLHF_LOG");
    if (!s) return LOG_INFO;
    if (!strcmp(s, "error")) return LOG_ERROR;
    if (!strcmp(s, "warn")) return LOG_WARN;
    if (!strcmp(s, "debug")) return LOG_DEBUG;
    return LOG_INFO;
}

void log_init(const char *role, int level)
{
    if (role) snprintf(g_role, sizeof g_role, "%s", role);
    g_level = level < 0 ? level_from_env() : level;
}

int log_level(void)
{
    if (g_level < 0) g_level = level_from_env();
    return g_level;
}

/* Writes in to out (cap bytes, NUL included) with every control byte as
 * \n, \r, \t or \xNN: messages quote text from files and peers, and a
 * newline, carriage return or escape sequence in it must not start a forged
 * line or drive the terminal. Truncates at a whole character. */
static void escape_controls(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (; *in && k + 5 <= cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c >= 0x20 && c != 0x7f) {
            out[k++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            out[k++] = '\\';
            out[k++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else {
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
        }
    }
    out[k] = '\0';
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > log_level()) return;
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char               msg[2048], line[2048 + 64];
    struct timespec    ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int     n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s %s: ", tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000, names[level], g_role);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof line) escape_controls(msg, line + n, sizeof line - (size_t)n);
    if (g_sink)
        g_sink(g_sink_ctx, level, line);
    else
        fprintf(stderr, "%s\n", line);
}
