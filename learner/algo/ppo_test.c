/* ppo_selftest: GAE on worked examples, its lambda 1 and 0 limits, aliasing
 * and the padded batch; the clipped value loss on worked examples and
 * finite differences. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/ppo.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

#define FD_TOL 1e-5
#define TN 200 /* tokens in the random tests */

typedef struct {
    float *values;
    float *values_old;
    float *returns;
    float *mask;
    float  clip;
    float  norm;
    int    n;
} ValCtx;

static double eval_value(void *p)
{
    ValCtx *c = p;
    return ppo_value_loss(NULL, NULL, c->values, c->values_old, c->returns, c->mask, c->clip,
                          c->norm, c->n);
}

static void test_gae(bool verbose)
{
    /* One-step TD: 5 + 0.9 * 0 - 1.5 = 3.5 for any lambda. */
    for (int k = 0; k < 3; k++) {
        float r = 5.0f, v = 1.5f, adv, ret;
        ppo_gae(&adv, &ret, &r, &v, 0.0f, 0.9f, 0.5f * (float)k, 1);
        EXPECT(adv == 3.5f, "gae T=1 advantage is exactly 3.5");
        EXPECT(ret == 5.0f, "gae T=1 return is exactly 5");
    }
    /* Three steps, gamma = lambda = 1/2 (exact in binary), terminal:
     *   delta = (1 + .5*1 - .5, 0 + .5*1.5 - 1, 2 + 0 - 1.5) = (1, -.25, .5)
     *   A2 = .5, A1 = -.25 + .25*.5 = -.125, A0 = 1 + .25*(-.125) = .96875 */
    {
        float r[3] = {1, 0, 2}, v[3] = {0.5f, 1.0f, 1.5f}, adv[3], ret[3];
        ppo_gae(adv, ret, r, v, 0.0f, 0.5f, 0.5f, 3);
        EXPECT(adv[0] == 0.96875f && adv[1] == -0.125f && adv[2] == 0.5f, "gae 3-step advantages");
        EXPECT(ret[0] == 1.46875f && ret[1] == 0.875f && ret[2] == 2.0f, "gae 3-step returns");
        /* Truncated instead of terminal: bootstrap 2 adds gamma*2 = 1 to
         * delta2, which reaches A1 times .25 and A0 times .0625. */
        ppo_gae(adv, ret, r, v, 2.0f, 0.5f, 0.5f, 3);
        EXPECT(adv[2] == 1.5f && adv[1] == 0.125f && adv[0] == 1.03125f, "gae 3-step bootstrap");
        if (verbose) printf("  gae: 3-step (0.96875, -0.125, 0.5) and TD(0) 3.5 exact\n");
    }
    /* lambda = 1: A_t = discounted return - V_t; lambda = 0: A_t = delta_t.
     * Outputs written over the inputs (aliasing) must give the same. */
    enum { GT = 17 };
    Rng   rng;
    float r[GT], v[GT], adv[GT], ret[GT];
    rng_seed(&rng, 3);
    for (int t = 0; t < GT; t++) {
        r[t] = rng_normal(&rng);
        v[t] = rng_normal(&rng);
    }
    const float gamma = 0.9f, boot = 0.7f;
    ppo_gae(adv, ret, r, v, boot, gamma, 1.0f, GT);
    double G = boot, worst = 0.0;
    for (int t = GT - 1; t >= 0; t--) {
        G = r[t] + gamma * G;
        worst = fmax(worst, fabs(adv[t] - (G - v[t])));
        worst = fmax(worst, fabs(ret[t] - G));
    }
    EXPECT_NEAR(worst, 0.0, 1e-5, "gae lambda 1 is Monte Carlo");
    ppo_gae(adv, NULL, r, v, boot, gamma, 0.0f, GT);
    worst = 0.0;
    for (int t = 0; t < GT; t++) {
        double next = t + 1 < GT ? v[t + 1] : boot;
        worst = fmax(worst, fabs(adv[t] - (r[t] + gamma * next - v[t])));
    }
    EXPECT_NEAR(worst, 0.0, 1e-6, "gae lambda 0 is TD(0)");
    float ra[GT], va[GT];
    memcpy(ra, r, sizeof r);
    memcpy(va, v, sizeof v);
    ppo_gae(adv, ret, r, v, boot, gamma, 0.95f, GT);
    ppo_gae(ra, va, ra, va, boot, gamma, 0.95f, GT);
    EXPECT(!memcmp(ra, adv, sizeof adv) && !memcmp(va, ret, sizeof ret), "gae aliased outputs");

    /* Batch: rows of lengths 17, 0, 5 agree with ppo_gae; padding is 0. */
    enum { BB = 3 };
    float br[BB * GT], bv[BB * GT], ba[BB * GT], bret[BB * GT], boots[BB] = {0.7f, 1.0f, 0.0f};
    int   lens[BB] = {GT, 0, 5};
    for (int i = 0; i < BB * GT; i++) {
        br[i] = rng_normal(&rng);
        bv[i] = rng_normal(&rng);
        ba[i] = bret[i] = 99.0f;
    }
    ppo_gae_batch(ba, bret, br, bv, boots, lens, gamma, 0.95f, BB, GT);
    int bad = 0;
    for (int b = 0; b < BB; b++) {
        float ra1[GT], rr1[GT];
        ppo_gae(ra1, rr1, br + b * GT, bv + b * GT, boots[b], gamma, 0.95f, lens[b]);
        for (int t = 0; t < GT; t++) {
            float wa = t < lens[b] ? ra1[t] : 0.0f, wr = t < lens[b] ? rr1[t] : 0.0f;
            bad += ba[b * GT + t] != wa || bret[b * GT + t] != wr;
        }
    }
    EXPECT(bad == 0, "gae batch rows and padding");
}

