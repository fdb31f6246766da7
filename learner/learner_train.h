/* learner_train: the learner's training step and its held-out evaluation.
 * A step takes the first batch_groups waiting groups (after dropping the too
 * stale), runs one algo_step on them (one policy version), settles them with
 * the lease table as trained or failed, announces the new version and
 * records the step's metrics. The evaluation scores greedy completions of
 * eval_n held-out problems of the learner's task.
 *
 * An update either happens whole or not at all. One that fails (algo_step's
 * error, or a loss or gradient norm that is not finite) takes no step: the
 * policy, the critic and both optimizers' moments and step counts are as
 * before it, the version does not move, and its groups are settled as
 * failed (the lease identity counts them under `failed`). An update of one
 * optimizer step is all or nothing by optim_step's contract (a non-finite
 * gradient changes nothing); before one that may take several (PPO's policy
 * and critic steps, several epochs or minibatches) a copy of what it
 * changes is kept and put back on failure.
 *
 * Ownership: works on the Learner's models and waiting groups. Threading:
 * the Learner's thread. Errors: a failed update is logged and its groups
 * settled as failed; learner_train_evaluate returns the evaluator's error. */
#ifndef RLHF_LEARNER_TRAIN_H
#define RLHF_LEARNER_TRAIN_H

#include "learner/learner_int.h"

/* One update if a batch is ready. Returns 1 if a step was taken, 0 if not. */
int learner_train_step(Learner *l);
/* Held-out greedy accuracy and mean reward of the policy (NaN both when
 * eval_n is 0). Returns 0 or the evaluator's error. */
int learner_train_evaluate(Learner *l, double *acc, double *reward);

/* Bytes the policy's training holds per step (the critic and reference not
 * included): as allocated now, so activations count once a step has run. */
typedef struct {
    size_t weights;   /* the base parameters */
    size_t adapters;  /* LoRA parameters, 0 without */
    size_t grads;     /* gradients of what is trained */
    size_t optimizer; /* AdamW's two moments of what is trained */
    size_t acts;      /* activations, the adapters' included */
    size_t total;     /* the sum of the above */
    size_t full_ft;   /* the same for full fine-tuning: weights, 3 x weights, base activations */
    size_t merged;    /* LoRA: the merged copy actors and evaluation decode, 0 without */
} LearnerMemory;
void learner_train_memory(Learner *l, LearnerMemory *out);

#endif
