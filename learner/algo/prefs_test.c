/* prefs_selftest: Bradley-Terry and DPO on worked examples (equal rewards,
 * extreme margins, policy equal to the reference, a known value), the
 * K-wise weighting of rankings worked by hand, and finite differences at
 * random points. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/prefs.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

#define FD_TOL 1e-5
#define TP 40 /* pairs in the random tests */

typedef struct {
    float *chosen;   /* BT reward or DPO policy log-prob */
    float *rejected; /* likewise */
    float *ref_chosen;
    float *ref_rejected;
    float  beta;
    float  norm;
    int    n;
    bool   is_dpo;
} PairCtx;

static double eval_pair(void *p)
{
    PairCtx *c = p;
    if (c->is_dpo)
        return prefs_dpo_loss(NULL, NULL, NULL, c->chosen, c->rejected, c->ref_chosen,
                              c->ref_rejected, c->beta, c->norm, c->n);
    return prefs_bt_loss(NULL, NULL, NULL, c->chosen, c->rejected, c->norm, c->n);
}

static void test_pairs(bool verbose)
{
    PrefsPairStats st;
    const float    ln2 = (float)log(2.0);

    /* Bradley-Terry: equal rewards give log 2 and gradients -+1/(2P). */
    float c[TP], r[TP], dc[TP] = {0}, dr[TP] = {0};
    for (int p = 0; p < TP; p++) c[p] = r[p] = 0.1f * p - 1.0f;
    double loss = prefs_bt_loss(dc, dr, &st, c, r, 0.0f, TP);
    EXPECT_NEAR(loss, log(2.0), 1e-12, "bt equal rewards = log 2");
    EXPECT_NEAR(dc[0], -0.5 / TP, 1e-9, "bt equal rewards dchosen");
    EXPECT_NEAR(dr[TP - 1], 0.5 / TP, 1e-9, "bt equal rewards drejected");
    EXPECT(st.accuracy == 0.0 && st.margin_mean == 0.0, "bt ties count as wrong");
    /* Extreme margins stay finite: softplus(-200) ~ e^-200, softplus(200) ~ 200. */
    float big_c[2] = {100.0f, -100.0f}, big_r[2] = {-100.0f, 100.0f}, bdc[2] = {0}, bdr[2] = {0};
    loss = prefs_bt_loss(bdc, bdr, &st, big_c, big_r, 0.0f, 2);
    EXPECT_NEAR(loss, 100.0, 1e-9, "bt extreme margins");
    EXPECT(bdc[0] > -1e-30f && bdc[1] == -0.5f && bdr[1] == 0.5f, "bt extreme gradients finite");
    EXPECT_NEAR(st.accuracy, 0.5, 0.0, "bt accuracy");

    /* DPO: policy == reference gives log 2 and gradients -+beta/(2P). */
    float pc[TP], pr[TP], rc[TP], rr[TP];
    Rng   rng;
    rng_seed(&rng, 19);
    for (int p = 0; p < TP; p++) {
        pc[p] = rc[p] = -30.0f * rng_uniform(&rng) - 1.0f;
        pr[p] = rr[p] = -30.0f * rng_uniform(&rng) - 1.0f;
    }
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    loss = prefs_dpo_loss(dc, dr, &st, pc, pr, rc, rr, 0.1f, 0.0f, TP);
    EXPECT_NEAR(loss, ln2, 1e-7, "dpo policy == reference = log 2");
    EXPECT_NEAR(dc[3], -0.1f * 0.5 / TP, 1e-9, "dpo policy == reference dchosen");
    EXPECT_NEAR(dr[3], 0.1f * 0.5 / TP, 1e-9, "dpo policy == reference drejected");
    /* Known value: beta .1, log-ratios +2 and -3: z = .5, loss log(1+e^-.5). */
    float kc = -10.0f, kr = -20.0f, krc = -12.0f, krr = -17.0f;
    loss = prefs_dpo_loss(NULL, NULL, &st, &kc, &kr, &krc, &krr, 0.1f, 0.0f, 1);
    EXPECT_NEAR(loss, log1p(exp(-0.5)), 1e-7, "dpo known value");
    EXPECT_NEAR(st.chosen_mean, 0.2, 1e-7, "dpo chosen reward");
    EXPECT_NEAR(st.rejected_mean, -0.3, 1e-7, "dpo rejected reward");
    EXPECT_NEAR(st.margin_mean, 0.5, 1e-7, "dpo margin");
    EXPECT(st.accuracy == 1.0, "dpo accuracy");

    /* Finite differences: Bradley-Terry w.r.t. both rewards, DPO w.r.t.
     * both policy sums, at random points. */
    for (int p = 0; p < TP; p++) {
        c[p] = 2.0f * rng_normal(&rng);
        r[p] = 2.0f * rng_normal(&rng);
        pc[p] = rc[p] + 5.0f * rng_normal(&rng);
        pr[p] = rr[p] + 5.0f * rng_normal(&rng);
    }
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    prefs_bt_loss(dc, dr, &st, c, r, 0.0f, TP);
    PairCtx cb = {c, r, NULL, NULL, 0.0f, 0.0f, TP, false};
    EXPECT_GRAD("bt chosen", eval_pair, &cb, c, dc, NULL, TP, FD_TOL);
    EXPECT_GRAD("bt rejected", eval_pair, &cb, r, dr, NULL, TP, FD_TOL);
    if (verbose) printf("  bt: accuracy %.3f margin %.3f\n", st.accuracy, st.margin_mean);
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    prefs_dpo_loss(dc, dr, &st, pc, pr, rc, rr, 0.1f, 50.0f, TP);
    PairCtx cd = {pc, pr, rc, rr, 0.1f, 50.0f, TP, true};
    EXPECT_GRAD("dpo chosen", eval_pair, &cd, pc, dc, NULL, TP, FD_TOL);
    EXPECT_GRAD("dpo rejected", eval_pair, &cd, pr, dr, NULL, TP, FD_TOL);
    if (verbose) printf("  dpo: accuracy %.3f margin %.3f\n", st.accuracy, st.margin_mean);
}

