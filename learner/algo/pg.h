/* pg: policy-gradient surrogate losses of the policy's token
 * log-probabilities: the PPO clipped surrogate with its importance ratio,
 * clipping and decoupled (proximal) weights, which GRPO uses as well, and
 * the entropy bonus. New surrogates (REINFORCE, RLOO's, GSPO's sequence
 * ratio) belong here too.
 *
 * Shapes, masks, aggregation (norm) and gradient accumulation follow the
 * conventions in learner/algo/agg.h. Misuse is a CHECK; nothing allocates
 * or fails otherwise; every function is reentrant. */
#ifndef RLHF_PG_H
#define RLHF_PG_H

#include <stdbool.h>

typedef struct {
    float clip_low;        /* eps_low in [0,1): the ratio floor is 1 - clip_low */
    float clip_high;       /* eps_high >= 0: the ratio ceiling is 1 + clip_high */
    float ratio_cap;       /* dual clip c > 1 + clip_high caps the ratio; 0 disables */
    float prox_weight_cap; /* cap on w = pi_prox / pi_behaviour; 0 = no cap */
} PgPpoConfig;

/* Mask-weighted means over the tokens that count (mask > 0); all 0 when none do. */
typedef struct {
    int    n_tokens;       /* tokens with mask > 0 */
    double clip_frac;      /* tokens whose gradient a clip bound zeroed (low + high) */
    double clip_low_frac;  /* A < 0 and r < 1 - clip_low */
    double clip_high_frac; /* A > 0 and r > 1 + clip_high */
    double cap_frac;       /* A < 0 and r > ratio_cap (dual clip) */
    double ratio_mean;     /* r = pi_theta / pi_prox */
    double ratio_min;
    double ratio_max;
    double approx_kl;       /* mean of r - 1 - log r, the k3 estimate of KL(pi_prox || pi_theta) */
    double weight_mean;     /* w; 1 without logp_prox */
    double weight_cap_frac; /* tokens whose w was capped */
} PgPpoStats;

/* PPO clipped surrogate, per token, with the decoupled (proximal) variant.
 *   logp      (N) log pi_theta(token), the current policy, differentiated
 *   logp_old  (N) log pi_behaviour(token), recorded by the actor
 *   logp_prox (N) log pi_prox(token), the proximal policy (for instance the
 *                 learner's policy at the start of this step); NULL means the
 *                 behaviour policy is the proximal one, so w = 1
 *   adv       (N) advantages, constants
 *   mask      (N) token weights (see the top of this file)
 * With q = prox if given, else behaviour, per token:
 *   r    = exp(logp - logp_q)
 *   rc   = clamp(r, 1 - clip_low, 1 + clip_high)
 *   ru   = min(r, ratio_cap) if ratio_cap > 0, else r
 *   w    = exp(logp_prox - logp_old), capped at prox_weight_cap when it is
 *          > 0; w = 1 without logp_prox. w is a constant (no gradient).
 *   l    = -w * min(ru * A, rc * A)
 *   loss = sum mask * l / D.
 * The cap only ever binds for A < 0 (it is the "dual clip": without it a
 * negative advantage times a huge ratio is unbounded), which is why it must
 * exceed 1 + clip_high. Gradient: dl/dlogp = -w * A * r on tokens where the
 * unclipped, uncapped term is the minimum (ties count as unclipped), else 0:
 * clipping zeroes the gradient only on the side where the objective would
 * gain from moving further. Accumulates into dlogp (N); fills stats if
 * non-NULL. Returns the loss. */
double pg_ppo_loss(float *dlogp, PgPpoStats *stats, const float *logp, const float *logp_old,
                   const float *logp_prox, const float *adv, const float *mask,
                   const PgPpoConfig *cfg, float norm, int N);

/* Entropy bonus: loss = -coef * sum mask * entropy / D, so minimising it
 * raises the entropy. entropy (N) from model_forward. Accumulates
 * -coef * mask / D into dentropy (N). Returns the loss. */
double pg_entropy_loss(float *dentropy, const float *entropy, const float *mask, float coef,
                       float norm, int N);

#endif
