/* gen: batched autoregressive generation with the KV cache, the one sampling
 * path of the codebase (actors, evaluation and the rlhf-gen command all use
 * it), recording for every generated token the log-probabilities the RL
 * learner needs.
 *
 * A Generator owns a KV cache for up to max_batch sequences of up to max_len
 * tokens (prompt + completion) and its scratch; the Model is borrowed and
 * must outlive it. Prompts are prefilled in one batched call, then one
 * decode step feeds one token per unfinished sequence. Ownership: the caller
 * owns the GenOutput arrays. Threading: a Generator and its Model belong to
 * one thread. Errors: ERR_RANGE for a prompt that is empty, too long or
 * holds an out-of-range id (naming the sequence in the log); ERR_NONFINITE
 * if the model produced non-finite logits. */
#ifndef RLHF_GEN_H
#define RLHF_GEN_H

#include <stdbool.h>

#include "common/nn/model.h"
#include "common/base/rng.h"
#include "common/nn/sampler.h"

/* How a completion ended: at stop_id (kept in the output), at max_new or
 * max_len, or when the caller's stop test (GenConfig.is_stop) said so. */
enum { GEN_FINISH_STOP = 1, GEN_FINISH_LENGTH = 2, GEN_FINISH_CALLER = 3 };

/* The caller's stop test, asked after every generated token other than
 * stop_id: sequence seq (0..n-1 of the gen_run call) holds the n_tokens ids
 * tokens so far, the newest last. Returning true ends it there (finish
 * GEN_FINISH_CALLER, the token kept). Runs on gen_run's thread. */
typedef bool (*GenStopFn)(void *ctx, int seq, const int *tokens, int n_tokens);

typedef struct {
    SamplerConfig sampler;
    int           max_new;     /* tokens generated at most per sequence, > 0 */
    int           stop_id;     /* token that ends a completion (kept in the output), -1 = none */
    GenStopFn     is_stop;     /* the caller's stop test (e.g. stop strings), NULL = none */
    void         *stop_ctx;    /* is_stop's context */
    bool          is_rng_each; /* gen_run's rng is an array: sequence i draws from rng[i] */
} GenConfig;

/* Caller-allocated results for n sequences. */
typedef struct {
    int   *tokens;       /* (n, max_new) generated ids, stop token included */
    float *logp_sampled; /* (n, max_new) log-prob under the distribution drawn from */
    float *logp_full;    /* (n, max_new) log-prob under softmax(logits / temperature) */
    int   *n_tokens;     /* (n) how many ids each completion holds */
    int   *finish;       /* (n) GEN_FINISH_STOP or GEN_FINISH_LENGTH */
} GenOutput;

typedef struct Generator Generator;

Generator *gen_new(Model *m, int max_batch, int max_len);
void       gen_free(Generator **g);

/* Generates a completion for each of n <= max_batch prompts (prompts[i] of
 * prompt_lens[i] ids). A completion stops at stop_id, at max_new tokens, or
 * when prompt + completion reaches max_len (finish = LENGTH), or when
 * cfg->is_stop says so. Randomness comes only from rng: one generator the
 * sequences draw from in turn, or with cfg->is_rng_each n of them, one per
 * sequence, so that a sequence's completion does not depend on the others
 * in the batch (up to the batched arithmetic's rounding). Returns 0 or an
 * error as above. */
int gen_run(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
            const int *prompt_lens, Rng *rng, GenOutput *out);

#endif
