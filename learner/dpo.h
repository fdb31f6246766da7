/* dpo: direct preference optimisation of a policy on preference records,
 * offline: the policy's sequence log-probs of each completion against the
 * reference's, computed once up front (dpo_seq_logps with the initial
 * policy) and kept, in the loss
 *   -log sigmoid(beta * ((lp_c - ref_c) - (lp_r - ref_r)) - margin),
 * every ranking's C(K,2) pairs weighted 1/C(K,2), the mean over records
 * (learner/prefs_batch.h, learner/algo/prefs.h). A sequence log-prob is the
 * sum over the completion's tokens, its end token included.
 *
 * The implicit reward of a completion is beta * (lp - ref); a pair is
 * right when the chosen's exceeds the rejected's (ties wrong, so a policy
 * equal to its reference scores 0).
 *
 * Ownership: records, reference log-probs and the model/optimizer are
 * borrowed. Threading: one thread. Errors: ERR_RANGE (logged) for a record
 * longer than the model's context; ERR_NONFINITE when the gradient is not
 * finite (the step is skipped, logged). */
#ifndef RLHF_DPO_H
#define RLHF_DPO_H

#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/tasks/prefs_data.h"

typedef struct {
    double loss;            /* mean over records */
    double accuracy;        /* fraction of pairs whose chosen has the larger implicit reward */
    double chosen_reward;   /* implicit reward of the better completion, over pairs */
    double rejected_reward; /* of the worse one */
    double margin_mean;     /* their difference */
    double grad_norm;       /* before clipping (steps only) */
    double lr;              /* (steps only) */
    int    records, pairs, rows;
    int    seq_len; /* positions per row */
} DpoStats;

/* The sequence log-prob of every completion of n records under m, in
 * order (record 0's k completions first), into out (sum of k). */
int dpo_seq_logps(Model *m, const PrefsRecord *recs, int n, double *out);

/* Loss and statistics of n records against ref (their completions' reference
 * log-probs, in dpo_seq_logps's order) without touching the gradients;
 * beta > 0; margin for pairs whose record gives none. */
int dpo_eval(Model *m, const PrefsRecord *recs, int n, const double *ref, float beta, float margin,
             DpoStats *st);

/* Zeroes the gradients and accumulates the loss's gradient over the whole
 * model into them; stats as dpo_eval. */
int dpo_grad(Model *m, const PrefsRecord *recs, int n, const double *ref, float beta, float margin,
             DpoStats *st);

/* dpo_grad, then one optimizer step. */
int dpo_step(Model *m, Optim *opt, const PrefsRecord *recs, int n, const double *ref, float beta,
             float margin, DpoStats *st);

#endif
