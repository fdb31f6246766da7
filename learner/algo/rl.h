/* rl: the math of RL post-training (PPO, GRPO, DPO, reward models) as plain
 * functions over flat float arrays: losses with their gradients, advantage
 * estimators and the reductions between tokens and sequences.
 *
 * Shapes: N tokens (a (B,T) batch flattened row-major works as N = B*T),
 * T steps of one sequence, G completions of one group, P preference pairs.
 *
 * Conventions shared by every loss here:
 *   - A loss is to be minimised. It is returned as a double; the arithmetic
 *     inside runs in double, so finite differences in the self-test are exact
 *     to rounding and the returned value is good for logging.
 *   - Gradients ACCUMULATE (+=) into the d* arrays, like the backward kernels
 *     in tensor.h, so the policy, KL and entropy terms can be summed into one
 *     dlogp (B,T) for model_backward. Any d* pointer may be NULL to skip it.
 *   - mask (N) holds nonnegative token weights: normally the 0/1 mask given
 *     to model_forward; NULL means every token counts with weight 1. Entries
 *     with weight 0 are never read (padding may hold anything, even NaN) and
 *     get no gradient.
 *   - Aggregation: loss = sum_i mask_i * l_i / D. With norm == 0, D is the
 *     sum of the mask, the token mean over the mask. With norm > 0, D = norm:
 *     pass the mask sum of the whole batch when it is split into
 *     micro-batches, or a constant such as B * T_max (the "Dr. GRPO"
 *     normaliser). For the mean over sequences of per-sequence token means
 *     (the original GRPO aggregation), pass the weights from
 *     rl_seq_mean_weights as the mask with norm 0. If D is 0 (nothing
 *     counts), the loss is 0 and no gradient is written.
 *   - Inputs must be finite where they count; non-finite values flow through
 *     to the loss, which the caller checks. Outside data such as rewards is
 *     validated where it enters the process, not here.
 * Misuse (negative sizes, a NULL required array, a negative mask weight, a
 * parameter out of range) fails a CHECK. Nothing here allocates or fails
 * otherwise; every function is reentrant. */
#ifndef RLHF_RL_H
#define RLHF_RL_H

#include <stdbool.h>

/* Added to a standard deviation before dividing by it (rl_group_advantages,
 * rl_whiten). It keeps groups whose rewards differ only by rounding noise
 * from having that noise blown up to unit scale, and is small next to any
 * informative spread (0/1 rewards in a group of 256 have std >= 0.06). */
#define RL_STD_EPS 1e-4f

/* ---- PPO clipped surrogate ------------------------------------------------ */

typedef struct {
    float clip_low;        /* eps_low in [0,1): the ratio floor is 1 - clip_low */
    float clip_high;       /* eps_high >= 0: the ratio ceiling is 1 + clip_high */
    float ratio_cap;       /* dual clip c > 1 + clip_high caps the ratio; 0 disables */
    float prox_weight_cap; /* cap on w = pi_prox / pi_behaviour; 0 = no cap */
} RlPpoConfig;

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
} RlPpoStats;

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
double rl_ppo_loss(float *dlogp, RlPpoStats *stats, const float *logp, const float *logp_old,
                   const float *logp_prox, const float *adv, const float *mask,
                   const RlPpoConfig *cfg, float norm, int N);

/* ---- Advantage estimators ------------------------------------------------- */

/* Generalised advantage estimation over one sequence of T steps.
 *   rewards (T) reward after step t; values (T) V(s_t), the value of the
 *   state in which step t was taken; bootstrap V(s_T) after the last step:
 *   0 if the episode ended there, the value estimate if it was truncated.
 *   delta_t = rewards_t + gamma * V(s_{t+1}) - V(s_t)
 *   adv_t   = delta_t + gamma * lambda * adv_{t+1},  adv_T = 0
 *   ret_t   = adv_t + values_t  (the value target; ret may be NULL)
 * gamma and lambda in [0,1]. Writes adv (T) and ret (T); either may alias
 * an input. */