typedef struct {
    double          *s;
    float           *sf; /* the float copy numcheck perturbs */
    const PrefsPair *pairs;
    int              n, P;
    double           scale;
} IdxCtx;

static double eval_indexed(void *p)
{
    IdxCtx *c = p;
    for (int i = 0; i < c->n; i++) c->s[i] = c->sf[i];
    return prefs_pairs_loss(NULL, NULL, c->s, c->pairs, c->P, c->scale, 0.0);
}

/* The K-wise weighting worked by hand: a ranking of three (rewards 2, 0, 1
 * best first: its pairs have margins 2, 1, -1) and a pair (0.5 over -0.5,
 * margin 0.25) in one batch. Each ranking pair weighs 1/3, the pair 1; D =
 * 2 prompts:
 *   loss = ((sp(-2) + sp(-1) + sp(1)) / 3 + sp(-0.75)) / 2 = 0.4856774007
 *   dA = -(sig(-2) + sig(-1)) / 6 = -0.0646907239
 *   dB = (sig(-2) - sig(1)) / 6 = -0.1019759428
 *   dC = (sig(-1) + sig(1)) / 6 = 1/6
 *   dD = -sig(-0.75) / 2 = -0.1604106504, dE = -dD
 * with sp(x) = log(1 + e^x), sig(x) = 1 / (1 + e^-x). */
