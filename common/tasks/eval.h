/* eval: evaluation of a policy on prompts. eval_run draws n completions per
 * prompt (sampled, or greedy at temperature 0), ends them at the tokenizer's
 * end token, at max_new tokens or at a stop string, scores each here with
 * its prompt's scorer spec (common/tasks/score.h), reads the answer the
 * scorer reads (for majority voting) and hands the results to the caller
 * prompt by prompt, in order. The prompts come from a source: a JSONL
 * dataset (common/tasks/dataset.h), the built-in arithmetic task (the char
 * model, scorer "arith") or the chat arithmetic task (a BPE model,
 * "arith_chat"), held-out problems 0..n-1 of a seed.
 *
 * On top of it, the held-out evaluations the SFT trainer and the learner
 * run, greedy with one completion per prompt and summarised (eval_arith,
 * eval_chat, eval_dataset); rlhf-eval (reward_server/eval_main.c) reports
 * pass@k and majority votes over many samples.
 *
 * Determinism: sample j of prompt i draws from a generator of its own,
 * seeded from (seed, i, j), so a run is reproducible from its seed, a
 * prompt's samples do not depend on the batch size or on which prompts
 * share its batch (up to the rounding of the batched matrix products), and
 * the first k samples of n are those a run with n = k draws.
 *
 * Ownership: the model, tokenizers, dataset and specs are borrowed and must
 * outlive the call. Threading: the caller's thread, except that the
 * completions of a batch are scored by score_threads threads at once (a
 * scorer must be thread-safe, as score.h requires; the sandboxed code
 * scorer blocks its thread while its program runs). Errors: 0 or a negative
 * ERR_* from reading prompts or generating (logged), or the callback's
 * non-zero return; a completion its scorer refuses (or a sandbox that
 * cannot start) is not an error but a sample counted as not scored, reward
 * 0 (the first logged with its prompt). */
#ifndef RLHF_EVAL_H
#define RLHF_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "common/nn/sampler.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/dataset.h"
#include "common/tasks/score.h"
#include "common/tasks/task.h"

#define EVAL_ANSWER_MAX 128 /* bytes of a sample's voting answer, NUL included */
#define EVAL_MAX_STOPS 16   /* stop strings of one run */
#define EVAL_STOP_MAX 64    /* bytes of one stop string, NUL included */

/* Where the prompts come from. */
typedef enum {
    EVAL_SRC_DATASET, /* the records of data, in file order */
    EVAL_SRC_ARITH,   /* the built-in arithmetic task (char model), scorer "arith" */
    EVAL_SRC_CHAT,    /* the chat arithmetic task (BPE model), scorer "arith_chat" */
} EvalSourceKind;

typedef struct {
    EvalSourceKind    kind;
    Dataset          *data;      /* EVAL_SRC_DATASET */
    const TaskConfig *task;      /* EVAL_SRC_ARITH, EVAL_SRC_CHAT: the problems' shape */
    uint64_t          task_seed; /* EVAL_SRC_ARITH, EVAL_SRC_CHAT: held-out problems of this seed */
    bool              is_train;  /* EVAL_SRC_ARITH, EVAL_SRC_CHAT: the train split's problems
                                    instead (rlhf-prefgen samples there) */
    uint64_t n;                  /* the first n prompts (a dataset: at most its size), >= 1 */
} EvalSource;

typedef struct {
    int                n_samples; /* completions per prompt, >= 1 */
    SamplerConfig      sampler;   /* temperature 0 = greedy (validated by the caller) */
    int                max_new;   /* tokens per completion at most, the end token included, >= 1 */
    int                batch;     /* sequences decoded together, >= 1 */
    uint64_t           seed;      /* the samples' generators (see the top) */
    const char *const *stops;     /* n_stops strings, 1..EVAL_STOP_MAX-1 bytes: a completion ends
                                     at the first, which is cut off with what follows it */
    int              n_stops;     /* 0..EVAL_MAX_STOPS */
    const ScoreSpec *spec;        /* every prompt scored with this; NULL = its own */
    int              score_threads; /* completions scored at once, >= 1 */
    bool             is_keep_text;  /* hand the completions' text to the callback */
} EvalConfig;

