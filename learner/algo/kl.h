/* kl: estimators of the KL divergence between the policy and a reference
 * from sampled tokens (k1, k2, k3), per token and as a loss, and the
 * adaptive controller of the KL coefficient.
 *
 * Shapes, masks, aggregation (norm) and gradient accumulation follow the
 * conventions in learner/algo/agg.h. Misuse is a CHECK; nothing allocates
 * or fails otherwise; every function is reentrant. */
#ifndef RLHF_KL_H
#define RLHF_KL_H

/* Per-token estimators of KL(pi_theta || pi_ref) from tokens sampled from
 * pi_theta, with d = logp - logp_ref:
 *   KL_K1  d                                 unbiased, can be negative
 *   KL_K2  d^2 / 2                           biased, low variance
 *   KL_K3  r - log r - 1, r = exp(-d)        unbiased, never negative
 * As a loss (gradient through logp only): k2 gives exactly the gradient of
 * KL(pi_theta || pi_ref) in expectation, k3 (the GRPO choice) that of
 * KL(pi_ref || pi_theta), and k1 gives zero in expectation, so k1 belongs in
 * the reward (rewards -= beta * k1) rather than in the loss. */
typedef enum {
    KL_K1 = 1,
    KL_K2 = 2,
    KL_K3 = 3,
} KlKind;

/* Writes kl (N) the estimator per token and, if dkl (N) is non-NULL, its
 * derivative d kl / d logp (k1: 1, k2: d, k3: 1 - r). Tokens with mask 0 get
 * 0 in both. k3 is computed without cancellation for small d and is never
 * negative. */
void kl_estimate(float *kl, float *dkl, const float *logp, const float *logp_ref, const float *mask,
                 KlKind kind, int N);

/* KL penalty as a loss: beta * sum mask * kl / D. Accumulates into dlogp
 * (N). Returns the loss (the mean KL is loss / beta). */
double kl_loss(float *dlogp, const float *logp, const float *logp_ref, const float *mask,
               KlKind kind, float beta, float norm, int N);

/* e^x - 1 - x, which is r - 1 - log r for x = log r (the k3 estimate),
 * accurate and never negative for small x where expm1(x) - x cancels. */
double kl_k3(double x);

/* The adaptive KL coefficient of Ziegler et al. (2019, "Fine-Tuning
 * Language Models from Human Preferences"): a proportional controller that
 * steers the measured KL toward a target. With the KL measured on the
 * batch just trained (kl) and n_samples completions in it:
 *   e    = clip(kl / target - 1, -0.2, 0.2)
 *   beta = beta * (1 + gain * e * n_samples / horizon)
 * The clip bounds each step's change, and n_samples / horizon makes the
 * rate per sample, not per update: after `horizon` samples at a steady
 * error e the coefficient has moved by about a factor exp(gain * e). Too
 * much KL raises beta, too little lowers it. Returns the new beta (never
 * below 0, however large the gain).
 * beta >= 0, target > 0, gain >= 0, n_samples >= 0, horizon > 0 (CHECK);
 * a non-finite kl leaves beta unchanged. */
double kl_adaptive_beta(double beta, double kl, double target, double gain, double n_samples,
                        double horizon);

#endif
