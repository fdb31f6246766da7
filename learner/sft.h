/* sft: supervised fine-tuning steps: cross-entropy on completion tokens
 * given a prompt, the warm start of every RL run and the trainer behind the
 * SFT overfit test.
 *
 * An example is a prompt and a completion, both as token ids; the sequence
 * fed to the model is prompt ++ completion and only the completion tokens
 * are predicted (loss-masked). Sequences are right-padded with pad_id, to
 * the length the batch's longest example needs (T is only the cap): the
 * padding never changes a loss or a gradient, only the work.
 * Ownership: examples and the model/optimizer are borrowed. Threading: one
 * thread. Errors: ERR_RANGE for an example longer than T or with an empty
 * completion (logged with its index); ERR_NONFINITE if the gradient was not
 * finite (the step was skipped). */
#ifndef RLHF_SFT_H
#define RLHF_SFT_H

#include <stdbool.h>

#include "common/nn/model.h"
#include "common/nn/optim.h"

typedef struct {
    const int *prompt;
    int        prompt_len; /* >= 1 (a BOS at least) */
    const int *completion;
    int        completion_len; /* >= 1; usually ends with EOS */
} SftExample;

typedef struct {
    double loss;      /* mean cross-entropy per completion token (nats) */
    double token_acc; /* fraction of completion tokens the argmax gets right */
    double grad_norm; /* before clipping */
    double lr;
    int    n_tokens; /* completion tokens in the batch */
    int    seq_len;  /* positions per row: the longest prompt + completion, minus 1 */
} SftStats;

/* One optimizer step on n examples packed into a (n, T) batch. Returns 0 or
 * an error as above; stats filled on success. */
int sft_step(Model *m, Optim *opt, const SftExample *ex, int n, int T, int pad_id, SftStats *st);

/* Loss and token accuracy without updating anything. */
int sft_eval(Model *m, const SftExample *ex, int n, int T, int pad_id, SftStats *st);

/* The shape of a randomly initialised char-task model, the start of SFT
 * without --init and of a learner without one: the given sizes, 64
 * positions, RoPE theta 10000, RMSNorm eps 1e-5, tied embeddings. Not
 * validated: the caller runs model_config_validate on it. */
ModelConfig sft_model_config(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                             int vocab_size);

#endif