static void test_kwise(bool verbose)
{
    PrefsPair pairs[4];
    int       P = prefs_ranking_pairs(pairs, 0, 3, 0.0f);
    EXPECT(P == 3 && pairs[0].chosen == 0 && pairs[0].rejected == 1 && pairs[1].rejected == 2 &&
               pairs[2].chosen == 1 && pairs[2].rejected == 2,
           "a ranking of 3 gives the pairs (0,1) (0,2) (1,2): got %d pairs", P);
    EXPECT_NEAR(pairs[1].weight, 1.0 / 3.0, 1e-7, "ranking of 3: each pair weighs 1/C(3,2)");
    P += prefs_ranking_pairs(pairs + P, 3, 2, 0.25f);
    EXPECT(P == 4 && pairs[3].weight == 1.0f && pairs[3].margin == 0.25f,
           "a ranking of 2 is one pair of weight 1");
    double         s[5] = {2.0, 0.0, 1.0, 0.5, -0.5};
    float          d[5] = {0};
    PrefsPairStats st;
    double         loss = prefs_pairs_loss(d, &st, s, pairs, P, 1.0, 0.0);
    EXPECT_NEAR(loss, 0.485677400737353, 1e-7, "k-wise loss by hand (weights are floats)");
    const double want[5] = {-0.06469072389868545, -0.10197594276798122, 1.0 / 6.0,
                            -0.1604106504123035, 0.1604106504123035};
    for (int i = 0; i < 5; i++) EXPECT_NEAR(d[i], want[i], 1e-7, "k-wise gradient by hand");
    EXPECT_NEAR(st.accuracy, 0.75, 0.0, "k-wise accuracy: 3 of 4 pairs right");
    /* A ranking of K counts as one prompt: K = 16 equal scores give log 2. */
    PrefsPair many[120];
    double    zeros[16] = {0};
    int       n16 = prefs_ranking_pairs(many, 0, 16, 0.0f);
    EXPECT(n16 == 120, "C(16,2) = %d", n16);
    EXPECT_NEAR(prefs_pairs_loss(NULL, NULL, zeros, many, n16, 1.0, 0.0), log(2.0), 1e-6,
                "a ranking of 16 equal scores: log 2 (weights sum to 1)");
    /* DPO through the indexed form equals prefs_dpo_loss on the same pair. */
    float     kc = -10.0f, kr = -20.0f, krc = -12.0f, krr = -17.0f;
    double    lr[2] = {(double)kc - krc, (double)kr - krr};
    PrefsPair one = {0, 1, 1.0f, 0.0f};
    EXPECT_NEAR(prefs_pairs_loss(NULL, &st, lr, &one, 1, 0.1, 0.0),
                prefs_dpo_loss(NULL, NULL, NULL, &kc, &kr, &krc, &krr, 0.1f, 0.0f, 1), 1e-7,
                "indexed DPO = prefs_dpo_loss");
    EXPECT_NEAR(st.chosen_mean, 0.2, 1e-9, "indexed DPO implicit reward");
    /* Finite differences over a mixed batch with margins and beta 0.3. */
    Rng rng;
    rng_seed(&rng, 23);
    enum { N = 12 };
    double    sv[N];
    float     sf[N], g[N] = {0};
    PrefsPair mix[40];
    int       np = prefs_ranking_pairs(mix, 0, 4, 0.0f);
    np += prefs_ranking_pairs(mix + np, 4, 5, 0.5f);
    np += prefs_ranking_pairs(mix + np, 9, 3, 0.0f);
    for (int i = 0; i < N; i++) sf[i] = (float)(sv[i] = 3.0 * rng_normal(&rng));
    prefs_pairs_loss(g, NULL, sv, mix, np, 0.3, 0.0);
    IdxCtx c = {sv, sf, mix, N, np, 0.3};
    EXPECT_GRAD("indexed pairs", eval_indexed, &c, sf, g, NULL, N, FD_TOL);
    if (verbose) printf("  k-wise: loss %.10f by hand 0.4856774007, %d mixed pairs\n", loss, np);
}

int prefs_selftest(bool verbose)
{
    test_pairs(verbose);
    test_kwise(verbose);
    return expect_end();
}
