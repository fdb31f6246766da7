/* ppo: the critic side of PPO: generalised advantage estimation from the
 * critic's values and the clipped value loss that trains it. (The policy
 * side, the clipped surrogate, is learner/algo/pg.h.)
 *
 * Shapes, masks, aggregation (norm) and gradient accumulation follow the
 * conventions in learner/algo/agg.h. Misuse is a CHECK; nothing allocates
 * or fails otherwise; every function is reentrant. */
#ifndef RLHF_PPO_H
#define RLHF_PPO_H

/* Generalised advantage estimation over one sequence of T steps.
 *   rewards (T) reward after step t; values (T) V(s_t), the value of the
 *   state in which step t was taken; bootstrap V(s_T) after the last step:
 *   0 if the episode ended there, the value estimate if it was truncated.
 *   delta_t = rewards_t + gamma * V(s_{t+1}) - V(s_t)
 *   adv_t   = delta_t + gamma * lambda * adv_{t+1},  adv_T = 0
 *   ret_t   = adv_t + values_t  (the value target; ret may be NULL)
 * gamma and lambda in [0,1]. Writes adv (T) and ret (T); either may alias
 * an input. */
void ppo_gae(float *adv, float *ret, const float *rewards, const float *values, float bootstrap,
             float gamma, float lambda, int T);

/* ppo_gae on each row of a right-padded batch: row b is a sequence of
 * lens[b] in [0,T] steps at positions 0..lens[b]-1 of rewards (B,T) and
 * values (B,T), bootstrapped with bootstrap[b] (bootstrap NULL: every row
 * ended). Writes adv (B,T) and ret (B,T) (ret may be NULL), with 0 at the
 * padding positions. */
void ppo_gae_batch(float *adv, float *ret, const float *rewards, const float *values,
                   const float *bootstrap, const int *lens, float gamma, float lambda, int B,
                   int T);

/* PPO value loss with clipping around the old values.
 *   values (N) current value head, differentiated; values_old (N) at
 *   sampling time; returns (N) targets (ret from ppo_gae)
 *   vc   = clamp(values, values_old - clip, values_old + clip)
 *   l    = 0.5 * max((values - returns)^2, (vc - returns)^2)
 *   loss = sum mask * l / D.
 * clip == 0 disables clipping (l = 0.5 * (values - returns)^2) and
 * values_old may then be NULL. Gradient: values - returns where the
 * unclipped term is the maximum (ties count as unclipped), else 0.
 * Accumulates into dvalue (N). If clip_frac is non-NULL, stores the
 * mask-weighted fraction of tokens where the clipped term won. */
double ppo_value_loss(float *dvalue, double *clip_frac, const float *values,
                      const float *values_old, const float *returns, const float *mask, float clip,
                      float norm, int N);

#endif
