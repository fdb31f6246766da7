/* chat_task: the built-in verifiable task for instruct models, arithmetic
 * asked in natural language ("What is 37 + 45? Reply with the number
 * only."), formatted with the model's chat template and tokenized with its
 * byte-level BPE; and the tolerant answer extractor and score the reward
 * server and the learner's evaluation share.
 *
 * Problems are common/tasks/task.h's (same operands, same train / held-out split
 * by a hash of the problem), only worded as a question, so the two splits
 * never share a problem. The reward of a completion is correct (the last
 * integer in it equals the answer) plus, only when correct,
 * CHAT_TASK_FORMAT_BONUS times format (the completion is just the number,
 * optionally with surrounding whitespace and one trailing period, and
 * stopped by itself). A bonus for form alone was gamed: a 40-step GRPO run on
 * SmolLM2 learned bare wrong numbers (format 0 -> 0.95, accuracy 0.23 -> 0.05).
 *
 * Pure functions apart from chat_task_prompt_ids's use of the Bpe (which is
 * immutable and thread-safe); no allocation except inside bpe_* calls.
 * Errors: chat_task_prompt_ids returns bpe_chat_format's or bpe_encode's
 * error (logged by them). */
#ifndef RLHF_CHAT_TASK_H
#define RLHF_CHAT_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/tasks/task.h"

#define CHAT_TASK_TEXT_MAX 128       /* bytes of a question or an answer, NUL included */
#define CHAT_TASK_PROMPT_MAX_IDS 160 /* ids of a formatted prompt at most */
#define CHAT_TASK_FORMAT_BONUS 0.2f  /* reward for a bare-number completion */
#define CHAT_TASK_NAME "arith_chat"  /* the scorer (the prompts' task) name */

/* The char task's settings: the problems are its problems. */
typedef TaskConfig ChatTaskConfig;

#define CHAT_TASK_DEFAULTS ((ChatTaskConfig){.max_digits = 2, .eval_every = 10})

typedef struct {
    char question[CHAT_TASK_TEXT_MAX]; /* "What is 37 + 45? Reply with the number only." */
    char answer[CHAT_TASK_TEXT_MAX];   /* "82" */
} ChatTaskProblem;

/* The index-th problem of the train (held_out false) or evaluation split. */
void chat_task_problem(const ChatTaskConfig *cfg, uint64_t seed, uint64_t index, bool held_out,
                       ChatTaskProblem *out);

/* The prompt ids of a question: one user message rendered by the chat
 * template (with its default system prompt) and the assistant's generation
 * prompt, encoded with special tokens (and BOS when the model wants it).
 * Writes at most cap ids and the count into *n_ids. Returns 0 or an error of
 * bpe_chat_format / bpe_encode (ERR_RANGE when cap is too small). */
int chat_task_prompt_ids(const Bpe *b, const char *question, int *ids, int cap, int *n_ids);

/* The last integer in text: an optional '-' directly before the digits, and
 * commas between groups of three digits ("1,234") taken as thousands
 * separators. Sets *value and returns true, or returns false when text holds
 * no digit or the number does not fit in 18 digits. */
bool chat_task_extract(const char *text, long long *value);

/* Reward components of a completion (text without the end-of-turn token). */
typedef struct {
    float correct; /* 1 if chat_task_extract finds the answer's value */
    float format;  /* 1 if the completion is just an integer (whitespace, one '.' allowed) and
                      ended by itself */
} ChatTaskScore;

/* Scores a completion; is_truncated says it hit the length cap. A cut-off
 * completion still earns correct when its last integer is the answer (the
 * extractor tolerates words around it, and a small model sampled at T = 1
 * often keeps talking after the answer), but never format. */
void chat_task_score(const char *completion, const char *answer, bool is_truncated,
                     ChatTaskScore *out);
/* correct * (1 + CHAT_TASK_FORMAT_BONUS * format): form earns only with the answer. */
float chat_task_reward(const ChatTaskScore *s);

#endif
