#include "learner/algo/kl.h"

#include <math.h>

#include "common/base/err.h"
#include "learner/algo/agg.h"

/* For small x the difference expm1(x) - x cancels away most digits and
 * could even round below zero, so there the Taylor series x^2/2 + x^3/6 +
 * ... is summed. */
double kl_k3(double x)
{
    if (fabs(x) < 1e-2)
        return x * x * (0.5 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x / 720))));
    return expm1(x) - x;
}

/* The estimator for d = logp - logp_ref, and its derivative w.r.t. logp. */
static double kl_of(KlKind kind, double d, double *deriv)
{
    switch (kind) {
    case KL_K1:
        *deriv = 1.0;
        return d;
    case KL_K2:
        *deriv = d;
        return 0.5 * d * d;
    case KL_K3:
        /* log r = -d; d/dlogp of (r - log r - 1) is 1 - r = -expm1(-d),
         * which keeps its digits for small d. */
        *deriv = -expm1(-d);
        return kl_k3(-d);
    }
    CHECK(!"unknown KlKind");
    return 0.0;
}

void kl_estimate(float *kl, float *dkl, const float *logp, const float *logp_ref, const float *mask,
                 KlKind kind, int N)
{
    CHECK(N >= 0 && kl && logp && logp_ref);
    for (int i = 0; i < N; i++) {
        double deriv = 0.0, v = 0.0;
        if (agg_weight(mask, i) > 0.0) v = kl_of(kind, (double)logp[i] - logp_ref[i], &deriv);
        kl[i] = (float)v;
        if (dkl) dkl[i] = (float)deriv;
    }
}

double kl_loss(float *dlogp, const float *logp, const float *logp_ref, const float *mask,
               KlKind kind, float beta, float norm, int N)
{
    CHECK(N >= 0 && logp && logp_ref);
    const double D = agg_denominator(mask, norm, N);
    double       sum = 0.0;
    for (int i = 0; i < N; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        double deriv;
        sum += m * kl_of(kind, (double)logp[i] - logp_ref[i], &deriv);
        if (dlogp) dlogp[i] += (float)(beta * m * deriv / D);
    }
    return D > 0.0 ? beta * sum / D : 0.0;
}

double kl_adaptive_beta(double beta, double kl, double target, double gain, double n_samples,
                        double horizon)
{
    CHECK(beta >= 0.0 && target > 0.0 && gain >= 0.0 && n_samples >= 0.0 && horizon > 0.0);
    if (!isfinite(kl)) return beta;
    double e = fmin(fmax(kl / target - 1.0, -0.2), 0.2);
    /* A gain so large that one step would flip the sign stops at 0 instead. */
    return fmax(0.0, beta * (1.0 + gain * e * n_samples / horizon));
}
