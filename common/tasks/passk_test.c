/* passk's self-test: pass@k on worked examples computed by hand (n=5 c=2;
 * n=10 c=3; c=0; c=n; c=1 gives k/n), against exact binomial coefficients
 * for every n <= 30, c, k, and for large n (where C(n, k) overflows a
 * double) against a log-gamma evaluation; the majority vote with its tie
 * rule. */
#include "common/tasks/passk.h"

#include <math.h>
#include <stdio.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_worked(bool verbose)
{
    static const struct {
        int    n, c, k;
        double want; /* by hand */
    } ex[] = {
        /* n=5, c=2: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - 1/10;
         * pass@4, pass@5: 3 wrong ones cannot fill 4 draws. */
        {5, 2, 1, 0.4},
        {5, 2, 2, 0.7},
        {5, 2, 3, 0.9},
        {5, 2, 4, 1.0},
        {5, 2, 5, 1.0},
        /* n=10, c=3: pass@5 = 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12. */
        {10, 3, 1, 0.3},
        {10, 3, 5, 11.0 / 12.0},
        /* No correct sample: 0 for every k; all correct: 1. */
        {5, 0, 1, 0.0},
        {5, 0, 5, 0.0},
        {1, 0, 1, 0.0},
        {1, 1, 1, 1.0},
        {5, 5, 1, 1.0},
        {5, 5, 3, 1.0},
        /* One correct of n: a draw of k holds it with probability k/n. */
        {10, 1, 1, 0.1},
        {10, 1, 7, 0.7},
        {1000, 1, 1, 0.001},
        {1000, 1, 10, 0.01},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        double got = passk_estimate(ex[i].n, ex[i].c, ex[i].k);
        if (verbose)
            printf("  pass@%d n=%d c=%d: %.12f (by hand %.12f)\n", ex[i].k, ex[i].n, ex[i].c, got,
                   ex[i].want);
        EXPECT(fabs(got - ex[i].want) <= 1e-12, "pass@%d with n=%d c=%d: %.15g, expected %.15g",
               ex[i].k, ex[i].n, ex[i].c, got, ex[i].want);
    }
}

/* Against 1 - C(n-c,k)/C(n,k) with exact coefficients (Pascal's triangle:
 * every C(n, k) for n <= 30 is an integer below 2^53, exact in a double). */
static void test_exact(void)
{
    static double C[31][31];
    for (int n = 0; n <= 30; n++) {
        C[n][0] = 1;
        for (int k = 1; k <= n; k++) C[n][k] = C[n - 1][k - 1] + (k < n ? C[n - 1][k] : 0);
    }
    double worst = 0;
    int    checked = 0;
    for (int n = 1; n <= 30; n++)
        for (int c = 0; c <= n; c++)
            for (int k = 1; k <= n; k++) {
                double want = 1.0 - (n - c >= k ? C[n - c][k] / C[n][k] : 0.0);
                double got = passk_estimate(n, c, k);
                worst = fmax(worst, fabs(got - want));
                checked++;
            }
    EXPECT(worst <= 1e-13, "%d (n, c, k) with n <= 30: max |product - binomial| %.3g > 1e-13",
           checked, worst);
    /* pass@1 is the share correct, and pass@k never falls as k grows. */
    for (int c = 0; c <= 30; c++) {
        EXPECT(fabs(passk_estimate(30, c, 1) - c / 30.0) <= 1e-15, "pass@1 n=30 c=%d: %.17g", c,
               passk_estimate(30, c, 1));
        for (int k = 2; k <= 30; k++)
            EXPECT(passk_estimate(30, c, k) >= passk_estimate(30, c, k - 1),
                   "pass@%d < pass@%d at n=30 c=%d", k, k - 1, c);
    }
}

/* Large n: C(2000, 1000) is about 2e600, past a double; the product stays
 * in [0, 1]. Compared with lgamma, which holds ~1e-12 relative here. */
static void test_large(bool verbose)
{
    static const struct {
        int n, c, k;
    } ex[] = {{2000, 1000, 1}, {2000, 1000, 5},    {2000, 1000, 50},  {2000, 3, 100},
              {100000, 7, 10}, {100000, 50000, 2}, {2000, 1000, 1000}};
    for (size_t i = 0; i < N_OF(ex); i++) {
        int    n = ex[i].n, c = ex[i].c, k = ex[i].k;
        double lg =
            lgamma(n - c + 1.0) - lgamma(n - c - k + 1.0) - lgamma(n + 1.0) + lgamma(n - k + 1.0);
        double want = n - c < k ? 1.0 : 1.0 - exp(lg);
        double got = passk_estimate(n, c, k);
        if (verbose) printf("  pass@%d n=%d c=%d: %.12f (lgamma %.12f)\n", k, n, c, got, want);
        EXPECT(isfinite(got) && got >= 0 && got <= 1 && fabs(got - want) <= 1e-9,
               "pass@%d n=%d c=%d: %.15g, lgamma says %.15g", k, n, c, got, want);
    }
}

static void test_vote(void)
{
    static const struct {
        const char *a[6];
        int         n, want, count;
        const char *why;
    } ex[] = {
        {{"7", "5", "7"}, 3, 0, 2, "7 twice"},
        {{"5", "7", "7"}, 3, 1, 2, "7 twice, first at sample 1"},
        {{"5", "7", "7", "5"}, 4, 0, 2, "a tie 2-2: the answer given first wins"},
        {{"7", "5", "5", "7"}, 4, 0, 2, "a tie 2-2: 7 came first"},
        {{"a", "b", "c"}, 3, 0, 1, "all different: the first"},
        {{NULL, "3", NULL}, 3, 1, 1, "samples without an answer do not vote"},
        {{NULL, NULL}, 2, -1, 0, "no answer at all"},
        {{"x", NULL, "y", "y", NULL, "x"}, 6, 0, 2, "x and y twice each, x first"},
        {{"x", NULL, "y", "y", NULL, "y"}, 6, 2, 3, "y three times"},
        {{NULL}, 0, -1, 0, "no samples"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        int count = -7, got = passk_vote(ex[i].a, ex[i].n, &count);
        EXPECT(got == ex[i].want && count == ex[i].count,
               "vote (%s): sample %d with %d, expected %d with %d", ex[i].why, got, count,
               ex[i].want, ex[i].count);
    }
}

int passk_selftest(bool verbose)
{
    test_worked(verbose);
    test_exact();
    test_large(verbose);
    test_vote();
    return expect_end();
}
