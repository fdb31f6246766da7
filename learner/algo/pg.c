#include "learner/algo/pg.h"

#include <math.h>
#include <string.h>

#include "common/base/err.h"
#include "learner/algo/agg.h"
#include "learner/algo/kl.h"

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
        /* min(ru * A, rc * A) case by case. For A > 0 only the ceiling can
         * be the smaller term (the cap exceeds it); for A < 0 the floor or,
         * above the cap, the cap. In each clipped case the chosen term is a
         * constant, so the gradient is zero. */
        double eff = r;
        bool   flows = true;
        if (a > 0.0 && r > hi) {
            eff = hi;
            flows = false;
            st.clip_high_frac += m;
        } else if (a < 0.0 && r < lo) {
            eff = lo;
            flows = false;
            st.clip_low_frac += m;
        } else if (a < 0.0 && cap > 0.0 && r > cap) {
            eff = cap;
            flows = false;
            st.cap_frac += m;
        }
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
        if (wsum > 0.0) {
            st.clip_low_frac /= wsum;
            st.clip_high_frac /= wsum;
            st.clip_frac = st.clip_low_frac + st.clip_high_frac;
            st.cap_frac /= wsum;
            st.ratio_mean /= wsum;
            st.approx_kl /= wsum;
            st.weight_mean /= wsum;
            st.weight_cap_frac /= wsum;
        } else {
            st.ratio_min = st.ratio_max = 0.0;
        }
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