void rl_gae(float *adv, float *ret, const float *rewards, const float *values, float bootstrap,
            float gamma, float lambda, int T);

/* rl_gae on each row of a right-padded batch: row b is a sequence of
 * lens[b] in [0,T] steps at positions 0..lens[b]-1 of rewards (B,T) and
 * values (B,T), bootstrapped with bootstrap[b] (bootstrap NULL: every row
 * ended). Writes adv (B,T) and ret (B,T) (ret may be NULL), with 0 at the
 * padding positions. */
void rl_gae_batch(float *adv, float *ret, const float *rewards, const float *values,
                  const float *bootstrap, const int *lens, float gamma, float lambda, int B, int T);

/* Group-relative advantages (GRPO) for n_groups groups of G completions.
 *   rewards (n_groups, G) one scalar per completion, groups contiguous
 *   adv     (n_groups, G) written; may alias rewards
 * Per group: adv = (r - mean) / (std + RL_STD_EPS) when divide_std, else
 * r - mean (the mean-only variant of Dr. GRPO, which avoids upweighting
 * groups whose rewards barely differ). std is the population standard
 * deviation (divided by G, not G - 1): the group is the whole population
 * being compared, and then the normalised advantages have zero mean and unit
 * standard deviation up to the epsilon. A group whose rewards are all equal
 * carries no learning signal and gets exactly 0, as does any group of G = 1. */
void rl_group_advantages(float *adv, const float *rewards, bool divide_std, int n_groups, int G);

/* Whitening over a batch: out = (x - mean) / (std + RL_STD_EPS), with the
 * mask-weighted mean and population standard deviation over the entries
 * with mask > 0 (mask NULL: all). Entries with mask 0 get 0. If all counted
 * entries are equal, or none counts, out is 0 everywhere. out may alias x.
 * Used on PPO advantages before the policy loss. */
void rl_whiten(float *out, const float *x, const float *mask, int N);

/* ---- KL to a reference policy ---------------------------------------------- */

/* Per-token estimators of KL(pi_theta || pi_ref) from tokens sampled from
 * pi_theta, with d = logp - logp_ref:
 *   RL_KL_K1  d                                 unbiased, can be negative
 *   RL_KL_K2  d^2 / 2                           biased, low variance
 *   RL_KL_K3  r - log r - 1, r = exp(-d)        unbiased, never negative
 * As a loss (gradient through logp only): k2 gives exactly the gradient of
 * KL(pi_theta || pi_ref) in expectation, k3 (the GRPO choice) that of
 * KL(pi_ref || pi_theta), and k1 gives zero in expectation, so k1 belongs in
 * the reward (rewards -= beta * k1) rather than in the loss. */
typedef enum {
    RL_KL_K1 = 1,
    RL_KL_K2 = 2,
    RL_KL_K3 = 3,
} RlKl;

/* Writes kl (N) the estimator per token and, if dkl (N) is non-NULL, its
 * derivative d kl / d logp (k1: 1, k2: d, k3: 1 - r). Tokens with mask 0 get
 * 0 in both. k3 is computed without cancellation for small d and is never
 * negative. */
void rl_kl(float *kl, float *dkl, const float *logp, const float *logp_ref, const float *mask,
           RlKl kind, int N);

/* KL penalty as a loss: beta * sum mask * kl / D. Accumulates into dlogp
 * (N). Returns the loss (the mean KL is loss / beta). */
double rl_kl_loss(float *dlogp, const float *logp, const float *logp_ref, const float *mask,
                  RlKl kind, float beta, float norm, int N);

/* ---- Entropy bonus and value loss ----------------------------------------- */

/* Entropy bonus: loss = -coef * sum mask * entropy / D, so minimising it
 * raises the entropy. entropy (N) from model_forward. Accumulates
 * -coef * mask / D into dentropy (N). Returns the loss. */
