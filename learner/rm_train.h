/* rm_train: the rlhf-rm program's run: a reward model trained on
 * preference records from a policy (learner/rm.h, learner/prefs_run.h),
 * evaluated on held-out pairs before, during and after, its scores
 * normalised, saved, and summarised.
 *
 * Normalisation (after training): score.bias is set so that the mean
 * reward of a reference set of completions is 0 (checked by scoring them
 * again). The reference set is, in this order of preference: the
 * completions of norm_data (JSONL of {"prompt", "completion"}); norm_samples
 * completions sampled (at norm_temperature) from the starting policy on
 * training prompts before training, the original recipe's choice; or every
 * completion of the training records (chosen and rejected alike); at most
 * norm_max of them.
 *
 * Output: the checkpoint out (the Hugging Face sequence-classification
 * layout, ckpt.h) with the figures in its trainer state; one JSON summary
 * line on stdout (and in summary when set): held-out pair accuracy and loss
 * before and after, the normalisation, steps and time.
 *
 * Ownership: the config is borrowed. Threading: one thread. Errors: 0 or a
 * negative ERR_* code, logged; a stop request ends training early and still
 * normalises and saves what was trained. */
#ifndef RLHF_RM_TRAIN_H
#define RLHF_RM_TRAIN_H

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
    float          margin;           /* of pairs whose record gives none */
    int            eval_every;       /* held-out evaluation every N steps, 0 = start and end only */
    const char    *norm_data;        /* reference completions, or NULL */
    int            norm_samples;     /* completions sampled from the start for the reference */
    float          norm_temperature; /* their sampling temperature */
    int            norm_max;         /* reference completions used at most */
} RmTrainConfig;

int rm_train_run(const RmTrainConfig *c, atomic_int *stop);

#endif