static void test_value(bool verbose)
{
    Rng    rng;
    float  mask[TN], grad[TN] = {0};
    double loss;
    rng_seed(&rng, 17);
    numcheck_random_mask(&rng, mask, TN);

    /* Worked examples, clip 0.5 around v_old = 1:
     *   v 2, R 3: max(1, (1.5-3)^2 = 2.25) -> clipped, loss 1.125, grad 0
     *   v 2, R 0: max(4, 2.25) -> unclipped, loss 2, grad v - R = 2 */
    float  v = 2.0f, vo = 1.0f, R = 3.0f, g = 0.0f;
    double cf;
    loss = ppo_value_loss(&g, &cf, &v, &vo, &R, NULL, 0.5f, 0.0f, 1);
    EXPECT_NEAR(loss, 1.125, 1e-12, "value clipped loss");
    EXPECT(g == 0.0f && cf == 1.0, "value clipped gradient 0");
    R = 0.0f;
    loss = ppo_value_loss(&g, &cf, &v, &vo, &R, NULL, 0.5f, 0.0f, 1);
    EXPECT_NEAR(loss, 2.0, 1e-12, "value unclipped loss");
    EXPECT(g == 2.0f && cf == 0.0, "value unclipped gradient");
    loss = ppo_value_loss(NULL, NULL, &v, NULL, &R, NULL, 0.0f, 0.0f, 1);
    EXPECT_NEAR(loss, 2.0, 1e-12, "value without clip");

    /* Random values away from the kinks (|v - v_old| = clip, and where the
     * two squared errors are equal). */
    float       vals[TN], olds[TN], rets[TN];
    const float clip = 0.2f;
    memset(grad, 0, sizeof grad);
    for (int i = 0; i < TN; i++) {
        for (;;) {
            olds[i] = rng_normal(&rng);
            vals[i] = olds[i] + 0.5f * rng_normal(&rng);
            rets[i] = olds[i] + rng_normal(&rng);
            double vv = vals[i],
                   vc = fmin(fmax(vv, olds[i] - (double)clip), olds[i] + (double)clip);
            if (fabs(fabs(vv - olds[i]) - clip) < 0.01) continue;
            if (fabs(fabs(vv - rets[i]) - fabs(vc - rets[i])) < 0.01 && vv != vc) continue;
            break;
        }
        if (mask[i] == 0.0f) vals[i] = olds[i] = rets[i] = NAN;
    }
    loss = ppo_value_loss(grad, &cf, vals, olds, rets, mask, clip, 0.0f, TN);
    EXPECT(cf > 0.05 && cf < 0.95, "value: both branches taken");
    if (verbose) printf("  value: loss %.4f clip frac %.3f\n", loss, cf);
    ValCtx cv = {vals, olds, rets, mask, clip, 0.0f, TN};
    EXPECT_GRAD("value clipped", eval_value, &cv, vals, grad, mask, TN, FD_TOL);
    memset(grad, 0, sizeof grad);
    ppo_value_loss(grad, NULL, vals, olds, rets, mask, 0.0f, 0.0f, TN);
    cv.clip = 0.0f;
    EXPECT_GRAD("value plain", eval_value, &cv, vals, grad, mask, TN, FD_TOL);
}

int ppo_selftest(bool verbose)
{
    test_gae(verbose);
    test_value(verbose);
    return expect_end();
}
