#include "common/base/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_fmt_duration(double s, char *buf, int cap)
{
    if (s < 0 || s != s) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, (size_t)cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(buf, (size_t)cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, (size_t)cap, "%lds", t);
}

void progress_start(Progress *p, const char *label, const char *unit, int64_t total)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->every_s = isatty(STDERR_FILENO) ? 0.25 : 10.0;
    p->is_tty = isatty(STDERR_FILENO);
    p->t_start = progress_now();
    p->t_last = 0.0;
}

double progress_elapsed(const Progress *p)
{
    return progress_now() - p->t_start;
}

void progress_update(Progress *p, int64_t done, const char *extra, bool force)
{
    double now = progress_now();
    if (!force && now - p->t_last < p->every_s) return;
    p->t_last = now;
    double el = now - p->t_start, rate = el > 0 ? (double)done / el : 0.0;
    char   eta[32] = "?", elapsed[32];
    progress_fmt_duration(el, elapsed, sizeof elapsed);
    if (p->total > 0 && rate > 0)
        progress_fmt_duration((double)(p->total - done) / rate, eta, sizeof eta);
    char line[512];
    if (p->total > 0)
        snprintf(line, sizeof line, "%s %lld/%lld %s (%.0f%%) %.2f %s/s elapsed %s ETA %s%s%s",
                 p->label, (long long)done, (long long)p->total, p->unit,
                 100.0 * (double)done / (double)p->total, rate, p->unit, elapsed, eta,
                 extra ? " | " : "", extra ? extra : "");
    else
        snprintf(line, sizeof line, "%s %lld %s %.2f %s/s elapsed %s%s%s", p->label,
                 (long long)done, p->unit, rate, p->unit, elapsed, extra ? " | " : "",
                 extra ? extra : "");
    if (p->is_tty)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void progress_end(Progress *p)
{
    if (p->is_tty) fprintf(stderr, "\n");
}
