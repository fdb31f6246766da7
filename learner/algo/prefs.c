#include "learner/algo/prefs.h"

#include <math.h>
#include <stddef.h>

#include "common/base/err.h"

/* log(1 + e^x) without overflow: for large x, e^x is not formed. */
static double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

/* 1 / (1 + e^-x), forming only e^-|x| so neither tail overflows. */
static double sigmoid(double x)
{
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* One pair of Bradley-Terry (scale 1) or DPO (scale beta, margins of
 * log-ratios): returns -log sigmoid(scale * margin), accumulates its
 * gradient divided by D w.r.t. chosen (+margin) and rejected (-margin), and
 * adds the pair's rewards to the running sums in *sums. */
static double pair_term(float *dchosen, float *drejected, PrefsPairStats *sums, double margin,
                        double scale, double reward_chosen, double reward_rejected, double D)
{
    double z = scale * margin;
    /* d softplus(-z) / dz = -sigmoid(-z). */
    double g = -scale * sigmoid(-z) / D;
    if (dchosen) *dchosen += (float)g;
    if (drejected) *drejected -= (float)g;
    sums->accuracy += reward_chosen > reward_rejected;
    sums->chosen_mean += reward_chosen;
    sums->rejected_mean += reward_rejected;
    sums->margin_mean += reward_chosen - reward_rejected;
    return softplus(-z);
}

static void pair_means(PrefsPairStats *stats, const PrefsPairStats *sums, int P)
{
    if (!stats) return;
    double inv = P > 0 ? 1.0 / P : 0.0;
    stats->accuracy = sums->accuracy * inv;
    stats->chosen_mean = sums->chosen_mean * inv;
    stats->rejected_mean = sums->rejected_mean * inv;
    stats->margin_mean = sums->margin_mean * inv;
}

double prefs_bt_loss(float *dchosen, float *drejected, PrefsPairStats *stats, const float *r_chosen,
                     const float *r_rejected, float norm, int P)
{
    CHECK(P >= 0 && r_chosen && r_rejected && norm >= 0.0f);
    const double   D = norm > 0.0f ? norm : P;
    PrefsPairStats sums = {0};
    double         sum = 0.0;
    for (int p = 0; p < P; p++) {
        double c = r_chosen[p], r = r_rejected[p];
        sum += pair_term(dchosen ? dchosen + p : NULL, drejected ? drejected + p : NULL, &sums,
                         c - r, 1.0, c, r, D);
    }
    pair_means(stats, &sums, P);
    return D > 0.0 ? sum / D : 0.0;
}

double prefs_dpo_loss(float *dchosen, float *drejected, PrefsPairStats *stats,
                      const float *logp_chosen, const float *logp_rejected, const float *ref_chosen,
                      const float *ref_rejected, float beta, float norm, int P)
{
    CHECK(P >= 0 && logp_chosen && logp_rejected && ref_chosen && ref_rejected);
    CHECK(beta > 0.0f && norm >= 0.0f);
    const double   D = norm > 0.0f ? norm : P;
    PrefsPairStats sums = {0};
    double         sum = 0.0;
    for (int p = 0; p < P; p++) {
        /* Log-ratios against the reference, formed in double so a policy
         * equal to the reference gives exactly zero. */
        double lc = (double)logp_chosen[p] - ref_chosen[p];
        double lr = (double)logp_rejected[p] - ref_rejected[p];
        sum += pair_term(dchosen ? dchosen + p : NULL, drejected ? drejected + p : NULL, &sums,
                         lc - lr, beta, beta * lc, beta * lr, D);
    }
    pair_means(stats, &sums, P);
    return D > 0.0 ? sum / D : 0.0;
}

double prefs_pairs_loss(float *dscore, PrefsPairStats *stats, const double *s,
                        const PrefsPair *pairs, int P, double scale, double norm)
{
    CHECK(P >= 0 && (P == 0 || (s && pairs)) && scale > 0.0 && norm >= 0.0);
    double wsum = 0.0;
    for (int p = 0; p < P; p++) {
        CHECK(pairs[p].weight > 0.0f && pairs[p].margin >= 0.0f);
        wsum += pairs[p].weight;
    }
    const double   D = norm > 0.0 ? norm : wsum;
    PrefsPairStats sums = {0};
    double         sum = 0.0;
    for (int p = 0; p < P; p++) {
        const PrefsPair *q = &pairs[p];
        double           c = s[q->chosen], r = s[q->rejected];
        double           z = scale * (c - r) - q->margin;
        /* d softplus(-z) / dz = -sigmoid(-z); dz/dc = scale. */
        double g = -(double)q->weight * scale * sigmoid(-z) / D;
        if (dscore) {
            dscore[q->chosen] += (float)g;
            dscore[q->rejected] -= (float)g;
        }
        sum += q->weight * softplus(-z);
        sums.accuracy += scale * (c - r) > 0.0;
        sums.chosen_mean += scale * c;
        sums.rejected_mean += scale * r;
        sums.margin_mean += scale * (c - r);
    }
    pair_means(stats, &sums, P);
    return D > 0.0 ? sum / D : 0.0;
}

int prefs_ranking_pairs(PrefsPair *out, int base, int k, float margin)
{
    CHECK(k >= 2 && base >= 0 && margin >= 0.0f);
    int   n = 0;
    float w = 2.0f / ((float)k * (float)(k - 1));
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++)
            out[n++] = (PrefsPair){
                .chosen = base + i, .rejected = base + j, .weight = w, .margin = margin};
    return n;
}
