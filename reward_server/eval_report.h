/* eval_report: what rlhf-eval reports over the prompts of a run
 * (common/tasks/eval.h hands them over one by one).
 *
 * Per prompt: its n samples' correct count c, mean reward, samples not
 * scored, finish reasons, tokens, and the majority vote over the answers
 * the scorer reads (passk_vote: the answer given most often, ties to the
 * one given first), counted correct when the first sample that gave the
 * winning answer was correct. A prompt whose scorer reads no answer (code,
 * the format scorers, regex) has no vote, and says so.
 *
 * Over the run: pass@k for every k <= n, the mean over prompts of the
 * unbiased estimator (passk_estimate(n, c, k)); the majority-vote
 * accuracy over the prompts that have a vote (none: null, with the
 * scorers that read no answer named); the mean reward and the per-sample
 * accuracy over all samples (equal to pass@1, every prompt having n
 * samples); counts of samples not scored, finish reasons and tokens. As a
 * JSON object (eval_report_json) and a short table (eval_report_print).
 *
 * Ownership: eval_report_new's caller owns the report; prompts are copied
 * in. Threading: one thread. Errors: none (allocation failures abort). */
#ifndef RLHF_EVAL_REPORT_H
#define RLHF_EVAL_REPORT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "common/tasks/eval.h"

typedef struct EvalReport EvalReport;

/* A report over prompts of n_samples samples each (>= 1). */
EvalReport *eval_report_new(int n_samples);
void        eval_report_free(EvalReport **r);

/* Adds one prompt (p->n_samples must be the report's n); an EvalPromptFn
 * (ctx: the EvalReport), returning 0. */
int eval_report_add(void *ctx, const EvalPrompt *p);

typedef struct {
    int      n_prompts;
    int      n_samples;     /* per prompt */
    double   mean_reward;   /* over every sample; NAN without prompts */
    double   accuracy;      /* the share of samples counted correct; NAN without prompts */
    int      vote_prompts;  /* prompts whose scorer reads an answer */
    int      vote_correct;  /* of those, the ones whose majority answer is correct */
    double   vote_accuracy; /* vote_correct / vote_prompts, NAN when vote_prompts is 0 */
    uint64_t samples, unscored, tokens;
    uint64_t finish_stop, finish_length, finish_stop_string;
} EvalSummary;

/* The run's figures; pass@k from eval_report_pass_at. */
void eval_report_summary(const EvalReport *r, EvalSummary *out);
/* pass@k over the prompts so far (1 <= k <= n); NAN without prompts. */
double eval_report_pass_at(const EvalReport *r, int k);

/* {"results": {...}, "prompts": [...]} (caller owns; the caller adds its
 * settings). */
json_t *eval_report_json(const EvalReport *r);

/* The short table: pass@k for k = 1, 2, 5, 10, 20, 50, ... and n; the
 * majority vote; mean reward and accuracy; samples not scored and finish
 * reasons. */
void eval_report_print(const EvalReport *r, FILE *f);

#endif
