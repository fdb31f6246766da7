/* learner_task: the prompts the learner trains on, as the learner sees them,
 * from one prompt source chosen at start (a table of sources, not a switch):
 *   arith  the built-in arithmetic task with the char tokenizer (scorer "arith")
 *   chat   the chat arithmetic task with a GGUF model's BPE (scorer "arith_chat")
 *   data   a JSONL dataset (--data, common/tasks/dataset.h), rendered with
 *          whichever tokenizer the model has; each record names its scorer
 * and the held-out evaluation: the built-in task's split, or a JSONL file
 * (--eval-data) whatever the training source.
 *
 * Train prompt id p of a dataset of N records is record
 * dataset_shuffle(N, seed, p): epoch p / N visits every record once, in an
 * order of its own. The lease table hands out prompt ids in order and keeps
 * the next one (and those leased but not trained) in the checkpoint, so a
 * resumed run continues the data where it was, neither starting it over nor
 * skipping a part; the checkpoint also records the data's size, fingerprint
 * and shuffle seed ("data" in the trainer state), and a resume refuses a
 * data file that changed or a run that switches between data and the
 * built-in task.
 *
 * Ownership: the Learner owns the prompt state (learner_task_open,
 * learner_task_free); pointers in a Prompt filled by learner_task_wire_prompt
 * stay valid until the next call for the same slot. Threading: the
 * Learner's thread. Errors: learner_task_open logs and returns an ERR_*;
 * prompts of a checked source cannot fail, except a data file edited in
 * place under a running learner, which is logged and ends the process (a
 * CHECK: the checkpoint resumes, and then refuses the changed file). */
#ifndef RLHF_LEARNER_TASK_H
#define RLHF_LEARNER_TASK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/tasks/dataset.h"
#include "common/tasks/eval.h"
#include "learner/learner_int.h"

#define LEARNER_TASK_ARITH "arith"            /* the built-in task's name on the wire */
#define LEARNER_PROMPT_IDS_MAX 1024           /* prompt ids of any source at most */
#define LEARNER_ANSWER_MAX DATASET_MAX_ANSWER /* bytes of an answer, NUL included */

/* Opens the prompt source (and the evaluation file) for the loaded model:
 * checks that the model and tokenizer fit the task (every character of the
 * arithmetic task in the char tokenizer; a chat template and an end-of-turn
 * token for BPE; the longest prompt plus max_new_tokens within the model's
 * positions), indexes --data and --eval-data, and on a resume (data_state:
 * the checkpoint's "data" object, NULL if none) checks it is the same data
 * and takes its shuffle seed. Returns 0, or ERR_MISMATCH / ERR_RANGE /
 * ERR_FORMAT / the dataset's error (logged). */
int  learner_task_open(Learner *l, bool resumed, const json_t *data_state);
void learner_task_free(Learner *l);

/* Prompt ids of train prompt id (at most LEARNER_PROMPT_IDS_MAX) and its
 * answer (LEARNER_ANSWER_MAX bytes, may be NULL); returns the length. */
int learner_task_prompt(Learner *l, uint64_t id, int *ids, char *answer);
/* Fills pr (after RLHF__PROMPT__INIT) with train prompt id as a lease
 * carries it: ids, answer, task (its scorer spec) and meta, pointing into
 * the buffers of slot (0 <= slot < LEARNER_MAX_LEASE_PROMPTS). */
void learner_task_wire_prompt(Learner *l, uint64_t id, int slot, Rlhf__Prompt *pr);
/* The source's name ("arith", "arith_chat", "data"): the summary's task. */
const char *learner_task_name(const Learner *l);
/* Whether completion cp of train prompt id is correct by the prompt's own
 * scorer, run here (score_is_correct; the built-in tasks want the stop
 * token, the chat task scores an unstopped one too). A scorer that runs only
 * in the reward server (sandboxed code) is taken at its word: its score sc's
 * component "correct" (else its reward) at least 0.5. */
bool learner_task_is_correct(Learner *l, uint64_t id, const Rlhf__Completion *cp,
                             const Rlhf__Score *sc);

/* Greedy held-out evaluation of the policy: --eval-data's first eval_n
 * records, or eval_n problems of the built-in task's held-out split (none
 * for a --data run without --eval-data: out->n = 0). Returns 0 or the
 * evaluation's error (logged). */
int learner_task_evaluate(Learner *l, EvalResult *out);

/* Adds the data position to a checkpoint's trainer state extra (which holds
 * "lease"): {"path", "records", "fingerprint", "seed", "epoch", "position"}
 * under "data", for a --data run; nothing otherwise. */
void learner_task_save_state(const Learner *l, json_t *extra);

#endif
