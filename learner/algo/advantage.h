/* advantage: advantage estimators without a critic: GRPO's group-relative
 * normalisation and whitening over a batch. Baselines such as RLOO's
 * leave-one-out mean belong here too; GAE, which needs a critic, is in
 * learner/algo/ppo.h.
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

#endif
