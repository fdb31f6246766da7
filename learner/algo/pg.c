#include "learner/algo/pg.h"

#include <math.h>
#include <string.h>

#include "common/base/err.h"
#include "learner/algo/agg.h"
#include "learner/algo/kl.h"

/* min(ru * A, rc * A) case by case, for ratio r and advantage a: writes
 * the term that wins (the ratio or the bound) to *eff and returns whether
 * the gradient flows, counting a clipped case with weight m in st. For
 * A > 0 only the ceiling can be the smaller term (the cap exceeds it); for
 * A < 0 the floor or, above the cap, the cap. In each clipped case the
 * chosen term is a constant, so the gradient is zero. */
static bool clip_case(double r, double a, double lo, double hi, double cap, double m, double *eff,
                      PgPpoStats *st)
{
    *eff = r;
    if (a > 0.0 && r > hi) {
        *eff = hi;
        st->clip_high_frac += m;
        return false;
    }
    if (a < 0.0 && r < lo) {
        *eff = lo;
        st->clip_low_frac += m;
        return false;
    }
    if (a < 0.0 && cap > 0.0 && r > cap) {
        *eff = cap;
        st->cap_frac += m;
        return false;
    }
    return true;
}

/* Turns the sums of st over weight wsum into means (or the empty stats). */
static void stats_finish(PgPpoStats *st, double wsum)
{
    if (wsum > 0.0) {
        st->clip_low_frac /= wsum;
        st->clip_high_frac /= wsum;
        st->clip_frac = st->clip_low_frac + st->clip_high_frac;
        st->cap_frac /= wsum;
        st->ratio_mean /= wsum;
        st->approx_kl /= wsum;
        st->weight_mean /= wsum;
        st->weight_cap_frac /= wsum;
    } else {
        st->ratio_min = st->ratio_max = 0.0;
    }
}

double pg_ppo_loss(float *dlogp, PgPpoStats *stats, const float *logp, const float *logp_old,
                   const float *logp_prox, const float *adv, const float *mask,
                   const PgPpoConfig *cfg, float norm, int N)
{
    CHECK(N >= 0 && logp && logp_old && adv && cfg);
    CHECK(cfg->clip_low >= 0.0f && cfg->clip_low < 1.0f && cfg->clip_high >= 0.0f);
    CHECK(cfg->ratio_cap == 0.0f || cfg->ratio_cap > 1.0f + cfg->clip_high);
    CHECK(cfg->prox_weight_cap >= 0.0f);
    const double lo = 1.0 - (double)cfg->clip_low;
    const double hi = 1.0 + (double)cfg->clip_high;
    const double cap = cfg->ratio_cap;
    const double wcap = cfg->prox_weight_cap;
    const double D = agg_denominator(mask, norm, N);

    PgPpoStats st;
    memset(&st, 0, sizeof st);
    st.ratio_min = INFINITY;
    st.ratio_max = -INFINITY;
    double wsum = 0.0, loss = 0.0;
    for (int i = 0; i < N; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        double logq = logp_prox ? logp_prox[i] : logp_old[i];
        double logr = (double)logp[i] - logq;
        double r = exp(logr);
        double a = adv[i];
        double w = 1.0;
        if (logp_prox) {
            w = exp(logq - (double)logp_old[i]);
            if (wcap > 0.0 && w > wcap) {
                w = wcap;
                st.weight_cap_frac += m;
            }
        }
        double eff;
        bool   flows = clip_case(r, a, lo, hi, cap, m, &eff, &st);
        loss -= m * w * eff * a;
        /* d(r)/d(logp) = r. */
        if (dlogp && flows) dlogp[i] += (float)(-m * w * a * r / D);

        wsum += m;
        st.n_tokens++;
        st.ratio_mean += m * r;
        st.ratio_min = fmin(st.ratio_min, r);
        st.ratio_max = fmax(st.ratio_max, r);
        st.approx_kl += m * kl_k3(logr);
        st.weight_mean += m * w;
    }
    if (stats) {
        stats_finish(&st, wsum);
        *stats = st;
    }
    return D > 0.0 ? loss / D : 0.0;
}

double pg_gspo_loss(float *dlogp, PgPpoStats *stats, const float *logp, const float *logp_old,
                    const float *logp_prox, const float *adv, const float *mask,
                    const PgPpoConfig *cfg, float norm, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && logp && logp_old && adv && cfg);
    CHECK(cfg->clip_low >= 0.0f && cfg->clip_low < 1.0f && cfg->clip_high >= 0.0f);
    CHECK(cfg->ratio_cap == 0.0f || cfg->ratio_cap > 1.0f + cfg->clip_high);
    CHECK(cfg->prox_weight_cap >= 0.0f);
    const double lo = 1.0 - (double)cfg->clip_low;
    const double hi = 1.0 + (double)cfg->clip_high;
    const double cap = cfg->ratio_cap;
    const double wcap = cfg->prox_weight_cap;
    const double D = agg_denominator(mask, norm, B * T);

    PgPpoStats st;
    memset(&st, 0, sizeof st);
    st.ratio_min = INFINITY;
    st.ratio_max = -INFINITY;
    double wsum = 0.0, loss = 0.0;
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * T;
        /* The row's token count, weight, advantage and mean log-ratios. */
        double n = 0.0, W = 0.0, wa = 0.0, logr = 0.0, logw = 0.0;
        for (int t = 0; t < T; t++) {
            double m = agg_weight(mask, row + t);
            if (m == 0.0) continue;
            double logq = logp_prox ? logp_prox[row + t] : logp_old[row + t];
            n += 1.0;
            W += m;
            wa += m * adv[row + t];
            logr += (double)logp[row + t] - logq;
            if (logp_prox) logw += logq - (double)logp_old[row + t];
        }
        if (n == 0.0) continue;
        double a = wa / W, s = exp(logr / n), w = 1.0;
        bool   wcapped = false;
        if (logp_prox) {
            w = exp(logw / n);
            if (wcap > 0.0 && w > wcap) {
                w = wcap;
                wcapped = true;
            }
        }
        double eff;
        bool   flows = clip_case(s, a, lo, hi, cap, W, &eff, &st);
        loss -= W * w * eff * a;
        /* d s / d logp_bt = s / n for every token of the row. */
        double g = flows ? -w * a * s / n * W / D : 0.0;
        for (int t = 0; t < T; t++) {
            double m = agg_weight(mask, row + t);
            if (m == 0.0) continue;
            if (dlogp) dlogp[row + t] += (float)g;
            double logq = logp_prox ? logp_prox[row + t] : logp_old[row + t];
            st.n_tokens++;
            st.ratio_mean += m * s;
            st.approx_kl += m * kl_k3((double)logp[row + t] - logq);
            st.weight_mean += m * w;
            st.weight_cap_frac += wcapped ? m : 0.0;
        }
        wsum += W;
        st.ratio_min = fmin(st.ratio_min, s);
        st.ratio_max = fmax(st.ratio_max, s);
    }
    if (stats) {
        stats_finish(&st, wsum);
        *stats = st;
    }
    return D > 0.0 ? loss / D : 0.0;
}

double pg_entropy_loss(float *dentropy, const float *entropy, const float *mask, float coef,
                       float norm, int N)
{
    CHECK(N >= 0 && entropy);
    const double D = agg_denominator(mask, norm, N);
    double       sum = 0.0;
    for (int i = 0; i < N; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        sum += m * entropy[i];
        if (dentropy) dentropy[i] += (float)(-(double)coef * m / D);
    }
    return D > 0.0 ? -(double)coef * sum / D : 0.0;
}
