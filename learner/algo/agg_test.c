/* agg_selftest: the reductions between tokens and sequences on worked
 * examples, and the three aggregation modes: their weights, their effect on
 * the policy gradient of a long and a short sequence (hand-computed), and
 * finite differences of the surrogate under each. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/agg.h"
#include "learner/algo/pg.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

static void test_seq(bool verbose)
{
    float x[6] = {1, 2, 3, 4, 5, NAN}, m[6] = {1, 1, 0, 1, 1, 0}, out[2];
    agg_seq_sum(out, x, m, 2, 3);
    EXPECT(out[0] == 3.0f && out[1] == 9.0f, "seq sum");
    float dx[6] = {0}, dout[2] = {0.5f, -2.0f};
    agg_seq_sum_backward(dx, dout, m, 2, 3);
    EXPECT(dx[0] == 0.5f && dx[1] == 0.5f && dx[2] == 0.0f && dx[3] == -2.0f && dx[5] == 0.0f,
           "seq sum backward");
    float w[6], m2[6] = {1, 1, 0, 0, 0, 0};
    agg_seq_mean_weights(w, m, 2, 3);
    EXPECT(w[0] == 0.25f && w[4] == 0.25f && w[2] == 0.0f, "seq mean weights");
    agg_seq_mean_weights(w, m2, 2, 3); /* an empty row does not count */
    EXPECT(w[0] == 0.5f && w[3] == 0.0f, "seq mean weights, empty row");
}

/* A long sequence (4 tokens, A = +1) and a short one (1 token, A = -1) in
 * a (2,5) batch, on-policy (every ratio 1), length cap L = 8. The policy
 * gradient of a token is -A * w / D. By hand:
 *   token-mean  w = 1, D = 5:          long tokens -1/5 = -0.2 each (-0.8 in
 *                                      all), the short one +0.2
 *   seq-mean    w = 1/(2 |y|), D = 1:  long tokens -1/8 = -0.125 each (-0.5
 *                                      in all), the short one +0.5
 *   constant    w = 1, D = 2 * 8:      every token 1/16 = 0.0625: long
 *                                      -0.0625 each (-0.25), short +0.0625
 * Token-mean lets the long sequence dominate (4:1), seq-mean weighs the
 * two sequences equally (1:1), constant weighs tokens equally but does not
 * renormalise, so the total shrinks when sequences are shorter than L. */
static void test_modes_gradient(bool verbose)
{
    enum { B = 2, T = 5, L = 8 };
    static const float k_mask[B * T] = {1, 1, 1, 1, 0, 1, 0, 0, 0, 0};
    static const float k_adv[B * T] = {1, 1, 1, 1, 0, -1, 0, 0, 0, 0};
    static const struct {
        AggMode mode;
        float   norm;      /* the divisor agg_weights returns */
        double  long_tok;  /* gradient of each long-sequence token */
        double  short_tok; /* gradient of the short sequence's token */
    } k_want[] = {
        {AGG_TOKEN_MEAN, 0.0f, -0.2, 0.2},
        {AGG_SEQ_MEAN, 0.0f, -0.125, 0.5},
        {AGG_CONSTANT, 16.0f, -0.0625, 0.0625},
    };
    float       logp[B * T], w[B * T];
    PgPpoConfig cfg = {.clip_low = 0.2f, .clip_high = 0.2f};
    for (int i = 0; i < B * T; i++) logp[i] = -1.0f - 0.1f * i;
    for (size_t k = 0; k < sizeof k_want / sizeof k_want[0]; k++) {
        float norm = agg_weights(w, k_want[k].mode, k_mask, L, B, T);
        float g[B * T] = {0};
        pg_ppo_loss(g, NULL, logp, logp, NULL, k_adv, w, &cfg, norm, B * T);
        char what[96];
        snprintf(what, sizeof what, "%s: divisor", agg_mode_names[k_want[k].mode]);
        EXPECT(norm == k_want[k].norm, "%s %g, expected %g", what, (double)norm,
               (double)k_want[k].norm);
        for (int t = 0; t < 4; t++) {
            snprintf(what, sizeof what, "%s: long-sequence token %d gradient",
                     agg_mode_names[k_want[k].mode], t);
            EXPECT_NEAR(g[t], k_want[k].long_tok, 1e-7, what);
        }
        snprintf(what, sizeof what, "%s: short-sequence token gradient",
                 agg_mode_names[k_want[k].mode]);
        EXPECT_NEAR(g[5], k_want[k].short_tok, 1e-7, what);
        EXPECT(g[4] == 0.0f && g[6] == 0.0f && g[9] == 0.0f, "%s: padding gets no gradient",
               agg_mode_names[k_want[k].mode]);
        if (verbose)
            printf("  %-10s long tokens %+.4f each (%+.4f in all), short %+.4f: ratio %.1f:1\n",
                   agg_mode_names[k_want[k].mode], g[0], 4.0 * g[0], g[5], -4.0 * g[0] / g[5]);
    }
}

