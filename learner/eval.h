/* eval: held-out evaluation of a policy on the built-in arithmetic task:
 * greedy completions of n held-out prompts, scored exactly. Used by the SFT
 * trainer and the learner before and after RL. The model and tokenizer are
 * borrowed; one thread. */
#ifndef RLHF_EVAL_H
#define RLHF_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model.h"
#include "common/task.h"
#include "common/tok.h"

typedef struct {
    double accuracy; /* fraction of exact answers */
    double format;   /* fraction of well-formed integers */
    int    n;
} EvalResult;

/* Evaluates on held-out problems 0..n-1 of seed, batch prompts at a time.
 * Returns 0, or an error from tokenizing or generating (logged). */
int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out);

int eval_selftest(bool verbose);

#endif
