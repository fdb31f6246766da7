/* advantage_selftest: GRPO group advantages on a worked example and on
 * random groups (zero mean, unit std, constant groups, G = 1, in place),
 * and masked whitening. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/advantage.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

static void test_advantages(bool verbose)
{
    /* Hand example: {1, 0, 0, 1} has mean .5 and population std .5. */
    float r4[4] = {1, 0, 0, 1}, a4[4];
    adv_group(a4, r4, true, 1, 4);
    double s = 0.5 / (0.5 + ADV_STD_EPS);
    EXPECT_NEAR(a4[0], s, 1e-7, "grpo {1,0,0,1} -> +1");
    EXPECT_NEAR(a4[1], -s, 1e-7, "grpo {1,0,0,1} -> -1");
    adv_group(a4, r4, false, 1, 4);
    EXPECT(a4[0] == 0.5f && a4[1] == -0.5f, "grpo mean-only {1,0,0,1}");

    /* Random groups, one constant group and in-place use. */
    enum { NG = 6, G = 16 };
    Rng   rng;
    float r[NG * G], a[NG * G], m[NG * G];
    rng_seed(&rng, 5);
    for (int i = 0; i < NG * G; i++) r[i] = 2.0f + 3.0f * rng_normal(&rng);
    for (int i = 0; i < G; i++) r[2 * G + i] = 0.3f; /* constant group */
    r[5 * G + 3] = 7.0f;                             /* an outlier */
    for (int pass = 0; pass < 2; pass++) {
        bool divide = pass == 0;
        adv_group(a, r, divide, NG, G);
        double worst_mean = 0.0, worst_std = 0.0;
        for (int g = 0; g < NG; g++) {
            const float *ag = a + g * G;
            const float *rg = r + g * G;
            double       mean = 0.0, var = 0.0, rm = 0.0, rv = 0.0;
            for (int i = 0; i < G; i++) {
                mean += ag[i] / G;
                rm += rg[i] / (double)G;
            }
            for (int i = 0; i < G; i++) {
                var += (ag[i] - mean) * (ag[i] - mean) / G;
                rv += (rg[i] - rm) * (rg[i] - rm) / G;
            }
            if (g == 2) {
                int zeros = 0;
                for (int i = 0; i < G; i++) zeros += ag[i] == 0.0f;
                EXPECT(zeros == G, "grpo constant group gives exact zeros");
                continue;
            }
            worst_mean = fmax(worst_mean, fabs(mean));
            /* With the epsilon the std is s / (s + eps), within 1e-4 of 1. */
            double want = divide ? sqrt(rv) / (sqrt(rv) + ADV_STD_EPS) : sqrt(rv);
            worst_std = fmax(worst_std, fabs(sqrt(var) - want));
            if (divide) EXPECT_NEAR(sqrt(var), 1.0, 2e-4, "grpo unit std");
        }
        EXPECT_NEAR(worst_mean, 0.0, 1e-6, divide ? "grpo zero mean" : "grpo mean-only zero mean");
        EXPECT_NEAR(worst_std, 0.0, 1e-5, "grpo std as specified");
        if (verbose)
            printf("  grpo %s: max |mean| %.1e, max std err %.1e\n",
                   divide ? "normalised" : "mean-only ", worst_mean, worst_std);
    }
    float one = 4.0f, a1;
    adv_group(&a1, &one, true, 1, 1);
    EXPECT(a1 == 0.0f, "grpo G=1 gives 0");
    memcpy(a, r, sizeof r);
    adv_group(a, a, true, NG, G);
    float b[NG * G];
    adv_group(b, r, true, NG, G);
    EXPECT(!memcmp(a, b, sizeof a), "grpo in place");

    /* Whitening over a mask: counted entries get mean 0 and std 1, the
     * others 0, and garbage under the mask is not read. */
    numcheck_random_mask(&rng, m, NG * G);
    for (int i = 0; i < NG * G; i++) {
        r[i] = 2.0f + 3.0f * rng_normal(&rng);
        if (m[i] == 0.0f) r[i] = NAN;
    }
    adv_whiten(r, r, m, NG * G);
    double mean = 0.0, var = 0.0, cnt = numcheck_sum(m, NG * G);
    int    pad_ok = 0;
    for (int i = 0; i < NG * G; i++) {
        if (m[i] == 0.0f)
            pad_ok += r[i] == 0.0f;
        else
            mean += r[i] / cnt;
    }
    for (int i = 0; i < NG * G; i++)
        if (m[i] != 0.0f) var += (r[i] - mean) * (r[i] - mean) / cnt;
    EXPECT_NEAR(mean, 0.0, 1e-6, "whiten mean");
    EXPECT_NEAR(sqrt(var), 1.0, 1e-4, "whiten std");
    EXPECT(pad_ok == NG * G - (int)cnt, "whiten padding is 0");
    float c3[3] = {2, 2, 2};
    adv_whiten(c3, c3, NULL, 3);
    EXPECT(c3[0] == 0 && c3[1] == 0 && c3[2] == 0, "whiten constant gives 0");
}

int advantage_selftest(bool verbose)
{
    test_advantages(verbose);
    return expect_end();
}
