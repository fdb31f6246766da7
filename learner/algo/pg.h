/* pg: policy-gradient surrogate losses of the policy's token
 * log-probabilities: the PPO clipped surrogate with its per-token
 * importance ratio, clipping and decoupled (proximal) weights, which GRPO,
 * REINFORCE, RLOO, Dr. GRPO and DAPO use as well (they differ in their
 * advantages, clip bounds and aggregation); GSPO's surrogate with one
 * length-normalised ratio per sequence; and the entropy bonus.
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

/* Where the importance ratio and its clipping live. */
typedef enum {
    PG_RATIO_TOKEN = 0,    /* one ratio per token (PPO, GRPO): pg_ppo_loss */
    PG_RATIO_SEQUENCE = 1, /* one per sequence (GSPO): pg_gspo_loss */
} PgRatioLevel;

/* GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): the
 * clipped surrogate with one importance ratio per sequence, the geometric
 * mean of its tokens' ratios, against pg_ppo_loss's per-token ratio.
 *   logp, logp_old, logp_prox, adv, mask  (B,T) as in pg_ppo_loss
 * For each row b, over its tokens (mask > 0; n_b of them) and with
 * q = prox if given, else behaviour:
 *   s_b  = exp( (1/n_b) sum_t (logp_bt - logq_bt) )     length-normalised
 *   w_b  = exp( (1/n_b) sum_t (logp_prox_bt - logp_old_bt) ), capped at
 *          prox_weight_cap when > 0; 1 without logp_prox; a constant
 *   A_b  = sum_t mask_bt adv_bt / sum_t mask_bt         (the row's advantage:
 *          GSPO's advantages are per sequence, constant along the row)
 *   l_b  = -w_b * min(su_b A_b, sc_b A_b),  sc_b = clamp(s_b, 1 - clip_low,
 *          1 + clip_high), su_b = min(s_b, ratio_cap) if ratio_cap > 0
 *   loss = sum_b W_b l_b / D,  W_b = sum_t mask_bt (the row's weight)
 * so with the 0/1 mask and norm 0 every token of a sequence carries its
 * sequence's loss (a token mean), and with agg_seq_mean_weights it is the
 * mean over sequences, GSPO's own aggregation. The mask's entries serve as
 * weights; n_b counts the entries > 0, whatever their size. One ratio per
 * sequence means one clipping decision per sequence: a sequence is kept or
 * dropped whole, and the length normalisation keeps s_b on the scale of
 * one token's ratio whatever the length (which is why GSPO's clip ranges
 * are ~1e-3, not 0.2). Gradient, on rows where the unclipped, uncapped term
 * is the minimum (ties count as unclipped), else 0:
 *   d loss / d logp_bt = -w_b A_b s_b / n_b * W_b / D.
 * Stats as pg_ppo_loss's, each token counted with its mask weight and its
 * sequence's ratio and clip decision (approx_kl stays per token).
 * Accumulates into dlogp (B,T); returns the loss. */
double pg_gspo_loss(float *dlogp, PgPpoStats *stats, const float *logp, const float *logp_old,
                    const float *logp_prox, const float *adv, const float *mask,
                    const PgPpoConfig *cfg, float norm, int B, int T);

/* Entropy bonus: loss = -coef * sum mask * entropy / D, so minimising it
 * raises the entropy. entropy (N) from model_forward. Accumulates
 * -coef * mask / D into dentropy (N). Returns the loss. */
double pg_entropy_loss(float *dentropy, const float *entropy, const float *mask, float coef,
                       float norm, int N);

#endif
