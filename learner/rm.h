/* rm: reward-model training on preference records: the policy's body with
 * a scalar head (ModelConfig.has_value_head: score.weight, score.bias) read
 * at the last id of prompt ++ completion, trained with the Bradley-Terry
 * loss -log sigmoid(r_chosen - r_rejected - margin), every ranking's C(K,2)
 * pairs weighted 1/C(K,2) (learner/prefs_batch.h); and the normalisation of
 * its scores by the head's bias.
 *
 * The loss is the mean over records (a pair or a ranking each count once).
 * Its gradient leaves score.bias alone (every pair adds and subtracts the
 * same amount), so the bias is set afterwards: rm_shift_bias makes the mean
 * score of a reference set 0, as the original RLHF recipe does.
 *
 * Ownership: records and the model/optimizer are borrowed. Threading: one
 * thread (OpenBLAS threads inside). Errors: ERR_RANGE (logged) for a record
 * longer than the model's context; ERR_NONFINITE when the gradient is not
 * finite (the step is skipped, logged). The model must have the head
 * (CHECK). */
#ifndef RLHF_RM_H
#define RLHF_RM_H

#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/tasks/prefs_data.h"

typedef struct {
    double loss;          /* Bradley-Terry, mean over records */
    double accuracy;      /* fraction of pairs with r_chosen > r_rejected (ties wrong) */
    double chosen_mean;   /* reward of the better completion, over pairs */
    double rejected_mean; /* reward of the worse completion, over pairs */
    double margin_mean;   /* their difference */
    double grad_norm;     /* before clipping (steps only) */
    double lr;            /* (steps only) */
    int    records, pairs, rows;
    int    seq_len; /* positions per row */
} RmStats;

/* Loss and statistics of n records without touching the gradients;
 * margin is the margin of pairs whose record gives none. */
int rm_eval(Model *m, const PrefsRecord *recs, int n, float margin, RmStats *st);

/* Zeroes the gradients and accumulates the loss's gradient over the whole
 * model into them; stats as rm_eval. */
int rm_grad(Model *m, const PrefsRecord *recs, int n, float margin, RmStats *st);

/* rm_grad, then one optimizer step. */
int rm_step(Model *m, Optim *opt, const PrefsRecord *recs, int n, float margin, RmStats *st);

/* The reward of every completion of n records, in order (record 0's k
 * completions first), into out (sum of k). Returns 0 or ERR_RANGE. */
int rm_score(Model *m, const PrefsRecord *recs, int n, double *out);

/* Adds delta to score.bias: every reward moves by delta. */
void  rm_shift_bias(Model *m, double delta);
float rm_bias(Model *m);

/* A reward model from a policy: the same body with a new scalar head
 * (score.weight Normal(0, std) from seed, score.bias 0); a model that has
 * the head already is copied whole. Caller owns. */
Model *rm_from_policy(Model *policy, uint64_t seed, float std);

#endif