double rl_entropy_loss(float *dentropy, const float *entropy, const float *mask, float coef,
                       float norm, int N);

/* PPO value loss with clipping around the old values.
 *   values (N) current value head, differentiated; values_old (N) at
 *   sampling time; returns (N) targets (ret from rl_gae)
 *   vc   = clamp(values, values_old - clip, values_old + clip)
 *   l    = 0.5 * max((values - returns)^2, (vc - returns)^2)
 *   loss = sum mask * l / D.
 * clip == 0 disables clipping (l = 0.5 * (values - returns)^2) and
 * values_old may then be NULL. Gradient: values - returns where the
 * unclipped term is the maximum (ties count as unclipped), else 0.
 * Accumulates into dvalue (N). If clip_frac is non-NULL, stores the
 * mask-weighted fraction of tokens where the clipped term won. */
double rl_value_loss(float *dvalue, double *clip_frac, const float *values, const float *values_old,
                     const float *returns, const float *mask, float clip, float norm, int N);

/* ---- Pairwise preference losses ------------------------------------------- */

/* Means over the P pairs. */
typedef struct {
    double accuracy;      /* fraction of pairs with chosen > rejected (ties count as wrong) */
    double chosen_mean;   /* reward of the chosen completion */
    double rejected_mean; /* reward of the rejected completion */
    double margin_mean;   /* chosen - rejected */
} RlPairStats;

/* Bradley-Terry reward-model loss: l = -log sigmoid(r_chosen - r_rejected)
 * = softplus(r_rejected - r_chosen), computed without overflow for any
 * margin; loss = sum l / D with D = P, or norm if > 0.
 * r_chosen (P), r_rejected (P) scalar rewards. Accumulates the gradients
 * into dchosen (P) and drejected (P). stats (if non-NULL) hold the raw
 * rewards. Returns the loss (log 2 when the rewards are equal). */
double rl_bt_loss(float *dchosen, float *drejected, RlPairStats *stats, const float *r_chosen,
                  const float *r_rejected, float norm, int P);

/* Direct preference optimisation:
 *   z = beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))
 *   l = -log sigmoid(z), loss = sum l / D with D = P, or norm if > 0.
 * All four inputs (P) are sequence log-probabilities (sums over the
 * completion tokens, see rl_seq_sum); the reference ones are constants.
 * Accumulates the gradients w.r.t. the policy's sums into dchosen (P) and
 * drejected (P); rl_seq_sum_backward spreads them over the tokens. stats (if
 * non-NULL) hold the implicit rewards beta * (logp - ref). beta > 0. Returns
 * the loss (log 2 when the policy equals the reference). */
double rl_dpo_loss(float *dchosen, float *drejected, RlPairStats *stats, const float *logp_chosen,
                   const float *logp_rejected, const float *ref_chosen, const float *ref_rejected,
                   float beta, float norm, int P);

/* ---- Between tokens and sequences ----------------------------------------- */

/* out (B) = sum over t of mask (B,T) * x (B,T); positions with mask 0 are
 * not read. With x the token log-probs this is the sequence log-prob. */
void rl_seq_sum(float *out, const float *x, const float *mask, int B, int T);

/* The backward of rl_seq_sum: dx (B,T) += dout (B) * mask (B,T). Into a
 * zeroed dx it broadcasts a per-sequence value (a GRPO advantage) to the
 * sequence's tokens. */
void rl_seq_sum_backward(float *dx, const float *dout, const float *mask, int B, int T);

/* Writes w (B,T) = mask / (tokens of the row) / (rows with tokens), 0 where
 * the mask is 0, so sum w = 1 (or all 0 if no row has tokens). Used as the
 * mask of a loss with norm 0, it gives the mean over sequences of each
 * sequence's token mean. mask NULL means every position counts. */
void rl_seq_mean_weights(float *w, const float *mask, int B, int T);

#endif
