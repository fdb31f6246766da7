/* evaluator: what rlhf-eval does, end to end. Loads a policy (a checkpoint
 * directory of ours with its char tokenizer; a GGUF model with its BPE
 * tokenizer and chat template; or a checkpoint trained from a GGUF, with
 * that GGUF's tokenizer), opens the prompts (a JSONL dataset, or the
 * built-in arithmetic task), builds the scorers (every built-in, and the
 * sandboxed "code" scorer of reward_server/sandbox_scorer.h on a pool of
 * its own), runs eval_run (common/tasks/eval.h) with a progress line, and
 * writes the report (reward_server/eval_report.h): a table on stdout, the
 * JSON report with the run's settings and wall time, and optionally every
 * completion as JSONL.
 *
 * Ownership: the config's strings are borrowed. Threading: the caller's
 * thread (eval_run scores on more). Errors: evaluator_run logs what failed,
 * naming the file or flag, and returns an ERR_* code. */
#ifndef RLHF_EVALUATOR_H
#define RLHF_EVALUATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/nn/sampler.h"
#include "common/tasks/eval.h"
#include "reward_server/sandbox_scorer.h"

enum { EVALUATOR_TEMPLATE_CHAT = 0, EVALUATOR_TEMPLATE_RAW = 1 };
extern const char *const evaluator_template_names[]; /* "chat", "raw" */

typedef struct {
    const char         *ckpt;         /* our checkpoint directory, or NULL */
    const char         *model;        /* a GGUF: the weights (without ckpt) and the BPE tokenizer */
    const char         *data;         /* JSONL prompts, or NULL for the built-in arithmetic task */
    int                 arith_n;      /* built-in task: problems (held-out 0..n-1) */
    int                 arith_digits; /* built-in task: operand digits at most */
    uint64_t            arith_seed;   /* built-in task: which held-out problems */
    int                 tmpl;   /* EVALUATOR_TEMPLATE_*: how a BPE model's prompts are rendered */
    const char         *task;   /* scorer spec of records without a task, NULL = none */
    const char         *scorer; /* scorer spec for every prompt, NULL = each prompt's task */
    int                 data_max_bad; /* refuse a file with more bad records, percent */
    int                 limit;        /* the first N prompts, 0 = all */
    int                 n;            /* samples per prompt */
    SamplerConfig       sampler;
    int                 max_new;
    int                 batch;
    uint64_t            seed;
    char                stops[EVAL_MAX_STOPS][EVAL_STOP_MAX]; /* unescaped */
    int                 n_stops;
    int                 threads;          /* model threads, 0 = as the environment says */
    int                 decode_weights;   /* KernType */
    const char         *out;              /* the JSON report, NULL = none */
    const char         *completions;      /* every completion as JSONL, NULL = none */
    SandboxScorerConfig code;             /* code.sandbox.workers 0 = no code scorer */
    double              progress_every_s; /* seconds between progress lines when not a terminal */
} EvaluatorConfig;

/* Runs the evaluation; 0, or an ERR_* after logging. */
int evaluator_run(const EvaluatorConfig *cfg);

#endif
