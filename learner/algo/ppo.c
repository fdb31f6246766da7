#include "learner/algo/ppo.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/base/err.h"
#include "learner/algo/agg.h"

void ppo_gae(float *adv, float *ret, const float *rewards, const float *values, float bootstrap,
             float gamma, float lambda, int T)
{
    CHECK(T >= 0 && adv && rewards && values);
    CHECK(gamma >= 0.0f && gamma <= 1.0f && lambda >= 0.0f && lambda <= 1.0f);
    const double gl = (double)gamma * lambda;
    double       next_v = bootstrap, a = 0.0;
    for (int t = T - 1; t >= 0; t--) {
        /* Read both inputs before writing, so the outputs may alias them. */
        double r = rewards[t], v = values[t];
        double delta = r + gamma * next_v - v;
        a = delta + gl * a;
        adv[t] = (float)a;
        if (ret) ret[t] = (float)(a + v);
        next_v = v;
    }
}

void ppo_gae_batch(float *adv, float *ret, const float *rewards, const float *values,
                   const float *bootstrap, const int *lens, float gamma, float lambda, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && lens);
    for (int b = 0; b < B; b++) {
        CHECK(lens[b] >= 0 && lens[b] <= T);
        size_t off = (size_t)b * T;
        ppo_gae(adv + off, ret ? ret + off : NULL, rewards + off, values + off,
                bootstrap ? bootstrap[b] : 0.0f, gamma, lambda, lens[b]);
        for (int t = lens[b]; t < T; t++) {
            adv[off + t] = 0.0f;
            if (ret) ret[off + t] = 0.0f;
        }
    }
}

double ppo_value_loss(float *dvalue, double *clip_frac, const float *values,
                      const float *values_old, const float *returns, const float *mask, float clip,
                      float norm, int N)
{
    CHECK(N >= 0 && values && returns && clip >= 0.0f && (clip == 0.0f || values_old));
    const double D = agg_denominator(mask, norm, N);
    double       sum = 0.0, wsum = 0.0, clipped_w = 0.0;
    for (int i = 0; i < N; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        double v = values[i], R = returns[i];
        double lu = (v - R) * (v - R), l = lu;
        bool   clipped = false;
        if (clip > 0.0f) {
            double vo = values_old[i];
            double vc = fmin(fmax(v, vo - clip), vo + clip);
            double lc = (vc - R) * (vc - R);
            /* The clipped term can only win strictly when v is outside the
             * band, where vc is a constant: then no gradient. */
            if (lc > lu) {
                l = lc;
                clipped = true;
                clipped_w += m;
            }
        }
        sum += m * 0.5 * l;
        wsum += m;
        if (dvalue && !clipped) dvalue[i] += (float)(m * (v - R) / D);
    }
    if (clip_frac) *clip_frac = wsum > 0.0 ? clipped_w / wsum : 0.0;
    return D > 0.0 ? sum / D : 0.0;
}
