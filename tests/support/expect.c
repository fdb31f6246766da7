#include "tests/support/expect.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>

#include "common/base/err.h"

static const char *g_test = "test";
static bool        g_verbose;
static int         g_checks;
static int         g_fails;
static uint64_t   *g_shared; /* [0]: checks of every process since expect_share */

void expect_begin(const char *test, bool verbose)
{
    g_test = test;
    g_verbose = verbose;
    g_checks = 0;
    g_fails = 0;
}

int expect_end(void)
{
    if (g_verbose) printf("%s: %d checks, %d failed\n", g_test, g_checks, g_fails);
    return g_fails;
}

static void count(void)
{
    g_checks++;
    /* Children of the runner run one at a time, so a plain add is enough. */
    if (g_shared) g_shared[0]++;
}

bool expect_check(bool ok, const char *file, int line, const char *fmt, ...)
{
    count();
    if (ok) return true;
    g_fails++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: %s:%d: ", g_test, file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return false;
}

bool expect_near(double got, double want, double tol, const char *file, int line, const char *what)
{
    double diff = fabs(got - want);
    bool   ok = isfinite(got) && isfinite(want) && diff <= tol;
    if (g_verbose)
        printf("  %s: %.9g vs %.9g, |diff| %.3g (tol %.3g)\n", what, got, want, diff, tol);
    return expect_check(ok, file, line, "%s: got %.9g, expected %.9g, |diff| %.3g > tol %.3g", what,
                        got, want, diff, tol);
}

bool expect_verbose(void)
{
    return g_verbose;
}
int expect_checks(void)
{
    return g_checks;
}
int expect_fails(void)
{
    return g_fails;
}

void expect_share(void)
{
    void *p =
        mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shared = p;
    g_shared[0] = 0;
}

uint64_t expect_shared_checks(void)
{
    return g_shared ? g_shared[0] : 0;
}
