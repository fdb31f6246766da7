/* task: the built-in verifiable task, integer arithmetic.
 *
 * Problem i of a seed is "a+b=" or "a-b=" with 1 to max_digits-digit
 * operands, drawn from an Rng seeded by (seed, i); its answer is the exact
 * integer. Problems are split into train and held-out evaluation sets by a
 * hash of the problem itself (one in eval_every goes to evaluation), so the
 * two sets never share a problem, whatever the seeds. Pure functions; no
 * allocation; thread-safe. */
#ifndef RLHF_TASK_H
#define RLHF_TASK_H

#include <stdbool.h>
#include <stdint.h>

#define TASK_TEXT_MAX 48 /* bytes for a prompt or an answer, NUL included */

typedef struct {
    int max_digits; /* operands have 1..max_digits digits, in 1..6 */
    int eval_every; /* one problem in eval_every is held out, >= 2 */
} TaskConfig;

#define TASK_DEFAULTS ((TaskConfig){.max_digits = 3, .eval_every = 10})

typedef struct {
    char prompt[TASK_TEXT_MAX]; /* e.g. "37+45=" */
    char answer[TASK_TEXT_MAX]; /* e.g. "82" */
} TaskProblem;

/* The index-th problem of the train (held_out false) or evaluation split. */
void task_problem(const TaskConfig *cfg, uint64_t seed, uint64_t index, bool held_out,
                  TaskProblem *out);

/* Reward components of a completion (text after the prompt, without EOS). */
typedef struct {
    float correct; /* 1 if the completion is exactly the answer */
    float format;  /* 1 if the completion is an integer: optional '-' then digits */
} TaskScore;

void task_score(const char *completion, const char *answer, TaskScore *out);

#endif
