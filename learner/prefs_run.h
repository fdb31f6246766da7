/* prefs_run: what the preference trainers (rlhf-rm, rlhf-dpo) share around
 * their step: the model and tokenizer they start from, the training and
 * held-out records, the order of the training batches, the optimizer's
 * schedule, evaluation over the held-out set, and the checkpoint and summary
 * they write.
 *
 * The start: --init DIR, a checkpoint of ours (its char tokenizer, or the
 * BPE of --model when given too), or --model FILE.gguf alone (weights and
 * BPE tokenizer, the context capped at max_len). With value_head, a model
 * without the scalar head gets one (rm_from_policy).
 *
 * The records: --data; held out, --eval-data, or else a share eval_frac of
 * --data drawn by a keyed permutation of seed (records on one side only).
 * Training step s reads records s*batch .. s*batch+batch-1 of a stream
 * that visits every training record once per epoch, in an order of its own
 * each epoch (dataset_shuffle): same seed, same batches.
 *
 * Ownership: prefs_run_open's caller owns the PrefsRun and with it the
 * model (prefs_run_model borrows it). Threading: one thread. Errors: 0 or a
 * negative ERR_* code, logged once where it happens. */
#ifndef RLHF_PREFS_RUN_H
#define RLHF_PREFS_RUN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/tasks/prefs_data.h"

#define PREFS_RUN_MAX_LEN 512 /* positions a GGUF model is loaded with by default */

typedef struct {
    const char *data;       /* training records (required) */
    const char *eval_data;  /* held-out records; NULL = split eval_frac of data */
    float       eval_frac;  /* 0..0.9: the held-out share of data without eval_data */
    int         eval_max;   /* held-out records evaluated, 0 = all */
    const char *init;       /* checkpoint directory to start from; or */
    const char *model;      /* GGUF file: weights without init, the BPE tokenizer either way */
    int         max_len;    /* positions a GGUF model is loaded with */
    int         max_bad;    /* refuse a data file with more than this percent of bad records */
    int         batch;      /* records per step */
    uint64_t    seed;       /* split, order, head init */
    bool        value_head; /* give the model a scalar head (reward model) */
} PrefsRunConfig;

typedef struct PrefsRun PrefsRun;

/* Loads the model and opens the data as described at the top. Returns 0
 * with *out (caller owns), or an error (logged) with *out NULL. */
int  prefs_run_open(const PrefsRunConfig *c, PrefsRun **out);
void prefs_run_free(PrefsRun **r);

Model     *prefs_run_model(PrefsRun *r);
const Tok *prefs_run_tok(const PrefsRun *r); /* NULL for a BPE model */
const Bpe *prefs_run_bpe(const PrefsRun *r); /* NULL for the char model */
/* The id a sampled completion stops at: EOS, or the chat template's end of turn. */
int prefs_run_stop_id(const PrefsRun *r);

uint64_t prefs_run_n_train(const PrefsRun *r);
/* Held-out records evaluated (eval_max applied). */
uint64_t prefs_run_n_eval(const PrefsRun *r);
/* Statistics of the training file. */
void prefs_run_data_stats(const PrefsRun *r, PrefsStats *train, PrefsStats *eval);

/* Reads training record i (0 <= i < n_train; a fixed order) or held-out
 * record i into *rec (prefs_read's contract: the caller frees it, also
 * after a failure). */
int prefs_run_read_train(PrefsRun *r, uint64_t i, PrefsRecord *rec);
int prefs_run_read_eval(PrefsRun *r, uint64_t i, PrefsRecord *rec);

/* The batch of training step `step`: cfg.batch records into recs (caller
 * frees each) and their training indices into idx (may be NULL). */
int prefs_run_batch(PrefsRun *r, int64_t step, PrefsRecord *recs, uint64_t *idx);

/* The steps of `epochs` passes over the training records (at least 1). */
int64_t prefs_run_steps_for(const PrefsRun *r, int epochs);

/* AdamW for the model: lr warmed up over warmup steps, cosine to lr/10 at
 * steps, betas 0.9/0.95, no weight decay, clipping at grad_clip (0 = off). */
OptimConfig prefs_run_optim_config(float lr, int warmup, int64_t steps, float grad_clip);

/* Saves the model as checkpoint dir (its char tokenizer when it has one),
 * with trainer state {step, run_id, extra}. Returns ckpt_save's result. */
int prefs_run_save(PrefsRun *r, const char *dir, int64_t step, const char *run_id, json_t *extra);

/* Writes JSON object o, one line, to stdout and, when path is non-NULL, to
 * path (atomically). Returns 0 or ERR_IO (logged). */
int prefs_run_summary(const char *path, json_t *o);

#endif
