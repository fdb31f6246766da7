/* prefs: pairwise preference losses over (chosen, rejected) pairs:
 * Bradley-Terry for reward-model training and DPO for the policy, on plain
 * pair arrays or on indexed, weighted pairs (rankings of K completions give
 * C(K,2) pairs). Other preference objectives (IPO, KTO) belong here too.
 *
 * Gradients accumulate and losses are minimised, as in learner/algo/agg.h.
 * Misuse is a CHECK; nothing allocates or fails otherwise; every function
 * is reentrant. */
#ifndef RLHF_PREFS_H
#define RLHF_PREFS_H

/* Means over the P pairs. */
typedef struct {
    double accuracy;      /* fraction of pairs with chosen > rejected (ties count as wrong) */
    double chosen_mean;   /* reward of the chosen completion */
    double rejected_mean; /* reward of the rejected completion */
    double margin_mean;   /* chosen - rejected */
} PrefsPairStats;

/* Bradley-Terry reward-model loss: l = -log sigmoid(r_chosen - r_rejected)
 * = softplus(r_rejected - r_chosen), computed without overflow for any
 * margin; loss = sum l / D with D = P, or norm if > 0.
 * r_chosen (P), r_rejected (P) scalar rewards. Accumulates the gradients
 * into dchosen (P) and drejected (P). stats (if non-NULL) hold the raw
 * rewards. Returns the loss (log 2 when the rewards are equal). */
double prefs_bt_loss(float *dchosen, float *drejected, PrefsPairStats *stats, const float *r_chosen,
                     const float *r_rejected, float norm, int P);

/* Direct preference optimisation:
 *   z = beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))
 *   l = -log sigmoid(z), loss = sum l / D with D = P, or norm if > 0.
 * All four inputs (P) are sequence log-probabilities (sums over the
 * completion tokens, see agg_seq_sum); the reference ones are constants.
 * Accumulates the gradients w.r.t. the policy's sums into dchosen (P) and
 * drejected (P); agg_seq_sum_backward spreads them over the tokens. stats (if
 * non-NULL) hold the implicit rewards beta * (logp - ref). beta > 0. Returns
 * the loss (log 2 when the policy equals the reference). */
double prefs_dpo_loss(float *dchosen, float *drejected, PrefsPairStats *stats,
                      const float *logp_chosen, const float *logp_rejected, const float *ref_chosen,
                      const float *ref_rejected, float beta, float norm, int P);

/* One pair among a batch's scores: score[chosen] should beat
 * score[rejected] (by margin). */
typedef struct {
    int   chosen;   /* index into the scores */
    int   rejected; /* index into the scores */
    float weight;   /* > 0: 1 for a pair, 1/C(K,2) for each pair of a ranking of K */
    float margin;   /* >= 0, in units of the loss's argument */
} PrefsPair;

/* The preference loss over P indexed, weighted pairs of the scores s:
 *   z_p = scale * (s[chosen_p] - s[rejected_p]) - margin_p
 *   l_p = -log sigmoid(z_p) = softplus(-z_p)
 *   loss = sum_p weight_p * l_p / D, D = norm if > 0, else sum_p weight_p.
 * With scale 1 and s the rewards it is Bradley-Terry (with Llama 2's
 * margin); with scale beta and s the log-ratios log pi - log pi_ref of each
 * completion it is DPO (beta scale, D the number of prompts). Accumulates
 * d loss / d s into dscore (n = the scores' count; every index < n, CHECKed
 * by the caller's construction). stats (if non-NULL) are means over the
 * pairs, unweighted: accuracy counts scale*(s_c - s_r) > 0 (ties wrong),
 * the means are of scale*s (DPO's implicit rewards) and of their margin.
 * Returns the loss (0 when P is 0). */
double prefs_pairs_loss(float *dscore, PrefsPairStats *stats, const double *s,
                        const PrefsPair *pairs, int P, double scale, double norm);

/* The pairs of one ranking of k completions, best first, at score indices
 * base..base+k-1: all C(k,2) pairs (i above j for i < j), each weighted
 * 1/C(k,2) so a ranking counts as one comparison, as InstructGPT's reward
 * model does; margin applies to every pair. Writes C(k,2) pairs to out and
 * returns their count. k >= 2. */
int prefs_ranking_pairs(PrefsPair *out, int base, int k, float margin);

#endif
