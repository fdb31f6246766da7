/* learner_task: the task the learner trains, as the learner sees it: the
 * prompt ids and answer of a train problem (the built-in arithmetic task with
 * the char tokenizer, or the chat task with a GGUF model's BPE tokenizer),
 * whether a completion is correct, and whether the model and tokenizer fit
 * the task at all.
 *
 * Ownership: reads the Learner's task fields, owns nothing. Threading: the
 * Learner's thread. Errors: learner_task_check logs and returns an ERR_*;
 * the other calls cannot fail on checked models (a failure is a CHECK). */
#ifndef RLHF_LEARNER_TASK_H
#define RLHF_LEARNER_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "learner/learner_int.h"

#define LEARNER_TASK_ARITH "arith" /* the built-in task's name on the wire */
/* Prompt ids of either task at most; the chat task's are the longer. */
#define LEARNER_PROMPT_IDS_MAX CHAT_TASK_PROMPT_MAX_IDS
#define LEARNER_ANSWER_MAX CHAT_TASK_TEXT_MAX /* bytes of an answer, NUL included */

/* Prompt ids of train problem id (at most LEARNER_PROMPT_IDS_MAX) and its
 * answer (LEARNER_ANSWER_MAX bytes, may be NULL); returns the length. */
int learner_task_prompt(const Learner *l, uint64_t id, int *ids, char *answer);
/* The task's name (a prompt's task field, the summary). */
const char *learner_task_name(const Learner *l);
/* Whether the policy and tokenizer can train the task: every character of
 * the arithmetic task in the tokenizer, or a chat prompt that encodes and an
 * end-of-turn token; the longest prompt plus a full completion within the
 * model's positions. Returns 0, or ERR_MISMATCH / ERR_RANGE / the encoder's
 * error (logged). */
int learner_task_check(Learner *l);
/* Whether completion cp answers answer: the learner's own check, the answer
 * then the stop token (the chat task scores an unstopped one too). */
bool learner_task_is_correct(const Learner *l, const Rlhf__Completion *cp, const char *answer);

#endif