typedef struct {
    float      *logp, *old, *adv, *w;
    PgPpoConfig cfg;
    float       norm;
    int         n;
} ModeCtx;

static double eval_mode(void *p)
{
    ModeCtx *c = p;
    return pg_ppo_loss(NULL, NULL, c->logp, c->old, NULL, c->adv, c->w, &c->cfg, c->norm, c->n);
}

/* Random rows of random lengths, stale log-probs (some tokens clipped):
 * each mode's weights sum as they should, and the surrogate's gradient
 * under them matches finite differences. */
static void test_modes_random(bool verbose)
{
    enum { B = 6, T = 12, N = B * T, L = 12 };
    Rng   rng;
    float mask[N] = {0}, w[N], logp[N], old[N], adv[N];
    rng_seed(&rng, 31);
    for (int b = 0; b < B; b++) {
        int len = 1 + (int)rng_below(&rng, T);
        for (int t = 0; t < len; t++) mask[b * T + t] = 1.0f;
    }
    for (int i = 0; i < N; i++) {
        old[i] = -0.05f - 3.0f * rng_uniform(&rng);
        double d;
        do d = 0.4 * rng_normal(&rng);
        while (fabs(d - log(0.8)) < 0.02 || fabs(d - log(1.2)) < 0.02);
        logp[i] = old[i] + (float)d;
        adv[i] = rng_normal(&rng);
        if (mask[i] == 0.0f) logp[i] = old[i] = adv[i] = NAN; /* never read */
    }
    float rows_sum = 0.0f;
    for (int mode = AGG_TOKEN_MEAN; mode <= AGG_CONSTANT; mode++) {
        float norm = agg_weights(w, (AggMode)mode, mask, L, B, T);
        float sum = numcheck_sum(w, N);
        if (mode == AGG_TOKEN_MEAN)
            EXPECT(norm == 0.0f && sum == numcheck_sum(mask, N), "token-mean: w = mask, D = sum");
        if (mode == AGG_SEQ_MEAN) {
            rows_sum = sum;
            EXPECT(norm == 0.0f && fabsf(sum - 1.0f) < 1e-6f, "seq-mean: weights sum to 1");
        }
        if (mode == AGG_CONSTANT) EXPECT(norm == (float)(B * L), "constant: D = B * L");
        float   g[N] = {0};
        ModeCtx c = {logp, old, adv, w, {.clip_low = 0.2f, .clip_high = 0.2f}, norm, N};
        pg_ppo_loss(g, NULL, logp, old, NULL, adv, w, &c.cfg, norm, N);
        char name[48];
        snprintf(name, sizeof name, "ppo surrogate, %s", agg_mode_names[mode]);
        EXPECT_GRAD(name, eval_mode, &c, logp, g, mask, N, 1e-5);
    }
    if (verbose) printf("  seq-mean weights over %d rows sum to %.7f\n", B, rows_sum);
}

int agg_selftest(bool verbose)
{
    test_seq(verbose);
    test_modes_gradient(verbose);
    test_modes_random(verbose);
    return expect_end();
}
