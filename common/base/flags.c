#include "tests/test_list.h"
#include "common/base/flags.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

static const char *g_prog = "rlhf";

void flags_set_prog(const char *prog)
{
    g_prog = prog;
}

int flags_long(const char *flag, const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s '%s': expected an integer in %ld..%ld\n", g_prog, flag, text, lo,
                hi);
        return ERR_ARG;
    }
    *out = v;
    return 0;
}

int flags_int(const char *flag, const char *text, long lo, long hi, int *out)
{
    CHECK(lo >= -2147483647L - 1 && hi <= 2147483647L);
    long v;
    int  rc = flags_long(flag, text, lo, hi, &v);
    if (rc == 0) *out = (int)v;
    return rc;
}

int flags_u64(const char *flag, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    /* strtoull accepts a sign and wraps negatives; refuse them. */
    if (*text == '\0' || strchr(text, '-') || *end != '\0' || errno) {
        fprintf(stderr, "%s: --%s '%s': expected an integer in 0..2^64-1\n", g_prog, flag, text);
        return ERR_ARG;
    }
    *out = (uint64_t)v;
    return 0;
}

int flags_double(const char *flag, const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s '%s': expected a number in [%g, %g]\n", g_prog, flag, text, lo,
                hi);
        return ERR_ARG;
    }
    *out = v;
    return 0;
}

int flags_float(const char *flag, const char *text, double lo, double hi, float *out)
{
    double v;
    int    rc = flags_double(flag, text, lo, hi, &v);
    if (rc == 0) *out = (float)v;
    return rc;
}

int flags_log_level(const char *flag, const char *text, int *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    static const int   levels[] = {LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(text, names[i])) {
            *out = levels[i];
            return 0;
        }
    }
    fprintf(stderr, "%s: --%s '%s': expected error, warn, info or debug\n", g_prog, flag, text);
    return ERR_ARG;
}

int flags_selftest(bool verbose)
{
    int      fails = 0, i;
    long     l;
    uint64_t u;
    float    f;
    double   d;
    /* Refusals print to stderr; that is the behaviour under test. */
    fails += flags_int("n", "42", 0, 100, &i) != 0 || i != 42;
    fails += flags_int("n", "101", 0, 100, &i) != ERR_ARG;
    fails += flags_int("n", "4x", 0, 100, &i) != ERR_ARG;
    fails += flags_int("n", "", 0, 100, &i) != ERR_ARG;
    fails += flags_long("n", "-5", -10, 10, &l) != 0 || l != -5;
    fails += flags_long("n", "99999999999999999999", 0, 10, &l) != ERR_ARG;
    fails += flags_u64("s", "18446744073709551615", &u) != 0 || u != UINT64_MAX;
    fails += flags_u64("s", "-1", &u) != ERR_ARG;
    fails += flags_float("x", "0.25", 0, 1, &f) != 0 || f != 0.25f;
    fails += flags_float("x", "nan", 0, 1, &f) != ERR_ARG;
    fails += flags_double("x", "inf", 0, INFINITY, &d) != ERR_ARG;
    fails += flags_double("x", "1e400", 0, INFINITY, &d) != ERR_ARG;
    fails += flags_log_level("log-level", "debug", &i) != 0 || i != LOG_DEBUG;
    fails += flags_log_level("log-level", "loud", &i) != ERR_ARG;
    if (verbose) printf("  flags: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
