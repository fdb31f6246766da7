/* advantage_selftest: GRPO group advantages on a worked example and on
 * random groups (zero mean, unit std, constant groups, G = 1, in place),
 * masked whitening, RLOO's and REINFORCE's baselines and DAPO's overlong
 * penalty and flat-group test on hand-computed examples. */
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

/* RLOO: each completion's baseline is the mean of the others. */
static void test_rloo(bool verbose)
{
    /* {1, 0, 0, 1}: a 1's others average 1/3, so +2/3; a 0's 2/3, so -2/3. */
    float r4[4] = {1, 0, 0, 1}, a4[4];
    adv_rloo(a4, r4, 1, 4);
    EXPECT_NEAR(a4[0], 2.0 / 3, 1e-7, "rloo {1,0,0,1}[0] = 1 - 1/3");
    EXPECT_NEAR(a4[1], -2.0 / 3, 1e-7, "rloo {1,0,0,1}[1] = 0 - 2/3");
    /* {3, 1, 2}: 3 - (1+2)/2 = 1.5, 1 - (3+2)/2 = -1.5, 2 - (3+1)/2 = 0. */
    float r3[6] = {3, 1, 2, 5, 5, 5}, a3[6];
    adv_rloo(a3, r3, 2, 3);
    EXPECT(a3[0] == 1.5f && a3[1] == -1.5f && a3[2] == 0.0f, "rloo {3,1,2} = {1.5,-1.5,0}");
    EXPECT(a3[3] == 0.0f && a3[4] == 0.0f && a3[5] == 0.0f, "rloo flat group gives zeros");
    /* The identity G / (G - 1) * (r - mean) on random groups, in place. */
    enum { NG = 5, G = 7 };
    Rng   rng;
    float r[NG * G], a[NG * G];
    rng_seed(&rng, 41);
    for (int i = 0; i < NG * G; i++) r[i] = a[i] = rng_normal(&rng);
    adv_rloo(a, a, NG, G);
    double worst = 0.0;
    for (int g = 0; g < NG; g++) {
        double mean = 0.0;
        for (int i = 0; i < G; i++) mean += r[g * G + i] / (double)G;
        for (int i = 0; i < G; i++)
            worst = fmax(worst, fabs(a[g * G + i] - (double)G / (G - 1) * (r[g * G + i] - mean)));
    }
    EXPECT_NEAR(worst, 0.0, 1e-6, "rloo = G/(G-1) (r - mean), in place");
    float one = 2.0f, a1 = 9.0f;
    adv_rloo(&a1, &one, 1, 1);
    EXPECT(a1 == 0.0f, "rloo G = 1 gives 0");
    if (verbose)
        printf("  rloo: {1,0,0,1} -> %+.4f %+.4f; identity max err %.1e\n", a4[0], a4[1], worst);
}

/* REINFORCE: the baseline is the running mean before the batch. */
static void test_reinforce(bool verbose)
{
    double b = -7.0;
    bool   has = false;
    float  r1[4] = {1, 0, 0, 1}, r2[4] = {1, 1, 1, 0}, r3[2] = {0, 0}, a[4];
    /* Batch 1 has no past: b = its mean 0.5, adv = +-0.5; b stays
     * 0.9 * 0.5 + 0.1 * 0.5 = 0.5. */
    adv_reinforce(a, r1, &b, &has, 0.9f, 4);
    EXPECT(has && a[0] == 0.5f && a[1] == -0.5f && b == 0.5, "reinforce batch 1: b = 0.5");
    /* Batch 2 (mean 0.75) is judged against 0.5: adv +0.5 +0.5 +0.5 -0.5;
     * then b = 0.9 * 0.5 + 0.1 * 0.75 = 0.525. */
    adv_reinforce(a, r2, &b, &has, 0.9f, 4);
    EXPECT(a[0] == 0.5f && a[3] == -0.5f, "reinforce batch 2 against b = 0.5");
    EXPECT_NEAR(b, 0.525, 1e-7, "reinforce b after batch 2 = 0.525");
    /* Batch 3, all 0: adv -0.525 each, so even a flat batch moves the
     * policy (unlike a group baseline); b = 0.9 * 0.525 = 0.4725. */
    adv_reinforce(a, r3, &b, &has, 0.9f, 2);
    EXPECT_NEAR(a[0], -0.525, 1e-7, "reinforce batch 3 adv = -0.525");
    EXPECT_NEAR(b, 0.4725, 1e-7, "reinforce b after batch 3 = 0.4725");
    if (verbose) printf("  reinforce: baselines 0.5, 0.5, 0.525 -> %.4f\n", b);
}

/* DAPO's soft overlong penalty and the flat-group test. */
static void test_dapo_pieces(bool verbose)
{
    /* L_max = 8, L_cache = 2: free up to 6 tokens, then -0.5 at 7, -1 at 8. */
    static const struct {
        int   len, buffer;
        float coef, want;
    } k_cases[] = {
        {1, 2, 1.0f, 0.0f},  {6, 2, 1.0f, 0.0f},   {7, 2, 1.0f, -0.5f},   {8, 2, 1.0f, -1.0f},
        {9, 2, 1.0f, -1.0f}, {7, 2, 0.5f, -0.25f}, {8, 0, 1.0f, 0.0f},    {5, 4, 1.0f, -0.25f},
        {6, 4, 1.0f, -0.5f}, {8, 8, 1.0f, -1.0f},  {1, 8, 1.0f, -0.125f},
    };
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        float got = adv_overlong_penalty(k_cases[i].len, 8, k_cases[i].buffer, k_cases[i].coef);
        EXPECT(got == k_cases[i].want, "overlong len %d cap 8 buffer %d coef %g: %g, expected %g",
               k_cases[i].len, k_cases[i].buffer, (double)k_cases[i].coef, (double)got,
               (double)k_cases[i].want);
    }
    float flat[3] = {0.5f, 0.5f, 0.5f}, mixed[3] = {0.5f, 0.5f, 0.25f};
    EXPECT(adv_group_is_flat(flat, 3) && !adv_group_is_flat(mixed, 3) &&
               adv_group_is_flat(mixed + 2, 1),
           "flat groups: all equal, one different, G = 1");
    if (verbose) printf("  overlong: cap 8 buffer 2 -> 0 at 6, -0.5 at 7, -1 at 8\n");
}

int advantage_selftest(bool verbose)
{
    test_advantages(verbose);
    test_rloo(verbose);
    test_reinforce(verbose);
    test_dapo_pieces(verbose);
    return expect_end();
}
