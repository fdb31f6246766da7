/* dpo_train: the rlhf-dpo program's run: a policy trained offline with DPO
 * (learner/dpo.h) on preference records (learner/prefs_run.h), the
 * reference log-probs of every training and held-out completion computed
 * once, up front, with the starting policy, and kept; held-out
 * implicit-reward accuracy, margins and loss before, during and after;
 * the policy saved as an ordinary checkpoint (what rlhf-sft writes, for
 * rlhf-learner --init, rlhf-gen and rlhf-export); one JSON summary line on
 * stdout (and in summary when set).
 *
 * Ownership: the config is borrowed. Threading: one thread. Errors: 0 or a
 * negative ERR_* code, logged; a stop request ends training early and still
 * saves what was trained. */
#ifndef RLHF_DPO_TRAIN_H
#define RLHF_DPO_TRAIN_H

#include <stdatomic.h>

#include "learner/prefs_run.h"

typedef struct {
    PrefsRunConfig run;
    const char    *out;     /* checkpoint directory written at the end */
    const char    *summary; /* JSON summary file, or NULL */
    long           steps;   /* optimizer steps; 0 = epochs over the training records */
    int            epochs;
    float          lr;
    int            warmup;
    float          grad_clip;
    float          beta;       /* DPO's inverse temperature, > 0 */
    float          margin;     /* of pairs whose record gives none */
    int            eval_every; /* held-out evaluation every N steps, 0 = start and end only */
} DpoTrainConfig;

int dpo_train_run(const DpoTrainConfig *c, atomic_int *stop);

#endif
