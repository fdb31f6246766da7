#include "common/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char g_role[32] = "rlhf";
static int  g_level = -1;

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

void log_msg(int level, const char *fmt, ...)
{
    if (level > log_level()) return;
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char               line[2048];
    struct timespec    ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int     n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s %s: ", tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000, names[level], g_role);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
