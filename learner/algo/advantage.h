/* advantage: advantage estimators without a critic (GRPO's group-relative
 * normalisation, RLOO's leave-one-out baseline, REINFORCE's running-mean
 * baseline), whitening over a batch, and the shaping of scalar rewards that
 * comes before them (DAPO's overlong penalty and its test for groups that
 * carry no signal). GAE, which needs a critic, is in learner/algo/ppo.h.
 *
 * Masks follow learner/algo/agg.h. Misuse is a CHECK; nothing allocates or
 * fails otherwise; every function is reentrant. */
#ifndef RLHF_ADVANTAGE_H
#define RLHF_ADVANTAGE_H

#include <stdbool.h>

/* Added to a standard deviation before dividing by it (adv_group,
 * adv_whiten). It keeps groups whose rewards differ only by rounding noise
 * from having that noise blown up to unit scale, and is small next to any
 * informative spread (0/1 rewards in a group of 256 have std >= 0.06). */
#define ADV_STD_EPS 1e-4f

/* Group-relative advantages (GRPO) for n_groups groups of G completions.
 *   rewards (n_groups, G) one scalar per completion, groups contiguous
 *   adv     (n_groups, G) written; may alias rewards
 * Per group: adv = (r - mean) / (std + ADV_STD_EPS) when divide_std, else
 * r - mean (the mean-only variant of Dr. GRPO, which avoids upweighting
 * groups whose rewards barely differ). std is the population standard
 * deviation (divided by G, not G - 1): the group is the whole population
 * being compared, and then the normalised advantages have zero mean and unit
 * standard deviation up to the epsilon. A group whose rewards are all equal
 * carries no learning signal and gets exactly 0, as does any group of G = 1. */
void adv_group(float *adv, const float *rewards, bool divide_std, int n_groups, int G);

/* Whitening over a batch: out = (x - mean) / (std + ADV_STD_EPS), with the
 * mask-weighted mean and population standard deviation over the entries
 * with mask > 0 (mask NULL: all). Entries with mask 0 get 0. If all counted
 * entries are equal, or none counts, out is 0 everywhere. out may alias x.
 * Used on PPO advantages before the policy loss. */
void adv_whiten(float *out, const float *x, const float *mask, int N);

/* RLOO (REINFORCE leave-one-out) for n_groups groups of G completions:
 *   adv_i = r_i - (sum_{j != i} r_j) / (G - 1) = G / (G - 1) * (r_i - mean)
 * the baseline of each completion being the mean of the others of its
 * group, which does not depend on it (so the estimate stays unbiased) and
 * costs no extra samples. No division by a standard deviation. A group of
 * G = 1 has no others and gets 0, as does a group whose rewards are all
 * equal. adv may alias rewards. */
void adv_rloo(float *adv, const float *rewards, int n_groups, int G);

/* REINFORCE with a running-mean baseline over n completions (no groups):
 *   adv_i = r_i - b,  b the baseline before this batch;
 *   then b <- decay * b + (1 - decay) * mean_i r_i.
 * The baseline is an exponential running mean of past batches' mean
 * rewards, so it does not depend on the completion it is subtracted from.
 * The first batch (*has_baseline false) has no past: it takes its own mean
 * as b (a small bias once, far less variance than b = 0) and sets
 * *has_baseline. decay in [0, 1); adv may alias rewards. */
void adv_reinforce(float *adv, const float *rewards, double *baseline, bool *has_baseline,
                   float decay, int n);

/* DAPO's soft overlong punishment of a completion of len tokens sampled
 * under a length cap of max_len tokens, with a buffer of buffer tokens
 * before the cap (L_max = max_len, L_cache = buffer):
 *   0                                      len <= L_max - L_cache
 *   ((L_max - L_cache) - len) / L_cache    L_max - L_cache < len <= L_max
 *   -1                                     len > L_max
 * times coef, added to the completion's reward. It falls linearly from 0 to
 * -coef over the buffer, so a completion cut at the cap (len = L_max) gets
 * -coef. buffer 0 is off (returns 0); else 1 <= buffer <= max_len (CHECK). */
float adv_overlong_penalty(int len, int max_len, int buffer, float coef);

/* True when the G >= 1 rewards of a group are all equal: the group
 * estimators (adv_group, adv_rloo) then give each completion 0, so the
 * group carries no learning signal (the groups DAPO's dynamic sampling
 * drops). REINFORCE's batch baseline still gives such a group r - b. */
bool adv_group_is_flat(const float *rewards, int G);

#endif
