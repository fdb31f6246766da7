/* eval: held-out evaluation of a policy on the built-in arithmetic task:
 * greedy completions of n held-out prompts, scored exactly; and on the chat
 * task (common/tasks/chat_task.h) for pretrained models with their BPE tokenizer.
 * Used by the SFT trainer and the learner before and after RL. The model and
 * tokenizer are borrowed; one thread. */
#ifndef RLHF_EVAL_H
#define RLHF_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/tasks/chat_task.h"
#include "common/nn/model.h"
#include "common/tasks/task.h"
#include "common/formats/tok.h"
#include "common/tasks/dataset.h"

typedef struct {
    double accuracy; /* fraction of exact answers */
    double format;   /* fraction of well-formed integers */
    double reward;   /* mean reward (chat task: correct + format bonus; arith: accuracy) */
    int    n;
    int    skipped; /* eval_dataset: records whose scorer runs only in the reward server */
} EvalResult;

/* Evaluates on held-out problems 0..n-1 of seed, batch prompts at a time.
 * Returns 0, or an error from tokenizing or generating (logged). */
int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out);

/* Evaluates the chat task on held-out problems 0..n-1 of seed: greedy
 * completions of at most max_new tokens, stopped at the BPE's end-of-turn
 * token, scored with chat_task_score as the reward server's arith_chat
 * scorer does. Returns 0, or an error from formatting,
 * tokenizing or generating (logged). */
int eval_chat(Model *m, const Bpe *bpe, const ChatTaskConfig *task, uint64_t seed, int n, int batch,
              int max_new, EvalResult *out);

/* Evaluates the first n records of dataset d (all of them if fewer):
 * greedy completions of at most max_new tokens, stopped at the tokenizer's
 * end (EOS for tok, end-of-turn for bpe: exactly one of the two), scored
 * with each record's scorer spec here (common/tasks/score.h): accuracy is
 * the share score_is_correct counts, reward the mean reward, format the
 * mean of the first component named format*. Records whose scorer runs only
 * in the reward server are skipped and counted. Returns 0, or an error from
 * reading the data or generating (logged). */
int eval_dataset(Model *m, const Tok *tok, const Bpe *bpe, Dataset *d, int n, int batch,
                 int max_new, EvalResult *out);

#endif
