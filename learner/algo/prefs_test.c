/* prefs_selftest: Bradley-Terry and DPO on worked examples (equal rewards,
 * extreme margins, policy equal to the reference, a known value) and
 * finite differences at random points. */
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

int prefs_selftest(bool verbose)
{
    test_pairs(verbose);
    return expect_end();
}
