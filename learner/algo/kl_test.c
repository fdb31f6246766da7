/* kl_selftest: the estimators on equal policies, k3 never negative and
 * accurate where the naive formula cancels, each as a loss against its
 * masked mean and finite differences; the adaptive coefficient on worked
 * examples and steering a simulated KL to its target. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/kl.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

#define FD_TOL 1e-5
#define TN 200 /* tokens in the random tests */

typedef struct {
    float *logp;
    float *logp_ref;
    float *mask;
    KlKind kind;
    float  beta;
    float  norm;
    int    n;
} KlCtx;

static double eval_kl(void *p)
{
    KlCtx *c = p;
    return kl_loss(NULL, c->logp, c->logp_ref, c->mask, c->kind, c->beta, c->norm, c->n);
}

static void test_kl(bool verbose)
{
    const KlKind kinds[3] = {KL_K1, KL_K2, KL_K3};
    const char  *names[3] = {"kl k1", "kl k2", "kl k3"};
    Rng          rng;
    rng_seed(&rng, 13);

    /* Equal policies: every estimator is 0; derivatives 1, 0, 0. */
    float lp[TN], ref[TN], mask[TN], kl[TN], dkl[TN], grad[TN];
    for (int i = 0; i < TN; i++) lp[i] = ref[i] = -5.0f * rng_uniform(&rng);
    for (int k = 0; k < 3; k++) {
        kl_estimate(kl, dkl, lp, ref, NULL, kinds[k], TN);
        int ok = 0;
        for (int i = 0; i < TN; i++) ok += kl[i] == 0.0f && dkl[i] == (k == 0 ? 1.0f : 0.0f);
        EXPECT(ok == TN, "kl of equal policies is 0");
    }
    /* k3 >= 0 over a wide range of differences, tiny ones included, and
     * accurate where the naive formula would cancel. */
    int neg = 0;
    for (int i = 0; i < TN; i++) {
        double scale = pow(10.0, -7.0 + 8.0 * rng_uniform(&rng)); /* 1e-7 .. 10 */
        ref[i] = -3.0f;
        lp[i] = (float)(-3.0 + scale * rng_normal(&rng));
    }
    kl_estimate(kl, dkl, lp, ref, NULL, KL_K3, TN);
    double worst = 0.0;
    for (int i = 0; i < TN; i++) {
        neg += kl[i] < 0.0f;
        double d = (double)lp[i] - ref[i];
        /* Reference in long double, accurate enough in both regimes. */
        long double x = -(long double)d;
        long double want =
            fabsl(x) < 1e-3L ? x * x / 2 + x * x * x / 6 + x * x * x * x / 24 : expm1l(x) - x;
        if (want > 0) worst = fmax(worst, (double)fabsl((kl[i] - want) / want));
    }
    EXPECT(neg == 0, "k3 never negative");
    EXPECT_NEAR(worst, 0.0, 1e-6, "k3 relative accuracy");
    if (verbose) printf("  kl: k3 >= 0 on %d draws, max rel err vs long double %.1e\n", TN, worst);

    /* Finite differences of each estimator as a loss. */
    numcheck_random_mask(&rng, mask, TN);
    for (int i = 0; i < TN; i++) {
        lp[i] = -0.1f - 4.0f * rng_uniform(&rng);
        ref[i] = lp[i] + rng_normal(&rng);
        if (mask[i] == 0.0f) lp[i] = ref[i] = NAN;
    }
    for (int k = 0; k < 3; k++) {
        memset(grad, 0, sizeof grad);
        double loss = kl_loss(grad, lp, ref, mask, kinds[k], 0.05f, 0.0f, TN);
        kl_estimate(kl, NULL, lp, ref, mask, kinds[k], TN);
        double mean = 0.0;
        for (int i = 0; i < TN; i++) mean += kl[i];
        mean /= numcheck_sum(mask, TN);
        EXPECT_NEAR(loss, 0.05 * mean, 1e-7, "kl loss is beta * masked mean");
        KlCtx c = {lp, ref, mask, kinds[k], 0.05f, 0.0f, TN};
        EXPECT_GRAD(names[k], eval_kl, &c, lp, grad, mask, TN, FD_TOL);
    }
}

/* The controller e = clip(kl / target - 1, -0.2, 0.2),
 * beta *= 1 + gain * e * n / horizon, with beta 0.1, target 4, gain 0.1,
 * n = 128 samples, horizon 1000 (so gain * n / horizon = 0.0128):
 *   kl 6    e = 0.5 clipped to 0.2:   0.1 * (1 + 0.00256) = 0.100256
 *   kl 4.4  e = 0.1:                  0.1 * (1 + 0.00128) = 0.100128
 *   kl 4    e = 0:                    0.1
 *   kl 3    e = -0.25 clipped to -0.2: 0.1 * (1 - 0.00256) = 0.099744
 *   kl 0    e = -1 clipped to -0.2:   0.099744 as well */
static void test_adaptive(bool verbose)
{
    static const double k_cases[][2] = {
        {6.0, 0.100256}, {4.4, 0.100128}, {4.0, 0.1}, {3.0, 0.099744}, {0.0, 0.099744},
    };
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "adaptive beta at kl %g", k_cases[i][0]);
        EXPECT_NEAR(kl_adaptive_beta(0.1, k_cases[i][0], 4.0, 0.1, 128, 1000), k_cases[i][1], 1e-12,
                    what);
    }
    EXPECT(kl_adaptive_beta(0.1, NAN, 4.0, 0.1, 128, 1000) == 0.1, "a NaN KL leaves beta");
    EXPECT(kl_adaptive_beta(0.1, 0.0, 4.0, 100.0, 1000, 10) == 0.0, "a huge gain stops at 0");

    /* Closed loop: a policy whose KL answers the penalty as kl = 0.6 / beta
     * (more penalty, less drift) sits at the target 4 when beta = 0.15.
     * From 0.1 (kl 6, too much) the controller raises beta until the KL
     * reaches the target and stays there. */
    double beta = 0.1, kl = 0.0;
    for (int step = 0; step < 2000; step++) {
        kl = 0.6 / beta;
        beta = kl_adaptive_beta(beta, kl, 4.0, 0.1, 128, 1000);
    }
    if (verbose)
        printf("  adaptive: kl = 0.6/beta from beta 0.1 -> beta %.5f, kl %.4f\n", beta, kl);
    EXPECT_NEAR(kl, 4.0, 0.01, "adaptive beta steers the simulated KL to its target 4");
    EXPECT_NEAR(beta, 0.15, 0.001, "adaptive beta settles at 0.15");
}

int kl_selftest(bool verbose)
{
    test_kl(verbose);
    test_adaptive(verbose);
    return expect_end();
}