/* One completion, scored. */
typedef struct {
    float       reward;                  /* the spec's reward; 0 when not scored */
    float       format;                  /* the first component named format*, 0 if none */
    bool        is_correct;              /* score_is_correct */
    bool        is_scored;               /* false: the scorer refused it (counted, reward 0) */
    bool        has_answer;              /* the scorer read an answer (score_spec_extract) */
    char        answer[EVAL_ANSWER_MAX]; /* that answer, "" if none */
    int         n_tokens;                /* ids generated, the end token included */
    int         finish; /* GEN_FINISH_STOP (end token), _LENGTH, _CALLER (stop string) */
    const char *text;   /* with is_keep_text: the completion as scored, else NULL; valid
                           during the callback */
} EvalSample;

/* One prompt's results, handed to the callback. */
typedef struct {
    uint64_t          index;  /* its number in the source, from 0 */
    const char       *label;  /* "FILE:LINE", "arith:I" or "arith_chat:I" */
    const char       *prompt; /* its text: a record's prompt as scored, the task's question */
    const char       *answer; /* the reference answer, "" if none */
    const char       *task;   /* its own task (a record's, or the built-in's scorer) */
    const ScoreSpec  *spec;   /* the spec it was scored with: EvalConfig.spec, else its task's */
    const EvalSample *samples;
    int               n_samples;
} EvalPrompt;

/* Called once per evaluated prompt, in source order; a non-zero return ends
 * eval_run with that value. */
typedef int (*EvalPromptFn)(void *ctx, const EvalPrompt *p);

typedef struct {
    uint64_t prompts;  /* handed to the callback */
    uint64_t skipped;  /* prompts whose scorer runs only in the reward server */
    uint64_t samples;  /* completions generated */
    uint64_t unscored; /* completions the scorer refused */
    uint64_t tokens;   /* ids generated */
} EvalStats;

/* Checks cfg: counts, the sampler, the stop strings. Returns 0, or ERR_ARG
 * with the reason in why. */
int eval_config_check(const EvalConfig *cfg, char *why, size_t why_len);

/* Evaluates src as the top says, calling fn (may be NULL) per prompt;
 * stats (may be NULL) is filled even after an error. Returns 0 or an error
 * as the top says. */
int eval_run(Model *m, const Tok *tok, const Bpe *bpe, const EvalSource *src, const EvalConfig *cfg,
             EvalPromptFn fn, void *ctx, EvalStats *stats);

/* A greedy held-out evaluation, summarised. */
typedef struct {
    double accuracy; /* fraction of exact answers */
    double format;   /* fraction of well-formed answers (the first format* component) */
    double reward;   /* mean reward (chat task: correct + format bonus; arith: accuracy) */
    int    n;
    int    skipped; /* eval_dataset: records whose scorer runs only in the reward server */
} EvalResult;

/* Evaluates on held-out problems 0..n-1 of seed, batch prompts at a time:
 * greedy completions of at most a few tokens, scored by "arith". Returns 0,
 * or an error from tokenizing or generating (logged). */
int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out);

/* Evaluates the chat task on held-out problems 0..n-1 of seed: greedy
 * completions of at most max_new tokens, stopped at the BPE's end-of-turn
 * token, scored by "arith_chat" as the reward server scores them. Returns
 * 0, or an error from formatting, tokenizing or generating (logged). */
int eval_chat(Model *m, const Bpe *bpe, const ChatTaskConfig *task, uint64_t seed, int n, int batch,
              int max_new, EvalResult *out);

/* Evaluates the first n records of dataset d (all of them if fewer):
 * greedy completions of at most max_new tokens, stopped at the tokenizer's
 * end (EOS for tok, end-of-turn for bpe: exactly one of the two), scored
 * with each record's scorer spec here: accuracy is the share
 * score_is_correct counts, reward the mean reward, format the mean of the
 * first component named format*. Records whose scorer runs only in the
 * reward server are skipped and counted. Returns 0, or an error from
 * reading the data or generating (logged). */
int eval_dataset(Model *m, const Tok *tok, const Bpe *bpe, Dataset *d, int n, int batch,
                 int max_new, EvalResult *out);

#endif
