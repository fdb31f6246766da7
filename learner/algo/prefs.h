/* prefs: pairwise preference losses over (chosen, rejected) pairs:
 * Bradley-Terry for reward-model training and DPO for the policy. Other
 * preference objectives (IPO, KTO) belong here too.
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

#endif
